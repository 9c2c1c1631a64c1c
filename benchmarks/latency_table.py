"""Fidelity of measured latency tables: predicted vs measured TFLite latency.

For zoo ResNet-20 and MobileNet-V2 (28x28x1 inputs, float32 TFLite, one
thread, this host), a latency table is measured once on the dense model at
the channel fractions a pruning search visits (``DEFAULT_FRACTIONS`` =
0.2..1.0). Every model pruned uniformly (all convolutions keep the same
fraction of their filters; rebuilt at the reduced widths with the zoo's
``filters`` override) is then

* predicted: ``table.model_cost(pruned).latency_s`` = sum of the looked-up
  (interpolated where the width is off the grid) single-layer latencies +
  the runtime's invoke overhead once; no calibration constant;
* measured: the whole pruned model converted to TFLite and timed in the same
  runtime, with the same runs/rounds/statistic.

Writes benchmarks/results/latency_table.{md,json}: per-model numbers, mean
absolute percentage error and Spearman rank correlation (targets: error
<= 20 %, Spearman >= 0.9).

Usage:
    python benchmarks/latency_table.py [--runs 60] [--statistic median]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
from scipy.stats import spearmanr

import tfcomp
from tfcomp.hardware import (
    DEFAULT_FRACTIONS,
    LatencyTable,
    device_profiler,
    extract_specs,
    measure_tflite_table,
)
from tfcomp.hardware.tflite_profiler import layer_to_tflite

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                       "results")
KEEP = (1.0, 0.9, 0.75, 0.6, 0.5, 0.4, 0.3)
ARCHS = {
    "resnet20": lambda filters=None: tfcomp.zoo.resnet(
        depth=20, filters=filters),
    "mobilenet_v2": lambda filters=None: tfcomp.zoo.mobilenet_v2(
        filters=filters),
}


def uniformly_pruned(build, base, keep: float) -> keras.Model:
    """The architecture with every (non-depthwise) conv at ``keep`` of its
    filters; depthwise convs, adds and pooling follow their inputs."""
    filters = {
        layer.name: max(1, round(keep * layer.filters))
        for layer in base.layers
        if isinstance(layer, keras.layers.Conv2D)
        and not isinstance(layer, keras.layers.DepthwiseConv2D)
    }
    model = build(filters)
    if len(extract_specs(model)) != len(extract_specs(base)):
        raise RuntimeError(f"pruning to {keep} changed the architecture")
    return model


def _write(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def run(runs: int, rounds: int, statistic: str, archs=tuple(ARCHS),
        table_dir: str | None = None) -> dict:
    stat = device_profiler.STATISTICS[statistic]
    rows, summary = [], {}
    runtime = None
    for arch in archs:
        build = ARCHS[arch]
        base = build()
        t0 = time.time()
        load0 = os.getloadavg()[0]
        cached = table_dir and os.path.join(table_dir,
                                            f"{arch}_{statistic}.json")
        if cached and os.path.exists(cached):
            table = LatencyTable.load(cached)
        else:
            table = measure_tflite_table(
                base, channel_fractions=DEFAULT_FRACTIONS, runs=runs,
                rounds=rounds, statistic=statistic, progress=True)
            if cached:
                table.save(cached)
        t_table = time.time() - t0
        runtime = table.hardware["config"]["runtime"]
        models = [uniformly_pruned(build, base, k) for k in KEEP]
        blobs = [layer_to_tflite(m) for m in models]
        _, cls = device_profiler.interpreter_class()
        samples = device_profiler.time_samples(
            blobs, runs=runs, rounds=rounds, interpreter_cls=cls)
        load1 = os.getloadavg()[0]
        measured = [float(stat(s)) for s in samples]
        predicted, layer_sums = [], []
        for m in models:
            cost = table.model_cost(m)
            predicted.append(cost.latency_s)
            layer_sums.append(cost.latency_s - cost.overhead_s)
        errs = [abs(p - m) / m for p, m in zip(predicted, measured)]
        signed = [(p - m) / m for p, m in zip(predicted, measured)]
        rho = float(spearmanr(predicted, measured)[0])
        summary[arch] = {
            "mean_abs_error": float(np.mean(errs)),
            "max_abs_error": float(np.max(errs)),
            "mean_signed_error": float(np.mean(signed)),
            "spearman": rho, "table_entries": len(table),
            "overhead_us": table.overhead_s * 1e6,
            "table_seconds": t_table, "load_avg": [load0, load1],
        }
        for k, m, p, s, meas in zip(KEEP, models, predicted, layer_sums,
                                    measured):
            rows.append({
                "arch": arch, "keep": k,
                "on_grid": any(abs(k - f) < 1e-9 for f in DEFAULT_FRACTIONS),
                "macs": tfcomp.profile(m).macs,
                "predicted_ms": p * 1e3, "layer_sum_ms": s * 1e3,
                "measured_ms": meas * 1e3, "error": (p - meas) / meas,
            })
        print(f"{arch}: mean |err| {summary[arch]['mean_abs_error']:.1%}, "
              f"Spearman {rho:.3f}")
    all_p = [r["predicted_ms"] for r in rows]
    all_m = [r["measured_ms"] for r in rows]
    summary["all"] = {
        "mean_abs_error": float(np.mean([abs(r["error"]) for r in rows])),
        "spearman": float(spearmanr(all_p, all_m)[0]),
    }
    return {
        "setup": {
            "runtime": runtime, "threads": 1, "runs": runs, "rounds": rounds,
            "statistic": statistic,
            "channel_fractions": list(DEFAULT_FRACTIONS),
            "keep": list(KEEP), "input_shape": [28, 28, 1],
            "machine": platform.machine(), "python": sys.version.split()[0],
            "cpus": os.cpu_count(), "tfcomp": tfcomp.__version__,
            "keras": keras.__version__,
        },
        "summary": summary, "rows": rows,
    }


def to_markdown(res: dict) -> str:
    s = res["setup"]
    method = (
        "A latency table is measured once per architecture on the dense zoo "
        f"model (single-layer float32 TFLite models, {s['runtime']}, 1 "
        f"thread, {s['runs']} runs in {s['rounds']} interleaved rounds, "
        f"{s['statistic']} per model) at channel fractions "
        f"{s['channel_fractions']}. Each uniformly pruned model (every conv "
        "keeps the fraction `keep` of its filters, rebuilt at those widths) "
        "is then predicted as the sum of its layers' table latencies "
        "(bilinear interpolation for widths between the measured fractions) "
        "plus the measured invoke overhead once, and measured as a whole "
        "TFLite model in the same runtime. No per-model calibration constant "
        "is used.")
    host = (f"Host: {s['machine']}, {s['cpus']} CPUs shared with other jobs "
            f"(load averages are in the JSON), Python {s['python']}, Keras "
            f"{s['keras']}.")
    out = [
        "# Latency-table fidelity (measured TFLite, this host)", "",
        "Generated by `benchmarks/latency_table.py`.", "", method, "", host,
        "", "## Summary", "",
        ("| model | mean abs error | max abs error | mean signed error | "
         "Spearman | table entries |"),
        "|---|---|---|---|---|---|",
    ]
    per_arch = {k: v for k, v in res["summary"].items() if k != "all"}
    for arch, v in per_arch.items():
        out.append(f"| {arch} | {v['mean_abs_error']:.1%} | "
                   f"{v['max_abs_error']:.1%} | "
                   f"{v['mean_signed_error']:+.1%} | {v['spearman']:.3f} | "
                   f"{v['table_entries']} |")
    a = res["summary"]["all"]
    ok_err = all(v["mean_abs_error"] <= 0.20 for v in per_arch.values())
    ok_rho = all(v["spearman"] >= 0.9 for v in per_arch.values())
    out += [
        (f"| both (pooled) | {a['mean_abs_error']:.1%} | | | "
         f"{a['spearman']:.3f} | |"), "",
        (f"Targets (per model): mean error <= 20 % "
         f"{'met' if ok_err else 'NOT met'}; Spearman >= 0.9 "
         f"{'met' if ok_rho else 'NOT met'}."), "",
        "## Per pruned model", "",
        ("| model | keep | on grid | MMACs | predicted ms | measured ms | "
         "error |"),
        "|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        out.append(f"| {r['arch']} | {r['keep']:.2f} | "
                   f"{'yes' if r['on_grid'] else 'interp.'} | "
                   f"{r['macs'] / 1e6:.2f} | {r['predicted_ms']:.3f} | "
                   f"{r['measured_ms']:.3f} | {r['error']:+.1%} |")
    out += [
        "", "## What is and is not measured", "",
        ("- Costed layers: Conv2D, DepthwiseConv2D, Dense, Add, "
         "GlobalAveragePooling2D. BatchNormalization is folded and ReLU/ReLU6 "
         "fused by the converter in the whole model; the single-layer models "
         "have a bias and no activation, the form those layers take after "
         "folding."),
        ("- Measured latencies are for this shared CPU host; a phone needs "
         "its own table (`export_layer_archive` + `device_profiler`)."),
        "- Error is (predicted - measured) / measured.", "",
    ]
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=60)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--statistic", choices=sorted(device_profiler.STATISTICS),
                   default="median")
    p.add_argument("--archs", nargs="+", choices=sorted(ARCHS),
                   default=list(ARCHS))
    p.add_argument("--tables", default=None,
                   help="directory to keep measured tables in and reuse "
                        "them from (default: always measure afresh)")
    args = p.parse_args(argv)
    keras.utils.set_random_seed(0)
    res = run(args.runs, args.rounds, args.statistic, args.archs,
              args.tables)
    os.makedirs(RESULTS, exist_ok=True)
    _write(os.path.join(RESULTS, "latency_table.json"),
           json.dumps(res, indent=1))
    _write(os.path.join(RESULTS, "latency_table.md"), to_markdown(res))
    print(to_markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
