"""Reconstruction-based channel pruning on Fashion-MNIST (one run).

Trains zoo ResNet-20 (and optionally VGG-small) on a training subset, prunes
it to about 50% of the dense MACs with

* LASSO + least squares (He et al. 2017, ``lasso_prune``),
* DCP (Zhuang et al. 2018, ``dcp_prune``, lam = 1),
* L1 + least squares (``lasso_prune(selector="l1")``, AMC's per-layer step),
* L1 filter norm, no refit (Li et al. 2017, ``make_plan(importance="l1")``),
* FPGM, one-shot geometric-median selection, no refit
  (``make_plan(importance="fpgm")``; the paper's soft schedule needs long
  training, see the notes in the results),

all on the same groups with the same kept counts (so the same architecture
and MACs), and reports test accuracy before fine-tuning and after the same
short fine-tune.

For ResNet the pruned groups are the first convolution of every residual
block (as He et al. 2017 and DCP do for ResNets); for VGG every conv layer.

CPU scale: a training subset, few epochs, 512 calibration images and a short
fine-tune; numbers are for one seed and are indicative only.

Usage:
    nice python benchmarks/reconstruction.py [--models resnet20,vgg_small]
        [--train-images 8000] [--epochs 3] [--finetune-epochs 1]
        [--finetune-images 4000] [--calib-images 512] [--test-images 2000]

Writes ``benchmarks/results/reconstruction.json`` and ``.md``.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
from _common import (
    accuracy,
    compile_model,
    fashion_mnist_subset,
    finetune,
    parser,
    write_results,
)

import tfcomp
from tfcomp.graph import DependencyGraph
from tfcomp.pruning.dcp import dcp_prune
from tfcomp.pruning.lasso import lasso_prune
from tfcomp.pruning.plan import make_plan
from tfcomp.pruning.reconstruction.engine import reconstruction_targets
from tfcomp.pruning.surgery import prune_channels

MODELS = {
    "resnet20": lambda: tfcomp.zoo.resnet(depth=20),
    "vgg_small": lambda: tfcomp.zoo.vgg_small(),
}
STAGES = {"resnet20": 3, "vgg_small": 2}  # the paper's P for ResNet / VGG


def pruned_groups(name, model) -> list:
    graph = DependencyGraph(model)
    out = []
    for g in graph.prunable_groups:
        prods = {m.layer for m in g.producers}
        if name.startswith("resnet"):
            # block-internal channels only (conv1 of each residual block)
            if len(prods) == 1 and next(iter(prods)).endswith("_conv1"):
                out.append(g.id)
        elif all(graph.layer(p).__class__.__name__ == "Conv2D"
                 for p in prods):
            out.append(g.id)
    return out


def train_base(name, x, y, epochs, seed, cache):
    path = os.path.join(cache, f"{name}_{len(x)}_{epochs}_{seed}.keras")
    if cache and os.path.exists(path):
        print(f"[{name}] loading trained model from {path}")
        return keras.saving.load_model(path, compile=False), 0.0
    keras.utils.set_random_seed(seed)
    model = MODELS[name]()
    compile_model(model, keras.optimizers.Adam(1e-3), jit_compile=False)
    t = time.time()
    model.fit(x, y, batch_size=128, epochs=epochs, verbose=2)
    took = time.time() - t
    if cache:
        os.makedirs(cache, exist_ok=True)
        model.save(path)
    return model, took


def run_model(name, data, args) -> dict:
    (x, y), (xf, yf), (xc, yc), (xt, yt) = data
    base, train_s = train_base(name, x, y, args.epochs, args.seed,
                               args.cache)
    base_acc = accuracy(base, xt, yt)
    dense_macs = tfcomp.profile(base).macs
    groups = pruned_groups(name, base)
    print(f"[{name}] base accuracy {base_acc:.4f}, {dense_macs:,} MACs, "
          f"{len(groups)} pruned groups")
    graph = DependencyGraph(base)
    rows = []

    def record(method, fn):
        print(f"[{name}] {method} ...", flush=True)
        t = time.time()
        small, plan = fn()
        prune_s = time.time() - t
        acc0 = accuracy(small, xt, yt)
        t = time.time()
        finetune(small, xf, yf, args.finetune_epochs, args.seed,
                 nesterov=True, jit_compile=False)
        ft_s = time.time() - t
        acc1 = accuracy(small, xt, yt)
        macs = tfcomp.profile(small).macs
        row = {"method": method, "acc_before_ft": acc0,
               "acc_after_ft": acc1, "macs": int(macs),
               "macs_fraction": macs / dense_macs,
               "params": int(small.count_params()),
               "prune_seconds": prune_s, "finetune_seconds": ft_s}
        print(f"[{name}] {method}: before FT {acc0:.4f}, after FT "
              f"{acc1:.4f}, MACs {macs / dense_macs:.3f}, prune "
              f"{prune_s:.0f}s", flush=True)
        rows.append(row)
        return plan

    found, _ = reconstruction_targets(graph, 0.5, target_macs=args.target,
                                      groups=groups)
    ratio = found.ratio
    ratios = {g: ratio for g in groups}
    if "lasso" in args.methods:
        record("LASSO + LS", lambda: lasso_prune(
            base, xc, ratios, samples_per_image=10, seed=args.seed,
            verbose=0))
    if "l1ls" in args.methods:
        record("L1 + LS", lambda: lasso_prune(
            base, xc, ratios, selector="l1", seed=args.seed, verbose=0))
    if "dcp" in args.methods:
        record("DCP (lam=1)", lambda: dcp_prune(
            base, (xc, yc), ratios, num_stages=STAGES[name], lam=1.0,
            finetune_epochs=1, sgd_steps=args.dcp_sgd_steps,
            grad_batches=2, seed=args.seed, verbose=0))
    for crit, label in (("l1", "L1 filter norm (no refit)"),
                        ("fpgm", "FPGM one-shot (no refit)")):
        if crit not in args.methods:
            continue

        def hard(crit=crit):
            plan = make_plan(graph, ratio=ratios, importance=crit,
                             seed=args.seed)
            return prune_channels(base, plan), plan
        record(label, hard)
    return {"model": name, "base_accuracy": base_acc,
            "dense_macs": int(dense_macs), "pruned_groups": groups,
            "uniform_ratio": ratio, "train_seconds": train_s,
            "macs_target": args.target, "rows": rows}


def to_markdown(res: dict) -> str:
    cfg = res["config"]
    lines = [
        "# Reconstruction-based channel pruning (Fashion-MNIST)",
        "",
        f"One run, seed {cfg['seed']}, CPU ({res['machine']}). Training "
        f"subset: {cfg['train_images']} images, {cfg['epochs']} epochs "
        f"(Adam 1e-3); calibration: {cfg['calib_images']} training images "
        f"(10 locations per image for LASSO / L1+LS); fine-tune: "
        f"{cfg['finetune_epochs']} epoch(s) on {cfg['finetune_images']} "
        f"images (SGD 0.01, Nesterov 0.9, batch 128), then BatchNorm "
        f"statistics re-estimated on them (`recalibrate_batchnorm`); test: "
        f"{cfg['test_images']} test images. Every method prunes the same "
        f"groups to the same kept counts (same architecture, "
        f"~{cfg['target']:.0%} of the dense MACs). Small budgets: the "
        "numbers are indicative, not paper-scale.",
        "",
    ]
    for m in res["models"]:
        lines += [
            f"## {m['model']}",
            "",
            f"Dense: accuracy {m['base_accuracy']:.4f}, "
            f"{m['dense_macs']:,} MACs. Pruned groups "
            f"({len(m['pruned_groups'])}): "
            f"{', '.join(m['pruned_groups'])}; uniform ratio "
            f"{m['uniform_ratio']:.3f}.",
            "",
            "| method | acc. before FT | acc. after FT | MACs (x dense) "
            "| params | prune s | FT s |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in m["rows"]:
            lines.append(
                f"| {r['method']} | {r['acc_before_ft']:.4f} | "
                f"{r['acc_after_ft']:.4f} | {r['macs_fraction']:.3f} | "
                f"{r['params']:,} | {r['prune_seconds']:.0f} | "
                f"{r['finetune_seconds']:.0f} |")
        lines.append("")
    lines += [
        "Notes:",
        "",
        "- DCP includes its own per-stage fine-tuning (1 epoch on the "
        "calibration images, with the auxiliary heads) before and during "
        "selection; the others see the calibration images only through "
        "the reconstruction. The column *acc. after FT* is after the same "
        "common fine-tune for all.",
        "- FPGM is used here as a one-shot criterion on the trained model "
        "(hard pruning, no reconstruction). The paper's soft schedule "
        "(re-selection every epoch over 100+ epochs, "
        "`tfcomp.pruning.FPGMPruning`) does not fit this budget.",
        "- L1 + LS ranks a group's channels by the L1 norm of the "
        "consumers' input slices (AMC's official per-layer step), then "
        "refits like LASSO + LS.",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = parser(__doc__)
    p.add_argument("--models", default="resnet20")
    p.add_argument("--methods", default="lasso,l1ls,dcp,l1,fpgm")
    p.add_argument("--train-images", type=int, default=8000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--finetune-images", type=int, default=4000)
    p.add_argument("--finetune-epochs", type=int, default=1)
    p.add_argument("--calib-images", type=int, default=512)
    p.add_argument("--test-images", type=int, default=2000)
    p.add_argument("--target", type=float, default=0.5)
    p.add_argument("--dcp-sgd-steps", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", default=os.path.join(
        tempfile.gettempdir(), "tfcomp_bench_cache"))
    args = p.parse_args(argv)
    args.methods = args.methods.split(",")
    (x, y), test = fashion_mnist_subset(args.train_images, args.test_images,
                                        args.seed)
    # calibration and fine-tune images come from the training subset
    xc, yc = x[:args.calib_images], y[:args.calib_images]
    xf, yf = x[:args.finetune_images], y[:args.finetune_images]
    data = ((x, y), (xf, yf), (xc, yc), test)
    res = {
        "benchmark": "reconstruction",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "python": sys.version.split()[0], "keras": keras.__version__,
        "config": {"train_images": args.train_images, "epochs": args.epochs,
                   "finetune_images": args.finetune_images,
                   "finetune_epochs": args.finetune_epochs,
                   "calib_images": args.calib_images,
                   "test_images": args.test_images, "target": args.target,
                   "dcp_sgd_steps": args.dcp_sgd_steps, "seed": args.seed},
        "models": [],
    }
    t0 = time.time()
    for name in args.models.split(","):
        if name not in MODELS:
            p.error(f"unknown model {name!r}; choose from {sorted(MODELS)}")
        res["models"].append(run_model(name, data, args))
        res["total_seconds"] = time.time() - t0
        write_results(args.out, "reconstruction", res, to_markdown(res))
    print(to_markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
