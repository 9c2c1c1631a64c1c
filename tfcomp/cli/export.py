"""``tfcomp export tflite|bitserial MODEL OUTPUT``: verified artifacts.

Example:
    $ tfcomp export tflite model.keras model.tflite --quantization int8 \
        --data fashion-mnist
    $ tfcomp export bitserial q4.keras q4.json --hardware bismo --data x.npz
"""

from __future__ import annotations

import json

from tfcomp.cli import _common as common


def _is_qat(model) -> bool:
    from tfcomp.quantization import is_qat_model

    return bool(is_qat_model(model))


def _print_report(report: dict, path: str) -> None:
    print(json.dumps(report, indent=2, default=str))
    print(f"wrote {path}")


def run_tflite(args) -> None:
    """Converts ``args.model`` to a verified ``.tflite`` file."""
    from tfcomp.export import export_tflite, measure_latency

    common.check_output(args.output, ".tflite")
    model = common.load_model(args.model)
    needs = args.quantization == "int8" and not _is_qat(model)
    if needs and not args.data:
        raise common.CLIError("--quantization int8 of a float model needs "
                              "--data for calibration (or quantize it "
                              "first)")
    data = common.load_data(args.data, required=False, model=model)
    rep_data = None if data is None else data[0][0][:500]
    verify = None if data is None else data[1][0][:args.verify]
    common.info(f"converting to TFLite ({args.quantization or 'float32'}) "
                "and verifying")
    report = export_tflite(model, args.output,
                           quantization=args.quantization,
                           calibration_data=rep_data,
                           verify=args.verify > 0, verify_data=verify,
                           num_verify=max(args.verify, 1))
    out = report.to_dict()
    if args.latency:
        common.info("measuring latency")
        lat = measure_latency(args.output, runs=args.runs)
        out["latency_median_ms"] = lat.median_ms
    _print_report(out, args.output)


def run_bitserial(args) -> None:
    """Writes a bit-serial descriptor (+ blob) of a quantized model."""
    from tfcomp.export import export_bitserial

    common.check_output(args.output, ".json", "descriptor")
    model = common.load_model(args.model)
    if not _is_qat(model):
        raise common.CLIError(
            "export bitserial needs a quantized model (run `tfcomp "
            f"quantize` first). Received: {args.model!r}")
    data = common.load_data(args.data, required=False, model=model)
    calib = None if data is None else data[0][0][:256]
    verify_x = None if data is None else data[1][0][:args.verify]
    common.info(f"writing {args.hardware} descriptor"
                + ("" if verify_x is None else " and simulating it"))
    report = export_bitserial(model, args.output, hardware=args.hardware,
                              calibration_data=calib, verify_x=verify_x,
                              verify=verify_x is not None
                              and args.verify > 0)
    _print_report(report.to_dict(), args.output)
