"""GEMM layers (Conv1D / Conv2D / Conv2DTranspose / DepthwiseConv2D /
Dense, and their tfcomp QAT forms) as the IR's conv2d, depthwise_conv2d
and dense ops, for the bit-serial importer (``keras_import``).

The int32 bias is the layer's bias on the accumulator grid ``input_scale
* weight_scale`` (off that grid: rounded and noted); Conv1D runs on the
``(1, L, C)`` view, Conv2DTranspose as a stride-1 conv over the
zero-inserted input (``keras_layers``).

Example:
    >>> y = emit_gemm(importer, pending_conv, grid, "relu")
"""

from __future__ import annotations

import keras
import numpy as np

from tfcomp.export.bitserial.ir import QuantParams
from tfcomp.export.bitserial.keras_binary import round_bias
from tfcomp.export.bitserial.keras_layers import (
    conv_pads,
    gemm_weights,
    transpose_geometry,
)
from tfcomp.export.bitserial.keras_patterns import GEMM

__all__ = ["emit_gemm"]


def emit_gemm(imp, st, grid: QuantParams, relu: str) -> str:
    """Adds the GEMM op of pending GEMM ``st`` (``layer``, IR input ``x``,
    folded ``pads``, Keras ``out_shape``, own ``relu``) of importer
    ``imp`` onto ``grid``, ``relu`` ("linear", "relu", "relu6") fused as
    its clamp; returns the output's IR name.

    Example:
        >>> emit_gemm(imp, imp.state[id(conv_out)], grid, "linear")
        'conv1'
    """
    layer, b = st.layer, imp.builder
    kind = GEMM[type(layer)]
    op = "dense" if kind == "dense" else (
        "depthwise_conv2d" if kind == "depthwise_conv2d" else "conv2d")
    p = imp.params.get(layer.name, {})
    codes, w_scale, w_bits = gemm_weights(layer, kind, p, imp.notes)
    x = st.x
    a = b.quant(x)
    bias = p.get("bias") if p else (
        keras.ops.convert_to_numpy(layer.bias) if layer.use_bias
        else None)
    n = w_scale.size
    bias_int = np.zeros(n, np.int64)
    if bias is not None:
        step = a.scale * w_scale
        r = np.asarray(bias, np.float64).reshape(-1) / step
        bias_int = np.clip(round_bias(layer, r), -(2**31),
                           2**31 - 1).astype(np.int64)
        # QAT layers add the bias already rounded to s_in * s_w; a bias
        # off that grid (float-bias forward pass) makes the integer
        # network deviate by up to half an accumulator step per channel
        off = np.abs(r - np.round(r)) * step / grid.scale
        if off.size and float(off.max()) > 0.01:
            imp.notes.append(
                f"{layer.name}: bias is not on the accumulator grid "
                f"s_in * s_w; rounding it moves outputs by up to "
                f"{float(off.max()):.2f} output steps")
    act = st.relu if relu == "linear" else relu
    kw = {"w_bits": w_bits, "relu": act != "linear",
          "relu_max": 6.0 if act == "relu6" else None}
    name = imp.name(layer.name)
    imp.has_bias[name] = bias is not None  # costed by the hardware
    if op == "dense":
        return b.dense(name, x, codes, w_scale, bias_int, grid, **kw)
    if kind == "conv1d":
        x = imp.view(x, (1,) + tuple(b.shape(x)), f"{layer.name}_in2d")
        strides = (1, int(layer.strides[0]))
    else:
        strides = tuple(int(v) for v in layer.strides)
    in_hw = b.shape(x)[:2]
    if kind == "conv2d_transpose":
        interior, pads = transpose_geometry(layer, in_hw,
                                            st.out_shape[:2])
        if any(interior):
            x = b.pad(imp.name(f"{layer.name}_zero_insert"), x,
                      [[0, 0]] * 3, list(interior) + [0])
            imp.notes.append(
                f"{layer.name}: Conv2DTranspose runs as a stride-1 conv "
                "over the zero-inserted input (stride**2 x its MACs)")
        strides = (1, 1)
    else:
        pads = conv_pads(layer, kind, in_hw, codes.shape[:2], strides,
                         st.pads)
    kw.update(strides=strides, padding=pads)
    if op == "depthwise_conv2d":
        return b.depthwise_conv2d(name, x, codes, w_scale, bias_int,
                                  grid, **kw)
    y = b.conv2d(name, x, codes, w_scale, bias_int, grid,
                 groups=int(getattr(layer, "groups", 1)), **kw)
    if kind == "conv1d":
        y = imp.view(y, tuple(b.shape(y)[1:]), f"{layer.name}_1d")
    return y
