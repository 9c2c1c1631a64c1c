"""``tfcomp search amc|haq MODEL OUTPUT``: keras-tuner searches.

AMC searches per-group channel ratios, HAQ per-layer (w_bits, a_bits),
each under a budget: a fraction of the dense (AMC) or 8-bit (HAQ) cost of
the ``--resource`` (``--cost``) chosen.

Example:
    $ tfcomp search amc model.keras amc.keras --budget 0.5 --trials 20
    $ tfcomp search haq model.keras haq.keras --resource latency \
        --hardware bismo --plan policy.json
"""

from __future__ import annotations

import json

from tfcomp.cli import _common as common


def _search(tuner_cls, hm, args, message: str):
    """Runs the keras-tuner search; returns its best trial."""
    oracle_kw = {} if args.warmup is None else {"warmup": args.warmup}
    tuner = tuner_cls(hm, max_trials=args.trials, seed=args.seed,
                      directory=args.directory, project_name=args.algorithm,
                      overwrite=args.overwrite, **oracle_kw)
    common.info(message)
    tuner.search(verbose=common.verbosity())
    trials = tuner.oracle.get_best_trials(1)
    if not trials:
        raise common.CLIError("no trial finished (see the messages above)")
    return trials[0]


def _amc(args, model, xy, val):
    """AMC search; returns ``(best trial, pruned model)``."""
    from tfcomp._batches import take
    from tfcomp.tuners.amc import AMCHyperModel, AMCTuner

    cost = args.cost or "macs"
    if cost not in ("macs", "latency"):
        raise common.CLIError("search amc --cost must be macs or latency. "
                              f"Received: {cost!r}")
    hw = common.hardware_model(args.hardware) if cost == "latency" else None
    hm = AMCHyperModel(model, take(xy[0], args.calibration_size), val,
                       resource=cost, budget=args.budget, hardware=hw,
                       round_to=args.round_to, seed=args.seed,
                       max_images=args.calibration_size)
    best = _search(AMCTuner, hm, args, (
        f"AMC search: {args.trials} trial(s), budget {args.budget} of dense "
        f"{cost}, {len(hm.group_ids)} group(s)"))
    result, plan = hm.prune(best.hyperparameters)
    if args.plan:
        common.write_text(args.plan, plan.to_json(indent=1))
    return best, result


def _haq(args, model, xy, val):
    """HAQ search; returns ``(best trial, fine-tuned QAT model)``."""
    from tfcomp._batches import take
    from tfcomp.tuners.haq import HAQHyperModel, HAQTuner

    cost = args.cost or "latency"
    if cost not in ("latency", "energy", "size", "bops"):
        raise common.CLIError("search haq --cost must be latency, energy, "
                              f"size or bops. Received: {cost!r}")
    hw = (common.hardware_model(args.hardware)
          if cost in ("latency", "energy") else None)
    hm = HAQHyperModel(model, xy, val, hardware=hw, resource=cost,
                       budget=args.budget,
                       calibration_data=take(xy[0], args.calibration_size),
                       finetune_epochs=args.finetune_epochs,
                       finetune_steps=args.finetune_steps,
                       seed=args.seed)
    best = _search(HAQTuner, hm, args, (
        f"HAQ search: {args.trials} trial(s), budget {args.budget} of 8-bit "
        f"{cost}, {len(hm.searched_layers)} searched layer(s)"))
    policy = hm.policy(best.hyperparameters)
    result = hm.quantized_model(best.hyperparameters)
    hm.fit(best.hyperparameters, result)
    if args.plan:
        common.write_text(args.plan, json.dumps(
            {k: list(v) for k, v in policy.items()}, indent=1))
    return best, result


def run(args) -> None:
    """Searches, prints the best trial's metrics and saves its model."""
    from tfcomp._batches import rows, sliced

    common.check_output(args.output, ".keras", "output model")
    if args.plan:
        common.check_writable(args.plan, "--plan")
    common.check_folder(args.directory, "--directory")
    if args.trials < 1:
        raise common.CLIError(
            f"--trials must be >= 1. Received: {args.trials}")
    if not 0 < args.budget <= 1:
        raise common.CLIError(
            f"--budget must be in (0, 1]. Received: {args.budget}")
    model = common.load_model(args.model)
    (x, y), (xt, yt) = common.load_data(args.data, model=model)
    v = min(args.val_size, rows(x))
    val = (sliced(x, rows(x) - v, rows(x)), y[len(y) - v:])
    search = _amc if args.algorithm == "amc" else _haq
    best, result = search(args, model, (x, y), val)
    metrics = {k: float(v.get_best_value())
               for k, v in best.metrics.metrics.items()}
    print("best trial: " + json.dumps(metrics, sort_keys=True))
    print(f"test {common.score_name(yt)} of the best model: "
          f"{common.evaluate(result, xt, yt):.4f}")
    common.save_model(result, args.output)
