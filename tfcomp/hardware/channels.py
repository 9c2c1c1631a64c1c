"""Channel counts a pruning search visits, for latency tables.

``scaled_channels`` / ``channel_variants`` give the layer shapes a table
must hold so that lookups at pruned channel counts interpolate between
tabulated neighbours; ``unique_signatures`` drops repeated shapes.

Example:
    >>> scaled_channels(64, (0.2, 0.5, 1.0), multiple=8)
    [16, 32, 64]
"""

from __future__ import annotations

import itertools

from tfcomp.hardware.spec import LayerSpec

__all__ = ["channel_variants", "scaled_channels", "unique_signatures"]


def scaled_channels(c: int, fractions, multiple: int | None = None,
                    fixed: bool = False) -> list[int]:
    """Channel counts ``fractions`` of ``c`` (what a search keeps).

    Counts are ``max(1, round(f * c))``, or with ``multiple`` (AMC's
    ``round_to``) ``max(multiple, round(f * c / multiple) * multiple)``
    capped at ``c``; ``f = 1`` is always ``c``.

    Example:
        >>> scaled_channels(64, (0.2, 0.5, 1.0), multiple=8)
        [16, 32, 64]
    """
    if fixed:
        return [c]
    out = set()
    for f in fractions:
        if f >= 1.0:
            out.add(c)
        elif multiple:
            out.add(min(c, max(multiple, round(f * c / multiple) * multiple)))
        else:
            out.add(max(1, round(f * c)))
    return sorted(out)


def _check_fractions(fractions, multiple):
    fractions = sorted({float(f) for f in fractions})
    if not fractions or fractions[0] <= 0 or fractions[-1] > 1:
        raise ValueError("channel_fractions must lie in (0, 1]. Received: "
                         f"channel_fractions={fractions}")
    if multiple is not None and (isinstance(multiple, bool) or not isinstance(
            multiple, int) or multiple < 1):
        raise ValueError("channel_multiple must be a positive int or None. "
                         f"Received: channel_multiple={multiple!r}")
    return fractions


def channel_variants(spec: LayerSpec, fractions,
                     multiple: int | None = None) -> list[LayerSpec]:
    """The spec at every combination of channel counts a search visits.

    Channels tied to the model's input (``fixed_in``) or output
    (``fixed_out``) are kept; the others take ``scaled_channels``. Variants
    with equal signatures are returned once.

    Example:
        >>> [v.cout for v in channel_variants(spec, (0.5, 1.0))]
    """
    fractions = _check_fractions(fractions, multiple)
    out = []
    if spec.tied_channels:
        for c in scaled_channels(spec.cin, fractions, multiple,
                                 spec.fixed_in or spec.fixed_out):
            out.append(spec.with_channels(cin=c))
        return unique_signatures(out)
    g = spec.groups
    for cin, cout in itertools.product(
            scaled_channels(spec.cin, fractions, multiple, spec.fixed_in),
            scaled_channels(spec.cout, fractions, multiple, spec.fixed_out)):
        if g > 1:  # keep grouped convs valid: multiples of the groups
            cin, cout = max(g, cin // g * g), max(g, cout // g * g)
        out.append(spec.with_channels(cin=cin, cout=cout))
    return unique_signatures(out)


def unique_signatures(specs) -> list[LayerSpec]:
    """The first spec of each distinct signature, in order."""
    seen: dict[str, LayerSpec] = {}
    for s in specs:
        seen.setdefault(s.signature(), s)
    return list(seen.values())
