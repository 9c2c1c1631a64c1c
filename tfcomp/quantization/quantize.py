"""``quantize_model``: clone a float model into its quantization-aware form.

Steps (each reported in ``model.quantization_report``):

1. Conv2D / DepthwiseConv2D / Dense layers become QuantConv2D /
   QuantDepthwiseConv2D / QuantDense with the requested bits.
2. A BatchNormalization that is the only consumer of a linear conv / dense is
   folded into it (``W' = W * g / sqrt(v + e)``, ``b' = (b - m) g /
   sqrt(v + e) + beta``), so training quantizes the weights inference uses.
3. A ReLU / ReLU6 that is the only consumer of such a layer is fused into it
   (``activation="relu"``); other activations (softmax, ...) are split off
   into their own layer.
4. Every tensor that is not the input of exactly one quantized layer (tensors
   with several consumers, residual sums, model outputs) gets an 8-bit
   ``QuantActivation``, so an int8 TFLite file takes every range from the
   QAT model.
5. Input quantizers are unsigned ``[0, c]`` where the input is provably
   non-negative (after a ReLU) and affine ``[lo, hi]`` otherwise.

The first and last quantized layers keep 8-bit weights and activations by
default (HAQ's convention).

Reference: Wang et al., HAQ, arXiv:1811.08886; Jacob et al.,
arXiv:1712.05877 (BN folding, EMA ranges).
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from tfcomp.quantization import quantizers as qz
from tfcomp.quantization._graph import clone_layer, new_inputs, read_graph

__all__ = ["quantize_model", "QuantizationReport", "fold_batchnorm_weights",
           "strip", "resolve_bits", "quantizable_layers",
           "link_shared_inputs"]

_QUANT_NAMES = {"Conv2D": "QuantConv2D",
                "DepthwiseConv2D": "QuantDepthwiseConv2D",
                "Dense": "QuantDense"}
_UNSUPPORTED_KERNELS = ("Conv1D", "Conv3D", "Conv1DTranspose",
                        "Conv2DTranspose", "Conv3DTranspose",
                        "SeparableConv1D", "SeparableConv2D",
                        "DepthwiseConv1D", "EinsumDense", "Embedding")
_TRANSPARENT = ("Dropout", "SpatialDropout1D", "SpatialDropout2D",
                "SpatialDropout3D", "GaussianNoise", "GaussianDropout",
                "AlphaDropout", "ActivityRegularization", "Identity")
_NONNEG_PRESERVING = _TRANSPARENT + (
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D",
    "AveragePooling2D", "AveragePooling3D", "GlobalAveragePooling1D",
    "GlobalAveragePooling2D", "GlobalAveragePooling3D", "GlobalMaxPooling1D",
    "GlobalMaxPooling2D", "GlobalMaxPooling3D", "Flatten", "Reshape",
    "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D",
    "Cropping2D", "Cropping3D", "UpSampling1D", "UpSampling2D",
    "UpSampling3D", "Add", "Concatenate", "Maximum", "Average", "Multiply")
_RELU_FUSING_PRODUCERS = ("Add", "Subtract")
_FIXED_RANGE_ACTS = ("softmax", "sigmoid", "tanh", "hard_sigmoid")


@dataclasses.dataclass
class QuantizationReport:
    """What ``quantize_model`` (or ``dnas.build_supernet``) did.

    Attributes:
        quantized: ``{layer: (w_bits, a_bits)}`` of the quantized layers.
        folded: ``{layer: batchnorm}`` folded pairs.
        fused: ``{layer: relu layer}`` fused activations.
        observers: names of inserted ``QuantActivation`` layers.
        skipped: ``{layer: reason}`` for layers with weights left float.

    Example:
        >>> print(qmodel.quantization_report.summary())
    """

    quantized: dict = dataclasses.field(default_factory=dict)
    folded: dict = dataclasses.field(default_factory=dict)
    fused: dict = dataclasses.field(default_factory=dict)
    observers: list = dataclasses.field(default_factory=list)
    skipped: dict = dataclasses.field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"quantized {len(self.quantized)} layers, folded "
                 f"{len(self.folded)} BatchNorms, fused {len(self.fused)} "
                 f"ReLUs, inserted {len(self.observers)} activation "
                 "quantizers"]
        for name, (w, a) in self.quantized.items():
            lines.append(f"  {name}: w{w}/a{a}")
        for name, why in self.skipped.items():
            lines.append(f"  skipped {name}: {why}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["quantized"] = {k: list(v) for k, v in self.quantized.items()}
        return d


@dataclasses.dataclass
class _Plan:
    node: object
    bn: object = None
    relu: object = None
    activation: str = "linear"
    post_activation: object = None
    tail: object = None
    kernel: np.ndarray = None
    bias: np.ndarray = None
    first: bool = False
    last: bool = False


@dataclasses.dataclass
class _Analysis:
    graph: object
    plans: dict  # node name -> _Plan
    absorbed: set  # names of nodes folded / fused away
    nonneg: dict  # id(original tensor) -> bool
    report: QuantizationReport


def _cls(layer) -> str:
    return type(layer).__name__


def _is_keras_class(layer, name: str) -> bool:
    return type(layer) is getattr(keras.layers, name, None)


def _act_name(fn) -> str:
    if fn is None:
        return "linear"
    name = keras.activations.serialize(fn)
    if isinstance(name, dict):
        name = name.get("config", {}).get("name", str(name))
    return str(name)


def _relu_kind(layer) -> str | None:
    if _is_keras_class(layer, "ReLU"):
        cfg = layer.get_config()
        if cfg.get("negative_slope", 0) == 0 and cfg.get("threshold", 0) == 0:
            mv = cfg.get("max_value")
            if mv is None:
                return "relu"
            if float(mv) == 6.0:
                return "relu6"
        return None
    if _is_keras_class(layer, "Activation"):
        name = _act_name(layer.activation)
        if name in ("relu", "relu6"):
            return name
    return None


def _fixed_range(layer) -> bool:
    if _is_keras_class(layer, "Softmax"):
        return True
    if _is_keras_class(layer, "Activation"):
        return _act_name(layer.activation) in _FIXED_RANGE_ACTS
    return False


def _is_quant_layer(layer) -> bool:
    return type(layer).__module__.startswith("tfcomp.layers.quant")


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
    kernel = keras.ops.convert_to_numpy(layer.kernel).astype(np.float64)
    n_out = int(np.prod(kernel.shape[2:])) if _cls(layer) == (
        "DepthwiseConv2D") else kernel.shape[-1]
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
    if _cls(layer) == "DepthwiseConv2D":
        kernel = kernel * scale.reshape(kernel.shape[2:])
    else:
        kernel = kernel * scale
    bias = (bias - mean) * scale + beta
    return kernel.astype(np.float32), bias.astype(np.float32)


def _bn_foldable(bn_layer, producer) -> bool:
    if not _is_keras_class(bn_layer, "BatchNormalization"):
        return False
    axis = bn_layer.axis
    axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 \
        else axis
    rank = len(producer.layer.output.shape)
    return axis in (-1, rank - 1)


def _analyse(model, fold_batchnorm: bool, skip, verb: str) -> _Analysis:
    graph = read_graph(model, verb)
    report = QuantizationReport()
    skip = set(skip or ())
    names = {n.name for n in graph.nodes}
    unknown = sorted(skip - names)
    if unknown:
        raise ValueError(
            f"skip names layers that model {model.name!r} does not have: "
            f"{unknown}")
    plans, absorbed = {}, set()
    for node in graph.nodes:
        layer = node.layer
        cls = _cls(layer)
        if node.name in absorbed:
            continue
        if cls in _QUANT_NAMES and _is_keras_class(layer, cls):
            if node.name in skip:
                report.skipped[node.name] = "listed in skip (kept float)"
                continue
            if len(node.output_list()) != 1:
                report.skipped[node.name] = "multiple outputs"
                continue
            plan = _Plan(node=node, activation=_act_name(layer.activation),
                         tail=node.outputs)
            plan.kernel = keras.ops.convert_to_numpy(layer.kernel)
            plan.bias = (keras.ops.convert_to_numpy(layer.bias)
                         if layer.use_bias else None)
            linear = plan.activation == "linear"
            cons = graph.consumers_of(plan.tail)
            if (fold_batchnorm and linear and len(cons) == 1
                    and not graph.is_output(plan.tail)
                    and _bn_foldable(cons[0].layer, node)):
                plan.bn = cons[0]
                plan.kernel, plan.bias = fold_batchnorm_weights(
                    layer, cons[0].layer)
                plan.tail = cons[0].outputs
                absorbed.add(cons[0].name)
                report.folded[node.name] = cons[0].name
                cons = graph.consumers_of(plan.tail)
            if (linear and len(cons) == 1 and not graph.is_output(plan.tail)
                    and _relu_kind(cons[0].layer) is not None):
                plan.relu = cons[0]
                plan.activation = _relu_kind(cons[0].layer)
                plan.tail = cons[0].outputs
                absorbed.add(cons[0].name)
                report.fused[node.name] = cons[0].name
            if plan.activation not in ("linear", "relu", "relu6"):
                plan.post_activation = keras.activations.serialize(
                    layer.activation)
                plan.activation = "linear"
            plans[node.name] = plan
        elif cls in _QUANT_NAMES or cls in _UNSUPPORTED_KERNELS:
            if not _is_quant_layer(layer):
                report.skipped[node.name] = (
                    f"{cls} has no tfcomp quantized counterpart (kept float)")
        elif isinstance(layer, keras.Model):
            report.skipped[node.name] = (
                "nested model (kept float; flatten it to quantize its layers)")
    order = [n.name for n in graph.nodes if n.name in plans]
    if order:
        plans[order[0]].first = True
        plans[order[-1]].last = True
    nonneg = _nonneg_map(graph, plans, absorbed)
    return _Analysis(graph, plans, absorbed, nonneg, report)


def _nonneg_map(graph, plans, absorbed) -> dict:
    nonneg = {i: False for i in graph.input_ids}
    for node in graph.nodes:
        if node.name in absorbed:
            continue
        layer = node.layer
        if node.name in plans:
            p = plans[node.name]
            value = (p.activation in ("relu", "relu6")
                     and p.post_activation is None)
            nonneg[id(p.tail)] = value
            continue
        if _relu_kind(layer) is not None or _cls(layer) == "QuantReLU":
            value = True
        elif _cls(layer) in _NONNEG_PRESERVING:
            value = all(nonneg.get(id(t), False) for t in node.input_list())
        elif _is_keras_class(layer, "Activation") and _act_name(
                layer.activation) in ("sigmoid", "softmax", "hard_sigmoid"):
            value = True
        else:
            value = False
        for t in node.output_list():
            nonneg[id(t)] = value
    return nonneg


def resolve_bits(bits, names: list, first: str | None, last: str | None,
                 first_last_bits: int | None) -> dict:
    """Per-layer ``(w_bits, a_bits)`` from quantize_model's ``bits`` argument.

    Example:
        >>> resolve_bits(4, ["a", "b", "c"], "a", "c", 8)
        {'a': (8, 8), 'b': (4, 4), 'c': (8, 8)}
    """
    out = {}
    fl = None
    if first_last_bits is not None:
        fl = qz.check_bits(first_last_bits, "first_last_bits")
    if isinstance(bits, dict):
        unknown = sorted(set(bits) - set(names))
        if unknown:
            raise ValueError(
                "bits names layers that are not quantizable in this model: "
                f"{unknown}. Quantizable layers: {names}")
        for name in names:
            if name in bits:
                pair = bits[name]
                if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                    raise ValueError(
                        f"bits[{name!r}] must be a (w_bits, a_bits) pair. "
                        f"Received: {pair!r}")
                out[name] = (qz.check_bits(pair[0], f"bits[{name!r}] w_bits"),
                             qz.check_bits(pair[1], f"bits[{name!r}] a_bits"))
            else:
                out[name] = (fl or 8, fl or 8)
        return out
    if isinstance(bits, (tuple, list)):
        if len(bits) != 2:
            raise ValueError(
                f"bits must be an int, a (w_bits, a_bits) pair or a dict. "
                f"Received: bits={bits!r}")
        pair = (qz.check_bits(bits[0], "w_bits"),
                qz.check_bits(bits[1], "a_bits"))
    else:
        b = qz.check_bits(bits, "bits")
        pair = (b, b)
    for name in names:
        out[name] = pair
        if fl is not None and name in (first, last):
            out[name] = (fl, fl)
    return out


def quantizable_layers(model) -> list:
    """Names of the layers ``quantize_model`` would quantize, in order.

    Example:
        >>> quantizable_layers(tfcomp.zoo.resnet(depth=8))[:2]
        ['stem_conv', 's1b1_conv1']
    """
    analysis = _analyse(model, True, (), "quantizable_layers")
    return [n.name for n in analysis.graph.nodes if n.name in analysis.plans]


def _unique_name(base: str, used: set) -> str:
    name, i = base, 1
    while name in used:
        name = f"{base}_{i}"
        i += 1
    used.add(name)
    return name


def _base_config(layer, plan) -> dict:
    cfg = layer.get_config()
    for k in ("lora_rank", "lora_alpha", "quantization_config"):
        cfg.pop(k, None)
    cfg["activation"] = plan.activation
    if plan.bias is not None:
        cfg["use_bias"] = True
    return cfg


def _rebuild(analysis: _Analysis, make_layer, observers: bool = True,
             observer_quantizer=None):
    """Builds the new model. ``make_layer(plan, cfg, signed)`` returns the
    replacement layer for each plan (unbuilt)."""
    from tfcomp.layers import QuantActivation  # lazy: layers import us

    graph, plans = analysis.graph, analysis.plans
    report = analysis.report
    used = {n.name for n in graph.nodes} | {
        layer.name for layer in graph.model.layers}
    inputs = new_inputs(graph.model)
    tmap = {i: t for i, t in zip(graph.input_ids, inputs)}
    plan_nodes = {p.node.name: p for p in plans.values()}
    obs_template = qz.get(observer_quantizer or "signed")

    def is_quant_consumer(node) -> bool:
        p = plan_nodes.get(node.name)
        return p is not None and node.name in report.quantized and \
            report.quantized[node.name][1] != qz.FLOAT_BITS

    def needs_observer(tensor, producer) -> bool:
        if not observers:
            return False
        if producer is not None and (_is_quant_layer(producer.layer)
                                     and _cls(producer.layer) in (
                                         "QuantActivation", "QuantReLU")):
            return False
        cons = graph.consumers_of(tensor)
        if graph.is_output(tensor):
            if isinstance(producer, _FakeProducer):
                return producer.post_activation not in _FIXED_RANGE_ACTS
            return not (producer is not None and _fixed_range(producer.layer))
        if len(cons) != 1:
            return len(cons) > 1
        c = cons[0]
        if is_quant_consumer(c):
            return False
        if _cls(c.layer) in _TRANSPARENT:
            return False
        if (_relu_kind(c.layer) is not None and producer is not None
                and _cls(producer.layer) in _RELU_FUSING_PRODUCERS):
            return False
        return True

    def observe(tensor_new, tensor_orig, base_name):
        signed = not analysis.nonneg.get(id(tensor_orig), False)
        q = qz.get(obs_template)
        q.signed = signed
        name = _unique_name(f"{base_name}_aq", used)
        report.observers.append(name)
        return QuantActivation(a_bits=8, quantizer=q, name=name)(tensor_new)

    for tid, t_orig, t_new in zip(graph.input_ids, keras.tree.flatten(
            graph.model.inputs), inputs):
        if needs_observer(t_orig, None):
            base = getattr(t_new, "name", None) or "input"
            tmap[tid] = observe(t_new, t_orig, str(base).split(":")[0])

    for node in graph.nodes:
        if node.name in analysis.absorbed:
            continue
        new_in = keras.tree.map_structure(lambda t: tmap[id(t)], node.inputs)
        if node.name in plans:
            plan = plans[node.name]
            signed = not analysis.nonneg.get(id(node.input_list()[0]), False)
            layer = make_layer(plan, _base_config(node.layer, plan), signed)
            y = layer(new_in)
            layer.kernel.assign(plan.kernel)
            if plan.bias is not None:
                layer.bias.assign(plan.bias)
            layer.refresh_weight_quantizer()
            if plan.post_activation is not None:
                y = observe(y, None, node.name) if observers else y
                y = keras.layers.Activation(
                    plan.post_activation,
                    name=_unique_name(f"{node.name}_activation", used))(y)
            tail = plan.tail
            if needs_observer(tail, _FakeProducer(plan)):
                y = observe(y, tail, node.name)
            tmap[id(tail)] = y
            continue
        layer = clone_layer(node.layer)
        y = layer(new_in)
        layer.set_weights(node.layer.get_weights())
        outs_orig = node.output_list()
        outs_new = keras.tree.flatten(y)
        for to, tn in zip(outs_orig, outs_new):
            if needs_observer(to, node):
                tn = observe(tn, to, node.name)
            tmap[id(to)] = tn
    outputs = keras.tree.map_structure(lambda t: tmap[id(t)],
                                       graph.model.outputs)
    if isinstance(graph.model.outputs, list) and len(outputs) == 1:
        outputs = outputs[0]
    if isinstance(graph.model.inputs, list) and len(inputs) == 1:
        inputs = inputs[0]
    return keras.Model(inputs, outputs, name=graph.model.name)


class _FakeProducer:
    """Stands for a quantized layer when asking ``needs_observer``."""

    def __init__(self, plan):
        self.layer = plan.node.layer
        self.name = plan.node.name
        post = plan.post_activation
        self.post_activation = post if isinstance(post, str) else None


def quantize_model(model: keras.Model, bits=8, fold_batchnorm: bool = True,
                   skip=(), *, first_last_bits: int | None = 8,
                   weight_quantizer="symmetric", input_quantizer=None,
                   observers: bool = True) -> keras.Model:
    """Clones a float model into its quantization-aware (QAT) form.

    Args:
        model: a built functional or Sequential model (not modified).
        bits: ``b`` (w = a = b), a ``(w_bits, a_bits)`` pair, or
            ``{layer_name: (w_bits, a_bits)}`` (layers not listed get 8/8).
            Bits are integers in [1, 8], or 32 to keep a layer float.
        fold_batchnorm: fold BatchNormalization into the preceding conv /
            dense (static fold with the moving statistics).
        skip: names of conv / dense layers to leave float.
        first_last_bits: bits of the first and last quantized layers when
            ``bits`` is uniform (HAQ keeps them at 8); None to disable.
        weight_quantizer: weight quantizer alias / dict / instance for all
            layers ("symmetric": max clip at b >= 5, KL clip at b <= 4;
            "kmeans": weight sharing).
        input_quantizer: activation quantizer template (default EMA
            ranges); its ``signed`` flag is set per layer from whether the
            input can be negative.
        observers: insert 8-bit ``QuantActivation`` layers where int8 export
            needs a range (see the module doc).

    Returns:
        A new ``keras.Model`` with tfcomp quantized layers; its
        ``quantization_report`` attribute is a ``QuantizationReport``.

    Raises:
        ValueError: bits outside [1, 8] / 32, unknown layer names, or a model
            that was never built.

    Reference: Wang et al., HAQ, arXiv:1811.08886.

    Example:
        >>> qat = quantize_model(tfcomp.zoo.resnet(depth=20), bits=4)
        >>> qat.compile("adam", "sparse_categorical_crossentropy")
    """
    from tfcomp import layers as ql  # lazy: tfcomp.layers imports us

    analysis = _analyse(model, fold_batchnorm, skip, "quantize_model")
    names = [n.name for n in analysis.graph.nodes if n.name in analysis.plans]
    first = names[0] if names else None
    last = names[-1] if names else None
    per_layer = resolve_bits(bits, names, first, last, first_last_bits)
    wq = qz.get(weight_quantizer or "symmetric")
    if not isinstance(wq, qz.WeightQuantizer):
        raise TypeError(
            f"weight_quantizer must be a weight quantizer. Received: {wq!r}")
    iq_template = qz.get(input_quantizer or "unsigned")
    if not isinstance(iq_template, qz.ActivationQuantizer):
        raise TypeError(
            "input_quantizer must be an ActivationQuantizer. Received: "
            f"{iq_template!r}")
    classes = {"Conv2D": ql.QuantConv2D,
               "DepthwiseConv2D": ql.QuantDepthwiseConv2D,
               "Dense": ql.QuantDense}
    report = analysis.report
    for name in names:
        report.quantized[name] = per_layer[name]

    def make_layer(plan, cfg, signed):
        w, a = per_layer[plan.node.name]
        iq = iq_template.copy()
        iq.signed = signed
        cfg.update(w_bits=w, a_bits=a, weight_quantizer=qz.serialize(wq),
                   input_quantizer=qz.serialize(iq))
        return classes[_cls(plan.node.layer)].from_config(cfg)

    obs = iq_template.copy()
    new = _rebuild(analysis, make_layer, observers, observer_quantizer=obs)
    new.quantization_report = report
    link_shared_inputs(new)
    return new


_WEIGHT_LAYERS = ("QuantConv2D", "QuantDepthwiseConv2D", "QuantDense")


def link_shared_inputs(model) -> list:
    """Links input quantizers to the observer that already quantizes their
    input at the same bit-width (see ``ActivationQuantizer.share_range``).

    A tensor with several consumers (a residual block's input) gets an
    8-bit ``QuantActivation``; an 8-bit conv reading it would otherwise
    round it a second time onto its own, slightly different grid, while the
    int8 TFLite tensor has one grid. Idempotent; ``quantize_model``,
    ``calibrate`` and int8 export call it.

    Args:
        model: a QAT model.

    Returns:
        Names of the linked layers.

    Example:
        >>> link_shared_inputs(keras.saving.load_model("qat.keras"))
    """
    linked = []
    for layer, obs in input_observers(model):
        iq, oq = layer.input_quantizer, obs.quantizer
        if (oq.bits == iq.bits and oq.signed == iq.signed
                and oq.range_mode == iq.range_mode):
            iq.share_range(oq)
            linked.append(layer.name)
    return linked


def input_observers(model) -> list:
    """``[(layer, observer)]``: quantized weight layers whose input is the
    output of a ``QuantActivation`` observer."""
    observers = {}
    for layer in model.layers:
        if _cls(layer) == "QuantActivation":
            try:
                observers[id(layer.output)] = layer
            except (AttributeError, ValueError):
                continue
    out = []
    for layer in model.layers:
        iq = getattr(layer, "input_quantizer", None)
        if _cls(layer) not in _WEIGHT_LAYERS or iq is None:
            continue
        try:
            obs = observers.get(id(layer.input))
        except (AttributeError, ValueError):
            continue
        if obs is not None:
            out.append((layer, obs))
    return out


def strip(model: keras.Model) -> keras.Model:
    """A plain Keras model with the QAT model's quantized weights baked in.

    Quantized layers become their Keras counterparts whose kernels hold the
    dequantized b-bit weights (``codes * scale``) and the bias as the QAT
    forward pass adds it (on the accumulator grid); activation quantizers are
    dropped (``QuantReLU`` becomes ``ReLU``), so activations run in float.
    For integer deployment use ``tfcomp.export.export_tflite(qat_model,
    path, quantization="int8")``, which reads the QAT ranges directly.

    Args:
        model: a QAT model from ``quantize_model``.

    Returns:
        A new ``keras.Model`` with only Keras layers.

    Example:
        >>> plain = strip(qat_model)
    """
    from tfcomp.quantization.export_support import is_qat_model

    graph = read_graph(model, "strip")
    if not is_qat_model(model):
        raise ValueError(
            f"strip expects a quantization-aware model (from quantize_model)."
            f" Model {model.name!r} has no tfcomp quantized layers.")
    inputs = new_inputs(model)
    tmap = {i: t for i, t in zip(graph.input_ids, inputs)}
    bases = {"QuantConv2D": keras.layers.Conv2D,
             "QuantDepthwiseConv2D": keras.layers.DepthwiseConv2D,
             "QuantDense": keras.layers.Dense}
    for node in graph.nodes:
        layer = node.layer
        cls = _cls(layer)
        new_in = keras.tree.map_structure(lambda t: tmap[id(t)], node.inputs)
        if cls.startswith("Mixed"):
            raise ValueError(
                f"Layer {layer.name!r} is a DNAS supernet layer: derive bits "
                "with tfcomp.quantization.dnas.derive() and quantize_model "
                "them first.")
        if cls in bases:
            cfg = layer.get_config()
            for k in ("w_bits", "a_bits", "weight_quantizer",
                      "input_quantizer", "lora_rank", "lora_alpha",
                      "quantization_config"):
                cfg.pop(k, None)
            new = bases[cls].from_config(cfg)
            y = new(new_in)
            new.kernel.assign(layer.quantized_kernel())
            if layer.use_bias:
                new.bias.assign(layer.quantized_bias())
        elif cls == "QuantActivation":
            y = new_in
        elif cls == "QuantReLU":
            y = keras.layers.ReLU(max_value=layer.max_value,
                                  negative_slope=layer.negative_slope,
                                  threshold=layer.threshold,
                                  name=layer.name)(new_in)
        else:
            new = clone_layer(layer)
            y = new(new_in)
            new.set_weights(layer.get_weights())
        for to, tn in zip(node.output_list(), keras.tree.flatten(y)):
            tmap[id(to)] = tn
    outputs = keras.tree.map_structure(lambda t: tmap[id(t)], model.outputs)
    if len(outputs) == 1:
        outputs = outputs[0]
    return keras.Model(inputs[0] if len(inputs) == 1 else inputs, outputs,
                       name=f"{model.name}_stripped")
