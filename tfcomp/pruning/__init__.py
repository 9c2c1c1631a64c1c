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
from tfcomp.pruning.plan import Plan, estimate_macs, make_plan
from tfcomp.pruning.surgery import (
                                    LayerKeep,
                                    mask_channels,
                                    prune_channels,
                                    weight_masks,
)

__all__ = [
                                    "LayerKeep",
                                    "Plan",
                                    "estimate_macs",
                                    "importance",
                                    "make_plan",
                                    "mask_channels",
                                    "prune_channels",
                                    "weight_masks",
]
