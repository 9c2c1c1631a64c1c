"""``tfcomp compress MODEL OUTPUT``: joint pruning + quantization to one
hardware budget (:func:`tfcomp.joint.compress`): per-group kept channels
and per-layer bits chosen together, the pruned model refit by least
squares, then its quantization-aware (QAT) form, calibrated and optionally
fine-tuned. ``OUTPUT`` is that QAT model (``tfcomp export bitserial`` /
``tflite`` take it); ``--report`` writes the plan, bits and costs.

Example:
    $ tfcomp compress model.keras out.keras --hardware bismo \
        --budget 0.25 --data fashion-mnist --epochs 1
"""

from __future__ import annotations

import json
import os

from tfcomp.cli import _common as common

__all__ = ["add_parser", "run"]

OBJECTIVES = ("distortion", "loss", "both")
SELECTIONS = ("agreement", "finetune")
METHODS = ("exact", "alternating")


def add_parser(sub, fmt) -> None:
    """Adds the ``compress`` sub-parser to ``sub`` (``tfcomp.cli.app``)."""
    s = sub.add_parser(
        "compress", formatter_class=fmt,
        help="joint pruning + quantization to one hardware budget",
        description="Choose kept channels per group and bits per layer "
                    "together: pruning sensitivity (after the least-squares "
                    "refit) + quantization sensitivity on --data, then the "
                    "exact integer program minimising their sum under "
                    "--budget of the dense 8/8 --resource. Writes the "
                    "pruned, refit, quantization-aware model (calibrated; "
                    "--epochs fine-tunes it).")
    s.add_argument("model", help="input (trained) .keras file")
    s.add_argument("output", help="output .keras file (QAT model)")
    s.add_argument("--data", help=common.DATA_HELP + "; sensitivities, "
                   "refit, calibration and accuracy")
    s.add_argument("--hardware", default="bismo",
                   help="bismo, bitfusion-edge, bitfusion-server or a "
                        "latency table .json (latency / energy)")
    s.add_argument("--resource", default="latency",
                   choices=["latency", "energy", "size", "bops"],
                   help="what the budget limits")
    s.add_argument("--budget", type=common.positive_float, default=0.25,
                   help="allowed cost as a fraction of the dense model at "
                        "8/8 bits, in (0, 1]")
    s.add_argument("--ratios", type=common.fractions,
                   default=(0.25, 0.5, 0.75),
                   help="keep ratios measured per channel group (whole "
                        "groups are always an option)")
    s.add_argument("--candidate-bits", type=common.bits_list, default=None,
                   help="weight widths, e.g. 2-8 or 2,4,8 (default: the "
                        "hardware's native widths in 2-8); activations "
                        "follow")
    s.add_argument("--objective", choices=OBJECTIVES, default="distortion",
                   help="distortion: output MSE (pruning after refit + "
                        "quantization); loss: loss increase (refit loss + "
                        "HAWQ-V2 Hessian); both: the candidates of both, "
                        "one pool (twice the sensitivity time)")
    s.add_argument("--selection", choices=SELECTIONS, default="agreement",
                   help="how the candidates (one per pruning-term weight "
                        "and objective) are chosen on up to 512 held-out "
                        "--data images: agreement with the float model, or "
                        "accuracy after a 16-batch fine-tune (slower)")
    s.add_argument("--method", choices=METHODS, default="exact",
                   help="exact: one integer program; alternating: bits / "
                        "channels programs in turn from several starts")
    s.add_argument("--round-to", type=common.positive_int, default=1,
                   help="kept channel counts are multiples of this")
    s.add_argument("--tie", choices=["none", "residual"], default="none",
                   help="residual: layers whose outputs are added share "
                        "bits")
    s.add_argument("--sensitivity-samples", type=common.positive_int,
                   default=256,
                   help="training images for the sensitivities and refit")
    s.add_argument("--calibration-size", type=common.positive_int,
                   default=512, help="training images for activation "
                   "ranges")
    s.add_argument("--epochs", type=common.nonneg_int, default=0,
                   help="QAT fine-tune epochs (0 = calibrate only)")
    s.add_argument("--steps-per-epoch", type=common.positive_int,
                   default=None, help="limit the batches per epoch")
    s.add_argument("--lr", type=common.positive_float, default=1e-4,
                   help="QAT fine-tune learning rate (Adam)")
    s.add_argument("--batch-size", type=common.positive_int, default=128,
                   help="QAT fine-tune batch size")
    s.add_argument("--report", help="also write plan, bits, costs and the "
                   "solver's gap JSON here")
    s.add_argument("--plan", help="also write the pruning plan JSON here "
                   "(replays with tfcomp prune --apply-plan)")
    s.add_argument("--policy", help="also write the bit policy {layer: "
                   "[w, a]} JSON here (tfcomp quantize --policy)")
    s.set_defaults(func=run)


def _check_args(args) -> None:
    common.check_output(args.output, ".keras", "output model")
    if not args.data:
        raise common.CLIError("compress needs --data (sensitivities, refit "
                              "and calibration)")
    if not 0 < args.budget <= 1:
        raise common.CLIError(
            f"--budget must be in (0, 1]. Received: {args.budget}")
    if any(r >= 1 for r in args.ratios):
        raise common.CLIError("--ratios must be keep ratios in (0, 1). "
                              f"Received: {args.ratios}")
    for flag in ("report", "plan", "policy"):
        path = getattr(args, flag)
        if path:
            common.check_writable(path, f"--{flag}")
            if os.path.abspath(path) == os.path.abspath(args.output):
                raise common.CLIError(f"--{flag} must differ from OUTPUT")


def run(args) -> None:
    """Writes the compressed QAT model of ``args.model`` to ``args.output``."""
    _check_args(args)
    from tfcomp import quantization
    from tfcomp._batches import rows, sliced, take
    from tfcomp.joint import compress

    model = common.load_model(args.model)
    (x, y), (xt, yt) = common.load_data(args.data, model=model)
    if args.objective != "distortion":
        common.require_classes(y, f"tfcomp compress --objective "
                               f"{args.objective} --selection "
                               f"{args.selection}", args.data)
    hw = (common.hardware_model(args.hardware)
          if args.resource in ("latency", "energy") else None)
    n = min(rows(x), args.sensitivity_samples)
    common.info(f"sensitivities ({args.objective}) on {n} images, then the "
                f"{args.method} program at budget {args.budget} of the "
                f"dense 8/8 {args.resource}")
    held_out = (sliced(x, n, n + 512), y[n:n + 512]) if rows(x) > n \
        else None
    if args.selection == "finetune" and held_out is None:
        raise common.CLIError("--selection finetune needs --data with more "
                              f"images than --sensitivity-samples ({n})")
    try:
        res = compress(model, (take(x, n), y[:n]), hardware=hw,
                       validation_data=held_out,
                       resource=args.resource, budget=args.budget,
                       ratios=args.ratios, bits=args.candidate_bits,
                       method=args.method, objective=args.objective,
                       selection=args.selection,
                       round_to=args.round_to, num_samples=n,
                       tie=None if args.tie == "none" else args.tie)
    except (ValueError, NotImplementedError) as e:
        raise common.CLIError(str(e)) from e
    print(res.summary())
    qat = quantization.quantize_model(res.model, bits=res.bits)
    m = min(rows(x), args.calibration_size)
    common.info(f"calibrating on {m} images")
    quantization.calibrate(qat, take(x, m))
    if args.epochs > 0:
        common.info(f"QAT fine-tuning {args.epochs} epoch(s)")
        common.fit(qat, x, y, args.epochs, args.lr, args.batch_size,
                   args.steps_per_epoch)
    print(f"test {common.score_name(yt)}: float "
          f"{common.evaluate(model, xt, yt):.4f}, "
          f"pruned (refit) {common.evaluate(res.model, xt, yt):.4f}, "
          f"compressed {common.evaluate(qat, xt, yt):.4f}")
    common.save_model(qat, args.output)
    # the side files only once the model is written: a failed fine-tune
    # leaves nothing behind
    if args.report:
        res.save(args.report)
    if args.plan:
        res.plan.save(args.plan)
    if args.policy:
        common.write_text(args.policy, json.dumps(
            {k: list(v) for k, v in res.bits.items()}, indent=1))
