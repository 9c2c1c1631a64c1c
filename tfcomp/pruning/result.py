"""What a whole-model pruning method returns: the pruned model and its plan,
with the method's report beside them.

Example:
    >>> result = tfcomp.pruning.lasso_prune(model, x_calib, ratio=0.5)
    >>> small, plan = result              # always a pair
    >>> result.report["groups"]["conv1"]["kept"]
"""

from __future__ import annotations

import warnings

__all__ = ["PruneResult", "finish", "legacy_data"]


class PruneResult(tuple):
    """``(model, plan)`` of a pruning method, plus its ``report``.

    Unpacks as a pair (``small, plan = lasso_prune(...)``); the per-group
    details are ``result.report`` (a plain dict), not a third value and not
    an attribute of the model.

    Attributes:
        model: the pruned, physically smaller ``keras.Model``.
        plan: the :class:`tfcomp.pruning.Plan` it came from.
        report: the method's details (per group: kept count, selector or
            loss history, reconstruction errors; skipped groups; MACs).

    Example:
        >>> result = dcp_prune(model, (x, y), ratio=0.5)
        >>> small, plan = result
        >>> result.report["macs_after"] == plan.meta["macs_after"]
        True
    """

    def __new__(cls, model, plan, report: dict | None = None):
        obj = super().__new__(cls, (model, plan))
        obj.report = {} if report is None else report
        return obj

    def __getnewargs__(self):
        return (self[0], self[1], self.report)

    @property
    def model(self):
        """The pruned model."""
        return self[0]

    @property
    def plan(self):
        """The plan."""
        return self[1]

    def __repr__(self) -> str:
        name = getattr(self[0], "name", type(self[0]).__name__)
        return (f"PruneResult(model={name!r}, plan="
                f"{self[1]!r:.60}, report keys={sorted(self.report)})")


def legacy_data(calibration_data, data, what: str):
    """``calibration_data``, or the deprecated ``data=`` keyword (warned)."""
    if data is None:
        return calibration_data
    if calibration_data is not None:
        raise ValueError(f"{what}: give calibration_data, not both it and "
                         "the deprecated data=.")
    warnings.warn(f"{what}(data=...) is deprecated; pass calibration_data "
                  "(or the data positionally).", DeprecationWarning,
                  stacklevel=3)
    return data


def finish(model, plan, report: dict, return_info, what: str):
    """A :class:`PruneResult`; with the deprecated ``return_info=True`` the
    old ``(model, plan, report)`` triple (``return_info`` given: warned)."""
    if return_info is not None:
        warnings.warn(
            f"{what}(return_info=...) is deprecated: the result is always a "
            "(model, plan) pair whose .report holds the details.",
            DeprecationWarning, stacklevel=3)
        if return_info:
            return model, plan, report
    return PruneResult(model, plan, report)
