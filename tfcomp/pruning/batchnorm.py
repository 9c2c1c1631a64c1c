"""Re-estimating BatchNorm statistics after pruning or a short fine-tune.

A pruned (or briefly fine-tuned) network trains with batch statistics but
infers with moving averages that still remember the old weights: with
Keras' momentum 0.99 a 40-step fine-tune moves them only a third of the way.
``recalibrate_batchnorm`` replaces every BatchNormalization layer's moving
mean / variance with the average of its batch statistics over ``x``
(momentum ``i / (i + 1)`` at batch ``i``), the "BN calibration" step of
slimmable networks and AutoSlim. Only the layers holding moving statistics
run in training mode (:func:`statistics_mode`): Dropout, noise and other
training-time behaviour stay off, so the statistics are those of the
inference-time activations.

Reference: Yu & Huang, Universally Slimmable Networks and Improved Training
Techniques, ICCV 2019 (post-training BN statistics calibration).

Example:
    >>> small = tfcomp.prune_channels(model, plan)
    >>> recalibrate_batchnorm(small, x_train[:2048])
"""

from __future__ import annotations

import contextlib

import keras

from tfcomp._io import as_arrays, check_positive_int
from tfcomp.graph.calls import override_calls
from tfcomp.graph.walk import leaf_layers

__all__ = ["recalibrate_batchnorm", "statistics_mode"]

_STATISTICS = ("moving_mean", "moving_variance")


def _keeps_statistics(layer) -> bool:
    return any(v.name in _STATISTICS for v in layer.weights)


def _inference_call(f):
    """``f`` with ``training=False`` wherever a ``training`` is passed."""
    def call(*args, **kwargs):
        if "training" in kwargs:
            kwargs["training"] = False
        return f(*args, **kwargs)
    return call


@contextlib.contextmanager
def statistics_mode(model: keras.Model):
    """Inside it, ``model(x, training=True)`` runs only the layers holding
    moving statistics (BatchNormalization, switchable BN) in training mode;
    every other leaf layer gets ``training=False`` (Dropout, GaussianNoise,
    attention dropout off; EfficientNet's stochastic depth too).

    Example:
        >>> with statistics_mode(model):
        ...     model(x, training=True)   # BN statistics from x, no dropout
    """
    with override_calls({layer: _inference_call
                         for layer in leaf_layers(model)
                         if not _keeps_statistics(layer)}):
        yield model


def recalibrate_batchnorm(model: keras.Model, x, batch_size: int = 128,
                          steps: int | None = None) -> int:
    """Sets every BatchNormalization layer's moving statistics to the
    average of its batch statistics over ``x``.

    The model runs forward in :func:`statistics_mode` (eager calls, no
    weight update): the BatchNormalization layers in training mode, every
    other layer in inference mode (no dropout; QAT layers' EMA ranges do
    not move).

    Args:
        model: a built Keras model.
        x: inputs in any form ``model.fit`` takes (an array, ``(x, y)``,
            a ``tf.data.Dataset``; for several inputs a list of arrays, a
            dict by input name, or batches of those): read through
            :func:`tfcomp._io.as_arrays`, at most ``steps * batch_size``
            samples.
        batch_size: images per forward pass (the statistics are per batch,
            as in training).
        steps: at most this many batches (default: all of ``x``).

    Returns:
        The number of BatchNormalization layers recalibrated (0: nothing to
        do, the model is left as it was).

    Raises:
        ValueError: ``batch_size`` or ``steps`` < 1, or empty ``x``.

    Example:
        >>> recalibrate_batchnorm(pruned, x_train[:2048], batch_size=128)
        19
    """
    batch_size = check_positive_int(batch_size, "batch_size")
    if steps is not None:
        steps = check_positive_int(steps, "steps")
    x, _ = as_arrays(x, model=model, name="x", max_items=None if steps is None
                     else int(steps) * int(batch_size))
    inputs = x if isinstance(x, list) else [x]
    n = len(inputs[0])
    bns = [layer for layer in leaf_layers(model)
           if isinstance(layer, keras.layers.BatchNormalization)]
    if not bns:
        return 0
    momentum = [bn.momentum for bn in bns]
    starts = list(range(0, n, int(batch_size)))
    if steps is not None:
        starts = starts[:int(steps)]
    try:
        with statistics_mode(model):
            for i, a in enumerate(starts):
                for bn in bns:
                    bn.momentum = i / (i + 1.0)
                batch = [t[a:a + int(batch_size)] for t in inputs]
                model(batch if len(batch) > 1 else batch[0], training=True)
    finally:
        for bn, m in zip(bns, momentum):
            bn.momentum = m
    return len(bns)
