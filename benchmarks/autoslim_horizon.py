"""#21 probe: does AutoSlim's advantage over a uniform width grow with the
retraining length? The architectures ``benchmarks/slimmable.py`` found
(their channel counts in ``results/slimmable.json``: AutoSlim, AutoSlim
per MAC and uniform at 50 % and 25 % of ResNet-20's MACs) retrained from
scratch with that benchmark's recipe (same data, optimizer, schedule,
``scratch_setup`` and BN re-estimation) for ``--epochs`` instead of its 3.

Not a benchmark table: a probe whose numbers the slimmable results' reading
quotes beside the benchmark's 3-epoch rows.

Reproduce (9 epochs, seeds 0-4; about 40 min on 2 idle cores):
    nice .venv/bin/python benchmarks/autoslim_horizon.py --epochs 9 \
        --seeds 5 --out /tmp/autoslim_horizon.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import slimmable as bench  # noqa: E402

from tfcomp.pruning import make_plan, prune_channels  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                       "results", "slimmable.json")


def arch_of(counts: dict):
    """ResNet-20 with ``counts`` output channels per layer (the channels
    kept are irrelevant: the model is re-initialised before training)."""
    plain = bench.build("resnet20")
    full = bench.channels(plain)
    ratio = {k: (full[k] - n + 0.5) / full[k] for k, n in counts.items()
             if n < full[k]}
    arch = prune_channels(plain, make_plan(plain, ratio=ratio))
    if bench.channels(arch) != counts:
        raise RuntimeError(f"rebuilt {bench.channels(arch)} != {counts}")
    return arch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=9)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--methods", default="autoslim,uniform")
    ap.add_argument("--targets", default="0.5,0.25")
    ap.add_argument("--out", default=None, help="json file for the rows")
    args = ap.parse_args(argv)
    rows_in = json.load(open(RESULTS))["resnet20"]["search"]["rows"]
    bench.EPOCHS = args.epochs  # read at call time by train_alone / fit
    data = bench.load_data()
    xt, yt = data["test"]
    keys = [f"{m}@{t}" for t in args.targets.split(",")
            for m in args.methods.split(",")]
    archs = {k: arch_of(rows_in[k]["channels"]) for k in keys}
    acc = {k: [] for k in keys}
    t0 = time.time()
    for seed in range(args.seeds):
        for k in keys:
            method = k.split("@")[0]
            model, _ = bench.train_alone("resnet20", archs[k],
                                         f"{method}{k.split('@')[1]}_retrain",
                                         seed, data)
            acc[k].append(float(bench.accuracy(model, xt, yt)))
            print(f"E={args.epochs} seed {seed} {k}: {acc[k][-1]:.4f}",
                  flush=True)
        result = {"model": "resnet20", "epochs": args.epochs,
                  "seeds_done": seed + 1, "accuracies": acc,
                  "means": {k: float(np.mean(v)) for k, v in acc.items()},
                  "epochs3_means": {k: rows_in[k]["accuracy"] for k in keys},
                  "seconds": time.time() - t0}
        if args.out:
            from tfcomp._io import atomic_path

            with atomic_path(args.out, suffix=".json") as tmp:
                with open(tmp, "w") as f:
                    json.dump(result, f, indent=1)
    for k in keys:
        print(f"{k}: {np.mean(acc[k]):.4f} ± {np.std(acc[k]):.4f} "
              f"(3 epochs: {rows_in[k]['accuracy']:.4f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
