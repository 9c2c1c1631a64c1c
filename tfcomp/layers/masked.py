"""Keras layers carrying pruning masks in their own (non-trainable) variables.

Every layer type ``make_plan`` prunes has a twin (``MASKED_CLASSES``):
Conv1D/2D/3D (grouped too), Conv1D/2D/3DTranspose, DepthwiseConv1D/2D,
SeparableConv1D/2D, Dense, Batch/GroupNormalization, LSTM/GRU/SimpleRNN/
Bidirectional (:mod:`.masked_recurrent`), Embedding (:mod:`.masked_embedding`):

* ``weight_mask=True`` adds ``kernel_mask`` (same shape as the kernel, 0/1;
  separable convs: ``depthwise_kernel_mask`` and ``pointwise_kernel_mask``)
  and a ``pruning_step`` counter: the forward pass uses ``kernel *
  kernel_mask`` (unstructured or block magnitude pruning).
* ``channel_mask=True`` adds ``channel_mask`` (one 0/1 entry per output
  channel; separable convs: the pointwise filters) and the scalar
  ``mask_active``: while it is 1 the output channels are multiplied by
  ``channel_mask`` (structured / soft filter pruning, FPGM); 0 switches the
  mask off without forgetting the selection.

The forward pass multiplies the kernel by ``kernel_mask`` and the channel
gate (the bias, BN gamma and beta by the gate; the output only when the
activation maps 0 elsewhere): cheaper than gating activations, same outputs.
Masked weights get exactly zero gradient with any optimizer, and the masks
are installed as a *projection* on the variables (a Keras constraint, after
the user's own), so masked entries stay exactly 0 even with momentum or
Adam state left over from before they were masked.

Masks live in layer variables, so ``.keras`` files, ``save_weights`` and
``ModelCheckpoint`` keep them, and ``tf.distribute.MirroredStrategy`` mirrors
them. Only pruning callbacks (``tfcomp.pruning.MagnitudePruning``,
``tfcomp.pruning.FPGMPruning``) change a mask, between steps;
``tfcomp.pruning.strip_pruning`` turns the layers back into plain Keras ones.

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
    "MASKED_CLASSES", "MaskedBatchNormalization", "MaskedConv1D",
    "MaskedConv1DTranspose", "MaskedConv2D", "MaskedConv2DTranspose",
    "MaskedConv3D", "MaskedConv3DTranspose", "MaskedDense",
    "MaskedDepthwiseConv1D", "MaskedDepthwiseConv2D",
    "MaskedGroupNormalization", "MaskedLayer",
    "MaskedSeparableConv1D", "MaskedSeparableConv2D", "masked_class_for",
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

    Subclasses set ``_kernel_attr`` (the kernel variable attribute whose
    output channels the channel gate scales), optionally
    ``_extra_kernel_attrs`` (further kernels with a weight mask of their
    own) and override ``_kernel_channel_shape`` when the output channels
    are not the kernel's last axis.

    Args (of every masked layer):
        *args, **kwargs: the Keras parent layer's arguments.
        weight_mask: add an element-wise ``kernel_mask`` per kernel.
        channel_mask: add a per-output-channel ``channel_mask``.

    Example:
        >>> isinstance(layer, tfcomp.layers.MaskedLayer)
    """

    _kernel_attr: str | None = "_kernel"
    _extra_kernel_attrs: tuple = ()
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
        self.kernel_masks = {}
        self.channel_mask_var = None
        self.mask_active = None
        self.pruning_step = None

    # -- variables -------------------------------------------------------
    def _raw_kernel(self):
        return getattr(self, self._kernel_attr) if self._kernel_attr else None

    def _kernel_attrs(self) -> tuple:
        if not self._kernel_attr:
            return ()
        return (*self._extra_kernel_attrs, self._kernel_attr)

    def _build_masks(self, channels: int):
        if self.weight_mask:
            for attr in self._kernel_attrs():
                kernel = getattr(self, attr)
                self.kernel_masks[attr] = self.add_weight(
                    name=f"{kernel.name}_mask", shape=tuple(kernel.shape),
                    initializer="ones", trainable=False, dtype="float32")
            self.kernel_mask = self.kernel_masks.get(self._kernel_attr)
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
        if not (self.weight_mask or self.channel_mask):
            return
        for attr in self._kernel_attrs():
            kernel = getattr(self, attr)
            kernel.constraint = _Projection(self, kernel.constraint, attr)
        bias = getattr(self, "bias", None)
        if bias is not None and self.channel_mask:
            bias.constraint = _Projection(self, bias.constraint, "bias")

    def weight_masks(self) -> list:
        """``[(kernel variable, its kernel_mask variable), ...]`` (empty
        without ``weight_mask``).

        Example: ``[m.name for _, m in separable.weight_masks()]``
        """
        return [(getattr(self, attr), mask)
                for attr, mask in self.kernel_masks.items()]

    @property
    def mask_variables(self) -> list:
        """The mask-related variables (in save order)."""
        return [v for v in (*self.kernel_masks.values(), self.pruning_step,
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
        mult = None
        if which in self.kernel_masks:
            mult = ops.convert_to_tensor(self.kernel_masks[which])
        gate = self.channel_gate() if which == self._kernel_attr else None
        if gate is not None:
            shape = self._kernel_channel_shape(getattr(self, which).shape)
            gate = ops.reshape(gate, shape)
            mult = gate if mult is None else mult * gate
        return mult

    def effective_kernel(self, attr: str | None = None):
        """The kernel the forward pass uses (``kernel * masks``; the
        channel gate is folded in along the output-channel axis).
        ``attr`` names another kernel (``"depthwise_kernel"``)."""
        attr = attr or self._kernel_attr
        kernel = self.kernel if attr == "_kernel" else getattr(self, attr)
        mult = self._multiplier(attr)
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

    def _gate_outputs(self, outputs, channel_axis: int = -1,
                      always: bool = False):
        """Multiplies outputs by the channel gate (``always``, or when the
        activation could turn a zeroed pre-activation into non-zero)."""
        gate = self.channel_gate()
        if gate is None:
            return outputs
        act = getattr(self, "activation", None)
        if not always and (act is None or getattr(
                act, "__name__", "") in _ZERO_PRESERVING):
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
    """Conv and Dense save only kernel and bias; the masks follow them."""

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


class _MaskedConv(_SavesMasks, MaskedLayer):
    """Conv1D/2D/3D (grouped included; Conv1D's causal padding too)."""

    def build(self, input_shape):
        super().build(input_shape)
        self._build_masks(self.filters)

    def call(self, inputs):
        kernel = self.effective_kernel()
        if self.padding != "causal":
            outputs = self.convolution_op(inputs, kernel)
        else:
            left = int(self.dilation_rate[0]) * (int(self.kernel_size[0]) - 1)
            pad = [[0, 0], [left, 0], [0, 0]]
            if self.data_format != "channels_last":
                pad = [[0, 0], [0, 0], [left, 0]]
            outputs = ops.conv(
                ops.pad(inputs, pad), kernel, strides=list(self.strides),
                padding="valid", dilation_rate=self.dilation_rate,
                data_format=self.data_format)
        return self._bias_activation_gate(outputs, self.filters)


class _MaskedConvTranspose(MaskedLayer):
    """ConvXDTranspose: kernel (*k, filters, in); filters on axis -2."""

    _kernel_attr = "kernel"

    def build(self, input_shape):
        super().build(input_shape)
        self._build_masks(self.filters)

    def _kernel_channel_shape(self, kernel_shape):
        return (int(kernel_shape[-2]), 1)

    def call(self, inputs):
        outputs = ops.conv_transpose(
            inputs, self.effective_kernel(), strides=list(self.strides),
            padding=self.padding, output_padding=self.output_padding,
            dilation_rate=self.dilation_rate, data_format=self.data_format)
        return self._bias_activation_gate(outputs, self.filters)


class _MaskedDepthwise(MaskedLayer):
    """DepthwiseConv1D/2D: the channel mask covers the ``in_channels *
    depth_multiplier`` output channels."""

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


class _MaskedSeparable(MaskedLayer):
    """SeparableConv1D/2D: the channel mask gates the pointwise filters;
    both kernels get a weight mask."""

    _kernel_attr = "pointwise_kernel"
    _extra_kernel_attrs = ("depthwise_kernel",)

    def build(self, input_shape):
        super().build(input_shape)
        self._build_masks(self.filters)

    def call(self, inputs):
        outputs = ops.separable_conv(
            inputs, self.effective_kernel("depthwise_kernel"),
            self.effective_kernel(), strides=self.strides,
            padding=self.padding, dilation_rate=self.dilation_rate,
            data_format=self.data_format)
        return self._bias_activation_gate(outputs, self.filters)


def _register(cls):
    return keras.saving.register_keras_serializable(package="tfcomp")(cls)


@_register
class MaskedConv1D(_MaskedConv, keras.layers.Conv1D):
    """Masked ``Conv1D`` (causal padding too), e.g.
    ``MaskedConv1D(8, 3, padding="causal", channel_mask=True)``."""


@_register
class MaskedConv2D(_MaskedConv, keras.layers.Conv2D):
    """``keras.layers.Conv2D`` with pruning masks (``groups > 1`` too).

    Example:
        >>> conv = MaskedConv2D(8, 3, padding="same", channel_mask=True)
        >>> conv.build((None, 8, 8, 3))
        >>> conv.channel_mask_var.assign([1, 1, 0, 1, 1, 1, 1, 0])
    """


@_register
class MaskedConv3D(_MaskedConv, keras.layers.Conv3D):
    """Masked ``Conv3D``: ``MaskedConv3D(8, 3, channel_mask=True)``."""


@_register
class MaskedConv1DTranspose(_MaskedConvTranspose,
                            keras.layers.Conv1DTranspose):
    """Masked ``Conv1DTranspose``, e.g.
    ``MaskedConv1DTranspose(8, 2, strides=2, channel_mask=True)``."""


@_register
class MaskedConv2DTranspose(_MaskedConvTranspose,
                            keras.layers.Conv2DTranspose):
    """``keras.layers.Conv2DTranspose`` with pruning masks; the channel
    mask covers the ``filters`` (kernel axis -2).

    Example:
        >>> up = MaskedConv2DTranspose(8, 2, strides=2, channel_mask=True)
    """


@_register
class MaskedConv3DTranspose(_MaskedConvTranspose,
                            keras.layers.Conv3DTranspose):
    """Masked ``Conv3DTranspose``, e.g.
    ``MaskedConv3DTranspose(8, 2, strides=2, channel_mask=True)``."""


@_register
class MaskedDense(_SavesMasks, MaskedLayer, keras.layers.Dense):
    """``keras.layers.Dense`` with pruning masks.

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


@_register
class MaskedDepthwiseConv1D(_MaskedDepthwise, keras.layers.DepthwiseConv1D):
    """Masked ``DepthwiseConv1D``, e.g.
    ``MaskedDepthwiseConv1D(3, padding="same", channel_mask=True)``."""


@_register
class MaskedDepthwiseConv2D(_MaskedDepthwise, keras.layers.DepthwiseConv2D):
    """``keras.layers.DepthwiseConv2D`` with pruning masks (the channel
    mask covers the ``in_channels * depth_multiplier`` output channels).

    Example:
        >>> dw = MaskedDepthwiseConv2D(3, padding="same", channel_mask=True)
    """


@_register
class MaskedSeparableConv1D(_MaskedSeparable, keras.layers.SeparableConv1D):
    """Masked ``SeparableConv1D``, e.g.
    ``MaskedSeparableConv1D(8, 3, weight_mask=True)``."""


@_register
class MaskedSeparableConv2D(_MaskedSeparable, keras.layers.SeparableConv2D):
    """``keras.layers.SeparableConv2D`` with pruning masks.

    ``channel_mask`` gates the pointwise filters (the output channels; the
    depthwise part feeds only this layer), ``weight_mask`` adds
    ``depthwise_kernel_mask`` and ``pointwise_kernel_mask`` (``kernel_mask``
    is the pointwise one).

    Example:
        >>> sep = MaskedSeparableConv2D(16, 3, padding="same",
        ...                             channel_mask=True)
    """


@_register
class MaskedBatchNormalization(MaskedLayer, keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` whose outputs can be channel-masked
    (``channel_mask`` only: there is no kernel). The output of a masked
    channel is exactly 0 (gamma and beta are left untouched, so the channel
    can come back when the mask is lifted).

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
            return self._gate_outputs(outputs, self._mask_axis, always=True)
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


@_register
class MaskedGroupNormalization(MaskedLayer, keras.layers.GroupNormalization):
    """``keras.layers.GroupNormalization`` whose outputs can be
    channel-masked (``channel_mask`` only). The dependency graph prunes
    whole normalisation groups, so masking them (output 0) and removing
    them leave the other groups' statistics, and outputs, the same.

    Example: ``MaskedGroupNormalization(groups=4, channel_mask=True)``
    """

    _kernel_attr = None
    _has_kernel = False

    def build(self, input_shape):
        super().build(input_shape)
        self._build_masks(int(input_shape[self.axis]))

    def call(self, inputs):
        return self._gate_outputs(super().call(inputs), self.axis,
                                  always=True)


MASKED_CLASSES = {
    keras.layers.Conv1D: MaskedConv1D,
    keras.layers.Conv2D: MaskedConv2D,
    keras.layers.Conv3D: MaskedConv3D,
    keras.layers.Conv1DTranspose: MaskedConv1DTranspose,
    keras.layers.Conv2DTranspose: MaskedConv2DTranspose,
    keras.layers.Conv3DTranspose: MaskedConv3DTranspose,
    keras.layers.Dense: MaskedDense,
    keras.layers.DepthwiseConv1D: MaskedDepthwiseConv1D,
    keras.layers.DepthwiseConv2D: MaskedDepthwiseConv2D,
    keras.layers.SeparableConv1D: MaskedSeparableConv1D,
    keras.layers.SeparableConv2D: MaskedSeparableConv2D,
    keras.layers.BatchNormalization: MaskedBatchNormalization,
    keras.layers.GroupNormalization: MaskedGroupNormalization,
}


def masked_class_for(layer):
    """The masked class for a plain Keras layer (exact type), else None.

    Example: ``masked_class_for(keras.layers.Conv2D(8, 3))  # MaskedConv2D``
    """
    return MASKED_CLASSES.get(type(layer))


def plain_class_of(layer):
    """The Keras class a masked layer extends (None if not masked).

    Example: ``plain_class_of(MaskedDense(4))  # keras.layers.Dense``
    """
    for plain, masked in MASKED_CLASSES.items():
        if type(layer) is masked:
            return plain
    return None
