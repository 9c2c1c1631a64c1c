"""Labels as the verbs use them: class indices (per sample, or per position
for a model whose output keeps positions; one-hot rows converted), or,
for the loss-based verbs, float regression targets of the output's shape.
Float labels that are not whole numbers are never read as classes.

Example:
    >>> class_labels(np.eye(3)[[0, 2]], model, "y")   # one-hot
    array([0, 2])
"""

from __future__ import annotations

import numpy as np

__all__ = ["binary_output", "class_labels", "labels_for"]


def class_labels(y, model, name: str):
    """int64 class indices: one per sample, or one per output position when
    the model's output has positions (a U-Net's per-pixel classes); one-hot
    labels (the output's shape; or soft ones, rows summing to 1) are
    converted with argmax; 0 / 1 labels of a sigmoid (or binary
    cross-entropy) output's shape stay one per unit (multi-label tagging,
    a binary mask). A ``ValueError`` for labels of another shape.

    Example:
        >>> class_labels(np.eye(3)[[0, 2]], model, "y")   # one-hot
        array([0, 2])
    """
    out = None
    if model is not None and getattr(model, "outputs", None):
        out = tuple(model.outputs[0].shape[1:])

    def fits(shape, want) -> bool:  # None (a variable length) fits any
        return len(shape) == len(want) and all(
            w is None or int(d) == int(w) for d, w in zip(shape, want))

    if out and fits(y.shape[1:], out[:-1]):
        return _as_classes(y, name)  # sparse, per sample or per position
    if out and out[-1] and out[-1] > 1 and fits(y.shape[1:], out) \
            and _zero_one(y) and binary_output(model):
        return _as_classes(y, name)  # multi-label: 0 / 1 per sigmoid unit
    one_hot = _class_rows(y)
    if out and out[-1] and out[-1] > 1 and fits(y.shape[1:], out) \
            and one_hot:
        return y.argmax(axis=-1).astype("int64")  # one-hot
    if y.ndim == 2 and y.shape[1] > 1 and (out is None or len(out) == 1) \
            and one_hot:
        return y.argmax(axis=1).astype("int64")  # one-hot, no model given
    if y.ndim > 1 and int(np.prod(y.shape[1:])) == 1:
        return _as_classes(y.reshape(-1), name)  # (N, 1)
    if out and out[-1] == 1 and fits(y.shape[1:], out):
        # a binary mask shaped like a one-unit output ((N, H, W, 1) for a
        # sigmoid segmentation head): one 0 / 1 label per position
        return _as_classes(y[..., 0], name)
    if y.ndim > 1:
        raise ValueError(
            f"{name} labels of shape {y.shape} do not match the model's "
            f"output shape {('N',) + out if out else 'unknown'}: give one "
            "class index per sample (or per output position), or one-hot "
            "labels of the output's shape.")
    return _as_classes(y, name)


def _zero_one(y) -> bool:
    return bool(np.all((y == 0) | (y == 1)))


def binary_output(model) -> bool:
    """A model whose (first) output is binary per unit: a sigmoid, or
    compiled with a binary cross-entropy (multi-label tagging).

    Example:
        >>> binary_output(keras.Sequential([keras.Input((3,)),
        ...     keras.layers.Dense(1, activation="sigmoid")]))
        True
    """
    from tfcomp._output_kinds import compiled_loss, is_sigmoid, loss_kind

    return is_sigmoid(model, model.outputs[0]) or loss_kind(
        compiled_loss(model)) == "binary"


def _class_rows(y) -> bool:
    """Whether ``y``'s last axis holds one-hot or soft (mixup, label
    smoothing) class probabilities, not regression targets."""
    return y.ndim > 1 and bool(np.all(y >= 0)) and bool(
        np.allclose(y.sum(axis=-1), 1.0, atol=1e-3))


def _as_classes(y, name: str) -> np.ndarray:
    """``y`` as int64 class indices; a ``ValueError`` naming ``name`` for
    float values that are not whole numbers (regression targets, which
    truncated to integers would be read as classes)."""
    if np.issubdtype(y.dtype, np.floating):
        frac = y[np.isfinite(y) & (y != np.round(y))]
        if frac.size or not np.all(np.isfinite(y)):
            shown = frac[0] if frac.size else "nan / inf"
            raise ValueError(
                f"{name} labels hold non-integer values (e.g. {shown}): "
                "float targets (regression), not class indices. Verbs that "
                "score by top-1 accuracy need class labels; the loss-based "
                "ones (the 'loss' / 'hessian' sensitivities) take targets "
                "of the output's shape with the model's compiled loss.")
    return y.astype("int64")


def _float_targets(y, model):
    """Float targets of the model's (first) output shape, reshaped to it,
    for a loss to compare with the outputs (regression); None for class
    labels (integers, one-hot rows) or another shape."""
    if not np.issubdtype(y.dtype, np.floating) or model is None \
            or not getattr(model, "outputs", None):
        return None
    out = tuple(model.outputs[0].shape[1:])
    if any(d is None for d in out) or int(np.prod(y.shape[1:])) != int(
            np.prod(out)) or np.all(y == np.round(y)):
        return None
    if y.shape[-1] > 1 and _class_rows(y):  # mixup / smoothed: classes
        return None
    return y.reshape((len(y),) + out).astype(np.float32)


def labels_for(y, n: int, model, need_labels: bool, name: str,
            targets: bool = False):
    """``y`` cut to the ``n`` inputs and as class indices (or None).

    Targets that are not class labels (a regression model's, e.g. a next
    frame or a clean image of the output's shape) are an error only where
    labels are needed; elsewhere they are ignored (None). With
    ``targets``, float targets of the output's shape pass through as
    float32 (for a loss)."""
    if y is not None:
        if y.shape[0] < n:
            raise ValueError(
                f"{name} labels must have one entry per input ({n})."
                f" Received: labels.shape={y.shape}")
        kept = _float_targets(y[:n], model) if targets else None
        if kept is not None:
            return kept
        try:
            y = class_labels(y[:n], model, name)
        except ValueError:
            if need_labels:
                raise
            y = None
    if need_labels and y is None:
        raise ValueError(
            f"{name} must hold labels: give (x, y) or batches of (x, y).")
    return y
