"""Checks of the IR's concat and mul ops and the grid rules they use
(duck-typed: no IR classes, so :mod:`ir` and the descriptor checks share
them).

Example:
    >>> same_grid(QuantParams(4, False, .1, 3), QuantParams(8, False, .1, 3))
    True
"""

from __future__ import annotations

from tfcomp.export.bitserial.fixedpoint import INT32_MAX

__all__ = ["mul_product_bound", "same_grid", "validate_concat",
           "validate_mul"]


def validate_concat(op, qin: list) -> None:
    """A concat op's per-input requantization: ValueError naming it."""
    ms, ss = op.attrs.get("multipliers"), op.attrs.get("shifts")
    if not isinstance(ms, (list, tuple)) or not isinstance(
            ss, (list, tuple)) or not len(ms) == len(ss) == len(qin):
        raise ValueError(f"layer {op.name!r}: concat needs attrs "
                         f"'multipliers' and 'shifts', one per input "
                         f"({len(qin)}). Received: multipliers={ms!r}, "
                         f"shifts={ss!r}")
    for i, (q, m, s) in enumerate(zip(qin, ms, ss)):
        if (m is None) != (s is None) or (m is None and not same_grid(
                q, op.out)):
            raise ValueError(f"layer {op.name!r}: concat input {i} "
                             f"({op.inputs[i]!r}) is copied (multiplier "
                             "None) only when it is on the output grid. "
                             f"Received: multiplier={m!r}, shift={s!r}, "
                             f"input={q}, out={op.out}")


def validate_mul(op, qin: list) -> None:
    """A mul op's requantization and int32 product: ValueError naming it."""
    for key in ("multiplier", "shift"):
        if key not in op.attrs:
            raise ValueError(f"layer {op.name!r}: mul needs attrs[{key!r}]")
    bound = mul_product_bound(qin)
    if bound > INT32_MAX:
        raise ValueError(f"layer {op.name!r}: the int32 product of the mul "
                         f"inputs may overflow (worst case {bound}); lower "
                         f"their bits. Received: {qin[0]}, {qin[1]}")


def mul_product_bound(quants) -> int:
    """The largest ``|(qa - za) * (qb - zb)|`` of two tensors' grids.

    Example:
        >>> mul_product_bound([QuantParams(8, False, .1, 0)] * 2)
        65025
    """
    bound = 1
    for q in quants:
        bound *= max(q.qmax - q.zero_point, q.zero_point - q.qmin)
    return bound


def same_grid(a, b) -> bool:
    """Whether ``a`` and ``b`` have one grid (scale and zero point; the
    bits may differ): a code moves between them unchanged.

    Example:
        >>> same_grid(QuantParams(4, False, .1, 3), QuantParams(8, False, .1, 3))
        True
    """
    return a.scale == b.scale and a.zero_point == b.zero_point
