"""Summed removed input channels as flows, for the joint integer program.

A layer after concatenations (DenseNet: every earlier layer of its dense
block) loses the *sum* of the input channels its groups remove, and its
cost depends on that sum only (:class:`tfcomp.tuners.joint_space.
SummedInputs`). :class:`SumChains` writes the sum as a path through
partial sums: after the groups ``g_1 .. g_k``, the "mass" of each partial
sum ``v`` is a linear expression; the step to ``g_{k+1}`` is a flow
``f[v, o]`` (from ``v``, group ``g_{k+1}`` takes option ``o``) with
``sum_v f[v, o] = x[g_{k+1}, o]`` and ``sum_o f[v, o] = mass_k(v)``. With
the options ``x`` one-hot the flow is one path, so the masses are one-hot
and continuous variables suffice; the relaxation is the dynamic
program's, much tighter than one equation ``sum_v v s[v] = sum removed``
over an integer one-hot ``s`` (which left DenseNet121's program unproved
after 60 s). Units whose groups start alike (each layer of a dense block
reads the previous one's inputs plus one group) share the prefix's flows.

Reference: the extended formulation of a dynamic program as a flow
(Martin, Rardin & Campbell, Operations Research 38(1), 1990).

Example:
    >>> chains = SumChains(new_columns, row, x_column)
    >>> mass = chains.masses(cells.summed)   # {sum: [(column, coef)]}
"""

from __future__ import annotations

__all__ = ["SumChains"]


class SumChains:
    """The partial-sum flows of every summed-inputs unit of one program.

    Args:
        new_columns: ``new_columns(n)`` -> the first of ``n`` new
            continuous columns in ``[0, 1]`` (zero cost).
        row: ``row(entries, low, high)`` adds ``low <= sum coef * column
            <= high`` for ``entries`` ``[(column, coef)]``.
        x_column: ``x_column(g, local)`` -> the column of group ``g``'s
            ``local``-th allowed option.

    Example:
        >>> SumChains(new_columns, row, x_column).masses(summed)
    """

    def __init__(self, new_columns, row, x_column):
        self.new_columns, self.row, self.x_column = new_columns, row, x_column
        self._nodes: dict = {}

    def masses(self, summed) -> dict:
        """``{partial sum: [(column, coef)]}`` after all of ``summed``'s
        groups (a :class:`~tfcomp.tuners.joint_space.SummedInputs`): each
        expression is 1 when the groups' options remove that many input
        channels, else 0."""
        key, node = (), None
        for g, removed in zip(summed.groups, summed.removed):
            key = key + ((g, tuple(removed)),)
            hit = self._nodes.get(key)
            if hit is None:
                hit = self._nodes[key] = self._step(node, g, removed)
            node = hit
        if sorted(node) != list(summed.values):
            raise AssertionError("partial sums disagree with the cells")
        return node

    def _step(self, parent, g, removed) -> dict:
        out: dict = {}
        if parent is None:  # the first group: its options are the flow
            for local, r in enumerate(removed):
                out.setdefault(r, []).append((self.x_column(g, local), 1.0))
            return out
        states = sorted(parent)
        first = self.new_columns(len(states) * len(removed))
        flow = {(v, o): first + k * len(removed) + o
                for k, v in enumerate(states) for o in range(len(removed))}
        for o in range(len(removed)):  # the option marginal
            self.row([(flow[v, o], 1.0) for v in states] +
                     [(self.x_column(g, o), -1.0)], 0.0, 0.0)
        for v in states:  # conservation out of each partial sum
            self.row([(flow[v, o], 1.0) for o in range(len(removed))] +
                     [(j, -c) for j, c in parent[v]], 0.0, 0.0)
        for (v, o), j in flow.items():
            out.setdefault(v + removed[o], []).append((j, 1.0))
        return out
