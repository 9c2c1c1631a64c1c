"""How ``quantize_model`` splits a SeparableConv1D / SeparableConv2D: a
depthwise conv ``<name>_depthwise`` (no bias, the layer's kernel size,
strides, padding, dilation and multiplier) followed by a 1x1 conv
``<name>`` (the pointwise kernel, bias and activation), both at the
layer's bits. Its BatchNorm folds into, and its ReLU fuses with, the 1x1
half.

Example:
    >>> part_kinds(keras.layers.SeparableConv1D(8, 3))
    ('DepthwiseConv1D', 'Conv1D')
"""

from __future__ import annotations

import keras

from tfcomp.graph.copy import live_config

__all__ = ["SEPARABLE", "is_separable", "part_kinds", "separable_parts"]

#: The Keras separable convolutions (exact types are planned).
SEPARABLE = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)

_DW_KEYS = ("kernel_size", "strides", "padding", "data_format",
            "dilation_rate", "depth_multiplier", "trainable", "dtype")
_PW_KEYS = ("filters", "data_format", "use_bias", "bias_initializer",
            "bias_regularizer", "bias_constraint", "activity_regularizer",
            "trainable", "dtype")


def is_separable(layer) -> bool:
    """Whether ``layer`` is a SeparableConv1D / SeparableConv2D (or a
    subclass)."""
    return isinstance(layer, SEPARABLE)


def part_kinds(layer) -> tuple:
    """``(depthwise kind, pointwise kind)``: the Keras class names of the
    two halves of a separable ``layer``."""
    rank = len(layer.kernel_size)
    return f"DepthwiseConv{rank}D", f"Conv{rank}D"


def separable_parts(plan, layer) -> None:
    """Turns ``plan`` (a separable conv's) into a depthwise ``pre`` plan
    (of the same plan class) and a 1x1 conv, the pointwise part, which
    keeps the layer's name."""
    cfg = live_config(layer)
    dw_kind, pw_kind = part_kinds(layer)
    dw_cfg = {k: cfg[k] for k in _DW_KEYS if k in cfg}
    dw_cfg.update(use_bias=False,
                  depthwise_initializer=cfg["depthwise_initializer"],
                  depthwise_regularizer=cfg["depthwise_regularizer"],
                  depthwise_constraint=cfg["depthwise_constraint"])
    plan.pre = type(plan)(
        name=f"{plan.name}_depthwise", layer=layer, nodes=plan.nodes,
        kind=dw_kind, policy_name=plan.name, config=dw_cfg,
        kernel=keras.ops.convert_to_numpy(layer.depthwise_kernel))
    ones = (1,) * len(layer.kernel_size)
    pw_cfg = {k: cfg[k] for k in _PW_KEYS if k in cfg}
    pw_cfg.update(kernel_size=ones, strides=ones, padding="valid",
                  kernel_initializer=cfg["pointwise_initializer"],
                  kernel_regularizer=cfg["pointwise_regularizer"],
                  kernel_constraint=cfg["pointwise_constraint"])
    plan.kind, plan.config = pw_kind, pw_cfg
    plan.kernel = keras.ops.convert_to_numpy(layer.pointwise_kernel)
