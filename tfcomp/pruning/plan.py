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
import math
import os
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np

from tfcomp.graph import DependencyGraph

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
        if d.get("format") != FORMAT:
            raise ValueError(
                f"Not a tfcomp pruning plan: format={d.get('format')!r}")
        if int(d.get("version", 0)) > VERSION:
            raise ValueError(
                f"Plan version {d.get('version')} is newer than this tfcomp "
                f"({VERSION}).")
        return cls(removed={k: list(map(int, v))
                            for k, v in d["removed"].items()},
                   sizes={k: int(v) for k, v in d["sizes"].items()},
                   order=list(d["order"]),
                   model_name=d.get("model_name", ""),
                   fingerprint=d.get("fingerprint", ""),
                   meta=dict(d.get("meta", {})))

    def to_json(self, indent: int | None = None) -> str:
        """Example: ``Plan.from_json(plan.to_json()) == plan``."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> Plan:
        return cls.from_dict(json.loads(text))

    def save(self, path: str) -> None:
        """Writes the JSON atomically."""
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-plan-")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(self.to_json(indent=1))
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path: str) -> Plan:
        with open(path) as f:
            return cls.from_json(f.read())


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


class _MacsModel:
    """Analytic MACs of pruned versions of one graph (exact for profile's
    conventions: conv/dense MACs scale with kept in x out channels)."""

    def __init__(self, graph: DependencyGraph):
        from tfcomp.cost import profile

        self.graph = graph
        prof = profile(graph.model)
        self.dense = prof.macs
        self.items = []  # (macs, layer, handler, [(port, name, macs_flag)])
        for rec in prof.layers:
            if not rec.macs or rec.name not in graph._parsed.layers:
                continue
            path = rec.name
            ports = []
            for p in graph._layer_ports(path):
                if p.node_key is not None and not p.node_key.endswith("#0"):
                    continue
                ports.append(p)
            self.items.append((rec.macs, graph.layer(path),
                               graph._b.handlers.get(path), ports))

    def __call__(self, removed: dict) -> int:
        g = self.graph
        rc = g._removed_comps(removed)
        total = 0
        for macs, layer, handler, ports in self.items:
            fr = {p.name: float(g._port_keep(p, rc).sum()) / p.size
                  for p in ports if p.size}
            scale = handler.macs_scale(fr, layer) if handler else None
            if scale is None:
                scale = 1.0
                for p in ports:
                    if p.macs and p.size:
                        scale *= fr[p.name]
            total += round(macs * scale)
        return int(total)


def estimate_macs(model_or_graph, plan: Plan | None = None) -> int:
    """MACs of the model after ``plan`` without building it.

    Uses ``tfcomp.profile`` of the dense model and scales every layer by its
    kept input/output fractions (exact for convolutions, depthwise,
    separable and dense layers under profile's conventions).

    Example:
        >>> estimate_macs(model, plan) == tfcomp.profile(
        ...     tfcomp.prune_channels(model, plan)).macs
        True
    """
    graph = _graph(model_or_graph)
    removed = plan.resolve(graph) if plan is not None else {}
    return _MacsModel(graph)(removed)


# ---------------------------------------------------------------------------
# make_plan


def _n_keep(size: int, ratio: float, round_to: int) -> int:
    n_remove = math.floor(size * ratio + 1e-9)
    keep = size - n_remove
    if round_to > 1:
        keep = min(size, math.ceil(keep / round_to) * round_to)
    return max(1, keep)


def _check_ratio(r, name="ratio") -> float:
    if isinstance(r, bool) or not isinstance(r, (int, float, np.floating,
                                                 np.integer)):
        raise TypeError(f"{name} must be a float in [0, 1). Received: "
                        f"{name}={r!r}")
    r = float(r)
    if not 0.0 <= r < 1.0 or math.isnan(r):
        raise ValueError(f"{name} must be in [0, 1). Received: {name}={r}")
    return r


def make_plan(model, ratio: float | dict = 0.3,
              importance: str | Callable = "l1", round_to: int = 1,
              target_macs: float | None = None, data=None,
              seed: int = 0) -> Plan:
    """Chooses the channels to remove, group by group, by importance.

    Each prunable group loses ``floor(size * ratio)`` channels (the kept
    count rounded up to a multiple of ``round_to``; at least one channel is
    always kept), those with the lowest importance scores.

    Args:
        model: a functional / Sequential ``keras.Model`` or its
            ``DependencyGraph``.
        ratio: fraction of channels removed in every prunable group, or
            ``{group_id: ratio}`` (other groups untouched). In [0, 1).
        importance: ``"l1"``, ``"l2"``, ``"fpgm"``, ``"bn_scale"``,
            ``"random"``, ``"taylor"`` or a callable ``group -> scores``.
        round_to: kept channel counts are multiples of this (e.g. 8 for
            SIMD-friendly widths), capped at the group size.
        target_macs: a MACs budget; ``ratio`` (a float) is then ignored and
            the smallest uniform ratio whose pruned model meets the budget
            is found by bisection on an analytic MACs count (exact under
            ``tfcomp.profile``'s conventions). Values in (0, 1] are a
            fraction of the dense model's MACs.
        data: ``(x, y)`` for ``importance="taylor"``.
        seed: seed for ``importance="random"``.

    Returns:
        A :class:`Plan`; ``plan.meta`` records the criterion, the ratio and
        the MACs before / after.

    Raises:
        ValueError: ratio outside [0, 1), unknown importance or group id,
            unreachable ``target_macs``.
        TypeError: subclassed models.

    Example:
        >>> plan = make_plan(model, ratio=0.5, importance="fpgm")
        >>> plan = make_plan(model, target_macs=0.5, round_to=8)
    """
    from tfcomp.pruning import importance as imp

    graph = _graph(model)
    if isinstance(round_to, bool) or not isinstance(round_to, (int, np.integer)) \
            or round_to < 1:
        raise ValueError(f"round_to must be an integer >= 1. Received: "
                         f"round_to={round_to!r}")
    round_to = int(round_to)
    if isinstance(ratio, dict):
        if target_macs is not None:
            raise ValueError(
                "Give either target_macs or a per-group ratio dict, not "
                "both. Received: ratio=dict, target_macs="
                f"{target_macs!r}")
        ratios = {}
        for gid, r in ratio.items():
            g = graph.group(gid)
            r = _check_ratio(r, f"ratio[{gid!r}]")
            if r > 0 and not g.prunable:
                raise ValueError(
                    f"Group {gid!r} cannot be pruned ({g.reason}). Received:"
                    f" ratio[{gid!r}]={r}")
            ratios[g.id] = r
        targets = [graph.group(gid) for gid in ratios]
    else:
        uniform = _check_ratio(ratio)
        targets = graph.prunable_groups
    criterion = imp.get(importance, seed=seed, data=data)
    name = importance if isinstance(importance, str) else getattr(
        importance, "__name__", type(importance).__name__)
    orders = {}
    for g in targets:
        s = np.asarray(criterion(g), dtype="float64").ravel()
        if s.shape != (g.size,) or not np.all(np.isfinite(s)):
            raise ValueError(
                f"importance {name!r} returned {s.shape} scores for group "
                f"{g.id!r} of size {g.size}; expected ({g.size},) finite "
                "values.")
        orders[g.id] = np.argsort(s, kind="stable")

    def select(r_of) -> dict:
        out = {}
        for g in targets:
            r = r_of(g)
            n_remove = g.size - _n_keep(g.size, r, round_to)
            if n_remove > 0:
                out[g.index] = g.pick_removal(orders[g.id], n_remove)
        return out

    meta = {"importance": name, "round_to": round_to, "seed": int(seed)}
    macs_model = None
    if target_macs is not None:
        macs_model = _MacsModel(graph)
        budget = float(target_macs)
        if budget <= 0:
            raise ValueError(f"target_macs must be > 0. Received: "
                             f"target_macs={target_macs!r}")
        if budget <= 1.0:
            budget = budget * macs_model.dense
        hi = 1.0 - 1e-9
        if macs_model(select(lambda g: 0.0)) <= budget:
            uniform = 0.0
        else:
            smallest = macs_model(select(lambda g: hi))
            if smallest > budget:
                raise ValueError(
                    f"target_macs={target_macs!r} cannot be reached: keeping "
                    f"{round_to} channel(s) per group still costs "
                    f"{smallest:,} MACs (dense: {macs_model.dense:,}).")
            lo = 0.0
            for _ in range(40):
                mid = 0.5 * (lo + hi)
                if macs_model(select(lambda g, m=mid: m)) <= budget:
                    hi = mid
                else:
                    lo = mid
            uniform = hi
        meta["target_macs"] = int(budget)
    if isinstance(ratio, dict):
        removed = select(lambda g: ratios[g.id])
        meta["ratio"] = dict(ratios)
    else:
        removed = select(lambda g: uniform)
        meta["ratio"] = float(uniform)
    if macs_model is not None:
        meta["macs_before"] = int(macs_model.dense)
        meta["macs_after"] = int(macs_model(removed))
    by_index = {g.index: g.id for g in graph.groups}
    return Plan.from_removed(
        graph, {by_index[i]: u for i, u in removed.items()}, meta)
