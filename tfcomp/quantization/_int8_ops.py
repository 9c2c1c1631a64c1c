"""Which Keras layers and ``keras.ops`` calls TFLite's int8 kernels treat
specially: same-scale ops (their output keeps the input's grid) and the
activations whose int8 output grid is fixed (SOFTMAX / LOGISTIC: 1/256,
TANH: 1/128). ``quantize_model``, ``calibrate`` and the int8 export read
these predicates, so the QAT model rounds where the file does.

Reference: Jacob et al., arXiv:1712.05877 (integer-arithmetic inference);
TFLite's int8 operator specification.

Example:
    >>> keeps_scale(keras.layers.MaxPooling2D())
    True
    >>> fixed_grid(keras.layers.Activation("sigmoid"))
    (0.0, 0.99609375)
"""

from __future__ import annotations

import keras

from tfcomp.graph.identity import INFERENCE_IDENTITY, keras_layer_classes
from tfcomp.graph.registry import ops_name
from tfcomp.quantization._time_fold import reshape_op_class

__all__ = ["TRANSPARENT", "SAME_SCALE", "SAME_SCALE_OPS", "FIXED_RANGE_ACTS",
           "FIXED_GRIDS", "keras_classes", "act_name",
           "squashing_activation", "keeps_scale", "fixed_range",
           "fixed_grid", "interpolates", "AVERAGE_POOLS"]

TRANSPARENT = INFERENCE_IDENTITY
#: Ops TFLite runs in int8 with the same scale on input and output (the
#: converter refuses other ranges): their output keeps the grid of their
#: quantized input, no new activation quantizer.
SAME_SCALE = ("MaxPooling1D", "MaxPooling2D", "MaxPooling3D",
              "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D",
              "Cropping1D", "Cropping2D", "Cropping3D", "Reshape", "Flatten",
              "Permute", "UpSampling1D", "UpSampling2D",
              "UpSampling3D") + TRANSPARENT
#: ``keras.ops`` calls that are TFLite's same-scale TRANSPOSE / RESHAPE
#: (``ops.transpose``, ``ops.squeeze``... between layers; ``ops.reshape``
#: is matched with the Reshape layer by :func:`keras_classes`).
SAME_SCALE_OPS = ("Transpose", "Squeeze", "ExpandDims")
FIXED_RANGE_ACTS = ("softmax", "sigmoid", "tanh", "hard_sigmoid")
#: The fixed output grids ``(lo, hi)`` of TFLite's int8 kernels (scale
#: 1/256, zero point -128; tanh: 1/128, 0): the QAT model rounds these
#: activations' outputs onto them (a constant-range ``QuantActivation``).
FIXED_GRIDS = {"sigmoid": (0.0, 255.0 / 256.0),
               "softmax": (0.0, 255.0 / 256.0),
               "tanh": (-1.0, 127.0 / 128.0)}


def keras_classes(names) -> tuple:
    """The ``keras.layers`` classes named in ``names``; "Reshape" also
    matches ``keras.ops.reshape``'s operation (TFLite's RESHAPE either way).

    Example:
        >>> keras_classes(("MaxPooling2D",))
    """
    classes = keras_layer_classes(tuple(names))
    return classes + (reshape_op_class(),) if "Reshape" in names else classes


def act_name(fn) -> str:
    """The serialized name of an activation function (``"linear"`` for
    None; a user's function by its registered name).

    Example:
        >>> act_name(keras.activations.relu)
        'relu'
    """
    if fn is None:
        return "linear"
    name = keras.activations.serialize(fn)
    if isinstance(name, dict):  # a user's function: {"config": "my_act"}
        cfg = name.get("config", {})
        name = cfg.get("name", str(name)) if isinstance(cfg, dict) else cfg
    return str(name)


#: ``keras.ops`` calls in a functional model (``ops.softmax(x, axis=1)``,
#: keras.io's sequence pooling) that are these activations.
_ACTIVATION_OPS = {"Softmax": "softmax", "Sigmoid": "sigmoid",
                   "Tanh": "tanh", "HardSigmoid": "hard_sigmoid"}


def squashing_activation(layer) -> str | None:
    """``"softmax"`` / ``"sigmoid"`` / ``"tanh"`` / ``"hard_sigmoid"`` when
    the layer or ``keras.ops`` call is that activation alone (a
    ``Softmax`` / ``Activation`` layer, ``ops.softmax``...), else None.

    Example:
        >>> squashing_activation(keras.layers.Activation("sigmoid"))
        'sigmoid'
    """
    if type(layer) is keras.layers.Softmax:
        return "softmax"
    if type(layer) is keras.layers.Activation:
        name = act_name(layer.activation)
        return name if name in FIXED_RANGE_ACTS else None
    return _ACTIVATION_OPS.get(ops_name(layer))


#: TFLite's int8 AVERAGE_POOL_2D.
AVERAGE_POOLS = ("AveragePooling1D", "AveragePooling2D", "AveragePooling3D")
_RESIZES = ("UpSampling2D", "Resizing")


def interpolates(layer) -> bool:
    """Whether TFLite computes the layer in int8 on its input's grid from
    a weighted mean of input codes: an average pooling (AVERAGE_POOL_2D,
    ties rounded away from zero) or a bilinear ``UpSampling2D`` /
    ``Resizing`` (RESIZE_BILINEAR: measured, its 2x weights exact, ties
    rounded half up by XNNPACK, the default CPU runtime, and away from
    zero by the builtin kernel without a delegate; the QAT model follows
    XNNPACK). The QAT model rounds the output onto the input's grid (an
    observer after it, linked to that grid), even when a quantized layer
    reads it directly.

    Example:
        >>> interpolates(keras.layers.UpSampling2D(interpolation="bilinear"))
        True
    """
    if isinstance(layer, keras_classes(AVERAGE_POOLS)):
        return True
    return isinstance(layer, keras_classes(_RESIZES)) and \
        getattr(layer, "interpolation", "nearest") == "bilinear"


def keeps_scale(layer) -> bool:
    """Whether the layer or ``keras.ops`` call is one TFLite runs in int8
    with its input's scale (:data:`SAME_SCALE`, :data:`SAME_SCALE_OPS`):
    its output keeps the input's grid.

    Example:
        >>> keeps_scale(keras.layers.MaxPooling2D())
        True
    """
    if interpolates(layer):  # a bilinear upsampling is not a copy
        return False
    return isinstance(layer, keras_classes(SAME_SCALE)) or \
        ops_name(layer) in SAME_SCALE_OPS


def fixed_range(layer) -> bool:
    """Softmax-like outputs whose range is known (no observer needed)."""
    return squashing_activation(layer) is not None


def fixed_grid(layer):
    """``(lo, hi)`` of the fixed int8 output grid of a sigmoid / softmax /
    tanh layer or op (see :data:`FIXED_GRIDS`), else None."""
    return FIXED_GRIDS.get(squashing_activation(layer))


