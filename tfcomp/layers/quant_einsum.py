"""Quantization-aware EinsumDense and Embedding.

``QuantEinsumDense`` covers "dense-like" equations (the input's trailing
axes contracted with the kernel's leading ones: every projection of
``MultiHeadAttention``, ``"ab,bc->ac"``, ``"abc,cde->abde"``...); its weight
scale is per output unit (the kernel's output axes) and its int8 export is
a 1x1 CONV_2D over the flattened contracted axes, as ``QuantDense``'s.

``QuantEmbedding`` quantizes the table with one scale (TFLite's GATHER
keeps the table's scale on its output, so the file stores the b-bit codes
and gathers them); its inputs are integer ids, so it has no input
quantizer (``a_bits`` is recorded, for the cost model, and not used).

Example:
    >>> from tfcomp.layers import QuantEmbedding
    >>> layer = QuantEmbedding(1000, 32, w_bits=4)
"""

from __future__ import annotations

import math

import keras
from keras import ops

from tfcomp.layers._kernel_ops import EinsumOp, parse_dense_equation
from tfcomp.layers.quant_base import fake_quant_weights, round_bias
from tfcomp.layers.quant_conv import _Q_DOC, _QuantLayer

__all__ = ["QuantEinsumDense", "QuantEmbedding"]


@keras.saving.register_keras_serializable(package="tfcomp")
class QuantEinsumDense(EinsumOp, _QuantLayer, keras.layers.EinsumDense):
    """``keras.layers.EinsumDense`` (dense-like equation) with fake-quantized
    weights and inputs.

    Args:
        *args, **kwargs: ``keras.layers.EinsumDense`` arguments (equation,
            output_shape, bias_axes, activation...). The equation must be
            dense-like (see the module doc) and ``bias_axes`` empty or all
            the kernel's output axes.
    """ + _Q_DOC + """
    Reference: Wang et al., HAQ, arXiv:1811.08886.

    Example:
        >>> layer = QuantEinsumDense("abc,cde->abde", (None, 2, 8),
        ...                          bias_axes="de", w_bits=8)
    """

    _unsupported = ("lora_rank", "lora_alpha", "quantization_config")
    _config_overrides = {"quantization_config": None}

    def __init__(self, equation, *args, bias_axes=None, **kwargs):
        dims = parse_dense_equation(equation, bias_axes)
        if dims is None:
            raise ValueError(
                "QuantEinsumDense needs a dense-like equation (input = batch "
                "+ contracted axes, kernel = contracted + output axes) and "
                "bias_axes empty or all the output axes. Received: "
                f"equation={equation!r}, bias_axes={bias_axes!r}")
        self._n_contract, self._n_kout = dims
        self._kernel_reduce_axes = tuple(range(self._n_contract))
        super().__init__(equation, *args, bias_axes=bias_axes, **kwargs)

    @property
    def use_bias(self):
        return self.bias is not None

    def _apply_bias_activation(self, y, bias=None):
        if self.bias is not None:
            y = ops.add(y, self.bias if bias is None else bias)
        if self.activation is not None:
            y = self.activation(y)
        return y

    def _quantized_bias(self):
        if self.bias is None:
            return None
        flat = ops.reshape(self.bias, (-1,))
        q = round_bias(flat, self.kernel, self.weight_quantizer,
                       self.input_quantizer)
        return ops.reshape(q, ops.shape(self.bias))

    def _export_call(self, inputs):
        x = self._export_inputs(inputs)
        kshape = tuple(int(d) for d in self.kernel.shape)
        n_in = math.prod(kshape[:self._n_contract])
        out_dims = kshape[self._n_contract:]
        batch = tuple(x.shape[1:len(x.shape) - self._n_contract])
        k = ops.reshape(self.kernel, (1, 1, n_in, math.prod(out_dims)))
        k = fake_quant_weights(k, self._tfcomp_export["fq_max"], axis=-1)
        y = ops.conv(ops.reshape(x, (-1, 1, 1, n_in)), k, padding="valid")
        y = ops.reshape(y, (-1,) + batch + out_dims)
        return self._apply_bias_activation(y)


@keras.saving.register_keras_serializable(package="tfcomp")
class QuantEmbedding(_QuantLayer, keras.layers.Embedding):
    """``keras.layers.Embedding`` whose table is fake-quantized to
    ``w_bits`` with one (per-tensor) scale.

    Args:
        *args, **kwargs: ``keras.layers.Embedding`` arguments (input_dim,
            output_dim, mask_zero...).
        w_bits: table bits in [1, 8], or 32 for a float table.
        a_bits: recorded only (the inputs are integer ids).
        weight_quantizer: weight quantizer alias / dict / instance
            ("symmetric" by default); it is applied per tensor.
        input_quantizer: ignored (integer inputs are not quantized).

    Reference: Wang et al., HAQ, arXiv:1811.08886.

    Example:
        >>> layer = QuantEmbedding(1000, 32, w_bits=4)
        >>> y = layer(np.zeros((1, 20), "int32"))
    """

    _unsupported = ("lora_rank", "lora_alpha", "quantization_config")
    _config_overrides = {"quantization_config": None}
    _kernel_reduce_axes = (0, 1)
    #: no input quantizer: its inputs are integer ids
    quantizes_inputs = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.input_quantizer = None

    @property
    def kernel(self):
        """The table (``embeddings``), named like the other layers' kernel."""
        return self._embeddings

    @property
    def use_bias(self):
        return False

    @property
    def activation(self):
        return None

    def call(self, inputs, training=None):
        ids = inputs if "int" in str(inputs.dtype) else ops.cast(
            inputs, "int32")
        if self._tfcomp_export is not None:
            table = fake_quant_weights(
                self.kernel, self._tfcomp_export["fq_max"], axis=None)
        else:
            table = self._quantized_kernel()
        return ops.take(table, ids, axis=0)

    def _export_call(self, inputs):
        return self.call(inputs)
