"""Slimmable twins of Conv1D / Conv3D, SeparableConv1D/2D and
Conv1D/2D/3DTranspose (see :mod:`tfcomp.layers.slimmable`).

Each one masks its kernel with 0/1 channel masks, so at width ``w`` it
computes on its first channels exactly what the plain layer holding the
sliced kernel computes:

* ``SlimmableConv1D`` / ``SlimmableConv3D``: kernel ``(*k, in, out)``
  masked on ``in`` and ``out`` (one N-D implementation with
  ``SlimmableConv2D``; ``padding="causal"`` too);
* ``SlimmableSeparableConv1D`` / ``2D``: depthwise kernel ``(*k, in, m)``
  masked on ``in``; pointwise kernel ``(1, .., in * m, out)`` masked on
  its input (``mid_segments``: position ``c * m + j`` follows input
  channel ``c``) and its output;
* ``SlimmableConv1DTranspose`` / ``2D`` / ``3D``: kernel ``(*k, out, in)``
  masked on both axes.

All need ``channels_last``; the convs need ``groups=1``.

Example:
    >>> sep = SlimmableSeparableConv2D(16, 3, padding="same")
    >>> y = sep(np.zeros((1, 8, 8, 4), "float32"))
    >>> sep.set_width(0.5)     # 2 input channels, 8 filters
"""

from __future__ import annotations

import keras
from keras import ops

from tfcomp.layers.slimmable import _check_segments, _SlimConvMixin

__all__ = ["SlimmableConv1D", "SlimmableConv1DTranspose",
           "SlimmableConv2DTranspose", "SlimmableConv3D",
           "SlimmableConv3DTranspose", "SlimmableSeparableConv1D",
           "SlimmableSeparableConv2D"]


@keras.saving.register_keras_serializable(package="tfcomp")
class SlimmableConv1D(_SlimConvMixin, keras.layers.Conv1D):
    """``Conv1D`` whose active width masks its input and output channels.

    Args:
        filters, kernel_size: as ``keras.layers.Conv1D`` (``groups=1``,
            ``channels_last``; ``padding="causal"`` works).
        in_segments, out_segments: channel layout of the input / output
            (:mod:`tfcomp.layers.slimmable`); None: the whole port.

    Example:
        >>> conv = SlimmableConv1D(8, 3, padding="causal")
        >>> conv.build((None, 16, 4)); conv.set_width(0.5)
    """


@keras.saving.register_keras_serializable(package="tfcomp")
class SlimmableConv3D(_SlimConvMixin, keras.layers.Conv3D):
    """``Conv3D`` whose active width masks its input and output channels.

    Args:
        filters, kernel_size: as ``keras.layers.Conv3D`` (``groups=1``,
            ``channels_last``).
        in_segments, out_segments: channel layout of the input / output.

    Example:
        >>> conv = SlimmableConv3D(8, 3, padding="same")
        >>> conv.build((None, 4, 4, 4, 2)); conv.set_width(0.5)
    """


class _SlimTransposeMixin(_SlimConvMixin):
    """ConvXDTranspose: kernel ``(*k, out, in)``."""

    def _masked_kernel(self):
        return self.kernel * self._mask(1)[:, None] * self._mask(0)

    def _conv(self, inputs, kernel):
        return ops.conv_transpose(
            inputs, kernel, strides=self.strides, padding=self.padding,
            output_padding=self.output_padding,
            dilation_rate=self.dilation_rate, data_format=self.data_format)


@keras.saving.register_keras_serializable(package="tfcomp")
class SlimmableConv1DTranspose(_SlimTransposeMixin,
                               keras.layers.Conv1DTranspose):
    """``Conv1DTranspose`` whose active width masks its channels.

    Args:
        filters, kernel_size: as ``keras.layers.Conv1DTranspose``.
        in_segments, out_segments: channel layout of the input / output.

    Example:
        >>> up = SlimmableConv1DTranspose(8, 3, strides=2, padding="same")
    """


@keras.saving.register_keras_serializable(package="tfcomp")
class SlimmableConv2DTranspose(_SlimTransposeMixin,
                               keras.layers.Conv2DTranspose):
    """``Conv2DTranspose`` whose active width masks its channels.

    Args:
        filters, kernel_size: as ``keras.layers.Conv2DTranspose``.
        in_segments, out_segments: channel layout of the input / output.

    Example:
        >>> up = SlimmableConv2DTranspose(8, 3, strides=2, padding="same")
        >>> up.build((None, 4, 4, 16)); up.set_width(0.5)
    """


@keras.saving.register_keras_serializable(package="tfcomp")
class SlimmableConv3DTranspose(_SlimTransposeMixin,
                               keras.layers.Conv3DTranspose):
    """``Conv3DTranspose`` whose active width masks its channels.

    Args:
        filters, kernel_size: as ``keras.layers.Conv3DTranspose``.
        in_segments, out_segments: channel layout of the input / output.

    Example:
        >>> up = SlimmableConv3DTranspose(4, 3, strides=2, padding="same")
    """


class _SlimSeparableMixin(_SlimConvMixin):
    """SeparableConv1D/2D: masks on the input, the depthwise output
    (``mid``) and the output."""

    _PORTS = (("in_segments", "in_mask"), ("mid_segments", "mid_mask"),
              ("out_segments", "out_mask"))

    def __init__(self, filters, kernel_size, in_segments=None,
                 mid_segments=None, out_segments=None, **kwargs):
        super().__init__(filters, kernel_size, in_segments=in_segments,
                         out_segments=out_segments, **kwargs)
        self.mid_segments = _check_segments(mid_segments, "mid_segments")

    def _port_sizes(self, cin):
        m = int(self.depth_multiplier)
        if self.mid_segments is None:  # position c * m + j: input c
            self.mid_segments = [{"group": "", "start": 0, "length": cin * m,
                                  "period": cin, "div": m, "size": cin,
                                  "step": 1}]
        return (cin, cin * m, int(self.filters))

    def call(self, inputs):
        out_mask = self._mask(2)
        depthwise = self.depthwise_kernel * self._mask(0)[:, None]
        pointwise = self.pointwise_kernel * self._mask(1)[:, None] * out_mask
        y = ops.separable_conv(inputs, depthwise, pointwise,
                               strides=self.strides, padding=self.padding,
                               dilation_rate=self.dilation_rate,
                               data_format=self.data_format)
        return self._bias_act(y, out_mask)


@keras.saving.register_keras_serializable(package="tfcomp")
class SlimmableSeparableConv1D(_SlimSeparableMixin,
                               keras.layers.SeparableConv1D):
    """``SeparableConv1D`` whose active width masks its channels.

    Args:
        filters, kernel_size: as ``keras.layers.SeparableConv1D``
            (``channels_last``).
        in_segments, mid_segments, out_segments: channel layout of the
            input, the depthwise output and the output.

    Example:
        >>> sep = SlimmableSeparableConv1D(8, 3, padding="same")
    """


@keras.saving.register_keras_serializable(package="tfcomp")
class SlimmableSeparableConv2D(_SlimSeparableMixin,
                               keras.layers.SeparableConv2D):
    """``SeparableConv2D`` whose active width masks its channels.

    Args:
        filters, kernel_size: as ``keras.layers.SeparableConv2D``
            (``channels_last``).
        in_segments, mid_segments, out_segments: channel layout of the
            input, the depthwise output (``c * m + j`` follows input ``c``)
            and the output.

    Example:
        >>> sep = SlimmableSeparableConv2D(16, 3, padding="same")
        >>> sep.build((None, 8, 8, 4)); sep.set_width(0.5)
    """
