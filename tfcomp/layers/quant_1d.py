"""Quantization-aware DepthwiseConv1D and Conv1DTranspose (a
SeparableConv1D is quantized as a QuantDepthwiseConv1D and a 1x1
QuantConv1D, as ``quantize_model`` splits a SeparableConv2D).

Their int8 TFLite export paths are exact rewrites into ops TFLite runs in
int8 with per-channel weights: DepthwiseConv1D is a DEPTHWISE_CONV_2D over
a height-1 image (a dilation as zero taps, as QuantConv1D's), and
Conv1DTranspose the CONV_2D of the zero-upsampled input with the flipped
kernel over a height-1 image (QuantConv2DTranspose's rewrite; a dilation as
zero taps).

Example:
    >>> from tfcomp.layers import QuantDepthwiseConv1D
    >>> layer = QuantDepthwiseConv1D(3, padding="same", w_bits=4, a_bits=4)
"""

from __future__ import annotations

import keras
from keras import ops

from tfcomp.layers._kernel_ops import ConvTransposeOp, DepthwiseOp, undilated
from tfcomp.layers.quant_base import fake_quant_weights
from tfcomp.layers.quant_conv import _Q_DOC, _QuantLayer
from tfcomp.layers.quant_nd import (
    _check_channels_last,
    flipped_kernel,
    transpose_as_valid_conv,
)

__all__ = ["QuantDepthwiseConv1D", "QuantConv1DTranspose"]


@keras.saving.register_keras_serializable(package="tfcomp")
class QuantDepthwiseConv1D(DepthwiseOp, _QuantLayer,
                           keras.layers.DepthwiseConv1D):
    """``keras.layers.DepthwiseConv1D`` with fake-quantized weights and
    inputs; the weight scale is per output channel ``c * multiplier + j``
    (kernel ``(k, C, multiplier)``, reduced over axis 0).

    Args:
        *args, **kwargs: ``keras.layers.DepthwiseConv1D`` arguments
            (kernel_size, strides, padding, depth_multiplier, ...).
    """ + _Q_DOC + """
    Reference: Wang et al., HAQ, arXiv:1811.08886.

    Example:
        >>> layer = QuantDepthwiseConv1D(3, padding="same", w_bits=8)
        >>> y = layer(np.zeros((1, 32, 4), "float32"))
    """

    _unsupported = ()
    _kernel_reduce_axes = (0,)

    def _export_call(self, inputs):
        _check_channels_last(self)
        x = self._export_inputs(inputs)
        k = undilated(self.kernel, self.dilation_rate[0])
        kw, cin, mult = k.shape
        # TFLite's depthwise weights are (1, kh, kw, cin * mult), quantized
        # per last axis: fake-quantize in that layout
        k = fake_quant_weights(ops.reshape(k, (1, 1, kw, cin * mult)),
                               self._tfcomp_export["fq_max"], axis=-1)
        y = ops.depthwise_conv(ops.expand_dims(x, 1),
                               ops.reshape(k, (1, kw, cin, mult)),
                               strides=(1, self.strides[0]),
                               padding=self.padding)
        # bias and activation on the 4D result: the converter then fuses
        # them into the CONV_2D also when the length is dynamic (None)
        return ops.squeeze(self._apply_bias_activation(y), 1)


@keras.saving.register_keras_serializable(package="tfcomp")
class QuantConv1DTranspose(ConvTransposeOp, _QuantLayer,
                           keras.layers.Conv1DTranspose):
    """``keras.layers.Conv1DTranspose`` with fake-quantized weights and
    inputs; the weight scale is per output channel (kernel ``(k, out,
    in)``, axis 1).

    Args:
        *args, **kwargs: ``keras.layers.Conv1DTranspose`` arguments.
    """ + _Q_DOC + """
    Reference: Wang et al., HAQ, arXiv:1811.08886.

    Example:
        >>> layer = QuantConv1DTranspose(8, 3, strides=2, padding="same")
        >>> y = layer(np.zeros((1, 16, 4), "float32"))
    """

    _kernel_reduce_axes = (0, 2)

    def _export_call(self, inputs):
        x = transpose_as_valid_conv(self, self._export_inputs(inputs))
        # fake-quantized in the conv's 4-D layout: the converter loses
        # the per-channel axis through a RESHAPE of quantized weights
        k = fake_quant_weights(ops.expand_dims(flipped_kernel(self), 0),
                               self._tfcomp_export["fq_max"], axis=-1)
        y = ops.conv(ops.expand_dims(x, 1), k, padding="valid")
        # bias and activation on the 4D result: the converter then fuses
        # them into the CONV_2D also when the length is dynamic (None)
        return ops.squeeze(self._apply_bias_activation(y), 1)
