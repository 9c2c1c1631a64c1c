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

import _search_setup as cfg
import keras
import keras_tuner as kt
import numpy as np
from _common import parser, read_json, write_results, write_text
from _search_amc import amc_latency, amc_macs
from _search_haq import haq, haq_long, haq_rescore
from _search_report import compute_targets, to_markdown
from _search_setup import baseline, load_data

# The parts live in helper modules: _search_setup (settings, data, trained
# baselines), _search_amc (1-2), _search_haq (3-5), _search_report
# (targets and markdown); this file runs the parts and merges the results.


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
    ap.add_argument("--workdir", default=os.path.join(cfg.CACHE, "runs"))
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 2-3 trials each, results to --out")
    ap.add_argument("--parts", default=",".join(cfg.PARTS),
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
        cfg.use_quick_settings()
    t_start = time.time()
    load_start = os.getloadavg()[0]
    keras.utils.set_random_seed(cfg.SEED)
    data = load_data()
    parts = set(args.parts.split(","))
    every = set(cfg.PARTS)
    if not parts or parts - every:
        ap.error(f"--parts must name some of {list(cfg.PARTS)}. Received: "
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
        mbv2_res = haq(mbv2, data, args.workdir, cfg.MBV2_EPISODES,
                       cfg.MBV2_WARMUP, tag="haq_mbv2")
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
        at5_res = haq(mbv2, data, args.workdir, cfg.MBV2_EPISODES,
                      cfg.MBV2_WARMUP, tag="haq_mbv2_at5", at_bits=5,
                      only=cfg.AT5_HARDWARE,
                      uniform=mbv2_res["uniform"] if mbv2_res and
                      mbv2_res.get("steps") == cfg.HAQ_STEPS and
                      mbv2_res.get("val_range") == list(cfg.HAQ_VAL)
                      else None)
        seconds["mbv2_at5"] = time.time() - t_part
    t_part = time.time()
    if "mbv2_at5_long" in parts:
        at5_res["long_finetune"] = haq_long(mbv2, data, at5_res)
        seconds["mbv2_at5_long"] = time.time() - t_part
    targets = compute_targets(pruning, lat, haq_res, mbv2_res, at5_res)
    res = {
        "setup": {
            "seed": cfg.SEED, "train_n": cfg.TRAIN_N,
            "train_epochs": cfg.TRAIN_EPOCHS,
            "val_n": cfg.VAL[1] - cfg.VAL[0], "cal_n": cfg.CAL_N,
            "ft_n": cfg.FT_N,
            "ft_seeds": list(cfg.FT_SEEDS),
            "budget": cfg.BUDGET, "amc_episodes": cfg.AMC_EPISODES,
            "amc_warmup": cfg.AMC_WARMUP, "rs_trials": cfg.RS_TRIALS,
            "bo_trials": cfg.BO_TRIALS, "bo_initial": cfg.BO_INITIAL,
            "lat_episodes": cfg.LAT_EPISODES, "lat_warmup": cfg.LAT_WARMUP,
            "haq_episodes": cfg.HAQ_EPISODES, "haq_warmup": cfg.HAQ_WARMUP,
            "haq_steps": cfg.HAQ_STEPS, "haq_widths": list(cfg.HAQ_WIDTHS),
            "haq_sigma_decay": cfg.HAQ_SIGMA_DECAY,
            "haq_long_steps": cfg.HAQ_LONG_STEPS,
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
