"""The one target resolver: pruning budgets -> kept channel counts.

Every structured pruning method states its target in one vocabulary and
turns it into ``{group_id: kept channels}`` here:

* ``ratio``: the fraction of channels removed, a float for every targeted
  group or ``{group_id_or_layer_name: ratio}``;
* ``target_macs``: a MACs budget, a fraction (0, 1] of the dense model's
  MACs or an absolute count; the smallest uniform ratio meeting it is found
  by one bisection on :func:`channel_macs`;
* ``round_to``: the producer layers' kept channel counts are multiples of
  it (capped at the group size). A unit spanning ``w`` channels (a grouped
  conv with ``w`` groups: one in-group position of every conv group; a
  whole ``GroupNormalization`` group; :attr:`tfcomp.graph.Group.unit_width`)
  keeps a multiple of ``round_to / gcd(round_to, w)`` units, so a
  ``groups=4`` conv with ``round_to=8`` keeps 8, 16, ... filters, two, four,
  ... per conv group, every conv group the same (:func:`unit_round_to`);
* ``ignored_layers``: layers whose channel groups are left whole;
* ``groups``: restricts a uniform ratio / budget to some groups.

:func:`channel_macs` is *the* cost of channel counts: the MACs of the model
when each group keeps a given number of channels, from the per-layer MACs of
:func:`tfcomp.cost.profile` scaled by the kept input / output fractions
(exact under profile's conventions).

Example:
    >>> graph = tfcomp.DependencyGraph(tfcomp.zoo.resnet(depth=20))
    >>> keep = resolve_keep_counts(graph, target_macs=0.5, round_to=8)
    >>> channel_macs(graph, keep) <= 0.5 * tfcomp.profile(graph.model).macs
    True
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import numpy as np

from tfcomp._io import check_number, check_positive_int
from tfcomp.graph import DependencyGraph

__all__ = ["ChannelMacs", "Targets", "channel_macs", "check_ratio",
           "check_target_macs", "group_for_key", "ignored_group_ids",
           "n_keep", "resolve", "resolve_keep_counts", "unit_round_to"]

# Bisection steps on the uniform ratio (the interval is below 1e-12 then).
_ITERATIONS = 40
_HI = 1.0 - 1e-9


def check_ratio(value, name: str = "ratio") -> float:
    """``value`` as a fraction removed, in [0, 1).

    Raises:
        TypeError: not a real number.
        ValueError: outside [0, 1) or NaN.

    Example:
        >>> check_ratio(0.25)
        0.25
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float in [0, 1). Received: "
                        f"{name}={value!r}")
    r = float(value)
    if math.isnan(r) or not 0.0 <= r < 1.0:
        hint = " (1 or more would remove everything)" if r >= 1.0 else ""
        raise ValueError(f"{name} must be in [0, 1). Received: "
                         f"{name}={r}{hint}")
    return r


def n_keep(size: int, ratio: float, round_to: int = 1) -> int:
    """Channels kept when ``ratio`` of ``size`` is removed.

    ``size - floor(size * ratio)``, rounded up to a multiple of ``round_to``
    (capped at ``size``), at least 1.

    Example:
        >>> n_keep(64, 0.3), n_keep(64, 0.3, round_to=8)
        (45, 48)
    """
    keep = size - math.floor(size * ratio + 1e-9)
    if round_to > 1:
        keep = min(size, math.ceil(keep / round_to) * round_to)
    return max(1, keep)


def unit_round_to(group, round_to: int) -> int:
    """``round_to`` in units of ``group``: kept units are multiples of
    ``round_to / gcd(round_to, group.unit_width)``, so the producer's kept
    channels (units x width) are multiples of ``round_to`` and of the
    width (each conv group keeps the same count).

    Example:
        >>> g = graph.group("gconv")     # Conv2D(32, 3, groups=4)
        >>> g.size, g.unit_width, unit_round_to(g, 8)
        (8, 4, 2)
    """
    round_to = int(round_to)
    return round_to // math.gcd(round_to, int(group.unit_width))


def _as_graph(model_or_graph) -> DependencyGraph:
    if isinstance(model_or_graph, DependencyGraph):
        return model_or_graph
    return DependencyGraph(model_or_graph)


# ---------------------------------------------------------------------------
# cost of channel counts


class ChannelMacs:
    """MACs of pruned versions of one graph (exact for profile's
    conventions: conv / dense MACs scale with kept in x out channels).

    Build it once per graph (it profiles the model) and call it many
    times, as a bisection does.

    Attributes:
        graph: the :class:`tfcomp.graph.DependencyGraph`.
        dense: MACs of the unpruned model (``tfcomp.profile(model).macs``).

    Example:
        >>> cost = ChannelMacs(graph)
        >>> cost({"conv1": 8}) < cost.dense
        True
    """

    def __init__(self, graph: DependencyGraph):
        from tfcomp.cost import profile

        self.graph = graph
        prof = profile(graph.model)
        self.dense = int(prof.macs)
        self._items = []  # (macs, layer, handler, ports, name)
        layers = graph.layers
        for rec in prof.layers:
            if not rec.macs or rec.name not in layers:
                continue
            ports = graph.layer_ports(rec.name, first_call_only=True)
            self._items.append((rec.macs, layers[rec.name],
                                graph.handler(rec.name), ports, rec.name))
        # MACs of layers the graph does not see (inside subclassed models)
        self._outside = self.dense - sum(it[0] for it in self._items)

    def layer_macs(self, removed: dict) -> dict:
        """``{layer path: MACs}`` after removing ``{group_index: units}``,
        for every layer with MACs the graph sees.

        Example:
            >>> ChannelMacs(graph).layer_macs({})["conv1"]
            86016
        """
        keep = self.graph.channel_keep(removed)
        out = {}
        for macs, layer, handler, ports, name in self._items:
            fr = {p.name: float(keep.port(p).sum()) / p.size
                  for p in ports if p.size}
            scale = handler.macs_scale(fr, layer) if handler else None
            if scale is None:
                scale = 1.0
                for p in ports:
                    if p.macs and p.size:
                        scale *= fr[p.name]
            out[name] = round(macs * scale)
        return out

    def removed_macs(self, removed: dict) -> int:
        """MACs after removing ``{group_index: unit indices}`` (layers the
        graph cannot see, inside a subclassed model, count unchanged)."""
        return int(sum(self.layer_macs(removed).values()) + self._outside)

    def fixed_layers(self, removed: dict, top: int = 3) -> list:
        """The ``top`` layers with the most MACs that ``removed`` leaves
        unchanged, as ``"name (Type, N MACs[: why])"`` strings (for
        messages about unreachable budgets).

        Example:
            >>> ChannelMacs(vit_graph).fixed_layers({})[0]
            "mha (MultiHeadAttention, 1,234 MACs: no channel handler ...)"
        """
        dense = {it[4]: it[0] for it in self._items}
        types = {it[4]: type(it[1]).__name__ for it in self._items}
        after = self.layer_macs(removed)
        fixed = sorted((n for n in after if after[n] == dense[n]),
                       key=lambda n: -dense[n])
        out = []
        for n in fixed[:top]:
            why = self.graph.barriers.get(n)
            group = self.graph.producer_group(n)
            if why is None and group is not None and not group.prunable:
                why = group.reasons[0] + ("; ..." if len(group.reasons) > 1
                                          else "")
            out.append(f"{n!r} ({types[n]}, {dense[n]:,} MACs"
                       + (f": {why})" if why else ")"))
        return out

    def removal(self, keep_counts: dict, orders: dict | None = None) -> dict:
        """``{group_index: units removed}`` for ``{group_id: kept count}``.

        Each group drops ``size - count`` units, the first of
        ``orders[group_id]`` (least important first; default: index order)
        that empty no member (:meth:`tfcomp.graph.Group.pick_removal`).
        """
        out = {}
        for gid, count in keep_counts.items():
            g = self.graph.group(gid)
            count = int(count)
            if not 1 <= count <= g.size:
                raise ValueError(
                    f"keep_counts[{gid!r}] must be in [1, {g.size}]. "
                    f"Received: keep_counts[{gid!r}]={count}")
            if count == g.size:
                continue
            order = (orders or {}).get(g.id)
            if order is None:
                order = np.arange(g.size)
            units = g.pick_removal(order, g.size - count)
            if units.size:
                out[g.index] = units
        return out

    def __call__(self, keep_counts: dict, orders: dict | None = None) -> int:
        return self.removed_macs(self.removal(keep_counts, orders))


def channel_macs(graph, keep_counts: dict, *, orders: dict | None = None
                 ) -> int:
    """MACs of the model when each group keeps the given channel count.

    Profiles the model on every call; build a :class:`ChannelMacs` once to
    cost many counts of one graph.

    Args:
        graph: a :class:`tfcomp.graph.DependencyGraph` (or a model).
        keep_counts: ``{group_id: kept channels}``; other groups stay whole.
        orders: optional ``{group_id: unit order, least important first}``
            naming which units go (only matters for groups whose members
            carry part of the channels, e.g. concatenations).

    Example:
        >>> channel_macs(graph, {g.id: g.size // 2
        ...                      for g in graph.prunable_groups})
    """
    return ChannelMacs(_as_graph(graph))(keep_counts, orders)


# ---------------------------------------------------------------------------
# resolver


@dataclasses.dataclass
class Targets:
    """What :func:`resolve` found.

    Attributes:
        keep: ``{group_id: kept channels}`` for every targeted group.
        ratio: the uniform ratio used (float), or ``{group_id: ratio}``.
        target_macs: the absolute MACs budget, or None.
        dense_macs: MACs of the unpruned model (None without a budget).
        macs: MACs at ``keep`` (None without a budget).
        orders: ``{group_id: unit order}`` when ``orders`` was given.
    """

    keep: dict
    ratio: float | dict
    target_macs: int | None = None
    dense_macs: int | None = None
    macs: int | None = None
    orders: dict | None = None


def group_for_key(graph: DependencyGraph, key: str):
    """A group from its id or from a layer producing it.

    Example:
        >>> group_for_key(graph, "conv1").id == graph.producer_group("conv1").id
        True
    """
    if key in graph:
        return graph.group(key)
    try:
        graph.layer(key)
    except ValueError:
        known = [g.id for g in graph.prunable_groups][:12]
        raise ValueError(
            f"No group {key!r} in model {graph.model.name!r} (keys are group "
            f"ids or layer names). Prunable groups include {known}."
        ) from None
    g = graph.producer_group(key)
    if g is None:
        raise ValueError(f"Layer {key!r} produces no channel group.")
    return g


def ignored_group_ids(graph: DependencyGraph, ignored_layers) -> set:
    """Ids of the groups that ``ignored_layers`` leaves whole: a group is
    ignored when its id or any of its producer layers (full path or last
    path component) is named.

    Example:
        >>> ignored_group_ids(graph, ["stem_conv"])
        {'stem_conv'}
    """
    if not ignored_layers:
        return set()
    if isinstance(ignored_layers, str):
        ignored_layers = (ignored_layers,)
    names = set(ignored_layers)
    return {g.id for g in graph.groups
            if g.id in names or any(
                m.layer in names or m.layer.rsplit("/", 1)[-1] in names
                for m in g.producers)}


def check_target_macs(target_macs, name: str = "target_macs") -> float:
    """``target_macs`` as a finite float > 0 (a fraction of the dense MACs
    if <= 1, else absolute).

    Raises:
        TypeError: not a real number (a string, None, a bool).
        ValueError: NaN, infinite or <= 0.

    Example:
        >>> check_target_macs(0.5)
        0.5
    """
    return check_number(target_macs, name, 0, min_open=True,
                        hint="a fraction of the dense MACs if <= 1, else "
                             "absolute")


def _uniform_targets(graph, groups, ignored) -> list:
    if groups is None:
        candidates = list(graph.prunable_groups)
    else:
        if isinstance(groups, str):
            groups = [groups]
        candidates = []
        for key in groups:
            g = group_for_key(graph, key)
            if not g.prunable:
                raise ValueError(f"Group {g.id!r} cannot be pruned "
                                 f"({g.reason}). Received: groups={groups!r}")
            if g not in candidates:
                candidates.append(g)
    return [g for g in candidates if g.id not in ignored]


def _orders(graph, group_ids, orders) -> dict | None:
    """A callable ``orders`` is called once per targeted group, in order."""
    if callable(orders):
        return {gid: orders(graph.group(gid)) for gid in group_ids}
    return orders


def resolve(graph, ratio=None, *, target_macs=None, round_to: int = 1,
            ignored_layers=None, groups=None, orders: dict | None = None,
            bisection_steps: int = _ITERATIONS) -> Targets:
    """Resolves a pruning target into kept channel counts (and the record).

    Same arguments as :func:`resolve_keep_counts`; returns a
    :class:`Targets` with the ratio used and the MACs before / after.
    ``bisection_steps`` halvings of the ratio interval are made for
    ``target_macs`` (40 leave it below 1e-12, so the smallest ratio meeting
    the budget is found exactly; fewer may overshoot a channel step).

    Example:
        >>> t = resolve(graph, target_macs=0.5)
        >>> t.macs <= t.target_macs
        True
    """
    round_to = check_positive_int(round_to, "round_to")
    steps = check_positive_int(bisection_steps, "bisection_steps")
    if target_macs is not None:
        check_target_macs(target_macs)
    if ratio is not None and not isinstance(ratio, dict):
        check_ratio(ratio)
    graph = _as_graph(graph)
    ignored = ignored_group_ids(graph, ignored_layers)
    if isinstance(ratio, dict):
        if target_macs is not None:
            raise ValueError(
                "Give either target_macs or a per-group ratio dict, not "
                f"both. Received: ratio=dict, target_macs={target_macs!r}")
        if groups is not None:
            raise ValueError("groups cannot be combined with a ratio dict "
                             f"(its keys are the groups). Received: "
                             f"groups={groups!r}")
        ratios = {}
        for key, r in ratio.items():
            g = group_for_key(graph, key)
            r = check_ratio(r, f"ratio[{key!r}]")
            if r > 0 and not g.prunable:
                raise ValueError(
                    f"Group {g.id!r} cannot be pruned ({g.reason}). "
                    f"Received: ratio[{key!r}]={r}")
            if r > 0 and g.id in ignored:
                raise ValueError(
                    f"Group {g.id!r} is in ignored_layers but ratio[{key!r}]"
                    f"={r} prunes it.")
            ratios[g.id] = r
        keep = {gid: n_keep(graph.group(gid).size, r,
                            unit_round_to(graph.group(gid), round_to))
                for gid, r in ratios.items()}
        return Targets(keep=keep, ratio=ratios,
                       orders=_orders(graph, keep, orders))
    if ratio is None and target_macs is None:
        raise ValueError("Give ratio or target_macs. Received: ratio=None, "
                         "target_macs=None")
    uniform = check_ratio(ratio) if ratio is not None else 0.0
    targets = _uniform_targets(graph, groups, ignored)
    orders = _orders(graph, [g.id for g in targets], orders)

    steps_of = {g.id: unit_round_to(g, round_to) for g in targets}

    def keep_at(r) -> dict:
        return {g.id: n_keep(g.size, r, steps_of[g.id]) for g in targets}

    if target_macs is None:
        return Targets(keep=keep_at(uniform), ratio=uniform, orders=orders)
    budget = check_target_macs(target_macs)
    cost = ChannelMacs(graph)
    if budget <= 1.0:
        budget = budget * cost.dense

    def macs_at(r) -> int:
        return cost(keep_at(r), orders)

    if macs_at(0.0) <= budget:
        uniform = 0.0
    else:
        hi = _HI
        smallest = macs_at(hi)
        if smallest > budget:
            fixed = cost.fixed_layers(cost.removal(keep_at(hi), orders))
            raise ValueError(
                f"target_macs={target_macs!r} cannot be reached: keeping "
                f"{round_to} channel(s) per pruned group still costs "
                f"{smallest:,} MACs, {smallest / max(cost.dense, 1):.3f} of "
                f"the dense {cost.dense:,} (the minimum reachable). The "
                "largest layers pruning cannot reduce: "
                f"{', '.join(fixed) or 'none'}.")
        lo = 0.0
        for _ in range(steps):
            mid = 0.5 * (lo + hi)
            if macs_at(mid) <= budget:
                hi = mid
            else:
                lo = mid
        uniform = hi
    keep = keep_at(uniform)
    macs = cost(keep, orders)
    if macs > budget:  # pragma: no cover - the bisection keeps hi feasible
        raise ValueError(f"target_macs={target_macs!r} was not met: "
                         f"{macs:,} > {int(budget):,} MACs.")
    return Targets(keep=keep, ratio=float(uniform), target_macs=int(budget),
                   dense_macs=cost.dense, macs=macs, orders=orders)


def resolve_keep_counts(graph, ratio=None, *, target_macs=None,
                        round_to: int = 1, ignored_layers=None, groups=None,
                        orders: dict | None = None) -> dict:
    """``{group_id: kept channels}`` for a pruning target.

    Args:
        graph: a :class:`tfcomp.graph.DependencyGraph` (or a model).
        ratio: fraction of channels removed, in [0, 1): a float for every
            targeted group, or ``{group_id_or_layer_name: ratio}`` (only
            those groups; a ratio of 0 is allowed on unprunable groups).
        target_macs: a MACs budget; a float ``ratio`` is then ignored and
            the smallest uniform ratio whose model meets the budget is
            found by bisection on :func:`channel_macs`. Values in (0, 1]
            are a fraction of the dense model's MACs, larger ones absolute.
        round_to: the producers' kept channel counts are multiples of
            this, capped at the group size (at least one channel is always
            kept); units spanning several channels (grouped convs) follow
            :func:`unit_round_to`.
        ignored_layers: layer names (or group ids) whose channel groups are
            left whole: a group is ignored when any producer is named.
        groups: group ids or layer names restricting a uniform ratio /
            budget to those groups (default: every prunable group).
        orders: ``{group_id: unit order, least important first}`` used
            when costing a removal (see :func:`channel_macs`; default index
            order), or a callable ``group -> order`` called once per
            targeted group, in order (``resolve(...).orders`` returns them).

    Returns:
        ``{group_id: kept count}`` for every targeted group (groups kept
        whole included).

    Raises:
        ValueError: ratio outside [0, 1), unknown group / layer, unprunable
            group with a ratio > 0, both a ratio dict and ``target_macs``,
            unreachable ``target_macs``, ``round_to`` < 1.

    Example:
        >>> resolve_keep_counts(graph, 0.5, round_to=8)
        {'stem_conv': 8, ...}
    """
    return resolve(graph, ratio, target_macs=target_macs, round_to=round_to,
                   ignored_layers=ignored_layers, groups=groups,
                   orders=orders).keep
