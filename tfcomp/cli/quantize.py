"""``tfcomp quantize MODEL OUTPUT``: a quantization-aware (QAT) model, at
uniform bits, a given policy, or (``--auto``) per-layer bits chosen by
sensitivity + exact allocation under a hardware budget.

``--auto``'s sensitivity is the weights' plus the input activations'
(:func:`tfcomp.quantization.sensitivity.combined_sensitivity`), since the
policy sets a = w: with the weights' alone, layers whose weights looked
cheap got 2-bit activations too (issue #19). ``--method hessian`` caps
Hutchinson at ``HESSIAN_PROBES`` probes per kind (sample-disjoint probes,
stopping earlier at 5% relative standard error).

Example:
    $ tfcomp quantize model.keras q4.keras --bits 4 --data fashion-mnist
    $ tfcomp quantize model.keras qa.keras --auto --resource latency \
        --hardware bismo --budget 0.4 --data fashion-mnist
"""

from __future__ import annotations

import json

from tfcomp.cli import _common as common

# --auto's options, their defaults, and what they mean without --auto
AUTO_DEFAULTS = {"resource": "latency", "hardware": "bitfusion-edge",
                 "budget": 0.5, "method": "hessian", "candidate_bits": None,
                 "tie": "none", "sensitivity_samples": 256, "plan": None}
HESSIAN_PROBES = 24  # Hutchinson probes at most, per kind (weights, inputs)


def _check_args(args) -> None:
    if args.bits is not None and args.policy:
        raise common.CLIError("give --bits or --policy, not both")
    if args.auto:
        if args.bits is not None or args.policy:
            raise common.CLIError("give --auto, --bits or --policy, not "
                                  "several")
        if not args.data:
            raise common.CLIError("--auto (sensitivity + allocation) needs "
                                  "--data")
    else:
        given = [f"--{k.replace('_', '-')}" for k in AUTO_DEFAULTS
                 if getattr(args, k, None) is not None]
        if given:
            verb = "applies" if len(given) == 1 else "apply"
            raise common.CLIError(f"{', '.join(given)} {verb} only with "
                                  "--auto")
    for k, v in AUTO_DEFAULTS.items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    if args.auto and not 0 < args.budget <= 1:
        raise common.CLIError(
            f"--budget must be in (0, 1]. Received: {args.budget}")
    if args.plan:
        common.check_writable(args.plan, "--plan")


def _candidates(args, hw) -> list:
    """--candidate-bits, else the hardware's native widths in [2, 8]."""
    if args.candidate_bits:
        return sorted(set(args.candidate_bits))
    if hw is None:
        return list(range(2, 9))
    widths = [b for b in hw.distinct_bits() if 2 <= b <= 8]
    if not widths:
        raise common.CLIError(f"hardware {args.hardware!r} runs no width in "
                              "[2, 8]; give --candidate-bits")
    return widths


def _check_reachable(table, bits, budget) -> None:
    """Fails fast (before the sensitivity) on a budget below a lower bound
    of the cheapest policy (first / last 8/8, others at their cheapest
    candidate width, a = w); ``allocate_bits`` gives the exact minimum."""
    layers = table.layers
    low = table.constant + sum(
        table.cost(n, 8, 8) if n in (layers[0], layers[-1]) else
        min(table.cost(n, b, b) for b in bits) for n in layers)
    if budget * table.full_cost < low * (1 - 1e-9):
        raise common.CLIError(
            f"--budget {budget} of the all-8/8 {table.resource} cannot be "
            f"reached with widths {bits}: the cheapest policy costs at "
            f"least {low / table.full_cost:.4f} of it (the first and last "
            f"layers, {layers[0]!r} and {layers[-1]!r}, stay 8/8"
            + ("; the model has no other layer)" if len(layers) <= 2
               else ")"))


def _policy_table(table, alloc, sens) -> str:
    rows = [f"{'layer':<28} {'w':>2} {'a':>2} {'sensitivity':>12} "
            f"{'cost %':>7}"]
    for name, (w, a) in alloc.items():
        s = sens.value(name, w) if w in sens.bits else 0.0
        share = 100 * table.cost(name, w, a) / table.full_cost
        rows.append(f"{name:<28} {w:>2} {a:>2} {s:>12.4g} {share:>7.2f}")
    rows.append(f"{table.resource} {alloc.cost:.4f} of 8/8 (budget "
                f"{alloc.budget}, cheapest reachable {alloc.min_budget:.4f})"
                f", summed sensitivity {alloc.sensitivity:.4g}")
    return "\n".join(rows)


def _auto_policy(args, model, x, y) -> dict:
    """Sensitivity on the training images, then ``allocate_bits``."""
    from tfcomp._batches import rows, take
    from tfcomp.hardware import CostTable, allocate_bits
    from tfcomp.quantization.sensitivity import combined_sensitivity

    hw = (common.hardware_model(args.hardware)
          if args.resource in ("latency", "energy") else None)
    bits = _candidates(args, hw)
    try:
        table = CostTable(model, args.resource, hw)
    except ValueError as e:
        raise common.CLIError(f"--auto: {e}") from e
    _check_reachable(table, bits, args.budget)
    n = min(rows(x), args.sensitivity_samples)
    common.info(f"sensitivity ({args.method}, weights + input activations) "
                f"of every layer at bits {bits} on {n} images")
    kw = {"max_probes": HESSIAN_PROBES} if args.method == "hessian" else {}
    try:
        sens = combined_sensitivity(model, (take(x, n), y[:n]),
                                    method=args.method, bits=bits, **kw)
        alloc = allocate_bits(model, sens, args.resource, hw,
                              budget=args.budget,
                              tie=None if args.tie == "none" else args.tie)
    except (ValueError, NotImplementedError) as e:
        raise common.CLIError(f"--auto: {e}") from e
    print(_policy_table(table, alloc, sens))
    policy = {k: (int(w), int(a)) for k, (w, a) in alloc.items()}
    if args.plan:
        common.write_text(args.plan, json.dumps(
            {k: list(v) for k, v in policy.items()}, indent=1))
    return policy


def run(args) -> None:
    """Writes the QAT model of ``args.model`` to ``args.output``."""
    from tfcomp import quantization
    from tfcomp._batches import rows, take

    common.check_output(args.output, ".keras", "output model")
    _check_args(args)
    if args.epochs > 0 and not args.data:
        raise common.CLIError("--epochs (QAT fine-tune) needs --data")
    policy: object = 8 if args.bits is None else args.bits
    if args.policy:
        policy = common.read_policy(args.policy)
    model = common.load_model(args.model)
    if args.policy:
        common.check_policy_layers(policy, model, args.policy)
    data = common.load_data(args.data, required=False, model=model)
    if args.auto:
        policy = _auto_policy(args, model, *data[0])
    try:
        qat = quantization.quantize_model(model, bits=policy)
    except (ValueError, TypeError) as e:  # the policy or the model given
        where = f"with policy {args.policy!r}" if args.policy else \
            "with the --auto policy" if args.auto else f"at {policy} bits"
        raise common.CLIError(f"cannot quantize {args.model!r} {where}: "
                              f"{e}") from e
    if not common.is_quiet():
        print(quantization.quantization_report(qat).summary())
    if data is None:
        common.warn("no --data: activation ranges are not calibrated "
                    "(give --data before int8 / bit-serial export)")
    else:
        (x, y), (xt, yt) = data
        n = min(rows(x), args.calibration_size)
        common.info(f"calibrating on {n} images")
        quantization.calibrate(qat, take(x, n))
        if args.epochs > 0:
            common.info(f"QAT fine-tuning {args.epochs} epoch(s)")
            common.fit(qat, x, y, args.epochs, args.lr, args.batch_size,
                       args.steps_per_epoch)
        print(f"test {common.score_name(yt)}: float "
              f"{common.evaluate(model, xt, yt):.4f}, "
              f"quantized {common.evaluate(qat, xt, yt):.4f}")
    common.save_model(qat, args.output)
