"""Rethinking the Value of Network Pruning: train the pruned architecture
from scratch.

``scratch_setup(pruned_model, mode, base_epochs, dense_macs)`` keeps only
the
pruned model's architecture (its channel counts), re-initialises every
weight, and says how long to train it:

* Scratch-E: the same number of epochs as the large model, ``E``.
* Scratch-B: the same compute budget, ``floor(E * MACs_dense /
  MACs_pruned)`` epochs (the paper's ImageNet variant caps this at 2x E:
  ``max_epoch_factor=2``).

The learning rate drops by 10x at 50% and 75% of the epochs (the paper's
CIFAR schedule), via :class:`LearningRateDrops` or
:meth:`ScratchSetup.lr_schedule`.

Example:
    >>> small = tfcomp.pruning.strip_pruning(fpgm_model)
    >>> setup = tfcomp.pruning.scratch_setup(small, mode="B", base_epochs=20,
    ...                                      dense_macs=dense_model)
    >>> setup.model.compile(keras.optimizers.SGD(0.1, momentum=0.9), ...)
    >>> setup.model.fit(x, y, epochs=setup.epochs,
    ...                 callbacks=setup.callbacks)

Reference: Liu et al., Rethinking the Value of Network Pruning, ICLR 2019,
arXiv:1810.05270.
"""

from __future__ import annotations

import dataclasses
import math

import keras

from tfcomp._compile import carry_compile
from tfcomp.cost import profile
from tfcomp.graph.copy import clone_model
from tfcomp.pruning.wrappers import has_pruning_state, strip_pruning

__all__ = ["LearningRateDrops", "ScratchSetup", "scratch_epochs",
           "scratch_setup"]

MODES = ("E", "B")


def scratch_epochs(base_epochs: int, mode: str = "B",
                   dense_macs: int | None = None,
                   pruned_macs: int | None = None,
                   max_epoch_factor: float | None = None) -> int:
    """Training epochs of Scratch-E / Scratch-B.

    Args:
        base_epochs: E, the epochs the large model was trained for.
        mode: ``"E"`` (E epochs) or ``"B"`` (``floor(E * dense / pruned)``).
        dense_macs, pruned_macs: MACs of the large and the pruned model
            (needed for ``"B"``).
        max_epoch_factor: optional cap as a multiple of E (2 for the paper's
            ImageNet Scratch-B).

    Returns:
        The number of epochs.

    Example:
        >>> scratch_epochs(10, "B", dense_macs=100, pruned_macs=45)
        22
    """
    if isinstance(base_epochs, bool) or not isinstance(base_epochs, int) \
            or base_epochs < 1:
        raise ValueError(f"base_epochs must be an integer >= 1. Received: "
                         f"base_epochs={base_epochs!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be 'E' or 'B'. Received: mode={mode!r}")
    if mode == "E":
        return base_epochs
    if not dense_macs or not pruned_macs or dense_macs <= 0 \
            or pruned_macs <= 0:
        raise ValueError(
            "mode='B' needs positive dense_macs and pruned_macs. Received: "
            f"dense_macs={dense_macs!r}, pruned_macs={pruned_macs!r}")
    epochs = int(math.floor(base_epochs * float(dense_macs)
                            / float(pruned_macs) + 1e-9))
    if max_epoch_factor is not None:
        if max_epoch_factor <= 0:
            raise ValueError("max_epoch_factor must be > 0. Received: "
                             f"max_epoch_factor={max_epoch_factor!r}")
        epochs = min(epochs, math.floor(base_epochs * max_epoch_factor))
    return max(1, epochs)


def _drop_epochs(epochs: int, fractions) -> list:
    return sorted({math.floor(epochs * f) for f in fractions
                   if 0 < math.floor(epochs * f) < epochs})


class LearningRateDrops(keras.callbacks.Callback):
    """Multiplies the base learning rate by ``factor`` at fractions of the
    training epochs (default: 10x drops at 50% and 75%).

    The base rate is read from the optimizer when training starts at epoch
    0 (or given as ``base_lr``); the rate for epoch ``e`` is
    ``base_lr * factor ** (number of drop epochs <= e)``, so resuming at an
    ``initial_epoch`` with the same ``base_lr`` gives the same schedule.

    Args:
        epochs: total training epochs.
        base_lr: learning rate before the first drop (default: the
            optimizer's at ``on_train_begin``).
        fractions: where the drops happen, as fractions of ``epochs``.
        factor: multiplier per drop.

    Reference: Liu et al., arXiv:1810.05270 (CIFAR schedule).

    Example:
        >>> model.fit(x, y, epochs=20, callbacks=[LearningRateDrops(20)])
    """

    def __init__(self, epochs: int, base_lr: float | None = None,
                 fractions=(0.5, 0.75), factor: float = 0.1):
        super().__init__()
        if isinstance(epochs, bool) or not isinstance(epochs, int) or \
                epochs < 1:
            raise ValueError(f"epochs must be an integer >= 1. Received: "
                             f"epochs={epochs!r}")
        if not 0 < factor <= 1:
            raise ValueError(f"factor must be in (0, 1]. Received: "
                             f"factor={factor!r}")
        self.epochs = epochs
        self.base_lr = None if base_lr is None else float(base_lr)
        self.fractions = tuple(float(f) for f in fractions)
        self.factor = float(factor)
        self.drop_epochs = _drop_epochs(epochs, self.fractions)

    def lr_at(self, epoch: int) -> float:
        """Learning rate of ``epoch`` (0-based).

        Example:
            >>> LearningRateDrops(8, base_lr=0.1).lr_at(6)   # 0.001
        """
        if self.base_lr is None:
            raise ValueError("base_lr is not known before training starts.")
        n = sum(1 for d in self.drop_epochs if epoch >= d)
        return self.base_lr * self.factor ** n

    def on_train_begin(self, logs=None):
        if self.base_lr is None:
            opt = self.model.optimizer
            lr = getattr(opt, "learning_rate", None)
            try:
                self.base_lr = float(keras.ops.convert_to_numpy(lr))
            except (TypeError, ValueError) as e:
                raise ValueError(
                    "LearningRateDrops needs an optimizer with a constant "
                    "learning rate (or pass base_lr). Received: "
                    f"learning_rate={lr!r}") from e

    def on_epoch_begin(self, epoch, logs=None):
        self.model.optimizer.learning_rate = self.lr_at(epoch)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = self.lr_at(epoch)


@dataclasses.dataclass
class ScratchSetup:
    """What :func:`scratch` returns.

    Attributes:
        model: the re-initialised model (same architecture; compiled like
            the pruned model, with a fresh optimizer state, if that was).
        epochs: epochs to train it for.
        mode: ``"E"`` or ``"B"``.
        base_epochs: E of the large model.
        macs: MACs of the pruned architecture.
        dense_macs: MACs of the large model (None for Scratch-E without it).
        callbacks: ``[LearningRateDrops(epochs)]``.

    Example:
        >>> setup.model.fit(x, y, epochs=setup.epochs,
        ...                 callbacks=setup.callbacks)
    """

    model: keras.Model
    epochs: int
    mode: str
    base_epochs: int
    macs: int
    dense_macs: int | None
    callbacks: list

    def lr_schedule(self, base_lr: float, steps_per_epoch: int,
                    factor: float = 0.1, fractions=(0.5, 0.75)):
        """A step-based ``PiecewiseConstantDecay`` with the same drops (an
        alternative to the callback, saved with the optimizer).

        Example:
            >>> opt = keras.optimizers.SGD(setup.lr_schedule(0.1, 50))
        """
        drops = _drop_epochs(self.epochs, fractions)
        bounds = [d * int(steps_per_epoch) for d in drops]
        values = [base_lr * factor ** i for i in range(len(bounds) + 1)]
        if not bounds:
            return float(base_lr)
        return keras.optimizers.schedules.PiecewiseConstantDecay(
            bounds, values)


def _macs(model_or_macs) -> int | None:
    if model_or_macs is None:
        return None
    if isinstance(model_or_macs, keras.Model):
        return int(profile(model_or_macs).macs)
    if isinstance(model_or_macs, bool) or not isinstance(
            model_or_macs, (int, float)) or model_or_macs <= 0:
        raise ValueError("dense_macs must be a keras.Model or a positive "
                         f"number. Received: dense_macs={model_or_macs!r}")
    return int(model_or_macs)


def _compiled_fresh(source, fresh):
    """``fresh`` compiled like ``source`` (optimizer configuration, loss,
    metrics) but with a fresh optimizer state: training from scratch
    starts at step 0 with zero moments."""
    fresh = carry_compile(source, fresh, what="the scratch model")
    opt = getattr(fresh, "optimizer", None)
    if opt is None or not fresh.compiled:
        return fresh
    opt.iterations.assign(0)
    for var in opt.variables:  # slots; scalars (learning rate, scales) kept
        if len(var.shape) and "learning_rate" not in var.name:
            var.assign(keras.ops.zeros(var.shape, var.dtype))
    return fresh


def scratch_setup(pruned_model: keras.Model, mode: str = "B",
                  base_epochs: int = 1, dense_macs=None,
                  max_epoch_factor: float | None = None,
                  seed: int | None = 0, lr_drops=(0.5, 0.75),
                  lr_factor: float = 0.1) -> ScratchSetup:
    """Fresh-initialised copy of a pruned architecture and its epoch budget.

    A model still holding training-time pruning state (masked layers) is
    first :func:`tfcomp.pruning.strip_pruning`-ped, so "the pruned architecture" is
    the compact one. No weight is inherited: every layer is rebuilt from
    its config and its initialisers run again (``Lambda`` layers keep their
    functions, :mod:`tfcomp.graph.copy`). A compiled ``pruned_model`` gives
    a model compiled the same way (optimizer class and hyper-parameters,
    loss, metrics) with a fresh optimizer state (``iterations`` 0, zero
    moments); compile it again for another recipe.

    Args:
        pruned_model: the pruned (compact) model.
        mode: ``"E"`` or ``"B"``.
        base_epochs: E, the epochs of the large model's training.
        dense_macs: MACs of the large model, or the large model itself
            (required for ``"B"``).
        max_epoch_factor: cap on Scratch-B epochs as a multiple of E (the
            paper's ImageNet variant uses 2; default: no cap, as for CIFAR).
        seed: if not None, ``keras.utils.set_random_seed(seed)`` is called
            before re-initialising (note: it seeds the global generators).
        lr_drops: fractions of the epochs where the learning rate drops.
        lr_factor: multiplier at each drop.

    Returns:
        A :class:`ScratchSetup`.

    Reference: Liu et al., Rethinking the Value of Network Pruning, ICLR
    2019, arXiv:1810.05270.

    Example:
        >>> setup = scratch_setup(small, "B", base_epochs=10, dense_macs=big)
        >>> setup.epochs
    """
    if not isinstance(pruned_model, keras.Model):
        raise TypeError("pruned_model must be a keras.Model. Received: "
                        f"{type(pruned_model).__name__}")
    if mode not in MODES:
        raise ValueError(f"mode must be 'E' or 'B'. Received: mode={mode!r}")
    if has_pruning_state(pruned_model):
        pruned_model = strip_pruning(pruned_model)
    dense = _macs(dense_macs)
    macs = int(profile(pruned_model).macs)
    epochs = scratch_epochs(base_epochs, mode, dense, macs, max_epoch_factor)
    if seed is not None:
        keras.utils.set_random_seed(int(seed))
    fresh = _compiled_fresh(pruned_model, clone_model(pruned_model))
    return ScratchSetup(
        model=fresh, epochs=epochs, mode=mode, base_epochs=base_epochs,
        macs=macs, dense_macs=dense,
        callbacks=[LearningRateDrops(epochs, fractions=lr_drops,
                                     factor=lr_factor)])
