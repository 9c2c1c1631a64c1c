"""Built-in channel handlers of weightless layers and ``keras.ops`` calls:
element-wise layers and activations, merges (``Add``, ``Multiply``, ...),
``Concatenate``, ``Flatten`` / ``Reshape`` and ``Rescaling``.

Example:
    >>> from tfcomp.graph.handlers_structural import ElementwiseHandler
    >>> tfcomp.graph.register_channel_handler(MyActivation,
    ...                                       ElementwiseHandler())
"""

from __future__ import annotations

import math

import numpy as np

from tfcomp.graph.context import (
    PASS_THROUGH,
    ChannelHandler,
    _axes,
    _ChannelsLastHandler,
)

__all__ = [
    "ActivationHandler",
    "ConcatHandler",
    "ElementwiseHandler",
    "FlattenHandler",
    "MergeHandler",
    "OpElementwiseHandler",
    "PermuteHandler",
    "ReduceOpHandler",
    "RescalingHandler",
    "ReshapeHandler",
    "SoftmaxHandler",
]


class ElementwiseHandler(_ChannelsLastHandler):
    """Layers that act on every channel independently (or on space only)."""

    def link(self, ctx):
        if ctx.num_inputs != 1 or ctx.num_outputs != 1:
            return ctx.barrier("expected one input and one output")
        if len(ctx.input_shapes[0]) < 2:
            return ctx.barrier("input has no channel axis")
        ctx.pass_through()


class ActivationHandler(ElementwiseHandler):
    _CROSS = ("softmax", "log_softmax")

    def connect(self, ctx):
        act = getattr(ctx.layer, "activation", None)
        name = getattr(act, "__name__", str(act))
        if name in self._CROSS:
            return ctx.barrier(f"{name} mixes channels")
        super().connect(ctx)


class SoftmaxHandler(ElementwiseHandler):
    def connect(self, ctx):
        rank = len(ctx.input_shapes[0])
        if rank - 1 in _axes(getattr(ctx.layer, "axis", -1), rank):
            return ctx.barrier("softmax over the channel axis mixes channels")
        super().connect(ctx)


class RescalingHandler(ElementwiseHandler):
    def update_config(self, config, keep):
        mask = keep.input(0)
        for key in ("scale", "offset"):
            v = config.get(key)
            if isinstance(v, (list, tuple)) and len(v) == mask.size:
                config[key] = [x for x, k in zip(v, mask) if k]
        return config


class MergeHandler(ChannelHandler):
    """Add / Subtract / Multiply / Average / Maximum / Minimum.

    All operands are coupled channel for channel. A one-channel operand that
    broadcasts over all channels is left alone (and locked).
    """

    def connect(self, ctx):
        if ctx.num_outputs != 1:
            return ctx.barrier("expected one output")
        for c in ctx.constants:
            if not (c is None or isinstance(c, (bool, int, float, str))):
                return ctx.barrier("has a non-scalar constant operand")
        c_out = ctx.out_channels()
        p = ctx.port("channels", c_out, PASS_THROUGH)
        ctx.link_output(0, p)
        for i in range(ctx.num_inputs):
            ci = ctx.in_channels(i)
            if ci == c_out:
                ctx.link_input(i, p)
            elif ci == 1 or len(ctx.input_shapes[i]) < 2:
                ctx.lock_input(i, f"broadcast operand of {ctx.path}")
            else:
                ctx.lock_input(i, f"{ctx.path}: cannot broadcast {ci} to "
                                  f"{c_out} channels")
                ctx.lock_output(0, f"{ctx.path}: unsupported broadcast")


class OpElementwiseHandler(ChannelHandler):
    """``keras.ops`` operations in a functional graph (x + 3.0, x * y)."""

    def connect(self, ctx):
        if ctx.num_outputs != 1 or ctx.num_inputs < 1:
            return ctx.barrier("unexpected arity")
        MergeHandler().connect(ctx)


class ReduceOpHandler(ChannelHandler):
    """``keras.ops`` reductions (``mean``, ``sum``, ``max``...) in a
    functional graph. Over axes other than the last they carry each channel
    through (``ops.mean(x, axis=(1, 2))`` is a hand-written global average
    pooling); over the last axis (or every axis) they mix the channels, so
    they are a barrier.

    Example:
        >>> s = keras.ops.mean(x, axis=(1, 2), keepdims=True)  # pass-through
    """

    def connect(self, ctx):
        if ctx.num_inputs != 1 or ctx.num_outputs != 1:
            return ctx.barrier("expected one input and one output")
        rank = len(ctx.input_shapes[0])
        axis = getattr(ctx.layer, "axis", None)
        if rank < 2 or axis is None or rank - 1 in _axes(axis, rank) \
                or 0 in _axes(axis, rank):
            return ctx.barrier("reduces the channel (or batch) axis")
        ctx.pass_through()


class ConcatHandler(ChannelHandler):
    """Concatenate: on the channel axis each input sits at an offset."""

    def connect(self, ctx):
        rank = len(ctx.output_shapes[0])
        axis = int(ctx.layer.axis) % rank
        c_out = ctx.out_channels()
        p = ctx.port("channels", c_out, PASS_THROUGH)
        ctx.link_output(0, p)
        offset = 0
        for i in range(ctx.num_inputs):
            ci = ctx.in_channels(i)
            if axis == rank - 1:
                ctx.link_input(i, p, np.arange(ci) + offset)
                offset += ci
            else:
                ctx.link_input(i, p)


def _expand(ctx, n_in: int, n_out: int) -> None:
    """Tiles channels: the larger side's position ``i`` carries channel
    ``i % n`` of the smaller side (``n`` channels)."""
    if n_out >= n_in:
        p = ctx.port("channels", n_in, PASS_THROUGH)
        ctx.link_input(0, p)
        ctx.link_output(0, p, np.arange(n_out) % n_in)
    else:
        p = ctx.port("channels", n_out, PASS_THROUGH)
        ctx.link_output(0, p)
        ctx.link_input(0, p, np.arange(n_in) % n_out)


class FlattenHandler(_ChannelsLastHandler):
    """Flatten (channels_last): feature ``s*C + c`` carries channel ``c``."""

    def link(self, ctx):
        shape = ctx.input_shapes[0]
        if len(shape) <= 2:
            return ctx.pass_through()
        spatial = shape[1:-1]
        if any(d is None for d in spatial):
            return ctx.barrier("unknown spatial size")
        c = ctx.in_channels()
        _expand(ctx, c, math.prod(spatial) * c)


class PermuteHandler(ChannelHandler):
    """Permute: channels pass through when the last axis stays last
    (``Permute((2, 1, 3))`` on images); moving it is a barrier.

    Example:
        >>> tfcomp.graph.get_channel_handler(keras.layers.Permute((2, 1)))
    """

    def connect(self, ctx):
        dims = tuple(int(d) for d in ctx.layer.dims)
        if not dims or dims[-1] != len(dims):
            return ctx.barrier(f"Permute{dims} moves the channel axis")
        ctx.pass_through()


class ReshapeHandler(ChannelHandler):
    """Reshape whose last axis keeps (or tiles / flattens) the channels."""

    def connect(self, ctx):
        cin, cout = ctx.in_channels(), ctx.out_channels()
        if cin == 0 or cout == 0:
            return ctx.barrier("no channel axis")
        if cin == cout:
            return ctx.pass_through()
        if cout % cin == 0 or cin % cout == 0:
            # (H, W, C) -> (H*W*C,) or (H*W*C,) -> (H, W, C)
            return _expand(ctx, cin, cout)
        ctx.barrier(f"reshape moves the channel axis ({cin} -> {cout})")

    def update_config(self, config, keep):
        shape = list(config["target_shape"])
        if shape and shape[-1] not in (-1, None):
            shape[-1] = int(keep.output(0).sum())
        config["target_shape"] = shape
        return config
