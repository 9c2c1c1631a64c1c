"""``strip_quantization``: a QAT model as a plain Keras model with its
quantized weights baked in.

Example:
    >>> from tfcomp.quantization import strip_quantization
    >>> plain = strip_quantization(qat_model)
"""

from __future__ import annotations

import keras

from tfcomp._compile import carry_compile
from tfcomp.graph.copy import (
    live_config,
    model_like,
    refresh_state,
)
from tfcomp.graph.outputs import output_structure, pack_like_inputs
from tfcomp.layers import (
    KERAS_ATTENTION_OF,
    MIXED_LAYERS,
    QUANT_ELEMENTWISE_LAYERS,
    QUANT_NORM_OF,
    QuantActivation,
    QuantConv1D,
    QuantConv1DTranspose,
    QuantConv2D,
    QuantConv2DTranspose,
    QuantConv3D,
    QuantConv3DTranspose,
    QuantDense,
    QuantDepthwiseConv1D,
    QuantDepthwiseConv2D,
    QuantEinsumDense,
    QuantEmbedding,
    QuantMultiHeadAttention,
    QuantReLU,
)
from tfcomp.layers.quant_attention import attention_projections
from tfcomp.quantization._graph import clone_layer, new_inputs, read_graph
from tfcomp.quantization.params import is_qat_model

__all__ = ["strip_quantization"]

_BASES = {QuantConv2D: keras.layers.Conv2D,
          QuantDepthwiseConv2D: keras.layers.DepthwiseConv2D,
          QuantDense: keras.layers.Dense,
          QuantConv1D: keras.layers.Conv1D,
          QuantConv3D: keras.layers.Conv3D,
          QuantConv2DTranspose: keras.layers.Conv2DTranspose,
          QuantDepthwiseConv1D: keras.layers.DepthwiseConv1D,
          QuantConv1DTranspose: keras.layers.Conv1DTranspose,
          QuantConv3DTranspose: keras.layers.Conv3DTranspose,
          QuantEinsumDense: keras.layers.EinsumDense,
          QuantEmbedding: keras.layers.Embedding}
_QUANT_KEYS = ("w_bits", "a_bits", "weight_quantizer", "input_quantizer",
               "lora_rank", "lora_alpha", "quantization_config")


_NORMS = {q: plain for plain, q in QUANT_NORM_OF.items()}
# Attention / AdditiveAttention: their 8-bit weights, as a norm's
_NORMS.update({q: plain for plain, q in KERAS_ATTENTION_OF.items()})


def _replacement(layer, name):
    """``(new layer, needs weights)`` for one layer of the QAT model."""
    base = _BASES.get(type(layer))
    if base is None:
        for cls, plain in _BASES.items():
            if isinstance(layer, cls):
                base = plain
    if base is not None:
        cfg = live_config(layer)
        for k in _QUANT_KEYS:
            cfg.pop(k, None)
        cfg["name"] = name
        return base.from_config(cfg), "quantized"
    if isinstance(layer, QUANT_ELEMENTWISE_LAYERS):
        return layer.plain_layer(name), None
    if isinstance(layer, QuantReLU):
        return keras.layers.ReLU(max_value=layer.max_value,
                                 negative_slope=layer.negative_slope,
                                 threshold=layer.threshold, name=name), None
    norm = _NORMS.get(type(layer))
    if isinstance(layer, QuantMultiHeadAttention):
        norm = keras.layers.MultiHeadAttention
    if norm is not None:
        cfg = dict(live_config(layer), name=name)
        cfg.pop("momentum", None)
        return norm.from_config(cfg), (
            "attention" if norm is keras.layers.MultiHeadAttention
            else "norm")
    return clone_layer(layer, name), "float"


def strip_quantization(model: keras.Model) -> keras.Model:
    """A plain Keras model with the QAT model's quantized weights baked in.

    Quantized layers become their Keras counterparts whose kernels hold the
    dequantized b-bit weights (``codes * scale``) and the bias as the QAT
    forward pass adds it (on the accumulator grid); activation quantizers are
    dropped (``QuantReLU`` becomes ``ReLU``), so activations run in float.
    For integer deployment use ``tfcomp.export.export_tflite(qat_model,
    path, quantization="int8")``, which reads the QAT ranges directly.
    (``tfcomp.pruning.strip_pruning`` is the pruning counterpart.)

    Args:
        model: a QAT model from ``quantize_model``.

    Returns:
        A new ``keras.Model`` with only Keras layers, compiled like
        ``model`` when it is compiled. ``Lambda`` layers keep their
        in-memory function (no unsafe deserialization).

    Raises:
        ValueError: a model without tfcomp quantized layers, or a DNAS
            supernet (derive its bits first).

    Example:
        >>> plain = strip_quantization(qat_model)
    """
    graph = read_graph(model, "strip_quantization")
    if not is_qat_model(model):
        raise ValueError(
            "strip_quantization expects a quantization-aware model (from "
            f"quantize_model). Model {model.name!r} has no tfcomp quantized "
            "layers.")
    inputs = new_inputs(model)
    tmap = dict(zip(graph.inputs, inputs))
    made = {}
    for node in graph.nodes:
        layer = node.layer
        if isinstance(layer, MIXED_LAYERS):
            raise ValueError(
                f"Layer {layer.name!r} is a DNAS supernet layer: derive bits "
                "with tfcomp.quantization.dnas.derive() and quantize_model "
                "them first.")
        if isinstance(layer, QuantActivation):
            y = tmap[node.inputs[0]]
        else:
            first = node.name not in made
            if first:
                made[node.name] = _replacement(layer, node.name)
            new, kind = made[node.name]
            y = node.call(new, tmap)
            if first and kind == "quantized":
                kernel = (new.embeddings if isinstance(
                    new, keras.layers.Embedding) else new.kernel)
                kernel.assign(layer.quantized_kernel())
                if layer.use_bias:
                    new.bias.assign(layer.quantized_bias())
            elif first and kind == "norm":  # its 8-bit gamma and beta
                new.set_weights(layer.quantized_weights())
            elif first and kind == "attention":  # its 8-bit kernels
                for dense, weights in zip(attention_projections(new),
                                          layer.quantized_projections()):
                    dense.set_weights(weights)
            elif first and kind == "float" and isinstance(
                    new, keras.layers.Layer):
                new.set_weights(layer.get_weights())
                refresh_state(new)
        for to, tn in zip(node.outputs, keras.tree.flatten(y)):
            tmap[to] = tn
    outputs = keras.tree.pack_sequence_as(
        output_structure(model), [tmap[t] for t in graph.outputs])
    if isinstance(outputs, list) and len(outputs) == 1:
        outputs = outputs[0]
    plain = model_like(model, pack_like_inputs(model, inputs),
                       outputs, name=f"{model.name}_stripped")
    return carry_compile(model, plain, what="the stripped model")
