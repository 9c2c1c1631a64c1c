"""Calls of a read graph replayed on other tensors: a node's arguments with
tensor ids in place of tensors (:func:`call_arguments`), the call made on
new tensors (:func:`replay_call`), and :class:`FlatView`, a functional
model over a model's *own* leaf layers with every nested model inlined, so
that the input and output of a layer inside a nested model are tensors
reachable from the model's input (what ``keras.Model(model.inputs,
[inner_layer.input])`` cannot give).

Example:
    >>> view = FlatView(model)                      # backbone nested inside
    >>> feats = keras.Model(view.inputs, view.input_of("backbone/conv2"))
    >>> view.layer("backbone/conv2") is model.get_layer("backbone") \
    ...     .get_layer("conv2")
    True
"""

from __future__ import annotations

import inspect

import keras

from tfcomp.graph._parse import parse_model
from tfcomp.graph.parsed import is_tensor_ref

__all__ = ["FlatView", "TensorId", "call_arguments", "replay_call",
           "takes_training"]


class TensorId(str):
    """A tensor id inside a node's call arguments (not a plain string)."""


def call_arguments(parsed, node) -> tuple:
    """``(args, kwargs)`` of one call of the parsed graph, tensors replaced
    by :class:`TensorId` s (serialised objects deserialised).

    Example:
        >>> args, kwargs = call_arguments(parsed, parsed.node("add#0"))
        >>> args
        (['conv1:0:0', 'conv2:0:0'],)
    """
    cfg = node.call_config
    if not isinstance(cfg, dict):  # Sequential layers, opaque nested models
        ins = [TensorId(t) for t in node.inputs]
        return (ins[0] if len(ins) == 1 else ins,), {}
    prefix = node.path[:node.path.rfind("/") + 1]

    def sub(obj):
        if is_tensor_ref(obj):
            return TensorId(parsed.tensor_id(obj, prefix, node.ref_ids))
        if isinstance(obj, dict):
            if obj.get("class_name") == "__tuple__":
                return tuple(sub(v) for v in obj["config"]["value"])
            if "class_name" in obj and "config" in obj:
                return keras.saving.deserialize_keras_object(obj)
            return {k: sub(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [sub(v) for v in obj]
        return obj

    args = tuple(sub(a) for a in cfg.get("args", []))
    kwargs = {k: sub(v) for k, v in cfg.get("kwargs", {}).items()}
    return args, kwargs


def replay_call(layer, args, kwargs, tensors: dict, **extra):
    """``layer(*args, **kwargs, **extra)`` with every :class:`TensorId`
    replaced from ``tensors`` (``{tensor id: tensor}``).

    Example:
        >>> y = replay_call(layer, args, kwargs, {"conv1:0:0": x})
    """
    def sub(v):
        return tensors[v] if isinstance(v, TensorId) else v

    args = keras.tree.map_structure(sub, args)
    kwargs = dict(keras.tree.map_structure(sub, kwargs))
    kwargs.update(extra)
    return layer(*args, **kwargs)


def takes_training(layer) -> bool:
    """True when ``layer.call`` accepts a ``training`` argument.

    Example:
        >>> takes_training(keras.layers.Dropout(0.5))
        True
    """
    call = getattr(layer, "call", None)
    if call is None:
        return False
    try:
        return "training" in inspect.signature(call).parameters
    except (TypeError, ValueError):
        return False


class FlatView:
    """A functional model over ``model``'s own leaf layers, nested
    functional / Sequential models inlined.

    Every leaf layer is called once more, on tensors that start at the
    model's inputs, so the view computes what the model computes and
    trains the model's own variables (the layers are shared, not copied).
    A nested model called as ``backbone(x, training=False)`` hands
    ``training=False`` to its layers' calls in the view, where Keras'
    call context treats it as it does in the model (a ``training`` given
    to the outer call wins; otherwise it applies). Keras keeps each
    layer's first call as its ``input`` / ``output`` and serialises a model
    from its own calls only, so the model itself is unchanged (do not build
    a view of a model you will not discard if its layers' call count
    matters to you).

    Args:
        model: a built functional or Sequential model.
        parsed: its ``parse_model`` result, to reuse.

    Attributes:
        model: the view (``keras.Model``; inputs are ``model.inputs``).
        inputs, outputs: the view's input / output tensors.
        parsed: the graph read.

    Example:
        >>> view = FlatView(model)
        >>> ext = keras.Model(view.inputs, [view.input_of("backbone/conv1"),
        ...                                 view.output_of("head")])
    """

    def __init__(self, model, parsed=None):
        self.parsed = parsed if parsed is not None else parse_model(model)
        p = self.parsed
        self.inputs = list(keras.tree.flatten(model.inputs))
        self.tensors: dict = dict(zip(p.inputs, self.inputs))
        frozen = {path for path, kw in p.nested_calls.items()
                  if kw.get("training") is not None}
        self._frozen = frozen
        for node in p.nodes:
            if not node.is_input:
                self._replay(node, self.tensors)
        self.outputs = [self.tensors[t] for t in p.outputs]
        self.model = keras.Model(
            self.inputs[0] if len(self.inputs) == 1 else self.inputs,
            self.outputs[0] if len(self.outputs) == 1 else self.outputs,
            name=f"{model.name}_flat")

    def _replay(self, node, tensors: dict) -> None:
        """Calls ``node``'s layer again on ``tensors`` (adds its outputs)."""
        args, kwargs = call_arguments(self.parsed, node)
        extra = {}
        mode = self._outer_training(node.path, self._frozen)
        if mode is not None and "training" not in kwargs and \
                takes_training(node.op):
            extra["training"] = mode
        out = replay_call(node.op, args, kwargs, tensors, **extra)
        for tid, t in zip(node.outputs, keras.tree.flatten(out)):
            tensors[tid] = t

    def sub_model(self, feeds, fetches, name: str | None = None):
        """A model from the tensors ``feeds`` to ``fetches`` (parsed tensor
        ids): each feed a new ``keras.Input``, the layers between them
        called again (shared, as in the view).

        ``keras.Model(view.tensor(a), view.tensor(b))`` on inner tensors
        clones Keras' graph nodes instead, and when a feed is a model input
        that the cloned part also reaches (a layer reading the input and an
        inner tensor, as PointNet's ``Dot``), the clone rewrites that
        input's history: the model no longer serialises ("could not find
        node key").

        Example:
            >>> sub = view.sub_model(["conv1:0:0"], ["head:0:0"])
        """
        p = self.parsed
        tensors: dict = {}
        inputs = []
        for tid in feeds:
            t = self.tensor(tid)
            inputs.append(keras.Input(batch_shape=t.shape, dtype=t.dtype))
            tensors[p.resolve(tid)] = inputs[-1]
        want = [p.resolve(t) for t in fetches]
        for node in p.nodes:
            if all(w in tensors for w in want):
                break
            if node.is_input or any(o in tensors for o in node.outputs) or \
                    not all(p.resolve(i) in tensors for i in node.inputs):
                continue
            self._replay(node, tensors)
        missing = [f for f, w in zip(fetches, want) if w not in tensors]
        if missing:
            raise ValueError(f"sub_model: tensors {missing} are not computed "
                             f"from the feeds {list(feeds)} in model view "
                             f"{self.model.name!r}.")
        return keras.Model(inputs, [tensors[w] for w in want], name=name)

    def _outer_training(self, path: str, frozen: set):
        """The ``training`` argument the innermost enclosing nested call
        fixed for the layer at ``path`` (None: none did)."""
        parts = path.split("/")[:-1]
        for i in range(len(parts), 0, -1):
            outer = "/".join(parts[:i])
            if outer in frozen:
                return self.parsed.nested_calls[outer]["training"]
        return None

    def tensor(self, tid: str):
        """The view's tensor for the parsed tensor id ``tid``."""
        return self.tensors[self.parsed.resolve(tid)]

    def layer(self, path: str):
        """The leaf layer at ``path`` (``outer/inner`` inside nested models).
        """
        return self.parsed.layer(path)

    def _node(self, path: str, call: int):
        nodes = self.parsed.nodes_of(path)
        if not nodes or call >= len(nodes):
            raise ValueError(
                f"No call {call} of layer {path!r} in model view "
                f"{self.model.name!r}.")
        return nodes[call]

    def input_of(self, path: str, call: int = 0):
        """The (first) tensor input of call ``call`` of layer ``path``."""
        return self.tensor(self._node(path, call).inputs[0])

    def output_of(self, path: str, call: int = 0):
        """The (first) output of call ``call`` of layer ``path``."""
        return self.tensor(self._node(path, call).outputs[0])
