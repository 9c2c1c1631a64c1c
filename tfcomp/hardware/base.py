"""Hardware cost model interface: ``Cost``, ``ModelCost``, ``HardwareModel``.

A hardware model answers one question: what does this layer cost at these
weight and activation bit-widths? ``model_cost`` sums that over a model (or a
list of ``LayerSpec``), so tuners can cost a candidate pruning or
quantization policy without building it.

Example:
    >>> hw = BitFusion("edge")
    >>> hw.model_cost(model, bits={"conv1": (4, 4)}).latency_s
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterable, Mapping

import keras

from tfcomp.hardware.spec import LayerSpec, extract_specs

__all__ = [
    "RESOURCES",
    "Cost",
    "HardwareModel",
    "ModelCost",
    "as_specs",
    "layer_resource",
    "parts_cost",
    "resolve_bits",
    "resolve_spec_bits",
]

# What a budget can limit (``resource=``): seconds, joules, multiply-
# accumulates, bit operations or weight bytes.
RESOURCES = ("latency", "energy", "macs", "bops", "size")


def _add_opt(a, b):
    return None if a is None or b is None else a + b


@dataclasses.dataclass(frozen=True)
class Cost:
    """Cost of one layer (or a sum of layers).

    Attributes:
        cycles: accelerator clock cycles (None for measured latencies).
        latency_s: seconds.
        energy_j: joules, or None where the model has no energy figures.
        breakdown: optional named parts (e.g. compute/memory cycles); not
            compared for equality.

    Example:
        >>> (Cost(10, 1e-6) + Cost(5, 5e-7)).cycles
        15
    """

    cycles: float | None
    latency_s: float
    energy_j: float | None = None
    breakdown: dict | None = dataclasses.field(default=None, compare=False)

    def __add__(self, other: Cost) -> Cost:
        return Cost(_add_opt(self.cycles, other.cycles),
                    self.latency_s + other.latency_s,
                    _add_opt(self.energy_j, other.energy_j))

    def to_dict(self) -> dict:
        return {"cycles": self.cycles, "latency_s": self.latency_s,
                "energy_j": self.energy_j}


ZERO = Cost(0, 0.0, 0.0)


def parts_cost(spec: LayerSpec, part_cost) -> Cost:
    """A composite spec's cost (``LayerSpec.parts``, e.g. a SeparableConv2D:
    depthwise + pointwise): the sum of ``part_cost(part, is_last)`` over its
    parts; ``breakdown["parts"]`` holds each part's breakdown by name.

    Example:
        >>> parts_cost(sep, lambda p, last: BISMO().layer_cost(p, 4, 4))
    """
    parts = spec.parts
    costs = [part_cost(p, i == len(parts) - 1) for i, p in enumerate(parts)]
    total = costs[0]
    for c in costs[1:]:
        total = total + c
    return dataclasses.replace(total, breakdown={"parts": {
        p.name: c.breakdown for p, c in zip(parts, costs)}})


@dataclasses.dataclass
class ModelCost:
    """Total and per-layer cost of a model.

    Attributes:
        cycles, latency_s, energy_j: totals (``latency_s`` includes
            ``overhead_s``; cycles/energy are None when any layer lacks them).
        layers: ``{layer_name: Cost}``.
        bits: ``{layer_name: (w_bits, a_bits)}`` that were costed.
        overhead_s: fixed per-inference time added once (measured tables).
        macs, bops, size_bytes: MACs, BOPs and weight bytes (bias included)
            of the costed layers at ``bits``, from the ``tfcomp.cost``
            formulas: the same numbers as ``tfcomp.profile(model, bits)``
            gives for those layers, whatever the hardware.

    Example:
        >>> c = hw.model_cost(model)
        >>> c.latency_s, c.layers["conv1"].cycles, c.value("size")
    """

    cycles: float | None
    latency_s: float
    energy_j: float | None
    layers: dict
    bits: dict
    overhead_s: float = 0.0
    macs: int = 0
    bops: int = 0
    size_bytes: float = 0.0

    def value(self, resource: str) -> float | None:
        """The total of one resource (``RESOURCES``): ``"latency"``
        (seconds), ``"energy"`` (joules, None without an energy model),
        ``"macs"``, ``"bops"`` or ``"size"`` (bytes).

        Example:
            >>> BISMO().model_cost(model, bits=(4, 4)).value("bops")
        """
        if resource not in RESOURCES:
            raise ValueError(f"resource must be one of {RESOURCES}. "
                             f"Received: resource={resource!r}")
        return {"latency": self.latency_s, "energy": self.energy_j,
                "macs": self.macs, "bops": self.bops,
                "size": self.size_bytes}[resource]

    def to_dict(self) -> dict:
        return {
            "cycles": self.cycles, "latency_s": self.latency_s,
            "energy_j": self.energy_j, "overhead_s": self.overhead_s,
            "macs": self.macs, "bops": self.bops,
            "size_bytes": self.size_bytes,
            "layers": {k: v.to_dict() for k, v in self.layers.items()},
            "bits": {k: list(v) for k, v in self.bits.items()},
        }


def as_specs(model_or_specs, batch: int = 1) -> list[LayerSpec]:
    """A model's specs, or a list of specs checked and returned as is."""
    if isinstance(model_or_specs, keras.Model):
        return extract_specs(model_or_specs, batch=batch)
    if isinstance(model_or_specs, LayerSpec):
        return [model_or_specs]
    specs = list(model_or_specs)
    bad = [s for s in specs if not isinstance(s, LayerSpec)]
    if bad:
        raise TypeError(
            "model_or_specs must be a keras.Model or LayerSpec records. "
            f"Received an item of type {type(bad[0])!r}")
    return specs


def _check_pair(pair, where: str) -> tuple[int, int]:
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
        raise ValueError(f"{where} must be a (w_bits, a_bits) pair. "
                         f"Received: {pair!r}")
    w, a = pair
    for v in (w, a):
        if isinstance(v, bool) or not isinstance(v, (int,)) and not (
                hasattr(v, "__index__")):
            raise ValueError(f"{where} must hold integers. Received: "
                             f"{pair!r}")
    return int(w), int(a)


def resolve_spec_bits(specs: Iterable[LayerSpec], bits=None,
                      default_bits=(8, 8)) -> dict:
    """Per-layer (w_bits, a_bits): ``bits`` > the layer's own > default.

    Args:
        specs: the layers.
        bits: None, one ``(w, a)`` pair for every layer, or
            ``{layer_name: (w, a)}``.
        default_bits: for layers not in ``bits`` that are float (32-bit) in
            their model.

    Returns:
        ``{layer_name: (w_bits, a_bits)}``.

    Raises:
        ValueError: on malformed pairs or names that are not costed layers.

    Example:
        >>> resolve_spec_bits(specs, {"conv1": (4, 6)})["conv1"]
        (4, 6)
    """
    specs = list(specs)
    default = _check_pair(default_bits, "default_bits")
    uniform = None
    table: Mapping = {}
    if bits is None:
        pass
    elif isinstance(bits, Mapping):
        names = {s.name for s in specs}
        unknown = sorted(set(bits) - names)
        if unknown:
            raise ValueError(
                f"bits names layers that are not costed: {unknown[:10]}. "
                f"Costed layers: {sorted(names)[:20]}")
        table = {k: _check_pair(v, f"bits[{k!r}]") for k, v in bits.items()}
    else:
        uniform = _check_pair(bits, "bits")
    out = {}
    for s in specs:
        if uniform is not None:
            out[s.name] = uniform
        elif s.name in table:
            out[s.name] = table[s.name]
        else:
            w = s.w_bits if s.w_bits < 32 else default[0]
            a = s.a_bits if s.a_bits < 32 else default[1]
            out[s.name] = (w, a)
    return out


def resolve_bits(specs, bits=None, default_bits=(8, 8)) -> dict:
    """Deprecated alias of :func:`resolve_spec_bits` (not to be confused
    with ``tfcomp.quantization.resolve_bits``).

    Example:
        >>> resolve_spec_bits(specs, (4, 4))  # use this instead
    """
    warnings.warn(
        "tfcomp.hardware.resolve_bits is deprecated; use "
        "tfcomp.hardware.resolve_spec_bits.", DeprecationWarning,
        stacklevel=2)
    return resolve_spec_bits(specs, bits, default_bits)


def layer_resource(spec: LayerSpec, w_bits: int, a_bits: int,
                   resource: str, hardware=None) -> float:
    """One layer's cost in one resource (``RESOURCES``).

    ``"macs"``, ``"bops"`` and ``"size"`` (bytes, bias included) come from
    the ``tfcomp.cost`` formulas and need no hardware; ``"latency"``
    (seconds) and ``"energy"`` (joules) from ``hardware.layer_cost``.

    Raises:
        ValueError: an unknown resource, no ``hardware`` for latency /
            energy, or a hardware model without energy figures.

    Example:
        >>> layer_resource(spec, 4, 8, "size") == spec.size_bytes(4)
        True
    """
    if resource == "macs":
        return float(spec.macs)
    if resource == "bops":
        return float(spec.bops(w_bits, a_bits))
    if resource == "size":
        return float(spec.size_bytes(w_bits))
    if resource not in RESOURCES:
        raise ValueError(f"resource must be one of {RESOURCES}. Received: "
                         f"resource={resource!r}")
    if hardware is None:
        raise ValueError(f"resource={resource!r} needs a hardware model "
                         "(e.g. BitFusion('edge') or a LatencyTable). "
                         "Received: hardware=None")
    c = hardware.layer_cost(spec, int(w_bits), int(a_bits))
    v = c.latency_s if resource == "latency" else c.energy_j
    if v is None:
        raise ValueError(
            f"hardware {getattr(hardware, 'name', hardware)!r} has no "
            f"{resource} figure for layer {spec.name!r}.")
    return float(v)


class HardwareModel:
    """Base class: the cost of a layer at given bit-widths.

    Subclasses implement ``layer_cost`` and ``get_config``; ``model_cost``
    sums layers. ``min_bits``/``max_bits`` bound the supported widths.

    Example:
        >>> class Flat(HardwareModel):
        ...     name = "flat"
        ...     def layer_cost(self, spec, w_bits, a_bits):
        ...         return Cost(spec.macs, spec.macs * 1e-9)
        >>> Flat().model_cost(specs).cycles
    """

    name = "hardware"
    min_bits = 1
    max_bits = 32
    overhead_s = 0.0

    def check_bits(self, w_bits, a_bits, spec: LayerSpec | None = None):
        """Raises ValueError when a width is outside [min_bits, max_bits]."""
        for what, v in (("w_bits", w_bits), ("a_bits", a_bits)):
            if isinstance(v, bool) or not isinstance(v, int) or not (
                    self.min_bits <= v <= self.max_bits):
                where = f" (layer {spec.name!r})" if spec is not None else ""
                raise ValueError(
                    f"{self.name} supports {what} in [{self.min_bits}, "
                    f"{self.max_bits}]. Received: {what}={v!r}{where}")

    def layer_cost(self, spec: LayerSpec, w_bits: int, a_bits: int) -> Cost:
        """Cost of one layer. Subclasses implement this."""
        raise NotImplementedError

    def distinct_bits(self) -> tuple[int, ...]:
        """The widths at which this hardware's cost changes, ascending.

        A width between two of them costs what the next one up costs (the
        datapath runs it at that width), so a search should only propose
        these (``snap_bits``). The base class: every width in
        ``[min_bits, max_bits]``.

        Example:
            >>> BitFusion().distinct_bits()
            (2, 4, 8)
        """
        return tuple(range(self.min_bits, self.max_bits + 1))

    def snap_bits(self, bits: int) -> int:
        """The smallest width of ``distinct_bits()`` that is >= ``bits``.

        Raises:
            ValueError: ``bits`` is not an int or above the largest one.

        Example:
            >>> BitFusion().snap_bits(5), BitFusion().snap_bits(1)
            (8, 2)
        """
        if isinstance(bits, bool) or not isinstance(bits, int) and not (
                hasattr(bits, "__index__")):
            raise ValueError(f"bits must be an int. Received: bits={bits!r}")
        bits = int(bits)
        widths = self.distinct_bits()
        for b in widths:
            if b >= bits:
                return b
        raise ValueError(
            f"{self.name} runs widths {list(widths)}; nothing is >= "
            f"bits={bits}. Received: bits={bits}")

    def model_cost(self, model_or_specs, bits=None, default_bits=(8, 8),
                   batch: int = 1, layer_cost=None) -> ModelCost:
        """Sums ``layer_cost`` over a model's costed layers.

        Args:
            model_or_specs: a built ``keras.Model`` or ``LayerSpec`` records.
            bits: None, one ``(w, a)`` pair, or ``{layer_name: (w, a)}``.
            default_bits: widths for float layers missing from ``bits``.
            batch: batch size when a model is given.
            layer_cost: for subclasses: ``(spec, w, a) -> Cost`` used
                instead of ``self.layer_cost`` (e.g. with extra context).

        Returns:
            A ``ModelCost``.

        Example:
            >>> BISMO().model_cost(model, bits=(4, 4)).latency_s
        """
        specs = as_specs(model_or_specs, batch=batch)
        per = resolve_spec_bits(specs, bits, default_bits)
        cost_fn = self.layer_cost if layer_cost is None else layer_cost
        layers = {}
        total = ZERO
        macs = bops = 0
        size = 0.0
        for s in specs:
            w, a = per[s.name]
            c = cost_fn(s, int(w), int(a))
            layers[s.name] = c
            total = total + c
            macs += s.macs
            bops += s.bops(w, a)
            size += s.size_bytes(w)
        return ModelCost(
            cycles=total.cycles, latency_s=total.latency_s + self.overhead_s,
            energy_j=total.energy_j, layers=layers, bits=per,
            overhead_s=self.overhead_s, macs=macs, bops=bops,
            size_bytes=size)

    def get_config(self) -> dict:
        return {}

    def describe(self) -> dict:
        """``{"name": ..., "config": ...}`` as stored in latency tables."""
        return {"name": self.name, "config": self.get_config()}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"
