"""HAQ part of ``benchmarks/search.py``: uniform 4/5/6-bit policies and
HAQ searched per accelerator (Bit Fusion edge, BISMO) at the latency of a
uniform width, the re-scoring of the best trials (``HAQTuner.rescore``)
and the found policies evaluated again with a longer fine-tune.

Reference: Wang et al., "HAQ: Hardware-Aware Automated Quantization with
Mixed Precision", CVPR 2019.

Example:
    >>> res = haq(base, data, workdir)
    >>> res["long_finetune"] = haq_long(base, data, res)
"""

from __future__ import annotations

import time

import _search_setup as cfg
import numpy as np
from _common import log
from _search_amc import run_tuner
from _search_setup import accuracy

from tfcomp.hardware import BISMO, BitFusion
from tfcomp.tuners.haq import HAQHyperModel, HAQTuner

__all__ = ["haq", "haq_rescore", "haq_long"]


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
    episodes = episodes or cfg.HAQ_EPISODES
    warmup = warmup or cfg.HAQ_WARMUP
    at_bits = at_bits or cfg.HAQ_AT
    decay = 0.1 ** (1 / max(1, episodes - warmup))
    hws, kw, val = _haq_setup(data)
    probes = {name: HAQHyperModel(base, data["ft"], val,
                                  hardware=hw, budget=1.0, **kw)
              for name, hw in hws.items()}
    first = next(iter(probes.values()))
    uniform = dict(uniform or {})
    for b in sorted(set(cfg.HAQ_WIDTHS) | {at_bits}):
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
           "steps": cfg.HAQ_STEPS, "val_range": list(cfg.HAQ_VAL),
           "wall": "per_layer"}
    for name, hw in hws.items():
        if only and name not in only:
            continue
        ratio = uniform[at_bits]["cost_ratio"][name]
        hm = HAQHyperModel(base, data["ft"], val, hardware=hw,
                           budget=min(1.0, ratio), **kw)
        tuner = HAQTuner(hm, max_trials=episodes, warmup=warmup,
                         sigma_decay=decay, seed=cfg.SEED,
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
                       (cfg.HAQ_STEPS, cfg.HAQ_VAL))
    x, y = data["pool"]
    hws = {"bitfusion_edge": BitFusion("edge"), "bismo": BISMO()}
    kw = {"resource": "latency", "finetune_steps": steps, "seed": cfg.SEED,
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
    ranked = tuner.rescore(cfg.RESCORE_TOP_K, cfg.FT_SEEDS)
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
                         seed=cfg.SEED, directory=workdir,
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
             for seed in cfg.FT_SEEDS}
    hm = HAQHyperModel(base, data["train"], val,
                       finetune_steps=cfg.HAQ_LONG_STEPS, seed=cfg.SEED, **kw)
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
            f"after {cfg.HAQ_LONG_STEPS} batches "
            f"{rows[label]['long_finetune']:.4f}")
    return {"steps": cfg.HAQ_LONG_STEPS, "short_steps": steps,
            "seeds": list(cfg.FT_SEEDS), "rows": rows}

