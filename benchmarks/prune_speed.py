"""Does physical channel pruning turn into real TFLite speed?

For zoo ResNet-20 and MobileNetV2 (28x28x1), prune to 50% of the dense MACs
with the L1 criterion (``round_to=1`` and ``round_to=8``), export the dense
model, the pruned model and the same architecture built directly in Keras at
the pruned widths (``tfcomp.zoo`` ``filters=`` overrides; the speed limit of
surgery) to float32 TFLite, and time them side by side (interleaved rounds,
one interpreter thread). Surgery leaves nothing behind when the pruned file
has the same tensors as the directly built one and runs as fast.

A second table lists keras.applications models (weights=None, small inputs):
groups found, prunable groups, MACs before / after a uniform 30% plan.

Usage:
    python benchmarks/prune_speed.py [--runs 600] [--rounds 15] [--no-apps]

Writes ``benchmarks/results/prune_speed.json`` and ``.md``.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
from _common import parser, time_tflite, write_results

import tfcomp
from tfcomp.export import export_tflite
from tfcomp.export.runtime import make_interpreter
from tfcomp.graph import DependencyGraph
from tfcomp.pruning import estimate_macs, make_plan, prune_channels

ZOO = {
    "resnet20": lambda **kw: tfcomp.zoo.resnet(depth=20, **kw),
    "mobilenet_v2": lambda **kw: tfcomp.zoo.mobilenet_v2(alpha=1.0, **kw),
}
APPS = [("MobileNet", 32), ("MobileNetV2", 32), ("MobileNetV3Small", 32),
        ("ResNet50", 32), ("ResNet50V2", 32), ("DenseNet121", 32),
        ("EfficientNetB0", 32), ("VGG16", 32), ("Xception", 71),
        ("ConvNeXtTiny", 32), ("EfficientNetV2B0", 32),
        ("InceptionV3", 75), ("InceptionResNetV2", 75),
        ("NASNetMobile", 32)]


def widths(model) -> dict:
    out = {}
    for layer in model.layers:
        cfg = layer.get_config()
        for key in ("filters", "units"):
            if key in cfg:
                out[layer.name] = int(cfg[key])
    return out


def arch(model) -> list:
    return [(type(layer).__name__, layer.name,
             tuple(tuple(v.shape) for v in layer.weights))
            for layer in model.layers]


def direct_model(name: str, pruned: keras.Model) -> tuple:
    """The pruned architecture built directly (fresh weights)."""
    m = ZOO[name](filters=widths(pruned))
    if arch(m) == arch(pruned):
        return m, "zoo(filters=...)"
    m = keras.Model.from_config(pruned.get_config())
    return m, "from_config (zoo build differs)"


def tensor_signature(path: str) -> tuple:
    interp, _ = make_interpreter(path)
    details = interp.get_tensor_details()
    shapes = sorted(tuple(int(s) for s in d["shape"]) for d in details)
    suspicious = [d["name"] for d in details
                  if any(k in d["name"].lower()
                         for k in ("gather", "slice", "strided"))]
    return shapes, suspicious


def bench_zoo(runs: int, rounds: int, tmp: str) -> list:
    rows = []
    for name, build in ZOO.items():
        keras.utils.set_random_seed(0)
        dense = build()
        dense_macs = tfcomp.profile(dense).macs
        models = {"dense": (dense, "-", None)}
        plans = {}
        for rt in (1, 8):
            plan = make_plan(dense, target_macs=0.5, importance="l1",
                             round_to=rt)
            pruned = prune_channels(dense, plan)
            direct, how = direct_model(name, pruned)
            models[f"pruned r{rt}"] = (pruned, f"l1, round_to={rt}", rt)
            models[f"direct r{rt}"] = (direct, how, rt)
            plans[rt] = plan
        paths, info = {}, {}
        for key, (m, how, rt) in models.items():
            path = os.path.join(tmp, f"{name}_{key.replace(' ', '_')}.tflite")
            rep = export_tflite(m, path, verify=True, num_verify=16)
            prof = tfcomp.profile(m)
            paths[key] = path
            info[key] = {"how": how, "macs": prof.macs,
                         "params": prof.params, "bytes": rep.size_bytes,
                         "max_abs_error": rep.max_abs_error,
                         "round_to": rt}
        lat = time_tflite(paths, runs=runs, rounds=rounds, warmup=10)
        for key in models:
            r = info[key]
            r.update(model=name, variant=key,
                     median_ms=lat[key].median_ms, min_ms=lat[key].min_ms,
                     runtime=lat[key].runtime,
                     macs_ratio=r["macs"] / dense_macs,
                     speedup=lat["dense"].median_ms / lat[key].median_ms)
            if key.startswith("pruned"):
                rt = r["round_to"]
                d = f"direct r{rt}"
                sig_p, sus = tensor_signature(paths[key])
                sig_d, _ = tensor_signature(paths[d])
                r["same_tensors_as_direct"] = sig_p == sig_d
                r["gather_slice_tensors"] = len(sus)
                r["vs_direct"] = (lat[key].median_ms / lat[d].median_ms
                                  - 1.0)
                r["vs_direct_min"] = lat[key].min_ms / lat[d].min_ms - 1.0
                r["ratio"] = plans[rt].meta["ratio"]
                r["estimate_macs"] = estimate_macs(dense, plans[rt])
            rows.append(r)
            print(f"{name:13s} {key:10s} MACs {r['macs']:>11,} "
                  f"({r['macs_ratio']:.2f}) {r['median_ms']:.3f} ms "
                  f"x{r['speedup']:.2f}", flush=True)
    return rows


def bench_apps() -> list:
    rows = []
    for name, size in APPS:
        keras.backend.clear_session()
        t = time.time()
        m = getattr(keras.applications, name)(
            weights=None, input_shape=(size, size, 3), classes=10,
            classifier_activation=None)
        g = DependencyGraph(m)
        plan = make_plan(g, ratio=0.3, importance="l1")
        before = tfcomp.profile(m).macs
        after = estimate_macs(g, plan)
        rows.append({"model": name, "input": size, "groups": len(g.groups),
                     "prunable": len(g.prunable_groups),
                     "barriers": len(g.barriers), "macs_before": before,
                     "macs_after": after,
                     "params": m.count_params(),
                     "seconds": time.time() - t})
        print(f"{name:18s} groups {len(g.groups):4d} prunable "
              f"{len(g.prunable_groups):4d} MACs {before:,} -> {after:,}",
              flush=True)
    return rows


def to_markdown(env: dict, zoo_rows: list, app_rows: list) -> str:
    head = (
        f"Measured {env['date']} on {env['machine']} ({env['cpus']} CPUs, "
        f"load average {env['load']:.1f} at start: a shared box), runtime "
        f"`{env['runtime']}`, 1 thread, float32, batch 1, {env['runs']} "
        f"timed runs per model interleaved over {env['rounds']} rounds; "
        "latency = median of the round medians (min of the round medians "
        "in brackets, the figure least disturbed by other load).")
    plans = (
        "Plans: L1 importance, one uniform per-group ratio solved by "
        "bisection for 50% of the dense MACs (`make_plan(target_macs=0.5, "
        "round_to=...)`). *direct* = the same widths built directly with "
        "`tfcomp.zoo` (`filters=`), fresh weights: the speed limit of "
        "surgery.")
    out = ["# Channel pruning: real TFLite speed", "", head, "", plans, "",
           ("| model | variant | MACs | MACs ratio | params | TFLite KB | "
            "latency ms | speed-up vs dense | pruned vs direct | same "
            "tensors as direct |"),
           "|---|---|---:|---:|---:|---:|---:|---:|---:|:---:|"]
    for r in zoo_rows:
        vs = same = ""
        if "vs_direct" in r:
            vs = (f"{100 * r['vs_direct']:+.1f}% "
                  f"({100 * r['vs_direct_min']:+.1f}%)")
            same = "yes" if r["same_tensors_as_direct"] else "no"
        variant = r["variant"]
        if variant.startswith("direct"):
            variant += f" ({r['how']})"
        out.append(
            f"| {r['model']} | {variant} | {r['macs']:,} | "
            f"{r['macs_ratio']:.2f} | {r['params']:,} | "
            f"{r['bytes'] / 1024:.0f} | {r['median_ms']:.3f} "
            f"({r['min_ms']:.3f}) | {r['speedup']:.2f}x | {vs} | {same} |")
    out += ["", ("MACs ratio = pruned / dense; speed-up = dense latency / "
                 "latency; *same tensors* = the pruned and the directly "
                 "built TFLite files hold tensors of identical shapes "
                 "(no extra gather/slice/zero channels). `round_to=8` "
                 "keeps multiples of 8 channels, so the uniform ratio moves "
                 "in steps and can land well below the budget."), ""]
    if app_rows:
        out += ["## keras.applications (weights=None)", "",
                ("Uniform 30% L1 plan; MACs after from the analytic count "
                 "(equal to `tfcomp.profile` of the pruned model, as "
                 "tests/pruning/test_applications.py checks)."), "",
                ("| model | input | groups | prunable | barriers | MACs "
                 "before | MACs after | ratio |"),
                "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in app_rows:
            out.append(
                f"| {r['model']} | {r['input']} | {r['groups']} | "
                f"{r['prunable']} | {r['barriers']} | {r['macs_before']:,} |"
                f" {r['macs_after']:,} | "
                f"{r['macs_after'] / r['macs_before']:.2f} |")
        out.append("")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = parser(__doc__)
    ap.add_argument("--runs", type=int, default=600)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--no-apps", action="store_true")
    args = ap.parse_args(argv)
    env = {"date": time.strftime("%Y-%m-%d %H:%M"),
           "machine": platform.machine() + " " + platform.processor(),
           "cpus": os.cpu_count(), "load": os.getloadavg()[0],
           "runs": args.runs, "rounds": args.rounds,
           "python": sys.version.split()[0], "keras": keras.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        zoo_rows = bench_zoo(args.runs, args.rounds, tmp)
    env["runtime"] = zoo_rows[0]["runtime"]
    app_rows = [] if args.no_apps else bench_apps()
    result = {"env": env, "zoo": zoo_rows, "applications": app_rows}
    markdown = to_markdown(env, zoo_rows, app_rows)
    write_results(args.out, "prune_speed", result, markdown, default=float)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
