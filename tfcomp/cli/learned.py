"""``tfcomp prune MODEL OUTPUT --method gal|metapruning``: learned
structured pruning.

* ``gal``: soft masks (``--gal-structures channels|blocks``) trained
  adversarially against the input model (``--gal-epochs``, ``--gal-lambda``,
  ``--mask-step``), zero-mask structures removed, then ``--finetune-epochs``.
* ``metapruning``: PruningNet training (``--meta-epochs``), evolutionary
  search under ``--target-macs`` (``--meta-generations``,
  ``--meta-population``), the best widths trained from scratch for
  ``--finetune-epochs`` (Scratch-E of ``tfcomp.pruning.rethinking``).

Both need ``--data``.

Example:
    $ tfcomp prune model.keras small.keras --method gal --data fashion-mnist \\
        --gal-structures blocks --gal-epochs 10 --finetune-epochs 5
"""

from __future__ import annotations

from tfcomp.cli import _common as common

METHODS = ("gal", "metapruning")


def _gal(args, model, data):
    import keras

    from tfcomp.pruning.gal import GAL, apply_gal, strip_gal

    (x, y), _ = data
    if args.ratio is not None or args.target_macs is not None:
        common.warn("gal: the MACs follow from --gal-lambda; --ratio / "
                    "--target-macs are ignored")
    student = apply_gal(model, getattr(args, "gal_structures", "channels"))
    gal = GAL(student, model, lam=getattr(args, "gal_lambda", None),
              mask_step=getattr(args, "mask_step", 200),
              lam_weights=getattr(args, "gal_lam_weights", None),
              mask_gradient=getattr(args, "gal_mask_gradient", "inference"))
    gal.compile(keras.optimizers.SGD(getattr(args, "gal_lr", 0.01),
                                     momentum=0.9),
                metrics=common.loss_for(model, y)[1])  # binary: a side
    common.info(f"GAL: {getattr(args, 'gal_epochs', 1)} epoch(s), "
                f"lam={gal.lam}")
    gal.fit(x, y, epochs=getattr(args, "gal_epochs", 1),
            batch_size=args.batch_size, verbose=common.verbosity())
    return strip_gal(student), None


def _metapruning(args, model, data):
    from tfcomp._batches import rows, sliced
    from tfcomp.pruning import prune_channels
    from tfcomp.tuners.metapruning import metaprune

    if args.target_macs is None:
        raise common.CLIError("--method metapruning needs --target-macs")
    (x, y), (xt, yt) = data
    n = max(1, rows(x) // 10)  # held-out split of the training data
    plan = metaprune(
        model, (sliced(x, n, rows(x)), y[n:]), (sliced(x, 0, n), y[:n]),
        target_macs=args.target_macs,
        epochs=getattr(args, "meta_epochs", 1), batch_size=args.batch_size,
        generations=getattr(args, "meta_generations", 20),
        population=getattr(args, "meta_population", 50),
        lower=getattr(args, "meta_lower", 0.95), seed=args.seed,
        verbose=common.verbosity())
    common.info(f"MetaPruning: best held-out fitness "
                f"{plan.meta['fitness']:.4f}")
    return prune_channels(model, plan), plan


def run(args) -> None:
    """Prunes ``args.model`` with GAL / MetaPruning into ``args.output``."""
    from tfcomp.cost import profile
    from tfcomp.pruning.rethinking import scratch_setup

    common.check_output(args.output, ".keras", "output model")
    if args.plan:
        common.check_writable(args.plan, "--plan")
    model = common.load_model(args.model)
    data = common.load_data(args.data, required=True, model=model)
    if args.method == "gal":  # MetaPruning takes targets, GAL's loss not
        common.require_classes(data[0][1], "tfcomp prune --method gal",
                               args.data)
        pruned, plan = _gal(args, model, data)
    else:
        pruned, plan = _metapruning(args, model, data)
        if args.finetune_epochs > 0:
            pruned = scratch_setup(pruned, mode="E",
                                   base_epochs=args.finetune_epochs).model
            common.info("training the found widths from scratch")
    if args.finetune_epochs > 0:
        common.fit(pruned, data[0][0], data[0][1], args.finetune_epochs,
                   args.lr, args.batch_size)
    common.save_model(pruned, args.output)
    if args.plan and plan is not None:
        common.write_text(args.plan, plan.to_json(indent=1))
    before, after = profile(model).macs, profile(pruned).macs
    print(f"MACs {before:,} -> {after:,} ({after / max(before, 1):.1%})")
    (_, _), (xt, yt) = data
    print(f"test {common.score_name(yt)}: "
          f"{common.evaluate(model, xt, yt):.4f} -> "
          f"{common.evaluate(pruned, xt, yt):.4f}")
