"""Per-group pruning sensitivity, on the same footing as quantization
sensitivity (:func:`tfcomp.quantization.sensitivity.sensitivity`).

For every prunable channel group whose consumers can be refit and every
keep ratio ``r``, the group alone keeps ``n_keep(size, 1 - r)`` channels
(chosen by ``selector``, AMC's official L1 criterion by default), its
consumers are refit by least squares on the calibration data (AMC's
per-layer step, :class:`tfcomp.pruning.reconstruction.LayerwisePruner`),
and the damage is measured on the whole model:

* ``method="reconstruction"``: the mean squared difference between the
  float model's outputs and the pruned-and-refit model's outputs (the same
  unit as the quantization ``"distortion"`` sensitivity, so the two add up
  in :func:`tfcomp.joint.compress`); the consumers' relative
  reconstruction errors are kept in ``meta["layer_error"]``.
* ``method="loss"``: the task-loss increase on labelled data (the same unit
  as the quantization ``"hessian"`` sensitivity, an expected loss
  increase).

Keeping the whole group costs 0. Groups are measured one at a time from
the dense model (no interaction between groups), as per-layer sensitivity
is in HAWQ / MCT.

File format (``FORMAT`` / ``VERSION``)::

    {"format": "tfcomp.pruning_sensitivity", "version": 1,
     "method": "reconstruction" | "loss", "groups": [id, ...],
     "sizes": [int per group], "ratios": [keep ratios, ascending],
     "counts": [[kept channels per ratio] per group],
     "table": [[value per ratio] per group], "skipped": {id: reason},
     "meta": {...}}

Reference: He et al., AMC, arXiv:1802.03494 (per-layer pruning with
least-squares refit); He, Zhang & Sun, arXiv:1707.06168 (the refit);
Sony MCT (output distortion as sensitivity).

Example:
    >>> s = sensitivity(model, x[:256], ratios=(0.25, 0.5, 0.75))
    >>> print(s.summary())
    >>> s.to_json("prune_sens.json"); PruningSensitivity.from_json(...)
"""

from __future__ import annotations

import math
import time

import keras
import numpy as np

from tfcomp._batches import as_model_input, rows, sliced
from tfcomp._finetune import task_loss
from tfcomp._io import (
    BadInputError,
    as_arrays,
    atomic_write_json,
    check_fraction,
    check_positive_int,
    read_json,
)
from tfcomp.graph import DependencyGraph
from tfcomp.pruning.reconstruction import SELECTORS, LayerwisePruner
from tfcomp.pruning.reconstruction.engine import (
    check_model,
    reconstructible_groups,
)
from tfcomp.pruning.targets import n_keep, unit_round_to

__all__ = ["FORMAT", "METHODS", "VERSION", "PruningSensitivity",
           "check_keep_ratios",
           "sensitivity"]

FORMAT = "tfcomp.pruning_sensitivity"
VERSION = 1
METHODS = ("reconstruction", "loss")
DEFAULT_RATIOS = (0.25, 0.5, 0.75)


class PruningSensitivity:
    """Per channel group and keep ratio, the damage of pruning that group
    alone (with the least-squares refit).

    Attributes:
        groups: group ids (``DependencyGraph`` ids), topological order.
        sizes: channels of each group.
        ratios: keep ratios, ascending, each in (0, 1).
        counts: int array ``[groups, ratios]``: kept channels.
        table: float64 array ``[groups, ratios]``: output MSE
            (``"reconstruction"``) or loss increase (``"loss"``).
        method: ``"reconstruction"`` or ``"loss"``.
        skipped: ``{group id: reason}`` of prunable groups not measured.
        meta: provenance (selector, samples, seconds, layer errors, ...).

    Example:
        >>> s = tfcomp.pruning.prune_sensitivity.sensitivity(model, x[:128])
        >>> s.value("s1b1_conv1", 0.5), s.options("s1b1_conv1")
    """

    def __init__(self, groups, sizes, ratios, counts, table,
                 method: str = "reconstruction", skipped: dict | None = None,
                 meta: dict | None = None):
        self.groups = [str(g) for g in groups]
        self.sizes = [int(s) for s in sizes]
        self.ratios = [float(r) for r in ratios]
        shape = (len(self.groups), len(self.ratios))
        self.counts = np.asarray(counts, dtype=np.int64).reshape(shape)
        self.table = np.asarray(table, dtype=np.float64).reshape(shape)
        if len(set(self.groups)) != len(self.groups):
            raise ValueError("PruningSensitivity groups must be unique. "
                             f"Received: groups={self.groups}")
        if len(self.sizes) != len(self.groups):
            raise ValueError(f"sizes must have one entry per group "
                             f"({len(self.groups)}). Received: "
                             f"sizes={self.sizes}")
        if self.ratios != sorted(set(self.ratios)) or any(
                not 0 < r < 1 for r in self.ratios):
            raise ValueError("ratios must be unique, ascending and in (0, 1)."
                             f" Received: ratios={self.ratios}")
        if not np.all(np.isfinite(self.table)):
            raise ValueError("PruningSensitivity table holds NaN or infinite "
                             "values.")
        sizes = np.asarray(self.sizes)[:, None]
        if self.counts.size and (np.any(self.counts < 1)
                                 or np.any(self.counts > sizes)):
            raise ValueError("counts must lie in [1, group size].")
        self.method = str(method)
        self.skipped = dict(skipped or {})
        self.meta = dict(meta or {})

    # -- access ------------------------------------------------------------
    def _row(self, group: str) -> int:
        if group not in self.groups:
            raise KeyError(f"No group {group!r} in this PruningSensitivity. "
                           f"Known: {self.groups[:12]}")
        return self.groups.index(group)

    def value(self, group: str, ratio: float) -> float:
        """Sensitivity of ``group`` at keep ratio ``ratio`` (1.0 -> 0).

        Raises:
            KeyError: an unknown group or ratio (the message lists them).
        """
        i = self._row(group)
        if float(ratio) == 1.0:
            return 0.0
        if float(ratio) not in self.ratios:
            raise KeyError(f"No keep ratio {ratio!r} for group {group!r}: "
                           f"the table has ratios {self.ratios} (and 1.0)")
        return float(self.table[i, self.ratios.index(float(ratio))])

    def options(self, group: str) -> list:
        """``[(kept channels, sensitivity)]`` of ``group``, ascending in
        channels, distinct counts only (the lowest value when two ratios
        round to one count), the whole group last with 0.

        Example:
            >>> s.options("conv1")
            [(4, 0.31), (8, 0.05), (12, 0.01), (16, 0.0)]
        """
        i = self._row(group)
        best: dict = {self.sizes[i]: 0.0}
        for c, v in zip(self.counts[i], self.table[i]):
            c = int(c)
            best[c] = min(best.get(c, math.inf), float(v))
        return sorted(best.items())

    def __len__(self) -> int:
        return len(self.groups)

    # -- (de)serialisation ---------------------------------------------------
    def to_dict(self) -> dict:
        """The JSON document (see the module docstring)."""
        return {"format": FORMAT, "version": VERSION, "method": self.method,
                "groups": list(self.groups), "sizes": list(self.sizes),
                "ratios": list(self.ratios),
                "counts": self.counts.tolist(), "table": self.table.tolist(),
                "skipped": dict(self.skipped), "meta": _jsonable(self.meta)}

    @classmethod
    def from_dict(cls, doc, source: str = "<dict>") -> PruningSensitivity:
        """Reads :meth:`to_dict`'s document.

        Raises:
            BadInputError: not a pruning sensitivity document, a newer
                version, or tables whose shape does not match.
        """
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            fmt = doc.get("format") if isinstance(doc, dict) else type(doc)
            raise BadInputError(f"{source} is not a tfcomp pruning "
                                f"sensitivity file (format {FORMAT!r}). "
                                f"Received: format={fmt!r}")
        version = doc.get("version")
        if not isinstance(version, int) or version > VERSION:
            raise BadInputError(f"{source}: pruning sensitivity version "
                                f"{version!r} is not supported (this tfcomp "
                                f"reads version <= {VERSION}).")
        try:
            groups, ratios = list(doc["groups"]), list(doc["ratios"])
            counts = np.asarray(doc["counts"], dtype=np.int64)
            table = np.asarray(doc["table"], dtype=np.float64)
            sizes = list(doc["sizes"])
        except (KeyError, TypeError, ValueError) as e:
            raise BadInputError(f"{source}: corrupt pruning sensitivity file "
                                f"({type(e).__name__}: {e}).") from None
        shape = (len(groups), len(ratios))
        for name, arr in (("table", table), ("counts", counts)):
            if arr.shape != shape and arr.size:
                raise BadInputError(
                    f"{source}: the {name} has shape {arr.shape} but the "
                    f"file names {shape[0]} groups and {shape[1]} ratios.")
        try:
            return cls(groups, sizes, ratios, counts, table,
                       doc.get("method", "reconstruction"),
                       doc.get("skipped"), doc.get("meta"))
        except ValueError as e:
            raise BadInputError(f"{source}: {e}") from None

    def to_json(self, path: str) -> str:
        """Writes the table to ``path`` atomically; returns ``path``.

        Example:
            >>> s.to_json("prune_sensitivity.json")
        """
        atomic_write_json(path, self.to_dict())
        return path

    @classmethod
    def from_json(cls, path: str) -> PruningSensitivity:
        """Loads a file written by :meth:`to_json`.

        Example:
            >>> s = PruningSensitivity.from_json("prune_sensitivity.json")
        """
        return cls.from_dict(read_json(path, "pruning sensitivity file"),
                             source=repr(str(path)))

    # -- printing ------------------------------------------------------------
    def summary(self) -> str:
        """The table as text: one row per group, one column per ratio
        (kept channels in brackets)."""
        name_w = max([len("group")] + [len(g) for g in self.groups])
        head = f"{'group':<{name_w}} {'size':>5}" + "".join(
            f" {f'keep {r:g}':>16}" for r in self.ratios)
        what = ("output MSE after LS refit" if self.method == "reconstruction"
                else "loss increase after LS refit")
        lines = [f"PruningSensitivity ({self.method}: {what}, per group and "
                 "keep ratio)", head, "-" * len(head)]
        for g, n, cs, row in zip(self.groups, self.sizes, self.counts,
                                 self.table):
            lines.append(f"{g:<{name_w}} {n:>5}" + "".join(
                f" {v:>10.3e} ({c:>3})" for c, v in zip(cs, row)))
        if self.skipped:
            lines.append(f"skipped: {self.skipped}")
        return "\n".join(lines)

    __str__ = summary

    def __repr__(self) -> str:
        return (f"PruningSensitivity(method={self.method!r}, groups="
                f"{len(self)}, ratios={self.ratios})")


def _jsonable(obj):
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


# ------------------------------------------------------------- measuring


def check_keep_ratios(ratios) -> list:
    """Keep ratios as a sorted list of distinct floats in (0, 1), or a
    ValueError naming ``ratios``.

    Example:
        >>> check_keep_ratios((0.5, 0.25))
        [0.25, 0.5]
    """
    if isinstance(ratios, (int, float)) and not isinstance(ratios, bool):
        ratios = [ratios]
    try:
        items = list(ratios)
    except TypeError:
        raise ValueError("ratios must be a list of keep ratios in (0, 1). "
                         f"Received: ratios={ratios!r}") from None
    if not items:
        raise ValueError(f"ratios must not be empty. Received: "
                         f"ratios={ratios!r}")
    return sorted({check_fraction(r, "ratios item", include_low=False)
                   for r in items})


def _loss(model, loss, y):
    """The loss of the 'loss' method: ``loss``, the compiled one, else the
    one ``y`` asks for (``tfcomp._finetune.task_loss``)."""
    return task_loss(model, y, loss)


def _outputs(model, x, batch_size, compiled: bool = False) -> np.ndarray:
    """The model's inference outputs (several: flattened side by side);
    ``compiled``: through Keras' compiled
    predict function (traced once per model, then a step's new weights are
    read, not re-traced: for the working copy, evaluated after every step,
    where eager calls cost 40% of DenseNet121's sensitivity)."""
    parts = []
    for i in range(0, rows(x), batch_size):
        xb = as_model_input(model, sliced(x, i, i + batch_size))
        outs = [np.asarray(keras.ops.convert_to_numpy(o), np.float64)
                for o in keras.tree.flatten(
                    model.predict_on_batch(xb) if compiled
                    else model(xb, training=False))]
        parts.append(outs[0] if len(outs) == 1 else np.concatenate(
            [o.reshape(len(o), -1) for o in outs], axis=1))
    return np.concatenate(parts, axis=0)


def sensitivity(model, calibration_data, ratios=DEFAULT_RATIOS,
                method: str = "reconstruction", *, selector: str = "l1",
                round_to: int = 1, groups=None, ignored_layers=None,
                num_samples: int = 256, samples_per_image: int = 10,
                batch_size: int = 64, loss=None,
                seed: int = 0) -> PruningSensitivity:
    """Per prunable channel group and keep ratio, the damage of pruning that
    group alone with AMC's per-layer step (selection + least-squares refit).

    Args:
        model: a trained functional / Sequential model (one input or
            several; several outputs with ``"reconstruction"``, whose MSE
            is over all of them), left untouched.
        calibration_data: inputs, ``(x, y)`` or a dataset of batches
            (``tfcomp._io.as_arrays``; ``[x1, x2]`` / ``([x1, x2], y)``
            for several inputs); ``method="loss"`` needs labels.
        ratios: keep ratios in (0, 1) (fraction of the group's channels
            kept); keeping the whole group counts 0.
        method: ``"reconstruction"`` (output MSE after the refit) or
            ``"loss"`` (loss increase after the refit); see the module
            docstring.
        selector: channel selection, ``"l1"`` (AMC's official criterion),
            ``"lasso"`` (the paper's) or ``"random"``.
        round_to: kept counts are multiples of this (or the whole group).
        groups: group ids / layer names to measure (default: every
            prunable group whose consumers can be refit).
        ignored_layers: layers whose groups are left out.
        num_samples: calibration images used (the first ones).
        samples_per_image: refit samples per image and consumer.
        batch_size: images per forward pass.
        loss: the loss for ``"loss"`` (default the compiled one, else the
            labels' own: sparse categorical cross-entropy, a binary cross
            entropy for a one-unit classifier, squared error for targets).
        seed: seeds the refit's sample locations.

    Returns:
        A :class:`PruningSensitivity`.

    Raises:
        ValueError: an unknown method or selector, ratios outside (0, 1),
            ``"loss"`` without labels, data that does not fit the model, a
            model without a reconstructible group.
        TypeError: not a ``keras.Model``.

    Reference: He et al., AMC, arXiv:1802.03494.

    Example:
        >>> s = sensitivity(model, (x[:256], y[:256]), method="loss")
        >>> s.value("s1b1_conv1", 0.5)
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}. Received: "
                         f"method={method!r}")
    if selector not in SELECTORS:
        raise ValueError(f"selector must be one of {SELECTORS}. Received: "
                         f"selector={selector!r}")
    ratios = check_keep_ratios(ratios)
    round_to = check_positive_int(round_to, "round_to")
    num_samples = check_positive_int(num_samples, "num_samples")
    batch_size = check_positive_int(batch_size, "batch_size")
    samples_per_image = check_positive_int(samples_per_image,
                                           "samples_per_image")
    check_model(model)
    if len(model.outputs) != 1 and method == "loss":
        raise NotImplementedError(
            f"pruning sensitivity method='loss' supports single-output "
            f"models; model {model.name!r} has {len(model.outputs)} "
            "outputs: use method='reconstruction' (the MSE of all outputs).")
    x, y = as_arrays(calibration_data, model=model, max_items=num_samples,
                     need_labels=method == "loss", name="calibration_data",
                     targets=True)
    start = time.perf_counter()
    graph = DependencyGraph(model)
    todo, skipped = reconstructible_groups(graph, groups, ignored_layers,
                                           what="pruning sensitivity")
    pruner = LayerwisePruner(model, x, todo, graph=graph,
                             samples_per_image=samples_per_image,
                             batch_size=batch_size, seed=seed)
    float_out = _outputs(model, x, batch_size)
    if method == "loss":
        fn = _loss(model, loss, y)

        def damage(out):
            return float(np.mean(keras.ops.convert_to_numpy(
                fn(y, out.astype(np.float32)))))
        base = damage(float_out)
    else:
        def damage(out):
            return float(np.mean((out - float_out) ** 2))
        base = 0.0
    counts = np.zeros((len(todo), len(ratios)), np.int64)
    table = np.zeros((len(todo), len(ratios)))
    layer_error = {}
    for i, g in enumerate(todo):
        step = unit_round_to(g, round_to)
        done: dict = {}
        samples = None  # the original model's: one draw for every ratio
        for j, r in enumerate(ratios):
            k = n_keep(g.size, 1.0 - r, step)
            counts[i, j] = k
            if k >= g.size:
                done[k] = (0.0, 0.0)
            if k not in done:
                pruner.reset()
                if samples is None:
                    samples = pruner.samples(g)
                rep = pruner.step(g, int(k), selector, report=True,
                                  samples=samples)
                errs = [c["error"] for c in rep["consumers"].values()]
                out = _outputs(pruner.work, x, batch_size, compiled=True)
                done[k] = (damage(out) - base, float(np.mean(errs)))
            table[i, j] = done[k][0]
            layer_error.setdefault(g.id, []).append(done[k][1])
    pruner.reset()
    negative = table < 0
    meta = {"selector": selector, "round_to": round_to,
            "num_samples": int(rows(x)), "samples_per_image":
            samples_per_image, "seed": int(seed), "layer_error": layer_error,
            "labels": "given" if y is not None else "none",
            "model_name": model.name,
            "seconds": time.perf_counter() - start}
    if method == "loss":
        meta["base_loss"] = base
        if negative.any():  # pruning may lower the loss: no damage
            meta["negative"] = int(negative.sum())
        table = np.maximum(table, 0.0)
    return PruningSensitivity([g.id for g in todo], [g.size for g in todo],
                              ratios, counts, table, method, skipped, meta)
