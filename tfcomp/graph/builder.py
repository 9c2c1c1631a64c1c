"""Builds the channel graph of a parsed model: every tensor channel and every
port position is a slot; channel handlers add the coupling edges, locks and
barriers (see :mod:`tfcomp.graph.handlers`).

Example:
    >>> from tfcomp.graph._parse import parse_model
    >>> b = _Builder(parse_model(model)).run()
    >>> b.n, len(b.ports), b.barriers
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import numpy as np

from tfcomp.graph._parse import _walk_refs
from tfcomp.graph.context import NodeContext
from tfcomp.graph.handlers import InputHandler, get_channel_handler

__all__ = ["Port"]


@dataclasses.dataclass(eq=False)
class Port:
    """One channel axis of a layer (or of one call of it), as declared by
    its channel handler (:meth:`NodeContext.port`).

    Attributes:
        key: ``"path:name"`` (layer port) or ``"path#i:name"`` (per call).
        path: the layer path.
        node_key: the call (``"path#i"``) of a per-call port; None for ports
            of the layer (those with weights, shared by every call).
        name: the port name (``in``, ``out``, ``channels``, ...).
        role: one of :data:`tfcomp.graph.ROLES`.
        size: number of positions.
        start: first slot of the port in the graph (internal numbering).
        weights: ``(variable_name, axis[, mask_fill])`` entries.
        config_key: config entry set to the kept count after pruning.
        macs: whether the layer's MACs scale with this axis.

    Example:
        >>> [(p.name, p.role, p.size) for p in graph.layer_ports("conv1")]
        [('in', 'consumer', 3), ('out', 'producer', 16)]
    """

    key: str
    path: str
    node_key: str | None
    name: str
    role: str
    size: int
    start: int
    weights: tuple
    config_key: str | None
    macs: bool

    @property
    def first_call(self) -> bool:
        """True for a layer port or a port of the layer's first call."""
        return self.node_key is None or self.node_key.endswith("#0")


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
        self.ports[key] = Port(key, node.path, None if shared else node.key,
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

    def _unknown_channels(self, ctx, handler) -> bool:
        """Whether a channel tensor of the call has an unknown size (the
        handler's :meth:`~ChannelHandler.non_channel_tensors` excepted)."""
        skip_in, skip_out = (handler.non_channel_tensors(ctx)
                             if handler is not None else ((), ()))
        tensors = [t for i, t in enumerate(ctx._inputs) if i not in skip_in]
        tensors += [t for j, t in enumerate(ctx._node.outputs)
                    if j not in skip_out]
        return any(t in self.unknown for t in tensors)

    # -------------------------------------------------------------------
    def run(self):
        parsed = self.parsed
        self.layer_nodes: dict = defaultdict(list)
        self.handlers: dict = {}
        for node in parsed.nodes:
            for t in node.inputs + node.outputs:
                self.ensure_tensor(t)
            self.layer_nodes[node.path].append(node)
            masks = _mask_inputs(node)
            ctx = NodeContext(self,
                              node,
                              [parsed.shapes.get(t) for t in node.inputs],
                              [parsed.shapes.get(t) for t in node.outputs],
                              masks)
            for t in ctx.mask_inputs:
                # a mask's last axis is positions, never channels
                self.lock_tensor(t, f"mask read by {node.path}")
            if node.is_input:
                InputHandler().connect(ctx)
                continue
            if node.barrier_reason:
                ctx.barrier(node.barrier_reason)
                continue
            handler = get_channel_handler(node.op)
            if self._unknown_channels(ctx, handler):
                ctx.barrier("unknown channel count")
                continue
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


def _mask_inputs(node) -> list:
    """Indices in ``node.inputs`` of the tensors passed as ``mask=`` (found
    in the call's serialised ``kwargs``, walked as the parser walks)."""
    call = node.call_config
    if not isinstance(call, dict):
        return []
    flags: list = []
    for key, value in call.items():
        parts = value.items() if key == "kwargs" and isinstance(
            value, dict) else [(None, value)]
        for name, part in parts:
            refs: list = []
            _walk_refs(part, refs)
            flags += [name == "mask"] * len(refs)
    if len(flags) != len(node.inputs):  # not the parser's walk: no masks
        return []
    return [i for i, f in enumerate(flags) if f]
