"""The loss a Hessian sensitivity differentiates, and its targets: the
given or compiled loss, else one the outputs and labels ask for (sparse
cross-entropy on the labels or the model's own top-1, squared error or
binary cross-entropy for a one-unit output or float targets).

Reference: Dong et al., HAWQ-V2, arXiv:1911.03852 (the Hessian of the
training loss at the trained weights).

Example:
    >>> fn, kind = _loss_fn(model, None, probs=False, units=10)
"""

from __future__ import annotations

import keras
import numpy as np

from tfcomp._finetune import task_loss
from tfcomp._score import is_targets


def _probabilities(out: np.ndarray) -> bool:
    """Outputs that look like softmax probabilities (rows sum to 1)."""
    if out.ndim < 2 or out.shape[-1] < 2:
        return False
    return bool(np.all(out >= -1e-6) and np.all(out <= 1 + 1e-6) and np.allclose(
        out.sum(axis=-1), 1.0, atol=1e-3))


def _loss_fn(model, loss, probs: bool, units: int = 2, y=None):
    """``(fn(y, p) -> per-sample or scalar loss, kind)``; kind "sparse",
    "onehot" (categorical cross-entropy) or "raw". Without a loss (given
    or compiled): sparse cross-entropy, but for float targets or a
    one-unit output (a softmax over one unit is constant: a Hessian of 0)
    the labels' own loss (``tfcomp._finetune.task_loss``: squared error,
    binary cross-entropy), squared error to the model's own outputs
    without labels."""
    if loss is None:
        loss = getattr(model, "loss", None)
    if loss is None and (units == 1 or (y is not None and is_targets(y))):
        if y is None:
            return keras.losses.MeanSquaredError(), "raw"
        return task_loss(model, y), "raw"
    if loss is None:
        return (keras.losses.SparseCategoricalCrossentropy(
            from_logits=not probs), "sparse")
    if isinstance(loss, (dict, list, tuple)):
        raise NotImplementedError(
            "sensitivity needs one loss for a single-output model. Received: "
            f"loss={loss!r}; pass loss=<one loss> instead.")
    fn = task_loss(model, y, loss)  # ranks aligned as Keras' fit does
    name = str(getattr(fn, "name", None) or getattr(fn, "__name__", "")
               or type(fn).__name__).lower()
    if "sparse_categorical" in name or "sparsecategorical" in name:
        return fn, "sparse"
    if "categorical_crossentropy" in name or "categoricalcrossentropy" in name:
        return fn, "onehot"
    return fn, "raw"


def _targets(kind: str, y, out: np.ndarray):
    """Loss targets: labels as the loss wants them, or the float model's own
    predictions when there are no labels."""
    if y is None:
        if kind == "raw":
            return out.astype(np.float32)
        y = out.reshape(out.shape[0], -1).argmax(axis=-1)
    if kind in ("sparse", "onehot"):
        n = int(out.shape[-1])
        if y.min() < 0 or y.max() >= n:
            raise ValueError(
                f"calibration_data labels must be class indices in [0, {n}) "
                f"for a model with {n} outputs. Received: labels in "
                f"[{y.min()}, {y.max()}]")
    if kind == "onehot":
        return np.eye(out.shape[-1], dtype=np.float32)[y]
    if kind == "raw":
        return y.astype(np.float32)
    return y


def _check_loss(fn, targets, out, name: str) -> None:
    try:
        value = keras.ops.convert_to_numpy(keras.ops.mean(fn(
            targets[:2], keras.ops.convert_to_tensor(out[:2], "float32"))))
    except Exception as e:  # noqa: BLE001 - re-raised with context
        raise ValueError(
            f"The loss cannot be computed on model {name!r}'s outputs "
            f"(shape {out.shape[1:]}) and the labels / targets (shape "
            f"{np.shape(targets)[1:]}): {type(e).__name__}: {e}. Pass "
            "loss=... or labels that fit it.") from None
    if not np.isfinite(value):
        raise ValueError(f"The loss of model {name!r} on the calibration "
                         "data is not finite.")
