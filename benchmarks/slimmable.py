"""Slimmable networks and AutoSlim on Fashion-MNIST (one run, CPU scale).

For the zoo ResNet-20 and MobileNetV2-tiny (``tfcomp.zoo``), two parts each:

1. **Widths** (``<model>_widths``). A universally slimmable supernet
   (``to_slimmable(universal=True)``, BN slots at widths 0.25 / 0.5 / 0.75 /
   1.0) trained ``E`` epochs with the sandwich rule (max, min and two random
   widths per batch) and in-place distillation, BN statistics recalibrated
   per width (``recalibrate_widths``), evaluated at each width; against the
   same width trained alone: ``export_width``'s architecture re-initialised
   by ``scratch_setup(mode="E")`` and trained for the same ``E`` epochs with
   the same optimizer and schedule (BatchNorm statistics re-estimated on
   the same images as the supernet's). Every exported width is converted to
   float32 TFLite and timed side by side (``time_tflite``: one thread,
   batch 1, interleaved rounds).
2. **Search** (``<model>_search``). Architectures at 50 % and 25 % of the
   dense MACs from AutoSlim (greedy slimming of the trained supernet on
   held-out training images), a uniform width (``make_plan(target_macs=...)``
   , one ratio for every group, the target resolver), FPGM (``apply_fpgm`` +
   ``FPGMPruning(target_macs=...)`` for ``FPGM_EPOCHS`` epochs from the
   dense model, then ``strip_pruning``) and AMC (``AMCTuner``, DDPG over the
   preserve ratios, reward = held-out accuracy after the least-squares
   refit) from the dense model (the width-1.0 model trained alone, seed
   0). Every architecture is then retrained from scratch with the same
   recipe (``scratch_setup(mode="E")``, ``E`` epochs), tested, exported and
   timed side by side. FPGM resolves a MACs target to one uniform ratio
   (with 20 bisection steps, so a group may lose a channel more than under
   ``make_plan``): its architecture is (nearly) the uniform one; where the
   channel counts are equal its scratch row reuses the uniform run (said in
   the report). The FPGM row also gives the accuracy of the soft-pruned
   model itself (inherited weights, ``FPGM_EPOCHS`` epochs).

Deviations from the papers (CPU scale; the report repeats them):

* Data: ``N`` random Fashion-MNIST training images, ``E`` epochs, Adam with
  cosine decay for every model (the papers: ImageNet, hundreds of epochs of
  SGD); test accuracy on a fixed random subset of the test set; AutoSlim's
  and AMC's held-out data are other training images.
* Supernet: one universally slimmable network (US-Nets) serves both parts
  (the S-Net paper trains the four switches each step with private BN;
  AutoSlim trains a US-Net-style supernet). Its per-width BN statistics are
  recalibrated on ``CAL`` training images.
* The widths trained alone get one seed, or ``SEEDS`` seeds for the cheap
  widths (``SEED_WIDTHS``); the supernet one seed; the retrained
  architectures ``RETRAIN_SEEDS`` seeds (mean reported).
* AutoSlim: a channel step of 10 % of each group (the library default),
  the loss averaged over ``AS_BATCHES`` held-out batches (the released
  code: one batch); the found networks retrained for ``E`` epochs only.
* AMC: ``AMC_EPISODES`` episodes (``AMC_WARMUP`` warm-up) instead of 800
  (100); channel counts rounded to 1 (the official code: 8, which leaves a
  16-channel group only 8 or 16), calibration ``AMC_CAL`` images.
* FPGM: ``FPGM_EPOCHS`` epochs of soft pruning from the dense model (the
  paper: the whole training schedule).
* Timings are wall clock on 2 shared cores: indicative only.

Reproduce (about 35 min on 2 shared cores, trained models cached under
``~/.cache/tfcomp/slimmable``; parts are written to the json as they end):
    nice .venv/bin/python benchmarks/slimmable.py
    # one part again, keeping the others from slimmable.json:
    nice .venv/bin/python benchmarks/slimmable.py --parts resnet20_search
    # smoke test (< 3 min):
    nice .venv/bin/python benchmarks/slimmable.py --quick --out /tmp/slim

Writes ``slimmable.json`` and ``slimmable.md`` into ``--out``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import tempfile
import time
import warnings

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
from _common import (
    RESULTS,
    accuracy,
    clone_with_weights,
    compile_model,
    fashion_mnist_subset,
    log,
    parser,
    read_json,
    time_tflite,
    write_results,
)

import tfcomp
from tfcomp._io import atomic_path
from tfcomp.export import export_tflite
from tfcomp.pruning import (
    FPGMPruning,
    apply_fpgm,
    export_width,
    make_plan,
    prune_channels,
    recalibrate_batchnorm,
    recalibrate_widths,
    scratch_setup,
    set_width,
    strip_pruning,
    to_slimmable,
)
from tfcomp.pruning.autoslim import autoslim

CACHE = os.path.join(os.path.expanduser("~"), ".cache", "tfcomp",
                     "slimmable")

# ---- CPU-scale settings (paper values in the docstring) -----------------
SEED = 0
N = 2048                 # training images (random subset)
TEST = 3000              # test images (random subset)
VAL = 256                # held-out training images: AutoSlim / AMC
CAL = 512                # BN recalibration images (from the training set)
EPOCHS = 3               # E: supernet, widths alone, retraining
BATCH = 64
LR = 2e-3
WIDTHS = (0.25, 0.5, 0.75, 1.0)
ALONE_WIDTHS = WIDTHS    # widths also trained alone
SEEDS = 3                # seeds of the cheap widths trained alone
SEED_WIDTHS = (0.25,)
RETRAIN_SEEDS = 1
TARGETS = (0.5, 0.25)
AS_STEP = 0.2            # AutoSlim channel step (fraction of a group)
AS_BATCHES, AS_BATCH = 2, 64
AMC_EPISODES, AMC_WARMUP, AMC_CAL = 10, 4, 128
FPGM_EPOCHS = 1
LAT_RUNS, LAT_ROUNDS = 100, 3
RESNET_DEPTH = 20
MBV2_ALPHA = 0.5         # as benchmarks/search.py
MODELS = ("resnet20", "mbv2")
PARTS = tuple(f"{m}_{p}" for m in MODELS for p in ("widths", "search"))
# --quick: every code path, tiny: ResNet-8, 1 epoch on 64 images run
# eagerly, width 1.0 alone, one target
QUICK = dict(N=64, TEST=128, VAL=64, CAL=64, EPOCHS=1, SEEDS=1,
             SEED_WIDTHS=(), ALONE_WIDTHS=(1.0,), TARGETS=(0.5,),
             AS_STEP=0.5, AS_BATCHES=1, AMC_EPISODES=2, AMC_WARMUP=1,
             AMC_CAL=32, LAT_RUNS=5, LAT_ROUNDS=1, RESNET_DEPTH=8,
             MBV2_ALPHA=0.35, RUN_EAGERLY=True)
RUN_EAGERLY = False      # --quick: a few steps per model, tracing costs more
QUICK_OUT = os.path.join(tempfile.gettempdir(), "tfcomp-slimmable-quick")
_MEMO: dict = {}         # trained models shared by the parts of one run


def build(name: str) -> keras.Model:
    """The zoo model ``name`` (freshly initialised)."""
    if name == "resnet20":
        return tfcomp.zoo.resnet(depth=RESNET_DEPTH)
    return tfcomp.zoo.mobilenet_v2(alpha=MBV2_ALPHA)


def model_tag(name: str) -> str:
    """``resnet20`` / ``mbv2a0.5``: the architecture actually built."""
    return (f"resnet{RESNET_DEPTH}" if name == "resnet20"
            else f"mbv2a{MBV2_ALPHA:g}")


def optimizer(steps: int):
    """Adam with cosine decay to 0 over ``steps`` (every model)."""
    return keras.optimizers.Adam(
        keras.optimizers.schedules.CosineDecay(LR, max(1, steps)))


def steps_for(epochs: int) -> int:
    return epochs * int(np.ceil(N / BATCH))


def load_data() -> dict:
    (x, y), (xt, yt) = fashion_mnist_subset(None, TEST, SEED)
    return {"train": (x[:N], y[:N]), "val": (x[-VAL:], y[-VAL:]),
            "cal": x[:CAL], "test": (xt, yt)}


def _cache_path(tag: str) -> str:
    key = f"n{N}_e{EPOCHS}_b{BATCH}_lr{LR:g}"
    return os.path.join(CACHE, f"{tag}_{key}.weights.h5")


def _save(model, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_path(path, suffix=".weights.h5") as tmp:
        model.save_weights(tmp)


def fit(model, data, epochs: int, seed: int, callbacks=()) -> float:
    """Trains ``model`` with the common recipe; returns seconds."""
    keras.utils.set_random_seed(seed)
    compile_model(model, optimizer(steps_for(epochs)))
    model.run_eagerly = RUN_EAGERLY
    t0 = time.time()
    model.fit(*data["train"], batch_size=BATCH, epochs=epochs,
              shuffle=True, verbose=0, callbacks=list(callbacks))
    return time.time() - t0


# ---------------------------------------------------------------------------
# trained models (cached)


def supernet(name: str, data: dict):
    """The trained, BN-recalibrated universally slimmable ``name``."""
    if ("supernet", name) in _MEMO:
        return _MEMO[("supernet", name)]
    keras.utils.set_random_seed(SEED)
    slim = to_slimmable(build(name), widths=WIDTHS, universal=True,
                        seed=SEED)
    path = _cache_path(f"{model_tag(name)}_supernet_s{SEED}")
    info = {"cached": os.path.exists(path), "train_seconds": 0.0}
    if info["cached"]:
        slim.load_weights(path)
    else:
        log(f"{name}: training the supernet ({EPOCHS} epochs on {N})")
        info["train_seconds"] = fit(slim, data, EPOCHS, SEED)
        _save(slim, path)
    t0 = time.time()
    recalibrate_widths(slim, data["cal"])
    info["recalibrate_seconds"] = time.time() - t0
    _MEMO[("supernet", name)] = slim, info
    return slim, info


def train_alone(name: str, arch: keras.Model, tag: str, seed: int,
                data: dict):
    """``arch`` re-initialised (``scratch_setup``, Scratch-E) and trained
    ``EPOCHS`` epochs (cached); BN statistics re-estimated on ``cal``."""
    setup = scratch_setup(arch, mode="E", base_epochs=EPOCHS, seed=seed)
    model = setup.model
    arch_id = hashlib.sha1(json.dumps(sorted(channels(arch).items()))
                           .encode()).hexdigest()[:8]
    path = _cache_path(f"{model_tag(name)}_{tag}_{arch_id}_s{seed}")
    secs = 0.0
    if os.path.exists(path):
        model.load_weights(path)
    else:
        secs = fit(model, data, setup.epochs, seed)
        recalibrate_batchnorm(model, data["cal"], batch_size=128)
        _save(model, path)
    return model, secs


def channels(model) -> dict:
    """``{layer: output channels}`` of the conv / dense layers."""
    out = {}
    for layer in model.layers:
        n = getattr(layer, "filters", None) or getattr(layer, "units", None)
        if n is not None:
            out[layer.name] = int(n)
    return out


def profile_row(model) -> dict:
    p = tfcomp.profile(model)
    return {"macs": int(p.macs), "params": int(p.params)}


def time_models(models: dict, workdir: str, rep) -> dict:
    """Float32 TFLite files of ``models``, timed side by side: ``{key:
    {"median_ms", "bytes"}}``."""
    paths = {}
    for key, model in models.items():
        p = os.path.join(workdir, f"{key}.tflite".replace("/", "_"))
        export_tflite(model, p, verify=True, verify_data=rep, num_verify=16)
        paths[key] = p
    lat = time_tflite(paths, runs=LAT_RUNS, rounds=LAT_ROUNDS)
    return {k: {"median_ms": v.median_ms, "bytes": os.path.getsize(paths[k]),
                "runtime": v.runtime} for k, v in lat.items()}


# ---------------------------------------------------------------------------
# part 1: widths


def part_widths(name: str, data: dict, workdir: str) -> dict:
    xt, yt = data["test"]
    slim, sinfo = supernet(name, data)
    dense_macs = tfcomp.profile(build(name)).macs
    rows, exported = {}, {}
    for w in WIDTHS:
        set_width(slim, w)
        acc = accuracy(slim, xt, yt)
        small = export_width(slim, w)
        diff = float(np.max(np.abs(keras.ops.convert_to_numpy(
            slim(xt[:64], training=False) - small(xt[:64], training=False)))))
        exported[str(w)] = small
        alone, secs = [], 0.0
        seeds = (range(SEEDS) if w in SEED_WIDTHS else range(1)) \
            if w in ALONE_WIDTHS else ()
        for s in seeds:
            model, t = train_alone(name, small, f"alone{w:g}", SEED + s,
                                   data)
            alone.append(accuracy(model, xt, yt))
            secs += t
        prof = profile_row(small)
        mean = float(np.mean(alone)) if alone else None
        rows[str(w)] = {
            "slimmable_accuracy": acc, "alone_accuracy": mean,
            "alone_seeds": alone,
            "gap_points": None if mean is None else (acc - mean) * 100,
            "export_max_abs_diff": diff, "macs_ratio": prof["macs"]
            / dense_macs, "alone_train_seconds": secs, **prof}
        log(f"{name} width {w}: slimmable {acc:.4f}, alone "
            f"{mean if mean is None else round(mean, 4)} ({len(alone)} "
            f"seed(s)), MACs "
            f"{prof['macs']:,}, export diff {diff:.1e}")
    set_width(slim, WIDTHS[-1])
    lat = time_models(exported, workdir, xt[:16])
    full = lat[str(WIDTHS[-1])]["median_ms"]
    for w, r in rows.items():
        r.update(latency_ms=lat[w]["median_ms"],
                 latency_ratio=lat[w]["median_ms"] / full,
                 tflite_bytes=lat[w]["bytes"])
    return {"supernet": sinfo, "dense_macs": int(dense_macs),
            "widths": rows, "latency_runtime": lat[str(WIDTHS[-1])]
            ["runtime"]}


# ---------------------------------------------------------------------------
# part 2: AutoSlim vs uniform vs FPGM vs AMC


def _fpgm(dense, data, target):
    masked = apply_fpgm(clone_with_weights(dense))
    cb = FPGMPruning(target_macs=target, seed=SEED)
    t0 = time.time()
    fit(masked, data, FPGM_EPOCHS, SEED, callbacks=[cb])
    small = strip_pruning(masked)
    recalibrate_batchnorm(small, data["cal"], batch_size=128)
    return small, time.time() - t0, accuracy(small, *data["test"])


def _amc(dense, data, target, workdir, name):
    from tfcomp.tuners.amc import AMCHyperModel, AMCTuner

    hm = AMCHyperModel(dense, data["cal"][:AMC_CAL], data["val"],
                       resource="macs", budget=target, round_to=1,
                       seed=SEED)
    tuner = AMCTuner(hm, max_trials=AMC_EPISODES, warmup=AMC_WARMUP,
                     seed=SEED, directory=workdir,
                     project_name=f"amc_{name}_{target:g}", overwrite=True)
    t0 = time.time()
    tuner.search(verbose=0)
    best = tuner.oracle.get_best_trials(1)[0]
    small, _ = hm.prune(dict(best.hyperparameters.values))
    return small, time.time() - t0, float(best.score)


def part_search(name: str, data: dict, workdir: str) -> dict:
    xt, yt = data["test"]
    slim, _ = supernet(name, data)
    plain = build(name)
    dense, _ = train_alone(name, export_width(slim, 1.0), "alone1", SEED,
                           data)
    dense_macs = tfcomp.profile(dense).macs
    archs, meta = {}, {}
    t0 = time.time()
    res = autoslim(slim, data["val"], target_macs=TARGETS, step=AS_STEP,
                   batches=AS_BATCHES, batch_size=AS_BATCH)
    as_secs = time.time() - t0
    log(f"{name}: AutoSlim {len(res.history) - 1} greedy steps in "
        f"{as_secs:.0f} s")
    for t in TARGETS:
        archs[("autoslim", t)] = res.prune(plain, t)
        meta[("autoslim", t)] = {"search_seconds": as_secs,
                                 "greedy_steps": len(res.history) - 1,
                                 "search_loss": res.architectures[t]["loss"]}
        archs[("uniform", t)] = prune_channels(
            dense, make_plan(dense, target_macs=t, round_to=1))
        meta[("uniform", t)] = {"search_seconds": 0.0}
        small, secs, acc = _fpgm(dense, data, t)
        archs[("fpgm", t)] = small
        meta[("fpgm", t)] = {"search_seconds": secs,
                             "soft_pruned_accuracy": acc}
        small, secs, reward = _amc(dense, data, t, workdir, name)
        archs[("amc", t)] = small
        meta[("amc", t)] = {"search_seconds": secs, "best_reward": reward}
        log(f"{name} {t:.0%}: FPGM soft-pruned {acc:.4f}, AMC reward "
            f"{reward:.4f}")
    rows, trained = {}, {}
    for (method, t), arch in archs.items():
        key = f"{method}@{t:g}"
        counts = channels(arch)
        same = [k for k, r in rows.items() if r["channels"] == counts
                and k.endswith(f"@{t:g}")]
        accs, secs = [], 0.0
        if same:
            accs = rows[same[0]]["seed_accuracies"]
            trained[key] = trained[same[0]]
        else:
            for s in range(RETRAIN_SEEDS):
                model, dt = train_alone(name, arch, f"{method}{t:g}_retrain",
                                        SEED + s, data)
                accs.append(accuracy(model, xt, yt))
                secs += dt
                if s == 0:
                    trained[key] = model
        rows[key] = {"method": method, "target": t,
                     "accuracy": float(np.mean(accs)),
                     "seed_accuracies": accs, "same_as": same[0] if same
                     else None, "retrain_seconds": secs,
                     "channels": counts, **profile_row(arch),
                     **meta[(method, t)]}
        rows[key]["macs_ratio"] = rows[key]["macs"] / dense_macs
        log(f"{name} {key}: retrained {np.mean(accs):.4f}, MACs ratio "
            f"{rows[key]['macs_ratio']:.3f}"
            + (f" (= {same[0]})" if same else ""))
    lat = time_models({"dense": dense, **trained}, workdir, xt[:16])
    for key, r in rows.items():
        r["latency_ms"] = lat[key]["median_ms"]
        r["latency_ratio"] = lat[key]["median_ms"] / lat["dense"]["median_ms"]
    return {"dense_accuracy": accuracy(dense, xt, yt),
            "dense_macs": int(dense_macs),
            "dense_latency_ms": lat["dense"]["median_ms"], "rows": rows,
            "autoslim_history": [{k: v for k, v in h.items() if k != "keep"}
                                 for h in res.history]}


# ---------------------------------------------------------------------------
# report


def compute_targets(res: dict) -> dict:
    out = {}
    for name in MODELS:
        r = res.get(name, {})
        if "widths" in r:
            out[f"{name}_widths"] = {
                w: row["gap_points"] >= -1.0
                for w, row in r["widths"]["widths"].items()
                if row["gap_points"] is not None}
        if "search" in r:
            rows = r["search"]["rows"]
            out[f"{name}_autoslim"] = {
                f"{t:g}": rows[f"autoslim@{t:g}"]["accuracy"]
                >= rows[f"uniform@{t:g}"]["accuracy"] + 0.005
                for t in TARGETS if f"autoslim@{t:g}" in rows}
    return out


def _met(ok):
    return "met" if ok else "NOT met"


def render_markdown(res: dict) -> str:
    s = res["settings"]
    lines = [
        "# Slimmable networks and AutoSlim: Fashion-MNIST",
        "",
        "Reproduce: `cd /work/main && nice .venv/bin/python "
        "benchmarks/slimmable.py` (one run; trained models cached in "
        "`~/.cache/tfcomp/slimmable`; `--parts resnet20_search` reruns one "
        "part).",
        "",
        f"CPU scale: {s['N']} random training images, {s['EPOCHS']} epochs "
        f"for every trained model (supernet, widths alone, retrained "
        f"architectures), batch {s['BATCH']}, Adam {s['LR']} with cosine "
        f"decay; test accuracy on {s['TEST']} test images; AutoSlim / AMC "
        f"search on {s['VAL']} held-out training images; BN recalibrated on "
        f"{s['CAL']} training images. Supernet: universally slimmable "
        "(sandwich rule: max, min and 2 random widths per batch; in-place "
        "distillation; BN slots at the 4 widths). Widths alone: "
        f"{list(s['ALONE_WIDTHS'])}, {s['SEEDS']} seeds at widths "
        f"{list(s['SEED_WIDTHS'])}, 1 elsewhere; "
        f"retrained architectures: {s['RETRAIN_SEEDS']} seed(s). AutoSlim "
        f"step {s['AS_STEP']:.0%} of a group, loss on {s['AS_BATCHES']} "
        f"batches of {s['AS_BATCH']}; AMC {s['AMC_EPISODES']} episodes "
        f"({s['AMC_WARMUP']} warm-up), round_to 1; FPGM "
        f"{s['FPGM_EPOCHS']} epoch(s) of soft pruning from the dense model. "
        f"Latency: float32 TFLite, 1 thread, batch 1, median of "
        f"{s['LAT_RUNS']} runs x {s['LAT_ROUNDS']} interleaved rounds. "
        f"Total {res['wall_seconds'] / 60:.1f} min on "
        f"{res['machine']['cpu_count']} shared cores (load "
        f"{res['machine']['load_start']:.1f} -> "
        f"{res['machine']['load_end']:.1f}); the numbers compare methods "
        "under one small budget, they do not reproduce the papers'.",
    ]
    if res.get("quick"):
        lines += ["", "**Quick smoke run (`--quick`): tiny data and "
                  "models, the numbers mean nothing.**"]
    tg = res["targets"]
    for name in MODELS:
        r = res.get(name)
        if not r:
            continue
        title = (f"ResNet-{s['RESNET_DEPTH']}" if name == "resnet20"
                 else f"MobileNetV2-tiny (alpha {s['MBV2_ALPHA']})")
        if "widths" in r:
            w = r["widths"]
            sn = w["supernet"]
            lines += [
                "", f"## {title}: one slimmable model vs each width alone",
                "",
                f"Supernet training {sn['train_seconds']:.0f} s"
                + (" (cached)" if sn["cached"] else "")
                + f"; latency runtime {w['latency_runtime']}.", "",
                "| width | MACs | MACs ratio | params | slimmable acc | "
                "alone acc (seeds) | gap (points) | export max diff | "
                "TFLite ms | latency ratio |",
                "|---|---|---|---|---|---|---|---|---|---|"]
            for k, row in w["widths"].items():
                seeds = " / ".join(f"{a:.4f}" for a in row["alone_seeds"])
                alone = ("not trained" if row["alone_accuracy"] is None
                         else f"{row['alone_accuracy']:.4f} ({seeds})")
                gap = ("n/a" if row["gap_points"] is None
                       else f"{row['gap_points']:+.2f}")
                lines.append(
                    f"| {k} | {row['macs'] / 1e6:.2f}M | "
                    f"{row['macs_ratio']:.3f} | {row['params']:,} | "
                    f"{row['slimmable_accuracy']:.4f} | {alone} | {gap} | "
                    f"{row['export_max_abs_diff']:.1e} | "
                    f"{row['latency_ms']:.3f} | {row['latency_ratio']:.2f} |")
            ok = tg.get(f"{name}_widths", {})
            lines += ["", "Target: slimmable within 1 point of the width "
                      "alone at every width: " + ", ".join(
                          f"{k} {_met(v)}" for k, v in ok.items()) + "."]
        if "search" in r:
            sr = r["search"]
            lines += [
                "", f"## {title}: AutoSlim vs uniform vs FPGM vs AMC", "",
                f"Dense (width 1.0 alone, seed 0): "
                f"{sr['dense_accuracy']:.4f}, {sr['dense_macs'] / 1e6:.2f}M "
                f"MACs, {sr['dense_latency_ms']:.3f} ms. AutoSlim: "
                f"{len(sr['autoslim_history']) - 1} greedy steps.", "",
                "| target | method | MACs ratio | params | retrained acc "
                "(seeds) | search s | TFLite ms | latency ratio | notes |",
                "|---|---|---|---|---|---|---|---|---|"]
            for row in sr["rows"].values():
                notes = []
                if row.get("same_as"):
                    notes.append(f"same channels as {row['same_as']}")
                if "soft_pruned_accuracy" in row:
                    notes.append("soft-pruned (inherited weights) "
                                 f"{row['soft_pruned_accuracy']:.4f}")
                if "best_reward" in row:
                    notes.append(f"search reward {row['best_reward']:.4f}")
                seeds = " / ".join(f"{a:.4f}" for a in row["seed_accuracies"])
                lines.append(
                    f"| {row['target']:.0%} | {row['method']} | "
                    f"{row['macs_ratio']:.3f} | {row['params']:,} | "
                    f"{row['accuracy']:.4f} ({seeds}) | "
                    f"{row['search_seconds']:.0f} | {row['latency_ms']:.3f} "
                    f"| {row['latency_ratio']:.2f} | {'; '.join(notes)} |")
            ok = tg.get(f"{name}_autoslim", {})
            lines += ["", "Target: AutoSlim >= uniform + 0.5 point after "
                      "the same retraining: " + ", ".join(
                          f"{float(k):.0%} {_met(v)}" for k, v in ok.items())
                      + "."]
            lines += ["", "Channels per layer (output channels):", "",
                      "| layer | " + " | ".join(sr["rows"]) + " |",
                      "|---|" + "---|" * len(sr["rows"])]
            layers = list(next(iter(sr["rows"].values()))["channels"])
            for layer in layers:
                lines.append(f"| {layer} | " + " | ".join(
                    str(row["channels"].get(layer, "")) for row in
                    sr["rows"].values()) + " |")
    secs = ", ".join(f"{k} {v / 60:.1f} min"
                     for k, v in res["part_seconds"].items())
    lines += [
        "", "## Honest reading", "",
        f"- One run; {s['TEST']} test images give a standard error of about "
        f"{100 * np.sqrt(0.85 * 0.15 / s['TEST']):.1f} point per accuracy, "
        "the size of both targets: a missed or met target at this scale is "
        "not evidence either way.",
        "- Masked slimmable layers cost full-width MACs while training "
        "(static shapes), and the sandwich rule runs 4 widths per batch: a "
        "supernet epoch costs about 4 full-width epochs here.",
        "- The search rows land at different MACs below each target "
        "(AutoSlim stops at the first greedy step under it, AMC's wall "
        "and the uniform bisection at their own rounding): read accuracy "
        "beside the MACs ratio column.",
        "- The supernet is universally slimmable (US-Nets / AutoSlim), "
        "not the S-Net of the first paper (private BN affine per switch, "
        "all switches every step).",
        f"- Part times: {secs}.", ""]
    return "\n".join(lines)


def _jsonable(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))


def _settings() -> dict:
    g = globals()
    keys = ("SEED", "N", "TEST", "VAL", "CAL", "EPOCHS", "BATCH", "LR",
            "WIDTHS", "ALONE_WIDTHS", "SEEDS", "SEED_WIDTHS",
            "RETRAIN_SEEDS", "TARGETS",
            "AS_STEP", "AS_BATCHES", "AS_BATCH", "AMC_EPISODES",
            "AMC_WARMUP", "AMC_CAL", "FPGM_EPOCHS", "LAT_RUNS",
            "LAT_ROUNDS", "RESNET_DEPTH", "MBV2_ALPHA", "RUN_EAGERLY")
    return {k: g[k] for k in keys}


def main(argv=None) -> int:
    ap = parser(__doc__)
    ap.add_argument("--parts", default=",".join(PARTS),
                    help=f"comma-separated parts of {list(PARTS)}; the "
                    "others are kept from slimmable.json in --out")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test (< 3 min): tiny data, 1 epoch")
    ap.add_argument("--cache", default=None,
                    help=f"folder of the cached trained models (default "
                    f"{CACHE}; with --quick: a cache/ folder in --out)")
    args = ap.parse_args(argv)
    # carry_compile's note on the exported / stripped models' optimizer
    # slots: every model here is compiled afresh
    warnings.filterwarnings("ignore", ".*optimizer slot variable")
    g = globals()
    if args.quick:
        g.update(QUICK)
        if args.out == RESULTS:  # never overwrite the real results
            args.out = QUICK_OUT
    g["CACHE"] = args.cache or (os.path.join(args.out, "cache")
                                if args.quick else CACHE)
    parts = [p for p in args.parts.split(",") if p]
    if not parts or set(parts) - set(PARTS):
        ap.error(f"--parts must name some of {list(PARTS)}. Received: "
                 f"{args.parts!r}")
    path = os.path.join(args.out, "slimmable.json")
    res = {}
    if set(parts) != set(PARTS) and os.path.exists(path):
        res = read_json(path)
    t_start, load_start = time.time(), os.getloadavg()[0]
    res.update(settings=_settings(), quick=args.quick)
    res.setdefault("part_seconds", {})
    data = load_data()
    workdir = tempfile.mkdtemp(prefix="tfcomp-bench-slimmable-")
    for part in PARTS:
        if part not in parts:
            continue
        name, kind = part.rsplit("_", 1)
        log(f"part {part}")
        t0 = time.time()
        fn = part_widths if kind == "widths" else part_search
        res.setdefault(name, {})[kind] = fn(name, data, workdir)
        res["part_seconds"][part] = time.time() - t0
        res["wall_seconds"] = sum(res["part_seconds"].values())
        res["machine"] = {"platform": platform.platform(),
                          "cpu_count": os.cpu_count(),
                          "load_start": load_start,
                          "load_end": os.getloadavg()[0],
                          "python": sys.version.split()[0],
                          "keras": keras.__version__}
        res["targets"] = compute_targets(res)
        write_results(args.out, "slimmable", res, render_markdown(res),
                      default=_jsonable)
        log(f"part {part} done in {res['part_seconds'][part]:.0f} s")
    log(f"done in {time.time() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    rc = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)  # see benchmarks/search.py: teardown can hang
