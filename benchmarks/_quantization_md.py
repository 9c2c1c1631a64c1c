"""The markdown (and json) of ``benchmarks/quantization.py``: rendered
from the rows, targets, notes and meta the json keeps, so a ``--rows kd``
merge re-renders the whole file from the merged json.

Example:
    >>> write_report("benchmarks/results", rows, targets, notes, meta)
"""

from __future__ import annotations

import _kd
from _common import write_results

__all__ = ["write_report"]


def _fmt(v, f="{:.2f}"):
    return "" if v is None else f.format(v)


def write_report(out, rows, targets, notes, meta, name="quantization"):
    clean = [{k: v for k, v in r.items() if k != "tflite"} for r in rows]
    payload = {"meta": meta, "rows": clean, "targets": targets,
               "notes": notes}
    float_bops = rows[0]["bops"]
    lines = [
        "# Quantization: PTQ, QAT, DNAS mixed precision, TFMOT peer",
        "",
        (f"Measured {meta['date']} on {meta['machine']}, load average "
        f"{meta['load_avg_start']:.1f} at start; total wall time "
        f"{meta['wall_s'] / 60:.1f} min."),
        "",
        (f"Fashion-MNIST, zoo ResNet-20 (`tfcomp.zoo.resnet(depth=20)`), CPU "
        f"scale: a random subset of {meta['train']} training images and "
        f"{meta['test']} test images (seed {meta['seed']}); float trained "
        f"{meta['float_epochs']} epochs (Adam {meta['lr']}), every QAT row "
        f"fine-tuned {meta['qat_epochs']} epochs from that checkpoint (Adam "
        f"{meta['qat_lr']}), DNAS searched {meta['dnas_epochs']} epoch(s); "
        f"batch {meta['batch']}, `jit_compile=False`; one run, no averaging."),
        "",
        "Reproduce: `" + meta["command"] + "`",
        "",
        ("| row | Keras acc % | TFLite acc % | top-1 agreement % | BOPs | "
        "BOPs vs float | weight KB (true bits) | TFLite KB | latency ms | "
        "epoch-time ratio |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['row']} | {_fmt(r['keras_acc'] and r['keras_acc'] * 100)}"
            f" | {_fmt(r.get('tflite_acc') and r['tflite_acc'] * 100)} | "
            f"{_fmt(r.get('agreement') and r['agreement'] * 100)} | "
            f"{r['bops']:.3e} | {r['bops'] / float_bops:.4f} | "
            f"{r['weight_bytes'] / 1024:.1f} | {r['tflite_bytes'] / 1024:.1f}"
            f" | {_fmt(r.get('latency_ms'), '{:.3f}')} | "
            f"{_fmt(r.get('epoch_ratio'))} |")
    lines += [
        "",
        ("Keras acc: the float / QAT Keras model on the test subset. TFLite "
        "acc and top-1 agreement: the `.tflite` file (float32 for the float "
        "row, full-integer int8 otherwise) and how often its argmax equals "
        "that of the Keras model it came from (the float model for PTQ). "
        "BOPs = sum of MACs x w_bits x a_bits over conv / dense layers "
        "(a_bits = input bits); weight KB = kernels at w_bits plus 32-bit "
        "biases (BN folded). Latency: `measure_latencies` (ai_edge_litert, "
        "1 thread, batch 1, files interleaved over 3 rounds, median). "
        "Epoch-time ratio: training step time / float step time, measured "
        "side by side after all training (`train_on_batch` on one batch, "
        "the float and QAT models alternating in 6 rounds of 8 steps, "
        "median; TFMOT the same way against its own tf_keras float model in "
        "its subprocess)."),
        "",
        "## Targets",
        "",
        "| target | measured | met |",
        "|---|---|:---:|",
    ]
    for t in targets:
        met = {True: "yes", False: "**no**", None: "n/a"}[t["met"]]
        lines.append(f"| {t['target']} | {t['value']} | {met} |")
    dn = next((r for r in rows if r["row"] == "DNAS mixed"), None)
    if dn:
        hist = dn.get("dnas_history") or [{}]
        lines += [
            "",
            "## DNAS",
            "",
            (f"Search {dn['dnas_search_s']:.0f} s "
            f"({dn['search_epoch_ratio']:.2f}x a float epoch per search "
            f"epoch); budget = BOPs of uniform 4-bit "
            f"({dn['dnas_budget_bops']:.4g}); argmax architecture "
            f"{dn['dnas_argmax_bops']:.4g} BOPs before the budget walk; final "
            f"expected bits w {hist[-1].get('expected_w_bits', 0):.2f} / a "
            f"{hist[-1].get('expected_a_bits', 0):.2f}."),
            "",
            ("Search settings (CPU-scale deviations, see the module doc): "
             "candidates w in {2, 3, 4, 5, 6, 8} x a in {4, 8}; theta "
             f"Adam({meta.get('dnas_theta_lr', 0.01)}); temperature 5 -> "
             f"{hist[-1].get('temperature', 5.0):.2f} over "
             f"{len(hist)} epoch(s)."),
            "",
            ("Sample, train, keep the best (`dnas.select_best`, 1 QAT epoch "
             "each on 80% of the training subset, accuracy on the other "
             f"20%, {dn.get('dnas_select_s', 0):.0f} s): " + ", ".join(
                 f"{c['kind']} {100 * c['val_accuracy']:.2f}% at "
                 f"{c['bops']:.4g} BOPs"
                 for c in dn.get("dnas_candidates", []))),
            "",
            "Kept bits (w/a): " + ", ".join(
                f"{k} {v[0]}/{v[1]}" for k, v in dn["bits"].items()),
        ]
    tm = next((r for r in rows if r["row"] == "TFMOT 8-bit QAT"), None)
    if tm:
        lines += [
            "",
            "## TFMOT",
            "",
            (f"tensorflow-model-optimization {tm['tfmot_version']} "
            "(`pip install 'tensorflow-model-optimization>=0.8' "
            "'tf-keras>=2.16'`, the `[tfmot]` extra), subprocess with "
            "`TF_USE_LEGACY_KERAS=1`, the same architecture in tf_keras "
            "with the float checkpoint's weights, default 8-bit scheme, "
            "converted full-integer (int8 I/O). Its step time is "
            f"{tm['tfmot_own_ratio']:.2f}x its own tf_keras float step "
            f"({tm['tfmot_float_step_s'] * 1e3:.1f} ms; the two timed side "
            "by side in the subprocess) and "
            f"{tm['epoch_ratio']:.2f}x tfcomp's float step (timed in "
            "another process, indicative only)."),
        ]
    notes = list(notes) + [
        ("The float row is the checkpoint every other row starts from; the "
        "QAT rows train for more epochs in total, so the fair float "
        "reference for the 8-bit target is 'float + the same fine-tune "
        "epochs' (second target row)."),
        ("QAT folds BatchNorm statically into the conv weights (moving "
        "statistics), so a tfcomp QAT step has no BN and can be cheaper "
        "than a float step (ratio < 1); TFMOT keeps BN in training."),
        ("int8 files of b-bit QAT models: where a tensor with several "
        "consumers (a residual block's input) is observed at 8 bits and "
        "feeds b-bit layers, the exporter requantizes it to the b-bit grid "
        "through an exact identity depthwise op, so the file computes what "
        "the QAT model computes (agreement column)."),
    ]
    kd = next((r for r in rows if r.get("kd")), None)
    if kd:
        notes.append(f"{kd['row']}: " + _kd.SETUP.format(
            what="4-bit QAT", **kd["kd"]))
    run = meta.get("kd_run")
    if run:
        ref = run["float_reference"]
        notes.append(
            _kd.run_note(run, "4-bit QAT", "float checkpoint")
            + " Their latency and epoch-time columns come from that run "
            f"(its float reference: step {ref['step_s'] * 1e3:.1f} ms, "
            f"float32 TFLite {ref['latency_ms']:.3f} ms).")
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    lines.append("")
    write_results(out, name, payload, "\n".join(lines),
                  default=float)
