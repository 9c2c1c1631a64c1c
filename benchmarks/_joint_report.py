"""The markdown of ``benchmarks/joint.py``, rendered from its json alone
(``--from-json`` re-renders).

Example:
    >>> md = to_markdown(read_json("benchmarks/results/joint.json"))
"""

from __future__ import annotations

__all__ = ["to_markdown"]

ROWS = ("uniform", "prune_first", "bits_first", "joint_allocator",
        "joint_search")
LABELS = {"uniform": "uniform (width x bits grid)",
          "prune_first": "sequential: prune, then bits",
          "bits_first": "sequential: bits, then prune",
          "joint_allocator": "joint allocator (exact program)",
          "joint_search": "joint search (DDPG, warm-started)"}


def _chosen(row):
    """The objective a row's point came from (None before the pool)."""
    return row.get("objective_name") or row.get("chosen_objective")


def to_markdown(res) -> str:
    s = res.get("setup", {})
    lines = ["# Joint pruning + quantization at one hardware budget", "",
             f"Fashion-MNIST; common QAT fine-tune {s.get('ft_steps')} "
             f"batches of {s.get('batch')} from {s.get('ft_n')} images"
             + (f", SGD lr {s['ft_lr']:g} cosine-annealed, momentum 0.9"
                if "ft_lr" in s else "") +
             f", x {s.get('ft_seeds')} seeds, test on "
             f"{s.get('test_n')} images. Reproduce: `nice .venv/bin/python "
             "benchmarks/joint.py`. Method and deviations: the script's "
             "docstring.", ""]
    lines += [f"- {n}" for n in res.get("notes", [])]
    if res.get("notes"):
        lines.append("")
    for part, p in res.get("parts", {}).items():
        lines += [f"## {part}: {p['arch']} on {p['hardware']}, budget "
                  f"{p['budget']:g} of dense 8/8 latency (float "
                  f"{100 * p['float']:.2f}%)", ""]
        lines += [f"*{n}*" for n in p.get("notes", [])]
        if p.get("notes"):
            lines.append("")
        if "unreachable" in p:
            lines += [f"Unreachable: {p['unreachable']}", ""]
            continue
        lines += ["| row | cost | accuracy % (mean ± std) | seeds | time s |",
                  "|---|---|---|---|---|"]
        for k in ROWS:
            r = p["rows"].get(k)
            if r is None:
                continue
            label = LABELS[k] + (f" [{r['picked']}]" if "picked" in r
                                 else "")
            lines.append(
                f"| {label} | {r['cost']:.4f} | {100 * r['accuracy']:.2f} ± "
                f"{100 * r['std']:.2f} | "
                + ", ".join(f"{100 * a:.2f}" for a in r["seeds"])
                + f" | {r['seconds']:.0f} |")
        ss = p.get("baseline", {}).get("sensitivity_seconds", {})
        if ss:
            lines.append("")
            lines.append(f"- sensitivities (shared by the sequential and "
                         f"joint rows, not in their times): pruning "
                         f"{ss['pruning']:.0f} s, quantization "
                         f"{ss['quantization']:.0f} s")
        sel = p.get("selection", {"prune_weights": [1.0, 0.25, 0.0625],
                                  "on": "the 256 calibration images"})
        lines.append("- objective: " + {
            "distortion": "distortion (pruning: output MSE after the refit;"
                          " quantization: output distortion, w + a)",
            "loss": "loss (pruning: loss increase after the refit; "
                    "quantization: HAWQ-V2 Hessian, w + a)",
            "both": "both (the candidates of the distortion and the loss "
                    "objectives in one pool)"}[
            p.get("objective", "distortion")])
        steps = p.get("select_steps", s.get("select_steps"))
        how = ("top-1 agreement with the float model" if sel.get(
            "how", "agreement") == "agreement" else "accuracy after "
            + (f"{steps} batches of the common fine-tune's schedule"
               if steps else "the common fine-tune") + " (one seed)")
        lines.append(f"- pruning-term weights {sel['prune_weights']}; the "
                     f"allocator's and the sequential rows' point chosen by "
                     f"{how} on {sel['on']}")
        picks = [f"{LABELS[k].split(' (')[0]}: {_chosen(r)}, weight "
                 f"{r['prune_weight']:g}" for k, r in p["rows"].items()
                 if k in ("joint_allocator", "prune_first", "bits_first")
                 and "prune_weight" in r and _chosen(r)]
        if picks:
            lines.append("- chosen (objective, pruning-term weight): "
                         + "; ".join(picks))
        g = p.get("gap", {})
        if "gap" in g:
            lines.append(f"- alternating solver: objective {g['objective']:.4g}"
                         f" vs exact {g['exact']:.4g} (gap "
                         f"{100 * g['relative']:.2f}%, exact proved optimal: "
                         f"{g['exact_proved_optimal']}, "
                         f"{g['exact_seconds']:.1f} s)")
        search = p.get("rows", {}).get("joint_search", {})
        ep = search.get("episode_accuracies")
        if ep and ep[0] is not None:
            lines.append(_episodes_line(ep, search))
        t = p.get("targets", {})
        for key, what, need in (("vs_sequential", "best sequential", 0.5),
                                ("vs_uniform", "best uniform", 1.0)):
            if f"{key}_points" in t:
                lines.append(f"- joint vs {what}: "
                             f"{t[f'{key}_points']:+.2f} points (target "
                             f">= +{need}) -> "
                             f"{'met' if t[f'{key}_met'] else 'not met'}")
        lines.append("")
    return "\n".join(lines) + "\n"


def _episodes_line(ep, search) -> str:
    """The search's per-episode held-out accuracies in one line: the warm
    start, the others' range, how many beat it and where the best was."""
    rest = [x for x in ep[1:] if x is not None]
    head = (f"- joint search: {search.get('trials', len(ep))} episodes"
            + (f" ({search['warmup']} random warm-up)" if "warmup" in search
               else "") + "; held-out accuracy after the fine-tune: the "
            f"warm start {100 * ep[0]:.1f}%")
    if not rest:
        return head
    above = [i for i, x in enumerate(ep) if i and x is not None
             and x > ep[0]]
    best = max(range(len(ep)), key=lambda i: -1.0 if ep[i] is None
               else ep[i])
    return (head + f"; the other {len(rest)} {100 * min(rest):.1f}-"
            f"{100 * max(rest):.1f}%, {len(above)} above the warm start"
            + (f", the best at episode {best + 1}" if above else ""))
