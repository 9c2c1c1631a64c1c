"""Masked layers inside ``keras.layers.TimeDistributed``: how
``apply_fpgm`` / ``apply_magnitude_pruning`` wrap the inner layer
(``TimeDistributed(MaskedConv2D)``), how the callbacks find it and how
``strip_pruning`` turns it back into ``TimeDistributed(Conv2D)``.

The ``TimeDistributed`` keeps its name (the graph path); its inner layer
keeps its own name (``ignored_layers`` of ``MagnitudePruning`` matches
either). Recurrent and wrapper inner layers are left plain.

Example:
    >>> model = tfcomp.pruning.apply_fpgm(video_model)
    >>> type(model.get_layer("td_conv").layer).__name__
    'MaskedConv2D'
"""

from __future__ import annotations

import keras

from tfcomp.graph.copy import live_config
from tfcomp.layers.masked import MaskedLayer, masked_class_for, plain_class_of

__all__ = ["inner_twin", "masked_of", "masked_or_self",
           "plain_time_distributed", "rewrap", "twin_time_distributed",
           "wrapper_names"]

_TD = keras.layers.TimeDistributed


def masked_of(layer):
    """The :class:`MaskedLayer` that ``layer`` is or holds inside a
    ``TimeDistributed``, else None.

    Example:
        >>> masked_of(keras.layers.TimeDistributed(MaskedDense(4))).units
        4
    """
    if isinstance(layer, MaskedLayer):
        return layer
    if isinstance(layer, _TD) and isinstance(layer.layer, MaskedLayer):
        return layer.layer
    return None


def inner_twin(layer):
    """The masked class for a ``TimeDistributed``'s (non-recurrent,
    non-wrapper) inner layer, else None.

    Example:
        >>> inner_twin(keras.layers.TimeDistributed(keras.layers.Dense(4)))
        <class 'tfcomp.layers.masked.MaskedDense'>
    """
    if not isinstance(layer, _TD):
        return None
    inner = layer.layer
    if isinstance(inner, (keras.layers.RNN, keras.layers.Wrapper)):
        return None
    cls = masked_class_for(inner)
    check = getattr(cls, "unsupported", None)
    if cls is None or (check is not None and check(inner) is not None):
        return None
    return cls


def rewrap(layer, inner):
    """A new ``TimeDistributed(inner)`` with ``layer``'s own config (name,
    trainable, dtype).

    Example:
        >>> rewrap(td, keras.layers.Dense(4)).name == td.name
        True
    """
    cfg = live_config(layer)
    cfg.pop("layer", None)
    return _TD(inner, **cfg)


def twin_time_distributed(layer, clone_inner):
    """``TimeDistributed(masked twin)`` of a ``TimeDistributed`` whose inner
    layer ``clone_inner`` (``inner -> new inner or None``) replaces, else
    None.

    Example:
        >>> twin_time_distributed(td, lambda l: MaskedDense.from_config(
        ...     {**l.get_config(), "channel_mask": True}))
    """
    if not isinstance(layer, _TD) or (
            inner_twin(layer) is None and masked_of(layer) is None):
        return None
    inner = clone_inner(layer.layer)
    return None if inner is None else rewrap(layer, inner)


def plain_time_distributed(layer, mask_keys):
    """``TimeDistributed(plain layer)`` of a ``TimeDistributed(masked)``
    (its mask switches ``mask_keys`` dropped), else None.

    Example:
        >>> plain_time_distributed(td_masked, ("channel_mask",)).layer
    """
    inner = masked_of(layer)
    if inner is None or inner is layer:
        return None
    cfg = live_config(inner)
    for key in mask_keys:
        cfg.pop(key, None)
    return rewrap(layer, plain_class_of(inner).from_config(cfg))


def masked_or_self(layer):
    """:func:`masked_of` ``layer``, or ``layer`` itself when it holds no
    masked layer (the leaf a pruning callback reads weights from).

    Example:
        >>> masked_or_self(keras.layers.Dense(4)).name
    """
    inner = masked_of(layer)
    return layer if inner is None else inner


def wrapper_names(model) -> dict:
    """``{id(masked inner layer): TimeDistributed name}`` of ``model``.

    Example:
        >>> wrapper_names(model)[id(model.get_layer("td").layer)]
        'td'
    """
    from tfcomp.graph.walk import leaf_layers

    return {id(lyr.layer): lyr.name for lyr in leaf_layers(model)
            if isinstance(lyr, _TD) and masked_of(lyr) is not None}
