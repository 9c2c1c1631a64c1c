"""Markdown + PNG reports of compression results (matplotlib, Agg).

The input is a results dict (or a JSON file holding one) as the demo and
benchmarks write it::

    {"rows": [{"stage": "baseline float32", "accuracy": 0.91,
               "macs": 4.1e7, "latency_ms": 0.8, "accel_ms": 0.02}, ...],
     "channels": {"stem_conv": [8, 16], ...},          # kept, total
     "bits": {"s1b1_conv1": [4, 6], ...},             # w_bits, a_bits
     "hardware_table": {"name": "BitFusion-edge",
                        "layers": [...], "bits": [2, 3, ...],
                        "latency_ms": [[...], ...]}}   # layers x bits

Every key but ``rows`` is optional; each present key gets a plot.

Example:
    >>> write_report("artifacts/results.json", "artifacts/report")
    'artifacts/report/report.md'
"""

from __future__ import annotations

import json
import os

import numpy as np

__all__ = ["write_report", "pareto_front"]


def pareto_front(costs, accs) -> list[int]:
    """Indices of points no other point beats on both cost and accuracy.

    Example:
        >>> pareto_front([1, 2, 3], [0.5, 0.9, 0.8])
        [0, 1]
    """
    order = np.argsort(costs, kind="stable")
    front, best = [], -np.inf
    for i in order:
        if accs[i] > best:
            front.append(int(i))
            best = accs[i]
    return front


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _scatter(rows, key, label, path, scale=1.0):
    pts = [(r[key] / scale, r["accuracy"], r["stage"]) for r in rows
           if r.get(key) is not None and r.get("accuracy") is not None]
    if len(pts) < 1:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    xs = np.array([p[0] for p in pts])
    ys = np.array([p[1] for p in pts])
    ax.scatter(xs, ys, s=40, color="tab:blue", zorder=3)
    for x, y, name in pts:
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4),
                    fontsize=8)
    front = pareto_front(xs, ys)
    ax.plot(xs[front], ys[front], "--", color="tab:orange",
            label="Pareto front", zorder=2)
    ax.set_xlabel(label)
    ax.set_ylabel("top-1 accuracy")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _bars(mapping: dict, title: str, ylabel: str, path: str, pair_names):
    if not mapping:
        return None
    plt = _plt()
    names = list(mapping)
    a = np.array([v[0] for v in mapping.values()], dtype=float)
    b = np.array([v[1] for v in mapping.values()], dtype=float)
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(names)), 4.2))
    idx = np.arange(len(names))
    ax.bar(idx - 0.2, a, 0.4, label=pair_names[0])
    ax.bar(idx + 0.2, b, 0.4, label=pair_names[1])
    ax.set_xticks(idx, names, rotation=70, ha="right", fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _heatmap(table: dict, path: str):
    if not table or not table.get("latency_ms"):
        return None
    plt = _plt()
    data = np.asarray(table["latency_ms"], dtype=float)
    fig, ax = plt.subplots(figsize=(6, max(3, 0.25 * data.shape[0])))
    im = ax.imshow(data, aspect="auto", cmap="viridis")
    ax.set_yticks(range(len(table["layers"])), table["layers"], fontsize=7)
    ax.set_xticks(range(len(table["bits"])), table["bits"])
    ax.set_xlabel(table.get("bits_label", "bits (w = a)"))
    ax.set_title(f"{table.get('name', 'hardware')} latency per layer (ms)")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _markdown_table(rows) -> str:
    cols = [("stage", "stage", "{}", 1), ("accuracy", "top-1", "{:.4f}", 1),
            ("macs", "MACs (M)", "{:.2f}", 1e6),
            ("params", "params (K)", "{:.1f}", 1e3),
            ("tflite_bytes", "TFLite KB", "{:.1f}", 1e3),
            ("latency_ms", "TFLite ms", "{:.3f}", 1),
            ("accel_ms", "accel. ms", "{:.4f}", 1)]
    cols = [c for c in cols if any(r.get(c[0]) is not None for r in rows)]
    out = ["| " + " | ".join(c[1] for c in cols) + " |",
           "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        cells = []
        for key, _, fmt, scale in cols:
            v = r.get(key)
            if v is None:
                cells.append("-")
            elif isinstance(v, str):
                cells.append(v)
            else:
                cells.append(fmt.format(v / scale))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def write_report(results, out_dir: str = "report",
                 title: str = "tfcomp report") -> str:
    """Writes ``report.md`` and its PNG plots into ``out_dir``.

    Args:
        results: a results dict or the path of a JSON file holding one (a
            bare list is taken as ``rows``).
        out_dir: output directory (created).
        title: heading of the report.

    Returns:
        The path of ``report.md``.

    Example:
        >>> write_report({"rows": [{"stage": "a", "accuracy": .9,
        ...                         "macs": 1e6}]}, "out")
    """
    if isinstance(results, (str, os.PathLike)):
        if not os.path.isfile(results):
            raise FileNotFoundError(f"results file not found: {results!r}")
        with open(results) as f:
            results = json.load(f)
    if isinstance(results, list):
        results = {"rows": results}
    if not isinstance(results, dict) or not isinstance(
            results.get("rows"), list):
        raise ValueError(
            "results must be a dict with a 'rows' list (or a list of rows). "
            f"Received: {type(results).__name__}")
    rows = results["rows"]
    os.makedirs(out_dir, exist_ok=True)
    sections = [f"# {title}", "", _markdown_table(rows), ""]
    plots = [
        ("Accuracy vs MACs", _scatter(
            rows, "macs", "MACs (M)", os.path.join(out_dir, "acc_vs_macs.png"),
            1e6)),
        ("Accuracy vs TFLite latency", _scatter(
            rows, "latency_ms", "TFLite latency (ms, batch 1)",
            os.path.join(out_dir, "acc_vs_latency.png"))),
        ("Accuracy vs accelerator latency", _scatter(
            rows, "accel_ms", "accelerator latency (ms, model)",
            os.path.join(out_dir, "acc_vs_accel.png"))),
        ("Kept channels per layer", _bars(
            results.get("channels") or {}, "Channels per layer", "channels",
            os.path.join(out_dir, "channels.png"), ("kept", "original"))),
        ("Bit-widths per layer", _bars(
            results.get("bits") or {}, "Bits per layer", "bits",
            os.path.join(out_dir, "bits.png"), ("weights", "activations"))),
        ("Hardware latency table", _heatmap(
            results.get("hardware_table") or {},
            os.path.join(out_dir, "hardware_table.png"))),
    ]
    for heading, path in plots:
        if path:
            sections += [f"## {heading}", "",
                         f"![{heading}]({os.path.basename(path)})", ""]
    md = os.path.join(out_dir, "report.md")
    tmp = md + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(sections))
    os.replace(tmp, md)
    return md
