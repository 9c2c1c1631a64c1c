"""Shared machinery of the AMC and HAQ searches (keras-tuner Oracles).

Not public API. ``DDPGOracle`` is a ``keras_tuner.Oracle`` whose trials are
whole reinforcement-learning episodes: ``populate_space`` rolls out the DDPG
actor over every layer of a search *space* (an environment object that owns
the state embedding, the action -> value mapping and the budget wall) and
returns all per-layer values at once; ``end_trial`` stores the episode's
transitions in the agent's replay buffer with the trial's reward and runs the
agent updates.

State follows keras-tuner: ``get_state`` / ``set_state`` carry the episode
counter, the pending (proposed, not yet rewarded) episodes and the name of
the agent checkpoint; the agent's weights, Adam moments, replay buffer,
random state and reward baseline are files beside ``oracle.json``
(``agent_NNNNNN.json/.weights.npz/.replay.npz``, written by ``DDPG.save``).
Every file is written atomically and ``oracle.json`` last, so a search that
is killed at any point resumes from a consistent state: the trial that was
running is re-run with the same values and none is lost or repeated.

This module imports keras_tuner; ``tfcomp.tuners`` only imports it lazily.
"""

from __future__ import annotations

import glob
import json
import math
import os
import warnings

import keras
import keras_tuner as kt
import numpy as np
from keras_tuner.engine.trial import TrialStatus

from tfcomp._io import as_arrays, atomic_write_text
from tfcomp._io import check_fraction as _check_fraction
from tfcomp.tuners._accuracy import accuracy
from tfcomp.tuners._lease import (
    DEFAULT_LEASE_TIMEOUT,
    Heartbeat,
    LeasedOracle,
    check_state_file,
    paced_create_trial,
)
from tfcomp.tuners.ddpg import DDPG

__all__ = [
    "DDPGOracle",
    "EpisodeOracle",
    "accuracy",
    "as_images",
    "as_xy",
    "atomic_write_text",
    "check_fraction",
    "check_ints",
    "check_model",
    "legacy_resource",
    "minmax_columns",
    "renamed_property",
    "space_property",
]

_STATE_KEY = "tfcomp"
_STATE_VERSION = 1


def minmax_columns(features) -> np.ndarray:
    """Min-max normalises each column to [0, 1] (constant columns -> 0).

    This is how AMC and HAQ normalise their static layer embeddings.

    Example:
        >>> minmax_columns([[1, 5], [3, 5]])
        array([[0., 0.], [1., 0.]], dtype=float32)
    """
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2:
        raise ValueError(f"features must be 2-D. Received shape {f.shape}")
    lo = f.min(axis=0)
    span = f.max(axis=0) - lo
    out = np.where(span > 0, (f - lo) / np.where(span > 0, span, 1.0), 0.0)
    return out.astype(np.float32)


def check_fraction(name: str, value, lo_open: bool = True) -> float:
    """A float in (0, 1] (or [0, 1] with ``lo_open=False``), checked by
    ``tfcomp._io.check_fraction``.

    Example:
        >>> check_fraction("budget", 0.5)
        0.5
    """
    try:
        return _check_fraction(value, name, include_low=not lo_open,
                               include_high=True)
    except ValueError:
        br = "(" if lo_open else "["
        raise ValueError(f"{name} must be in {br}0, 1]. Received: "
                         f"{name}={value!r}") from None


def as_xy(data, name: str, model=None, targets: bool = False):
    """``(x, y)`` numpy arrays from any form ``tfcomp._io.as_arrays`` takes
    (labels required; with ``model``, per-pixel labels kept; with
    ``targets``, a regression model's float targets too, as float32).

    Example:
        >>> x, y = as_xy((x_val, y_val), "validation_data", model)
    """
    return as_arrays(data, model=model, need_labels=True, name=name,
                     targets=targets)


def as_images(data, name: str, model=None, max_items: int | None = None
              ) -> np.ndarray:
    """Input array from an array, an ``(x, y)`` pair or batches (see
    ``tfcomp._io.as_arrays``; labels are dropped).

    Example:
        >>> x = as_images(x_train[:256], "calibration_data")
    """
    return as_arrays(data, model=model, max_items=max_items, name=name)[0]


def legacy_resource(resource: str, target, owner: str) -> str:
    """``resource``, or the deprecated ``target=`` keyword of ``owner``
    (warned; it named what the budget limits).

    Example:
        >>> resource = legacy_resource(resource, target, "AMCHyperModel")
    """
    if target is None:
        return resource
    warnings.warn(f"{owner}(target=...) is deprecated; use resource= (what "
                  "the budget limits).", DeprecationWarning, stacklevel=3)
    return target


def renamed_property(old: str, new: str) -> property:
    """A property ``old`` that warns and returns ``self.<new>``.

    Example:
        >>> target = renamed_property("target", "resource")
    """

    def get(self):
        warnings.warn(f"{type(self).__name__}.{old} is deprecated; use "
                      f".{new}.", DeprecationWarning, stacklevel=2)
        return getattr(self, new)

    return property(get, doc=f"Deprecated: ``{new}``.")


def space_property(name: str, doc: str) -> property:
    """A read-only property returning ``self.space.<name>``.

    Example:
        >>> dense_cost = space_property("dense_cost", "Unpruned cost.")
    """
    return property(lambda self: getattr(self.space, name), doc=doc)


def check_model(model) -> None:
    """A ``keras.Model``, or a TypeError naming what was received."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model. Received: "
                        f"{type(model).__name__}")


def check_ints(**checks) -> None:
    """``name=(value, minimum)``: each value an int >= its minimum.

    Example:
        >>> check_ints(batch_size=(256, 1), seed=(0, 0))
    """
    for nm, (v, lo) in checks.items():
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) \
                or v < lo:
            raise ValueError(f"{nm} must be an int >= {lo}. Received: "
                             f"{nm}={v!r}")


def _jsonable_transitions(transitions) -> list:
    return [[np.asarray(s, np.float32).tolist(),
             np.asarray(a, np.float32).tolist(),
             np.asarray(s2, np.float32).tolist(), bool(d)]
            for s, a, s2, d in transitions]


class DDPGOracle(LeasedOracle):
    """A keras-tuner Oracle that proposes whole DDPG episodes.

    Subclasses pass a *space* with ``names`` (step identifiers),
    ``state_dim`` and ``rollout(policy) -> (values, transitions, info)``,
    where ``policy(state) -> action in [0, 1]``. ``scripted``: action lists
    of the first episodes, replayed instead of the agent's (a warm start).

    Args:
        space: the search environment (see above).
        max_trials: episodes to run.
        seed: seeds the agent (weights, exploration, replay sampling).
        agent_config: keyword arguments of ``DDPG``.
        updates_per_episode: agent updates after each finished episode
            (None: one per transition, as the official AMC/HAQ code);
            updates start once the warm-up episodes are done.
        reward_metric: the metric of a trial that is the agent's reward.
        objective: keras-tuner objective (default ``reward``, maximised).
        lease_timeout: distributed search: seconds a worker may go without
            reporting before its trial is handed to another worker (default
            600; None: never). Workers report at least every
            ``lease_timeout / 4`` s while a trial runs, so only a dead or
            hung worker loses its trial (``tfcomp.tuners._lease``).
        **kwargs: other ``keras_tuner.Oracle`` arguments.
    """

    def __init__(self, space, max_trials: int, seed: int = 0,
                 agent_config: dict | None = None,
                 updates_per_episode: int | None = None,
                 reward_metric: str = "reward", objective=None,
                 lease_timeout: float | None = DEFAULT_LEASE_TIMEOUT,
                 **kwargs):
        if isinstance(max_trials, bool) or not isinstance(
                max_trials, (int, np.integer)) or max_trials < 1:
            raise ValueError(f"max_trials must be an int >= 1. Received: "
                             f"max_trials={max_trials!r}")
        if isinstance(seed, bool) or not isinstance(
                seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be an int >= 0. Received: "
                             f"seed={seed!r}")
        if updates_per_episode is not None and (
                isinstance(updates_per_episode, bool)
                or not isinstance(updates_per_episode, (int, np.integer))
                or updates_per_episode < 0):
            raise ValueError(
                "updates_per_episode must be None or an int >= 0. Received: "
                f"updates_per_episode={updates_per_episode!r}")
        super().__init__(
            objective=objective or kt.Objective(reward_metric, "max"),
            max_trials=int(max_trials), seed=int(seed) + 1,
            lease_timeout=lease_timeout, **kwargs)
        # keras-tuner replaces a falsy seed by a random one; keep ours.
        self.seed = int(seed)
        self._seed_state = int(seed)
        self.space = space
        self.reward_metric = reward_metric
        config = {"state_dim": space.state_dim, "seed": int(seed)}
        config.update(agent_config or {})
        self.agent = DDPG(**config)
        self.updates_per_episode = updates_per_episode
        self._episode = 0
        self._pending: dict = {}
        self._history: list = []
        self._agent_file: str | None = None
        self._agent_counter = 0
        self._agent_dirty = True
        # episodes replayed before the agent acts: one action list each
        self.scripted: list = []

    # -- proposing -----------------------------------------------------
    @property
    def episode(self) -> int:
        """Episodes proposed so far (the next episode's index)."""
        return self._episode

    def populate_space(self, trial_id):
        """Rolls out one episode and returns all its per-layer values."""
        episode = self._episode
        script = (iter(self.scripted[episode])
                  if episode < len(self.scripted) else None)

        def policy(state):
            if script is not None:  # a scripted (warm-start) episode
                return [next(script)]
            return self.agent.select_action(state, episode)

        values, transitions, info = self.space.rollout(policy)
        if script is not None:
            info = dict(info, scripted=True)
        self._episode += 1
        self._agent_dirty = True
        self._pending[str(trial_id)] = {
            "episode": episode,
            "transitions": _jsonable_transitions(transitions),
            "info": info,
        }
        return {"status": TrialStatus.RUNNING,
                "values": values}

    # -- learning ------------------------------------------------------
    def _trial_reward(self, trial):
        name = self.reward_metric
        if trial.metrics.exists(name):
            r = trial.metrics.get_last_value(name)
        else:
            r = trial.score
        if r is None:
            return None
        r = float(r)
        return r if math.isfinite(r) else None

    def _learn(self, trial_id: str) -> None:
        """Feeds a finished trial's episode to the agent (once)."""
        entry = self._pending.get(trial_id)
        trial = self.trials.get(trial_id)
        if entry is None or trial is None:
            return
        status = trial.status
        if status == TrialStatus.COMPLETED:
            reward = self._trial_reward(trial)
            if reward is not None:
                steps = [(np.asarray(s, np.float32),
                          np.asarray(a, np.float32),
                          np.asarray(s2, np.float32), d)
                         for s, a, s2, d in entry["transitions"]]
                self.agent.observe_episode(steps, reward)
                n = self.updates_per_episode
                n = len(steps) if n is None else n
                if entry["episode"] >= self.agent.warmup:
                    for _ in range(n):
                        self.agent.update()
                self._agent_dirty = True
                self._history.append([trial_id, entry["episode"], reward])
            self._pending.pop(trial_id)
        elif status == TrialStatus.FAILED:
            self._pending.pop(trial_id)
        # INVALID trials are retried with the same values: keep the episode.

    @kt.synchronized
    def end_trial(self, trial):
        """Ends a trial (keras-tuner), then learns from its episode (once:
        a second report of a reclaimed trial is ignored)."""
        if not super().end_trial(trial):
            return False
        self._learn(str(trial.trial_id))
        self.save()
        return True

    # -- state -----------------------------------------------------------
    def get_state(self):
        state = super().get_state()
        state[_STATE_KEY] = {
            "version": _STATE_VERSION,
            "space": list(self.space.names),
            "episode": self._episode,
            "pending": self._pending,
            "history": self._history,
            "agent_file": self._agent_file,
            "agent_counter": self._agent_counter,
            "scripted": self.scripted,
        }
        return state

    def set_state(self, state):
        mine = state.get(_STATE_KEY)
        if not isinstance(mine, dict):
            raise ValueError(
                f"{self._oracle_file()} was not written by a tfcomp "
                f"{type(self).__name__}; use overwrite=True or another "
                "project_name.")
        if int(mine.get("version", 0)) > _STATE_VERSION:
            raise ValueError(
                f"{self._oracle_file()} was written by a newer tfcomp "
                f"(state version {mine.get('version')}).")
        if list(mine["space"]) != list(self.space.names):
            raise ValueError(
                f"The project at {self._project_dir} was created for another"
                f" search space (steps {mine['space'][:4]}...; this search "
                f"has {list(self.space.names)[:4]}...). Use overwrite=True "
                "or another project_name.")
        super().set_state(state)
        self._episode = int(mine["episode"])
        self._pending = dict(mine["pending"])
        self._history = list(mine.get("history", []))
        self._agent_counter = int(mine["agent_counter"])
        self._agent_file = mine["agent_file"]
        saved = mine.get("scripted", [])
        if saved != self.scripted:  # the project's episodes are the truth
            if self._episode < max(len(saved), len(self.scripted)):
                warnings.warn(f"{type(self).__name__}: the project at "
                              f"{self._project_dir} was started with other "
                              "scripted (warm-start) episodes; resuming "
                              "with the saved ones.", stacklevel=2)
            self.scripted = saved
        if self._agent_file is not None:
            agent = DDPG.load(os.path.join(self._project_dir,
                                           self._agent_file))
            if agent.state_dim != self.space.state_dim:
                raise ValueError(
                    f"Saved agent has state_dim={agent.state_dim}, this "
                    f"search needs {self.space.state_dim}.")
            self.agent = agent
        self._agent_dirty = False

    def _oracle_file(self) -> str:
        return os.path.join(self._project_dir, "oracle.json")

    def save(self):
        """Writes the agent files (when changed), then ``oracle.json``.

        Both atomically, the JSON last, so the JSON always names a
        complete agent checkpoint; older checkpoints are then removed.
        """
        directory = self._project_dir
        if self._agent_dirty or self._agent_file is None:
            self._agent_counter += 1
            name = f"agent_{self._agent_counter:06d}"
            self.agent.save(os.path.join(directory, name))
            self._agent_file = name
            self._agent_dirty = False
        atomic_write_text(self._oracle_file(),
                          json.dumps(self.get_state()))
        keep = set(DDPG.paths(os.path.join(directory,
                                           self._agent_file)).values())
        for path in glob.glob(os.path.join(directory, "agent_*")):
            if path not in keep:
                try:
                    os.remove(path)
                except OSError:  # pragma: no cover - concurrent cleanup
                    pass

    def reload(self):
        """Reloads trials and state; finishes learning interrupted ends."""
        super().reload()
        # A kill inside create_trial, after the new trial's trial.json but
        # before oracle.json, leaves a trial the oracle never recorded (its
        # episode was not counted either). keras-tuner would keep it as a
        # never-run RUNNING trial and count it against max_trials; drop it
        # so the same episode is proposed again under the same id.
        known = set(self.start_order)
        for trial_id in [t for t in self.trials if t not in known]:
            del self.trials[trial_id]
        done = (TrialStatus.COMPLETED, TrialStatus.FAILED)
        # A kill between a trial's trial.json and oracle.json leaves it
        # "ongoing" in oracle.json although it ended: do not re-run it.
        finished = [t for t in self._retry_queue
                    if self.trials[t].status in done]
        for trial_id in finished:
            self._retry_queue.remove(trial_id)
            if trial_id not in self.end_order:
                self.end_order.append(trial_id)
        # ... and learn from any ended trial whose episode is still pending.
        for trial_id in list(self._pending):
            trial = self.trials.get(trial_id)
            if trial is not None and trial.status in done:
                self._learn(trial_id)


class EpisodeOracle(DDPGOracle):
    """A :class:`DDPGOracle` over a hypermodel's ``space``, with the
    paper's agent defaults as class attributes (what the AMC and HAQ
    oracles share).

    Subclasses set ``hypermodel_cls``, ``defaults`` (``warmup``,
    ``sigma_decay``, ``init_sigma``), ``default_trials`` and
    ``replay_per_step`` (the replay buffer holds that many transitions per
    step of an episode, :meth:`episode_steps`); an argument left None takes
    the default.
    """

    hypermodel_cls: type = kt.HyperModel
    defaults: dict = {"warmup": 100, "sigma_decay": 0.95, "init_sigma": 0.5}
    replay_per_step: int = 100
    default_trials: int = 100

    def __init__(self, hypermodel, max_trials: int | None = None,
                 seed: int = 0, warmup: int | None = None,
                 sigma_decay: float | None = None,
                 init_sigma: float | None = None,
                 updates_per_episode: int | None = None,
                 agent_config: dict | None = None, **kwargs):
        want = self.hypermodel_cls.__name__
        if not isinstance(hypermodel, self.hypermodel_cls):
            article = "an" if want[0] in "AEIOUH" else "a"
            raise TypeError(f"hypermodel must be {article} {want}. Received: "
                            f"{type(hypermodel).__name__}")
        given = {"warmup": warmup, "sigma_decay": sigma_decay,
                 "init_sigma": init_sigma}
        config = {k: self.defaults[k] if v is None else v
                  for k, v in given.items()}
        config["buffer_size"] = self.replay_per_step * self.episode_steps(
            hypermodel.space)
        config.update(agent_config or {})
        super().__init__(hypermodel.space,
                         max_trials=(self.default_trials if max_trials is None
                                     else max_trials),
                         seed=seed, agent_config=config,
                         updates_per_episode=updates_per_episode, **kwargs)

    @staticmethod
    def episode_steps(space) -> int:
        """Steps of one episode (default: one per searched name)."""
        return len(space.names)


class DDPGSearchTuner(kt.Tuner):
    """What AMCTuner and HAQTuner share: the default DDPG oracle, declaring
    the (flat) search space, saving before the first trial and, as a
    distributed worker, keeping its trial's lease (a heartbeat every
    ``lease_timeout / 4`` s during a trial, a pause of ``idle_pause`` s
    after an ``IDLE`` answer of the chief).

    Subclasses set ``hypermodel_cls``, ``oracle_cls`` and
    ``default_trials`` (the paper's episode count).
    """

    hypermodel_cls: type = kt.HyperModel
    oracle_cls: type = DDPGOracle
    default_trials: int = 100
    idle_pause: float = 0.5

    def __init__(self, hypermodel, oracle=None, max_trials: int | None = None,
                 seed: int = 0, directory=None, project_name: str | None = None,
                 overwrite: bool = False, tuner_id=None, **oracle_kwargs):
        want = self.hypermodel_cls.__name__
        if not isinstance(hypermodel, self.hypermodel_cls):
            article = "an" if want[0] in "AEIOUH" else "a"
            raise TypeError(f"hypermodel must be {article} {want}. Received: "
                            f"{type(hypermodel).__name__}")
        if oracle is None:
            oracle = self.oracle_cls(
                hypermodel, max_trials=max_trials or self.default_trials,
                seed=seed, **oracle_kwargs)
        elif oracle_kwargs or max_trials is not None:
            raise ValueError(
                "max_trials and oracle arguments go to the oracle you pass. "
                f"Received: max_trials={max_trials!r}, "
                f"{sorted(oracle_kwargs)}")
        super().__init__(oracle=oracle, hypermodel=hypermodel,
                         directory=directory,
                         project_name=project_name or hypermodel.name,
                         overwrite=overwrite, tuner_id=tuner_id)
        # On a worker self.oracle is now keras-tuner's client of the chief.
        self._lease_timeout = getattr(oracle, "lease_timeout", None)
        self._heartbeat = None
        if self._is_worker():
            self.oracle.create_trial = paced_create_trial(
                self.oracle.create_trial, self.idle_pause)

    def _populate_initial_space(self):
        # The space has no conditional entries: declaring it is enough
        # (keras-tuner would otherwise build, i.e. prune / quantize, a model
        # here).
        hp = self.oracle.get_space()
        self.hypermodel.declare_hyperparameters(hp)
        self.oracle.update_space(hp)

    def on_search_begin(self):
        # Save before the first trial so a search killed during it resumes.
        if not self._is_worker():
            self.save()

    def on_trial_begin(self, trial):
        super().on_trial_begin(trial)
        if self._is_worker() and self._lease_timeout is not None:
            trial_id = trial.trial_id
            oracle = self.oracle
            self._heartbeat = Heartbeat(lambda: oracle.get_trial(trial_id),
                                        self._lease_timeout / 4)

    def on_trial_end(self, trial):
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None
        super().on_trial_end(trial)

    def save(self):
        """Saves the oracle (chief / single process) and this tuner's
        state file, atomically."""
        if not self._is_worker():
            self.oracle.save()
        atomic_write_text(self._get_tuner_fname(),
                          json.dumps(self.get_state()))

    def reload(self):
        """Resumes the project; a truncated or corrupt state file is a
        ``ValueError`` naming it."""
        if not self._is_worker():
            self.oracle.reload()
        self.set_state(check_state_file(self._get_tuner_fname(),
                                        "keras-tuner tuner state"))

