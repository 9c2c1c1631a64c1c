"""AutoSlim: greedy one-shot search for the channel counts of each layer.

Given a trained slimmable supernet (:func:`tfcomp.pruning.to_slimmable`
trained with the sandwich rule), :func:`autoslim` starts from the full
width and repeats: for every slimmable channel group (coupled layers of
residual adds and concatenations count as one), evaluate the loss on
held-out batches when that group loses one step of channels; commit the
cheapest drop. Each time the MACs fall below a target the architecture is
recorded as a :class:`~tfcomp.pruning.Plan` that ``prune_channels``
applies to the original model; the paper then retrains it from scratch
(:meth:`AutoSlimResult.scratch`, through
:func:`tfcomp.pruning.scratch_setup`).

Deviations: the released code (``train.py``, ``slimming``) ranks each
candidate by its top-1 error on one training batch; here by the loss
(smooth, so candidates rarely tie), the mean over ``batches`` held-out
batches (less noise, the issue's choice). BatchNorm normalises with each
evaluated batch's own statistics, as the released code does (the model's
moving statistics belong to uniform widths, not to the candidate). The
paper divides each layer into channel groups; the default ``step=0.1``
removes a tenth of a group per step (at least its ``round_to`` step); the
released code removes a fixed ``divisor`` of channels per layer.
MACs come from :class:`tfcomp.pruning.targets.ChannelMacs`.

Reference: Yu & Huang, AutoSlim: Towards One-Shot Architecture Search for
Channel Numbers, arXiv:1903.11728.

Example:
    >>> slim = tfcomp.pruning.to_slimmable(model, universal=True)
    >>> slim.compile(...); slim.fit(x, y, epochs=5)
    >>> res = tfcomp.pruning.autoslim(slim, (x_val, y_val),
    ...                               target_macs=(0.5, 0.25))
    >>> small = res.prune(model, 0.5)    # plain model, retrain it
"""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np
import tensorflow as tf

from tfcomp._batches import as_model_input, rows, sliced
from tfcomp._finetune import finetune_loss, loss_callable
from tfcomp._io import as_arrays, check_positive_int
from tfcomp.graph import DependencyGraph
from tfcomp.layers.slimmable import width_scope
from tfcomp.pruning.plan import Plan
from tfcomp.pruning.slim_plain import full_width_plain
from tfcomp.pruning.slimmable import (
    SlimmableModel,
    _groups,
    set_width,
    to_slimmable,
)
from tfcomp.pruning.targets import ChannelMacs, check_target_macs

__all__ = ["CRITERIA", "AutoSlimResult", "autoslim"]


@dataclasses.dataclass
class AutoSlimResult:
    """What :func:`autoslim` found.

    Attributes:
        architectures: ``{target: {"keep": {group: channels}, "macs": int,
            "loss": float, "plan": Plan}}`` for every target reached.
        history: one dict per greedy step (``group``, ``removed``,
            ``keep``, ``loss``, ``macs``), the start first.
        dense_macs: MACs of the full width.

    Example:
        >>> res.architectures[0.5]["keep"]
        >>> small = res.prune(model, 0.5)
    """

    architectures: dict
    history: list
    dense_macs: int

    def plan(self, target) -> Plan:
        """The plan of ``target`` (a value given to ``target_macs``)."""
        if target not in self.architectures:
            raise ValueError(f"No architecture for target {target!r}. "
                             f"Found: {sorted(self.architectures)}")
        return self.architectures[target]["plan"]

    def prune(self, model: keras.Model, target) -> keras.Model:
        """``prune_channels(model, plan(target))`` for a plain model of the
        supernet's architecture (weights inherited)."""
        from tfcomp.pruning.surgery import prune_channels

        return prune_channels(model, self.plan(target))

    def scratch(self, model: keras.Model, target, base_epochs: int,
                mode: str = "E"):
        """The found architecture re-initialised for training from scratch
        (:func:`tfcomp.pruning.scratch_setup`), as the paper retrains it.

        Example:
            >>> setup = res.scratch(model, 0.5, base_epochs=20)
            >>> setup.model.fit(x, y, epochs=setup.epochs,
            ...                 callbacks=setup.callbacks)
        """
        from tfcomp.pruning.rethinking import scratch_setup

        return scratch_setup(self.prune(model, target), mode=mode,
                             base_epochs=base_epochs, dense_macs=model)


def _steps(groups: dict, step) -> dict:
    out = {}
    for g, (size, rt) in groups.items():
        if isinstance(step, float):
            n = max(1, math.ceil(step * size))
        else:
            n = int(step)
        out[g] = min(size, max(rt, math.ceil(n / rt) * rt))
    return out


def _check_step(step):
    if isinstance(step, bool):
        raise TypeError(f"step must be an int or a float in (0, 1). "
                        f"Received: step={step!r}")
    if isinstance(step, float):
        if not 0.0 < step < 1.0:
            raise ValueError("step must be a channel count >= 1 or a "
                             f"fraction in (0, 1). Received: step={step!r}")
        return step
    return check_positive_int(step, "step")


CRITERIA = ("loss", "loss_per_mac")


def autoslim(model, calibration_data, target_macs=(0.75, 0.5, 0.25),
             step=0.1, *, batches: int = 4, batch_size: int = 64,
             loss=None, criterion: str = "loss",
             verbose: int = 0) -> AutoSlimResult:
    """Greedy slimming of a slimmable supernet to MACs targets.

    Args:
        model: a trained :class:`~tfcomp.pruning.SlimmableModel`, or a plain
            model (converted with ``to_slimmable(universal=True)``; its
            weights are then used as they are).
        calibration_data: held-out ``(x, y)`` (arrays or a dataset); the
            first ``batches * batch_size`` samples are used.
        target_macs: MACs targets, fractions (0, 1] of the full width or
            absolute counts.
        step: channels one greedy step removes from a group: an int, or a
            fraction of each group's size; rounded up to the group's
            ``round_to`` step.
        batches: held-out batches per evaluation (the released code: 1).
        batch_size: samples per batch.
        loss: a Keras loss; default the one a short fine-tune would use
            (``tfcomp._finetune.finetune_loss``): sparse categorical
            cross-entropy for class labels, binary cross-entropy for a
            one-unit binary classifier, the compiled loss (else mean
            squared error) for float targets.
        criterion: ``"loss"`` (the paper: the step whose held-out loss is
            lowest) or ``"loss_per_mac"`` (not in the paper; NetAdapt's
            idea: the lowest loss increase per MAC the step removes, so a
            cheap cut of a small layer does not win over a slightly dearer
            cut that saves more compute).
        verbose: 1 prints each step.

    Returns:
        An :class:`AutoSlimResult`.

    Raises:
        ValueError: bad targets / step, no labels, a model with nothing
            slimmable, or targets no greedy step reaches.

    Example:
        >>> res = autoslim(slim, (x_val, y_val), target_macs=(0.5,))
        >>> res.architectures[0.5]["macs"] <= 0.5 * res.dense_macs
        True
    """
    if isinstance(target_macs, (int, float)):
        target_macs = (target_macs,)
    targets = [check_target_macs(t, "target_macs") for t in target_macs]
    step = _check_step(step)
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}. "
                         f"Received: criterion={criterion!r}")
    batches = check_positive_int(batches, "batches")
    batch_size = check_positive_int(batch_size, "batch_size")
    if not isinstance(model, SlimmableModel):
        model = to_slimmable(model, widths=(1.0,), universal=True)
    x, y = as_arrays(calibration_data, model=model,
                     max_items=batches * batch_size, need_labels=True,
                     name="calibration_data", targets=True)
    loss_fn = loss_callable(loss or finetune_loss(
        model, y, from_logits=model.from_logits))
    previous = getattr(model, "current_width", model.widths[-1])
    set_width(model, model.widths[-1])
    plain = full_width_plain(model)
    graph = DependencyGraph(plain)
    cost = ChannelMacs(graph)
    groups = _groups(model)
    steps = _steps(groups, step)
    orders = {g: np.arange(s)[::-1] for g, (s, _) in groups.items()}
    absolute = {t: int(t * cost.dense) if t <= 1.0 else int(t)
                for t in targets}

    @tf.function
    def forward(xb):
        with width_scope(batch_stats=True):
            return model(xb, training=False)

    def evaluate(arch) -> float:
        set_width(model, arch)
        total = 0.0
        for a in range(0, rows(x), batch_size):
            out = forward(as_model_input(model, sliced(x, a, a + batch_size)))
            value = loss_fn(y[a:a + batch_size], out)  # a loss function
            total += float(np.mean(keras.ops.convert_to_numpy(value))) * len(
                y[a:a + batch_size])  # gives one value per sample
        return total / rows(x)

    def record(arch, lossv) -> dict:
        keep = {g: np.arange(n) for g, n in arch.items()
                if n < groups[g][0]}
        return {"keep": dict(arch), "macs": cost(arch, orders),
                "loss": lossv, "plan": Plan.from_keep(
                    graph, keep, meta={"method": "autoslim"})}

    arch = {g: s for g, (s, _) in groups.items()}
    current = evaluate(arch)
    history = [{"group": None, "removed": 0, "keep": dict(arch),
                "loss": current, "macs": cost(arch, orders)}]
    found = {}
    try:
        pending = [t for t in targets if history[0]["macs"] > absolute[t]]
        for t in targets:
            if t not in pending:
                found[t] = record(arch, current)
        while pending:
            best = None
            macs_now = history[-1]["macs"]
            for g in groups:
                n = arch[g] - steps[g]
                if n < min(steps[g], groups[g][0]) or n < 1:
                    continue
                cand = {**arch, g: n}
                lv = evaluate(cand)
                score = lv
                if criterion == "loss_per_mac":
                    saved = macs_now - cost(cand, orders)
                    score = (lv - current) / max(saved, 1)
                if best is None or score < best[0]:
                    best = (score, g, lv, cand)
            if best is None:
                raise ValueError(
                    f"target_macs={[t for t in pending]} cannot be reached: "
                    "every slimmable group is at its minimum; MACs left "
                    f"{history[-1]['macs']:,} of {cost.dense:,}.")
            _, g, current, arch = best
            macs = cost(arch, orders)
            history.append({"group": g, "removed": steps[g],
                            "keep": dict(arch), "loss": current,
                            "macs": macs})
            if verbose:
                print(f"autoslim: {g} -> {arch[g]} channels, loss "
                      f"{current:.4f}, MACs {macs / cost.dense:.3f}")
            for t in list(pending):
                if macs <= absolute[t]:
                    found[t] = record(arch, current)
                    pending.remove(t)
    finally:
        set_width(model, previous)
    return AutoSlimResult(architectures=found, history=history,
                          dense_macs=cost.dense)
