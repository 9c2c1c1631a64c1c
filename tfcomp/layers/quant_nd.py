"""Quantization-aware Conv1D, Conv3D, Conv2DTranspose and Conv3DTranspose.

Their int8 TFLite export path (``_export_call``) only uses ops TFLite runs
in int8 with per-channel weights: Conv1D is a CONV_2D over a height-1
image, Conv3D a CONV_2D over the depth taps stacked on the channel axis
(TFLite's CONV_3D is float only) and a transposed convolution the
convolution of the zero-upsampled input with the flipped kernel (CONV_2D;
Conv3DTranspose as Conv3D's stacked taps; the converter cannot keep
per-channel ranges through TRANSPOSE_CONV's weight transpose). All are exact
rewrites: the file accumulates the same integer products as the QAT layer.

Example:
    >>> from tfcomp.layers import QuantConv1D
    >>> layer = QuantConv1D(16, 3, padding="same", w_bits=4, a_bits=4)
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from tfcomp.layers._kernel_ops import (
    ConvOp,
    ConvTransposeOp,
    causal_pad,
    undilated,
)
from tfcomp.layers.quant_base import fake_quant_weights
from tfcomp.layers.quant_conv import _Q_DOC, _QuantLayer

__all__ = ["QuantConv1D", "QuantConv3D", "QuantConv2DTranspose",
           "QuantConv3DTranspose", "conv3d_as_conv2d",
           "conv3d_transpose_as_conv2d", "flipped_kernel",
           "transpose_as_valid_conv"]


def _check_channels_last(layer) -> None:
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise NotImplementedError(
            f"int8 TFLite export of layer {layer.name!r} "
            f"({type(layer).__name__}) needs data_format='channels_last'. "
            f"Received: data_format={layer.data_format!r}")


def _same_pad(size: int, out: int, k: int, s: int, d: int) -> tuple:
    """``(before, after)`` padding of TF's "same" along one axis."""
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


@keras.saving.register_keras_serializable(package="tfcomp")
class QuantConv1D(ConvOp, _QuantLayer, keras.layers.Conv1D):
    """``keras.layers.Conv1D`` with fake-quantized weights and inputs
    (grouped and causal convolutions included).

    Args:
        *args, **kwargs: ``keras.layers.Conv1D`` arguments.
    """ + _Q_DOC + """
    Reference: Wang et al., HAQ, arXiv:1811.08886.

    Example:
        >>> layer = QuantConv1D(16, 3, padding="causal", w_bits=4, a_bits=8)
        >>> y = layer(np.zeros((1, 32, 3), "float32"))
    """

    _kernel_reduce_axes = (0, 1)

    def _export_call(self, inputs):
        _check_channels_last(self)
        x = self._export_inputs(inputs)
        padding = self.padding
        if padding == "causal":
            x, padding = causal_pad(x, self), "valid"
        k = fake_quant_weights(ops.expand_dims(undilated(
            self.kernel, self.dilation_rate[0]), 0),
            self._tfcomp_export["fq_max"], axis=-1)
        y = ops.conv(ops.expand_dims(x, 1), k, strides=(1, self.strides[0]),
                     padding=padding)
        # bias and activation on the 4D result: the converter then fuses
        # them into the CONV_2D also when the length is dynamic (None)
        return ops.squeeze(self._apply_bias_activation(y), 1)


@keras.saving.register_keras_serializable(package="tfcomp")
class QuantConv3D(ConvOp, _QuantLayer, keras.layers.Conv3D):
    """``keras.layers.Conv3D`` with fake-quantized weights and inputs.

    Args:
        *args, **kwargs: ``keras.layers.Conv3D`` arguments.
    """ + _Q_DOC + """
    Reference: Wang et al., HAQ, arXiv:1811.08886.

    Example:
        >>> layer = QuantConv3D(8, 3, padding="same", w_bits=8, a_bits=8)
        >>> y = layer(np.zeros((1, 8, 8, 8, 1), "float32"))
    """

    _kernel_reduce_axes = (0, 1, 2, 3)

    def _export_call(self, inputs):
        return conv3d_as_conv2d(self, self._export_inputs(inputs),
                                self._tfcomp_export["fq_max"],
                                self._apply_bias_activation)


def conv3d_as_conv2d(layer, x, fq_max, finish):
    """Conv3D ``layer`` (channels last, grouped too) of ``x`` as one CONV_2D
    over its stacked depth taps (:func:`_conv3d_as_conv2d`; "same" depth
    padding first), ``fq_max``: per-channel fake-quant maxima of the kernel
    (None: the float kernel), ``finish``: bias and activation.

    Example:
        >>> y = conv3d_as_conv2d(layer, x, None, lambda y: y + layer.bias)
    """
    _check_channels_last(layer)
    kd, sd, dd = layer.kernel.shape[0], layer.strides[0], \
        layer.dilation_rate[0]
    d_out = int(layer.compute_output_shape(tuple(x.shape))[1])
    if layer.padding == "same":
        before, after = _same_pad(int(x.shape[1]), d_out, kd, sd, dd)
        if before or after:
            x = ops.pad(x, ((0, 0), (before, after), (0, 0), (0, 0),
                            (0, 0)))
    return _conv3d_as_conv2d(x, layer.kernel, layer.strides, layer.padding,
                             layer.dilation_rate, d_out, fq_max, finish,
                             groups=layer.groups)


def conv3d_transpose_as_conv2d(layer, x, fq_max, finish):
    """Conv3DTranspose ``layer`` of ``x`` as the CONV_2D of its
    zero-upsampled input with the flipped kernel's stacked depth taps
    (arguments as :func:`conv3d_as_conv2d`).

    Example:
        >>> y = conv3d_transpose_as_conv2d(layer, x, None, lambda y: y)
    """
    x = transpose_as_valid_conv(layer, x)
    k = flipped_kernel(layer)
    d_out = int(x.shape[1]) - int(k.shape[0]) + 1
    return _conv3d_as_conv2d(x, k, (1, 1, 1), "valid", (1, 1, 1), d_out,
                             fq_max, finish)


def _conv3d_as_conv2d(x, kernel, strides, padding, dilation, d_out: int,
                      fq_max, finish, groups: int = 1):
    """A Conv3D of ``x`` (depth already padded) as one CONV_2D: the ``kd``
    depth taps stacked on the channel axis (TFLite's CONV_3D is float
    only), the kernel fake-quantized per output channel; ``finish`` (the
    bias and activation) applied to the 4D result, before the reshape to
    5D, so the converter fuses it into the CONV_2D (after the reshape, a
    nonzero bias was a float ADD and the conv a float CONV_2D). A grouped
    conv (``groups`` > 1) stacks the taps inside each group (channels
    ``[group][tap][channel of the group]``), so the CONV_2D is grouped
    too, as Keras' grouped Conv2D exports."""
    kd, kh, kw, cg, cout = kernel.shape  # cg: input channels per group
    sd, dd = strides[0], dilation[0]
    span = (d_out - 1) * sd + 1
    taps = [x[:, i * dd:i * dd + span:sd] for i in range(kd)]
    h, w = int(x.shape[2]), int(x.shape[3])
    if groups == 1:
        x = taps[0] if kd == 1 else ops.concatenate(taps, axis=-1)
    else:  # (.., tap, group, cg) -> (.., group, tap, cg), 5D at most
        # (TFLite's TRANSPOSE takes up to 6 axes; batch, depth, height and
        # width merged into two)
        x = ops.stack(taps, axis=-2)
        x = ops.reshape(x, (-1, h * w, kd, groups, cg))
        x = ops.transpose(x, (0, 1, 3, 2, 4))
    x = ops.reshape(x, (-1, h, w, kd * cg * groups))
    k = ops.reshape(ops.transpose(kernel, (1, 2, 0, 3, 4)),
                    (kh, kw, kd * cg, cout))
    if fq_max is not None:
        k = fake_quant_weights(k, fq_max, axis=-1)
    y = finish(ops.conv(x, k, strides=strides[1:], padding=padding,
                        dilation_rate=dilation[1:]))
    return ops.reshape(y, (-1, d_out) + tuple(y.shape[1:]))


@keras.saving.register_keras_serializable(package="tfcomp")
class QuantConv2DTranspose(ConvTransposeOp, _QuantLayer,
                           keras.layers.Conv2DTranspose):
    """``keras.layers.Conv2DTranspose`` with fake-quantized weights and
    inputs; the weight scale is per output channel (kernel axis 2).

    Args:
        *args, **kwargs: ``keras.layers.Conv2DTranspose`` arguments.
    """ + _Q_DOC + """
    Reference: Wang et al., HAQ, arXiv:1811.08886.

    Example:
        >>> layer = QuantConv2DTranspose(8, 2, strides=2, w_bits=8)
        >>> y = layer(np.zeros((1, 8, 8, 4), "float32"))
    """

    _kernel_reduce_axes = (0, 1, 3)

    def _export_call(self, inputs):
        x = transpose_as_valid_conv(self, self._export_inputs(inputs))
        k = fake_quant_weights(flipped_kernel(self),
                               self._tfcomp_export["fq_max"], axis=-1)
        y = ops.conv(x, k, padding="valid")
        return self._apply_bias_activation(y)


@keras.saving.register_keras_serializable(package="tfcomp")
class QuantConv3DTranspose(ConvTransposeOp, _QuantLayer,
                           keras.layers.Conv3DTranspose):
    """``keras.layers.Conv3DTranspose`` with fake-quantized weights and
    inputs; the weight scale is per output channel (kernel axis 3).

    Its int8 export is a stride-1 Conv3D of the zero-upsampled input with
    the flipped kernel, as QuantConv3D's one CONV_2D over stacked depth
    taps.

    Args:
        *args, **kwargs: ``keras.layers.Conv3DTranspose`` arguments.
    """ + _Q_DOC + """
    Reference: Wang et al., HAQ, arXiv:1811.08886.

    Example:
        >>> layer = QuantConv3DTranspose(4, 2, strides=2, w_bits=8)
        >>> y = layer(np.zeros((1, 4, 4, 4, 2), "float32"))
    """

    _kernel_reduce_axes = (0, 1, 2, 4)

    def _export_call(self, inputs):
        return conv3d_transpose_as_conv2d(
            self, self._export_inputs(inputs), self._tfcomp_export["fq_max"],
            self._apply_bias_activation)


def flipped_kernel(layer):
    """A transposed convolution's ``(*k, out, in)`` kernel as the
    ``(*k', in, out)`` kernel of the equivalent stride-1 convolution:
    dilated with zero taps, flipped along every spatial axis."""
    k = layer.kernel
    rank = len(k.shape) - 2
    for axis in range(rank):
        k = ops.flip(undilated(k, layer.dilation_rate[axis], axis), axis)
    return ops.transpose(k, tuple(range(rank)) + (rank + 1, rank))


def transpose_as_valid_conv(layer, x):
    """The input of a transposed convolution ``layer`` (channels last)
    zero-upsampled by its strides and padded so that a valid stride-1
    convolution with :func:`flipped_kernel` gives its output
    (``padding``, ``output_padding``, dilation included): exact, and only
    PAD / RESHAPE ops, which TFLite runs in int8."""
    _check_channels_last(layer)
    out = layer.compute_output_shape(tuple(x.shape))
    pads = [(0, 0)]
    for axis, (k, s, d) in enumerate(zip(
            layer.kernel_size, layer.strides, layer.dilation_rate)):
        size, n_out = int(x.shape[1 + axis]), int(out[1 + axis])
        k = (k - 1) * d + 1
        if s > 1:
            x = _zero_upsample(x, axis, s)
        before = 0
        if layer.padding == "same":
            before = max((size - 1) * s + k - n_out, 0) // 2
        left = k - 1 - before
        right = n_out + k - 1 - size * s - left
        if right < 0:
            x = x[(slice(None),) * (1 + axis) + (slice(None, right),)]
            right = 0
        pads.append((left, right))
    return ops.pad(x, tuple(pads) + ((0, 0),))


def _zero_upsample(x, axis: int, s: int):
    """``x`` with ``s - 1`` zeros after every element along spatial
    ``axis`` (0: the first spatial axis) of a channels-last tensor, by
    reshape + a 4-D pad."""
    shape = [int(d) for d in x.shape[1:]]
    n = shape[axis]
    y = ops.reshape(x, (-1, n, 1, int(np.prod(shape[axis + 1:]))))
    y = ops.pad(y, ((0, 0), (0, 0), (0, s - 1), (0, 0)))
    shape[axis] = n * s
    return ops.reshape(y, (-1,) + tuple(shape))
