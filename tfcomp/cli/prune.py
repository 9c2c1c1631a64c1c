"""``tfcomp prune MODEL OUTPUT``: structured channel pruning.

Every ``--method`` takes ``--ratio`` or ``--target-macs`` and ``--round-to``
(kept channel counts are multiples of it); ``--apply-plan`` replays a saved
plan instead.

Example:
    $ tfcomp prune model.keras pruned.keras --method l1 --ratio 0.5
"""

from __future__ import annotations

import os

from tfcomp.cli import _common as common

METHODS = ("l1", "l2", "fpgm", "bn_scale", "random", "taylor", "lasso",
           "dcp")


def _check_targets(args) -> None:
    given = sum(v is not None for v in (args.ratio, args.target_macs,
                                        args.apply_plan))
    if given != 1:
        raise common.CLIError("give exactly one of --ratio, --target-macs "
                              "or --apply-plan")
    if args.finetune_epochs > 0 and args.data is None:
        raise common.CLIError("--finetune-epochs needs --data")


def _prune(args, model, data):
    """``(pruned model, plan)`` for ``args.method`` (or ``--apply-plan``)."""
    from tfcomp import pruning
    from tfcomp._batches import take

    n = args.calibration_size
    if args.apply_plan is not None:
        if not os.path.isfile(args.apply_plan):
            raise common.CLIError(
                f"plan file not found: {args.apply_plan!r}")
        try:
            plan = pruning.Plan.load(args.apply_plan)
        except (ValueError, OSError) as e:
            raise common.CLIError(str(e)) from e
        common.info(f"applying plan {args.apply_plan}")
        try:
            return pruning.prune_channels(model, plan), plan
        except (ValueError, KeyError) as e:
            raise common.CLIError(
                f"plan {args.apply_plan!r} does not fit model "
                f"{args.model!r}: {e}") from e
    targets = ({"ratio": args.ratio} if args.ratio is not None
               else {"target_macs": args.target_macs})
    targets["round_to"] = args.round_to
    if args.method == "lasso":
        common.info("LASSO channel selection + least-squares refit")
        return pruning.lasso_prune(
            model, take(data[0][0], n), **targets, max_images=n,
            seed=args.seed,
            verbose=common.verbosity())
    if args.method == "dcp":
        common.info("discrimination-aware channel pruning (DCP)")
        xy = (take(data[0][0], n), data[0][1][:n])
        return pruning.dcp_prune(
            model, xy, **targets, max_images=n, seed=args.seed,
            num_stages=args.dcp_stages, head_epochs=args.dcp_head_epochs,
            finetune_epochs=args.dcp_stage_epochs,
            verbose=common.verbosity())
    xy = None if data is None else (take(data[0][0], n), data[0][1][:n])
    plan = pruning.make_plan(
        model, ratio=args.ratio if args.ratio is not None else 0.0,
        importance=args.method, round_to=args.round_to,
        target_macs=args.target_macs, data=xy, seed=args.seed)
    return pruning.prune_channels(model, plan), plan


def run(args) -> None:
    """Prunes ``args.model`` into ``args.output``; prints MACs / accuracy."""
    from tfcomp.cli import learned

    if args.method in learned.METHODS:
        return learned.run(args)
    from tfcomp.cost import profile

    common.check_output(args.output, ".keras", "output model")
    if args.plan:
        common.check_writable(args.plan, "--plan")
    _check_targets(args)
    model = common.load_model(args.model)
    needs_data = args.method in ("lasso", "dcp", "taylor") and (
        args.apply_plan is None)
    data = common.load_data(args.data, required=needs_data, model=model)
    pruned, plan = _prune(args, model, data)
    if data is not None and args.finetune_epochs > 0:
        common.info(f"fine-tuning {args.finetune_epochs} epoch(s)")
        common.fit(pruned, data[0][0], data[0][1], args.finetune_epochs,
                   args.lr, args.batch_size)
    common.save_model(pruned, args.output)
    if args.plan:
        common.write_text(args.plan, plan.to_json(indent=1))
    before, after = profile(model).macs, profile(pruned).macs
    print(f"MACs {before:,} -> {after:,} ({after / max(before, 1):.1%})")
    if data is not None:
        (_, _), (xt, yt) = data
        print(f"test {common.score_name(yt)}: "
              f"{common.evaluate(model, xt, yt):.4f} -> "
              f"{common.evaluate(pruned, xt, yt):.4f}")
