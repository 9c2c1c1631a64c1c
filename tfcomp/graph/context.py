"""The handler interface: member roles, :class:`NodeContext` (one call of a
layer as a channel handler sees it) and the :class:`ChannelHandler` base.

See :mod:`tfcomp.graph.handlers` for how handlers describe a layer and the
built-in ones.

Example:
    >>> class Scale(ChannelHandler):
    ...     def connect(self, ctx):
    ...         p = ctx.port("channels", ctx.in_channels(), PASS_THROUGH,
    ...                      weights=[("scale", 0)])
    ...         ctx.link_input(0, p)
    ...         ctx.link_output(0, p)
"""

from __future__ import annotations

__all__ = [
    "CONSUMER",
    "PASS_THROUGH",
    "PRODUCER",
    "ROLES",
    "SOURCE",
    "ChannelHandler",
    "NodeContext",
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
        mask_inputs: tensor ids passed as ``mask=`` (an
            ``Embedding(mask_zero=True)``'s mask reaching an ``LSTM``):
            not channel tensors, so not among the inputs above; the
            builder locks them.

    Example:
        >>> def connect(ctx):          # an element-wise layer
        ...     ctx.pass_through()
    """

    def __init__(self, builder, node, input_shapes, output_shapes,
                 mask_inputs=()):
        self._b = builder
        self._node = node
        self.layer = node.op
        self.path = node.path
        self.node_index = node.node_index
        masks = set(mask_inputs)
        self._inputs = [t for i, t in enumerate(node.inputs)
                        if i not in masks]
        self.mask_inputs = [node.inputs[i] for i in sorted(masks)]
        self.input_shapes = [s for i, s in enumerate(input_shapes)
                             if i not in masks]
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
        return self._b.tensor_size(self._inputs[i])

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
        self._b.link_tensor(self._inputs[i], port, mapping)

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
        self._b.lock_tensor(self._inputs[i], reason)

    def lock_output(self, j: int, reason: str) -> None:
        """Channels of output ``j`` must not be pruned."""
        self._b.lock_tensor(self._node.outputs[j], reason)

    def source(self, j: int, reason: str | None = None) -> str:
        """Output ``j`` holds new channels that this layer cannot change."""
        p = self.port(f"out{j}" if j else "out", self.out_channels(j),
                      SOURCE)
        self.link_output(j, p)
        if reason:
            self.lock_output(j, reason)
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

    #: True when the layer's per-channel weights map a zero channel to
    #: zero (PReLU's alpha, LayerScale's gamma): a soft-pruned channel stays
    #: zero through it without a channel mask of its own.
    zero_preserving = False

    def connect(self, ctx: NodeContext) -> None:  # pragma: no cover
        raise NotImplementedError

    def update_config(self, config: dict, keep) -> dict:
        """Returns the layer config after pruning.

        Args:
            config: a copy of the layer's config.
            keep: a :class:`tfcomp.graph.LayerKeep` with ``port(name)``,
                ``input(i)`` and ``output(j)`` boolean masks and
                ``config_ports`` (``{config_key: kept count}``).
        """
        for key, n in keep.config_ports.items():
            config[key] = int(n)
        return config

    def non_channel_tensors(self, ctx: NodeContext) -> tuple:
        """``(input indices, output indices)`` whose last axis is not a
        channel axis (an Embedding's token ids, attention scores): their
        sizes may be unknown (``None``-length sequences) without making the
        layer a barrier. The handler must not link them (lock them).

        Example:
            >>> EmbeddingHandler().non_channel_tensors(ctx)
            ((0,), ())
        """
        return (), ()

    def macs_scale(self, fractions: dict, layer) -> float | None:
        """MACs after pruning / before, from kept fractions per port name.

        Return None to use the default: product over ``macs=True`` ports.
        """
        return None


# -- small helpers for handler code -----------------------------------------


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


class _ChannelsLastHandler(ChannelHandler):
    """Makes ``channels_first`` layers barriers, then calls ``link``."""

    def connect(self, ctx):
        if not _channels_last(ctx.layer):
            return ctx.barrier("channels_first data format")
        return self.link(ctx)

    def link(self, ctx) -> None:  # pragma: no cover
        raise NotImplementedError
