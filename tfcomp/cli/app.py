"""The ``tfcomp`` parser (every verb's options, as docs/CLI.md lists them)
and the entry point ``main``. Each verb's work lives in its own module
(``tfcomp.cli.profile``, ``prune``, ``quantize``, ``search``, ``lut``,
``export``, ``simulate``, ``report``, ``slim``, ``compress``) as
``run(args)``.

Example:
    >>> from tfcomp.cli.app import main
    >>> main(["profile", "model.keras"])
    0
"""

from __future__ import annotations

import argparse
import os
import sys

from tfcomp._io import BadInputError
from tfcomp.cli import (
    compress,
    export,
    learned,
    lut,
    profile,
    prune,
    quantize,
    report,
    search,
    simulate,
    slim,
)
from tfcomp.cli._common import (
    DATA_HELP,
    HARDWARE,
    CLIError,
    bits,
    bits_list,
    fractions,
    nonneg_int,
    positive_float,
    positive_int,
    ratio,
    set_custom_objects,
    set_open_layers,
    set_quiet,
    shape,
)

__all__ = ["build_parser", "main"]


class UsageError(Exception):
    """A command-line usage error of the parser named ``prog``
    (``tfcomp prune``, ...): printed as one line, exit code 2."""

    def __init__(self, prog: str, message: str):
        super().__init__(message)
        self.prog = prog
        self.message = message


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors raise :class:`UsageError` (printed
    by ``main`` as one line) instead of printing the usage and exiting."""

    def error(self, message):
        raise UsageError(self.prog, message)


def build_parser() -> argparse.ArgumentParser:
    """The ``tfcomp`` argument parser (one sub-parser per verb).

    Example:
        >>> args = build_parser().parse_args(["profile", "model.keras"])
    """
    from tfcomp import __version__

    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = _Parser(
        prog="tfcomp",
        description="Model compression for Keras 3: profile, prune, "
                    "quantize, search, build latency tables, export, "
                    "simulate and report. Models are .keras files (legacy "
                    ".h5 read too).",
        epilog="Run `tfcomp COMMAND --help` for a command's options.")
    p.add_argument("--version", action="version",
                   version=f"tfcomp {__version__}")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress output (results still printed)")
    p.add_argument("--traceback", action="store_true",
                   help="show the full traceback on errors")
    p.add_argument("--custom-objects", action="append", metavar="FILE.py",
                   help="a Python file (or module) defining your own Keras "
                        "layer / model classes, registered or not; "
                        "repeatable")
    p.add_argument("--open-layers", action="store_true",
                   help="open your own layer classes into the Keras layers "
                        "their call uses once a model is loaded "
                        "(tfcomp.graph.open_user_layers), so pruning reaches "
                        "inside them")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser(
        "profile", formatter_class=fmt,
        help="per-layer params / MACs / bits / BOPs table",
        description="Print a per-layer table of params, MACs, weight and "
                    "activation bits and BOPs.")
    s.add_argument("model", help="input .keras file")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.add_argument("--policy", help="JSON {layer: [w_bits, a_bits]} to "
                   "profile the model at these bits")
    s.add_argument("--output", help="also write the profile JSON here")
    s.add_argument("--input-shape", type=shape, metavar="H,W,C",
                   help="count a model with open input sizes (a fully "
                   "convolutional Input((None, None, 3))) at this size, "
                   "without the batch axis")
    s.set_defaults(func=profile.run)

    s = sub.add_parser(
        "prune", formatter_class=fmt, help="structured channel pruning",
        description="Remove channels (physically smaller model). Give "
                    "exactly one of --ratio, --target-macs, --apply-plan.")
    s.add_argument("model", help="input .keras file")
    s.add_argument("output", help="output .keras file")
    s.add_argument("--method", default="l1",
                   choices=prune.METHODS + learned.METHODS,
                   help="importance criterion, or lasso / dcp "
                        "(reconstruction methods; need --data), or the "
                        "learned methods gal / metapruning (need --data)")
    s.add_argument("--ratio", type=ratio,
                   help="fraction of channels removed per group, in [0, 1)")
    s.add_argument("--target-macs", type=positive_float,
                   help="MACs budget: a fraction of the dense MACs in "
                        "(0, 1] or an absolute count")
    s.add_argument("--apply-plan", metavar="PLAN.json",
                   help="replay a saved plan (from prune --plan or search "
                        "amc --plan) instead of choosing channels")
    s.add_argument("--round-to", type=positive_int, default=1,
                   help="kept channel counts are multiples of this (every "
                        "method)")
    s.add_argument("--data", help=DATA_HELP + "; needed by lasso, dcp, "
                   "taylor; with it test accuracy is printed")
    s.add_argument("--calibration-size", type=positive_int, default=512,
                   help="training images used for selection")
    s.add_argument("--dcp-stages", type=positive_int, default=3,
                   help="dcp: stages with an auxiliary loss")
    s.add_argument("--dcp-head-epochs", type=nonneg_int, default=3,
                   help="dcp: epochs fitting each auxiliary head")
    s.add_argument("--dcp-stage-epochs", type=nonneg_int, default=1,
                   help="dcp: per-stage fine-tune epochs")
    s.add_argument("--gal-structures", default="channels",
                   choices=("channels", "blocks"),
                   help="gal: mask channels or residual blocks")
    s.add_argument("--gal-lambda", type=positive_float, default=None,
                   help="gal: L1 weight of the masks (default: the paper's "
                        "0.6 blocks / 1e-3 channels)")
    s.add_argument("--gal-lam-weights", default=None, choices=("macs",),
                   help="gal: weigh each channel mask's L1 by its MACs "
                        "(not the paper's)")
    s.add_argument("--gal-mask-gradient", default="inference",
                   choices=("inference", "training"),
                   help="gal: masks' gradient from an inference-mode pass "
                        "(default) or the training pass (official code)")
    s.add_argument("--gal-epochs", type=positive_int, default=10,
                   help="gal: adversarial training epochs")
    s.add_argument("--gal-lr", type=positive_float, default=0.01,
                   help="gal: SGD learning rate")
    s.add_argument("--mask-step", type=positive_int, default=200,
                   help="gal: batches between FISTA mask steps")
    s.add_argument("--meta-epochs", type=positive_int, default=10,
                   help="metapruning: PruningNet training epochs")
    s.add_argument("--meta-generations", type=positive_int, default=20,
                   help="metapruning: evolution generations")
    s.add_argument("--meta-population", type=positive_int, default=50,
                   help="metapruning: population size")
    s.add_argument("--meta-lower", type=ratio, default=0.95,
                   help="metapruning: candidates cost at least this share "
                        "of the budget (official ResNet search: 0.95)")
    s.add_argument("--finetune-epochs", type=nonneg_int, default=0,
                   help="fine-tune the pruned model (needs --data)")
    s.add_argument("--lr", type=positive_float, default=1e-3,
                   help="fine-tune learning rate (Adam)")
    s.add_argument("--batch-size", type=positive_int, default=128,
                   help="fine-tune batch size")
    s.add_argument("--plan", help="also write the plan JSON here")
    s.add_argument("--seed", type=nonneg_int, default=0,
                   help="seed of random / lasso / dcp")
    s.set_defaults(func=prune.run)

    s = sub.add_parser(
        "slim", formatter_class=fmt,
        help="train a slimmable network, export every width",
        description="Convert to a slimmable network (switchable widths), "
                    "train it with the sandwich rule and in-place "
                    "distillation, recalibrate BN per width and write "
                    "slimmable.keras plus one plain width_NNN.keras per "
                    "width.")
    s.add_argument("model", help="input .keras file")
    s.add_argument("out_dir", help="output folder")
    s.add_argument("--widths", type=fractions, default=(0.25, 0.5, 0.75, 1.0),
                   help="comma-separated width switches in (0, 1]")
    s.add_argument("--universal", action="store_true",
                   help="universally slimmable (any width in [min, max])")
    s.add_argument("--data", help=DATA_HELP)
    s.add_argument("--epochs", type=nonneg_int, default=1,
                   help="sandwich-rule training epochs")
    s.add_argument("--steps", type=positive_int,
                   help="steps per epoch (default: the whole data)")
    s.add_argument("--lr", type=positive_float, default=1e-3,
                   help="learning rate (Adam)")
    s.add_argument("--batch-size", type=positive_int, default=128,
                   help="training batch size")
    s.add_argument("--round-to", type=positive_int, default=1,
                   help="channel counts of each width are multiples of it")
    s.add_argument("--calibration-size", type=positive_int, default=2048,
                   help="training images for BN recalibration per width")
    s.set_defaults(func=slim.run_slim)

    s = sub.add_parser(
        "autoslim", formatter_class=fmt,
        help="AutoSlim greedy search of channel counts",
        description="Greedily slim a (slimmable) model: each step removes "
                    "one channel step from the group whose removal raises "
                    "the held-out loss least; writes a plan per MACs "
                    "target (apply with `tfcomp prune --apply-plan`).")
    s.add_argument("model", help="input .keras file (slimmable.keras from "
                   "`tfcomp slim --universal`, or a plain model)")
    s.add_argument("out_dir", help="output folder")
    s.add_argument("--data", help=DATA_HELP + " (the last batches of the "
                   "training split are the held-out batches)")
    s.add_argument("--target-macs", type=fractions, default=(0.75, 0.5, 0.25),
                   help="comma-separated MACs targets, fractions in (0, 1]")
    s.add_argument("--step", type=positive_float, default=0.1,
                   help="channels removed per step: a fraction (< 1) of "
                        "each group or a count (>= 1)")
    s.add_argument("--batches", type=positive_int, default=4,
                   help="held-out batches per evaluation")
    s.add_argument("--batch-size", type=positive_int, default=64,
                   help="held-out batch size")
    s.add_argument("--criterion", choices=("loss", "loss_per_mac"),
                   default="loss",
                   help="rank steps by the held-out loss (the paper) or by "
                        "the loss increase per MAC removed (NetAdapt-like)")
    s.set_defaults(func=slim.run_autoslim)

    s = sub.add_parser(
        "quantize", formatter_class=fmt,
        help="quantization-aware (QAT) model, uniform or per-layer bits",
        description="Wrap conv / dense layers with fake-quantized QAT "
                    "layers; calibrate on --data and optionally fine-tune. "
                    "--auto chooses per-layer bits: per-layer sensitivity "
                    "on --data, then the exact (integer program) allocation"
                    " minimising it under --budget of the --resource.")
    s.add_argument("model", help="input .keras file")
    s.add_argument("output", help="output .keras file")
    s.add_argument("--bits", type=bits, default=None,
                   help="uniform weight/activation bits in [1, 8] (first "
                        "and last layers stay 8); default 8")
    s.add_argument("--policy", help="JSON {layer: [w_bits, a_bits]} (e.g. "
                   "from search haq --plan); unlisted layers get 8/8")
    s.add_argument("--data", help=DATA_HELP + "; calibrates activation "
                   "ranges and reports accuracy")
    s.add_argument("--epochs", type=nonneg_int, default=0,
                   help="QAT fine-tune epochs (0 = calibrate only)")
    s.add_argument("--steps-per-epoch", type=positive_int, default=None,
                   help="limit the batches per fine-tune epoch")
    s.add_argument("--lr", type=positive_float, default=1e-4,
                   help="QAT fine-tune learning rate (Adam)")
    s.add_argument("--batch-size", type=positive_int, default=128,
                   help="QAT fine-tune batch size")
    s.add_argument("--calibration-size", type=positive_int, default=512,
                   help="training images for activation ranges")
    a = s.add_argument_group(
        "--auto", "per-layer bits from sensitivity + exact allocation "
        "(tfcomp.sensitivity, tfcomp.allocate_bits); first and last layers "
        "stay 8/8, activation bits follow weight bits",
        argument_default=argparse.SUPPRESS)  # defaults in quantize.run
    a.add_argument("--auto", action="store_true", default=False,
                   help="choose the bits (needs --data)")
    a.add_argument("--resource", choices=["latency", "energy", "size",
                                          "bops"],
                   help="what the budget limits (default latency)")
    a.add_argument("--hardware",
                   help="bitfusion-edge (default), bitfusion-server, bismo "
                        "or a latency table .json (latency / energy)")
    a.add_argument("--budget", type=positive_float,
                   help="allowed cost as a fraction of the all-8/8 cost, in"
                        " (0, 1] (default 0.5)")
    a.add_argument("--method", choices=["hessian", "distortion"],
                   help="sensitivity: hessian (HAWQ-V2 trace, default) or "
                        "distortion (output MSE)")
    a.add_argument("--candidate-bits", type=bits_list,
                   help="weight widths to choose from, e.g. 2-8 or 2,4,8 "
                        "(default: the hardware's native widths in 2-8)")
    a.add_argument("--tie", choices=["none", "residual"],
                   help="residual: layers whose outputs are added share "
                        "bits (default none)")
    a.add_argument("--sensitivity-samples", type=positive_int,
                   help="training images for the sensitivity (default 256)")
    a.add_argument("--plan", help="also write the chosen policy "
                   "{layer: [w, a]} JSON here")
    s.set_defaults(func=quantize.run)

    compress.add_parser(sub, fmt)

    s = sub.add_parser(
        "search", formatter_class=fmt,
        help="AMC (channels) or HAQ (bits) search with keras-tuner",
        description="Run tfcomp.tuners' AMC or HAQ keras-tuner search and "
                    "save the best model. Validation images are the last "
                    "--val-size training images; test accuracy is printed.")
    s.add_argument("algorithm", choices=["amc", "haq"])
    s.add_argument("model", help="input (trained) .keras file")
    s.add_argument("output", help="output .keras file (best found)")
    s.add_argument("--data", default="fashion-mnist", help=DATA_HELP)
    s.add_argument("--trials", type=positive_int, default=20,
                   help="episodes (the papers use 800 / 600)")
    s.add_argument("--warmup", type=nonneg_int, default=None,
                   help="random episodes before the agent acts (default: "
                        "the oracle's, 100 for AMC and 20 for HAQ)")
    s.add_argument("--budget", type=float, default=0.5,
                   help="allowed cost as a fraction of the dense (AMC) or "
                        "8-bit (HAQ) cost, in (0, 1]")
    s.add_argument("--resource", "--cost", dest="cost", default=None,
                   choices=["macs", "latency", "energy", "size", "bops"],
                   help="what the budget limits (default: macs for amc, "
                        "latency for haq)")
    s.add_argument("--hardware", default="bitfusion-edge",
                   help="bitfusion-edge, bitfusion-server, bismo or a "
                        "latency table .json (for latency / energy costs)")
    s.add_argument("--round-to", type=positive_int, default=8,
                   help="AMC: kept channel counts are multiples of this")
    s.add_argument("--finetune-epochs", type=nonneg_int, default=1,
                   help="HAQ: fine-tune epochs per trial")
    s.add_argument("--finetune-steps", type=positive_int, default=None,
                   help="HAQ: batches per fine-tune epoch")
    s.add_argument("--calibration-size", type=positive_int, default=256,
                   help="training images for AMC's refit / HAQ's "
                        "calibration")
    s.add_argument("--val-size", type=positive_int, default=1000,
                   help="last training images used for the reward")
    s.add_argument("--plan", help="also write the best plan (amc) or "
                   "policy {layer: [w, a]} (haq) JSON here")
    s.add_argument("--directory", default="tfcomp_search",
                   help="keras-tuner project directory")
    s.add_argument("--overwrite", action="store_true",
                   help="start afresh instead of resuming")
    s.add_argument("--seed", type=nonneg_int, default=0,
                   help="seeds the agent and the refit / fine-tune")
    s.set_defaults(func=search.run)

    s = sub.add_parser("lut", help="hardware latency lookup tables",
                       description="Latency lookup tables.")
    tables = s.add_subparsers(dest="lut_command", required=True,
                              metavar="SUBCOMMAND")
    b = tables.add_parser(
        "build", formatter_class=fmt, help="build a table for a model",
        description="Tabulate an analytic accelerator model (BISMO, Bit "
                    "Fusion) or measure single-layer TFLite models on this "
                    "host into a LatencyTable JSON.")
    b.add_argument("model", help="input .keras file")
    b.add_argument("output", help="output table .json")
    b.add_argument("--hardware", default="bitfusion-edge",
                   choices=[*HARDWARE, "bitfusion", "tflite"],
                   help="analytic accelerator model (bitfusion = "
                        "bitfusion-edge) or tflite: measured on this host")
    b.add_argument("--bits", type=bits_list, default="2-8",
                   help="analytic models: widths (every (w, a) pair)")
    b.add_argument("--channel-fractions", type=fractions, default=None,
                   help="e.g. 0.2,0.4,0.6,0.8,1.0 (default: 1.0 analytic, "
                        "0.2..1.0 tflite)")
    b.add_argument("--channel-multiple", type=positive_int, default=None,
                   help="round tabulated channel counts to this multiple")
    b.add_argument("--runs", type=positive_int, default=50,
                   help="tflite: timed invocations per layer")
    b.add_argument("--warmup", type=nonneg_int, default=5,
                   help="tflite: untimed invocations")
    b.add_argument("--rounds", type=positive_int, default=5,
                   help="tflite: interleaved passes")
    b.add_argument("--threads", type=positive_int, default=1,
                   help="tflite: interpreter threads")
    b.set_defaults(func=lut.run)

    s = sub.add_parser("export", help="export to TFLite or bit-serial",
                       description="Export a model and verify the "
                                   "artifact against Keras.")
    ex = s.add_subparsers(dest="format", required=True, metavar="FORMAT")
    t = ex.add_parser("tflite", formatter_class=fmt,
                      help="verified .tflite file",
                      description="Convert to .tflite (float32, dynamic, "
                                  "float16, full int8, or per-layer "
                                  "float16/int8/int4 weights) and verify "
                                  "it in the TFLite runtime.")
    t.add_argument("model", help="input .keras file")
    t.add_argument("output", help="output .tflite file")
    t.add_argument("--quantization", default=None,
                   help="dynamic | float16 | int8 | int16x8 (int16 "
                        "activations, int8 weights) | int4w, or a .json "
                        "policy {layer: float32|float16|int8|int4w} "
                        "(float models need tfcomp[litert])")
    t.add_argument("--data", help=DATA_HELP + "; int8 / int16x8 "
                   "calibration of float models and verification inputs")
    t.add_argument("--verify", type=nonneg_int, default=256,
                   help="verification inputs (0 = do not verify)")
    t.add_argument("--latency", action="store_true",
                   help="also measure the file's latency")
    t.add_argument("--runs", type=positive_int, default=50,
                   help="timed runs for --latency")
    t.set_defaults(func=export.run_tflite)
    b = ex.add_parser("bitserial", formatter_class=fmt,
                      help="BISMO / Bit Fusion descriptor",
                      description="Write a bit-serial descriptor JSON and "
                                  "its packed weight blob for a quantized "
                                  "model; with --data, simulate and compare "
                                  "with Keras.")
    b.add_argument("model", help="quantized .keras file (tfcomp quantize)")
    b.add_argument("output", help="descriptor .json (blob written beside)")
    b.add_argument("--hardware", "--target", dest="hardware",
                   default="bismo", choices=["bismo", "bitfusion"],
                   help="the accelerator (--target is the old name)")
    b.add_argument("--data", help=DATA_HELP + "; calibration and "
                   "verification inputs")
    b.add_argument("--verify", type=nonneg_int, default=32,
                   help="test images simulated for verification")
    b.set_defaults(func=export.run_bitserial)

    s = sub.add_parser(
        "simulate", formatter_class=fmt,
        help="run a bit-serial descriptor on test data",
        description="Run the bit-serial reference simulator on test images "
                    "and print its top-1 accuracy (and agreement with the "
                    "Keras model given by --model).")
    s.add_argument("descriptor", help="descriptor .json from export "
                   "bitserial")
    s.add_argument("--data", default="fashion-mnist", help=DATA_HELP)
    s.add_argument("--num", type=positive_int, default=1000,
                   help="test images")
    s.add_argument("--model", help="the .keras model the descriptor came "
                   "from, for top-1 agreement")
    s.add_argument("--json", action="store_true",
                   help="also print the results as JSON")
    s.set_defaults(func=simulate.run)

    s = sub.add_parser(
        "report", formatter_class=fmt,
        help="report.md + PNG plots (Pareto, channels, bits, heatmap)",
        description="Write report.md with accuracy-vs-MACs / latency "
                    "Pareto plots, kept channels and (w_bits, a_bits) per "
                    "layer and a hardware-table heatmap, from a results "
                    "JSON and/or models measured here.")
    s.add_argument("results", nargs="?", default=None,
                   help="results .json ({'rows': [...], ...}; optional)")
    s.add_argument("--model", action="append", default=[],
                   metavar="LABEL=FILE.keras",
                   help="a model to profile (and evaluate with --data); "
                        "repeat; the first is the reference for channels")
    s.add_argument("--tflite", action="append", default=[],
                   metavar="LABEL=FILE.tflite",
                   help="measure this file's latency for the model LABEL")
    s.add_argument("--lut", help="latency table .json (or bismo, "
                   "bitfusion-edge, bitfusion-server): heatmap and "
                   "accelerator latency per model")
    s.add_argument("--data", help=DATA_HELP + "; test accuracy per model")
    s.add_argument("--num", type=positive_int, default=1000,
                   help="test images per model")
    s.add_argument("--runs", type=positive_int, default=50,
                   help="latency runs per .tflite")
    s.add_argument("--title", default="tfcomp report")
    s.add_argument("--output", default="report", help="output directory")
    s.set_defaults(func=report.run)
    return p


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 600 else text[:597] + "..."


def _verb(args) -> str:
    """``prune``, ``export tflite``, ``lut build``, ... for messages."""
    if args.command == "export":
        return f"export {args.format}"
    if args.command == "lut":
        return f"lut {args.lut_command}"
    return args.command


def _bad_input_errors() -> tuple:
    """Errors about a file or value the user gave (exit code 2).

    ``TFLiteModelError`` lives in the device profiler, which runs alone on
    a phone and so cannot derive from ``tfcomp._io.BadInputError``; it
    can only have been raised if its module is loaded.
    """
    profiler = sys.modules.get("tfcomp.hardware.device_profiler")
    if profiler is None:
        return (BadInputError,)
    return (BadInputError, profiler.TFLiteModelError)


def main(argv=None) -> int:
    """Entry point of the ``tfcomp`` console script.

    Args:
        argv: arguments (default ``sys.argv[1:]``).

    Returns:
        The exit code: 0 on success, 2 for bad arguments or input (missing
        files, invalid values), 1 when the work itself fails.

    Example:
        >>> main(["profile", "model.keras"])
        0
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    try:
        args, extra = build_parser().parse_known_args(argv)
        if extra:
            raise UsageError(f"tfcomp {_verb(args)}", "unrecognized "
                             f"arguments: {' '.join(extra)}")
    except UsageError as e:  # one line, like every other error
        print(f"{e.prog}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except SystemExit as e:  # --help, --version
        return e.code if isinstance(e.code, int) else (0 if e.code is None
                                                        else 2)
    set_quiet(args.quiet)
    verb = _verb(args)
    try:
        set_custom_objects(args.custom_objects)
        set_open_layers(args.open_layers)
        args.func(args)
    except CLIError as e:
        if args.traceback:
            raise
        print(f"tfcomp {verb}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except _bad_input_errors() as e:  # a corrupt file or bad value given
        if args.traceback:
            raise
        print(f"tfcomp {verb}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tfcomp {verb}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if args.traceback:
            raise
        kind = "" if isinstance(e, (ValueError, TypeError)) else \
            f"{type(e).__name__}: "
        print(f"tfcomp {verb}: error: {kind}{_one_line(e)} "
              "(--traceback for details)", file=sys.stderr)
        return 1
    finally:
        set_quiet(False)
    return 0
