"""#21 probe: does the S-Net's gap to each width trained alone close with
training length? The S-Net and the widths alone of ``benchmarks/
slimmable.py`` (same data, recipe, caches and functions), at ``--epochs``
for both sides instead of the benchmark's ``EPOCHS``, one seed per call.

Not a benchmark table: a probe whose numbers the slimmable results'
reading quotes beside the benchmark's 3-epoch rows.

Reproduce (MobileNetV2-tiny, 6 epochs, seeds 0 and 1; about 12 min per seed
on 2 idle cores):
    nice .venv/bin/python benchmarks/slimmable_horizon.py --epochs 6 --seed 0
    nice .venv/bin/python benchmarks/slimmable_horizon.py --epochs 6 --seed 1
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import slimmable as bench  # noqa: E402

from tfcomp.pruning import export_width, set_width  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mbv2", choices=bench.MODELS)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="json file for the rows")
    args = ap.parse_args(argv)
    bench.EPOCHS = args.epochs  # read at call time by the helpers below
    data = bench.load_data()
    xt, yt = data["test"]
    t0 = time.time()
    slim, _ = bench.supernet(args.model, data, "snet", args.seed)
    rows = {}
    for w in bench.WIDTHS:
        set_width(slim, w)
        snet = bench.accuracy(slim, xt, yt)
        small = export_width(slim, w)
        set_width(slim, bench.WIDTHS[-1])
        alone, _ = bench.train_alone(args.model, small, f"alone{w:g}",
                                     args.seed, data)
        rows[str(w)] = {"snet": snet, "alone": bench.accuracy(alone, xt, yt)}
        r = rows[str(w)]
        print(f"{args.model} E={args.epochs} seed {args.seed} width {w:g}: "
              f"S-Net {r['snet']:.4f}, alone {r['alone']:.4f}, gap "
              f"{100 * (r['snet'] - r['alone']):+.2f}", flush=True)
    result = {"model": args.model, "epochs": args.epochs, "seed": args.seed,
              "rows": rows, "seconds": time.time() - t0}
    if args.out:
        from tfcomp._io import atomic_path

        with atomic_path(args.out, suffix=".json") as tmp:
            with open(tmp, "w") as f:
                json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
