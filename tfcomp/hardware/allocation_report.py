"""Reading a bit allocation: bits per layer beside each layer's sensitivity
and cost share, and the Pareto front (summed sensitivity vs cost over
budgets) with the uniform widths as points.

The costs are the allocator's own (:class:`~tfcomp.hardware.CostTable`,
the one pricing of ``allocate_bits`` and HAQ), the sensitivities the
:class:`~tfcomp.quantization.Sensitivity` the allocation was solved on.

Reference: Dong et al., HAWQ-V2, arXiv:1911.03852 (the Pareto-front view
of a mixed-precision allocation).

Example:
    >>> alloc = allocate_bits(model, s, "latency", BISMO(), budget=0.4,
    ...                       return_front=True)
    >>> print(allocation_table(model, alloc, s, BISMO()))
    >>> plot_front(model, alloc, s, BISMO(), "front.png")
"""

from __future__ import annotations

from tfcomp._io import atomic_path
from tfcomp.hardware.allocation import Allocation, CostTable
from tfcomp.quantization.sensitivity_result import Sensitivity

__all__ = ["AllocationTable", "allocation_table", "uniform_points",
           "plot_front"]

_FIXED = (8, 8)


def _check(allocation, sensitivity) -> None:
    if not isinstance(allocation, Allocation):
        raise TypeError("allocation must be an Allocation (the result of "
                        "tfcomp.allocate_bits). Received: "
                        f"{type(allocation).__name__}")
    if not isinstance(sensitivity, Sensitivity):
        raise TypeError("sensitivity must be a tfcomp.quantization."
                        "Sensitivity. Received: "
                        f"{type(sensitivity).__name__}")


def _sens(sensitivity, layer, w_bits):
    """The layer's sensitivity at ``w_bits`` (None where not measured:
    8 bits is taken as 0 when the table stops below it)."""
    if layer not in sensitivity.layers:
        return None
    if w_bits in sensitivity.bits:
        return sensitivity.value(layer, w_bits)
    return 0.0 if w_bits >= max(sensitivity.bits) else None


class AllocationTable:
    """Bits per layer beside its sensitivity and cost share.

    Attributes:
        rows: one dict per quantizable layer: ``layer``, ``w_bits``,
            ``a_bits``, ``sensitivity`` (at the chosen weight bits),
            ``sensitivity_share`` (of the policy's summed sensitivity),
            ``cost`` (the allocator's unit), ``cost_share`` (of the
            policy's total cost, constants included) and ``cost_8bit_share``
            (the layer's share of the all-8/8 cost).
        resource, total_cost, full_cost, total_sensitivity: the policy's.

    Example:
        >>> t = allocation_table(model, alloc, s, BISMO())
        >>> t.rows[0]["cost_share"]; print(t)
    """

    def __init__(self, rows, resource, total_cost, full_cost,
                 total_sensitivity):
        self.rows = rows
        self.resource = resource
        self.total_cost = total_cost
        self.full_cost = full_cost
        self.total_sensitivity = total_sensitivity

    def to_dict(self) -> dict:
        """Plain-Python (JSON-able) form."""
        return {"resource": self.resource, "total_cost": self.total_cost,
                "full_cost": self.full_cost,
                "total_sensitivity": self.total_sensitivity,
                "rows": [dict(r) for r in self.rows]}

    def __str__(self) -> str:
        w = max([5] + [len(r["layer"]) for r in self.rows])
        head = (f"{'layer':<{w}} {'w':>2} {'a':>2} {'sensitivity':>11} "
                f"{'sens %':>6} {'cost %':>6} {'8/8 %':>6}")
        lines = [f"Bit allocation ({self.resource}: "
                 f"{self.total_cost / self.full_cost:.4f} of the 8/8 cost)",
                 head, "-" * len(head)]
        for r in self.rows:
            s = ("-" if r["sensitivity"] is None
                 else f"{r['sensitivity']:.3e}")
            sh = ("-" if r["sensitivity_share"] is None
                  else f"{100 * r['sensitivity_share']:.1f}")
            lines.append(
                f"{r['layer']:<{w}} {r['w_bits']:>2} {r['a_bits']:>2} "
                f"{s:>11} {sh:>6} {100 * r['cost_share']:>6.1f} "
                f"{100 * r['cost_8bit_share']:>6.1f}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"AllocationTable(resource={self.resource!r}, "
                f"layers={len(self.rows)})")


def allocation_table(model, allocation, sensitivity, hardware=None
                     ) -> AllocationTable:
    """Bits per layer beside each layer's sensitivity and cost share.

    Args:
        model: the float model the allocation was made for.
        allocation: an :class:`~tfcomp.hardware.Allocation`
            (``allocate_bits``).
        sensitivity: the :class:`~tfcomp.quantization.Sensitivity` it was
            solved on.
        hardware: the hardware model / ``LatencyTable`` it was priced on
            (latency, energy; None for size / BOPs).

    Returns:
        An :class:`AllocationTable` (prints as a table).

    Raises:
        TypeError: not an ``Allocation`` / ``Sensitivity``.
        ValueError: the allocation names layers the model does not
            quantize, or hardware missing for latency / energy.

    Example:
        >>> print(allocation_table(model, alloc, s, BitFusion("edge")))
    """
    _check(allocation, sensitivity)
    table = CostTable(model, allocation.resource, hardware)
    unknown = [n for n in allocation if n not in table.layers]
    if unknown:
        raise ValueError(f"allocation names layers {unknown[:5]} that the "
                         f"model {model.name!r} does not quantize.")
    total = table.total(dict(allocation))
    rows = []
    for n in table.layers:
        w, a = (int(b) for b in allocation.get(n, _FIXED))
        c = table.cost(n, w, a)
        rows.append({"layer": n, "w_bits": w, "a_bits": a,
                     "sensitivity": _sens(sensitivity, n, w), "cost": c,
                     "cost_share": c / total if total else 0.0,
                     "cost_8bit_share": table.cost(n, *_FIXED)
                     / table.full_cost})
    s_total = sum(r["sensitivity"] or 0.0 for r in rows)
    for r in rows:
        r["sensitivity_share"] = (
            None if r["sensitivity"] is None
            else (r["sensitivity"] / s_total if s_total else 0.0))
    return AllocationTable(rows, allocation.resource, total,
                           table.full_cost, s_total)


def uniform_points(model, sensitivity, resource: str, hardware=None,
                   bits=None, first_last_8bit: bool = True) -> list:
    """``[(bits, cost fraction, summed sensitivity)]`` of uniform policies
    (first / last layer at 8/8 when ``first_last_8bit``, a = w), priced as
    ``allocate_bits`` prices them.

    Example:
        >>> uniform_points(model, s, "size")  # [(2, 0.27, 3.1), ...]
    """
    if not isinstance(sensitivity, Sensitivity):
        raise TypeError("sensitivity must be a tfcomp.quantization."
                        "Sensitivity. Received: "
                        f"{type(sensitivity).__name__}")
    table = CostTable(model, resource, hardware)
    layers = table.layers
    out = []
    for b in (sensitivity.bits if bits is None else bits):
        b = int(b)
        pol = {n: (b, b) for n in layers}
        if first_last_8bit:
            pol[layers[0]] = pol[layers[-1]] = _FIXED
        vals = [_sens(sensitivity, n, pol[n][0]) for n in layers]
        if any(v is None for v in vals):
            continue
        out.append((b, table.total(pol) / table.full_cost, float(sum(vals))))
    return out


def plot_front(model, allocation, sensitivity, hardware=None,
               path: str = "allocation_front.png", uniform=None) -> str:
    """Plots the Pareto front (summed sensitivity vs cost over budgets,
    ``allocate_bits(..., return_front=True)``), the uniform widths as
    points and the allocation itself; writes a PNG atomically.

    Args:
        model, allocation, sensitivity, hardware: as
            :func:`allocation_table`; ``allocation.front`` must be set.
        path: the PNG to write.
        uniform: uniform widths to mark (None: the sensitivity's bits).

    Returns:
        ``path``.

    Raises:
        ValueError: the allocation has no front (solve it with
            ``return_front=True``).

    Example:
        >>> alloc = allocate_bits(model, s, "size", budget=0.3,
        ...                       return_front=True)
        >>> plot_front(model, alloc, s, path="front.png")
    """
    _check(allocation, sensitivity)
    if not allocation.front:
        raise ValueError("allocation has no Pareto front: call "
                         "allocate_bits(..., return_front=True). Received: "
                         f"allocation.front={allocation.front!r}")
    pts = uniform_points(model, sensitivity, allocation.resource, hardware,
                         uniform)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    front = sorted(allocation.front, key=lambda p: p.cost)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ax.step([p.cost for p in front], [p.sensitivity for p in front],
            where="post", marker=".", label="ILP front")
    for b, c, s in pts:
        ax.scatter([c], [s], marker="s", color="tab:orange")
        ax.annotate(f"{b}-bit", (c, s), textcoords="offset points",
                    xytext=(4, 4), fontsize=8)
    if pts:
        ax.scatter([], [], marker="s", color="tab:orange", label="uniform")
    ax.scatter([allocation.cost], [allocation.sensitivity], marker="*",
               s=140, color="tab:red", zorder=3,
               label=f"allocation (budget {allocation.budget:.3g})")
    ax.set_xlabel(f"{allocation.resource} (fraction of all 8/8)")
    ax.set_ylabel(f"summed sensitivity ({sensitivity.method})")
    if all(p.sensitivity > 0 for p in front) and all(s > 0 for *_, s in pts):
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)
    return path
