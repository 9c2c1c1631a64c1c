"""Channel handler of ``keras.layers.Attention`` (dot-product, ``use_scale``,
``score_mode="dot"`` / ``"concat"``) and ``AdditiveAttention``.

The layer takes ``[query, value]`` or ``[query, value, key]`` (the key
defaults to the value). Its scores sum over the channel axis of query and
key (``q . k``, or ``sum(scale * tanh(q + k))``), so query and key channels
are one coupled set, the port ``qk``: removing channel ``c`` from both
removes one term of every score, a structured pruning like an attention
head's ``key_dim``. ``AdditiveAttention``'s per-channel ``scale`` (dim,)
lies on that port (set to 0 by masking, so a masked channel adds nothing);
``Attention``'s ``scale`` and ``concat_score_weight`` are scalars. The
output has the value's channels: the port ``v`` couples them. Without a
key, key = value, so query, value and output are all one set.

A removed channel adds a constant to every score of a softmax row when it
is constant over positions (0 after ``mask_channels`` zeroes its producer:
relu / linear / tanh); softmax ignores such a constant, so the pruned model
equals the masked one.

The second output of ``return_attention_scores=True`` (``(B, Tq, Tv)``) has
no channel axis: it is locked. ``mask=`` tensors are not channel inputs
(:class:`tfcomp.graph.NodeContext` leaves them out). The config has no
width to update. MACs (``T * S * (dq + dv)`` in the cost model) scale as
``(dq * f_qk + dv * f_v) / (dq + dv)``.

Example:
    >>> a = keras.layers.Attention(name="att")([q, v])   # q, v: Conv1D
    >>> graph = tfcomp.DependencyGraph(model)
    >>> [p.name for p in graph.layer_ports("att")]
    ['qk', 'v']
"""

from __future__ import annotations

import keras

from tfcomp.graph.context import PASS_THROUGH, ChannelHandler

__all__ = ["AttentionHandler"]


def _built_dims(layer) -> tuple | None:
    """``(dq, dv)``: the query's and the value's channels the layer was
    built with (the shapes the cost model reads), or None."""
    shapes = (layer.get_build_config() or {}).get("input_shape")
    if not (isinstance(shapes, (list, tuple)) and len(shapes) >= 2
            and all(isinstance(s, (list, tuple)) and s for s in shapes)):
        return None
    dq, dv = shapes[0][-1], shapes[1][-1]
    if dq is None or dv is None:
        return None
    return int(dq), int(dv)


class AttentionHandler(ChannelHandler):
    """``Attention`` / ``AdditiveAttention``: a ``qk`` port couples query
    and key channels (AdditiveAttention's ``scale`` on it), a ``v`` port
    couples the value's channels with the output's.

    Example:
        >>> graph = tfcomp.DependencyGraph(model)   # Conv1D q, v -> Attention
        >>> graph.group("conv_q").size
        16
    """

    def non_channel_tensors(self, ctx):
        # return_attention_scores: (B, Tq, Tv), the value's positions last
        return (), tuple(range(1, ctx.num_outputs))

    def connect(self, ctx):
        layer = ctx.layer
        n = ctx.num_inputs
        if n not in (2, 3):
            return ctx.barrier(f"expected [query, value] or [query, value, "
                               f"key] inputs, got {n} tensors")
        if any(s is None or len(s) < 3 for s in ctx.input_shapes):
            return ctx.barrier("inputs of rank < 3 (expected (batch, "
                               "positions, channels))")
        dq, dv = ctx.in_channels(0), ctx.in_channels(1)
        dk = ctx.in_channels(2) if n == 3 else dv
        if dq != dk:
            return ctx.barrier(f"query ({dq}) and key ({dk}) channels differ")
        if ctx.out_channels(0) != dv:
            return ctx.barrier(f"output channels ({ctx.out_channels(0)}) "
                               f"are not the value's ({dv})")
        weights = []
        scale = getattr(layer, "scale", None)
        if isinstance(layer, keras.layers.AdditiveAttention) and \
                scale is not None and tuple(scale.shape) == (dq,):
            weights = [("scale", 0)]
        pqk = ctx.port("qk", dq, PASS_THROUGH, weights, macs=True)
        pv = ctx.port("v", dv, PASS_THROUGH, macs=True)
        ctx.link_input(0, pqk)
        ctx.link_input(2 if n == 3 else 1, pqk)
        ctx.link_input(1, pv)
        ctx.link_output(0, pv)
        for j in range(1, ctx.num_outputs):
            ctx.source(j, f"attention scores of {ctx.path}: their last axis "
                          "is the value's positions, not channels")
        return None

    def macs_scale(self, fractions, layer):
        dims = _built_dims(layer)
        if dims is None:
            return None
        dq, dv = dims
        f_qk, f_v = fractions.get("qk", 1.0), fractions.get("v", 1.0)
        return (dq * f_qk + dv * f_v) / (dq + dv)
