"""The main job (``make demo``): compress a real model on real data, end to end.

Stages, each cached under ``--out`` (and the trained baseline under
``~/.cache/tfcomp``) so a rerun is quick:

1. train a zoo ResNet on Fashion-MNIST;
2. profile it; export float32 and full-integer int8 TFLite files;
3. prune: FPGM soft filter pruning to 50% of the MACs during a short
   fine-tune (or an AMC search with ``DEMO_SEARCH=1``), then
   ``strip_pruning``;
4. quantize: a HAQ search for per-layer (w_bits, a_bits) at half the 8/8
   latency of the Bit Fusion (edge) model, then QAT fine-tuning;
5. export the mixed-precision model as int8 TFLite and as a Bit Fusion
   descriptor, and run the descriptor in the bit-serial simulator;
6. joint: kept channels and bits chosen together (``tfcomp.joint``) on the
   baseline at the chain's Bit Fusion cost, the same QAT fine-tune, and
   which of the two (FPGM -> HAQ or joint) is more accurate at that cost
   (``tfcomp.demo_joint``);
7. measure every TFLite file side by side and write ``report.md`` + plots.

Prints one results table (the better of the two at equal cost marked) and
writes ``results.json`` / ``results.md`` (with the comparison line).
Knobs (environment): ``DEMO_EPOCHS``, ``DEMO_TRAIN_SIZE``, ``DEMO_DEPTH``,
``DEMO_PRUNE_EPOCHS``, ``DEMO_SEARCH`` (1: AMC instead of FPGM),
``DEMO_HAQ_TRIALS``, ``DEMO_QAT_EPOCHS``, ``DEMO_SIM_IMAGES``.

Example:
    $ python -m tfcomp.demo --out artifacts
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import time

import numpy as np

from tfcomp._io import atomic_save_keras, atomic_write_text
from tfcomp.demo_common import compile_classifier, qat_finetune

__all__ = ["STAGES", "DemoContext", "main"]

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
        env = os.environ.get
        self.prune_epochs = int(env("DEMO_PRUNE_EPOCHS", "2"))
        self.search = env("DEMO_SEARCH", "0") not in ("", "0")
        self.amc_trials = int(env("DEMO_AMC_TRIALS", "12"))
        self.haq_trials = int(env("DEMO_HAQ_TRIALS", "6"))
        self.qat_epochs = int(env("DEMO_QAT_EPOCHS", "1"))
        self.sim_images = int(env("DEMO_SIM_IMAGES", "1000"))
        self.extra: dict = {}
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


def stage_train(ctx: DemoContext):
    """Trains (or loads from cache) the baseline ResNet."""
    import keras

    from tfcomp import zoo

    key = hashlib.sha1(json.dumps(
        [ctx.depth, ctx.epochs, ctx.train_size, ctx.seed, "v2"]).encode()
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
        steps = ctx.epochs * -(-len(ctx.x_train) // 128)
        model = compile_classifier(zoo.resnet(depth=ctx.depth),
                         lr=keras.optimizers.schedules.CosineDecay(3e-3,
                                                                   steps))
        model.fit(ctx.x_train, ctx.y_train, batch_size=128,
                  epochs=ctx.epochs, validation_data=(ctx.x_val, ctx.y_val),
                  verbose=2)
        atomic_save_keras(model, cached)
    atomic_save_keras(model, os.path.join(ctx.out, "baseline.keras"))
    ctx.models["baseline"] = model


def _cached_model(ctx: DemoContext, name: str, params: dict, build):
    """Loads ``out/name.keras`` if it was built with the same ``params``.

    ``build()`` returns the model (and optionally extra JSON-able info that
    is cached beside it).
    """
    import keras

    import tfcomp.layers  # noqa: F401  (registers tfcomp's layers)
    from tfcomp.quantization import is_qat_model, link_shared_inputs

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
            model = keras.saving.load_model(path)
            if is_qat_model(model):  # files saved before the link was
                link_shared_inputs(model)  # saved: compute as when built
            return model, meta.get("info")
    result = build()
    model, info = result if isinstance(result, tuple) else (result, None)
    atomic_save_keras(model, path)
    atomic_write_text(stamp, json.dumps(
        {"key": key, "params": params, "info": info}, default=str))
    return model, info


def _export_row(ctx: DemoContext, stage: str, model, accuracy: float,
                quantization: str | None, **extra):
    """Exports ``model`` to TFLite, verifies it and adds a table row."""
    from tfcomp.cost import profile
    from tfcomp.export import export_tflite

    tag = re.sub(r"[^A-Za-z0-9.-]+", "_", stage).strip("_")
    path = os.path.join(ctx.out, f"{tag}.tflite")
    rep = export_tflite(model, path, quantization=quantization,
                        calibration_data=ctx.x_train[:500],
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
    from tfcomp.cost import profile

    model = ctx.models["baseline"]
    prof = profile(model)
    print(f"[profile] {model.name}: {prof.params:,} params, "
          f"{prof.macs / 1e6:.2f} M MACs, {len(prof.layers)} layers")
    ctx.dense_macs = prof.macs
    acc = ctx.evaluate(model)
    ctx.accuracy["baseline"] = acc
    _export_row(ctx, "baseline float32", model, acc, None)
    _export_row(ctx, "baseline int8", model, acc, "int8")
    for row in ctx.rows[-2:]:
        row["accel_ms"] = _accel_ms(model)


def _accel_ms(model, bits=None) -> float:
    """Bit Fusion (edge) latency of ``model`` in ms (8/8 unless ``bits``)."""
    from tfcomp.hardware import BitFusion

    return BitFusion("edge").model_cost(model, bits=bits).latency_s * 1e3


def stage_prune(ctx: DemoContext):
    """Prunes to 50% MACs: FPGM during fit, or AMC with ``DEMO_SEARCH=1``."""
    if ctx.search:
        return _stage_prune_amc(ctx)
    import keras

    from tfcomp.pruning import FPGMPruning, apply_fpgm, strip_pruning

    params = {"method": "fpgm", "target": 0.5, "epochs": ctx.prune_epochs,
              "lr": 1e-3}

    def build():
        keras.utils.set_random_seed(ctx.seed)
        soft = apply_fpgm(ctx.models["baseline"])
        compile_classifier(soft, lr=params["lr"])
        cb = FPGMPruning(ratio=0.4, criterion="fpgm",
                         target_macs=params["target"], verbose=1)
        print(f"[prune] FPGM to {params['target']:.0%} of dense MACs, "
              f"{ctx.prune_epochs} epochs of soft pruning")
        soft.fit(ctx.x_train, ctx.y_train, batch_size=128,
                 epochs=ctx.prune_epochs, callbacks=[cb], verbose=2)
        return strip_pruning(soft), {"rate": cb.effective_ratio}

    small, _ = _cached_model(ctx, "pruned_fpgm", params, build)
    ctx.models["pruned"] = small
    acc = ctx.evaluate(small)
    ctx.accuracy["pruned"] = acc
    _record_pruned(ctx, "FPGM 50% MACs", small, acc)


def _record_pruned(ctx: DemoContext, label: str, small, acc: float):
    base = ctx.models["baseline"]
    ctx.extra["channels"] = _kept_channels(base, small)
    _export_row(ctx, f"{label} float32", small, acc, None)
    _export_row(ctx, f"{label} int8", small, acc, "int8")
    for row in ctx.rows[-2:]:
        row["accel_ms"] = _accel_ms(small)


def _kept_channels(base, small) -> dict:
    """``{layer: [kept, total]}`` for conv / dense layers of the pruned net."""
    out = {}
    for layer in small.layers:
        cfg = layer.get_config()
        key = "filters" if "filters" in cfg else (
            "units" if "units" in cfg else None)
        if key is None:
            continue
        total = base.get_layer(layer.name).get_config()[key]
        out[layer.name] = [int(cfg[key]), int(total)]
    return out


def _stage_prune_amc(ctx: DemoContext):
    """AMC: a DDPG search for per-layer ratios at 50% MACs, then fine-tune.

    CPU scale: ``DEMO_AMC_TRIALS`` episodes (paper: 100 warm-up + 800).
    """

    from tfcomp.tuners.amc import AMCHyperModel, AMCTuner

    params = {"method": "amc", "target": 0.5, "trials": ctx.amc_trials,
              "epochs": ctx.prune_epochs, "lr": 1e-3}

    def build():
        base = ctx.models["baseline"]
        hm = AMCHyperModel(base, ctx.x_train[:256],
                           (ctx.x_val[:2000], ctx.y_val[:2000]),
                           budget=params["target"], round_to=1)
        tuner = AMCTuner(hm, max_trials=ctx.amc_trials,
                         warmup=max(1, ctx.amc_trials // 2), seed=ctx.seed,
                         directory=os.path.join(ctx.out, "search"),
                         project_name="amc", overwrite=True)
        print(f"[prune] AMC search, {ctx.amc_trials} episodes at "
              f"{params['target']:.0%} of dense MACs")
        tuner.search(verbose=0)
        small, _ = hm.prune(tuner.get_best_hyperparameters()[0])
        compile_classifier(small, lr=params["lr"])
        small.fit(ctx.x_train, ctx.y_train, batch_size=128,
                  epochs=ctx.prune_epochs, verbose=2)
        return small

    small, _ = _cached_model(ctx, "pruned_amc", params, build)
    ctx.models["pruned"] = small
    acc = ctx.evaluate(small)
    ctx.accuracy["pruned"] = acc
    _record_pruned(ctx, "AMC 50% MACs", small, acc)


def stage_quantize(ctx: DemoContext):
    """HAQ on the Bit Fusion model, then QAT of the best policy.

    The latency budget is halfway between the all-2-bit floor and 8/8
    (HAQ's paper budgets are fractions of 8/8 on ImageNet-sized layers,
    which a tiny Fashion-MNIST net cannot reach on Bit Fusion's array).

    CPU scale: ``DEMO_HAQ_TRIALS`` episodes of 20 fine-tune batches each
    (paper: 20 warm-up + 600 episodes of one epoch).
    """

    from tfcomp.hardware import BitFusion
    from tfcomp.tuners.haq import HAQHyperModel, HAQTuner

    params = {"method": "haq", "hardware": "bitfusion-edge", "budget": 0.5,
              "budget_is": "fraction of the way from the 2-bit floor to 8/8",
              "trials": ctx.haq_trials, "qat_epochs": ctx.qat_epochs,
              "lr": 1e-4, "pruned_by": "amc" if ctx.search else "fpgm",
              "wall": "next cheaper width", "bits": "native",
              "costs": "bitfusion simulator formulas (im2col stem, 32-bit "
                       "padded outputs)"}
    pruned = ctx.models["pruned"]

    def make(budget):
        return HAQHyperModel(
            pruned, (ctx.x_train, ctx.y_train),
            (ctx.x_val[:2000], ctx.y_val[:2000]),
            hardware=BitFusion("edge"), resource="latency",
            budget=budget, finetune_steps=20, seed=ctx.seed)

    # Small layers fill Bit Fusion's 16x32 array poorly, so lower bits buy
    # less on a tiny net than on ImageNet models: the budget is set halfway
    # between the 2-bit floor (first/last layers at 8 bits) and 8/8.
    probe = make(1.0)
    floor = probe.min_cost / probe.full_cost
    params["budget"] = round(floor + params["budget"] * (1.0 - floor), 4)

    def build():
        hm = make(params["budget"])
        tuner = HAQTuner(hm, max_trials=ctx.haq_trials,
                         warmup=max(1, ctx.haq_trials // 2), seed=ctx.seed,
                         directory=os.path.join(ctx.out, "search"),
                         project_name="haq", overwrite=True)
        print(f"[quantize] HAQ search on Bit Fusion (edge), "
              f"{ctx.haq_trials} episodes, budget {params['budget']:.1%} "
              f"of the 8/8 latency (the all-2-bit floor is {floor:.1%})")
        tuner.search(verbose=0)
        policy = tuner.get_best_policy()
        qat = qat_finetune(ctx, pruned, policy, params["lr"],
                           ctx.qat_epochs,
                           f"[quantize] QAT fine-tune of the best policy, "
                           f"{ctx.qat_epochs} epoch(s)")
        return qat, {"policy": {k: list(v) for k, v in policy.items()}}

    qat, info = _cached_model(ctx, "quantized_haq", params, build)
    policy = {k: tuple(v) for k, v in info["policy"].items()}
    ctx.models["quantized"] = qat
    ctx.extra["bits"] = {k: list(v) for k, v in policy.items()}
    acc = ctx.evaluate(qat)
    ctx.accuracy["quantized"] = acc
    accel = _accel_ms(pruned, policy)
    # TFLite has no sub-8-bit kernels: the file holds the b-bit codes in
    # int8 storage and follows the QAT model's grids exactly.
    _add_quantized_rows(ctx, "HAQ mixed precision", qat, acc, accel)
    ctx.extra["hardware_table"] = _bitfusion_heatmap(pruned)


def _bitfusion_heatmap(model) -> dict:
    """Per-layer Bit Fusion latency at w = a = 2..8 bits, for the report."""
    from tfcomp.hardware import BitFusion

    hw = BitFusion("edge")
    bits = list(range(2, 9))
    costs = [hw.model_cost(model, bits=(b, b)) for b in bits]
    names = list(costs[0].layers)
    return {"name": "BitFusion-edge (w = a bits)", "layers": names,
            "bits": bits,
            "latency_ms": [[c.layers[n].latency_s * 1e3 for c in costs]
                           for n in names]}


def stage_bitserial(ctx: DemoContext):
    """Bit Fusion descriptor of the QAT model, run in the simulator.

    ``export_bitserial`` checks the simulator against the integer reference
    bit for bit on 64 images; the simulator then classifies the first
    ``DEMO_SIM_IMAGES`` test images from the files alone.
    """
    from tfcomp.export.bitserial import export_bitserial, simulate_bitserial

    qat = ctx.models["quantized"]
    path = os.path.join(ctx.out, "haq_bitfusion.json")
    rep = export_bitserial(qat, path, hardware="bitfusion",
                           calibration_data=ctx.x_train[:256],
                           verify_x=ctx.x_test[:64])
    x, y = ctx.x_test[:ctx.sim_images], ctx.y_test[:ctx.sim_images]
    print(f"[bitserial] {path}: {rep.size_bytes:,} B (packed weights "
          f"{rep.blob_bytes:,} B), {rep.cycles:,} cycles = "
          f"{rep.latency_s * 1e3:.4f} ms; simulator == integer reference: "
          f"{rep.simulator_exact}. Simulating {len(x)} test images")
    sim = np.asarray(simulate_bitserial(path, x, dequantize=True))
    sim = sim.reshape(len(x), -1).argmax(-1)
    keras_top1 = qat.predict(x, batch_size=500, verbose=0).argmax(-1)
    agreement = float(np.mean(sim == keras_top1))
    qat_there = float(np.mean(keras_top1 == y))
    print(f"[bitserial] top-1 agreement with the QAT Keras model "
          f"{agreement:.4f} (its accuracy on these images {qat_there:.4f})")
    # measured on fewer images than the other rows: the label says so and
    # gives the QAT model's accuracy on the same images beside it
    ctx.add_row(stage=f"HAQ mixed precision, Bit Fusion descriptor "
                      f"(simulated on the first {len(x):,} test images; "
                      f"the QAT Keras model there {qat_there:.4f})",
                accuracy=float(np.mean(sim == y)),
                macs=ctx.rows[-1]["macs"], params=ctx.rows[-1]["params"],
                descriptor_bytes=rep.size_bytes,
                accel_ms=rep.latency_s * 1e3, agreement=agreement,
                simulator_exact=rep.simulator_exact,
                note=f"first {len(x)} test images")


def stage_joint(ctx: DemoContext):
    """Joint channels + bits at the prune -> HAQ chain's Bit Fusion cost,
    the chain's final fine-tune, and which of the two is better
    (:mod:`tfcomp.demo_joint`)."""
    from tfcomp import demo_joint

    base, pruned = ctx.models["baseline"], ctx.models["pruned"]
    chain_ms = _accel_ms(pruned, {k: tuple(v)
                                  for k, v in ctx.extra["bits"].items()})
    dense_ms = _accel_ms(base)
    params = demo_joint.joint_params(ctx, chain_ms / dense_ms)
    try:
        qat, info = _cached_model(ctx, "joint", params,
                                  lambda: demo_joint.build_joint(ctx, params))
    except ValueError as e:  # the chain's cost is below the joint floor
        if "cannot be reached" not in str(e):
            raise
        print(f"[joint] skipped: {e}")
        ctx.extra["joint_vs_chain"] = f"joint stage skipped: {e}"
        return
    demo_joint.write_artifacts(ctx.out, info)
    acc, accel = ctx.evaluate(qat), _accel_ms(qat)
    row = _add_quantized_rows(ctx, "joint channels + bits", qat, acc, accel)
    row.update(descriptor_bytes=info["descriptor"]["bytes"],
               simulator_exact=info["descriptor"]["simulator_exact"])
    chain_row = next(r for r in ctx.rows if r["stage"].startswith(
        "HAQ mixed precision, QAT"))
    winner, text = demo_joint.verdict(
        {"accuracy": ctx.accuracy["quantized"], "accel_ms": chain_ms,
         "cost": chain_ms / dense_ms},
        {"accuracy": acc, "accel_ms": accel, "cost": accel / dense_ms},
        "AMC -> HAQ" if ctx.search else "FPGM -> HAQ")
    (row if winner == "joint" else chain_row)["stage"] += \
        " (better at equal cost)"
    print(f"[joint] {text}")
    ctx.accuracy["joint"] = acc
    ctx.extra["joint_vs_chain"] = text
    ctx.extra["joint"] = {"keep": info["result"]["keep"],
                          "bits": info["result"]["bits"],
                          "cost": info["result"]["cost"],
                          "descriptor": info["descriptor"]}


def _add_quantized_rows(ctx: DemoContext, label: str, qat, acc: float,
                        accel: float) -> dict:
    """The QAT Keras row and its int8 TFLite row; returns the first."""
    from tfcomp.cost import profile

    prof = profile(qat)
    ctx.add_row(stage=f"{label}, QAT Keras model", accuracy=acc,
                macs=prof.macs, params=prof.params, bops=prof.bops,
                accel_ms=accel)
    row = ctx.rows[-1]
    _export_row(ctx, f"{label}, int8 TFLite", qat, acc, "int8")
    ctx.rows[-1]["accel_ms"] = accel
    return row


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


def stage_report(ctx: DemoContext):
    """``report.md`` + PNG plots next to the results."""
    from tfcomp.report import write_report

    path = write_report(_results(ctx), os.path.join(ctx.out, "report"))
    print(f"[report] {path}")


def _results(ctx: DemoContext) -> dict:
    return {"rows": [dict(r) for r in ctx.rows], **ctx.extra}


STAGES = [stage_train, stage_export_baseline, stage_prune, stage_quantize,
          stage_bitserial, stage_joint]
FINAL_STAGES = [stage_latency, stage_report]


def format_table(rows: list[dict]) -> str:
    """Markdown table of the demo's rows."""
    head = ["stage", "top-1 acc", "MACs (M)", "params (K)", "TFLite KB",
            "TFLite ms", "accel. ms"]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        def f(key, fmt, scale=1.0, r=r):
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
                        default=int(os.environ.get("DEMO_EPOCHS", "4")))
    parser.add_argument("--train-size", type=int,
                        default=int(os.environ.get("DEMO_TRAIN_SIZE", "30000")))
    parser.add_argument("--depth", type=int,
                        default=int(os.environ.get("DEMO_DEPTH", "8")))
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
    if ctx.extra.get("joint_vs_chain"):
        table += "\n\n" + ctx.extra["joint_vs_chain"]
    print("\nResults (Fashion-MNIST test set, 10,000 images; latency: "
          "batch 1, 1 thread, median)\n")
    print(table)
    atomic_write_text(os.path.join(args.out, "results.json"),
                      json.dumps(_results(ctx), indent=2, default=str))
    atomic_write_text(os.path.join(args.out, "results.md"), table + "\n")
    print(f"\nArtifacts in {os.path.abspath(args.out)}/ "
          f"(total {time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
