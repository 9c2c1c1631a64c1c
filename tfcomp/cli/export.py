"""``tfcomp export tflite|bitserial MODEL OUTPUT``: verified artifacts.

Example:
    $ tfcomp export tflite model.keras model.tflite --quantization int8 \
        --data fashion-mnist
    $ tfcomp export tflite model.keras mix.tflite --quantization policy.json
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


def _quantization(value):
    """``--quantization``: a mode, "int4w", or a ``.json`` file holding a
    ``{layer: "float32" | "float16" | "int8" | "int4w"}`` policy (e.g. a
    saved ``allocate_bits(..., candidates=PRECISIONS)`` result)."""
    if not isinstance(value, str) or not value.endswith(".json"):
        return value
    from tfcomp._io import read_json

    try:
        policy = read_json(value, "quantization policy")
    except (OSError, ValueError) as e:
        raise common.CLIError(f"--quantization {value!r}: {e}") from None
    if not isinstance(policy, dict):
        raise common.CLIError(
            f"--quantization {value!r} must hold a JSON object {{layer: "
            f"precision}}. Received: {type(policy).__name__}")
    return policy


def run_tflite(args) -> None:
    """Converts ``args.model`` to a verified ``.tflite`` file."""
    from tfcomp._batches import take
    from tfcomp.export import export_tflite, measure_latency
    from tfcomp.export._inputs import random_shape

    common.check_output(args.output, ".tflite")
    args.quantization = _quantization(args.quantization)
    model = common.load_model(args.model)
    needs = args.quantization == "int16x8" or (
        args.quantization == "int8" and not _is_qat(model))
    if needs and not args.data:
        raise common.CLIError(f"--quantization {args.quantization} of a "
                              "float model needs --data for calibration"
                              + (" (or quantize it first)"
                                 if args.quantization == "int8" else ""))
    data = common.load_data(args.data, required=False, model=model)
    rep_data = None if data is None else take(data[0][0], 500)
    verify = None if data is None else take(data[1][0], args.verify)
    mode = "per-layer policy" if isinstance(args.quantization, dict) \
        else args.quantization or "float32"
    common.info(f"converting to TFLite ({mode}) and verifying")
    report = export_tflite(model, args.output,
                           quantization=args.quantization,
                           calibration_data=rep_data,
                           verify=args.verify > 0, verify_data=verify,
                           num_verify=max(args.verify, 1))
    out = report.to_dict()
    if args.latency:
        common.info("measuring latency")
        # a dynamic size (None) is timed at the data's, or the random
        # verification inputs' (one input)
        shapes = None
        if len(model.inputs) == 1:
            shapes = [random_shape(model.inputs[0], 1) if verify is None
                      else (1, *verify.shape[1:])]
        try:
            lat = measure_latency(args.output, runs=args.runs,
                                  input_shapes=shapes)
        except ValueError as e:
            raise common.CLIError(f"--latency: {e}") from None
        out["latency_median_ms"] = lat.median_ms
        if shapes is not None:
            out["latency_input_shape"] = list(shapes[0])
    _print_report(out, args.output)


def run_bitserial(args) -> None:
    """Writes a bit-serial descriptor (+ blob) of a quantized model."""
    from tfcomp._batches import take
    from tfcomp.export import export_bitserial

    common.check_output(args.output, ".json", "descriptor")
    model = common.load_model(args.model)
    if not _is_qat(model):
        raise common.CLIError(
            "export bitserial needs a quantized model (run `tfcomp "
            f"quantize` first). Received: {args.model!r}")
    data = common.load_data(args.data, required=False, model=model)
    calib = None if data is None else take(data[0][0], 256)
    verify_x = None if data is None else take(data[1][0], args.verify)
    common.info(f"writing {args.hardware} descriptor"
                + ("" if verify_x is None else " and simulating it"))
    report = export_bitserial(model, args.output, hardware=args.hardware,
                              calibration_data=calib, verify_x=verify_x,
                              verify=verify_x is not None
                              and args.verify > 0)
    _print_report(report.to_dict(), args.output)
