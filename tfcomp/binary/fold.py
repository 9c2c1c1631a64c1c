"""Fold BatchNormalization into the binary layer it follows.

``alpha * sign(w)`` is equivariant to a per-channel scale: with ``g =
gamma / sqrt(var + eps)``, ``g * alpha * sign(w) = mean|g w| * sign(g w)``,
so scaling the latent kernel by ``g`` and adding the folded bias gives a
binary layer equal to binary layer + BN (inference mode). The BN becomes an
``Identity``. Used before bit-serial export, whose importer needs folded
BNs.

Example:
    >>> deploy = fold_binary_batchnorm(member)
"""

from __future__ import annotations

import keras

from tfcomp.graph.copy import clone_layer as copy_layer
from tfcomp.graph.outputs import pack_like_inputs
from tfcomp.layers.binary import BinaryConv2D, BinaryDense
from tfcomp.quantization import fold_batchnorm_weights
from tfcomp.quantization._graph import clone_layer, new_inputs, read_graph

__all__ = ["fold_binary_batchnorm"]

_BINARY = (BinaryConv2D, BinaryDense)


def _pairs(model) -> dict:
    """``{binary layer name: bn layer}`` for BNs that alone read a binary
    layer's (single-use, non-output) result."""
    graph = read_graph(model, "fold_binary_batchnorm")
    pairs = {}
    for node in graph.nodes:
        if not isinstance(node.layer, keras.layers.BatchNormalization):
            continue
        tid = node.inputs[0]
        prod = graph.producer(tid)
        if prod is None or not isinstance(prod.layer, _BINARY) or \
                len(graph.consumers(tid)) != 1 or graph.is_output(tid) or \
                len(graph.nodes_of(prod.path)) != 1 or \
                len(graph.nodes_of(node.path)) != 1:
            continue
        axis = node.layer.axis
        axis = axis[0] if isinstance(axis, (list, tuple)) else axis
        if axis not in (-1, len(graph.shape(tid)) - 1) or getattr(
                prod.layer, "activation", None) not in (
                None, keras.activations.linear):
            continue
        pairs[prod.layer.name] = node.layer
    return pairs


def fold_binary_batchnorm(model: keras.Model) -> keras.Model:
    """A copy of ``model`` with each BN after a binary layer folded in.

    Args:
        model: a functional or Sequential model with ``BinaryConv2D`` /
            ``BinaryDense`` layers (linear activation) each followed by a
            last-axis BatchNormalization.

    Returns:
        A new model computing the same function in inference mode.

    Example:
        >>> deploy = fold_binary_batchnorm(member)
    """
    pairs = _pairs(model)
    bns = {id(bn) for bn in pairs.values()}
    graph = read_graph(model, "fold_binary_batchnorm")
    ins = new_inputs(model)
    tensors = dict(zip(graph.inputs, ins))
    made: dict = {}
    for node in graph.nodes:
        layer = node.layer
        if id(layer) in bns:  # the folded BN: its output is its input
            tensors[node.outputs[0]] = tensors[node.inputs[0]]
            continue
        if id(layer) not in made:
            cfg = dict(layer.get_config(), use_bias=True) if \
                layer.name in pairs else None
            made[id(layer)] = (layer, copy_layer(layer, cfg) if cfg else
                               clone_layer(layer))
        out = node.call(made[id(layer)][1], tensors)
        for tid, t in zip(node.outputs, keras.tree.flatten(out)):
            tensors[tid] = t
    outs = [tensors[t] for t in graph.outputs]
    new = keras.Model(pack_like_inputs(model, ins),
                      outs[0] if len(outs) == 1 else outs,
                      name=model.name)
    for old, twin in made.values():
        if old.name in pairs:
            twin.set_weights(list(fold_batchnorm_weights(
                old, pairs[old.name])))
        else:
            twin.set_weights(old.get_weights())
    return new
