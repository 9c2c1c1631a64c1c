"""Size and BOPs of a layer at given bit-widths, from :mod:`tfcomp.cost`
(the one cost model): size ``params * w_bits / 8`` bytes (bias included)
and BOPs ``MACs * w_bits * a_bits``, with params and MACs from
``tfcomp.profile``. DNAS and HAQ price bit-widths with it.

Example:
    >>> from tfcomp.quantization.costs import BitCosts
    >>> costs = BitCosts(model)
    >>> costs.size("conv1", 4), costs.bops("conv1", 4, 8)
"""

from __future__ import annotations

from tfcomp.cost import bops, profile, size_bytes

__all__ = ["BitCosts", "RESOURCES"]

RESOURCES = ("size", "bops")


class BitCosts:
    """Per-layer size / BOPs of one model at any bit-widths.

    Layers are named as in ``tfcomp.profile`` (``outer/inner`` in nested
    models) or as ``quantize_model`` names them (``outer_inner``).

    Args:
        model: the float model (profiled once).

    Example:
        >>> BitCosts(model).cost_fn("size")("conv1", 4, 8)
    """

    def __init__(self, model):
        self.records = {}
        for r in profile(model).layers:
            self.records[r.name] = r
            self.records.setdefault(r.name.replace("/", "_"), r)

    def _record(self, name):
        try:
            return self.records[name]
        except KeyError:
            raise KeyError(f"No layer {name!r} in the profile. Known: "
                           f"{list(self.records)[:12]}") from None

    def size(self, name: str, w_bits: int) -> float:
        """Bytes of the layer's weights (bias included) at ``w_bits``."""
        return float(size_bytes(self._record(name).params, w_bits))

    def bops(self, name: str, w_bits: int, a_bits: int) -> float:
        """``MACs * w_bits * a_bits`` of the layer."""
        return float(bops(self._record(name).macs, w_bits, a_bits))

    def cost_fn(self, resource: str):
        """``fn(layer, w_bits, a_bits) -> float`` for "size" or "bops".

        Example:
            >>> fn = BitCosts(model).cost_fn("bops")
        """
        if resource == "size":
            return lambda name, w, a: self.size(name, w)
        if resource == "bops":
            return self.bops
        raise ValueError(f"resource must be one of {RESOURCES}. Received: "
                         f"resource={resource!r}")
