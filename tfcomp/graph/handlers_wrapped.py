"""Channel handler of ``keras.layers.TimeDistributed``.

``TimeDistributed(inner)`` applies ``inner`` to every time step (axis 1) of
its input; its channels are still the last axis, and its weights are the
inner layer's (named ``kernel``, ``bias``, ``gamma``...). The handler asks
the inner layer's own registered handler to describe the call, through a
context whose ``layer`` is the inner layer and whose shapes lack the time
axis; ports, links and locks go to the ``TimeDistributed`` node itself.
Pruning rewrites the nested inner config (``config["layer"]``).

A ``TimeDistributed`` is a barrier when its inner layer has no handler, is
itself a wrapper or a recurrent layer, or its input has fewer than 3 axes.

Example:
    >>> x = keras.Input((8, 16, 16, 3))
    >>> y = L.TimeDistributed(L.Conv2D(8, 3), name="td")(x)
    >>> tfcomp.DependencyGraph(keras.Model(x, y)).layer_ports("td")
    [... 'in' ... 'out' ...]
"""

from __future__ import annotations

import copy

import keras

from tfcomp.graph.context import ChannelHandler
from tfcomp.graph.registry import get_channel_handler

__all__ = ["TimeDistributedHandler"]


def _drop_time(shape):
    """``shape`` without axis 1 (the time axis); None stays None."""
    if shape is None:
        return None
    shape = tuple(shape)
    return shape[:1] + shape[2:]


class _StepContext:
    """The ``NodeContext`` of a ``TimeDistributed`` call as its inner layer
    sees one time step: ``layer`` is the inner layer, shapes lack axis 1;
    every declaration goes to the real context (channels are the last axis
    either way)."""

    def __init__(self, ctx, inner):
        self._ctx = ctx
        self.layer = inner
        self.input_shapes = [_drop_time(s) for s in ctx.input_shapes]
        self.output_shapes = [_drop_time(s) for s in ctx.output_shapes]

    def __getattr__(self, name):
        return getattr(self._ctx, name)


def _unsupported(layer, input_shapes) -> str | None:
    """Why a ``TimeDistributed`` must be a barrier, or None."""
    inner = layer.layer
    cls = type(inner).__name__
    if isinstance(inner, keras.layers.Wrapper):
        return f"TimeDistributed of a wrapper ({cls}) is not supported"
    if isinstance(inner, keras.layers.RNN):
        return f"TimeDistributed of a recurrent layer ({cls}) is not " \
               "supported"
    if isinstance(inner, keras.Model):
        return f"TimeDistributed of a model ({cls}) is not supported"
    if not input_shapes or input_shapes[0] is None or \
            len(input_shapes[0]) < 3:
        shape = input_shapes[0] if input_shapes else None
        return f"TimeDistributed input of rank < 3 (shape {shape})"
    if get_channel_handler(inner) is None:
        return f"no channel handler for TimeDistributed inner layer {cls}"
    return None


class TimeDistributedHandler(ChannelHandler):
    """``TimeDistributed(inner)``: described by the inner layer's handler on
    one time step (shapes without axis 1); see the module docstring.

    Example:
        >>> graph = tfcomp.DependencyGraph(model)  # TD(Conv2D) -> TD(Conv2D)
        >>> graph.group("td_conv1").size
        8
    """

    def connect(self, ctx):
        reason = _unsupported(ctx.layer, ctx.input_shapes)
        if reason is not None:
            return ctx.barrier(reason)
        inner = ctx.layer.layer
        return get_channel_handler(inner).connect(_StepContext(ctx, inner))

    def non_channel_tensors(self, ctx):
        if _unsupported(ctx.layer, ctx.input_shapes) is not None:
            return (), ()
        inner = ctx.layer.layer
        fn = getattr(get_channel_handler(inner), "non_channel_tensors", None)
        return fn(_StepContext(ctx, inner)) if fn is not None else ((), ())

    def update_config(self, config, keep):
        sub = config.get("layer")
        if not (isinstance(sub, dict) and isinstance(sub.get("config"),
                                                     dict)):
            return config
        handler = _inner_handler(sub)
        sub.pop("build_config", None)  # built for the old input
        if handler is not None:
            sub["config"] = handler.update_config(sub["config"], keep)
        return config

    def macs_scale(self, fractions, layer):
        inner = getattr(layer, "layer", None)
        handler = get_channel_handler(inner) if inner is not None else None
        return None if handler is None else handler.macs_scale(fractions,
                                                               inner)


def _inner_handler(sub: dict):
    """The handler of a serialized inner layer (rebuilt, unbuilt, to find
    its class: custom classes match through the MRO as in the graph)."""
    try:
        inner = keras.saving.deserialize_keras_object(copy.deepcopy(sub))
    except Exception:  # noqa: BLE001 - an unregistered custom class
        return None
    return get_channel_handler(inner)
