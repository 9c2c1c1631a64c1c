"""T-Net on Fashion-MNIST: one shared Tucker tensor vs the dense net vs
channel pruning at equal parameters (a part of
``benchmarks/distill_binary_tucker.py``; runs alone for a check).

Net: a small all-convolutional classifier (Springenberg et al.'s
all-conv idea, keras.io scale): a stride-2 stem conv, four 3x3 convs of one
shape ``(3, 3, C, C)`` (the second strided), each with BatchNorm + ReLU,
a 1x1 classifier conv and global average pooling. The four middle
kernels are the T-Net tensor ``(4, 3, 3, C, C)``; they hold ~96% of the
parameters, so whole-model compression up to 8x is reachable.

Rows (all start from one dense checkpoint trained ``E`` epochs, cached
under ``~/.cache/tfcomp/tnet``, and get the same fine-tune: ``F`` epochs of
SGD momentum 0.9 via ``_common.finetune``, BatchNorm re-estimated):

* dense: ``F`` more plain epochs;
* T-Net kx (k = 1, 2, 4, 8): ``tfcomp.tensorized.tnet`` with the float
  rank whose *whole model* has at most ``1/k`` of the dense parameters
  (HOSVD of the trained kernels, then fine-tuned end to end); 1x keeps
  the dense count (just below full rank);
* L1 pruning kx (k = 2, 4, 8): ``make_plan(importance="l1")`` +
  ``prune_channels`` at the smallest uniform ratio whose pruned model has
  at most ``1/k`` of the dense parameters (bisection on the ratio).

Columns: parameters and ratio vs dense, MACs of the deployed model
(``tfcomp.profile``; a T-Net deploys through ``to_dense``, so its MACs stay
the dense ones), test accuracy right after compression and after the
fine-tune, and seconds per row (compression + fine-tune, measured here).

Deviations (CPU scale): a training subset and a few epochs; the paper
trains T-Nets from scratch on human-pose / face-landmark data at higher
ranks; here a trained net is decomposed and fine-tuned, for a comparison
under one budget, not to match the paper's numbers.

Reproduce:
    python benchmarks/_tnet.py --quick          # smoke check (< 2 min)
    python benchmarks/_tnet.py --out benchmarks/results   # full part alone

Reference: Kossaifi et al., T-Net, CVPR 2019, arXiv:1904.02698.
"""

from __future__ import annotations

import os
import sys
import time
import warnings

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _common import (  # noqa: E402
    accuracy,
    compile_model,
    fashion_mnist_subset,
    finetune,
    log,
    parser,
    write_results,
)

import tfcomp  # noqa: E402
from tfcomp.pruning import (  # noqa: E402
    make_plan,
    prune_channels,
    recalibrate_batchnorm,
)
from tfcomp.tensorized import tnet, to_dense  # noqa: E402

CACHE = os.path.join(os.path.expanduser("~"), ".cache", "tfcomp", "tnet")
MID = ("mid0", "mid1", "mid2", "mid3")

#: (train images, test images, dense epochs E, fine-tune epochs F, width C)
SETTINGS = {"quick": (1024, 500, 1, 1, 16), "full": (12000, 10000, 3, 2, 32)}


def allconv(width: int, input_shape=(28, 28, 1), classes: int = 10):
    """The benchmark's all-conv net (layer names fixed for caching)."""
    layers = keras.layers
    inp = keras.Input(input_shape, name="input")
    x = layers.Conv2D(width, 3, strides=2, padding="same", name="stem")(inp)
    x = layers.ReLU(name="stem_relu")(layers.BatchNormalization(
        name="stem_bn")(x))
    for i, name in enumerate(MID):
        x = layers.Conv2D(width, 3, strides=2 if i == 1 else 1,
                          padding="same", name=name)(x)
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
        x = layers.ReLU(name=f"{name}_relu")(x)
    x = layers.Conv2D(classes, 1, name="classifier")(x)
    out = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inp, out, name="allconv")


def _dense_baseline(x, y, epochs: int, width: int, seed: int = 0):
    """The dense net trained ``epochs`` epochs (Adam 1e-3), its BatchNorm
    statistics then re-estimated on the training images, cached. (Without
    the re-estimate the moving statistics trail the fast-changing weights
    of this skip-free net: the stem's moving variance was 2.8x the data's
    and the dense model scored 13% in inference mode, 83% after it.)"""
    path = os.path.join(CACHE, f"dense_w{width}_n{len(x)}_e{epochs}_"
                        f"s{seed}_bn.keras")
    if os.path.exists(path):
        return keras.saving.load_model(path), 0.0
    t0 = time.time()
    keras.utils.set_random_seed(seed)
    model = compile_model(allconv(width), keras.optimizers.Adam(1e-3))
    model.fit(x, y, batch_size=128, epochs=epochs, shuffle=True, verbose=0)
    recalibrate_batchnorm(model, x, batch_size=128)
    seconds = time.time() - t0
    os.makedirs(CACHE, exist_ok=True)
    tfcomp._io.atomic_save_keras(model, path)
    return model, seconds


def _prune_to(model, target: int):
    """``(pruned, ratio)``: L1 channel pruning at the smallest uniform ratio
    whose model has at most ``target`` parameters."""
    lo, hi, best = 0.0, 0.95, None
    for _ in range(12):
        mid = (lo + hi) / 2
        small = prune_channels(model, make_plan(model, ratio=mid,
                                                importance="l1"))
        if small.count_params() <= target:
            hi, best = mid, (small, mid)
        else:
            lo = mid
    if best is None:
        small = prune_channels(model, make_plan(model, ratio=hi,
                                                importance="l1"))
        best = (small, hi)
    return best


def _tnet_to(model, target: int):
    """``(tnet_model, fraction)``: T-Net whose whole model has at most
    ``target`` parameters (float rank of the shared tensor)."""
    stacked = sum(int(np.prod(model.get_layer(n).kernel.shape)) for n in MID)
    others = model.count_params() - stacked
    fraction = min(1.0, (target - others) / stacked)
    if fraction <= 0:
        raise ValueError(f"target {target} parameters is below the layers "
                         f"outside the T-Net tensor ({others}).")
    for _ in range(50):  # integer ranks may overshoot: shrink the fraction
        tn = tnet(model, ranks=float(fraction), layers=list(MID))
        if tn.count_params() <= target:
            return tn, fraction
        fraction *= 0.98
    return tn, fraction


def _macs(model) -> int:
    return int(tfcomp.profile(model).macs)


def run_part(data, quick: bool) -> dict:
    """Runs the T-Net part. ``data`` = ``(x_train, y_train, x_test,
    y_test)`` (Fashion-MNIST arrays; the first images of each are used);
    returns ``{"markdown": str, "rows": [dict, ...], "settings": dict}``."""
    with warnings.catch_warnings():
        # Every row is recompiled by finetune(): the optimizer slots that
        # tnet / prune_channels could not carry over do not matter here.
        warnings.filterwarnings("ignore", message=".*optimizer slot variable")
        return _run(data, quick)


def _run(data, quick: bool) -> dict:
    n_train, n_test, epochs, ft_epochs, width = SETTINGS[
        "quick" if quick else "full"]
    x, y, xt, yt = data
    x, y, xt, yt = x[:n_train], y[:n_train], xt[:n_test], yt[:n_test]
    start = time.time()
    dense, dense_s = _dense_baseline(x, y, epochs, width)
    dense_params = dense.count_params()
    dense_acc = accuracy(dense, xt, yt)
    log(f"tnet: dense baseline acc {dense_acc:.4f} ({dense_s:.0f} s)", start)
    rows = []

    def row(method, k, model, acc_before, t0, deploy=None, **extra):
        finetune(model, x, y, epochs=ft_epochs)
        params = model.count_params()
        rows.append({
            "method": method, "target_x": k, "params": params,
            "params_x": round(dense_params / params, 2),
            "macs": _macs(deploy(model) if deploy else model),
            "acc_before_ft": round(acc_before, 4),
            "acc": round(accuracy(model, xt, yt), 4),
            "seconds": round(time.time() - t0, 1), **extra})
        log(f"tnet: {method} {k}x {rows[-1]}", start)

    t0 = time.time()
    base = keras.models.clone_model(dense)
    base.set_weights(dense.get_weights())
    row("dense", 1, base, dense_acc, t0)
    for k in (1, 2, 4, 8):
        t0 = time.time()
        tn, fraction = _tnet_to(dense, dense_params // k)
        tensor = tn.get_layer("tnet_tensor")
        row("T-Net", k, tn, accuracy(tn, xt, yt), t0, deploy=to_dense,
            ranks=list(tensor.ranks), fraction=round(fraction, 4))
    for k in (2, 4, 8):
        t0 = time.time()
        small, ratio = _prune_to(dense, dense_params // k)
        row("L1 pruning", k, small, accuracy(small, xt, yt), t0,
            ratio=round(ratio, 4))
    total = time.time() - start
    md = _markdown(rows, n_train, n_test, epochs, ft_epochs, width,
                   dense_s, total)
    return {"markdown": md, "rows": rows,
            "settings": {"train": n_train, "test": n_test, "epochs": epochs,
                         "finetune_epochs": ft_epochs, "width": width,
                         "dense_train_seconds": round(dense_s, 1),
                         "seconds": round(total, 1)}}


def _markdown(rows, n_train, n_test, epochs, ft, width, dense_s, total):
    lines = [
        "### T-Net (shared Tucker tensor) vs dense vs channel pruning",
        "",
        f"All-conv net (width {width}, four 3x3 middle convs shared by "
        f"T-Net), Fashion-MNIST {n_train} train / {n_test} test images; "
        f"dense trained {epochs} epochs (Adam), every row then fine-tuned "
        f"{ft} epochs (SGD 0.01, momentum 0.9). T-Net MACs are those of its "
        "`to_dense` export.",
        "",
        "| method | target | params | params x | MACs | acc after "
        "compression | acc after fine-tune | ranks / ratio | seconds |",
        "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        detail = (str(tuple(r["ranks"])) if "ranks" in r
                  else f"ratio {r['ratio']}" if "ratio" in r else "-")
        lines.append(
            f"| {r['method']} | {r['target_x']}x | {r['params']:,} | "
            f"{r['params_x']} | {r['macs']:,} | {r['acc_before_ft']:.4f} | "
            f"{r['acc']:.4f} | {detail} | {r['seconds']} |")
    lines += ["", f"Dense training {dense_s:.0f} s (0 = cached); part total "
              f"{total:.0f} s."]
    return "\n".join(lines) + "\n"


def main():
    p = parser(__doc__, out=False)
    p.add_argument("--quick", action="store_true",
                   help="smoke check: tiny subset, one epoch each")
    p.add_argument("--out", default=None,
                   help="folder to write tnet.json / tnet.md (default: "
                        "print only)")
    args = p.parse_args()
    (x, y), (xt, yt) = fashion_mnist_subset()
    result = run_part((x, y, xt, yt), quick=args.quick)
    print(result["markdown"])
    if args.out:
        write_results(args.out, "tnet", result, result["markdown"])


if __name__ == "__main__":
    main()
