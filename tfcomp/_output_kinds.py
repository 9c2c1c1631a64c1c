"""What kind of values a model's output holds, read from the model itself:
the kind its compiled loss implies (regression, binary, classification)
and whether it comes out of a sigmoid. Distillation picks its losses by
it, and TFLite / bit-serial verification how to compare decisions.

Example:
    >>> loss_kind(keras.losses.BinaryCrossentropy(from_logits=True))
    'binary'
    >>> is_sigmoid(model, model.outputs[0])
    True
"""

from __future__ import annotations

import keras

__all__ = ["compiled_loss", "is_sigmoid", "loss_kind"]

# compiled losses by class / function / string name (lower case, no "_")
_BY_NAME = {
    "regression": ("meansquarederror", "mse", "meanabsoluteerror", "mae",
                   "huber", "huberloss", "logcosh",
                   "meansquaredlogarithmicerror", "msle",
                   "meanabsolutepercentageerror", "mape"),
    "binary": ("binarycrossentropy", "binaryfocalcrossentropy"),
    "classification": ("categoricalcrossentropy",
                       "sparsecategoricalcrossentropy",
                       "categoricalfocalcrossentropy"),
}
_BY_CLASS = {
    "regression": ("MeanSquaredError", "MeanAbsoluteError", "Huber",
                   "LogCosh", "MeanSquaredLogarithmicError",
                   "MeanAbsolutePercentageError"),
    "binary": ("BinaryCrossentropy", "BinaryFocalCrossentropy"),
    "classification": ("CategoricalCrossentropy",
                       "SparseCategoricalCrossentropy",
                       "CategoricalFocalCrossentropy"),
}


def _name_kind(name) -> str | None:
    key = str(name).lower().replace("_", "")
    for kind, names in _BY_NAME.items():
        if key in names:
            return kind
    return None


def loss_kind(loss) -> str | None:
    """The kind a compiled loss implies: ``"regression"`` for MSE, MAE,
    Huber, LogCosh, MSLE, MAPE; ``"binary"`` for (focal) binary cross
    entropy; ``"classification"`` for the categorical ones; ``None`` for
    anything else (a custom loss). Takes a loss object, function, string
    name or its serialized form (``get_compile_config()``)."""
    if loss is None:
        return None
    if isinstance(loss, str):
        return _name_kind(loss)
    if isinstance(loss, dict):  # serialized: a class or a function
        if loss.get("class_name") == "function":
            return _name_kind(loss.get("config", ""))
        return _name_kind(loss.get("class_name", ""))
    for kind, classes in _BY_CLASS.items():
        if isinstance(loss, tuple(getattr(keras.losses, c)
                                  for c in classes)):
            return kind
    fn = getattr(loss, "fn", None) or loss  # a wrapped loss function
    return _name_kind(getattr(fn, "__name__", ""))


def compiled_loss(model):
    """``model``'s compiled loss (as passed to ``compile``), else the one
    in its compile config (a copy compiled like its source), else None."""
    loss = getattr(model, "loss", None)
    if loss is None and getattr(model, "compiled", False):
        try:
            loss = (model.get_compile_config() or {}).get("loss")
        except (AttributeError, TypeError, ValueError):
            loss = None
    return loss


def _producer(model, tensor):
    """The layer of ``model`` whose output is ``tensor``, or None."""
    for layer in reversed(getattr(model, "layers", []) or []):
        try:
            if layer.output is tensor:
                return layer
        except (AttributeError, ValueError, RuntimeError):
            continue
    return None


def is_sigmoid(model, tensor) -> bool:
    """Whether ``tensor`` (a symbolic output of ``model``) comes out of a
    sigmoid: a layer with ``activation="sigmoid"``, an
    ``Activation("sigmoid")``, either inside a wrapper (``TimeDistributed``,
    a pruning wrapper). False where it cannot be told (a subclassed
    model, a last layer without an activation)."""
    layer = _producer(model, tensor) if model is not None else None
    while layer is not None:
        act = getattr(layer, "activation", None)
        if act is not None:
            return act is keras.activations.sigmoid or getattr(
                act, "__name__", None) == "sigmoid"
        layer = getattr(layer, "layer", None)
    return False
