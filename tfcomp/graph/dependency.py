"""DependencyGraph: which channels of a Keras model must be pruned together.

Every tensor channel and every weight axis position ("port" position) is a
node of an undirected graph; channel handlers add the edges (a conv's output
channel ``k`` is its filter ``k``; an ``Add`` joins channel ``k`` of all its
operands; a ``Concatenate`` shifts channels by an offset; ...). Connected
components are the coupled *units* that are removed as a whole; the units
reached from one producer (a conv's filters, all branches of a residual sum)
form one :class:`Group`. The slots and edges are collected by
:mod:`tfcomp.graph.builder`; groups and members live in
:mod:`tfcomp.graph.group`, kept-channel masks in :mod:`tfcomp.graph.keep`.

Reference: the grouping follows the idea of DepGraph (Fang et al., "DepGraph:
Towards Any Structural Pruning", arXiv:2301.12900), written for Keras'
functional graph.
"""

from __future__ import annotations

from collections import defaultdict

import keras
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from tfcomp.graph._parse import parse_model
from tfcomp.graph.builder import Port, _Builder
from tfcomp.graph.context import PRODUCER, SOURCE, ChannelHandler
from tfcomp.graph.group import Group, Member
from tfcomp.graph.keep import ChannelKeep
from tfcomp.graph.parsed import ParsedModel

__all__ = ["DependencyGraph", "Group", "Member"]


class DependencyGraph:
    """Coupled channel groups of a functional or Sequential Keras model.

    Built from the model's own serialised graph (``get_config()`` inbound
    nodes), no tracing. Functional / Sequential models nested inside (called
    once) are flattened: their layers appear as ``outer/inner``.

    Args:
        model: a built functional or Sequential ``keras.Model``.

    Raises:
        TypeError: for subclassed models (no readable graph) and non-models.

    Attributes:
        model: the model.
        groups: every :class:`Group`, in topological order.
        barriers: ``{layer_path: reason}`` for layers whose channels are
            left alone.

    Example:
        >>> graph = tfcomp.DependencyGraph(tfcomp.zoo.resnet(depth=8))
        >>> [g.id for g in graph.prunable_groups][:3]
        >>> graph.summary()
    """

    def __init__(self, model: keras.Model):
        self.model = model
        self._parsed = parse_model(model)
        b = _Builder(self._parsed).run()
        self._b = b
        self.barriers = dict(b.barriers)
        self._finalize()

    # -------------------------------------------------------------------
    def _finalize(self) -> None:
        b = self._b
        ports = list(b.ports.values())
        self._ports_by_path = defaultdict(list)
        for p in ports:
            self._ports_by_path[p.path].append(p)
        label, minslot, comp_lists = _components(b, ports)
        n_comp = minslot.shape[0]
        unit_of_comp = np.full(n_comp, -1, dtype=np.int64)
        group_of_comp = np.full(n_comp, -1, dtype=np.int64)
        for gi, cl in enumerate(comp_lists):
            unit_of_comp[cl] = np.arange(len(cl))
            group_of_comp[cl] = gi
        self._label = label
        self._unit_of_comp = unit_of_comp
        self._group_of_comp = group_of_comp
        self._group_comps = comp_lists
        # reasons
        reasons = [[] for _ in comp_lists]
        for slots, reason in b.locks:
            for gi in np.unique(group_of_comp[label[slots]]):
                if gi >= 0 and reason not in reasons[gi]:
                    reasons[gi].append(reason)
        members, anchors = self._members(ports, len(comp_lists))
        self.groups: list = []
        used: set = set()
        for gi, cl in enumerate(comp_lists):
            gid = _unique(_group_id(anchors[gi], gi), used)
            self.groups.append(Group(self, gid, gi, len(cl), members[gi],
                                     reasons[gi]))
        self._by_id = {g.id: g for g in self.groups}

    def _members(self, ports, n_groups: int):
        """Members of each group and its anchor (first producer) port."""
        label = self._label
        members = [[] for _ in range(n_groups)]
        anchors: list = [None] * n_groups
        for p in ports:
            if not p.size:
                continue
            cl = label[p.start:p.start + p.size]
            groups = self._group_of_comp[cl]
            units = self._unit_of_comp[cl]
            layer = self._parsed.layers.get(p.path)
            ltype = type(layer).__name__ if layer is not None else "Input"
            axis = int(p.weights[0][1]) if p.weights else None
            for gi in np.unique(groups):
                pos = np.flatnonzero(groups == gi)
                members[gi].append(Member(
                    layer=p.path, layer_type=ltype, role=p.role, port=p.name,
                    axis=axis, weights=p.weights, indices=pos,
                    units=units[pos], port_size=p.size, node=p.node_key))
                if anchors[gi] is None and p.role in (PRODUCER, SOURCE):
                    anchors[gi] = p
        return members, anchors

    # -------------------------------------------------------------------
    @property
    def prunable_groups(self) -> list:
        """Groups that may lose channels."""
        return [g for g in self.groups if g.prunable]

    @property
    def layers(self) -> dict:
        """``{layer_path: layer}`` of every leaf layer / op in the graph."""
        return dict(self._parsed.layers)

    def layer(self, path: str):
        """The layer object at ``path`` (``outer/inner`` for nested)."""
        try:
            return self._parsed.layers[path]
        except KeyError:
            raise ValueError(
                f"No layer {path!r} in the graph of {self.model.name!r}."
            ) from None

    def group(self, group_id: str) -> Group:
        """The group with this id.

        Example:
            >>> graph.group("s1b1_conv1").size
        """
        group = self._by_id.get(group_id)
        if group is None:
            raise ValueError(
                f"No group {group_id!r} in the graph of model "
                f"{self.model.name!r}. Known groups include "
                f"{[g.id for g in self.groups][:12]}.")
        return group

    def __getitem__(self, group_id: str) -> Group:
        return self.group(group_id)

    def __contains__(self, group_id) -> bool:
        return group_id in self._by_id

    def __iter__(self):
        return iter(self.groups)

    def __len__(self) -> int:
        return len(self.groups)

    def groups_of(self, layer: str) -> list:
        """Groups in which ``layer`` takes part (any role)."""
        return [g for g in self.groups if layer in g.layers]

    def producer_group(self, layer: str) -> Group | None:
        """The group holding ``layer``'s output channels (filters/units)."""
        for g in self.groups:
            for m in g.members:
                if m.layer == layer and m.role in (PRODUCER, SOURCE):
                    return g
        for g in self.groups:  # depthwise-like layers: output pass-through
            for m in g.members:
                if m.layer == layer and m.port == "out":
                    return g
        return None

    def signature(self) -> list:
        """Architecture fingerprint: (size, sorted member descriptions)."""
        return [
            (g.size, sorted(f"{m.layer_type}:{m.port}:{m.role}"
                            for m in g.members))
            for g in self.groups
        ]

    def summary(self, print_fn=print, prunable_only: bool = False) -> str:
        """Prints (and returns) one line per group.

        Example:
            >>> graph.summary(prunable_only=True)
        """
        rows = [("Group", "Size", "Prunable", "Producers", "Consumers",
                 "Reason")]
        for g in self.groups:
            if prunable_only and not g.prunable:
                continue
            prods = ",".join(dict.fromkeys(m.layer for m in g.producers))
            cons = ",".join(dict.fromkeys(m.layer for m in g.consumers))
            rows.append((g.id, str(g.size), "yes" if g.prunable else "no",
                         _short(prods), _short(cons),
                         _short(g.reason or "", 60)))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths))
                 for r in rows]
        n_p = len(self.prunable_groups)
        lines.append(f"{len(self.groups)} groups, {n_p} prunable, "
                     f"{len(self.barriers)} barrier layers")
        text = "\n".join(lines)
        if print_fn is not None:
            print_fn(text)
        return text

    def to_dict(self) -> dict:
        """JSON-friendly description of the groups."""
        return {
            "model": self.model.name,
            "groups": [{
                "id": g.id, "size": g.size, "prunable": g.prunable,
                "reason": g.reason,
                "members": [{"layer": m.layer, "role": m.role,
                             "port": m.port, "positions": len(m.indices)}
                            for m in g.members],
            } for g in self.groups],
            "barriers": dict(self.barriers),
        }

    # -- public API for pruning (plans, surgery, MACs) -------------------
    @property
    def parsed(self) -> ParsedModel:
        """The :class:`~tfcomp.graph.ParsedModel` the graph was built from.

        Example:
            >>> graph.parsed.nodes_of("conv1")[0].inputs
        """
        return self._parsed

    def handler(self, path: str) -> ChannelHandler | None:
        """The channel handler that described layer ``path`` (None for
        barriers and inputs).

        Example:
            >>> type(graph.handler("conv1")).__name__
            'ConvHandler'
        """
        return self._b.handlers.get(path)

    def layer_ports(self, path: str, first_call_only: bool = False) -> list:
        """The :class:`~tfcomp.graph.Port` s of layer ``path``.

        Args:
            path: layer path.
            first_call_only: drop the per-call ports of the second and later
                calls of a shared layer.

        Example:
            >>> [(p.name, p.role) for p in graph.layer_ports("conv1")]
            [('in', 'consumer'), ('out', 'producer')]
        """
        ports = self._ports_by_path.get(path, [])
        return [p for p in ports if p.first_call or not first_call_only]

    def has_tensor(self, tid: str) -> bool:
        """True when tensor ``tid`` (a :class:`ParsedModel` id) is in the
        graph.

        Example:
            >>> graph.has_tensor(graph.parsed.outputs[0])
            True
        """
        return tid in self._b.tensors

    def tensor_channels(self, tid: str) -> int:
        """Channels (last axis) of tensor ``tid``; 0 when it has none.

        Example:
            >>> graph.tensor_channels(graph.parsed.inputs[0])
            3
        """
        return self._tensor_slots(tid)[1]

    def channel_keep(self, removed: dict) -> ChannelKeep:
        """Kept-channel masks after removing ``{group: units}``.

        Args:
            removed: ``{group_index_or_id: unit indices}``, e.g. the output
                of ``plan.resolve(graph)``.

        Example:
            >>> keep = graph.channel_keep(plan.resolve(graph))
            >>> keep.layer("conv1").port("out").sum()     # filters left
        """
        return ChannelKeep(self, removed)

    def _tensor_slots(self, tid: str) -> tuple:
        try:
            return self._b.tensors[tid]
        except KeyError:
            raise ValueError(
                f"No tensor {tid!r} in the graph of {self.model.name!r}."
            ) from None

    # Deprecated private forms (kept while callers move to the API above).
    def _removed_comps(self, removed: dict) -> np.ndarray:
        return ChannelKeep(self, removed)._gone

    def _port_keep(self, port: Port, rc: np.ndarray) -> np.ndarray:
        return ~rc[self._label[port.start:port.start + port.size]]

    def _tensor_keep(self, tid: str, rc: np.ndarray) -> np.ndarray:
        start, size = self._b.tensors[tid]
        return ~rc[self._label[start:start + size]]

    def _layer_ports(self, path: str) -> list:
        return self.layer_ports(path)


def _components(b, ports) -> tuple:
    """Connected slots (units) and which units form one group.

    Returns:
        ``(label, minslot, comp_lists)``: the component of every slot, the
        first slot of every component, and the components of each group
        (in topological order, units ordered by first slot).
    """
    n = b.n
    a = np.concatenate(b.ea) if b.ea else np.zeros(0, np.int64)
    c = np.concatenate(b.eb) if b.eb else np.zeros(0, np.int64)
    adj = coo_matrix((np.ones(a.size, np.int8), (a, c)), shape=(n, n))
    n_comp, label = connected_components(adj, directed=False)
    live = np.zeros(n, bool)
    for start, size in b.tensors.values():
        live[start:start + size] = True
    for p in ports:
        live[p.start:p.start + p.size] = True
    live_idx = np.flatnonzero(live)
    # Units reached from one producer / source form a group.
    ga, gb = [], []
    for p in ports:
        if p.role in (PRODUCER, SOURCE) and p.size:
            comps = label[p.start:p.start + p.size]
            ga.append(np.full(p.size, comps[0]))
            gb.append(comps)
    if ga:
        ga, gb = np.concatenate(ga), np.concatenate(gb)
    else:
        ga = gb = np.zeros(0, np.int64)
    cadj = coo_matrix((np.ones(ga.size, np.int8), (ga, gb)),
                      shape=(n_comp, n_comp))
    _, glabel = connected_components(cadj, directed=False)
    minslot = np.full(n_comp, n, dtype=np.int64)
    np.minimum.at(minslot, label[live_idx], live_idx)
    comps = np.flatnonzero(minslot < n)
    comps = comps[np.lexsort((minslot[comps], glabel[comps]))]
    bounds = np.flatnonzero(np.diff(glabel[comps])) + 1
    comp_lists = np.split(comps, bounds) if comps.size else []
    # group order: by the earliest slot (topological)
    comp_lists.sort(key=lambda cl: minslot[cl[0]])
    return label, minslot, comp_lists


def _group_id(anchor, gi: int) -> str:
    """``layer`` (or ``layer:port``, ``#call``) of the anchor port."""
    if anchor is None:
        return f"group{gi}"
    gid = anchor.path if anchor.name == "out" else f"{anchor.path}:{anchor.name}"
    if anchor.node_key is not None and not anchor.node_key.endswith("#0"):
        gid += "#" + anchor.node_key.rsplit("#", 1)[1]
    return gid


def _unique(gid: str, used: set) -> str:
    base, k = gid, 1
    while gid in used:
        k += 1
        gid = f"{base}~{k}"
    used.add(gid)
    return gid


def _short(s: str, n: int = 40) -> str:
    return s if len(s) <= n else s[:n - 3] + "..."
