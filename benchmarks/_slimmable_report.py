"""Targets and markdown of ``benchmarks/slimmable.py``, from its json alone.

Example:
    >>> md = render_markdown(read_json("benchmarks/results/slimmable.json"))
"""

from __future__ import annotations

import numpy as np

__all__ = ["compute_targets", "render_markdown"]

MODELS = ("resnet20", "mbv2")
SUPERNET_LABELS = {
    "snet": "S-Net (switchable BN, every width on labels)",
    "snet_kd": "S-Net + in-place distillation",
    "us": "US-Net (shared BN affine, max / min / 2 random widths, labels)",
}


def compute_targets(res: dict) -> dict:
    """``{"<model>_widths": {width: met}, "<model>_autoslim": {target:
    met}}``: gap >= -1 point; AutoSlim >= uniform + 0.5 point."""
    out = {}
    targets = res["settings"]["TARGETS"]
    for name in MODELS:
        r = res.get(name, {})
        if "widths" in r:
            out[f"{name}_widths"] = {
                w: row["gap_points"] >= -1.0
                for w, row in r["widths"]["widths"].items()
                if row["gap_points"] is not None}
        if "search" in r:
            rows = r["search"]["rows"]
            for method in ("autoslim", "autoslim_mac"):
                out[f"{name}_{method}"] = {
                    f"{t:g}": rows[f"{method}@{t:g}"]["accuracy"]
                    >= rows[f"uniform@{t:g}"]["accuracy"] + 0.005
                    for t in targets if f"{method}@{t:g}" in rows}
    return out


def _met(ok):
    return "met" if ok else "NOT met"


def _seeds(accs):
    return " / ".join(f"{a:.4f}" for a in accs)


def _mean_std(accs):
    return f"{np.mean(accs):.4f} ± {np.std(accs):.4f}"


def _seed_cell(accs):
    """``mean ± std (seed / seed / ...)``."""
    return f"{_mean_std(accs)} ({_seeds(accs)})"


def _target_line(text, ok, key=str) -> list:
    return ["", f"Target: {text}: " + ", ".join(
        f"{key(k)} {_met(v)}" for k, v in ok.items()) + "."]


def _header(s, res) -> list:
    return [
        "# Slimmable networks and AutoSlim: Fashion-MNIST",
        "",
        "Reproduce: `cd /work/main && nice .venv/bin/python "
        "benchmarks/slimmable.py` (one run; trained models cached in "
        "`~/.cache/tfcomp/slimmable`; `--parts resnet20_search` reruns one "
        "part).",
        "",
        f"CPU scale: {s['N']} random training images, {s['EPOCHS']} epochs "
        f"for every trained model (supernets, widths alone, retrained "
        f"architectures) but the US-Net AutoSlim searches "
        f"({s.get('US_EPOCHS', s['EPOCHS'])} epochs), batch {s['BATCH']}, "
        f"Adam {s['LR']} with cosine "
        f"decay; test accuracy on {s['TEST']} test images; AutoSlim / AMC "
        f"search on {s['VAL']} held-out training images; BN recalibrated on "
        f"{s['CAL']} training images. Supernets (4 widths per batch; "
        f"the S-Net {s.get('SUPERNET_SEEDS', 1)} seed(s), the others one): "
        "the S-Net (private BN per width, the 4 widths every "
        "batch, labels), the same with in-place distillation (widths below "
        "the max learn from the max width's detached output) and the "
        "US-Net AutoSlim searches (shared BN affine, BN slots at the 4 "
        "widths, max, min and 2 random widths per batch, labels). Widths "
        f"alone: {list(s['ALONE_WIDTHS'])}, {s['SEEDS']} seeds at widths "
        f"{list(s['SEED_WIDTHS'])}; retrained architectures: "
        f"{s['RETRAIN_SEEDS']} seed(s). AutoSlim step {s['AS_STEP']:.0%} "
        f"of a group, loss on {s['AS_BATCHES']} batches of {s['AS_BATCH']}; "
        f"AMC {s['AMC_EPISODES']} episodes ({s['AMC_WARMUP']} warm-up), "
        f"round_to 1; FPGM {s['FPGM_EPOCHS']} epoch(s) of soft pruning "
        "from the dense model. Latency: float32 TFLite, 1 thread, batch 1, "
        f"median of {s['LAT_RUNS']} runs x {s['LAT_ROUNDS']} interleaved "
        f"rounds. Total {res['wall_seconds'] / 60:.1f} min on "
        f"{res['machine']['cpu_count']} shared cores (load "
        f"{res['machine']['load_start']:.1f} -> "
        f"{res['machine']['load_end']:.1f}); the numbers compare methods "
        "under one small budget, they do not reproduce the papers'.",
    ]


def _widths(title, w, ok) -> list:
    sn = w["supernet"]
    others = w.get("other_supernets", {})
    times = "; ".join(
        f"{k} {i['train_seconds']:.0f} s" + (" (cached)" if i["cached"]
                                             else "")
        for k, i in {"snet": sn, **others}.items())
    lines = [
        "", f"## {title}: one slimmable model vs each width alone", "",
        f"Supernet training: {times}; latency runtime "
        f"{w['latency_runtime']}. The gap and the target are the S-Net's "
        "(means over seeds; the exported width is the first S-Net's).", "",
        "| width | MACs | MACs ratio | params | S-Net acc (mean ± std; "
        "seeds) | "
        + "".join(f"{k} acc | " for k in others)
        + "alone acc (mean ± std; seeds) | gap (points) | export max diff "
        "| TFLite ms | latency ratio |",
        "|---|---|---|---|---|" + "---|" * len(others) + "---|---|---|---|"
        "---|"]
    for k, row in w["widths"].items():
        alone = ("not trained" if row["alone_accuracy"] is None
                 else _seed_cell(row["alone_seeds"]))
        gap = ("n/a" if row["gap_points"] is None
               else f"{row['gap_points']:+.2f}")
        snet = (_seed_cell(row["slimmable_seeds"])
                if len(row.get("slimmable_seeds", [])) > 1
                else f"{row['slimmable_accuracy']:.4f}")
        other = "".join(f"{row.get('other_supernets', {}).get(o, 0):.4f} | "
                        for o in others)
        lines.append(
            f"| {k} | {row['macs'] / 1e6:.2f}M | {row['macs_ratio']:.3f} | "
            f"{row['params']:,} | {snet} | {other}"
            f"{alone} | {gap} | {row['export_max_abs_diff']:.1e} | "
            f"{row['latency_ms']:.3f} | {row['latency_ratio']:.2f} |")
    lines += _target_line("S-Net within 1 point of the width alone (mean "
                          "of its seeds) at every width", ok)
    return lines


def _search(title, sr, ok, ok_mac=None) -> list:
    lines = [
        "", f"## {title}: AutoSlim vs uniform vs FPGM vs AMC", "",
        f"Dense (width 1.0 alone, seed 0): {sr['dense_accuracy']:.4f}, "
        f"{sr['dense_macs'] / 1e6:.2f}M MACs, {sr['dense_latency_ms']:.3f} "
        f"ms. AutoSlim: {len(sr['autoslim_history']) - 1} greedy steps on "
        "the US-Net.", "",
        "| target | method | MACs ratio | params | retrained acc (mean ± "
        "std; seeds) | search s | TFLite ms | latency ratio | notes |",
        "|---|---|---|---|---|---|---|---|---|"]
    for row in sr["rows"].values():
        notes = []
        if row.get("same_as"):
            notes.append(f"same channels as {row['same_as']}")
        if "soft_pruned_accuracy" in row:
            notes.append("soft-pruned (inherited weights) "
                         f"{row['soft_pruned_accuracy']:.4f}")
        if "best_reward" in row:
            notes.append(f"search reward {row['best_reward']:.4f}")
        accs = row["seed_accuracies"]
        lines.append(
            f"| {row['target']:.0%} | {row['method']} | "
            f"{row['macs_ratio']:.3f} | {row['params']:,} | "
            f"{_seed_cell(accs)} | "
            f"{row['search_seconds']:.0f} | {row['latency_ms']:.3f} "
            f"| {row['latency_ratio']:.2f} | {'; '.join(notes)} |")
    lines += _target_line("AutoSlim >= uniform + 0.5 point after the same "
                          "retraining (means)", ok,
                          key=lambda k: f"{float(k):.0%}")
    if ok_mac:
        lines += _target_line(
            "autoslim_mac (the greedy ranked by loss increase per MAC "
            "removed, NetAdapt's idea, not the paper's) >= uniform + 0.5 "
            "point", ok_mac, key=lambda k: f"{float(k):.0%}")
    lines += ["", "Channels per layer (output channels):", "",
              "| layer | " + " | ".join(sr["rows"]) + " |",
              "|---|" + "---|" * len(sr["rows"])]
    layers = list(next(iter(sr["rows"].values()))["channels"])
    for layer in layers:
        lines.append(f"| {layer} | " + " | ".join(
            str(row["channels"].get(layer, "")) for row in
            sr["rows"].values()) + " |")
    return lines


def render_markdown(res: dict) -> str:
    """The results markdown of ``res`` (the benchmark's json)."""
    s = res["settings"]
    lines = _header(s, res)
    if res.get("quick"):
        lines += ["", "**Quick smoke run (`--quick`): tiny data and "
                  "models, the numbers mean nothing.**"]
    tg = res["targets"]
    for name in MODELS:
        r = res.get(name)
        if not r:
            continue
        title = (f"ResNet-{s['RESNET_DEPTH']}" if name == "resnet20"
                 else f"MobileNetV2-tiny (alpha {s['MBV2_ALPHA']})")
        if "widths" in r:
            lines += _widths(title, r["widths"], tg.get(f"{name}_widths", {}))
        if "search" in r:
            lines += _search(title, r["search"],
                             tg.get(f"{name}_autoslim", {}),
                             tg.get(f"{name}_autoslim_mac"))
    secs = ", ".join(f"{k} {v / 60:.1f} min"
                     for k, v in res["part_seconds"].items())
    se = 100 * np.sqrt(0.85 * 0.15 / s["TEST"])
    lines += [
        "", "## Honest reading", "",
        f"- {s['TEST']} test images give a standard error of about "
        f"{se:.1f} point per accuracy; the seed spread of one recipe is in "
        "the tables.",
        "- In-place distillation (the US-Nets rule, the library's default) "
        "measured worse than labels for every width at this horizon (the "
        "S-Net + in-place distillation column); a likely cause, not measured: "
        "early in training the max width's outputs are poor targets. The "
        "papers train hundreds of epochs; the S-Net and "
        "US-Net here train every width on labels (the S-Net paper's rule).",
        "- The US-Net AutoSlim searches trains twice as long as the other "
        "models and AutoSlim steps 10 % of a group (the previous run, "
        "session 16: 3 epochs, 20 %). Its middle widths rose (width 0.5: "
        "ResNet-20 78.2 -> 82.9, MobileNetV2-tiny 72.7 -> 79.6) but "
        "AutoSlim vs uniform after retraining moved -0.65 -> -0.83 "
        "(ResNet-20 50%), +0.42 -> +0.42 (25%), -0.34 -> +0.40 "
        "(MobileNetV2-tiny 50%), -1.54 -> -1.99 (25%): a more accurate "
        "supernet did not make the greedy's architectures better after "
        "retraining from scratch (measured). Likely, not measured: the "
        "loss with inherited weights ranks channel cuts differently from "
        "accuracy after retraining (ResNet-20: the greedy keeps the "
        "residual streams wide and cuts the last blocks' inner convs) "
        "(those numbers: 3 retraining seeds).",
        "- Session 19: 5 retraining seeds (3 before) and the autoslim_mac "
        "row (the same greedy on the same US-Net, each step ranked by its "
        "loss increase per MAC removed; not the paper's). AutoSlim vs "
        "uniform: ResNet-20 50% -0.57, 25% +0.49; MobileNetV2-tiny 50% "
        "+0.13, 25% -1.50. autoslim_mac vs uniform: -0.53, +0.79 (met), "
        "-0.20, -0.24. Per MAC, the greedy lands at the target's MACs "
        "(MobileNetV2-tiny 25%: 0.246 vs 0.234) and both 25% rows rose "
        "(+0.30, +1.26 points over the paper's criterion); at 50% neither "
        "criterion beats uniform width. The gaps are within about two "
        "standard errors of a 5-seed mean difference (seed std 0.2-1.3 "
        "points).",
        "- Session 23: the MobileNetV2-tiny widths part rerun with 5 "
        "S-Net seeds and 5 seeds per width alone (3 and 3 before; the "
        "ResNet-20 widths table is still the earlier 3-seed run: its "
        "cells list their seeds; `--parts mbv2_widths`, 87 min beside "
        "other work on the 2 cores). The 3-seed gaps were -0.62, -0.71, "
        "-1.09, -0.38 (one low S-Net seed); at 5 seeds +1.43, -1.39, "
        "-1.09, -1.36: the S-Net trails the widths alone by 1.1-1.4 "
        "points at 0.5, 0.75 and 1.0 (std of a 5-seed mean difference "
        "about 0.6), so the target fails on MobileNetV2-tiny at this "
        "horizon (3 epochs; the paper trains 250). The US-Net (6 epochs) "
        "is above the widths alone at 0.25 and 1.0: training "
        "length, not the slimmable layers, is the likely limit (not "
        "measured at equal epochs). The snet_kd and us supernets were "
        "retrained too (one seed each); the MobileNetV2-tiny AutoSlim "
        "rows still come from session 19's US-Net.",
        "- The paper's own MobileNetV2 anchor (session 24, not measured "
        "here): the released S-MobileNet v2 (JiahuiYu/slimmable_networks "
        "model zoo: top-1 error 29.5 / 31.1 / 35.6 / 40.3 at widths 1.0 / "
        "0.75 / 0.5 / 0.35, 300 / 209 / 97 / 59 MFLOPs) against the "
        "individually trained MobileNetV2 of the same MFLOPs (tensorflow/"
        "models slim checkpoints: 71.8 / 69.8 / 65.4 / 60.3 top-1) trails "
        "by 1.3 / 0.9 / 1.0 / 0.6 points: the S-Net paper's MobileNetV2 "
        "misses this issue's 1-point target at width 1.0 (and is at it at "
        "0.5) after its full ImageNet schedule. The measured MobileNetV2-"
        "tiny gaps (-1.36 / -1.09 / -1.39 at 1.0 / 0.75 / 0.5) are of the "
        "same size. The paper's US-MobileNet v2 (sandwich rule + in-place "
        "distillation; the model zoo: 28.5 / 30.4 / 34.9 / 37.7) is at most "
        "0.3 below the individual models at any width (2.0 above at 0.35)"
        ": the remedy the "
        "authors published, which at this 3-epoch horizon measured worse "
        "(the in-place distillation column).",
        "- Session 24 probe, training length (not in the tables; "
        "`benchmarks/slimmable_horizon.py --epochs 6 --seed 0` and "
        "`--seed 1`: this benchmark's S-Net and widths alone, same data, "
        "recipe and functions, 6 epochs on both sides instead of 3; about "
        "12 min per seed on 2 idle cores). MobileNetV2-tiny, mean of seeds "
        "0 and 1, gaps at widths 0.25 / 0.5 / 0.75 / 1.0: 3 epochs -0.50 / "
        "-1.65 / -1.65 / -1.10 (these two seeds of the table's runs), 6 "
        "epochs +0.73 / -0.75 / -0.35 / -0.13 (seed 0: +0.93 / -1.83 / "
        "-1.07 / -0.17; seed 1: +0.53 / +0.33 / +0.40 / -0.10). Doubling "
        "the training closes the gap by 0.8-1.3 points at every width and "
        "puts the 2-seed means within 1 point everywhere: the likely limit "
        "at 3 epochs is training length, not the slimmable layers. Two "
        "seeds only (seed spread about 1 point): the target is not called "
        "met on this.",
        "- Masked slimmable layers cost full-width MACs while training "
        "(static shapes), and the sandwich rule runs 4 widths per batch: a "
        "supernet epoch costs about 2-4 full-width epochs here.",
        "- The search rows land at different MACs below each target "
        "(AutoSlim stops at the first greedy step under it, AMC's wall "
        "and the uniform bisection at their own rounding): read accuracy "
        "beside the MACs ratio column.",
        f"- Part times: {secs}.", ""]
    return "\n".join(lines)
