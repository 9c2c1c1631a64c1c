"""The solvers of :func:`tfcomp.joint.compress`: the exact lifted program
(:mod:`tfcomp.joint.ilp`) and the alternating one (bits given channels with
:func:`~tfcomp.hardware.allocate_bits`, channels given bits with the lifted
program, from several starts, until neither changes the point).

Reference: Yao et al., HAWQ-V3, arXiv:2011.10680 (exact bit allocation);
He et al., AMC, arXiv:1802.03494 (the budget wall).

Example:
    >>> opt, pick, gap, starts = solve(model, prob, limit, "exact", True,
    ...                                4, 0, 60.0)
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from tfcomp.hardware import allocate_bits
from tfcomp.pruning.plan import Plan
from tfcomp.pruning.surgery import prune_channels

__all__ = ["solve"]

_TOL = 1e-9

class _Alternating:
    """The two exact subproblems and the loop between them."""

    def __init__(self, model, prob, limit, time_limit):
        self.model, self.prob, self.limit = model, prob, limit
        self.time_limit = time_limit
        self.graph = prob.space.graph
        self._bits_cache: dict = {}
        self.solves = 0

    def channels_given_bits(self, pick):
        self.solves += 1
        out = self.prob.solve(self.limit, pair_allowed=[[p] for p in pick],
                              time_limit=self.time_limit)
        return None if out is None else out[0]

    def bits_given_channels(self, opt):
        """``allocate_bits`` on the pruned geometry (cached per counts)."""
        key = tuple(opt)
        if key in self._bits_cache:
            return self._bits_cache[key]
        self.solves += 1
        prob, space = self.prob, self.prob.space
        counts = prob.counts(opt)
        removed = {g.id: g.pick_removal(np.arange(g.size)[::-1],
                                        g.size - int(k))
                   for g, k in zip(space.groups, counts) if k < g.size}
        with warnings.catch_warnings():  # geometry only: no compile state
            warnings.simplefilter("ignore")
            small = prune_channels(self.model,
                                   Plan.from_removed(self.graph, removed))
        full = space.total(counts, {})
        try:
            alloc = allocate_bits(
                small, prob.quant_sensitivity, space.resource, space.hardware,
                budget=self.limit * (1 - 2 * _TOL) / full,
                candidates=[p for p in prob.pairs[_free(prob)]]
                if _free(prob) is not None else None,
                first_last_8bit=prob.first_last_8bit, tie=prob.tie)
        except ValueError as e:
            if "cannot be reached" not in str(e):
                raise
            alloc = None
        if alloc is not None and abs(alloc.full_cost - full) > 1e-6 * full:
            raise RuntimeError(
                "internal: JointSpace and CostTable price the pruned model "
                f"differently ({full} vs {alloc.full_cost}).")
        pick = None
        if alloc is not None:
            pick = [prob.pairs[i].index(tuple(alloc[n]))
                    for i, n in enumerate(space.layers)]
        self._bits_cache[key] = pick
        return pick

    def run(self, kind: str, value, max_rounds: int = 20):
        """Alternates from a start; returns ``(opt, pick, rounds)`` or None
        when the start is infeasible."""
        prob = self.prob
        if kind == "channels":
            opt = list(value)
            pick = self.bits_given_channels(opt)
            if pick is None:
                return None
        else:
            pick = list(value)
            opt = None
        best = None
        for rounds in range(1, max_rounds + 1):
            new_opt = self.channels_given_bits(pick)
            if new_opt is None:
                return best
            new_pick = self.bits_given_channels(new_opt)
            if new_pick is None:  # cannot happen: pick is feasible
                new_pick = pick
            point = (new_opt, new_pick)
            value_new = prob.objective(*point)[0]
            if best is not None and value_new >= best[3] - 1e-15 * (
                    1 + abs(best[3])):
                return best[:3]
            best = (new_opt, new_pick, rounds, value_new)
            if new_opt == opt and new_pick == pick:
                break
            opt, pick = new_opt, new_pick
        return best[:3]


def _free(prob):
    """Index of a layer with the full candidate list (None: all fixed)."""
    for i, n in enumerate(prob.space.layers):
        if n not in prob.fixed:
            return i
    return None


def _starts(prob, n_random: int, seed: int) -> list:
    out = [("dense channels, bits first", "channels",
            [len(o) - 1 for o in prob.options])]
    free = _free(prob)
    widths = [] if free is None else list(range(len(prob.pairs[free])))
    for k in sorted(widths, reverse=True):
        pick = [k if len(ps) > 1 else 0 for ps in prob.pairs]
        w = prob.pairs[free][k] if free is not None else (8, 8)
        out.append((f"uniform {w[0]}/{w[1]} bits, channels first", "bits",
                    pick))
    ratios = sorted({c / opts[-1] for opts in prob.options for c in opts
                     if c < opts[-1]})
    for r in sorted(set(np.round(ratios, 2)), reverse=True)[:6]:
        opt = [int(np.argmin([abs(c / o[-1] - r) for c in o]))
               for o in prob.options]
        out.append((f"keep ratio {r:g}, bits first", "channels", opt))
    rng = np.random.default_rng(seed)
    for j in range(n_random):
        opt = [int(rng.integers(len(o))) for o in prob.options]
        out.append((f"random {j}, bits first", "channels", opt))
    return out


def solve(model, prob, limit, method, check_gap, starts, seed,
           time_limit) -> tuple:
    """``(opt, pick, gap, starts report)`` of one (weighted) problem."""
    report, exact, exact_s = [], None, None
    if method == "exact" or check_gap:
        t0 = time.perf_counter()
        exact = prob.solve(limit, time_limit=time_limit)
        exact_s = time.perf_counter() - t0
    candidates = []
    if exact is not None and method == "exact":
        candidates.append((exact[0], exact[1]))
    if method == "alternating" or exact is None or not exact[2]:
        alt = _Alternating(model, prob, limit, time_limit)
        for name, kind, value in _starts(prob, starts, seed):
            t0 = time.perf_counter()
            out = alt.run(kind, value)
            entry = {"start": name, "feasible": out is not None,
                     "seconds": time.perf_counter() - t0}
            if out is not None:
                entry.update(objective=prob.objective(out[0], out[1])[0],
                             rounds=out[2])
                candidates.append((out[0], out[1]))
            report.append(entry)
    if not candidates:
        raise RuntimeError("neither the exact program (time_limit="
                           f"{time_limit} s) nor any start of the "
                           "alternating solver found a point within the "
                           "budget; raise time_limit.")
    opt, pick = min(candidates, key=lambda c: prob.objective(*c)[0])
    total = prob.objective(opt, pick)[0]
    gap = {"method": method, "objective": total}
    if exact is not None:
        ex = prob.objective(exact[0], exact[1])[0]
        gap.update(exact=ex, exact_proved_optimal=bool(exact[2]),
                   alternating_runs=len(report),
                   exact_seconds=exact_s, gap=total - ex,
                   relative=(total - ex) / ex if ex > 0 else 0.0)
    return list(opt), list(pick), gap, report
