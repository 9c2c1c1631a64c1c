"""The main job (``make demo``): compress a real model on real data, end to end.

Stages, each cached under ``--out`` (and the trained baseline under
``~/.cache/tfcomp``) so a rerun is quick:

1. train a zoo ResNet on Fashion-MNIST;
2. profile it; export float32 and full-integer int8 TFLite files, verify
   them against Keras and measure their latency side by side;
3. later stages (pruning, quantization, search, bit-serial export) plug in
   through ``STAGES``.

Prints one results table and writes ``results.json`` / ``results.md``.

Example:
    $ python -m tfcomp.demo --out artifacts
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time

import numpy as np

__all__ = ["main", "DemoContext", "STAGES"]

CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "tfcomp")


class DemoContext:
    """Shared state of the demo stages: data, models, rows of the table."""

    def __init__(self, out: str, epochs: int, train_size: int, depth: int,
                 seed: int):
        self.out = out
        self.epochs = epochs
        self.train_size = train_size
        self.depth = depth
        self.seed = seed
        self.rows: list[dict] = []
        self.accuracy: dict = {}
        self.baseline_key = ""
        self.prune_epochs = int(os.environ.get("DEMO_PRUNE_EPOCHS", 2))
        self.models: dict = {}
        self.tflite: dict = {}
        os.makedirs(out, exist_ok=True)

    def load_data(self):
        from tfcomp.data import load_fashion_mnist

        (x, y), (xt, yt) = load_fashion_mnist()
        rng = np.random.default_rng(self.seed)
        idx = rng.permutation(len(x))
        self.x_train, self.y_train = x[idx[:self.train_size]], y[
            idx[:self.train_size]]
        # A held-out split for searches and calibration, never the test set.
        self.x_val, self.y_val = x[idx[-5000:]], y[idx[-5000:]]
        self.x_test, self.y_test = xt, yt

    def evaluate(self, model) -> float:
        logits = model.predict(self.x_test, batch_size=512, verbose=0)
        return float(np.mean(logits.argmax(-1) == self.y_test))

    def add_row(self, **row):
        self.rows.append(row)


def _compile(model, lr=1e-3):
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"])
    return model


def stage_train(ctx: DemoContext):
    """Trains (or loads from cache) the baseline ResNet."""
    import keras

    from tfcomp import zoo

    key = hashlib.sha1(json.dumps(
        [ctx.depth, ctx.epochs, ctx.train_size, ctx.seed, "v1"]).encode()
    ).hexdigest()[:10]
    ctx.baseline_key = key
    cached = os.path.join(CACHE_DIR, f"resnet{ctx.depth}-fmnist-{key}.keras")
    if os.path.exists(cached):
        print(f"[train] loading cached baseline {cached}")
        model = keras.saving.load_model(cached)
    else:
        print(f"[train] ResNet-{ctx.depth} on {ctx.train_size} Fashion-MNIST "
              f"images, {ctx.epochs} epochs")
        keras.utils.set_random_seed(ctx.seed)
        model = _compile(zoo.resnet(depth=ctx.depth))
        model.fit(ctx.x_train, ctx.y_train, batch_size=128,
                  epochs=ctx.epochs, validation_data=(ctx.x_val, ctx.y_val),
                  verbose=2)
        os.makedirs(CACHE_DIR, exist_ok=True)
        tmp = cached + ".tmp.keras"
        model.save(tmp)
        os.replace(tmp, cached)
    model.save(os.path.join(ctx.out, "baseline.keras"))
    ctx.models["baseline"] = model


def _cached_model(ctx: DemoContext, name: str, params: dict, build):
    """Loads ``out/name.keras`` if it was built with the same ``params``.

    ``build()`` returns the model (and optionally extra JSON-able info that
    is cached beside it).
    """
    import keras

    import tfcomp.layers  # noqa: F401  (registers tfcomp's layers)

    key = hashlib.sha1(json.dumps(
        [ctx.baseline_key, params], sort_keys=True, default=str).encode()
    ).hexdigest()[:12]
    path = os.path.join(ctx.out, f"{name}.keras")
    stamp = os.path.join(ctx.out, f"{name}.stamp.json")
    if os.path.exists(path) and os.path.exists(stamp):
        with open(stamp) as f:
            meta = json.load(f)
        if meta.get("key") == key:
            print(f"[{name}] loading cached {path}")
            return keras.saving.load_model(path), meta.get("info")
    result = build()
    model, info = result if isinstance(result, tuple) else (result, None)
    tmp = path + ".tmp.keras"
    model.save(tmp)
    os.replace(tmp, path)
    with open(stamp + ".tmp", "w") as f:
        json.dump({"key": key, "params": params, "info": info}, f,
                  default=str)
    os.replace(stamp + ".tmp", stamp)
    return model, info


def _export_row(ctx: DemoContext, stage: str, model, accuracy: float,
                quantization: str | None, **extra):
    """Exports ``model`` to TFLite, verifies it and adds a table row."""
    from tfcomp import profile
    from tfcomp.export import export_tflite

    tag = stage.replace(" ", "_").replace("/", "-")
    path = os.path.join(ctx.out, f"{tag}.tflite")
    rep = export_tflite(model, path, quantization=quantization,
                        representative_data=ctx.x_train[:500],
                        verify_data=ctx.x_test, num_verify=len(ctx.x_test))
    prof = profile(model)
    print(f"[export] {path}: {rep.size_bytes:,} B, max|err| "
          f"{rep.max_abs_error:.4g}, top-1 agreement with Keras "
          f"{rep.top1_agreement:.4f}")
    if quantization is not None:
        accuracy = _tflite_accuracy(path, ctx)
    ctx.add_row(stage=stage, accuracy=accuracy, macs=prof.macs,
                params=prof.params, tflite_bytes=rep.size_bytes,
                agreement=rep.top1_agreement, tflite=path, **extra)
    return rep


def stage_export_baseline(ctx: DemoContext):
    """Profiles the baseline and exports float32 and int8 TFLite files."""
    from tfcomp import profile

    model = ctx.models["baseline"]
    prof = profile(model)
    print(f"[profile] {model.name}: {prof.params:,} params, "
          f"{prof.macs / 1e6:.2f} M MACs, {len(prof.layers)} layers")
    ctx.dense_macs = prof.macs
    acc = ctx.evaluate(model)
    ctx.accuracy["baseline"] = acc
    _export_row(ctx, "baseline float32", model, acc, None)
    _export_row(ctx, "baseline int8", model, acc, "int8")


def stage_prune(ctx: DemoContext):
    """FPGM soft filter pruning to 50% MACs during a short fine-tune."""
    import keras

    from tfcomp.pruning.fpgm import FPGMPruning
    from tfcomp.pruning.strip import apply_fpgm, strip

    params = {"method": "fpgm", "target": 0.5, "epochs": ctx.prune_epochs,
              "lr": 1e-3}

    def build():
        keras.utils.set_random_seed(ctx.seed)
        soft = apply_fpgm(ctx.models["baseline"])
        _compile(soft, lr=params["lr"])
        cb = FPGMPruning(rate=0.4, criterion="fpgm",
                                 target_macs=params["target"], verbose=1)
        print(f"[prune] FPGM to {params['target']:.0%} of dense MACs, "
              f"{ctx.prune_epochs} epochs of soft pruning")
        soft.fit(ctx.x_train, ctx.y_train, batch_size=128,
                 epochs=ctx.prune_epochs, callbacks=[cb], verbose=2)
        return strip(soft), {"rate": cb.effective_rate}

    small, info = _cached_model(ctx, "pruned_fpgm", params, build)
    ctx.models["pruned"] = small
    acc = ctx.evaluate(small)
    ctx.accuracy["pruned"] = acc
    _export_row(ctx, "FPGM 50% MACs float32", small, acc, None)
    _export_row(ctx, "FPGM 50% MACs int8", small, acc, "int8")


def _tflite_accuracy(path: str, ctx: DemoContext) -> float:
    from tfcomp.export.runtime import make_interpreter, run_interpreter

    interp, _ = make_interpreter(path)
    y = run_interpreter(interp, ctx.x_test, batch_size=500)
    return float(np.mean(y.argmax(-1) == ctx.y_test))


def stage_latency(ctx: DemoContext):
    """Measures every exported file side by side (interleaved rounds)."""
    from tfcomp.export import measure_latencies

    paths = {row["stage"]: row["tflite"] for row in ctx.rows
             if row.get("tflite")}
    results = measure_latencies(paths, runs=60, warmup=10, rounds=3)
    for row in ctx.rows:
        if row["stage"] in results:
            row["latency_ms"] = results[row["stage"]].median_ms
            row["runtime"] = results[row["stage"]].runtime


STAGES = [stage_train, stage_export_baseline, stage_prune]
FINAL_STAGES = [stage_latency]


def format_table(rows: list[dict]) -> str:
    """Markdown table of the demo's rows."""
    head = ["stage", "top-1 acc", "MACs (M)", "params (K)", "TFLite KB",
            "TFLite ms", "accel. ms"]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        def f(key, fmt, scale=1.0):
            v = r.get(key)
            return "-" if v is None else fmt.format(v / scale)
        lines.append("| " + " | ".join([
            r["stage"], f("accuracy", "{:.4f}"), f("macs", "{:.2f}", 1e6),
            f("params", "{:.1f}", 1e3), f("tflite_bytes", "{:.1f}", 1e3),
            f("latency_ms", "{:.3f}"), f("accel_ms", "{:.4f}"),
        ]) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="tfcomp main job: compress a ResNet on Fashion-MNIST.")
    parser.add_argument("--out", default="artifacts",
                        help="directory for models, .tflite files, results")
    parser.add_argument("--epochs", type=int,
                        default=int(os.environ.get("DEMO_EPOCHS", 3)))
    parser.add_argument("--train-size", type=int,
                        default=int(os.environ.get("DEMO_TRAIN_SIZE", 20000)))
    parser.add_argument("--depth", type=int,
                        default=int(os.environ.get("DEMO_DEPTH", 8)))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    t0 = time.time()
    ctx = DemoContext(args.out, args.epochs, args.train_size, args.depth,
                      args.seed)
    ctx.load_data()
    for stage in STAGES + FINAL_STAGES:
        t = time.time()
        stage(ctx)
        print(f"[{stage.__name__}] done in {time.time() - t:.1f} s")
    table = format_table(ctx.rows)
    print("\nResults (Fashion-MNIST test set, 10,000 images; latency: "
          "batch 1, 1 thread, median)\n")
    print(table)
    serialisable = [{k: v for k, v in r.items()} for r in ctx.rows]
    with open(os.path.join(args.out, "results.json.tmp"), "w") as f:
        json.dump(serialisable, f, indent=2)
    os.replace(os.path.join(args.out, "results.json.tmp"),
               os.path.join(args.out, "results.json"))
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(table + "\n")
    print(f"\nArtifacts in {os.path.abspath(args.out)}/ "
          f"(total {time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
