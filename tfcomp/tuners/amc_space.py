"""AMC's search space: the channel groups searched, the state embedding,
the action -> keep-count mapping and the budget wall (the environment the
DDPG agent acts in; see :mod:`tfcomp.tuners.amc`).

Keep counts follow the one target resolver's rounding
(:func:`tfcomp.pruning.targets.n_keep`); costs are computed from per-layer
channel counts without building a model: MACs of the ``LayerSpec`` records
(the same numbers as ``tfcomp.profile``) or latencies from a
``HardwareModel`` / ``LatencyTable``.

Reference: He et al., AMC: AutoML for Model Compression and Acceleration on
Mobile Devices, ECCV 2018, arXiv:1802.03494.

Example:
    >>> space = AMCSpace(model, "macs", budget=0.5, hardware=None,
    ...                  bits=None, lbound=0.2, round_to=8)
    >>> values, transitions, info = space.rollout(lambda s: [0.5])
"""

from __future__ import annotations

import math

import numpy as np

from tfcomp.cost import profile
from tfcomp.graph import DependencyGraph
from tfcomp.hardware import extract_specs
from tfcomp.pruning.reconstruction.engine import reconstructible_groups
from tfcomp.pruning.targets import ChannelMacs, n_keep
from tfcomp.tuners._common import minmax_columns

__all__ = ["AMCSpace", "LayerCosts", "PREFIX"]

PREFIX = "preserve/"


class LayerCosts:
    """Model cost as a function of the keep counts of the searched groups,
    layer by layer.

    Every costed layer (``LayerSpec``) knows which searched groups remove
    its input / output channels and how many kernel positions one channel
    of each group covers; its cost at given channel counts comes from
    ``layer_fn(spec_at_counts)`` (cached). AMC needs the per-layer split
    (the state's "cost later groups decide", hardware latencies per layer)
    and thousands of evaluations per search (the budget wall); the MACs it
    reports come from :class:`tfcomp.pruning.targets.ChannelMacs`
    (:meth:`AMCSpace.macs`), which gives the same totals.

    Example:
        >>> costs = LayerCosts(specs, steps, lambda s: s.macs, 0)
        >>> costs(np.array([g.size for g in steps]))      # dense MACs
    """

    def __init__(self, specs, steps, layer_fn, constant: float):
        self.specs = list(specs)
        self.sizes = np.array([g.size for g in steps], dtype=np.int64)
        self.layer_fn = layer_fn
        self.constant = float(constant)
        index = {g.id: j for j, g in enumerate(steps)}
        by_name = {s.name: i for i, s in enumerate(self.specs)}
        self.cin_terms = [[] for _ in self.specs]
        self.cout_terms = [[] for _ in self.specs]
        self.owners = [set() for _ in self.specs]
        for g in steps:
            j = index[g.id]
            seen_tied = set()
            for m in g.members:
                i = by_name.get(m.layer)
                if i is None:
                    continue
                spec = self.specs[i]
                npos = len(m.indices)
                if spec.tied_channels:
                    if m.port not in ("in", "channels") or i in seen_tied:
                        continue
                    seen_tied.add(i)
                    self.cin_terms[i].append((j, npos))
                elif m.role == "consumer" and m.port == "in":
                    # a grouped conv's indices are kernel rows: each one
                    # is an input channel of every group
                    self.cin_terms[i].append(
                        (j, npos * max(1, int(spec.groups or 1))))
                elif m.role == "producer" and m.port == "out":
                    self.cout_terms[i].append((j, npos))
                else:
                    continue
                self.owners[i].add(j)
        self._cache: dict = {}

    def _term_removed(self, j: int, npos: int, count: int) -> int:
        """Channels group ``j`` keeping ``count`` removes from ``npos``
        positions of one layer (the one rounding of a term's share)."""
        size = int(self.sizes[j])
        return int(round(npos * (size - int(count)) / size))

    def removed(self, terms, j: int, count: int) -> int:
        """Channels that group ``j`` keeping ``count`` removes from a
        layer's ``terms`` (its ``cin_terms[i]`` or ``cout_terms[i]``):
        each position's share, rounded term by term."""
        return sum(self._term_removed(j, npos, count)
                   for jj, npos in terms if jj == j)

    def channels(self, i: int, counts) -> tuple[int, int]:
        spec = self.specs[i]

        def removed(terms):
            return sum(self._term_removed(j, npos, counts[j])
                       for j, npos in terms)

        cin = max(1, spec.cin - removed(self.cin_terms[i]))
        cout = max(1, spec.cout - removed(self.cout_terms[i]))
        return cin, cout

    def layer(self, i: int, counts) -> float:
        cin, cout = self.channels(i, counts)
        key = (i, cin, cout)
        hit = self._cache.get(key)
        if hit is None:
            spec = self.specs[i]
            s = spec.with_channels(cin=cin) if spec.tied_channels else \
                spec.with_channels(cin=cin, cout=cout)
            hit = float(self.layer_fn(s))
            self._cache[key] = hit
        return hit

    def __call__(self, counts, subset=None) -> float:
        idx = range(len(self.specs)) if subset is None else subset
        return self.constant + sum(self.layer(i, counts) for i in idx)


class AMCSpace:
    """Groups, state embedding, action mapping and budget wall of AMC.

    Args:
        model: the reference model.
        resource: ``"macs"`` or ``"latency"``: what the budget limits.
        budget: the allowed cost, a fraction of the unpruned model's.
        hardware, bits: the ``HardwareModel`` and ``(w_bits, a_bits)`` for
            ``"latency"``.
        lbound: the lowest preserve ratio.
        round_to: keep counts are multiples of this (or the whole group).
        ignored_layers: layers whose channel groups are not searched.

    Example:
        >>> space = AMCSpace(model, "macs", 0.5, None, None, 0.2, 8)
        >>> space.project({space.names[0]: 0.5})
    """

    state_dim = 10

    def __init__(self, model, resource: str, budget: float, hardware, bits,
                 lbound: float, round_to: int, ignored_layers=None):
        self.resource, self.budget = resource, budget
        self.lbound, self.round_to = lbound, round_to
        graph = DependencyGraph(model)
        self.graph = graph
        try:
            todo, skipped = reconstructible_groups(
                graph, ignored_layers=ignored_layers, what="AMC")
        except ValueError as e:
            raise ValueError(
                f"AMC: model {model.name!r} has no prunable layers (no "
                "channel group whose producers can be pruned and whose "
                f"consumers can be refit). {e}") from None
        self.skipped = dict(skipped)
        steps, allowed = [], []
        for g in todo:
            options = self._options(g.size)
            if len(options) < 2:
                self.skipped[g.id] = (
                    f"{g.size} channels leave no choice with lbound="
                    f"{lbound} and round_to={round_to}")
                continue
            steps.append(g)
            allowed.append(options)
        if not steps:
            raise ValueError(
                f"AMC: model {model.name!r} has no prunable layers to search"
                f" (lbound={lbound}, round_to={round_to}). Skipped groups: "
                f"{self.skipped}")
        self.steps = steps
        self.allowed = allowed
        self.names = [PREFIX + g.id for g in steps]
        self.sizes = np.array([g.size for g in steps], dtype=np.int64)
        self.kmin = np.array([a[0] for a in allowed], dtype=np.int64)
        self.channel_macs = ChannelMacs(graph)

        specs = extract_specs(model)
        dense_macs = profile(model).macs
        spec_macs = sum(s.macs for s in specs)
        if resource == "macs":
            # Layers without a spec keep their dense MACs (an upper bound).
            self.cost = LayerCosts(specs, steps, lambda s: s.macs,
                                   max(0, dense_macs - spec_macs))
            self.unit = "MACs"
        else:
            w, a = bits

            def layer_fn(s):
                return hardware.layer_cost(s, w, a).latency_s

            self.cost = LayerCosts(specs, steps, layer_fn,
                                   float(getattr(hardware, "overhead_s",
                                                 0.0)))
            self.unit = "s"
            self._probe_table(hardware, bits)
        self.dense_cost = self.cost(self.sizes)
        self.budget_cost = budget * self.dense_cost
        self.min_cost = self.cost(self.kmin)
        if self.min_cost > self.budget_cost * (1 + 1e-9):
            raise ValueError(
                f"AMC: budget={budget} of the dense {resource} cannot be "
                f"reached: with every searched group at the lower bound "
                f"(preserve ratio lbound={lbound}, round_to={round_to}) the "
                f"model still costs {self._fmt(self.min_cost)} = "
                f"{self.min_cost / self.dense_cost:.4f} of the dense "
                f"{self._fmt(self.dense_cost)}. The minimum reachable budget "
                f"is {math.ceil(self.min_cost / self.dense_cost * 1e4) / 1e4}"
                " (lower lbound or round_to to go further).")
        self._static = self._static_features()
        # later-step ownership for the "rest" feature
        self._rest_sets = []
        for j in range(len(steps)):
            self._rest_sets.append(
                [i for i, own in enumerate(self.cost.owners)
                 if own and max(own) > j])

    def _fmt(self, v: float) -> str:
        if self.unit == "MACs":
            return f"{int(round(v)):,} MACs"
        return f"{v * 1e3:.4g} ms"

    def _probe_table(self, hardware, bits) -> None:
        """Costs every layer at the channel extremes: a clear error now
        instead of one in the middle of a search."""
        lo = self.kmin
        hi = self.sizes
        for i, spec in enumerate(self.cost.specs):
            for cin_counts in (lo, hi):
                for cout_counts in (lo, hi):
                    cin, _ = self.cost.channels(i, cin_counts)
                    _, cout = self.cost.channels(i, cout_counts)
                    s = spec.with_channels(cin=cin) if spec.tied_channels \
                        else spec.with_channels(cin=cin, cout=cout)
                    try:
                        hardware.layer_cost(s, *bits)
                    except ValueError as e:
                        raise ValueError(
                            f"AMC resource='latency': the hardware table "
                            f"cannot cost layer {spec.name!r} at cin={cin},"
                            f" cout={cout} (bits {tuple(bits)}): {e} Build "
                            "the table from this model with channel "
                            "fractions down to the lower bound "
                            f"lbound={self.lbound}, e.g. measure_tflite_"
                            "table(model, channel_fractions=(0.2, 0.4, 0.6,"
                            " 0.8, 1.0)).") from None

    def _options(self, size: int) -> list:
        """The keep counts allowed for a group of ``size`` channels."""
        lo = n_keep(size, 1.0 - self.lbound)
        return sorted({self._round(x, size) for x in range(lo, size + 1)})

    def _round(self, x: int, size: int) -> int:
        """``x`` kept channels rounded up to a multiple of ``round_to``."""
        return n_keep(size, 1.0 - x / size, self.round_to)

    def count(self, j: int, ratio: float) -> int:
        """Keep count of step ``j`` at preserve ratio ``ratio``."""
        size = int(self.sizes[j])
        kept = n_keep(size, 1.0 - min(float(ratio), 1.0), self.round_to)
        return int(max(self.kmin[j], kept))

    def macs(self, counts) -> int:
        """MACs of the model at keep counts ``counts`` (one per step), from
        the one cost of channel counts
        (:class:`tfcomp.pruning.targets.ChannelMacs`)."""
        return self.channel_macs({g.id: int(c)
                                  for g, c in zip(self.steps, counts)})

    def _static_features(self) -> np.ndarray:
        by_name = {s.name: s for s in self.cost.specs}
        rows = []
        for j, g in enumerate(self.steps):
            specs = [by_name[m.layer] for m in g.producers
                     if m.layer in by_name]
            p = specs[0] if specs else None
            params = sum(s.weight_count for s in specs)
            if p is None:
                rows.append([j, 0, 0, g.size, 1, 1, params])
                continue
            rows.append([j, 1.0 if p.op == "dense" else 0.0, p.cin, g.size,
                         p.stride[0], p.kernel[0], params])
        return minmax_columns(rows)

    # -- the wall ------------------------------------------------------
    def max_count(self, j: int, counts) -> int:
        """Largest allowed keep count of step ``j`` meeting the budget with
        steps < j at ``counts`` and steps > j at the lower bound."""
        trial = np.array(counts, dtype=np.int64)
        trial[j + 1:] = self.kmin[j + 1:]
        options = self.allowed[j]
        limit = self.budget_cost * (1 + 1e-9)
        lo, hi = 0, len(options) - 1
        trial[j] = options[hi]
        if self.cost(trial) <= limit:
            return options[hi]
        # options[0] is feasible by induction (checked at construction)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            trial[j] = options[mid]
            if self.cost(trial) <= limit:
                lo = mid
            else:
                hi = mid
        return options[lo]

    def project(self, ratios) -> np.ndarray:
        """Keep counts for ``{name: ratio}`` after the budget wall."""
        counts = self.sizes.copy()
        for j, name in enumerate(self.names):
            r = ratios.get(name, 1.0)
            if r is None:
                r = 1.0
            c = self.count(j, r)
            counts[j] = min(c, self.max_count(j, counts))
        return counts

    def action_to_ratio(self, a: float) -> float:
        return self.lbound + float(a) * (1.0 - self.lbound)

    def ratio_to_action(self, r: float) -> float:
        return float(np.clip((r - self.lbound) / (1.0 - self.lbound), 0, 1))

    # -- the episode -------------------------------------------------------
    def state(self, j: int, counts, prev_action: float) -> np.ndarray:
        cur = self.cost(counts)
        reduced = (self.dense_cost - cur) / self.dense_cost
        rest = self.cost(counts, self._rest_sets[j]) - self.cost.constant
        rest /= self.dense_cost
        return np.concatenate([self._static[j],
                               [reduced, rest, prev_action]]).astype(
                                   np.float32)

    def rollout(self, policy):
        """One AMC episode: ``(values, transitions, info)``.

        Stored actions are the executed (walled, rounded) ones, mapped back
        to [0, 1].
        """
        counts = self.sizes.copy()
        prev = 1.0
        states, actions = [], []
        for j in range(len(self.steps)):
            s = self.state(j, counts, prev)
            a = float(np.asarray(policy(s), np.float64).reshape(-1)[0])
            c = self.count(j, self.action_to_ratio(np.clip(a, 0, 1)))
            c = min(c, self.max_count(j, counts))
            counts[j] = c
            prev = self.ratio_to_action(c / self.sizes[j])
            states.append(s)
            actions.append([prev])
        final = self.state(len(self.steps) - 1, counts, prev)
        n = len(states)
        transitions = [(states[j], actions[j],
                        states[j + 1] if j + 1 < n else final, j == n - 1)
                       for j in range(n)]
        values = {name: float(counts[j] / self.sizes[j])
                  for j, name in enumerate(self.names)}
        cost = self.cost(counts)
        return values, transitions, {"cost": cost,
                                     "cost_ratio": cost / self.dense_cost}

