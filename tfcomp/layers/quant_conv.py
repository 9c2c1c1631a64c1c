"""Quantization-aware Conv2D and DepthwiseConv2D.

Example:
    >>> from tfcomp.layers import QuantConv2D
    >>> layer = QuantConv2D(16, 3, padding="same", w_bits=4, a_bits=4)
"""

from __future__ import annotations

import keras
from keras import ops

from tfcomp.layers._kernel_ops import (
    ConvOp,
    DepthwiseOp,
    dilated_as_batches,
    undilated,
)
from tfcomp.layers.quant_base import QuantMixin, fake_quant_weights, pop_unsupported

__all__ = ["QuantConv2D", "QuantDepthwiseConv2D"]


#: The most MACs widening a dilated kernel may cost, as a multiple of the
#: dilated conv's (3x3 at rate 2: 25 / 9 = 2.8x). Beyond it (DeepLab's
#: rate 6+) the file runs the dilated conv on the input's phase
#: sub-images stacked on the batch axis (``dilated_as_batches``: the
#: dilated conv's MACs, plus reshapes / transposes), all int8; a dynamic
#: height or width, or channels first, keeps TF's dilated form: a float
#: CONV_2D between SPACE_TO_BATCH_ND / BATCH_TO_SPACE_ND, listed in
#: ``float_ops``. (``QuantConv1D`` widens at any rate, as it did before
#: this bound: a WaveNet's kernel 2 at rate 8 costs 4.5x.)
MAX_UNDILATED_COST = 4.0


def widens(layer) -> bool:
    """Whether the int8 export writes ``layer``'s dilation as zero taps."""
    cost = 1.0
    for k, r in zip(layer.kernel_size, layer.dilation_rate):
        cost *= ((int(k) - 1) * int(r) + 1) / int(k)
    return 1.0 < cost <= MAX_UNDILATED_COST


def _spatially_undilated(layer, kernel):
    """``kernel`` with the layer's dilation as zero taps along its two
    spatial axes. A dilated convolution with a dynamic batch is lowered to
    SPACE_TO_BATCH_ND -> CONV_2D -> BATCH_TO_SPACE_ND, which the converter
    fuses back only for a static batch (its dilated-conv pass); unfused,
    the CONV_2D output between them has no FakeQuant range and stays
    float. The undilated kernel gives one int8 convolution computing the
    same integer sums (zero weights are exact codes), at up to
    ``MAX_UNDILATED_COST`` times the MACs (``widens``)."""
    if not widens(layer):
        return kernel
    for axis, rate in enumerate(layer.dilation_rate):
        kernel = undilated(kernel, rate, axis)
    return kernel


class _UndilatedExport:
    """The int8 export call of a 2D (depthwise) convolution: a dilation as
    zero taps (see ``_spatially_undilated``), the strides and padding of
    the layer (Keras refuses strides > 1 with a dilation)."""

    def _export_call(self, inputs):
        if widens(self):
            y = self._op(self._export_inputs(inputs), self._export_kernel(),
                         dilation_rate=1)
            return self._apply_bias_activation(y)
        if _phases_apply(self, inputs):
            k = self._export_kernel()
            return dilated_as_batches(
                self._export_inputs(inputs), self.dilation_rate,
                self.kernel_size, self.padding,
                lambda b: self._apply_bias_activation(
                    self._op(b, k, dilation_rate=1, padding="valid")))
        return super()._export_call(inputs)


def _phases_apply(layer, inputs) -> bool:
    """Whether the export writes ``layer``'s dilation on phase sub-images
    (``dilated_as_batches``): dilated beyond ``MAX_UNDILATED_COST``,
    channels last, static height and width."""
    return max(layer.dilation_rate) > 1 and layer._channels_last() and \
        all(d is not None for d in inputs.shape[1:3])

_Q_DOC = """
        w_bits: weight bits in [1, 8], or 32 for float weights.
        a_bits: bits of the layer's *input* activations in [1, 8], or 32.
        weight_quantizer: weight quantizer alias / dict / instance
            ("symmetric" by default: per-channel, max clip for b >= 5, KL clip
            for b <= 4; "kmeans" for weight sharing). Its bits are set from
            ``w_bits``.
        input_quantizer: activation quantizer for the input ("unsigned" by
            default: ``[0, c]`` after a ReLU, EMA range; "signed" for inputs
            that may be negative; "pact" for a learned clip). Its bits are set
            from ``a_bits``.
"""


class _QuantLayer(QuantMixin):
    """``__init__`` of the quantization-aware layers: the Keras parent's
    arguments pass through; LoRA / Keras quantization must be None."""

    _unsupported: tuple = ("lora_rank",)

    def __init__(self, *args, w_bits=8, a_bits=8, weight_quantizer=None,
                 input_quantizer=None, **kwargs):
        pop_unsupported(kwargs, self._unsupported, "quant_layer")
        super().__init__(*args, **kwargs)
        self._init_quant(w_bits, a_bits, weight_quantizer, input_quantizer)


@keras.saving.register_keras_serializable(package="tfcomp")
class QuantConv2D(_UndilatedExport, ConvOp, _QuantLayer,
                  keras.layers.Conv2D):
    """``keras.layers.Conv2D`` with fake-quantized weights and inputs.

    Forward: ``activation(conv(Qa(x), Qw(W)) + b)`` with straight-through
    gradients; ``Qw`` symmetric per output channel, ``Qa`` unsigned or
    affine with an EMA / learned range kept in the layer's variables.

    Args:
        *args, **kwargs: ``keras.layers.Conv2D`` arguments (filters,
            kernel_size, strides, padding, ...).
    """ + _Q_DOC + """
    Reference: Wang et al., HAQ, arXiv:1811.08886; Jacob et al.,
    arXiv:1712.05877.

    Example:
        >>> layer = QuantConv2D(16, 3, padding="same", w_bits=4, a_bits=4)
        >>> y = layer(np.zeros((1, 28, 28, 1), "float32"))
    """

    def _export_kernel(self):
        return fake_quant_weights(_spatially_undilated(self, self.kernel),
                                  self._tfcomp_export["fq_max"], axis=-1)


@keras.saving.register_keras_serializable(package="tfcomp")
class QuantDepthwiseConv2D(_UndilatedExport, DepthwiseOp, _QuantLayer,
                           keras.layers.DepthwiseConv2D):
    """``keras.layers.DepthwiseConv2D`` with fake-quantized weights/inputs.

    The per-channel weight scale is per output channel
    (``in_channel * depth_multiplier``).

    Args:
        *args, **kwargs: ``keras.layers.DepthwiseConv2D`` arguments
            (kernel_size, strides, padding, depth_multiplier, ...).
    """ + _Q_DOC + """
    Reference: Wang et al., HAQ, arXiv:1811.08886.

    Example:
        >>> layer = QuantDepthwiseConv2D(3, padding="same", w_bits=8)
    """

    _unsupported = ()

    def _export_kernel(self):
        k = _spatially_undilated(self, self.kernel)
        kh, kw, cin, mult = k.shape
        # TFLite stores depthwise weights as (1, kh, kw, cin * mult) and
        # quantizes them per last axis; fake-quantize in that layout.
        k = ops.reshape(k, (1, kh, kw, cin * mult))
        k = fake_quant_weights(k, self._tfcomp_export["fq_max"], axis=-1)
        return ops.reshape(k, (kh, kw, cin, mult))
