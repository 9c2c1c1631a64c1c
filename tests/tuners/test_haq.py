"""HAQ search: resource wall, action mapping, keras-tuner glue, resume.

Tiny models (ResNet-8, 12x12 inputs; width 16 for Bit Fusion, whose 16x32
array tiling hides bit-widths on narrower layers). The oracle / resume tests
use fake metrics (a reward computed from the proposal), so nothing is
quantized or trained; one test runs a real 2-trial search.
"""

import json
import os
import re
from typing import ClassVar

import keras
import keras_tuner as kt
import numpy as np
import pytest

import tfcomp
from tfcomp.hardware import BISMO, BitFusion
from tfcomp.quantization import quantize_model
from tfcomp.tuners.haq import HAQHyperModel, HAQOracle, HAQTuner, action_to_bits


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(1)
    return tfcomp.zoo.resnet(depth=8, width=4, input_shape=(12, 12, 1))


@pytest.fixture(scope="module")
def wide_model():
    keras.utils.set_random_seed(2)
    return tfcomp.zoo.resnet(depth=8, width=16, input_shape=(12, 12, 1))


@pytest.fixture(scope="module")
def three_layer_model():
    """Conv -> Conv -> Dense: three searched bit-widths (cheap for BO)."""
    keras.utils.set_random_seed(3)
    inp = keras.Input((12, 12, 1))
    h = keras.layers.Conv2D(4, 3, activation="relu", name="c1")(inp)
    h = keras.layers.Conv2D(8, 3, strides=2, activation="relu",
                            name="c2")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inp, keras.layers.Dense(10, name="fc")(h))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (32, 12, 12, 1)).astype("float32")
    y = rng.integers(0, 10, 32)
    return x, y


def _fake_reward(policy):
    """Peaked at 5-bit weights, 6-bit activations."""
    return -sum((w - 5) ** 2 + (a - 6) ** 2 for w, a in policy.values()) / 50


class FakeHAQ(HAQHyperModel):
    """Fake metrics computed from the (walled) proposal; nothing is
    quantized or trained."""

    def build(self, hp):
        return self.model

    def fit(self, hp, model, *args, **kwargs):
        policy = self.policy(hp)
        cost = self.policy_cost(policy)
        return {"reward": _fake_reward(policy), "cost": cost,
                "cost_ratio": cost / self.full_cost}


def _random_policy(seed):
    rng = np.random.default_rng(seed)
    return lambda state: rng.uniform(0.0, 1.0, 1)


def _check_rules(hm, policy):
    first, last = hm.layers[0], hm.layers[-1]
    assert set(policy) == set(hm.layers)
    assert policy[first] == (8, 8)   # the input image is 8-bit
    assert policy[last] == (8, 8)
    for w, a in policy.values():
        assert hm.b_min <= w <= 8 and hm.b_min <= a <= 8


# The wall tests need a landscape where both weight and activation bits
# matter: the small 2x64x2 instance without refetch and drain costs on
# these tiny models (the paper's
# 8x256x8 default is fetch-bound here, so weight bits barely matter).
TINY_BISMO = {"dm": 2, "dk": 64, "dn": 2, "tile_overhead": 0,
              "lhs_refetch": False}

CASES = [("bitfusion", (0.8, 0.88, 0.95)), ("bismo", (0.45, 0.6, 0.85))]


@pytest.mark.parametrize("hw_name,budgets", CASES)
def test_wall_meets_budget_lowers_only_and_keeps_first_last(
        model, wide_model, data, hw_name, budgets):
    x, y = data
    hw, net = ((BitFusion("edge"), wide_model) if hw_name == "bitfusion"
               else (BISMO(), model))
    full = hw.model_cost(net, bits=(8, 8)).latency_s
    lowered = 0
    for budget in budgets:
        hm = HAQHyperModel(net, (x, y), (x, y), hardware=hw, budget=budget)
        assert hm.full_cost == pytest.approx(full, rel=1e-9)
        for seed in range(40):
            values, transitions, info = hm.space.rollout(_random_policy(seed))
            # the oracle's proposal before the wall, as a policy dict
            proposed = {n: tuple(p) for n, p in zip(hm.layers,
                                                    info["proposed"])}
            final = hm.policy(values)
            _check_rules(hm, final)
            _check_rules(hm, proposed)
            # latency from the hardware model itself, not the space's table
            lat = hw.model_cost(net, bits=final).latency_s
            assert lat == pytest.approx(info["cost"], rel=1e-9)
            assert lat <= budget * full * (1 + 1e-9)
            for n in hm.layers:
                assert final[n][0] <= proposed[n][0]
                assert final[n][1] <= proposed[n][1]
            lowered += final != proposed
            assert len(transitions) == 2 * len(hm.layers)
            # walled values are a fixed point of the wall
            assert hm.policy(values) == hm.policy(values, wall=False)
        # arbitrary values (as other tuners propose them) are walled too
        rng = np.random.default_rng(7)
        for _ in range(20):
            values = {n: int(rng.integers(hm.b_min, hm.b_max + 1))
                      for n in hm.hyperparameter_names}
            raw, walled = hm.policy(values, wall=False), hm.policy(values)
            _check_rules(hm, walled)
            assert hm.policy_cost(walled) <= budget * full * (1 + 1e-9)
            assert all(walled[n][d] <= raw[n][d] for n in hm.layers
                       for d in (0, 1))
    assert lowered > 0  # the wall was exercised


def _paper_wall(space, policy):
    """The official _final_action_wall (one-bit steps), for comparison:
    from the last layer back, each layer's activation bits, then its
    weight bits, one bit each, checking the budget after every step."""
    p = np.array(policy).copy()
    limit = space.budget_cost * (1 + 1e-9)
    while space.cost(p) > limit:
        for i in range(len(p) - 1, -1, -1):
            for d in (1, 0):
                if space.free[i, d] and p[i, d] > space.b_min:
                    p[i, d] -= 1
                if space.cost(p) <= limit:
                    break
            if space.cost(p) <= limit:
                break
    return p


def test_wall_is_the_papers_on_bismo_and_skips_free_steps_on_bitfusion(
        model, wide_model, data):
    x, y = data
    rng = np.random.default_rng(3)
    bismo = HAQHyperModel(model, (x, y), (x, y), hardware=BISMO(**TINY_BISMO),
                          budget=0.45).space
    bf = HAQHyperModel(wide_model, (x, y), (x, y), hardware=BitFusion("edge"),
                       budget=0.8).space
    for _ in range(30):
        p = np.where(bismo.free, rng.integers(2, 9, bismo.free.shape), 8)
        np.testing.assert_array_equal(bismo.wall(p), _paper_wall(bismo, p))
        p = np.where(bf.free, rng.integers(2, 9, bf.free.shape), 8)
        out = bf.wall(p)
        assert bf.cost(out) <= bf.budget_cost * (1 + 1e-9)
        # every layer the wall changed got cheaper (it skips widths that
        # save nothing, e.g. 5 -> 4 activation bits after its weights fell)
        for i in np.flatnonzero((out != p).any(axis=1)):
            assert bf._cost_of(i, *out[i]) < bf._cost_of(i, *p[i])


def test_wall_leaves_a_policy_under_budget_alone(model, data):
    x, y = data
    hm = HAQHyperModel(model, (x, y), (x, y), hardware=BISMO(), budget=0.85)
    rng = np.random.default_rng(1)
    for _ in range(30):
        values = {n: int(rng.integers(2, 9)) for n in hm.hyperparameter_names}
        raw = hm.policy(values, wall=False)
        if hm.policy_cost(raw) <= 0.85 * hm.full_cost:
            assert hm.policy(values) == raw
    full = HAQHyperModel(model, (x, y), (x, y), hardware=BISMO(), budget=1.0)
    values, _, _ = full.space.rollout(lambda s: [1.0])
    assert full.policy(values) == {n: (8, 8) for n in full.layers}


@pytest.mark.parametrize("resource", ["size", "bops"])
def test_size_and_bops_are_the_profiles(model, data, resource):
    """HAQ's size / BOPs of a policy equal tfcomp.profile(model, bits=...)'s
    (the one cost model: size counts the bias, in bytes)."""
    x, y = data
    hm = HAQHyperModel(model, (x, y), (x, y), resource=resource, budget=1.0)
    rng = np.random.default_rng(0)
    for _ in range(5):
        values = {n: int(rng.integers(2, 9)) for n in hm.hyperparameter_names}
        policy = hm.policy(values)
        prof = tfcomp.profile(model, bits=policy)
        records = [prof.by_name(n) for n in policy]
        want = (sum(r.size_bytes for r in records) if resource == "size"
                else sum(r.bops for r in records))
        assert hm.policy_cost(policy) == pytest.approx(want, rel=1e-12)
    full = tfcomp.profile(model, bits={n: (8, 8) for n in hm.layers})
    if resource == "size":
        assert hm.full_cost == sum(full.by_name(n).size_bytes
                                   for n in hm.layers)


def test_nested_model_layers_as_quantize_model_names_them(data):
    x, y = data
    keras.utils.set_random_seed(4)
    inner_in = keras.Input((12, 12, 1))
    h = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inner_in)
    backbone = keras.Model(inner_in, h, name="backbone")
    inp = keras.Input((12, 12, 1))
    h = keras.layers.Conv2D(4, 3, activation="relu", name="c2")(backbone(inp))
    h = keras.layers.GlobalAveragePooling2D()(h)
    nested = keras.Model(inp, keras.layers.Dense(10, name="fc")(h))
    hm = HAQHyperModel(nested, (x, y), (x, y), resource="size", budget=0.8)
    assert hm.layers == ["backbone_conv", "c2", "fc"]
    policy = hm.policy({})
    q = quantize_model(nested, bits=policy)
    assert tfcomp.quantization.quantization_report(q).quantized == policy


def test_target_keyword_is_a_deprecated_alias(model, data):
    x, y = data
    with pytest.warns(DeprecationWarning, match="resource"):
        hm = HAQHyperModel(model, (x, y), (x, y), target="bops", budget=0.5)
    assert hm.resource == "bops"
    with pytest.warns(DeprecationWarning, match="resource"):
        assert hm.target == "bops"


def test_action_to_bits_mapping():
    for b_min, b_max in ((2, 8), (1, 8), (3, 6), (4, 4)):
        assert action_to_bits(0.0, b_min, b_max) == b_min
        assert action_to_bits(1.0, b_min, b_max) == b_max
        grid = np.linspace(0, 1, 7001)
        bits = [action_to_bits(a, b_min, b_max) for a in grid]
        assert np.all(np.diff(bits) >= 0)
        # equal bins: every bit-width gets 1 / (b_max - b_min + 1) of [0, 1]
        counts = np.bincount(bits, minlength=9)[b_min:b_max + 1]
        nb = b_max - b_min + 1
        assert np.all(np.abs(counts / len(grid) - 1 / nb) < 2e-3)
    # out-of-range actions are clipped
    assert action_to_bits(-0.5) == 2 and action_to_bits(1.5) == 8


def test_episode_actions_map_through_the_space(model, data):
    x, y = data
    hm = HAQHyperModel(model, (x, y), (x, y), resource="bops", budget=1.0,
                       b_min=3, b_max=7)
    for a, want in ((0.0, 3), (1.0, 7)):
        values, transitions, info = hm.space.rollout(lambda s, a=a: [a])
        assert set(values.values()) == {want}
        policy = hm.policy(values)
        _check_rules(hm, policy)
        assert policy[hm.layers[0]] == (8, 8)  # first layer fixed at 8/8
        assert policy[hm.layers[1]] == (want, want)
        assert info["cost"] == pytest.approx(hm.policy_cost(policy))
        for s, act, _s2, _done in transitions:
            assert s.shape == (10,) and np.all((s >= 0) & (s <= 1))
            assert act == [a]
        # state: weight/activation flag alternates, previous action carried
        assert [t[0][8] for t in transitions[:4]] == [0, 1, 0, 1]
        assert transitions[1][0][9] == pytest.approx(a)
        assert [t[3] for t in transitions] == [False] * (
            len(transitions) - 1) + [True]


def test_unreachable_budget_says_the_minimum(model, data):
    x, y = data
    with pytest.raises(ValueError, match="minimum reachable budget is") as e:
        HAQHyperModel(model, (x, y), (x, y), hardware=BISMO(), budget=0.05)
    minimum = float(re.search(r"minimum reachable budget is ([0-9]+\.[0-9]+)",
                              str(e.value)).group(1))
    assert 0.05 < minimum < 1
    hm = HAQHyperModel(model, (x, y), (x, y), hardware=BISMO(),
                       budget=minimum)
    assert hm.min_cost <= minimum * hm.full_cost
    assert hm.min_cost / hm.full_cost == pytest.approx(minimum, abs=1e-4)
    with pytest.raises(ValueError, match="minimum reachable budget is"):
        HAQHyperModel(model, (x, y), (x, y), hardware=BISMO(),
                      budget=minimum - 2e-4)


def test_model_without_quantizable_layers(data):
    x, y = data
    inp = keras.Input((12, 12, 1))
    out = keras.layers.Activation("softmax")(
        keras.layers.Flatten()(keras.layers.MaxPooling2D(2)(inp)))
    with pytest.raises(ValueError, match="no quantizable layers"):
        HAQHyperModel(keras.Model(inp, out), (x, y), (x, y), resource="bops")
    out = keras.layers.Dense(10)(keras.layers.Flatten()(inp))
    with pytest.raises(ValueError, match="nothing to search"):
        HAQHyperModel(keras.Model(inp, out), (x, y), (x, y), resource="bops")


def test_bad_arguments(model, data):
    x, y = data
    with pytest.raises(ValueError, match="budget must be in"):
        HAQHyperModel(model, (x, y), (x, y), hardware=BISMO(), budget=0.0)
    with pytest.raises(ValueError, match="needs hardware"):
        HAQHyperModel(model, (x, y), (x, y), resource="latency")
    with pytest.raises(ValueError, match="b_min must be <= b_max"):
        HAQHyperModel(model, (x, y), (x, y), resource="bops", b_min=6,
                      b_max=4)
    with pytest.raises(TypeError, match="HAQHyperModel"):
        HAQOracle(object())


def _tuner(hm, directory, max_trials, overwrite=True, cls=HAQTuner,
           project="p"):
    return cls(hm, max_trials=max_trials, seed=0, warmup=2,
               agent_config={"batch_size": 8, "hidden": (32, 32)},
               directory=str(directory), project_name=project,
               overwrite=overwrite)


def test_reload_gives_the_same_next_proposal(model, data, tmp_path):
    x, y = data
    hm = FakeHAQ(model, (x, y), (x, y), hardware=BISMO(), budget=0.85)
    tuner = _tuner(hm, tmp_path, 4)
    tuner.search(verbose=0)
    assert tuner.oracle.agent.num_updates == 2 * 2 * len(hm.layers)
    state = json.loads((tmp_path / "p" / "oracle.json").read_text())
    assert state["tfcomp"]["episode"] == 4
    assert len(state["tfcomp"]["history"]) == 4
    again = _tuner(hm, tmp_path, 4, overwrite=False)
    assert again.oracle.episode == 4
    assert again.oracle.agent.num_updates == tuner.oracle.agent.num_updates
    a = tuner.oracle.populate_space("next")["values"]
    b = again.oracle.populate_space("next")["values"]
    assert a == b
    c = again.oracle.populate_space("after")["values"]
    assert c == tuner.oracle.populate_space("after")["values"]
    other = _tuner(hm, tmp_path, 4, project="q")  # fresh project, seed 0
    other_seed = HAQTuner(hm, max_trials=4, seed=1, warmup=2,
                          agent_config={"hidden": (32, 32)},
                          directory=str(tmp_path), project_name="r")
    first = [other_seed.oracle.populate_space(str(i))["values"]
             for i in range(2)]
    mine = [other.oracle.populate_space(str(i))["values"] for i in range(2)]
    assert first != mine


class _KillAt(HAQTuner):
    kill_at = None
    runs: ClassVar[list] = []

    def run_trial(self, trial, *args, **kwargs):
        if trial.trial_id == self.kill_at:
            raise KeyboardInterrupt  # a kill in the middle of the trial
        _KillAt.runs.append(trial.trial_id)
        return super().run_trial(trial, *args, **kwargs)


def _reference(hm, tmp_path, n):
    ref = _tuner(hm, tmp_path / "ref", n)
    ref.search(verbose=0)
    return ref, [ref.oracle.get_trial(t).hyperparameters.values
                 for t in sorted(ref.oracle.trials)]


def _check_resumed(resumed, ref, expected, n):
    trials = resumed.oracle.trials
    ids = [str(i) for i in range(n)]
    assert sorted(trials) == ids
    assert all(t.status == "COMPLETED" for t in trials.values())
    assert [trials[t].hyperparameters.values for t in ids] == expected
    assert [trials[t].score for t in ids] == [
        ref.oracle.trials[t].score for t in ids]
    np.testing.assert_array_equal(resumed.oracle.agent.actor.params[0],
                                  ref.oracle.agent.actor.params[0])
    assert resumed.oracle.agent.num_updates == ref.oracle.agent.num_updates


def test_resume_after_a_kill_in_a_trial(model, data, tmp_path):
    x, y = data
    hm = FakeHAQ(model, (x, y), (x, y), hardware=BISMO(), budget=0.85)
    ref, expected = _reference(hm, tmp_path, 6)
    _KillAt.runs = []
    _KillAt.kill_at = "3"
    killed = _tuner(hm, tmp_path / "run", 6, cls=_KillAt)
    with pytest.raises(KeyboardInterrupt):
        killed.search(verbose=0)
    _KillAt.kill_at = None
    resumed = _tuner(hm, tmp_path / "run", 6, overwrite=False, cls=_KillAt)
    resumed.search(verbose=0)
    assert _KillAt.runs == ["0", "1", "2", "3", "4", "5"]
    _check_resumed(resumed, ref, expected, 6)


KILL_POINTS = {
    # inside create_trial: trial.json written, oracle.json not
    "proposing": lambda o, k: k in o.start_order and k not in o.end_order,
    # inside end_trial: trial ended in oracle.json, episode not learnt yet
    "ending": lambda o, k: k in o.end_order and k in o._pending,
    # inside end_trial: learnt, the new agent checkpoint not yet named
    "learning": lambda o, k: k in o.end_order and k not in o._pending,
}


class _KillOnSave(HAQTuner):
    """Killed when the oracle saves at a given point of trial ``kill_at``."""

    runs: ClassVar[list] = []

    def __init__(self, *args, kill_at=None, point=None, **kwargs):
        super().__init__(*args, **kwargs)
        oracle = self.oracle
        plain_save = oracle.save

        def save():
            if kill_at is not None and KILL_POINTS[point](oracle, kill_at):
                raise KeyboardInterrupt
            plain_save()

        oracle.save = save

    def run_trial(self, trial, *args, **kwargs):
        _KillOnSave.runs.append(trial.trial_id)
        return super().run_trial(trial, *args, **kwargs)


@pytest.mark.parametrize("point", sorted(KILL_POINTS))
def test_resume_after_a_kill_while_the_oracle_saves(model, data, tmp_path,
                                                    point):
    x, y = data
    hm = FakeHAQ(model, (x, y), (x, y), hardware=BISMO(), budget=0.85)
    ref, expected = _reference(hm, tmp_path, 5)
    kw = {"max_trials": 5, "seed": 0, "warmup": 2,
          "agent_config": {"batch_size": 8, "hidden": (32, 32)},
          "directory": str(tmp_path), "project_name": "run"}
    _KillOnSave.runs = []
    killed = _KillOnSave(hm, kill_at="2", point=point, overwrite=True, **kw)
    with pytest.raises(KeyboardInterrupt):
        killed.search(verbose=0)
    assert os.path.exists(tmp_path / "run" / "trial_2" / "trial.json")
    resumed = _KillOnSave(hm, overwrite=False, **kw)
    if point == "proposing":
        # the never-run trial is dropped and proposed again
        assert sorted(resumed.oracle.trials) == ["0", "1"]
    resumed.search(verbose=0)
    assert _KillOnSave.runs == ["0", "1", "2", "3", "4"]
    _check_resumed(resumed, ref, expected, 5)


@pytest.mark.slow
def test_tiny_real_search_and_best_policy(three_layer_model, data,
                                          tmp_path):
    x, y = data
    model = three_layer_model
    hw = BISMO(**TINY_BISMO)  # the 8x256x8 default cannot reach 0.85 here
    hm = HAQHyperModel(model, (x, y), (x, y), hardware=hw, budget=0.85,
                       finetune_steps=1, batch_size=16)
    tuner = HAQTuner(hm, max_trials=2, seed=0, warmup=1,
                     agent_config={"hidden": (16, 16)},
                     directory=str(tmp_path), project_name="real")
    tuner.search(verbose=0)
    trials = tuner.oracle.trials
    assert sorted(trials) == ["0", "1"]
    assert all(t.status == "COMPLETED" for t in trials.values())
    best_trial = tuner.oracle.get_best_trials(1)[0]
    assert set(best_trial.metrics.metrics) >= {"reward", "accuracy", "cost",
                                               "cost_ratio"}
    acc = best_trial.metrics.get_last_value("accuracy")
    assert best_trial.score == pytest.approx(
        0.1 * 100 * (acc - hm.float_accuracy()), abs=1e-4)
    best = tuner.get_best_policy()
    _check_rules(hm, best)
    assert all(isinstance(v, tuple) and len(v) == 2 for v in best.values())
    cost = hw.model_cost(model, bits=best).latency_s
    assert cost <= 0.85 * hm.full_cost * (1 + 1e-9)
    assert best_trial.metrics.get_last_value("cost") == pytest.approx(cost)
    with open(os.path.join(tuner.get_trial_dir(best_trial.trial_id),
                           "policy.json")) as f:
        saved = json.load(f)
    assert {k: tuple(v) for k, v in saved.items()} == best
    # the policy drives quantize_model directly
    qat = quantize_model(model, bits=best)
    prof = tfcomp.profile(qat)
    for name, (w, a) in best.items():
        rec = prof.by_name(name)
        assert (rec.w_bits, rec.a_bits) == (w, a)
    assert qat(x[:2]).shape == (2, 10)


@pytest.mark.slow
def test_rescore_ranks_the_best_trials_by_their_mean_over_seeds(
        three_layer_model, data, tmp_path):
    x, y = data
    hm = HAQHyperModel(three_layer_model, (x, y), (x, y), hardware=BISMO(**TINY_BISMO),
                       budget=0.85, finetune_steps=1, batch_size=16)
    tuner = HAQTuner(hm, max_trials=3, seed=0, warmup=3,
                     directory=str(tmp_path), project_name="rescore")
    with pytest.raises(ValueError, match="No trial"):
        tuner.rescore()
    tuner.search(verbose=0)
    for bad in ({"top_k": 0}, {"top_k": 1.5}, {"seeds": []},
                {"seeds": [-1]}, {"seeds": "01"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            tuner.rescore(**bad)
    ranked = tuner.rescore(top_k=2, seeds=(0, 5))
    assert len(ranked) == 2
    assert ranked[0]["accuracy"] >= ranked[1]["accuracy"]
    best_ids = [t.trial_id for t in tuner.oracle.get_best_trials(2)]
    assert sorted(r["trial_id"] for r in ranked) == sorted(best_ids)
    for r in ranked:
        assert r["accuracy"] == pytest.approx(np.mean(r["accuracies"]))
        _check_rules(hm, r["policy"])
        trial = tuner.oracle.trials[r["trial_id"]]
        assert r["policy"] == hm.policy(trial.hyperparameters)
        # each seed is the trial's fine-tune on a fresh model, that order
        again = hm.fit(trial.hyperparameters,
                       hm.quantized_model(trial.hyperparameters), seed=5)
        assert again["accuracy"] == pytest.approx(r["accuracies"][1])


@pytest.mark.slow
def test_rescore_evaluates_a_repeated_policy_once(three_layer_model, data,
                                                 tmp_path, monkeypatch):
    x, y = data
    hm = HAQHyperModel(three_layer_model, (x, y), (x, y), hardware=BISMO(**TINY_BISMO),
                       budget=0.85, finetune_steps=1, batch_size=16)
    tuner = HAQTuner(hm, max_trials=2, seed=0, warmup=2,
                     directory=str(tmp_path), project_name="rescore_dup")
    tuner.search(verbose=0)
    best = tuner.oracle.get_best_trials(2)
    same = best[0].hyperparameters
    monkeypatch.setattr(tuner.oracle, "get_best_trials",
                        lambda n: [best[0], best[0]][:n])
    calls = []
    fit = hm.fit
    monkeypatch.setattr(hm, "fit", lambda *a, **k: calls.append(1)
                        or fit(*a, **k))
    ranked = tuner.rescore(top_k=2, seeds=(0, 1))
    assert len(ranked) == 2 and len(calls) == 2  # one policy, two seeds
    assert ranked[0]["accuracies"] == ranked[1]["accuracies"]
    assert ranked[0]["policy"] == hm.policy(same)


@pytest.mark.slow
def test_reused_graph_scores_a_policy_as_a_fresh_model(model, data):
    x, y = data
    kw = {"hardware": BISMO(), "budget": 0.9, "finetune_steps": 2,
          "batch_size": 16}
    shared = HAQHyperModel(model, (x, y), (x, y), **kw)
    fresh = HAQHyperModel(model, (x, y), (x, y), reuse_graph=False, **kw)
    first = None
    for seed in range(2):
        rng = np.random.default_rng(seed)
        values = {n: int(rng.integers(2, 9))
                  for n in shared.hyperparameter_names}
        q = shared.build(values)
        first = first or q
        assert q is first  # one model, reconfigured per trial
        ref = fresh.build(values)
        got, want = shared.fit(values, q), fresh.fit(values, ref)
        assert got["cost"] == want["cost"]
        # same fine-tune (seeded data order, fresh optimizer) and grids:
        # the fine-tuned models agree up to float round-off
        out, out_ref = (keras.ops.convert_to_numpy(m(x)) for m in (q, ref))
        scale = np.abs(out_ref).max()
        assert np.mean(np.abs(out - out_ref) <= 1e-3 * scale) > 0.95
        assert got["accuracy"] == pytest.approx(want["accuracy"], abs=0.07)
    other = shared.quantized_model(values)
    assert other is not first
    assert tfcomp.profile(other).by_name(shared.searched_layers[1]).w_bits \
        == shared.policy(values)[shared.searched_layers[1]][0]


@pytest.mark.parametrize("tuner_cls", ["RandomSearch", "BayesianOptimization"])
@pytest.mark.slow
def test_keras_tuner_baselines_run_on_the_hypermodel(three_layer_model, data,
                                                     tmp_path, tuner_cls):
    x, y = data
    hm = FakeHAQ(three_layer_model, (x, y), (x, y), resource="bops",
                 budget=0.5)
    assert hm.hyperparameter_names == ["w_bits/c2", "a_bits/c2"]
    # BayesianOptimization: 2 random points, then 1 GP step (each GP step
    # runs 50 L-BFGS restarts, ~10 s on a loaded 2-core box).
    extra = {"num_initial_points": 2} if tuner_cls != "RandomSearch" else {}
    n = 3 if extra else 4
    tuner = getattr(kt, tuner_cls)(
        hm, objective=kt.Objective("reward", "max"), max_trials=n, seed=1,
        directory=str(tmp_path), project_name=tuner_cls, **extra)
    tuner.search(verbose=0)
    done = [t for t in tuner.oracle.trials.values()
            if t.status == "COMPLETED"]
    assert len(done) == n
    best = tuner.get_best_hyperparameters()[0]
    assert set(best.values) == set(hm.hyperparameter_names)
    policy = hm.policy(best)
    _check_rules(hm, policy)
    assert hm.policy_cost(policy) <= 0.5 * hm.full_cost * (1 + 1e-9)
    assert max(t.score for t in done) == pytest.approx(_fake_reward(policy))
    if extra:
        return
    # HAQTuner runs any keras-tuner oracle over the same space
    oracle = kt.oracles.RandomSearchOracle(
        objective=kt.Objective("reward", "max"), max_trials=2, seed=0)
    t2 = HAQTuner(hm, oracle=oracle, directory=str(tmp_path),
                  project_name=tuner_cls + "_haq")
    t2.search(verbose=0)
    assert len(t2.oracle.trials) == 2
    _check_rules(hm, t2.get_best_policy())


# -- one pricing, hardware-native widths, warm start ------------------------


def test_space_prices_with_the_allocators_cost_table(model, data):
    """HAQ and allocate_bits share one pricing (CostTable)."""
    from tfcomp.hardware import CostTable
    x, y = data
    hm = HAQHyperModel(model, (x, y), (x, y), hardware=BISMO(), budget=1.0)
    assert isinstance(hm.space.costs, CostTable)
    rng = np.random.default_rng(0)
    for _ in range(5):
        values = {n: int(rng.integers(2, 9)) for n in hm.hyperparameter_names}
        policy = hm.policy(values)
        assert hm.policy_cost(policy) == pytest.approx(
            hm.space.costs.total(policy), rel=1e-12)
    assert hm.full_cost == pytest.approx(hm.space.costs.full_cost,
                                         rel=1e-12)


def test_bitfusion_searches_only_its_native_widths(wide_model, data):
    x, y = data
    hm = HAQHyperModel(wide_model, (x, y), (x, y), hardware=BitFusion("edge"),
                       budget=0.9)
    assert hm.widths == (2, 4, 8)
    # an action mapping to 5 bits is snapped up to 8
    assert action_to_bits(0.5) == 5 and hm.space.snap(5) == 8
    values, _, info = hm.space.rollout(lambda s: [0.5])
    assert np.all(np.asarray(info["proposed"]) == 8)
    for seed in range(20):
        values, _, info = hm.space.rollout(_random_policy(seed))
        policy = hm.policy(values)
        _check_rules(hm, policy)
        held = {b for pair in policy.values() for b in pair}
        assert held <= {2, 4, 8}, held  # never 3, 5, 6 or 7
        assert set(np.ravel(info["proposed"])) <= {2, 4, 8}
    # values other tuners propose are snapped up too
    name = hm.hyperparameter_names[0]
    assert hm.policy({name: 5}, wall=False)[name.split("/", 1)[1]][0] == 8
    # keras-tuner sees a Choice of the native widths
    hp = kt.HyperParameters()
    hm.declare_hyperparameters(hp)
    assert hp._hps[name][0].values == [2, 4, 8]
    # bits="all": every width, as the paper
    every = HAQHyperModel(wide_model, (x, y), (x, y),
                          hardware=BitFusion("edge"), budget=0.9, bits="all")
    assert every.widths == tuple(range(2, 9))
    assert every.policy({name: 5}, wall=False)[name.split("/", 1)[1]][0] == 5


def test_widths_without_hardware_and_bad_widths(model, data):
    x, y = data
    hm = HAQHyperModel(model, (x, y), (x, y), resource="size", budget=0.8)
    assert hm.widths == tuple(range(2, 9))  # size: every width is native
    listed = HAQHyperModel(model, (x, y), (x, y), resource="bops",
                           budget=0.8, bits=[2, 4, 8, 16])
    assert listed.widths == (2, 4, 8)
    with pytest.raises(ValueError, match="bits must be"):
        HAQHyperModel(model, (x, y), (x, y), resource="bops", bits="some")
    with pytest.raises(ValueError, match=r"\[5, 7\].*bits='all'"):
        HAQHyperModel(model, (x, y), (x, y), hardware=BitFusion("edge"),
                      budget=1.0, b_min=5, b_max=7)


def _allocation(hm, budget):
    """An allocate_bits policy from a made-up sensitivity."""
    from tfcomp.hardware import allocate_bits
    from tfcomp.quantization.sensitivity import Sensitivity
    layers = hm.layers
    rng = np.random.default_rng(5)
    table = np.sort(rng.uniform(0, 1, (len(layers), 4)))[:, ::-1]
    sens = Sensitivity(layers, [2, 3, 4, 8], table)
    return allocate_bits(hm.model, sens, hm.resource, hm.hardware,
                         budget=budget)


def test_warm_start_replays_the_policy_then_its_neighbours(model, data,
                                                           tmp_path):
    x, y = data
    hm = FakeHAQ(model, (x, y), (x, y), hardware=BISMO(), budget=0.85)
    alloc = _allocation(hm, 0.85)
    assert dict(alloc) != hm.policy({})  # not the walled all-8 policy
    tuner = HAQTuner(hm, max_trials=5, seed=0, warmup=4, warm_start=alloc,
                     warm_start_neighbours=2,
                     agent_config={"batch_size": 8, "hidden": (32, 32)},
                     directory=str(tmp_path), project_name="warm")
    assert len(tuner.oracle.scripted) == 3
    tuner.search(verbose=0)
    trials = tuner.oracle.trials
    policies = [hm.policy(trials[str(i)].hyperparameters) for i in range(5)]
    assert policies[0] == dict(alloc)  # the first trial is the given one
    # neighbours: one searched width of one layer one step up or down,
    # then the wall (which keeps them within budget)
    space, widths = hm.space, list(hm.widths)
    base = np.array([alloc[n] for n in hm.layers])
    near = set()
    for i, d in zip(*np.nonzero(space.free)):
        k = widths.index(base[i, d])
        for j in (k - 1, k + 1):
            if 0 <= j < len(widths):
                q = base.copy()
                q[i, d] = widths[j]
                near.add(tuple(map(tuple, space.wall(q).tolist())))
    for p in policies[1:3]:
        assert p != policies[0]
        assert tuple(p[n] for n in hm.layers) in near
        assert hm.policy_cost(p) <= 0.85 * hm.full_cost * (1 + 1e-9)
    # every warm-start episode is in the replay buffer with its reward
    assert len(tuner.oracle.agent.buffer) == 5 * 2 * len(hm.layers)
    assert all(tuner.oracle._history[i][1] == i for i in range(5))
    # off by default
    plain = _tuner(hm, tmp_path, 2, project="plain")
    assert plain.oracle.scripted == []


def test_warm_start_is_mapped_onto_the_space_with_a_warning(wide_model,
                                                            data):
    x, y = data
    hm = FakeHAQ(wide_model, (x, y), (x, y), hardware=BitFusion("edge"),
                 budget=1.0)
    inner = hm.searched_layers[1]
    with pytest.warns(UserWarning, match=rf"{inner} \(5, 3\) -> \(8, 4\)"):
        oracle = HAQOracle(hm, max_trials=3, warm_start={inner: (5, 3)},
                           warm_start_neighbours=0)
    actions = iter(oracle.scripted[0])
    values, _, _ = hm.space.rollout(lambda s: [next(actions)])
    assert hm.policy(values)[inner] == (8, 4)
    with pytest.raises(ValueError, match="not quantizable"):
        HAQOracle(hm, max_trials=3, warm_start={"nope": (4, 4)})
    with pytest.raises(ValueError, match="pair of ints"):
        HAQOracle(hm, max_trials=3, warm_start={inner: 4})


def test_resume_after_a_kill_during_the_warm_start(model, data, tmp_path):
    x, y = data
    hm = FakeHAQ(model, (x, y), (x, y), hardware=BISMO(), budget=0.85)
    alloc = _allocation(hm, 0.85)

    def tuner(directory, cls=HAQTuner, overwrite=True):
        return cls(hm, max_trials=5, seed=0, warmup=2, warm_start=alloc,
                   warm_start_neighbours=2,
                   agent_config={"batch_size": 8, "hidden": (32, 32)},
                   directory=str(directory), project_name="p",
                   overwrite=overwrite)

    ref = tuner(tmp_path / "ref")
    ref.search(verbose=0)
    expected = [ref.oracle.get_trial(t).hyperparameters.values
                for t in sorted(ref.oracle.trials)]
    assert hm.policy(expected[0]) == dict(alloc)
    _KillAt.runs = []
    _KillAt.kill_at = "1"  # inside the warm-start episodes
    killed = tuner(tmp_path / "run", cls=_KillAt)
    with pytest.raises(KeyboardInterrupt):
        killed.search(verbose=0)
    _KillAt.kill_at = None
    # a resumed project replays the episodes it was started with, even
    # when warm_start is not given again
    with pytest.warns(UserWarning, match="other scripted"):
        other = HAQTuner(hm, max_trials=5, seed=0, warmup=2,
                         directory=str(tmp_path / "run"), project_name="p",
                         overwrite=False)
    assert other.oracle.scripted == ref.oracle.scripted
    resumed = tuner(tmp_path / "run", cls=_KillAt, overwrite=False)
    resumed.search(verbose=0)
    assert _KillAt.runs == ["0", "1", "2", "3", "4"]
    _check_resumed(resumed, ref, expected, 5)


class _StartVsOthers(FakeHAQ):
    """Validation accuracy 0.80 for the warm start, 0.80 + ``bonus`` for
    every other policy (HAQ's reward: 10 x the accuracy change)."""

    start, bonus = None, 0.0

    def fit(self, hp, model, *args, **kwargs):
        out = super().fit(hp, model)
        acc = 0.80 if self.policy(hp) == self.start else 0.80 + self.bonus
        out.update(accuracy=acc, reward=10.0 * (acc - 0.80))
        return out


@pytest.mark.parametrize("bonus,keeps_start", [(0.05, True), (0.5, False)])
def test_warm_start_kept_unless_beaten_beyond_the_noise(model, data,
                                                        tmp_path, bonus,
                                                        keeps_start):
    from tfcomp.tuners.haq_select import noise_margin
    x, y = data
    hm = _StartVsOthers(model, (x, y), (x, y), hardware=BISMO(),
                        budget=0.85)
    alloc = _allocation(hm, 0.85)
    hm.start, hm.bonus = dict(alloc), bonus
    tuner = HAQTuner(hm, max_trials=3, seed=0, warmup=3, warm_start=alloc,
                     warm_start_neighbours=2,
                     agent_config={"batch_size": 8, "hidden": (32, 32)},
                     directory=str(tmp_path), project_name=f"m{bonus}")
    tuner.search(verbose=0)
    assert tuner.oracle.warm_policy == dict(alloc)
    # 2 standard errors of 0.80 on 32 images: 1.41 reward units
    assert noise_margin(0.80, len(x)) == pytest.approx(
        20 * np.sqrt(0.8 * 0.2 / 32))
    best = hm.policy(tuner.oracle.get_best_trials(1)[0].hyperparameters)
    assert best != dict(alloc)  # a neighbour has the best reward
    assert tuner.get_best_policy(margin=0) == best  # HAQ's own rule
    got = tuner.get_best_policy()  # margin="auto"
    assert got == (dict(alloc) if keeps_start else best)
    assert tuner.get_best_policy(margin=1e9) == dict(alloc)
    with pytest.raises(ValueError, match="margin"):
        tuner.get_best_policy(margin=-1)
