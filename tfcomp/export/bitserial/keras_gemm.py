"""GEMM layers (Conv1D / Conv2D / Conv1DTranspose / Conv2DTranspose /
DepthwiseConv1D / DepthwiseConv2D / Dense, and their tfcomp QAT forms) as
the IR's conv2d, depthwise_conv2d and dense ops, for the bit-serial
importer (``keras_import``).

The int32 bias is the layer's bias on the accumulator grid ``input_scale
* weight_scale`` (off that grid: rounded and noted); the 1D convs run as
their 2D forms on the ``(1, L, C)`` view, a transposed conv as a stride-1
conv over the zero-inserted input, a dilated conv as the undilated kernel
with zero taps (its MACs and cycles count them; noted in ``ir.notes``;
``keras_layers``).

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
    dilation_of,
    gemm_weights,
    pool_window,
    transpose_geometry,
)
from tfcomp.export.bitserial.keras_patterns import GEMM

__all__ = ["emit_gemm"]

#: 1D GEMM kinds -> the 2D kind they run as on the ``(1, L, C)`` view.
_AS_2D = {"conv1d": "conv2d", "depthwise_conv1d": "depthwise_conv2d",
          "conv1d_transpose": "conv2d_transpose"}


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
    one_d = kind in _AS_2D  # runs on the (1, L, C) view
    kind2d = _AS_2D.get(kind, kind)
    op = "dense" if kind == "dense" else (
        "depthwise_conv2d" if kind2d == "depthwise_conv2d" else "conv2d")
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
    out_hw = tuple(st.out_shape[:2])
    if one_d:
        x = imp.view(x, (1,) + tuple(b.shape(x)), f"{layer.name}_in2d")
        out_hw = (1, int(st.out_shape[0]))
    strides = pool_window(layer.strides)
    in_hw = b.shape(x)[:2]
    if kind2d == "conv2d_transpose":
        interior, pads = transpose_geometry(layer, in_hw, out_hw)
        if any(interior):
            x = b.pad(imp.name(f"{layer.name}_zero_insert"), x,
                      [[0, 0]] * 3, list(interior) + [0])
            imp.notes.append(
                f"{layer.name}: {type(layer).__name__} runs as a stride-1 "
                "conv over the zero-inserted input "
                f"({int(np.prod(layer.strides))}x its MACs)")
        strides = (1, 1)
    else:
        pads = conv_pads(layer, kind, in_hw, codes.shape[:2], strides,
                         st.pads)
        rates = dilation_of(layer)
        if max(rates) > 1:
            taps = [int(v) for v in codes.shape[:2]]
            real = np.prod([(k - 1) // r + 1 for k, r in zip(taps, rates)])
            imp.notes.append(
                f"{layer.name}: dilation_rate {tuple(layer.dilation_rate)} "
                f"runs as the undilated {taps[0]}x{taps[1]} kernel with zero"
                f" taps ({np.prod(taps) / real:.2g}x its MACs and cycles)")
    kw.update(strides=strides, padding=pads)
    if op == "depthwise_conv2d":
        y = b.depthwise_conv2d(name, x, codes, w_scale, bias_int, grid,
                               **kw)
    else:
        y = b.conv2d(name, x, codes, w_scale, bias_int, grid,
                     groups=int(getattr(layer, "groups", 1)), **kw)
    if one_d:
        y = imp.view(y, tuple(b.shape(y)[1:]), f"{layer.name}_1d")
    return y
