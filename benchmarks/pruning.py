"""Pruning during ``model.fit`` on Fashion-MNIST with zoo ResNet-20.

Rows (all from the same dense checkpoint, same fine-tune budget):

* dense: the baseline, trained ``E`` epochs, then ``F`` more plain epochs
  (its fine-tune epochs are the "plain fit" timing reference);
* FPGM / L1 / random: soft filter pruning with ``FPGMPruning`` at 50% of the
  dense MACs (``target_macs=0.5``), ``F`` epochs, then ``strip_pruning``;
* Scratch-B: the FPGM architecture re-initialised and trained
  ``floor(E * MACs_dense / MACs_pruned)`` epochs, LR drops at 50% / 75%;
* magnitude 50% / 80%: ``MagnitudePruning`` (polynomial schedule), ``F``
  epochs, then ``strip_pruning`` (zeros in ordinary layers);
* TFMOT ``prune_low_magnitude`` at 80% (peer), in a subprocess with
  ``TF_USE_LEGACY_KERAS=1``, skipped with a note when not installed;
* FPGM + KD: the FPGM row trained through ``tfcomp.distill.Distiller``
  (teacher: the dense checkpoint; alpha 0.5, T 4, the distillation
  benchmark's best setting) beside the plain FPGM row re-run from the
  same seed: target KD >= plain.

Columns: test accuracy, MACs, params, TFLite bytes (float32, int8), float32
TFLite latency ratio vs dense (measured in this run, interleaved), and the
training time per epoch ratio vs plain ``fit`` of the dense model.

A CADNN-style experiment checks XNNPACK sparse inference: a small network
that satisfies XNNPACK's sparse-subgraph rules is pruned with
``MagnitudePruning(pattern="xnnpack")`` and exported with and without
``sparsity=True``; both files are timed.

CPU scale: a training subset, few epochs (see ``--train``, ``--epochs``):
numbers for comparing methods under one budget, not the papers'.

The dense checkpoint is cached under ``~/.cache/tfcomp/pruning``; ``--rows
kd`` runs only the KD pair (and the dense F-epoch reference for the ratios)
from it and merges the two rows into the existing results (same settings).

Usage (the recorded run; ``--quick``: a smoke, ``pruning_quick.*``):
    nice python benchmarks/pruning.py --train 8000 --test 2000 --epochs 5
        --finetune 2 [--rows all|kd] [--out benchmarks/results]

Writes ``pruning.json`` and ``pruning.md`` into ``--out``.
Reference (KD row): Hinton et al., arXiv 1503.02531.
"""

from __future__ import annotations

import os
import platform
import subprocess
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
    accuracy,
    clone_with_weights,
    compile_model,
    fashion_mnist_subset,
    log,
    parser,
    time_tflite,
    write_results,
)
from _pruning_report import render_markdown

import tfcomp
from tfcomp.export import export_tflite
from tfcomp.pruning import (
    FPGMPruning,
    MagnitudePruning,
    PolynomialDecay,
    apply_fpgm,
    apply_magnitude_pruning,
    scratch_setup,
    strip_pruning,
)


def compile_adam(model, lr):
    return compile_model(model, keras.optimizers.Adam(lr))


def dense_checkpoint(x, y, args, reuse: bool):
    """The E-epoch dense ResNet-20, cached (keyed by the settings) with
    where it came from; the full run always trains (``reuse=False``: its
    later rows keep the random stream they had before the cache)."""
    def train():
        log(f"dense: {args.epochs} epochs on {len(x)} images")
        dense = compile_adam(tfcomp.zoo.resnet(depth=20), args.lr)
        dense.fit(x, y, batch_size=args.batch, epochs=args.epochs,
                  verbose=0)
        return dense

    return _kd.cached_checkpoint(
        "pruning", f"resnet20_n{len(x)}_e{args.epochs}_b{args.batch}_lr"
        f"{args.lr:g}_s{args.seed}", train, reuse)


def kd_pair(dense, x, y, xt, yt, args, finish) -> None:
    """FPGM soft pruning, ``F`` epochs, plain and through ``Distiller``
    (teacher: the dense checkpoint; FPGMPruning prunes its student), each
    from the same seed; rows ``fpgm_pair_plain`` and ``fpgm_kd``."""
    for kd in (False, True):
        key = "fpgm_kd" if kd else "fpgm_pair_plain"
        log(f"{key}: soft pruning to {args.target_macs:.0%} MACs")
        keras.utils.set_random_seed(args.seed)
        masked = apply_fpgm(clone_with_weights(dense))
        cb = FPGMPruning(target_macs=args.target_macs, criterion="fpgm",
                         seed=args.seed)
        if kd:
            model = _kd.distiller(masked, dense,
                                  keras.optimizers.Adam(args.finetune_lr))
        else:
            model = compile_adam(masked, args.finetune_lr)
        timer = StepTimer("epoch", skip=1)
        model.fit(x, y, batch_size=args.batch, epochs=args.finetune,
                  verbose=0, callbacks=[cb, timer])
        extra = {"rate": cb.effective_ratio,
                 "masked_accuracy": accuracy(masked, xt, yt)}
        if kd:
            extra["kd"] = _kd.info(f"dense {args.epochs}-epoch checkpoint")
        finish(key, strip_pruning(masked), timer, extra)


def export_sizes(model, workdir, key, rep, sparse=False) -> dict:
    out = {}
    path = os.path.join(workdir, f"{key}_fp32.tflite")
    out["fp32_bytes"] = export_tflite(
        model, path, verify=True, verify_data=rep[:16],
        num_verify=16).size_bytes
    out["fp32_path"] = path
    q = export_tflite(model, os.path.join(workdir, f"{key}_int8.tflite"),
                      quantization="int8", calibration_data=rep,
                      verify=False)
    out["int8_bytes"] = q.size_bytes
    if sparse:
        sp = os.path.join(workdir, f"{key}_fp32_sparse.tflite")
        out["fp32_sparse_bytes"] = export_tflite(
            model, sp, sparsity=True, verify=True, verify_data=rep[:16],
            num_verify=16).size_bytes
        out["fp32_sparse_path"] = sp
    return out


# ---------------------------------------------------------------------------
# TFMOT peer (subprocess, legacy Keras: benchmarks/_tfmot.py)


def run_tfmot(workdir, x, y, xt, yt, dense, args) -> dict:
    data = os.path.join(workdir, "tfmot_data.npz")
    np.savez(data, x=x, y=y, xt=xt, yt=yt)
    cfg = {"data": data, "batch": args.batch, "finetune": args.finetune,
           "lr": args.finetune_lr, "sparsity": 0.8,
           "weights": _tfmot.save_weights(
               dense, os.path.join(workdir, "tfmot_weights.npz")),
           "tflite": os.path.join(workdir, "tfmot_fp32.tflite")}
    res = _tfmot.run("prune", cfg, workdir, timeout=3600)
    res["fp32_path"] = cfg["tflite"]
    return res


# ---------------------------------------------------------------------------
# XNNPACK sparse inference (CADNN-style)


def xnn_net(input_shape=(28, 28, 3), num_classes=10, name="xnn_net"):
    """A network whose body XNNPACK can run sparse: 3x3 s2 stem on 3
    channels (explicit padding 1), 3x3 depthwise (padding 1 each side),
    1x1 convs, spatial mean."""
    L = keras.layers
    inp = keras.Input(input_shape, name="input")
    x = L.ZeroPadding2D(1, name="stem_pad")(inp)
    x = L.Conv2D(32, 3, strides=2, use_bias=False, name="stem")(x)
    x = L.ReLU(name="stem_relu")(L.BatchNormalization(name="stem_bn")(x))
    for i, (c, s) in enumerate([(64, 1), (128, 2), (128, 1), (256, 2),
                                (256, 1)]):
        if s == 2:
            x = L.ZeroPadding2D(1, name=f"b{i}_pad")(x)
            x = L.DepthwiseConv2D(3, strides=2, use_bias=False,
                                  name=f"b{i}_dw")(x)
        else:
            x = L.DepthwiseConv2D(3, padding="same", use_bias=False,
                                  name=f"b{i}_dw")(x)
        x = L.ReLU(name=f"b{i}_dw_relu")(L.BatchNormalization(
            name=f"b{i}_dw_bn")(x))
        x = L.Conv2D(c, 1, use_bias=False, name=f"b{i}_pw")(x)
        x = L.ReLU(name=f"b{i}_pw_relu")(L.BatchNormalization(
            name=f"b{i}_pw_bn")(x))
    x = L.GlobalAveragePooling2D(keepdims=True, name="gap")(x)
    x = L.Flatten(name="flat")(x)
    return keras.Model(inp, L.Dense(num_classes, name="logits")(x),
                       name=name)


def xnnpack_experiment(workdir, x, y, xt, yt, args) -> dict:
    x3, xt3 = np.repeat(x, 3, axis=-1), np.repeat(xt, 3, axis=-1)
    keras.utils.set_random_seed(args.seed)
    dense = compile_adam(xnn_net(), args.lr)
    dense.fit(x3, y, batch_size=args.batch, epochs=args.xnn_epochs,
              verbose=0)
    dense_acc = accuracy(dense, xt3, yt)
    masked = compile_adam(apply_magnitude_pruning(dense), args.finetune_lr)
    steps = int(np.ceil(len(x3) / args.batch)) * args.xnn_epochs
    cb = MagnitudePruning(
        PolynomialDecay(0.0, args.xnn_sparsity, 0, max(1, steps // 2),
                        frequency=max(1, steps // 10)), pattern="xnnpack")
    masked.fit(x3, y, batch_size=args.batch, epochs=args.xnn_epochs,
               verbose=0, callbacks=[cb])
    sparse = strip_pruning(masked)
    sparse_acc = accuracy(sparse, xt3, yt)
    pw = [lyr for lyr in sparse.layers if lyr.name.endswith("_pw")]
    zeros = sum(int(np.sum(keras.ops.convert_to_numpy(lyr.kernel) == 0))
                for lyr in pw)
    total = sum(int(np.prod(lyr.kernel.shape)) for lyr in pw)
    res = {"dense_accuracy": dense_acc, "sparse_accuracy": sparse_acc,
           "pointwise_sparsity": zeros / total,
           "block_size": list(cb.block_size), "resolutions": {}}
    for hw in args.xnn_resolutions:
        paths = {}
        for key, model in (("dense", dense), ("sparse", sparse)):
            big = xnn_net((hw, hw, 3), name=f"xnn_{hw}_{key}")
            big.set_weights(model.get_weights())
            rep = np.random.default_rng(0).uniform(
                0, 1, (8, hw, hw, 3)).astype("float32")
            p = os.path.join(workdir, f"xnn{hw}_{key}.tflite")
            paths[f"{key}_dense_encoding"] = p
            export_tflite(big, p, verify=True, verify_data=rep, num_verify=8)
            if key == "sparse":
                ps = os.path.join(workdir, f"xnn{hw}_{key}_sparse.tflite")
                export_tflite(big, ps, sparsity=True, verify=True,
                              verify_data=rep, num_verify=8)
                paths["sparse_sparse_encoding"] = ps
        lat = time_tflite(paths, runs=args.latency_runs,
                          rounds=args.latency_rounds)
        base = lat["dense_dense_encoding"].median_ms
        res["resolutions"][str(hw)] = {
            k: {"median_ms": v.median_ms, "ratio": v.median_ms / base,
                "bytes": os.path.getsize(paths[k]), "runtime": v.runtime}
            for k, v in lat.items()}
    return res


# ---------------------------------------------------------------------------


def parse_args(argv=None):
    p = parser(__doc__)
    p.add_argument("--train", type=int, default=2048)
    p.add_argument("--test", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=4, help="dense epochs E")
    p.add_argument("--finetune", type=int, default=2,
                   help="fine-tune epochs F")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--finetune-lr", type=float, default=5e-4)
    p.add_argument("--target-macs", type=float, default=0.5)
    p.add_argument("--latency-runs", type=int, default=150)
    p.add_argument("--latency-rounds", type=int, default=3)
    p.add_argument("--xnn-epochs", type=int, default=2)
    p.add_argument("--xnn-sparsity", type=float, default=0.85)
    p.add_argument("--xnn-resolutions", type=int, nargs="+",
                   default=[28, 112])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rows", choices=("all", "kd"), default="all",
                   help="kd: only the KD pair, merged into the results")
    p.add_argument("--quick", action="store_true",
                   help="smoke sizes; writes pruning_quick.{json,md}")
    args = p.parse_args(argv)
    if args.quick:
        args.train, args.test, args.epochs, args.finetune = 512, 256, 1, 1
        args.latency_runs, args.latency_rounds = 5, 1
        args.xnn_epochs, args.xnn_resolutions = 1, [28]
    return args


# settings a --rows kd run shares with the results it joins; its command
_SAME = ("train", "test", "epochs", "finetune", "batch", "lr", "finetune_lr",
         "target_macs", "seed")
_CMD = ("train", "test", "epochs", "finetune")


def main(argv=None) -> dict:
    args = parse_args(argv)
    t_start = time.time()
    name = "pruning_quick" if args.quick else "pruning"
    old = None
    if args.rows == "kd":  # fail before any training
        old = _kd.results_to_merge(
            os.path.join(args.out, f"{name}.json"), "settings",
            {k: getattr(args, k) for k in _SAME})
    keras.utils.set_random_seed(args.seed)
    (x, y), (xt, yt) = fashion_mnist_subset(args.train, args.test, args.seed)
    rep = x[:256]
    workdir = tempfile.mkdtemp(prefix="tfcomp-bench-pruning-")
    rows: dict = {}
    notes: list = []
    steps_per_epoch = int(np.ceil(len(x) / args.batch))

    # dense checkpoint (E epochs)
    dense, source, cache_path = dense_checkpoint(x, y, args, old is not None)
    fp = _kd.fingerprint(dense)  # before any use
    dense_macs = tfcomp.profile(dense).macs

    def finish(key, model, timer, extra=None, sparse=False):
        prof = tfcomp.profile(model)
        row = {"accuracy": accuracy(model, xt, yt), "macs": int(prof.macs),
               "macs_ratio": prof.macs / dense_macs,
               "params": int(prof.params),
               "epoch_time_s": timer.steady() if timer else None,
               "epochs": len(timer.times) if timer else 0}
        row.update(export_sizes(model, workdir, key, rep, sparse=sparse))
        row.update(extra or {})
        rows[key] = row
        log(f"{key}: acc {row['accuracy']:.4f}, MACs {row['macs']:,}, "
            f"epoch {row['epoch_time_s']}")

    # dense baseline: F more plain epochs (the timing reference)
    if old is not None:  # --rows kd: a dense reference, then the pair
        keras.utils.set_random_seed(args.seed)
    base = compile_adam(clone_with_weights(dense), args.finetune_lr)
    timer = StepTimer("epoch", skip=1)
    base.fit(x, y, batch_size=args.batch, epochs=args.finetune, verbose=0,
             callbacks=[timer])
    finish("dense", base, timer)
    if old is not None:
        kd_pair(dense, x, y, xt, yt, args, finish)
        ratios(rows, args)
        return merge_kd(old, rows, args, name, t_start, fp, source, cache_path)

    # FPGM / L1 / random soft pruning to target MACs
    fpgm_small = None
    for crit in ("fpgm", "l1", "random"):
        log(f"{crit}: soft pruning to {args.target_macs:.0%} MACs")
        masked = compile_adam(apply_fpgm(clone_with_weights(dense)),
                               args.finetune_lr)
        cb = FPGMPruning(target_macs=args.target_macs, criterion=crit,
                         seed=args.seed)
        timer = StepTimer("epoch", skip=1)
        masked.fit(x, y, batch_size=args.batch, epochs=args.finetune,
                   verbose=0, callbacks=[cb, timer])
        small = strip_pruning(masked)
        masked_acc = accuracy(masked, xt, yt)
        finish(crit, small, timer,
               {"rate": cb.effective_ratio, "masked_accuracy": masked_acc})
        if crit == "fpgm":
            fpgm_small = small

    # Scratch-B of the FPGM architecture
    setup = scratch_setup(fpgm_small, mode="B", base_epochs=args.epochs,
                    dense_macs=dense_macs, seed=args.seed)
    log(f"scratch-B: {setup.epochs} epochs")
    model = compile_adam(setup.model, args.lr)
    timer = StepTimer("epoch", skip=1)
    model.fit(x, y, batch_size=args.batch, epochs=setup.epochs, verbose=0,
              callbacks=setup.callbacks + [timer])
    finish("scratch_b", model, timer, {"scratch_epochs": setup.epochs})

    # magnitude pruning
    for s in (0.5, 0.8):
        key = f"magnitude_{int(s * 100)}"
        log(f"{key}")
        masked = compile_adam(apply_magnitude_pruning(
            clone_with_weights(dense)), args.finetune_lr)
        total = steps_per_epoch * args.finetune
        cb = MagnitudePruning(PolynomialDecay(
            0.0, s, begin_step=0, end_step=max(1, int(0.6 * total)),
            frequency=max(1, total // 8)))
        timer = StepTimer("epoch", skip=1)
        masked.fit(x, y, batch_size=args.batch, epochs=args.finetune,
                   verbose=0, callbacks=[cb, timer])
        finish(key, strip_pruning(masked), timer, {"sparsity": cb.sparsity()},
               sparse=True)

    # TFMOT peer
    ok, why = _tfmot.available()
    if ok:
        log("tfmot: prune_low_magnitude 80% (subprocess)")
        try:
            res = run_tfmot(workdir, x, y, xt, yt, dense, args)
            t = res["epoch_times"]
            rows["tfmot_80"] = {
                "accuracy": res["accuracy"], "macs": int(dense_macs),
                "macs_ratio": 1.0, "params": res["params"],
                "epoch_time_s": float(np.median(t[1:] or t)),
                "epochs": len(t), "fp32_bytes": res["fp32_bytes"],
                "fp32_path": res["fp32_path"], "int8_bytes": None}
        except (RuntimeError, subprocess.SubprocessError, ValueError) as e:
            notes.append(f"TFMOT peer failed: {str(e)[-300:]}")
    else:
        notes.append(
            "TFMOT peer skipped: tensorflow-model-optimization / tf-keras "
            f"are not importable here ({why}); install the [tfmot] extra to "
            "run it.")

    # FPGM + KD beside a plain FPGM re-run (both seeded alike; after the
    # other rows, so those keep their random stream)
    kd_pair(dense, x, y, xt, yt, args, finish)

    lat = ratios(rows, args)

    log("xnnpack experiment")
    xnn = xnnpack_experiment(workdir, x, y, xt, yt, args)

    result = {
        "benchmark": "pruning",
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "model": "tfcomp.zoo.resnet(depth=20), 28x28x1",
        "dense_macs": int(dense_macs),
        "steps_per_epoch": steps_per_epoch,
        "rows": rows, "xnnpack": xnn, "notes": notes,
        "machine": {"platform": platform.platform(),
                    "processor": platform.processor(),
                    "cpu_count": os.cpu_count(),
                    "load_average": list(os.getloadavg())},
        "runtime_s": time.time() - t_start,
        "latency_runtime": lat["dense"].runtime,
        "dense_checkpoint": cache_path,
        "dense_fingerprint": fp,
    }
    write_results(args.out, name, result, render_markdown(result))
    log(f"done in {result['runtime_s']:.0f} s")
    return result


def ratios(rows: dict, args) -> dict:
    """Float32 TFLite latency (interleaved) and epoch time of every row
    relative to the ``dense`` row of the same run; returns the timings."""
    log("latency")
    paths = {k: r["fp32_path"] for k, r in rows.items()}
    for k, r in rows.items():
        if "fp32_sparse_path" in r:
            paths[f"{k}_sparse_encoding"] = r["fp32_sparse_path"]
    lat = time_tflite(paths, runs=args.latency_runs,
                      rounds=args.latency_rounds)
    dense_ms = lat["dense"].median_ms
    plain_epoch = rows["dense"]["epoch_time_s"]
    for k, r in rows.items():
        r["latency_ms"] = lat[k].median_ms
        r["latency_ratio"] = lat[k].median_ms / dense_ms
        if f"{k}_sparse_encoding" in lat:
            r["sparse_latency_ratio"] = (
                lat[f"{k}_sparse_encoding"].median_ms / dense_ms)
        if r.get("epoch_time_s") and plain_epoch:
            r["epoch_time_ratio"] = r["epoch_time_s"] / plain_epoch
        r.pop("fp32_path", None)
        r.pop("fp32_sparse_path", None)
    return lat


def merge_kd(old: dict, rows: dict, args, name, t_start, fp, source,
             cache_path) -> dict:
    """``old`` with the KD pair of a ``--rows kd`` run (other rows kept;
    this run's dense reference in ``kd_run``), json and md rewritten."""
    old["rows"].update({k: rows[k] for k in ("fpgm_pair_plain", "fpgm_kd")})
    opts = " ".join(f"--{k} {getattr(args, k)}" for k in _CMD)
    old["kd_run"] = _kd.run_record(
        f"nice python benchmarks/pruning.py {'--quick' if args.quick else opts}"
        " --rows kd", fp, source, cache_path, t_start,
        old.get("dense_fingerprint"), dense_reference=rows["dense"])
    write_results(args.out, name, old, render_markdown(old))
    return old


if __name__ == "__main__":
    main()
