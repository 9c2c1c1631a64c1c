"""``tfcomp simulate DESCRIPTOR``: run a bit-serial descriptor on test data.

Example:
    $ tfcomp simulate q4.json --data fashion-mnist --model q4.keras
"""

from __future__ import annotations

import json
import os

from tfcomp.cli import _common as common


def _batch(path: str) -> int:
    if not os.path.isfile(path):
        raise common.CLIError(f"descriptor not found: {path!r}")
    try:
        with open(path) as f:
            return int(json.load(f).get("batch", 1))
    except (json.JSONDecodeError, AttributeError, TypeError,
            ValueError) as e:
        raise common.CLIError(
            f"{path!r} is not a descriptor JSON: {e}") from e


def run(args) -> None:
    """Prints the simulator's top-1 accuracy (and agreement with Keras)."""
    import numpy as np

    from tfcomp.export import simulate_bitserial

    batch = _batch(args.descriptor)
    model = common.load_model(args.model) if args.model else None
    (_, _), (xt, yt) = common.load_data(args.data, model=model)
    n = (min(args.num, len(xt)) // batch) * batch
    if n == 0:
        raise common.CLIError(
            f"need at least batch={batch} test images. Received: --num "
            f"{args.num} ({len(xt)} available)")
    x, y = xt[:n], yt[:n]
    common.info(f"simulating {n} images bit-serially")
    out, stats = simulate_bitserial(args.descriptor, x, return_stats=True,
                                    dequantize=True)
    pred = np.asarray(out).reshape(n, -1).argmax(-1)
    acc = float(np.mean(pred == y))
    result = {"images": n, "top1_accuracy": acc,
              "compute_cycles": int(stats.compute_cycles)}
    print(f"bit-serial simulator: top-1 {acc:.4f} on {n} test images")
    if model is not None:
        ref = common.predict_logits(model, x).argmax(-1)
        agree = float(np.mean(pred == ref))
        result["top1_agreement"] = agree
        print(f"top-1 agreement with {args.model}: {agree:.4f}")
    if args.json:
        print(json.dumps(result))
