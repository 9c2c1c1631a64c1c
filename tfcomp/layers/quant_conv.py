"""Quantization-aware Conv2D and DepthwiseConv2D."""

from __future__ import annotations

import keras
from keras import ops

from tfcomp.layers.quant_base import QuantMixin, fake_quant_weights

__all__ = ["QuantConv2D", "QuantDepthwiseConv2D"]

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


def _check_no_lora(layer_name, **kwargs):
    for k, v in kwargs.items():
        if v is not None:
            raise ValueError(
                f"{k} is not supported by tfcomp's quantization-aware layer "
                f"{layer_name!r} (use a plain Keras layer). Received: "
                f"{k}={v!r}")


@keras.saving.register_keras_serializable(package="tfcomp")
class QuantConv2D(QuantMixin, keras.layers.Conv2D):
    """``keras.layers.Conv2D`` with fake-quantized weights and inputs.

    Forward: ``activation(conv(Qa(x), Qw(W)) + b)`` with straight-through
    gradients; ``Qw`` symmetric per output channel, ``Qa`` unsigned or
    affine with an EMA / learned range kept in the layer's variables.

    Args:
        filters, kernel_size, strides, padding, data_format, dilation_rate,
        groups, activation, use_bias, kernel_initializer, bias_initializer,
        kernel_regularizer, bias_regularizer, activity_regularizer,
        kernel_constraint, bias_constraint: as ``keras.layers.Conv2D``.
    """ + _Q_DOC + """
    Reference: Wang et al., HAQ, arXiv:1811.08886; Jacob et al.,
    arXiv:1712.05877.

    Example:
        >>> layer = QuantConv2D(16, 3, padding="same", w_bits=4, a_bits=4)
        >>> y = layer(np.zeros((1, 28, 28, 1), "float32"))
    """

    _kernel_reduce_axes = (0, 1, 2)

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid",
                 data_format=None, dilation_rate=(1, 1), groups=1,
                 activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None,
                 bias_regularizer=None, activity_regularizer=None,
                 kernel_constraint=None, bias_constraint=None, w_bits=8,
                 a_bits=8, weight_quantizer=None, input_quantizer=None,
                 **kwargs):
        _check_no_lora(kwargs.get("name", "quant_conv2d"),
                       lora_rank=kwargs.pop("lora_rank", None))
        super().__init__(
            filters=filters, kernel_size=kernel_size, strides=strides,
            padding=padding, data_format=data_format,
            dilation_rate=dilation_rate, groups=groups,
            activation=activation, use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            activity_regularizer=activity_regularizer,
            kernel_constraint=kernel_constraint,
            bias_constraint=bias_constraint, **kwargs)
        self._init_quant(w_bits, a_bits, weight_quantizer, input_quantizer)

    def build(self, input_shape):
        super().build(input_shape)
        self._build_quant()

    def call(self, inputs, training=None):
        if self._tfcomp_export is not None:
            x = self._export_inputs(inputs)
            k = fake_quant_weights(self.kernel, self._tfcomp_export["fq_max"],
                                   axis=-1)
            bias = None
        else:
            x = self._quantized_inputs(inputs, training)
            k = self._quantized_kernel()
            bias = self._quantized_bias()
        y = ops.conv(x, k, strides=self.strides, padding=self.padding,
                     data_format=self.data_format,
                     dilation_rate=self.dilation_rate)
        return self._apply_bias_activation(
            y, self.data_format == "channels_last", bias)

    def get_config(self):
        config = super().get_config()
        config["activity_regularizer"] = keras.regularizers.serialize(
            self.activity_regularizer)
        config.update(self._quant_config())
        return config


@keras.saving.register_keras_serializable(package="tfcomp")
class QuantDepthwiseConv2D(QuantMixin, keras.layers.DepthwiseConv2D):
    """``keras.layers.DepthwiseConv2D`` with fake-quantized weights/inputs.

    The per-channel weight scale is per output channel
    (``in_channel * depth_multiplier``).

    Args:
        kernel_size, strides, padding, depth_multiplier, data_format,
        dilation_rate, activation, use_bias, depthwise_initializer,
        bias_initializer, depthwise_regularizer, bias_regularizer,
        activity_regularizer, depthwise_constraint, bias_constraint: as
        ``keras.layers.DepthwiseConv2D``.
    """ + _Q_DOC + """
    Reference: Wang et al., HAQ, arXiv:1811.08886.

    Example:
        >>> layer = QuantDepthwiseConv2D(3, padding="same", w_bits=8)
    """

    _kernel_reduce_axes = (0, 1)

    def __init__(self, kernel_size, strides=(1, 1), padding="valid",
                 depth_multiplier=1, data_format=None, dilation_rate=(1, 1),
                 activation=None, use_bias=True,
                 depthwise_initializer="glorot_uniform",
                 bias_initializer="zeros", depthwise_regularizer=None,
                 bias_regularizer=None, activity_regularizer=None,
                 depthwise_constraint=None, bias_constraint=None, w_bits=8,
                 a_bits=8, weight_quantizer=None, input_quantizer=None,
                 **kwargs):
        super().__init__(
            kernel_size=kernel_size, strides=strides, padding=padding,
            depth_multiplier=depth_multiplier, data_format=data_format,
            dilation_rate=dilation_rate, activation=activation,
            use_bias=use_bias, depthwise_initializer=depthwise_initializer,
            bias_initializer=bias_initializer,
            depthwise_regularizer=depthwise_regularizer,
            bias_regularizer=bias_regularizer,
            activity_regularizer=activity_regularizer,
            depthwise_constraint=depthwise_constraint,
            bias_constraint=bias_constraint, **kwargs)
        self._init_quant(w_bits, a_bits, weight_quantizer, input_quantizer)

    def build(self, input_shape):
        super().build(input_shape)
        self._build_quant()

    def call(self, inputs, training=None):
        if self._tfcomp_export is not None:
            x = self._export_inputs(inputs)
            kh, kw, cin, mult = self.kernel.shape
            # TFLite stores depthwise weights as (1, kh, kw, cin * mult) and
            # quantizes them per last axis; fake-quantize in that layout.
            k = ops.reshape(self.kernel, (1, kh, kw, cin * mult))
            k = fake_quant_weights(k, self._tfcomp_export["fq_max"], axis=-1)
            k = ops.reshape(k, (kh, kw, cin, mult))
            bias = None
        else:
            x = self._quantized_inputs(inputs, training)
            k = self._quantized_kernel()
            bias = self._quantized_bias()
        y = ops.depthwise_conv(x, k, strides=self.strides,
                               padding=self.padding,
                               dilation_rate=self.dilation_rate,
                               data_format=self.data_format)
        return self._apply_bias_activation(
            y, self.data_format == "channels_last", bias)

    def get_config(self):
        config = super().get_config()
        config.update(self._quant_config())
        return config
