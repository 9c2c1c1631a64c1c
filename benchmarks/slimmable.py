"""Slimmable networks and AutoSlim on Fashion-MNIST (one run, CPU scale).

For the zoo ResNet-20 and MobileNetV2-tiny (``tfcomp.zoo``), two parts each:

1. **Widths** (``<model>_widths``). Three supernets, each trained ``E``
   epochs with 4 widths per batch and BN statistics recalibrated per width
   (``recalibrate_widths``), evaluated at 0.25 / 0.5 / 0.75 / 1.0: the
   S-Net (``to_slimmable(universal=False, inplace_distillation=False)``:
   private BN per width, the 4 widths every batch, labels: the S-Net
   paper's rule), the same with in-place distillation (the US-Nets rule,
   the library default), and the US-Net AutoSlim searches (part 2). The
   S-Net is compared with the same width trained alone: ``export_width``'s
   architecture re-initialised by ``scratch_setup(mode="E")`` and trained
   for the same ``E`` epochs with the same optimizer and schedule
   (BatchNorm statistics re-estimated on the same images as the
   supernet's), ``SEEDS`` seeds. Every exported width is converted to
   float32 TFLite and timed side by side (``time_tflite``: one thread,
   batch 1, interleaved rounds).
2. **Search** (``<model>_search``). Architectures at 50 % and 25 % of the
   dense MACs from AutoSlim (greedy slimming of the trained supernet on
   held-out training images; the US-Net: ``universal=True``, labels), a
   uniform width (``make_plan(target_macs=...)``
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
* Supernets: trained on labels at every width (``inplace_distillation=
  False``); the S-Net ``SUPERNET_SEEDS`` seeds, the others one. In-place
  distillation (US-Nets, AutoSlim) is measured as a third supernet: at
  this horizon it loses to labels (likely, not measured: the max width's
  early outputs are poor targets). Per-width BN statistics are
  recalibrated on ``CAL`` training images. The US-Net AutoSlim searches
  trains ``US_EPOCHS`` (2 E): at E its width 0.5 lagged the S-Net by 5-8
  points, at 2 E by 0.8-1.3, and AutoSlim vs uniform did not improve
  (the report's reading). AutoSlim's ``search s`` column counts the
  greedy search only, not the supernet's training.
* The widths trained alone get ``SEEDS`` seeds (at ``SEED_WIDTHS``); the
  retrained architectures ``RETRAIN_SEEDS`` seeds (mean reported): 5 since
  session 19, as one architecture's seeds spread by up to 2 points at 25 %
  (3 seeds: a standard error of ~0.5, the size of the AutoSlim target).
* AutoSlim: a channel step of ``AS_STEP`` of each group (the library
  default, 10 %), the loss averaged over ``AS_BATCHES`` held-out batches (the
  released code: top-1 error on one batch); the found networks retrained
  for ``E`` epochs only.
* AMC: ``AMC_EPISODES`` episodes (``AMC_WARMUP`` warm-up) instead of 800
  (100); channel counts rounded to 1 (the official code: 8, which leaves a
  16-channel group only 8 or 16), calibration ``AMC_CAL`` images.
* FPGM: ``FPGM_EPOCHS`` epochs of soft pruning from the dense model (the
  paper: the whole training schedule).
* Timings are wall clock on 2 shared cores: indicative only.

Reproduce (about 100 min from nothing on 2 shared cores; trained models cached under
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
from _slimmable_report import compute_targets, render_markdown

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
N = 8192                 # training images (random subset)
TEST = 3000              # test images (random subset)
VAL = 256                # held-out training images: AutoSlim / AMC
CAL = 512                # BN recalibration images (from the training set)
EPOCHS = 3               # E: supernet, widths alone, retraining
US_EPOCHS = 6            # the US-Net AutoSlim searches (2 E: module doc)
BATCH = 64
LR = 2e-3
WIDTHS = (0.25, 0.5, 0.75, 1.0)
ALONE_WIDTHS = WIDTHS    # widths also trained alone
SEEDS = 5                # seeds of each width trained alone (3 before session 23)
SEED_WIDTHS = WIDTHS
RETRAIN_SEEDS = 5        # 3 before session 19 (module docstring)
SUPERNET_SEEDS = 5       # S-Net seeds (the other supernets: one; 3 before session 23)
TARGETS = (0.5, 0.25)
AS_STEP = 0.1            # AutoSlim channel step (library default)
AS_BATCHES, AS_BATCH = 4, 64   # all VAL images (the library default)
AMC_EPISODES, AMC_WARMUP, AMC_CAL = 10, 4, 128
FPGM_EPOCHS = 1
LAT_RUNS, LAT_ROUNDS = 100, 3
RESNET_DEPTH = 20
MBV2_ALPHA = 0.5         # as benchmarks/search.py
MODELS = ("resnet20", "mbv2")
PARTS = tuple(f"{m}_{p}" for m in MODELS for p in ("widths", "search"))
# --quick: every code path, tiny: ResNet-8, 1 epoch on 64 images run
# eagerly, width 1.0 alone, one target
QUICK = dict(N=64, TEST=128, VAL=64, CAL=64, EPOCHS=1, US_EPOCHS=1,
             SEEDS=1,
             SEED_WIDTHS=(), ALONE_WIDTHS=(1.0,), TARGETS=(0.5,),
             RETRAIN_SEEDS=1, SUPERNET_SEEDS=1,
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


def _cache_path(tag: str, epochs: int | None = None) -> str:
    key = f"n{N}_e{epochs or EPOCHS}_b{BATCH}_lr{LR:g}"
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


# the supernets: to_slimmable options of each (module docstring)
SUPERNETS = {
    "snet": dict(universal=False, inplace_distillation=False),
    "snet_kd": dict(universal=False, inplace_distillation=True),
    "us": dict(universal=True, inplace_distillation=False),
}


def supernet(name: str, data: dict, kind: str = "snet", seed: int = SEED):
    """The trained, BN-recalibrated supernet ``kind`` of ``name``."""
    if ("supernet", name, kind, seed) in _MEMO:
        return _MEMO[("supernet", name, kind, seed)]
    keras.utils.set_random_seed(seed)
    slim = to_slimmable(build(name), widths=WIDTHS, seed=seed,
                        **SUPERNETS[kind])
    epochs = US_EPOCHS if kind == "us" else EPOCHS
    path = _cache_path(f"{model_tag(name)}_{kind}_s{seed}", epochs)
    info = {"cached": os.path.exists(path), "train_seconds": 0.0,
            **SUPERNETS[kind]}
    if info["cached"]:
        slim.load_weights(path)
    else:
        log(f"{name}: training the supernet {kind} seed {seed} ({epochs} "
            f"epochs on {N})")
        info["train_seconds"] = fit(slim, data, epochs, seed)
        _save(slim, path)
    t0 = time.time()
    recalibrate_widths(slim, data["cal"])
    info["recalibrate_seconds"] = time.time() - t0
    _MEMO[("supernet", name, kind, seed)] = slim, info
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
    slim, sinfo = supernet(name, data, "snet")
    more = [supernet(name, data, "snet", SEED + s)
            for s in range(1, SUPERNET_SEEDS)]
    sinfo = dict(sinfo, train_seconds=sinfo["train_seconds"] + sum(
        i["train_seconds"] for _, i in more), seeds=SUPERNET_SEEDS)
    others = {k: supernet(name, data, k) for k in SUPERNETS if k != "snet"}
    dense_macs = tfcomp.profile(build(name)).macs
    rows, exported = {}, {}
    for w in WIDTHS:
        other_acc = {}
        for k, (net, _) in others.items():
            set_width(net, w)
            other_acc[k] = accuracy(net, xt, yt)
            set_width(net, WIDTHS[-1])
        seed_accs = []
        for net in [slim] + [n for n, _ in more]:
            set_width(net, w)
            seed_accs.append(accuracy(net, xt, yt))
        for net, _ in more:
            set_width(net, WIDTHS[-1])
        acc = float(np.mean(seed_accs))
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
            "slimmable_accuracy": acc, "slimmable_seeds": seed_accs,
            "other_supernets": other_acc,
            "alone_accuracy": mean,
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
    return {"supernet": sinfo, "other_supernets": {
                k: info for k, (_, info) in others.items()},
            "dense_macs": int(dense_macs),
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
    slim, _ = supernet(name, data, "us")
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
    t0 = time.time()
    res_mac = autoslim(slim, data["val"], target_macs=TARGETS, step=AS_STEP,
                       batches=AS_BATCHES, batch_size=AS_BATCH,
                       criterion="loss_per_mac")
    mac_secs = time.time() - t0
    for t in TARGETS:
        for method, r, secs in (("autoslim", res, as_secs),
                                ("autoslim_mac", res_mac, mac_secs)):
            archs[(method, t)] = r.prune(plain, t)
            meta[(method, t)] = {"search_seconds": secs,
                                 "greedy_steps": len(r.history) - 1,
                                 "search_loss": r.architectures[t]["loss"]}
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
    keys = ("SEED", "N", "TEST", "VAL", "CAL", "EPOCHS", "US_EPOCHS",
            "BATCH", "LR",
            "WIDTHS", "ALONE_WIDTHS", "SEEDS", "SEED_WIDTHS",
            "RETRAIN_SEEDS", "SUPERNET_SEEDS", "TARGETS",
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
