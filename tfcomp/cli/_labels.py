"""The labels of the CLI's ``--data``: what a user's model predicts
(classes per row or per position, or float targets), and how the verbs
fine-tune and score on them (cross-entropy and accuracy, or mean squared
error).

Example:
    >>> y = labels(np.load("seg.npz")["y_train"], "y_train", "seg.npz", unet)
    >>> score_name(y), evaluate(unet, x_test, y_test)
"""

from __future__ import annotations

from tfcomp._batches import as_model_input
from tfcomp._io import class_labels
from tfcomp.cli._errors import CLIError

__all__ = ["labels", "is_targets", "require_classes", "evaluate",
           "score_name", "loss_for"]


def labels(y, name: str, spec: str, model):
    """The labels the CLI fine-tunes and scores with. Integer classes come
    back int64: one per row (``(N,)`` or ``(N, 1)``), one per position
    shaped like the model's first output without its class axis (a
    U-Net's ``(N, H, W)`` for ``(N, H, W, C)`` logits), or one-hot rows
    (turned into classes: ``tfcomp._io.class_labels``, the Python API's
    reading); in ``[0, classes)``. 0 / 1 labels of a binary output (a
    one-unit classifier's integer labels; a sigmoid head's masks or
    multi-label tags, float too) are classes per unit, as the library
    reads them. Float targets shaped like the model's output (regression)
    come back float32 (``is_targets``)."""
    import numpy as np

    y = np.asarray(y)
    if not (np.issubdtype(y.dtype, np.integer)
            or np.issubdtype(y.dtype, np.floating) or y.dtype == bool):
        raise CLIError(f"data {spec!r}: {name} must hold numbers. Received:"
                       f" {y.dtype} array of shape {y.shape}")
    if not np.all(np.isfinite(y)):
        raise CLIError(f"data {spec!r}: {name} holds non-finite values")
    out = None if model is None else tuple(model.outputs[0].shape[1:])
    classes = out[-1] if out and out[-1] is not None and out[-1] > 1 \
        else None
    whole = np.issubdtype(y.dtype, np.integer) or bool(np.all(y == np.round(
        y)))
    binary = out is not None and _binary_labels(y, model)
    if whole and (out is None or classes is not None or binary):
        try:  # per row or position, one-hot: the library's own reading
            cls = class_labels(y, model, name)
        except ValueError:
            cls = None
        if cls is not None and (out is None or _fits(
                cls.shape[1:], out[:-1]) or (binary and _fits(cls.shape[1:],
                                                              out))):
            lo, hi = (int(cls.min()), int(cls.max())) if cls.size else (0, 0)
            if lo < 0 or (classes is not None and hi >= classes):
                top = "" if classes is None else f", < {classes} (the " \
                    "model's outputs)"
                raise CLIError(f"data {spec!r}: {name} labels must be >= 0"
                               f"{top}. Received labels in [{lo}, {hi}]")
            return cls
    if out is not None and (_fits(y.shape[1:], out) or (
            out == (1,) and y.ndim == 1)):
        return y.astype("float32").reshape((len(y),) + tuple(
            d if d is not None else y.shape[i + 1]
            for i, d in enumerate(out)))
    want = "integer class labels, shape (N,)" if out is None else (
        f"integer class labels of shape {_n_shape(out[:-1])} or targets of "
        f"shape {_n_shape(out)}" if classes else
        f"targets of shape {_n_shape(out)}")
    raise CLIError(f"data {spec!r}: {name} must hold {want}"
                   f"{'' if model is None else ' for model ' + repr(model.name)}"
                   f". Received: {y.dtype} array of shape {y.shape}")


def _binary_labels(y, model) -> bool:
    """0 / 1 labels of a binary output: integer (or bool) ones of a
    one-unit output (a logit or sigmoid classifier), or any 0 / 1 labels of
    a sigmoid / binary cross-entropy output (a binary mask, multi-label
    tags: ``tfcomp._class_labels.binary_output``). Float 0 / 1 targets of
    another one-unit output stay regression targets."""
    import numpy as np

    from tfcomp._class_labels import binary_output

    if y.size == 0 or not np.all((y == 0) | (y == 1)):
        return False
    integer = np.issubdtype(y.dtype, np.integer) or y.dtype == bool
    return (integer and model.outputs[0].shape[-1] == 1) or binary_output(
        model)


def _n_shape(dims) -> str:
    return "(N,)" if not dims else f"(N, {', '.join(map(str, dims))})"


def _fits(shape, want) -> bool:
    return len(shape) == len(want) and all(
        w is None or w == s for s, w in zip(shape, want))


def is_targets(y) -> bool:
    """Float targets (regression, multi-label), not class labels."""
    import numpy as np

    return np.issubdtype(np.asarray(y).dtype, np.floating)


def require_classes(y, what: str, spec: str) -> None:
    """A ``CLIError`` when ``what`` needs class labels and ``y`` holds
    float targets."""
    if is_targets(y):
        raise CLIError(
            f"{what} scores models by top-1 accuracy and needs integer class"
            f" labels (per row or per position); data {spec!r} holds float "
            f"targets of shape {tuple(y.shape)} (regression / multi-label). "
            "Use the Python API with your own loss, or prune / quantize / "
            "compress / export, which take targets.")


def evaluate(model, x, y) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)`` (per position for
    per-position labels; for a binary output the side of its threshold,
    per unit: ``tfcomp._score.score_outputs``), or for float targets their
    mean squared error (``score_name``)."""
    import numpy as np

    from tfcomp._score import binary_threshold, score_outputs

    out = model.predict(as_model_input(model, x), batch_size=256, verbose=0)
    out = np.asarray(out[0] if isinstance(out, (list, tuple)) else out)
    if is_targets(y):
        return float(np.mean((out.reshape(y.shape) - y) ** 2))
    return score_outputs(out, y, binary_threshold(model))


def score_name(y) -> str:
    """What ``evaluate`` measures on labels ``y``: accuracy or mse."""
    return "mse" if is_targets(y) else "accuracy"


def loss_for(model, y):
    """``(loss, metrics)`` of a CLI fine-tune: the library's rule
    (``tfcomp._finetune.finetune_loss``: sparse cross-entropy for class
    labels, binary cross-entropy for a binary output's 0 / 1 labels, the
    model's compiled loss or mean squared error for float targets) and
    the accuracy metric that goes with it."""
    import keras

    from tfcomp._finetune import finetune_loss
    from tfcomp._score import binary_threshold

    loss = finetune_loss(model, y)
    if is_targets(y):
        return loss, []
    if isinstance(loss, keras.losses.BinaryCrossentropy):
        return loss, [keras.metrics.BinaryAccuracy(
            threshold=binary_threshold(model))]
    return loss, ["accuracy"]
