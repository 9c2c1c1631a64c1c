"""MACs of the ``keras.ops`` products of a model, for
:func:`tfcomp.cost.profile`.

A functional model written with ``keras.ops`` (keras.io's Compact
Convolutional Transformer pools its tokens with ``ops.matmul``; attention
is often written ``ops.matmul(q, ops.transpose(k))`` or ``ops.einsum``)
has those products as graph nodes that are not layers: each
``ops.matmul`` / ``ops.einsum`` / ``ops.tensordot`` / ``ops.dot`` node
counts ``(output elements) x (contracted size)`` MACs, batch 1, unknown
sizes 1 (as every layer formula). A ``Lambda`` layer, or a weightless
layer class of your own, is traced the same way: its ``call`` run once on
new symbolic inputs of its first call's shapes, the products in it summed.
Element-wise ops, reductions and data movement count 0, as the
corresponding layers do.

Example:
    >>> x = keras.Input((8, 4))
    >>> s = keras.ops.matmul(x, keras.ops.transpose(x, (0, 2, 1)))
    >>> [r.macs for r in tfcomp.profile(keras.Model(x, s)).layers][-1]
    256
"""

from __future__ import annotations

import math

from tfcomp._cost_layers import einsum_macs

__all__ = ["is_keras_op", "op_macs", "traced_call_macs"]

_PRODUCTS = ("Matmul", "Einsum", "Tensordot", "Dot")


def is_keras_op(obj) -> bool:
    """A ``keras.ops`` node of a functional graph (an operation, not a
    layer)."""
    import keras

    return isinstance(obj, keras.Operation) and not isinstance(
        obj, keras.layers.Layer)


def _size(d) -> int:
    return 1 if d is None else int(d)


def op_macs(op, in_shapes, out_shapes) -> int:
    """MACs (batch 1) of one ``keras.ops`` node from its shapes: a product
    counts ``(output elements) x (contracted size)``, any other op 0.

    Example:
        >>> op_macs(matmul_op, [(None, 8, 4), (None, 4, 8)], [(None, 8, 8)])
        256
    """
    cls = type(op).__name__
    if cls not in _PRODUCTS or not in_shapes or not out_shapes:
        return 0
    out = math.prod(_size(d) for d in out_shapes[0][1:])
    x = in_shapes[0]
    if cls == "Einsum":  # two operands, as EinsumDense's input, kernel
        eq = str(getattr(op, "subscripts", "")).replace(" ", "")
        if len(in_shapes) != 2 or "->" not in eq or \
                eq.split("->")[0].count(",") != 1:
            return 0
        return einsum_macs(eq, x, tuple(_size(d) for d in in_shapes[1]),
                           out_shapes[0])
    if cls == "Tensordot":
        axes = getattr(op, "axes", 2)
        if isinstance(axes, int):
            k = math.prod(_size(d) for d in x[len(x) - axes:]) if axes else 1
        else:
            first = axes[0] if isinstance(axes[0], (list, tuple)) \
                else [axes[0]]
            k = math.prod(_size(x[int(a)]) for a in first)
        return out * k
    return out * _size(x[-1])  # matmul / dot: x's last axis


def traced_call_macs(layer) -> int | None:
    """MACs of the ``keras.ops`` products ``layer.call`` computes, traced on
    new symbolic inputs of its first call's shapes and dtypes; None when
    the call cannot be traced that way (several positional tensors, a
    layer inside, a failure).

    Example:
        >>> traced_call_macs(keras.layers.Lambda(
        ...     lambda t: keras.ops.matmul(t, t)))  # once called on (4, 4)
        64
    """
    import keras

    try:
        ins = layer.input
        fresh = keras.tree.map_structure(
            lambda t: keras.Input(batch_shape=t.shape, dtype=t.dtype), ins)
        out = layer.call(fresh)
        traced = keras.Model(fresh, out)
    except Exception:  # noqa: BLE001 - arbitrary Python: not traceable
        return None
    total = 0
    for op in traced.operations:
        if isinstance(op, keras.layers.InputLayer):
            continue
        if not is_keras_op(op):
            return None  # a layer inside: its own formula, not traced here
        total += op_macs(op, _shapes(op.input), _shapes(op.output))
    return total


def _shapes(struct) -> list:
    import keras

    return [tuple(t.shape) for t in keras.tree.flatten(struct)
            if hasattr(t, "shape")]
