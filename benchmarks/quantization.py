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
* 4-bit QAT + KD: the 4-bit QAT fine-tune trained through
  ``tfcomp.distill.Distiller`` (teacher: the float checkpoint trained as
  many more epochs as the QAT rows fine-tune, as the "float + F epochs"
  reference, with its BatchNorm statistics re-estimated on 2048 training
  images: the checkpoint itself scores 72% and 81% with re-estimated
  statistics, below the 4-bit student, and KD from it lost 2.9 / 0.9
  points; alpha 0.5, T 4, the distillation benchmark's best setting)
  beside the 4-bit QAT row re-run from the same seed: target KD >= plain;
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

The float checkpoint is cached under ``~/.cache/tfcomp/quantization``;
``--rows kd`` runs only the KD pair (and the float step / latency
references) from it and merges the two rows and the KD target into the
existing results (same settings), re-rendering the markdown.

Usage (the run recorded in benchmarks/results/quantization.md):
    nice -n 10 .venv/bin/python benchmarks/quantization.py [--rows kd]

    Options: [--train 4000] [--test 4000] [--float-epochs 3]
    [--qat-epochs 2] [--dnas-epochs 3] [--dnas-theta-lr 0.05]
    [--dnas-final-tau 0.5] [--dnas-samples 4] [--batch 64] [--seed 0]
    [--out benchmarks/results] [--smoke | --quick]

Writes ``quantization.json`` and ``quantization.md`` into ``--out``
(``--smoke``: ``quantization_quick.*``).

Reference: Wang et al., HAQ, arXiv:1811.08886 (linear quantizers, 8-bit
first / last layer); Wu et al., DNAS, arXiv:1812.00090; Jacob et al.,
arXiv:1712.05877 (integer-only inference, QAT); Hinton et al.,
arXiv:1503.02531 (KD).
"""

from __future__ import annotations

import os
import platform
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import _kd
import _tfmot
import keras
import numpy as np
from _common import (
    StepTimer,
    compile_model,
    fashion_mnist_subset,
    parser,
    time_tflite,
)
from _common import log as _common_log
from _quantization_md import write_report
from _tfmot import interleaved_step_times

import tfcomp
from tfcomp.export import export_tflite
from tfcomp.export.runtime import make_interpreter, run_interpreter
from tfcomp.pruning import recalibrate_batchnorm
from tfcomp.quantization import dnas, quantization_report, quantize_model

T0 = time.time()


DNAS_CANDIDATES = tuple((w, a) for w in (2, 3, 4, 5, 6, 8) for a in (4, 8))
KD_ROWS = ("4-bit QAT (plain, beside + KD)", "4-bit QAT + KD")
KD_TARGET = "KD >= plain (4-bit QAT + KD vs 4-bit QAT re-run beside it)"
# settings a --rows kd run shares with the results it joins
_SAME = ("train", "test", "float_epochs", "qat_epochs", "batch", "lr",
         "qat_lr", "seed")


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
    p.add_argument("--smoke", "--quick", action="store_true",
                   help="tiny sizes, to check the script end to end")
    p.add_argument("--no-tfmot", action="store_true")
    p.add_argument("--rows", choices=("all", "kd"), default="all",
                   help="kd: only the KD pair, merged into the results")
    args = p.parse_args(argv)
    if args.smoke:
        args.train, args.test, args.float_epochs = 512, 256, 1
        args.qat_epochs, args.dnas_epochs, args.latency_runs = 1, 1, 6
        args.dnas_samples = 1
    name = "quantization_quick" if args.smoke else "quantization"
    old = None
    if args.rows == "kd":  # fail before any training
        old = _kd.results_to_merge(
            os.path.join(args.out, f"{name}.json"), "meta",
            {k: getattr(args, k) for k in _SAME})

    keras.utils.set_random_seed(args.seed)
    (x, y), (xt, yt) = fashion_mnist_subset(args.train, args.test, args.seed)
    x_cal = x[:512]
    workdir = tempfile.mkdtemp(prefix="tfcomp-qbench-")
    steps_per_epoch = int(np.ceil(len(x) / args.batch))

    def train(model, epochs, lr, teacher=None):
        """Fits ``model`` (through a Distiller when ``teacher``); returns
        the steady step time, the wall time and the model that was fit."""
        if teacher is None:
            compile_model(model, keras.optimizers.Adam(lr), jit_compile=False)
        else:
            model = _kd.distiller(model, teacher, keras.optimizers.Adam(lr),
                                  jit_compile=False)
        cb = StepTimer("batch", skip=3)
        t = time.perf_counter()
        model.fit(x, y, batch_size=args.batch, epochs=epochs, verbose=0,
                  callbacks=[cb], shuffle=True)
        return cb.steady(), time.perf_counter() - t, model

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
    float_step, float_wall = float("nan"), None  # unless trained here

    def train_float():
        nonlocal float_step, float_wall
        log(f"float training: {len(x)} images, {args.float_epochs} epochs")
        float_step, float_wall, _ = train(float_model, args.float_epochs,
                                          args.lr)
        return float_model

    # the full run always trains (its later rows keep their random
    # stream); --rows kd loads the cached checkpoint when present
    float_model, source, ckpt = _kd.cached_checkpoint(
        "quantization", f"resnet20_n{len(x)}_e{args.float_epochs}_b"
        f"{args.batch}_lr{args.lr:g}_s{args.seed}", train_float,
        old is not None)
    if source == "cache":  # compiled as train() does, for the step timing
        compile_model(float_model, keras.optimizers.Adam(args.lr),
                      jit_compile=False)
    float_fingerprint = _kd.fingerprint(float_model)
    timed = {"float": float_model}  # models timed side by side at the end
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

    def qat_row(label, bits, extra=None, start=None, teacher=None):
        """A QAT row from ``start`` (default ``float_model``), fine-tuned
        plainly or through a Distiller (``teacher``)."""
        log(f"{label}: QAT {args.qat_epochs} epochs")
        q = quantize_model(float_model if start is None else start,
                           bits=bits)
        per_layer = dict(quantization_report(q).quantized)
        step, wall, fit = train(q, args.qat_epochs, args.qat_lr, teacher)
        logits = predict(q)
        acc = float(np.mean(logits.argmax(1) == yt))
        path = os.path.join(workdir, f"{label.replace(' ', '_')}.tflite")
        t = time.perf_counter()
        rep = export_tflite(q, path, quantization="int8", verify=False)
        export_s = time.perf_counter() - t
        timed[label] = fit  # the Distiller for KD: its step is timed
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

    def kd_pair(start):
        """4-bit QAT from the float checkpoint ``start``, plainly and
        through a Distiller (teacher ``start``), each from the same seed."""
        teacher_model = keras.models.clone_model(start)
        teacher_model.set_weights(start.get_weights())
        keras.utils.set_random_seed(args.seed)
        train(teacher_model, args.qat_epochs, args.qat_lr)
        recalibrate_batchnorm(teacher_model, x[:2048], batch_size=64)
        t_acc = float(np.mean(predict(teacher_model).argmax(1) == yt))
        log(f"KD teacher (float checkpoint + {args.qat_epochs} epochs, BN "
            f"re-estimated): {t_acc:.4f}")
        what = (f"float checkpoint trained {args.qat_epochs} more epochs "
                "(as the float reference row), BatchNorm statistics "
                f"re-estimated on 2048 training images (test acc "
                f"{100 * t_acc:.2f}%)")
        for label, teacher in zip(KD_ROWS, (None, teacher_model),
                                  strict=True):
            keras.utils.set_random_seed(args.seed)
            qat_row(label, 4, start=start, teacher=teacher, extra=None
                    if teacher is None else {"kd": _kd.info(what)})

    if old is not None:  # --rows kd: only the pair (and the references)
        kd_pair(float_model)
        timings(rows, timed, x[:args.batch], y[:args.batch], args)
        return merge_kd(old, rows, args, name, float_fingerprint, source,
                        ckpt)

    log("int8 PTQ")
    path = os.path.join(workdir, "ptq_int8.tflite")
    rep = export_tflite(float_model, path, quantization="int8",
                        calibration_data=x_cal, verify=False)
    rows.append({"row": "int8 PTQ", "keras_acc": None,
                 **cost({n: (8, 8) for n in conv_names}),
                 "tflite_bytes": rep.size_bytes, "tflite": path,
                 **tflite_eval(path, float_logits), "kind": "int8",
                 "vs": "float Keras model"})

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
    more_step, _, _ = train(float_model, args.qat_epochs, args.qat_lr)
    float_more_acc = float(np.mean(predict(float_model).argmax(1) == yt))
    log(f"float +{args.qat_epochs}: {float_more_acc:.4f}")

    # 4-bit QAT + KD beside a plain 4-bit QAT re-run, both from the float
    # checkpoint as cached (float_model has trained on), seeded alike
    kd_pair(keras.saving.load_model(ckpt))

    timings(rows, timed, x[:args.batch], y[:args.batch], args)

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
    targets.append(kd_target(by))
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
        "smoke": bool(args.smoke), "float_checkpoint": ckpt,
        "float_fingerprint": float_fingerprint,
        "command": "nice -n 10 .venv/bin/python benchmarks/quantization.py"
                   + (" --smoke" if args.smoke else ""),
    }
    write_report(args.out, rows, targets, notes, meta, name)
    log(f"done in {time.time() - T0:.0f}s")


def timings(rows, timed, xb, yb, args) -> None:
    """Training step time of the ``timed`` models side by side (ratio vs
    ``"float"``) and int8 / float TFLite latency of every row, interleaved;
    written into ``rows``."""
    log("training step times (interleaved)")
    steps = interleaved_step_times(timed, xb, yb)
    for r in rows:
        if r["row"] in steps:
            r["step_s"] = steps[r["row"]]
            r["epoch_ratio"] = steps[r["row"]] / steps["float"]
    if "TFMOT 8-bit QAT" in (r["row"] for r in rows):
        tm = next(r for r in rows if r["row"] == "TFMOT 8-bit QAT")
        tm["epoch_ratio"] = tm["step_s"] / steps["float"]

    log("latency (interleaved)")
    lat = time_tflite({r["row"]: r["tflite"] for r in rows},
                      runs=args.latency_runs, rounds=3)
    for r in rows:
        r["latency_ms"] = lat[r["row"]].median_ms
        r["latency_min_ms"] = lat[r["row"]].min_ms
        r["latency_runtime"] = lat[r["row"]].runtime


def kd_target(by: dict) -> dict:
    """The target "KD >= plain" of the 4-bit KD pair."""
    text, met = _kd.check_line(by[KD_ROWS[1]]["keras_acc"],
                               by[KD_ROWS[0]]["keras_acc"], "4-bit QAT")
    return {"target": KD_TARGET, "value": text, "met": met}


def merge_kd(old, rows, args, name, fp, source, ckpt) -> None:
    """The KD pair of a ``--rows kd`` run put into ``old`` (other rows and
    targets untouched; this run's float reference in ``meta["kd_run"]``),
    json and markdown rewritten."""
    by = {r["row"]: r for r in rows}
    keep = [r for r in old["rows"] if r["row"] not in KD_ROWS]
    keep += [{k: v for k, v in by[k].items() if k != "tflite"}
             for k in KD_ROWS]
    targets = [t for t in old["targets"] if t["target"] != KD_TARGET]
    cmd = old["meta"]["command"] + " --rows kd"
    old["meta"]["kd_run"] = _kd.run_record(
        cmd, fp, source, ckpt, T0, old["meta"].get("float_fingerprint"),
        float_reference={
            k: by["float"].get(k) for k in ("keras_acc", "step_s",
                                            "latency_ms")})
    write_report(args.out, keep, targets + [kd_target(by)], old["notes"],
                 old["meta"], name)
    log(f"kd rows merged into {name}.json")


if __name__ == "__main__":
    main()
