"""Which Keras layers and layer patterns the bit-serial importer maps to
which op: the layer-type tables (matched by exact type, not isinstance: a
subclass may change what ``call`` computes), decomposed swish, and
element-wise ``keras.ops`` calls.

``quantize_model`` may build swish / silu as TFLite's int8 file computes it
(``tfcomp.quantization._rebuild.SWISH_AS_LOGISTIC_MUL``):
``Multiply([x, QuantActivation(fixed_range)(Activation("sigmoid")(x))])``.
:func:`find_swish_muls` finds those; the importer emits each as one ``lut``
table over ``x``'s codes computing ``x * q(sigmoid(x))`` with the model's
own layers (:class:`SwishLogisticMul`), and never emits the sigmoid branch.

A ``keras.ops`` call that acts element by element on one tensor, with
Python scalars or per-channel vectors as its other operands (keras.
applications' hard sigmoid ``ReLU(6.0)(x + 3.0) * (1.0 / 6.0)``,
``ops.gelu(x)``, ``2.0 * x``), is a ``lut`` table too: the call replayed on
every code of its input (:class:`ElementwiseCall`), quantized onto the
next quantizer's grid, so it computes what the QAT model computes.

Example:
    >>> muls, skipped = find_swish_muls(read_graph(qat_model))
"""

from __future__ import annotations

import keras
import numpy as np

from tfcomp import layers as _tfcomp_layers
from tfcomp.export.bitserial.keras_binary import BINARY_GEMM
from tfcomp.graph import ops_name
from tfcomp.graph.identity import INFERENCE_IDENTITY, keras_layer_classes
from tfcomp.graph.replay import TensorId
from tfcomp.layers import (
    QuantActivation,
    QuantConv2D,
    QuantDense,
    QuantDepthwiseConv2D,
)
from tfcomp.quantization._analysis import act_name

__all__ = ["ELEMENTWISE_OPS", "GEMM", "IDENTITY", "MIXED", "WINDOW_1D",
           "ElementwiseCall", "SwishLogisticMul", "elementwise_call",
           "find_swish_muls", "pooling_of_reduce", "visit_swish"]

L = keras.layers
#: GEMM layer type -> its kind.
GEMM = {QuantConv2D: "conv2d", QuantDepthwiseConv2D: "depthwise_conv2d",
        QuantDense: "dense", L.Conv2D: "conv2d",
        L.DepthwiseConv2D: "depthwise_conv2d", L.Dense: "dense",
        L.Conv1D: "conv1d", L.Conv2DTranspose: "conv2d_transpose",
        L.DepthwiseConv1D: "depthwise_conv1d",
        L.Conv1DTranspose: "conv1d_transpose", **BINARY_GEMM}
for _name, _kind in (("QuantConv1D", "conv1d"),
                     ("QuantConv2DTranspose", "conv2d_transpose"),
                     ("QuantDepthwiseConv1D", "depthwise_conv1d"),
                     ("QuantConv1DTranspose", "conv1d_transpose")):
    if getattr(_tfcomp_layers, _name, None) is not None:  # QAT forms
        GEMM[getattr(_tfcomp_layers, _name)] = _kind
WINDOW_1D = (L.MaxPooling1D, L.AveragePooling1D, L.GlobalAveragePooling1D,
             L.GlobalMaxPooling1D)
MIXED = _tfcomp_layers.MIXED_LAYERS
IDENTITY = keras_layer_classes(INFERENCE_IDENTITY)


class SwishLogisticMul:
    """Stands for the three layers of a decomposed swish in ``lut_table``:
    ``x * gate(sigmoid(x))``, the gate (a fixed-range ``QuantActivation``)
    in inference mode, i.e. exactly the QAT model's function.

    Example:
        >>> f = SwishLogisticMul(sigmoid_layer, gate_layer, "act")
        >>> y = f(np.linspace(-4, 4, 9, dtype="float32"))
    """

    def __init__(self, sigmoid, gate, name: str):
        self.sigmoid, self.gate, self.name = sigmoid, gate, name

    def __call__(self, x):
        x = keras.ops.convert_to_tensor(x, "float32")
        return x * self.gate(self.sigmoid(x), training=False)


def _only_consumer(graph, tid):
    """The single node reading ``tid`` (None: several, none, or an output)."""
    users = graph.consumers(tid)
    return users[0] if len(users) == 1 and not graph.is_output(tid) else None


def find_swish_muls(graph) -> tuple:
    """``({Multiply node key: (x tensor id, SwishLogisticMul)}, {keys of the
    sigmoid and gate nodes to skip})`` for every ``Multiply`` of exactly two
    inputs ``x`` and ``QuantActivation(fixed_range)(Activation("sigmoid")
    (x))``, the sigmoid and the gate each read only by the next layer.

    Example:
        >>> muls, skipped = find_swish_muls(graph)
    """
    muls, skipped = {}, set()
    for node in graph.nodes:
        layer = node.layer
        if not (type(layer) is L.Activation
                and act_name(layer.activation) == "sigmoid"
                and len(node.inputs) == 1 and len(node.outputs) == 1):
            continue
        gate = _only_consumer(graph, node.outputs[0])
        if gate is None or type(gate.layer) is not QuantActivation or \
                gate.layer.fixed_range is None or len(gate.outputs) != 1:
            continue
        mul = _only_consumer(graph, gate.outputs[0])
        if mul is None or type(mul.layer) is not L.Multiply or \
                len(mul.inputs) != 2 or mul.key in muls:
            continue
        x = node.inputs[0]
        if sorted(mul.inputs) != sorted([x, gate.outputs[0]]):
            continue
        muls[mul.key] = (x, SwishLogisticMul(node.layer, gate.layer,
                                             mul.layer.name))
        skipped.update((node.key, gate.key))
    return muls, skipped


def visit_swish(imp, node) -> bool:
    """Whether the importer ``imp`` handled ``node`` as part of a decomposed
    swish (``imp.swish``, ``imp.skipped`` from :func:`find_swish_muls`):
    the sigmoid branch is skipped, the ``Multiply`` becomes a pending table
    over ``x``.

    Example:
        >>> if visit_swish(importer, node): ...
    """
    if node.key in imp.skipped:
        return True
    if node.key not in imp.swish:
        return False
    x, f = imp.swish[node.key]
    imp.lut(f, imp.graph.keras_tensor(x), node.output_list()[0])
    return True


#: ``keras.ops`` operations (class names) that act element by element.
ELEMENTWISE_OPS = frozenset({
    "Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Maximum",
    "Minimum", "Power", "Negative", "Absolute", "Abs", "Square", "Sqrt",
    "Exp", "Expm1", "Log", "Log1p", "Tanh", "Sin", "Cos", "Erf", "Sign",
    "Clip", "Sigmoid", "HardSigmoid", "HardSilu", "HardSwish", "Silu",
    "Swish", "Gelu", "Elu", "Selu", "Softplus", "Softsign", "Relu", "Relu6",
    "LeakyRelu", "Mish", "Celu", "Tanhshrink", "SoftShrink", "HardShrink",
    "LogSigmoid", "Reciprocal"})


class ElementwiseCall:
    """An element-wise ``keras.ops`` call of one tensor as a function of
    that tensor (the node's own call, its constants kept), for
    ``lut_table``.

    Example:
        >>> f = ElementwiseCall(node)   # node: ``x + 3.0``
        >>> f(np.zeros((1, 4), "float32"))    # 3.0 everywhere
    """

    def __init__(self, node):
        self.node, self.name = node, node.name

    def __call__(self, x):
        x = keras.ops.convert_to_tensor(x, "float32")
        return self.node.call(self.node.layer, {self.node.inputs[0]: x})


def _per_channel(value, channels: int) -> bool:
    """A constant operand a table can hold: a scalar or a vector along the
    last (channel) axis."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    try:
        shape = np.shape(value)
    except (TypeError, ValueError):
        return False
    return all(d == 1 for d in shape[:-1]) and (
        not shape or shape[-1] in (1, channels))


def elementwise_call(graph, node):
    """The :class:`ElementwiseCall` of ``node`` when it is an element-wise
    ``keras.ops`` call of one tensor (and constants) that keeps its shape;
    else None.

    Example:
        >>> f = elementwise_call(graph, node)
    """
    if ops_name(node.layer) not in ELEMENTWISE_OPS:
        return None
    if len(set(node.inputs)) != 1 or len(node.outputs) != 1:
        return None
    shape = tuple(graph.shape(node.inputs[0]))
    if tuple(graph.shape(node.outputs[0])) != shape or not shape:
        return None
    channels = shape[-1]
    consts = [v for v in keras.tree.flatten((node.args, node.kwargs))
              if not isinstance(v, TensorId)]
    if not all(_per_channel(v, channels) for v in consts):
        return None
    return ElementwiseCall(node)


#: ``keras.ops`` reduction (class name) -> the global pooling layers it is
#: over every spatial axis, by input rank.
_REDUCE_POOLING = {
    "Mean": {3: L.GlobalAveragePooling1D, 4: L.GlobalAveragePooling2D},
    "Max": {3: L.GlobalMaxPooling1D, 4: L.GlobalMaxPooling2D},
    "Amax": {3: L.GlobalMaxPooling1D, 4: L.GlobalMaxPooling2D},
}


def pooling_of_reduce(node):
    """The global pooling layer a ``keras.ops`` mean / max over every
    spatial axis computes (``ops.mean(x, axis=(1, 2), keepdims=True)`` is
    ``GlobalAveragePooling2D(keepdims=True)``), named like the call, or
    None for any other node.

    Example:
        >>> type(pooling_of_reduce(node)).__name__
        'GlobalAveragePooling2D'
    """
    table = _REDUCE_POOLING.get(ops_name(node.layer))
    ins = node.input_list()
    if table is None or len(ins) != 1:
        return None
    rank = len(ins[0].shape)
    axis = getattr(node.layer, "axis", None)
    axes = sorted(int(a) % rank for a in (
        axis if isinstance(axis, (list, tuple)) else [axis])) \
        if axis is not None else None
    if rank not in table or axes != list(range(1, rank - 1)):
        return None
    return table[rank](keepdims=bool(getattr(node.layer, "keepdims", False)),
                       name=node.layer.name)
