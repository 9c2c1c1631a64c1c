"""Which Keras layers have a slimmable twin, and the channel segments of
a dependency-graph group (:func:`group_segments`) that
``tfcomp.pruning.to_slimmable`` writes into the twins' configs.

``SLIMMABLE_CLASSES`` maps a Keras class to its twin; ``PORT_KEYS`` maps
``(Keras class, graph port)`` to the twin's config key holding that port's
segments (None: masked through another port). A group is slimmable when
every member with weights is such a pair (``channels_last``) and each
member carries the group's channels in a ``start + i -> (i // div) %
period`` layout.

Slimmable: Conv1D/2D/3D (grouped too), Conv1D/2D/3DTranspose,
SeparableConv1D/2D, DepthwiseConv2D, Dense, BatchNormalization,
GroupNormalization (whole normalisation groups). Not slimmable (their
groups keep full width): channels_first layers, LayerNormalization,
MultiHeadAttention and any other layer without a twin.

Example:
    >>> graph = tfcomp.DependencyGraph(model)
    >>> found, why = group_segments(graph, graph.prunable_groups[0], 1)
"""

from __future__ import annotations

import keras
import numpy as np

from tfcomp.layers.slimmable import (
    SlimmableConv2D,
    SlimmableDense,
    SlimmableDepthwiseConv2D,
    SwitchableBatchNormalization,
)
from tfcomp.layers.slimmable_conv import (
    SlimmableConv1D,
    SlimmableConv1DTranspose,
    SlimmableConv2DTranspose,
    SlimmableConv3D,
    SlimmableConv3DTranspose,
    SlimmableSeparableConv1D,
    SlimmableSeparableConv2D,
)
from tfcomp.layers.slimmable_norm import SlimmableGroupNormalization

__all__ = ["PORT_KEYS", "SLIMMABLE_CLASSES", "SLIMMABLE_TYPES",
           "group_segments", "member_segment"]

L = keras.layers
_IN_OUT = {"in": "in_segments", "out": "out_segments"}

#: Slimmable layer classes and the Keras class each one replaces.
SLIMMABLE_CLASSES = {
    L.Conv1D: SlimmableConv1D,
    L.Conv2D: SlimmableConv2D,
    L.Conv3D: SlimmableConv3D,
    L.Conv1DTranspose: SlimmableConv1DTranspose,
    L.Conv2DTranspose: SlimmableConv2DTranspose,
    L.Conv3DTranspose: SlimmableConv3DTranspose,
    L.SeparableConv1D: SlimmableSeparableConv1D,
    L.SeparableConv2D: SlimmableSeparableConv2D,
    L.DepthwiseConv2D: SlimmableDepthwiseConv2D,
    L.Dense: SlimmableDense,
    L.BatchNormalization: SwitchableBatchNormalization,
    L.GroupNormalization: SlimmableGroupNormalization,
}
#: Every slimmable layer class.
SLIMMABLE_TYPES = tuple(SLIMMABLE_CLASSES.values())

# (layer class, graph port) -> config key of the slimmable twin
PORT_KEYS = {
    **{(cls, port): key
       for cls in (L.Conv1D, L.Conv2D, L.Conv3D, L.Conv1DTranspose,
                   L.Conv2DTranspose, L.Conv3DTranspose, L.Dense)
       for port, key in _IN_OUT.items()},
    **{(cls, port): f"{port}_segments"
       for cls in (L.SeparableConv1D, L.SeparableConv2D)
       for port in ("in", "mid", "out")},
    (L.DepthwiseConv2D, "out"): "segments",
    (L.DepthwiseConv2D, "in"): None,  # masked through "out"
    (L.BatchNormalization, "channels"): "segments",
    (L.GroupNormalization, "channels"): "segments",
}


# Why some common layers have no twin (appended to the reason).
_NO_TWIN = {
    L.LayerNormalization: ": it normalises over all channels, so dropping "
                          "channels changes its statistics",
    L.MultiHeadAttention: ": attention projections stay full width",
}


def _blocker(layer) -> str | None:
    """Why a layer with a twin still cannot be slimmed, or None."""
    fmt = getattr(layer, "data_format", "channels_last")
    if fmt != "channels_last":
        return (f"has data_format={fmt!r}; slimmable layers need "
                "channels_last")
    return None


def member_segment(member, group, step):
    """The segment dict of a member, or None when its layout is not
    ``start + i -> (i // div) % period``."""
    order = np.argsort(member.indices)
    idx, units = member.indices[order], member.units[order]
    n = len(idx)
    if not n or not np.array_equal(idx, idx[0] + np.arange(n)) \
            or units[0] != 0:
        return None
    diff = np.flatnonzero(units != units[0])
    div = int(diff[0]) if diff.size else n
    period = int(units.max()) + 1
    if not np.array_equal(units, (np.arange(n) // div) % period):
        return None
    return {"group": group.id, "start": int(idx[0]), "length": int(n),
            "period": period, "div": div, "size": int(group.size),
            "step": int(step)}


def group_segments(graph, group, step):
    """``([(layer path, config key, segment)], reason)`` of a group: the
    segments to write into the twins' configs, or None and why the group
    cannot be slimmed.

    Example:
        >>> found, why = group_segments(graph, group, step=1)
        >>> why    # e.g. "'gn' (GroupNormalization, port 'channels') ..."
    """
    found = []
    for m in group.members:
        if not m.weights:
            continue
        layer = graph.layer(m.layer)
        key = (type(layer), m.port)
        if key not in PORT_KEYS:
            why = _NO_TWIN.get(type(layer), "")
            return None, (f"{m.layer!r} ({type(layer).__name__}, port "
                          f"{m.port!r}) has no slimmable twin{why}")
        blocked = _blocker(layer)
        if blocked:
            return None, f"{m.layer!r} ({type(layer).__name__}) {blocked}"
        if PORT_KEYS[key] is None:
            continue
        seg = member_segment(m, group, step)
        if seg is None:
            return None, (f"{m.layer!r} carries the group's channels in a "
                          "layout slimmable layers cannot express")
        found.append((m.layer, PORT_KEYS[key], seg))
    return found, None
