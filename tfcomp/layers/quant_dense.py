"""Quantization-aware Dense."""

from __future__ import annotations

import keras
from keras import ops

from tfcomp.layers.quant_base import QuantMixin, fake_quant_weights
from tfcomp.layers.quant_conv import _Q_DOC, _check_no_lora

__all__ = ["QuantDense"]


@keras.saving.register_keras_serializable(package="tfcomp")
class QuantDense(QuantMixin, keras.layers.Dense):
    """``keras.layers.Dense`` with fake-quantized weights and inputs.

    Forward: ``activation(Qa(x) @ Qw(W) + b)``. ``lora_rank``, ``lora_alpha``
    and ``quantization_config`` (Keras' own LoRA / post-training int8) are
    accepted for signature parity but must be None.

    Args:
        units, activation, use_bias, kernel_initializer, bias_initializer,
        kernel_regularizer, bias_regularizer, activity_regularizer,
        kernel_constraint, bias_constraint, lora_rank, lora_alpha,
        quantization_config: as ``keras.layers.Dense``.
    """ + _Q_DOC + """
    Reference: Wang et al., HAQ, arXiv:1811.08886.

    Example:
        >>> layer = QuantDense(10, w_bits=8, a_bits=8)
    """

    _kernel_reduce_axes = (0,)

    def __init__(self, units, activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None,
                 bias_regularizer=None, activity_regularizer=None,
                 kernel_constraint=None, bias_constraint=None,
                 lora_rank=None, lora_alpha=None, quantization_config=None,
                 w_bits=8, a_bits=8, weight_quantizer=None,
                 input_quantizer=None, **kwargs):
        _check_no_lora(kwargs.get("name", "quant_dense"),
                       lora_rank=lora_rank, lora_alpha=lora_alpha,
                       quantization_config=quantization_config)
        super().__init__(
            units=units, activation=activation, use_bias=use_bias,
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
            return self._export_call(inputs)
        x = self._quantized_inputs(inputs, training)
        y = ops.matmul(x, self._quantized_kernel())
        return self._apply_bias_activation(y, bias=self._quantized_bias())

    def _export_call(self, inputs):
        # TFLite's converter cannot keep per-channel FakeQuant ranges through
        # the transpose FULLY_CONNECTED needs; a 1x1 CONV_2D takes them.
        x = self._export_inputs(inputs)
        n_in, n_out = self.kernel.shape
        x4 = ops.reshape(x, (-1, 1, 1, n_in))
        k = ops.reshape(self.kernel, (1, 1, n_in, n_out))
        k = fake_quant_weights(k, self._tfcomp_export["fq_max"], axis=-1)
        y = ops.conv(x4, k, padding="valid")
        y = ops.reshape(y, (-1,) + tuple(x.shape[1:-1]) + (n_out,))
        return self._apply_bias_activation(y)

    def get_config(self):
        config = super().get_config()
        config["activity_regularizer"] = keras.regularizers.serialize(
            self.activity_regularizer)
        config.update({"lora_rank": None, "lora_alpha": None,
                       "quantization_config": None})
        config.update(self._quant_config())
        return config
