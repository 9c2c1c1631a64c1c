"""The joint pruning + quantization space: the cost of a model when every
searched channel group keeps a given number of channels and every
quantizable layer runs at a given ``(w_bits, a_bits)``.

One pricing, three engines: the layers, their 8/8 reference cost and the
constant part come from :class:`tfcomp.hardware.CostTable` (the pricing of
``allocate_bits`` and HAQ); which groups set a layer's input / output
channels comes from :class:`tfcomp.tuners.amc_space.LayerCosts` (AMC's
channel bookkeeping, pinned to ``ChannelMacs``); a layer's cost at its
pruned geometry is :func:`tfcomp.hardware.layer_resource` of
``spec.with_channels(...)``. So a joint point costs what
``CostTable(prune_channels(model, plan)).total(bits)`` costs (a test pins
it), without building the pruned model.

Most costed layers depend on a few searched groups (their producer's and
their own); :meth:`JointSpace.cells` enumerates a layer's cost over the
product of those groups' options and its bit pairs, which is what the exact
integer programs of :mod:`tfcomp.joint` are built from. A layer after
concatenations (DenseNet: every earlier layer of the block) reads many
groups, but only the *sum* of the input channels they remove changes its
cost: above ``aggregate_above`` product cells its cells run over the
achievable sums instead (:class:`SummedInputs`; sums a hardware tile
prices alike share cells), which the program ties to the groups' options
through a flow over partial sums (:mod:`tfcomp.joint.sum_chain`).

Reference: He et al., AMC, arXiv:1802.03494; Wang et al., HAQ,
arXiv:1811.08886 (budget as a fraction of the 8/8 cost).

Example:
    >>> space = JointSpace(model, "latency", BISMO(), ["s1b1_conv1"])
    >>> space.ratio({"s1b1_conv1": 8}, {"stem_conv": (8, 8)})
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np

from tfcomp.graph import DependencyGraph
from tfcomp.hardware import CostTable, extract_specs, layer_resource
from tfcomp.hardware.spec import GEMM_OPS
from tfcomp.tuners.amc_space import LayerCosts

__all__ = ["JointSpace", "SummedInputs", "UnitCells"]


class SummedInputs(NamedTuple):
    """Groups whose removed input channels only add up in one layer.

    Attributes:
        groups: group indices (``JointSpace.groups`` order).
        removed: per group, the input channels it removes at each of its
            allowed options (the options passed to :meth:`JointSpace.cells`).
        values: the achievable sums of ``removed``, ascending.
        buckets: ``values`` split into runs the unit prices alike at every
            other coordinate (a hardware tile holds several channel
            counts); the cells index buckets.
    """

    groups: list
    removed: list
    values: list
    buckets: list


class UnitCells(NamedTuple):
    """One costed unit's cells for the integer program.

    Attributes:
        deps: group indices whose option is a coordinate of every combo.
        combos: ``(option index per dep..., [index into summed.buckets],
            pair index or -1)`` tuples (the middle item only with
            ``summed``).
        costs: the price of each combo.
        summed: None, or the :class:`SummedInputs` the combos sum over.
    """

    deps: list
    combos: list
    costs: np.ndarray
    summed: SummedInputs | None = None


class JointSpace:
    """Cost of (kept channels per group, bits per quantizable layer).

    Args:
        model: the float model.
        resource: ``"latency"``, ``"energy"`` (need ``hardware``),
            ``"size"`` or ``"bops"``.
        hardware: a ``HardwareModel`` / ``LatencyTable``.
        groups: ids of the searched channel groups (others stay whole).
        graph: ``DependencyGraph(model)`` to reuse.

    Attributes:
        table: the dense :class:`~tfcomp.hardware.CostTable` (``layers``,
            ``fixed`` = (8, 8), ``full_cost`` = the budget's reference).
        groups: the searched ``Group`` objects; ``sizes`` their channels.
        layers: quantizable layer names (``quantize_model``'s).
        units: costed specs that count: ``(spec index, layer name or
            None)``; None = priced at 8/8 whatever the policy.
        deps: per unit, the indices of the groups that change its cost.
        constant: overhead (latency) plus the units no group changes at
            8/8 that carry no bits.

    Example:
        >>> space.total(space.sizes, {n: (4, 4) for n in space.layers})
    """

    max_cells = 200_000  # cost cells of one layer (options x pairs)
    aggregate_above = 4096  # product cells above which inputs are summed

    def __init__(self, model, resource: str, hardware, groups,
                 graph: DependencyGraph | None = None):
        self.table = CostTable(model, resource, hardware)
        self.resource, self.hardware = resource, hardware
        self.graph = graph if graph is not None else DependencyGraph(model)
        self.groups = [g if not isinstance(g, str) else self.graph.group(g)
                       for g in groups]
        self.group_ids = [g.id for g in self.groups]
        self.sizes = np.array([g.size for g in self.groups], np.int64)
        self.layers = list(self.table.layers)
        specs = extract_specs(model)
        self.channels = LayerCosts(specs, self.groups, lambda s: 0.0, 0.0)
        by_name = {s.name.replace("/", "_"): i for i, s in enumerate(specs)}
        by_name.update({s.name: i for i, s in enumerate(specs)})
        by_layer = {n: by_name[n] for n in self.layers if n in by_name}
        missing = [n for n in self.layers if n not in by_layer]
        if missing:
            raise ValueError(f"quantizable layers {missing} have no cost "
                             "spec (tfcomp.hardware.extract_specs).")
        owner = {i: n for n, i in by_layer.items()}
        self.units, self.deps = [], []
        self.constant = float(getattr(hardware, "overhead_s", 0.0)) \
            if resource == "latency" else 0.0
        self._cache: dict = {}  # _price's, used below already
        for i, s in enumerate(specs):
            layer = owner.get(i)
            if layer is None and (resource not in ("latency", "energy")
                                  or s.op in GEMM_OPS):
                continue  # CostTable's rule: not priced at all
            deps = sorted(self.channels.owners[i])
            if layer is None and not deps:
                self.constant += self._price(i, (s.cin, s.cout),
                                             self.table.fixed)
                continue
            self.units.append((i, layer))
            self.deps.append(deps)
        self.full_cost = self.table.full_cost

    # -- pricing -------------------------------------------------------------
    def _price(self, i: int, channels: tuple, pair: tuple) -> float:
        key = (i, channels, pair)
        hit = self._cache.get(key)
        if hit is None:
            spec = self.channels.specs[i]
            cin, cout = channels
            s = spec.with_channels(cin=cin) if spec.tied_channels else \
                spec.with_channels(cin=cin, cout=cout)
            try:
                hit = layer_resource(s, int(pair[0]), int(pair[1]),
                                     self.resource, self.hardware)
            except ValueError as e:
                name = getattr(self.hardware, "name", self.hardware)
                raise ValueError(
                    f"{self.resource} of layer {spec.name!r} at cin={cin}, "
                    f"cout={cout}, bits {tuple(pair)} cannot be priced by "
                    f"{name!r}: {e}") from None
            self._cache[key] = hit
        return hit

    def counts_vector(self, keep) -> np.ndarray:
        """``{group id: kept}`` (missing: whole) or a vector, as a vector."""
        if isinstance(keep, dict):
            return np.array([int(keep.get(g, n)) for g, n in
                             zip(self.group_ids, self.sizes)], np.int64)
        return np.asarray(keep, np.int64)

    def unit_cost(self, u: int, counts, pair) -> float:
        """Cost of unit ``u`` at group counts ``counts`` (a vector) and
        ``pair`` (ignored for units without bits: 8/8)."""
        i, layer = self.units[u]
        pair = self.table.fixed if layer is None else tuple(pair)
        return self._price(i, self.channels.channels(i, counts), pair)

    def total(self, keep, bits: dict) -> float:
        """Absolute cost at ``keep`` (``{group id: kept}`` or a vector) and
        ``bits`` (``{layer: (w, a)}``, missing layers at 8/8)."""
        counts = self.counts_vector(keep)
        fixed = self.table.fixed
        return self.constant + sum(
            self.unit_cost(u, counts, bits.get(layer, fixed) if layer
                           else fixed)
            for u, (_, layer) in enumerate(self.units))

    def ratio(self, keep, bits: dict) -> float:
        """:meth:`total` as a fraction of the dense 8/8 cost."""
        return self.total(keep, bits) / self.full_cost

    def cells(self, u: int, options: list, pairs: list) -> UnitCells:
        """Unit ``u``'s cost over every combination of its groups' options
        and its pairs.

        Above ``aggregate_above`` combinations, the groups that only remove
        input channels of the unit (two or more: the inputs of a
        concatenation) are summed: the cells run over the achievable
        totals of removed channels (:class:`SummedInputs`) instead of
        their product, with the same prices.

        Args:
            u: unit index.
            options: per group, the allowed kept counts.
            pairs: per quantizable layer (``layers`` order), the allowed
                ``(w, a)`` pairs.

        Returns:
            a :class:`UnitCells`.

        Example:
            >>> space.cells(0, [[4, 8]] * len(space.groups), pairs).costs
        """
        i, layer = self.units[u]
        deps = self.deps[u]
        lidx = self.layers.index(layer) if layer is not None else None
        choice = range(len(pairs[lidx])) if lidx is not None else [-1]
        n = len(choice) * int(np.prod([len(options[d]) for d in deps]))
        if n > min(self.aggregate_above, self.max_cells):
            summed = self._summed_cells(u, options, pairs, choice)
            if summed is not None:
                return summed
        if n > self.max_cells:
            raise ValueError(
                f"layer {self.channels.specs[i].name!r} depends on "
                f"{len(deps)} channel groups: {n} cost cells exceed "
                f"max_cells={self.max_cells}, also with its input groups "
                "summed; search fewer keep ratios or leave some of its "
                "groups out (ignored_layers).")
        counts = self.sizes.copy()
        combos, costs = [], []
        for opts in itertools.product(*[range(len(options[d]))
                                        for d in deps]):
            for d, o in zip(deps, opts):
                counts[d] = options[d][o]
            ch = self.channels.channels(i, counts)
            for p in choice:
                pair = self.table.fixed if p < 0 else pairs[lidx][p]
                combos.append((*opts, p))
                costs.append(self._price(i, ch, tuple(pair)))
        return UnitCells(list(deps), combos, np.asarray(costs, np.float64))

    def _summed_cells(self, u: int, options, pairs, choice):
        """:meth:`cells` over summed input groups, or None when the unit
        has fewer than two of them or the sums are no smaller."""
        i, layer = self.units[u]
        spec = self.channels.specs[i]
        outs = {j for j, _ in self.channels.cout_terms[i]}
        summed = sorted({j for j, _ in self.channels.cin_terms[i]} - outs)
        if len(summed) < 2:
            return None
        rest = [d for d in self.deps[u] if d not in summed]
        removed = [[self.channels.removed(self.channels.cin_terms[i], j, c)
                    for c in options[j]]
                   for j in summed]
        values = {0}
        for r in removed:
            values = {v + x for v in values for x in r}
            if len(values) > self.max_cells:
                return None
        values = sorted(values)
        n = len(values) * len(choice) * int(
            np.prod([len(options[d]) for d in rest]))
        if n > self.max_cells:
            return None
        lidx = self.layers.index(layer) if layer is not None else None
        counts = self.sizes.copy()  # the summed groups whole
        rest_opts = list(itertools.product(*[range(len(options[d]))
                                             for d in rest]))
        price = np.empty((len(values), len(rest_opts), len(choice)))
        for r, opts in enumerate(rest_opts):
            for d, o in zip(rest, opts):
                counts[d] = options[d][o]
            cin_rest = spec.cin - sum(self.channels.removed(
                self.channels.cin_terms[i], d, counts[d]) for d in rest)
            _, cout = self.channels.channels(i, counts)
            for vi, v in enumerate(values):
                ch = (max(1, cin_rest - v), cout)
                for k, p in enumerate(choice):
                    pair = self.table.fixed if p < 0 else pairs[lidx][p]
                    price[vi, r, k] = self._price(i, ch, tuple(pair))
        # runs of sums priced alike everywhere share cells
        starts = [0] + [vi for vi in range(1, len(values)) if not
                        np.array_equal(price[vi], price[vi - 1])]
        buckets = [values[a:b] for a, b in
                   zip(starts, starts[1:] + [len(values)])]
        combos, costs = [], []
        for r, opts in enumerate(rest_opts):
            for bi, a in enumerate(starts):
                for k, p in enumerate(choice):
                    combos.append((*opts, bi, p))
                    costs.append(price[a, r, k])
        return UnitCells(rest, combos, np.asarray(costs, np.float64),
                         SummedInputs(summed, removed, values, buckets))
