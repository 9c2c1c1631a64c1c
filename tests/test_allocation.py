"""Tests of ``tfcomp.hardware.allocation``: the exact (ILP) bit allocation
against brute force for every resource, budgets, first / last rules, ties,
clear errors, and a planted heavy-tailed layer."""

import itertools

import keras
import numpy as np
import pytest

from tfcomp.hardware import BISMO, BitFusion, LatencyTable
from tfcomp.hardware.allocation import (
    CostTable,
    allocate_bits,
    policy_cost,
)
from tfcomp.quantization import quantizable_layers, quantize_model
from tfcomp.quantization.sensitivity import (
    Sensitivity,
    quantized_kernel,
    sensitivity,
)

BITS = [2, 3, 4, 8]


def _random_sensitivity(layers, bits=BITS, seed=0):
    """Decreasing in bits, a different scale per layer (unique optimum)."""
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(0, 1, (len(layers), len(bits))))[:, ::-1]
    return Sensitivity(layers, bits, t * rng.uniform(0.1, 10, (len(layers), 1)))


def _brute_force(table, sens, budget, fixed=(), ties=()):
    layers, best = table.layers, None
    free = [n for n in layers if n not in fixed]
    for combo in itertools.product(sens.bits, repeat=len(free)):
        pol = {n: (8, 8) for n in fixed}
        pol.update({n: (b, b) for n, b in zip(free, combo)})
        if any(len({pol[n] for n in g}) > 1 for g in ties):
            continue
        if table.total(pol) > budget * table.full_cost * (1 + 1e-9):
            continue
        v = sum(sens.value(n, pol[n][0]) for n in layers)
        if best is None or v < best[0] - 1e-12:
            best = (v, pol)
    return best


def _hardware(name, model):
    if name == "bismo":
        return BISMO()
    if name == "bitfusion":
        return BitFusion("edge")
    return LatencyTable.build(model, BISMO(dm=8, dk=256, dn=8),
                              bits=range(2, 9), progress=False)


@pytest.fixture
def residual(residual_model):
    # (not `from conftest import ...`: tests/models has a conftest too)
    return residual_model


@pytest.mark.parametrize("resource,hw", [
    ("size", None), ("bops", None), ("latency", "bismo"),
    ("latency", "bitfusion"), ("energy", "bitfusion"), ("latency", "table")])
def test_ilp_equals_brute_force(residual, resource, hw):
    hardware = None if hw is None else _hardware(hw, residual)
    layers = quantizable_layers(residual)
    sens = _random_sensitivity(layers)
    table = CostTable(residual, resource, hardware)
    for first_last in (True, False):
        probe = allocate_bits(residual, sens, resource, hardware, budget=1.0,
                              first_last_8bit=first_last)
        fixed = (layers[0], layers[-1]) if first_last else ()
        for frac in (0.3, 0.6):
            budget = probe.min_budget + frac * (1 - probe.min_budget)
            got = allocate_bits(residual, sens, resource, hardware,
                                budget=budget, first_last_8bit=first_last)
            want = _brute_force(table, sens, budget, fixed)
            assert got.sensitivity == pytest.approx(want[0], rel=1e-9)
            assert dict(got) == want[1]
            assert table.total(got) <= budget * table.full_cost * (1 + 1e-9)
            assert got.cost == pytest.approx(table.ratio(dict(got)))


def test_budget_always_met_and_front(residual):
    layers = quantizable_layers(residual)
    sens = _random_sensitivity(layers, seed=4)
    hw = BISMO()
    out = allocate_bits(residual, sens, "latency", hw, budget=0.5,
                        return_front=True, front_points=8)
    assert out.cost <= 0.5 * (1 + 1e-9)
    assert out[layers[0]] == (8, 8) and out[layers[-1]] == (8, 8)
    costs = [p.cost for p in out.front]
    sens_tot = [p.sensitivity for p in out.front]
    assert all(p.cost <= p.budget * (1 + 1e-9) for p in out.front)
    assert costs == sorted(costs)
    assert all(a >= b - 1e-12 for a, b in zip(sens_tot, sens_tot[1:]))
    model_cost = hw.model_cost(residual, bits=dict(out)).latency_s
    assert model_cost <= 0.5 * out.full_cost * (1 + 1e-9)
    qat = quantize_model(residual, bits=out)  # the policy applies as is
    assert {n: (qat.get_layer(n).w_bits, qat.get_layer(n).a_bits)
            for n in layers} == dict(out)


def test_ties_kept(residual):
    layers = quantizable_layers(residual)
    sens = _random_sensitivity(layers, seed=2)
    tie = [["b1_conv1", "b1_conv2"]]
    table = CostTable(residual, "bops")
    for budget in (0.3, 0.5, 0.7):
        got = allocate_bits(residual, sens, "bops", budget=budget, tie=tie)
        assert got["b1_conv1"] == got["b1_conv2"]
        want = _brute_force(table, sens, budget, (layers[0], layers[-1]),
                            tie)
        assert got.sensitivity == pytest.approx(want[0], rel=1e-9)
    # a tie group holding the first layer stays at 8/8
    got = allocate_bits(residual, sens, "size", budget=0.6,
                        tie=[["stem", "b1_conv1"]])
    assert got["b1_conv1"] == (8, 8)


def test_residual_tie_and_candidates():
    import tfcomp
    model = tfcomp.zoo.resnet(depth=8, width=4, input_shape=(8, 8, 1))
    layers = quantizable_layers(model)
    sens = _random_sensitivity(layers, seed=1)
    got = allocate_bits(model, sens, "bops", budget=0.4, tie="residual")
    assert got["s2b1_conv2"] == got["s2b1_proj"]
    assert got["s3b1_conv2"] == got["s3b1_proj"]
    fixed_a = allocate_bits(model, sens, "bops", budget=0.4,
                            candidates=[2, 4, 8], a_bits=8)
    assert {a for _, a in fixed_a.values()} == {8}
    assert {w for w, _ in fixed_a.values()} <= {2, 4, 8}
    pairs = allocate_bits(model, sens, "bops", budget=0.4,
                          candidates=[(4, 8), (8, 8), (2, 4)])
    assert set(pairs.values()) <= {(4, 8), (8, 8), (2, 4)}


def test_clear_errors(residual):
    layers = quantizable_layers(residual)
    sens = _random_sensitivity(layers)
    with pytest.raises(ValueError, match="resource must be one of.*'speed'"):
        allocate_bits(residual, sens, "speed")
    with pytest.raises(ValueError, match="needs a hardware model"):
        allocate_bits(residual, sens, "latency")
    with pytest.raises(ValueError, match=r"minimum budget is 0\.\d+"):
        allocate_bits(residual, sens, "size", budget=0.01)
    other = _random_sensitivity(["conv_a"] + layers[1:])
    with pytest.raises(ValueError, match=r"does not match.*'stem'.*'conv_a'"):
        allocate_bits(residual, other, "size")
    with pytest.raises(ValueError, match="w_bits=5"):
        allocate_bits(residual, sens, "size", candidates=[4, 5])
    acts = Sensitivity(sens.layers, sens.bits, sens.table, kind="activations")
    with pytest.raises(ValueError, match="kind must be 'weights'.*'activations'"):
        allocate_bits(residual, acts, "size")
    with pytest.raises(ValueError, match="budget"):
        allocate_bits(residual, sens, "size", budget=-1)
    with pytest.raises(ValueError, match="tie must be"):
        allocate_bits(residual, sens, "size", tie="all")
    with pytest.raises(ValueError, match="energy figures"):
        allocate_bits(residual, sens, "energy", BISMO())
    table = LatencyTable.build(residual, BISMO(), bits=[4, 8],
                               progress=False)
    with pytest.raises(ValueError, match="cannot be priced"):
        allocate_bits(residual, sens, "latency", table, budget=0.9)


def _planted_model(seed=0):
    """An MLP whose middle layer ``heavy`` has one huge weight per output
    unit (a heavy-tailed kernel); its neighbours are Gaussian."""
    keras.utils.set_random_seed(seed)
    L = keras.layers
    model = keras.Sequential([
        keras.Input((16,)),
        L.Dense(32, activation="tanh", name="fc_in"),
        L.Dense(32, activation="tanh", name="mid1"),
        L.Dense(32, activation="tanh", name="heavy"),
        L.Dense(32, activation="tanh", name="mid2"),
        L.Dense(4, name="fc_out")])
    rng = np.random.default_rng(seed)
    k = model.get_layer("heavy").kernel.numpy()
    rows = rng.integers(0, k.shape[0], k.shape[1])
    k[rows, np.arange(k.shape[1])] = 20 * np.abs(k).max() * rng.choice(
        [-1, 1], k.shape[1])
    model.get_layer("heavy").kernel.assign(k)
    return model


def _weight_distortion(model, policy, x):
    ref = model(x).numpy()
    saved = {n: model.get_layer(n).kernel.numpy() for n in policy}
    try:
        for n, (w, _) in policy.items():
            model.get_layer(n).kernel.assign(
                quantized_kernel(model.get_layer(n), w))
        return float(np.mean((model(x).numpy() - ref) ** 2))
    finally:
        for n, k in saved.items():
            model.get_layer(n).kernel.assign(k)


@pytest.mark.parametrize("method", ["distortion", "hessian"])
def test_planted_heavy_tailed_layer_gets_more_bits(method):
    model = _planted_model()
    x = np.random.default_rng(1).normal(size=(128, 16)).astype("float32")
    sens = sensitivity(model, x, method=method, bits=[2, 3, 4, 5, 6, 8],
                       max_probes=30)
    budget = policy_cost(model, 4, "size")
    got = allocate_bits(model, sens, "size", budget=budget)
    assert got.cost <= budget * (1 + 1e-9)
    assert got["heavy"][0] > got["mid1"][0]
    assert got["heavy"][0] > got["mid2"][0]
    uniform = {n: (4, 4) for n in quantizable_layers(model)}
    uniform["fc_in"] = uniform["fc_out"] = (8, 8)
    ours = _weight_distortion(model, dict(got), x)
    base = _weight_distortion(model, uniform, x)
    assert ours < 0.5 * base


@pytest.mark.parametrize("resource", ["size", "bops", "latency"])
def test_costs_are_haq_costs(residual, resource):
    """The allocator prices a policy exactly as HAQ's search space does."""
    from tfcomp.tuners.haq_space import HAQSpace
    hw = BISMO() if resource == "latency" else None
    table = CostTable(residual, resource, hw)
    space = HAQSpace(residual, hw, resource, 1.0, 2, 8)
    policy = np.array([[8, 8], [3, 4], [2, 2], [4, 3], [8, 8]])
    named = {n: tuple(p) for n, p in zip(space.layers, policy)}
    assert table.full_cost == pytest.approx(space.full_cost, rel=1e-12)
    assert table.total(named) == pytest.approx(space.cost(policy),
                                               rel=1e-12)


def _precision_model():
    x = keras.Input((8, 8, 3))
    y = keras.layers.Conv2D(8, 3, padding="same", name="c1")(x)
    y = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(y)
    y = keras.layers.Conv2D(16, 1, name="c2")(y)
    y = keras.layers.Conv2D(16, 3, padding="same", name="c3")(y)
    y = keras.layers.GlobalAveragePooling2D()(y)
    return keras.Model(x, keras.layers.Dense(4, name="fc")(y))


def test_precision_axis_size_equals_brute_force():
    """Candidates as LiteRT precisions: names out, budget met, depthwise
    never int4w, the optimum equals brute force, bit results unchanged."""
    from tfcomp.hardware.precision import PRECISION_BITS, PRECISIONS

    model = _precision_model()
    layers = quantizable_layers(model)
    sens = _random_sensitivity(layers, bits=[4, 8], seed=3)
    table = CostTable(model, "size", precision=True)
    assert table.fixed == PRECISION_BITS["int8"]
    half = policy_cost(model, "int4w", "size", first_last_8bit=False)
    assert 0.5 < half < 1.0  # depthwise stays int8
    # a dict asking int4w of the depthwise layer is priced as the file
    # gets it (int8), so such a policy's cost is a reachable budget
    every = {n: "int4w" for n in layers}
    assert policy_cost(model, every, "size") == pytest.approx(
        policy_cost(model, {**every, "dw": "int8"}, "size"))
    assert policy_cost(model, every, "size") == pytest.approx(half)
    for budget in (half, 0.75, 1.5):
        alloc = allocate_bits(model, sens, "size", budget=budget,
                              candidates=PRECISIONS, first_last_8bit=False)
        assert set(alloc.values()) <= set(PRECISIONS)
        assert alloc["dw"] != "int4w"
        assert table.total(dict(alloc)) <= budget * table.full_cost * (
            1 + 1e-9)
        best = None
        for combo in itertools.product(PRECISIONS, repeat=len(layers)):
            pol = dict(zip(layers, combo))
            if pol["dw"] == "int4w" or table.total(pol) > \
                    budget * table.full_cost * (1 + 1e-9):
                continue
            v = sum(0.0 if PRECISION_BITS[p][0] > 8 else sens.value(
                n, PRECISION_BITS[p][0]) for n, p in pol.items())
            best = v if best is None else min(best, v)
        assert alloc.sensitivity == pytest.approx(best, abs=1e-9)
    assert allocate_bits(model, sens, "size", budget=1.5,
                         candidates=PRECISIONS)["c1"] == "int8"  # first
    with pytest.raises(ValueError, match="all be precisions"):
        allocate_bits(model, sens, "size", candidates=["int8", 4])
    with pytest.raises(ValueError, match="w_bits=4"):
        allocate_bits(model, _random_sensitivity(layers, bits=[8]), "size",
                      candidates=PRECISIONS)


def test_precision_axis_latency_from_table():
    from tfcomp.hardware.base import Cost
    from tfcomp.hardware.precision import PRECISION_BITS
    from tfcomp.hardware.spec import extract_specs

    model = _precision_model()
    layers = quantizable_layers(model)
    table = LatencyTable(hardware={"name": "fake", "config": {}},
                         meta={"precisions": ["int8", "int4w"]})
    speed = {"int8": 1.0, "int4w": 2.0}  # int4 slower, as on x86
    for s in extract_specs(model):
        for p, f in speed.items():
            table.add(s, *PRECISION_BITS[p], Cost(None, f * 1e-6 * (
                1 + s.macs / 1e4), None))
    sens = _random_sensitivity(layers, bits=[4, 8], seed=1)
    alloc = allocate_bits(model, sens, "latency", table, budget=1.0,
                          candidates=("int8", "int4w"),
                          first_last_8bit=False)
    assert set(alloc.values()) == {"int8"}  # int4w only costs time here
    assert table.model_cost(model, (8, 32)).latency_s > 0
