"""Tests of ``tfcomp.joint.compress``: the joint channels x bits program
against brute force, the budget on the real pruned model, the pricing of
``JointSpace`` against ``CostTable`` of the pruned model, clear errors."""

import itertools

import keras
import numpy as np
import pytest

from tfcomp.hardware import BISMO, BitFusion, CostTable
from tfcomp.joint import compress, joint_problem
from tfcomp.joint.select import DEFAULT_PRUNE_WEIGHTS
from tfcomp.pruning import Plan, prune_channels
from tfcomp.pruning.prune_sensitivity import PruningSensitivity
from tfcomp.quantization import quantize_model
from tfcomp.quantization.sensitivity import Sensitivity
from tfcomp.tuners.joint_space import JointSpace


def _model():
    """Three quantizable layers, two prunable groups."""
    L = keras.layers
    inp = keras.Input((12, 12, 3), name="input")
    x = L.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(inp)
    x = L.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(10, name="logits")(x)
    return keras.Model(inp, out, name="three")


def _tables(seed, bits=(2, 4, 8)):
    rng = np.random.default_rng(seed)
    p = np.sort(rng.gamma(1.0, 1.0, (2, 3)), axis=1)[:, ::-1]
    ps = PruningSensitivity(["conv1", "conv2"], [16, 16], [0.25, 0.5, 0.75],
                            [[4, 8, 12], [4, 8, 12]], p)
    q = np.sort(rng.gamma(1.0, 1.0, (3, len(bits))), axis=1)[:, ::-1]
    q[:, -1] = 0.0
    qs = Sensitivity(["conv1", "conv2", "logits"], list(bits), q,
                     method="distortion")
    return ps, qs


def _brute(prob, limit):
    best = None
    for opt in itertools.product(*[range(len(o)) for o in prob.options]):
        for pick in itertools.product(*[range(len(p)) for p in prob.pairs]):
            if prob.cost(opt, pick) <= limit:
                v = prob.objective(opt, pick)[0]
                if best is None or v < best:
                    best = v
    return best


def _true_cost(model, res, resource, hw):
    """The returned point priced on the physically pruned model."""
    small = prune_channels(model, res.plan)
    dense = CostTable(model, resource, hw).full_cost
    return CostTable(small, resource, hw).total(res.bits) / dense


@pytest.mark.parametrize("resource,hw", [("latency", BISMO()),
                                         ("bops", None)])
def test_exact_equals_brute_force_and_budget_met(resource, hw):
    model = _model()
    for seed, budget in [(0, 0.14), (1, 0.3), (2, 0.55)]:
        ps, qs = _tables(seed)
        res = compress(model, None, hardware=hw, resource=resource,
                       budget=budget, bits=[2, 4, 8], prune_sensitivity=ps,
                       quant_sensitivity=qs, first_last_8bit=False,
                       refit=False)
        prob = joint_problem(model, ps, qs, resource=resource, hardware=hw,
                             bits=[2, 4, 8], first_last_8bit=False)
        want = _brute(prob, budget * prob.space.full_cost * (1 + 1e-9))
        assert res.sensitivity == pytest.approx(want, rel=1e-9, abs=1e-12)
        assert res.gap["exact_proved_optimal"]
        assert res.cost <= budget * (1 + 1e-9)
        assert _true_cost(model, res, resource, hw) == pytest.approx(
            res.cost, rel=1e-9)
        kept = {g: len(res.plan.kept(g)) for g in res.keep}
        assert kept == res.keep


def test_alternating_equals_brute_force_or_reports_its_gap():
    model = _model()
    hw = BISMO()
    for seed, budget in [(3, 0.15), (4, 0.4)]:
        ps, qs = _tables(seed)
        res = compress(model, None, hardware=hw, budget=budget,
                       bits=[2, 4, 8], prune_sensitivity=ps,
                       quant_sensitivity=qs, first_last_8bit=False,
                       refit=False, method="alternating", starts=2)
        prob = joint_problem(model, ps, qs, hardware=hw, bits=[2, 4, 8],
                             first_last_8bit=False)
        want = _brute(prob, budget * prob.space.full_cost * (1 + 1e-9))
        assert res.cost <= budget * (1 + 1e-9)
        assert res.gap["exact"] == pytest.approx(want, rel=1e-9)
        assert res.gap["gap"] == pytest.approx(res.sensitivity - want,
                                               abs=1e-9)
        assert res.gap["gap"] >= -1e-9
        assert any(s["feasible"] for s in res.meta["starts"])


def test_space_prices_like_costtable_of_the_pruned_model(residual_model):
    model = residual_model
    rng = np.random.default_rng(0)
    from tfcomp.graph import DependencyGraph
    graph = DependencyGraph(model)
    groups = [g.id for g in graph.prunable_groups]
    assert groups
    for resource, hw in [("latency", BISMO()), ("latency", BitFusion()),
                         ("size", None)]:
        space = JointSpace(model, resource, hw, groups, graph=graph)
        dense = CostTable(model, resource, hw)
        assert space.full_cost == pytest.approx(dense.full_cost, rel=1e-12)
        for _ in range(3):
            keep = {g.id: int(rng.integers(1, g.size + 1))
                    for g in space.groups}
            bits = {n: tuple(int(b) for b in rng.choice([2, 4, 8], 2))
                    for n in space.layers}
            removed = {g.id: np.arange(keep[g.id], g.size)
                       for g in space.groups}
            small = prune_channels(model, Plan.from_removed(graph, removed))
            want = CostTable(small, resource, hw).total(bits)
            assert space.total(keep, bits) == pytest.approx(want, rel=1e-9)


def test_measured_end_to_end_model_deploys():
    model = _model()
    x = np.random.default_rng(0).uniform(0, 1, (32, 12, 12, 3)).astype(
        "float32")
    x_val = np.random.default_rng(1).uniform(0, 1, (16, 12, 12, 3)).astype(
        "float32")
    res = compress(model, x, hardware=BISMO(), budget=0.5, bits=[2, 4, 8],
                   num_samples=32, validation_data=x_val)
    assert res.cost <= 0.5 * (1 + 1e-9)
    assert res.meta["selected_on"] == "validation (16)"
    assert res.model is not None
    for g, k in res.keep.items():
        assert res.model.get_layer(g).filters == k
    assert _true_cost(model, res, "latency", BISMO()) == pytest.approx(
        res.cost, rel=1e-9)
    qat = quantize_model(res.model, bits=res.bits)
    assert qat(x[:2]).shape == (2, 10)
    assert res.prune_sensitivity.method == "reconstruction"
    assert res.quant_sensitivity.method == "distortion"
    assert "kept channels" in res.summary()
    cands = res.meta["candidates"]
    assert [c["prune_weight"] for c in cands] == list(
        DEFAULT_PRUNE_WEIGHTS)
    assert all(c["cost"] <= 0.5 * (1 + 1e-9) for c in cands
               if "cost" in c)
    assert res.meta["prune_weight"] in DEFAULT_PRUNE_WEIGHTS
    with pytest.raises(ValueError, match="validation_data"):
        compress(model, x, hardware=BISMO(), budget=0.5, bits=[2, 4, 8],
                 num_samples=32, validation_data=x_val[..., :2])
    assert res.to_dict()["plan"]["format"] == "tfcomp.pruning.plan"


def test_clear_errors():
    model = _model()
    ps, qs = _tables(0)
    kw = dict(hardware=BISMO(), prune_sensitivity=ps, quant_sensitivity=qs,
              refit=False, bits=[2, 4, 8])
    with pytest.raises(ValueError, match="minimum budget is"):
        compress(model, None, budget=0.001, **kw)
    with pytest.raises(ValueError, match="method"):
        compress(model, None, method="greedy", **kw)
    with pytest.raises(ValueError, match="objective"):
        compress(model, None, objective="mse", **kw)
    with pytest.raises(ValueError, match="budget"):
        compress(model, None, budget=-1, **kw)
    with pytest.raises(ValueError, match="prune_weights"):
        compress(model, None, prune_weights=[0.0], **kw)
    with pytest.raises(ValueError, match="calibration_data"):
        compress(model, None, hardware=BISMO())
    with pytest.raises(ValueError, match="needs a hardware"):
        compress(model, None, resource="latency", hardware=None,
                 prune_sensitivity=ps, quant_sensitivity=qs, refit=False)
    bad = Sensitivity(["a", "b", "c"], [2, 4, 8], np.zeros((3, 3)))
    with pytest.raises(ValueError, match="quant_sensitivity"):
        compress(model, None, **{**kw, "quant_sensitivity": bad})
    with pytest.raises(ValueError, match="bits"):
        compress(model, None, **{**kw, "bits": [3]})


def test_ties_share_bits(residual_model, synthetic_data):
    x, _ = synthetic_data
    tie = [["b1_conv1", "b1_conv2"], ["down", "logits"]]
    res = compress(residual_model, x[:32], hardware=BISMO(), budget=0.6,
                   bits=[2, 4, 8], tie=tie, num_samples=32)
    assert res.bits["b1_conv1"] == res.bits["b1_conv2"]
    assert res.bits["down"] == res.bits["logits"] == (8, 8)  # tied to last
    assert res.cost <= 0.6 * (1 + 1e-9)


@pytest.mark.parametrize("method", ["hessian", "distortion"])
def test_quant_sensitivity_counts_weights_and_activations(method):
    from tfcomp.joint import measure_quant_sensitivity
    model = _model()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 12, 12, 3)).astype("float32")
    y = rng.integers(0, 10, 32)
    qs = measure_quant_sensitivity(model, (x, y), method, bits=[2, 8],
                                   num_samples=32)
    assert qs.meta["operands"] == "w + a"
    np.testing.assert_allclose(
        qs.table, np.add(qs.meta["weights"], qs.meta["activations"]))
    assert np.all(np.asarray(qs.meta["activations"])[:, 0] > 0)
    w = measure_quant_sensitivity(model, (x, y), method, bits=[2, 8],
                                  activations=False, num_samples=32)
    np.testing.assert_allclose(w.table, qs.meta["weights"], rtol=1e-6)


def test_loss_objective_with_given_sensitivities_needs_no_labels():
    model = _model()
    ps, qs = _tables(3)
    x = np.random.default_rng(0).uniform(0, 1, (16, 12, 12, 3)).astype(
        "float32")
    res = compress(model, x, hardware=BISMO(), budget=0.5, bits=[2, 4, 8],
                   objective="loss", prune_sensitivity=ps,
                   quant_sensitivity=qs, num_samples=16)
    assert res.cost <= 0.5 * (1 + 1e-9)
    with pytest.raises(ValueError, match="labels"):
        compress(model, x, hardware=BISMO(), budget=0.5, bits=[2, 4, 8],
                 objective="loss", quant_sensitivity=qs, num_samples=16)


def test_both_objectives_one_pool_chosen_by_finetune():
    """objective="both": the candidates of both objectives in one pool;
    selection="finetune" scores each by held-out accuracy after a short
    fine-tune and records it; the chosen point meets the budget."""
    model = _model()
    ps_d, qs_d = _tables(5)
    ps_l, qs_l = _tables(6)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (48, 12, 12, 3)).astype("float32")
    y = rng.integers(0, 10, 48)
    res = compress(model, (x[:32], y[:32]), hardware=BISMO(), budget=0.5,
                   bits=[2, 4, 8], objective="both",
                   prune_sensitivity={"distortion": ps_d, "loss": ps_l},
                   quant_sensitivity={"distortion": qs_d, "loss": qs_l},
                   prune_weights=(1.0, 0.25), selection="finetune",
                   validation_data=(x[32:], y[32:]), finetune_steps=1,
                   num_samples=32)
    cands = res.meta["candidates"]
    assert [c["objective_name"] for c in cands] == \
        ["distortion", "distortion", "loss", "loss"]
    assert all(0.0 <= c["score"] <= 1.0 for c in cands)
    assert all(c["cost"] <= 0.5 * (1 + 1e-9) for c in cands)
    assert res.meta["objective"] in ("distortion", "loss")
    assert res.meta["selection"] == "finetune"
    assert "after 1 fine-tune batches" in res.meta["selected_on"]
    best = max(c["score"] for c in cands)
    chosen = [c for c in cands
              if c["objective_name"] == res.meta["objective"]
              and c["prune_weight"] == res.meta["prune_weight"]][0]
    assert chosen["score"] == best
    assert res.cost <= 0.5 * (1 + 1e-9)
    # the chosen objective's tables come back with the result
    want = ps_d if res.meta["objective"] == "distortion" else ps_l
    assert res.prune_sensitivity is want


def test_pool_and_selection_clear_errors():
    model = _model()
    ps, qs = _tables(0)
    x = np.random.default_rng(0).uniform(0, 1, (16, 12, 12, 3)).astype(
        "float32")
    kw = dict(hardware=BISMO(), budget=0.5, bits=[2, 4, 8], num_samples=16)
    with pytest.raises(ValueError,
                       match="prune_sensitivity must be None or a dict"):
        compress(model, x, objective="both", prune_sensitivity=ps,
                 quant_sensitivity=qs, **kw)
    with pytest.raises(ValueError, match="selection must be one of"):
        compress(model, x, selection="best", prune_sensitivity=ps,
                 quant_sensitivity=qs, **kw)
    with pytest.raises(ValueError, match="validation_data"):
        compress(model, (x, np.zeros(16, int)), selection="finetune",
                 prune_sensitivity=ps, quant_sensitivity=qs, **kw)
    with pytest.raises(ValueError, match="labels"):
        compress(model, x, selection="finetune", prune_sensitivity=ps,
                 quant_sensitivity=qs, validation_data=(x, np.zeros(16)),
                 **kw)
