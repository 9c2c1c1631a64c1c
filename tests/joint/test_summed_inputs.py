"""The joint program over a layer after concatenations: its cost cells run
over the summed removed input channels (``SummedInputs``) instead of the
product of its groups' options, with the same prices and the same optimum.
"""

import itertools

import keras
import numpy as np
import pytest

from tfcomp.hardware import BISMO
from tfcomp.joint import compress, joint_problem
from tfcomp.pruning.prune_sensitivity import PruningSensitivity
from tfcomp.quantization.sensitivity import Sensitivity

BRANCHES = ("b1", "b2", "b3", "b4")


def _dense_block():
    """A DenseNet-style block: four branches concatenated, one consumer."""
    L = keras.layers
    inp = keras.Input((10, 10, 3), name="input")
    stem = L.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inp)
    outs = [L.Conv2D(8, 3, padding="same", activation="relu", name=n)(stem)
            for n in BRANCHES]
    x = L.Concatenate(name="concat")(outs)
    x = L.BatchNormalization(name="bn")(x)
    x = L.Conv2D(12, 1, activation="relu", name="merge")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, L.Dense(10, name="logits")(x), name="block")


def _tables(seed):
    rng = np.random.default_rng(seed)
    groups = ["stem", *BRANCHES, "merge"]
    sizes = [8, 8, 8, 8, 8, 12]
    ratios = [0.25, 0.5, 0.75]
    counts = [[max(1, round(r * s)) for r in ratios] for s in sizes]
    p = np.sort(rng.gamma(1.0, 1.0, (len(groups), 3)), axis=1)[:, ::-1]
    ps = PruningSensitivity(groups, sizes, ratios, counts, p)
    layers = ["stem", *BRANCHES, "merge", "logits"]
    q = np.sort(rng.gamma(1.0, 1.0, (len(layers), 2)), axis=1)[:, ::-1]
    q[:, -1] = 0.0
    qs = Sensitivity(layers, [4, 8], q, method="distortion")
    return ps, qs


def _problem(model, seed, aggregate_above):
    ps, qs = _tables(seed)
    prob = joint_problem(model, ps, qs, hardware=BISMO(), bits=[4, 8],
                         first_last_8bit=False)
    prob.space.aggregate_above = aggregate_above
    return prob


def test_summed_cells_price_like_the_space():
    model = _dense_block()
    prob = _problem(model, 0, aggregate_above=0)
    space = prob.space
    pairs = prob.pairs
    summed_units = 0
    rng = np.random.default_rng(1)
    for u in range(len(space.units)):
        cells = space.cells(u, prob.options, pairs)
        if cells.summed is None:
            continue
        summed_units += 1
        assert len(cells.summed.groups) == 4  # the four branches
        for m in rng.choice(len(cells.combos), 40):
            cb = cells.combos[m]
            # every point of the groups' options whose summed removal is
            # in the combo's bucket
            groups, removed, values, buckets = cells.summed
            bucket = buckets[cb[len(cells.deps)]]
            _, layer = space.units[u]
            pair = (space.table.fixed if cb[-1] < 0 else
                    pairs[space.layers.index(layer)][cb[-1]])
            seen = set()
            for opt in itertools.product(*[range(len(r)) for r in removed]):
                total = sum(r[o] for r, o in zip(removed, opt))
                if total not in bucket:
                    continue
                seen.add(total)
                counts = space.sizes.copy()
                for g, o in zip(groups, opt):
                    counts[g] = prob.options[g][o]
                for d, o in zip(cells.deps, cb):
                    counts[d] = prob.options[d][o]
                assert cells.costs[m] == pytest.approx(
                    space.unit_cost(u, counts, pair), rel=1e-12)
            assert seen == set(bucket)
        assert sum(len(b) for b in buckets) == len(values)
    assert summed_units == 1  # the merge conv (BatchNorm is not priced)


@pytest.mark.parametrize("budget", [0.45, 0.55, 0.7, 0.85])
def test_summed_program_equals_the_product_program(budget):
    model = _dense_block()
    product = _problem(model, 2, aggregate_above=10**9)
    summed = _problem(model, 2, aggregate_above=0)
    assert any(summed.space.cells(u, summed.options, summed.pairs).summed
               for u in range(len(summed.space.units)))
    limit = budget * product.space.full_cost
    a, b = product.solve(limit), summed.solve(limit)
    assert a is not None and b is not None  # (cheapest point: 0.43)
    assert b[2], "the summed program proved optimal"
    assert summed.objective(b[0], b[1])[0] == pytest.approx(
        product.objective(a[0], a[1])[0], rel=1e-9, abs=1e-12)
    assert summed.cost(b[0], b[1]) <= limit


def test_compress_on_a_concatenation_beyond_the_product_limit():
    """With the product formulation capped below this block's cells,
    compress still solves it exactly through the summed inputs."""
    model = _dense_block()
    ps, qs = _tables(3)
    from tfcomp.tuners.joint_space import JointSpace
    old = JointSpace.max_cells
    JointSpace.max_cells = 600  # the merge conv has 4^5 x 2 = 2048 cells
    try:
        res = compress(model, None, hardware=BISMO(), budget=0.6,
                       bits=[4, 8], prune_sensitivity=ps,
                       quant_sensitivity=qs, first_last_8bit=False,
                       refit=False)
    finally:
        JointSpace.max_cells = old
    assert res.cost <= 0.6 * (1 + 1e-9)
    assert res.gap["exact_proved_optimal"]


def _dense_chain():
    """Three DenseNet layers: each reads the concatenation of the stem and
    every layer before it (the sums of later layers extend earlier ones)."""
    L = keras.layers
    inp = keras.Input((8, 8, 3), name="input")
    feats = [L.Conv2D(8, 3, padding="same", activation="relu",
                      name="stem")(inp)]
    for k in range(3):
        x = feats[0] if k == 0 else L.Concatenate(name=f"cat{k}")(feats)
        feats.append(L.Conv2D(4, 3, padding="same", activation="relu",
                              name=f"d{k}")(x))
    x = L.Concatenate(name="cat_out")(feats)
    x = L.Conv2D(6, 1, activation="relu", name="transition")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, L.Dense(10, name="logits")(x), name="chain")


def test_dense_chain_shares_partial_sums_and_equals_the_product():
    model = _dense_chain()
    rng = np.random.default_rng(5)
    groups = ["stem", "d0", "d1", "d2", "transition"]
    sizes = [8, 4, 4, 4, 6]
    ratios = [0.25, 0.5, 0.75]
    counts = [[max(1, round(r * s)) for r in ratios] for s in sizes]
    ps = PruningSensitivity(groups, sizes, ratios, counts, np.sort(
        rng.gamma(1.0, 1.0, (5, 3)), axis=1)[:, ::-1])
    layers = ["stem", "d0", "d1", "d2", "transition", "logits"]
    q = np.sort(rng.gamma(1.0, 1.0, (6, 2)), axis=1)[:, ::-1]
    q[:, -1] = 0.0
    qs = Sensitivity(layers, [4, 8], q, method="distortion")
    probs = {}
    for agg in (10**9, 0):
        probs[agg] = joint_problem(model, ps, qs, hardware=BISMO(),
                                   bits=[4, 8], first_last_8bit=False)
        probs[agg].space.aggregate_above = agg
    summed = probs[0]
    n_summed = [len(c.summed.groups) for c in (
        summed.space.cells(u, summed.options, summed.pairs)
        for u in range(len(summed.space.units))) if c.summed]
    assert sorted(n_summed) == [2, 3, 4]  # d2, d1 + d2, transition
    for budget in (0.5, 0.65, 0.8):
        limit = budget * summed.space.full_cost
        a, b = probs[10**9].solve(limit), summed.solve(limit)
        assert a is not None and b is not None
        assert summed.objective(b[0], b[1])[0] == pytest.approx(
            probs[10**9].objective(a[0], a[1])[0], rel=1e-9, abs=1e-12)
        assert summed.cost(b[0], b[1]) <= limit
