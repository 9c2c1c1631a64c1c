"""Groups of coupled channels: :class:`Group` (channels pruned together) and
its :class:`Member` s (one layer axis each).

Example:
    >>> g = tfcomp.DependencyGraph(model).group("conv1")
    >>> g.size, g.producer_layers, g.consumer_layers
    >>> g.weight_matrix().shape            # (g.size, features)
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import keras
import numpy as np

from tfcomp.graph.context import CONSUMER, PASS_THROUGH, PRODUCER

__all__ = ["Group", "Member"]


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
        """True when this group owns every position of the port."""
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
        """True when the group may lose channels (no lock reason)."""
        return not self.reasons

    @property
    def reason(self) -> str | None:
        """Why the group cannot be pruned (None when prunable)."""
        return "; ".join(self.reasons) if self.reasons else None

    @property
    def unit_width(self) -> int:
        """Channels of a producer layer that one unit removes together.

        1 for plain convolutions and dense layers; ``groups`` for a
        grouped convolution's filters (the same in-group position in every
        conv group is one unit, so each group keeps the same count) and for
        the layer feeding it; the group size of a ``GroupNormalization``
        (whole normalisation groups are one unit). The largest over the
        producers.

        Example:
            >>> graph.group("grouped_conv").unit_width   # groups=4
            4
        """
        width = 1
        for m in self.producers:
            if len(m.units):
                width = max(width, int(np.bincount(m.units).max()))
        return width

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
        """Paths of the member layers (each once, in member order)."""
        return list(dict.fromkeys(m.layer for m in self.members))

    @property
    def producer_layers(self) -> list:
        """Paths of the layers whose filters / units these channels are."""
        return list(dict.fromkeys(m.layer for m in self.producers))

    @property
    def consumer_layers(self) -> list:
        """Paths of the layers that read these channels (kernel inputs).

        Example:
            >>> graph.group("conv1").consumer_layers
            ['conv2']
        """
        return list(dict.fromkeys(m.layer for m in self.consumers))

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
        present: dict = {}  # name -> variables (a Bidirectional has two)
        for v in getattr(layer, "weights", []):
            present.setdefault(v.name, []).append(v)
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
            arrays = [np.asarray(arr)] if arr is not None else [
                keras.ops.convert_to_numpy(v) for v in present[name]]
            for arr in arrays:
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

