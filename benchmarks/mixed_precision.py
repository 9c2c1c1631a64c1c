"""Mixed precision vs uniform bits at equal hardware cost (Fashion-MNIST).

Per setting (a model and what the budget limits), every policy gets the
same quantization-aware fine-tune (``FT_STEPS`` SGD batches of 128 from
the first ``FT_N`` training images, learning rate 1e-3, momentum 0.9,
HAQ's), repeated with the data orders ``FT_SEEDS``, and is scored on the
first ``TEST_N`` test images (mean, spread and per-seed values):

* uniform 3/4/5-bit (first-layer weights and the last layer at 8/8, as HAQ
  fixes them; a = w); the same policies for every setting of one model, so
  they are fine-tuned once per model and reused;
* ``allocate_bits`` (exact ILP, ``scipy`` HiGHS) on ``"hessian"``
  (HAWQ-V2: the weights' Hessian term plus that of the layer's input
  activations, ``kind="activations"``, summed) and ``"distortion"`` (MCT:
  output distortion of the weights plus that of the input activations,
  summed) sensitivity, a = w;
* HAQ (``HAQTuner``, DDPG, hardware-native widths) as today, and HAQ
  warm-started from the Hessian ILP policy (``warm_start=``, ``WARM_FROM``;
  the distortion one before issue #19's second run; it
  searches the ILP's widths where the native set lacks some the ILP chose,
  e.g. 3/5/6 bits on Bit Fusion, priced at their raw traffic: the native
  space would snap them up and lose the start);
* DNAS (``tfcomp.quantization.dnas``: supernet over a = w candidates on
  the hardware's native widths, a short search, ``derive(budget=...)``);
* keras-tuner ``RandomSearch`` over the same ``HAQHyperModel`` (HAQ's wall
  fits each proposal to the budget).

Settings: (a) BISMO at the paper's 8x256x8 PYNQ-Z1 instance (latency),
ResNet-20 and MobileNetV2-tiny (alpha 0.5); (b) Bit Fusion (edge) latency,
ResNet-20 only (MobileNetV2's latency is dominated by depthwise layers,
which Bit Fusion runs at one MAC per cycle at any width: the measured
uniform 4/8 latency ratio is in the report); (c) weight size, ResNet-20
and MobileNetV2-tiny; (d) keras.applications MobileNetV2 (alpha 1.0,
32x32 zero-padded input, short training) on HAQ's released bit-serial
latency table (``LatencyTable.from_haq``). The budget of a model is the
cost of the widest uniform width that loses at least 2 points against the
float model (its test accuracy) after the common fine-tune, decided from
the measured uniform rows.

Deviations (CPU scale, 2 shared cores, about 70 minutes): baselines
trained for ``TRAIN_EPOCHS`` epochs on ``TRAIN_N`` images (cached under
``~/.cache/tfcomp/mixed_precision``); a fine-tune of ``FT_STEPS`` batches
instead of epochs; HAQ with ``HAQ_EPISODES`` episodes (paper 600) and
``HAQ_WARMUP`` warm-up, rewards after ``SEARCH_STEPS`` batches on
``VAL_N`` held-out training images; the time of a 100-episode HAQ search
is extrapolated from the measured per-episode time; RandomSearch with
``RS_TRIALS`` trials; DNAS searched for ``DNAS_EPOCHS`` epoch(s) on
``DNAS_N`` images (paper: 90 epochs on CIFAR-10) without ``select_best``;
Hutchinson's estimator with ``MAX_PROBES`` probes (fixed); sensitivity on
``SENS_N`` training images at the widths ``SENS_BITS``; fine-tunes draw
their data order from numpy instead of re-seeding TensorFlow
(``HAQHyperModel.fit`` through ``tfcomp._finetune.data_order``:
``keras.utils.set_random_seed`` clears TF's kernel caches, which made
every trial re-optimise its QAT graph, about 20 s per call here).

Usage (writes benchmarks/results/mixed_precision.{json,md}; about 70 min
on 2 shared cores, baselines included):
    nice .venv/bin/python benchmarks/mixed_precision.py
    # one part again, keeping the others from mixed_precision.json:
    nice .venv/bin/python benchmarks/mixed_precision.py --parts bismo_mbv2
    # some rows of some parts again (the rest kept):
    nice .venv/bin/python benchmarks/mixed_precision.py --parts bismo_mbv2 \
        --rows haq_warm
    # smoke test (< 2 min, results to /tmp):
    .venv/bin/python benchmarks/mixed_precision.py --quick --out /tmp/mp
"""

from __future__ import annotations

import os
import platform
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import keras_tuner as kt
import numpy as np
from _common import accuracy as _accuracy
from _common import compile_model, log, parser, read_json, write_results
from _mixed_precision_report import to_markdown

import tfcomp
from tfcomp._io import atomic_path
from tfcomp.hardware import BISMO, BitFusion, CostTable, allocate_bits
from tfcomp.hardware.latency_table import LatencyTable
from tfcomp.pruning import recalibrate_batchnorm
from tfcomp.quantization import dnas
from tfcomp.quantization.sensitivity import Sensitivity, sensitivity
from tfcomp.tuners.haq import HAQHyperModel, HAQTuner

NAME = "mixed_precision"
CACHE = os.path.join(os.path.expanduser("~"), ".cache", "tfcomp", NAME)
HAQ_NPY = "/work/shared/anchors/haq/" \
    "qmobilenetv2_imagenet100_batch16_latency_table.npy"

# ---- CPU-scale settings (deviations: module docstring) -------------------
SEED = 0
TRAIN_N, TRAIN_EPOCHS = 8000, 2
APPS_TRAIN_N, APPS_EPOCHS = 8000, 3
BATCH = 64                     # fine-tune batch size (search and final)
FT_N, FT_STEPS = 1024, 16      # common QAT fine-tune: 16 batches of 64
FT_SEEDS = (0, 1, 2)
TEST_N = 3000
CAL_N = 128                    # activation-range calibration images
SENS_N = 128                   # sensitivity images
SENS_BITS = (2, 3, 4, 5, 6, 8)
MAX_PROBES = 24  # sample-disjoint Hutchinson probes per kind (weights, activations)
VAL = (50000, 50600)           # held-out training images: search rewards
SEARCH_STEPS = 6               # fine-tune batches per search trial
HAQ_EPISODES, HAQ_WARMUP = 8, 3
RS_TRIALS = 5
# HAQ's warm start: the Hessian ILP policy (the better ILP of issue #19's
# run; the distortion one until then)
WARM_FROM = "ilp_hessian"
DNAS_EPOCHS, DNAS_N = 1, 768
# a = w; (2, 3, 4, 6, 8) in the bismo_mbv2 / size_mbv2 parts of the
# committed run: tracing the 5-candidate supernet took 5.5 min a setting
DNAS_CANDIDATES = tuple((b, b) for b in (2, 4, 8))
LOSS_POINTS = 2.0              # budget: widest uniform width losing >= 2
UNIFORM = (3, 4, 5)
SETTINGS = {  # part: (model, resource, hardware name)
    "bismo_resnet20": ("resnet20", "latency", "bismo"),
    "bismo_mbv2": ("mbv2", "latency", "bismo"),
    "bitfusion_resnet20": ("resnet20", "latency", "bitfusion"),
    "size_resnet20": ("resnet20", "size", None),
    "size_mbv2": ("mbv2", "size", None),
    "haqtable_apps": ("apps", "latency", "haq_table"),
}
PARTS = ("uniform_mbv2", "bismo_mbv2", "size_mbv2", "uniform_resnet20",
         "bismo_resnet20", "bitfusion_resnet20", "uniform_apps",
         "haqtable_apps", "size_resnet20")
QUICK_PARTS = ("size_mbv2",)
ROWS = ("ilp_hessian", "ilp_distortion", "haq", "haq_warm",
        "haq_warm_best_reward", "random_search", "dnas")


def quick_mode():
    """Shrinks every knob for the smoke test."""
    g = globals()
    g.update(TRAIN_N=1024, TRAIN_EPOCHS=1, APPS_TRAIN_N=512, APPS_EPOCHS=1,
             FT_N=128, FT_STEPS=1, FT_SEEDS=(0, 1), TEST_N=256, CAL_N=32,
             SENS_N=32, MAX_PROBES=3, VAL=(50000, 50128), SEARCH_STEPS=1,
             HAQ_EPISODES=2, HAQ_WARMUP=1, RS_TRIALS=2, DNAS_N=128,
             UNIFORM=(3, 4))
    g["CACHE"] = os.path.join(CACHE, "quick")


# ---------------------------------------------------------------------------
# data and baselines


def load_data():
    (x, y), (xt, yt) = tfcomp.data.load_fashion_mnist()
    return {"train": (x[:TRAIN_N], y[:TRAIN_N]), "ft": (x[:FT_N], y[:FT_N]),
            "cal": x[:CAL_N], "sens": (x[:SENS_N], y[:SENS_N]),
            "val": (x[VAL[0]:VAL[1]], y[VAL[0]:VAL[1]]),
            "test": (xt[:TEST_N], yt[:TEST_N]),
            "apps_train": (x[:APPS_TRAIN_N], y[:APPS_TRAIN_N])}


def pad32(x):
    """28x28 Fashion-MNIST zero-padded to keras.applications' 32x32."""
    return np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))


def model_data(data, arch):
    """The data dict as ``arch`` takes it (32x32 for ``apps``)."""
    if arch != "apps":
        return data
    out = {}
    for k, v in data.items():
        out[k] = (pad32(v[0]), v[1]) if isinstance(v, tuple) else pad32(v)
    out["train"] = out.pop("apps_train")
    return out


def make_model(arch):
    if arch == "resnet20":
        return tfcomp.zoo.resnet(depth=20)
    if arch == "mbv2":
        return tfcomp.zoo.mobilenet_v2(alpha=0.5)
    return keras.applications.MobileNetV2(
        input_shape=(32, 32, 1), alpha=1.0, weights=None, classes=10,
        classifier_activation=None)


def baseline(data, arch):
    """The trained float model (Adam 1e-3, BatchNorm re-estimated), trained
    once and then loaded from the cache."""
    n, ep = ((APPS_TRAIN_N, APPS_EPOCHS) if arch == "apps"
             else (TRAIN_N, TRAIN_EPOCHS))
    path = os.path.join(CACHE, f"{arch}_fmnist_{n}x{ep}_s{SEED}.weights.h5")
    keras.utils.set_random_seed(SEED)
    model = make_model(arch)
    info = {"path": path, "cached": os.path.exists(path)}
    t0 = time.time()
    if info["cached"]:
        model.load_weights(path)
    else:
        log(f"training the {arch} baseline ({ep} epochs on {n})")
        x, y = data["train"]
        compile_model(model, keras.optimizers.Adam(1e-3))
        model.fit(x, y, batch_size=128, epochs=ep, shuffle=True, verbose=0)
        recalibrate_batchnorm(model, x[:4096])
        os.makedirs(CACHE, exist_ok=True)
        with atomic_path(path, suffix=".weights.h5") as tmp:
            model.save_weights(tmp)
    info["train_seconds"] = time.time() - t0
    info["test_accuracy"] = _accuracy(model, *data["test"], batch_size=500)
    info["params"] = int(model.count_params())
    log(f"{arch} float test accuracy {info['test_accuracy']:.4f}")
    return model, info


# ---------------------------------------------------------------------------
# the common evaluation


class Evaluator:
    """The common fine-tune of a policy, once per seed, on one QAT model
    whose bit-widths are variables (``HAQHyperModel(reuse_graph=True)``:
    the same numbers as a fresh ``quantize_model`` model)."""

    def __init__(self, model, data):
        self.hm = HAQHyperModel(
            model, data["ft"], data["test"], resource="size", budget=1.0,
            bits="all", b_min=1, finetune_steps=FT_STEPS, batch_size=BATCH,
            calibration_data=data["cal"], seed=SEED)
        self.memo = {}

    def __call__(self, policy: dict) -> dict:
        hm = self.hm
        values = hm.space.values([tuple(policy.get(n, (8, 8)))
                                  for n in hm.layers])
        key = tuple(sorted(values.items()))
        if key in self.memo:  # the same policy found twice: same numbers
            return dict(self.memo[key], reused=True)
        t0 = time.time()
        accs = []
        q = hm.build(dict(values))  # quantized and calibrated once
        calibrated = q.get_weights()
        for i, s in enumerate(FT_SEEDS):
            if i:
                q.set_weights(calibrated)
            accs.append(hm.fit(dict(values), q, seed=s)["accuracy"])
        out = {"accuracy": float(np.mean(accs)),
                "std": float(np.std(accs)), "seeds": accs,
                "policy": {k: list(v) for k, v in hm.policy(values).items()},
                "eval_seconds": time.time() - t0}
        self.memo[key] = out
        return dict(out)


def uniform_policy(layers, b):
    p = {n: (b, b) for n in layers}
    p[layers[0]] = p[layers[-1]] = (8, 8)
    return p


def run_uniform(model, data, info):
    """Uniform 3/4/5-bit (and 2 when 3 loses < 2 points) after the common
    fine-tune; the budget width is the widest that loses >= 2 points."""
    ev = Evaluator(model, data)
    layers = ev.hm.layers
    out, fl = {}, info["test_accuracy"]
    for b in sorted(UNIFORM, reverse=True) + [2]:
        if b == 2 and fl - out[min(UNIFORM)]["accuracy"] >= LOSS_POINTS \
                / 100:
            break
        out[b] = ev(uniform_policy(layers, b))
        log(f"uniform {b}-bit: {out[b]['accuracy']:.4f} {out[b]['seeds']}")
    lossy = [b for b in out if fl - out[b]["accuracy"] >= LOSS_POINTS / 100]
    at = max(lossy) if lossy else min(out)
    return {"rows": out, "budget_bits": at, "float": fl}, ev


# ---------------------------------------------------------------------------
# one setting


def hardware_of(name, model):
    if name == "bismo":
        return BISMO()
    if name == "bitfusion":
        return BitFusion("edge")
    if name == "haq_table":
        return LatencyTable.from_haq(HAQ_NPY, model)
    return None


def native_widths(hw):
    bits = hw.distinct_bits() if hw is not None else range(2, 9)
    return [b for b in bits if 2 <= b <= 8]


def get_sensitivity(model, data, method, cache):
    """``(Sensitivity, seconds)``: the weights' table plus the input
    activations' (``kind="activations"``), summed per layer and width,
    since with a = w a width quantizes both. ``"hessian"``: HAWQ-V2's two
    Hessian terms (the same scale: expected loss increase); until issue
    #19 it was the weights' alone, and a = w gave 2-bit activations to
    layers whose weights were cheap (11% on MobileNetV2-tiny / BISMO).
    ``"distortion"``: the output distortion of each."""
    if method not in cache:
        t0 = time.time()
        kw = {"max_probes": MAX_PROBES, "min_probes": MAX_PROBES,
              "seed": SEED} if method == "hessian" else {}
        s = sensitivity(model, data["sens"], method=method, bits=SENS_BITS,
                        **kw)
        a = sensitivity(model, data["sens"], method=method, bits=SENS_BITS,
                        kind="activations", **kw)
        s = Sensitivity(s.layers, s.bits, s.table + a.table, method=method,
                        meta={"operands": "w + a",
                              "weights": s.table.tolist(),
                              "activations": a.table.tolist()})
        cache[method] = (s, time.time() - t0)
        log(f"{method} sensitivity: {cache[method][1]:.1f}s")
    return cache[method]


def run_tuner(tuner):
    t0 = time.time()
    tuner.search(verbose=0)
    dt = time.time() - t0
    trials = [t for t in tuner.oracle.trials.values() if t.score is not None]
    return tuner.get_best_policy(), dt, len(trials)


def run_setting(part, model, data, uni, ev, sens_cache, workdir,
                only=None, old=None):
    """One setting's rows; ``only`` (a set of row keys) reruns just those
    and keeps the others from ``old`` (the part's previous result)."""
    arch, resource, hw_name = SETTINGS[part]
    hw = hardware_of(hw_name, model)
    table = CostTable(model, resource, hw)
    at = uni["budget_bits"]
    budget = table.ratio(at)
    res = {"model": arch, "resource": resource, "hardware": hw_name,
           "budget_bits": at, "budget": budget, "rows": {},
           "native_widths": native_widths(hw),
           "uniform_cost": {b: table.ratio(b) for b in uni["rows"]},
           "dnas_candidates": [list(c) for c in DNAS_CANDIDATES],
           "warm_start_from": WARM_FROM}
    rows = res["rows"]
    if only is not None:
        keep = {k: v for k, v in (old or {}).items()
                if k not in ("rows", "warm_start_from")}
        res.update(keep)
        rows.update({k: v for k, v in (old or {}).get("rows", {}).items()
                     if k not in only})
        res["warm_start_from"] = WARM_FROM if "haq_warm" in only else \
            (old or {}).get("warm_start_from", "ilp_distortion")
    log(f"{part}: budget {budget:.4f} (uniform {at}-bit), native widths "
        f"{res['native_widths']}")

    def want(label):
        return only is None or label in only or label not in rows

    def add(label, policy, seconds, **extra):
        r = ev(policy)
        r.update(cost=table.ratio(dict(policy)), seconds=seconds, **extra)
        rows[label] = r
        log(f"{part} {label}: {r['accuracy']:.4f} {r['seeds']} cost "
            f"{r['cost']:.4f} ({seconds:.0f}s)")

    for method in ("hessian", "distortion"):
        if not want(f"ilp_{method}"):
            continue
        s, s_dt = get_sensitivity(model, data, method, sens_cache)
        t0 = time.time()
        alloc = allocate_bits(model, s, resource, hw, budget=budget)
        add(f"ilp_{method}", dict(alloc), s_dt + time.time() - t0,
            sensitivity_seconds=s_dt, allocation_seconds=time.time() - t0,
            min_budget=alloc.min_budget, operands="w + a")
    warm = {k: tuple(v) for k, v in rows[WARM_FROM]["policy"].items()}
    kw = {"hardware": hw, "resource": resource, "budget": min(1.0, budget),
          "finetune_steps": SEARCH_STEPS, "calibration_data": data["cal"],
          "batch_size": BATCH, "seed": SEED}
    decay = 0.1 ** (1 / max(1, HAQ_EPISODES - HAQ_WARMUP))
    if only is not None and "haq_warm" in only:
        rows.pop("haq_warm_best_reward", None)
    searches = [k for k in ("haq", "haq_warm", "random_search") if want(k)]
    if searches:
        # one search model for the searches (its QAT graph traced once)
        hm = HAQHyperModel(model, data["ft"], data["val"], **kw)
        t0 = time.time()  # tracing, not counted in the per-episode time
        hm.fit({}, hm.build({}))
        res["search_trace_seconds"] = time.time() - t0
    # the warm start searches the ILP's widths when the hardware's native
    # set lacks some of them (Bit Fusion: the ILP may pick 3, 5, 6 bits,
    # priced at their raw traffic; HAQ's native space would snap them up)
    used = {b for pair in warm.values() for b in pair} - {8}
    if "haq_warm" in searches:
        hm_warm = hm
        res.pop("haq_warm_widths", None)
        if not used <= set(hm.space.widths):
            hm_warm = HAQHyperModel(model, data["ft"], data["val"],
                             bits=sorted(SENS_BITS), **kw)
            hm_warm.fit({}, hm_warm.build({}))
            res["haq_warm_widths"] = list(hm_warm.space.widths)
    for label, extra in (("haq", {}), ("haq_warm", {"warm_start": warm})):
        if label not in searches:
            continue
        tuner = HAQTuner(hm_warm if label == "haq_warm" else hm,
                         max_trials=HAQ_EPISODES, warmup=HAQ_WARMUP,
                         sigma_decay=decay, seed=SEED, directory=workdir,
                         project_name=f"{part}_{label}", overwrite=True,
                         **extra)
        policy, dt, n = run_tuner(tuner)
        extra = {}
        if label == "haq_warm":
            raw = tuner.get_best_policy(margin=0)  # HAQ's best reward
            extra["kept_start"] = policy == dict(warm)
            if raw != policy:
                add("haq_warm_best_reward", raw, dt, episodes=n)
        add(label, policy, dt, episodes=n, per_episode_seconds=dt / n,
            extrapolated_100_seconds=100 * dt / n, **extra)
    if "random_search" in searches:
        tuner = HAQTuner(hm, oracle=kt.oracles.RandomSearchOracle(
            objective=kt.Objective("reward", "max"), max_trials=RS_TRIALS,
            seed=SEED), directory=workdir, project_name=f"{part}_rs",
            overwrite=True)
        policy, dt, n = run_tuner(tuner)
        add("random_search", policy, dt, trials=n)
    if want("dnas"):
        t0 = time.time()
        sn = dnas.build_supernet(model, candidates=DNAS_CANDIDATES,
                                 cost=table.cost, seed=SEED, hardware=hw)
        x, y = data["ft"]
        dnas.search(sn, x[:DNAS_N], y[:DNAS_N], epochs=DNAS_EPOCHS,
                    seed=SEED, verbose=0)
        limit = budget * table.full_cost - table.constant
        bits = dnas.derive(sn, budget=limit * (1 - 1e-9))
        add("dnas", bits, time.time() - t0)
    res["rows"] = {k: rows[k] for k in ROWS if k in rows}
    if hw_name == "bitfusion":
        res["mbv2_flatness"] = bitfusion_flatness(data)
    return res


def bitfusion_flatness(data):
    """Why not MobileNetV2 on Bit Fusion: its uniform 2/4-bit latency as a
    fraction of 8/8, and the depthwise layers' share of the 8/8 latency."""
    m = make_model("mbv2")
    t = CostTable(m, "latency", BitFusion("edge"))
    dw = sum(t.cost(n, 8, 8) for n in t.layers
             if t.specs[n].op == "depthwise")
    return {"uniform_2": t.ratio(2), "uniform_4": t.ratio(4),
            "depthwise_share_8bit": dw / t.full_cost}


def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return o


def setup_info():
    keys = ("TRAIN_N", "TRAIN_EPOCHS", "APPS_TRAIN_N", "APPS_EPOCHS", "BATCH", "FT_N",
            "FT_STEPS", "FT_SEEDS", "TEST_N", "CAL_N", "SENS_N",
            "MAX_PROBES", "SENS_BITS", "VAL", "SEARCH_STEPS", "HAQ_EPISODES",
            "HAQ_WARMUP", "RS_TRIALS", "DNAS_EPOCHS", "DNAS_N", "LOSS_POINTS")
    g = globals()
    return {k.lower(): g[k] for k in keys} | {
        "host": platform.node(), "python": sys.version.split()[0],
        "keras": keras.__version__}


def run_part(part, res, data, state, workdir, only=None):
    arch = part[len("uniform_"):] if part.startswith("uniform_") \
        else SETTINGS[part][0]
    if arch not in state:
        d = model_data(data, arch)
        model, info = baseline(d, arch)
        state[arch] = [model, d, info, None, None, {}]
    model, d, info, uni, ev, sens = state[arch]
    key = f"uniform_{arch}"
    if part == key or (key not in res["parts"] and uni is None):
        uni, ev = run_uniform(model, d, info)
        uni["baseline"] = info
        res["parts"][key] = _jsonable(uni)
    elif uni is None:
        uni = dict(res["parts"][key])
        uni["rows"] = {int(k): v for k, v in uni["rows"].items()}
        ev = Evaluator(model, d)
    state[arch][3:5] = [uni, ev]
    if part != key:
        old = res["parts"].get(part)
        out = run_setting(part, model, d, uni, ev, sens, workdir,
                          only=only if old else None, old=old)
        out["sensitivity_seconds"] = {k: v[1] for k, v in sens.items()}
        res["parts"][part] = _jsonable(out)


def main(argv=None) -> int:
    ap = parser(__doc__)
    ap.add_argument("--quick", action="store_true",
                    help="smoke test (tiny data, 2-3 trials)")
    ap.add_argument("--parts", default=None,
                    help=f"comma-separated parts of {PARTS}; parts not run "
                    "are kept from the existing json in --out")
    ap.add_argument("--rows", default=None,
                    help="comma-separated rows (e.g. haq_warm) to rerun in "
                    "the settings of --parts; the other rows are kept from "
                    "the existing json")
    ap.add_argument("--from-json", action="store_true",
                    help="only rewrite the .md from the json in --out")
    args = ap.parse_args(argv)
    if args.quick:
        quick_mode()
    jpath = os.path.join(args.out, f"{NAME}.json")
    res = read_json(jpath) if os.path.exists(jpath) else {}
    if args.from_json:
        write_results(args.out, NAME, res, to_markdown(res))
        return 0
    parts = [p for p in (args.parts or ",".join(
        QUICK_PARTS if args.quick else PARTS)).split(",") if p]
    bad = [p for p in parts if p not in PARTS]
    if bad:
        raise SystemExit(f"unknown parts {bad}; choose from {PARTS}")
    only = set(args.rows.split(",")) if args.rows else None
    bad = sorted((only or set()) - set(ROWS))
    if bad:
        raise SystemExit(f"unknown --rows {bad}; choose from {ROWS}")
    res["setup"] = _jsonable(setup_info())
    res.setdefault("parts", {})
    res.setdefault("part_seconds", {})
    data = load_data()
    workdir = os.path.join(CACHE, "runs")
    state = {}  # arch -> (model, data, uniform result, evaluator, sens)
    t_all = time.time()
    for part in parts:
        t0 = time.time()
        try:
            run_part(part, res, data, state, workdir, only=only)
        except Exception as e:  # keep the other parts; rerun this one
            import traceback

            traceback.print_exc()
            res.setdefault("errors", {})[part] = f"{type(e).__name__}: {e}"
            log(f"part {part} FAILED: {e}")
        else:
            res.get("errors", {}).pop(part, None)
        if only is None:
            res["part_seconds"][part] = time.time() - t0
        else:  # the part's own time stays that of its full run
            res.setdefault("rows_rerun", {})[part] = {
                "rows": sorted(only), "seconds": time.time() - t0}
        res["wall_seconds"] = time.time() - t_all
        write_results(args.out, NAME, _jsonable(res),
                      to_markdown(_jsonable(res)))
        log(f"part {part} done in {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
