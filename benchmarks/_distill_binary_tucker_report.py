"""Report helpers of ``benchmarks/distill_binary_tucker.py``: the KD
part's table and verdicts, and the ``mean | std | per seed`` cells.

Example:
    >>> stats([0.5, 0.7])
    '0.6000 | 0.1000 | 0.5000, 0.7000'
"""

from __future__ import annotations

import numpy as np

__all__ = ["kd_markdown", "stats"]


def stats(values) -> str:
    """``mean | std | per value`` cells of a table row."""
    return (f"{np.mean(values):.4f} | {np.std(values):.4f} | "
            + ", ".join(f"{v:.4f}" for v in values))



def kd_markdown(rows, ref, soft, t_acc, t_s, cfg, kd_settings) -> str:
    """The kd part's table and verdicts from its rows (re-renderable from
    the results json: ``rows`` without the reference row)."""
    methods = [("plain", None)] + [(m, (a, t)) for m, a, t in kd_settings]
    md = [f"Teacher: ResNet-8, {cfg['epochs']} epochs (Adam, cosine) on "
          f"the {cfg['train']} fine-tune images. On them: training accuracy "
          f"{soft['train_accuracy']:.4f}; mean max-probability "
          + ", ".join(f"{v:.3f} at T {k.rsplit('T', 1)[1]}"
                      for k, v in soft.items() if k.startswith("mean"))
          + ". KD rows: `Distiller(alpha, temperature)` with "
          "(1 - alpha) CE + alpha T^2 KL; \"KD\" = alpha 0.9, T 10 "
          "(Hinton et al.: high weight on the soft term; keras.io's KD "
          "example: 0.1 on the hard loss, T 10), fixed before the run; "
          "the previous run's alpha 0.5, T 4 is kept as a second row. "
          f"{cfg['seeds']} fine-tune seeds (data order) per row, the same "
          "seeds for every method.", "",
          "| student | fine-tune | MACs vs teacher | acc before | "
          "mean acc after | std | per seed | s / run |",
          "|---|---|---|---|---|---|---|---|",
          f"| teacher (dense) | - | 1.00 | - | {t_acc:.4f} | - | - | "
          f"{t_s:.0f} |"]
    wins = []
    for name in ("FPGM 50% MACs", "QAT 4-bit"):
        for method, _ in methods:
            sel = [r for r in rows if r["student"] == name
                   and r["method"] == method]
            md.append(f"| {name} | {method} | {sel[0]['macs_ratio']:.2f} | "
                      f"{sel[0]['accuracy_before']:.4f} | "
                      f"{stats([r['accuracy'] for r in sel])} | "
                      f"{np.mean([r['seconds'] for r in sel]):.0f} |")
        acc = {m: [r["accuracy"] for r in rows if r["student"] == name
                   and r["method"] == m] for m, _ in methods}
        for method, _ in methods[1:]:
            diff = np.subtract(acc[method], acc["plain"])
            wins.append(
                f"* {name}: {method} - plain = {diff.mean() * 100:+.2f} "
                f"points (mean of {len(diff)} paired seeds; per seed "
                + ", ".join(f"{d * 100:+.2f}" for d in diff)
                + f"; {'met' if diff.mean() >= 0 else 'not met'}: "
                "KD >= plain)")
    md.append(f"| {ref['student']} | plain | 1.00 | {t_acc:.4f} | "
              f"{ref['accuracy']:.4f} | - | seed 0 | {ref['seconds']:.0f} |")
    md += [""] + wins
    return "\n".join(md)
