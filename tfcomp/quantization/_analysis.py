"""What ``quantize_model`` (and DNAS's ``build_supernet``) will do to a float
model: which layers are quantized, which BatchNorm is folded and which ReLU
fused into them, and which tensors are provably non-negative.

A shared layer (called several times) is quantized as one shared layer;
its BatchNorm / ReLU are not folded or fused (they follow one call only).

Example:
    >>> analysis = analyse(model, True, (), "quantize_model")
    >>> sorted(analysis.plans)[:2]
"""

from __future__ import annotations

import dataclasses
import functools

import keras
import numpy as np

from tfcomp._io import BadInputError
from tfcomp.layers import QUANT_ACTIVATION_LAYERS, QUANT_LAYERS, QuantReLU
from tfcomp.quantization._graph import read_graph
from tfcomp.quantization.report import QuantizationReport

__all__ = ["Plan", "Analysis", "analyse", "fold_batchnorm_weights",
           "act_name", "relu_kind", "fixed_range", "is_quant_layer",
           "keras_classes", "FIXED_RANGE_ACTS"]

_UNSUPPORTED_KERNELS = ("Conv1D", "Conv3D", "Conv1DTranspose",
                        "Conv2DTranspose", "Conv3DTranspose",
                        "SeparableConv1D", "SeparableConv2D",
                        "DepthwiseConv1D", "EinsumDense", "Embedding")
TRANSPARENT = ("Dropout", "SpatialDropout1D", "SpatialDropout2D",
               "SpatialDropout3D", "GaussianNoise", "GaussianDropout",
               "AlphaDropout", "ActivityRegularization", "Identity")
_NONNEG_PRESERVING = TRANSPARENT + (
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D",
    "AveragePooling2D", "AveragePooling3D", "GlobalAveragePooling1D",
    "GlobalAveragePooling2D", "GlobalAveragePooling3D", "GlobalMaxPooling1D",
    "GlobalMaxPooling2D", "GlobalMaxPooling3D", "Flatten", "Reshape",
    "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D",
    "Cropping2D", "Cropping3D", "UpSampling1D", "UpSampling2D",
    "UpSampling3D", "Add", "Concatenate", "Maximum", "Average", "Multiply")
RELU_FUSING_PRODUCERS = ("Add", "Subtract")
FIXED_RANGE_ACTS = ("softmax", "sigmoid", "tanh", "hard_sigmoid")


@functools.lru_cache(maxsize=None)
def keras_classes(names: tuple) -> tuple:
    """The ``keras.layers`` classes named in ``names`` (for isinstance)."""
    return tuple(c for c in (getattr(keras.layers, n, None) for n in names)
                 if isinstance(c, type))


def quantizable_kernel(layer) -> bool:
    """A plain Conv2D / DepthwiseConv2D / Dense (exact class)."""
    return type(layer) in (keras.layers.Conv2D, keras.layers.DepthwiseConv2D,
                           keras.layers.Dense)


def is_quant_layer(layer) -> bool:
    """A tfcomp quantization layer (QAT, activation or DNAS mixed)."""
    return isinstance(layer, QUANT_LAYERS)


def act_name(fn) -> str:
    if fn is None:
        return "linear"
    name = keras.activations.serialize(fn)
    if isinstance(name, dict):
        name = name.get("config", {}).get("name", str(name))
    return str(name)


def relu_kind(layer) -> str | None:
    """"relu" / "relu6" for a plain ReLU (or ReLU activation) layer."""
    if type(layer) is keras.layers.ReLU:
        cfg = layer.get_config()
        if cfg.get("negative_slope", 0) == 0 and cfg.get("threshold", 0) == 0:
            mv = cfg.get("max_value")
            if mv is None:
                return "relu"
            if float(mv) == 6.0:
                return "relu6"
        return None
    if type(layer) is keras.layers.Activation:
        name = act_name(layer.activation)
        if name in ("relu", "relu6"):
            return name
    return None


def fixed_range(layer) -> bool:
    """Softmax-like outputs whose range is known (no observer needed)."""
    if type(layer) is keras.layers.Softmax:
        return True
    if type(layer) is keras.layers.Activation:
        return act_name(layer.activation) in FIXED_RANGE_ACTS
    return False


def fold_batchnorm_weights(layer, bn):
    """Kernel and bias of ``layer`` with ``bn`` (inference mode) folded in.

    Args:
        layer: a built Conv2D, DepthwiseConv2D or Dense.
        bn: the BatchNormalization that follows it (last-axis).

    Returns:
        ``(kernel, bias)`` numpy arrays.

    Example:
        >>> k, b = fold_batchnorm_weights(model.get_layer("conv"),
        ...                               model.get_layer("bn"))
    """
    depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
    kernel = keras.ops.convert_to_numpy(layer.kernel).astype(np.float64)
    n_out = int(np.prod(kernel.shape[2:])) if depthwise else kernel.shape[-1]
    bias = (keras.ops.convert_to_numpy(layer.bias).astype(np.float64)
            if layer.use_bias else np.zeros(n_out))
    gamma = (keras.ops.convert_to_numpy(bn.gamma) if bn.scale
             else np.ones(n_out))
    beta = (keras.ops.convert_to_numpy(bn.beta) if bn.center
            else np.zeros(n_out))
    mean = keras.ops.convert_to_numpy(bn.moving_mean)
    var = keras.ops.convert_to_numpy(bn.moving_variance)
    scale = np.asarray(gamma, np.float64) / np.sqrt(
        np.asarray(var, np.float64) + float(bn.epsilon))
    if depthwise:
        kernel = kernel * scale.reshape(kernel.shape[2:])
    else:
        kernel = kernel * scale
    bias = (bias - mean) * scale + beta
    return kernel.astype(np.float32), bias.astype(np.float32)


@dataclasses.dataclass
class Plan:
    """How one layer is replaced: its calls, folded BN, fused ReLU, the
    folded weights and the tensor each call's result stands for."""

    name: str
    layer: object
    nodes: list
    bn: object = None
    relu: object = None
    activation: str = "linear"
    post_activation: object = None
    tails: dict = dataclasses.field(default_factory=dict)  # node key -> tid
    kernel: np.ndarray = None
    bias: np.ndarray = None
    first: bool = False
    last: bool = False

    @property
    def node(self):
        return self.nodes[0]


@dataclasses.dataclass
class Analysis:
    graph: object
    plans: dict  # layer name -> Plan
    absorbed: set  # keys of nodes folded / fused away
    nonneg: dict  # tensor id -> bool
    report: QuantizationReport

    def quantized_names(self) -> list:
        """Planned layer names in graph order (a shared layer once)."""
        return list(dict.fromkeys(n.name for n in self.graph.nodes
                                  if n.name in self.plans))

    def path_aliases(self) -> dict:
        """``{"outer/inner": "outer_inner"}`` for layers of nested models."""
        return {n.path: n.name for n in self.graph.nodes if n.path != n.name}

    def plan_of(self, node):
        plan = self.plans.get(node.name)
        return plan if plan is not None and node in plan.nodes else None


def _bn_foldable(graph, bn_node, tid) -> bool:
    if type(bn_node.layer) is not keras.layers.BatchNormalization:
        return False
    axis = bn_node.layer.axis
    axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 \
        else axis
    rank = len(graph.shape(tid))
    return axis in (-1, rank - 1)


def _plan_layer(graph, name, layer, nodes, fold_batchnorm, report,
                absorbed) -> Plan:
    plan = Plan(name=name, layer=layer, nodes=nodes,
                activation=act_name(layer.activation))
    plan.tails = {n.key: n.outputs[0] for n in nodes}
    plan.kernel = keras.ops.convert_to_numpy(layer.kernel)
    plan.bias = (keras.ops.convert_to_numpy(layer.bias)
                 if layer.use_bias else None)
    linear = plan.activation == "linear"
    if len(nodes) == 1:
        node = nodes[0]
        tail = node.outputs[0]
        cons = graph.consumers(tail)
        if (fold_batchnorm and linear and len(cons) == 1
                and not graph.is_output(tail)
                and _bn_foldable(graph, cons[0], tail)):
            plan.bn = cons[0]
            plan.kernel, plan.bias = fold_batchnorm_weights(layer,
                                                            cons[0].layer)
            tail = cons[0].outputs[0]
            absorbed.add(cons[0].key)
            report.folded[name] = cons[0].name
            cons = graph.consumers(tail)
        if (linear and len(cons) == 1 and not graph.is_output(tail)
                and relu_kind(cons[0].layer) is not None):
            plan.relu = cons[0]
            plan.activation = relu_kind(cons[0].layer)
            tail = cons[0].outputs[0]
            absorbed.add(cons[0].key)
            report.fused[name] = cons[0].name
        plan.tails[node.key] = tail
    if plan.activation not in ("linear", "relu", "relu6"):
        plan.post_activation = keras.activations.serialize(layer.activation)
        plan.activation = "linear"
    return plan


def _check_float_model(model, graph, verb: str) -> None:
    """Raises when ``model`` already holds tfcomp quantization layers:
    quantizing again would ignore the new bits of those layers and stack
    activation quantizers, and their float weights are gone."""
    found = []
    for name, layer, _ in graph.layers():
        if is_quant_layer(layer):
            found.append(f"{name} ({type(layer).__name__})")
    if found:
        shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
        raise BadInputError(
            f"{verb} needs a float model, but model {model.name!r} is "
            f"already quantized ({len(found)} tfcomp quantization layers: "
            f"{shown}). Start from the float model, or convert this one "
            "with tfcomp.quantization.strip_quantization(model) first "
            "(its weights then keep their quantized values).")


def analyse(model, fold_batchnorm: bool, skip, verb: str) -> Analysis:
    """Plans the quantization of ``model`` (see the module docstring)."""
    graph = read_graph(model, verb)
    _check_float_model(model, graph, verb)
    report = QuantizationReport()
    skip = set(skip or ())
    names = {n.name for n in graph.nodes} | {n.path for n in graph.nodes}
    unknown = sorted(skip - names)
    if unknown:
        raise ValueError(
            f"skip names layers that model {model.name!r} does not have: "
            f"{unknown}")
    kernels = keras_classes(("Conv2D", "DepthwiseConv2D", "Dense")
                            + _UNSUPPORTED_KERNELS)
    plans, absorbed = {}, set()
    for name, layer, nodes in graph.layers():
        if any(n.key in absorbed for n in nodes):
            continue
        if quantizable_kernel(layer):
            if name in skip or nodes[0].path in skip:
                report.skipped[name] = "listed in skip (kept float)"
            elif any(len(n.outputs) != 1 for n in nodes):
                report.skipped[name] = "multiple outputs"
            else:
                plans[name] = _plan_layer(graph, name, layer, nodes,
                                          fold_batchnorm, report, absorbed)
        elif isinstance(layer, kernels) and not is_quant_layer(layer):
            report.skipped[name] = (f"{type(layer).__name__} has no tfcomp "
                                    "quantized counterpart (kept float)")
        elif isinstance(layer, keras.Model):
            report.skipped[name] = (
                "nested model (kept float: tfcomp cannot read its graph)")
    order = [n.name for n in graph.nodes if n.name in plans]
    if order:
        plans[order[0]].first = True
        plans[order[-1]].last = True
    nonneg = _nonneg_map(graph, plans, absorbed)
    return Analysis(graph, plans, absorbed, nonneg, report)


def _nonneg_map(graph, plans, absorbed) -> dict:
    nonneg = {t: False for t in graph.inputs}
    preserving = keras_classes(_NONNEG_PRESERVING)
    for node in graph.nodes:
        if node.key in absorbed:
            continue
        layer = node.layer
        plan = plans.get(node.name)
        if plan is not None:
            nonneg[plan.tails[node.key]] = (
                plan.activation in ("relu", "relu6")
                and plan.post_activation is None)
            continue
        if relu_kind(layer) is not None or isinstance(layer, QuantReLU):
            value = True
        elif isinstance(layer, preserving):
            value = all(nonneg.get(t, False) for t in node.inputs)
        elif type(layer) is keras.layers.Activation and act_name(
                layer.activation) in ("sigmoid", "softmax", "hard_sigmoid"):
            value = True
        else:
            value = False
        for t in node.outputs:
            nonneg[t] = value
    return nonneg


def is_observer(layer) -> bool:
    """A QuantActivation / QuantReLU: its output is already quantized."""
    return isinstance(layer, QUANT_ACTIVATION_LAYERS)
