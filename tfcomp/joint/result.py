"""``JointResult``: what :func:`tfcomp.joint.compress` returns.

Example:
    >>> res = compress(model, x, hardware=BISMO(), budget=0.25)
    >>> print(res.summary())
    >>> res.save("joint.json")
"""

from __future__ import annotations

import dataclasses

from tfcomp._io import atomic_write_json

__all__ = ["JointResult"]


@dataclasses.dataclass
class JointResult:
    """Kept channels and bit policy under one budget, with what they cost.

    Attributes:
        plan: a :class:`~tfcomp.pruning.Plan` (``prune_channels(model,
            plan)`` replays the channel choice; ``model`` below also holds
            the least-squares refit).
        bits: ``{layer: (w_bits, a_bits)}`` for ``quantize_model`` (the
            pruned model keeps the layer names).
        keep: ``{group id: kept channels}``.
        cost: the point's cost as a fraction of the dense 8/8 cost.
        budget, resource, full_cost: the budget (fraction), what it limits
            and the dense 8/8 cost (seconds, joules, BOPs, bytes).
        sensitivity: the summed objective; ``prune_part`` / ``quant_part``
            its two parts.
        gap: ``{"method", "objective", "exact", "gap", "relative",
            "exact_proved_optimal", ...}``: the exact program's optimum
            and how far the answer is from it (when checked).
        prune_sensitivity, quant_sensitivity: the tables used.
        model: the pruned, refit (not fine-tuned) model, or None.
        min_budget: the cheapest reachable cost (fraction).
        meta: method, starts of the alternating solver, seconds, ...

    Example:
        >>> qat = tfcomp.quantize_model(res.model, bits=res.bits)
    """

    plan: object
    bits: dict
    keep: dict
    cost: float
    budget: float
    resource: str
    full_cost: float
    sensitivity: float
    prune_part: float
    quant_part: float
    gap: dict
    prune_sensitivity: object = None
    quant_sensitivity: object = None
    model: object = None
    min_budget: float | None = None
    meta: dict = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        """Plan, bits and costs as JSON-ready data (no model, no tables)."""
        return {"format": "tfcomp.joint", "version": 1,
                "plan": self.plan.to_dict(),
                "bits": {k: list(v) for k, v in self.bits.items()},
                "keep": dict(self.keep), "cost": self.cost,
                "budget": self.budget, "resource": self.resource,
                "full_cost": self.full_cost,
                "sensitivity": self.sensitivity,
                "prune_part": self.prune_part,
                "quant_part": self.quant_part, "gap": dict(self.gap),
                "min_budget": self.min_budget, "meta": dict(self.meta)}

    def save(self, path: str) -> str:
        """Writes :meth:`to_dict` to ``path`` atomically; returns ``path``.

        Example:
            >>> res.save("joint.json")
        """
        atomic_write_json(path, self.to_dict())
        return path

    def summary(self) -> str:
        """Kept channels per group, bits per layer, cost and gap as text."""
        lines = [f"joint pruning + quantization: {self.resource} "
                 f"{self.cost:.4f} of dense 8/8 (budget {self.budget:g}), "
                 f"sensitivity {self.sensitivity:.4g} (pruning "
                 f"{self.prune_part:.4g} + quantization "
                 f"{self.quant_part:.4g})"]
        if "prune_weight" in self.meta:
            how = {"finetune": "held-out accuracy after a short fine-tune",
                   "agreement": "agreement with the float model"}[
                self.meta.get("selection", "agreement")]
            cands = self.meta.get("candidates", [])
            pool = len({c.get("objective_name") for c in cands}) > 1
            lines.append(
                ("objective " + self.meta["objective"] + ", " if pool
                 else "") + f"pruning term weight "
                f"{self.meta['prune_weight']:g} (chosen by {how} among "
                + ", ".join((f"{c['objective_name']} " if pool else "")
                            + f"{c['prune_weight']:g}" for c in cands) + ")")
        if "exact" in self.gap:
            lines.append(f"exact optimum {self.gap['exact']:.4g} (gap "
                         f"{self.gap['gap']:.3g}, proved optimal: "
                         f"{self.gap['exact_proved_optimal']})")
        lines.append("kept channels: " + ", ".join(
            f"{g} {k}" for g, k in self.keep.items()))
        lines.append("bits (w/a): " + ", ".join(
            f"{n} {w}/{a}" for n, (w, a) in self.bits.items()))
        return "\n".join(lines)

    __str__ = summary
