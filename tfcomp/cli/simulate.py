"""``tfcomp simulate DESCRIPTOR``: run a bit-serial descriptor on test data.

Example:
    $ tfcomp simulate q4.json --data fashion-mnist --model q4.keras
"""

from __future__ import annotations

import json
import os

from tfcomp.cli import _common as common


def _read(path: str) -> tuple:
    """``(batch, input names or None, threshold)`` of a descriptor: the
    names (its ``inputs``) only for a network of several inputs; the
    threshold a one-unit output decides class 1 at without ``--model``:
    0.5 for unsigned outputs (a sigmoid's probabilities), else 0 (a
    logit)."""
    if not os.path.isfile(path):
        raise common.CLIError(f"descriptor not found: {path!r}")
    try:
        with open(path) as f:
            desc = json.load(f)
        names = ([str(e["name"]) for e in desc["inputs"]]
                 if "inputs" in desc else None)
        out = desc.get("output")
        last = {e.get("name"): e for e in desc.get("layers", [])}.get(
            out if isinstance(out, str) else None, {})
        unsigned = last.get("out_quant", {}).get("signed", True) is False
        return int(desc.get("batch", 1)), names, 0.5 if unsigned else 0.0
    except (json.JSONDecodeError, AttributeError, TypeError, KeyError,
            ValueError) as e:
        raise common.CLIError(
            f"{path!r} is not a descriptor JSON: {e}") from e


def run(args) -> None:
    """Prints the simulator's top-1 accuracy (and agreement with Keras)."""
    import numpy as np

    from tfcomp._batches import rows, take
    from tfcomp._score import binary_threshold, predicted
    from tfcomp.export import simulate_bitserial

    batch, names, threshold = _read(args.descriptor)
    model = common.load_model(args.model) if args.model else None
    (_, _), (xt, yt) = common.load_data(args.data, model=model,
                                        input_names=names)
    n = (min(args.num, rows(xt)) // batch) * batch
    if n == 0:
        raise common.CLIError(
            f"need at least batch={batch} test images. Received: --num "
            f"{args.num} ({rows(xt)} available)")
    common.require_classes(yt, "tfcomp simulate", args.data)
    x, y = take(xt, n), yt[:n]
    feed = x
    if isinstance(x, list):  # by input name, whatever the descriptor's order
        keys = (common.model_input_names(model) if model is not None
                else names)
        feed = dict(zip(keys, x))
    common.info(f"simulating {n} images bit-serially")
    try:
        out, stats = simulate_bitserial(args.descriptor, feed,
                                        return_stats=True, dequantize=True)
    except ValueError as e:
        if names is None and not isinstance(x, list):
            raise  # one input, as before
        raise common.CLIError(f"--data {args.data!r} does not fit "
                              f"descriptor {args.descriptor!r}: {e}") from e
    # classes on the last axis: one per image, or per position (a U-Net's
    # (N, H, W) labels); a binary output's: the side of its threshold
    thr = binary_threshold(model) if model is not None else threshold
    pred = predicted(out, y.shape, thr)
    acc = float(np.mean(pred == y))
    result = {"images": n, "top1_accuracy": acc,
              "compute_cycles": int(stats.compute_cycles)}
    print(f"bit-serial simulator: top-1 {acc:.4f} on {n} test images")
    if model is not None:
        ref = predicted(common.predict_logits(model, x), y.shape, thr)
        agree = float(np.mean(pred == ref))
        result["top1_agreement"] = agree
        print(f"top-1 agreement with {args.model}: {agree:.4f}")
    if args.json:
        print(json.dumps(result))
