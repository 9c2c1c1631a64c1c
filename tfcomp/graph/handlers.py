"""Channel handlers: what each layer type does to the channels it touches.

A handler describes one call of a layer to the :class:`DependencyGraph`
through a :class:`NodeContext`:

* **ports** are the layer's channel axes that carry weights (or that must be
  reported): a ``Conv2D`` has an ``in`` port (kernel axis -2, a *consumer*)
  and an ``out`` port (kernel axis -1 and the bias, a *producer*); a
  ``BatchNormalization`` has one ``channels`` port (*pass-through*) holding
  gamma, beta and the moving statistics.
* **links** say which tensor channel meets which port position
  (``link_input`` / ``link_output``) and which positions are the same
  channel (``tie``: a depthwise conv's output ``c*m + j`` is its input
  ``c``; a grouped conv's filters at the same in-group position are pruned
  together).
* **locks / barriers** keep channels untouched and say why.

The graph merges every linked position into coupled channels, and every
producer's positions into one :class:`Group`.

At surgery time the graph slices each port's weights (``weights`` specs:
``(variable_name, axis[, mask_fill])``) and calls the handler's
``update_config`` so the rebuilt layer has the new width
(``config_key``: ``filters`` / ``units``, or custom code).

Register handlers for your own layers with :func:`register_channel_handler`.

Example:
    >>> class Scale(tfcomp.graph.ChannelHandler):
    ...     def connect(self, ctx):
    ...         p = ctx.port("channels", ctx.in_channels(), "pass-through",
    ...                      weights=[("scale", 0)])
    ...         ctx.link_input(0, p)
    ...         ctx.link_output(0, p)
    >>> tfcomp.graph.register_channel_handler(MyScaleLayer, Scale())
"""

from __future__ import annotations

import math
from collections.abc import Callable

import keras
import numpy as np

__all__ = [
    "CONSUMER",
    "PASS_THROUGH",
    "PRODUCER",
    "SOURCE",
    "ChannelHandler",
    "NodeContext",
    "get_channel_handler",
    "register_channel_handler",
]

PRODUCER = "producer"
CONSUMER = "consumer"
PASS_THROUGH = "pass-through"
SOURCE = "source"
ROLES = (PRODUCER, CONSUMER, PASS_THROUGH, SOURCE)


class NodeContext:
    """One call of one layer, as a handler sees it.

    Attributes:
        layer: the Keras layer or ``keras.ops`` operation object.
        path: its name (``outer/inner`` inside nested models).
        node_index: which call of the layer this is.
        input_shapes: shapes (with batch axis) of the tensor inputs.
        output_shapes: shapes of the outputs.
        constants: non-tensor positional arguments (``x + 3.0`` -> [3.0]).

    Example:
        >>> def connect(ctx):          # an element-wise layer
        ...     ctx.pass_through()
    """

    def __init__(self, builder, node, input_shapes, output_shapes):
        self._b = builder
        self._node = node
        self.layer = node.op
        self.path = node.path
        self.node_index = node.node_index
        self.input_shapes = list(input_shapes)
        self.output_shapes = list(output_shapes)
        self.constants = list(node.constants)
        self.linked_outputs: set = set()

    # -- shapes ----------------------------------------------------------
    @property
    def num_inputs(self) -> int:
        return len(self.input_shapes)

    @property
    def num_outputs(self) -> int:
        return len(self.output_shapes)

    def in_channels(self, i: int = 0) -> int:
        """Channels (last axis) of tensor input ``i``."""
        return self._b.tensor_size(self._node.inputs[i])

    def out_channels(self, j: int = 0) -> int:
        """Channels (last axis) of output ``j``."""
        return self._b.tensor_size(self._node.outputs[j])

    # -- declarations ----------------------------------------------------
    def port(self, name: str, size: int, role: str, weights=(),
             config_key: str | None = None, macs: bool = False,
             shared: bool | None = None) -> str:
        """Declares a channel axis of the layer; returns its key.

        Args:
            name: port name, unique within the layer (``in``, ``out``...).
            size: number of positions on the axis.
            role: ``producer`` (creates channels: conv filters, dense
                units), ``consumer`` (reads channels: kernel input axis),
                ``pass-through`` (per-channel parameters or plain
                coupling) or ``source`` (channels that appear here and must
                not be changed: model inputs, barrier outputs).
            weights: ``(variable_name, axis)`` or
                ``(variable_name, axis, mask_fill)`` entries this axis
                indexes; sliced by pruning, set to ``mask_fill`` (default 0)
                by masking. Names missing from the layer are skipped.
            config_key: config entry set to the kept count after pruning.
            macs: whether the layer's MACs scale with this axis (used by the
                analytic MACs estimate of plans).
            shared: ports with weights belong to the layer (shared by all
                its calls); weightless ones to this call. Override here.
        """
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}. Received: "
                             f"role={role!r}")
        return self._b.add_port(self._node, name, int(size), role,
                                tuple(tuple(w) for w in weights), config_key,
                                bool(macs), shared)

    def link_input(self, i: int, port: str, mapping=None) -> None:
        """Channel ``c`` of input ``i`` is position ``mapping[c]`` of port."""
        self._b.link_tensor(self._node.inputs[i], port, mapping)

    def link_output(self, j: int, port: str, mapping=None) -> None:
        """Channel ``k`` of output ``j`` is position ``mapping[k]``."""
        self._b.link_tensor(self._node.outputs[j], port, mapping)
        self.linked_outputs.add(j)

    def tie(self, port_a: str, port_b: str, mapping) -> None:
        """Position ``p`` of ``port_a`` is position ``mapping[p]`` of b."""
        self._b.tie(port_a, port_b, mapping)

    def pass_through(self, inputs=(0,), output: int = 0,
                     name: str = "channels") -> str:
        """Couples output ``output`` channel-for-channel with ``inputs``."""
        size = self.out_channels(output)
        p = self.port(name, size, PASS_THROUGH)
        self.link_output(output, p)
        for i in inputs:
            if self.in_channels(i) != size:
                raise ValueError(
                    f"{self.path}: input {i} has {self.in_channels(i)} "
                    f"channels, output has {size}")
            self.link_input(i, p)
        return p

    def lock_input(self, i: int, reason: str) -> None:
        """Channels of input ``i`` must not be pruned."""
        self._b.lock_tensor(self._node.inputs[i], reason)

    def source(self, j: int, reason: str | None = None) -> str:
        """Output ``j`` holds new channels that this layer cannot change."""
        p = self.port(f"out{j}" if j else "out", self.out_channels(j),
                      SOURCE)
        self.link_output(j, p)
        if reason:
            self._b.lock_tensor(self._node.outputs[j], reason)
        return p

    def barrier(self, reason: str) -> None:
        """Touches no channel: inputs locked, outputs new locked channels."""
        self._b.barriers.setdefault(self.path, reason)
        for i in range(self.num_inputs):
            self.lock_input(i, f"consumed by {self.path}: {reason}")
        for j in range(self.num_outputs):
            if j not in self.linked_outputs:
                self.source(j, f"produced by {self.path}: {reason}")


class ChannelHandler:
    """Base class of channel handlers (override ``connect``).

    Example:
        >>> class PassThrough(ChannelHandler):
        ...     def connect(self, ctx):
        ...         ctx.pass_through()
    """

    def connect(self, ctx: NodeContext) -> None:  # pragma: no cover
        raise NotImplementedError

    def update_config(self, config: dict, keep) -> dict:
        """Returns the layer config after pruning.

        Args:
            config: a copy of the layer's config.
            keep: a ``LayerKeep`` with ``port(name)``, ``input(i)`` and
                ``output(j)`` boolean masks and ``config_ports``
                (``{config_key: kept count}``).
        """
        for key, n in keep.config_ports.items():
            config[key] = int(n)
        return config

    def macs_scale(self, fractions: dict, layer) -> float | None:
        """MACs after pruning / before, from kept fractions per port name.

        Return None to use the default: product over ``macs=True`` ports.
        """
        return None


class _FnHandler(ChannelHandler):
    def __init__(self, fn: Callable):
        self.fn = fn

    def connect(self, ctx):
        self.fn(ctx)


_BY_CLASS: dict = {}
_LAYER_NAMES: dict = {}
_OP_NAMES: dict = {}


def register_channel_handler(layer_cls, handler) -> None:
    """Registers how a layer class (or ``keras.ops`` op) couples channels.

    Args:
        layer_cls: a Layer subclass (matched through the MRO, so subclasses
            inherit it), or a class name string (exact match; for
            ``keras.ops`` operations and classes you cannot import).
        handler: a :class:`ChannelHandler` instance or subclass, or a
            function ``connect(ctx: NodeContext) -> None``.

    Example:
        >>> register_channel_handler(
        ...     MyElementwise, lambda ctx: ctx.pass_through())
    """
    if isinstance(handler, type) and issubclass(handler, ChannelHandler):
        handler = handler()
    elif not isinstance(handler, ChannelHandler):
        if not callable(handler):
            raise TypeError(
                "handler must be a ChannelHandler or a callable connect(ctx)."
                f" Received: handler={handler!r}")
        handler = _FnHandler(handler)
    if isinstance(layer_cls, str):
        _LAYER_NAMES[layer_cls] = handler
        _OP_NAMES[layer_cls] = handler
    elif isinstance(layer_cls, type):
        _BY_CLASS[layer_cls] = handler
    else:
        raise TypeError(
            "layer_cls must be a class or a class name. Received: "
            f"layer_cls={layer_cls!r}")


def get_channel_handler(op) -> ChannelHandler | None:
    """The handler for a layer / op object, or None (a barrier).

    Example:
        >>> get_channel_handler(keras.layers.Conv2D(8, 3))
    """
    for klass in type(op).__mro__:
        if klass in _BY_CLASS:
            return _BY_CLASS[klass]
    name = type(op).__name__
    if isinstance(op, keras.layers.Layer):
        return _LAYER_NAMES.get(name)
    return _OP_NAMES.get(name)


# ---------------------------------------------------------------------------
# helpers


def _channels_last(layer) -> bool:
    return getattr(layer, "data_format", "channels_last") in (
        None, "channels_last")


def _axes(axis, rank: int) -> list:
    if axis is None:
        return list(range(1, rank))
    axes = axis if isinstance(axis, (list, tuple)) else [axis]
    return sorted(int(a) % rank for a in axes)


def _bias(layer, name="bias") -> list:
    return [(name, 0)] if getattr(layer, "use_bias", True) else []


# ---------------------------------------------------------------------------
# built-in handlers


class InputHandler(ChannelHandler):
    def connect(self, ctx):
        ctx.source(0, "model input")


class ConvHandler(ChannelHandler):
    """Conv1D/2D/3D: kernel (*k, cin/groups, cout); groups supported."""

    def connect(self, ctx):
        layer = ctx.layer
        if not _channels_last(layer):
            return ctx.barrier("channels_first data format")
        cin, cout = ctx.in_channels(), ctx.out_channels()
        g = int(getattr(layer, "groups", 1) or 1)
        bias = _bias(layer)
        if g == 1:
            pin = ctx.port("in", cin, CONSUMER, [("kernel", -2)], macs=True)
            pout = ctx.port("out", cout, PRODUCER, [("kernel", -1)] + bias,
                            config_key="filters", macs=True)
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
            pin = ctx.port("in", cin_g, CONSUMER, [("kernel", -2)],
                           macs=True)
            pout = ctx.port("out", cout, PRODUCER, [("kernel", -1)] + bias,
                            config_key="filters", macs=True)
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


class ConvTransposeHandler(ChannelHandler):
    """ConvXDTranspose: kernel (*k, cout, cin)."""

    def connect(self, ctx):
        layer = ctx.layer
        if not _channels_last(layer):
            return ctx.barrier("channels_first data format")
        pin = ctx.port("in", ctx.in_channels(), CONSUMER, [("kernel", -1)],
                       macs=True)
        pout = ctx.port("out", ctx.out_channels(), PRODUCER,
                        [("kernel", -2)] + _bias(layer),
                        config_key="filters", macs=True)
        ctx.link_input(0, pin)
        ctx.link_output(0, pout)


class DepthwiseHandler(ChannelHandler):
    """DepthwiseConv1D/2D: kernel (*k, cin, m); output c*m+j is input c."""

    def connect(self, ctx):
        layer = ctx.layer
        if not _channels_last(layer):
            return ctx.barrier("channels_first data format")
        cin = ctx.in_channels()
        m = int(layer.depth_multiplier)
        pin = ctx.port("in", cin, PASS_THROUGH,
                       [("kernel", -2), ("depthwise_kernel", -2)], macs=True)
        pout = ctx.port("out", cin * m, PASS_THROUGH, _bias(layer),
                        shared=True)
        ctx.tie(pout, pin, np.arange(cin * m) // m)
        ctx.link_input(0, pin)
        ctx.link_output(0, pout)


class SeparableHandler(ChannelHandler):
    """SeparableConv1D/2D: depthwise (*k, cin, m) then pointwise."""

    def connect(self, ctx):
        layer = ctx.layer
        if not _channels_last(layer):
            return ctx.barrier("channels_first data format")
        cin, cout = ctx.in_channels(), ctx.out_channels()
        m = int(layer.depth_multiplier)
        pin = ctx.port("in", cin, CONSUMER, [("depthwise_kernel", -2)],
                       macs=True)
        mid = ctx.port("mid", cin * m, CONSUMER, [("pointwise_kernel", -2)],
                       shared=True)
        pout = ctx.port("out", cout, PRODUCER,
                        [("pointwise_kernel", -1)] + _bias(layer),
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
        layer = ctx.layer
        pin = ctx.port("in", ctx.in_channels(), CONSUMER, [("kernel", 0)],
                       macs=True)
        pout = ctx.port("out", ctx.out_channels(), PRODUCER,
                        [("kernel", 1)] + _bias(layer), config_key="units",
                        macs=True)
        ctx.link_input(0, pin)
        ctx.link_output(0, pout)


class BatchNormHandler(ChannelHandler):
    def connect(self, ctx):
        rank = len(ctx.input_shapes[0])
        if _axes(ctx.layer.axis, rank) != [rank - 1]:
            return ctx.barrier(f"normalises over axis {ctx.layer.axis}, not "
                               "the last (channel) axis")
        p = ctx.port("channels", ctx.in_channels(), PASS_THROUGH,
                     [("gamma", 0), ("beta", 0), ("moving_mean", 0),
                      ("moving_variance", 0, 1.0)])
        ctx.link_input(0, p)
        ctx.link_output(0, p)


class LayerNormHandler(ChannelHandler):
    """LayerNormalization / GroupNormalization.

    When the statistics run over the channel axis, pruning changes them: the
    pruned model normalises over the kept channels only, so it equals the
    masked model only approximately. Group norms prune the same in-group
    positions in every group.
    """

    def connect(self, ctx):
        layer = ctx.layer
        rank = len(ctx.input_shapes[0])
        c = ctx.in_channels()
        name = type(layer).__name__
        if name == "GroupNormalization" or hasattr(layer, "groups"):
            if _axes(layer.axis, rank) != [rank - 1]:
                return ctx.barrier("group norm over a non-channel axis")
            g = int(layer.groups)
            g = c if g == -1 else g
            p = ctx.port("channels", c, PASS_THROUGH,
                         [("gamma", 0), ("beta", 0)], shared=True)
            if 1 < g < c:
                ctx.tie(p, p, np.arange(c) % (c // g))
        else:
            axes = _axes(layer.axis, rank)
            if rank - 1 in axes:
                p = ctx.port("channels", c, PASS_THROUGH,
                             [("gamma", -1), ("beta", -1)], shared=True)
            else:
                p = ctx.port("channels", c, PASS_THROUGH)
        ctx.link_input(0, p)
        ctx.link_output(0, p)

    def update_config(self, config, keep):
        g = config.get("groups")
        if g is not None and int(g) == keep.input(0).size:
            config["groups"] = int(keep.input(0).sum())  # one per channel
        return config


class ElementwiseHandler(ChannelHandler):
    """Layers that act on every channel independently (or on space only)."""

    def connect(self, ctx):
        if not _channels_last(ctx.layer):
            return ctx.barrier("channels_first data format")
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


class PReLUHandler(ChannelHandler):
    def connect(self, ctx):
        c = ctx.in_channels()
        alpha = getattr(ctx.layer, "alpha", None)
        if alpha is not None and alpha.shape[-1] == c and c > 1:
            p = ctx.port("channels", c, PASS_THROUGH, [("alpha", -1)])
            ctx.link_input(0, p)
            ctx.link_output(0, p)
        else:
            ctx.pass_through()


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
                ctx._b.lock_tensor(ctx._node.outputs[0],
                                   f"{ctx.path}: unsupported broadcast")


class ConcatHandler(ChannelHandler):
    """Concatenate: on the channel axis each input sits at an offset."""

    def connect(self, ctx):
        rank = len(ctx.output_shapes[0])
        axis = int(ctx.layer.axis) % rank
        c_out = ctx.out_channels()
        p = ctx.port("channels", c_out, PASS_THROUGH)
        ctx.link_output(0, p)
        if axis == rank - 1:
            offset = 0
            for i in range(ctx.num_inputs):
                ci = ctx.in_channels(i)
                ctx.link_input(i, p, np.arange(ci) + offset)
                offset += ci
        else:
            for i in range(ctx.num_inputs):
                ctx.link_input(i, p)


class FlattenHandler(ChannelHandler):
    """Flatten (channels_last): feature ``s*C + c`` carries channel ``c``."""

    def connect(self, ctx):
        if not _channels_last(ctx.layer):
            return ctx.barrier("channels_first data format")
        shape = ctx.input_shapes[0]
        if len(shape) <= 2:
            return ctx.pass_through()
        spatial = shape[1:-1]
        if any(d is None for d in spatial):
            return ctx.barrier("unknown spatial size")
        c = ctx.in_channels()
        p = ctx.port("channels", c, PASS_THROUGH)
        ctx.link_input(0, p)
        ctx.link_output(0, p, np.arange(math.prod(spatial) * c) % c)


class ReshapeHandler(ChannelHandler):
    """Reshape whose last axis keeps (or tiles / flattens) the channels."""

    def connect(self, ctx):
        cin, cout = ctx.in_channels(), ctx.out_channels()
        if cin == 0 or cout == 0:
            return ctx.barrier("no channel axis")
        if cin == cout:
            return ctx.pass_through()
        if cout % cin == 0:  # e.g. (H, W, C) -> (H*W*C,)
            p = ctx.port("channels", cin, PASS_THROUGH)
            ctx.link_input(0, p)
            ctx.link_output(0, p, np.arange(cout) % cin)
            return
        if cin % cout == 0:  # e.g. (H*W*C,) -> (H, W, C)
            p = ctx.port("channels", cout, PASS_THROUGH)
            ctx.link_output(0, p)
            ctx.link_input(0, p, np.arange(cin) % cout)
            return
        ctx.barrier(f"reshape moves the channel axis ({cin} -> {cout})")

    def update_config(self, config, keep):
        shape = list(config["target_shape"])
        if shape and shape[-1] not in (-1, None):
            shape[-1] = int(keep.output(0).sum())
        config["target_shape"] = shape
        return config


class RescalingHandler(ElementwiseHandler):
    def update_config(self, config, keep):
        mask = keep.input(0)
        for key in ("scale", "offset"):
            v = config.get(key)
            if isinstance(v, (list, tuple)) and len(v) == mask.size:
                config[key] = [x for x, k in zip(v, mask) if k]
        return config


class NormalizationHandler(ChannelHandler):
    def connect(self, ctx):
        rank = len(ctx.input_shapes[0])
        axes = _axes(getattr(ctx.layer, "axis", -1), rank)
        c = ctx.in_channels()
        if rank - 1 in axes:
            p = ctx.port("channels", c, PASS_THROUGH,
                         [("mean", -1), ("variance", -1, 1.0)], shared=True)
        else:
            p = ctx.port("channels", c, PASS_THROUGH)
        ctx.link_input(0, p)
        ctx.link_output(0, p)

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


class ScaleLayerHandler(ChannelHandler):
    """Per-channel scale layers such as ConvNeXt's LayerScale (gamma)."""

    def connect(self, ctx):
        c = ctx.in_channels()
        w = [v for v in ctx.layer.weights if tuple(v.shape)[-1:] == (c,)]
        p = ctx.port("channels", c, PASS_THROUGH,
                     [(v.name, -1) for v in w], shared=True)
        ctx.link_input(0, p)
        ctx.link_output(0, p)

    def update_config(self, config, keep):
        n = int(keep.port("channels").sum())
        size = keep.port("channels").size
        for key in ("projection_dim", "channels", "dim", "units"):
            if config.get(key) == size:
                config[key] = n
        return config


class OpElementwiseHandler(ChannelHandler):
    """``keras.ops`` operations in a functional graph (x + 3.0, x * y)."""

    def connect(self, ctx):
        if ctx.num_outputs != 1 or ctx.num_inputs < 1:
            return ctx.barrier("unexpected arity")
        MergeHandler().connect(ctx)


L = keras.layers
for _cls in (L.Conv1D, L.Conv2D, L.Conv3D):
    register_channel_handler(_cls, ConvHandler())
for _cls in (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose):
    register_channel_handler(_cls, ConvTransposeHandler())
for _cls in (L.DepthwiseConv1D, L.DepthwiseConv2D):
    register_channel_handler(_cls, DepthwiseHandler())
for _cls in (L.SeparableConv1D, L.SeparableConv2D):
    register_channel_handler(_cls, SeparableHandler())
register_channel_handler(L.Dense, DenseHandler())
register_channel_handler(L.BatchNormalization, BatchNormHandler())
for _cls in (L.LayerNormalization, L.GroupNormalization):
    register_channel_handler(_cls, LayerNormHandler())
register_channel_handler(L.InputLayer, InputHandler())
register_channel_handler(L.Activation, ActivationHandler())
register_channel_handler(L.Softmax, SoftmaxHandler())
register_channel_handler(L.PReLU, PReLUHandler())
register_channel_handler(L.Concatenate, ConcatHandler())
register_channel_handler(L.Flatten, FlattenHandler())
register_channel_handler(L.Reshape, ReshapeHandler())
register_channel_handler(L.Rescaling, RescalingHandler())
register_channel_handler(L.Normalization, NormalizationHandler())
for _cls in (L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum,
             L.Minimum):
    register_channel_handler(_cls, MergeHandler())
_ELEMENTWISE = [
    "ReLU", "LeakyReLU", "ELU", "Dropout", "SpatialDropout1D",
    "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
    "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Identity",
    "Masking", "MaxPooling1D", "MaxPooling2D", "MaxPooling3D",
    "AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
    "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
    "GlobalAveragePooling1D", "GlobalAveragePooling2D",
    "GlobalAveragePooling3D", "ZeroPadding1D", "ZeroPadding2D",
    "ZeroPadding3D", "Cropping1D", "Cropping2D", "Cropping3D",
    "UpSampling1D", "UpSampling2D", "UpSampling3D", "Resizing",
    "CenterCrop",
]
for _name in _ELEMENTWISE:
    if hasattr(L, _name):
        register_channel_handler(getattr(L, _name), ElementwiseHandler())
# Layers of keras.applications that are not exported by keras.layers.
register_channel_handler("LayerScale", ScaleLayerHandler())
register_channel_handler("StochasticDepth", ElementwiseHandler())
register_channel_handler("CustomScaleLayer", MergeHandler())
# keras.ops operations (by class name; they are not Layers).
for _name in (
        "Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Maximum",
        "Minimum", "Power", "Relu", "Relu6", "Sigmoid", "HardSigmoid",
        "Silu", "Swish", "HardSilu", "HardSwish", "Gelu", "Tanh", "Elu",
        "Selu", "Softplus", "Softsign", "LeakyRelu", "Exp", "Log",
        "Absolute", "Abs", "Square", "Sqrt", "Negative", "Cast", "Clip",
        "Log1p", "Expm1", "Erf", "Sign", "Round", "Floor", "Ceil",
        "Reciprocal", "Mish", "Celu", "SoftShrink", "HardShrink",
        "HardTanh", "ThresholdedRelu"):
    _OP_NAMES[_name] = OpElementwiseHandler()
del L, _cls, _name
