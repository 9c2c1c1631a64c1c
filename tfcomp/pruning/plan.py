"""Pruning plans: which channels of each group go, as plain JSON.

A :class:`Plan` names groups by their stable id (the first producer layer),
records each group's size and the removed unit indices, and carries an
architecture fingerprint, so it replays on a fresh copy of the same
architecture (even one whose auto-generated layer names differ) and refuses
a different one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import numbers
import os
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from tfcomp._io import atomic_write_text, check_positive_int, read_json
from tfcomp.graph import DependencyGraph
from tfcomp.pruning import importance as imp
from tfcomp.pruning.targets import (
    ChannelMacs,
    check_ratio,
    check_target_macs,
    resolve,
)

__all__ = ["Plan", "estimate_macs", "make_plan"]

FORMAT = "tfcomp.pruning.plan"
VERSION = 1


def _graph(model_or_graph) -> DependencyGraph:
    if isinstance(model_or_graph, DependencyGraph):
        return model_or_graph
    return DependencyGraph(model_or_graph)


def _fingerprint(graph: DependencyGraph) -> str:
    text = json.dumps(graph.signature(), sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


@dataclasses.dataclass
class Plan:
    """Removed channels per group: a JSON-serialisable record.

    Attributes:
        removed: ``{group_id: sorted removed unit indices}``.
        sizes: ``{group_id: group size}`` for every group of the source graph.
        order: group ids of the source graph in topological order (used to
            replay on a copy whose layer names differ).
        model_name: name of the model the plan was made for.
        fingerprint: architecture hash of the source graph.
        meta: free-form record (criterion, ratio, MACs estimate, ...).

    Example:
        >>> plan = tfcomp.pruning.make_plan(model, ratio=0.3)
        >>> text = plan.to_json()
        >>> small = tfcomp.prune_channels(fresh_model,
        ...                               tfcomp.pruning.Plan.from_json(text))
    """

    removed: dict
    sizes: dict
    order: list
    model_name: str = ""
    fingerprint: str = ""
    meta: dict = dataclasses.field(default_factory=dict)

    # -- constructors ----------------------------------------------------
    @classmethod
    def from_removed(cls, model_or_graph, removed: dict,
                     meta: dict | None = None) -> Plan:
        """A plan from ``{group_id: unit indices to remove}``.

        Example:
            >>> Plan.from_removed(graph, {"conv1": [0, 5]})
        """
        graph = _graph(model_or_graph)
        out = {}
        for gid, units in removed.items():
            g = graph.group(gid)
            units = sorted({int(u) for u in np.asarray(units).ravel()})
            _check_units(g, units)
            if units:
                out[gid] = units
        plan = cls(removed=out,
                   sizes={g.id: g.size for g in graph.groups},
                   order=[g.id for g in graph.groups],
                   model_name=graph.model.name,
                   fingerprint=_fingerprint(graph), meta=dict(meta or {}))
        return plan

    @classmethod
    def from_keep(cls, model_or_graph, keep: dict,
                  meta: dict | None = None) -> Plan:
        """A plan from ``{group_id: unit indices to keep}``; other groups
        are kept whole.

        Example:
            >>> Plan.from_keep(graph, {"conv1": np.arange(8)})
        """
        graph = _graph(model_or_graph)
        removed = {}
        for gid, idx in keep.items():
            g = graph.group(gid)
            idx = np.asarray(idx, dtype=int).ravel()
            if idx.size == 0:
                raise ValueError(
                    f"keep[{gid!r}] is empty: a group must keep at least one "
                    "channel.")
            if idx.min() < 0 or idx.max() >= g.size:
                raise ValueError(
                    f"keep[{gid!r}] has indices outside [0, {g.size}). "
                    f"Received: {idx.tolist()}")
            removed[gid] = np.setdiff1d(np.arange(g.size), idx)
        return cls.from_removed(graph, removed, meta)

    # -- queries ---------------------------------------------------------
    def kept(self, group_id: str) -> list:
        """Unit indices the group keeps."""
        size = self.sizes[group_id]
        gone = set(self.removed.get(group_id, []))
        return [u for u in range(size) if u not in gone]

    def num_removed(self, group_id: str | None = None) -> int:
        if group_id is not None:
            return len(self.removed.get(group_id, []))
        return int(sum(len(v) for v in self.removed.values()))

    def __len__(self) -> int:
        return len(self.removed)

    # -- replay ----------------------------------------------------------
    def resolve(self, graph: DependencyGraph) -> dict:
        """``{group_index: removed units}`` for ``graph``; checks the match.

        Raises:
            ValueError: when the plan was made for another architecture or
                names a group that cannot be pruned.
        """
        missing = [gid for gid in self.removed if gid not in graph]
        if not missing:
            mapping = {gid: graph.group(gid) for gid in self.removed}
        elif (self.fingerprint and self.fingerprint == _fingerprint(graph)
              and len(self.order) == len(graph.groups)):
            pos = {gid: i for i, gid in enumerate(self.order)}
            mapping = {gid: graph.groups[pos[gid]] for gid in self.removed}
        else:
            raise ValueError(
                f"Plan was made for another architecture (model "
                f"{self.model_name!r}): groups {missing[:5]} are not in "
                f"model {graph.model.name!r}.")
        out = {}
        for gid, g in mapping.items():
            if self.sizes.get(gid, g.size) != g.size:
                raise ValueError(
                    f"Plan was made for another architecture (model "
                    f"{self.model_name!r}): group {gid!r} has "
                    f"{self.sizes.get(gid)} channels in the plan but "
                    f"{g.size} in model {graph.model.name!r}.")
            units = self.removed[gid]
            if units and not g.prunable:
                raise ValueError(
                    f"Group {g.id!r} cannot be pruned ({g.reason}); the plan "
                    f"removes {len(units)} of its channels.")
            _check_units(g, units)
            out[g.index] = np.asarray(units, dtype=np.int64)
        return out

    # -- serialisation ---------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": FORMAT, "version": VERSION,
            "model_name": self.model_name, "fingerprint": self.fingerprint,
            "order": list(self.order),
            "sizes": {k: int(v) for k, v in self.sizes.items()},
            "removed": {k: [int(u) for u in v]
                        for k, v in self.removed.items()},
            "meta": _jsonable(self.meta),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Plan:
        """A plan from :meth:`to_dict`'s record.

        Raises:
            ValueError: not a plan record (another format, a newer version,
                a missing or wrongly typed field; the message says which).

        Example:
            >>> Plan.from_dict(plan.to_dict()) == plan
            True
        """
        if not isinstance(d, dict):
            raise ValueError("A pruning plan must be a JSON object. "
                             f"Received: {type(d).__name__}")
        if d.get("format") != FORMAT:
            raise ValueError(
                f"Not a tfcomp pruning plan: format={d.get('format')!r}")
        version = d.get("version", 0)
        if isinstance(version, bool) or not isinstance(version,
                                                       numbers.Integral):
            raise ValueError("Plan field 'version' must be an integer. "
                             f"Received: version={version!r}")
        if version > VERSION:
            raise ValueError(
                f"Plan version {version} is newer than this tfcomp "
                f"({VERSION}).")
        removed = _field(d, "removed", dict)
        sizes = _field(d, "sizes", dict)
        order = _field(d, "order", list)
        meta = _field(d, "meta", dict, {})
        for key in ("model_name", "fingerprint"):
            _field(d, key, str, "")
        if not all(isinstance(g, str) for g in order):
            raise ValueError("Plan field 'order' must list group ids "
                             f"(strings). Received: {order[:5]!r}")
        for gid, n in sizes.items():
            if isinstance(n, bool) or not isinstance(
                    n, numbers.Integral) or n < 1:
                raise ValueError(f"Plan field 'sizes' must map group ids to "
                                 f"integers >= 1. Received: sizes[{gid!r}]="
                                 f"{n!r}")
        for gid, units in removed.items():
            if not isinstance(units, (list, tuple)) or not all(
                    isinstance(u, numbers.Integral)
                    and not isinstance(u, bool) and u >= 0 for u in units):
                raise ValueError(
                    "Plan field 'removed' must map group ids to lists of "
                    f"channel indices (integers >= 0). Received: "
                    f"removed[{gid!r}]={units!r}"[:300])
        return cls(removed={k: [int(u) for u in v]
                            for k, v in removed.items()},
                   sizes={k: int(v) for k, v in sizes.items()},
                   order=list(order),
                   model_name=d.get("model_name", ""),
                   fingerprint=d.get("fingerprint", ""), meta=dict(meta))

    def to_json(self, indent: int | None = None) -> str:
        """Example: ``Plan.from_json(plan.to_json()) == plan``."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> Plan:
        """A plan from :meth:`to_json`'s text.

        Raises:
            ValueError: invalid JSON or not a plan record.

        Example:
            >>> Plan.from_json(plan.to_json()) == plan
            True
        """
        if not isinstance(text, (str, bytes, bytearray)):
            raise TypeError("text must be a JSON string. Received: "
                            f"{type(text).__name__}")
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"Not a pruning plan: invalid JSON (line "
                             f"{e.lineno}, column {e.colno}: {e.msg}).") \
                from None
        return cls.from_dict(doc)

    def save(self, path: str) -> None:
        """Writes the JSON atomically (``tfcomp._io.atomic_write_text``).

        Example:
            >>> plan.save("plan.json")
        """
        atomic_write_text(path, self.to_json(indent=1))

    @classmethod
    def load(cls, path: str) -> Plan:
        """Reads a plan written by :meth:`save`.

        Raises:
            FileNotFoundError: ``path`` does not exist.
            ValueError: an empty, truncated, non-UTF-8 or non-JSON file, or
                JSON that is not a plan; the message names the path and
                what is wrong.

        Example:
            >>> plan = Plan.load("plan.json")
        """
        doc = read_json(path, "pruning plan")
        try:
            return cls.from_dict(doc)
        except ValueError as e:
            raise ValueError(f"pruning plan {os.fspath(path)!r}: {e}") \
                from None


def _field(d: dict, key: str, kind: type, default=None):
    """``d[key]``, checked to be a ``kind`` (required unless a default)."""
    if key not in d:
        if default is not None:
            return default
        raise ValueError(f"Plan has no {key!r} field.")
    value = d[key]
    if not isinstance(value, kind):
        raise ValueError(f"Plan field {key!r} must be a {kind.__name__}. "
                         f"Received: {type(value).__name__}")
    return value


def _jsonable(obj: Any):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return repr(obj)


def _check_units(group, units) -> None:
    if len(units) and (min(units) < 0 or max(units) >= group.size):
        raise ValueError(
            f"Group {group.id!r} has {group.size} channels; removed indices "
            f"must be in [0, {group.size}). Received: {list(units)[:10]}")
    if len(set(units)) != len(units):
        raise ValueError(f"Group {group.id!r}: duplicate removed indices.")
    if len(units) >= group.size:
        raise ValueError(
            f"Group {group.id!r}: a plan may not remove all {group.size} "
            "channels of a group.")
    emptied = group.emptied_members(units) if len(units) else []
    if emptied:
        raise ValueError(
            f"Group {group.id!r}: the plan removes every channel that "
            f"{emptied[0].layer!r} ({emptied[0].port}) carries; each layer "
            "must keep at least one. Received: removed="
            f"{list(units)[:10]}")


# ---------------------------------------------------------------------------
# MACs


def estimate_macs(model_or_graph, plan: Plan | None = None) -> int:
    """MACs of the model after ``plan`` without building it.

    Uses ``tfcomp.profile`` of the dense model and scales every layer by its
    kept input/output fractions (exact for convolutions, depthwise,
    separable and dense layers under profile's conventions); the cost model
    is :class:`tfcomp.pruning.targets.ChannelMacs`.

    Example:
        >>> estimate_macs(model, plan) == tfcomp.profile(
        ...     tfcomp.prune_channels(model, plan)).macs
        True
    """
    graph = _graph(model_or_graph)
    removed = plan.resolve(graph) if plan is not None else {}
    return ChannelMacs(graph).removed_macs(removed)


# ---------------------------------------------------------------------------
# make_plan


def _warn_if_nothing_prunable(graph, ratio, target_macs) -> None:
    """Warns (once per call) when a pruning request meets a model with no
    prunable channel group, so an empty plan is never a silent surprise."""
    asks = target_macs is not None or (
        isinstance(ratio, dict) and bool(ratio)) or (
        not isinstance(ratio, dict) and ratio)
    if not asks or graph.prunable_groups:
        return
    shown = ", ".join(f"{k!r} ({v})" for k, v in
                      list(graph.barriers.items())[:5]) or (
        "none: every layer's channels reach the model's outputs")
    warnings.warn(
        "make_plan: the model has no prunable channel group, so the plan "
        "removes nothing. Barrier layers (first 5): " + shown + ". The "
        "model's outputs and inputs never shrink; see README's coverage "
        "matrix for the layers tfcomp can prune.", stacklevel=3)


def make_plan(model, ratio: float | dict = 0.3,
              importance: str | Callable = "l1", round_to: int = 1,
              target_macs: float | None = None, data=None,
              seed: int = 0, ignored_layers=None) -> Plan:
    """Chooses the channels to remove, group by group, by importance.

    Each prunable group loses ``floor(size * ratio)`` channels (the kept
    count rounded up to a multiple of ``round_to``; at least one channel is
    always kept), those with the lowest importance scores. The target is
    resolved by :func:`tfcomp.pruning.targets.resolve`.

    Args:
        model: a functional / Sequential ``keras.Model`` or its
            ``DependencyGraph``.
        ratio: fraction of channels removed in every prunable group, or
            ``{group_id_or_layer: ratio}`` (other groups untouched). In
            [0, 1).
        importance: ``"l1"``, ``"l2"``, ``"fpgm"``, ``"bn_scale"``,
            ``"random"``, ``"taylor"`` or a callable ``group -> scores``.
        round_to: kept channel counts are multiples of this (e.g. 8 for
            SIMD-friendly widths), capped at the group size. A grouped conv
            keeps the same count in every conv group, so its total is a
            multiple of ``lcm(round_to, groups)``
            (:func:`tfcomp.pruning.targets.unit_round_to`).
        target_macs: a MACs budget; ``ratio`` (a float) is then ignored and
            the smallest uniform ratio whose pruned model meets the budget
            is found by bisection on an analytic MACs count (exact under
            ``tfcomp.profile``'s conventions). Values in (0, 1] are a
            fraction of the dense model's MACs.
        data: ``(x, y)`` for ``importance="taylor"``.
        seed: seed for ``importance="random"``.
        ignored_layers: layer names (or group ids) whose channel groups are
            left whole.

    Returns:
        A :class:`Plan`; ``plan.meta`` records the criterion, the ratio and
        the MACs before / after.

    Raises:
        ValueError: ratio outside [0, 1), ``target_macs`` NaN, infinite or
            <= 0, ``round_to`` < 1, unknown importance or group id,
            unreachable ``target_macs`` (checked before the model is read;
            messages name the argument and the value).
        TypeError: a non-numeric ``ratio`` / ``target_macs``; subclassed
            models.

    Example:
        >>> plan = make_plan(model, ratio=0.5, importance="fpgm")
        >>> plan = make_plan(model, target_macs=0.5, round_to=8)
    """
    round_to = check_positive_int(round_to, "round_to")
    seed = check_positive_int(seed, "seed", minimum=0)
    if target_macs is not None:
        check_target_macs(target_macs)
    if isinstance(ratio, dict):
        for key, r in ratio.items():
            check_ratio(r, f"ratio[{key!r}]")
    elif ratio is not None:
        check_ratio(ratio)
    graph = _graph(model)
    _warn_if_nothing_prunable(graph, ratio, target_macs)
    criterion = imp.get(importance, seed=seed, data=data)
    name = importance if isinstance(importance, str) else getattr(
        importance, "__name__", type(importance).__name__)

    def order_of(g) -> np.ndarray:
        s = np.asarray(criterion(g), dtype="float64").ravel()
        if s.shape != (g.size,) or not np.all(np.isfinite(s)):
            raise ValueError(
                f"importance {name!r} returned {s.shape} scores for group "
                f"{g.id!r} of size {g.size}; expected ({g.size},) finite "
                "values.")
        return np.argsort(s, kind="stable")

    found = resolve(graph, ratio, target_macs=target_macs,
                    round_to=round_to, ignored_layers=ignored_layers,
                    orders=order_of)
    removed = {}
    for gid, keep in found.keep.items():
        g = graph.group(gid)
        if keep < g.size:
            removed[g.id] = g.pick_removal(found.orders[g.id],
                                           g.size - keep)
    meta = {"importance": name, "round_to": round_to, "seed": int(seed)}
    if ignored_layers:
        meta["ignored_layers"] = ([ignored_layers]
                                  if isinstance(ignored_layers, str)
                                  else list(ignored_layers))
    if found.target_macs is not None:
        meta["target_macs"] = found.target_macs
    meta["ratio"] = found.ratio
    if found.target_macs is not None:
        meta["macs_before"] = found.dense_macs
        meta["macs_after"] = found.macs
    return Plan.from_removed(graph, removed, meta)
