"""AMC: AutoML for Model Compression as a keras-tuner search.

keras-tuner's split (docs/ARCHITECTURE.md):

* ``AMCHyperModel`` owns the reference model, the search space and the
  evaluation: one keras-tuner ``Float`` hyperparameter per prunable channel
  group (``"preserve/<group id>"``, the preserve ratio in ``[lbound, 1]``),
  ``build(hp)`` prunes the reference model (channel selection by importance
  and least-squares refit on calibration data by the reconstruction
  engine, :class:`tfcomp.pruning.reconstruction.LayerwisePruner`) and
  ``fit(hp, model)`` returns the metrics (``reward``, ``accuracy``,
  ``macs``, ``cost``, ``cost_ratio``). Any keras-tuner tuner
  (``RandomSearch``, ``BayesianOptimization``) can search this space.
* ``AMCOracle`` proposes one whole episode per trial: it rolls out the DDPG
  actor group by group (the state of a group depends on the earlier
  actions), clips each action with AMC's budget wall, and learns from the
  trial's reward when the trial ends.
* ``AMCTuner`` runs trials (prune, evaluate, write ``plan.json`` in the
  trial directory); ``get_best_plan()`` returns the best ``Plan``.

The budget wall makes every proposal feasible: the keep count of group
``t`` is at most the largest count for which the model, with the earlier
groups at their chosen counts and every later group at the lower bound,
costs no more than the budget. The same wall projects the values of other
tuners (random search, Bayesian optimisation) in ``build``, so every model
any tuner evaluates meets the budget. ``resource=`` names what the budget
limits: exact MACs (``"macs"``) or latencies from a ``LatencyTable`` /
``HardwareModel`` (``"latency"``), computed from per-layer channel counts
without building the model (:mod:`tfcomp.tuners.amc_space`).

Reference: He et al., AMC: AutoML for Model Compression and Acceleration on
Mobile Devices, ECCV 2018, arXiv:1802.03494.

Example:
    >>> hm = AMCHyperModel(model, x_train[:256], (x_val, y_val), budget=0.5)
    >>> tuner = AMCTuner(hm, max_trials=800, directory="runs")
    >>> tuner.search()
    >>> plan = tuner.get_best_plan()
"""

from __future__ import annotations

import math
import os
from typing import ClassVar

import keras
import keras_tuner as kt
import numpy as np

from tfcomp._io import atomic_write_text
from tfcomp.cost import profile
from tfcomp.hardware import HardwareModel, LatencyTable
from tfcomp.pruning.plan import Plan
from tfcomp.pruning.reconstruction import SELECTORS, LayerwisePruner
from tfcomp.pruning.targets import check_target_macs
from tfcomp.tuners import _common as common
from tfcomp.tuners.amc_space import AMCSpace

__all__ = ["AMCHyperModel", "AMCOracle", "AMCTuner"]

_RESOURCES = ("macs", "latency")
_REWARDS = ("error", "flops")


# ---------------------------------------------------------------------------
# arguments


def _budget(model, resource: str, budget, target_macs) -> float:
    """The budget as a fraction of the unpruned cost (default 0.5)."""
    if target_macs is None:
        return common.check_fraction("budget",
                                     0.5 if budget is None else budget)
    if budget is not None:
        raise ValueError("Give budget or target_macs, not both. Received: "
                         f"budget={budget!r}, target_macs={target_macs!r}")
    if resource != "macs":
        raise ValueError("target_macs needs resource='macs'. Received: "
                         f"resource={resource!r}")
    value = check_target_macs(target_macs)
    if value > 1.0:
        value = min(1.0, value / profile(model).macs)
    return common.check_fraction("target_macs", value)


def _hardware_bits(resource: str, hardware, bits):
    """The ``(w_bits, a_bits)`` costed in ``hardware`` (None for MACs)."""
    if resource != "latency":
        if hardware is not None:
            raise ValueError(
                "hardware is only used with resource='latency'. Received: "
                f"resource={resource!r}, hardware={hardware!r}")
        return bits
    if not isinstance(hardware, HardwareModel):
        raise ValueError(
            "resource='latency' needs hardware=a LatencyTable (e.g. "
            "measure_tflite_table(model)) or a HardwareModel. "
            f"Received: hardware={hardware!r}")
    if bits is None:
        bits = (32, 32) if isinstance(hardware, LatencyTable) and \
            hardware.bit_invariant else (8, 8)
    return tuple(int(b) for b in bits)




def _values(hp) -> dict:
    if isinstance(hp, dict):
        return hp
    return dict(hp.values)

class AMCHyperModel(kt.HyperModel):
    """AMC's search space over a trained model (a keras-tuner HyperModel).

    Hyperparameters: ``"preserve/<group id>"`` (``Float`` in ``[lbound,
    1]``) for every prunable channel group whose consumers can be refit
    (convolutions and dense layers; groups tied to the model's input or
    output, barriers and groups too small to prune under ``round_to`` are
    left whole and listed in ``skipped``). A ratio ``r`` keeps
    ``ceil(r * size)`` channels rounded up to a multiple of ``round_to``
    (capped at the group size); the budget wall then lowers counts so the
    model never exceeds ``budget``.

    ``build(hp)`` returns the pruned model: channels chosen by ``selector``
    on each group's consumers and their kernels refit by least squares on
    ``calibration_data`` (the reconstruction engine of ``lasso_prune``), no
    fine-tuning. ``fit(hp, model)`` evaluates it on ``validation_data`` and
    returns ``{"reward", "accuracy", "macs", "cost", "cost_ratio"}``.

    Args:
        model: a trained functional / Sequential ``keras.Model`` (one
            input), left untouched.
        calibration_data: images (or ``(x, y)``) for the least-squares refit.
        validation_data: held-out ``(x, y)`` for the reward.
        resource: what the budget limits: ``"macs"`` (exact
            multiply-accumulates) or ``"latency"`` (from ``hardware``).
            ``target=`` is a deprecated alias.
        budget: the allowed cost as a fraction of the unpruned model's, in
            (0, 1] (default 0.5).
        target_macs: a MACs budget instead of ``budget`` (``resource``
            ``"macs"``): a fraction of the dense MACs if <= 1, else a MACs
            count.
        hardware: for ``resource="latency"``: a ``LatencyTable`` (e.g. from
            ``measure_tflite_table``) or any ``HardwareModel``.
        bits: ``(w_bits, a_bits)`` looked up in ``hardware`` (default
            32/32 for bit-invariant measured tables, else 8/8).
        lbound: lowest preserve ratio (paper: 0.2).
        round_to: kept channel counts are multiples of this (official code:
            8), or the whole group.
        ignored_layers: layers whose channel groups are not searched.
        selector: channel selection, ``"l1"`` (the official AMC code's
            consumer-side L1 norm), ``"lasso"`` (the paper's LASSO) or
            ``"random"``.
        reward: ``"error"`` (R_err = -error) or ``"flops"`` (R_FLOPs =
            -error * log(MACs)).
        samples_per_image: refit samples per calibration image and layer.
        max_images: calibration images used (the first ones). The official
            code uses 3000; 256 is a CPU-scale default.
        batch_size: images per forward pass.
        seed: seeds the refit's location draws.
        name: HyperModel name.

    Raises:
        ValueError: no prunable layers, an unreachable ``budget`` (the
            message gives the minimum), a table that cannot cost a layer,
            bad arguments.

    Reference: He et al., arXiv:1802.03494.

    Example:
        >>> hm = AMCHyperModel(model, x[:256], (x_val, y_val), budget=0.5)
        >>> tuner = keras_tuner.RandomSearch(
        ...     hm, objective=keras_tuner.Objective("reward", "max"),
        ...     max_trials=20)
    """

    def __init__(self, model: keras.Model, calibration_data,
                 validation_data, *, resource: str = "macs",
                 budget: float | None = None,
                 target_macs: float | None = None, hardware=None, bits=None,
                 lbound: float = 0.2, round_to: int = 8,
                 ignored_layers=None, selector: str = "l1",
                 reward: str = "error", samples_per_image: int = 10,
                 max_images: int | None = 256, batch_size: int = 256,
                 seed: int = 0, name: str = "amc", target: str | None = None):
        super().__init__(name=name)
        common.check_model(model)
        resource = common.legacy_resource(resource, target, "AMCHyperModel")
        if resource not in _RESOURCES:
            raise ValueError(f"resource must be one of {_RESOURCES}. "
                             f"Received: resource={resource!r}")
        if reward not in _REWARDS:
            raise ValueError(f"reward must be one of {_REWARDS}. Received: "
                             f"reward={reward!r}")
        if selector not in SELECTORS:
            raise ValueError("selector must be 'l1', 'lasso' or 'random'. "
                             f"Received: selector={selector!r}")
        budget = _budget(model, resource, budget, target_macs)
        lbound = common.check_fraction("lbound", lbound)
        if lbound >= 1.0:
            raise ValueError(f"lbound must be < 1. Received: lbound={lbound}")
        common.check_ints(round_to=(round_to, 1),
                   samples_per_image=(samples_per_image, 1),
                   batch_size=(batch_size, 1), seed=(seed, 0))
        bits = _hardware_bits(resource, hardware, bits)
        self.model = model
        self.resource, self.budget, self.hardware = resource, budget, hardware
        self.bits = bits
        self.lbound, self.round_to = lbound, int(round_to)
        self.selector, self.reward = selector, reward
        self.samples_per_image = int(samples_per_image)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.calibration_x = common.as_images(
            calibration_data, "calibration_data", model, max_images)
        self.validation_data = common.as_xy(
            validation_data, "validation_data", model, targets=True)
        self.space = AMCSpace(model, resource, budget, hardware, bits,
                              lbound, self.round_to, ignored_layers)
        self._pruner = None

    target = common.renamed_property("target", "resource")

    # -- introspection -----------------------------------------------------
    @property
    def group_ids(self) -> list:
        """Ids of the searched channel groups, in episode order."""
        return [g.id for g in self.space.steps]

    @property
    def skipped(self) -> dict:
        """``{group id: reason}`` of prunable groups left whole."""
        return dict(self.space.skipped)

    dense_cost = common.space_property(
        "dense_cost", "Cost of the unpruned model (MACs or seconds).")
    min_cost = common.space_property(
        "min_cost", "Cost with every searched group at the lower bound.")

    # -- the space ---------------------------------------------------------
    def declare_hyperparameters(self, hp) -> None:
        for name in self.space.names:
            hp.Float(name, self.lbound, 1.0, default=1.0)

    def keep_counts(self, hp) -> dict:
        """``{group id: kept channels}`` after rounding and the budget wall.

        Args:
            hp: ``HyperParameters`` or a ``{name: ratio}`` dict (missing
                names keep their group whole).

        Example:
            >>> hm.keep_counts({"preserve/s1b1_conv1": 0.5})
        """
        counts = self.space.project(_values(hp))
        return {g.id: int(c) for g, c in zip(self.space.steps, counts)}

    def predicted_cost(self, hp) -> float:
        """Cost of the pruned model from the channel counts (no build)."""
        return self.space.cost(self.space.project(_values(hp)))

    def _register(self, hp) -> None:
        if not isinstance(hp, dict):
            for name in self.space.names:
                hp.Float(name, self.lbound, 1.0, default=1.0)

    def _engine(self) -> LayerwisePruner:
        if self._pruner is None:
            self._pruner = LayerwisePruner(
                self.model, self.calibration_x, self.space.steps,
                graph=self.space.graph,
                samples_per_image=self.samples_per_image,
                batch_size=self.batch_size, seed=self.seed)
        return self._pruner

    def _run(self, hp) -> tuple:
        """Prunes the engine's working copy to the proposal (masked, refit):
        ``(engine, counts)``."""
        self._register(hp)
        counts = self.space.project(_values(hp))
        engine = self._engine()
        engine.reset()
        for g, c in zip(self.space.steps, counts):
            if c < g.size:
                engine.step(g, int(c), self.selector, report=False)
        return engine, counts

    def _plan(self, engine, counts: np.ndarray):
        sizes = self.space.sizes
        cost = self.space.cost(counts)
        meta = {
            "method": "amc", "selector": self.selector,
            "resource": self.resource, "budget": self.budget,
            "round_to": self.round_to, "lbound": self.lbound,
            "preserve": {gid: float(c / n) for gid, c, n in
                         zip(self.group_ids, counts, sizes)},
            "predicted_cost": float(cost),
            "predicted_cost_ratio": float(cost / self.space.dense_cost),
            "macs_before": int(self.space.macs(sizes)),
            "macs_after": int(self.space.macs(counts))}
        return engine.plan(meta)

    def evaluate(self, hp, validation_data=None):
        """Prunes (masked, refit) and evaluates a proposal; no model build.

        What ``AMCTuner`` runs per trial: the masked model gives the same
        outputs as the physically pruned one, and MACs / cost come from the
        channel counts (exact).

        Returns:
            ``(metrics, plan)``; metrics as :meth:`fit`.

        Example:
            >>> metrics, plan = hm.evaluate({"preserve/s1b1_conv1": 0.5})
        """
        engine, counts = self._run(hp)
        metrics = self._metrics(engine.work, counts, validation_data)
        return metrics, self._plan(engine, counts)

    def prune(self, hp):
        """``(pruned_model, plan)``: physically smaller, refit, not
        fine-tuned.

        Example:
            >>> small, plan = hm.prune(tuner.get_best_hyperparameters()[0])
        """
        engine, counts = self._run(hp)
        plan = self._plan(engine, counts)
        return engine.pruned_model(plan), plan

    def build(self, hp):
        """The pruned (least-squares refit, not fine-tuned) model."""
        return self.prune(hp)[0]

    def _metrics(self, model, counts, validation_data) -> dict:
        x, y = (self.validation_data if validation_data is None
                else common.as_xy(validation_data, "validation_data",
                                  self.model, targets=True))
        acc = common.accuracy(model, x, y, self.batch_size)
        macs = float(self.space.macs(counts))
        cost = float(self.space.cost(counts))
        error = 1.0 - acc
        reward = -error if self.reward == "error" else \
            -error * math.log(max(macs, 1.0))
        return {"reward": float(reward), "accuracy": float(acc),
                "macs": macs, "cost": cost,
                "cost_ratio": cost / self.space.dense_cost}

    def fit(self, hp, model, *args, validation_data=None, **kwargs):
        """Evaluates a model ``build(hp)`` returned, without fine-tuning.

        Args:
            hp: the trial's hyperparameters.
            model: the pruned model.
            validation_data: optional ``(x, y)`` replacing the held-out
                split given at construction.
            *args, **kwargs: ignored (keras-tuner passes ``callbacks``).

        Returns:
            ``{"reward", "accuracy", "macs", "cost", "cost_ratio"}``.
        """
        self._register(hp)
        counts = self.space.project(_values(hp))
        return self._metrics(model, counts, validation_data)



# ---------------------------------------------------------------------------
# Oracle and Tuner


class AMCOracle(common.EpisodeOracle):
    """Proposes AMC episodes with a DDPG agent (keras-tuner Oracle).

    One trial is one episode over the hypermodel's channel groups, in
    topological order. State per group (10 features): index, layer type
    (conv 0 / dense 1), c_in, c_out, stride, kernel size, #params
    (min-max normalised over the groups), the cost reduced so far and the
    cost of the layers later groups decide (fractions of the dense cost),
    and the previous action. The action ``a`` in [0, 1] maps to the
    preserve ratio ``lbound + a * (1 - lbound)``; the budget wall clips it.
    When the trial ends, its transitions enter the replay buffer with the
    trial's ``reward`` and, after the warm-up, the agent makes one update
    per transition (as the official code).

    Defaults are the paper's: 800 episodes, 100 warm-up episodes, sigma 0.5
    decaying by 0.95 per episode, replay of 100 transitions per group.
    Tests and benchmarks use far fewer episodes (CPU scale).

    Args:
        hypermodel: an ``AMCHyperModel``.
        max_trials: episodes.
        seed: seeds the agent.
        warmup: random episodes before the actor acts.
        sigma_decay, init_sigma: exploration noise schedule.
        updates_per_episode: None = one update per transition.
        agent_config: further ``DDPG`` arguments (``hidden``, ``batch_size``,
            ``buffer_size``, learning rates, ...).
        lease_timeout: distributed search: seconds a worker may go without
            reporting (tfcomp workers report every ``lease_timeout / 4`` s
            during a trial) before its trial is handed to another worker;
            default 600, None = never.
        **kwargs: ``keras_tuner.Oracle`` arguments (``max_retries_per_trial``
            ...).

    Reference: He et al., arXiv:1802.03494.

    Example:
        >>> oracle = AMCOracle(hm, max_trials=800, seed=0)
        >>> tuner = AMCTuner(hm, oracle=oracle, directory="runs")
    """

    hypermodel_cls = AMCHyperModel
    defaults: ClassVar[dict] = {"warmup": 100, "sigma_decay": 0.95,
                                "init_sigma": 0.5}
    replay_per_step = 100
    default_trials = 800


class AMCTuner(common.DDPGSearchTuner):
    """Runs an AMC search (or any keras-tuner oracle over its space).

    Each trial prunes the reference model with the proposed preserve
    ratios (least-squares refit), evaluates it without fine-tuning, writes
    the ``Plan`` to ``<trial dir>/plan.json`` and reports ``reward``,
    ``accuracy``, ``macs``, ``cost`` and ``cost_ratio``.

    Distributed search uses keras-tuner's chief/worker mode: run the same
    script with ``KERASTUNER_TUNER_ID=chief`` (the oracle and its agent live
    there) and with ``KERASTUNER_TUNER_ID=tuner<i>`` on the workers, all
    with ``KERASTUNER_ORACLE_IP`` / ``KERASTUNER_ORACLE_PORT``; each process
    uses its own ``directory`` (the chief's holds ``oracle.json`` and the
    agent). Deviation from the paper's sequential loop: with several
    workers, an episode is proposed while earlier ones are still running,
    so it uses the agent as updated by the episodes finished so far. A
    worker that dies mid-trial loses its lease after ``lease_timeout``
    seconds (an oracle argument, default 600) and its trial is run by
    another worker; a worker restarted with the same id before that
    resumes its trial. Workers stay until the last trial has ended, so the
    chief exits.

    Args:
        hypermodel: an ``AMCHyperModel``.
        oracle: None for an ``AMCOracle``, or any keras-tuner oracle whose
            objective is ``reward`` (e.g. ``RandomSearchOracle``).
        max_trials: episodes (AMCOracle only; default 800).
        seed: seeds the AMCOracle's agent.
        directory, project_name, overwrite, tuner_id: as keras-tuner
            (``overwrite=False`` resumes an existing project).
        **oracle_kwargs: further ``AMCOracle`` arguments.

    Example:
        >>> tuner = AMCTuner(hm, max_trials=50, directory="runs",
        ...                  warmup=10)
        >>> tuner.search(verbose=0)
        >>> plan = tuner.get_best_plan()
    """

    hypermodel_cls = AMCHyperModel
    oracle_cls = AMCOracle
    default_trials = 800

    def run_trial(self, trial, *args, **kwargs):
        metrics, plan = self.hypermodel.evaluate(
            trial.hyperparameters, kwargs.get("validation_data"))
        atomic_write_text(
            os.path.join(self.get_trial_dir(trial.trial_id), "plan.json"),
            plan.to_json(indent=1))
        return metrics

    def load_model(self, trial):
        """The trial's pruned model (rebuilt: deterministic refit)."""
        return self.hypermodel.build(trial.hyperparameters)

    def get_best_plan(self):
        """The ``Plan`` of the best trial (highest reward).

        Read from the trial's ``plan.json``, or recomputed from its values
        when the file is not on this machine.

        Example:
            >>> small = tfcomp.prune_channels(model, tuner.get_best_plan())
        """
        trials = self.oracle.get_best_trials(1)
        if not trials:
            raise ValueError("No trial has finished yet: run search() first.")
        path = os.path.join(self.get_trial_dir(trials[0].trial_id),
                            "plan.json")
        if os.path.exists(path):
            return Plan.load(path)
        return self.hypermodel.prune(trials[0].hyperparameters)[1]
