"""Choosing among the allocator's answers for several balances of the two
sensitivity terms, by measuring them.

Output MSE after the least-squares refit (pruning) and output distortion
(quantization) share a unit, but they predict the accuracy after a short
fine-tune unevenly: on a trained ResNet-20 (Fashion-MNIST, BISMO, 25% of
the 8/8 latency, 16 fine-tune batches, one seed, 1000 test images) the
exact optimum of the plain sum kept channels and went to 3-4 bits (65.1%
after the fine-tune, top-1 agreement with the float model before it 69%;
weights-only quantization sensitivity: 57.5%), while the optimum with the
pruning term weighted 1/4 pruned more at 4-6 bits (72.2%, agreement 84%);
uniform half width at 5 bits had 69.9% (agreement 80%). Fine-tuning
recovers pruning damage more easily than the refit-only MSE suggests. So
:func:`tfcomp.joint.compress` solves the program for a few weights of the
pruning term (``prune_weights``) and keeps the point whose pruned, refit,
quantized and calibrated model agrees best (top-1) with the float model on
held-out images when given (``validation_data``), else on the calibration
images (labels are not needed; ties: the smaller unweighted objective).
Every candidate meets the budget. The calibration images are the ones the
refit fitted, so agreement on them favours heavier pruning and is noisy on
a few hundred images: on MobileNetV2-tiny (BISMO, 25%) weights 1/4 and 1/16
agreed 79.7% and 80.5% on the 256 calibration images (2 images apart) and
the latter scored 0.4 points below "bits, then prune" after the fine-tune
(issue #20); give held-out images where you have them.

Reference: Sony MCT (sensitivity measured on the model's outputs);
Yao et al., HAWQ-V3, arXiv:2011.10680 (an exact program per trade-off).

Example:
    >>> chosen, (plan, small) = select_by_agreement(model, prob, runs, x)
"""

from __future__ import annotations

import numpy as np

from tfcomp.pruning.plan import Plan, make_plan
from tfcomp.pruning.reconstruction import LayerwisePruner
from tfcomp.pruning.surgery import prune_channels

__all__ = ["DEFAULT_PRUNE_WEIGHTS", "agreement", "build_point",
           "check_prune_weights", "select_by_agreement"]

DEFAULT_PRUNE_WEIGHTS = (1.0, 0.25, 0.0625, 0.015625)


def check_prune_weights(weights) -> list:
    """``weights`` as a list of floats > 0 (order kept, duplicates
    dropped), or a ValueError naming ``prune_weights``."""
    if isinstance(weights, (int, float)) and not isinstance(weights, bool):
        weights = [weights]
    try:
        items = [float(w) for w in weights]
    except (TypeError, ValueError):
        raise ValueError("prune_weights must be numbers > 0. Received: "
                         f"prune_weights={weights!r}") from None
    if not items or any(not np.isfinite(w) or w <= 0 for w in items):
        raise ValueError("prune_weights must be a non-empty list of finite "
                         f"numbers > 0. Received: prune_weights={weights!r}")
    return list(dict.fromkeys(items))


def agreement(model, small, bits, x, batch_size: int = 256,
              x_eval=None) -> float:
    """Top-1 agreement between ``model`` and ``small`` quantized at
    ``bits`` (calibrated on ``x``, not fine-tuned), on ``x_eval`` (default
    ``x``).

    Example:
        >>> agreement(model, res.model, res.bits, x[:256], x_eval=x_val)
    """
    from tfcomp.quantization import calibrate, quantize_model

    q = quantize_model(small, bits=bits)
    calibrate(q, x, batch_size=batch_size)
    x_eval = x if x_eval is None else x_eval
    ref = model.predict(x_eval, batch_size=batch_size, verbose=0)
    out = q.predict(x_eval, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(out, -1) == np.argmax(ref, -1)))


def select_by_agreement(model, prob, runs, x, selector: str = "l1",
                        seed: int = 0, x_eval=None) -> tuple:
    """The run whose point agrees best with the float model.

    Args:
        model: the float model.
        prob: the (unweighted) ``JointProblem``.
        runs: dicts with ``"opt"``, ``"pick"``, ``"objective"`` (filled in
            with ``"agreement"`` and ``"cost"``).
        x: calibration images (refit and quantizer calibration).
        selector, seed: of the refit.
        x_eval: held-out images the agreement is measured on (default
            ``x``).

    Returns:
        ``(chosen run, (plan, pruned refit model))``.
    """
    space = prob.space
    seen: dict = {}
    best = None
    for r in runs:
        key = (tuple(r["opt"]), tuple(r["pick"]))
        keep = {g: int(k) for g, k in zip(space.group_ids,
                                          prob.counts(r["opt"]))}
        bits = prob.bits(r["pick"])
        r["cost"] = space.ratio(keep, bits)
        if key not in seen:
            built = build_point(model, space.graph, keep, x, True, selector,
                                seed)
            seen[key] = (agreement(model, built[1], bits, x,
                                   x_eval=x_eval), built)
        r["agreement"], built = seen[key]
        rank = (r["agreement"], -r["objective"])
        if best is None or rank > best[0]:
            best = (rank, r, built)
    return best[1], best[2]


def build_point(model, graph, keep: dict, x, refit: bool = True,
                selector: str = "l1", seed: int = 0) -> tuple:
    """``(plan, pruned model or None)``: channels chosen and refit group by
    group in topological order (AMC's step) with ``refit``, else chosen by
    L1 norm (``make_plan``) without a model.

    Example:
        >>> plan, small = build_point(model, graph, res.keep, x)
    """
    groups = [g for g in graph.groups if g.id in keep]
    todo = [g for g in groups if keep[g.id] < g.size]
    if refit and todo:
        pruner = LayerwisePruner(model, x, todo, graph=graph, seed=seed)
        for g in todo:
            pruner.step(g, keep[g.id], selector, report=False)
        plan = pruner.plan({})
        return plan, pruner.pruned_model(plan)
    if not todo:
        plan = Plan.from_removed(graph, {}, {})
        return plan, (prune_channels(model, plan) if refit else None)
    plan = make_plan(graph, ratio={g.id: 1.0 - keep[g.id] / g.size
                                   for g in todo}, importance="l1")
    got = {g.id: len(plan.kept(g.id)) for g in todo}
    if got != {g.id: keep[g.id] for g in todo}:
        raise RuntimeError(f"internal: plan keeps {got}, wanted {keep}.")
    plan.meta = {}
    return plan, None
