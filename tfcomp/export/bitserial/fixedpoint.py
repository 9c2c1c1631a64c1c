"""TFLite-style fixed-point requantization, vectorised in numpy.

A real multiplier ``r > 0`` is stored as ``(multiplier, shift)`` with
``multiplier`` an int32 in ``[2**30, 2**31)`` and ``r ~= multiplier * 2**(shift
- 31)``. Applying it to an int32 value follows TFLite's single-rounding
``MultiplyByQuantizedMultiplier`` (``TFLITE_SINGLE_ROUNDING``): one 64-bit
product and one rounding (half up). The default double-rounding variant
(rounding high multiply, then rounding shift) rounds twice and is off by one
step for a few percent of small values (e.g. requantizing 4-bit codes); the
single rounding matches tfcomp's QAT quantizers (``floor(v + 0.5)``).

Example:
    >>> m, s = quantize_multiplier(0.0123)
    >>> int(multiply_by_quantized_multiplier(np.array([1000]), m, s)[0])
    12
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "INT32_MAX",
    "INT32_MIN",
    "multiply_by_quantized_multiplier",
    "quantize_multiplier",
    "round_half_away",
]

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1


def round_half_away(x: np.ndarray) -> np.ndarray:
    """Rounds half away from zero (C ``std::round``, as TFLite quantizes).

    Example:
        >>> round_half_away(np.array([0.5, -0.5, 1.49]))
        array([ 1., -1.,  1.])
    """
    x = np.asarray(x, dtype=np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def quantize_multiplier(real_multiplier: float) -> tuple[int, int]:
    """Encodes a positive real multiplier as (int32 multiplier, shift).

    Follows TFLite's ``QuantizeMultiplier``: ``frexp`` gives ``q`` in
    ``[0.5, 1)`` and an exponent; ``q * 2**31`` is rounded half away from zero.

    Args:
        real_multiplier: the real scale, ``>= 0`` and finite.

    Returns:
        ``(multiplier, shift)``; ``shift > 0`` is a left shift.

    Example:
        >>> quantize_multiplier(0.5)
        (1073741824, 0)
    """
    r = float(real_multiplier)
    if not math.isfinite(r) or r < 0:
        raise ValueError("real_multiplier must be finite and >= 0. "
                         f"Received: real_multiplier={real_multiplier}")
    if r == 0.0:
        return 0, 0
    q, shift = math.frexp(r)
    q_fixed = int(round_half_away(q * (1 << 31)))
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > 30:
        raise ValueError("real_multiplier too large for int32 fixed point. "
                         f"Received: real_multiplier={real_multiplier}")
    return q_fixed, shift


def multiply_by_quantized_multiplier(x, multiplier, shift) -> np.ndarray:
    """TFLite ``MultiplyByQuantizedMultiplier`` (single-rounding variant).

    ``(x * multiplier + 2**(30 - shift)) >> (31 - shift)``: one rounding,
    half up, of ``x * multiplier * 2**(shift - 31)`` -- the variant TFLite
    builds with ``TFLITE_SINGLE_ROUNDING`` and the rounding (``floor(v +
    0.5)``) of tfcomp's QAT quantizers. ``multiplier`` and ``shift``
    broadcast against ``x`` (per-channel values along the last axis).

    Args:
        x: int32-range values (accumulators or zero-point-free codes).
        multiplier: int32 multipliers in ``[0, 2**31)``.
        shift: exponents in ``[-31, 30]``.

    Returns:
        int64 array of rescaled values.

    Example:
        >>> m, s = quantize_multiplier(0.25)
        >>> multiply_by_quantized_multiplier(np.array([10, -10, 58]), m, s)
        array([ 3, -2, 15])
    """
    x = np.asarray(x, dtype=np.int64)
    m = np.asarray(multiplier, dtype=np.int64)
    total = 31 - np.asarray(shift, dtype=np.int64)
    if np.any(total < 1) or np.any(total > 62):
        raise ValueError("shift must lie in [-31, 30]. Received: "
                         f"shift={shift}")
    x = np.clip(x, INT32_MIN, INT32_MAX)
    return (x * m + (np.int64(1) << (total - 1))) >> total
