"""Fidelity of measured latency tables: predicted vs measured TFLite latency.

For zoo ResNet-20 and MobileNet-V2 (28x28x1 inputs, float32 TFLite, one
thread, this host), a latency table is measured once on the dense model at
channel fractions ``GRID`` = (0.25, 0.5, 0.75, 1.0) with channel counts
rounded to multiples of 8 (``channel_multiple=8``, AMC's ``round_to``).
Models pruned uniformly (every conv keeps ``keep`` of its filters, rounded
the same way, rebuilt at the reduced widths with the zoo's ``filters``
override) at keep = 1.0, 0.75, 0.5, 0.25 (on the table's grid) and 0.9,
0.6, 0.4, 0.3 (off the grid: some widths must be interpolated) are then

* predicted: ``table.model_cost(pruned).latency_s`` = sum of the looked-up
  single-layer latencies (each minus the invoke overhead) + the invoke
  overhead once; unmeasured widths by the table's ``"step"`` rule
  (constant in cout up to the next measured count, linear in cin), with
  plain bilinear interpolation reported beside it; no calibration
  constant;
* measured: the whole pruned model converted to TFLite and timed in the
  same runtime **in the same interleaved rounds** as the table's layer
  models (``reference_models``), so load on the shared machine hits both
  alike.

Writes benchmarks/results/latency_table.{md,json}: per-model numbers, mean
absolute percentage error and Spearman rank correlation (targets: error
<= 20 %, Spearman >= 0.9).

Usage:
    nice python benchmarks/latency_table.py [--runs 60] [--rounds 6]
"""

from __future__ import annotations

import os
import platform
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
from _common import parser, write_results
from scipy.stats import spearmanr

import tfcomp
from tfcomp.hardware import (
    device_profiler,
    extract_specs,
    measure_tflite_table,
    scaled_channels,
)

GRID = (0.25, 0.5, 0.75, 1.0)
MULTIPLE = 8
KEEP = (1.0, 0.9, 0.75, 0.6, 0.5, 0.4, 0.3, 0.25)
ARCHS = {
    "resnet20": lambda filters=None: tfcomp.zoo.resnet(
        depth=20, filters=filters),
    "mobilenet_v2": lambda filters=None: tfcomp.zoo.mobilenet_v2(
        filters=filters),
}


def uniformly_pruned(build, base, keep: float) -> keras.Model:
    """The architecture with every (non-depthwise) conv at ``keep`` of its
    filters (multiples of ``MULTIPLE``, as the table and AMC round them);
    depthwise convs, adds and pooling follow their inputs."""
    filters = {
        layer.name: scaled_channels(layer.filters, (keep,), MULTIPLE)[0]
        for layer in base.layers
        if isinstance(layer, keras.layers.Conv2D)
        and not isinstance(layer, keras.layers.DepthwiseConv2D)
    }
    model = build(filters)
    if len(extract_specs(model)) != len(extract_specs(base)):
        raise RuntimeError(f"pruning to {keep} changed the architecture")
    return model


def _errors(pred, meas):
    errs = [(p - m) / m for p, m in zip(pred, meas)]
    return {
        "mean_abs_error": float(np.mean(np.abs(errs))),
        "max_abs_error": float(np.max(np.abs(errs))),
        "mean_signed_error": float(np.mean(errs)),
        "spearman": (float(spearmanr(pred, meas)[0]) if len(pred) > 2
                     else None),
        "n": len(pred),
    }


def run(runs: int, rounds: int, statistic: str, archs=tuple(ARCHS)) -> dict:
    rows, summary = [], {}
    runtime = None
    for arch in archs:
        build = ARCHS[arch]
        base = build()
        models, skipped = {}, []
        for k in KEEP:
            try:
                models[f"keep{k}"] = uniformly_pruned(build, base, k)
            except RuntimeError:
                # e.g. MobileNet-V2 below 0.4: 16- and 24-channel
                # projections both round to 8 and the zoo adds a residual.
                skipped.append(k)
        keeps = [k for k in KEEP if k not in skipped]
        t0 = time.time()
        load0 = os.getloadavg()[0]
        table = measure_tflite_table(
            base, channel_fractions=GRID, channel_multiple=MULTIPLE,
            runs=runs, rounds=rounds, statistic=statistic,
            reference_models=models, progress=True)
        t_table = time.time() - t0
        load1 = os.getloadavg()[0]
        runtime = table.hardware["config"]["runtime"]
        measured = [table.meta["reference_latency_s"][n] for n in models]
        preds = {}
        for mode in ("step", "linear"):
            table.interpolation = mode
            preds[mode] = [table.model_cost(m).latency_s
                           for m in models.values()]
        table.interpolation = "step"
        on_grid = [all((s, 32, 32) in table for s in extract_specs(m))
                   for m in models.values()]
        summary[arch] = {
            "step": _errors(preds["step"], measured),
            "linear": _errors(preds["linear"], measured),
            "step_off_grid": _errors(
                [p for p, g in zip(preds["step"], on_grid) if not g],
                [m for m, g in zip(measured, on_grid) if not g]),
            "step_on_grid": _errors(
                [p for p, g in zip(preds["step"], on_grid) if g],
                [m for m, g in zip(measured, on_grid) if g]),
            "table_entries": len(table), "skipped_keeps": skipped,
            "overhead_us": table.overhead_s * 1e6,
            "table_seconds": t_table, "load_avg": [load0, load1],
        }
        for k, m, g, ps, pl, meas in zip(keeps, models.values(), on_grid,
                                         preds["step"], preds["linear"],
                                         measured):
            rows.append({
                "arch": arch, "keep": k, "on_grid": g,
                "macs": tfcomp.profile(m).macs,
                "predicted_ms": ps * 1e3, "predicted_linear_ms": pl * 1e3,
                "measured_ms": meas * 1e3, "error": (ps - meas) / meas,
                "error_linear": (pl - meas) / meas,
            })
        v = summary[arch]["step"]
        print(f"{arch}: mean |err| {v['mean_abs_error']:.1%}, "
              f"Spearman {v['spearman']:.3f} (linear: "
              f"{summary[arch]['linear']['mean_abs_error']:.1%})")
    summary["all"] = _errors([r["predicted_ms"] for r in rows],
                             [r["measured_ms"] for r in rows])
    return {
        "setup": {
            "runtime": runtime, "threads": 1, "runs": runs, "rounds": rounds,
            "statistic": statistic, "channel_fractions": list(GRID),
            "channel_multiple": MULTIPLE,
            "keep": list(KEEP), "input_shape": [28, 28, 1],
            "machine": platform.machine(), "python": sys.version.split()[0],
            "cpus": os.cpu_count(), "tfcomp": tfcomp.__version__,
            "keras": keras.__version__,
        },
        "summary": summary, "rows": rows,
    }


def _pct(v):
    return "n/a" if v is None else f"{v:.1%}"


def _rho(v):
    return "n/a" if v is None else f"{v:.3f}"


def to_markdown(res: dict) -> str:
    s = res["setup"]
    method = (
        "A latency table is measured once per architecture on the dense zoo "
        f"model (single-layer float32 TFLite models, {s['runtime']}, 1 "
        f"thread, {s['runs']} runs in {s['rounds']} interleaved rounds, "
        f"{s['statistic']} per model) at channel fractions "
        f"{s['channel_fractions']} with counts rounded to multiples of "
        f"{s['channel_multiple']} (AMC's `round_to`). Each uniformly pruned "
        "model (every conv keeps `keep` of its filters, rounded the same "
        "way, rebuilt at those widths) is predicted as the sum of its "
        "layers' table latencies (each minus the invoke overhead of a "
        "trivial one-op model) plus that overhead once, and measured as a "
        "whole TFLite model in the same runtime and in the same interleaved "
        "timing rounds as the table's layer models. Widths the table did "
        "not measure use its `step` rule (constant in cout up to the next "
        "measured count, linear in cin: XNNPACK pads output channels to its "
        "tile width); plain bilinear interpolation is shown for comparison. "
        "No per-model calibration constant is used.")
    host = (f"Host: {s['machine']}, {s['cpus']} CPUs shared with other jobs "
            f"(load averages are in the JSON), Python {s['python']}, Keras "
            f"{s['keras']}.")
    per_arch = {k: v for k, v in res["summary"].items() if k != "all"}
    out = [
        "# Latency-table fidelity (measured TFLite, this host)", "",
        ("Reproduce: `nice .venv/bin/python benchmarks/latency_table.py` "
         "(about 5 minutes)."), "",
        method, "", host, "", "## Summary (step rule, all keeps)", "",
        ("| model | mean abs error | max abs error | mean signed error | "
         "Spearman | on-grid mean abs err | off-grid mean abs err | "
         "bilinear: mean abs err | table entries |"),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for arch, v in per_arch.items():
        st = v["step"]
        out.append(
            f"| {arch} | {_pct(st['mean_abs_error'])} | "
            f"{_pct(st['max_abs_error'])} | "
            f"{st['mean_signed_error']:+.1%} | {_rho(st['spearman'])} | "
            f"{_pct(v['step_on_grid'].get('mean_abs_error'))} "
            f"(n={v['step_on_grid']['n']}) | "
            f"{_pct(v['step_off_grid'].get('mean_abs_error'))} "
            f"(n={v['step_off_grid']['n']}) | "
            f"{_pct(v['linear']['mean_abs_error'])} | "
            f"{v['table_entries']} |")
    a = res["summary"]["all"]
    ok_err = all(v["step"]["mean_abs_error"] <= 0.20
                 for v in per_arch.values())
    ok_rho = all((v["step"]["spearman"] or 0) >= 0.9
                 for v in per_arch.values())
    out += [
        (f"| both (pooled) | {_pct(a['mean_abs_error'])} | "
         f"{_pct(a['max_abs_error'])} | {a['mean_signed_error']:+.1%} | "
         f"{_rho(a['spearman'])} | | | | |"), "",
        (f"Targets (per model): mean abs error <= 20 % "
         f"{'met' if ok_err else 'NOT met'}; Spearman >= 0.9 "
         f"{'met' if ok_rho else 'NOT met'}."), "",
        "## Per pruned model", "",
        ("| model | keep | all widths measured | MMACs | predicted ms "
         "(step) | predicted ms (bilinear) | measured ms | error (step) | "
         "error (bilinear) |"),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        out.append(f"| {r['arch']} | {r['keep']:.2f} | "
                   f"{'yes' if r['on_grid'] else 'no (interp.)'} | "
                   f"{r['macs'] / 1e6:.2f} | {r['predicted_ms']:.3f} | "
                   f"{r['predicted_linear_ms']:.3f} | "
                   f"{r['measured_ms']:.3f} | {r['error']:+.1%} | "
                   f"{r['error_linear']:+.1%} |")
    out += [
        "", "## Why the previous version overshot (25.5 % on ResNet-20)", "",
        ("- The pruned whole models were timed in a separate session "
         "minutes after the table, on a machine at load 7-10 (2 shared "
         "cores): the drift between the two sessions, not the method, "
         "produced most of the +10..+29 % error even at widths the table "
         "had measured exactly. Now both are timed in the same interleaved "
         "rounds."),
        ("- Bilinear interpolation across XNNPACK's output-channel tiles: a "
         "3x3 conv on 14x14x16 costs 10.5 us for every cout in 4..16, "
         "19.7 us for 18..32 and 40 us for 34..40, so the mean of two "
         "measured neighbours on either side of a tile boundary overshoots "
         "(keep 0.5: +88 %). The table now measures multiples of 8 and "
         "uses the step rule between them."),
        ("- Per-layer invoke overhead and cache effects are not the cause "
         "here: on a quiet machine the dense ResNet-20's single-layer times "
         "(minus the trivial model's ~0.5 us invoke overhead each) sum to "
         "within 2 % of the whole model, MobileNet-V2's within 1.5 %."),
        "", "## What is and is not measured", "",
        ("- Costed layers: Conv2D, DepthwiseConv2D, Dense, Add, "
         "GlobalAveragePooling2D. BatchNormalization is folded and ReLU/ReLU6 "
         "fused by the converter in the whole model; the single-layer models "
         "have a bias and no activation, the form those layers take after "
         "folding."),
        ("- Measured latencies are for this shared CPU host; a phone needs "
         "its own table (`export_layer_archive` + `device_profiler`)."),
        "- Error is (predicted - measured) / measured.",
    ]
    for arch, v in per_arch.items():
        if v.get("skipped_keeps"):
            out.append(
                f"- {arch}: keep {v['skipped_keeps']} not measured: at "
                "those ratios channel counts of different stages round to "
                "the same multiple of 8 and the zoo builder changes the "
                "architecture (adds residuals).")
    out.append("")
    return "\n".join(out)


def main(argv=None) -> int:
    p = parser(__doc__)
    p.add_argument("--runs", type=int, default=60)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--statistic", choices=sorted(device_profiler.STATISTICS),
                   default="median")
    p.add_argument("--archs", nargs="+", choices=sorted(ARCHS),
                   default=list(ARCHS))
    args = p.parse_args(argv)
    keras.utils.set_random_seed(0)
    res = run(args.runs, args.rounds, args.statistic, args.archs)
    write_results(args.out, "latency_table", res, to_markdown(res))
    print(to_markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
