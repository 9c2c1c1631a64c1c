"""How well a model predicts labelled data, as the searches and reports
score it: top-1 accuracy for class labels (per row, or per position for a
segmentation net's per-pixel labels; for an output of one unit per label,
a binary classifier's, the side of its threshold: 0.5 after a sigmoid, 0
on a logit), ``R^2 = 1 - MSE / Var(y)`` for float
targets of the output's shape (regression: 1 when exact, 0 for predicting
the mean), so that higher is better for both and AMC's ``1 - score`` is
an error.

Example:
    >>> score(model, x_val, y_val)       # classes: 0.91; targets: R^2
    >>> top1(logits, labels)
"""

from __future__ import annotations

import keras
import numpy as np

from tfcomp._batches import as_model_input, rows, sliced
from tfcomp._output_kinds import compiled_loss, is_sigmoid, loss_kind

__all__ = ["binary_threshold", "first_output", "is_targets", "predicted",
           "score", "score_outputs", "top1"]


def first_output(model, x, batch_size: int = 256,
                 traced: bool = False) -> np.ndarray:
    """The model's first output on ``x`` (an array, a list of arrays, a
    dict by input name), in inference mode: eager batches, or
    ``model.predict`` (``traced=True``: a model evaluated again and
    again).

    Example:
        >>> first_output(model, x_val).shape
        (512, 10)
    """
    if traced:
        out = model.predict(as_model_input(model, x), batch_size=batch_size,
                            verbose=0)
        return np.asarray(keras.tree.flatten(out)[0])
    parts = []
    for a in range(0, rows(x), batch_size):
        out = model(as_model_input(model, sliced(x, a, a + batch_size)),
                    training=False)
        parts.append(keras.ops.convert_to_numpy(keras.tree.flatten(out)[0]))
    return np.concatenate(parts).astype(np.float32, copy=False)


def is_targets(y) -> bool:
    """Float targets (regression), not class labels: what
    ``tfcomp._io.as_arrays(targets=True)`` gives back as float32 where
    class labels come back as integers."""
    return np.issubdtype(np.asarray(y).dtype, np.floating)


def top1(out, y) -> float:
    """The fraction of ``y``'s labels that are ``out``'s top-1 class (per
    position when ``y`` holds one label per pixel or step).

    Example:
        >>> top1(np.array([[0.1, 0.9], [0.8, 0.2]]), np.array([1, 1]))
        0.5
    """
    y = np.asarray(y)
    return float(np.mean(_top_class(out, y.shape) == y))


def _top_class(out, shape: tuple) -> np.ndarray:
    """The top-1 class of ``out`` read as ``shape`` + a class axis."""
    return np.asarray(out).reshape(tuple(shape) + (-1,)).argmax(-1)


def binary_threshold(model) -> float:
    """Where a one-unit output decides class 1: 0.5 after a sigmoid (or
    with a binary cross-entropy on probabilities), else 0 (a logit).

    Example:
        >>> binary_threshold(keras.Sequential([keras.Input((3,)),
        ...     keras.layers.Dense(1, activation="sigmoid")]))
        0.5
    """
    outputs = keras.tree.flatten(getattr(model, "outputs", None) or [])
    if outputs and is_sigmoid(model, outputs[0]):
        return 0.5
    loss = compiled_loss(model)
    if loss_kind(loss) == "binary" and not getattr(loss, "from_logits",
                                                   False):
        return 0.5
    return 0.0


def predicted(out, shape: tuple, threshold: float = 0.0) -> np.ndarray:
    """The classes ``out`` predicts for labels of ``shape``: the top-1 class
    (per position when ``shape`` has positions), or, when ``out`` has one
    unit per label (a binary classifier, a binary mask, multi-label tags),
    1 where it is above ``threshold`` (:func:`binary_threshold`).

    Example:
        >>> predicted(np.array([[0.8], [0.3]]), (2,), 0.5)
        array([1, 0])
    """
    out = np.asarray(out)
    if out.size == int(np.prod(shape)):  # one unit per label: binary
        return (out.reshape(shape) > threshold).astype(np.int64)
    return _top_class(out, shape)


def score_outputs(out, y, threshold: float = 0.0) -> float:
    """:func:`top1` for class labels, or the side of ``threshold`` when
    ``out`` has one unit per label (a binary classifier, per row or per
    pixel); ``1 - MSE / Var(y)`` (R^2) for float targets, ``out`` read in
    ``y``'s shape.

    Example:
        >>> score_outputs(np.array([1.0, 2.0]), np.array([1.0, 3.0]))
        -1.0
        >>> score_outputs(np.array([[0.8], [0.3]]), np.array([1, 1]), 0.5)
        0.5
    """
    out = np.asarray(out)
    if not is_targets(y):
        y = np.asarray(y)
        return float(np.mean(predicted(out, y.shape, threshold) == y))
    y = np.asarray(y, np.float64)
    err = np.mean((np.asarray(out, np.float64).reshape(y.shape) - y) ** 2)
    return float(1.0 - err / max(float(np.var(y)), 1e-12))


def score(model, x, y, batch_size: int = 256, traced: bool = False
          ) -> float:
    """:func:`score_outputs` of ``model`` on ``(x, y)``.

    Example:
        >>> score(model, x_val, y_val)
        0.91
    """
    return score_outputs(first_output(model, x, batch_size, traced), y,
                         binary_threshold(model))
