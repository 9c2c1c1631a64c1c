"""AMC / HAQ search benchmark on Fashion-MNIST (one run, CPU scale).

Three experiments on a zoo ResNet-20 trained once on Fashion-MNIST (the
trained weights are cached under ``~/.cache/tfcomp/search``):

1. **Channel pruning at 50 % MACs.** AMC (DDPG, ``AMCTuner``) against
   uniform pruning (every searched group at the same preserve ratio, the
   largest that fits the budget) and keras-tuner's ``RandomSearch`` and
   ``BayesianOptimization`` oracles over the same ``AMCHyperModel`` space
   (same budget wall, L1 channel selection and least-squares refit, same
   reward: validation accuracy without fine-tuning). The best model of each
   is pruned, evaluated on the test set, fine-tuned with the same short
   schedule and evaluated again.
2. **Latency-targeted AMC.** A latency table is measured on this host
   (``measure_tflite_table``: single-layer float TFLite models, channel
   counts on multiples of 8, i.e. every count AMC visits with
   ``round_to=8``); AMC searches at 50 % of the table's dense latency. Its
   model, the MACs-targeted AMC model, uniform pruning and the dense model
   are then converted to TFLite and timed in the same interleaved rounds.
3. **HAQ vs uniform bits.** The uniform 4/5/6-bit policies (first layer
   weights and last layer at 8, as HAQ fixes them), costed on Bit Fusion
   (edge) and BISMO, and HAQ (``HAQTuner``) searched for each accelerator
   at the latency of uniform 4-bit there; every policy gets the same short
   quantization-aware fine-tune. The same again on a zoo MobileNetV2-tiny
   (parts ``mbv2``, ``mbv2_rescore``, ``mbv2_long``), and at the BISMO
   latency of uniform 5-bit (``mbv2_at5``, ``mbv2_at5_long``).

Deviations from the papers (CPU scale, stated in the report): few episodes
(AMC paper: 800 with 100 warm-up; HAQ: 600 with 20, here with the noise
decay compressed to the episode budget), AMC reward on a 3000-image
validation split, HAQ reward on ``HAQ_VAL`` (10k held-out images: on 3000
one evaluation moved by about half a point, more than most single-layer
bit changes) after one epoch of ``FT_N`` images (``HAQ_STEPS`` batches)
instead of one epoch of ImageNet, a baseline trained for a few epochs on
a subset. Pruned models
get the same short fine-tune followed by BatchNorm recalibration, repeated
over ``FT_SEEDS`` data orders and averaged.

Usage (writes benchmarks/results/search.{md,json}; about 45 min on 2
    shared cores with the baseline cached, +8 min to train it):
    nice .venv/bin/python benchmarks/search.py
    # one part again, keeping the others from search.json:
    nice .venv/bin/python benchmarks/search.py --parts haq_long
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
from _common import (
    compile_model,
    finetune,
    log,
    parser,
    read_json,
    write_results,
    write_text,
)

import tfcomp
from tfcomp._io import atomic_path
from tfcomp.hardware import (
    BISMO,
    BitFusion,
    device_profiler,
    measure_tflite_table,
)
from tfcomp.hardware.tflite_profiler import layer_to_tflite
from tfcomp.tuners.amc import AMCHyperModel, AMCTuner
from tfcomp.tuners.haq import HAQHyperModel, HAQTuner

CACHE = os.path.join(os.path.expanduser("~"), ".cache", "tfcomp", "search")

# ---- CPU-scale settings (the paper defaults are in the docstring) -------
SEED = 0
TRAIN_N = 20000          # baseline: first 20k training images
TRAIN_EPOCHS = 4
VAL = (50000, 53000)     # held-out training images: AMC search rewards
HAQ_VAL = (50000, 60000)  # held-out training images: HAQ search rewards
CAL_N = 128              # AMC least-squares calibration images
FT_N = 5000              # AMC fine-tune: 1 epoch on these images
FT_SEEDS = (0, 1, 2)     # the fine-tune is repeated (data order) and averaged
TEST_N = 10000           # final accuracies: the whole test set
BUDGET = 0.5
AMC_EPISODES, AMC_WARMUP = 60, 15
RS_TRIALS = BO_TRIALS = 30
BO_INITIAL = 10
LAT_EPISODES, LAT_WARMUP = 40, 10
LAT_FRACTIONS = tuple(k / 8 for k in range(1, 9))
HAQ_EPISODES, HAQ_WARMUP = 100, 20   # warm-up as the paper
# exploration noise 0.5 * decay^(episode - warm-up) reaches 0.05 at the last
# episode (the paper decays by 0.99 over 580 episodes, to ~0.0015)
HAQ_SIGMA_DECAY = 0.1 ** (1 / (HAQ_EPISODES - HAQ_WARMUP))
HAQ_STEPS = 40           # fine-tune batches (of 128) per HAQ trial: one
#                          epoch of the FT_N images, as the paper
HAQ_WIDTHS = (4, 5, 6)
HAQ_AT = 4               # HAQ searches at the latency of uniform 4-bit
HAQ_LONG_STEPS = 300     # the longer QAT fine-tune of the found policies
MBV2_ALPHA = 0.5         # HAQ on the paper's own model: MobileNetV2-tiny
MBV2_EPISODES, MBV2_WARMUP = 100, 20
PARTS = ("pruning", "haq", "haq_long", "mbv2", "mbv2_rescore",
         "mbv2_long", "mbv2_at5", "mbv2_at5_long")
AT5_HARDWARE = ("bismo",)  # on Bit Fusion uniform 5-bit costs as 8/8
RESCORE_TOP_K = 5        # HAQTuner.rescore: best trials re-evaluated


def accuracy(model, x, y) -> float:
    """Top-1 accuracy, predicted in batches of 500."""
    return _accuracy(model, x, y, batch_size=500)


# ---------------------------------------------------------------------------
# data and baseline


def load_data():
    (x, y), (xt, yt) = tfcomp.data.load_fashion_mnist()
    return {
        "pool": (x, y),  # all 60k training images: held-out splits
        "train": (x[:TRAIN_N], y[:TRAIN_N]),
        "val": (x[VAL[0]:VAL[1]], y[VAL[0]:VAL[1]]),
        "cal": x[:CAL_N],
        "ft": (x[:FT_N], y[:FT_N]),
        "test": (xt[:TEST_N], yt[:TEST_N]),
    }


def baseline(data, retrain: bool = False, arch: str = "resnet20"):
    """The trained ResNet-20 or MobileNetV2 (``arch="mobilenet_v2"``,
    ``MBV2_ALPHA``), trained once, then loaded from the cache."""
    os.makedirs(CACHE, exist_ok=True)
    tag = "resnet20" if arch == "resnet20" else f"mbv2_{MBV2_ALPHA}"
    path = os.path.join(CACHE, f"{tag}_fmnist_{TRAIN_N}x{TRAIN_EPOCHS}"
                        f"_s{SEED}.weights.h5")
    keras.utils.set_random_seed(SEED)
    model = (tfcomp.zoo.resnet(depth=20) if arch == "resnet20"
             else tfcomp.zoo.mobilenet_v2(alpha=MBV2_ALPHA))
    info = {"path": path, "cached": os.path.exists(path) and not retrain}
    if info["cached"]:
        model.load_weights(path)
        info["train_seconds"] = 0.0
    else:
        log(f"training the {arch} baseline ({TRAIN_EPOCHS} epochs on "
            f"{TRAIN_N})")
        t0 = time.time()
        x, y = data["train"]
        compile_model(model, keras.optimizers.Adam(1e-3))
        model.fit(x, y, batch_size=128, epochs=TRAIN_EPOCHS, shuffle=True,
                  verbose=2)
        with atomic_path(path, suffix=".weights.h5") as tmp:
            model.save_weights(tmp)
        info["train_seconds"] = time.time() - t0
    info["test_accuracy"] = accuracy(model, *data["test"])
    info["val_accuracy"] = accuracy(model, *data["val"])
    info["macs"] = tfcomp.profile(model).macs
    info["params"] = int(model.count_params())
    log(f"{arch} baseline test accuracy {info['test_accuracy']:.4f}")
    return model, info


# ---------------------------------------------------------------------------
# 1-2: AMC


def uniform_values(hm):
    """Largest common preserve ratio whose counts fit the budget.

    ``hm`` should round to 1 channel: with AMC's ``round_to=8`` a
    ResNet-20's 16-channel groups can only keep 8 or 16, and the largest
    uniform ratio under 50 % MACs would be 0.5 (25 % MACs).

    Returns ``({hp name: ratio}, ratio)``.
    """
    space = hm.space
    limit = space.budget_cost * (1 + 1e-9)
    for r in np.arange(1.0, hm.lbound - 1e-9, -0.0025):
        counts = np.array([space.count(j, r)
                           for j in range(len(space.names))])
        if space.cost(counts) <= limit:
            return {n: float(r) for n in space.names}, float(r)
    return {n: hm.lbound for n in space.names}, hm.lbound


def run_tuner(tuner, label):
    t0 = time.time()
    tuner.search(verbose=0)
    dt = time.time() - t0
    best = tuner.oracle.get_best_trials(1)[0]
    rewards = [t.score for t in tuner.oracle.trials.values()
               if t.score is not None]
    log(f"{label}: {len(rewards)} trials in {dt:.0f}s, best reward "
        f"{best.score:.4f}")
    return dict(best.hyperparameters.values), dt, {
        "trials": len(rewards), "best_reward": float(best.score),
        "mean_reward": float(np.mean(rewards))}


def evaluate_pruned(hm, values, data, label):
    """Prune (refit), test accuracy before / after the fine-tune."""
    model, plan = hm.prune(values)
    prof = tfcomp.profile(model)
    res = {"method": label, "macs": int(prof.macs),
           "params": int(prof.params),
           "predicted_cost": float(plan.meta["predicted_cost"]),
           "predicted_cost_ratio": float(plan.meta["predicted_cost_ratio"]),
           "test_accuracy_before_ft": accuracy(model, *data["test"]),
           "keep": hm.keep_counts(values)}
    after = []
    for seed in FT_SEEDS:  # a fresh copy of the pruned model per seed
        tuned = model if seed == FT_SEEDS[0] else hm.prune(values)[0]
        finetune(tuned, *data["ft"], epochs=1, seed=seed)
        after.append(accuracy(tuned, *data["test"]))
    res["test_accuracy_after_ft"] = float(np.mean(after))
    res["test_accuracy_after_ft_seeds"] = after
    log(f"{label}: MACs {res['macs'] / 1e6:.2f}M, test acc "
        f"{res['test_accuracy_before_ft']:.4f} -> "
        f"{res['test_accuracy_after_ft']:.4f}")
    return res, model


def amc_macs(base, data, workdir):
    hm = AMCHyperModel(base, data["cal"], data["val"], resource="macs",
                       budget=BUDGET, seed=SEED)
    # uniform: same space, selection and refit, but exact channel counts
    hm1 = AMCHyperModel(base, data["cal"], data["val"], resource="macs",
                        budget=BUDGET, seed=SEED, round_to=1)
    out, models = {}, {}
    vals, r = uniform_values(hm1)
    t0 = time.time()
    metrics, _ = hm1.evaluate(vals)
    out["uniform"], models["uniform"] = evaluate_pruned(hm1, vals, data,
                                                        "uniform")
    out["uniform"].update(search_seconds=time.time() - t0, ratio=r,
                          val_reward=metrics["reward"], trials=1)
    tuners = {
        "amc": lambda: AMCTuner(hm, max_trials=AMC_EPISODES,
                                warmup=AMC_WARMUP, seed=SEED,
                                directory=workdir, project_name="amc_macs",
                                overwrite=True),
        "random_search": lambda: AMCTuner(
            hm, oracle=kt.oracles.RandomSearchOracle(
                objective=kt.Objective("reward", "max"),
                max_trials=RS_TRIALS, seed=SEED),
            directory=workdir, project_name="rs", overwrite=True),
        "bayesian_optimization": lambda: AMCTuner(
            hm, oracle=kt.oracles.BayesianOptimizationOracle(
                objective=kt.Objective("reward", "max"),
                max_trials=BO_TRIALS, num_initial_points=BO_INITIAL,
                seed=SEED),
            directory=workdir, project_name="bo", overwrite=True),
    }
    for name, make in tuners.items():
        values, dt, stats = run_tuner(make(), name)
        out[name], models[name] = evaluate_pruned(hm, values, data, name)
        out[name].update(search_seconds=dt, **stats)
    return hm, out, models


def amc_latency(base, data, workdir, macs_models):
    t0 = time.time()
    table = measure_tflite_table(base, channel_fractions=LAT_FRACTIONS,
                                 channel_multiple=8, runs=40, rounds=4,
                                 progress=False, seed=SEED)
    t_table = time.time() - t0
    log(f"latency table: {len(table)} entries in {t_table:.0f}s")
    hm = AMCHyperModel(base, data["cal"], data["val"],
                       resource="latency",
                       hardware=table, budget=BUDGET, seed=SEED)
    tuner = AMCTuner(hm, max_trials=LAT_EPISODES, warmup=LAT_WARMUP,
                     seed=SEED, directory=workdir, project_name="amc_lat",
                     overwrite=True)
    values, dt, stats = run_tuner(tuner, "amc_latency")
    res, model = evaluate_pruned(hm, values, data, "amc_latency")
    res.update(search_seconds=dt, table_seconds=t_table,
               table_entries=len(table), **stats)
    # time everything as whole TFLite models in the same rounds
    named = {"dense": base, "amc_latency": model}
    named.update({k: macs_models[k] for k in ("amc", "uniform")})
    blobs = [layer_to_tflite(m) for m in named.values()]
    _, cls = device_profiler.interpreter_class()
    samples = device_profiler.time_samples(blobs, runs=200, rounds=10,
                                           interpreter_cls=cls, seed=SEED)
    measured = {k: float(np.median(s)) for k, s in zip(named, samples)}
    predicted = {k: float(table.model_cost(m).latency_s)
                 for k, m in named.items()}
    target = BUDGET * measured["dense"]
    lat = {"measured_ms": {k: v * 1e3 for k, v in measured.items()},
           "predicted_ms": {k: v * 1e3 for k, v in predicted.items()},
           "target_ms": target * 1e3,
           "predicted_target_ms": BUDGET * predicted["dense"] * 1e3,
           "ratio_to_target": measured["amc_latency"] / target,
           "min_cost_ratio": hm.min_cost / hm.dense_cost}
    return res, lat


# ---------------------------------------------------------------------------
# 3: HAQ


def _uniform_policy(hm, bits):
    return {n: bits for n in hm.hyperparameter_names}


def _eval_policy(hm, values, data):
    """Quantize + calibrate + the HAQ fine-tune; val and test accuracy.

    A fresh ``quantize_model`` model (the search itself evaluates policies
    on one model with dynamic bit-widths, which computes the same)."""
    q = hm.quantized_model(dict(values))
    metrics = hm.fit(dict(values), q)
    return {"val_accuracy": metrics["accuracy"],
            "test_accuracy": accuracy(q, *data["test"]),
            "cost_ratio": metrics["cost_ratio"], "cost": metrics["cost"],
            "policy": {k: list(v) for k, v in hm.policy(dict(values)).items()}
            }


def haq(base, data, workdir, episodes=None, warmup=None, tag="haq",
        at_bits=None, only=None, uniform=None):
    """Uniform 4/5/6-bit (evaluated once: the model does not depend on the
    hardware; ``uniform``: results of an earlier call, reused) and HAQ at
    the latency of uniform ``at_bits``-bit (default ``HAQ_AT``) per
    hardware (``only``: a subset of the accelerators; ``episodes`` /
    ``warmup`` default to ``HAQ_EPISODES`` / ``HAQ_WARMUP``; the noise
    decays to 0.05 at the last episode)."""
    episodes = episodes or HAQ_EPISODES
    warmup = warmup or HAQ_WARMUP
    at_bits = at_bits or HAQ_AT
    decay = 0.1 ** (1 / max(1, episodes - warmup))
    hws, kw, val = _haq_setup(data)
    probes = {name: HAQHyperModel(base, data["ft"], val,
                                  hardware=hw, budget=1.0, **kw)
              for name, hw in hws.items()}
    first = next(iter(probes.values()))
    uniform = dict(uniform or {})
    for b in sorted(set(HAQ_WIDTHS) | {at_bits}):
        if b in uniform:
            continue
        t0 = time.time()
        r = _eval_policy(first, _uniform_policy(first, b), data)
        r.pop("cost"), r.pop("cost_ratio")
        r["cost_ratio"] = {
            name: p.policy_cost(p.policy(_uniform_policy(p, b)))
            / p.full_cost for name, p in probes.items()}
        r["seconds"] = time.time() - t0
        uniform[b] = r
        log(f"uniform {b}-bit: test acc {r['test_accuracy']:.4f}, latency "
            f"ratios {r['cost_ratio']}")
    out = {"uniform": uniform, "haq_at_bits": at_bits, "hardware": {},
           "episodes": episodes, "warmup": warmup, "sigma_decay": decay,
           "steps": HAQ_STEPS, "val_range": list(HAQ_VAL),
           "wall": "per_layer"}
    for name, hw in hws.items():
        if only and name not in only:
            continue
        ratio = uniform[at_bits]["cost_ratio"][name]
        hm = HAQHyperModel(base, data["ft"], val, hardware=hw,
                           budget=min(1.0, ratio), **kw)
        tuner = HAQTuner(hm, max_trials=episodes, warmup=warmup,
                         sigma_decay=decay, seed=SEED,
                         directory=workdir,
                         project_name=f"{tag}_{name}", overwrite=True)
        values, dt, stats = run_tuner(tuner, f"haq {name}")
        found = _eval_policy(hm, values, data)
        found.update(search_seconds=dt, budget=ratio, **stats)
        log(f"{name} HAQ at the {at_bits}-bit latency: cost ratio "
            f"{found['cost_ratio']:.3f}, test acc "
            f"{found['test_accuracy']:.4f}")
        out["hardware"][name] = {
            "float_val_accuracy": hm.float_accuracy(),
            "full_cost_s": hm.full_cost, "haq": found,
            "layers": hm.layers, "rescored": _rescore(hm, tuner, data)}
    return out


def _haq_setup(data, res=None):
    """The accelerators, the HAQHyperModel arguments and the reward split
    of every search; ``res``: the protocol of an earlier run's results
    (default: the current one)."""
    steps, (lo, hi) = ((res["steps"], res["val_range"]) if res else
                       (HAQ_STEPS, HAQ_VAL))
    x, y = data["pool"]
    hws = {"bitfusion_edge": BitFusion("edge"), "bismo": BISMO()}
    kw = {"resource": "latency", "finetune_steps": steps, "seed": SEED,
          "calibration_data": data["cal"]}
    return hws, kw, (x[lo:hi], y[lo:hi])


def _values_of(hm, policy):
    """Hyperparameter values of a ``{layer: (w, a)}`` policy."""
    return hm.space.values([policy[n] for n in hm.layers])


def _rescore(hm, tuner, data):
    """``HAQTuner.rescore``: the ``RESCORE_TOP_K`` best trials re-evaluated
    with the ``FT_SEEDS`` data orders; the pick evaluated like the search's
    own pick (not in the paper: the remedy for the winner's curse)."""
    t0 = time.time()
    ranked = tuner.rescore(RESCORE_TOP_K, FT_SEEDS)
    best = ranked[0]
    found = _eval_policy(hm, _values_of(hm, best["policy"]), data)
    found.update(
        trial_id=best["trial_id"], val_mean=best["accuracy"],
        search_accuracy=best["search_accuracy"],
        ranked=[{k: r[k] for k in ("trial_id", "search_accuracy",
                                   "accuracy", "accuracies")}
                for r in ranked])
    found["seconds"] = time.time() - t0
    log(f"re-scored top {len(ranked)}: trial {best['trial_id']} (val mean "
        f"{best['accuracy']:.4f}, in the search "
        f"{best['search_accuracy']:.4f}), test acc "
        f"{found['test_accuracy']:.4f}")
    return found


def haq_rescore(base, data, workdir, res, tag):
    """``_rescore`` for searches already run (their trials reloaded from
    ``workdir``), for results made before the re-scoring step existed."""
    hws, kw, val = _haq_setup(data, res)
    for name, hw in hws.items():
        v = res["hardware"][name]
        hm = HAQHyperModel(base, data["ft"], val, hardware=hw,
                           budget=min(1.0, v["haq"]["budget"]), **kw)
        tuner = HAQTuner(hm, max_trials=res["episodes"],
                         warmup=res["warmup"], sigma_decay=res["sigma_decay"],
                         seed=SEED, directory=workdir,
                         project_name=f"{tag}_{name}", overwrite=False)
        if len(tuner.oracle.trials) < res["episodes"]:
            raise RuntimeError(
                f"{tag}_{name} in {workdir} holds {len(tuner.oracle.trials)} "
                f"trials, not the {res['episodes']} of the results: rerun "
                "the search part.")
        v["rescored"] = _rescore(hm, tuner, data)


def haq_long(base, data, haq_res):
    """Uniform 4/5-bit and the HAQ policies again, each from a fresh
    ``quantize_model`` model: test accuracy right after calibration, after
    a search trial's fine-tune repeated with the ``FT_SEEDS`` data orders
    (one evaluation of a low-bit model after a few SGD steps moves by about
    a point from seed to seed: rounding flips at code boundaries compound),
    and after a longer fine-tune (``HAQ_LONG_STEPS`` batches of 128 from
    the 20k training images, same SGD)."""
    _, setup, val = _haq_setup(data, haq_res)
    steps = setup["finetune_steps"]
    kw = {"hardware": BitFusion("edge"), "budget": 1.0,
          "resource": "latency",
          "calibration_data": data["cal"]}
    short = {seed: HAQHyperModel(base, data["ft"], val,
                                 finetune_steps=steps, seed=seed, **kw)
             for seed in FT_SEEDS}
    hm = HAQHyperModel(base, data["train"], val,
                       finetune_steps=HAQ_LONG_STEPS, seed=SEED, **kw)
    at = haq_res["haq_at_bits"]
    policies = {f"uniform {b}-bit": _uniform_policy(hm, b)
                for b in (at, at + 1)}
    for hw, v in haq_res["hardware"].items():
        policies[f"HAQ for {hw}"] = _values_of(hm, v["haq"]["policy"])
        if "rescored" in v:
            policies[f"HAQ for {hw}, re-scored"] = _values_of(
                hm, v["rescored"]["policy"])
    rows = {}
    for label, values in policies.items():
        same = next((k for k, v in policies.items()
                     if k in rows and v == values), None)
        if same:  # the re-scored pick is the search's own pick
            rows[label] = dict(rows[same], same_as=same)
            continue
        t0 = time.time()
        seeds = [_eval_policy(h, values, data)["test_accuracy"]
                 for h in short.values()]
        q = hm.quantized_model(dict(values))
        calib = accuracy(q, *data["test"])
        hm.fit(dict(values), q)
        rows[label] = {"calibration_only": calib,
                       "short_finetune": float(np.mean(seeds)),
                       "short_finetune_seeds": seeds,
                       "long_finetune": accuracy(q, *data["test"]),
                       "seconds": time.time() - t0}
        log(f"{label}: calibrated {calib:.4f}, after {steps} batches "
            f"{rows[label]['short_finetune']:.4f} (mean of {seeds}), "
            f"after {HAQ_LONG_STEPS} batches "
            f"{rows[label]['long_finetune']:.4f}")
    return {"steps": HAQ_LONG_STEPS, "short_steps": steps,
            "seeds": list(FT_SEEDS), "rows": rows}


# ---------------------------------------------------------------------------
# report


def _acc(v):
    return f"{100 * v:.2f}"


def _after(r):
    """Mean accuracy after the fine-tune, with the per-seed values."""
    seeds = r.get("test_accuracy_after_ft_seeds")
    text = _acc(r["test_accuracy_after_ft"])
    if seeds and len(seeds) > 1:
        text += " (" + " / ".join(_acc(v) for v in seeds) + ")"
    return text


def _target_text(label, v, h, u=None) -> str:
    """``HAQ x % -> met`` for one evaluation, the mean of the data orders
    and the long fine-tune (``u``: where the uniform numbers are)."""
    u = u or v

    def verdict(ok):
        return f"**{_met(ok)}**"

    text = (f"{label} {_acc(v['haq_acc'])} % vs {_acc(u['uniform_acc'])} % "
            f"-> {verdict(v['met'])}")
    if "seeds_met" in v:
        text += (f"; the same fine-tune, mean of "
                 f"{len(h['long_finetune']['seeds'])} data orders: uniform "
                 f"{_acc(v['uniform_seeds'])} %, {label} "
                 f"{_acc(v['haq_seeds'])} % -> {verdict(v['seeds_met'])}")
    if "long_met" in v:
        text += (f"; after the longer fine-tune below: uniform "
                 f"{_acc(v['uniform_long'])} %, {label} "
                 f"{_acc(v['haq_long'])} % -> {verdict(v['long_met'])}")
    return text


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _haq_section(h: dict, t3: dict, s: dict, heading: str,
                 intro: str = "") -> list:
    """Markdown of one HAQ comparison (uniform widths vs HAQ per
    accelerator, targets, re-evaluation, policies)."""
    steps = h["steps"]
    lo, hi = h["val_range"]
    out = [
        "", heading, "", *([intro, ""] if intro else []),
        (f"Reward of a trial: accuracy on {hi - lo} held-out training "
         f"images (numbers {lo}-{hi - 1}) after {steps} fine-tune batches "
         f"of 128 from the first {s['ft_n']} training images"
         + (" (one epoch, as the paper)."
            if steps * 128 >= s["ft_n"] else " (paper: one epoch).")
         + (" This run is older than the current code: its resource wall "
            "lowered the activation widths of all layers before any weight "
            "width (the official wall, now ours, lowers each layer's "
            "activation then weight width, from the last layer back)."
            if h.get("wall") == "activations_first" else "")), "",
        ("Uniform policies (every searched weight and activation at b "
         "bits; first layer weights and last layer at 8) get the same "
         "quantization-aware fine-tune as a HAQ trial. Latency ratio = "
         "latency / latency at 8/8 bits on each accelerator model."), "",
        ("| policy | Bit Fusion latency ratio | BISMO latency ratio | "
         "test acc | val acc |"),
        "|---|---|---|---|---|",
    ]
    for bits, r in h["uniform"].items():
        out.append(f"| uniform {bits}-bit | "
                   f"{r['cost_ratio']['bitfusion_edge']:.3f} | "
                   f"{r['cost_ratio']['bismo']:.3f} | "
                   f"{_acc(r['test_accuracy'])} | "
                   f"{_acc(r['val_accuracy'])} |")
    for hw, v in h["hardware"].items():
        f = v["haq"]
        bf = f"{f['cost_ratio']:.3f}" if hw == "bitfusion_edge" else "-"
        bi = f"{f['cost_ratio']:.3f}" if hw == "bismo" else "-"
        out.append(f"| HAQ for {hw} (budget {f['budget']:.3f}, "
                   f"{f['trials']} episodes, {f['search_seconds']:.0f} s) | "
                   f"{bf} | {bi} | {_acc(f['test_accuracy'])} | "
                   f"{_acc(f['val_accuracy'])} |")
        r = v.get("rescored")
        if r:
            bf = f"{r['cost_ratio']:.3f}" if hw == "bitfusion_edge" else "-"
            bi = f"{r['cost_ratio']:.3f}" if hw == "bismo" else "-"
            out.append(
                f"| HAQ for {hw}, re-scored: trial {r['trial_id']}"
                + (" (the search's pick)" if r["trial_id"] == _best_trial_id(r)
                   else "") + f" of the best {len(r['ranked'])} (val mean "
                f"{_acc(r['val_mean'])} over {len(s['ft_seeds'])} orders, "
                f"{r['seconds']:.0f} s) | {bf} | {bi} | "
                f"{_acc(r['test_accuracy'])} | {_acc(r['val_accuracy'])} |")
    out += ["", (f"Target HAQ >= uniform at equal cost (HAQ at the latency "
                 f"of uniform {h['haq_at_bits']}-bit on each accelerator; "
                 "the most accurate uniform width that fits that budget):"),
            ""]
    for hw, v in t3.items():
        out.append(
            f"- {hw}: best uniform within the budget = "
            f"{v['best_uniform']}-bit ({_acc(v['uniform_acc'])} %); "
            + _target_text("HAQ", v, h))
        if "rescored" in v:
            out.append(f"- {hw}, re-scored pick: "
                       + _target_text("HAQ", v["rescored"], h, v))
    out.append("- Reward noise or the agent? `benchmarks/haq_agent.py` "
               "runs the same searches on a synthetic accuracy landscape "
               "with exact rewards (MobileNetV2-tiny's costs, up to 600 "
               "episodes): `haq_agent.md`.")
    lf = h.get("long_finetune")
    if lf:
        seeded = all("short_finetune" in r for r in lf["rows"].values())
        out += [
            "", "### The same policies evaluated again", "",
            ("Each policy quantized and calibrated again (test accuracy "
             "right after calibration); then a search trial's fine-tune "
             f"({steps} batches) repeated with "
             f"{len(lf.get('seeds', []))} data orders (mean, per-seed "
             "values in brackets: one such evaluation of a low-bit model "
             "moves by about a point between data orders, as rounding flips "
             "at code boundaries compound), and fine-tuned "
             f"{lf['steps']} batches of 128 from the 20k training images "
             "with the same SGD." if seeded else
             "Each policy quantized and calibrated again (test accuracy "
             f"right after calibration), then fine-tuned {lf['steps']} "
             "batches of 128 from the 20k training images with the same "
             f"SGD, instead of a search trial's {steps}."), "",
            ("| policy | test acc after calibration only | "
             + (f"after {steps} batches | " if seeded else "")
             + f"test acc after {lf['steps']} batches |"),
            "|---|---|---|" + ("---|" if seeded else "")]
        for label, r in lf["rows"].items():
            mid = ""
            if seeded:
                mid = (_acc(r["short_finetune"]) + " (" + " / ".join(
                    _acc(v) for v in r["short_finetune_seeds"]) + ") | ")
            out.append(f"| {label} | {_acc(r['calibration_only'])} | "
                       f"{mid}{_acc(r['long_finetune'])} |")
    cols = {}
    for hw, v in h["hardware"].items():
        cols[hw] = v["haq"]["policy"]
        if "rescored" in v:
            cols[f"{hw}, re-scored"] = v["rescored"]["policy"]
    out += ["", "### HAQ policies found (w_bits/a_bits per layer)", "",
            "| layer | " + " | ".join(cols) + " |",
            "|---|" + "---|" * len(cols)]
    for layer in next(iter(h["hardware"].values()))["layers"]:
        cells = ["{}/{}".format(*pol[layer]) for pol in cols.values()]
        out.append(f"| {layer} | " + " | ".join(cells) + " |")
    out.append("")
    return out


def _mbv2_intro(res: dict) -> str:
    h = res["haq_mbv2"]
    b = h["baseline"]
    u = h["uniform"][h["haq_at_bits"]]["cost_ratio"]
    return (
        f"The same protocol on the HAQ paper's own kind of model: zoo "
        f"MobileNetV2-tiny (alpha {MBV2_ALPHA}, 28x28x1, "
        f"{b['macs'] / 1e6:.2f} M MACs, {b['params']} parameters), trained "
        f"like the ResNet-20: test accuracy {_acc(b['test_accuracy'])} %. "
        "Its depthwise, expansion and projection layers differ in cost and "
        "in sensitivity, which is what a per-layer search can exploit. "
        f"{h['episodes']} episodes ({h['warmup']} warm-up), noise decay "
        f"{h['sigma_decay']:.3f} per episode. On the Bit Fusion model this "
        "network's latency hardly depends on the bit-widths (outputs are "
        "written to DRAM at 32 bits, and its narrow layers leave the array "
        f"idle: uniform {h['haq_at_bits']}-bit costs "
        f"{u['bitfusion_edge']:.3f} of 8/8), so the Bit Fusion budget "
        "barely constrains that search; BISMO's "
        f"({u['bismo']:.3f} of 8/8) does.")


def _haq_reading(h: dict, s: dict) -> list:
    """Honest-reading bullets of one HAQ comparison."""
    out = []
    lf = h.get("long_finetune")
    if lf:
        r4 = lf["rows"].get(f"uniform {h['haq_at_bits']}-bit", {})
        haq_rows = {k: v for k, v in lf["rows"].items()
                    if k.startswith("HAQ")}
        long4 = r4.get("long_finetune", float("nan"))
        out.append(
            f"- Right after calibration uniform {h['haq_at_bits']}-bit "
            f"scores {_acc(r4.get('calibration_only', float('nan')))} % and "
            "the HAQ policies "
            + ", ".join(f"{_acc(v['calibration_only'])} % ({k})"
                        for k, v in haq_rows.items())
            + f"; after {lf['steps']} fine-tune batches instead of a "
            f"trial's {h['steps']}: uniform {_acc(long4)} %, HAQ "
            + ", ".join(f"{_acc(v['long_finetune'])} % ({k})"
                        for k, v in haq_rows.items())
            + ". The search ranks policies by the short fine-tune; whether "
            "its winner stays ahead after a longer one is what this row "
            "checks.")
    rs = [v["rescored"] for v in h["hardware"].values()
          if "rescored" in v]
    if lf and all("short_finetune" in r for r in lf["rows"].values()):
        best_val = {hw: v["float_val_accuracy"] + v["haq"]["best_reward"] / 10
                    for hw, v in h["hardware"].items()}
        out.append(
            "- Winner's curse: HAQ's best trial scored "
            + " / ".join(f"{_acc(a)} % ({hw})" for hw, a in best_val.items())
            + " on the validation split during the search, but "
            + " / ".join(f"{_acc(v['haq']['val_accuracy'])} %"
                         for v in h["hardware"].values())
            + " rebuilt from the same policy (uniform "
            f"{h['haq_at_bits']}-bit: "
            f"{_acc(h['uniform'][h['haq_at_bits']]['val_accuracy'])} %). "
            f"The best of {h.get('episodes', s['haq_episodes'])} "
            "evaluations that each move by about a point between data "
            "orders is biased upwards."
            + (" `HAQTuner.rescore` (not in the paper) re-evaluates the "
               f"best {len(rs[0]['ranked'])} trials over "
               f"{len(rs[0]['ranked'][0]['accuracies'])} data orders and "
               "picks the best mean: "
               + "; ".join(
                   f"{hw}: trial {r['trial_id']} (search "
                   f"{_acc(r['search_accuracy'])} %, mean "
                   f"{_acc(r['val_mean'])} %; the search's best trial "
                   + next(f"{_acc(x['accuracy'])} %" for x in r["ranked"]
                          if x["trial_id"] == _best_trial_id(r)) + ")"
                   for hw, r in ((k, v["rescored"]) for k, v in
                                 h["hardware"].items()
                                 if "rescored" in v))
               + "." if rs else
               " Re-evaluating the best few trials with several seeds "
               "before picking one is the remedy (`HAQTuner.rescore`, not "
               "in the paper; not run on these searches)."))
    return out


def _best_trial_id(r):
    """The search's own best trial among the re-scored ones."""
    return max(r["ranked"], key=lambda x: x["search_accuracy"])["trial_id"]


def to_markdown(res: dict) -> str:
    s, b = res["setup"], res["baseline"]
    out = [
        "# AMC / HAQ search on Fashion-MNIST (ResNet-20, CPU scale)", "",
        ("Reproduce: `nice .venv/bin/python "
         "benchmarks/search.py` (one run, seed 0; the trained baseline is "
         "cached in `~/.cache/tfcomp/search`, `--retrain` retrains it)."),
        "",
        (f"Total wall time {res['wall_seconds'] / 60:.1f} min on "
         f"{s['cpus']} shared cores (load average at start/end "
         f"{s['load_start']:.1f}/{s['load_end']:.1f}; other jobs were "
         "running, so times are indicative only)."), "",
        "## Setup and deviations from the papers", "",
        (f"- Baseline: zoo ResNet-20 (16/32/64 channels, 28x28x1), Adam "
         f"1e-3, {s['train_epochs']} epochs on the first {s['train_n']} "
         f"training images: test accuracy {_acc(b['test_accuracy'])} %, "
         f"{b['macs'] / 1e6:.2f} M MACs."),
        (f"- Search reward: AMC: accuracy on {s['val_n']} held-out "
         "training images, no fine-tuning, R = -error; HAQ: accuracy on "
         "held-out training images after a short fine-tune, R = 0.1 "
         "(acc_q - acc_float), with the split and fine-tune stated in "
         "each HAQ section. Reported accuracies are on the whole test set "
         "(10k)."),
        (f"- AMC: {s['amc_episodes']} episodes ({s['amc_warmup']} warm-up) "
         "instead of the paper's 800 (100); latency-targeted AMC "
         f"{s['lat_episodes']} ({s['lat_warmup']}). Preserve ratio in "
         "[0.2, 1], counts rounded up to multiples of 8 (official code), "
         f"L1 channel selection + least-squares refit on {s['cal_n']} "
         "images."),
        (f"- RandomSearch / BayesianOptimization: {s['rs_trials']} / "
         f"{s['bo_trials']} trials ({s['bo_initial']} initial random "
         "points) over the same space; the same budget wall projects their "
         "proposals."),
        (f"- Same short fine-tune for every pruned model: 1 epoch of SGD "
         f"(0.01, momentum 0.9) on {s['ft_n']} training images, then "
         "BatchNorm statistics re-estimated on those images; repeated with "
         f"{len(s.get('ft_seeds', [0]))} data-order seeds from the same "
         "pruned model and averaged (per-seed values in brackets) "
         "(`tfcomp.pruning.recalibrate_batchnorm`). Without that step "
         "(the previous run of this benchmark) the 40-step fine-tune left "
         "the moving averages two-thirds stale and could lower accuracy: "
         "uniform pruning went from 75.4 to 74.7 %."),
        (f"- HAQ: {s['haq_episodes']} episodes ({s['haq_warmup']} warm-up) "
         "instead of 600 (20), exploration noise decaying by "
         f"{s.get('haq_sigma_decay', 0.99):.3f} per episode so that it "
         "reaches 0.05 at the last episode (paper: 0.99 per episode over "
         "580); each trial fine-tunes for the number of batches of 128 "
         "stated in its section (paper: one epoch). Uniform "
         "baselines and HAQ policies get exactly that fine-tune. First "
         "layer weights and the last layer stay at 8 bits in all of "
         "them. A search evaluates its trials on one QAT model whose "
         "bit-widths are variables (`make_bits_dynamic`, the same numbers "
         "as a fresh `quantize_model` model, tested; 2x faster per trial "
         "than tracing a new graph each time); the policies reported below "
         "are rebuilt with `quantize_model`. HAQ's resource wall lowers a "
         "bit-width to the next one that is cheaper (the paper's wall "
         "lowers by one bit, also where that saves nothing: on Bit Fusion "
         "3-bit operands cost as 4-bit and 5-7 as 8-bit; on BISMO both "
         "walls are identical)."), "",
        "## 1. Channel pruning at 50 % MACs", "",
        ("| method | MMACs | MACs ratio | test acc before FT | test acc "
         "after FT | val reward | trials | search time |"),
        "|---|---|---|---|---|---|---|---|",
    ]
    p = res["pruning"]
    for name in ("uniform", "amc", "random_search",
                 "bayesian_optimization"):
        r = p[name]
        out.append(
            f"| {name} | {r['macs'] / 1e6:.2f} | "
            f"{r['macs'] / b['macs']:.3f} | "
            f"{_acc(r['test_accuracy_before_ft'])} | "
            f"{_after(r)} | "
            f"{r.get('best_reward', r.get('val_reward')):.4f} | "
            f"{r['trials']} | {r['search_seconds']:.0f} s |")
    t1 = res["targets"]
    out += [
        "", (f"Target AMC >= uniform accuracy at equal MACs: before "
             f"fine-tune **{_met(t1['amc_ge_uniform_before_ft'])}**"
             f", after fine-tune **{_met(t1['amc_ge_uniform_after_ft'])}**."),
        "", "Channels kept per searched group (AMC | uniform):", "",
        "| group | size | AMC | uniform | RS | BO |", "|---|---|---|---|---|---|",
    ]
    for g, k in p["amc"]["keep"].items():
        out.append(f"| {g} | {p['group_sizes'][g]} | {k} | "
                   f"{p['uniform']['keep'][g]} | "
                   f"{p['random_search']['keep'][g]} | "
                   f"{p['bayesian_optimization']['keep'][g]} |")
    lat = res["latency"]
    la = res["amc_latency"]
    out += [
        "", "## 2. AMC with a latency target (measured TFLite table)", "",
        (f"Table: {la['table_entries']} single-layer float TFLite models "
         f"timed on this host in {la['table_seconds']:.0f} s (channel "
         "counts on multiples of 8, so every count the search visits is "
         f"measured). Target: {BUDGET:.0%} of the dense latency; with "
         "every group at the lower bound the table predicts "
         f"{lat['min_cost_ratio']:.3f} of dense. All models below were "
         "timed as whole TFLite models (ai_edge_litert, 1 thread, median "
         "of 200 runs in 10 interleaved rounds)."), "",
        ("| model | MMACs | predicted ms | measured ms | measured / dense | "
         "test acc before FT | test acc after FT |"),
        "|---|---|---|---|---|---|---|",
    ]
    rows = {"dense": {"macs": b["macs"],
                      "test_accuracy_before_ft": b["test_accuracy"],
                      "test_accuracy_after_ft": b["test_accuracy"]},
            "amc_latency": la, "amc (MACs target)": p["amc"],
            "uniform (MACs target)": p["uniform"]}
    keys = {"dense": "dense", "amc_latency": "amc_latency",
            "amc (MACs target)": "amc", "uniform (MACs target)": "uniform"}
    dense_ms = lat["measured_ms"]["dense"]
    for name, r in rows.items():
        k = keys[name]
        out.append(
            f"| {name} | {r['macs'] / 1e6:.2f} | "
            f"{lat['predicted_ms'][k]:.3f} | {lat['measured_ms'][k]:.3f} | "
            f"{lat['measured_ms'][k] / dense_ms:.3f} | "
            f"{_acc(r['test_accuracy_before_ft'])} | "
            f"{_after(r)} |")
    out += [
        "", (f"Target latency {lat['target_ms']:.3f} ms (50 % of the measured "
             f"dense {dense_ms:.3f} ms); latency-targeted AMC measured "
             f"{lat['measured_ms']['amc_latency']:.3f} ms = "
             f"{lat['ratio_to_target']:.3f} x target. Target <= 1.05 x: "
             f"**{_met(res['targets']['latency_within_5pct'])}**."),
    ]
    out += _haq_section(
        res["haq"], res["targets"]["haq"], s,
        "## 3. HAQ vs uniform bit-widths at equal latency (ResNet-20)")
    if "haq_mbv2" in res:
        out += _haq_section(
            res["haq_mbv2"], res["targets"]["haq_mbv2"], s,
            "## 4. HAQ on MobileNetV2 (the paper's model)",
            _mbv2_intro(res))
    if "haq_mbv2_at5" in res:
        out += _haq_section(
            res["haq_mbv2_at5"], res["targets"]["haq_mbv2_at5"], s,
            "## 5. HAQ on MobileNetV2 at the latency of uniform 5-bit "
            "(BISMO)",
            "The same MobileNetV2 and protocol as section 4, with the "
            "BISMO budget at uniform 5-bit's latency: there a policy can "
            "give the sensitive layers 6-8 bits and pay with 4-bit "
            "operands, not 2- or 3-bit ones. (On Bit Fusion uniform 5-bit "
            "costs as much as 8/8, so that budget constrains nothing and "
            "is not searched.)")
    h = res["haq"]
    out += [
        "## Honest reading", "",
        ("- One run, one seed, few episodes: differences of a few tenths "
         "of a percent between methods are within run-to-run noise (the "
         "test set has 10k images: one standard error is about 0.3 %)."),
        ("- Bit Fusion costs 5-8-bit operands as 8-bit, so the uniform 5- "
         "and 6-bit budgets equal the 8/8 latency there; BISMO's cost "
         "scales with w*a, so its budgets are strict."),
        (f"- {s['amc_episodes']} (AMC, {s['amc_warmup']} warm-up), "
         f"{s['lat_episodes']} (latency AMC, {s['lat_warmup']}) and "
         f"{s['haq_episodes']} (HAQ, {s['haq_warmup']}) episodes are a "
         "small fraction of the papers' 800 / 600: the agents are far "
         "from converged, and these results say little about the policies "
         "they would learn with the papers' budgets."),
        ("- The short fine-tune is the same for every model and not tuned "
         "per model."),
    ]
    out += _haq_reading(h, s)
    if "haq_mbv2" in res:
        out += ["- MobileNetV2: " + x[2:] for x in
                _haq_reading(res["haq_mbv2"], s)]
    if "haq_mbv2_at5" in res:
        out += ["- MobileNetV2 at the 5-bit budget: " + x[2:] for x in
                _haq_reading(res["haq_mbv2_at5"], s)]
    if p["random_search"]["keep"] == p["bayesian_optimization"]["keep"]:
        out.append(
            "- BayesianOptimization's best trial is one of its initial "
            "random points, drawn from the same seed as RandomSearch's: the "
            "two rows are the same model.")
    minutes = res["wall_seconds"] / 60
    parts = ", ".join(f"{k} {v / 60:.1f} min"
                      for k, v in res.get("part_seconds", {}).items())
    out += [
        (f"- Run time {minutes:.1f} min ({parts or 'one run'}; load average "
         f"~{s['load_start']:.0f}-{s['load_end']:.0f} on 2 shared cores, "
         "other benchmarks ran beside it; the baseline was cached, training "
         "it takes about 8 min more)."), ""]
    return "\n".join(out)


def compute_targets(pruning, lat, haq_res, mbv2_res=None,
                    at5_res=None) -> dict:
    """The benchmark's targets from its results (also for --from-json)."""
    targets = {
        "amc_ge_uniform_before_ft": pruning["amc"]["test_accuracy_before_ft"]
        >= pruning["uniform"]["test_accuracy_before_ft"],
        "amc_ge_uniform_after_ft": pruning["amc"]["test_accuracy_after_ft"]
        >= pruning["uniform"]["test_accuracy_after_ft"],
        "latency_within_5pct": lat["ratio_to_target"] <= 1.05,
        "haq": _haq_targets(haq_res),
    }
    if mbv2_res:
        targets["haq_mbv2"] = _haq_targets(mbv2_res)
    if at5_res:
        targets["haq_mbv2_at5"] = _haq_targets(at5_res)
    return targets


def _haq_targets(haq_res) -> dict:
    """HAQ >= the most accurate uniform width within its budget, per
    accelerator: the search's pick and (when run) the re-scored pick, each
    on one evaluation, on the mean of the data orders and after the long
    fine-tune."""
    lrows = haq_res.get("long_finetune", {}).get("rows", {})
    targets = {}
    for hw, v in haq_res["hardware"].items():
        budget = v["haq"]["budget"]
        fits = {bits: r for bits, r in haq_res["uniform"].items()
                if r["cost_ratio"][hw] <= budget * (1 + 1e-9)}
        best = max(fits, key=lambda k: (fits[k]["test_accuracy"], -k))
        u = lrows.get(f"uniform {best}-bit")

        def check(found, row, u=u, acc=fits[best]["test_accuracy"]):
            t = {"haq_acc": found["test_accuracy"],
                 "met": found["test_accuracy"] >= acc}
            if u and row:
                t.update(uniform_long=u["long_finetune"],
                         haq_long=row["long_finetune"],
                         long_met=row["long_finetune"] >= u["long_finetune"])
            if u and row and "short_finetune" in u:
                t.update(uniform_seeds=u["short_finetune"],
                         haq_seeds=row["short_finetune"],
                         seeds_met=row["short_finetune"]
                         >= u["short_finetune"])
            return t

        targets[hw] = {"best_uniform": best,
                       "uniform_acc": fits[best]["test_accuracy"],
                       **check(v["haq"], lrows.get(f"HAQ for {hw}"))}
        if "rescored" in v:
            targets[hw]["rescored"] = check(
                v["rescored"], lrows.get(f"HAQ for {hw}, re-scored"))
    return targets


def _int_width_keys(res: dict) -> dict:
    """JSON keeps the uniform widths of the HAQ results as strings; back to
    ints (in place)."""
    for key in ("haq", "haq_mbv2", "haq_mbv2_at5"):
        if key in res:
            res[key]["uniform"] = {int(k): v
                                   for k, v in res[key]["uniform"].items()}
    return res


def main(argv=None) -> int:
    ap = parser(__doc__)
    ap.add_argument("--retrain", action="store_true",
                    help="retrain the cached baseline")
    ap.add_argument("--workdir", default=os.path.join(CACHE, "runs"))
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 2-3 trials each, results to --out")
    ap.add_argument("--parts", default=",".join(PARTS),
                    help="comma-separated parts to run: pruning (AMC, "
                    "RS, BO, latency AMC), haq (the searches) and haq_long "
                    "(the found policies with a longer fine-tune) on "
                    "ResNet-20, mbv2, mbv2_rescore (re-scoring the "
                    "best trials of finished mbv2 searches) and mbv2_long "
                    "(the same on MobileNetV2), mbv2_at5 and mbv2_at5_long "
                    "(MobileNetV2 at the BISMO latency of uniform 5-bit); "
                    "parts not run are kept from the existing search.json "
                    "in --out")
    ap.add_argument("--from-json", default=None,
                    help="only rewrite search.md from this search.json")
    args = ap.parse_args(argv)
    if args.from_json:
        res = _int_width_keys(read_json(args.from_json))
        res["targets"] = compute_targets(res["pruning"], res["latency"],
                                         res["haq"], res.get("haq_mbv2"),
                                         res.get("haq_mbv2_at5"))
        write_text(os.path.join(args.out, "search.md"), to_markdown(res))
        return 0
    if args.quick:
        g = globals()
        for k in ("AMC_EPISODES", "RS_TRIALS", "BO_TRIALS", "LAT_EPISODES"):
            g[k] = 3
        g.update(AMC_WARMUP=2, LAT_WARMUP=2, BO_INITIAL=2, HAQ_EPISODES=1,
                 HAQ_WARMUP=1, FT_N=500, HAQ_WIDTHS=(4,), MBV2_EPISODES=1,
                 MBV2_WARMUP=1, HAQ_LONG_STEPS=5, RESCORE_TOP_K=1,
                 HAQ_STEPS=4)
    t_start = time.time()
    load_start = os.getloadavg()[0]
    keras.utils.set_random_seed(SEED)
    data = load_data()
    parts = set(args.parts.split(","))
    every = set(PARTS)
    if not parts or parts - every:
        ap.error(f"--parts must name some of {list(PARTS)}. Received: "
                 f"{args.parts!r}")
    old = {}
    if parts != every:
        old = _int_width_keys(read_json(os.path.join(args.out,
                                                     "search.json")))
    if parts & {"pruning", "haq", "haq_long"}:
        base, binfo = baseline(data, args.retrain)
    else:
        base, binfo = None, old["baseline"]
    # Each part's tuners overwrite their own project folders; the others'
    # trials stay (a later re-scoring study can read them).
    seconds = dict(old.get("part_seconds", {}))
    t_part = time.time()
    if "pruning" in parts:
        hm, pruning, models = amc_macs(base, data, args.workdir)
        pruning["group_sizes"] = {g.id: int(g.size)
                                  for g in hm.space.steps}
        amc_lat, lat = amc_latency(base, data, args.workdir, models)
        seconds["pruning"] = time.time() - t_part
    else:
        pruning, amc_lat, lat = (old["pruning"], old["amc_latency"],
                                 old["latency"])
    t_part = time.time()
    if "haq" in parts:
        haq_res = haq(base, data, args.workdir)
        seconds["haq"] = time.time() - t_part
    else:
        haq_res = old["haq"]
    t_part = time.time()
    if "haq_long" in parts:
        haq_res["long_finetune"] = haq_long(base, data, haq_res)
        seconds["haq_long"] = time.time() - t_part
    mbv2_res = old.get("haq_mbv2")
    at5_res = old.get("haq_mbv2_at5")
    if parts & {"mbv2", "mbv2_rescore", "mbv2_long", "mbv2_at5",
                "mbv2_at5_long"}:
        mbv2, mbv2_info = baseline(data, args.retrain, arch="mobilenet_v2")
    t_part = time.time()
    if "mbv2" in parts:
        mbv2_res = haq(mbv2, data, args.workdir, MBV2_EPISODES, MBV2_WARMUP,
                       tag="haq_mbv2")
        mbv2_res["baseline"] = mbv2_info
        seconds["mbv2"] = time.time() - t_part
        seconds.pop("mbv2_rescore", None)  # now part of the mbv2 part
    t_part = time.time()
    if "mbv2_rescore" in parts and "mbv2" not in parts:
        haq_rescore(mbv2, data, args.workdir, mbv2_res, "haq_mbv2")
        seconds["mbv2_rescore"] = time.time() - t_part
    t_part = time.time()
    if "mbv2_long" in parts:
        mbv2_res["long_finetune"] = haq_long(mbv2, data, mbv2_res)
        seconds["mbv2_long"] = time.time() - t_part
    t_part = time.time()
    if "mbv2_at5" in parts:
        at5_res = haq(mbv2, data, args.workdir, MBV2_EPISODES, MBV2_WARMUP,
                      tag="haq_mbv2_at5", at_bits=5, only=AT5_HARDWARE,
                      uniform=mbv2_res["uniform"] if mbv2_res and
                      mbv2_res.get("steps") == HAQ_STEPS and
                      mbv2_res.get("val_range") == list(HAQ_VAL) else None)
        seconds["mbv2_at5"] = time.time() - t_part
    t_part = time.time()
    if "mbv2_at5_long" in parts:
        at5_res["long_finetune"] = haq_long(mbv2, data, at5_res)
        seconds["mbv2_at5_long"] = time.time() - t_part
    targets = compute_targets(pruning, lat, haq_res, mbv2_res, at5_res)
    res = {
        "setup": {
            "seed": SEED, "train_n": TRAIN_N, "train_epochs": TRAIN_EPOCHS,
            "val_n": VAL[1] - VAL[0], "cal_n": CAL_N, "ft_n": FT_N,
            "ft_seeds": list(FT_SEEDS),
            "budget": BUDGET, "amc_episodes": AMC_EPISODES,
            "amc_warmup": AMC_WARMUP, "rs_trials": RS_TRIALS,
            "bo_trials": BO_TRIALS, "bo_initial": BO_INITIAL,
            "lat_episodes": LAT_EPISODES, "lat_warmup": LAT_WARMUP,
            "haq_episodes": HAQ_EPISODES, "haq_warmup": HAQ_WARMUP,
            "haq_steps": HAQ_STEPS, "haq_widths": list(HAQ_WIDTHS),
            "haq_sigma_decay": HAQ_SIGMA_DECAY,
            "haq_long_steps": HAQ_LONG_STEPS,
            "cpus": os.cpu_count(),
            "load_start": load_start, "load_end": os.getloadavg()[0],
            "python": sys.version.split()[0], "keras": keras.__version__,
            "keras_tuner": kt.__version__, "machine": platform.machine(),
        },
        "baseline": binfo, "pruning": pruning, "amc_latency": amc_lat,
        "latency": lat, "haq": haq_res, "targets": targets,
        **({"haq_mbv2": mbv2_res} if mbv2_res else {}),
        **({"haq_mbv2_at5": at5_res} if at5_res else {}),
        "part_seconds": seconds, "parts_run": sorted(parts),
        "wall_seconds": (time.time() - t_start if not old
                         else sum(seconds.values())),
    }
    write_results(args.out, "search", res, to_markdown(res),
                  default=_jsonable)
    print(to_markdown(res))
    return 0


def _jsonable(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.bool_,)):
        return bool(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))


if __name__ == "__main__":
    rc = main()
    # Twice the interpreter's teardown hung at full CPU after a long run had
    # written its results (keras-tuner / TensorFlow threads; not
    # investigated): everything is on disk here, so exit at once.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)
