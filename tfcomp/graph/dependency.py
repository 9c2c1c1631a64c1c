"""DependencyGraph: which channels of a Keras model must be pruned together.

Every tensor channel and every weight axis position ("port" position) is a
node of an undirected graph; channel handlers add the edges (a conv's output
channel ``k`` is its filter ``k``; an ``Add`` joins channel ``k`` of all its
operands; a ``Concatenate`` shifts channels by an offset; ...). Connected
components are the coupled *units* that are removed as a whole; the units
reached from one producer (a conv's filters, all branches of a residual sum)
form one :class:`Group`.

Reference: the grouping follows the idea of DepGraph (Fang et al., "DepGraph:
Towards Any Structural Pruning", arXiv:2301.12900), written for Keras'
functional graph.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import keras
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from tfcomp.graph._parse import parse_model
from tfcomp.graph.handlers import (
    CONSUMER,
    PASS_THROUGH,
    PRODUCER,
    SOURCE,
    InputHandler,
    NodeContext,
    get_channel_handler,
)

__all__ = ["DependencyGraph", "Group", "Member"]


@dataclasses.dataclass(eq=False)
class _Port:
    key: str
    path: str
    node_key: str | None  # None for layer-level (shared) ports
    name: str
    role: str
    size: int
    start: int
    weights: tuple
    config_key: str | None
    macs: bool


@dataclasses.dataclass(eq=False, repr=False)
class Member:
    """One layer axis inside a group.

    Attributes:
        layer: layer path (``outer/inner`` inside nested models).
        layer_type: the layer's class name.
        role: ``producer`` (its filters/units are the channels),
            ``consumer`` (reads them: kernel input axis), ``pass-through``
            (per-channel parameters or plain coupling: BN, Add, Concatenate,
            depthwise) or ``source`` (model input / barrier output).
        port: the layer's axis name (``in``, ``out``, ``channels``...).
        axis: kernel axis of the port's first weight (None if weightless).
        weights: ``(variable_name, axis[, mask_fill])`` entries of the port.
        indices: positions on the port that belong to this group.
        units: for each position, the group unit (channel) it carries.
        port_size: number of positions of the whole port (all groups).
        node: the call (``path#i``) for per-call weightless ports.

    Example:
        >>> m = graph.group("conv1").producers[0]
        >>> m.positions([0, 3])      # kernel columns of channels 0 and 3
    """

    layer: str
    layer_type: str
    role: str
    port: str
    axis: int | None
    weights: tuple
    indices: np.ndarray
    units: np.ndarray
    port_size: int
    node: str | None = None

    def positions(self, units) -> np.ndarray:
        """Port positions that carry the given group units (sorted)."""
        sel = np.isin(self.units, np.asarray(units, dtype=int))
        return np.sort(self.indices[sel])

    @property
    def covers_all(self) -> bool:
        return len(self.indices) == self.port_size

    def __repr__(self) -> str:
        return (f"Member({self.layer!r}, {self.role}, port={self.port!r}, "
                f"positions={len(self.indices)}/{self.port_size})")


class Group:
    """Channels that must lose the same units together.

    Attributes:
        id: stable name (the first producer layer; ``layer:port`` when the
            port is not ``out``).
        index: position in ``DependencyGraph.groups`` (topological).
        size: number of units (prunable channels).
        members: list of :class:`Member`.
        prunable: False for groups touching model inputs/outputs, barriers,
            or with a single unit.
        reason: why it is not prunable (None when prunable).

    Example:
        >>> g = tfcomp.DependencyGraph(model).group("stem_conv")
        >>> g.size, [m.layer for m in g.producers]
        >>> g.weight_matrix().shape       # (g.size, features)
    """

    def __init__(self, graph, id, index, size, members, reasons):
        self.graph = graph
        self.id = id
        self.index = index
        self.size = int(size)
        self.members = members
        self.reasons = list(reasons)
        if not any(m.role == PRODUCER for m in members) and not self.reasons:
            self.reasons.append("no producer layer")
        if self.size < 2 and not self.reasons:
            self.reasons.append("a single channel cannot be pruned")

    @property
    def prunable(self) -> bool:
        return not self.reasons

    @property
    def reason(self) -> str | None:
        return "; ".join(self.reasons) if self.reasons else None

    def _role(self, role) -> list:
        return [m for m in self.members if m.role == role]

    @property
    def producers(self) -> list:
        return self._role(PRODUCER)

    @property
    def consumers(self) -> list:
        return self._role(CONSUMER)

    @property
    def pass_through(self) -> list:
        return self._role(PASS_THROUGH)

    @property
    def layers(self) -> list:
        seen = []
        for m in self.members:
            if m.layer not in seen:
                seen.append(m.layer)
        return seen

    def emptied_members(self, units) -> list:
        """Members that would lose every one of their positions.

        A member touching only part of the group (one operand of a
        ``Concatenate`` feeding a residual ``Add``) can be emptied even when
        the group keeps channels; such a plan cannot be built.
        """
        gone = np.zeros(self.size, dtype=bool)
        gone[np.asarray(units, dtype=int)] = True
        return [m for m in self.members
                if len(m.units) and gone[m.units].all()]

    def pick_removal(self, order, n_remove: int) -> np.ndarray:
        """The first ``n_remove`` units of ``order`` that empty no member.

        Args:
            order: unit indices, least important first.
            n_remove: how many to take (fewer when every member must keep
                one unit and the order runs out).

        Returns:
            Sorted int array of units to remove.

        Example:
            >>> g.pick_removal(np.argsort(scores), 4)
        """
        n_remove = min(int(n_remove), self.size - 1)
        if n_remove <= 0:
            return np.zeros(0, dtype=int)
        left = [len(np.unique(m.units)) for m in self.members]
        of_unit = defaultdict(list)
        for i, m in enumerate(self.members):
            for u in np.unique(m.units):
                of_unit[int(u)].append(i)
        out = []
        for u in np.asarray(order, dtype=int).ravel():
            if len(out) == n_remove:
                break
            owners = of_unit.get(int(u), [])
            if any(left[i] <= 1 for i in owners):
                continue
            for i in owners:
                left[i] -= 1
            out.append(int(u))
        return np.sort(np.asarray(out, dtype=int))

    def member_matrix(self, member: Member, variables=None,
                      include_bias: bool = False, weights=None):
        """Per-unit weights of one member.

        Args:
            member: a member of this group.
            variables: variable names to use (default: all of the port's).
            include_bias: keep 1-D ``bias`` vectors.
            weights: optional ``{(layer_path, variable_name): array}`` used
                instead of the model's values (e.g. gradients).

        Returns:
            ``(matrix, covered)``: ``matrix`` is ``(size, k * F)`` with the
            ``k`` positions of each unit side by side, ``covered`` a bool
            vector of the units this member touches; None if the member has
            none of the variables.
        """
        layer = self.graph.layer(member.layer)
        present = {v.name: v for v in getattr(layer, "weights", [])}
        blocks = []
        for spec in member.weights:
            name, axis = spec[0], int(spec[1])
            if name not in present:
                continue
            if variables is not None and name not in variables:
                continue
            if name == "bias" and not include_bias:
                continue
            arr = None if weights is None else weights.get(
                (member.layer, name))
            if arr is None:
                arr = keras.ops.convert_to_numpy(present[name])
            arr = np.asarray(arr)
            a = np.moveaxis(arr, axis, 0)
            blocks.append(a.reshape(a.shape[0], -1))
        if not blocks:
            return None
        per_pos = np.concatenate(blocks, axis=1)
        counts = np.bincount(member.units, minlength=self.size)
        k = int(counts.max()) if counts.size else 0
        order = np.lexsort((member.indices, member.units))
        units = member.units[order]
        pos = member.indices[order]
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        rank = np.arange(len(units)) - starts[units]
        out = np.zeros((self.size, max(k, 1), per_pos.shape[1]),
                       dtype=per_pos.dtype)
        out[units, rank] = per_pos[pos]
        return out.reshape(self.size, -1), counts > 0

    def weight_matrix(self, roles=(PRODUCER,), variables=None,
                      include_bias: bool = False, weights=None
                      ) -> np.ndarray:
        """Per-unit weights of all members with ``roles``, side by side.

        Args:
            roles: member roles to include (``producer``, ``consumer``,
                ``pass-through``).
            variables, include_bias, weights: as in :meth:`member_matrix`.

        Returns:
            ``(size, F)`` float array (zeros where a member does not touch a
            unit).

        Example:
            >>> W = group.weight_matrix()              # filters as rows
            >>> W_in = group.weight_matrix(("consumer",))
        """
        mats = []
        for m in self.members:
            if m.role not in roles:
                continue
            r = self.member_matrix(m, variables, include_bias, weights)
            if r is not None:
                mats.append(r[0])
        if not mats:
            return np.zeros((self.size, 0), dtype="float32")
        return np.concatenate(mats, axis=1)

    def __repr__(self) -> str:
        status = "prunable" if self.prunable else f"locked: {self.reason}"
        return (f"Group({self.id!r}, size={self.size}, "
                f"members={len(self.members)}, {status})")


class _Builder:
    """Collects slots (channels / port positions) and coupling edges."""

    def __init__(self, parsed):
        self.parsed = parsed
        self.n = 0
        self.tensors: dict = {}
        self.ports: dict = {}
        self.ea: list = []
        self.eb: list = []
        self.locks: list = []
        self.barriers: dict = {}
        self.unknown: set = set()

    def alloc(self, size: int) -> int:
        start = self.n
        self.n += int(size)
        return start

    def ensure_tensor(self, tid: str) -> None:
        if tid in self.tensors:
            return
        shape = self.parsed.shapes.get(tid)
        if shape is None or len(shape) < 2:
            size = 0
        elif shape[-1] is None:
            size = 0
            self.unknown.add(tid)
        else:
            size = int(shape[-1])
        self.tensors[tid] = (self.alloc(size), size)

    def tensor_size(self, tid: str) -> int:
        return self.tensors[tid][1]

    def add_port(self, node, name, size, role, weights, config_key, macs,
                 shared) -> str:
        if shared is None:
            shared = bool(weights)
        key = f"{node.path}:{name}" if shared else f"{node.key}:{name}"
        if key in self.ports:
            p = self.ports[key]
            if p.size != size or p.role != role:
                raise ValueError(
                    f"{node.path}: port {name!r} re-declared with size {size}"
                    f" (was {p.size}) by another call of a shared layer")
            return key
        self.ports[key] = _Port(key, node.path, None if shared else node.key,
                                name, role, int(size), self.alloc(size),
                                weights, config_key, macs)
        return key

    def _edges(self, a, b) -> None:
        self.ea.append(np.asarray(a, dtype=np.int64))
        self.eb.append(np.asarray(b, dtype=np.int64))

    def link_tensor(self, tid, port_key, mapping) -> None:
        start, size = self.tensors[tid]
        p = self.ports[port_key]
        mapping = np.arange(size) if mapping is None else np.asarray(
            mapping, dtype=np.int64)
        if mapping.shape != (size,):
            raise ValueError(
                f"mapping for port {port_key} has {mapping.size} entries, "
                f"tensor has {size} channels")
        if size and (mapping.min() < 0 or mapping.max() >= p.size):
            raise ValueError(f"mapping out of range for port {port_key}")
        self._edges(start + np.arange(size), p.start + mapping)

    def tie(self, a_key, b_key, mapping) -> None:
        a, b = self.ports[a_key], self.ports[b_key]
        mapping = np.asarray(mapping, dtype=np.int64)
        if mapping.shape != (a.size,) or (a.size and (
                mapping.min() < 0 or mapping.max() >= b.size)):
            raise ValueError(f"bad tie mapping {a_key} -> {b_key}")
        self._edges(a.start + np.arange(a.size), b.start + mapping)

    def lock_tensor(self, tid, reason) -> None:
        start, size = self.tensors[tid]
        if size:
            self.locks.append((np.arange(start, start + size), reason))

    # -------------------------------------------------------------------
    def run(self):
        parsed = self.parsed
        self.layer_nodes: dict = defaultdict(list)
        self.handlers: dict = {}
        for node in parsed.nodes:
            for t in node.inputs + node.outputs:
                self.ensure_tensor(t)
            self.layer_nodes[node.path].append(node)
            ctx = NodeContext(self,
                              node,
                              [parsed.shapes.get(t) for t in node.inputs],
                              [parsed.shapes.get(t) for t in node.outputs])
            if not node.inputs and (
                    node.op is None
                    or isinstance(node.op, keras.layers.InputLayer)):
                InputHandler().connect(ctx)
                continue
            if node.barrier_reason:
                ctx.barrier(node.barrier_reason)
                continue
            if any(t in self.unknown for t in node.inputs + node.outputs):
                ctx.barrier("unknown channel count")
                continue
            handler = get_channel_handler(node.op)
            if handler is None:
                ctx.barrier(f"no channel handler for "
                            f"{type(node.op).__name__}")
                continue
            self.handlers[node.path] = handler
            n_edges, n_locks = len(self.ea), len(self.locks)
            ports_before = set(self.ports)
            try:
                handler.connect(ctx)
            except Exception as e:  # noqa: BLE001 - roll back, then barrier
                del self.ea[n_edges:], self.eb[n_edges:]
                del self.locks[n_locks:]
                for k in set(self.ports) - ports_before:
                    del self.ports[k]
                self.handlers.pop(node.path, None)
                ctx.linked_outputs.clear()
                ctx.barrier(f"channel handler failed ({type(e).__name__}: "
                            f"{e})")
                continue
            for j in range(len(node.outputs)):
                if j not in ctx.linked_outputs:
                    ctx.source(j, f"output {j} of {node.path} is not mapped "
                                  "by its channel handler")
        for t in parsed.outputs:
            self.lock_tensor(t, "model output")
        return self


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
        n = b.n
        a = np.concatenate(b.ea) if b.ea else np.zeros(0, np.int64)
        c = np.concatenate(b.eb) if b.eb else np.zeros(0, np.int64)
        adj = coo_matrix((np.ones(a.size, np.int8), (a, c)), shape=(n, n))
        n_comp, label = connected_components(adj, directed=False)
        live = np.zeros(n, bool)
        for start, size in b.tensors.values():
            live[start:start + size] = True
        ports = list(b.ports.values())
        self._ports_by_path = defaultdict(list)
        for p in ports:
            live[p.start:p.start + p.size] = True
            self._ports_by_path[p.path].append(p)
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
        live_comp = minslot < n
        comps = np.flatnonzero(live_comp)
        order = np.lexsort((minslot[comps], glabel[comps]))
        comps = comps[order]
        gl = glabel[comps]
        bounds = np.flatnonzero(np.diff(gl)) + 1
        comp_lists = np.split(comps, bounds) if comps.size else []
        # group order: by the earliest slot (topological)
        comp_lists.sort(key=lambda cl: minslot[cl[0]])
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
        # members
        members = [[] for _ in comp_lists]
        anchors: list = [None] * len(comp_lists)
        for p in ports:
            if not p.size:
                continue
            cl = label[p.start:p.start + p.size]
            groups = group_of_comp[cl]
            units = unit_of_comp[cl]
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
        self.groups: list = []
        used: set = set()
        for gi, cl in enumerate(comp_lists):
            p = anchors[gi]
            if p is None:
                gid = f"group{gi}"
            else:
                gid = p.path if p.name == "out" else f"{p.path}:{p.name}"
                if p.node_key is not None and not p.node_key.endswith("#0"):
                    gid += "#" + p.node_key.rsplit("#", 1)[1]
            base, k = gid, 1
            while gid in used:
                k += 1
                gid = f"{base}~{k}"
            used.add(gid)
            self.groups.append(Group(self, gid, gi, len(cl), members[gi],
                                     reasons[gi]))
        self._by_id = {g.id: g for g in self.groups}

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
        try:
            return self._by_id[group_id]
        except KeyError:
            known = [g.id for g in self.groups][:12]
            raise ValueError(
                f"No group {group_id!r} in the graph of model "
                f"{self.model.name!r}. Known groups include {known}."
            ) from None

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

    # -- keep masks (used by tfcomp.pruning) -----------------------------
    def _removed_comps(self, removed: dict) -> np.ndarray:
        """Bool per component from ``{group_index: unit indices}``."""
        out = np.zeros(self._unit_of_comp.shape[0], bool)
        for gi, units in removed.items():
            units = np.asarray(units, dtype=np.int64)
            if units.size:
                out[self._group_comps[gi][units]] = True
        return out

    def _port_keep(self, port: _Port, rc: np.ndarray) -> np.ndarray:
        return ~rc[self._label[port.start:port.start + port.size]]

    def _tensor_keep(self, tid: str, rc: np.ndarray) -> np.ndarray:
        start, size = self._b.tensors[tid]
        return ~rc[self._label[start:start + size]]

    def _layer_ports(self, path: str) -> list:
        return list(self._ports_by_path.get(path, []))


def _short(s: str, n: int = 40) -> str:
    return s if len(s) <= n else s[:n - 3] + "..."
