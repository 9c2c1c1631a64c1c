"""Quantization-aware Dense.

Example:
    >>> from tfcomp.layers import QuantDense
    >>> layer = QuantDense(10, w_bits=8, a_bits=8)
"""

from __future__ import annotations

import keras
from keras import ops

from tfcomp.layers._kernel_ops import DenseOp
from tfcomp.layers.quant_base import fake_quant_weights
from tfcomp.layers.quant_conv import _Q_DOC, _QuantLayer

__all__ = ["QuantDense"]


@keras.saving.register_keras_serializable(package="tfcomp")
class QuantDense(DenseOp, _QuantLayer, keras.layers.Dense):
    """``keras.layers.Dense`` with fake-quantized weights and inputs.

    Forward: ``activation(Qa(x) @ Qw(W) + b)``. ``lora_rank``, ``lora_alpha``
    and ``quantization_config`` (Keras' own LoRA / post-training int8) are
    accepted for signature parity but must be None.

    Args:
        *args, **kwargs: ``keras.layers.Dense`` arguments (units,
            activation, use_bias, ...).
    """ + _Q_DOC + """
    Reference: Wang et al., HAQ, arXiv:1811.08886.

    Example:
        >>> layer = QuantDense(10, w_bits=8, a_bits=8)
    """

    _unsupported = ("lora_rank", "lora_alpha", "quantization_config")
    _config_overrides = {"lora_rank": None, "lora_alpha": None,
                         "quantization_config": None}

    def _export_call(self, inputs):
        # TFLite's converter cannot keep per-channel FakeQuant ranges through
        # the transpose FULLY_CONNECTED needs; a 1x1 CONV_2D takes them.
        x = self._export_inputs(inputs)
        n_in, n_out = self.kernel.shape
        x4 = ops.reshape(x, (-1, 1, 1, n_in))
        k = ops.reshape(self.kernel, (1, 1, n_in, n_out))
        k = fake_quant_weights(k, self._tfcomp_export["fq_max"], axis=-1)
        # bias and activation on the 4D result, fused into the CONV_2D (after
        # the reshape back, a volume's (rank 5) stayed a float ADD)
        y = self._apply_bias_activation(ops.conv(x4, k, padding="valid"))
        return ops.reshape(y, (-1,) + tuple(x.shape[1:-1]) + (n_out,))
