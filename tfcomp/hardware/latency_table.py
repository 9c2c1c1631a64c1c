"""LatencyTable: a versioned JSON lookup table of per-layer costs.

A table maps a layer signature (op, input size, channels, kernel, stride,
groups, batch) and a (w_bits, a_bits) pair to a latency, and to cycles and
energy where known. It is built from an analytic ``HardwareModel``
(``LatencyTable.build``) or by timing single-layer TFLite models
(``measure_tflite_table``, or ``device_profiler`` on a phone). Channel
counts the table has not seen are interpolated between measured neighbours
of the same layer family; outside the measured range it raises. Two
interpolation modes:

* ``"linear"`` (analytic tables): bilinear in (cin, cout), linear for ops
  whose channels are tied.
* ``"step"`` (measured CPU tables): piecewise constant in ``cout`` (the
  nearest measured count at or above it) and linear in ``cin``. CPU GEMM
  kernels (XNNPACK) pad the output channels to the micro-kernel's tile
  width (16 floats on this AVX2 host) and loop over input channels without
  padding, so measured latency is a staircase in ``cout`` and about linear
  in ``cin``: on this host a 3x3 conv on 14x14x16 takes 10.5 us for every
  cout in 4..16, 19.7 us for 18..32 and 40 us for 34..40, while its cost
  rises by ~1.2 us per 2 input channels. Linear interpolation across a step
  mispredicts by up to 2x; the step rule is exact whenever the measured
  counts include the tile boundaries (measure multiples of 8 or 16, e.g.
  ``channel_multiple=8``), and otherwise errs high.

File format (``FORMAT`` / ``VERSION``)::

    {"format": "tfcomp.latency_table", "version": 1,
     "hardware": {"name": ..., "config": {...}},
     "bit_invariant": false, "overhead_s": 0.0,
     "interpolation": "linear" | "step" (optional; default "linear"),
     "meta": {...},
     "entries": [{"spec": {LayerSpec.to_dict()},
                  "costs": [[w_bits, a_bits, latency_s, cycles|null,
                             energy_j|null], ...]}, ...]}

Example:
    >>> table = LatencyTable.build(model, BitFusion("edge"))
    >>> table.save("bitfusion_edge.json")
    >>> LatencyTable.load("bitfusion_edge.json").model_cost(model, (4, 4))
"""

from __future__ import annotations

import json
import math
import os

from tfcomp._io import BadInputError, atomic_write_text, read_json
from tfcomp.hardware.base import Cost, HardwareModel, as_specs
from tfcomp.hardware.channels import (
    channel_variants,
    scaled_channels,
    unique_signatures,
)
from tfcomp.hardware.device_profiler import FORMAT, VERSION
from tfcomp.hardware.spec import LayerSpec

__all__ = [
    "FORMAT",
    "VERSION",
    "LatencyTable",
    "LatencyTableError",
    "channel_variants",
    "scaled_channels",
    "unique_signatures",
]

FLOAT_BITS = 32
INTERPOLATIONS = ("linear", "step")


class LatencyTableError(BadInputError):
    """A table file is corrupt or too new, or a lookup cannot be answered."""


def _lerp(c0: Cost, c1: Cost, t: float) -> Cost:
    def mix(a, b):
        return None if a is None or b is None else a + (b - a) * t
    return Cost(mix(c0.cycles, c1.cycles), mix(c0.latency_s, c1.latency_s),
                mix(c0.energy_j, c1.energy_j))


def _interp1(points: dict, x: int):
    """Linear interpolation over {x: Cost}; None when x is not bracketed."""
    if x in points:
        return points[x]
    lo = [k for k in points if k < x]
    hi = [k for k in points if k > x]
    if not lo or not hi:
        return None
    x0, x1 = max(lo), min(hi)
    return _lerp(points[x0], points[x1], (x - x0) / (x1 - x0))


def _interp2(points: dict, x: int, y: int):
    """Bilinear interpolation over {(x, y): Cost}; None if not bracketed.

    Tries the tightest rectangles of existing points around (x, y) first;
    a query on an existing row or column interpolates along it.
    """
    xs = sorted({p[0] for p in points})
    ys = sorted({p[1] for p in points})

    def brackets(vals, q):
        # (q, q) when q is a known coordinate, then the narrowest
        # bracketing pairs: unions of several layers' grids are irregular.
        lo = [v for v in vals if v < q][::-1][:8]
        hi = [v for v in vals if v > q][:8]
        pairs = sorted(((a, b) for a in lo for b in hi),
                       key=lambda p: p[1] - p[0])
        return ([(q, q)] if q in vals else []) + pairs

    for x0, x1 in brackets(xs, x):
        for y0, y1 in brackets(ys, y):
            corners = [(x0, y0), (x0, y1), (x1, y0), (x1, y1)]
            if not all(c in points for c in corners):
                continue
            tx = 0.0 if x1 == x0 else (x - x0) / (x1 - x0)
            ty = 0.0 if y1 == y0 else (y - y0) / (y1 - y0)
            bottom = _lerp(points[(x0, y0)], points[(x1, y0)], tx)
            top = _lerp(points[(x0, y1)], points[(x1, y1)], tx)
            return _lerp(bottom, top, ty)
    return None


def _interp_step(points: dict, x: int, y: int):
    """Step in y (nearest measured y >= the query), linear in x.

    Rows at or above ``y`` are tried in increasing order; the first row
    whose measured x values bracket ``x`` answers. None if none does.
    """
    for y1 in sorted({p[1] for p in points if p[1] >= y}):
        row = {p[0]: c for p, c in points.items() if p[1] == y1}
        cost = _interp1(row, x)
        if cost is not None:
            return cost
    return None


def _bit_pairs(bits) -> list[tuple[int, int]]:
    bits = list(bits)
    if not bits:
        raise ValueError("bits must not be empty.")
    if all(isinstance(b, int) and not isinstance(b, bool) for b in bits):
        return [(w, a) for w in bits for a in bits]
    pairs = []
    for b in bits:
        if not (isinstance(b, (tuple, list)) and len(b) == 2):
            raise ValueError(
                "bits must be integers (all (w, a) combinations are built) or "
                f"(w_bits, a_bits) pairs. Received item: {b!r}")
        pairs.append((int(b[0]), int(b[1])))
    return pairs


class LatencyTable(HardwareModel):
    """Per-layer cost lookup table (a ``HardwareModel`` itself).

    Args:
        hardware: ``{"name": ..., "config": {...}}`` describing the source.
        bit_invariant: True for tables measured on a runtime whose speed does
            not depend on the requested bit-widths (float TFLite on a CPU):
            entries are stored at 32/32 and lookups ignore the bits.
        overhead_s: fixed per-inference time added once by ``model_cost``
            (measured tables: the interpreter's invoke overhead, subtracted
            from every single-layer measurement).
        meta: free-form provenance (runs, threads, runtime, host).
        interpolation: ``"linear"`` (bilinear in (cin, cout)) or
            ``"step"`` (piecewise constant in cout, linear in cin; for
            measured CPU tables, see the module docstring).

    Example:
        >>> t = LatencyTable(hardware={"name": "mine", "config": {}})
        >>> t.add(spec, 8, 8, Cost(100, 1e-6))
        >>> t.lookup(spec, 8, 8).latency_s
        1e-06
    """

    def __init__(self, hardware: dict | None = None,
                 bit_invariant: bool = False, overhead_s: float = 0.0,
                 meta: dict | None = None, interpolation: str = "linear"):
        self._cache: dict[tuple, Cost] = {}
        self.interpolation = interpolation
        self.hardware = dict(hardware or {"name": "unknown", "config": {}})
        self.name = f"LatencyTable({self.hardware.get('name', 'unknown')})"
        self.bit_invariant = bool(bit_invariant)
        if not (isinstance(overhead_s, (int, float)) and overhead_s >= 0):
            raise ValueError(f"overhead_s must be >= 0. Received: "
                             f"overhead_s={overhead_s!r}")
        self.overhead_s = float(overhead_s)
        self.meta = dict(meta or {})
        self._specs: dict[str, LayerSpec] = {}
        self._exact: dict[tuple, Cost] = {}
        self._families: dict[tuple, dict] = {}
        self._cache: dict[tuple, Cost] = {}

    @property
    def interpolation(self) -> str:
        """``"linear"`` or ``"step"``; settable (clears the lookup cache)."""
        return self._interpolation

    @interpolation.setter
    def interpolation(self, value: str) -> None:
        if value not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}"
                             f". Received: interpolation={value!r}")
        self._interpolation = value
        self._cache.clear()

    # -- contents -----------------------------------------------------------
    def _bits_key(self, w_bits, a_bits):
        return (FLOAT_BITS, FLOAT_BITS) if self.bit_invariant else (
            int(w_bits), int(a_bits))

    def add(self, spec: LayerSpec, w_bits: int, a_bits: int,
            cost: Cost) -> None:
        """Stores the cost of ``spec`` at (w_bits, a_bits)."""
        if not isinstance(spec, LayerSpec):
            raise TypeError(f"spec must be a LayerSpec. Received: "
                            f"{type(spec)!r}")
        if not isinstance(cost, Cost):
            raise TypeError(f"cost must be a Cost. Received: {type(cost)!r}")
        if not (math.isfinite(cost.latency_s) and cost.latency_s >= 0):
            raise ValueError(f"latency must be finite and >= 0. Received: "
                             f"{cost.latency_s!r} for {spec.signature()}")
        bk = self._bits_key(w_bits, a_bits)
        sig = spec.signature()
        self._specs.setdefault(sig, spec)
        cost = Cost(cost.cycles, float(cost.latency_s), cost.energy_j)
        self._exact[(sig, *bk)] = cost
        fam = self._families.setdefault((spec.family(), *bk), {})
        fam[spec.cin if spec.tied_channels else (spec.cin, spec.cout)] = cost
        self._cache.clear()

    def __len__(self) -> int:
        return len(self._exact)

    def __contains__(self, item) -> bool:
        spec, w, a = item
        return (spec.signature(), *self._bits_key(w, a)) in self._exact

    @property
    def bit_pairs(self) -> list[tuple[int, int]]:
        """The (w_bits, a_bits) pairs present in the table."""
        return sorted({k[1:] for k in self._exact})

    def distinct_bits(self) -> tuple[int, ...]:
        """The widths at which the table's cost changes.

        ``meta["distinct_bits"]`` when the table records it (``build``
        stores its hardware's, kept to the widths tabulated; ``from_haq``
        1-8), else every width the table holds. A bit-invariant table
        costs every width alike: 1-32 (nothing to snap).

        Example:
            >>> LatencyTable.build(model, BitFusion()).distinct_bits()
            (2, 4, 8)
        """
        if self.bit_invariant:
            return tuple(range(1, FLOAT_BITS + 1))
        widths = sorted({b for pair in self.bit_pairs for b in pair})
        known = self.meta.get("distinct_bits")
        if isinstance(known, list) and known:
            return tuple(int(b) for b in known if b in widths) or tuple(
                widths)
        return tuple(widths)

    # -- lookup -------------------------------------------------------------
    def lookup(self, spec: LayerSpec, w_bits: int = FLOAT_BITS,
               a_bits: int = FLOAT_BITS) -> Cost:
        """Cost of ``spec`` at (w_bits, a_bits), interpolating channels.

        Args:
            spec: the layer (any channel count within the table's range).
            w_bits, a_bits: bit-widths (ignored by bit-invariant tables).

        Returns:
            A ``Cost`` (exact entry, or interpolated from the family).

        Raises:
            LatencyTableError: when the layer family or bit pair is missing,
                or the channels lie outside the measured range.

        Example:
            >>> table.lookup(spec.with_channels(cin=12, cout=20), 4, 4)
        """
        bk = self._bits_key(w_bits, a_bits)
        sig = spec.signature()
        key = (sig, *bk)
        hit = self._exact.get(key) or self._cache.get(key)
        if hit is not None:
            return hit
        fam = self._families.get((spec.family(), *bk))
        if not fam:
            same_family = [k[1:] for k in self._families
                           if k[0] == spec.family()]
            if same_family:
                raise LatencyTableError(
                    f"No entries for layer {spec.name!r} at w_bits={bk[0]}, "
                    f"a_bits={bk[1]}; the table holds this layer family at "
                    f"bits {sorted(same_family)[:12]}.")
            raise LatencyTableError(
                f"The table has no entry for layer {spec.name!r} "
                f"({spec.family()}) and no same-shaped layer to interpolate "
                "from; rebuild it with this model.")
        if spec.tied_channels:
            cost = _interp1(fam, spec.cin)
            known = f"channels {min(fam)}..{max(fam)}"
        else:
            interp = _interp_step if self.interpolation == "step" \
                else _interp2
            cost = interp(fam, spec.cin, spec.cout)
            cins = sorted({p[0] for p in fam})
            couts = sorted({p[1] for p in fam})
            known = (f"cin {cins[0]}..{cins[-1]}, cout "
                     f"{couts[0]}..{couts[-1]} (points: {sorted(fam)[:8]}"
                     f"{'...' if len(fam) > 8 else ''})")
        if cost is None:
            raise LatencyTableError(
                f"Cannot interpolate layer {spec.name!r} at cin={spec.cin}, "
                f"cout={spec.cout}: the table covers {known} for "
                f"{spec.family()}. Build the table with channel_fractions "
                "that bracket these channel counts.")
        self._cache[key] = cost
        return cost

    def layer_cost(self, spec: LayerSpec, w_bits: int, a_bits: int) -> Cost:
        """Same as ``lookup`` (the ``HardwareModel`` interface)."""
        return self.lookup(spec, w_bits, a_bits)

    def model_cost(self, model_or_specs, bits=None, default_bits=None,
                   batch: int = 1):
        """Sum of looked-up layer costs plus ``overhead_s``.

        Args:
            model_or_specs: a built ``keras.Model`` (e.g. a pruned one) or
                ``LayerSpec`` records.
            bits: None, one (w, a) pair, or ``{layer_name: (w, a)}``.
            default_bits: widths for layers not in ``bits``; defaults to
                (8, 8), or 32/32 for bit-invariant and precision tables.
            batch: batch size when a model is given.

        Returns:
            A ``ModelCost``.

        Example:
            >>> table.model_cost(pruned_model).latency_s
        """
        if default_bits is None:
            default_bits = (FLOAT_BITS, FLOAT_BITS) if (
                self.bit_invariant or self.meta.get("precisions")) else (8, 8)
        return super().model_cost(as_specs(model_or_specs, batch), bits,
                                  default_bits)

    def get_config(self) -> dict:
        return {"hardware": self.hardware, "bit_invariant": self.bit_invariant,
                "overhead_s": self.overhead_s,
                "interpolation": self.interpolation}

    # -- construction ------------------------------------------------------
    @classmethod
    def build(cls, model, hardware: HardwareModel, bits=range(2, 9),
              channel_fractions=(1.0,), channel_multiple: int | None = None,
              batch: int = 1, progress: bool = True) -> LatencyTable:
        """Tabulates an analytic hardware model over a model's layers.

        Args:
            model: a built ``keras.Model`` or ``LayerSpec`` records.
            hardware: a ``HardwareModel`` (``BISMO()``, ``BitFusion()``).
            bits: widths (every (w, a) combination is built) or explicit
                (w_bits, a_bits) pairs.
            channel_fractions: channel fractions in (0, 1] to tabulate, e.g.
                (0.2, 0.4, 0.6, 0.8, 1.0) for a pruning search.
            channel_multiple: round tabulated channel counts to this
                multiple (the search's ``round_to``), None for plain rounding.
            batch: batch size when a model is given.
            progress: show a ``keras.utils.Progbar``.

        Returns:
            A ``LatencyTable``.

        Example:
            >>> t = LatencyTable.build(model, BISMO(), bits=range(2, 9))
        """
        if not isinstance(hardware, HardwareModel):
            raise TypeError("hardware must be a HardwareModel. Received: "
                            f"{type(hardware)!r}")
        pairs = _bit_pairs(bits)
        for w, a in pairs:
            hardware.check_bits(w, a)
        specs = as_specs(model, batch)
        variants = unique_signatures(
            v for s in specs
            for v in channel_variants(s, channel_fractions, channel_multiple))
        table = cls(hardware=hardware.describe(), overhead_s=0.0,
                    meta={"source": "analytic",
                          "channel_fractions": sorted(
                              float(f) for f in channel_fractions),
                          "channel_multiple": channel_multiple,
                          "distinct_bits": [
                              int(b) for b in hardware.distinct_bits()]})
        bar = None
        if progress:
            import keras
            bar = keras.utils.Progbar(len(variants), unit_name="layer")
        for i, v in enumerate(variants):
            for w, a in pairs:
                table.add(v, w, a, hardware.layer_cost(v, w, a))
            if bar is not None:
                bar.update(i + 1)
        return table

    @classmethod
    def from_haq(cls, npy_path: str, model, unit_s: float = 1e-9,
                 batch: int = 1) -> LatencyTable:
        """A table in HAQ's released format, laid onto a Keras model.

        HAQ's ``.npy`` tables (``table[i, w_bits - 1, a_bits - 1]``, i over
        the conv / linear modules in module order) are mapped in order onto
        ``model``'s Conv2D / DepthwiseConv2D / Dense layers; the counts
        must match (keras.applications MobileNetV2, alpha 1.0, has the 53
        of HAQ's released MobileNetV2 table). Values become ``cycles`` and
        ``latency_s = value * unit_s``; only ratios are meaningful.
        Add and pooling layers cost 0 (HAQ's tables hold conv / linear
        layers only). Entries are keyed by shape: same-shaped layers share
        the mean of
        their rows (equal in the released table). A model of other input
        size gets the table's costs by position. See
        ``tfcomp.hardware.haq_table``.

        Raises:
            LatencyTableError: the file is not an (L, B, B) table, or its
                layer count differs from the model's (says both).

        Example:
            >>> t = LatencyTable.from_haq("haq_latency.npy",
            ...     keras.applications.MobileNetV2(weights=None))
            >>> t.model_cost(model, (4, 4)).latency_s
        """
        from tfcomp.hardware.haq_table import read_haq_table

        if not (isinstance(unit_s, (int, float)) and unit_s > 0):
            raise ValueError(f"unit_s must be > 0. Received: unit_s="
                             f"{unit_s!r}")
        try:
            values, specs, others = read_haq_table(npy_path, model,
                                                   batch=batch)
        except BadInputError as e:
            raise LatencyTableError(str(e)) from None
        nb = values.shape[1]
        table = cls(hardware={"name": "HAQ", "config": {
                        "source": os.path.basename(os.fspath(npy_path))}},
                    meta={"source": "haq", "unit_s": float(unit_s),
                          "distinct_bits": list(range(1, nb + 1)),
                          "layers": [s.name for s in specs]})
        rows: dict[str, list] = {}
        for i, spec in enumerate(specs):
            rows.setdefault(spec.signature(), []).append(i)
        for idx in rows.values():  # same-shaped layers: their mean
            spec, v = specs[idx[0]], values[idx].mean(axis=0)
            for w in range(1, nb + 1):
                for a in range(1, nb + 1):
                    x = float(v[w - 1, a - 1])
                    table.add(spec, w, a, Cost(x, x * unit_s))
        for other in others:  # HAQ's tables hold conv / linear layers only
            for w in range(1, nb + 1):
                for a in range(1, nb + 1):
                    table.add(other, w, a, Cost(0, 0.0))
        return table

    # -- (de)serialisation ---------------------------------------------------
    def to_dict(self) -> dict:
        """The JSON document (see the module docstring)."""
        rows: dict[str, list] = {}
        for (sig, w, a), c in sorted(self._exact.items()):
            rows.setdefault(sig, []).append(
                [w, a, c.latency_s, c.cycles, c.energy_j])
        return {
            "format": FORMAT, "version": VERSION, "hardware": self.hardware,
            "bit_invariant": self.bit_invariant,
            "overhead_s": self.overhead_s,
            "interpolation": self.interpolation, "meta": self.meta,
            "entries": [{"spec": self._specs[sig].to_dict(), "costs": costs}
                        for sig, costs in rows.items()],
        }

    @classmethod
    def from_dict(cls, doc, source: str = "<dict>") -> LatencyTable:
        """Validates a JSON document and builds the table.

        Raises:
            LatencyTableError: wrong format, newer version, or a malformed
                field (the message names it).
        """
        def bad(msg):
            return LatencyTableError(f"{source} is not a valid latency "
                                     f"table: {msg}")

        if not isinstance(doc, dict):
            raise bad(f"top level must be an object, got "
                      f"{type(doc).__name__}")
        if doc.get("format") != FORMAT:
            raise bad(f"format must be {FORMAT!r}, got "
                      f"{doc.get('format')!r}")
        version = doc.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or (
                version < 1):
            raise bad(f"version must be a positive integer, got {version!r}")
        if version > VERSION:
            raise LatencyTableError(
                f"{source} was written by a newer tfcomp (table format "
                f"version {version}); this tfcomp reads versions up to "
                f"{VERSION}. Upgrade tfcomp to read it.")
        for key, typ in (("hardware", dict), ("entries", list),
                         ("bit_invariant", bool)):
            if not isinstance(doc.get(key), typ):
                raise bad(f"{key!r} must be a {typ.__name__}, got "
                          f"{type(doc.get(key)).__name__}")
        overhead = doc.get("overhead_s", 0.0)
        if isinstance(overhead, bool) or not isinstance(
                overhead, (int, float)) or overhead < 0:
            raise bad(f"overhead_s must be a number >= 0, got {overhead!r}")
        meta = doc.get("meta", {})
        if not isinstance(meta, dict):
            raise bad("meta must be an object")
        # Absent in files written before the field existed: linear.
        interpolation = doc.get("interpolation", "linear")
        if interpolation not in INTERPOLATIONS:
            raise bad(f"interpolation must be one of {INTERPOLATIONS}, got "
                      f"{interpolation!r}")
        table = cls(hardware=doc["hardware"],
                    bit_invariant=doc["bit_invariant"],
                    overhead_s=float(overhead), meta=meta,
                    interpolation=interpolation)
        num = (int, float)
        for i, entry in enumerate(doc["entries"]):
            if not isinstance(entry, dict) or set(entry) != {"spec",
                                                               "costs"}:
                raise bad(f"entries[{i}] must have exactly 'spec' and "
                          "'costs'")
            try:
                spec = LayerSpec.from_dict(entry["spec"])
            except (ValueError, TypeError) as e:
                raise bad(f"entries[{i}].spec: {e}") from None
            if not isinstance(entry["costs"], list) or not entry["costs"]:
                raise bad(f"entries[{i}].costs must be a non-empty list")
            for j, row in enumerate(entry["costs"]):
                ok = (isinstance(row, list) and len(row) == 5
                      and all(isinstance(v, int) and not isinstance(v, bool)
                              for v in row[:2])
                      and isinstance(row[2], num)
                      and not isinstance(row[2], bool)
                      and all(v is None or (isinstance(v, num)
                                            and not isinstance(v, bool))
                              for v in row[3:]))
                if not ok:
                    raise bad(f"entries[{i}].costs[{j}] must be [w_bits, "
                              "a_bits, latency_s, cycles|null, "
                              f"energy_j|null], got {row!r}")
                w, a, lat, cyc, en = row
                if not (math.isfinite(lat) and lat >= 0):
                    raise bad(f"entries[{i}].costs[{j}] latency must be "
                              f"finite and >= 0, got {lat!r}")
                table.add(spec, w, a, Cost(cyc, lat, en))
        return table

    def save(self, path: str) -> str:
        """Writes the table as JSON atomically (temp file + os.replace).

        Example:
            >>> table.save("tables/bitfusion_edge.json")
        """
        atomic_write_text(str(path), json.dumps(self.to_dict(), indent=1))
        return str(path)

    @classmethod
    def load(cls, path: str) -> LatencyTable:
        """Reads and schema-checks a table file.

        Raises:
            FileNotFoundError: if ``path`` does not exist.
            LatencyTableError: corrupt JSON, wrong schema, or a table format
                version newer than this tfcomp reads.

        Example:
            >>> table = LatencyTable.load("bitfusion_edge.json")
        """
        try:
            doc = read_json(path, "latency table")
        except FileNotFoundError:
            raise
        except ValueError as e:  # empty, not UTF-8, corrupt JSON, a folder
            raise LatencyTableError(f"{e} Rebuild or re-measure it.") \
                from None
        return cls.from_dict(doc, source=str(path))
