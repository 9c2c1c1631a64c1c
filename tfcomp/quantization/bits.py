"""Per-layer ``(w_bits, a_bits)`` from ``quantize_model``'s ``bits``.

Example:
    >>> from tfcomp.quantization.bits import per_layer_bits
    >>> per_layer_bits(4, ["a", "b", "c"], "a", "c", 8)
    {'a': (8, 8), 'b': (4, 4), 'c': (8, 8)}
"""

from __future__ import annotations

from tfcomp.layers import quantizers as qz

__all__ = ["per_layer_bits"]


def _pair(pair, name: str) -> tuple:
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
        raise ValueError(
            f"bits[{name!r}] must be a (w_bits, a_bits) pair. "
            f"Received: {pair!r}")
    return (qz.check_bits(pair[0], f"bits[{name!r}] w_bits"),
            qz.check_bits(pair[1], f"bits[{name!r}] a_bits"))


def per_layer_bits(bits, names: list, first: str | None, last: str | None,
                   first_last_bits: int | None, aliases: dict | None = None
                   ) -> dict:
    """``{layer: (w_bits, a_bits)}`` for every name in ``names``.

    Args:
        bits: ``b`` (w = a = b), a ``(w_bits, a_bits)`` pair, or
            ``{layer: (w_bits, a_bits)}`` (layers not listed get
            ``first_last_bits`` or 8).
        names: the quantizable layers, in order.
        first, last: the first and last of them (kept at
            ``first_last_bits`` when ``bits`` is uniform).
        first_last_bits: bits of the first / last layer; None to disable.
        aliases: other accepted keys of ``bits`` (``{"outer/inner":
            "outer_inner"}`` for layers of nested models).

    Returns:
        The per-layer pairs.

    Raises:
        ValueError: bits outside [1, 8] / 32, or names that are not
            quantizable layers.

    Example:
        >>> per_layer_bits((4, 8), ["a", "b"], "a", "b", None)
        {'a': (4, 8), 'b': (4, 8)}
    """
    out = {}
    fl = None
    if first_last_bits is not None:
        fl = qz.check_bits(first_last_bits, "first_last_bits")
    if isinstance(bits, dict):
        aliases = aliases or {}
        keyed = {aliases.get(k, k): (k, v) for k, v in bits.items()}
        unknown = sorted(k for k, _ in keyed.values()
                         if aliases.get(k, k) not in names)
        if unknown:
            raise ValueError(
                "bits names layers that are not quantizable in this model: "
                f"{unknown}. Quantizable layers: {names}")
        for name in names:
            if name in keyed:
                key, pair = keyed[name]
                out[name] = _pair(pair, key)
            else:
                out[name] = (fl or 8, fl or 8)
        return out
    if isinstance(bits, (tuple, list)):
        if len(bits) != 2:
            raise ValueError(
                f"bits must be an int, a (w_bits, a_bits) pair or a dict. "
                f"Received: bits={bits!r}")
        pair = (qz.check_bits(bits[0], "w_bits"),
                qz.check_bits(bits[1], "a_bits"))
    else:
        b = qz.check_bits(bits, "bits")
        pair = (b, b)
    for name in names:
        out[name] = pair
        if fl is not None and name in (first, last):
            out[name] = (fl, fl)
    return out
