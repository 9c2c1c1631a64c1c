"""MetaPruning's evolutionary Oracle: budget, monotone best, resume,
errors; metaprune end to end."""

import numpy as np
import pytest

pytest.importorskip("keras_tuner")

from keras_tuner.engine.trial import TrialStatus  # noqa: E402

import tfcomp  # noqa: E402
from tfcomp.tuners.metapruning import MetaPruningOracle, metaprune  # noqa

SIZES = {"a": 8, "b": 16, "c": 32, "d": 16}


def _cost(widths):
    return sum(widths.values())


def _fitness(widths):  # best: a wide "c", narrow others
    return widths["c"] / 32 - 0.1 * (widths["a"] + widths["b"]) / 24


def _oracle(tmp_path, name="p", seed=0, **kw):
    kw = {"population": 12, "mutations": 6, "crossovers": 6,
          "generations": 4, "top_k": 4, **kw}
    oracle = MetaPruningOracle(SIZES, _cost, budget=36, seed=seed, **kw)
    oracle._set_project_dir(str(tmp_path), name)
    return oracle


def _run(oracle, stop_after=None):
    proposed = []
    while stop_after is None or len(proposed) < stop_after:
        trial = oracle.create_trial("t")
        if trial.status != TrialStatus.RUNNING:
            break
        widths = oracle.widths([trial.hyperparameters.values[f"width/{g}"]
                                for g in oracle.groups])
        proposed.append(widths)
        oracle.update_trial(trial.trial_id, {"fitness": _fitness(widths)})
        trial.status = TrialStatus.COMPLETED
        oracle.end_trial(trial)
    return proposed


@pytest.mark.parametrize("lower", [0.95, 0.0])
def test_every_candidate_within_budget_and_best_never_decreases(tmp_path,
                                                                lower):
    oracle = _oracle(tmp_path, lower=lower)
    proposed = _run(oracle)
    # mutants / crossovers that run short are filled with random ones
    assert len(proposed) == 12 + 3 * 12
    assert all(lower * 36 <= _cost(w) <= 36 for w in proposed)
    assert len({tuple(w.values()) for w in proposed}) == len(proposed)
    hist = oracle.best_history
    assert len(hist) == 4
    assert all(b >= a for a, b in zip(hist, hist[1:]))
    widths, fit = oracle.best
    assert fit == max(_fitness(w) for w in proposed) and _cost(widths) <= 36


def test_save_reload_gives_the_same_next_population(tmp_path):
    a = _oracle(tmp_path, "a", seed=3)
    _run(a, stop_after=17)  # generation 0 and part of generation 1
    b = _oracle(tmp_path, "a", seed=3)
    b.reload()
    assert b.generation == a.generation == 1
    rest_a = _run(a)
    rest_b = _run(b)
    assert rest_a == rest_b and len(rest_a) > 10
    c = _oracle(tmp_path, "c", seed=3)
    assert _run(c)[17:] == rest_a


def test_lower_bound_keeps_candidates_near_the_budget(tmp_path):
    """The undershoot the lower bound fixes: with only the upper bound,
    random candidates sit far below the budget."""
    free = [_cost(w) for w in _run(_oracle(tmp_path, "free", lower=0.0))]
    near = [_cost(w) for w in _run(_oracle(tmp_path, "near"))]
    assert min(near) >= 0.95 * 36 > min(free)
    assert np.mean(near) > np.mean(free)


def test_mutation_moves_flipped_genes_to_another_scale(tmp_path):
    oracle = _oracle(tmp_path, mutation_prob=1.0, crossovers=0, lower=0.0,
                     population=6, mutations=6, top_k=1)
    _run(oracle, stop_after=6)  # generation 0 scored
    fills, random = [], oracle._random
    oracle._random = lambda count: fills.extend(random(count)) or fills
    oracle._next_generation()
    (parent, _), = oracle._top
    mutants = [m for m in oracle._queue if m not in fills]
    assert len(oracle._queue) == 6 and len(mutants) >= 3
    # official: a flipped gene takes another scale (p = 1: every gene)
    assert all(a != b for m in mutants for a, b in zip(m, parent))


def test_init_range_bounds_the_random_candidates(tmp_path):
    oracle = _oracle(tmp_path, lower=0.0, init_range=(5, 10),
                     generations=1)
    proposed = _run(oracle)
    assert proposed and all(
        oracle.widths([5] * 4)[g] <= w[g] <= oracle.widths([9] * 4)[g]
        for w in proposed for g in w)
    with pytest.raises(ValueError, match="init_range"):
        MetaPruningOracle(SIZES, _cost, budget=36, init_range=(4, 40))


def test_budget_below_the_smallest_scales_is_a_clear_error():
    with pytest.raises(ValueError, match="below what the smallest scales"):
        MetaPruningOracle(SIZES, _cost, budget=3)
    with pytest.raises(ValueError, match="population"):
        MetaPruningOracle(SIZES, _cost, budget=36, population=0)
    with pytest.raises(ValueError, match="lower"):
        MetaPruningOracle(SIZES, _cost, budget=36, lower=1.5)
    with pytest.raises(ValueError, match="largest scales"):
        MetaPruningOracle(SIZES, _cost, budget=100)  # 95 > 72 reachable
    # a band no random candidate reaches: a clear error, not a hang
    oracle = MetaPruningOracle(SIZES, _cost, budget=36, lower=0.99,
                               init_range=(0, 2), max_draws=5)
    with pytest.raises(ValueError, match="no random candidate"):
        oracle._next_generation()


@pytest.mark.slow
def test_metaprune_end_to_end(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 8, 8, 3)).astype("float32")
    y = (x.mean(axis=(1, 2, 3)) > 0).astype("int64")
    model = tfcomp.zoo.resnet(depth=8, width=8, input_shape=(8, 8, 3),
                              num_classes=2)
    plan = metaprune(model, (x[:64], y[:64]), (x[64:], y[64:]),
                     target_macs=0.5, epochs=1, batch_size=32,
                     directory=str(tmp_path), population=4, mutations=2,
                     crossovers=2, generations=2, top_k=2, verbose=0)
    small = tfcomp.prune_channels(model, plan)
    dense = tfcomp.profile(model).macs
    assert 0.95 * 0.5 * dense <= tfcomp.profile(small).macs <= 0.5 * dense
    assert plan.meta["macs"] == tfcomp.profile(small).macs
    assert 0.0 <= plan.meta["fitness"] <= 1.0
    hist = plan.meta["best_history"]
    assert all(b >= a for a, b in zip(hist, hist[1:]))
