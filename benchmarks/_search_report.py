"""Targets and markdown of ``benchmarks/search.py``: both computed from
the results dict alone, so ``--from-json`` re-renders ``search.md`` from
``search.json``.

Example:
    >>> res["targets"] = compute_targets(res["pruning"], res["latency"],
    ...                                  res["haq"])
    >>> text = to_markdown(res)
"""

from __future__ import annotations

import _search_setup as cfg

__all__ = ["to_markdown", "compute_targets"]


def _acc(v):
    return f"{100 * v:.2f}"


def _after(r):
    """Mean accuracy after the fine-tune, with the per-seed values."""
    seeds = r.get("test_accuracy_after_ft_seeds")
    text = _acc(r["test_accuracy_after_ft"])
    if seeds and len(seeds) > 1:
        text += " (" + " / ".join(_acc(v) for v in seeds) + ")"
    return text


def _target_text(label, v, h, u=None) -> str:
    """``HAQ x % -> met`` for one evaluation, the mean of the data orders
    and the long fine-tune (``u``: where the uniform numbers are)."""
    u = u or v

    def verdict(ok):
        return f"**{_met(ok)}**"

    text = (f"{label} {_acc(v['haq_acc'])} % vs {_acc(u['uniform_acc'])} % "
            f"-> {verdict(v['met'])}")
    if "seeds_met" in v:
        text += (f"; the same fine-tune, mean of "
                 f"{len(h['long_finetune']['seeds'])} data orders: uniform "
                 f"{_acc(v['uniform_seeds'])} %, {label} "
                 f"{_acc(v['haq_seeds'])} % -> {verdict(v['seeds_met'])}")
    if "long_met" in v:
        text += (f"; after the longer fine-tune below: uniform "
                 f"{_acc(v['uniform_long'])} %, {label} "
                 f"{_acc(v['haq_long'])} % -> {verdict(v['long_met'])}")
    return text


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _haq_section(h: dict, t3: dict, s: dict, heading: str,
                 intro: str = "") -> list:
    """Markdown of one HAQ comparison (uniform widths vs HAQ per
    accelerator, targets, re-evaluation, policies)."""
    steps = h["steps"]
    lo, hi = h["val_range"]
    out = [
        "", heading, "", *([intro, ""] if intro else []),
        (f"Reward of a trial: accuracy on {hi - lo} held-out training "
         f"images (numbers {lo}-{hi - 1}) after {steps} fine-tune batches "
         f"of 128 from the first {s['ft_n']} training images"
         + (" (one epoch, as the paper)."
            if steps * 128 >= s["ft_n"] else " (paper: one epoch).")
         + (" This run is older than the current code: its resource wall "
            "lowered the activation widths of all layers before any weight "
            "width (the official wall, now ours, lowers each layer's "
            "activation then weight width, from the last layer back)."
            if h.get("wall") == "activations_first" else "")), "",
        ("Uniform policies (every searched weight and activation at b "
         "bits; first layer weights and last layer at 8) get the same "
         "quantization-aware fine-tune as a HAQ trial. Latency ratio = "
         "latency / latency at 8/8 bits on each accelerator model."), "",
        ("| policy | Bit Fusion latency ratio | BISMO latency ratio | "
         "test acc | val acc |"),
        "|---|---|---|---|---|",
    ]
    for bits, r in h["uniform"].items():
        out.append(f"| uniform {bits}-bit | "
                   f"{r['cost_ratio']['bitfusion_edge']:.3f} | "
                   f"{r['cost_ratio']['bismo']:.3f} | "
                   f"{_acc(r['test_accuracy'])} | "
                   f"{_acc(r['val_accuracy'])} |")
    for hw, v in h["hardware"].items():
        f = v["haq"]
        bf = f"{f['cost_ratio']:.3f}" if hw == "bitfusion_edge" else "-"
        bi = f"{f['cost_ratio']:.3f}" if hw == "bismo" else "-"
        out.append(f"| HAQ for {hw} (budget {f['budget']:.3f}, "
                   f"{f['trials']} episodes, {f['search_seconds']:.0f} s) | "
                   f"{bf} | {bi} | {_acc(f['test_accuracy'])} | "
                   f"{_acc(f['val_accuracy'])} |")
        r = v.get("rescored")
        if r:
            bf = f"{r['cost_ratio']:.3f}" if hw == "bitfusion_edge" else "-"
            bi = f"{r['cost_ratio']:.3f}" if hw == "bismo" else "-"
            out.append(
                f"| HAQ for {hw}, re-scored: trial {r['trial_id']}"
                + (" (the search's pick)" if r["trial_id"] == _best_trial_id(r)
                   else "") + f" of the best {len(r['ranked'])} (val mean "
                f"{_acc(r['val_mean'])} over {len(s['ft_seeds'])} orders, "
                f"{r['seconds']:.0f} s) | {bf} | {bi} | "
                f"{_acc(r['test_accuracy'])} | {_acc(r['val_accuracy'])} |")
    out += ["", (f"Target HAQ >= uniform at equal cost (HAQ at the latency "
                 f"of uniform {h['haq_at_bits']}-bit on each accelerator; "
                 "the most accurate uniform width that fits that budget):"),
            ""]
    for hw, v in t3.items():
        out.append(
            f"- {hw}: best uniform within the budget = "
            f"{v['best_uniform']}-bit ({_acc(v['uniform_acc'])} %); "
            + _target_text("HAQ", v, h))
        if "rescored" in v:
            out.append(f"- {hw}, re-scored pick: "
                       + _target_text("HAQ", v["rescored"], h, v))
    out.append("- Reward noise or the agent? `benchmarks/haq_agent.py` "
               "runs the same searches on a synthetic accuracy landscape "
               "with exact rewards (MobileNetV2-tiny's costs, up to 600 "
               "episodes): `haq_agent.md`.")
    lf = h.get("long_finetune")
    if lf:
        seeded = all("short_finetune" in r for r in lf["rows"].values())
        out += [
            "", "### The same policies evaluated again", "",
            ("Each policy quantized and calibrated again (test accuracy "
             "right after calibration); then a search trial's fine-tune "
             f"({steps} batches) repeated with "
             f"{len(lf.get('seeds', []))} data orders (mean, per-seed "
             "values in brackets: one such evaluation of a low-bit model "
             "moves by about a point between data orders, as rounding flips "
             "at code boundaries compound), and fine-tuned "
             f"{lf['steps']} batches of 128 from the 20k training images "
             "with the same SGD." if seeded else
             "Each policy quantized and calibrated again (test accuracy "
             f"right after calibration), then fine-tuned {lf['steps']} "
             "batches of 128 from the 20k training images with the same "
             f"SGD, instead of a search trial's {steps}."), "",
            ("| policy | test acc after calibration only | "
             + (f"after {steps} batches | " if seeded else "")
             + f"test acc after {lf['steps']} batches |"),
            "|---|---|---|" + ("---|" if seeded else "")]
        for label, r in lf["rows"].items():
            mid = ""
            if seeded:
                mid = (_acc(r["short_finetune"]) + " (" + " / ".join(
                    _acc(v) for v in r["short_finetune_seeds"]) + ") | ")
            out.append(f"| {label} | {_acc(r['calibration_only'])} | "
                       f"{mid}{_acc(r['long_finetune'])} |")
    cols = {}
    for hw, v in h["hardware"].items():
        cols[hw] = v["haq"]["policy"]
        if "rescored" in v:
            cols[f"{hw}, re-scored"] = v["rescored"]["policy"]
    out += ["", "### HAQ policies found (w_bits/a_bits per layer)", "",
            "| layer | " + " | ".join(cols) + " |",
            "|---|" + "---|" * len(cols)]
    for layer in next(iter(h["hardware"].values()))["layers"]:
        cells = ["{}/{}".format(*pol[layer]) for pol in cols.values()]
        out.append(f"| {layer} | " + " | ".join(cells) + " |")
    out.append("")
    return out


def _mbv2_intro(res: dict) -> str:
    h = res["haq_mbv2"]
    b = h["baseline"]
    u = h["uniform"][h["haq_at_bits"]]["cost_ratio"]
    return (
        f"The same protocol on the HAQ paper's own kind of model: zoo "
        f"MobileNetV2-tiny (alpha {cfg.MBV2_ALPHA}, 28x28x1, "
        f"{b['macs'] / 1e6:.2f} M MACs, {b['params']} parameters), trained "
        f"like the ResNet-20: test accuracy {_acc(b['test_accuracy'])} %. "
        "Its depthwise, expansion and projection layers differ in cost and "
        "in sensitivity, which is what a per-layer search can exploit. "
        f"{h['episodes']} episodes ({h['warmup']} warm-up), noise decay "
        f"{h['sigma_decay']:.3f} per episode. On the Bit Fusion model this "
        "network's latency hardly depends on the bit-widths (outputs are "
        "written to DRAM at 32 bits, and its narrow layers leave the array "
        f"idle: uniform {h['haq_at_bits']}-bit costs "
        f"{u['bitfusion_edge']:.3f} of 8/8), so the Bit Fusion budget "
        "barely constrains that search; BISMO's "
        f"({u['bismo']:.3f} of 8/8) does.")


def _haq_reading(h: dict, s: dict) -> list:
    """Honest-reading bullets of one HAQ comparison."""
    out = []
    lf = h.get("long_finetune")
    if lf:
        r4 = lf["rows"].get(f"uniform {h['haq_at_bits']}-bit", {})
        haq_rows = {k: v for k, v in lf["rows"].items()
                    if k.startswith("HAQ")}
        long4 = r4.get("long_finetune", float("nan"))
        out.append(
            f"- Right after calibration uniform {h['haq_at_bits']}-bit "
            f"scores {_acc(r4.get('calibration_only', float('nan')))} % and "
            "the HAQ policies "
            + ", ".join(f"{_acc(v['calibration_only'])} % ({k})"
                        for k, v in haq_rows.items())
            + f"; after {lf['steps']} fine-tune batches instead of a "
            f"trial's {h['steps']}: uniform {_acc(long4)} %, HAQ "
            + ", ".join(f"{_acc(v['long_finetune'])} % ({k})"
                        for k, v in haq_rows.items())
            + ". The search ranks policies by the short fine-tune; whether "
            "its winner stays ahead after a longer one is what this row "
            "checks.")
    rs = [v["rescored"] for v in h["hardware"].values()
          if "rescored" in v]
    if lf and all("short_finetune" in r for r in lf["rows"].values()):
        best_val = {hw: v["float_val_accuracy"] + v["haq"]["best_reward"] / 10
                    for hw, v in h["hardware"].items()}
        out.append(
            "- Winner's curse: HAQ's best trial scored "
            + " / ".join(f"{_acc(a)} % ({hw})" for hw, a in best_val.items())
            + " on the validation split during the search, but "
            + " / ".join(f"{_acc(v['haq']['val_accuracy'])} %"
                         for v in h["hardware"].values())
            + " rebuilt from the same policy (uniform "
            f"{h['haq_at_bits']}-bit: "
            f"{_acc(h['uniform'][h['haq_at_bits']]['val_accuracy'])} %). "
            f"The best of {h.get('episodes', s['haq_episodes'])} "
            "evaluations that each move by about a point between data "
            "orders is biased upwards."
            + (" `HAQTuner.rescore` (not in the paper) re-evaluates the "
               f"best {len(rs[0]['ranked'])} trials over "
               f"{len(rs[0]['ranked'][0]['accuracies'])} data orders and "
               "picks the best mean: "
               + "; ".join(
                   f"{hw}: trial {r['trial_id']} (search "
                   f"{_acc(r['search_accuracy'])} %, mean "
                   f"{_acc(r['val_mean'])} %; the search's best trial "
                   + next(f"{_acc(x['accuracy'])} %" for x in r["ranked"]
                          if x["trial_id"] == _best_trial_id(r)) + ")"
                   for hw, r in ((k, v["rescored"]) for k, v in
                                 h["hardware"].items()
                                 if "rescored" in v))
               + "." if rs else
               " Re-evaluating the best few trials with several seeds "
               "before picking one is the remedy (`HAQTuner.rescore`, not "
               "in the paper; not run on these searches)."))
    return out


def _best_trial_id(r):
    """The search's own best trial among the re-scored ones."""
    return max(r["ranked"], key=lambda x: x["search_accuracy"])["trial_id"]


def to_markdown(res: dict) -> str:
    s, b = res["setup"], res["baseline"]
    out = [
        "# AMC / HAQ search on Fashion-MNIST (ResNet-20, CPU scale)", "",
        ("Reproduce: `nice .venv/bin/python "
         "benchmarks/search.py` (one run, seed 0; the trained baseline is "
         "cached in `~/.cache/tfcomp/search`, `--retrain` retrains it)."),
        "",
        (f"Total wall time {res['wall_seconds'] / 60:.1f} min on "
         f"{s['cpus']} shared cores (load average at start/end "
         f"{s['load_start']:.1f}/{s['load_end']:.1f}; other jobs were "
         "running, so times are indicative only)."), "",
        "## Setup and deviations from the papers", "",
        (f"- Baseline: zoo ResNet-20 (16/32/64 channels, 28x28x1), Adam "
         f"1e-3, {s['train_epochs']} epochs on the first {s['train_n']} "
         f"training images: test accuracy {_acc(b['test_accuracy'])} %, "
         f"{b['macs'] / 1e6:.2f} M MACs."),
        (f"- Search reward: AMC: accuracy on {s['val_n']} held-out "
         "training images, no fine-tuning, R = -error; HAQ: accuracy on "
         "held-out training images after a short fine-tune, R = 0.1 "
         "(acc_q - acc_float), with the split and fine-tune stated in "
         "each HAQ section. Reported accuracies are on the whole test set "
         "(10k)."),
        (f"- AMC: {s['amc_episodes']} episodes ({s['amc_warmup']} warm-up) "
         "instead of the paper's 800 (100); latency-targeted AMC "
         f"{s['lat_episodes']} ({s['lat_warmup']}). Preserve ratio in "
         "[0.2, 1], counts rounded up to multiples of 8 (official code), "
         f"L1 channel selection + least-squares refit on {s['cal_n']} "
         "images."),
        (f"- RandomSearch / BayesianOptimization: {s['rs_trials']} / "
         f"{s['bo_trials']} trials ({s['bo_initial']} initial random "
         "points) over the same space; the same budget wall projects their "
         "proposals."),
        (f"- Same short fine-tune for every pruned model: 1 epoch of SGD "
         f"(0.01, momentum 0.9) on {s['ft_n']} training images, then "
         "BatchNorm statistics re-estimated on those images; repeated with "
         f"{len(s.get('ft_seeds', [0]))} data-order seeds from the same "
         "pruned model and averaged (per-seed values in brackets) "
         "(`tfcomp.pruning.recalibrate_batchnorm`). Without that step "
         "(the previous run of this benchmark) the 40-step fine-tune left "
         "the moving averages two-thirds stale and could lower accuracy: "
         "uniform pruning went from 75.4 to 74.7 %."),
        (f"- HAQ: {s['haq_episodes']} episodes ({s['haq_warmup']} warm-up) "
         "instead of 600 (20), exploration noise decaying by "
         f"{s.get('haq_sigma_decay', 0.99):.3f} per episode so that it "
         "reaches 0.05 at the last episode (paper: 0.99 per episode over "
         "580); each trial fine-tunes for the number of batches of 128 "
         "stated in its section (paper: one epoch). Uniform "
         "baselines and HAQ policies get exactly that fine-tune. First "
         "layer weights and the last layer stay at 8 bits in all of "
         "them. A search evaluates its trials on one QAT model whose "
         "bit-widths are variables (`make_bits_dynamic`, the same numbers "
         "as a fresh `quantize_model` model, tested; 2x faster per trial "
         "than tracing a new graph each time); the policies reported below "
         "are rebuilt with `quantize_model`. HAQ's resource wall lowers a "
         "bit-width to the next one that is cheaper (the paper's wall "
         "lowers by one bit, also where that saves nothing: on Bit Fusion "
         "3-bit operands cost as 4-bit and 5-7 as 8-bit; on BISMO both "
         "walls are identical)."), "",
        "## 1. Channel pruning at 50 % MACs", "",
        ("| method | MMACs | MACs ratio | test acc before FT | test acc "
         "after FT | val reward | trials | search time |"),
        "|---|---|---|---|---|---|---|---|",
    ]
    p = res["pruning"]
    for name in ("uniform", "amc", "random_search",
                 "bayesian_optimization"):
        r = p[name]
        out.append(
            f"| {name} | {r['macs'] / 1e6:.2f} | "
            f"{r['macs'] / b['macs']:.3f} | "
            f"{_acc(r['test_accuracy_before_ft'])} | "
            f"{_after(r)} | "
            f"{r.get('best_reward', r.get('val_reward')):.4f} | "
            f"{r['trials']} | {r['search_seconds']:.0f} s |")
    t1 = res["targets"]
    out += [
        "", (f"Target AMC >= uniform accuracy at equal MACs: before "
             f"fine-tune **{_met(t1['amc_ge_uniform_before_ft'])}**"
             f", after fine-tune **{_met(t1['amc_ge_uniform_after_ft'])}**."),
        "", "Channels kept per searched group (AMC | uniform):", "",
        "| group | size | AMC | uniform | RS | BO |", "|---|---|---|---|---|---|",
    ]
    for g, k in p["amc"]["keep"].items():
        out.append(f"| {g} | {p['group_sizes'][g]} | {k} | "
                   f"{p['uniform']['keep'][g]} | "
                   f"{p['random_search']['keep'][g]} | "
                   f"{p['bayesian_optimization']['keep'][g]} |")
    lat = res["latency"]
    la = res["amc_latency"]
    out += [
        "", "## 2. AMC with a latency target (measured TFLite table)", "",
        (f"Table: {la['table_entries']} single-layer float TFLite models "
         f"timed on this host in {la['table_seconds']:.0f} s (channel "
         "counts on multiples of 8, so every count the search visits is "
         f"measured). Target: {cfg.BUDGET:.0%} of the dense latency; with "
         "every group at the lower bound the table predicts "
         f"{lat['min_cost_ratio']:.3f} of dense. All models below were "
         "timed as whole TFLite models (ai_edge_litert, 1 thread, median "
         "of 200 runs in 10 interleaved rounds)."), "",
        ("| model | MMACs | predicted ms | measured ms | measured / dense | "
         "test acc before FT | test acc after FT |"),
        "|---|---|---|---|---|---|---|",
    ]
    rows = {"dense": {"macs": b["macs"],
                      "test_accuracy_before_ft": b["test_accuracy"],
                      "test_accuracy_after_ft": b["test_accuracy"]},
            "amc_latency": la, "amc (MACs target)": p["amc"],
            "uniform (MACs target)": p["uniform"]}
    keys = {"dense": "dense", "amc_latency": "amc_latency",
            "amc (MACs target)": "amc", "uniform (MACs target)": "uniform"}
    dense_ms = lat["measured_ms"]["dense"]
    for name, r in rows.items():
        k = keys[name]
        out.append(
            f"| {name} | {r['macs'] / 1e6:.2f} | "
            f"{lat['predicted_ms'][k]:.3f} | {lat['measured_ms'][k]:.3f} | "
            f"{lat['measured_ms'][k] / dense_ms:.3f} | "
            f"{_acc(r['test_accuracy_before_ft'])} | "
            f"{_after(r)} |")
    out += [
        "", (f"Target latency {lat['target_ms']:.3f} ms (50 % of the measured "
             f"dense {dense_ms:.3f} ms); latency-targeted AMC measured "
             f"{lat['measured_ms']['amc_latency']:.3f} ms = "
             f"{lat['ratio_to_target']:.3f} x target. Target <= 1.05 x: "
             f"**{_met(res['targets']['latency_within_5pct'])}**."),
    ]
    out += _haq_section(
        res["haq"], res["targets"]["haq"], s,
        "## 3. HAQ vs uniform bit-widths at equal latency (ResNet-20)")
    if "haq_mbv2" in res:
        out += _haq_section(
            res["haq_mbv2"], res["targets"]["haq_mbv2"], s,
            "## 4. HAQ on MobileNetV2 (the paper's model)",
            _mbv2_intro(res))
    if "haq_mbv2_at5" in res:
        out += _haq_section(
            res["haq_mbv2_at5"], res["targets"]["haq_mbv2_at5"], s,
            "## 5. HAQ on MobileNetV2 at the latency of uniform 5-bit "
            "(BISMO)",
            "The same MobileNetV2 and protocol as section 4, with the "
            "BISMO budget at uniform 5-bit's latency: there a policy can "
            "give the sensitive layers 6-8 bits and pay with 4-bit "
            "operands, not 2- or 3-bit ones. (On Bit Fusion uniform 5-bit "
            "costs as much as 8/8, so that budget constrains nothing and "
            "is not searched.)")
    h = res["haq"]
    out += [
        "## Honest reading", "",
        ("- One run, one seed, few episodes: differences of a few tenths "
         "of a percent between methods are within run-to-run noise (the "
         "test set has 10k images: one standard error is about 0.3 %)."),
        ("- Bit Fusion costs 5-8-bit operands as 8-bit, so the uniform 5- "
         "and 6-bit budgets equal the 8/8 latency there; BISMO's cost "
         "scales with w*a, so its budgets are strict."),
        (f"- {s['amc_episodes']} (AMC, {s['amc_warmup']} warm-up), "
         f"{s['lat_episodes']} (latency AMC, {s['lat_warmup']}) and "
         f"{s['haq_episodes']} (HAQ, {s['haq_warmup']}) episodes are a "
         "small fraction of the papers' 800 / 600: the agents are far "
         "from converged, and these results say little about the policies "
         "they would learn with the papers' budgets."),
        ("- The short fine-tune is the same for every model and not tuned "
         "per model."),
    ]
    out += _haq_reading(h, s)
    if "haq_mbv2" in res:
        out += ["- MobileNetV2: " + x[2:] for x in
                _haq_reading(res["haq_mbv2"], s)]
    if "haq_mbv2_at5" in res:
        out += ["- MobileNetV2 at the 5-bit budget: " + x[2:] for x in
                _haq_reading(res["haq_mbv2_at5"], s)]
    if p["random_search"]["keep"] == p["bayesian_optimization"]["keep"]:
        out.append(
            "- BayesianOptimization's best trial is one of its initial "
            "random points, drawn from the same seed as RandomSearch's: the "
            "two rows are the same model.")
    minutes = res["wall_seconds"] / 60
    parts = ", ".join(f"{k} {v / 60:.1f} min"
                      for k, v in res.get("part_seconds", {}).items())
    out += [
        (f"- Run time {minutes:.1f} min ({parts or 'one run'}; load average "
         f"~{s['load_start']:.0f}-{s['load_end']:.0f} on 2 shared cores, "
         "other benchmarks ran beside it; the baseline was cached, training "
         "it takes about 8 min more)."), ""]
    return "\n".join(out)


def compute_targets(pruning, lat, haq_res, mbv2_res=None,
                    at5_res=None) -> dict:
    """The benchmark's targets from its results (also for --from-json)."""
    targets = {
        "amc_ge_uniform_before_ft": pruning["amc"]["test_accuracy_before_ft"]
        >= pruning["uniform"]["test_accuracy_before_ft"],
        "amc_ge_uniform_after_ft": pruning["amc"]["test_accuracy_after_ft"]
        >= pruning["uniform"]["test_accuracy_after_ft"],
        "latency_within_5pct": lat["ratio_to_target"] <= 1.05,
        "haq": _haq_targets(haq_res),
    }
    if mbv2_res:
        targets["haq_mbv2"] = _haq_targets(mbv2_res)
    if at5_res:
        targets["haq_mbv2_at5"] = _haq_targets(at5_res)
    return targets


def _haq_targets(haq_res) -> dict:
    """HAQ >= the most accurate uniform width within its budget, per
    accelerator: the search's pick and (when run) the re-scored pick, each
    on one evaluation, on the mean of the data orders and after the long
    fine-tune."""
    lrows = haq_res.get("long_finetune", {}).get("rows", {})
    targets = {}
    for hw, v in haq_res["hardware"].items():
        budget = v["haq"]["budget"]
        fits = {bits: r for bits, r in haq_res["uniform"].items()
                if r["cost_ratio"][hw] <= budget * (1 + 1e-9)}
        best = max(fits, key=lambda k: (fits[k]["test_accuracy"], -k))
        u = lrows.get(f"uniform {best}-bit")

        def check(found, row, u=u, acc=fits[best]["test_accuracy"]):
            t = {"haq_acc": found["test_accuracy"],
                 "met": found["test_accuracy"] >= acc}
            if u and row:
                t.update(uniform_long=u["long_finetune"],
                         haq_long=row["long_finetune"],
                         long_met=row["long_finetune"] >= u["long_finetune"])
            if u and row and "short_finetune" in u:
                t.update(uniform_seeds=u["short_finetune"],
                         haq_seeds=row["short_finetune"],
                         seeds_met=row["short_finetune"]
                         >= u["short_finetune"])
            return t

        targets[hw] = {"best_uniform": best,
                       "uniform_acc": fits[best]["test_accuracy"],
                       **check(v["haq"], lrows.get(f"HAQ for {hw}"))}
        if "rescored" in v:
            targets[hw]["rescored"] = check(
                v["rescored"], lrows.get(f"HAQ for {hw}, re-scored"))
    return targets

