"""Integer kernels shared by the reference and the bit-serial simulator.

Layout helpers (im2col into the grouped GEMM view), requantization and the
non-GEMM ops. They take plain arguments (no IR objects), so the simulator can
drive them from descriptor fields alone. The GEMM itself is *not* here: the
reference multiplies integers, the simulator works on bit planes.

Example:
    >>> x = np.arange(16).reshape(1, 4, 4, 1)
    >>> lhs_matrix("conv2d", x, (3, 3), (1, 1), (1, 1, 1, 1), 0).shape
    (1, 16, 9)
"""

from __future__ import annotations

import numpy as np

from tfcomp.export.bitserial.fixedpoint import (
    multiply_by_quantized_multiplier,
    quantize_multiplier,  # noqa: F401 - used in the docstring examples
)

__all__ = [
    "add_op",
    "concat_op",
    "crop_op",
    "gemm_output",
    "global_avg_pool_op",
    "im2col",
    "lhs_matrix",
    "lut_op",
    "mul_op",
    "pad_op",
    "pool_op",
    "requantize",
    "requantize_op",
    "upsample_op",
    "window_counts",
]


def im2col(x, kernel, strides, pads, pad_value) -> np.ndarray:
    """Sliding windows of an NHWC tensor.

    Args:
        x: ``(B, H, W, C)`` integers.
        kernel: ``(kh, kw)``.
        strides: ``(sh, sw)``.
        pads: ``(top, bottom, left, right)``.
        pad_value: value written into the padding.

    Returns:
        ``(B, Ho, Wo, kh, kw, C)`` array.

    Example:
        >>> im2col(np.ones((1, 3, 3, 2)), (2, 2), (1, 1), (0, 0, 0, 0),
        ...        0).shape
        (1, 2, 2, 2, 2, 2)
    """
    kh, kw = kernel
    sh, sw = strides
    pt, pb, pl, pr = pads
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)),
                constant_values=pad_value)
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(1, 2))
    win = win[:, ::sh, ::sw]  # (B, Ho, Wo, C, kh, kw)
    return win.transpose(0, 1, 2, 4, 5, 3)


def lhs_matrix(kind, x, kernel=None, strides=None, pads=None,
               pad_value=0, groups=1) -> np.ndarray:
    """The activation side of a layer's grouped GEMM: ``(G, M, K)``.

    conv2d: G=groups, M=B*Ho*Wo, K=kh*kw*cin/groups in (kh, kw, cin) order
    (group g reads input channels ``g * cin/groups ...``).
    depthwise_conv2d: G=C, M=B*Ho*Wo, K=kh*kw in (kh, kw) order.
    dense: G=1, M=prod(leading dims), K=cin.

    Args:
        kind: "conv2d", "depthwise_conv2d" or "dense".
        x: the integer input tensor (batch first).
        kernel, strides, pads: window geometry (not for dense).
        pad_value: the input zero point (real 0).
        groups: conv2d groups.

    Returns:
        ``(G, M, K)`` array.

    Example:
        >>> lhs_matrix("dense", np.ones((5, 7))).shape
        (1, 5, 7)
    """
    x = np.asarray(x)
    if kind == "dense":
        return x.reshape(1, -1, x.shape[-1])
    cols = im2col(x, kernel, strides, pads, pad_value)
    b, ho, wo, kh, kw, c = cols.shape
    if kind == "conv2d":
        g = int(groups)
        if g == 1:
            return cols.reshape(1, b * ho * wo, kh * kw * c)
        cols = cols.reshape(b * ho * wo, kh, kw, g, c // g)
        return cols.transpose(3, 0, 1, 2, 4).reshape(g, b * ho * wo, -1)
    if kind == "depthwise_conv2d":
        return cols.reshape(b * ho * wo, kh * kw, c).transpose(2, 0, 1)
    raise ValueError(f"kind must be a GEMM op. Received: kind={kind!r}")


def gemm_output(acc, kind, x_shape, kernel=None, strides=None,
                pads=None) -> np.ndarray:
    """Reshapes a grouped accumulator ``(G, M, Nper)`` to the output tensor.

    Output channel ``g * Nper + n`` (depthwise: channel-major, as Keras).

    Args:
        acc: ``(G, M, Nper)`` accumulators.
        kind: the GEMM op.
        x_shape: the input tensor's shape (batch first).
        kernel, strides, pads: window geometry (not for dense).

    Returns:
        The output tensor, channels last.

    Example:
        >>> gemm_output(np.zeros((1, 5, 3)), "dense", (5, 7)).shape
        (5, 3)
    """
    g, m, n = acc.shape
    flat = acc.transpose(1, 0, 2).reshape(m, g * n)
    if kind == "dense":
        return flat.reshape(tuple(x_shape[:-1]) + (g * n,))
    b, h, w = x_shape[0], x_shape[1], x_shape[2]
    ho = (h + pads[0] + pads[1] - kernel[0]) // strides[0] + 1
    wo = (w + pads[2] + pads[3] - kernel[1]) // strides[1] + 1
    return flat.reshape(b, ho, wo, g * n)


def requantize(acc, multiplier, shift, out_zero_point, act_min,
               act_max) -> np.ndarray:
    """int32 accumulators (channels last) -> clamped output integers.

    Args:
        acc: accumulators, channels last.
        multiplier, shift: per-channel fixed-point rescaling.
        out_zero_point: output zero point.
        act_min, act_max: output clamp.

    Returns:
        ``clip(out_zp + MBQM(acc, multiplier, shift), act_min, act_max)``.

    Example:
        >>> m, s = quantize_multiplier(0.5)
        >>> requantize(np.array([7, 300]), m, s, 3, 0, 15)
        array([ 7, 15])
    """
    y = multiply_by_quantized_multiplier(acc, multiplier, shift)
    return np.clip(y + int(out_zero_point), int(act_min), int(act_max))


def add_op(qa, qb, za, zb, left_shift, multipliers, shifts,
           output_multiplier, output_shift, out_zero_point, act_min,
           act_max) -> np.ndarray:
    """TFLite quantized ADD: both inputs rescaled to ``2 * max`` scale.

    Args:
        qa, qb: integer inputs.
        za, zb: their zero points.
        left_shift: headroom shift (20 for 8-bit inputs).
        multipliers, shifts: the two input rescalings.
        output_multiplier, output_shift: the output rescaling.
        out_zero_point, act_min, act_max: output zero point and clamp.

    Returns:
        The integer sum on the output grid.

    Example:
        >>> b = IRBuilder((1,), QuantParams(8, True, 0.1))
        >>> _ = b.add("s", "input", "input", QuantParams(8, True, 0.2))
        >>> a = b.ops[-1].attrs
        >>> add_op(np.array([10]), np.array([10]), 0, 0, a["left_shift"],
        ...        a["multipliers"], a["shifts"], a["output_multiplier"],
        ...        a["output_shift"], 0, -128, 127)
        array([10])
    """
    xa = (np.asarray(qa, np.int64) - int(za)) << int(left_shift)
    xb = (np.asarray(qb, np.int64) - int(zb)) << int(left_shift)
    sa = multiply_by_quantized_multiplier(xa, multipliers[0], shifts[0])
    sb = multiply_by_quantized_multiplier(xb, multipliers[1], shifts[1])
    y = multiply_by_quantized_multiplier(sa + sb, output_multiplier,
                                         output_shift)
    return np.clip(y + int(out_zero_point), int(act_min), int(act_max))


def requantize_op(q, in_zero_point, multiplier, shift, out_zero_point,
                  act_min, act_max) -> np.ndarray:
    """Integer tensor -> another grid (TFLite int-to-int QUANTIZE).

    Args:
        q: integer input.
        in_zero_point: its zero point.
        multiplier, shift: ``in_scale / out_scale`` in fixed point.
        out_zero_point, act_min, act_max: output zero point and clamp.

    Returns:
        The integer tensor on the new grid.

    Example:
        >>> m, s = quantize_multiplier(0.25)
        >>> requantize_op(np.array([8, 12]), 8, m, s, 0, 0, 15)
        array([0, 1])
    """
    x = np.asarray(q, np.int64) - int(in_zero_point)
    return requantize(x, multiplier, shift, out_zero_point, act_min, act_max)


def concat_op(xs, in_zero_points, multipliers, shifts, out_zero_point,
              act_min, act_max) -> np.ndarray:
    """TFLite int8 CONCATENATION on the last axis: input ``i`` is copied
    when ``multipliers[i]`` is None (it is on the output grid), else
    requantized (:func:`requantize_op`); all clamped to the output range.

    Args:
        xs: integer inputs, equal in shape but for the last axis.
        in_zero_points: their zero points.
        multipliers, shifts: per input ``in_scale / out_scale`` in fixed
            point, or None for a copied input.
        out_zero_point, act_min, act_max: output zero point and clamp.

    Returns:
        The concatenated integers on the output grid.

    Example:
        >>> m, s = quantize_multiplier(0.5)
        >>> concat_op([np.array([[3, 4]]), np.array([[10]])], [0, 2],
        ...           [None, m], [None, s], 0, 0, 15)
        array([[3, 4, 4]])
    """
    parts = []
    for x, z, m, s in zip(xs, in_zero_points, multipliers, shifts):
        x = np.asarray(x, np.int64)
        parts.append(np.clip(x, int(act_min), int(act_max)) if m is None
                     else requantize_op(x, z, m, s, out_zero_point,
                                        act_min, act_max))
    return np.concatenate(parts, axis=-1)


def mul_op(qa, qb, za, zb, multiplier, shift, out_zero_point, act_min,
           act_max) -> np.ndarray:
    """TFLite int8 MUL: ``out_zp + MBQM((qa - za) * (qb - zb), multiplier,
    shift)`` clamped; an input of lower rank is a gate broadcast over the
    axes after the batch (``(B, C)`` acts as ``(B, 1, 1, C)``).

    Args:
        qa, qb: integer inputs (batch first), one shape or one a gate.
        za, zb: their zero points.
        multiplier, shift: ``s_a * s_b / s_out`` in fixed point.
        out_zero_point, act_min, act_max: output zero point and clamp.

    Returns:
        The integer product on the output grid.

    Example:
        >>> m, s = quantize_multiplier(0.5)
        >>> mul_op(np.array([[[3, 4]]]), np.array([[2, 6]]), 0, 2, m, s, 1,
        ...        0, 15)
        array([[[1, 9]]])
    """
    a = np.asarray(qa, np.int64) - int(za)
    b = np.asarray(qb, np.int64) - int(zb)
    if a.ndim < b.ndim:
        a = a.reshape(a.shape[:1] + (1,) * (b.ndim - a.ndim) + a.shape[1:])
    elif b.ndim < a.ndim:
        b = b.reshape(b.shape[:1] + (1,) * (a.ndim - b.ndim) + b.shape[1:])
    return requantize(a * b, multiplier, shift, out_zero_point, act_min,
                      act_max)


def window_counts(shape_hw, pool, strides, pads) -> np.ndarray:
    """In-bounds cells of every pooling window: ``(Ho, Wo)`` ints.

    Args:
        shape_hw: input ``(H, W)``.
        pool, strides, pads: window geometry.

    Returns:
        ``(Ho, Wo)`` cell counts.

    Example:
        >>> window_counts((3, 3), (2, 2), (2, 2), (0, 1, 0, 1))
        array([[4, 2],
               [2, 1]])
    """
    ones = np.ones((1,) + tuple(shape_hw) + (1,), np.int64)
    return im2col(ones, pool, strides, pads, 0).sum(axis=(3, 4))[0, :, :, 0]


def _count_requant(total, counts, table):
    """MBQM with the (multiplier, shift) of each window's cell count."""
    lut = {int(c): (int(m), int(s)) for c, m, s in table}
    missing = sorted(set(np.unique(counts).tolist()) - set(lut))
    if missing:
        raise ValueError(f"no requantization entry for window counts "
                         f"{missing}")
    m = np.vectorize(lambda c: lut[int(c)][0], otypes=[np.int64])(counts)
    s = np.vectorize(lambda c: lut[int(c)][1], otypes=[np.int64])(counts)
    return multiply_by_quantized_multiplier(total, m, s)


def pool_op(kind, x, pool, strides, pads, in_zero_point=0, table=None,
            out_zero_point=0, act_min=None, act_max=None) -> np.ndarray:
    """max_pool / avg_pool on integers; padded cells are ignored.

    avg_pool: ``out = clamp(out_zp + MBQM(sum(q - in_zp), m_c, s_c))`` where
    ``(c, m_c, s_c)`` in ``table`` encodes ``in_scale / (c * out_scale)`` for
    a window of ``c`` in-bounds cells (one rounding of the exact mean).

    Args:
        kind: "max_pool" or "avg_pool".
        x: integer NHWC input.
        pool, strides, pads: window geometry.
        in_zero_point, table, out_zero_point, act_min, act_max: avg_pool
            requantization and clamp.

    Returns:
        The pooled integer tensor.

    Example:
        >>> pool_op("max_pool", np.arange(4).reshape(1, 2, 2, 1), (2, 2),
        ...         (2, 2), (0, 0, 0, 0)).ravel()
        array([3])
    """
    x = np.asarray(x, np.int64)
    if kind == "max_pool":
        lowest = np.iinfo(np.int64).min
        return im2col(x, pool, strides, pads, lowest).max(axis=(3, 4))
    if kind == "avg_pool":
        total = im2col(x - int(in_zero_point), pool, strides, pads,
                       0).sum(axis=(3, 4))
        counts = window_counts(x.shape[1:3], pool, strides, pads)
        y = _count_requant(total, counts[None, :, :, None], table)
        return np.clip(y + int(out_zero_point), act_min, act_max)
    raise ValueError(f"kind must be 'max_pool' or 'avg_pool'. Received: "
                     f"kind={kind!r}")


def global_avg_pool_op(x, in_zero_point, table, out_zero_point, act_min,
                       act_max) -> np.ndarray:
    """Mean over H and W onto the output grid (as avg_pool): ``(B, C)``.

    Args:
        x: integer NHWC input.
        in_zero_point: its zero point.
        table: ``[(H * W, multiplier, shift)]``.
        out_zero_point, act_min, act_max: output zero point and clamp.

    Returns:
        ``(B, C)`` integers.

    Example:
        >>> m, s = quantize_multiplier(1 / 4)
        >>> global_avg_pool_op(np.full((1, 2, 2, 1), 6), 0, [(4, m, s)], 0,
        ...                    0, 255)
        array([[6]])
    """
    x = np.asarray(x, np.int64)
    total = (x - int(in_zero_point)).sum(axis=(1, 2))
    y = _count_requant(total, np.full(total.shape, x.shape[1] * x.shape[2]),
                       table)
    return np.clip(y + int(out_zero_point), act_min, act_max)


def pad_op(x, pads, interior=None, value=0) -> np.ndarray:
    """Pads a batch-first tensor: ``interior[a]`` values between neighbours
    and ``pads[a] = [before, after]`` at the ends of each non-batch axis.

    Args:
        x: integer tensor ``(B, ...)``.
        pads: ``[before, after]`` per non-batch axis.
        interior: values inserted between neighbours per axis (default 0).
        value: the fill (the tensor's zero point, real 0).

    Returns:
        The padded tensor.

    Example:
        >>> pad_op(np.array([[1, 2]]), [[1, 0]], [1], value=7)
        array([[7, 1, 7, 2]])
    """
    x = np.asarray(x, np.int64)
    interior = [0] * (x.ndim - 1) if interior is None else list(interior)
    shape = [x.shape[0]] + [int(d + (d - 1) * i) if d else 0 for d, i in
                            zip(x.shape[1:], interior)]
    y = np.full(shape, int(value), np.int64)
    y[(slice(None),) + tuple(slice(None, None, int(i) + 1)
                             for i in interior)] = x
    return np.pad(y, [(0, 0)] + [(int(a), int(b)) for a, b in pads],
                  constant_values=int(value))


def upsample_op(x, factors) -> np.ndarray:
    """Nearest-neighbour upsampling of a batch-first tensor: each value
    repeated ``factors[a]`` times along non-batch axis ``a`` (Keras'
    UpSampling1D / UpSampling2D with interpolation="nearest").

    Example:
        >>> upsample_op(np.array([[[1, 2], [3, 4]]]), [2, 1])
        array([[[1, 2],
                [1, 2],
                [3, 4],
                [3, 4]]])
    """
    x = np.asarray(x, np.int64)
    for axis, f in enumerate(factors, start=1):
        if int(f) != 1:
            x = np.repeat(x, int(f), axis=axis)
    return x


def crop_op(x, crops) -> np.ndarray:
    """Drops ``crops[a] = [before, after]`` values at the ends of each
    non-batch axis ``a`` of a batch-first tensor (Keras' Cropping1D / 2D).

    Example:
        >>> crop_op(np.array([[1, 2, 3, 4, 5]]), [[1, 2]])
        array([[2, 3]])
    """
    x = np.asarray(x, np.int64)
    return x[(slice(None),) + tuple(slice(int(a), d - int(b)) for d, (a, b)
                                    in zip(x.shape[1:], crops))]


def lut_op(x, table, in_min) -> np.ndarray:
    """Table lookup ``table[c][x - in_min]`` (one row, or one per channel on
    the last axis).

    Args:
        x: integer tensor.
        table: ``(1 or C, 2**in_bits)`` output integers.
        in_min: the input's lowest integer (row index 0).

    Returns:
        The looked-up integers.

    Example:
        >>> lut_op(np.array([[0, 2]]), [[5, 6, 7, 8]], 0)
        array([[5, 7]])
    """
    t = np.asarray(table, np.int64)
    idx = np.asarray(x, np.int64) - int(in_min)
    if t.shape[0] == 1:
        return t[0][idx]
    return t[np.arange(t.shape[0]), idx]
