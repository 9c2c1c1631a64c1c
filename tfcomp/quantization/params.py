"""What a quantization-aware model holds: whether it is one
(``is_qat_model``) and its integer weights, scales and activation grids
(``quantization_params``), the facts every integer back end (TFLite int8,
bit-serial descriptors) reads.

Example:
    >>> from tfcomp.quantization import quantization_params
    >>> p = quantization_params(qat)["s1b1_conv1"]
    >>> p["codes"].dtype, p["scale"].shape
"""

from __future__ import annotations

import keras
import numpy as np

from tfcomp.graph import iter_leaf_layers
from tfcomp.layers import (
    QUANT_ACTIVATION_LAYERS,
    QUANT_LAYERS,
    QUANT_WEIGHT_LAYERS,
)

__all__ = ["is_qat_model", "quantization_params", "channel_shape"]


def is_qat_model(model) -> bool:
    """Whether a model contains tfcomp quantization layers (QAT weight
    layers, activation quantizers or DNAS mixed layers).

    Example:
        >>> is_qat_model(quantize_model(model))
        True
    """
    if not isinstance(model, keras.Model):
        return False
    return any(isinstance(layer, QUANT_LAYERS)
               for _, layer in iter_leaf_layers(model))


def channel_shape(layer) -> tuple:
    """A quantized layer's kernel shape with the axes its per-channel
    weight scale reduces over set to 1 (``(1, 1, 1, out)`` for a Conv2D,
    ``(1, 1, in, mult)`` for a depthwise conv, ``(1, 1)`` for an embedding
    table's one scale).

    Example:
        >>> channel_shape(qat.get_layer("conv"))
        (1, 1, 1, 16)
    """
    reduce = set(layer._kernel_reduce_axes)
    return tuple(1 if i in reduce else int(d)
                 for i, d in enumerate(layer.kernel.shape))


def _per_channel(scale, n_out: int) -> np.ndarray:
    s = np.asarray(scale, np.float32).reshape(-1)
    if s.size == 1:
        s = np.full((n_out,), float(s[0]), np.float32)
    if s.size != n_out:
        raise ValueError(f"scale has {s.size} entries, expected {n_out}")
    return s


def quantization_params(model) -> dict:
    """Integer weights, scales and activation grids of a QAT model.

    For every quantized layer: ``w_bits``, ``a_bits``, ``codes`` (int32,
    kernel layout), ``scale`` (per output channel), ``bias`` (float or
    None), and ``input`` = ``(scale, zero_point, bits)`` of its input
    quantizer; for activation quantizer layers ``output`` likewise. This is
    what integer back ends (TFLite, bit-serial descriptors) consume. The
    bias is the one the forward pass adds: rounded to the int32 accumulator
    grid ``input scale * weight scale`` (see ``QuantMixin.quantized_bias``).

    Example:
        >>> p = quantization_params(qat)["s1b1_conv1"]
        >>> p["codes"].dtype, p["scale"].shape
    """
    out = {}
    for _, layer in iter_leaf_layers(model):
        cls = type(layer).__name__
        if isinstance(layer, QUANT_WEIGHT_LAYERS):
            kernel = keras.ops.convert_to_numpy(layer.kernel)
            n_out = int(np.prod(channel_shape(layer)))
            entry = {"type": cls, "w_bits": layer.w_bits,
                     "a_bits": layer.a_bits,
                     "bias": layer.quantized_bias()}
            if layer.weight_quantizer is not None:
                codes, scale = layer.weight_quantizer.integer_codes(kernel)
                entry["codes"] = codes
                entry["scale"] = _per_channel(scale, n_out)
                entry["weight_quantizer"] = type(
                    layer.weight_quantizer).__name__
            iq = layer.input_quantizer
            entry["input"] = None
            if iq is not None and iq.calibrated:
                s, z = iq.numpy_grid()
                entry["input"] = (s, z, iq.bits)
            out[layer.name] = entry
        elif isinstance(layer, QUANT_ACTIVATION_LAYERS):
            q = layer.quantizer
            grid = None
            if q.calibrated:
                s, z = q.numpy_grid()
                grid = (s, z, q.bits)
            out[layer.name] = {"type": cls, "a_bits": q.bits,
                               "output": grid}
    return out
