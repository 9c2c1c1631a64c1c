"""AMC search: budget wall, state/action mapping, pruning, keras-tuner glue.

Tiny model (ResNet-8, width 4, 12x12 inputs); the oracle / resume tests use
fake metrics (a reward computed from the proposal) so no model is pruned.
"""

import json
import os
from typing import ClassVar

import keras
import keras_tuner as kt
import numpy as np
import pytest

import tfcomp
from tfcomp.hardware import BitFusion, LatencyTable
from tfcomp.pruning import Plan, estimate_macs
from tfcomp.tuners.amc import AMCHyperModel, AMCOracle, AMCTuner

FRACTIONS = (0.2, 0.4, 0.6, 0.8, 1.0)


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(1)
    return tfcomp.zoo.resnet(depth=8, width=4, input_shape=(12, 12, 1))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (24, 12, 12, 1)).astype("float32")
    y = rng.integers(0, 10, 24)
    return x, y


class FakeAMC(AMCHyperModel):
    """Fake metrics: reward -sum((ratio - 0.6)^2); nothing is pruned."""

    def evaluate(self, hp, validation_data=None):
        counts = self.keep_counts(hp)
        sizes = {g.id: g.size for g in self.space.steps}
        reward = -sum((c / sizes[g] - 0.6) ** 2 for g, c in counts.items())
        return ({"reward": reward, "cost_ratio": self.predicted_cost(hp)
                 / self.dense_cost},
                Plan.from_keep(self.space.graph, {}))


def _random_policy(seed):
    rng = np.random.default_rng(seed)
    return lambda state: rng.uniform(0.0, 1.0, 1)


@pytest.mark.slow
def test_macs_never_exceed_target_for_random_actions(model, data):
    x, y = data
    for budget in (0.3, 0.5, 0.8):
        hm = AMCHyperModel(model, x, (x, y), budget=budget, round_to=1)
        dense = tfcomp.profile(model).macs
        assert hm.dense_cost == dense
        for seed in range(40):
            values, transitions, info = hm.space.rollout(_random_policy(seed))
            counts = hm.keep_counts(values)
            plan = Plan.from_keep(model, {g: np.arange(c)
                                          for g, c in counts.items()})
            macs = estimate_macs(model, plan)
            assert macs == pytest.approx(info["cost"])
            assert macs <= budget * dense
            assert len(transitions) == len(hm.group_ids)
        # extremes: keep everything / prune everything the wall allows
        for a in (0.0, 1.0):
            values, _, info = hm.space.rollout(lambda s, a=a: [a])
            assert info["cost"] <= budget * dense


def test_projection_of_any_values_meets_the_budget(model, data):
    x, y = data
    hm = AMCHyperModel(model, x, (x, y), budget=0.4, round_to=2)
    rng = np.random.default_rng(3)
    for _ in range(50):
        values = {n: float(rng.uniform(0.2, 1.0)) for n in hm.space.names}
        counts = hm.keep_counts(values)
        assert hm.predicted_cost(values) <= 0.4 * hm.dense_cost
        for g in hm.space.steps:
            assert counts[g.id] % 2 == 0 or counts[g.id] == g.size
            assert counts[g.id] <= g.size
    # the oracle's (already walled) values are a fixed point
    values, _, _ = hm.space.rollout(_random_policy(0))
    counts = hm.keep_counts(values)
    assert {g: round(values["preserve/" + g] * s) for g, s in zip(
        hm.group_ids, hm.space.sizes)} == counts


def test_pruned_models_meet_the_macs_target(model, data):
    x, y = data
    hm = AMCHyperModel(model, x, (x, y), budget=0.5, round_to=1,
                       max_images=8)
    dense = tfcomp.profile(model).macs
    for seed in range(2):
        values, _, _ = hm.space.rollout(_random_policy(seed))
        small, plan = hm.prune(values)
        assert tfcomp.profile(small).macs <= 0.5 * dense
        assert tfcomp.profile(small).macs == plan.meta["macs_after"]
        # the masked model evaluated during the search equals the pruned one
        metrics, plan2 = hm.evaluate(values)
        assert plan2.removed == plan.removed
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(hm._engine().work(x)),
            keras.ops.convert_to_numpy(small(x)), atol=1e-4)
        assert metrics["macs"] == tfcomp.profile(small).macs
        assert metrics["reward"] == pytest.approx(metrics["accuracy"] - 1)


def test_least_squares_refit_beats_zeroing(model, data):
    x, y = data
    hm = AMCHyperModel(model, x, (x, y), budget=0.6, round_to=1)
    values, _, _ = hm.space.rollout(lambda s: [0.0])
    small, plan = hm.prune(values)
    zeroed = tfcomp.pruning.prune_channels(model, plan)
    ref = keras.ops.convert_to_numpy(model(x))
    err_ls = np.mean((keras.ops.convert_to_numpy(small(x)) - ref) ** 2)
    err_0 = np.mean((keras.ops.convert_to_numpy(zeroed(x)) - ref) ** 2)
    assert err_ls < err_0


def test_state_and_action_mapping(model, data):
    x, y = data
    hm = AMCHyperModel(model, x, (x, y), budget=1.0, round_to=1)
    values, transitions, _ = hm.space.rollout(lambda s: [1.0])
    assert all(v == 1.0 for v in values.values())
    for s, a, _s2, _done in transitions:
        assert s.shape == (10,) and np.all((s >= 0) & (s <= 1))
        assert a == [1.0]
    assert [t[3] for t in transitions] == [False] * (
        len(transitions) - 1) + [True]
    values, transitions, _ = hm.space.rollout(lambda s: [0.0])
    counts = hm.keep_counts(values)
    for g, k in zip(hm.space.steps, hm.space.kmin):
        assert counts[g.id] == k >= 0.2 * g.size
    assert transitions[1][0][-1] == pytest.approx(transitions[0][1][0])
    # reduced-so-far grows along the episode
    reduced = [t[0][7] for t in transitions]
    assert reduced[0] == 0 and reduced == sorted(reduced)


def test_latency_target_with_a_table(data):
    # Bit Fusion tiles output channels by 16 and input channels by 32, so
    # the model must be wide enough for pruning to change its latency.
    x, y = data
    keras.utils.set_random_seed(1)
    model = tfcomp.zoo.resnet(depth=8, width=16, input_shape=(12, 12, 1))
    table = LatencyTable.build(model, BitFusion("edge"), bits=[(8, 8)],
                               channel_fractions=FRACTIONS, progress=False)
    hm = AMCHyperModel(model, x, (x, y), resource="latency", budget=0.7,
                       hardware=table, round_to=1, max_images=8)
    dense = table.model_cost(model).latency_s
    assert hm.dense_cost == pytest.approx(dense)
    for seed in range(20):
        values, _, info = hm.space.rollout(_random_policy(seed))
        assert info["cost"] <= 0.7 * dense * (1 + 1e-9)
    small, plan = hm.prune(values)
    assert table.model_cost(small).latency_s == pytest.approx(
        plan.meta["predicted_cost"], rel=1e-6)


def test_unreachable_budget_says_the_minimum(model, data):
    x, y = data
    with pytest.raises(ValueError, match="minimum reachable budget is 0"):
        AMCHyperModel(model, x, (x, y), budget=0.02, round_to=1)


def test_table_that_cannot_cost_a_layer(model, data):
    x, y = data
    full_only = LatencyTable.build(model, BitFusion("edge"), bits=[(8, 8)],
                                   progress=False)
    with pytest.raises(ValueError, match="cannot cost layer"):
        AMCHyperModel(model, x, (x, y), resource="latency", budget=0.6,
                      hardware=full_only)
    other = tfcomp.zoo.vgg_small(width=4, input_shape=(12, 12, 1))
    other_table = LatencyTable.build(other, BitFusion("edge"), bits=[(8, 8)],
                                     channel_fractions=FRACTIONS,
                                     progress=False)
    with pytest.raises(ValueError, match="no same-shaped layer"):
        AMCHyperModel(model, x, (x, y), resource="latency", budget=0.6,
                      hardware=other_table)


def test_model_without_prunable_layers(data):
    x, y = data
    inp = keras.Input((12, 12, 1))
    out = keras.layers.Dense(10)(keras.layers.Flatten()(inp))
    with pytest.raises(ValueError, match="no prunable layers"):
        AMCHyperModel(keras.Model(inp, out), x, (x, y))


def test_bad_arguments(model, data):
    x, y = data
    with pytest.raises(ValueError, match="budget must be in"):
        AMCHyperModel(model, x, (x, y), budget=1.5)
    with pytest.raises(ValueError, match="resource must be one of"):
        AMCHyperModel(model, x, (x, y), resource="energy")
    with pytest.raises(ValueError, match="needs hardware"):
        AMCHyperModel(model, x, (x, y), resource="latency")
    with pytest.raises(ValueError, match="not both"):
        AMCHyperModel(model, x, (x, y), budget=0.5, target_macs=0.5)


def test_deprecated_target_keyword_target_macs_and_ignored_layers(model,
                                                                   data):
    x, y = data
    with pytest.warns(DeprecationWarning, match="resource="):
        old = AMCHyperModel(model, x, (x, y), target="macs", budget=0.5,
                            round_to=1)
    new = AMCHyperModel(model, x, (x, y), resource="macs", round_to=1,
                        target_macs=0.5)
    assert old.resource == new.resource == "macs"
    assert old.space.budget_cost == new.space.budget_cost
    dense = tfcomp.profile(model).macs
    absolute = AMCHyperModel(model, x, (x, y), round_to=1,
                             target_macs=dense // 2)
    assert absolute.budget == pytest.approx((dense // 2) / dense)
    with pytest.warns(DeprecationWarning):
        assert old.target == "macs"
    hm = AMCHyperModel(model, x, (x, y), budget=0.6, round_to=2,
                       ignored_layers=["s1b1_conv1"])
    assert "s1b1_conv1" not in hm.group_ids
    counts = hm.keep_counts({n: 0.5 for n in hm.space.names})
    assert all(c % 2 == 0 for c in counts.values())


def _tuner(hm, directory, max_trials, overwrite=True, cls=AMCTuner):
    return cls(hm, max_trials=max_trials, seed=0, warmup=2,
               agent_config={"batch_size": 8, "hidden": (32, 32)},
               directory=str(directory), project_name="p",
               overwrite=overwrite)


def test_reload_gives_the_same_next_proposal(model, data, tmp_path):
    x, y = data
    hm = FakeAMC(model, x, (x, y), budget=0.5, round_to=1)
    tuner = _tuner(hm, tmp_path, 4)
    tuner.search(verbose=0)
    assert tuner.oracle.agent.num_updates > 0
    files = os.listdir(tmp_path / "p")
    assert "oracle.json" in files
    assert sum(f.startswith("agent_") for f in files) == 3
    state = json.loads((tmp_path / "p" / "oracle.json").read_text())
    assert state["tfcomp"]["episode"] == 4
    again = _tuner(hm, tmp_path, 4, overwrite=False)
    assert again.oracle.episode == 4
    a = tuner.oracle.populate_space("next")["values"]
    b = again.oracle.populate_space("next")["values"]
    assert a == b
    other_seed = AMCTuner(hm, max_trials=4, seed=1, warmup=2,
                          agent_config={"hidden": (32, 32)},
                          directory=str(tmp_path), project_name="q")
    other_seed.oracle.populate_space("0")
    assert other_seed.oracle.populate_space("1")["values"] != a


class _KillAt(AMCTuner):
    kill_at = None
    runs: ClassVar[list] = []

    def run_trial(self, trial, *args, **kwargs):
        if trial.trial_id == self.kill_at:
            raise KeyboardInterrupt  # a kill in the middle of the trial
        _KillAt.runs.append(trial.trial_id)
        return super().run_trial(trial, *args, **kwargs)


def test_resume_after_a_kill_loses_and_repeats_nothing(model, data,
                                                       tmp_path):
    x, y = data
    hm = FakeAMC(model, x, (x, y), budget=0.5, round_to=1)
    ref = _tuner(hm, tmp_path / "ref", 6)
    ref.search(verbose=0)
    expected = [ref.oracle.get_trial(t).hyperparameters.values
                for t in sorted(ref.oracle.trials)]

    _KillAt.runs = []
    _KillAt.kill_at = "3"
    killed = _tuner(hm, tmp_path / "run", 6, cls=_KillAt)
    with pytest.raises(KeyboardInterrupt):
        killed.search(verbose=0)
    _KillAt.kill_at = None
    resumed = _tuner(hm, tmp_path / "run", 6, overwrite=False, cls=_KillAt)
    resumed.search(verbose=0)
    assert _KillAt.runs == ["0", "1", "2", "3", "4", "5"]
    trials = resumed.oracle.trials
    assert sorted(trials) == ["0", "1", "2", "3", "4", "5"]
    assert all(t.status == "COMPLETED" for t in trials.values())
    got = [trials[t].hyperparameters.values for t in sorted(trials)]
    assert got == expected
    np.testing.assert_array_equal(resumed.oracle.agent.actor.params[0],
                                  ref.oracle.agent.actor.params[0])


def test_tuner_search_and_best_plan(model, data, tmp_path):
    x, y = data
    hm = AMCHyperModel(model, x, (x, y), budget=0.5, round_to=1,
                       max_images=8)
    tuner = AMCTuner(hm, max_trials=2, seed=0, warmup=1,
                     agent_config={"hidden": (16, 16)},
                     directory=str(tmp_path), project_name="real")
    tuner.search(verbose=0)
    best = tuner.oracle.get_best_trials(1)[0]
    assert set(best.metrics.metrics) >= {"reward", "accuracy", "macs",
                                         "cost", "cost_ratio"}
    plan = tuner.get_best_plan()
    assert plan.meta["method"] == "amc"
    small = tfcomp.pruning.prune_channels(model, plan)
    assert tfcomp.profile(small).macs <= 0.5 * tfcomp.profile(model).macs
    assert tfcomp.profile(small).macs == best.metrics.get_last_value("macs")


@pytest.mark.parametrize("tuner_cls", ["RandomSearch", "BayesianOptimization"])
@pytest.mark.slow
def test_keras_tuner_baselines_run_on_the_hypermodel(model, data, tmp_path,
                                                     tuner_cls):
    x, y = data

    class FakeFit(AMCHyperModel):
        def build(self, hp):
            return self.model

        def fit(self, hp, model, *args, **kwargs):
            return {"reward": -abs(self.predicted_cost(hp) / self.dense_cost
                                   - 0.45)}

    hm = FakeFit(model, x, (x, y), budget=0.5, round_to=1)
    extra = {"num_initial_points": 2} if tuner_cls != "RandomSearch" else {}
    tuner = getattr(kt, tuner_cls)(
        hm, objective=kt.Objective("reward", "max"), max_trials=4, seed=1,
        directory=str(tmp_path), project_name=tuner_cls, **extra)
    tuner.search(verbose=0)
    done = [t for t in tuner.oracle.trials.values()
            if t.status == "COMPLETED"]
    assert len(done) == 4
    best = tuner.get_best_hyperparameters()[0]
    assert set(best.values) == set(hm.space.names)
    assert hm.predicted_cost(best) <= 0.5 * hm.dense_cost


def test_amc_tuner_accepts_another_oracle(model, data, tmp_path):
    x, y = data
    hm = FakeAMC(model, x, (x, y), budget=0.5, round_to=1)
    oracle = kt.oracles.RandomSearchOracle(
        objective=kt.Objective("reward", "max"), max_trials=3, seed=0)
    tuner = AMCTuner(hm, oracle=oracle, directory=str(tmp_path))
    tuner.search(verbose=0)
    assert len(tuner.oracle.trials) == 3
    assert isinstance(tuner.get_best_plan(), Plan)
    assert isinstance(AMCOracle(hm, max_trials=3), kt.Oracle)


def test_resume_after_a_kill_while_proposing(model, data, tmp_path):
    # Killed inside create_trial after the new trial's trial.json but before
    # oracle.json: the resumed search proposes that episode again under the
    # same id; nothing is lost or repeated.
    x, y = data
    hm = FakeAMC(model, x, (x, y), budget=0.5, round_to=1)
    ref = _tuner(hm, tmp_path / "ref", 5)
    ref.search(verbose=0)
    ids = ["0", "1", "2", "3", "4"]
    killed = _tuner(hm, tmp_path / "run", 5)
    oracle, plain_save = killed.oracle, killed.oracle.save

    def save():
        if "3" in oracle.start_order and "3" not in oracle.end_order:
            raise KeyboardInterrupt
        plain_save()

    oracle.save = save
    with pytest.raises(KeyboardInterrupt):
        killed.search(verbose=0)
    assert (tmp_path / "run" / "p" / "trial_3" / "trial.json").exists()
    resumed = _tuner(hm, tmp_path / "run", 5, overwrite=False)
    assert sorted(resumed.oracle.trials) == ids[:3]
    resumed.search(verbose=0)
    trials = resumed.oracle.trials
    assert sorted(trials) == ids
    assert all(trials[t].status == "COMPLETED" for t in ids)
    assert [trials[t].hyperparameters.values for t in ids] == [
        ref.oracle.trials[t].hyperparameters.values for t in ids]
    state = json.loads((tmp_path / "run" / "p" / "oracle.json").read_text())
    assert [h[0] for h in state["tfcomp"]["history"]] == ids
    np.testing.assert_array_equal(resumed.oracle.agent.actor.params[0],
                                  ref.oracle.agent.actor.params[0])


def test_search_cost_agrees_with_the_one_channel_cost(model, data):
    """AMC's per-layer evaluator (the budget wall's fast path) and the one
    cost of channel counts (``pruning.targets.ChannelMacs``) agree."""
    x, y = data
    hm = AMCHyperModel(model, x, (x, y), budget=0.5, round_to=1)
    space = hm.space
    rng = np.random.default_rng(3)
    for _ in range(20):
        counts = np.array([int(rng.integers(1, s + 1)) for s in space.sizes])
        assert space.cost(counts) == pytest.approx(space.macs(counts))
