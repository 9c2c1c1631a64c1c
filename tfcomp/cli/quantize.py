"""``tfcomp quantize MODEL OUTPUT``: a quantization-aware (QAT) model.

Example:
    $ tfcomp quantize model.keras q4.keras --bits 4 --data fashion-mnist
"""

from __future__ import annotations

from tfcomp.cli import _common as common


def run(args) -> None:
    """Writes the QAT model of ``args.model`` to ``args.output``."""
    from tfcomp import quantization

    common.check_output(args.output, ".keras", "output model")
    if args.bits is not None and args.policy:
        raise common.CLIError("give --bits or --policy, not both")
    if args.epochs > 0 and not args.data:
        raise common.CLIError("--epochs (QAT fine-tune) needs --data")
    policy: object = 8 if args.bits is None else args.bits
    if args.policy:
        policy = common.read_policy(args.policy)
    model = common.load_model(args.model)
    if args.policy:
        common.check_policy_layers(policy, model, args.policy)
    data = common.load_data(args.data, required=False, model=model)
    try:
        qat = quantization.quantize_model(model, bits=policy)
    except (ValueError, TypeError) as e:  # the policy or the model given
        where = f"with policy {args.policy!r}" if args.policy else \
            f"at {policy} bits"
        raise common.CLIError(f"cannot quantize {args.model!r} {where}: "
                              f"{e}") from e
    if not common.is_quiet():
        print(quantization.quantization_report(qat).summary())
    if data is None:
        common.warn("no --data: activation ranges are not calibrated "
                    "(give --data before int8 / bit-serial export)")
    else:
        (x, y), (xt, yt) = data
        n = min(len(x), args.calibration_size)
        common.info(f"calibrating on {n} images")
        quantization.calibrate(qat, x[:args.calibration_size])
        if args.epochs > 0:
            common.info(f"QAT fine-tuning {args.epochs} epoch(s)")
            common.fit(qat, x, y, args.epochs, args.lr, args.batch_size,
                       args.steps_per_epoch)
        print(f"test accuracy: float {common.evaluate(model, xt, yt):.4f}, "
              f"quantized {common.evaluate(qat, xt, yt):.4f}")
    common.save_model(qat, args.output)
