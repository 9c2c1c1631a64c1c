"""Structured (channel) pruning: importance, targets, plans, surgery.

Every structured method turns its target (``ratio``, ``target_macs``,
``round_to``, ``ignored_layers``) into kept channel counts with
:mod:`tfcomp.pruning.targets`, whose :func:`~tfcomp.pruning.targets.
channel_macs` is the one cost of channel counts.

Example:
    >>> import tfcomp
    >>> model = tfcomp.zoo.resnet(depth=20)
    >>> plan = tfcomp.pruning.make_plan(model, target_macs=0.5,
    ...                                 importance="l1", round_to=8)
    >>> small = tfcomp.prune_channels(model, plan)
    >>> tfcomp.profile(small).macs <= 0.5 * tfcomp.profile(model).macs
    True
"""

import warnings

from tfcomp.pruning import autoslim, importance, prune_sensitivity, targets
from tfcomp.pruning.autoslim import AutoSlimResult
from tfcomp.pruning.batchnorm import recalibrate_batchnorm
from tfcomp.pruning.dcp import dcp_prune
from tfcomp.pruning.fpgm import FPGMPruning
from tfcomp.pruning.gal import GAL, apply_gal, strip_gal
from tfcomp.pruning.lasso import lasso_prune
from tfcomp.pruning.magnitude import MagnitudePruning
from tfcomp.pruning.metapruning import PruningNet
from tfcomp.pruning.plan import Plan, estimate_macs, make_plan
from tfcomp.pruning.prune_sensitivity import PruningSensitivity, sensitivity
from tfcomp.pruning.reconstruction import reconstruct_layer
from tfcomp.pruning.rethinking import scratch_epochs, scratch_setup
from tfcomp.pruning.schedules import ConstantSparsity, PolynomialDecay
from tfcomp.pruning.slimmable import (
    SlimmableModel,
    export_width,
    recalibrate_widths,
    set_width,
    to_slimmable,
)
from tfcomp.pruning.surgery import LayerKeep, mask_channels, prune_channels
from tfcomp.pruning.surgery import weight_masks as weight_masks
from tfcomp.pruning.targets import channel_macs, resolve_keep_counts
from tfcomp.pruning.wrappers import apply_fpgm, apply_magnitude_pruning, strip_pruning

__all__ = [
    "AutoSlimResult", "SlimmableModel", "autoslim", "export_width",
    "recalibrate_widths", "set_width", "to_slimmable",
    "GAL", "PruningNet", "apply_gal", "strip_gal",
    "ConstantSparsity", "FPGMPruning", "LayerKeep", "MagnitudePruning",
    "Plan", "PolynomialDecay", "apply_fpgm", "apply_magnitude_pruning",
    "channel_macs", "dcp_prune", "estimate_macs", "importance",
    "lasso_prune", "make_plan", "mask_channels", "prune_channels",
    "reconstruct_layer", "recalibrate_batchnorm", "resolve_keep_counts",
    "scratch_epochs", "scratch_setup", "strip_pruning", "targets",
    "weight_masks", "PruningSensitivity", "sensitivity", "prune_sensitivity",
]

# Old names kept for one release: (new name, object).
_DEPRECATED = {
    "strip": ("strip_pruning", strip_pruning),
    "scratch": ("scratch_setup", scratch_setup),
}


def __getattr__(name):
    if name in _DEPRECATED:
        new, obj = _DEPRECATED[name]
        warnings.warn(f"tfcomp.pruning.{name} is deprecated; use "
                      f"tfcomp.pruning.{new}.", DeprecationWarning,
                      stacklevel=2)
        return obj
    raise AttributeError(
        f"module 'tfcomp.pruning' has no attribute {name!r}")
