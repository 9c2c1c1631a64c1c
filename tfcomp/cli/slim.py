"""``tfcomp slim`` and ``tfcomp autoslim``: slimmable training, export of
every width, AutoSlim's greedy channel search.

Example:
    $ tfcomp slim model.keras out/ --widths 0.25,0.5,0.75,1.0 \\
        --data fashion-mnist --epochs 5
    $ tfcomp autoslim out/slimmable.keras out/ --data fashion-mnist \\
        --target-macs 0.5,0.25
"""

from __future__ import annotations

import json
import os

from tfcomp.cli import _common as common


def _out_dir(path: str) -> str:
    from tfcomp._io import make_dirs

    if os.path.exists(path) and not os.path.isdir(path):
        raise common.CLIError(f"out_dir {path!r} is a file, not a folder")
    return make_dirs(path, "out_dir")


def _tag(w: float) -> str:
    return f"{int(round(w * 100)):03d}"


def run_slim(args) -> None:
    """Trains a slimmable copy of the model and exports every width."""
    from tfcomp._batches import take
    from tfcomp.cost import profile
    from tfcomp.pruning.slimmable import (
        export_width,
        recalibrate_widths,
        set_width,
        to_slimmable,
    )

    model = common.load_model(args.model)
    (x, y), (xt, yt) = common.load_data(args.data, model=model)
    out = _out_dir(args.out_dir)
    try:
        slim = to_slimmable(model, widths=args.widths,
                            universal=args.universal, round_to=args.round_to)
    except (ValueError, TypeError) as e:
        raise common.CLIError(str(e)) from e
    common.info(f"sandwich training at widths {list(slim.widths)}")
    if args.epochs:
        common.fit(slim, x, y, args.epochs, args.lr, args.batch_size,
                   steps=args.steps)
    recalibrate_widths(slim, take(x, args.calibration_size))
    common.save_model(slim, os.path.join(out, "slimmable.keras"))
    rows = []
    for w in slim.widths:
        set_width(slim, w)
        small = export_width(slim, w)
        path = os.path.join(out, f"width_{_tag(w)}.keras")
        common.save_model(small, path)
        rows.append({"width": w, "file": os.path.basename(path),
                     "macs": int(profile(small).macs),
                     common.score_name(yt): common.evaluate(small, xt, yt)})
        print(f"width {w:g}: {rows[-1]['macs']:,} MACs, test "
              f"{common.score_name(yt)} "
              f"{rows[-1][common.score_name(yt)]:.4f}")
    set_width(slim, slim.widths[-1])
    common.write_text(os.path.join(out, "slim.json"),
                      json.dumps({"widths": rows}, indent=2))


def run_autoslim(args) -> None:
    """Greedy AutoSlim search; writes one plan per MACs target."""
    import tfcomp.pruning.slimmable  # noqa: F401 - registers SlimmableModel
    from tfcomp._batches import rows, sliced
    from tfcomp.pruning.autoslim import autoslim

    model = common.load_model(args.model)
    (x, y), _ = common.load_data(args.data, model=model)
    out = _out_dir(args.out_dir)
    n = args.batches * args.batch_size
    start = max(rows(x) - n, 0)
    held = (sliced(x, start, rows(x)), y[start:])
    try:
        res = autoslim(model, held, target_macs=args.target_macs,
                       step=args.step if args.step < 1 else int(args.step),
                       batches=args.batches,
                       batch_size=args.batch_size,
                       criterion=getattr(args, "criterion", "loss"),
                       verbose=common.verbosity())
    except (ValueError, TypeError) as e:
        raise common.CLIError(str(e)) from e
    rows = []
    for t, arch in res.architectures.items():
        path = os.path.join(out, f"autoslim_{_tag(t)}.json")
        arch["plan"].save(path)
        print(f"wrote {path}")
        rows.append({"target_macs": t, "plan": os.path.basename(path),
                     "macs": int(arch["macs"]), "loss": arch["loss"],
                     "keep": arch["keep"]})
    common.write_text(os.path.join(out, "autoslim.json"), json.dumps(
        {"dense_macs": res.dense_macs, "architectures": rows,
         "criterion": getattr(args, "criterion", "loss"),
         "steps": len(res.history) - 1}, indent=2))
