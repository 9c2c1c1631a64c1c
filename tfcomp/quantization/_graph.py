"""Quantization's view of a model graph, read by :func:`tfcomp.graph.parse_model`.

``read_graph(model)`` wraps the one model reader's ``ParsedModel``: nested
functional / Sequential models are flattened (their layers get ``outer_inner``
names in the models quantization builds), a layer called several times
(shared) gives one node per call, and ``keras.ops`` calls between layers are
ordinary nodes. Tensors are the reader's string ids. The graph also rebuilds
a node's call on new tensors (``Node.call``) and evaluates tensors eagerly
(``Graph.evaluate``), so nothing needs a layer's single ``input`` / ``output``.

Example:
    >>> graph = read_graph(model)
    >>> [n.name for n in graph.nodes][:2]
    ['stem_conv', 'stem_bn']
"""

from __future__ import annotations

import dataclasses

import keras

from tfcomp.graph import check_built_model, parse_model
from tfcomp.graph.copy import clone_layer as copy_layer
from tfcomp.graph.copy import clone_model as copy_model
from tfcomp.graph.replay import (
    call_arguments,
    replay_call,
    takes_training,
)

__all__ = ["Node", "Graph", "read_graph", "clone_layer", "new_inputs",
           "check_model"]


@dataclasses.dataclass(eq=False)
class Node:
    """One call of one layer / op.

    Attributes:
        parsed: the reader's node (``key``, ``path``, ``op``, ...).
        layer, path, key: the reader's ``op``, ``path`` and ``key``.
        name: the layer's name in the flat models quantization builds
            (``path`` with ``/`` replaced by ``_``; shared layers: one name).
        args, kwargs: the call's arguments with :class:`TensorId` s.
        inputs, outputs: tensor ids (inputs in call order, repeats kept).
    """

    parsed: object
    name: str
    args: tuple
    kwargs: dict
    inputs: list
    outputs: list
    graph: object = None

    def __post_init__(self):
        self.layer = self.parsed.op
        self.path = self.parsed.path
        self.key = self.parsed.key

    def call(self, layer, tensors: dict, **extra):
        """``layer(*args, **kwargs)`` with tensor ids replaced from
        ``tensors`` (``{tensor id: tensor}``)."""
        return replay_call(layer, self.args, self.kwargs, tensors, **extra)

    # -- compatibility: the original KerasTensors where they exist --------
    def input_list(self) -> list:
        return [self.graph.keras_tensor(t) for t in self.inputs]

    def output_list(self) -> list:
        return [self.graph.keras_tensor(t) for t in self.outputs]


@dataclasses.dataclass(eq=False)
class Graph:
    """Nodes in topological order (model inputs excluded) and the tensors
    between them.

    Attributes:
        model: the model read.
        parsed: the reader's ``ParsedModel``.
        nodes: the calls, in topological order.
        inputs, outputs: model input / output tensor ids.
    """

    model: object
    parsed: object
    nodes: list
    inputs: list
    outputs: list
    _consumers: dict
    _producers: dict
    _by_path: dict
    _keras: dict | None = None

    def consumers(self, tid) -> list:
        """Nodes reading ``tid``, once per use (``Add([x, x])`` twice)."""
        return self._consumers.get(self._tid(tid), [])

    def producer(self, tid):
        """The node computing ``tid`` (None for model inputs)."""
        return self._producers.get(self._tid(tid))

    def is_output(self, tid) -> bool:
        return self._tid(tid) in self.outputs

    def shape(self, tid) -> tuple:
        return tuple(self.parsed.shapes[tid])

    def nodes_of(self, path: str) -> list:
        """The calls of the layer at ``path`` (several when shared)."""
        return self._by_path.get(path, [])

    def layers(self) -> list:
        """``[(name, layer, nodes)]`` per leaf layer, in first-call order."""
        return [(nodes[0].name, nodes[0].layer, nodes)
                for nodes in self._by_path.values()]

    def evaluate(self, x, tids) -> list:
        """Values of the tensors ``tids`` for inputs ``x`` (eager, inference
        mode: what the model computes, one layer call after the other).

        Example:
            >>> [h] = graph.evaluate(x, [graph.nodes[0].outputs[0]])
        """
        xs = x if isinstance(x, (list, tuple)) else [x]
        values = {t: keras.ops.convert_to_tensor(v)
                  for t, v in zip(self.inputs, xs)}
        wanted = {n.key for n in self.parsed.upstream(list(tids))}
        for node in self.nodes:
            if node.key not in wanted:
                continue
            extra = {"training": False} if takes_training(node.layer) else {}
            y = node.call(node.layer, values, **extra)
            for t, v in zip(node.outputs, keras.tree.flatten(y)):
                values[t] = v
        return [values[t] for t in tids]

    # -- compatibility with tensor-object callers ---------------------------
    def keras_tensor(self, tid):
        """The model's own KerasTensor of ``tid`` (see
        ``ParsedModel.keras_tensor``); ValueError where there is none."""
        return self.parsed.keras_tensor(tid)

    def _tid(self, t):
        """The id of a tensor given as an id or as a model KerasTensor."""
        if isinstance(t, str):
            return t
        if self._keras is None:
            self._keras = {}
            for tid in self.inputs + [o for n in self.nodes
                                      for o in n.outputs]:
                try:
                    self._keras.setdefault(id(self.keras_tensor(tid)), tid)
                except (AttributeError, ValueError):
                    continue
        return self._keras.get(id(t), t)

    consumers_of = consumers
    producer_of = producer


def check_model(model, verb: str) -> None:
    """Raises clear errors for non-models, unbuilt and subclassed models
    (``tfcomp.graph.check_built_model``)."""
    check_built_model(model, verb)


def _flat_name(path: str, used: set) -> str:
    base = path.replace("/", "_")
    name, i = base, 1
    while name in used:
        name = f"{base}_{i}"
        i += 1
    return name


def read_graph(model, verb: str = "quantize_model") -> Graph:
    """Reads the model's calls, their tensors and consumers.

    Args:
        model: a built functional or Sequential model.
        verb: the caller's name, for error messages.

    Example:
        >>> graph = read_graph(model, "calibrate")
    """
    check_model(model, verb)
    parsed = parse_model(model)
    top = {p for p in parsed.layers if "/" not in p}
    names, used = {}, set(top)
    nodes, by_path, consumers, producers = [], {}, {}, {}
    for pnode in parsed.nodes:
        if pnode.is_input:
            continue
        if pnode.path not in names:
            names[pnode.path] = (pnode.path if "/" not in pnode.path
                                 else _flat_name(pnode.path, used))
            used.add(names[pnode.path])
        args, kwargs = call_arguments(parsed, pnode)
        ins = list(pnode.inputs)
        node = Node(pnode, names[pnode.path], args, kwargs, ins,
                    list(pnode.outputs))
        nodes.append(node)
        by_path.setdefault(pnode.path, []).append(node)
        for t in node.outputs:
            producers[t] = node
        for t in ins:
            consumers.setdefault(t, []).append(node)
    graph = Graph(model, parsed, nodes, list(parsed.inputs),
                  list(parsed.outputs), consumers, producers, by_path)
    for node in nodes:
        node.graph = graph
    return graph


def clone_layer(layer, name: str | None = None):
    """A fresh, unbuilt copy of a layer from its config (weights copied by
    the caller once it is built), renamed to ``name`` when given. A
    ``Lambda`` keeps the user's in-memory function (no unsafe
    deserialization; see ``tfcomp.graph.copy``)."""
    if isinstance(layer, keras.Model):
        return copy_model(layer)
    cfg = layer.get_config()
    if name is not None and "name" in cfg:
        cfg["name"] = name
    return copy_layer(layer, cfg)


def new_inputs(model) -> list:
    """Fresh ``keras.Input`` tensors shaped like the model's inputs."""
    names = {id(layer.output): layer.name for layer in model.layers
             if isinstance(layer, keras.layers.InputLayer)}
    return [keras.Input(shape=tuple(t.shape[1:]), dtype=t.dtype,
                        name=names.get(id(t)))
            for t in keras.tree.flatten(model.inputs)]
