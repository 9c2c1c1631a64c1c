"""Leases of tfcomp's oracles (tfcomp/tuners/_lease.py), in one process.

The oracle is driven the way keras-tuner's chief drives it for its workers
(``create_trial(tuner_id)``, ``update_trial``, ``get_trial``,
``end_trial``), with the lease clock replaced by a counter. The gRPC test
with a SIGKILLed worker is in test_distributed.py.
"""

import json
import os

import keras
import numpy as np
import pytest
from keras_tuner.engine.trial import Trial, TrialStatus

import tfcomp
from tfcomp._io import BadInputError
from tfcomp.pruning import Plan
from tfcomp.tuners import _lease
from tfcomp.tuners.amc import AMCHyperModel, AMCOracle, AMCTuner

LEASE = 10.0


class FakeAMC(AMCHyperModel):
    """Fake metrics: reward -sum((ratio - 0.6)^2); nothing is pruned."""

    def evaluate(self, hp, validation_data=None):
        counts = self.keep_counts(hp)
        sizes = {g.id: g.size for g in self.space.steps}
        reward = -sum((c / sizes[g] - 0.6) ** 2 for g, c in counts.items())
        return ({"reward": reward, "cost_ratio": self.predicted_cost(hp)
                 / self.dense_cost},
                Plan.from_keep(self.space.graph, {}))


@pytest.fixture(scope="module")
def hypermodel():
    keras.utils.set_random_seed(1)
    model = tfcomp.zoo.resnet(depth=8, width=4, input_shape=(12, 12, 1))
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (16, 12, 12, 1)).astype("float32")
    y = rng.integers(0, 10, 16)
    return FakeAMC(model, x, (x, y), budget=0.5, round_to=1)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(_lease, "_clock", c)
    return c


def _oracle(hm, tmp_path, max_trials, lease_timeout=LEASE):
    oracle = AMCOracle(hm, max_trials=max_trials, seed=0, warmup=2,
                       agent_config={"batch_size": 8, "hidden": (16, 16)},
                       lease_timeout=lease_timeout)
    oracle._set_project_dir(str(tmp_path), "p")
    hp = oracle.get_space()
    hm.declare_hyperparameters(hp)
    oracle.update_space(hp)
    return oracle


def _finish(oracle, trial_id, reward=-1.0):
    """What a worker does at the end of a trial (through gRPC copies)."""
    oracle.update_trial(trial_id, {"reward": reward})
    copy = Trial.from_proto(oracle.get_trial(trial_id).to_proto())
    copy.status = TrialStatus.COMPLETED
    return oracle.end_trial(copy)


def _chief_would_exit(oracle):
    # keras-tuner's oracle_chief.exit_chief
    return not oracle.ongoing_trials and not oracle.tuner_ids


def _all_done_once(oracle, n):
    ids = sorted(oracle.trials)
    assert len(ids) == n
    assert all(oracle.trials[t].status == "COMPLETED" for t in ids)
    assert sorted(oracle.end_order) == ids  # each ended exactly once
    assert oracle._retry_queue == []
    assert oracle._pending == {}
    assert sorted(h[0] for h in oracle._history) == ids
    state = json.loads(open(oracle._oracle_file()).read())
    assert state["ongoing_trials"] == {}


def test_dead_workers_trial_goes_to_another_worker(hypermodel, tmp_path,
                                                   clock):
    oracle = _oracle(hypermodel, tmp_path, 3)
    t0 = oracle.create_trial("w0")       # w0 will die holding t0
    values0 = dict(t0.hyperparameters.values)
    t1 = oracle.create_trial("w1")
    clock.now = 5
    _finish(oracle, t1.trial_id)
    t2 = oracle.create_trial("w1")
    assert t2.status == "RUNNING" and t2.trial_id not in (t0.trial_id,
                                                          t1.trial_id)
    clock.now = 9
    _finish(oracle, t2.trial_id)
    # no trial left, but t0's worker may still report: wait
    assert oracle.create_trial("w1").status == "IDLE"
    assert not _chief_would_exit(oracle)
    clock.now = 10.5   # w0 silent for 10.5 s > lease_timeout
    with pytest.warns(RuntimeWarning, match=r"'w0' sent nothing .*trial 0"):
        again = oracle.create_trial("w1")
    assert again.trial_id == t0.trial_id
    assert again.hyperparameters.values == values0   # same episode
    assert "w0" not in oracle.tuner_ids
    _finish(oracle, again.trial_id)
    assert oracle.create_trial("w1").status == "STOPPED"
    assert _chief_would_exit(oracle)
    _all_done_once(oracle, 3)
    assert oracle.episode == 3


def test_heartbeat_keeps_a_long_trial(hypermodel, tmp_path, clock):
    oracle = _oracle(hypermodel, tmp_path, 2)
    t0 = oracle.create_trial("w0")
    t1 = oracle.create_trial("w1")
    clock.now = 2
    _finish(oracle, t1.trial_id)
    for now in (8, 16, 24, 32):           # w0's heartbeat: get_trial
        clock.now = now
        oracle.get_trial(t0.trial_id)
        assert oracle.create_trial("w1").status == "IDLE"
    assert oracle.ongoing_trials["w0"].trial_id == t0.trial_id
    clock.now = 33
    _finish(oracle, t0.trial_id)
    # w1 asked to stop before w0 did: the last one to ask stops first
    assert oracle.create_trial("w0").status == "STOPPED"
    assert oracle.create_trial("w1").status == "STOPPED"
    assert _chief_would_exit(oracle)
    _all_done_once(oracle, 2)


def test_restarted_worker_resumes_its_trial(hypermodel, tmp_path, clock):
    oracle = _oracle(hypermodel, tmp_path, 2)
    t0 = oracle.create_trial("w0")
    clock.now = 9                          # restarted within its lease
    assert oracle.create_trial("w0").trial_id == t0.trial_id
    oracle.create_trial("w1")
    clock.now = 15                         # still within (renewed at 9)
    assert oracle.create_trial("w0").trial_id == t0.trial_id
    _finish(oracle, t0.trial_id)


def test_late_first_worker_counts_once(hypermodel, tmp_path, clock):
    oracle = _oracle(hypermodel, tmp_path, 2)
    t0 = oracle.create_trial("w0")       # w0 hangs, then comes back
    t1 = oracle.create_trial("w1")
    clock.now = 1
    _finish(oracle, t1.trial_id)
    clock.now = 20
    with pytest.warns(RuntimeWarning, match="'w0' sent nothing"):
        rerun = oracle.create_trial("w1")
    assert rerun.trial_id == t0.trial_id
    assert _finish(oracle, t0.trial_id, reward=-0.5) is True   # w0
    history = list(oracle._history)
    assert _finish(oracle, t0.trial_id, reward=-9.0) is False  # w1
    assert oracle._history == history
    assert oracle.trials[t0.trial_id].score == -0.5
    assert oracle.create_trial("w1").status == "STOPPED"
    assert _chief_would_exit(oracle)
    _all_done_once(oracle, 2)


def test_reclaimed_trial_reported_before_anyone_reran_it(hypermodel,
                                                         tmp_path, clock):
    oracle = _oracle(hypermodel, tmp_path, 2)
    t0 = oracle.create_trial("w0")
    t1 = oracle.create_trial("w1")
    clock.now = 20
    with pytest.warns(RuntimeWarning):
        assert oracle.create_trial("w1").trial_id == t1.trial_id
    # w1 still holds t1, so t0 waits in the retry queue; w0 reports it
    assert oracle._retry_queue == [t0.trial_id]
    _finish(oracle, t0.trial_id)
    assert oracle._retry_queue == []
    _finish(oracle, t1.trial_id)
    assert oracle.create_trial("w1").status == "STOPPED"
    assert _chief_would_exit(oracle)
    _all_done_once(oracle, 2)


def test_worker_dead_between_trials_does_not_keep_the_chief(
        hypermodel, tmp_path, clock):
    oracle = _oracle(hypermodel, tmp_path, 2)
    t0 = oracle.create_trial("w0")
    _finish(oracle, t0.trial_id)         # ... and w0 dies before asking
    t1 = oracle.create_trial("w1")
    clock.now = 3
    _finish(oracle, t1.trial_id)
    assert oracle.create_trial("w1").status == "IDLE"
    clock.now = 11
    assert oracle.create_trial("w1").status == "STOPPED"
    assert _chief_would_exit(oracle)


def test_single_process_search_stops_at_once(hypermodel, tmp_path, clock):
    oracle = _oracle(hypermodel, tmp_path, 1)
    t0 = oracle.create_trial("tuner0")
    clock.now = 1000                     # a trial far longer than the lease
    _finish(oracle, t0.trial_id)
    assert oracle.create_trial("tuner0").status == "STOPPED"


def test_lease_none_is_keras_tuners_behaviour(hypermodel, tmp_path, clock):
    oracle = _oracle(hypermodel, tmp_path, 2, lease_timeout=None)
    t0 = oracle.create_trial("w0")
    t1 = oracle.create_trial("w1")
    clock.now = 1e6
    _finish(oracle, t1.trial_id)
    assert oracle.create_trial("w1").status == "STOPPED"
    assert oracle.ongoing_trials["w0"].trial_id == t0.trial_id


@pytest.mark.parametrize("bad,err", [
    (0, ValueError), (-1, ValueError), (float("nan"), ValueError),
    (float("inf"), ValueError), ("600", TypeError), (True, TypeError)])
def test_bad_lease_timeout(hypermodel, bad, err):
    with pytest.raises(err, match="lease_timeout"):
        AMCOracle(hypermodel, max_trials=2, lease_timeout=bad)


def _tuner(hm, directory, overwrite):
    return AMCTuner(hm, max_trials=2, seed=0, warmup=1,
                    agent_config={"batch_size": 8, "hidden": (16, 16)},
                    directory=str(directory), project_name="p",
                    overwrite=overwrite)


@pytest.mark.parametrize("name", ["oracle.json", "tuner0.json",
                                  os.path.join("trial_1", "trial.json")])
@pytest.mark.parametrize("damage", ["truncate", "empty", "list"])
def test_corrupt_state_file_on_resume_names_it(hypermodel, tmp_path, name,
                                               damage):
    _tuner(hypermodel, tmp_path, True).search(verbose=0)
    path = tmp_path / "p" / name
    text = path.read_text()
    path.write_text({"truncate": text[:len(text) // 2], "empty": "",
                     "list": "[1, 2]"}[damage])
    with pytest.raises(ValueError, match=rf"{name.split(os.sep)[-1]}.*"
                       "overwrite=True") as info:
        _tuner(hypermodel, tmp_path, False)
    assert str(path) in str(info.value)
    assert isinstance(info.value, BadInputError)
    _tuner(hypermodel, tmp_path, True)   # overwrite starts afresh


def test_state_files_are_written_atomically(hypermodel, tmp_path):
    tuner = _tuner(hypermodel, tmp_path, True)
    tuner.search(verbose=0)
    left = [f for _, _, files in os.walk(tmp_path) for f in files
            if f.startswith(".tmp-")]
    assert left == []
    again = _tuner(hypermodel, tmp_path, False)
    assert sorted(again.oracle.trials) == ["0", "1"]
