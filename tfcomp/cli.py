"""The ``tfcomp`` command line: profile, prune, quantize, search, export, ...

Models go in and out as ``.keras`` files; data is ``fashion-mnist`` or an
``.npz`` file with ``x_train``, ``y_train``, ``x_test``, ``y_test``.

Example:
    $ tfcomp profile model.keras
    $ tfcomp prune model.keras pruned.keras --method l1 --ratio 0.5
    $ tfcomp export tflite pruned.keras pruned.tflite --quantization int8 \
        --data fashion-mnist
"""

from __future__ import annotations

import argparse
import json
import os
import sys

__all__ = ["main", "build_parser"]


class CLIError(Exception):
    """An error reported to the user as one line, exit code 2."""


def _load_model(path: str):
    import keras

    import tfcomp.layers  # noqa: F401  (registers tfcomp's layers)

    if not os.path.isfile(path):
        raise CLIError(f"model file not found: {path!r}")
    if not path.endswith(".keras"):
        raise CLIError(f"model must be a .keras file. Received: {path!r}")
    return keras.saving.load_model(path)


def _save_model(model, path: str) -> None:
    if not path.endswith(".keras"):
        raise CLIError(f"output model must end in .keras. Received: {path!r}")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".tmp-{os.getpid()}-"
                       + os.path.basename(path))
    model.save(tmp)
    os.replace(tmp, path)
    print(f"wrote {path}")


def _load_data(spec: str | None, required: bool = True):
    from tfcomp import data

    if spec is None:
        if required:
            raise CLIError("this command needs --data fashion-mnist|FILE.npz")
        return None
    try:
        return data.load(spec)
    except (FileNotFoundError, ValueError) as e:
        raise CLIError(str(e)) from e


def _evaluate(model, x, y) -> float:
    import numpy as np

    logits = model.predict(x, batch_size=512, verbose=0)
    return float(np.mean(logits.argmax(-1) == y))


# ---------------------------------------------------------------- verbs


def cmd_profile(args) -> None:
    from tfcomp import profile

    model = _load_model(args.model)
    p = profile(model)
    if args.json:
        print(json.dumps(p.to_dict(), indent=2))
    else:
        p.summary()


def cmd_prune(args) -> None:
    from tfcomp import pruning

    model = _load_model(args.model)
    if (args.ratio is None) == (args.target_macs is None):
        raise CLIError("give exactly one of --ratio or --target-macs")
    data = _load_data(args.data, required=args.method in ("lasso", "dcp",
                                                         "taylor"))
    calib = None if data is None else data[0][0][:args.calibration_size]
    if args.method in ("lasso", "dcp"):
        labels = data[0][1][:args.calibration_size]
        fn = pruning.lasso_prune if args.method == "lasso" else \
            pruning.dcp_prune
        kwargs = {"ratio": args.ratio} if args.ratio is not None else {
            "target_macs": args.target_macs}
        if args.method == "dcp":
            result = fn(model, (calib, labels), **kwargs)
        else:
            result = fn(model, calib, **kwargs)
        pruned, plan = (result if isinstance(result, tuple)
                        else (result, getattr(result, "plan", None)))
    else:
        plan = pruning.make_plan(
            model, ratio=args.ratio if args.ratio is not None else 0.0,
            importance=args.method, round_to=args.round_to,
            target_macs=args.target_macs,
            data=None if calib is None else (calib, data[0][1][
                :args.calibration_size]),
            seed=args.seed)
        pruned = pruning.prune_channels(model, plan)
    _save_model(pruned, args.output)
    if plan is not None and args.plan:
        with open(args.plan, "w") as f:
            f.write(plan.to_json())
        print(f"wrote {args.plan}")
    from tfcomp import profile
    before, after = profile(model).macs, profile(pruned).macs
    print(f"MACs {before:,} -> {after:,} ({after / before:.1%})")


def cmd_quantize(args) -> None:
    from tfcomp import quantization

    model = _load_model(args.model)
    bits: object = args.bits
    if args.policy:
        with open(args.policy) as f:
            bits = {k: tuple(v) for k, v in json.load(f).items()}
    qat = quantization.quantize_model(model, bits=bits)
    data = _load_data(args.data, required=False)
    if data is not None:
        (x, y), (xt, yt) = data
        quantization.calibrate(qat, x[:args.calibration_size])
        if args.epochs > 0:
            import keras
            qat.compile(
                optimizer=keras.optimizers.Adam(args.lr),
                loss=keras.losses.SparseCategoricalCrossentropy(
                    from_logits=True), metrics=["accuracy"])
            qat.fit(x, y, batch_size=128, epochs=args.epochs, verbose=2)
        print(f"test accuracy: {_evaluate(qat, xt, yt):.4f}")
    _save_model(qat, args.output)


def cmd_export(args) -> None:
    model = _load_model(args.model)
    if args.format == "tflite":
        from tfcomp.export import export_tflite

        data = _load_data(args.data, required=args.quantization == "int8"
                          and not _is_qat(model))
        rep_data = None if data is None else data[0][0][:500]
        verify = None if data is None else data[1][0]
        report = export_tflite(model, args.output,
                               quantization=args.quantization,
                               representative_data=rep_data,
                               verify_data=verify, num_verify=args.verify)
        print(json.dumps(report.to_dict(), indent=2))
    else:
        from tfcomp.export import export_bitserial

        data = _load_data(args.data, required=False)
        calib = None if data is None else data[0][0][:256]
        report = export_bitserial(model, args.output, target=args.target,
                                  calibration_data=calib)
        print(json.dumps(report.to_dict(), indent=2, default=str))


def _is_qat(model) -> bool:
    try:
        from tfcomp.quantization.export_support import is_qat_model
    except ImportError:
        return False
    return bool(is_qat_model(model))


def cmd_simulate(args) -> None:
    import numpy as np

    from tfcomp.export import simulate_bitserial

    data = _load_data(args.data)
    (_, _), (xt, yt) = data
    x, y = xt[:args.num], yt[:args.num]
    out = simulate_bitserial(args.descriptor, x)
    logits = out[0] if isinstance(out, tuple) else out
    acc = float(np.mean(np.asarray(logits).argmax(-1) == y))
    print(f"bit-serial simulator: top-1 {acc:.4f} on {len(x)} test images")


def cmd_lut(args) -> None:
    from tfcomp import hardware

    model = _load_model(args.model)
    if args.hardware == "tflite":
        table = hardware.measure_tflite_table(model)
    else:
        hw = (hardware.BISMO() if args.hardware == "bismo"
              else hardware.BitFusion(config=args.hardware.split("-")[-1]))
        table = hardware.LatencyTable.build(model, hw)
    table.save(args.output)
    print(f"wrote {args.output}")


def cmd_search(args) -> None:
    from tfcomp import cli_search

    cli_search.run(args, _load_model, _load_data, _save_model)


def cmd_report(args) -> None:
    from tfcomp import report

    path = report.write_report(args.results, args.output)
    print(f"wrote {path}")


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tfcomp",
        description="Model compression for Keras 3: prune, quantize, "
                    "search, export.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("profile", help="per-layer params/MACs/bits table")
    s.add_argument("model", help="input .keras file")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=cmd_profile)

    s = sub.add_parser("prune", help="structured channel pruning")
    s.add_argument("model", help="input .keras file")
    s.add_argument("output", help="output .keras file")
    s.add_argument("--method", default="l1",
                   choices=["l1", "l2", "fpgm", "bn_scale", "random",
                            "taylor", "lasso", "dcp"])
    s.add_argument("--ratio", type=float, help="fraction of channels to "
                   "remove per group, in [0, 1)")
    s.add_argument("--target-macs", type=float,
                   help="MACs budget (absolute count)")
    s.add_argument("--round-to", type=int, default=1)
    s.add_argument("--data", help="fashion-mnist or FILE.npz "
                   "(needed by lasso, dcp, taylor)")
    s.add_argument("--calibration-size", type=int, default=512)
    s.add_argument("--plan", help="also write the plan JSON here")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_prune)

    s = sub.add_parser("quantize", help="quantization-aware model")
    s.add_argument("model", help="input .keras file")
    s.add_argument("output", help="output .keras file")
    s.add_argument("--bits", type=int, default=8,
                   help="uniform weight/activation bits (2-8)")
    s.add_argument("--policy", help="JSON {layer: [w_bits, a_bits]}")
    s.add_argument("--data", help="calibrate (and fine-tune) on this data")
    s.add_argument("--epochs", type=int, default=0)
    s.add_argument("--lr", type=float, default=1e-4)
    s.add_argument("--calibration-size", type=int, default=512)
    s.set_defaults(func=cmd_quantize)

    s = sub.add_parser("search", help="AMC or HAQ search with keras-tuner")
    s.add_argument("algorithm", choices=["amc", "haq"])
    s.add_argument("model", help="input .keras file")
    s.add_argument("output", help="output .keras file (best found)")
    s.add_argument("--data", default="fashion-mnist")
    s.add_argument("--trials", type=int, default=20)
    s.add_argument("--target", type=float, default=0.5,
                   help="budget as a fraction of the dense cost")
    s.add_argument("--hardware", default="bitfusion",
                   choices=["bitfusion", "bismo", "macs", "latency"])
    s.add_argument("--directory", default="tfcomp_search")
    s.add_argument("--overwrite", action="store_true")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_search)

    s = sub.add_parser("lut", help="hardware latency lookup tables")
    lut = s.add_subparsers(dest="lut_command", required=True)
    b = lut.add_parser("build", help="build a table for a model")
    b.add_argument("model", help="input .keras file")
    b.add_argument("output", help="output table .json")
    b.add_argument("--hardware", default="bitfusion-edge",
                   choices=["bismo", "bitfusion-edge", "bitfusion-server",
                            "tflite"])
    b.set_defaults(func=cmd_lut)

    s = sub.add_parser("export", help="export to TFLite or bit-serial")
    ex = s.add_subparsers(dest="format", required=True)
    t = ex.add_parser("tflite", help="verified .tflite file")
    t.add_argument("model")
    t.add_argument("output")
    t.add_argument("--quantization", default=None,
                   choices=["dynamic", "float16", "int8"])
    t.add_argument("--data", help="calibration/verification data")
    t.add_argument("--verify", type=int, default=256,
                   help="number of verification inputs")
    t.set_defaults(func=cmd_export)
    b = ex.add_parser("bitserial", help="BISMO / Bit Fusion descriptor")
    b.add_argument("model")
    b.add_argument("output", help="descriptor .json (blob written beside)")
    b.add_argument("--target", default="bitfusion",
                   choices=["bismo", "bitfusion"])
    b.add_argument("--data", help="calibration data")
    b.set_defaults(func=cmd_export)

    s = sub.add_parser("simulate", help="run a bit-serial descriptor")
    s.add_argument("descriptor")
    s.add_argument("--data", default="fashion-mnist")
    s.add_argument("--num", type=int, default=1000)
    s.set_defaults(func=cmd_simulate)

    s = sub.add_parser("report", help="report.md + plots from results")
    s.add_argument("results", help="results .json (from the demo or "
                   "benchmarks)")
    s.add_argument("--output", default="report")
    s.set_defaults(func=cmd_report)
    return p


def main(argv=None) -> int:
    """Entry point of the ``tfcomp`` console script."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except CLIError as e:
        print(f"tfcomp {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, FileNotFoundError, KeyError) as e:
        print(f"tfcomp {args.command}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
