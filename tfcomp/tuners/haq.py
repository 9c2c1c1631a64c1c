"""HAQ: Hardware-Aware Automated Quantization as a keras-tuner search.

keras-tuner's split (docs/ARCHITECTURE.md):

* ``HAQHyperModel`` owns the float model, the space and the evaluation:
  hyperparameters ``"w_bits/<layer>"`` and ``"a_bits/<layer>"`` over the
  searched widths (``Int`` in ``[b_min, b_max]``, or a ``Choice`` of the
  hardware's native widths) for every quantizable layer, except the first
  and the last layer (kept at 8/8: the input image is already 8-bit),
  ``build(hp)`` quantizes the model with
  :func:`tfcomp.quantization.quantize_model` and calibrates it, ``fit``
  fine-tunes it briefly and returns ``{"reward", "accuracy", "cost",
  "cost_ratio"}`` with reward ``0.1 * (acc_q - acc_float)`` (accuracies in
  percent, as the official code). Any keras-tuner tuner can search it.
* ``HAQOracle`` proposes one episode per trial: the DDPG actor picks the
  weight bits, then the activation bits, of every layer (two steps per
  layer), then HAQ's backward resource wall lowers bits until the policy
  fits the budget; it learns from the reward when the trial ends.
* ``HAQTuner`` runs the trials; ``get_best_policy()`` returns
  ``{layer: (w_bits, a_bits)}``.

The resource (``resource=``, what the budget limits) is the latency or
energy of a ``HardwareModel`` / ``LatencyTable`` (``BitFusion``, ``BISMO``,
a table built from them), the weight size (bytes, as ``tfcomp.profile``)
or BOPs (MACs * w_bits * a_bits); the budget is a fraction of the cost of
the whole model at 8/8 bits, priced by :class:`tfcomp.hardware.CostTable`
(as :func:`tfcomp.hardware.allocate_bits` prices it). The space and its
wall are :class:`tfcomp.tuners.haq_space.HAQSpace`.

Stated deviations from the paper: only hardware-native widths are
searched by default (``bits="native"``: ``hardware.distinct_bits()``, e.g.
2, 4, 8 on Bit Fusion, an action mapping to 5 is snapped up to 8;
``bits="all"`` as the paper), and ``warm_start=policy`` (off by default)
replays a given policy and its neighbours before the agent explores.

Reference: Wang et al., HAQ: Hardware-Aware Automated Quantization with
Mixed Precision, CVPR 2019, arXiv:1811.08886.

Example:
    >>> hm = HAQHyperModel(model, (x, y), (x_val, y_val),
    ...                    hardware=BitFusion("edge"), budget=0.6)
    >>> tuner = HAQTuner(hm, max_trials=600, directory="runs")
    >>> tuner.search()
    >>> tuner.get_best_policy()
"""

from __future__ import annotations

import json
import os
import warnings
from typing import ClassVar

import keras
import keras_tuner as kt
import numpy as np

from tfcomp._batches import index_rows, rows, take
from tfcomp._finetune import data_order, finetune_loss, outputs_logits
from tfcomp._unpinned import unpinned
from tfcomp.hardware import HardwareModel
from tfcomp.quantization import calibrate, quantize_model
from tfcomp.quantization.dynamic_bits import PolicyModels
from tfcomp.tuners._common import (
    DDPGSearchTuner,
    EpisodeOracle,
    accuracy,
    as_images,
    as_xy,
    atomic_write_text,
    check_fraction,
    check_ints,
    check_model,
    space_property,
)
from tfcomp.tuners.haq_select import best_policy, rescore
from tfcomp.tuners.haq_space import (
    _FIXED,
    RESOURCES,
    HAQSpace,
    action_to_bits,
)

__all__ = ["HAQHyperModel", "HAQOracle", "HAQTuner", "action_to_bits"]


def _values(hp) -> dict:
    if isinstance(hp, dict):
        return hp
    return dict(hp.values)


class HAQHyperModel(kt.HyperModel):
    """HAQ's mixed-precision search space (a keras-tuner HyperModel).

    Hyperparameters: ``"w_bits/<layer>"`` and ``"a_bits/<layer>"``
    (``Int`` in ``[b_min, b_max]``, or ``Choice`` of :attr:`widths` when
    not every width is searched; default the largest) for every
    quantizable layer (Conv2D, DepthwiseConv2D, Dense), except the first
    and the last layer, which HAQ keeps at 8/8 (the official
    ``_keep_first_last_layer``; the input image is 8-bit). A proposal that
    exceeds the budget is lowered by HAQ's backward wall, so every model
    any tuner evaluates meets it. ``a_bits`` are the bits of the layer's
    input activations.

    ``build(hp)``: ``quantize_model`` with the policy, then ``calibrate``
    on ``calibration_data``. ``fit(hp, model)``: ``finetune_epochs`` of SGD
    (momentum 0.9) on ``train_data`` (at most ``finetune_steps`` batches
    per epoch), then top-1 accuracy on ``validation_data``; returns
    ``{"reward", "accuracy", "cost", "cost_ratio"}`` with reward
    ``0.1 * (acc_q - acc_float)`` in percent points.

    ``reuse_graph=True`` (default) builds one QAT model for the whole
    search and makes its bit-widths variables
    (:func:`tfcomp.quantization.make_bits_dynamic`): ``build`` restores its
    initial weights, sets the policy and calibrates, and ``fit`` resets the
    optimizer and fine-tunes with the training graph traced once. For a
    policy it computes what a fresh ``quantize_model`` model computes
    (see ``make_bits_dynamic`` for the round-off caveat), about 2x faster
    per trial on a CPU, where tracing a new QAT graph costs more than a
    short fine-tune. ``build`` then returns the same model object every
    time; ``quantized_model(hp)`` gives an independent one.

    Deviations: for CPU scale, ``finetune_steps`` can cut the 1-epoch
    fine-tune short and activation ranges are calibrated on 512 training
    images by default.

    Args:
        model: the trained float ``keras.Model`` (left untouched).
        train_data: ``(x, y)`` for the short fine-tune.
        validation_data: held-out ``(x, y)`` for the reward.
        hardware: a ``HardwareModel`` (``BitFusion()``, ``BISMO()``) or
            ``LatencyTable``; needed for ``resource`` "latency" / "energy".
        resource: what the budget limits: "latency", "energy", "size"
            (weight bytes, bias included, as ``tfcomp.profile``) or "bops"
            (MACs * w_bits * a_bits). ``target=`` is a deprecated alias.
        budget: allowed cost as a fraction of the 8/8-bit cost, in (0, 1].
        b_min, b_max: bit range (paper: 2 and 8).
        bits: the searched widths: ``"native"`` (default: the hardware's
            ``distinct_bits()`` within ``[b_min, b_max]``, every width
            without hardware), ``"all"`` (every width, the paper) or a list.
        calibration_data: inputs for activation ranges (default: the first
            512 training images).
        finetune_epochs: fine-tune epochs (paper: 1; 0 skips).
        finetune_steps: batches per epoch (None: the whole ``train_data``);
            a CPU-scale knob.
        batch_size: fine-tune / evaluation batch size.
        learning_rate: SGD learning rate of the fine-tune.
        from_logits: whether the model outputs logits (None: True unless
            its last layer applies softmax).
        seed: seeds the fine-tune.
        reuse_graph: evaluate every policy with one QAT model whose
            bit-widths are variables (see above); False builds a new model
            per trial.
        name: HyperModel name.

    Raises:
        ValueError: no (or too few) quantizable layers, an unreachable
            budget (the message gives the minimum), hardware that cannot
            cost a layer, bad arguments.

    Reference: Wang et al., arXiv:1811.08886.

    Example:
        >>> hm = HAQHyperModel(model, (x, y), (xv, yv),
        ...                    hardware=BISMO(), budget=0.5)
        >>> hm.policy({"w_bits/s1b1_conv1": 4})["s1b1_conv1"]
        (4, 8)
    """

    def __init__(self, model: keras.Model, train_data, validation_data, *,
                 hardware=None, resource: str = "latency",
                 budget: float = 0.5, b_min: int = 2, b_max: int = 8,
                 bits="native", calibration_data=None, finetune_epochs: int = 1,
                 finetune_steps: int | None = None, batch_size: int = 128,
                 learning_rate: float = 1e-3, from_logits: bool | None = None,
                 seed: int = 0, reuse_graph: bool = True, name: str = "haq",
                 target: str | None = None):
        super().__init__(name=name)
        check_model(model)
        if target is not None:
            warnings.warn("HAQHyperModel(target=...) is deprecated; use "
                          "resource= (what the budget limits).",
                          DeprecationWarning, stacklevel=2)
            resource = target
        if resource not in RESOURCES:
            raise ValueError(f"resource must be one of {RESOURCES}. "
                             f"Received: resource={resource!r}")
        budget = check_fraction("budget", budget)
        for nm, v in (("b_min", b_min), ("b_max", b_max)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) \
                    or not 1 <= v <= 8:
                raise ValueError(f"{nm} must be an int in [1, 8]. Received: "
                                 f"{nm}={v!r}")
        if b_min > b_max:
            raise ValueError(f"b_min must be <= b_max. Received: b_min="
                             f"{b_min}, b_max={b_max}")
        check_ints(finetune_epochs=(finetune_epochs, 0),
                   batch_size=(batch_size, 1), seed=(seed, 0))
        if finetune_steps is not None:
            check_ints(finetune_steps=(finetune_steps, 1))
        if resource in ("latency", "energy") and not isinstance(
                hardware, HardwareModel):
            raise ValueError(
                f"resource={resource!r} needs hardware=a HardwareModel "
                "(BitFusion('edge'), BISMO()) or a LatencyTable. "
                f"Received: hardware={hardware!r}")
        self.model = model
        self.hardware, self.resource, self.budget = hardware, resource, budget
        self.b_min, self.b_max = int(b_min), int(b_max)
        self.train_data = as_xy(train_data, "train_data", model,
                                targets=True)
        self.validation_data = as_xy(validation_data, "validation_data",
                                     model, targets=True)
        self.calibration_x = (take(self.train_data[0], 512)
                              if calibration_data is None else
                              as_images(calibration_data, "calibration_data",
                                        model))
        self.finetune_epochs = int(finetune_epochs)
        self.finetune_steps = finetune_steps
        self.batch_size = int(batch_size)
        self.learning_rate = float(learning_rate)
        if from_logits is None:
            from_logits = outputs_logits(model)
        self.from_logits = bool(from_logits)
        self.seed = int(seed)
        self.space = HAQSpace(model, hardware, resource, budget, self.b_min,
                              self.b_max, bits)
        self._float_accuracy = None
        self.reuse_graph = bool(reuse_graph)
        self._policies = PolicyModels(model, self._compile)  # reuse_graph

    @property
    def target(self) -> str:
        """Deprecated: ``resource``."""
        warnings.warn("HAQHyperModel.target is deprecated; use .resource.",
                      DeprecationWarning, stacklevel=2)
        return self.resource

    # -- introspection -----------------------------------------------------
    @property
    def layers(self) -> list:
        """All quantizable layers, in episode order."""
        return list(self.space.layers)

    @property
    def searched_layers(self) -> list:
        """Layers with at least one searched bit-width (all but the last)."""
        return [n for n, f in zip(self.space.layers, self.space.free)
                if f.any()]

    @property
    def hyperparameter_names(self) -> list:
        """The searched ``"w_bits/<layer>"`` / ``"a_bits/<layer>"`` names.

        Example:
            >>> hm.hyperparameter_names[:2]
            ['a_bits/stem_conv', 'w_bits/s1b1_conv1']
        """
        return list(self.space.names)

    full_cost = space_property("full_cost", "Cost of the model at 8/8 bits.")
    widths = space_property("widths", "The searched bit-widths, ascending.")
    min_cost = space_property(
        "min_cost", "Cost with every searched layer at ``b_min``.")

    def float_accuracy(self) -> float:
        """Accuracy of the float model on the validation split (cached)."""
        if self._float_accuracy is None:
            self._float_accuracy = accuracy(self.model,
                                            *self.validation_data,
                                            self.batch_size)
        return self._float_accuracy

    # -- the space ---------------------------------------------------------
    def declare_hyperparameters(self, hp) -> None:
        widths = list(self.space.widths)
        for name in self.space.names:
            if widths == list(range(self.b_min, self.b_max + 1)):
                hp.Int(name, self.b_min, self.b_max, default=self.b_max)
            else:
                hp.Choice(name, widths, default=widths[-1])

    def policy(self, hp, wall: bool = True) -> dict:
        """``{layer: (w_bits, a_bits)}`` for every quantizable layer.

        Args:
            hp: ``HyperParameters`` or a ``{name: bits}`` dict (missing
                names: ``b_max``; values outside the range are clipped,
                then snapped up to a searched width).
            wall: apply the resource wall (bits only lowered).

        Example:
            >>> hm.policy(tuner.get_best_hyperparameters()[0])
        """
        p = self.space.policy_from_values(_values(hp))
        if wall:
            p = self.space.wall(p)
        return {n: (int(w), int(a)) for n, (w, a) in zip(self.space.layers,
                                                         p)}

    def policy_cost(self, policy: dict) -> float:
        """Cost of a ``{layer: (w, a)}`` policy (missing layers: 8/8)."""
        p = np.array([policy.get(n, _FIXED) for n in self.space.layers])
        return self.space.cost(p)

    def build(self, hp):
        """The calibrated quantization-aware model of the proposal (with
        ``reuse_graph``, the search's one model reconfigured)."""
        if not isinstance(hp, dict):
            self.declare_hyperparameters(hp)
        if not self.reuse_graph:
            return self.quantized_model(hp)
        q = self._policies.model_for(self.policy(hp))
        calibrate(q, self.calibration_x, batch_size=self.batch_size,
                  refresh_weights=False)
        return q

    def quantized_model(self, hp):
        """A new calibrated QAT model of the proposal (never shared).

        Example:
            >>> q = hm.quantized_model(tuner.get_best_hyperparameters()[0])
        """
        q = quantize_model(self.model, bits=self.policy(hp))
        calibrate(q, self.calibration_x, batch_size=self.batch_size)
        return q

    def _compile(self, model):
        model.compile(
            optimizer=unpinned(keras.optimizers.SGD(self.learning_rate,
                                                    momentum=0.9)),
            loss=finetune_loss(model, self.train_data[1], self.from_logits))

    def fit(self, hp, model, *args, validation_data=None, seed=None,
            **kwargs):
        """Short fine-tune, then the reward on the held-out split.

        ``seed`` overrides the hypermodel's seed (the fine-tune's data
        order) for this call.

        Returns:
            ``{"reward", "accuracy", "cost", "cost_ratio"}``.
        """
        x, y = (self.validation_data if validation_data is None
                else as_xy(validation_data, "validation_data", self.model,
                           targets=True))
        shared = model is not None and model is self._policies.shared
        if self.finetune_epochs > 0:
            if shared:  # a fresh optimizer, without retracing
                self._policies.reset_optimizer()
            else:
                self._compile(model)
            xt, yt = self.train_data
            order = data_order(rows(xt), self.finetune_steps,
                               self.batch_size, self.finetune_epochs,
                               self.seed if seed is None else seed)
            model.fit(index_rows(xt, order), yt[order],
                      batch_size=self.batch_size,
                      epochs=1, shuffle=False, verbose=0)
        acc = accuracy(model, x, y, max(self.batch_size, 512) if shared
                       else self.batch_size, traced=shared)
        base = self.float_accuracy() if validation_data is None else \
            accuracy(self.model, x, y, self.batch_size)
        cost = self.policy_cost(self.policy(hp))
        return {"reward": float(0.1 * 100.0 * (acc - base)),
                "accuracy": float(acc), "cost": float(cost),
                "cost_ratio": float(cost / self.space.full_cost)}


class HAQOracle(EpisodeOracle):
    """Proposes HAQ episodes with a DDPG agent (keras-tuner Oracle).

    One trial is one episode of two steps per quantizable layer (weight
    bits, then activation bits); the actions of the steps HAQ fixes at 8
    bits (first and last layer) are stored but overridden, as
    the official code. State (10 features): layer index, c_in, c_out,
    stride, kernel size, #params, input H*W, depthwise flag (min-max
    normalised over the layers), the weight/activation flag and the
    previous action. Action ``a`` -> bits by :func:`action_to_bits`; after
    the episode HAQ's backward wall enforces the budget. When the trial
    ends, every transition enters the replay buffer with the trial's
    reward and, after the warm-up, the agent makes one update per
    transition.

    Defaults are the paper's: 600 episodes, 20 warm-up episodes, sigma 0.5
    decaying by 0.99 per episode, replay of 128 transitions per layer. A
    much shorter search keeps exploring almost at random with that decay;
    ``sigma_decay=0.1 ** (1 / (max_trials - warmup))`` ends it at 0.05
    (``benchmarks/search.py`` does so for its 100 episodes).

    What to expect: with exact rewards on a synthetic landscape
    (``benchmarks/haq_agent.py``, MobileNetV2-tiny's 54 searched widths)
    the agent mostly learns to propose high bit-widths everywhere, which
    the wall turns into (nearly) the uniform width that fits the budget;
    after 600 episodes it ended at most 0.15 points above uniform 4-bit
    (often below), where a greedy allocation that knew the sensitivities
    gained 2-3 points. Compare a search's pick with ``hm.policy({})`` (8
    bits everywhere, walled: the near-uniform policy at the same budget)
    before using it.

    Warm start (``warm_start=policy``, a stated deviation from the paper,
    off by default): episode 0 proposes ``policy`` (e.g. the
    :class:`~tfcomp.hardware.Allocation` of ``allocate_bits``) and the next
    ``warm_start_neighbours`` episodes its neighbours (one searched
    bit-width one searched width up or down, walled, in a seeded order);
    their actions and rewards enter the replay buffer like any episode's,
    then the warm-up and the agent go on as usual (the warm-start episodes
    count as the first warm-up and search episodes). ``get_best_policy()``
    keeps the start unless a trial beats its reward by more than the
    reward's noise (:mod:`tfcomp.tuners.haq_select`). The policy is mapped
    onto the space first (widths clipped to ``[b_min, b_max]`` and snapped
    to searched ones, first / last layer 8/8, the wall), with a warning
    when that changes it. A resumed search replays the episodes it was
    started with.

    Args:
        hypermodel: an ``HAQHyperModel``.
        max_trials: episodes.
        seed: seeds the agent (and the neighbours' order).
        warm_start: None or ``{layer: (w_bits, a_bits)}`` (layers not
            listed at 8/8).
        warm_start_neighbours: neighbours replayed after ``warm_start``
            (None: half the warm-up episodes, at least 1).
        warmup, sigma_decay, init_sigma: exploration schedule.
        updates_per_episode: None = one update per transition.
        agent_config: further ``DDPG`` arguments.
        lease_timeout: distributed search: seconds a worker may go without
            reporting before its trial is handed to another worker (default
            600, None = never; see ``AMCTuner``).
        **kwargs: ``keras_tuner.Oracle`` arguments.

    Reference: Wang et al., arXiv:1811.08886.

    Example:
        >>> tuner = HAQTuner(hm, oracle=HAQOracle(hm, max_trials=600))
        >>> alloc = tfcomp.allocate_bits(model, s, "latency", BISMO(), 0.4)
        >>> HAQOracle(hm, max_trials=100, warm_start=alloc)
    """

    hypermodel_cls = HAQHyperModel
    defaults: ClassVar[dict] = {"warmup": 20, "sigma_decay": 0.99,
                                "init_sigma": 0.5}
    replay_per_step = 128
    default_trials = 600

    def __init__(self, hypermodel, max_trials: int | None = None,
                 seed: int = 0, *, warm_start: dict | None = None,
                 warm_start_neighbours: int | None = None, **kwargs):
        super().__init__(hypermodel, max_trials=max_trials, seed=seed,
                         **kwargs)
        self.warm_policy = None
        if warm_start is None:
            return
        if warm_start_neighbours is None:
            warm_start_neighbours = max(1, self.agent.warmup // 2)
        check_ints(warm_start_neighbours=(warm_start_neighbours, 0))
        space = hypermodel.space
        base = space.policy_array(warm_start)
        got = {n: (int(w), int(a)) for n, (w, a) in zip(space.layers, base)}
        changed = [n for n in space.layers
                   if tuple(warm_start.get(n, _FIXED)) != got[n]]
        if changed:
            warnings.warn(
                f"HAQ warm_start: {len(changed)} layer(s) changed to fit the "
                f"space (widths {list(space.widths)}, first / last 8/8, "
                f"budget {hypermodel.budget}): " + ", ".join(
                    f"{n} {tuple(warm_start.get(n, _FIXED))} -> {got[n]}"
                    for n in changed[:4]), stacklevel=2)
        self.warm_policy = got
        policies = [base, *space.neighbours(base, warm_start_neighbours,
                                            seed)]
        self.scripted = [space.actions(p) for p in policies]

    @staticmethod
    def episode_steps(space) -> int:
        """The replay buffer holds 128 transitions per layer."""
        return len(space.free)


class HAQTuner(DDPGSearchTuner):
    """Runs a HAQ search (or any keras-tuner oracle over its space).

    Each trial quantizes, calibrates and briefly fine-tunes the model with
    the proposed policy, reports ``reward``, ``accuracy``, ``cost`` and
    ``cost_ratio``, and writes ``<trial dir>/policy.json``. Distributed
    search: keras-tuner's chief/worker mode (see ``AMCTuner``).
    ``overwrite=False`` resumes a killed search: no trial is lost or run
    twice, and the agent continues exactly as it would have.

    Args:
        hypermodel: an ``HAQHyperModel``.
        oracle: None for an ``HAQOracle``, or any keras-tuner oracle whose
            objective is ``reward``.
        max_trials: episodes (HAQOracle only; default 600).
        seed: seeds the HAQOracle's agent.
        warm_start, warm_start_neighbours: replay a policy and its
            neighbours first (``HAQOracle``; off by default).
        directory, project_name, overwrite, tuner_id: as keras-tuner.
        **oracle_kwargs: further ``HAQOracle`` arguments.

    Example:
        >>> tuner = HAQTuner(hm, max_trials=30, warmup=5, directory="runs",
        ...                  warm_start=tfcomp.allocate_bits(...))
        >>> tuner.search(verbose=0)
        >>> tuner.get_best_policy()
    """

    hypermodel_cls = HAQHyperModel
    oracle_cls = HAQOracle
    default_trials = 600

    def run_trial(self, trial, *args, **kwargs):
        hp = trial.hyperparameters
        model = self.hypermodel.build(hp)
        metrics = self.hypermodel.fit(hp, model, *args, **kwargs)
        policy = self.hypermodel.policy(hp)
        atomic_write_text(
            os.path.join(self.get_trial_dir(trial.trial_id), "policy.json"),
            json.dumps({k: list(v) for k, v in policy.items()}, indent=1))
        return metrics

    def load_model(self, trial):
        """The trial's model, rebuilt and fine-tuned again."""
        hp = trial.hyperparameters
        model = self.hypermodel.quantized_model(hp)
        self.hypermodel.fit(hp, model)
        return model

    def rescore(self, top_k: int = 5, seeds=(0, 1, 2)) -> list:
        """Re-evaluates the best trials over several fine-tune data orders
        (:func:`tfcomp.tuners.haq_select.rescore`).

        Example:
            >>> best = tuner.rescore(top_k=5)[0]["policy"]
        """
        return rescore(self, top_k, seeds)

    def get_best_policy(self, margin="auto") -> dict:
        """``{layer: (w_bits, a_bits)}`` of the best trial; with a warm
        start, the start's unless a trial beats its reward by more than
        ``margin`` (``"auto"``: two standard errors of the start's
        validation accuracy; 0: the best reward;
        :func:`tfcomp.tuners.haq_select.best_policy`).

        Example:
            >>> qat = tfcomp.quantization.quantize_model(
            ...     model, bits=tuner.get_best_policy())
        """
        return best_policy(self, margin)
