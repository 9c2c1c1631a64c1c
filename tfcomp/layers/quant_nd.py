"""Quantization-aware Conv1D, Conv3D and Conv2DTranspose.

Their int8 TFLite export path (``_export_call``) only uses ops TFLite runs
in int8 with per-channel weights: Conv1D is a CONV_2D over a height-1
image, Conv3D a CONV_2D over the depth taps stacked on the channel axis
(TFLite's CONV_3D is float only) and Conv2DTranspose a CONV_2D of the
zero-upsampled input with the flipped kernel (the converter cannot keep
per-channel ranges through TRANSPOSE_CONV's weight transpose). All are exact
rewrites: the file accumulates the same integer products as the QAT layer.

Example:
    >>> from tfcomp.layers import QuantConv1D
    >>> layer = QuantConv1D(16, 3, padding="same", w_bits=4, a_bits=4)
"""

from __future__ import annotations

import keras
from keras import ops

from tfcomp.layers._kernel_ops import ConvOp, ConvTransposeOp, causal_pad
from tfcomp.layers.quant_base import fake_quant_weights
from tfcomp.layers.quant_conv import _Q_DOC, _QuantLayer

__all__ = ["QuantConv1D", "QuantConv3D", "QuantConv2DTranspose"]


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
        k = fake_quant_weights(ops.expand_dims(_undilated(
            self.kernel, self.dilation_rate[0]), 0),
            self._tfcomp_export["fq_max"], axis=-1)
        y = ops.conv(ops.expand_dims(x, 1), k, strides=(1, self.strides[0]),
                     padding=padding)
        return self._apply_bias_activation(ops.squeeze(y, 1))


def _undilated(kernel, rate: int):
    """A Conv1D kernel with ``rate - 1`` zero taps between its taps: the
    same convolution without dilation. TF lowers a dilated convolution to
    SPACE_TO_BATCH_ND / BATCH_TO_SPACE_ND around it, which the int8
    converter leaves float; zero weights are exact int8 codes."""
    if rate == 1:
        return kernel
    zeros = ops.zeros((rate - 1,) + tuple(kernel.shape[1:]), kernel.dtype)
    parts = []
    for i in range(kernel.shape[0]):
        parts += [kernel[i:i + 1]] + ([zeros] if i < kernel.shape[0] - 1
                                      else [])
    return ops.concatenate(parts, axis=0)


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
        _check_channels_last(self)
        if self.groups != 1:
            raise NotImplementedError(
                f"int8 TFLite export of grouped Conv3D {self.name!r} is not "
                f"supported. Received: groups={self.groups}")
        x = self._export_inputs(inputs)
        kd, kh, kw, cin, cout = self.kernel.shape
        sd, dd = self.strides[0], self.dilation_rate[0]
        depth = int(x.shape[1])
        out = self.compute_output_shape(tuple(x.shape))
        d_out = int(out[1])
        if self.padding == "same":
            before, after = _same_pad(depth, d_out, kd, sd, dd)
            if before or after:
                x = ops.pad(x, ((0, 0), (before, after), (0, 0), (0, 0),
                                (0, 0)))
        span = (d_out - 1) * sd + 1
        taps = [x[:, i * dd:i * dd + span:sd] for i in range(kd)]
        x = taps[0] if kd == 1 else ops.concatenate(taps, axis=-1)
        h, w = int(x.shape[2]), int(x.shape[3])
        x = ops.reshape(x, (-1, h, w, kd * cin))
        k = ops.reshape(ops.transpose(self.kernel, (1, 2, 0, 3, 4)),
                        (kh, kw, kd * cin, cout))
        k = fake_quant_weights(k, self._tfcomp_export["fq_max"], axis=-1)
        y = ops.conv(x, k, strides=self.strides[1:], padding=self.padding,
                     dilation_rate=self.dilation_rate[1:])
        y = ops.reshape(y, (-1, d_out) + tuple(y.shape[1:]))
        return self._apply_bias_activation(y)


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
        _check_channels_last(self)
        if tuple(self.dilation_rate) != (1, 1):
            raise NotImplementedError(
                f"int8 TFLite export of Conv2DTranspose {self.name!r} needs "
                f"dilation_rate=1. Received: {self.dilation_rate}")
        x = self._export_inputs(inputs)
        out = self.compute_output_shape(tuple(x.shape))
        kh, kw, cout, cin = self.kernel.shape
        pads = []
        for axis, (k, s) in enumerate(zip((kh, kw), self.strides)):
            size, n_out = int(x.shape[1 + axis]), int(out[1 + axis])
            if s > 1:
                x = _zero_upsample(x, axis, s)
            before = 0
            if self.padding == "same":
                before = max((size - 1) * s + k - n_out, 0) // 2
            left = k - 1 - before
            right = n_out + k - 1 - size * s - left
            if right < 0:
                x = x[:, :right] if axis == 0 else x[:, :, :right]
                right = 0
            pads.append((left, right))
        x = ops.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
        k = ops.transpose(ops.flip(ops.flip(self.kernel, 0), 1),
                          (0, 1, 3, 2))
        k = fake_quant_weights(k, self._tfcomp_export["fq_max"], axis=-1)
        y = ops.conv(x, k, padding="valid")
        return self._apply_bias_activation(y)


def _zero_upsample(x, axis: int, s: int):
    """``x`` with ``s - 1`` zeros after every element along spatial
    ``axis`` (0: height, 1: width) of an NHWC tensor, by reshape + pad."""
    h, w, c = (int(d) for d in x.shape[1:])
    if axis == 0:
        y = ops.reshape(x, (-1, h, 1, w * c))
        y = ops.pad(y, ((0, 0), (0, 0), (0, s - 1), (0, 0)))
        return ops.reshape(y, (-1, h * s, w, c))
    y = ops.reshape(x, (-1, w, 1, c))
    y = ops.pad(y, ((0, 0), (0, 0), (0, s - 1), (0, 0)))
    return ops.reshape(y, (-1, h, w * s, c))
