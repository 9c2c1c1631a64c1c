"""Builds the quantization-aware model an :class:`~._analysis.Analysis`
plans: replacement layers for the planned ones, clones of the others, and
8-bit ``QuantActivation`` observers where int8 export needs a range.

Shared layers stay shared (one replacement or clone, called once per
call); nested models come out flattened.

Example:
    >>> new = rebuild(analysis, make_layer, observers=True)
"""

from __future__ import annotations

import keras

from tfcomp.layers import QuantActivation
from tfcomp.layers import quantizers as qz
from tfcomp.quantization._analysis import (
    FIXED_RANGE_ACTS,
    RELU_FUSING_PRODUCERS,
    SAME_SCALE,
    TRANSPARENT,
    fixed_range,
    is_observer,
    keras_classes,
    relu_kind,
)
from tfcomp.quantization._graph import clone_layer, new_inputs

__all__ = ["rebuild", "unique_name"]


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
        self.layers = {}  # layer name -> replacement / clone
        self.on_grid = set()  # tensor ids holding quantized values

    # -- observers ------------------------------------------------------------
    def is_quant_consumer(self, node) -> bool:
        plan = self.a.plan_of(node)
        quantized = self.a.report.quantized
        return plan is not None and plan.name in quantized and \
            quantized[plan.name][1] != qz.FLOAT_BITS

    def needs_observer(self, tid, producer) -> bool:
        graph = self.graph
        if not self.observers:
            return False
        if producer is not None and is_observer(producer.layer):
            return False
        cons = graph.consumers(tid)
        if graph.is_output(tid):
            if isinstance(producer, _FakeProducer):
                return producer.post_activation not in FIXED_RANGE_ACTS
            return not (producer is not None and fixed_range(producer.layer))
        if len(cons) != 1:
            return len(cons) > 1
        c = cons[0]
        if self.is_quant_consumer(c):
            return False
        if isinstance(c.layer, keras_classes(TRANSPARENT)):
            return False
        if (relu_kind(c.layer) is not None and producer is not None
                and isinstance(producer.layer,
                               keras_classes(RELU_FUSING_PRODUCERS))):
            return False
        return True

    def observe(self, tensor_new, tid, base_name):
        self.on_grid.add(tid)
        signed = not self.a.nonneg.get(tid, False)
        q = qz.get(self.obs_template)
        q.signed = signed
        name = unique_name(f"{base_name}_aq", self.used)
        self.a.report.observers.append(name)
        return QuantActivation(a_bits=8, quantizer=q, name=name)(tensor_new)

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
            y = keras.layers.Activation(
                plan.post_activation,
                name=unique_name(f"{node.name}_activation", self.used))(y)
        tail = plan.tails[node.key]
        if self.needs_observer(tail, _FakeProducer(plan)):
            y = self.observe(y, tail, node.name)
        self.tmap[tail] = y

    def cloned(self, node):
        layer = self.layers.get(node.name)
        first = layer is None
        if first:
            layer = clone_layer(node.layer, node.name)
            self.layers[node.name] = layer
        y = node.call(layer, self.tmap)
        if first and isinstance(layer, keras.layers.Layer):
            layer.set_weights(node.layer.get_weights())
        keeps_grid = (self.observers and node.inputs
                      and isinstance(node.layer, keras_classes(SAME_SCALE))
                      and all(t in self.on_grid for t in node.inputs))
        for to, tn in zip(node.outputs, keras.tree.flatten(y)):
            if keeps_grid:  # max pool, padding, reshape...: the input's grid
                self.on_grid.add(to)
            elif self.needs_observer(to, node):
                tn = self.observe(tn, to, node.name)
            self.tmap[to] = tn

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
            plan = self.a.plan_of(node)
            if plan is not None:
                self.planned(node, plan)
            else:
                self.cloned(node)
        outputs = keras.tree.pack_sequence_as(
            model.outputs, [self.tmap[t] for t in graph.outputs])
        if isinstance(model.outputs, list) and len(outputs) == 1:
            outputs = outputs[0]
        if isinstance(model.inputs, list) and len(inputs) == 1:
            inputs = inputs[0]
        return keras.Model(inputs, outputs, name=model.name)


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
