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

import itertools
import json
import math

from tfcomp._io import BadInputError, atomic_write_text, read_json
from tfcomp.hardware.base import Cost, HardwareModel, as_specs
from tfcomp.hardware.device_profiler import FORMAT, VERSION
from tfcomp.hardware.spec import LayerSpec

__all__ = [
    "FORMAT",
    "VERSION",
    "LatencyTable",
    "LatencyTableError",
    "channel_variants",
]

FLOAT_BITS = 32
INTERPOLATIONS = ("linear", "step")


class LatencyTableError(BadInputError):
    """A table file is corrupt or too new, or a lookup cannot be answered."""


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
                (8, 8), or 32/32 for bit-invariant tables.
            batch: batch size when a model is given.

        Returns:
            A ``ModelCost``.

        Example:
            >>> table.model_cost(pruned_model).latency_s
        """
        if default_bits is None:
            default_bits = (FLOAT_BITS, FLOAT_BITS) if self.bit_invariant \
                else (8, 8)
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
                          "channel_multiple": channel_multiple})
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
