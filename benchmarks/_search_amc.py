"""AMC part of ``benchmarks/search.py``: channel pruning at 50 % MACs
(AMC, uniform, keras-tuner RandomSearch / BayesianOptimization over the
same ``AMCHyperModel`` space) and latency-targeted AMC on a TFLite table
measured on this host.

Reference: He et al., "AMC: AutoML for Model Compression and Acceleration
on Mobile Devices", ECCV 2018.

Example:
    >>> hm, pruning, models = amc_macs(base, data, workdir)
    >>> amc_lat, lat = amc_latency(base, data, workdir, models)
"""

from __future__ import annotations

import time

import _search_setup as cfg
import keras_tuner as kt
import numpy as np
from _common import finetune, log
from _search_setup import accuracy

import tfcomp
from tfcomp.hardware import device_profiler, measure_tflite_table
from tfcomp.hardware.tflite_profiler import layer_to_tflite
from tfcomp.tuners.amc import AMCHyperModel, AMCTuner

__all__ = ["uniform_values", "run_tuner", "evaluate_pruned", "amc_macs",
           "amc_latency"]


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
    for seed in cfg.FT_SEEDS:  # a fresh copy of the pruned model per seed
        tuned = model if seed == cfg.FT_SEEDS[0] else hm.prune(values)[0]
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
                       budget=cfg.BUDGET, seed=cfg.SEED)
    # uniform: same space, selection and refit, but exact channel counts
    hm1 = AMCHyperModel(base, data["cal"], data["val"], resource="macs",
                        budget=cfg.BUDGET, seed=cfg.SEED, round_to=1)
    out, models = {}, {}
    vals, r = uniform_values(hm1)
    t0 = time.time()
    metrics, _ = hm1.evaluate(vals)
    out["uniform"], models["uniform"] = evaluate_pruned(hm1, vals, data,
                                                        "uniform")
    out["uniform"].update(search_seconds=time.time() - t0, ratio=r,
                          val_reward=metrics["reward"], trials=1)
    tuners = {
        "amc": lambda: AMCTuner(hm, max_trials=cfg.AMC_EPISODES,
                                warmup=cfg.AMC_WARMUP, seed=cfg.SEED,
                                directory=workdir, project_name="amc_macs",
                                overwrite=True),
        "random_search": lambda: AMCTuner(
            hm, oracle=kt.oracles.RandomSearchOracle(
                objective=kt.Objective("reward", "max"),
                max_trials=cfg.RS_TRIALS, seed=cfg.SEED),
            directory=workdir, project_name="rs", overwrite=True),
        "bayesian_optimization": lambda: AMCTuner(
            hm, oracle=kt.oracles.BayesianOptimizationOracle(
                objective=kt.Objective("reward", "max"),
                max_trials=cfg.BO_TRIALS, num_initial_points=cfg.BO_INITIAL,
                seed=cfg.SEED),
            directory=workdir, project_name="bo", overwrite=True),
    }
    for name, make in tuners.items():
        values, dt, stats = run_tuner(make(), name)
        out[name], models[name] = evaluate_pruned(hm, values, data, name)
        out[name].update(search_seconds=dt, **stats)
    return hm, out, models


def amc_latency(base, data, workdir, macs_models):
    t0 = time.time()
    table = measure_tflite_table(base, channel_fractions=cfg.LAT_FRACTIONS,
                                 channel_multiple=8, runs=40, rounds=4,
                                 progress=False, seed=cfg.SEED)
    t_table = time.time() - t0
    log(f"latency table: {len(table)} entries in {t_table:.0f}s")
    hm = AMCHyperModel(base, data["cal"], data["val"],
                       resource="latency",
                       hardware=table, budget=cfg.BUDGET, seed=cfg.SEED)
    tuner = AMCTuner(hm, max_trials=cfg.LAT_EPISODES, warmup=cfg.LAT_WARMUP,
                     seed=cfg.SEED, directory=workdir, project_name="amc_lat",
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
                                           interpreter_cls=cls, seed=cfg.SEED)
    measured = {k: float(np.median(s)) for k, s in zip(named, samples)}
    predicted = {k: float(table.model_cost(m).latency_s)
                 for k, m in named.items()}
    target = cfg.BUDGET * measured["dense"]
    lat = {"measured_ms": {k: v * 1e3 for k, v in measured.items()},
           "predicted_ms": {k: v * 1e3 for k, v in predicted.items()},
           "target_ms": target * 1e3,
           "predicted_target_ms": cfg.BUDGET * predicted["dense"] * 1e3,
           "ratio_to_target": measured["amc_latency"] / target,
           "min_cost_ratio": hm.min_cost / hm.dense_cost}
    return res, lat

