"""Builds the quantization-aware model an :class:`~._analysis.Analysis`
plans: replacement layers for the planned ones, clones of the others, and
8-bit ``QuantActivation`` observers where int8 export needs a range.

The observers round where TFLite's int8 kernels do: a sigmoid / softmax /
tanh output (not a model output) gets a constant-range observer on the
kernel's fixed grid (LOGISTIC: 1/256), the observer after an average
pooling rounds ties as AVERAGE_POOL_2D does, a swish can become sigmoid,
that observer and a ``Multiply`` (TFLite's LOGISTIC + MUL; see
``SWISH_AS_LOGISTIC_MUL``), and an observer
whose only consumer is a ``Concatenate`` takes the concatenation's
signedness (``link_shared_inputs`` then gives it the concatenation's grid,
as the converter does).

An Average, a hard_sigmoid, a selu and an elu (layer or split-off
activation; ``keras.layers.ELU`` too) become ``QuantAverage`` /
``QuantHardSigmoid`` / ``QuantSELU`` / ``QuantELU`` (8-bit
quantizers on the tensors of their multi-op TFLite form) when observers
are on.

A LayerNormalization / GroupNormalization becomes a
``QuantLayerNormalization`` / ``QuantGroupNormalization`` (8-bit quantizers
on each tensor of TFLite's MEAN / SUB / MUL / RSQRT form) when observers
are on.

Shared layers stay shared (one replacement or clone, called once per
call); nested models come out flattened.

Example:
    >>> new = rebuild(analysis, make_layer, observers=True)
"""

from __future__ import annotations

import keras

from tfcomp.graph.copy import (
    live_config,
    model_like,
    refresh_state,
)
from tfcomp.graph.outputs import output_structure, pack_like_inputs
from tfcomp.layers import (
    KERAS_ATTENTION_OF,
    QUANT_NORM_OF,
    QUANT_STEP_LAYERS,
    QuantActivation,
    QuantAverage,
    QuantELU,
    QuantMultiHeadAttention,
    quant_activation_class,
)
from tfcomp.layers import quantizers as qz
from tfcomp.layers.quant_attention import (
    UnsupportedAttention,
    unsupported_attention,
)
from tfcomp.layers.quant_keras_attention import unsupported_keras_attention
from tfcomp.quantization._analysis import (
    AVERAGE_POOLS,
    FIXED_GRIDS,
    RELU_FUSING_PRODUCERS,
    SWISH_ACTS,
    TRANSPARENT,
    act_name,
    fixed_grid,
    fixed_range,
    interpolates,
    is_observer,
    keeps_scale,
    keras_classes,
    relu_kind,
)
from tfcomp.quantization._graph import clone_layer, new_inputs

__all__ = ["rebuild", "unique_name"]

#: Build swish / silu as sigmoid, a fixed 1/256 observer and a ``Multiply``
#: (what TFLite's int8 file computes: LOGISTIC + MUL), so the int8 file of a
#: swish model matches its QAT model op by op (EfficientNetB0: 0 of 239 ops
#: off). The bit-serial exporter maps the decomposed form to one table over
#: x's codes (``export.bitserial.keras_patterns``). Off: one swish
#: ``Activation`` (the QAT model then rounds differently from the file).
SWISH_AS_LOGISTIC_MUL = True

def unique_name(base: str, used: set) -> str:
    """``base``, or ``base_1``, ``base_2``... (the first one not in
    ``used``), added to ``used``."""
    name, i = base, 1
    while name in used:
        name = f"{base}_{i}"
        i += 1
    used.add(name)
    return name


class _FakeProducer:
    """Stands for a quantized layer when asking ``needs_observer``."""

    def __init__(self, plan):
        self.layer = plan.layer
        self.name = plan.name
        post = plan.post_activation
        self.post_activation = post if isinstance(post, str) else None
        self.grid = FIXED_GRIDS.get(self.post_activation)


class _Builder:
    def __init__(self, analysis, make_layer, observers, observer_quantizer):
        self.a = analysis
        self.graph = analysis.graph
        self.make_layer = make_layer
        self.observers = observers
        self.obs_template = qz.get(observer_quantizer or "signed")
        self.used = {n.name for n in self.graph.nodes} | set(
            self.graph.parsed.layers)
        self.tmap = {}
        self.policy = None  # the dtype policy of the node being rebuilt
        self.layers = {}  # layer name -> replacement / clone
        self.on_grid = set()  # tensor ids holding quantized values
        self.observed = set()  # tensor ids that are an observer's output

    # -- observers ------------------------------------------------------------
    def is_quant_consumer(self, node) -> bool:
        plan = self.a.plan_of(node)
        quantized = self.a.report.quantized
        return plan is not None and plan.name in quantized and \
            quantized[plan.name][1] != qz.FLOAT_BITS

    def is_float(self, tid) -> bool:
        """Whether tensor ``tid`` holds floats (integer ids and boolean
        masks, e.g. an Embedding(mask_zero=True)'s, get no observer)."""
        try:
            dtype = self.graph.keras_tensor(tid).dtype
        except ValueError:
            return True
        return "float" in keras.backend.standardize_dtype(dtype)

    def needs_observer(self, tid, producer) -> bool:
        graph = self.graph
        if not self.observers or not self.is_float(tid):
            return False
        if producer is not None and is_observer(producer.layer):
            return False
        cons = graph.consumers(tid)
        if self.grid_of(producer) is not None and not graph.is_output(tid):
            return True  # the kernel's fixed grid, even before a conv
        if graph.is_output(tid):
            if isinstance(producer, _FakeProducer):  # hard_sigmoid: MUL
                return producer.post_activation not in FIXED_GRIDS
            return not (producer is not None and fixed_range(producer.layer))
        if len(cons) != 1:
            return len(cons) > 1
        c = cons[0]
        if producer is not None and interpolates(producer.layer):
            return True  # TFLite rounds it onto its input's grid
        if self.is_quant_consumer(c):
            return False
        if isinstance(c.layer, keras_classes(TRANSPARENT)):
            return False
        if (relu_kind(c.layer) is not None and producer is not None
                and isinstance(producer.layer,
                               keras_classes(RELU_FUSING_PRODUCERS))):
            return False
        return True

    @staticmethod
    def grid_of(producer):
        """The fixed output grid of a sigmoid / softmax / tanh producer."""
        if producer is None:
            return None
        if isinstance(producer, _FakeProducer):
            return producer.grid
        return fixed_grid(producer.layer)

    def signed(self, tid) -> bool:
        """Whether an observer of ``tid`` is signed: the tensor may be
        negative, or its only consumer is a Concatenate whose output may
        be (one grid for the concatenation, see ``link_shared_inputs``)."""
        if tid is None:
            return True
        graph = self.graph
        cons = graph.consumers(tid)
        if (len(cons) == 1 and not graph.is_output(tid) and isinstance(
                cons[0].layer, keras_classes(("Concatenate",)))):
            return not self.a.nonneg.get(cons[0].outputs[0], False)
        return not self.a.nonneg.get(tid, False)

    def observe(self, tensor_new, tid, base_name, grid=None,
                half_away=False, ties_up=False):
        self.on_grid.add(tid)
        self.observed.add(tid)
        q = qz.get(self.obs_template)
        q.signed = self.signed(tid) if grid is None else grid[0] < 0
        name = unique_name(f"{base_name}_aq", self.used)
        self.a.report.observers.append(name)
        return QuantActivation(a_bits=8, quantizer=q, fixed_range=grid,
                               round_half_away=half_away,
                               round_ties_up=ties_up, name=name,
                               dtype=self.policy)(tensor_new)

    def swish(self, x, name, base):
        """``x * sigmoid(x)`` as TFLite's int8 file computes it: the sigmoid
        rounded onto LOGISTIC's 1/256 grid, then multiplied (``name``: the
        ``Multiply``'s)."""
        s = keras.layers.Activation(
            "sigmoid", name=unique_name(f"{base}_sigmoid", self.used),
            dtype=self.policy)(x)
        s = self.observe(s, None, f"{base}_sigmoid",
                         grid=FIXED_GRIDS["sigmoid"])
        return keras.layers.Multiply(name=name, dtype=self.policy)([x, s])

    # -- calls ------------------------------------------------------------------
    def _made(self, plan, signed):
        """``(layer, first)``: the plan's replacement, made once."""
        layer = self.layers.get(plan.name)
        if layer is not None:
            return layer, False
        if plan.pre is not None:
            self.used.add(plan.pre.name)
        layer = self.make_layer(plan, plan.base_config(), signed)
        self.layers[plan.name] = layer
        return layer, True

    @staticmethod
    def _load(layer, plan):
        layer.kernel.assign(plan.kernel)
        if plan.bias is not None:
            layer.bias.assign(plan.bias)
        layer.refresh_weight_quantizer()

    def planned(self, node, plan):
        signed = not all(self.a.nonneg.get(n.inputs[0], False)
                         for n in plan.nodes)
        if plan.pre is not None:  # SeparableConv2D: depthwise, then 1x1
            pre, first = self._made(plan.pre, signed)
            y = node.call(pre, self.tmap)
            if first:
                self._load(pre, plan.pre)
            layer, first = self._made(plan, True)
            y = layer(y)
        elif plan.fixed_bits is not None:  # a BatchNorm as a 1x1 depthwise
            layer, first = self._made(plan, signed)
            y = layer(self.tmap[node.inputs[0]])
        else:
            layer, first = self._made(plan, signed)
            y = node.call(layer, self.tmap)
        if first:
            self._load(layer, plan)
        if plan.post_activation is not None:
            y = self.observe(y, None, node.name) if self.observers else y
            name = unique_name(f"{node.name}_activation", self.used)
            if (self.observers and SWISH_AS_LOGISTIC_MUL
                    and plan.post_activation in SWISH_ACTS):
                y = self.swish(y, name, name)
            else:
                y = self.activation(plan.post_activation, name)(y)
        tail, fake = plan.tails[node.key], _FakeProducer(plan)
        if self.needs_observer(tail, fake):
            y = self.observe(y, tail, node.name, grid=fake.grid)
        self.tmap[tail] = y

    def cloned(self, node):
        if (self.observers and SWISH_AS_LOGISTIC_MUL
                and type(node.layer) is keras.layers.Activation
                and act_name(node.layer.activation) in SWISH_ACTS
                and len(node.inputs) == 1 and node.inputs[0] in self.on_grid):
            self.cloned_swish(node)
            return
        layer = self.layers.get(node.name)
        first = layer is None
        if first:
            layer = (self.quant_norm(node) or self.quant_attention(node)
                     or self.quant_keras_attention(node)
                     or self.quant_elementwise(node)
                     or clone_layer(node.layer, node.name))
            self.layers[node.name] = layer
        tensors = self.tmap
        if self.observers and isinstance(node.layer, keras_classes(
                ("Concatenate",))):
            tensors = self.concat_inputs(node)
        try:
            y = node.call(layer, tensors)
        except UnsupportedAttention:  # return_attention_scores: float
            self.a.report.attention.remove(node.name)
            self.a.report.skipped[node.name] = (
                "MultiHeadAttention called with return_attention_scores="
                "True (the scores are not quantized; kept float)")
            layer = self.layers[node.name] = clone_layer(node.layer,
                                                         node.name)
            y = node.call(layer, tensors)
        if first and isinstance(layer, QUANT_STEP_LAYERS):
            layer.load_float_weights(node.layer)
        elif first and isinstance(layer, keras.layers.Layer):
            layer.set_weights(node.layer.get_weights())
            refresh_state(layer)
        keeps_grid = (self.observers and node.inputs
                      and keeps_scale(node.layer)
                      and all(t in self.on_grid for t in node.inputs))
        for to, tn in zip(node.outputs, keras.tree.flatten(y)):
            if keeps_grid:  # max pool, padding, reshape...: the input's grid
                self.on_grid.add(to)
            elif self.needs_observer(to, node):
                pool = isinstance(node.layer, keras_classes(AVERAGE_POOLS))
                tn = self.observe(  # pools / bilinear resizes: TFLite's ties
                    tn, to, node.name, grid=self.grid_of(node),
                    half_away=pool,
                    ties_up=not pool and interpolates(node.layer))
            self.tmap[to] = tn

    def quant_norm(self, node):
        """The quantized normalization of a LayerNormalization /
        GroupNormalization node (exact types; with observers on), or
        None."""
        cls = QUANT_NORM_OF.get(type(node.layer))
        if not self.observers or cls is None:
            return None
        cfg = dict(live_config(node.layer), name=node.name,
                   momentum=getattr(self.obs_template, "momentum", 0.99))
        self.a.report.normalizations.append(node.name)
        return cls.from_config(cfg)

    def activation(self, name, layer_name):
        """The split-off activation ``name`` of a quantized layer: a
        ``QuantHardSigmoid`` / ``QuantSELU`` / ``QuantELU`` (with observers
        on) where TFLite's int8 form is several ops, else a Keras
        Activation."""
        cls = quant_activation_class(name) if self.observers else None
        if cls is None:
            return keras.layers.Activation(name, name=layer_name,
                                           dtype=self.policy)
        return cls(name=layer_name, dtype=self.policy,
                   momentum=getattr(self.obs_template, "momentum", 0.99))

    def quant_elementwise(self, node):
        """The ``QuantAverage`` of an Average node, the ``QuantHardSigmoid``
        / ``QuantSELU`` / ``QuantELU`` of such an Activation node or an ELU
        layer (exact types, observers on), or None: their int8 TFLite form
        is several ops, each needing a range (see
        ``tfcomp.layers.quant_elementwise``)."""
        layer = node.layer
        if not self.observers:
            return None
        momentum = getattr(self.obs_template, "momentum", 0.99)
        if type(layer) is keras.layers.Average:
            return QuantAverage(name=node.name, momentum=momentum,
                                dtype=layer.dtype_policy)
        if type(layer) is keras.layers.Activation:
            cls = quant_activation_class(act_name(layer.activation))
            if cls is not None:
                return cls(name=node.name, momentum=momentum,
                           dtype=layer.dtype_policy)
        if type(layer) is keras.layers.ELU:
            return QuantELU(alpha=layer.alpha, name=node.name,
                            momentum=momentum, dtype=layer.dtype_policy)
        return None

    def quant_attention(self, node):
        """The ``QuantMultiHeadAttention`` of a MultiHeadAttention node
        (exact type, observers on, not in ``skip``, a configuration and
        call it computes), or None; the report moves it from ``skipped``
        to ``attention``."""
        if (not self.observers
                or type(node.layer) is not keras.layers.MultiHeadAttention
                or self.a.report.skipped.get(node.name, "").startswith(
                    "listed in skip")):
            return None
        rank = len(self.graph.shape(node.inputs[0])) if node.inputs \
            else None
        reason = unsupported_attention(node.layer.get_config(), rank)
        if reason is not None:
            self.a.report.skipped[node.name] = (
                f"MultiHeadAttention with {reason} (kept float)")
            return None
        cfg = dict(node.layer.get_config(), name=node.name,
                   momentum=getattr(self.obs_template, "momentum", 0.99))
        self.a.report.skipped.pop(node.name, None)
        self.a.report.attention.append(node.name)
        return QuantMultiHeadAttention.from_config(cfg)

    def quant_keras_attention(self, node):
        """The ``QuantAttention`` / ``QuantAdditiveAttention`` of a Keras
        Attention / AdditiveAttention node (exact types, observers on, not
        in ``skip``, 3D inputs), or None; refused ones are reported in
        ``skipped`` with the reason."""
        cls = KERAS_ATTENTION_OF.get(type(node.layer))
        if (not self.observers or cls is None
                or node.name in self.a.report.skipped):
            return None
        rank = len(self.graph.shape(node.inputs[0])) if node.inputs \
            else None
        reason = unsupported_keras_attention(rank)
        if reason is not None:
            self.a.report.skipped[node.name] = (
                f"{type(node.layer).__name__} with {reason} (kept float)")
            return None
        self.a.report.attention.append(node.name)
        return cls.from_config(dict(
            live_config(node.layer), name=node.name,
            momentum=getattr(self.obs_template, "momentum", 0.99)))

    def concat_inputs(self, node) -> dict:
        """``tmap`` with an observer of its own before each input of a
        Concatenate that is not an observer's output read by it alone (a
        tensor with other readers, or on its grid through max pooling /
        padding). ``link_shared_inputs`` gives these observers the
        concatenation's grid: TFLite requantizes such an input onto it
        (QUANTIZE) for the concatenation only, or, through same-scale ops,
        for every reader of the pooled tensor (DenseNet's pool1), and after
        an average pool / bilinear resize (its output on its input's grid).
        """
        tensors = dict(self.tmap)
        signed = not self.a.nonneg.get(node.outputs[0], False)
        for tid in dict.fromkeys(node.inputs):
            src = self.graph.producer(tid)
            if tid in self.observed and len(self.graph.consumers(tid)) == 1 \
                    and not (src is not None and interpolates(src.layer)):
                # (a pool's / bilinear resize's observer keeps its input's
                # grid: TFLite requantizes its output for the concat)
                continue
            q = qz.get(self.obs_template)
            q.signed = signed
            name = unique_name(f"{node.name}_input_aq", self.used)
            self.a.report.observers.append(name)
            tensors[tid] = QuantActivation(a_bits=8, quantizer=q, name=name,
                                           dtype=self.policy)(self.tmap[tid])
        return tensors

    def cloned_swish(self, node):
        """A swish ``Activation`` (on a quantized tensor) as sigmoid, fixed
        1/256 observer and ``Multiply`` (named like the layer)."""
        made = self.layers.get(node.name)
        if made is None:  # shared: the same three layers for every call
            grid = FIXED_GRIDS["sigmoid"]
            q = qz.get(self.obs_template)
            q.signed = False
            obs = QuantActivation(
                a_bits=8, quantizer=q, fixed_range=grid, dtype=self.policy,
                name=unique_name(f"{node.name}_sigmoid_aq", self.used))
            self.a.report.observers.append(obs.name)
            made = (keras.layers.Activation("sigmoid", name=unique_name(
                f"{node.name}_sigmoid", self.used), dtype=self.policy), obs,
                keras.layers.Multiply(name=node.name, dtype=self.policy))
            self.layers[node.name] = made
        sig, obs, mul = made
        x = self.tmap[node.inputs[0]]
        y = mul([x, obs(sig(x))])
        to = node.outputs[0]
        if self.needs_observer(to, node):
            y = self.observe(y, to, node.name)
        self.tmap[to] = y

    def build(self):
        graph, model = self.graph, self.graph.model
        inputs = new_inputs(model)
        for tid, t_new in zip(graph.inputs, inputs):
            self.tmap[tid] = t_new
            if self.needs_observer(tid, None):
                base = getattr(t_new, "name", None) or "input"
                self.tmap[tid] = self.observe(t_new, tid,
                                              str(base).split(":")[0])
        for node in graph.nodes:
            if node.key in self.a.absorbed:
                continue
            # the layers made for a node (observers, split-off activations)
            # compute as it did: a float32 head under mixed_bfloat16 stays
            # float32, not the global policy's bf16 (ties in a softmax)
            self.policy = getattr(node.layer, "dtype_policy", None)
            plan = self.a.plan_of(node)
            if plan is not None:
                self.planned(node, plan)
            else:
                self.cloned(node)
        outputs = keras.tree.pack_sequence_as(
            output_structure(model), [self.tmap[t] for t in graph.outputs])
        if isinstance(outputs, list) and len(outputs) == 1:
            outputs = outputs[0]
        return model_like(model, pack_like_inputs(model, inputs), outputs)


def rebuild(analysis, make_layer, observers: bool = True,
            observer_quantizer=None):
    """Builds the new model. ``make_layer(plan, cfg, signed)`` returns the
    (unbuilt) replacement layer of each plan; ``signed``: whether its input
    may be negative.

    Example:
        >>> new = rebuild(analysis, lambda plan, cfg, signed:
        ...               QuantConv2D.from_config(cfg))
    """
    return _Builder(analysis, make_layer, observers,
                    observer_quantizer).build()
