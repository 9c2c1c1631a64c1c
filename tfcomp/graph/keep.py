"""Kept-channel masks after removing units of some groups:
:class:`ChannelKeep` (the whole graph) and :class:`LayerKeep` (one layer,
handed to a channel handler's ``update_config``).

Example:
    >>> keep = graph.channel_keep({"conv1": [0, 3]})
    >>> keep.layer("conv1").port("out")      # bool mask of conv1's filters
    >>> keep.tensor(graph.parsed.outputs[0]).all()
    True
"""

from __future__ import annotations

import numpy as np

__all__ = ["ChannelKeep", "LayerKeep"]


class ChannelKeep:
    """Which channels of a :class:`DependencyGraph` survive a removal.

    Args:
        graph: the graph.
        removed: ``{group_index_or_id: unit indices to remove}`` (the
            output of ``Plan.resolve(graph)``, or group ids).

    Example:
        >>> keep = tfcomp.DependencyGraph(model).channel_keep({"c1": [1]})
        >>> [(p.name, keep.port(p).sum()) for p in keep.graph.layer_ports(
        ...     "c1")]
        [('in', 3), ('out', 5)]
    """

    def __init__(self, graph, removed: dict):
        self.graph = graph
        gone = np.zeros(graph._unit_of_comp.shape[0], bool)
        for gi, units in removed.items():
            if isinstance(gi, str):
                gi = graph.group(gi).index
            units = np.asarray(units, dtype=np.int64)
            if units.size:
                gone[graph._group_comps[gi][units]] = True
        self._gone = gone

    def _slots(self, start: int, size: int) -> np.ndarray:
        return ~self._gone[self.graph._label[start:start + size]]

    def port(self, port) -> np.ndarray:
        """Bool mask over the positions of a :class:`~tfcomp.graph.Port`."""
        return self._slots(port.start, port.size)

    def tensor(self, tid: str) -> np.ndarray:
        """Bool mask over the channels (last axis) of tensor ``tid``.

        Example:
            >>> keep.tensor("conv1:0:0").sum()     # channels left
        """
        start, size = self.graph._tensor_slots(tid)
        return self._slots(start, size)

    def layer(self, path: str) -> LayerKeep:
        """The :class:`LayerKeep` of the layer at ``path``."""
        return LayerKeep(self, path)


class LayerKeep:
    """Kept-channel masks of one layer, handed to ``update_config``.

    Ports, inputs and outputs are those of the layer's first call.

    Example:
        >>> keep.port("out").sum()      # filters left
        >>> keep.input(0)               # bool mask of input 0's channels
    """

    def __init__(self, keep: ChannelKeep, path: str):
        graph = keep.graph
        self.path = path
        self._ports = {}
        for p in graph.layer_ports(path, first_call_only=True):
            if p.name in self._ports and p.node_key is not None:
                continue
            self._ports[p.name] = (p, keep.port(p))
        nodes = graph.parsed.nodes_of(path)
        node = nodes[0] if nodes else None
        self._inputs = [keep.tensor(t) for t in node.inputs] if node else []
        self._outputs = [keep.tensor(t) for t in node.outputs] if node else []
        self.config_ports = {p.config_key: int(m.sum())
                             for p, m in self._ports.values() if p.config_key}

    def has_port(self, name) -> bool:
        """True when the layer has a port called ``name``."""
        return name in self._ports

    def port(self, name) -> np.ndarray:
        """Bool mask over the positions of port ``name``."""
        return self._ports[name][1]

    def port_role(self, name) -> str:
        """The role of port ``name`` (``producer``, ``consumer``, ...)."""
        return self._ports[name][0].role

    def input(self, i: int = 0) -> np.ndarray:
        """Bool mask over the channels of tensor input ``i``."""
        return self._inputs[i]

    def output(self, j: int = 0) -> np.ndarray:
        """Bool mask over the channels of output ``j``."""
        return self._outputs[j]

    @property
    def changed(self) -> bool:
        """True when any port, input or output loses a channel."""
        masks = [m for _, m in self._ports.values()]
        masks += self._inputs + self._outputs
        return any(not m.all() for m in masks)
