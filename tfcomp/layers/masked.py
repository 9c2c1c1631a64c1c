"""Keras layers carrying pruning masks in their own (non-trainable) variables.

``MaskedConv2D``, ``MaskedDepthwiseConv2D``, ``MaskedDense`` and
``MaskedBatchNormalization`` take their Keras parent's arguments plus two
switches:

* ``weight_mask=True`` adds ``kernel_mask`` (same shape as the kernel, 0/1)
  and a ``pruning_step`` counter: the forward pass uses ``kernel *
  kernel_mask`` (unstructured or block magnitude pruning).
* ``channel_mask=True`` adds ``channel_mask`` (one 0/1 entry per output
  channel) and the scalar ``mask_active``: while ``mask_active`` is 1 the
  layer's output channels are multiplied by ``channel_mask`` (structured /
  soft filter pruning, FPGM). ``mask_active = 0`` switches the channel mask
  off without forgetting the selection.

The forward pass multiplies the kernel by ``kernel_mask`` and by the channel
gate (and the bias, BN gamma and beta by the gate; the output itself only when
the fused activation maps 0 to a non-zero value), which is cheaper than gating
activations and gives the same outputs. Because the masks act inside the
forward pass, masked weights receive exactly zero gradient with any optimizer;
in addition the masks are installed as a *projection* on the trainable
variables (Keras applies variable constraints after every optimizer step), so
the stored kernel entries of masked weights stay exactly 0 even with momentum
or Adam state left over from before they were masked. The user's own
``kernel_constraint`` still runs first.

Masks live in layer variables, so ``.keras`` files, ``save_weights`` and
``ModelCheckpoint`` keep them, and they are mirrored under
``tf.distribute.MirroredStrategy`` like any weight. A mask is changed only by
pruning callbacks (``tfcomp.pruning.MagnitudePruning``,
``tfcomp.pruning.FPGMPruning``) between steps; ``tfcomp.pruning.strip_pruning``
turns the layers back into plain Keras layers.

Example:
    >>> layer = MaskedConv2D(16, 3, padding="same", weight_mask=True)
    >>> y = layer(np.zeros((1, 8, 8, 3), "float32"))
    >>> layer.kernel_mask.shape
    (3, 3, 3, 16)
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = [
    "MASKED_CLASSES",
    "MaskedBatchNormalization",
    "MaskedConv2D",
    "MaskedDense",
    "MaskedDepthwiseConv2D",
    "MaskedLayer",
    "masked_class_for",
    "plain_class_of",
]


# Activations with f(0) == 0: gating kernel and bias is enough.
_ZERO_PRESERVING = {"linear", "relu", "relu6", "elu", "selu", "gelu",
                    "silu", "swish", "tanh", "leaky_relu", "hard_silu",
                    "hard_swish", "mish", "softsign", "celu"}


class _Projection:
    """Variable constraint: the user's constraint, then ``w * mask``."""

    def __init__(self, layer, base, which: str):
        self.layer = layer
        self.base = base
        self.which = which

    def __call__(self, w):
        if self.base is not None:
            w = self.base(w)
        mult = self.layer._multiplier(self.which)
        if mult is None:
            return w
        return w * ops.cast(mult, w.dtype)


class MaskedLayer:
    """Mix-in with the mask variables shared by all masked layer types.

    Subclasses set ``_kernel_attr`` (the raw kernel variable attribute) and
    implement ``_channel_count`` / ``_channel_shape_for`` helpers.

    Example:
        >>> isinstance(layer, tfcomp.layers.MaskedLayer)
    """

    _kernel_attr: str | None = "_kernel"
    _has_kernel = True

    def __init__(self, *args, weight_mask: bool = False,
                 channel_mask: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_masks(weight_mask, channel_mask)

    def get_config(self):
        return {**super().get_config(), **self._mask_config()}

    def _init_masks(self, weight_mask, channel_mask):
        if not isinstance(weight_mask, bool):
            raise TypeError(f"weight_mask must be a bool. Received: "
                            f"weight_mask={weight_mask!r}")
        if not isinstance(channel_mask, bool):
            raise TypeError(f"channel_mask must be a bool. Received: "
                            f"channel_mask={channel_mask!r}")
        if weight_mask and not self._has_kernel:
            raise ValueError(
                f"{type(self).__name__} has no kernel to weight-mask. "
                "Received: weight_mask=True")
        self.weight_mask = weight_mask
        self.channel_mask = channel_mask
        self.kernel_mask = None
        self.channel_mask_var = None
        self.mask_active = None
        self.pruning_step = None

    # -- variables -------------------------------------------------------
    def _raw_kernel(self):
        return getattr(self, self._kernel_attr) if self._kernel_attr else None

    def _build_masks(self, channels: int):
        if self.weight_mask:
            kernel = self._raw_kernel()
            self.kernel_mask = self.add_weight(
                name="kernel_mask", shape=tuple(kernel.shape),
                initializer="ones", trainable=False, dtype="float32")
            self.pruning_step = self.add_weight(
                name="pruning_step", shape=(), initializer="zeros",
                trainable=False, dtype="int64")
        if self.channel_mask:
            self.channel_mask_var = self.add_weight(
                name="channel_mask", shape=(int(channels),),
                initializer="ones", trainable=False, dtype="float32")
            self.mask_active = self.add_weight(
                name="mask_active", shape=(), initializer="ones",
                trainable=False, dtype="float32")
        self._install_projections()

    def _install_projections(self):
        kernel = self._raw_kernel()
        if kernel is not None and (self.weight_mask or self.channel_mask):
            kernel.constraint = _Projection(self, kernel.constraint, "kernel")
        bias = getattr(self, "bias", None)
        if bias is not None and self.channel_mask:
            bias.constraint = _Projection(self, bias.constraint, "bias")

    @property
    def mask_variables(self) -> list:
        """The mask-related variables (in save order)."""
        return [v for v in (self.kernel_mask, self.pruning_step,
                            self.channel_mask_var, self.mask_active)
                if v is not None]

    # -- multipliers -----------------------------------------------------
    def channel_gate(self):
        """Per-output-channel multiplier: ``channel_mask`` when active,
        else ones (None without a channel mask)."""
        if not self.channel_mask:
            return None
        m = ops.convert_to_tensor(self.channel_mask_var)
        a = ops.convert_to_tensor(self.mask_active)
        return 1.0 - a * (1.0 - m)

    def _kernel_channel_shape(self, kernel_shape):
        """Shape the channel gate takes to broadcast over the kernel."""
        return (int(kernel_shape[-1]),)

    def _multiplier(self, which: str):
        if which == "bias":
            return self.channel_gate()
        kernel = self._raw_kernel()
        mult = None
        if self.weight_mask:
            mult = ops.convert_to_tensor(self.kernel_mask)
        gate = self.channel_gate()
        if gate is not None:
            gate = ops.reshape(gate, self._kernel_channel_shape(kernel.shape))
            mult = gate if mult is None else mult * gate
        return mult

    def effective_kernel(self):
        """The kernel the forward pass uses (``kernel * masks``; the
        channel gate is folded in along the output-channel axis)."""
        kernel = self.kernel
        mult = self._multiplier("kernel")
        if mult is None:
            return kernel
        return kernel * ops.cast(mult, kernel.dtype)

    def masked_bias(self):
        """The bias the forward pass uses (``bias * channel gate``)."""
        bias = getattr(self, "bias", None)
        gate = self.channel_gate()
        if bias is None or gate is None:
            return bias
        return bias * ops.cast(gate, bias.dtype)

    def _bias_activation_gate(self, outputs, channels: int):
        """Adds the masked bias, applies the activation and gates the
        outputs (conv layers; ``channels`` output channels)."""
        channels_last = self.data_format == "channels_last"
        if self.use_bias:
            if channels_last:
                shape = (1,) * (self.rank + 1) + (channels,)
            else:
                shape = (1, channels) + (1,) * self.rank
            outputs = ops.add(outputs, ops.reshape(self.masked_bias(),
                                                   shape))
        if self.activation is not None:
            outputs = self.activation(outputs)
        return self._gate_outputs(outputs, -1 if channels_last else 1)

    def _gate_outputs(self, outputs, channel_axis: int = -1):
        """Multiplies outputs by the channel gate when the activation could
        turn a zeroed pre-activation into a non-zero output."""
        gate = self.channel_gate()
        if gate is None:
            return outputs
        act = getattr(self, "activation", None)
        if act is None or getattr(act, "__name__", "") in _ZERO_PRESERVING:
            return outputs  # kernel and bias are gated already
        shape = [1] * len(outputs.shape)
        shape[channel_axis] = -1
        return outputs * ops.cast(ops.reshape(gate, shape), outputs.dtype)

    # -- config / saving -------------------------------------------------
    def _mask_config(self) -> dict:
        return {"weight_mask": self.weight_mask,
                "channel_mask": self.channel_mask}

    def _save_masks(self, store, offset: int):
        for i, v in enumerate(self.mask_variables):
            store[str(offset + i)] = v

    def _load_masks(self, store, offset: int):
        for i, v in enumerate(self.mask_variables):
            v.assign(store[str(offset + i)])


class _SavesMasks:
    """Conv2D and Dense save only kernel and bias; the masks follow them."""

    def save_own_variables(self, store):
        super().save_own_variables(store)
        if self.built:
            self._save_masks(store, self._own_offset())

    def load_own_variables(self, store):
        super().load_own_variables(store)
        if self.built:
            self._load_masks(store, self._own_offset())

    def _own_offset(self) -> int:
        return 1 + int(getattr(self, "bias", None) is not None)


@keras.saving.register_keras_serializable(package="tfcomp")
class MaskedConv2D(_SavesMasks, MaskedLayer, keras.layers.Conv2D):
    """``keras.layers.Conv2D`` with pruning masks.

    Args:
        *args, **kwargs: ``keras.layers.Conv2D`` arguments.
        weight_mask: add an element-wise ``kernel_mask``.
        channel_mask: add a per-filter ``channel_mask`` (output channels).

    Example:
        >>> conv = MaskedConv2D(8, 3, padding="same", channel_mask=True)
        >>> conv.build((None, 8, 8, 3))
        >>> conv.channel_mask_var.assign([1, 1, 0, 1, 1, 1, 1, 0])
    """

    def build(self, input_shape):
        super().build(input_shape)
        self._build_masks(self.filters)

    def call(self, inputs):
        outputs = self.convolution_op(inputs, self.effective_kernel())
        return self._bias_activation_gate(outputs, self.filters)


@keras.saving.register_keras_serializable(package="tfcomp")
class MaskedDense(_SavesMasks, MaskedLayer, keras.layers.Dense):
    """``keras.layers.Dense`` with pruning masks.

    Args:
        *args, **kwargs: ``keras.layers.Dense`` arguments.
        weight_mask: add an element-wise ``kernel_mask``.
        channel_mask: add a per-unit ``channel_mask``.

    Example:
        >>> dense = MaskedDense(10, weight_mask=True)
    """

    def build(self, input_shape):
        super().build(input_shape)
        self._build_masks(self.units)

    def call(self, inputs, training=None):
        x = ops.matmul(inputs, self.effective_kernel())
        if self.bias is not None:
            x = ops.add(x, self.masked_bias())
        if self.activation is not None:
            x = self.activation(x)
        return self._gate_outputs(x, -1)


@keras.saving.register_keras_serializable(package="tfcomp")
class MaskedDepthwiseConv2D(MaskedLayer, keras.layers.DepthwiseConv2D):
    """``keras.layers.DepthwiseConv2D`` with pruning masks.

    The channel mask covers the ``in_channels * depth_multiplier`` output
    channels.

    Args:
        *args, **kwargs: ``keras.layers.DepthwiseConv2D`` arguments.
        weight_mask: add an element-wise ``kernel_mask``.
        channel_mask: add a per-output-channel ``channel_mask``.

    Example:
        >>> dw = MaskedDepthwiseConv2D(3, padding="same", channel_mask=True)
    """

    _kernel_attr = "kernel"

    def build(self, input_shape):
        super().build(input_shape)
        k = self.kernel.shape
        self._build_masks(int(k[-2]) * int(k[-1]))

    def _kernel_channel_shape(self, kernel_shape):
        return (int(kernel_shape[-2]), int(kernel_shape[-1]))

    def call(self, inputs):
        kernel = self.effective_kernel()
        outputs = ops.depthwise_conv(
            inputs, kernel, strides=self.strides, padding=self.padding,
            dilation_rate=self.dilation_rate, data_format=self.data_format)
        channels = int(kernel.shape[-2]) * int(kernel.shape[-1])
        return self._bias_activation_gate(outputs, channels)


@keras.saving.register_keras_serializable(package="tfcomp")
class MaskedBatchNormalization(MaskedLayer, keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` whose outputs can be channel-masked.

    Only ``channel_mask`` is supported (there is no kernel). The output of a
    masked channel is exactly 0 (gamma and beta are left untouched, so the
    channel can come back when the mask is lifted).

    Args:
        *args, **kwargs: ``keras.layers.BatchNormalization`` arguments.
        weight_mask: must be False.
        channel_mask: add a per-channel ``channel_mask``.

    Example:
        >>> bn = MaskedBatchNormalization(channel_mask=True)
    """

    _kernel_attr = None
    _has_kernel = False

    def build(self, input_shape):
        super().build(input_shape)
        axis = self.axis if isinstance(self.axis, int) else None
        if axis is None and len(self.axis) == 1:
            axis = int(self.axis[0])
        if axis is None and self.channel_mask:
            raise ValueError(
                f"Layer {self.name!r}: channel_mask needs a single "
                f"normalisation axis. Received: axis={self.axis!r}")
        self._mask_axis = axis
        channels = int(input_shape[axis]) if axis is not None else 0
        self._build_masks(channels)

    def call(self, inputs, training=None, mask=None):
        if not self.channel_mask:
            return super().call(inputs, training=training, mask=mask)
        if mask is not None or self.renorm:
            outputs = super().call(inputs, training=training, mask=mask)
            shape = [1] * len(outputs.shape)
            shape[self._mask_axis] = -1
            gate = ops.reshape(self.channel_gate(), shape)
            return outputs * ops.cast(gate, outputs.dtype)
        # Same computation as BatchNormalization with gamma and beta
        # multiplied by the gate (cheaper than gating the output tensor).
        dtype = keras.backend.result_type(inputs.dtype, "float32")
        x = ops.cast(inputs, dtype)
        moving_mean = ops.cast(self.moving_mean, dtype)
        moving_variance = ops.cast(self.moving_variance, dtype)
        if training and self.trainable:
            rank = len(x.shape)
            axes = [i for i in range(rank) if i != self._mask_axis % rank]
            mean, variance = ops.moments(x, axes=axes,
                                         synchronized=self.synchronized)
            self.moving_mean.assign(
                moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(
                moving_variance * self.momentum
                + variance * (1.0 - self.momentum))
        else:
            mean, variance = moving_mean, moving_variance
        gate = ops.cast(self.channel_gate(), dtype)
        gamma = gate * ops.cast(self.gamma, dtype) if self.scale else gate
        beta = gate * ops.cast(self.beta, dtype) if self.center else None
        outputs = ops.batch_normalization(
            x=x, mean=mean, variance=variance, axis=self._mask_axis,
            offset=beta, scale=gamma, epsilon=self.epsilon)
        return ops.cast(outputs, self.compute_dtype)


MASKED_CLASSES = {
    keras.layers.Conv2D: MaskedConv2D,
    keras.layers.Dense: MaskedDense,
    keras.layers.DepthwiseConv2D: MaskedDepthwiseConv2D,
    keras.layers.BatchNormalization: MaskedBatchNormalization,
}


def masked_class_for(layer):
    """The masked class for a plain Keras layer (exact type), else None.

    Example:
        >>> masked_class_for(keras.layers.Conv2D(8, 3)) is MaskedConv2D
        True
    """
    return MASKED_CLASSES.get(type(layer))


def plain_class_of(layer):
    """The Keras class a masked layer extends (None if not masked).

    Example:
        >>> plain_class_of(MaskedDense(4)) is keras.layers.Dense
        True
    """
    for plain, masked in MASKED_CLASSES.items():
        if type(layer) is masked:
            return plain
    return None
