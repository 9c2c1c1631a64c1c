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
:func:`collect_results` builds such a dict from models (profile, accuracy,
measured TFLite latency, latency-table cost), as ``tfcomp report --model``
does.

Example:
    >>> write_report("artifacts/results.json", "artifacts/report")
    'artifacts/report/report.md'
"""

from __future__ import annotations

import os

import numpy as np

from tfcomp._io import (
    as_arrays,
    atomic_path,
    atomic_write_text,
    check_positive_int,
    make_dirs,
    read_json,
)

__all__ = [
    "collect_results",
    "hardware_table",
    "load_results",
    "merge_results",
    "pareto_front",
    "write_report",
]


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



_NUMERIC = ("accuracy", "r2", "macs", "params", "tflite_bytes",
            "latency_ms", "accel_ms")


def load_results(results) -> dict:
    """Reads and checks a results dict (or the JSON file holding one).

    Args:
        results: a dict with a ``rows`` list, a bare list of rows, or the
            path of a JSON file holding either.

    Returns:
        The results dict; rows without a ``stage`` are named ``row <i>``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: invalid JSON, no ``rows`` list, a row that is not an
            object or a non-numeric metric.

    Example:
        >>> load_results([{"stage": "a", "accuracy": 0.9}])["rows"][0]
        {'stage': 'a', 'accuracy': 0.9}
    """
    if isinstance(results, (str, os.PathLike)):
        results = read_json(results, "results file")
    if isinstance(results, list):
        results = {"rows": results}
    if not isinstance(results, dict) or not isinstance(
            results.get("rows"), list):
        raise ValueError(  # noqa: TRY004  (a malformed file, not a type)
            "results must be a dict with a 'rows' list (or a list of rows). "
            f"Received: {type(results).__name__}")
    rows = []
    for i, r in enumerate(results["rows"]):
        if not isinstance(r, dict):
            raise ValueError(  # noqa: TRY004
                f"results rows[{i}] must be an object. Received: {r!r}")
        r = dict(r)
        r.setdefault("stage", f"row {i}")
        r["stage"] = str(r["stage"])
        for key in _NUMERIC:
            v = r.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(
                    v, (int, float))):
                raise ValueError(f"results rows[{i}][{key!r}] must be a "
                                 f"number. Received: {v!r}")
        rows.append(r)
    return {**results, "rows": rows}


def merge_results(base, extra) -> dict:
    """Rows of both; other keys from ``base`` unless only ``extra`` has them.

    Example:
        >>> merge_results({"rows": [{"stage": "a"}]},
        ...               {"rows": [{"stage": "b"}], "bits": {}})["rows"]
        [{'stage': 'a'}, {'stage': 'b'}]
    """
    base, extra = load_results(base), load_results(extra)
    out = {**extra, **base}
    out["rows"] = base["rows"] + extra["rows"]
    for key in ("channels", "bits", "hardware_table"):
        if not base.get(key) and extra.get(key):
            out[key] = extra[key]
    return out


def _channels(model, profile) -> dict:
    """``{layer: output channels}`` of the conv / dense layers (tfcomp's
    quantized layers subclass them)."""
    import keras

    from tfcomp.graph.walk import iter_leaf_layers

    L = keras.layers
    kinds = (L.Conv1D, L.Conv2D, L.DepthwiseConv1D, L.DepthwiseConv2D,
             L.SeparableConv1D, L.SeparableConv2D, L.Dense)
    paths = {path for path, layer in iter_leaf_layers(model)
             if isinstance(layer, kinds)}
    return {r.name: int(r.output_shape[-1]) for r in profile.layers
            if r.name in paths and r.output_shape}


def hardware_table(hardware, model, bits=None) -> dict:
    """Per-layer latency (ms) of ``model`` over bit-widths, for the heatmap.

    Args:
        hardware: a ``tfcomp.hardware.LatencyTable`` or ``HardwareModel``.
        model: the model whose layers are the rows.
        bits: widths (w = a) for the columns; default: the table's w = a
            pairs (one float column for bit-invariant tables), or 2..8.

    Returns:
        ``{"name", "layers", "bits", "latency_ms"}`` (layers the hardware
        cannot cost are left out).

    Example:
        >>> t = hardware_table(BitFusion("edge"), tfcomp.zoo.resnet(8))
        >>> len(t["latency_ms"]) == len(t["layers"])
        True
    """
    from tfcomp.hardware import extract_specs

    invariant = bool(getattr(hardware, "bit_invariant", False))
    if bits is None:
        if invariant:
            bits = [32]
        elif hasattr(hardware, "bit_pairs"):
            bits = sorted({w for w, a in hardware.bit_pairs if w == a})
        if not bits:
            bits = list(range(2, 9))
    bits = [int(b) for b in bits]
    desc = getattr(hardware, "hardware", None)
    name = (desc.get("name") if isinstance(desc, dict) else None) or getattr(
        hardware, "name", type(hardware).__name__)
    layers, lat = [], []
    for spec in extract_specs(model):
        try:
            row = [hardware.layer_cost(spec, b, b).latency_s * 1e3
                   for b in bits]
        except (ValueError, KeyError):
            continue
        layers.append(spec.name)
        lat.append(row)
    return {"name": str(name), "layers": layers, "bits": bits,
            "bits_label": "float32 (measured)" if invariant
            else "bits (w = a)", "latency_ms": lat}


def collect_results(models: dict, data=None, tflite=None, table=None,
                    num_images: int = 1000, runs: int = 50) -> dict:
    """A results dict (see the module doc) measured from models.

    Args:
        models: ``{label: keras.Model}`` in order; the first is the
            reference whose channel counts are "original".
        data: optional ``(x_test, y_test)`` (or batches of them): top-1
            accuracy for class labels (per position for per-pixel labels,
            the side of the threshold for a binary output:
            ``tfcomp._score``), ``r2`` (``1 - MSE / Var(y)``) for a
            regression model's float targets.
        tflite: optional ``{label: path}``; each file's size and measured
            median latency go to that label's row.
        table: optional ``LatencyTable`` / ``HardwareModel``: ``accel_ms``
            per model (layers at their own bits, 8/8 for float ones) and the
            heatmap of the reference model.
        num_images: test images used for accuracy.
        runs: timed runs per TFLite file.

    Returns:
        ``{"rows": [...], "channels": ..., "bits": ..., "hardware_table":
        ...}`` with the keys that apply. Channels: the last model whose
        conv / dense widths differ from the reference, ``{layer: [kept,
        original]}``. Bits: the last model with quantized layers, ``{layer:
        [w_bits, a_bits]}``.

    Raises:
        FileNotFoundError: a TFLite file does not exist.
        ValueError: a TFLite file is truncated or corrupt (checked before
            anything is measured; the message names it), a label that
            matches no model, bad counts.

    Example:
        >>> res = collect_results({"dense": m, "pruned": small},
        ...                       data=(x_test, y_test))
        >>> write_report(res, "report")
    """
    from tfcomp._score import is_targets, score
    from tfcomp.cost import profile

    tflite = dict(tflite or {})
    unknown = sorted(set(tflite) - set(models))
    if unknown:
        raise ValueError(f"tflite labels {unknown} match no model label "
                         f"({sorted(models)})")
    num_images = check_positive_int(num_images, "num_images")
    runs = check_positive_int(runs, "runs")
    if tflite:
        from tfcomp.hardware.runtime import read_tflite

        for path in tflite.values():
            read_tflite(path)  # a missing or corrupt file, named, first
    rows, profiles = [], {}
    for label, model in models.items():
        p = profile(model)
        profiles[label] = p
        row = {"stage": str(label), "macs": int(p.macs),
               "params": int(p.params)}
        if data is not None:  # labels read and scored as every verb does
            x, y = as_arrays(data, model=model, max_items=num_images,
                             need_labels=True, name="data", targets=True)
            row["r2" if is_targets(y) else "accuracy"] = score(
                model, x, y, traced=True)
        if label in tflite:
            from tfcomp.export import measure_latency

            row["tflite_bytes"] = int(os.path.getsize(tflite[label]))
            row["latency_ms"] = float(
                measure_latency(tflite[label], runs=runs).median_ms)
        if table is not None:
            try:
                row["accel_ms"] = float(
                    table.model_cost(model).latency_s * 1e3)
            except (ValueError, KeyError):
                pass  # a layer shape the table does not cover
        rows.append(row)
    out = {"rows": rows}
    labels = list(models)
    if labels:
        ref = _channels(models[labels[0]], profiles[labels[0]])
        for label in reversed(labels[1:]):
            ch = _channels(models[label], profiles[label])
            diff = {n: [ch[n], ref[n]] for n in ch if n in ref}
            if any(k != t for k, t in diff.values()):
                out["channels"] = diff
                break
        for label in reversed(labels):
            bits = {r.name: [int(r.w_bits), int(r.a_bits)]
                    for r in profiles[label].layers
                    if r.w_bits < 32 or r.a_bits < 32}
            if bits:
                out["bits"] = bits
                break
        if table is not None:
            heat = hardware_table(table, models[labels[0]])
            if heat["layers"]:
                out["hardware_table"] = heat
    return out


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _savefig(fig, path: str) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)


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
    _savefig(fig, path)
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
    _savefig(fig, path)
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
    _savefig(fig, path)
    plt.close(fig)
    return path


def _markdown_table(rows) -> str:
    cols = [("stage", "stage", "{}", 1), ("accuracy", "top-1", "{:.4f}", 1),
            ("r2", "R^2", "{:.4f}", 1),
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
    results = load_results(results)
    rows = results["rows"]
    make_dirs(out_dir, f"the report into {os.fspath(out_dir)!r}")
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
    atomic_write_text(md, "\n".join(sections))
    return md
