"""#20 probe: the points of ``results/joint.json`` fine-tuned with more
data orders, to tell the rows apart beyond their 3-seed noise.

Each setting's uniform, sequential (both orders) and joint-allocator points
(their kept channels and bits, as recorded) are rebuilt on a baseline
trained by ``benchmarks/joint.py``'s recipe (cached; retrained on a fresh
machine, so its float accuracy may differ from the tables' by a point),
pruned with the same L1 selection + least-squares refit, and given
``benchmarks/joint.py``'s common fine-tune with ``--seeds`` data orders
(0..N-1; the tables used 0, 1, 2). Per setting it reports every row's mean
and the paired differences (same data order) joint - each sequential row
and joint - uniform, with their standard errors.

Not a benchmark table: a probe whose numbers ``results/joint.md``'s
reading quotes. The joint search row is the allocator's point in every
setting (the tables), so it is not repeated.

Reproduce (12 seeds, 6 settings; about 70 min on 2 idle cores):
    nice .venv/bin/python benchmarks/joint_seeds.py --seeds 12 \
        --out benchmarks/results/joint_seeds.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import joint as bench  # noqa: E402
from _common import log, write_json  # noqa: E402

from tfcomp.joint import apply_keep  # noqa: E402

ROWS = ("uniform", "prune_first", "bits_first", "joint_allocator")


def paired(a, b) -> dict:
    """Mean and standard error (points) of ``a - b`` per data order."""
    d = 100 * (np.asarray(a) - np.asarray(b))
    se = float(np.std(d, ddof=1) / np.sqrt(len(d))) if len(d) > 1 else None
    return {"mean": float(np.mean(d)), "se": se}


def summary(rows: dict, first: int = 3) -> dict:
    """Joint - sequential / uniform over all seeds and over the first
    ``first`` (the tables' protocol)."""
    out = {}
    j = rows["joint_allocator"]["seeds"]
    for n, tag in ((len(j), "all"), (first, f"first{first}")):
        seq = {k: rows[k]["seeds"][:n] for k in ("prune_first", "bits_first")
               if k in rows}
        best = max(seq, key=lambda k: np.mean(seq[k])) if seq else None
        out[tag] = {
            "seeds": n,
            "vs_uniform": paired(j[:n], rows["uniform"]["seeds"][:n]),
            **{f"vs_{k}": paired(j[:n], v) for k, v in seq.items()},
            "best_sequential": best,
            "vs_best_sequential": paired(j[:n], seq[best]) if best else None,
        }
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=12)
    ap.add_argument("--parts", default=",".join(bench.PARTS))
    ap.add_argument("--out", required=True, help="json file for the rows")
    args = ap.parse_args(argv)
    if args.seeds < 2:
        raise SystemExit(f"--seeds must be >= 2. Received: {args.seeds}")
    tables = json.load(open(os.path.join(os.path.dirname(
        os.path.abspath(__file__)), "results", "joint.json")))["parts"]
    bench.FT_SEEDS = tuple(range(args.seeds))  # read by bench.evaluate
    data = bench.load_data()
    res = json.load(open(args.out)) if os.path.exists(args.out) else {}
    res.update(seeds=args.seeds, command=" ".join(sys.argv),
               parts=res.get("parts", {}))
    models = {}
    for part in args.parts.split(","):
        arch = bench.SETTINGS[part][0]
        if arch not in models:
            models[arch] = bench.baseline(data, arch)
        model, info = models[arch]
        rows, t0 = {}, time.time()
        for name in ROWS:
            row = tables[part]["rows"][name]
            _, small = apply_keep(model, row["keep"], data["cal"],
                                  seed=bench.SEED, num_samples=bench.CAL_N)
            bits = {k: tuple(v) for k, v in row["bits"].items()}
            rows[name] = bench.evaluate(small, bits, data)
            rows[name]["table_accuracy"] = row["accuracy"]
            log(f"{part} {name}: {rows[name]['accuracy']:.4f} "
                f"(table {row['accuracy']:.4f})")
        res["parts"][part] = {"float": info["test_accuracy"], "rows": rows,
                              "summary": summary(rows),
                              "seconds": time.time() - t0}
        log(f"{part}: {json.dumps(res['parts'][part]['summary'])}")
        write_json(args.out, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
