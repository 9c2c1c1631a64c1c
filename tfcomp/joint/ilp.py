"""The joint integer program over kept channels and bit pairs.

Variables: ``x[g, o]`` (group ``g`` keeps its ``o``-th option, binary, one
per group), ``z[l, p]`` (layer ``l`` runs pair ``p``, binary, one per
layer) and, for every costed unit ``u``, ``y[u, c]`` over the cells ``c``
of the product of the options of the groups ``u`` depends on (at most its
producer's and its own) and its pairs. Marginal constraints tie ``y`` to
``x`` and ``z``: ``sum_{c: o_d(c) = o} y[u, c] = x[d, o]`` for every
dependency ``d`` and ``sum_{c: p(c) = p} y[u, c] = z[l, p]``. With ``x``
and ``z`` one-hot these force ``y[u, .]`` onto the single cell that matches
(``y >= 0``), so ``y`` may stay continuous and ``sum cost[u, c] y[u, c]``
is the exact cost: the lifted program is an exact linear formulation of
the non-linear cost ``cost_u(k_in, k_out, w, a)``. Tied layers share
pairs (``z[a, p] = z[b, p]``). Solved by ``scipy.optimize.milp`` (HiGHS).

A unit after concatenations depends on many groups through the sum of
the input channels they remove only (``JointSpace.cells`` then returns
``SummedInputs``): its cells run over the achievable sums ``v``, tied by
the same marginal constraints to the "mass" of ``v`` in a flow through
partial sums (:class:`tfcomp.joint.sum_chain.SumChains`), which is one-hot
on the sum the options give: still exact, and still only ``x`` and ``z``
integer.

Restricting the allowed options of ``x`` (one per group) or of ``z`` turns
it into the two subproblems of the alternating solver (channels given bits,
bits given channels); leaving both free solves the joint problem exactly.

Reference: the standard lifting of products of binary variables (e.g.
Sherali & Adams 1990; for one-hot blocks, the "marginal" / local polytope
form); HAWQ-V3, arXiv:2011.10680 (the bits-only program).

Example:
    >>> prob = JointProblem(space, options, psens, pairs, qsens, ties)
    >>> pick = prob.solve(limit)
"""

from __future__ import annotations

import copy

import numpy as np

from tfcomp.joint.sum_chain import SumChains

__all__ = ["JointProblem"]


class JointProblem:
    """Options, sensitivities and costs of the joint problem.

    Args:
        space: a :class:`tfcomp.tuners.joint_space.JointSpace`.
        options: per group, allowed kept counts (ascending).
        psens: per group, the pruning sensitivity of each option.
        pairs: per layer (``space.layers`` order), allowed ``(w, a)``.
        qsens: per layer, the quantization sensitivity of each pair.
        ties: lists of layer indices sharing pairs (same ``pairs`` lists).

    Example:
        >>> prob.objective(pick)
    """

    def __init__(self, space, options, psens, pairs, qsens, ties=()):
        self.space = space
        self.options = [list(o) for o in options]
        self.psens = [np.asarray(s, np.float64) for s in psens]
        self.pairs = [[tuple(p) for p in ps] for ps in pairs]
        self.qsens = [np.asarray(s, np.float64) for s in qsens]
        self.ties = [list(t) for t in ties if len(t) > 1]
        for t in self.ties:
            if any(self.pairs[i] != self.pairs[t[0]] for i in t):
                raise ValueError("tied layers must have the same candidate "
                                 "pairs.")

    def weighted(self, prune_weight: float) -> JointProblem:
        """A copy whose pruning sensitivities are scaled by
        ``prune_weight`` (the balance of the two terms)."""
        new = copy.copy(self)
        new.psens = [s * float(prune_weight) for s in self.psens]
        return new

    # -- points --------------------------------------------------------------
    def counts(self, opt) -> np.ndarray:
        return np.array([self.options[g][o] for g, o in enumerate(opt)],
                        np.int64)

    def bits(self, pick) -> dict:
        return {n: self.pairs[i][p]
                for i, (n, p) in enumerate(zip(self.space.layers, pick))}

    def objective(self, opt, pick) -> tuple:
        """``(total, pruning part, quantization part)``."""
        ps = float(sum(self.psens[g][o] for g, o in enumerate(opt)))
        qs = float(sum(self.qsens[i][p] for i, p in enumerate(pick)))
        return ps + qs, ps, qs

    def cost(self, opt, pick) -> float:
        """Absolute cost of a point (the space's pricing)."""
        return self.space.total(self.counts(opt), self.bits(pick))

    # -- the program ---------------------------------------------------------
    def solve(self, limit: float, opt_allowed=None, pair_allowed=None,
              time_limit: float | None = None):
        """The point minimising the summed sensitivity with cost <=
        ``limit``, among the allowed options (None = all).

        Returns:
            ``(opt, pick, optimal)``: option index per group, pair index
            per layer, and whether HiGHS proved optimality (False after
            ``time_limit`` with a feasible point); None when infeasible.
        """
        from scipy.optimize import Bounds, LinearConstraint, milp
        from scipy.sparse import coo_matrix

        ng, nl = len(self.options), len(self.pairs)
        xa = [list(range(len(o))) if opt_allowed is None or
              opt_allowed[g] is None else list(opt_allowed[g])
              for g, o in enumerate(self.options)]
        za = [list(range(len(p))) if pair_allowed is None or
              pair_allowed[i] is None else list(pair_allowed[i])
              for i, p in enumerate(self.pairs)]
        col = 0
        xcol, zcol = [], []
        for g in range(ng):
            xcol.append({o: col + k for k, o in enumerate(xa[g])})
            col += len(xa[g])
        for i in range(nl):
            zcol.append({p: col + k for k, p in enumerate(za[i])})
            col += len(za[i])
        n_int = col
        c = np.zeros(col)
        for g in range(ng):
            for o, j in xcol[g].items():
                c[j] = self.psens[g][o]
        for i in range(nl):
            for p, j in zcol[i].items():
                c[j] = self.qsens[i][p]
        rows, cols, vals, lo, hi = [], [], [], [], []
        r = 0

        def row(entries, low, high):
            nonlocal r
            for j, v in entries:
                rows.append(r)
                cols.append(j)
                vals.append(v)
            lo.append(low)
            hi.append(high)
            r += 1

        for g in range(ng):
            row([(j, 1.0) for j in xcol[g].values()], 1.0, 1.0)
        for i in range(nl):
            row([(j, 1.0) for j in zcol[i].values()], 1.0, 1.0)
        for t in self.ties:
            for i in t[1:]:
                for p in za[t[0]]:
                    if p in zcol[i]:
                        row([(zcol[t[0]][p], 1.0), (zcol[i][p], -1.0)],
                            0.0, 0.0)
                    else:
                        row([(zcol[t[0]][p], 1.0)], 0.0, 0.0)
        cost_cols, cost_vals = [], []

        def new_columns(n):
            nonlocal col
            col += n
            return col - n

        chains = SumChains(new_columns, row,
                           lambda g, local: xcol[g][xa[g][local]])
        opts = [[self.options[d][o] for o in xa[d]] for d in range(ng)]
        pairs = [[self.pairs[i][p] for p in za[i]] for i in range(nl)]
        for u, (_, layer) in enumerate(self.space.units):
            lidx = self.space.layers.index(layer) if layer else None
            cells = self.space.cells(u, opts, pairs)
            combos = cells.combos
            base = col
            col += len(combos)
            cost_cols.extend(range(base, col))
            cost_vals.extend(cells.costs)
            for k, d in enumerate(cells.deps):
                by = {}
                for m, cb in enumerate(combos):
                    by.setdefault(cb[k], []).append(base + m)
                for local, members in by.items():
                    row([(j, 1.0) for j in members] +
                        [(xcol[d][xa[d][local]], -1.0)], 0.0, 0.0)
            if cells.summed is not None:
                mass = chains.masses(cells.summed)
                k = len(cells.deps)
                by = {}
                for m, cb in enumerate(combos):
                    by.setdefault(cb[k], []).append(base + m)
                for bi, members in by.items():
                    row([(j, 1.0) for j in members] + [
                        (j, -cf) for v in cells.summed.buckets[bi]
                        for j, cf in mass[v]], 0.0, 0.0)
            if lidx is not None:
                by = {}
                for m, cb in enumerate(combos):
                    by.setdefault(cb[-1], []).append(base + m)
                for local, members in by.items():
                    row([(j, 1.0) for j in members] +
                        [(zcol[lidx][za[lidx][local]], -1.0)], 0.0, 0.0)
        c = np.concatenate([c, np.zeros(col - n_int)])
        integrality = np.r_[np.ones(n_int), np.zeros(col - n_int)]
        scale_s = float(np.max(np.abs(c))) or 1.0
        full = self.space.full_cost
        A = coo_matrix((vals, (rows, cols)), shape=(r, col)).tocsr()
        budget_row = coo_matrix(
            (np.asarray(cost_vals) / full,
             (np.zeros(len(cost_cols), int), cost_cols)),
            shape=(1, col)).tocsr()
        rhs = (limit - self.space.constant) / full
        options = {"mip_rel_gap": 0.0}
        if time_limit is not None:
            options["time_limit"] = float(time_limit)
        for _ in range(5):
            res = milp(c / scale_s, integrality=integrality,
                       bounds=Bounds(0, 1),
                       constraints=[LinearConstraint(A, lo, hi),
                                    LinearConstraint(budget_row, -np.inf,
                                                     rhs)],
                       options=options)
            if res.x is None:
                if res.status == 2:  # infeasible
                    return None
                if res.status == 1:  # time limit, no point found
                    return None
                raise RuntimeError(f"The joint integer program failed: "
                                   f"{res.message}")
            sol = np.round(res.x)
            opt = [xa[g][int(np.argmax([sol[j] for j in xcol[g].values()]))]
                   for g in range(ng)]
            pick = [za[i][int(np.argmax([sol[j] for j in zcol[i].values()]))]
                    for i in range(nl)]
            over = self.cost(opt, pick) - limit
            if over <= 0:
                return opt, pick, res.status == 0
            rhs -= over / full + 1e-12  # HiGHS' feasibility tolerance
        raise RuntimeError("The joint integer program could not meet the "
                           "budget within the solver's tolerance.")
