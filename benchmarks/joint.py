"""Joint pruning + quantization vs uniform and sequential (Fashion-MNIST).

All rows at equal hardware cost (one latency budget).

Per setting (a model, a hardware model, a latency budget as a fraction of
the dense model's 8/8 latency), every row is a point (kept channels per
group, pruned with AMC's per-layer step: L1 selection + least-squares
refit on ``CAL_N`` training images, and ``(w, a)`` bits per layer on the
hardware's native widths, first / last layer 8/8) that meets the budget;
every point gets the same quantization-aware fine-tune (``FT_STEPS`` SGD
batches of ``BATCH`` from the first ``FT_N`` training images, i.e. one
epoch, learning rate ``FT_LR`` annealed to 0 by a cosine, momentum 0.9)
with the data orders ``FT_SEEDS`` and is scored on the first ``TEST_N``
test images (mean, spread, per seed). Until session 15 it was 16 batches
at a constant 1e-3 from 1024 images: on ResNet-20 at BISMO 25% the three
rows' points (a few groups apart) then spread 0.7-4.3 points over data
orders and the ranking between rows was noise; one cosine epoch: 0.2-1.0
(``tfcomp._finetune.short_finetune`` says why the rate stays at 1e-3:
the QAT model has its BatchNorm folded in and diverged at 3e-3).
Candidates are chosen (``--selection finetune``) after ``SELECT_STEPS``
batches of the same schedule, one seed, on the held-out ``VAL`` images.

* uniform: every group at one keep ratio (``RATIOS`` and 1.0) x one
  uniform width; of the grid points within the budget, the ``UNIFORM_K``
  most expensive are fine-tuned and the best (mean test accuracy) is
  reported (best-of-K on test: favours this baseline);
* sequential, prune first: channels minimising the pruning sensitivity
  with the model at 8/8 within a share ``s`` of the dense cost, then bits
  (``allocate_bits``' program on the pruned geometry) for the budget;
  ``s`` from ``SHARES``, chosen by the summed sensitivity (per objective
  and pruning weight of ``PRUNE_WEIGHTS``, then the best candidate on the
  held-out ``VAL`` images, as the joint allocator chooses: ``--selection``
  agreement or accuracy after the common fine-tune, one seed);
* sequential, bits first: bits on the dense model within a share ``s``,
  then channels given those bits for the budget; ``s`` likewise;
* joint allocator: :func:`tfcomp.joint.compress` (the exact program per
  objective and pruning weight, the best-scoring point; the alternating
  solver's gap at weight 1 is recorded);
* joint search: :class:`tfcomp.tuners.JointTuner` (DDPG), warm-started
  from the allocator (its point is the first episode; ``--local-episodes
  N``: the next N are scripted around it), ``SEARCH_TRIALS`` episodes,
  rewards after ``SEARCH_STEPS`` batches of the common fine-tune's
  schedule (one seed) on the held-out ``VAL`` images.

All sensitivities (``--objective distortion``: pruning output MSE after the
refit per group and keep ratio, MCT output distortion of the weights plus
the input activations per layer and width, a = w; ``loss``: the loss
increase after the refit and HAWQ-V2's Hessian terms; ``both``: the two
pools together) are measured once per model on ``SENS_N`` training images
and shared by the sequential and joint rows. Settings: BISMO (8x256x8) at
25% and 15% for ResNet-20 and MobileNetV2-tiny (alpha 0.5); Bit Fusion
(edge) for ResNet-20 only (HAQ's released table has no channel axis;
MobileNetV2 is depthwise bound on Bit Fusion), at 75% and 70% instead of the
issue's 25% / 15%: every ResNet-20 point costs at least 0.66 of the dense
8/8 Bit Fusion latency (0.63 with ``out_bits="consumer"``; every group at
25% of its channels, every layer at 2 bits, first / last 8/8), so those
budgets are unreachable; uniform 4-bit costs 0.78.

Deviations (CPU scale, 2 shared cores): baselines trained ``TRAIN_EPOCHS``
epochs on ``TRAIN_N`` images (cached under ``~/.cache/tfcomp/joint``); the
sequential rows use the exact programs on the same sensitivities instead
of AMC's / HAQ's DDPG searches (an AMC run per share would take hours
here; the issue's sequential baselines are "AMC to a MACs share, then
bits" and the reverse; on BISMO 8/8 latency tracks MACs); the joint search
runs ``SEARCH_TRIALS`` episodes (HAQ's paper 600); the fine-tune is a few
batches, not epochs.

Usage (writes benchmarks/results/joint.{json,md}):
    nice .venv/bin/python benchmarks/joint.py            # about 2 h
    nice .venv/bin/python benchmarks/joint.py --parts bismo_resnet20_25
    .venv/bin/python benchmarks/joint.py --quick --out /tmp/joint  # < 2 min
"""

from __future__ import annotations

import os
import platform
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
from _common import accuracy as _accuracy
from _common import compile_model, log, parser, read_json, write_results
from _joint_report import to_markdown

import tfcomp
from tfcomp._finetune import data_order
from tfcomp._io import atomic_path
from tfcomp.hardware import BISMO, BitFusion
from tfcomp.joint import (
    apply_keep,
    compress,
    joint_problem,
    measure_quant_sensitivity,
)
from tfcomp.joint.allocator import OBJECTIVES
from tfcomp.joint.select import (
    DEFAULT_PRUNE_WEIGHTS,
    AgreementScore,
    FinetuneScore,
    select_point,
)
from tfcomp.pruning import recalibrate_batchnorm
from tfcomp.pruning.prune_sensitivity import sensitivity as prune_sens
from tfcomp.quantization import calibrate, quantize_model
from tfcomp.tuners.joint import JointHyperModel, JointTuner

NAME = "joint"
CACHE = os.path.join(os.path.expanduser("~"), ".cache", "tfcomp", NAME)

# ---- CPU-scale settings (deviations: module docstring) -------------------
SEED = 0
TRAIN_N, TRAIN_EPOCHS = 8000, 2
BATCH = 64
FT_N, FT_STEPS = 8000, 125  # one epoch of the baseline's images
FT_LR = 1e-3  # cosine-annealed to 0 (module docstring)
SELECT_STEPS = FT_STEPS  # fine-tune batches of the candidate selection
FT_SEEDS = (0, 1, 2)
TEST_N = 3000
CAL_N = 256
SENS_N = 128
# held-out training images the candidates are chosen on (and the search's
# rewards): 3000, as TEST_N; with 600 (standard error ~1.9 points) the
# fine-tune selection picked among candidates 3 images apart (issue #20)
VAL = (50000, 53000)
RATIOS = (0.25, 0.5, 0.75)
SHARES = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
UNIFORM_K = 3
SEARCH_TRIALS, SEARCH_WARMUP, SEARCH_STEPS = 12, 4, FT_STEPS
SEARCH_LOCAL = 0  # --local-episodes: scripted episodes around the warm start
RESNET_DEPTH = 20              # the smoke test uses ResNet-8
ALTERNATING = True             # also run the alternating solver (its gap)
OBJECTIVE = "distortion"  # --objective (distortion, loss or both)
SELECTION = "agreement"  # --selection (agreement or finetune)
SEARCH = True  # --no-search skips the DDPG row
PRUNE_WEIGHTS = DEFAULT_PRUNE_WEIGHTS  # balances tried (tfcomp.joint.select)
SETTINGS = {  # part: (model, hardware, budget)
    "bismo_resnet20_25": ("resnet20", "bismo", 0.25),
    "bismo_resnet20_15": ("resnet20", "bismo", 0.15),
    "bismo_mbv2_25": ("mbv2", "bismo", 0.25),
    "bismo_mbv2_15": ("mbv2", "bismo", 0.15),
    # the issue's 25% / 15% lie below ResNet-20's reachable minimum on Bit
    # Fusion (0.66 of dense 8/8: see the module docstring)
    "bitfusion_resnet20_75": ("resnet20", "bitfusion", 0.75),
    "bitfusion_resnet20_70": ("resnet20", "bitfusion", 0.70),
}
PARTS = tuple(SETTINGS)
QUICK_PARTS = ("bismo_resnet20_25",)
def quick_mode():
    """Shrinks every knob for the smoke test."""
    g = globals()
    g.update(TRAIN_N=512, TRAIN_EPOCHS=1, FT_N=128, FT_STEPS=1, SELECT_STEPS=1,
             FT_SEEDS=(0,), TEST_N=256, CAL_N=32, SENS_N=32,
             VAL=(50000, 50064), UNIFORM_K=1, SEARCH_TRIALS=1,
             SEARCH_WARMUP=1, SEARCH_STEPS=1, SHARES=(0.5, 1.0),
             RESNET_DEPTH=8, ALTERNATING=False, PRUNE_WEIGHTS=(1.0,))
    g["CACHE"] = os.path.join(CACHE, "quick")


# ---------------------------------------------------------------------------
# data, baselines, the common fine-tune


def load_data():
    (x, y), (xt, yt) = tfcomp.data.load_fashion_mnist()
    return {"train": (x[:TRAIN_N], y[:TRAIN_N]), "ft": (x[:FT_N], y[:FT_N]),
            "cal": x[:CAL_N], "sens": (x[:SENS_N], y[:SENS_N]),
            "val": (x[VAL[0]:VAL[1]], y[VAL[0]:VAL[1]]),
            "test": (xt[:TEST_N], yt[:TEST_N])}


def baseline(data, arch):
    """The trained float model (Adam 1e-3), trained once, then cached."""
    tag = f"resnet{RESNET_DEPTH}" if arch == "resnet20" else arch
    path = os.path.join(CACHE, f"{tag}_fmnist_{TRAIN_N}x{TRAIN_EPOCHS}_"
                        f"s{SEED}.weights.h5")
    keras.utils.set_random_seed(SEED)
    model = tfcomp.zoo.resnet(depth=RESNET_DEPTH) if arch == "resnet20" \
        else \
        tfcomp.zoo.mobilenet_v2(alpha=0.5)
    t0 = time.time()
    cached = os.path.exists(path)
    if cached:
        model.load_weights(path)
    else:
        log(f"training the {arch} baseline ({TRAIN_EPOCHS} epochs)")
        x, y = data["train"]
        compile_model(model, keras.optimizers.Adam(1e-3))
        model.fit(x, y, batch_size=128, epochs=TRAIN_EPOCHS, verbose=0)
        recalibrate_batchnorm(model, x[:4096])
        os.makedirs(CACHE, exist_ok=True)
        with atomic_path(path, suffix=".weights.h5") as tmp:
            model.save_weights(tmp)
    acc = _accuracy(model, *data["test"], batch_size=500)
    log(f"{arch} float test accuracy {acc:.4f}")
    return model, {"path": path, "cached": cached, "test_accuracy": acc,
                   "train_seconds": time.time() - t0}


def evaluate(small, bits, data) -> dict:
    """The common fine-tune of a (pruned, refit) model at ``bits``, once
    per seed from the same calibrated QAT weights."""
    t0 = time.time()
    q = quantize_model(small, bits=bits)
    calibrate(q, data["cal"])
    start = q.get_weights()
    compile_model(q, keras.optimizers.SGD(
        keras.optimizers.schedules.CosineDecay(FT_LR, FT_STEPS),
        momentum=0.9))
    # a fresh optimizer per seed: its iteration, learning rate and momentum
    # slots as built (until issue #20's rerun every variable was zeroed,
    # the learning rate included, so no row was fine-tuned at all: only
    # the BatchNorm statistics moved)
    q.optimizer.build(q.trainable_variables)
    fresh = [v.numpy() for v in q.optimizer.variables]
    xt, yt = data["ft"]
    accs = []
    for s in FT_SEEDS:
        q.set_weights(start)
        for v, value in zip(q.optimizer.variables, fresh):
            v.assign(value)
        idx = data_order(len(xt), FT_STEPS, BATCH, 1, s)
        q.fit(xt[idx], yt[idx], batch_size=BATCH, epochs=1, shuffle=False,
              verbose=0)
        accs.append(_accuracy(q, *data["test"], batch_size=500))
    return {"accuracy": float(np.mean(accs)), "std": float(np.std(accs)),
            "seeds": accs, "eval_seconds": time.time() - t0}


# ---------------------------------------------------------------------------
# the rows


def point(prob, opt, pick):
    keep = {g: int(k) for g, k in zip(prob.space.group_ids,
                                      prob.counts(opt))}
    return keep, prob.bits(pick)


def uniform_rows(prob, limit):
    """Grid points within the budget, most expensive first."""
    free = [i for i, ps in enumerate(prob.pairs) if len(ps) > 1]
    widths = range(len(prob.pairs[free[0]])) if free else [0]
    out = []
    for r in (*RATIOS, 1.0):
        opt = [int(np.argmin([abs(c / o[-1] - r) for c in o]))
               for o in prob.options]
        for k in widths:
            pick = [k if len(ps) > 1 else 0 for ps in prob.pairs]
            cost = prob.cost(opt, pick)
            if cost <= limit:
                w = prob.pairs[free[0]][k] if free else (8, 8)
                out.append((cost, r, w, opt, pick))
    return sorted(out, key=lambda t: -t[0])


def sequential(model, probs, limit, first, x, score):
    """Two-step point: per objective (``probs``) and pruning weight of
    ``PRUNE_WEIGHTS`` the share of ``SHARES`` with the smallest weighted
    sum, then among those the point ``score`` ranks best (the joint
    allocator's own pool and selection, so both get the same balance)."""
    runs = []
    for name, prob in probs.items():
        runs += _sequential_runs(prob, limit, first, name)
    if not runs:
        return None
    space = next(iter(probs.values())).space
    for r in runs:
        r["keep"], r["bits"] = point(probs[r["objective_name"]], r["opt"],
                                     r["pick"])
        r["cost"] = space.ratio(r["keep"], r["bits"])
    if len({(tuple(sorted(r["keep"].items())),
             tuple(sorted(r["bits"].items()))) for r in runs}) > 1:
        return select_point(model, space.graph, runs, x, score, seed=SEED)[0]
    return runs[0]


def _sequential_runs(prob, limit, first, name):
    full = prob.space.full_cost
    dense_opt = [len(o) - 1 for o in prob.options]
    eight = [ps.index((8, 8)) if (8, 8) in ps else len(ps) - 1
             for ps in prob.pairs]
    runs = []
    for lam in PRUNE_WEIGHTS:
        wp = prob.weighted(lam)
        best = None
        for s in SHARES:
            if first == "prune":
                a = wp.solve(s * full, pair_allowed=[[p] for p in eight])
                b = None if a is None else wp.solve(
                    limit, opt_allowed=[[o] for o in a[0]])
            else:
                a = wp.solve(max(s * full, limit),
                             opt_allowed=[[o] for o in dense_opt])
                b = None if a is None else wp.solve(
                    limit, pair_allowed=[[p] for p in a[1]])
            if b is None:
                continue
            value = wp.objective(b[0], b[1])[0]
            if best is None or value < best[0]:
                best = (value, s, b[0], b[1])
        if best is not None:
            runs.append({"prune_weight": lam, "share": best[1],
                         "opt": best[2], "pick": best[3],
                         "objective_name": name,
                         "objective": prob.objective(best[2], best[3])[0]})
    return runs


def measure(model, data):
    """``({objective: (pruning, quantization sensitivity)}, seconds)`` for
    the objectives ``OBJECTIVE`` names."""
    names = list(OBJECTIVES) if OBJECTIVE == "both" else [OBJECTIVE]
    sens, secs = {}, {"pruning": 0.0, "quantization": 0.0}
    for name in names:
        pm, qm = OBJECTIVES[name]
        t1 = time.time()
        ps = prune_sens(model, data["sens"], RATIOS, pm, seed=SEED,
                        num_samples=SENS_N)
        t2 = time.time()
        qs = measure_quant_sensitivity(model, data["sens"], qm,
                                       bits=(2, 3, 4, 5, 6, 7, 8),
                                       num_samples=SENS_N, seed=SEED)
        secs["pruning"] += t2 - t1
        secs["quantization"] += time.time() - t2
        sens[name] = (ps, qs)
    return sens, secs


def run_setting(part, model, data, info, sens):
    arch, hw_name, budget = SETTINGS[part]
    hw = BISMO() if hw_name == "bismo" else BitFusion("edge")
    bits = [b for b in hw.distinct_bits() if 2 <= b <= 8]
    probs = {name: joint_problem(model, ps, qs, hardware=hw, bits=bits)
             for name, (ps, qs) in sens.items()}
    prob = next(iter(probs.values()))
    full = prob.space.full_cost
    limit = budget * full * (1 + 1e-9)
    score = (FinetuneScore(data["ft"], data["val"], steps=SELECT_STEPS,
                           batch_size=BATCH, learning_rate=FT_LR,
                           seed=SEED, decay="cosine")
             if SELECTION == "finetune" else AgreementScore(data["val"][0]))
    out = {"arch": arch, "hardware": hw_name, "budget": budget,
           "float": info["test_accuracy"], "widths": bits, "rows": {},
           "selection": {"prune_weights": list(PRUNE_WEIGHTS),
                         "on": f"{len(data['val'][0])} held-out images",
                         "how": SELECTION}}
    rows = out["rows"]

    def record(name, keep, pol, seconds, extra=None):
        t0 = time.time()
        _, small = apply_keep(model, keep, data["cal"], seed=SEED,
                              num_samples=CAL_N)
        refit = time.time() - t0
        r = evaluate(small, pol, data)
        r.update(cost=prob.space.ratio(keep, pol), seconds=seconds + refit,
                 keep=keep, bits={k: list(v) for k, v in pol.items()},
                 **(extra or {}))
        rows[name] = r
        log(f"{part} {name}: {r['accuracy']:.4f} at cost {r['cost']:.4f}")

    t0 = time.time()
    try:
        exact = compress(model, data["cal"], hardware=hw, budget=budget,
                         bits=bits, prune_sensitivity={
                             k: v[0] for k, v in sens.items()},
                         quant_sensitivity={k: v[1] for k, v in sens.items()},
                         prune_weights=PRUNE_WEIGHTS,
                         validation_data=data["val"], seed=SEED,
                         objective=OBJECTIVE, selection=SELECTION,
                         finetune_data=data["ft"], finetune_steps=SELECT_STEPS)
    except ValueError as e:
        out["unreachable"] = str(e)
        log(f"{part}: {e}")
        return out
    exact_s = time.time() - t0
    if ALTERNATING:
        t0 = time.time()
        first = next(iter(sens))
        alt = compress(model, data["cal"], hardware=hw, budget=budget,
                       bits=bits, prune_sensitivity=sens[first][0],
                       quant_sensitivity=sens[first][1], objective=first,
                       refit=False, method="alternating", check_gap=True,
                       prune_weights=(1.0,))
        out["gap"] = alt.gap
        out["alternating_seconds"] = time.time() - t0
    record("joint_allocator", exact.keep, exact.bits, exact_s,
           {"objective": exact.sensitivity,
            "prune_weight": exact.meta["prune_weight"],
            "chosen_objective": exact.meta["objective"],
            "candidates": exact.meta["candidates"]})
    t0 = time.time()
    grid = uniform_rows(prob, limit)[:UNIFORM_K]
    best = None
    for _cost, r, w, opt, pick in grid:
        keep, pol = point(prob, opt, pick)
        name = f"uniform_r{r:g}_w{w[0]}"
        record(name, keep, pol, 0.0, {"ratio": r, "width": list(w)})
        if best is None or rows[name]["accuracy"] > rows[best]["accuracy"]:
            best = name
    if best is not None:
        rows["uniform"] = dict(rows[best], picked=best)
    for name, first in (("prune_first", "prune"), ("bits_first", "bits")):
        t0 = time.time()
        seq = sequential(model, probs, limit, first, data["cal"], score)
        if seq is not None:
            record(name, seq["keep"], seq["bits"], time.time() - t0,
                   {k: seq[k] for k in ("share", "objective",
                                        "prune_weight", "agreement",
                                        "score", "objective_name")
                    if k in seq})
    out["objective"] = OBJECTIVE
    if not SEARCH:
        out["targets"] = targets(rows)
        return out
    t0 = time.time()
    hm = JointHyperModel(model, data["ft"], data["val"], hardware=hw,
                         budget=budget, bits=bits, finetune_epochs=1,
                         finetune_steps=SEARCH_STEPS, batch_size=BATCH,
                         learning_rate=FT_LR, decay="cosine",
                         max_images=CAL_N, seed=SEED)
    tuner = JointTuner(hm, max_trials=SEARCH_TRIALS, seed=SEED,
                       warmup=SEARCH_WARMUP, warm_start=exact,
                       local_episodes=SEARCH_LOCAL,
                       directory=os.path.join(CACHE, "runs"),
                       project_name=part, overwrite=True)
    tuner.search(verbose=0)
    hp = tuner.oracle.get_best_trials(1)[0].hyperparameters
    keep, pol = hm.point(hp)
    trials = tuner.oracle.trials
    record("joint_search", keep, pol, time.time() - t0,
           {"trials": SEARCH_TRIALS, "warmup": SEARCH_WARMUP,
            "episode_accuracies": [
                trials[k].metrics.get_last_value("accuracy")
                if trials[k].metrics.exists("accuracy") else None
                for k in sorted(trials)]})
    out["targets"] = targets(rows)
    return out


def targets(rows) -> dict:
    j = max((rows[k]["accuracy"] for k in ("joint_allocator",
                                           "joint_search") if k in rows),
            default=None)
    seq = max((rows[k]["accuracy"] for k in ("prune_first", "bits_first")
               if k in rows), default=None)
    uni = rows.get("uniform", {}).get("accuracy")
    out = {}
    if j is not None and seq is not None:
        out["vs_sequential_points"] = 100 * (j - seq)
        out["vs_sequential_met"] = 100 * (j - seq) >= 0.5
    if j is not None and uni is not None:
        out["vs_uniform_points"] = 100 * (j - uni)
        out["vs_uniform_met"] = 100 * (j - uni) >= 1.0
    return out


def setup_info():
    keys = ("TRAIN_N", "TRAIN_EPOCHS", "BATCH", "FT_N", "FT_STEPS", "FT_LR",
            "SELECT_STEPS",
            "FT_SEEDS", "TEST_N", "CAL_N", "SENS_N", "VAL", "RATIOS",
            "SHARES", "UNIFORM_K", "SEARCH_TRIALS", "SEARCH_WARMUP",
            "SEARCH_STEPS", "SEARCH_LOCAL")
    g = globals()
    return {k.lower(): g[k] for k in keys} | {
        "host": platform.node(), "python": sys.version.split()[0],
        "keras": keras.__version__}


def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, (np.floating, np.integer, np.bool_)):
        return o.item()
    return o


def main(argv=None) -> int:
    ap = parser(__doc__)
    ap.add_argument("--quick", action="store_true",
                    help="smoke test (tiny data, one part, one trial)")
    ap.add_argument("--parts", default=None,
                    help=f"comma-separated parts of {PARTS}; others are "
                    "kept from the existing json in --out")
    ap.add_argument("--from-json", action="store_true",
                    help="only rewrite the .md from the json in --out")
    ap.add_argument("--objective", choices=("distortion", "loss", "both"),
                    default="distortion",
                    help="sensitivities: output distortion (pruning: MSE "
                    "after the refit), loss (pruning: loss increase; "
                    "quantization: HAWQ-V2 Hessian, weights + activations) "
                    "or both (one candidate pool)")
    ap.add_argument("--selection", choices=("agreement", "finetune"),
                    default="agreement",
                    help="how the candidates are chosen on the held-out "
                    "images: top-1 agreement with the float model, or "
                    "accuracy after the common fine-tune (one seed)")
    ap.add_argument("--local-episodes", type=int, default=0,
                    help="joint search: episodes around the allocator's "
                    "point after it (JointOracle local_episodes)")
    ap.add_argument("--search-trials", type=int, default=None,
                    help="joint search: episodes (default 12; HAQ's paper "
                    "600)")
    ap.add_argument("--search-warmup", type=int, default=None,
                    help="joint search: random warm-up episodes (default 4)")
    ap.add_argument("--no-search", action="store_true",
                    help="skip the DDPG joint search row (experiments)")
    args = ap.parse_args(argv)
    if args.quick:
        quick_mode()
    globals().update(OBJECTIVE=args.objective, SEARCH=not args.no_search,
                     SELECTION=args.selection,
                     SEARCH_LOCAL=args.local_episodes)
    for key, least in (("search_trials", 1), ("search_warmup", 0)):
        value = getattr(args, key)
        if value is not None and value < least:
            raise SystemExit(f"--{key.replace('_', '-')} must be >= {least}."
                             f" Received: {value}")
        if value is not None:  # the row records it ("trials", "warmup")
            globals()[key.upper()] = value
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
    res["setup"] = _jsonable(setup_info())
    res.setdefault("parts", {})
    res.setdefault("part_seconds", {})
    data = load_data()
    models, t_all = {}, time.time()
    for part in parts:
        t0 = time.time()
        arch = SETTINGS[part][0]
        try:
            if arch not in models:
                model, info = baseline(data, arch)
                sens, info["sensitivity_seconds"] = measure(model, data)
                models[arch] = (model, info, sens)
            model, info, sens = models[arch]
            out = run_setting(part, model, data, info, sens)
            out["baseline"] = info
            res["parts"][part] = _jsonable(out)
        except Exception as e:  # keep the other parts; rerun this one
            import traceback

            traceback.print_exc()
            res.setdefault("errors", {})[part] = f"{type(e).__name__}: {e}"
            log(f"part {part} FAILED: {e}")
        else:
            res.get("errors", {}).pop(part, None)
        res["part_seconds"][part] = time.time() - t0
        res["wall_seconds"] = time.time() - t_all
        write_results(args.out, NAME, _jsonable(res),
                      to_markdown(_jsonable(res)))
        log(f"part {part} done in {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
