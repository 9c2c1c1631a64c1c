"""The joint search's environment: one episode = a keep ratio per channel
group (AMC's steps), then ``(w_bits, a_bits)`` per quantizable layer
(HAQ's steps), priced by :class:`tfcomp.tuners.joint_space.JointSpace`,
with a forward budget wall over the whole episode.

The wall is AMC's, extended to bits: the value of step ``t`` is at most
the largest one for which the model, with the earlier steps at their
chosen values and every later step at its lowest (groups at the lower
bound ``lbound``, searched widths at the smallest), costs no more than the
budget. The all-lowest point is checked at construction, so every episode
(and every tuner's proposal, projected the same way) meets the budget.
Widths are hardware-native (``searched_widths``: Bit Fusion 2, 4, 8) and
snapped up like HAQ's; first / last layer stay 8/8.

Reference: He et al., AMC, arXiv:1802.03494 (the forward wall, preserve
ratios in [lbound, 1]); Wang et al., HAQ, arXiv:1811.08886 (bit actions,
first / last layer 8-bit).

Example:
    >>> env = JointEnv(model, "latency", BISMO(), budget=0.25)
    >>> values, transitions, info = env.rollout(lambda s: [1.0])
    >>> info["cost_ratio"] <= 0.25
    True
"""

from __future__ import annotations

import math

import numpy as np

from tfcomp.graph import DependencyGraph
from tfcomp.pruning.reconstruction.engine import reconstructible_groups
from tfcomp.pruning.targets import n_keep, unit_round_to
from tfcomp.tuners._common import minmax_columns
from tfcomp.tuners.haq_space import (
    action_to_bits,
    bits_to_action,
    searched_widths,
)
from tfcomp.tuners.joint_space import JointSpace

__all__ = ["JointEnv", "PRESERVE", "W_BITS", "A_BITS"]

PRESERVE, W_BITS, A_BITS = "preserve/", "w_bits/", "a_bits/"
_FIXED = (8, 8)


class JointEnv:
    """Steps, state, action mapping and budget wall of the joint search.

    Args:
        model: the float model.
        resource, hardware: what the budget limits and its pricing.
        budget: allowed cost, a fraction of the dense 8/8 cost.
        lbound: lowest preserve ratio (AMC: 0.2).
        round_to: kept counts are multiples of this (or the whole group).
        b_min, b_max, bits: searched widths (``searched_widths``).
        first_last_8bit: keep the first / last quantizable layer at 8/8.
        ignored_layers: layers whose groups are not searched.

    Attributes:
        names: the steps' hyperparameter names, in episode order.
        space: the :class:`JointSpace`; ``options`` the allowed kept
            counts per group; ``widths`` the searched bit-widths.

    Example:
        >>> env.project({"preserve/conv1": 0.5, "w_bits/conv2": 4})
    """

    state_dim = 10

    def __init__(self, model, resource: str, hardware, budget: float, *,
                 lbound: float = 0.2, round_to: int = 1, b_min: int = 2,
                 b_max: int = 8, bits="native", first_last_8bit=True,
                 ignored_layers=None):
        self.budget, self.lbound, self.round_to = budget, lbound, round_to
        graph = DependencyGraph(model)
        try:
            todo, self.skipped = reconstructible_groups(
                graph, ignored_layers=ignored_layers, what="joint search")
        except ValueError:
            todo, self.skipped = [], {}
        groups, options = [], []
        for g in todo:
            step = unit_round_to(g, round_to)
            lo = n_keep(g.size, 1.0 - lbound, step)
            opts = sorted({n_keep(g.size, 1.0 - x / g.size, step)
                           for x in range(lo, g.size + 1)})
            if len(opts) > 1:
                groups.append(g)
                options.append(opts)
            else:
                self.skipped[g.id] = f"{g.size} channels leave no choice"
        self.space = JointSpace(model, resource, hardware, groups, graph)
        self.options = options
        self.widths = searched_widths(hardware, b_min, b_max, bits)
        self.b_min, self.b_max = b_min, b_max
        layers = self.space.layers
        fixed = {layers[0], layers[-1]} if first_last_8bit else set()
        self.slots = [("g", j) for j in range(len(groups))]
        self.slots += [(kind, i) for i, n in enumerate(layers)
                       if n not in fixed for kind in ("w", "a")]
        self.fixed = fixed
        self.names = [
            PRESERVE + groups[k].id if kind == "g" else
            (W_BITS if kind == "w" else A_BITS) + layers[k]
            for kind, k in self.slots]
        if not self.names:
            raise ValueError(f"joint search: model {model.name!r} has "
                             "nothing to search (no prunable group, no "
                             "quantizable layer besides the first / last).")
        self.full_cost = self.space.full_cost
        self.budget_cost = budget * self.full_cost
        low = self.lowest()
        self.min_cost = self._cost(*low)
        if self.min_cost > self.budget_cost * (1 + 1e-9):
            ratio = self.min_cost / self.full_cost
            raise ValueError(
                f"joint search: budget={budget} of the dense 8/8 {resource} "
                f"cannot be reached: every group at lbound={lbound} and every"
                f" searched width at {self.widths[0]} costs {ratio:.4f} of "
                f"it. The minimum budget is {math.ceil(ratio * 1e4) / 1e4}.")
        self._static = self._features()

    # -- points ------------------------------------------------------------
    def lowest(self) -> tuple:
        """``(counts, bits)`` with every step at its lowest value."""
        counts = np.array([o[0] for o in self.options], np.int64)
        bits = np.array([_FIXED if n in self.fixed else
                         (self.widths[0],) * 2 for n in self.space.layers],
                        np.int64)
        return counts, bits

    def _cost(self, counts, bits) -> float:
        return self.space.total(counts, self.policy(bits))

    def policy(self, bits) -> dict:
        return {n: (int(w), int(a)) for n, (w, a) in
                zip(self.space.layers, np.asarray(bits).reshape(-1, 2))}

    def _choices(self, t: int) -> list:
        kind, _ = self.slots[t]
        return self.options[self.slots[t][1]] if kind == "g" else \
            list(self.widths)

    def _set(self, point, t: int, value) -> None:
        kind, k = self.slots[t]
        if kind == "g":
            point[0][k] = value
        else:
            point[1][k, 0 if kind == "w" else 1] = value

    def max_value(self, t: int, point) -> int:
        """Largest value of step ``t`` meeting the budget with steps < t
        as in ``point`` and steps > t at their lowest."""
        low = self.lowest()
        trial = (point[0].copy(), point[1].copy())
        for u in range(t + 1, len(self.slots)):
            kind, k = self.slots[u]
            self._set(trial, u, low[0][k] if kind == "g" else
                      self.widths[0])
        choices = self._choices(t)
        limit = self.budget_cost * (1 + 1e-9)
        lo, hi = 0, len(choices) - 1
        self._set(trial, t, choices[hi])
        if self._cost(*trial) <= limit:
            return choices[hi]
        while hi - lo > 1:  # choices[0] is feasible by induction
            mid = (lo + hi) // 2
            self._set(trial, t, choices[mid])
            if self._cost(*trial) <= limit:
                lo = mid
            else:
                hi = mid
        return choices[lo]

    def propose(self, t: int, value):
        """A raw value (ratio for groups, bits for layers) as an allowed
        value of step ``t`` (before the wall)."""
        kind, k = self.slots[t]
        if kind == "g":
            size = int(self.space.sizes[k])
            r = min(1.0, max(self.lbound, float(value)))
            kept = n_keep(size, 1.0 - r, unit_round_to(
                self.space.groups[k], self.round_to))
            return next(c for c in self.options[k] if c >= kept)
        b = min(self.b_max, max(self.b_min, int(value)))
        return next((w for w in self.widths if w >= b), self.widths[-1])

    def project(self, values: dict) -> tuple:
        """``(counts, bits)`` for ``{name: value}`` after the wall (missing
        names: whole groups, ``b_max``)."""
        point = self._dense_point()
        for t, name in enumerate(self.names):
            raw = values.get(name)
            if raw is None:
                raw = 1.0 if name.startswith(PRESERVE) else self.b_max
            v = self.propose(t, raw)
            self._set(point, t, min(v, self.max_value(t, point)))
        return point

    def _dense_point(self) -> tuple:
        """``(counts, bits)`` of the dense 8/8 model."""
        return (self.space.sizes.copy(),
                np.full((len(self.space.layers), 2), 8, np.int64))

    def _raw(self, kind: str, a: float):
        """Action ``a`` in [0, 1] -> a keep ratio (AMC) or bits (HAQ)."""
        if kind == "g":
            return self.lbound + a * (1 - self.lbound)
        return action_to_bits(a, self.b_min, self.b_max)

    def _action(self, kind: str, raw) -> float:
        """The inverse of :meth:`_raw`: a keep ratio or bits -> the action
        in [0, 1] that replays it."""
        if kind == "g":
            return float(np.clip((raw - self.lbound) / (1 - self.lbound),
                                 0, 1))
        return bits_to_action(raw, self.b_min, self.b_max)

    def unwalled(self, actions) -> tuple:
        """``(counts, bits)`` of one action per step, without the wall."""
        point = self._dense_point()
        for t, (kind, _) in enumerate(self.slots):
            a = float(np.clip(actions[t], 0.0, 1.0))
            raw = self._raw(kind, a)
            self._set(point, t, self.propose(t, raw))
        return point

    def within_budget(self, actions, tol: float = 1e-4) -> list:
        """``actions`` (clipped to [0, 1]) less the smallest common shift
        (bisection) for which the point meets the budget before the wall,
        so an overspend is taken from every step alike rather than from
        the last ones (the wall drives them to their lowest values)."""
        a = np.clip(np.asarray(actions, np.float64), 0.0, 1.0)
        limit = self.budget_cost * (1 + 1e-9)

        def fits(shift):
            return self._cost(*self.unwalled(np.clip(a - shift, 0, 1))) \
                <= limit

        if fits(0.0):
            return a.tolist()
        lo, hi = 0.0, 1.0  # shift 1: the lowest point, checked feasible
        while hi - lo > tol:
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if fits(mid) else (mid, hi)
        return np.clip(a - hi, 0.0, 1.0).tolist()

    def values(self, point) -> dict:
        out = {}
        for (kind, k), name in zip(self.slots, self.names):
            if kind == "g":
                out[name] = float(point[0][k] / self.space.sizes[k])
            else:
                out[name] = int(point[1][k, 0 if kind == "w" else 1])
        return out

    def actions(self, keep: dict, bits: dict) -> list:
        """The actions that replay ``(keep, bits)`` (a warm start)."""
        out = []
        for kind, k in self.slots:
            if kind == "g":
                g = self.space.groups[k]
                out.append(self._action(kind, keep.get(g.id, g.size) / g.size))
            else:
                pair = bits.get(self.space.layers[k], _FIXED)
                out.append(self._action(kind, pair[0 if kind == "w" else 1]))
        return out

    # -- the episode ---------------------------------------------------------
    def _features(self) -> np.ndarray:
        specs = self.space.table.specs
        rows = []
        for t, (kind, k) in enumerate(self.slots):
            if kind == "g":
                g = self.space.groups[k]
                s = next((specs[m.layer] for m in g.producers
                          if m.layer in specs), None)
            else:
                s = specs[self.space.layers[k]]
            code = {"g": 0.0, "w": 0.5, "a": 1.0}[kind]
            if s is None:
                rows.append([t, code, 0, 0, 1, 1, 0])
            else:
                rows.append([t, code, s.cin, s.cout, s.kernel[0],
                             s.stride[0], s.weight_count])
        return minmax_columns(rows)

    def state(self, t: int, point, prev: float) -> np.ndarray:
        cur = self._cost(*point) / self.full_cost
        return np.concatenate([self._static[t], [1.0 - cur, self.budget,
                                                 prev]]).astype(np.float32)

    def rollout(self, policy):
        """One episode: ``(values, transitions, info)``; stored actions are
        the executed (walled) ones, as AMC stores them."""
        point = self._dense_point()
        prev, states, actions = 1.0, [], []
        for t, (kind, k) in enumerate(self.slots):
            s = self.state(t, point, prev)
            a = float(np.clip(np.asarray(policy(s), np.float64).reshape(-1)
                              [0], 0.0, 1.0))
            raw = self._raw(kind, a)
            v = min(self.propose(t, raw), self.max_value(t, point))
            self._set(point, t, v)
            prev = self._action(kind, v / self.space.sizes[k]
                                if kind == "g" else v)
            states.append(s)
            actions.append([prev])
        final = self.state(len(self.slots) - 1, point, prev)
        n = len(states)
        transitions = [(states[j], actions[j],
                        states[j + 1] if j + 1 < n else final, j == n - 1)
                       for j in range(n)]
        cost = self._cost(*point)
        return self.values(point), transitions, {
            "cost": cost, "cost_ratio": cost / self.full_cost}
