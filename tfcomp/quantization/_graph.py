"""A minimal, public-API view of a functional / Sequential model's graph.

Connectivity comes from ``layer.input`` / ``layer.output`` (the KerasTensors
of each layer's single call) and ``model.inputs`` / ``model.outputs``. Layers
called more than once (shared layers) are refused with a clear error.
"""

from __future__ import annotations

import dataclasses

import keras

__all__ = ["Node", "Graph", "read_graph", "clone_layer"]


@dataclasses.dataclass
class Node:
    layer: object
    inputs: object  # nested structure of KerasTensors (the call's first arg)
    outputs: object  # KerasTensor or nested structure

    @property
    def name(self) -> str:
        return self.layer.name

    def input_list(self) -> list:
        return keras.tree.flatten(self.inputs)

    def output_list(self) -> list:
        return keras.tree.flatten(self.outputs)


@dataclasses.dataclass
class Graph:
    model: object
    nodes: list  # topological order, InputLayers excluded
    consumers: dict  # id(tensor) -> [Node]
    producers: dict  # id(tensor) -> Node
    input_ids: list
    output_ids: list

    def consumers_of(self, tensor) -> list:
        return self.consumers.get(id(tensor), [])

    def producer_of(self, tensor):
        return self.producers.get(id(tensor))

    def is_output(self, tensor) -> bool:
        return id(tensor) in self.output_ids


def check_model(model, verb: str) -> None:
    """Raises clear errors for non-models, unbuilt and subclassed models."""
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"{verb} expects a keras.Model. Received: {type(model)!r}")
    if not isinstance(model, keras.Sequential):
        try:
            cfg = model.get_config()
        except NotImplementedError:
            cfg = None
        if not (isinstance(cfg, dict) and "layers" in cfg
                and "input_layers" in cfg):
            raise ValueError(
                f"{verb} supports functional and Sequential models; model "
                f"{model.name!r} is subclassed. Rebuild it functionally.")
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not model.built or not inputs:
        raise ValueError(
            f"Model {model.name!r} was never built: {verb} needs a built "
            "functional or Sequential model with known inputs (create it "
            "with keras.Input, or call model.build(input_shape) first).")


def read_graph(model, verb: str = "quantize_model") -> Graph:
    """Reads the model's layers, their inputs/outputs and consumers."""
    check_model(model, verb)
    nodes = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        try:
            inputs, outputs = layer.input, layer.output
        except (AttributeError, ValueError) as e:
            raise ValueError(
                f"Layer {layer.name!r} of model {model.name!r} is called "
                f"more than once (shared) or never; {verb} supports layers "
                f"called exactly once. ({e})") from None
        nodes.append(Node(layer, inputs, outputs))
    producers = {}
    for n in nodes:
        for t in n.output_list():
            producers[id(t)] = n
    # Topological order (model.layers is already; this guards against
    # anything unexpected).
    known = {id(t) for t in keras.tree.flatten(model.inputs)}
    ordered, pending = [], list(nodes)
    while pending:
        progressed = False
        rest = []
        for n in pending:
            if all(id(t) in known for t in n.input_list()):
                ordered.append(n)
                known.update(id(t) for t in n.output_list())
                progressed = True
            else:
                rest.append(n)
        if not progressed:
            names = [n.name for n in rest][:10]
            raise ValueError(
                f"{verb} could not order layers {names} of model "
                f"{model.name!r}: their inputs do not come from the model's "
                "layers (keras.ops calls between layers are not supported).")
        pending = rest
    consumers: dict = {}
    for n in ordered:
        for t in n.input_list():
            consumers.setdefault(id(t), []).append(n)
    return Graph(
        model=model, nodes=ordered, consumers=consumers, producers=producers,
        input_ids=[id(t) for t in keras.tree.flatten(model.inputs)],
        output_ids=[id(t) for t in keras.tree.flatten(model.outputs)])


def clone_layer(layer):
    """A fresh, unbuilt copy of a layer from its config (weights copied by
    the caller once it is built)."""
    if isinstance(layer, keras.Model):
        return keras.models.clone_model(layer)
    return type(layer).from_config(layer.get_config())


def new_inputs(model) -> list:
    """Fresh ``keras.Input`` tensors shaped like the model's inputs."""
    names = {id(layer.output): layer.name for layer in model.layers
             if isinstance(layer, keras.layers.InputLayer)}
    return [keras.Input(shape=tuple(t.shape[1:]), dtype=t.dtype,
                        name=names.get(id(t)))
            for t in keras.tree.flatten(model.inputs)]
