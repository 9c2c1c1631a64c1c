"""Argument checks shared by tfcomp's public functions: each returns the
value converted, or raises an error that names the argument and the value
received. Re-exported by :mod:`tfcomp._io`.

Example:
    >>> from tfcomp._checks import check_fraction
    >>> check_fraction(0.5, "ratio")
    0.5
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["check_fraction", "check_number", "check_positive_int"]


def check_fraction(value, name: str, low: float = 0.0, high: float = 1.0,
                   include_low: bool = True, include_high: bool = False
                   ) -> float:
    """``value`` as a float inside the interval, or a ``ValueError`` naming
    the argument and the value received.

    Example:
        >>> check_fraction(0.5, "ratio")
        0.5
    """
    ok_type = isinstance(value, numbers.Real) and not isinstance(value, bool)
    v = float(value) if ok_type else float("nan")
    ok = ok_type and np.isfinite(v) and (
        (v >= low if include_low else v > low)
        and (v <= high if include_high else v < high))
    if not ok:
        lo = "[" if include_low else "("
        hi = "]" if include_high else ")"
        raise ValueError(f"{name} must be a number in {lo}{low:g}, "
                         f"{high:g}{hi}. Received: {name}={value!r}")
    return v


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    """``value`` as an int ``>= minimum``, or a ``ValueError`` naming it.

    Example:
        >>> check_positive_int(8, "round_to")
        8
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) \
            or int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}. "
                         f"Received: {name}={value!r}")
    return int(value)


def check_number(value, name: str, minimum: float | None = None,
                 maximum: float | None = None, *, min_open: bool = False,
                 max_open: bool = False, hint: str = "") -> float:
    """``value`` as a finite float inside ``[minimum, maximum]`` (``min_open``
    / ``max_open`` exclude the bound), or an error naming the argument and
    the value received (``hint``, e.g. what the number means, is added to
    the message).

    Raises:
        TypeError: not a real number (a string, None, a bool, ...).
        ValueError: NaN, infinite or out of range.

    Example:
        >>> check_number(0.5, "target_macs", 0, min_open=True)
        0.5
    """
    lo = "" if minimum is None else (
        f" > {minimum:g}" if min_open else f" >= {minimum:g}")
    hi = "" if maximum is None else (
        f" < {maximum:g}" if max_open else f" <= {maximum:g}")
    bounds = lo + ("," if lo and hi else "") + hi
    hint = f" ({hint})" if hint else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number{bounds}{hint}. Received: "
                        f"{name}={value!r} ({type(value).__name__})")
    v = float(value)
    if not np.isfinite(v) or (minimum is not None and (
            v <= minimum if min_open else v < minimum)) or (
            maximum is not None and (v >= maximum if max_open
                                     else v > maximum)):
        raise ValueError(f"{name} must be a finite number{bounds}{hint}. "
                         f"Received: {name}={value!r}")
    return v
