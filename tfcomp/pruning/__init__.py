"""Structured (channel) pruning: importance, plans, physical surgery.

Example:
    >>> import tfcomp
    >>> model = tfcomp.zoo.resnet(depth=20)
    >>> plan = tfcomp.pruning.make_plan(model, target_macs=0.5,
    ...                                 importance="l1", round_to=8)
    >>> small = tfcomp.prune_channels(model, plan)
    >>> tfcomp.profile(small).macs <= 0.5 * tfcomp.profile(model).macs
    True
"""

from tfcomp.pruning import importance
from tfcomp.pruning.batchnorm import recalibrate_batchnorm
from tfcomp.pruning.dcp import dcp_prune

# The verbs of the training-time and reconstruction methods. ``strip`` and
# ``scratch`` are functions here; their modules stay importable as
# ``from tfcomp.pruning.strip import ...``.
from tfcomp.pruning.fpgm import FPGMPruning
from tfcomp.pruning.lasso import lasso_prune
from tfcomp.pruning.magnitude import MagnitudePruning
from tfcomp.pruning.plan import Plan, estimate_macs, make_plan
from tfcomp.pruning.reconstruction import reconstruct_layer
from tfcomp.pruning.schedules import ConstantSparsity, PolynomialDecay
from tfcomp.pruning.scratch import scratch, scratch_epochs
from tfcomp.pruning.strip import apply_fpgm, apply_magnitude_pruning, strip
from tfcomp.pruning.surgery import (
                                    LayerKeep,
                                    mask_channels,
                                    prune_channels,
                                    weight_masks,
)

__all__ = [
    "ConstantSparsity", "FPGMPruning", "LayerKeep", "MagnitudePruning",
    "Plan", "PolynomialDecay", "apply_fpgm", "apply_magnitude_pruning",
    "dcp_prune", "estimate_macs", "importance", "lasso_prune", "make_plan",
    "mask_channels", "prune_channels", "reconstruct_layer",
    "recalibrate_batchnorm", "scratch",
    "scratch_epochs", "strip", "weight_masks",
]
