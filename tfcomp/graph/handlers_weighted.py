"""Built-in channel handlers of layers with per-channel weights:
convolutions (plain, grouped, transposed, depthwise, separable), Dense,
Embedding, normalisations, PReLU and per-channel scales.

Example:
    >>> from tfcomp.graph.handlers_weighted import ConvHandler
    >>> tfcomp.graph.register_channel_handler(MyConv2D, ConvHandler())
"""

from __future__ import annotations

import math

import keras
import numpy as np

from tfcomp.graph.context import (
    CONSUMER,
    PASS_THROUGH,
    PRODUCER,
    ChannelHandler,
    _axes,
    _bias,
    _ChannelsLastHandler,
)

__all__ = [
    "BatchNormHandler",
    "ConvHandler",
    "ConvTransposeHandler",
    "DenseHandler",
    "DepthwiseHandler",
    "EmbeddingHandler",
    "InputHandler",
    "LayerNormHandler",
    "NormalizationHandler",
    "PReLUHandler",
    "ScaleLayerHandler",
    "SeparableHandler",
]


class InputHandler(ChannelHandler):
    """Model inputs: new channels that are never pruned."""

    def connect(self, ctx):
        ctx.source(0, "model input")


def _in_out(ctx, in_spec, out_spec, config_key=None, cin=None, cout=None):
    """Declares a consumer ``in`` and a producer ``out`` port and links
    input 0 / output 0 to them (a plain conv / dense)."""
    pin = ctx.port("in", ctx.in_channels() if cin is None else cin, CONSUMER,
                   in_spec, macs=True)
    pout = ctx.port("out", ctx.out_channels() if cout is None else cout,
                    PRODUCER, out_spec, config_key=config_key, macs=True)
    return pin, pout


class ConvHandler(_ChannelsLastHandler):
    """Conv1D/2D/3D: kernel (*k, cin/groups, cout); groups supported."""

    def link(self, ctx):
        layer = ctx.layer
        cin, cout = ctx.in_channels(), ctx.out_channels()
        g = int(getattr(layer, "groups", 1) or 1)
        bias = _bias(layer)
        if g == 1:
            pin, pout = _in_out(ctx, [("kernel", -2)],
                                [("kernel", -1)] + bias, "filters")
            ctx.link_input(0, pin)
            ctx.link_output(0, pout)
        elif g == cin and cout % cin == 0:
            # Depthwise written as a grouped conv: output c*m+j follows
            # input c; kernel (*k, 1, cout).
            m = cout // cin
            pin = ctx.port("in", cin, PASS_THROUGH, shared=True)
            pout = ctx.port("out", cout, PASS_THROUGH,
                            [("kernel", -1)] + bias, macs=True)
            ctx.link_input(0, pin)
            ctx.link_output(0, pout)
            ctx.tie(pout, pin, np.arange(cout) // m)
        else:
            # Filters / inputs at the same in-group position are pruned in
            # every group, so each group keeps the same count.
            cin_g, cout_g = cin // g, cout // g
            pin, pout = _in_out(ctx, [("kernel", -2)],
                                [("kernel", -1)] + bias, "filters", cin=cin_g)
            ctx.link_input(0, pin, np.arange(cin) % cin_g)
            ctx.link_output(0, pout)
            ctx.tie(pout, pout, np.arange(cout) % cout_g)

    def update_config(self, config, keep):
        config = super().update_config(config, keep)
        g = int(config.get("groups", 1) or 1)
        if g > 1 and keep.has_port("in") and keep.port_role("in") == \
                PASS_THROUGH:
            config["groups"] = int(keep.port("in").sum())
            config["filters"] = int(keep.port("out").sum())
        return config


class ConvTransposeHandler(_ChannelsLastHandler):
    """ConvXDTranspose: kernel (*k, cout, cin)."""

    def link(self, ctx):
        pin, pout = _in_out(ctx, [("kernel", -1)],
                            [("kernel", -2)] + _bias(ctx.layer), "filters")
        ctx.link_input(0, pin)
        ctx.link_output(0, pout)


class DepthwiseHandler(_ChannelsLastHandler):
    """DepthwiseConv1D/2D: kernel (*k, cin, m); output c*m+j is input c."""

    def link(self, ctx):
        cin, m = ctx.in_channels(), int(ctx.layer.depth_multiplier)
        pin = ctx.port("in", cin, PASS_THROUGH,
                       [("kernel", -2), ("depthwise_kernel", -2)], macs=True)
        pout = ctx.port("out", cin * m, PASS_THROUGH, _bias(ctx.layer),
                        shared=True)
        ctx.tie(pout, pin, np.arange(cin * m) // m)
        ctx.link_input(0, pin)
        ctx.link_output(0, pout)


class SeparableHandler(_ChannelsLastHandler):
    """SeparableConv1D/2D: depthwise (*k, cin, m) then pointwise."""

    def link(self, ctx):
        cin, m = ctx.in_channels(), int(ctx.layer.depth_multiplier)
        pin = ctx.port("in", cin, CONSUMER, [("depthwise_kernel", -2)],
                       macs=True)
        mid = ctx.port("mid", cin * m, CONSUMER, [("pointwise_kernel", -2)],
                       shared=True)
        pout = ctx.port("out", ctx.out_channels(), PRODUCER,
                        [("pointwise_kernel", -1)] + _bias(ctx.layer),
                        config_key="filters", macs=True)
        ctx.tie(mid, pin, np.arange(cin * m) // m)
        ctx.link_input(0, pin)
        ctx.link_output(0, pout)

    def macs_scale(self, fractions, layer):
        dk = math.prod(layer.depthwise_kernel.shape)
        pk = math.prod(layer.pointwise_kernel.shape)
        f_in, f_out = fractions.get("in", 1.0), fractions.get("out", 1.0)
        return (dk * f_in + pk * f_in * f_out) / (dk + pk)


class DenseHandler(ChannelHandler):
    """Dense on the last axis of any rank: kernel (din, units)."""

    def connect(self, ctx):
        pin, pout = _in_out(ctx, [("kernel", 0)],
                            [("kernel", 1)] + _bias(ctx.layer), "units")
        ctx.link_input(0, pin)
        ctx.link_output(0, pout)


def embedding_unsupported(layer) -> str | None:
    """Why an Embedding's columns cannot be sliced or masked (LoRA enabled,
    Keras quantization), or None.

    Example:
        >>> embedding_unsupported(keras.layers.Embedding(10, 4))  # None
    """
    if getattr(layer, "lora_enabled", False) or \
            getattr(layer, "lora_rank", None):
        return ("Embedding with LoRA enabled (merge or drop the low-rank "
                "update first)")
    mode = getattr(layer, "quantization_mode", None)
    if mode:
        return f"quantized Embedding (quantization_mode={mode!r})"
    return None


class EmbeddingHandler(ChannelHandler):
    """Embedding: its output channels are the columns of ``embeddings``
    (vocab, dim), a producer (``output_dim``); its input holds token ids,
    not channels (locked, and its size may be unknown). A lookup: no MACs.
    LoRA-enabled and Keras-quantized (int8 / int4) tables are barriers.

    Example:
        >>> graph = tfcomp.DependencyGraph(model)   # Embedding -> Conv1D
        >>> graph.group("embedding").size           # output_dim
        32
    """

    def non_channel_tensors(self, ctx):
        return tuple(range(ctx.num_inputs)), ()

    def connect(self, ctx):
        reason = embedding_unsupported(ctx.layer)
        if reason is not None:
            return ctx.barrier(reason)
        for i in range(ctx.num_inputs):
            ctx.lock_input(i, f"token ids read by {ctx.path}")
        dim = int(ctx.layer.output_dim)
        if ctx.out_channels() != dim:
            return ctx.barrier(f"output's last axis ({ctx.out_channels()}) "
                               f"is not output_dim ({dim})")
        p = ctx.port("out", dim, PRODUCER, [("embeddings", -1)],
                     config_key="output_dim")
        ctx.link_output(0, p)
        return None


def _channel_port(ctx, weights=(), shared=None):
    """One pass-through ``channels`` port linking input 0 and output 0."""
    p = ctx.port("channels", ctx.in_channels(), PASS_THROUGH, weights,
                 shared=shared)
    ctx.link_input(0, p)
    ctx.link_output(0, p)
    return p


class BatchNormHandler(ChannelHandler):
    def connect(self, ctx):
        rank = len(ctx.input_shapes[0])
        if _axes(ctx.layer.axis, rank) != [rank - 1]:
            return ctx.barrier(f"normalises over axis {ctx.layer.axis}, not "
                               "the last (channel) axis")
        _channel_port(ctx, [("gamma", 0), ("beta", 0), ("moving_mean", 0),
                            ("moving_variance", 0, 1.0)])


class LayerNormHandler(ChannelHandler):
    """LayerNormalization / GroupNormalization.

    Pruning must not change the statistics, so that the pruned model equals
    the masked one:

    * statistics over the channel axis (LayerNormalization on the last
      axis, ConvNeXt / ViT style; GroupNormalization with ``groups=1``):
      a barrier, every channel is needed for the mean and variance;
    * GroupNormalization with ``1 < groups < channels``: whole groups are
      pruned (the channels of one normalisation group are one unit), so
      the kept groups' statistics are unchanged; ``groups`` shrinks;
    * one group per channel (``groups=-1`` or ``channels``) and statistics
      over other axes only: per-channel, pruned freely.

    Example:
        >>> graph = tfcomp.DependencyGraph(model)   # Conv2D -> LN -> Dense
        >>> graph.barriers["ln"]
        'LayerNormalization normalises over all channels: pruning would change it'
    """

    def connect(self, ctx):
        layer = ctx.layer
        rank = len(ctx.input_shapes[0])
        c = ctx.in_channels()
        axes = _axes(layer.axis, rank)
        cls = type(layer).__name__
        if isinstance(layer, keras.layers.GroupNormalization) or hasattr(
                layer, "groups"):
            if axes != [rank - 1]:
                return ctx.barrier("group norm over a non-channel axis")
            g = int(layer.groups)
            g = c if g == -1 else g
            if g == 1:
                return ctx.barrier(
                    f"{cls}(groups=1) normalises over all channels: pruning "
                    "would change it")
            p = _channel_port(ctx, [("gamma", 0), ("beta", 0)], shared=True)
            if g < c:
                # channels of one normalisation group are one unit
                size = c // g
                ctx.tie(p, p, (np.arange(c) // size) * size)
        elif rank - 1 in axes:
            return ctx.barrier(f"{cls} normalises over all channels: "
                               "pruning would change it")
        else:
            _channel_port(ctx)

    def update_config(self, config, keep):
        g = config.get("groups")
        mask = keep.input(0)
        if g is not None and int(g) not in (-1, 1) and mask.size:
            per_group = mask.size // int(g)
            config["groups"] = int(mask.sum()) // per_group
        return config


class NormalizationHandler(ChannelHandler):
    """The ``Normalization`` preprocessing layer (per-channel mean/var)."""

    def connect(self, ctx):
        rank = len(ctx.input_shapes[0])
        if rank - 1 in _axes(getattr(ctx.layer, "axis", -1), rank):
            _channel_port(ctx, [("mean", -1), ("variance", -1, 1.0)],
                          shared=True)
        else:
            _channel_port(ctx)

    def update_config(self, config, keep):
        mask = keep.input(0)
        for key in ("mean", "variance"):
            v = config.get(key)
            if v is None:
                continue
            arr = np.asarray(v)
            if arr.ndim and arr.shape[-1] == mask.size:
                config[key] = np.take(arr, np.flatnonzero(mask), -1).tolist()
        return config


class PReLUHandler(ChannelHandler):
    zero_preserving = True  # max(0, x) + alpha * min(0, x) is 0 at x = 0

    def connect(self, ctx):
        c = ctx.in_channels()
        alpha = getattr(ctx.layer, "alpha", None)
        if alpha is not None and alpha.shape[-1] == c and c > 1:
            _channel_port(ctx, [("alpha", -1)])
        else:
            ctx.pass_through()


class ScaleLayerHandler(ChannelHandler):
    """Per-channel scale layers such as ConvNeXt's LayerScale (gamma)."""

    zero_preserving = True  # gamma * 0 == 0

    def connect(self, ctx):
        c = ctx.in_channels()
        w = [v for v in ctx.layer.weights if tuple(v.shape)[-1:] == (c,)]
        _channel_port(ctx, [(v.name, -1) for v in w], shared=True)

    def update_config(self, config, keep):
        n = int(keep.port("channels").sum())
        size = keep.port("channels").size
        for key in ("projection_dim", "channels", "dim", "units"):
            if config.get(key) == size:
                config[key] = n
        return config
