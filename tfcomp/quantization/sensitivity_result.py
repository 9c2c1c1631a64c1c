"""``Sensitivity``: per-layer, per-bit-width quantization sensitivity.

The result of :func:`tfcomp.quantization.sensitivity`: a table of the
expected loss increase (method ``"hessian"``) or output distortion
(``"distortion"``) when one layer's weights (``kind="weights"``) or input
activations (``kind="activations"``) are quantized to ``b`` bits.
It saves and loads as JSON and prints as a table.

File format (``FORMAT`` / ``VERSION``)::

    {"format": "tfcomp.sensitivity", "version": 1,
     "method": "hessian" | "distortion",
     "kind": "weights" | "activations",
     "layers": [name, ...], "bits": [2, ..., 8],
     "table": [[value per bits] per layer], "meta": {...}}

Example:
    >>> s = Sensitivity(["conv1", "fc"], [4, 8], [[0.3, 0.01], [0.1, 0.0]])
    >>> s.value("conv1", 4)
    0.3
"""

from __future__ import annotations

import math

import numpy as np

from tfcomp._io import BadInputError, atomic_write_json, read_json

__all__ = ["FORMAT", "VERSION", "Sensitivity"]

FORMAT = "tfcomp.sensitivity"
VERSION = 1


class Sensitivity:
    """Per-layer sensitivity to each weight (or activation) bit-width.

    Attributes:
        layers: quantizable layer names, in model order (as
            ``quantizable_layers`` names them).
        bits: the bit-widths, ascending (activation bits for
            ``kind="activations"``).
        table: float64 array ``[len(layers), len(bits)]``.
        method: ``"hessian"`` or ``"distortion"``.
        kind: what was quantized: ``"weights"`` or ``"activations"``
            (each layer's input activations, ``sensitivity(...,
            kind="activations")``; ``bits`` are then activation bits;
            see :func:`~tfcomp.quantization.sensitivity`).
        meta: provenance (Hessian traces, probes, samples, seconds,
            element counts, input ranges for activations, ...).

    Example:
        >>> s = tfcomp.quantization.sensitivity.sensitivity(model, x[:256])
        >>> print(s)
        >>> s.to_json("sens.json"); Sensitivity.from_json("sens.json")
    """

    def __init__(self, layers, bits, table, method: str = "hessian",
                 kind: str = "weights", meta: dict | None = None):
        self.layers = [str(x) for x in layers]
        self.bits = [int(b) for b in bits]
        self.table = np.asarray(table, dtype=np.float64).reshape(
            len(self.layers), len(self.bits)) if len(self.layers) else \
            np.zeros((0, len(self.bits)))
        if len(set(self.layers)) != len(self.layers):
            raise ValueError(f"Sensitivity layers must be unique. Received: "
                             f"layers={self.layers}")
        if self.bits != sorted(set(self.bits)):
            raise ValueError("Sensitivity bits must be unique and ascending. "
                             f"Received: bits={self.bits}")
        if not np.all(np.isfinite(self.table)):
            raise ValueError("Sensitivity table holds NaN or infinite "
                             "values.")
        self.method = str(method)
        self.kind = str(kind)
        self.meta = dict(meta or {})

    # -- access ------------------------------------------------------------
    def value(self, layer: str, bits: int) -> float:
        """The sensitivity of ``layer`` at ``bits`` weight bits.

        Raises:
            KeyError: an unknown layer or bit-width (the message lists the
                known ones).

        Example:
            >>> s.value("conv1", 4)
        """
        if layer not in self.layers:
            raise KeyError(f"No layer {layer!r} in this Sensitivity. Known: "
                           f"{self.layers[:12]}")
        if bits not in self.bits:
            raise KeyError(f"No bits={bits!r} for layer {layer!r}: the "
                           f"table has bits {self.bits}")
        return float(self.table[self.layers.index(layer),
                                self.bits.index(bits)])

    def __getitem__(self, layer: str) -> dict:
        """``{bits: value}`` of one layer."""
        if layer not in self.layers:
            raise KeyError(f"No layer {layer!r} in this Sensitivity. Known: "
                           f"{self.layers[:12]}")
        row = self.table[self.layers.index(layer)]
        return {b: float(v) for b, v in zip(self.bits, row)}

    def __len__(self) -> int:
        return len(self.layers)

    # -- (de)serialisation ---------------------------------------------------
    def to_dict(self) -> dict:
        """The JSON document (see the module docstring)."""
        return {"format": FORMAT, "version": VERSION, "method": self.method,
                "kind": self.kind, "layers": list(self.layers),
                "bits": list(self.bits), "table": self.table.tolist(),
                "meta": _jsonable(self.meta)}

    @classmethod
    def from_dict(cls, doc, source: str = "<dict>") -> Sensitivity:
        """Reads :meth:`to_dict`'s document.

        Raises:
            BadInputError: not a sensitivity document, a newer version, or
                a table whose shape does not match its layers and bits.
        """
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            fmt = doc.get("format") if isinstance(doc, dict) else type(doc)
            raise BadInputError(f"{source} is not a tfcomp sensitivity file "
                                f"(format {FORMAT!r}). Received: "
                                f"format={fmt!r}")
        version = doc.get("version")
        if not isinstance(version, int) or version > VERSION:
            raise BadInputError(f"{source}: sensitivity file version "
                                f"{version!r} is not supported (this tfcomp "
                                f"reads version <= {VERSION}).")
        try:
            layers, bits = list(doc["layers"]), list(doc["bits"])
            table = np.asarray(doc["table"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as e:
            raise BadInputError(f"{source}: corrupt sensitivity file "
                                f"({type(e).__name__}: {e}).") from None
        if table.shape != (len(layers), len(bits)) and table.size:
            raise BadInputError(
                f"{source}: the table has shape {table.shape} but the file "
                f"names {len(layers)} layers and {len(bits)} bit-widths.")
        try:
            return cls(layers, bits, table, doc.get("method", "hessian"),
                       doc.get("kind", "weights"), doc.get("meta"))
        except ValueError as e:
            raise BadInputError(f"{source}: {e}") from None

    def to_json(self, path: str) -> str:
        """Writes the table to ``path`` atomically; returns ``path``.

        Example:
            >>> s.to_json("sensitivity.json")
        """
        atomic_write_json(path, self.to_dict())
        return path

    @classmethod
    def from_json(cls, path: str) -> Sensitivity:
        """Loads a file written by :meth:`to_json`.

        Example:
            >>> s = Sensitivity.from_json("sensitivity.json")
        """
        return cls.from_dict(read_json(path, "sensitivity file"),
                             source=repr(str(path)))

    # -- printing ------------------------------------------------------------
    def __str__(self) -> str:
        name_w = max([len("layer")] + [len(x) for x in self.layers])
        head = f"{'layer':<{name_w}}" + "".join(
            f" {f'{b}-bit':>10}" for b in self.bits)
        what = ("output MSE" if self.method == "distortion"
                else "expected loss increase")
        operand = "activation" if self.kind == "activations" else "weight"
        lines = [f"Sensitivity ({self.method}, {self.kind}: {what} per "
                 f"layer and {operand} bit-width)", head, "-" * len(head)]
        for name, row in zip(self.layers, self.table):
            lines.append(f"{name:<{name_w}}" + "".join(
                f" {v:>10.3e}" for v in row))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"Sensitivity(method={self.method!r}, layers={len(self)}, "
                f"bits={self.bits})")


def _jsonable(obj):
    """``obj`` with numpy scalars / arrays turned into plain Python."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
