"""``quantize_model``: clone a float model into its quantization-aware form.

Steps (each listed in :func:`~tfcomp.quantization.quantization_report`):

0. The user's own layer classes holding Keras layers (a residual block, a
   Transformer block) are opened into the layers their ``call`` uses
   (``tfcomp.graph.open_layers``; names ``<layer>_<attribute>``), so the
   steps below reach inside them; a class that cannot be opened
   faithfully stays one float layer, with the reason.
1. Conv1D / Conv2D (grouped too) / Conv3D / DepthwiseConv1D / 2D / Dense /
   Conv1D / 2D / 3DTranspose / EinsumDense (dense-like equations) /
   Embedding layers become their ``Quant*`` counterparts with the requested
   bits; a SeparableConv2D (SeparableConv1D) becomes a QuantDepthwiseConv2D
   (QuantDepthwiseConv1D, ``<name>_depthwise``) followed by a 1x1
   QuantConv2D (QuantConv1D, ``<name>``), both with its bits. A
   ``TimeDistributed(inner)`` with a static time axis becomes reshape ->
   ``inner``'s replacement (named like the wrapper) -> reshape, the steps
   folded into the batch (``_time_fold``), and is planned like ``inner``.
   Layers
   with weights that stay float (MultiHeadAttention, other EinsumDense
   equations, subclasses of these layers...) are listed in
   ``quantization_report(new).skipped`` and named in one warning: a
   full-integer int8 export refuses them.
2. A BatchNormalization that is the only consumer of a linear conv / dense is
   folded into it (``W' = W * g / sqrt(v + e)``, ``b' = (b - m) g /
   sqrt(v + e) + beta``), so training quantizes the weights inference uses.
3. A ReLU / ReLU6 that is the only consumer of such a layer is fused into it
   (``activation="relu"``); other activations (softmax, ...) are split off
   into their own layer.
4. Every tensor that is not the input of exactly one quantized layer (tensors
   with several consumers, residual sums, model outputs) gets an 8-bit
   ``QuantActivation``, so an int8 TFLite file takes every range from the
   QAT model. They round where TFLite's int8 kernels do: a sigmoid /
   softmax / tanh output gets a constant grid (1/256; tanh 1/128), a swish
   becomes sigmoid, that observer and a ``Multiply`` (the file's LOGISTIC
   and MUL), and the inputs of a Concatenate read by it alone share its
   grid (``link_shared_inputs``).
5. Input quantizers are unsigned ``[0, c]`` where the input is provably
   non-negative (after a ReLU) and affine ``[lo, hi]`` otherwise.

The first and last quantized layers keep 8-bit weights and activations by
default (HAQ's convention). Models are read by ``tfcomp.graph``'s one model
reader: nested functional / Sequential models are flattened (their layers
are named ``outer_inner``) and a shared layer (called several times) stays
one shared quantized layer (its BatchNorm / ReLU are not folded / fused).
``Lambda`` layers are copied with the user's in-memory function (Keras'
``safe_mode`` stays on; nothing is deserialized from bytecode), and a
compiled model gives a model compiled the same way.

Reference: Wang et al., HAQ, arXiv:1811.08886; Jacob et al.,
arXiv:1712.05877 (BN folding, EMA ranges).

Example:
    >>> qat = quantize_model(tfcomp.zoo.resnet(depth=20), bits=4)
"""

from __future__ import annotations

import warnings

import keras

from tfcomp._compile import carry_compile
from tfcomp.layers import (
    QUANT_ACTIVATION_LAYERS,
    QUANT_WEIGHT_LAYERS,
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
)
from tfcomp.layers import quantizers as qz
from tfcomp.quantization._analysis import (
    QUANT_KINDS,
    analyse,
    float_kernel_warning,
    fold_batchnorm_weights,
    interpolates,
    keeps_scale,
    keras_classes,
)
from tfcomp.quantization._graph import read_graph
from tfcomp.quantization._rebuild import rebuild
from tfcomp.quantization.bits import per_layer_bits
from tfcomp.quantization.report import QuantizationReport, attach_record
from tfcomp.quantization.stripping import strip_quantization

__all__ = ["quantize_model", "QuantizationReport", "fold_batchnorm_weights",
           "strip_quantization", "per_layer_bits", "quantizable_layers",
           "link_shared_inputs", "input_observers", "strip", "resolve_bits"]

_QUANT_CLASSES = {"Conv1D": QuantConv1D, "Conv2D": QuantConv2D,
                  "Conv3D": QuantConv3D,
                  "DepthwiseConv1D": QuantDepthwiseConv1D,
                  "DepthwiseConv2D": QuantDepthwiseConv2D,
                  "Dense": QuantDense,
                  "Conv1DTranspose": QuantConv1DTranspose,
                  "Conv2DTranspose": QuantConv2DTranspose,
                  "Conv3DTranspose": QuantConv3DTranspose,
                  "EinsumDense": QuantEinsumDense,
                  "Embedding": QuantEmbedding}


def quantizable_layers(model) -> list:
    """Names of the layers ``quantize_model`` would quantize, in order
    (``outer_inner`` for layers of nested models).

    Example:
        >>> quantizable_layers(tfcomp.zoo.resnet(depth=8))[:2]
        ['stem_conv', 's1b1_conv1']
    """
    return analyse(model, True, (), "quantizable_layers",
                   QUANT_KINDS, fold_time=True).quantized_names()


def quantize_model(model: keras.Model, bits=8, fold_batchnorm: bool = True,
                   skip=(), *, first_last_bits: int | None = 8,
                   weight_quantizer="symmetric", input_quantizer=None,
                   observers: bool = True) -> keras.Model:
    """Clones a float model into its quantization-aware (QAT) form.

    Args:
        model: a built functional or Sequential model (not modified); nested
            models are flattened, shared layers stay shared.
        bits: ``b`` (w = a = b), a ``(w_bits, a_bits)`` pair, or
            ``{layer_name: (w_bits, a_bits)}`` (layers not listed get 8/8;
            layers of nested models as ``outer_inner`` or ``outer/inner``).
            Bits are integers in [1, 8], or 32 to keep a layer float.
        fold_batchnorm: fold BatchNormalization into the preceding conv /
            dense (static fold with the moving statistics; Jacob et al.
            fold with batch statistics while training, then freeze: this
            is their frozen phase from the start). The QAT model then
            trains without normalisation: keep fine-tune rates low (a
            pruned ResNet-20 at 4-6 bits diverged under SGD 3e-3 with
            momentum 0.9, where its float model trains at 1e-2; 1e-3 with
            a cosine decay was stable, issue #20).
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
        A new ``keras.Model`` with tfcomp quantized layers, compiled like
        ``model`` when ``model`` is compiled (optimizer, loss, metrics and
        the optimizer's iterations carried over; see
        ``tfcomp._compile.carry_compile``);
        ``tfcomp.quantization.quantization_report(new)`` says what was done
        (the ``new.quantization_report`` attribute is deprecated).

    Raises:
        ValueError: bits outside [1, 8] / 32, unknown layer names, a model
            that was never built, or a model that is already quantized
            (holds tfcomp quantization or DNAS layers: quantize the float
            model, or ``strip_quantization`` it first).

    Reference: Wang et al., HAQ, arXiv:1811.08886.

    Example:
        >>> qat = quantize_model(tfcomp.zoo.resnet(depth=20), bits=4)
        >>> qat.compile("adam", "sparse_categorical_crossentropy")
    """
    analysis = analyse(model, fold_batchnorm, skip, "quantize_model",
                       QUANT_KINDS, fold_time=True)
    names = analysis.quantized_names()
    first = names[0] if names else None
    last = names[-1] if names else None
    per_layer = per_layer_bits(bits, names, first, last, first_last_bits,
                               aliases=analysis.path_aliases())
    wq = qz.get(weight_quantizer or "symmetric")
    if not isinstance(wq, qz.WeightQuantizer):
        raise TypeError(
            f"weight_quantizer must be a weight quantizer. Received: {wq!r}")
    iq_template = qz.get(input_quantizer or "unsigned")
    if not isinstance(iq_template, qz.ActivationQuantizer):
        raise TypeError(
            "input_quantizer must be an ActivationQuantizer. Received: "
            f"{iq_template!r}")
    report = analysis.report
    for name in names:
        report.quantized[name] = per_layer[name]
    if per_layer and all(v == (qz.FLOAT_BITS,) * 2
                         for v in per_layer.values()):
        for plan in analysis.plans.values():  # all float: BNs stay float
            if plan.fixed_bits is not None:
                plan.fixed_bits = report.quantized[plan.name] = (
                    qz.FLOAT_BITS, qz.FLOAT_BITS)

    def make_layer(plan, cfg, signed):
        w, a = plan.fixed_bits or per_layer[plan.policy_name]
        iq = iq_template.copy()
        iq.signed = signed
        cfg.update(w_bits=w, a_bits=a, weight_quantizer=qz.serialize(wq),
                   input_quantizer=qz.serialize(iq))
        return _QUANT_CLASSES[plan.kind].from_config(cfg)

    obs = iq_template.copy()
    new = rebuild(analysis, make_layer, observers, observer_quantizer=obs)
    attach_record(new, report)
    link_shared_inputs(new)
    message = float_kernel_warning(report, "quantize_model")
    if message:
        warnings.warn(message, stacklevel=2)
    return carry_compile(model, new, what="the quantization-aware model")


def link_shared_inputs(model) -> list:
    """Links input quantizers to the observer that already quantizes their
    input at the same bit-width (see ``ActivationQuantizer.share_range``).

    A tensor with several consumers (a residual block's input) gets an
    8-bit ``QuantActivation``; an 8-bit conv reading it would otherwise
    round it a second time onto its own, slightly different grid, while the
    int8 TFLite tensor has one grid. The observer after an average pooling
    takes the pool's input grid and an observer read only by a Concatenate
    the concatenation's (both as the converter does; see
    ``_link_pool_observers`` / ``_link_concat_observers``); links follow
    to the end of a chain (a constant sigmoid grid included). Idempotent;
    ``quantize_model``, ``calibrate`` and int8 export call it.

    Args:
        model: a QAT model.

    Returns:
        Names of the linked layers.

    Example:
        >>> link_shared_inputs(keras.saving.load_model("qat.keras"))
    """
    pools = _link_pool_observers(model)
    concats = _link_concat_observers(model, skip=set(pools))
    linked = []
    for layer, obs in input_observers(model):
        iq, oq = layer.input_quantizer, _range_root(obs.quantizer)
        if (oq.bits == iq.bits and oq.signed == iq.signed
                and oq.range_mode == iq.range_mode and oq is not iq):
            iq.share_range(oq)
            linked.append(layer.name)
    return linked + pools + concats


def _range_root(q):
    """The quantizer (or constant grid) whose range ``q`` computes with:
    ``share_range`` links followed to their end."""
    seen = set()
    while getattr(q, "_source", None) is not None and id(q) not in seen:
        seen.add(id(q))
        q = q._source
    return q


def _same_kind(a, b) -> bool:
    return (a.bits == b.bits and a.signed == b.signed
            and a.range_mode == b.range_mode)


def _link_pool_observers(model) -> list:
    """Gives the observer after an average pooling or a bilinear resize
    (``interpolates``) its input's grid.

    TFLite's int8 AVERAGE_POOL_2D and RESIZE_BILINEAR keep their input's
    scale and zero point (the converter refuses other ranges: "quantization
    parameters violate the same scale constraint"; DenseNet's transition
    pools): they round the weighted mean of the codes onto the input grid.
    The ``QuantActivation`` after the pool then shares the range of the
    activation quantizer before it (through padding / reshape...), so the
    QAT model rounds the same way. Returns the linked observers' names.
    """
    graph = read_graph(model, "link_shared_inputs")
    linked = []
    for _, layer, nodes in graph.layers():
        if not isinstance(layer, QuantActivation) or len(nodes) != 1:
            continue
        pool = graph.producer(nodes[0].inputs[0])
        if pool is None or not interpolates(pool.layer):
            continue
        src = graph.producer(pool.inputs[0])
        while src is not None and keeps_scale(src.layer) \
                and src.inputs:
            src = graph.producer(src.inputs[0])
        if src is None or not isinstance(src.layer, QUANT_ACTIVATION_LAYERS):
            continue
        oq, sq = layer.quantizer, _range_root(src.layer.quantizer)
        if _same_kind(oq, sq) and sq is not oq \
                and getattr(layer, "fixed_range", None) is None:
            oq.share_range(sq)
            linked.append(layer.name)
    return linked


def _concat_target(graph, node, calls):
    """The quantizer that rounds a Concatenate's output: its observer, or
    the input quantizer of the one quantized layer reading it (through
    reshape / padding...); None otherwise."""
    tid = node.outputs[0]
    while True:
        cons = graph.consumers(tid)
        if len(cons) != 1 or graph.is_output(tid):
            return None
        c = cons[0]
        if isinstance(c.layer, QuantActivation):
            return c.layer.quantizer
        if isinstance(c.layer, QUANT_WEIGHT_LAYERS):
            iq = getattr(c.layer, "input_quantizer", None)
            return iq if calls[id(c.layer)] == 1 else None
        if not (keeps_scale(c.layer) and c.outputs):
            return None
        tid = c.outputs[0]


def _link_concat_observers(model, skip=()) -> list:
    """Gives the observers whose only consumer is a Concatenate the grid
    of the concatenation's output.

    The TFLite converter gives an int8 CONCATENATION one scale and zero
    point for its inputs and output, the output's (the quantizer after the
    concatenation, or the input quantizer of the layer reading it): a
    conv whose output only the concatenation reads writes its codes
    straight onto that grid (its own ``FakeQuant`` range is dropped), and
    an input with other readers is requantized (QUANTIZE). Sharing the
    grid makes the QAT model round each such input once onto the
    concatenation's grid, as the file does (DenseNet's dense blocks).
    Fixed-grid (sigmoid...) and pool-linked observers (``skip``) keep
    theirs. Returns the linked observers' names.
    """
    graph = read_graph(model, "link_shared_inputs")
    concat = keras_classes(("Concatenate",))
    calls = {id(layer): len(nodes) for _, layer, nodes in graph.layers()}
    linked = []
    for node in reversed(graph.nodes):  # an outer concatenation first
        if not isinstance(node.layer, concat):
            continue
        target = _concat_target(graph, node, calls)
        if target is None:
            continue
        root = _range_root(target)
        for tid in node.inputs:
            prod = graph.producer(tid)
            if prod is None or len(graph.consumers(tid)) != 1:
                continue
            obs = prod.layer
            if (not isinstance(obs, QuantActivation) or obs.name in skip
                    or getattr(obs, "fixed_range", None) is not None):
                continue
            q = obs.quantizer
            if calls[id(obs)] == 1 and q is not root and _same_kind(q, root):
                q.share_range(root)
                linked.append(obs.name)
    return linked


def input_observers(model) -> list:
    """``[(layer, observer)]``: quantized weight layers whose input (every
    call's, for a shared layer) is the output of one ``QuantActivation``,
    directly or through ops that keep its grid (max pooling, padding,
    reshape, dropout...).

    Example:
        >>> [(l.name, o.name) for l, o in input_observers(qat)][:1]
        [('s1b1_conv1', 'stem_conv_aq')]
    """
    graph = read_graph(model, "link_shared_inputs")

    def producer(tid):  # through max pooling, padding, reshape...
        p = graph.producer(tid)
        while p is not None and keeps_scale(p.layer) \
                and p.inputs:
            p = graph.producer(p.inputs[0])
        return p

    out = []
    for _, layer, nodes in graph.layers():
        if not isinstance(layer, QUANT_WEIGHT_LAYERS) or getattr(
                layer, "input_quantizer", None) is None:
            continue
        producers = [producer(n.inputs[0]) if n.inputs else None
                     for n in nodes]
        obs = {id(p.layer): p.layer for p in producers if p is not None}
        if (None not in producers and len(obs) == 1
                and isinstance(next(iter(obs.values())), QuantActivation)):
            out.append((layer, next(iter(obs.values()))))
    return out


def strip(model: keras.Model) -> keras.Model:
    """Deprecated alias of :func:`strip_quantization`.

    Example:
        >>> plain = strip_quantization(qat_model)
    """
    warnings.warn(
        "tfcomp.quantization.strip is deprecated; use strip_quantization "
        "(tfcomp.pruning's strip_pruning is the pruning counterpart).",
        DeprecationWarning, stacklevel=2)
    return strip_quantization(model)


def resolve_bits(bits, names: list, first: str | None, last: str | None,
                 first_last_bits: int | None) -> dict:
    """Deprecated alias of :func:`~tfcomp.quantization.bits.per_layer_bits`.

    Example:
        >>> per_layer_bits(4, ["a", "b", "c"], "a", "c", 8)
        {'a': (8, 8), 'b': (4, 4), 'c': (8, 8)}
    """
    warnings.warn(
        "tfcomp.quantization.quantize.resolve_bits is deprecated; use "
        "tfcomp.quantization.per_layer_bits.", DeprecationWarning,
        stacklevel=2)
    return per_layer_bits(bits, names, first, last, first_last_bits)
