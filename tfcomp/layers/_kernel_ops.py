"""The forward op of each kernel layer family, shared by the
quantization-aware and the DNAS mixed layers.

Example:
    >>> class MyQuantConv(ConvOp, QuantMixin, keras.layers.Conv2D): ...
"""

from __future__ import annotations

from keras import ops

__all__ = ["ConvOp", "DenseOp", "DepthwiseOp"]


class ConvOp:
    """``ops.conv`` with the layer's strides, padding and dilation."""

    _kernel_reduce_axes = (0, 1, 2)

    def _op(self, x, k):
        return ops.conv(x, k, strides=self.strides, padding=self.padding,
                        data_format=self.data_format,
                        dilation_rate=self.dilation_rate)


class DepthwiseOp:
    """``ops.depthwise_conv``; the per-channel scale is per output channel
    (``in_channel * depth_multiplier``)."""

    _kernel_reduce_axes = (0, 1)

    def _op(self, x, k):
        return ops.depthwise_conv(x, k, strides=self.strides,
                                  padding=self.padding,
                                  dilation_rate=self.dilation_rate,
                                  data_format=self.data_format)


class DenseOp:
    """``ops.matmul`` of the inputs and the kernel."""

    _kernel_reduce_axes = (0,)

    def _op(self, x, k):
        return ops.matmul(x, k)
