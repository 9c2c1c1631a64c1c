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
pruning term in ``prune_weights`` (1, 4, 1/4, 1/16 by default) and, with
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

import numpy as np

from tfcomp._io import as_arrays, check_number, check_positive_int
from tfcomp.graph import DependencyGraph
from tfcomp.hardware.names import get_hardware
from tfcomp.joint.alternating import solve
from tfcomp.joint.ilp import JointProblem
from tfcomp.joint.result import JointResult
from tfcomp.joint.select import (
    DEFAULT_PRUNE_WEIGHTS,
    AgreementScore,
    FinetuneScore,
    build_point,
    check_prune_weights,
    select_point,
)
from tfcomp.pruning.prune_sensitivity import PruningSensitivity, check_keep_ratios
from tfcomp.pruning.prune_sensitivity import sensitivity as prune_sens
from tfcomp.pruning.reconstruction.engine import reconstructible_groups
from tfcomp.pruning.targets import n_keep, unit_round_to
from tfcomp.quantization.sensitivity import Sensitivity, combined_sensitivity
from tfcomp.quantization.sensitivity import sensitivity as quant_sens
from tfcomp.quantization.ties import residual_ties
from tfcomp.tuners.joint_space import JointSpace

__all__ = ["METHODS", "OBJECTIVES", "SELECTIONS", "apply_keep", "compress",
           "joint_problem", "measure_quant_sensitivity"]

METHODS = ("exact", "alternating")
OBJECTIVES = {"distortion": ("reconstruction", "distortion"),
              "loss": ("loss", "hessian")}
SELECTIONS = ("agreement", "finetune")
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


# ------------------------------------------------------------- the verb


def compress(model, calibration_data=None, hardware=None,
             resource: str = "latency", budget: float = 0.25,
             ratios=(0.25, 0.5, 0.75), bits=None, starts: int = 4, *,
             method: str = "exact", objective: str = "distortion",
             prune_sensitivity=None, quant_sensitivity=None,
             first_last_8bit: bool = True, tie=None, a_bits="same",
             selector: str = "l1", round_to: int = 1, num_samples: int = 256,
             prune_weights=DEFAULT_PRUNE_WEIGHTS,
             check_gap: bool = True, time_limit: float | None = 60.0,
             refit: bool = True, validation_data=None,
             selection: str = "agreement", finetune_data=None,
             finetune_steps: int = 16, seed: int = 0) -> JointResult:
    """Kept channels per group and bits per layer minimising summed pruning +
    quantization sensitivity under one hardware budget (module docstring).

    Args:
        model: a trained functional / Sequential model (left untouched).
        calibration_data: inputs or ``(x, y)`` for the sensitivities and
            the least-squares refit (``objective="loss"`` needs labels);
            may be None when both sensitivities are given and
            ``refit=False``.
        hardware: a ``HardwareModel`` (``BISMO()``, ``BitFusion()``) or
            ``LatencyTable``, for latency / energy, or its name
            (``"bismo"``, ``"bitfusion"``, a table ``.json``).
        resource: ``"latency"``, ``"energy"``, ``"size"`` or ``"bops"``.
        budget: allowed cost as a fraction of the dense model at 8/8.
        ratios: keep ratios measured per group (whole groups are always an
            option).
        bits: weight widths searched (default the hardware's
            ``distinct_bits()`` in [2, 8]); activations follow ``a_bits``.
        starts: random starts of the alternating solver (on top of the
            deterministic ones).
        method: ``"exact"`` (default) or ``"alternating"``.
        objective: ``"distortion"`` (output MSE), ``"loss"`` or ``"both"``
            (the candidates of both objectives, one pool; see
            ``selection``).
        prune_sensitivity, quant_sensitivity: measured tables to reuse
            (with ``objective="both"``: dicts ``{"distortion": ...,
            "loss": ...}``).
        first_last_8bit, tie, a_bits: as :func:`~tfcomp.hardware.
            allocate_bits` (HAQ's first / last 8-bit rule by default).
        selector, round_to, num_samples: of the pruning sensitivity and
            the refit.
        prune_weights: weights of the pruning term tried (the first alone
            without calibration data); the points found (per objective)
            are measured and the best-scoring one wins
            (:mod:`tfcomp.joint.select`).
        validation_data: held-out inputs (or ``(x, y)``) the candidates are
            scored on; default the calibration images (in-sample: the
            refit fitted them). ``selection="finetune"`` needs its labels.
        selection: ``"agreement"`` (top-1 agreement of the quantized
            candidate with the float model before any fine-tune; no labels)
            or ``"finetune"`` (accuracy on ``validation_data`` after
            ``finetune_steps`` SGD batches of 64 on ``finetune_data``, lr
            1e-3 cosine-annealed to 0, momentum 0.9).
        finetune_data: ``(x, y)`` for ``selection="finetune"`` (default
            ``calibration_data``, which then needs labels).
        finetune_steps: batches of that fine-tune.
        check_gap: with ``method="alternating"``, also solve the exact
            program and report the gap.
        time_limit: seconds per exact program (None: no limit).
        refit: build ``result.model``: the pruned model with the chosen
            channels selected and refit group by group (AMC's step).
        seed: seeds the random starts, the refit samples and the
            selection's fine-tune.

    Returns:
        A :class:`~tfcomp.joint.result.JointResult` (``.plan``, ``.bits``,
        ``.keep``, ``.cost``, ``.sensitivity``, ``.gap``, ``.model``).

    Raises:
        ValueError: a budget below the cheapest reachable cost (the message
            gives it), an unknown method / objective / resource /
            selection, sensitivities of another model, missing labels.

    Example:
        >>> res = compress(model, x[:256], hardware=BISMO(), budget=0.25)
        >>> res.bits, res.keep, res.cost
    """
    start_time = time.perf_counter()
    hardware = get_hardware(hardware)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}. Received: "
                         f"method={method!r}")
    if objective not in (*OBJECTIVES, "both"):
        raise ValueError(f"objective must be one of {(*OBJECTIVES, 'both')}"
                         f". Received: objective={objective!r}")
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}. "
                         f"Received: selection={selection!r}")
    budget = check_number(budget, "budget", 0, min_open=True,
                          hint="a fraction of the dense 8/8 cost")
    starts = check_positive_int(starts, "starts", minimum=0)
    finetune_steps = check_positive_int(finetune_steps, "finetune_steps")
    weights = check_prune_weights(prune_weights)
    names = list(OBJECTIVES) if objective == "both" else [objective]
    psens = _per_objective(prune_sensitivity, names, "prune_sensitivity")
    qsens = _per_objective(quant_sensitivity, names, "quant_sensitivity")
    measure = any(v is None for v in (*psens.values(), *qsens.values()))
    x = y = None
    if calibration_data is not None:
        x, y = as_arrays(calibration_data, model=model,
                         max_items=num_samples,
                         need_labels=("loss" in names and measure) or (
                             selection == "finetune" and finetune_data
                             is None),
                         name="calibration_data", targets=True)
    elif measure or refit:
        raise ValueError("calibration_data is needed to measure the "
                         "sensitivities and to refit (give both "
                         "sensitivities and refit=False to go without). "
                         "Received: calibration_data=None")
    data = x if y is None else (x, y)
    score, selected_on = _score(model, selection, validation_data,
                                finetune_data, data, finetune_steps, seed)
    if measure:  # fail fast, before measuring
        _check_reachable(model, hardware, resource, budget, ratios, bits,
                         round_to, first_last_8bit, a_bits)
    probs = {}
    for name in names:
        pmethod, qmethod = OBJECTIVES[name]
        if psens[name] is None:
            psens[name] = prune_sens(model, data, ratios, pmethod,
                                     selector=selector, round_to=round_to,
                                     num_samples=num_samples, seed=seed)
        if qsens[name] is None:
            qsens[name] = measure_quant_sensitivity(
                model, data, qmethod, _candidate_bits(bits, hardware) + [8],
                activations=a_bits == "same", num_samples=num_samples,
                seed=seed)
        probs[name] = joint_problem(
            model, psens[name], qsens[name], resource=resource,
            hardware=hardware, bits=bits, a_bits=a_bits,
            first_last_8bit=first_last_8bit, tie=tie)
    space = probs[names[0]].space
    limit = budget * space.full_cost * (1 + _TOL)
    cheapest = min(_min_cost(p) for p in probs.values())
    if cheapest > limit:
        raise _unreachable(budget, resource, cheapest / space.full_cost)
    if x is None:  # nothing to measure the candidates on
        weights = weights[:1]
    runs = []
    for name in names:
        prob = probs[name]
        for w in weights:
            opt, pick, gap, report = solve(model, prob.weighted(w), limit,
                                           method, check_gap, starts, seed,
                                           time_limit)
            total, ps, qs = prob.objective(opt, pick)
            keep = {g: int(k) for g, k in zip(space.group_ids,
                                               prob.counts(opt))}
            runs.append({"objective_name": name, "prune_weight": w,
                         "opt": opt, "pick": pick, "gap": gap,
                         "starts": report, "objective": total,
                         "prune_part": ps, "quant_part": qs, "keep": keep,
                         "bits": prob.bits(pick),
                         "cost": space.ratio(keep, prob.bits(pick))})
    chosen, built = runs[0], None
    distinct = {(tuple(sorted(r["keep"].items())),
                 tuple(sorted(r["bits"].items()))) for r in runs}
    if len(distinct) > 1 and x is not None:
        chosen, built = select_point(model, space.graph, runs, x, score,
                                     selector, seed)
    name = chosen["objective_name"]
    keep, bits_out, gap = chosen["keep"], chosen["bits"], chosen["gap"]
    if built is not None and refit:
        plan, small = built
    else:
        plan, small = build_point(model, space.graph, keep, x, refit,
                                  selector, seed)
    cost = space.total(keep, bits_out)
    meta = {"method": method, "objective": name, "objectives": names,
            "resource": resource, "budget": budget,
            "starts": chosen["starts"],
            "prune_weight": chosen["prune_weight"], "selection": selection,
            "selected_on": selected_on,
            "candidates": [{k: r[k] for k in (
                "objective_name", "prune_weight", "objective", "score",
                "agreement", "cost") if k in r} for r in runs],
            "hardware": getattr(hardware, "name", None),
            "seconds": time.perf_counter() - start_time}
    plan.meta.update({"method": "joint", "keep": keep,
                      "predicted_cost_ratio": cost / space.full_cost})
    return JointResult(plan=plan, bits=bits_out, keep=keep,
                       cost=cost / space.full_cost, budget=budget,
                       resource=resource, full_cost=space.full_cost,
                       sensitivity=chosen["objective"],
                       prune_part=chosen["prune_part"],
                       quant_part=chosen["quant_part"], gap=gap,
                       prune_sensitivity=psens[name],
                       quant_sensitivity=qsens[name], model=small,
                       min_budget=cheapest / space.full_cost, meta=meta)


def _per_objective(value, names, arg) -> dict:
    """``{objective: table or None}`` from a table, a dict or None."""
    if value is None:
        return dict.fromkeys(names)
    if len(names) == 1 and not isinstance(value, dict):
        return {names[0]: value}
    if not isinstance(value, dict) or set(value) - set(names):
        allowed = "None or a dict" if len(names) > 1 else \
            "None, a table or a dict"
        raise ValueError(
            f"with objective {'both' if len(names) > 1 else names[0]!r}, "
            f"{arg} must be {allowed} with keys from {names}. Received: "
            f"{arg}={type(value).__name__}"
            + (f" with keys {sorted(value)}" if isinstance(value, dict)
               else ""))
    return {n: value.get(n) for n in names}


def _score(model, selection, validation_data, finetune_data, data, steps,
           seed):
    """``(scorer, what it scores on)`` (:mod:`tfcomp.joint.select`)."""
    if selection == "agreement":
        x_val = None
        if validation_data is not None:
            x_val, _ = as_arrays(validation_data, model=model,
                                 name="validation_data")
        return AgreementScore(x_val), ("calibration" if x_val is None
                                        else f"validation ({len(x_val)})")
    if validation_data is None:
        raise ValueError("selection='finetune' needs validation_data=(x, y) "
                         "(labelled held-out data). Received: "
                         "validation_data=None")
    val = as_arrays(validation_data, model=model, need_labels=True,
                    name="validation_data", targets=True)
    train = data if finetune_data is None else as_arrays(
        finetune_data, model=model, need_labels=True, name="finetune_data",
        targets=True)
    if not isinstance(train, tuple) or train[1] is None:
        raise ValueError("selection='finetune' needs labelled "
                         "calibration_data=(x, y) or finetune_data=(x, y). "
                         "Received: calibration_data without labels")
    return (FinetuneScore(train, val, steps=steps, seed=seed),
            f"validation ({len(val[0])}) after {steps} fine-tune batches")


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
