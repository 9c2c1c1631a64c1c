"""Quantization on Fashion-MNIST with zoo ResNet-20: PTQ, QAT, DNAS, TFMOT.

Rows (every quantized row starts from the same trained float checkpoint and
gets the same fine-tune budget, ``--qat-epochs`` epochs of ``fit``):

* float: ``tfcomp.zoo.resnet(depth=20)`` trained ``--float-epochs`` epochs;
* int8 PTQ: ``export_tflite(float, "int8", calibration_data=512
  training images)`` (no training);
* 8-bit QAT, uniform 4-bit and 2-bit QAT: ``quantize_model(float, bits=b)``
  (first and last layer at 8/8, HAQ's convention), fine-tuned;
* DNAS: ``dnas.build_supernet(float, cost="bops")`` (candidates w in
  {2, 3, 4, 5, 6, 8} x a in {4, 8}), ``dnas.search`` for ``--dnas-epochs``
  epochs (weights on 80% of the subset, theta on 20%), then the argmax
  architecture and ``--dnas-samples`` architectures sampled from
  ``P_theta``, each ``dnas.derive(budget=BOPs of uniform 4-bit)``;
  ``dnas.select_best`` trains each for one QAT epoch on 80% of the subset
  and keeps the most accurate on the other 20% (the paper's "sample, train,
  keep the best"); the winner gets ``quantize_model`` and the same QAT
  fine-tune from the float checkpoint as the uniform rows. CPU-scale
  deviations: a few search epochs instead of FBNet's 90, so theta is trained
  with Adam(``--dnas-theta-lr`` 0.05; FBNet 0.01 over thousands of steps)
  and the temperature decays from 5 to ``--dnas-final-tau`` 0.5 over the
  search (FBNet: 5 * 0.956^epoch);
* TFMOT 8-bit QAT (peer): the same architecture rebuilt in ``tf_keras``
  with the float checkpoint's weights, ``tfmot.quantization.keras.
  quantize_model``, the same fine-tune, converted full-integer; run in a
  subprocess with ``TF_USE_LEGACY_KERAS=1`` (the ``[tfmot]`` extra); the
  row is skipped with a note when TFMOT is not installed.

Columns: test accuracy of the Keras model (float / QAT), test accuracy of the
int8 ``.tflite`` file, its top-1 agreement with the Keras model it came from
(target >= 99%), BOPs (``MACs * w_bits * a_bits`` from ``tfcomp.profile``
MACs), weight bytes at the true bit-widths (kernels at ``w_bits``, int32
biases), the ``.tflite`` size, int8 TFLite latency (``ai_edge_litert``, one
thread, batch 1, all files timed side by side in one interleaved
``measure_latencies`` call), and the training epoch-time ratio vs float
training (steady-state step time x steps per epoch; the first steps of each
``fit``, which include tracing, are excluded).

Every ``fit`` runs with ``jit_compile=False`` (TFMOT's tf_keras does not
use XLA either), Adam, batch ``--batch``.

CPU scale (deviations from the papers' ImageNet / CIFAR schedules): a random
subset of ``--train`` training images, few epochs, ``--test`` test images,
one run (no seeds averaged). The numbers compare methods under one small
budget; they are not the papers' accuracies.

Usage (the run recorded in benchmarks/results/quantization.md):
    nice -n 10 .venv/bin/python benchmarks/quantization.py

    Options: [--train 4000] [--test 4000] [--float-epochs 3]
    [--qat-epochs 2] [--dnas-epochs 3] [--dnas-theta-lr 0.05]
    [--dnas-final-tau 0.5] [--dnas-samples 4] [--batch 64] [--seed 0]
    [--out benchmarks/results] [--smoke]

Writes ``quantization.json`` and ``quantization.md`` into ``--out``.

Reference: Wang et al., HAQ, arXiv:1811.08886 (linear quantizers, 8-bit
first / last layer); Wu et al., DNAS, arXiv:1812.00090; Jacob et al.,
arXiv:1712.05877 (integer-only inference, QAT).
"""

from __future__ import annotations

import os
import platform
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import _tfmot
import keras
import numpy as np
from _common import (
    StepTimer,
    compile_model,
    fashion_mnist_subset,
    parser,
    time_tflite,
    write_results,
)
from _common import log as _common_log
from _tfmot import interleaved_step_times

import tfcomp
from tfcomp.export import export_tflite
from tfcomp.export.runtime import make_interpreter, run_interpreter
from tfcomp.quantization import dnas, quantization_report, quantize_model

T0 = time.time()


DNAS_CANDIDATES = tuple((w, a) for w in (2, 3, 4, 5, 6, 8) for a in (4, 8))


def log(msg):
    _common_log(msg, since=T0)


# ---------------------------------------------------------------------------
# TFMOT peer (subprocess, legacy Keras: benchmarks/_tfmot.py).
# ---------------------------------------------------------------------------

def run_tfmot(float_model, x, y, xt, args, workdir) -> dict:
    ok, why = _tfmot.available()
    if not ok:
        return {"skipped": "tensorflow-model-optimization / tf-keras not "
                           f"installed (pip install 'tfcomp[tfmot]'): {why}"}
    paths = {k: os.path.join(workdir, f"tfmot_{k}") for k in
             ("data.npz", "weights.npz", "logits.npy")}
    np.savez(paths["data.npz"], x=x, y=y, xt=xt)
    spec = {"data": paths["data.npz"],
            "weights": _tfmot.save_weights(float_model,
                                           paths["weights.npz"]),
            "logits": paths["logits.npy"],
            "tflite": os.path.join(workdir, "tfmot_qat8.tflite"),
            "seed": args.seed, "lr": args.qat_lr, "batch": args.batch,
            "epochs": args.qat_epochs}
    try:
        res = _tfmot.run("qat", spec, workdir, timeout=1800)
    except RuntimeError as e:
        return {"skipped": f"TFMOT subprocess failed: {e}"}
    res["tflite"] = spec["tflite"]
    res["logits"] = np.load(paths["logits.npy"])
    return res


# ---------------------------------------------------------------------------
# Main benchmark.
# ---------------------------------------------------------------------------

def main(argv=None):
    p = parser(__doc__)
    p.add_argument("--train", type=int, default=4000)
    p.add_argument("--test", type=int, default=4000)
    p.add_argument("--float-epochs", type=int, default=3)
    p.add_argument("--qat-epochs", type=int, default=2)
    p.add_argument("--dnas-epochs", type=int, default=3)
    p.add_argument("--dnas-theta-lr", type=float, default=0.05)
    p.add_argument("--dnas-final-tau", type=float, default=0.5)
    p.add_argument("--dnas-samples", type=int, default=4)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--qat-lr", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--latency-runs", type=int, default=150)
    p.add_argument("--smoke", action="store_true",
                   help="tiny sizes, to check the script end to end")
    p.add_argument("--no-tfmot", action="store_true")
    args = p.parse_args(argv)
    if args.smoke:
        args.train, args.test, args.float_epochs = 512, 256, 1
        args.qat_epochs, args.dnas_epochs, args.latency_runs = 1, 1, 6
        args.dnas_samples = 1

    keras.utils.set_random_seed(args.seed)
    (x, y), (xt, yt) = fashion_mnist_subset(args.train, args.test, args.seed)
    x_cal = x[:512]
    workdir = tempfile.mkdtemp(prefix="tfcomp-qbench-")
    steps_per_epoch = int(np.ceil(len(x) / args.batch))

    def train(model, epochs, lr):
        compile_model(model, keras.optimizers.Adam(lr), jit_compile=False)
        cb = StepTimer("batch", skip=3)
        t = time.perf_counter()
        model.fit(x, y, batch_size=args.batch, epochs=epochs, verbose=0,
                  callbacks=[cb], shuffle=True)
        return cb.steady(), time.perf_counter() - t

    def predict(model):
        return np.concatenate([
            keras.ops.convert_to_numpy(model(xt[i:i + 500], training=False))
            for i in range(0, len(xt), 500)])

    def tflite_eval(path, keras_logits):
        interp, runtime = make_interpreter(path)
        lite = run_interpreter(interp, xt, batch_size=250)
        return {"tflite_acc": float(np.mean(lite.argmax(1) == yt)),
                "agreement": float(np.mean(
                    lite.argmax(1) == keras_logits.argmax(1))),
                "runtime": runtime}

    float_model = tfcomp.zoo.resnet(depth=20)
    prof = tfcomp.profile(float_model)
    macs = {r.name: r.macs for r in prof.layers}
    conv_names = [r.name for r in prof.layers
                  if r.type in ("Conv2D", "Dense", "DepthwiseConv2D")]

    def cost(bits: dict) -> dict:
        """BOPs and weight bytes (kernels at w_bits, int32 / fp32 bias)."""
        bops, wbytes = 0, 0.0
        for name in conv_names:
            w, a = bits.get(name, (32, 32))
            layer = float_model.get_layer(name)
            k = int(np.prod(layer.kernel.shape))
            n_out = int(layer.kernel.shape[-1])
            bops += macs[name] * w * a
            wbytes += k * w / 8 + n_out * 4  # BN folded into a bias
        return {"bops": int(bops), "weight_bytes": float(wbytes)}

    rows, notes = [], []
    timed = {"float": float_model}  # models timed side by side at the end
    log(f"float training: {len(x)} images, {args.float_epochs} epochs")
    float_step, float_wall = train(float_model, args.float_epochs, args.lr)
    float_logits = predict(float_model)
    float_acc = float(np.mean(float_logits.argmax(1) == yt))
    log(f"float acc {float_acc:.4f}, step {float_step * 1e3:.1f} ms")
    path = os.path.join(workdir, "float32.tflite")
    rep = export_tflite(float_model, path, quantization=None, verify=False)
    rows.append({"row": "float", "keras_acc": float_acc,
                 **cost({n: (32, 32) for n in conv_names}),
                 "tflite_bytes": rep.size_bytes, "tflite": path,
                 "step_s": float_step, "epoch_ratio": 1.0,
                 "train_wall_s": float_wall, "kind": "float32"})

    log("int8 PTQ")
    path = os.path.join(workdir, "ptq_int8.tflite")
    rep = export_tflite(float_model, path, quantization="int8",
                        calibration_data=x_cal, verify=False)
    rows.append({"row": "int8 PTQ", "keras_acc": None,
                 **cost({n: (8, 8) for n in conv_names}),
                 "tflite_bytes": rep.size_bytes, "tflite": path,
                 **tflite_eval(path, float_logits), "kind": "int8",
                 "vs": "float Keras model"})

    def qat_row(label, bits, extra=None):
        log(f"{label}: QAT {args.qat_epochs} epochs")
        q = quantize_model(float_model, bits=bits)
        per_layer = dict(quantization_report(q).quantized)
        step, wall = train(q, args.qat_epochs, args.qat_lr)
        logits = predict(q)
        acc = float(np.mean(logits.argmax(1) == yt))
        path = os.path.join(workdir, f"{label.replace(' ', '_')}.tflite")
        t = time.perf_counter()
        rep = export_tflite(q, path, quantization="int8", verify=False)
        export_s = time.perf_counter() - t
        timed[label] = q
        row = {"row": label, "keras_acc": acc, **cost(per_layer),
               "tflite_bytes": rep.size_bytes, "tflite": path,
               **tflite_eval(path, logits), "step_s": step,
               "epoch_ratio": step / float_step, "train_wall_s": wall,
               "export_s": export_s, "bits": {k: list(v) for k, v in
                                              per_layer.items()},
               "kind": "int8", "vs": "QAT Keras model"}
        row.update(extra or {})
        rows.append(row)
        log(f"{label}: keras {acc:.4f} tflite {row['tflite_acc']:.4f} "
            f"agree {row['agreement']:.4f}")
        return row

    qat_row("8-bit QAT", 8)
    u4 = qat_row("4-bit QAT", 4)
    qat_row("2-bit QAT", 2)

    log(f"DNAS search: {args.dnas_epochs} epoch(s)")
    sn = dnas.build_supernet(float_model, candidates=DNAS_CANDIDATES,
                             cost="bops", seed=args.seed)
    decay = (args.dnas_final_tau / 5.0) ** (1 / max(1, args.dnas_epochs - 1))
    t = time.perf_counter()
    hist = dnas.search(
        sn, x, y, epochs=args.dnas_epochs, batch_size=args.batch, verbose=0,
        seed=args.seed,
        weight_optimizer=keras.optimizers.Adam(args.qat_lr),
        theta_optimizer=keras.optimizers.Adam(args.dnas_theta_lr),
        annealing=dnas.TemperatureAnnealing(5.0, decay))
    search_s = time.perf_counter() - t
    u4_bits = {k: tuple(v) for k, v in u4["bits"].items()}
    budget = dnas.architecture_cost(sn, u4_bits)
    archs = [dnas.derive(sn, budget=budget)] + [
        dnas.derive(sn, "sample", seed=args.seed + i, budget=budget)
        for i in range(args.dnas_samples)]
    argmax_bits = dnas.derive(sn)
    cut = int(0.8 * len(x))
    t = time.perf_counter()
    derived, scores = dnas.select_best(
        float_model, archs, x[:cut], y[:cut], (x[cut:], y[cut:]), epochs=1,
        batch_size=args.batch, learning_rate=args.qat_lr, seed=args.seed)
    select_s = time.perf_counter() - t
    log(f"DNAS budget {budget:.4g} BOPs, candidates' val acc "
        f"{[round(s['val_accuracy'], 4) for s in scores]}, kept "
        f"{dnas.architecture_cost(sn, derived):.4g} BOPs")
    qat_row("DNAS mixed", derived, {
        "dnas_search_s": search_s, "dnas_budget_bops": budget,
        "dnas_argmax_bops": dnas.architecture_cost(sn, argmax_bits),
        "dnas_history": hist["epochs"], "dnas_select_s": select_s,
        "dnas_candidates": [
            {"val_accuracy": s["val_accuracy"],
             "bops": dnas.architecture_cost(sn, s["bits"]),
             "kind": "argmax" if i == 0 else "sample"}
            for i, s in enumerate(scores)],
        "search_epoch_ratio": search_s / args.dnas_epochs / (
            float_step * steps_per_epoch)})

    if args.no_tfmot:
        notes.append("TFMOT row skipped (--no-tfmot).")
    else:
        log("TFMOT 8-bit QAT (subprocess)")
        res = run_tfmot(float_model, x, y, xt, args, workdir)
        if "skipped" in res:
            notes.append(f"TFMOT row skipped: {res['skipped']}")
            log(notes[-1])
        else:
            logits = res["logits"]
            rows.append({
                "row": "TFMOT 8-bit QAT", "keras_acc": float(np.mean(
                    logits.argmax(1) == yt)),
                **cost({n: (8, 8) for n in conv_names}),
                "tflite_bytes": os.path.getsize(res["tflite"]),
                "tflite": res["tflite"], **tflite_eval(res["tflite"], logits),
                "step_s": res["qat_step_s"],
                "epoch_ratio": res["qat_step_s"] / float_step,
                "tfmot_float_step_s": res["float_step_s"],
                "tfmot_own_ratio": res["qat_step_s"] / res["float_step_s"],
                "tfmot_version": res["tfmot_version"], "kind": "int8",
                "vs": "TFMOT Keras model"})

    # Reference for the 8-bit target: the float model trained as many more
    # epochs as the QAT rows were fine-tuned (same lr).
    log(f"float +{args.qat_epochs} epochs (reference)")
    more_step, _ = train(float_model, args.qat_epochs, args.qat_lr)
    float_more_acc = float(np.mean(predict(float_model).argmax(1) == yt))
    log(f"float +{args.qat_epochs}: {float_more_acc:.4f}")

    log("training step times (interleaved)")
    steps = interleaved_step_times(timed, x[:args.batch], y[:args.batch])
    for r in rows:
        if r["row"] in steps:
            r["step_s"] = steps[r["row"]]
            r["epoch_ratio"] = steps[r["row"]] / steps["float"]
    float_step = steps["float"]
    if "TFMOT 8-bit QAT" in (r["row"] for r in rows):
        tm = next(r for r in rows if r["row"] == "TFMOT 8-bit QAT")
        tm["epoch_ratio"] = tm["step_s"] / float_step

    log("latency (interleaved)")
    lat = time_tflite({r["row"]: r["tflite"] for r in rows},
                      runs=args.latency_runs, rounds=3)
    for r in rows:
        r["latency_ms"] = lat[r["row"]].median_ms
        r["latency_min_ms"] = lat[r["row"]].min_ms
        r["latency_runtime"] = lat[r["row"]].runtime

    by = {r["row"]: r for r in rows}
    targets = []
    q8 = by["8-bit QAT"]
    gap = (float_acc - q8["keras_acc"]) * 100
    targets.append({
        "target": "8-bit QAT within 0.5 point of float",
        "value": f"float {float_acc * 100:.2f}, 8-bit QAT "
                 f"{q8['keras_acc'] * 100:.2f} (gap {gap:+.2f} pt)",
        "met": bool(gap <= 0.5)})
    gap2 = (float_more_acc - q8["keras_acc"]) * 100
    targets.append({
        "target": "8-bit QAT within 0.5 point of float trained as many "
                  "extra epochs (same fine-tune budget)",
        "value": f"float +{args.qat_epochs} epochs "
                 f"{float_more_acc * 100:.2f}, 8-bit QAT "
                 f"{q8['keras_acc'] * 100:.2f} (gap {gap2:+.2f} pt)",
        "met": bool(gap2 <= 0.5)})
    dn = by["DNAS mixed"]
    targets.append({
        "target": "DNAS >= uniform 4-bit at equal BOPs",
        "value": f"DNAS {dn['keras_acc'] * 100:.2f} at {dn['bops']:.4g} "
                 f"BOPs vs 4-bit {u4['keras_acc'] * 100:.2f} at "
                 f"{u4['bops']:.4g} BOPs",
        "met": bool(dn["keras_acc"] >= u4["keras_acc"]
                    and dn["bops"] <= u4["bops"] * 1.0001)})
    agree = {r["row"]: r["agreement"] for r in rows if r["row"] in (
        "8-bit QAT", "4-bit QAT", "2-bit QAT", "DNAS mixed")}
    targets.append({
        "target": "int8 TFLite top-1 agreement with the QAT Keras model "
                  ">= 99%",
        "value": ", ".join(f"{k} {v * 100:.2f}%" for k, v in agree.items()),
        "met": bool(min(agree.values()) >= 0.99)})
    if "TFMOT 8-bit QAT" in by:
        tm = by["TFMOT 8-bit QAT"]
        targets.append({
            "target": "QAT epoch-time overhead <= TFMOT's",
            "value": f"tfcomp 8-bit QAT {q8['epoch_ratio']:.2f}x tfcomp "
                     f"float; TFMOT QAT {tm['tfmot_own_ratio']:.2f}x "
                     f"tf_keras float ({tm['epoch_ratio']:.2f}x tfcomp "
                     "float)",
            "met": bool(q8["epoch_ratio"] <= tm["tfmot_own_ratio"])})
    else:
        targets.append({"target": "QAT epoch-time overhead <= TFMOT's",
                        "value": "TFMOT row skipped", "met": None})

    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()} ({os.cpu_count()} CPUs)",
        "load_avg_start": os.getloadavg()[0],
        "train": len(x), "test": len(xt), "float_epochs": args.float_epochs,
        "qat_epochs": args.qat_epochs, "dnas_epochs": args.dnas_epochs,
        "dnas_theta_lr": args.dnas_theta_lr,
        "dnas_final_tau": args.dnas_final_tau,
        "dnas_samples": args.dnas_samples,
        "batch": args.batch, "lr": args.lr, "qat_lr": args.qat_lr,
        "seed": args.seed, "steps_per_epoch": steps_per_epoch,
        "float_more_acc": float_more_acc, "float_more_step_s": more_step,
        "latency_runs": args.latency_runs, "wall_s": time.time() - T0,
        "smoke": bool(args.smoke),
        "command": "nice -n 10 .venv/bin/python benchmarks/quantization.py"
                   + (" --smoke" if args.smoke else ""),
    }
    write_report(args.out, rows, targets, notes, meta)
    log(f"done in {time.time() - T0:.0f}s")


def _fmt(v, f="{:.2f}"):
    return "" if v is None else f.format(v)


def write_report(out, rows, targets, notes, meta):
    clean = [{k: v for k, v in r.items() if k != "tflite"} for r in rows]
    payload = {"meta": meta, "rows": clean, "targets": targets,
               "notes": notes}
    float_bops = rows[0]["bops"]
    lines = [
        "# Quantization: PTQ, QAT, DNAS mixed precision, TFMOT peer",
        "",
        (f"Measured {meta['date']} on {meta['machine']}, load average "
        f"{meta['load_avg_start']:.1f} at start; total wall time "
        f"{meta['wall_s'] / 60:.1f} min."),
        "",
        (f"Fashion-MNIST, zoo ResNet-20 (`tfcomp.zoo.resnet(depth=20)`), CPU "
        f"scale: a random subset of {meta['train']} training images and "
        f"{meta['test']} test images (seed {meta['seed']}); float trained "
        f"{meta['float_epochs']} epochs (Adam {meta['lr']}), every QAT row "
        f"fine-tuned {meta['qat_epochs']} epochs from that checkpoint (Adam "
        f"{meta['qat_lr']}), DNAS searched {meta['dnas_epochs']} epoch(s); "
        f"batch {meta['batch']}, `jit_compile=False`; one run, no averaging."),
        "",
        "Reproduce: `" + meta["command"] + "`",
        "",
        ("| row | Keras acc % | TFLite acc % | top-1 agreement % | BOPs | "
        "BOPs vs float | weight KB (true bits) | TFLite KB | latency ms | "
        "epoch-time ratio |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['row']} | {_fmt(r['keras_acc'] and r['keras_acc'] * 100)}"
            f" | {_fmt(r.get('tflite_acc') and r['tflite_acc'] * 100)} | "
            f"{_fmt(r.get('agreement') and r['agreement'] * 100)} | "
            f"{r['bops']:.3e} | {r['bops'] / float_bops:.4f} | "
            f"{r['weight_bytes'] / 1024:.1f} | {r['tflite_bytes'] / 1024:.1f}"
            f" | {_fmt(r.get('latency_ms'), '{:.3f}')} | "
            f"{_fmt(r.get('epoch_ratio'))} |")
    lines += [
        "",
        ("Keras acc: the float / QAT Keras model on the test subset. TFLite "
        "acc and top-1 agreement: the `.tflite` file (float32 for the float "
        "row, full-integer int8 otherwise) and how often its argmax equals "
        "that of the Keras model it came from (the float model for PTQ). "
        "BOPs = sum of MACs x w_bits x a_bits over conv / dense layers "
        "(a_bits = input bits); weight KB = kernels at w_bits plus 32-bit "
        "biases (BN folded). Latency: `measure_latencies` (ai_edge_litert, "
        "1 thread, batch 1, files interleaved over 3 rounds, median). "
        "Epoch-time ratio: training step time / float step time, measured "
        "side by side after all training (`train_on_batch` on one batch, "
        "the float and QAT models alternating in 6 rounds of 8 steps, "
        "median; TFMOT the same way against its own tf_keras float model in "
        "its subprocess)."),
        "",
        "## Targets",
        "",
        "| target | measured | met |",
        "|---|---|:---:|",
    ]
    for t in targets:
        met = {True: "yes", False: "**no**", None: "n/a"}[t["met"]]
        lines.append(f"| {t['target']} | {t['value']} | {met} |")
    dn = next((r for r in rows if r["row"] == "DNAS mixed"), None)
    if dn:
        hist = dn.get("dnas_history") or [{}]
        lines += [
            "",
            "## DNAS",
            "",
            (f"Search {dn['dnas_search_s']:.0f} s "
            f"({dn['search_epoch_ratio']:.2f}x a float epoch per search "
            f"epoch); budget = BOPs of uniform 4-bit "
            f"({dn['dnas_budget_bops']:.4g}); argmax architecture "
            f"{dn['dnas_argmax_bops']:.4g} BOPs before the budget walk; final "
            f"expected bits w {hist[-1].get('expected_w_bits', 0):.2f} / a "
            f"{hist[-1].get('expected_a_bits', 0):.2f}."),
            "",
            ("Search settings (CPU-scale deviations, see the module doc): "
             "candidates w in {2, 3, 4, 5, 6, 8} x a in {4, 8}; theta "
             f"Adam({meta.get('dnas_theta_lr', 0.01)}); temperature 5 -> "
             f"{hist[-1].get('temperature', 5.0):.2f} over "
             f"{len(hist)} epoch(s)."),
            "",
            ("Sample, train, keep the best (`dnas.select_best`, 1 QAT epoch "
             "each on 80% of the training subset, accuracy on the other "
             f"20%, {dn.get('dnas_select_s', 0):.0f} s): " + ", ".join(
                 f"{c['kind']} {100 * c['val_accuracy']:.2f}% at "
                 f"{c['bops']:.4g} BOPs"
                 for c in dn.get("dnas_candidates", []))),
            "",
            "Kept bits (w/a): " + ", ".join(
                f"{k} {v[0]}/{v[1]}" for k, v in dn["bits"].items()),
        ]
    tm = next((r for r in rows if r["row"] == "TFMOT 8-bit QAT"), None)
    if tm:
        lines += [
            "",
            "## TFMOT",
            "",
            (f"tensorflow-model-optimization {tm['tfmot_version']} "
            "(`pip install 'tensorflow-model-optimization>=0.8' "
            "'tf-keras>=2.16'`, the `[tfmot]` extra), subprocess with "
            "`TF_USE_LEGACY_KERAS=1`, the same architecture in tf_keras "
            "with the float checkpoint's weights, default 8-bit scheme, "
            "converted full-integer (int8 I/O). Its step time is "
            f"{tm['tfmot_own_ratio']:.2f}x its own tf_keras float step "
            f"({tm['tfmot_float_step_s'] * 1e3:.1f} ms; the two timed side "
            "by side in the subprocess) and "
            f"{tm['epoch_ratio']:.2f}x tfcomp's float step (timed in "
            "another process, indicative only)."),
        ]
    notes = list(notes) + [
        ("The float row is the checkpoint every other row starts from; the "
        "QAT rows train for more epochs in total, so the fair float "
        "reference for the 8-bit target is 'float + the same fine-tune "
        "epochs' (second target row)."),
        ("QAT folds BatchNorm statically into the conv weights (moving "
        "statistics), so a tfcomp QAT step has no BN and can be cheaper "
        "than a float step (ratio < 1); TFMOT keeps BN in training."),
        ("int8 files of b-bit QAT models: where a tensor with several "
        "consumers (a residual block's input) is observed at 8 bits and "
        "feeds b-bit layers, the exporter requantizes it to the b-bit grid "
        "through an exact identity depthwise op, so the file computes what "
        "the QAT model computes (agreement column)."),
    ]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    lines.append("")
    write_results(out, "quantization", payload, "\n".join(lines),
                  default=float)


if __name__ == "__main__":
    main()
