"""Activation quantizer layers: QuantActivation and QuantReLU.

Example:
    >>> from tfcomp.layers import QuantReLU
    >>> y = QuantReLU(a_bits=4, quantizer="pact")(x)
"""

from __future__ import annotations

import keras

from tfcomp.layers import quantizers as qz
from tfcomp.layers.quant_base import fake_quant_activation, typed_quantizer

__all__ = ["QuantActivation", "QuantReLU"]


class _ActQuantBase(keras.layers.Layer):
    """State and export path shared by the activation quantizer layers."""

    _default_quantizer = "signed"

    def _init_aq(self, a_bits, quantizer):
        self.a_bits = qz.check_bits(a_bits, "a_bits", allow_float=False)
        q = typed_quantizer(quantizer, self._default_quantizer,
                            qz.ActivationQuantizer, "quantizer",
                            "an ActivationQuantizer", self.name)
        self.quantizer = q.with_bits(self.a_bits)
        self._q_config = qz.serialize(self.quantizer)
        self._tfcomp_export = None

    def build(self, input_shape):
        self.quantizer.build(self, "output")
        self.built = True

    def _quantize(self, x, training):
        if self._tfcomp_export is not None:
            s, z, b = self._tfcomp_export["output"]
            return fake_quant_activation(x, s, z, b)
        return self.quantizer(x, training=bool(training))

    def compute_output_shape(self, input_shape):
        return input_shape

    @property
    def input_quantizer(self):
        """The quantizer (named like the conv layers' for ``calibrate``)."""
        return self.quantizer


@keras.saving.register_keras_serializable(package="tfcomp")
class QuantActivation(_ActQuantBase):
    """Fake-quantizes a tensor to ``a_bits`` (an activation quantizer layer).

    Used on tensors that are not the input of exactly one quantized layer
    (residual sums, logits, tensors with several consumers) so that every
    tensor of an int8 TFLite file gets its range from the QAT model.
    ``quantize_model`` inserts these automatically.

    Args:
        a_bits: bits in [1, 8].
        quantizer: activation quantizer alias / dict / instance ("signed"
            by default: an affine EMA range, safe for any input; "unsigned"
            for non-negative inputs).
        **kwargs: base layer arguments (name, dtype, ...).

    Reference: Jacob et al., arXiv:1712.05877.

    Example:
        >>> y = QuantActivation(8)(x)
    """

    def __init__(self, a_bits=8, quantizer=None, **kwargs):
        super().__init__(**kwargs)
        self._init_aq(a_bits, quantizer)

    def call(self, inputs, training=None):
        return self._quantize(inputs, training)

    def get_config(self):
        config = super().get_config()
        config.update({"a_bits": self.a_bits, "quantizer": self._q_config})
        return config


@keras.saving.register_keras_serializable(package="tfcomp")
class QuantReLU(_ActQuantBase):
    """``keras.layers.ReLU`` followed by an ``a_bits`` quantizer.

    With the default unsigned quantizer and ``range_mode="learned"``
    (``quantizer="pact"``) this is PACT's clipped, quantized ReLU.

    Args:
        max_value, negative_slope, threshold: as ``keras.layers.ReLU``.
        a_bits: output bits in [1, 8].
        quantizer: activation quantizer alias / dict / instance ("unsigned"
            by default; "signed" when ``negative_slope != 0``).
        **kwargs: base layer arguments.

    Reference: Choi et al., PACT, arXiv:1805.06085.

    Example:
        >>> y = QuantReLU(a_bits=4, quantizer="pact")(x)
    """

    def __init__(self, max_value=None, negative_slope=0.0, threshold=0.0,
                 a_bits=8, quantizer=None, **kwargs):
        super().__init__(**kwargs)
        if max_value is not None and max_value < 0:
            raise ValueError(
                "max_value of a ReLU cannot be negative. Received: "
                f"max_value={max_value}")
        if negative_slope is None or negative_slope < 0:
            raise ValueError(
                "negative_slope of a ReLU must be >= 0. Received: "
                f"negative_slope={negative_slope}")
        self.max_value = max_value
        self.negative_slope = float(negative_slope)
        self.threshold = float(threshold)
        if quantizer is None and self.negative_slope != 0:
            quantizer = "signed"
        self._default_quantizer = "unsigned"
        self._init_aq(a_bits, quantizer)

    def call(self, inputs, training=None):
        y = keras.activations.relu(
            inputs, negative_slope=self.negative_slope,
            max_value=self.max_value, threshold=self.threshold)
        return self._quantize(y, training)

    def get_config(self):
        config = super().get_config()
        config.update({
            "max_value": self.max_value,
            "negative_slope": self.negative_slope,
            "threshold": self.threshold,
            "a_bits": self.a_bits,
            "quantizer": self._q_config,
        })
        return config

