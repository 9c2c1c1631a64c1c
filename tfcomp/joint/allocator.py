"""Joint pruning + quantization to one hardware budget: kept channels per
group and ``(w_bits, a_bits)`` per layer chosen together on one cost model.

Problem. Minimise ``sum_g P_g(k_g) + sum_l Q_l(w_l)`` subject to
``cost(k, w, a) <= budget * cost(dense, 8/8)``, where ``P_g(k)`` is the
pruning sensitivity of group ``g`` kept at ``k`` channels
(:func:`tfcomp.pruning.prune_sensitivity.sensitivity`, after AMC's
least-squares refit), ``Q_l(w)`` the quantization sensitivity of layer
``l`` at ``w`` weight bits (:func:`tfcomp.quantization.sensitivity.
sensitivity`) and the cost that of :class:`~tfcomp.hardware.CostTable` at
the pruned geometry (:class:`tfcomp.tuners.joint_space.JointSpace`). Both
sensitivities are in one unit: ``objective="distortion"`` pairs the output
MSE after the refit with MCT's output distortion (of the weights plus the
layer's input activations, since a = w quantizes both:
:func:`measure_quant_sensitivity`), ``objective="loss"`` the
loss increase after the refit with HAWQ-V2's expected loss increase. The
sum assumes the damages add up (as HAWQ / MCT assume across layers) and
measures quantization sensitivity on the dense model.

A layer's cost depends on its producer's kept channels, its own and its
bits, so the cost is not linear in the choices. Two solvers:

* ``method="exact"`` (the default): one integer program with channels and
  bits free at once, the layer costs lifted to the product of the options
  of the groups a layer depends on (at most its producer's and its own)
  and its pairs (:mod:`tfcomp.joint.ilp`). The lifting is exact, so this
  is the global optimum of the additive model; HiGHS proves it
  (``result.gap["exact_proved_optimal"]``) in about a second on ResNet-20
  x BISMO (12 groups x 4 options, 22 layers x 7 widths). If
  ``time_limit`` stops it first, the alternating solver runs as well and
  the better point is kept.
* ``method="alternating"`` (what the issue proposed): from several starts,
  alternate two exact integer programs until neither changes the point:
  bits given channels (:func:`~tfcomp.hardware.allocate_bits` on the
  pruned model, the HAWQ-V3 program) and channels given bits (the lifted
  program with the bits fixed); keep the best. Each step is exact for its
  subproblem and the current point stays feasible, so the objective never
  rises, but the fixed point is only a block-coordinate optimum. Starts:
  dense channels (bits first), uniform 8/8 and each uniform width
  (channels first), up to six uniform keep ratios (bits first) and
  ``starts`` random keep counts. Its optimality gap (``check_gap=True``
  solves the exact program too and reports it in ``result.gap``): 0 on
  the tests' brute-force cases; 1.2% of the objective on an untrained
  ResNet-20 at 25% of BISMO's 8/8 latency (4.60 vs 4.55), which is why
  it is not the default.

Balance of the two terms: the program is solved for each weight of the
pruning term in ``prune_weights`` (1, 1/4, 1/16 by default) and, with
calibration data, the point whose pruned, refit, quantized model agrees
best with the float model wins (:mod:`tfcomp.joint.select` says why: the
refit-only MSE overstates what a fine-tune cannot recover). Without data
only the first weight is solved.

Reference: He et al., AMC, arXiv:1802.03494 (per-layer pruning with
least-squares refit, the budget wall); Wang et al., HAQ, arXiv:1811.08886
(budget as a fraction of the 8/8 cost, first / last layer 8-bit); Yao et
al., HAWQ-V3, arXiv:2011.10680 (exact bit allocation).

Example:
    >>> res = compress(model, (x[:256], y[:256]), hardware=BISMO(),
    ...                budget=0.25)
    >>> small = res.model                       # pruned, refit
    >>> qat = tfcomp.quantize_model(small, bits=res.bits)
"""

from __future__ import annotations

import math
import time
import warnings

import numpy as np

from tfcomp._io import as_arrays, check_number, check_positive_int
from tfcomp.graph import DependencyGraph
from tfcomp.hardware import allocate_bits
from tfcomp.joint.ilp import JointProblem
from tfcomp.joint.result import JointResult
from tfcomp.joint.select import (
    DEFAULT_PRUNE_WEIGHTS,
    build_point,
    check_prune_weights,
    select_by_agreement,
)
from tfcomp.pruning.plan import Plan
from tfcomp.pruning.prune_sensitivity import PruningSensitivity, check_keep_ratios
from tfcomp.pruning.prune_sensitivity import sensitivity as prune_sens
from tfcomp.pruning.reconstruction.engine import reconstructible_groups
from tfcomp.pruning.surgery import prune_channels
from tfcomp.pruning.targets import n_keep, unit_round_to
from tfcomp.quantization.sensitivity import Sensitivity, combined_sensitivity
from tfcomp.quantization.sensitivity import sensitivity as quant_sens
from tfcomp.quantization.ties import residual_ties
from tfcomp.tuners.joint_space import JointSpace

__all__ = ["METHODS", "OBJECTIVES", "apply_keep", "compress",
           "joint_problem", "measure_quant_sensitivity"]

METHODS = ("exact", "alternating")
OBJECTIVES = {"distortion": ("reconstruction", "distortion"),
              "loss": ("loss", "hessian")}
_TOL = 1e-9


def _candidate_bits(bits, hardware) -> list:
    if bits is None:
        widths = hardware.distinct_bits() if hardware is not None and \
            hasattr(hardware, "distinct_bits") else range(2, 9)
        bits = [b for b in widths if 2 <= b <= 8] or [8]
    if isinstance(bits, (int, np.integer)) and not isinstance(bits, bool):
        bits = [bits]
    out = []
    for b in bits:
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)) \
                or not 1 <= int(b) <= 8:
            raise ValueError("bits must hold integer weight bit-widths in "
                             f"[1, 8]. Received: bits={bits!r}")
        out.append(int(b))
    return sorted(set(out))


def joint_problem(model, prune_sensitivity, quant_sensitivity, *,
                  resource="latency", hardware=None, bits=None,
                  a_bits="same", first_last_8bit=True, tie=None):
    """The :class:`~tfcomp.joint.ilp.JointProblem` of ``model`` (what
    :func:`compress` solves; tests and the benchmark use it directly).

    Example:
        >>> prob = joint_problem(model, ps, qs, hardware=BISMO())
    """
    if not isinstance(prune_sensitivity, PruningSensitivity):
        raise TypeError("prune_sensitivity must be a PruningSensitivity. "
                        f"Received: {type(prune_sensitivity).__name__}")
    if not isinstance(quant_sensitivity, Sensitivity) or \
            quant_sensitivity.kind != "weights":
        raise TypeError("quant_sensitivity must be a weights Sensitivity. "
                        f"Received: {quant_sensitivity!r}")
    graph = DependencyGraph(model)
    missing = [g for g in prune_sensitivity.groups if g not in graph]
    if missing:
        raise ValueError(f"prune_sensitivity names groups {missing[:5]} that"
                         f" model {model.name!r} does not have; measure it "
                         "on this model.")
    space = JointSpace(model, resource, hardware, prune_sensitivity.groups,
                       graph=graph)
    if set(quant_sensitivity.layers) != set(space.layers):
        raise ValueError(
            f"quant_sensitivity does not match model {model.name!r}: it has "
            f"layers {quant_sensitivity.layers[:6]}..., the model "
            f"{space.layers[:6]}...; measure it on this model.")
    widths = _candidate_bits(bits, hardware)
    absent = [b for b in widths if b not in quant_sensitivity.bits]
    if absent:
        raise ValueError(f"bits {absent} are not in quant_sensitivity's bits"
                         f" {quant_sensitivity.bits}; measure them.")
    pairs = [(b, b if a_bits == "same" else int(a_bits)) for b in widths]
    options, psens = [], []
    for g in prune_sensitivity.groups:
        opts = prune_sensitivity.options(g)
        options.append([c for c, _ in opts])
        psens.append([v for _, v in opts])
    fixed = set()
    if first_last_8bit:
        fixed = {space.layers[0], space.layers[-1]}
    ties = []
    if tie == "residual":
        ties = residual_ties(model)
    elif tie is not None:
        if isinstance(tie, str):
            raise ValueError("tie must be None, 'residual' or a list of "
                             f"groups of layer names. Received: tie={tie!r}")
        ties = [list(t) for t in tie]
    for t in ties:
        if fixed & set(t):
            fixed |= set(t)
    lpairs, qsens = [], []
    for name in space.layers:
        ps = [space.table.fixed] if name in fixed else pairs
        lpairs.append(ps)
        qsens.append([quant_sensitivity.value(name, w)
                      if w in quant_sensitivity.bits else 0.0
                      for w, _ in ps])
    index = {n: i for i, n in enumerate(space.layers)}
    ties = [[index[n] for n in t if n in index] for t in ties]
    prob = JointProblem(space, options, psens, lpairs, qsens, ties)
    prob.widths, prob.fixed, prob.tie = widths, fixed, tie
    prob.first_last_8bit = first_last_8bit
    prob.quant_sensitivity = quant_sensitivity
    return prob


# ------------------------------------------------------------- solvers


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


# ------------------------------------------------------------- the verb


def compress(model, calibration_data=None, hardware=None,
             resource: str = "latency", budget: float = 0.25,
             ratios=(0.25, 0.5, 0.75), bits=None, starts: int = 4, *,
             method: str = "exact", objective: str = "distortion",
             prune_sensitivity: PruningSensitivity | None = None,
             quant_sensitivity: Sensitivity | None = None,
             first_last_8bit: bool = True, tie=None, a_bits="same",
             selector: str = "l1", round_to: int = 1, num_samples: int = 256,
             prune_weights=DEFAULT_PRUNE_WEIGHTS,
             check_gap: bool = True, time_limit: float | None = 60.0,
             refit: bool = True, validation_data=None,
             seed: int = 0) -> JointResult:
    """Kept channels per group and bits per layer minimising summed pruning +
    quantization sensitivity under one hardware budget (module docstring).

    Args:
        model: a trained functional / Sequential model (left untouched).
        calibration_data: inputs or ``(x, y)`` for the sensitivities and
            the least-squares refit (``objective="loss"`` needs labels);
            may be None when both sensitivities are given and
            ``refit=False``.
        hardware: a ``HardwareModel`` (``BISMO()``, ``BitFusion()``) or
            ``LatencyTable``, for latency / energy.
        resource: ``"latency"``, ``"energy"``, ``"size"`` or ``"bops"``.
        budget: allowed cost as a fraction of the dense model at 8/8.
        ratios: keep ratios measured per group (whole groups are always an
            option).
        bits: weight widths searched (default the hardware's
            ``distinct_bits()`` in [2, 8]); activations follow ``a_bits``.
        starts: random starts of the alternating solver (on top of the
            deterministic ones).
        method: ``"exact"`` (default) or ``"alternating"``.
        objective: ``"distortion"`` (output MSE) or ``"loss"``.
        prune_sensitivity, quant_sensitivity: measured tables to reuse.
        first_last_8bit, tie, a_bits: as :func:`~tfcomp.hardware.
            allocate_bits` (HAQ's first / last 8-bit rule by default).
        selector, round_to, num_samples: of the pruning sensitivity and
            the refit.
        prune_weights: weights of the pruning term tried (the first alone
            without calibration data); the points found are measured and
            the one whose quantized, pruned model agrees best with the
            float model wins (:mod:`tfcomp.joint.select`).
        validation_data: held-out inputs (or ``(x, y)``; labels unused) the
            candidates' agreement is measured on; default the calibration
            images (in-sample: the refit fitted them).
        check_gap: with ``method="alternating"``, also solve the exact
            program and report the gap.
        time_limit: seconds per exact program (None: no limit).
        refit: build ``result.model``: the pruned model with the chosen
            channels selected and refit group by group (AMC's step).
        seed: seeds the random starts and the refit samples.

    Returns:
        A :class:`~tfcomp.joint.result.JointResult` (``.plan``, ``.bits``,
        ``.keep``, ``.cost``, ``.sensitivity``, ``.gap``, ``.model``).

    Raises:
        ValueError: a budget below the cheapest reachable cost (the message
            gives it), an unknown method / objective / resource,
            sensitivities of another model.

    Example:
        >>> res = compress(model, x[:256], hardware=BISMO(), budget=0.25)
        >>> res.bits, res.keep, res.cost
    """
    start_time = time.perf_counter()
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}. Received: "
                         f"method={method!r}")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {tuple(OBJECTIVES)}. "
                         f"Received: objective={objective!r}")
    budget = check_number(budget, "budget", 0, min_open=True,
                          hint="a fraction of the dense 8/8 cost")
    starts = check_positive_int(starts, "starts", minimum=0)
    weights = check_prune_weights(prune_weights)
    pmethod, qmethod = OBJECTIVES[objective]
    x = y = None
    if calibration_data is not None:
        measure = prune_sensitivity is None or quant_sensitivity is None
        x, y = as_arrays(calibration_data, model=model,
                         max_items=num_samples,
                         need_labels=objective == "loss" and measure,
                         name="calibration_data")
    elif prune_sensitivity is None or quant_sensitivity is None or refit:
        raise ValueError("calibration_data is needed to measure the "
                         "sensitivities and to refit (give both "
                         "sensitivities and refit=False to go without). "
                         "Received: calibration_data=None")
    data = x if y is None else (x, y)
    x_val = None
    if validation_data is not None:
        x_val, _ = as_arrays(validation_data, model=model,
                             name="validation_data")
    if prune_sensitivity is None:  # fail fast, before measuring
        _check_reachable(model, hardware, resource, budget, ratios, bits,
                         round_to, first_last_8bit, a_bits)
    if prune_sensitivity is None:
        prune_sensitivity = prune_sens(model, data, ratios, pmethod,
                                       selector=selector, round_to=round_to,
                                       num_samples=num_samples, seed=seed)
    if quant_sensitivity is None:
        quant_sensitivity = measure_quant_sensitivity(
            model, data, qmethod, _candidate_bits(bits, hardware) + [8],
            activations=a_bits == "same", num_samples=num_samples,
            seed=seed)
    prob = joint_problem(model, prune_sensitivity, quant_sensitivity,
                         resource=resource, hardware=hardware, bits=bits,
                         a_bits=a_bits, first_last_8bit=first_last_8bit,
                         tie=tie)
    space = prob.space
    limit = budget * space.full_cost * (1 + _TOL)
    cheapest = _min_cost(prob)
    if cheapest > limit:
        raise _unreachable(budget, resource, cheapest / space.full_cost)
    if x is None:  # nothing to measure the candidates on
        weights = weights[:1]
    runs = []
    for w in weights:
        opt, pick, gap, report = _solve(model, prob.weighted(w), limit,
                                        method, check_gap, starts, seed,
                                        time_limit)
        total, ps, qs = prob.objective(opt, pick)
        runs.append({"prune_weight": w, "opt": opt, "pick": pick,
                     "gap": gap, "starts": report, "objective": total,
                     "prune_part": ps, "quant_part": qs})
    chosen, built = runs[0], None
    distinct = {(tuple(r["opt"]), tuple(r["pick"])) for r in runs}
    if len(distinct) > 1:
        chosen, built = select_by_agreement(model, prob, runs, x, selector,
                                            seed, x_eval=x_val)
    opt, pick, gap = chosen["opt"], chosen["pick"], chosen["gap"]
    total, ps, qs = chosen["objective"], chosen["prune_part"], \
        chosen["quant_part"]
    report = chosen["starts"]
    counts = prob.counts(opt)
    keep = {g: int(k) for g, k in zip(space.group_ids, counts)}
    bits_out = prob.bits(pick)
    if built is not None and refit:
        plan, small = built
    else:
        plan, small = build_point(model, space.graph, keep, x, refit, selector,
                            seed)
    cost = space.total(counts, bits_out)
    meta = {"method": method, "objective": objective, "resource": resource,
            "budget": budget, "starts": report,
            "prune_weight": chosen["prune_weight"],
            "selected_on": ("calibration" if x_val is None
                            else f"validation ({len(x_val)})"),
            "candidates": [{k: r[k] for k in ("prune_weight", "objective",
                                              "agreement", "cost")
                            if k in r} for r in runs],
            "hardware": getattr(hardware, "name", None),
            "seconds": time.perf_counter() - start_time}
    plan.meta.update({"method": "joint", "keep": keep,
                      "predicted_cost_ratio": cost / space.full_cost})
    return JointResult(plan=plan, bits=bits_out, keep=keep,
                       cost=cost / space.full_cost, budget=budget,
                       resource=resource, full_cost=space.full_cost,
                       sensitivity=total, prune_part=ps, quant_part=qs,
                       gap=gap, prune_sensitivity=prune_sensitivity,
                       quant_sensitivity=quant_sensitivity, model=small,
                       min_budget=cheapest / space.full_cost, meta=meta)


def _solve(model, prob, limit, method, check_gap, starts, seed,
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


def measure_quant_sensitivity(model, data, method="distortion", bits=None,
                              activations=True, num_samples=256,
                              seed=0) -> Sensitivity:
    """The quantization sensitivity :func:`compress` uses: the weights'
    (``tfcomp.quantization.sensitivity``), plus, with ``activations``
    (a = w), each layer's input activations' at the same width, summed per
    layer and width (a width then quantizes both;
    :func:`tfcomp.quantization.combined_sensitivity`). ``"distortion"``:
    the output distortion of each; ``"hessian"``: HAWQ-V2's weight and
    activation Hessian terms (until issue #19 the weights' alone).

    Example:
        >>> qs = measure_quant_sensitivity(model, x[:128], bits=[2, 4, 8])
    """
    if activations:
        return combined_sensitivity(model, data, method, bits,
                                    num_samples=num_samples, seed=seed)
    return quant_sens(model, data, method, bits, num_samples=num_samples,
                      seed=seed)


def _unreachable(budget, resource, ratio) -> ValueError:
    return ValueError(
        f"budget={budget} of the dense 8/8 {resource} cannot be reached: "
        f"every group at its smallest kept count and every layer at its "
        f"cheapest width costs {ratio:.4f} of it. The minimum budget is "
        f"{math.ceil(ratio * 1e4) / 1e4} (add smaller keep ratios or "
        "narrower widths to go further).")


def _check_reachable(model, hardware, resource, budget, ratios, bits,
                     round_to, first_last_8bit, a_bits) -> None:
    """The budget check of :func:`compress` from the keep counts the
    sensitivity will have, before anything is measured."""
    graph = DependencyGraph(model)
    try:
        todo, _ = reconstructible_groups(graph, what="compress")
    except ValueError:
        return  # the sensitivity raises the clear error
    keep = [n_keep(g.size, 1.0 - min(check_keep_ratios(ratios)),
                   unit_round_to(g, round_to)) for g in todo]
    space = JointSpace(model, resource, hardware, todo, graph=graph)
    pairs = [(b, b if a_bits == "same" else int(a_bits))
             for b in _candidate_bits(bits, hardware)]
    fixed = {space.layers[0], space.layers[-1]} if first_last_8bit else ()
    cost = space.total(keep, {n: space.table.fixed if n in fixed else min(
        pairs, key=lambda p, n=n: space.total(keep, {n: p}))
        for n in space.layers})
    if cost > budget * space.full_cost * (1 + _TOL):
        raise _unreachable(budget, resource, cost / space.full_cost)


def _min_cost(prob) -> float:
    """Cost with every group at its smallest option and every layer at its
    cheapest pair at that geometry."""
    space = prob.space
    counts = np.array([o[0] for o in prob.options], np.int64)
    bits = {}
    for i, n in enumerate(space.layers):
        bits[n] = min(prob.pairs[i], key=lambda p, n=n: space.total(
            counts, {**bits, n: p}))
    return space.total(counts, bits)


def apply_keep(model, keep: dict, calibration_data, selector: str = "l1",
               seed: int = 0, num_samples: int = 256) -> tuple:
    """``(plan, pruned model)``: each group of ``keep`` (``{group id:
    kept channels}``) pruned in topological order with AMC's per-layer
    step (selection, then least-squares refit of its consumers on
    ``calibration_data``), as :func:`compress` builds ``result.model``.

    Example:
        >>> plan, small = apply_keep(model, res.keep, x[:256])
    """
    x, _ = as_arrays(calibration_data, model=model, max_items=num_samples,
                     name="calibration_data")
    graph = DependencyGraph(model)
    return build_point(model, graph, keep, x, True, selector, seed)
