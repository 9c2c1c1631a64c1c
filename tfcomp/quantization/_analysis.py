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
from tfcomp.graph.copy import live_config
from tfcomp.graph.open_layers import open_layers
from tfcomp.layers import QUANT_ACTIVATION_LAYERS, QUANT_LAYERS, QuantReLU
from tfcomp.layers._kernel_ops import parse_dense_equation
from tfcomp.quantization._graph import read_graph
from tfcomp.quantization._int8_ops import (
    AVERAGE_POOLS,
    FIXED_GRIDS,
    FIXED_RANGE_ACTS,
    SAME_SCALE,
    TRANSPARENT,
    act_name,
    fixed_grid,
    fixed_range,
    interpolates,
    keeps_scale,
    keras_classes,
    squashing_activation,
)
from tfcomp.quantization._separable import SEPARABLE, separable_parts
from tfcomp.quantization._time_fold import (
    fold_time_distributed,
)
from tfcomp.quantization.report import QuantizationReport

__all__ = ["Plan", "Analysis", "analyse", "fold_batchnorm_weights",
           "QUANT_KINDS", "BASIC_KINDS", "quantizable_kernel", "has_kernel",
           "float_kernel_warning", "plan_bias", "act_name", "relu_kind",
           "fixed_range", "fixed_grid", "is_quant_layer", "SWISH_ACTS",
           "interpolates", "AVERAGE_POOLS",
           "keras_classes", "FIXED_RANGE_ACTS", "FIXED_GRIDS", "SAME_SCALE",
           "keeps_scale"]

#: Keras layer types ``quantize_model`` replaces (exact types).
QUANT_KINDS = ("Conv1D", "Conv2D", "Conv3D", "DepthwiseConv1D",
               "DepthwiseConv2D", "Dense", "SeparableConv1D",
               "SeparableConv2D", "Conv1DTranspose", "Conv2DTranspose",
               "Conv3DTranspose", "EinsumDense", "Embedding",
               "BatchNormalization")
#: The subset DNAS supernets support.
BASIC_KINDS = ("Conv2D", "DepthwiseConv2D", "Dense")
_KERNEL_WEIGHTS = ("kernel", "embeddings", "depthwise_kernel",
                   "pointwise_kernel")
_NONNEG_PRESERVING = TRANSPARENT + (
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D",
    "AveragePooling2D", "AveragePooling3D", "GlobalAveragePooling1D",
    "GlobalAveragePooling2D", "GlobalAveragePooling3D", "GlobalMaxPooling1D",
    "GlobalMaxPooling2D", "GlobalMaxPooling3D", "Flatten", "Reshape",
    "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D",
    "Cropping2D", "Cropping3D", "UpSampling1D", "UpSampling2D",
    "UpSampling3D", "Add", "Concatenate", "Maximum", "Average", "Multiply")
RELU_FUSING_PRODUCERS = ("Add", "Subtract")
#: ``x * sigmoid(x)``: TFLite computes it as LOGISTIC (onto the 1/256 grid)
#: then MUL; the QAT model computes it as these layers too.
SWISH_ACTS = ("silu", "swish")





@functools.lru_cache(maxsize=None)
def quantizable_kernel(layer, kinds: tuple = BASIC_KINDS) -> bool:
    """A plain Keras layer of one of ``kinds`` (exact class; EinsumDense
    only with a dense-like equation).

    Example:
        >>> quantizable_kernel(keras.layers.Conv2D(4, 3))
        True
    """
    if type(layer) not in keras_classes(tuple(kinds)):
        return False
    if type(layer) in (keras.layers.BatchNormalization,
                       keras.layers.Rescaling):
        return False  # no kernel: folded, or a 1x1 depthwise on 4D only
    if type(layer) is keras.layers.EinsumDense:
        return parse_dense_equation(layer.equation,
                                    layer.bias_axes) is not None
    return True


def has_kernel(layer) -> bool:
    """Whether a layer holds a weight matrix (kernel, embedding table),
    its own or a sublayer's (MultiHeadAttention's projections).

    Example:
        >>> has_kernel(keras.layers.BatchNormalization())
        False
    """
    if isinstance(layer, keras.Model):
        return False
    return any(str(getattr(v, "path", v.name)).rsplit("/", 1)[-1]
               in _KERNEL_WEIGHTS for v in getattr(layer, "weights", ()))


def is_quant_layer(layer) -> bool:
    """A tfcomp quantization layer (QAT, activation or DNAS mixed)."""
    return isinstance(layer, QUANT_LAYERS)


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


def fold_batchnorm_weights(layer, bn, kernel=None, bias=None):
    """Kernel and bias of ``layer`` with ``bn`` (inference mode) folded in.

    Args:
        layer: a built Conv1D / Conv2D / Conv3D, DepthwiseConv1D / 2D,
            Conv1D / 2D / 3DTranspose or Dense.
        bn: the BatchNormalization that follows it (last-axis).
        kernel, bias: the weights to fold (default: the layer's own; a
            separable conv passes its pointwise kernel).

    Returns:
        ``(kernel, bias)`` numpy arrays.

    Example:
        >>> k, b = fold_batchnorm_weights(model.get_layer("conv"),
        ...                               model.get_layer("bn"))
    """
    if kernel is None:
        kernel = keras.ops.convert_to_numpy(layer.kernel)
        bias = (keras.ops.convert_to_numpy(layer.bias) if layer.use_bias
                else None)
    kernel = np.asarray(kernel, np.float64)
    shape = _channel_shape(layer, kernel.shape)
    n_out = int(np.prod(shape))
    bias = (np.asarray(bias, np.float64) if bias is not None
            else np.zeros(n_out))
    gamma = (keras.ops.convert_to_numpy(bn.gamma) if bn.scale
             else np.ones(n_out))
    beta = (keras.ops.convert_to_numpy(bn.beta) if bn.center
            else np.zeros(n_out))
    mean = keras.ops.convert_to_numpy(bn.moving_mean)
    var = keras.ops.convert_to_numpy(bn.moving_variance)
    scale = np.asarray(gamma, np.float64) / np.sqrt(
        np.asarray(var, np.float64) + float(bn.epsilon))
    kernel = kernel * scale.reshape(shape)
    bias = (bias - mean) * scale + beta
    return kernel.astype(np.float32), bias.astype(np.float32)


def _channel_shape(layer, kernel_shape) -> tuple:
    """The kernel's shape with every axis but the output channels' set to 1
    (broadcasts a per-output-channel vector against the kernel)."""
    L = keras.layers
    if isinstance(layer, (L.DepthwiseConv1D, L.DepthwiseConv2D)):
        return (1,) * (len(kernel_shape) - 2) + tuple(kernel_shape[-2:])
    if isinstance(layer, (L.Conv1DTranspose, L.Conv2DTranspose,
                          L.Conv3DTranspose)):
        return (1,) * (len(kernel_shape) - 2) + (kernel_shape[-2], 1)
    return (1,) * (len(kernel_shape) - 1) + (kernel_shape[-1],)


@dataclasses.dataclass
class Plan:
    """How one layer is replaced: its calls, folded BN, fused ReLU, the
    folded weights and the tensor each call's result stands for.

    ``kind`` names the Keras class whose quantized counterpart is built
    (a SeparableConv1D / 2D becomes a depthwise ``pre`` plan followed by a
    1x1 "Conv1D" / "Conv2D", see ``_separable``); ``policy_name`` is the
    layer whose bits it takes.
    """

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
    kind: str = ""
    pre: object = None
    policy_name: str = ""
    config: dict = dataclasses.field(default_factory=dict)
    fixed_bits: tuple | None = None

    @property
    def node(self):
        return self.nodes[0]

    def base_config(self) -> dict:
        """The replacement's Keras config (before the quantization
        arguments are added)."""
        cfg = dict(self.config)
        for k in ("lora_rank", "lora_alpha", "quantization_config",
                  "gptq_unpacked_column_size"):
            cfg.pop(k, None)
        cfg["name"] = self.name
        if self.kind != "Embedding":
            cfg["activation"] = self.activation
        if self.bias is not None and "use_bias" in cfg:
            cfg["use_bias"] = True
        return cfg


@dataclasses.dataclass
class Analysis:
    graph: object
    plans: dict  # layer name -> Plan
    absorbed: set  # keys of nodes folded / fused away
    nonneg: dict  # tensor id -> bool
    report: QuantizationReport
    aliases: dict = None  # "outer/inner" -> "outer_inner" (model read)

    def quantized_names(self) -> list:
        """Planned layer names in graph order (a shared layer once); the
        standalone BatchNorms (fixed 8-bit) are not listed."""
        return list(dict.fromkeys(
            n.name for n in self.graph.nodes if n.name in self.plans
            and self.plans[n.name].fixed_bits is None))

    def path_aliases(self) -> dict:
        """``{"outer/inner": "outer_inner"}`` for layers of nested models."""
        if self.aliases is not None:
            return dict(self.aliases)
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
    embedding = type(layer) is keras.layers.Embedding
    plan = Plan(name=name, layer=layer, nodes=nodes, policy_name=name,
                kind=type(layer).__name__, config=live_config(layer),
                activation=("linear" if embedding
                            else act_name(layer.activation)))
    plan.tails = {n.key: n.outputs[0] for n in nodes}
    plan.bias = plan_bias(layer)
    if embedding:
        plan.kernel = keras.ops.convert_to_numpy(layer.embeddings)
        return plan
    if type(layer) in SEPARABLE:
        separable_parts(plan, layer)
    else:
        plan.kernel = keras.ops.convert_to_numpy(layer.kernel)
    foldable = type(layer) is not keras.layers.EinsumDense
    linear = plan.activation == "linear"
    if len(nodes) == 1:
        node = nodes[0]
        tail = node.outputs[0]
        cons = graph.consumers(tail)
        if (fold_batchnorm and foldable and linear and len(cons) == 1
                and not graph.is_output(tail)
                and _bn_foldable(graph, cons[0], tail)):
            plan.bn = cons[0]
            plan.kernel, plan.bias = fold_batchnorm_weights(
                layer, cons[0].layer, plan.kernel, plan.bias)
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
        plan.post_activation = _activation_ref(layer.activation)
        plan.activation = "linear"
    return plan


def _activation_ref(fn):
    """A Keras activation's name, or a user's own function (named or a
    lambda: Keras cannot look it up by name) as the live object."""
    name = keras.activations.serialize(fn)
    try:
        known = isinstance(name, str) and keras.activations.get(name) is fn
    except (ValueError, TypeError):
        known = False
    return name if known else fn


def _channel_affine(layer, rank):
    """``(scale, offset)`` arrays of a Rescaling, or of a Normalization
    with statistics per last-axis channel of its rank-``rank`` input
    (``x * scale + offset``); None for any other layer."""
    if type(layer) is keras.layers.Rescaling:
        return (np.asarray(layer.scale, np.float32),
                np.asarray(layer.offset, np.float32))
    if type(layer) is not keras.layers.Normalization or tuple(
            layer.axis) not in ((-1,), (rank - 1,)) or not layer.built:
        return None
    mean = np.asarray(keras.ops.convert_to_numpy(layer.mean),
                      np.float32).reshape(-1)
    sd = np.maximum(np.sqrt(np.asarray(keras.ops.convert_to_numpy(
        layer.variance), np.float32).reshape(-1)), keras.config.epsilon())
    if layer.invert:  # x * sd + mean
        return sd, mean
    return 1.0 / sd, -mean / sd  # (x - mean) / sd


def _plan_batchnorm(graph, name, layer, nodes, report, absorbed,
                    affine=None) -> Plan:
    """A BatchNormalization that follows no conv (pre-activation ResNets,
    a BN after an ``Add``), or a Rescaling / Normalization (keras.
    applications' preprocessing), as an 8-bit 1x1 depthwise
    conv: ``x * scale + offset`` per channel, its ReLU fused. Its one
    weight per channel is exact at 8 bits, so this is the same function,
    and int8 TFLite runs it
    as one DEPTHWISE_CONV_2D with ranges from the QAT model (a bare
    BatchNorm is a float MUL + ADD in the file, a Normalization a float
    SUB + MUL). ``affine``: ``_channel_affine(layer)`` (None for a
    BatchNormalization). A layer called several times (a siamese
    encoder's) is one shared depthwise conv; its ReLUs stay apart."""
    node = nodes[0]
    shape = graph.shape(node.inputs[0])
    channels = int(shape[-1])
    if affine is not None:  # x * scale + offset
        scale = np.broadcast_to(affine[0], (channels,))
        bias = np.broadcast_to(affine[1], (channels,)).copy()
    else:
        kernel, bias = fold_batchnorm_weights(
            keras.layers.DepthwiseConv2D(1), layer,
            np.ones((1, 1, channels, 1), np.float32), None)
        scale = kernel.reshape(channels)
    kind, cfg, kernel = _per_channel_conv(len(shape), scale)
    # a Rescaling's / Normalization's constants stay constants (not
    # trained in QAT); a frozen BatchNorm (transfer learning) stays frozen
    cfg.update(use_bias=True, dtype=layer.get_config().get("dtype"),
               trainable=bool(layer.trainable and affine is None))
    if kind != "Dense":
        cfg["padding"] = "valid"
    plan = Plan(name=name, layer=layer, nodes=list(nodes), policy_name=name,
                kind=kind, config=cfg, kernel=kernel, bias=bias,
                fixed_bits=(8, 8))
    tail = node.outputs[0]
    cons = graph.consumers(tail)
    if (len(nodes) == 1 and len(cons) == 1 and not graph.is_output(tail)
            and relu_kind(cons[0].layer) is not None):
        plan.relu = cons[0]
        plan.activation = relu_kind(cons[0].layer)
        tail = cons[0].outputs[0]
        absorbed.add(cons[0].key)
        report.fused[name] = cons[0].name
    plan.tails = {node.key: tail}
    plan.tails.update({n.key: n.outputs[0] for n in nodes[1:]})
    report.quantized[name] = (8, 8)
    return plan


#: Ranks of the tensors a standalone per-channel affine becomes a conv on.
AFFINE_RANKS = (2, 3, 4, 5)


def _per_channel_conv(rank: int, scale) -> tuple:
    """``(kind, config, kernel)`` of the 1x1 conv computing ``x * scale``
    per last-axis channel of a rank-``rank`` tensor: a DepthwiseConv1D /
    2D (one weight per channel), or for features (rank 2) and volumes
    (rank 5; Keras has no DepthwiseConv3D) a Dense / 1x1x1 Conv3D with a
    diagonal kernel: C times the multiplies, exact at 8 bits too (one
    nonzero per output channel) and an integer op in the int8 file."""
    c = len(scale)
    if rank in (2, 5):
        diag = np.diag(np.asarray(scale, np.float32))
        if rank == 2:
            return "Dense", {"units": c}, diag
        return ("Conv3D", {"filters": c, "kernel_size": (1, 1, 1)},
                diag.reshape(1, 1, 1, c, c))
    size = (1,) * (rank - 2)
    kernel = np.asarray(scale, np.float32).reshape(*size, c, 1)
    return (f"DepthwiseConv{rank - 2}D",
            {"kernel_size": size, "depth_multiplier": 1}, kernel)


def plan_bias(layer):
    """A layer's bias as numpy, or None."""
    bias = getattr(layer, "bias", None)
    if bias is None or not getattr(layer, "use_bias", True):
        return None
    return keras.ops.convert_to_numpy(bias)


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


def analyse(model, fold_batchnorm: bool, skip, verb: str,
            kinds: tuple = BASIC_KINDS, fold_time: bool = False) -> Analysis:
    """Plans the quantization of ``model`` (see the module docstring):
    layers of ``kinds`` (Keras class names) are planned, every other layer
    holding a kernel is listed in ``report.skipped`` with the reason.
    ``fold_time``: plan a rewrite of ``model`` whose ``TimeDistributed``
    calls run their inner layer on the steps folded into the batch
    (``_time_fold``; ``analysis.graph.model`` is then that float model)."""
    graph = read_graph(model, verb)
    _check_float_model(model, graph, verb)
    report = QuantizationReport()
    skip = set(skip or ())
    names = {n.name for n in graph.nodes} | {n.path for n in graph.nodes}
    aliases = {n.path: n.name for n in graph.nodes if n.path != n.name}
    skip, kept = {aliases.get(s, s) for s in skip}, {}
    opened = open_layers(model, keep=skip)
    kept.update(opened.kept)
    if opened.model is not None:
        graph = read_graph(opened.model, verb)
        report.opened = list(opened.names)
        names |= {n.name for n in graph.nodes} | {n.path for n in graph.nodes}
        aliases.update({n.path: n.name for n in graph.nodes
                        if n.path != n.name})
        skip = {aliases.get(s, s) for s in skip}
    unknown = sorted(skip - names)
    if unknown:
        raise ValueError(
            f"skip names layers that model {model.name!r} does not have: "
            f"{unknown}")
    if fold_time:
        folded = fold_time_distributed(graph)
        kept.update(folded.kept)
        if folded.model is not None:
            graph = read_graph(folded.model, verb)
    plans, absorbed = {}, set()
    for name, layer, nodes in graph.layers():
        if any(n.key in absorbed for n in nodes):
            continue
        rank = len(graph.shape(nodes[0].inputs[0])) if nodes and \
            nodes[0].inputs else 0
        affine = _channel_affine(layer, rank)
        if ("BatchNormalization" in kinds and fold_batchnorm
                and name not in skip
                and all(n.inputs and len(graph.shape(n.inputs[0]))
                        in AFFINE_RANKS for n in nodes)
                and (affine is not None
                     or all(_bn_foldable(graph, n, n.inputs[0])
                            for n in nodes))):
            plans[name] = _plan_batchnorm(graph, name, layer, nodes,
                                          report, absorbed, affine)
        elif quantizable_kernel(layer, kinds):
            if name in skip:
                report.skipped[name] = "listed in skip (kept float)"
            elif any(len(n.outputs) != 1 for n in nodes):
                report.skipped[name] = "multiple outputs (kept float)"
            else:
                plans[name] = _plan_layer(graph, name, layer, nodes,
                                          fold_batchnorm, report, absorbed)
        elif name in skip and isinstance(layer, keras.layers.Attention):
            report.skipped[name] = "listed in skip (kept float)"
        elif isinstance(layer, keras.Model):
            report.skipped[name] = (
                "nested model (kept float: tfcomp cannot read its graph)")
        elif has_kernel(layer) and not is_quant_layer(layer):
            report.skipped[name] = kept.get(name) or (
                "listed in skip (kept float)" if name in skip
                else _float_reason(layer, kinds))
    order = [n.name for n in graph.nodes if n.name in plans
             and plans[n.name].fixed_bits is None]
    if order:
        plans[order[0]].first = True
        plans[order[-1]].last = True
    nonneg = _nonneg_map(graph, plans, absorbed)
    return Analysis(graph, plans, absorbed, nonneg, report, aliases)


def _float_reason(layer, kinds) -> str:
    cls = type(layer).__name__
    if type(layer) is keras.layers.EinsumDense and cls in kinds:
        return (f"EinsumDense equation {layer.equation!r} (bias_axes="
                f"{layer.bias_axes!r}) is not dense-like (kept float)")
    if isinstance(layer, keras.layers.TimeDistributed):
        return (f"TimeDistributed({type(layer.layer).__name__}): layers "
                "inside TimeDistributed are not quantized (kept float)")
    if cls in QUANT_KINDS:
        return (f"{cls} is not among the layer types this verb quantizes "
                f"({', '.join(kinds)}; kept float)")
    return f"{cls} has no tfcomp quantized counterpart (kept float)"


def float_kernel_warning(report, verb: str) -> str | None:
    """One sentence listing the layers with weights left float (skip-listed
    ones excepted), or None.

    Example:
        >>> float_kernel_warning(analysis.report, "quantize_model")
    """
    left = {n: r for n, r in report.skipped.items()
            if not r.startswith("listed in skip")}
    if not left:
        return None
    shown = "; ".join(f"{n!r}: {r}" for n, r in list(left.items())[:8])
    more = f"; and {len(left) - 8} more" if len(left) > 8 else ""
    return (f"{verb} kept {len(left)} layer(s) with weights in float: "
            f"{shown}{more}. Training and float export work; a "
            "full-integer int8 TFLite export will refuse the model (export "
            "with quantization='dynamic' or 'float16', or replace these "
            "layers), except recurrent layers (LSTM / GRU / SimpleRNN), "
            "which export_tflite(quantization='int8', calibration_data=...) "
            "calibrates.")


def _nonneg_map(graph, plans, absorbed) -> dict:
    nonneg = {t: False for t in graph.inputs}
    preserving = keras_classes(_NONNEG_PRESERVING)
    for node in graph.nodes:
        if node.key in absorbed:
            continue
        layer = node.layer
        plan = plans.get(node.name)
        if plan is not None:
            post = plan.post_activation
            nonneg[plan.tails[node.key]] = (
                plan.activation in ("relu", "relu6") and post is None) or (
                isinstance(post, str) and post in (
                    "sigmoid", "softmax", "hard_sigmoid"))
            continue
        if relu_kind(layer) is not None or isinstance(layer, QuantReLU):
            value = True
        elif isinstance(layer, preserving):
            value = all(nonneg.get(t, False) for t in node.inputs)
        elif squashing_activation(layer) in ("sigmoid", "softmax",
                                             "hard_sigmoid"):
            value = True
        else:
            value = False
        for t in node.outputs:
            nonneg[t] = value
    return nonneg


def is_observer(layer) -> bool:
    """A QuantActivation / QuantReLU: its output is already quantized."""
    return isinstance(layer, QUANT_ACTIVATION_LAYERS)
