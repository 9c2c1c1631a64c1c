"""The markdown report of ``benchmarks/pruning.py``.

Example:
    >>> md = render_markdown(read_json("benchmarks/results/pruning.json"))
"""

from __future__ import annotations

import _kd

__all__ = ["render_markdown"]


_LABELS = {
    "dense": "Dense baseline (E+F epochs)",
    "fpgm": "FPGM soft, 50% MACs",
    "l1": "L1 soft, 50% MACs",
    "random": "Random (fixed) soft, 50% MACs",
    "scratch_b": "Scratch-B of the FPGM architecture",
    "magnitude_50": "Magnitude 50% (unstructured)",
    "magnitude_80": "Magnitude 80% (unstructured)",
    "tfmot_80": "TFMOT prune_low_magnitude 80% (peer)",
    "fpgm_pair_plain": "FPGM soft, 50% MACs (plain, beside + KD)",
    "fpgm_kd": "FPGM soft, 50% MACs + KD",
}


def _fmt(v, spec):
    return "n/a" if v is None else format(v, spec)


def render_markdown(res: dict) -> str:
    s = res["settings"]
    lines = [
        "# Pruning during model.fit: Fashion-MNIST, ResNet-20",
        "",
        f"CPU scale: {s['train']} training images (random subset), "
        f"{s['test']} test images; dense {s['epochs']} epochs (E), "
        f"fine-tune {s['finetune']} epochs (F), batch {s['batch']}, Adam "
        f"(lr {s['lr']} dense / {s['finetune_lr']} fine-tune). All pruned "
        "rows start from the same E-epoch dense checkpoint; the dense row "
        "trains the same F extra epochs without pruning. Latency: float32 "
        "TFLite, 1 thread, interleaved rounds, ratio vs the dense file "
        f"measured in the same run ({res['latency_runtime']}). Epoch time: "
        "median steady-state epoch (first epoch excluded) / the dense row's. "
        f"Machine: {res['machine']['cpu_count']} shared cores, load "
        f"average {res['machine']['load_average'][0]:.1f} at the end; "
        f"total {res['runtime_s'] / 60:.1f} min.",
        "",
        "| Method | Test acc | MACs | MACs ratio | Params | TFLite fp32 KB "
        "| TFLite int8 KB | Latency ratio (fp32) | Epoch time ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, r in res["rows"].items():
        extra = ""
        if "fp32_sparse_bytes" in r:
            extra = (f" (sparse-encoded: {r['fp32_sparse_bytes'] / 1024:.0f}"
                     f" KB, {r.get('sparse_latency_ratio', 0):.2f}x)")
        lines.append(
            f"| {_LABELS.get(key, key)} | {r['accuracy']:.4f} | "
            f"{r['macs'] / 1e6:.2f}M | {r['macs_ratio']:.2f} | "
            f"{r['params']:,} | {r['fp32_bytes'] / 1024:.0f}{extra} | "
            f"{_fmt(r.get('int8_bytes') and r['int8_bytes'] / 1024, '.0f')} "
            f"| {r['latency_ratio']:.2f} | "
            f"{_fmt(r.get('epoch_time_ratio'), '.2f')} |")
    rows = res["rows"]
    lines += ["", "## Checks", ""]
    if "fpgm" in rows:
        gap = (rows["dense"]["accuracy"] - rows["fpgm"]["accuracy"]) * 100
        lines.append(
            f"* FPGM at {rows['fpgm']['macs_ratio']:.0%} MACs is "
            f"{gap:+.2f} points below dense (target: within 1.0): "
            f"{'met' if gap <= 1.0 else 'NOT met'}; rate "
            f"{rows['fpgm']['rate']:.3f} per group; masked model accuracy "
            f"{rows['fpgm']['masked_accuracy']:.4f} = stripped model.")
        lines.append(
            f"* Latency ratio {rows['fpgm']['latency_ratio']:.2f}x beside "
            f"MACs ratio {rows['fpgm']['macs_ratio']:.2f}x (channels are "
            "physically removed).")
        ratio = rows["fpgm"].get("epoch_time_ratio")
        if ratio is not None:
            lines.append(
                f"* FPGM callback + masked layers: {ratio:.2f}x the plain "
                f"epoch time (target <= 1.05): "
                f"{'met' if ratio <= 1.05 else 'NOT met'} (shared machine: "
                "timings are noisy).")
    if "fpgm_kd" in rows:
        kd = rows["fpgm_kd"]
        text, met = _kd.check_line(kd["accuracy"],
                                   rows["fpgm_pair_plain"]["accuracy"],
                                   "FPGM", percent=False)
        lines.append(f"* KD >= plain: {text}: {'met' if met else 'NOT met'}. "
                     + _kd.SETUP.format(what="FPGM soft pruning", **kd["kd"]))
    run = res.get("kd_run")
    if run:
        lines.append(
            "* " + _kd.run_note(run, "FPGM", "E-epoch dense checkpoint")
            + " Their latency / epoch-time ratios are against a dense "
            "F-epoch reference of that run (accuracy "
            f"{run['dense_reference']['accuracy']:.4f}).")
    for key in ("magnitude_50", "magnitude_80"):
        if key in rows:
            r = rows[key]
            lines.append(
                f"* {_LABELS[key]}: achieved sparsity {r['sparsity']:.3f}; "
                f"latency {r['latency_ratio']:.2f}x and file "
                f"{r['fp32_bytes'] / rows['dense']['fp32_bytes']:.2f}x of "
                "dense: unstructured zeros in dense storage buy neither "
                "speed nor size on this runtime.")
    x = res["xnnpack"]
    lines += [
        "", "## XNNPACK sparse inference (CADNN-style)", "",
        "A network satisfying XNNPACK's sparse-subgraph rules (3x3 stride-2 "
        "stem on 3 channels with padding 1, 3x3 depthwise, 1x1 convs, "
        "spatial mean) trained on Fashion-MNIST tiled to 3 channels, then "
        "`MagnitudePruning(pattern=\"xnnpack\")` (1x1 convs only, blocks of "
        f"{x['block_size'][1]} output channels) to "
        f"{x['pointwise_sparsity']:.2f} pointwise sparsity. Accuracy "
        f"{x['dense_accuracy']:.4f} dense -> {x['sparse_accuracy']:.4f} "
        "sparse. Timed as float32 TFLite (1 thread) at several input "
        "resolutions (same weights):", "",
        "| Resolution | File | Bytes | Median ms | Ratio vs dense |",
        "|---|---|---|---|---|",
    ]
    for hw, d in x["resolutions"].items():
        for k, v in d.items():
            lines.append(f"| {hw}x{hw} | {k} | {v['bytes']:,} | "
                         f"{v['median_ms']:.3f} | {v['ratio']:.2f} |")
    best = min(v["sparse_sparse_encoding"]["ratio"]
               for v in x["resolutions"].values())
    lines += ["", (
        f"Best sparse-encoded ratio: {best:.2f}x. "
        + ("XNNPACK's sparse path gives a speed-up on this CPU."
           if best < 0.95 else
           "No speed-up on this CPU: XNNPACK's sparse (NCHW) kernels are "
           "tuned for ARM/WebAssembly, and on x86 with AVX the dense NHWC "
           "kernels win (XNNPACK disabled the sparse rewrite on AVX x86 at "
           "one point for this reason). Structured (channel) pruning is "
           "what turns into latency here."))]
    if res["notes"]:
        lines += ["", "## Notes", ""] + [f"* {n}" for n in res["notes"]]
    return "\n".join(lines) + "\n"
