"""Joint pruning + quantization search: the budget wall over channels and
bits, keras-tuner glue, warm start, resume after a kill.

Tiny model (ResNet-8, width 4, 12x12 inputs); the oracle / resume tests use
fake metrics (a reward computed from the proposal) so nothing is built.
"""

from typing import ClassVar

import keras
import keras_tuner as kt
import numpy as np
import pytest

import tfcomp
from tfcomp.hardware import BISMO, CostTable
from tfcomp.pruning import Plan
from tfcomp.tuners.joint import JointHyperModel, JointOracle, JointTuner


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(1)
    return tfcomp.zoo.resnet(depth=8, width=4, input_shape=(12, 12, 1))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (24, 12, 12, 1)).astype("float32")
    return x, rng.integers(0, 10, 24)


def _hm(model, data, budget=0.5, hardware="bismo", **kw):
    x, y = data
    return JointHyperModel(model, (x, y), (x, y),
                           hardware=BISMO() if hardware == "bismo" else
                           hardware, budget=budget, finetune_epochs=0,
                           batch_size=32, **kw)


class _Fake(JointTuner):
    """Fake metrics: reward from the walled point; nothing is built."""

    kill_at = None
    runs: ClassVar[list] = []

    def run_trial(self, trial, *args, **kwargs):
        if trial.trial_id == self.kill_at:
            raise KeyboardInterrupt  # a kill in the middle of the trial
        _Fake.runs.append(trial.trial_id)
        keep, bits = self.hypermodel.point(trial.hyperparameters)
        reward = sum(keep.values()) / 100 + sum(w for w, _ in bits.values())
        return {"reward": float(reward),
                "cost_ratio": self.hypermodel.cost(trial.hyperparameters)
                / self.hypermodel.space.full_cost}


def _tuner(hm, directory, trials, overwrite=True, cls=_Fake, **kw):
    return cls(hm, max_trials=trials, seed=0, warmup=2,
               agent_config={"hidden": (32, 32), "batch_size": 8},
               directory=str(directory), project_name="j",
               overwrite=overwrite, **kw)


@pytest.mark.parametrize("resource,hardware,budget", [
    ("latency", BISMO(), 0.5), ("bops", None, 0.2)])
def test_every_proposal_meets_the_budget(model, data, resource, hardware,
                                         budget):
    hm = _hm(model, data, budget, hardware, resource=resource)
    env = hm.space
    rng = np.random.default_rng(0)
    for seed in range(4):
        r = np.random.default_rng(seed)
        _, _, info = env.rollout(lambda s, r=r: r.uniform(0, 1, 1))
        assert info["cost_ratio"] <= budget * (1 + 1e-9)
    _, _, info = env.rollout(lambda s: [1.0])    # the greediest episode
    assert info["cost_ratio"] <= budget * (1 + 1e-9)
    assert info["cost_ratio"] > 0.9 * budget      # and it uses the budget
    for _ in range(4):  # any tuner's values are walled the same way
        hp = kt.HyperParameters()
        hm.declare_hyperparameters(hp)
        values = {n: (rng.uniform(0.2, 1) if n.startswith("preserve/")
                      else int(rng.choice(env.widths))) for n in env.names}
        keep, bits = hm.point(values)
        assert set(bits) == set(env.space.layers)
        assert {w for w, a in bits.values()} <= set(env.widths) | {8}
        assert hm.cost(values) <= budget * env.full_cost * (1 + 1e-9)
    first, last = env.space.layers[0], env.space.layers[-1]
    assert bits[first] == bits[last] == (8, 8)


def test_unreachable_budget_says_the_minimum(model, data):
    with pytest.raises(ValueError, match="minimum budget is"):
        _hm(model, data, budget=0.001)
    with pytest.raises(ValueError, match="needs hardware"):
        JointHyperModel(model, data, data, hardware=None)
    with pytest.raises(ValueError, match="decay='linear'"):
        _hm(model, data, decay="linear")


def test_warm_start_replays_the_point(model, data, tmp_path):
    hm = _hm(model, data)
    env = hm.space
    keep = {g.id: max(o[0], g.size // 2) for g, o in
            zip(env.space.groups, env.options)}
    bits = {n: (4, 4) for n in env.space.layers}
    want = hm.point(env.values((env.space.counts_vector(keep),
                                np.array([bits[n] for n in env.space.layers]
                                         ))))
    tuner = _tuner(hm, tmp_path, 2, warm_start=(keep, bits))
    values = tuner.oracle.populate_space("0")["values"]
    assert hm.point(values) == want
    with pytest.raises(ValueError, match="warm_start"):
        JointOracle(hm, max_trials=1, warm_start=[1, 2, 3])
    with pytest.raises(TypeError, match="JointHyperModel"):
        JointOracle(object(), max_trials=1)


def test_local_episodes_explore_around_the_warm_start(model, data,
                                                     tmp_path):
    hm = _hm(model, data)
    env = hm.space
    keep = {g.id: max(o[0], g.size // 2) for g, o in
            zip(env.space.groups, env.options)}
    bits = {n: (4, 4) for n in env.space.layers}
    base = np.asarray(env.actions(keep, bits))
    tuner = _tuner(hm, tmp_path, 4, warm_start=(keep, bits),
                   local_episodes=2, local_sigma=0.05)
    scripted = np.asarray(tuner.oracle.scripted)
    assert scripted.shape == (3, len(base))
    np.testing.assert_allclose(scripted[0], base)
    fit = np.asarray(env.within_budget(base))  # this warm start overspends
    step = np.abs(scripted[1:] - fit)
    assert 0 < step.max() <= 0.5 and step.mean() < 0.1  # near, not equal
    assert (scripted >= 0).all() and (scripted <= 1).all()
    for a in scripted[1:]:  # within the budget before the wall: no 2-bit tail
        counts, widths = env.unwalled(a)
        assert env.space.total(counts, env.policy(widths)) <= \
            hm.budget * env.full_cost * (1 + 1e-9)
        steps = iter(a)
        values, _, _ = env.rollout(lambda s, steps=steps: [next(steps)])
        assert values == env.values((counts, widths))
    tuner.search(verbose=0)
    trials = tuner.oracle.trials
    for t in trials.values():  # walled: every episode within the budget
        assert hm.cost(t.hyperparameters.values) <= \
            hm.budget * env.full_cost * (1 + 1e-9)
    again = _tuner(hm, tmp_path / "b", 4, warm_start=(keep, bits),
                   local_episodes=2, local_sigma=0.05)
    np.testing.assert_array_equal(again.oracle.scripted, scripted)
    with pytest.raises(ValueError, match="local_episodes needs warm_start"):
        JointOracle(hm, max_trials=2, local_episodes=1)
    with pytest.raises(ValueError, match="local_sigma"):
        JointOracle(hm, max_trials=2, warm_start=(keep, bits),
                    local_sigma=0.0)


def test_resume_after_a_kill_loses_and_repeats_nothing(model, data,
                                                       tmp_path):
    hm = _hm(model, data)
    ref = _tuner(hm, tmp_path / "ref", 5)
    ref.search(verbose=0)
    expected = [ref.oracle.get_trial(t).hyperparameters.values
                for t in sorted(ref.oracle.trials)]
    _Fake.runs = []
    _Fake.kill_at = "2"
    killed = _tuner(hm, tmp_path / "run", 5)
    with pytest.raises(KeyboardInterrupt):
        killed.search(verbose=0)
    _Fake.kill_at = None
    resumed = _tuner(hm, tmp_path / "run", 5, overwrite=False)
    resumed.search(verbose=0)
    assert _Fake.runs == ["0", "1", "2", "3", "4"]
    trials = resumed.oracle.trials
    assert sorted(trials) == ["0", "1", "2", "3", "4"]
    assert all(t.status == "COMPLETED" for t in trials.values())
    assert [trials[t].hyperparameters.values for t in sorted(trials)] \
        == expected
    np.testing.assert_array_equal(resumed.oracle.agent.actor.params[0],
                                  ref.oracle.agent.actor.params[0])


@pytest.mark.slow
def test_real_trials_prune_quantize_and_meet_the_budget(model, data,
                                                        tmp_path):
    hm = _hm(model, data, budget=0.5)
    tuner = JointTuner(hm, max_trials=2, seed=0, warmup=1,
                       agent_config={"hidden": (16, 16)},
                       directory=str(tmp_path), project_name="real")
    tuner.search(verbose=0)
    plan, bits = tuner.get_best()
    assert isinstance(plan, Plan)
    small = tfcomp.prune_channels(model, plan)
    dense = CostTable(model, "latency", BISMO()).full_cost
    cost = CostTable(small, "latency", BISMO()).total(bits) / dense
    assert cost <= 0.5 * (1 + 1e-9)
    best = tuner.oracle.get_best_trials(1)[0]
    assert best.metrics.get_last_value("cost_ratio") == pytest.approx(
        cost, rel=1e-9)
    # RandomSearch runs on the same HyperModel, every model in budget
    rs = kt.RandomSearch(hm, objective=kt.Objective("reward", "max"),
                         max_trials=1, directory=str(tmp_path),
                         project_name="rs", seed=0)
    rs.search(verbose=0)
    done = list(rs.oracle.trials.values())[0]
    assert done.metrics.get_last_value("cost_ratio") <= 0.5 * (1 + 1e-9)
