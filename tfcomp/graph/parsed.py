"""The data model of a read Keras graph: :class:`ParsedModel` (call nodes
in topological order, tensors, shapes) and its :class:`Node` s, with the
queries other modules need (producer, consumers, calls of a layer, upstream
/ downstream). :func:`tfcomp.graph.parse_model` builds it.

Tensors are named by string ids ``"<outer/>layer:node:index"`` (the
``keras_history`` of the tensor, resolved through nested-model aliases).

Example:
    >>> parsed = tfcomp.graph.parse_model(model)
    >>> parsed.producer(parsed.outputs[0]).path
    'predictions'
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras

__all__ = ["Node", "ParsedModel", "is_tensor_ref"]


def _tid(prefix: str, name: str, ni, ti) -> str:
    """Tensor id of output ``ti`` of call ``ni`` of layer ``prefix+name``."""
    return f"{prefix}{name}:{int(ni)}:{int(ti)}"


@dataclasses.dataclass
class Node:
    """One call of one operation (layer or ``keras.ops`` op) in the graph.

    Attributes:
        key: ``"<layer path>#<call index>"``, unique per call.
        path: layer path (``outer/inner`` inside nested models).
        op: the Layer / Operation object (also ``node.layer``; None for the
            implicit input of a Sequential model without an InputLayer).
        node_index: which call of the layer this is (shared layers: 0, 1..).
        inputs: tensor ids of the tensor arguments, in call order.
        outputs: tensor ids of the outputs.
        constants: non-tensor positional arguments (``x + 3.0`` -> [3.0]).
        barrier_reason: set for leaves the reader refuses to enter
            (subclassed or repeatedly called nested models).
        ref_ids: for a layer inside a nested model's later call, its
            config's tensor ids (those of the nested model's first call) ->
            this call's; None otherwise.
        call_config: the call's serialised ``inbound_nodes`` entry
            (``args`` / ``kwargs`` with ``__keras_tensor__`` references);
            None for Sequential models.

    Example:
        >>> node = parse_model(model).nodes[1]
        >>> node.path, type(node.layer).__name__, node.inputs
        ('conv1', 'Conv2D', ['input_layer:0:0'])
    """

    key: str
    path: str
    op: Any
    node_index: int
    inputs: list
    outputs: list
    constants: list
    barrier_reason: str | None = None
    call_config: dict | None = None
    ref_ids: dict | None = None  # later calls of a nested model: see below

    @property
    def layer(self):
        """The layer / op object called (same as ``op``)."""
        return self.op

    @property
    def is_input(self) -> bool:
        """True for a model input (an InputLayer, no tensor inputs)."""
        return not self.inputs and (
            self.op is None or isinstance(self.op, keras.layers.InputLayer))


@dataclasses.dataclass
class ParsedModel:
    """A model's call graph, flattened (see the module docstring).

    Attributes:
        nodes: every :class:`Node`, in topological order.
        shapes: ``{tensor id: shape tuple}`` (with the batch axis).
        inputs: model input tensor ids.
        outputs: model output tensor ids.
        layers: ``{layer path: layer}`` of every leaf layer / op.
        nested: ``{path: model}`` of the nested models that were flattened.
        nested_inputs: ``{path of a nested InputLayer: tensor id}``.
        alias: ``{tensor id: tensor id it stands for}`` (nested inputs and
            outputs); :meth:`resolve` follows it.
        nested_calls: ``{path: plain keyword arguments}`` of each flattened
            nested model's call (``backbone(x, training=False)`` ->
            ``{"training": False}``).

    Example:
        >>> parsed = parse_model(model)
        >>> [n.path for n in parsed.nodes_of("shared_conv")]   # two calls
        ['shared_conv', 'shared_conv']
        >>> sorted(parsed.downstream(["conv3"]))
    """

    nodes: list
    shapes: dict
    inputs: list
    outputs: list
    layers: dict
    nested: dict
    nested_inputs: dict
    alias: dict
    nested_calls: dict = dataclasses.field(default_factory=dict)
    _index: dict | None = dataclasses.field(
        default=None, init=False, repr=False, compare=False)

    def resolve(self, tid: str) -> str:
        """The tensor id ``tid`` stands for (follows nested-model aliases)."""
        seen = 0
        while tid in self.alias:
            tid = self.alias[tid]
            seen += 1
            if seen > 10000:  # pragma: no cover - defensive
                raise RuntimeError(f"alias cycle at tensor {tid}")
        return tid

    def tensor_id(self, ref: dict, prefix: str = "",
                  ref_ids: dict | None = None) -> str:
        """Resolved id of a ``__keras_tensor__`` reference of a config.

        Args:
            ref: the serialised tensor (see :func:`is_tensor_ref`).
            prefix: ``"outer/"`` when the config is a nested model's.
            ref_ids: a node's ``ref_ids`` (a nested model's later call).

        Example:
            >>> parsed.tensor_id(entry["inbound_nodes"][0]["args"][0])
            'conv1:0:0'
        """
        h = ref["config"]["keras_history"]
        tid = _tid(prefix, h[0], h[1], h[2])
        return self.resolve((ref_ids or {}).get(tid, tid))

    def keras_tensor(self, tid: str):
        """The model's own symbolic tensor (``KerasTensor``) for ``tid``.

        Defined for model inputs and the outputs of the first call of a
        top-level layer or nested model, e.g. to build
        ``keras.Model(model.inputs, parsed.keras_tensor(tid))``.

        Raises:
            ValueError: for tensors inside a nested model or produced by a
                later call of a shared layer (they have no public handle).

        Example:
            >>> t = parsed.keras_tensor(parsed.nodes_of("conv1")[0].outputs[0])
            >>> feature_model = keras.Model(model.inputs, t)
        """
        tid = self.resolve(tid)
        names = [tid] + [a for a in self.alias if self.resolve(a) == tid]
        for name in names:
            path, ni, ti = name.rsplit(":", 2)
            op = self.layers.get(path, self.nested.get(path))
            if "/" in path or int(ni) != 0 or op is None:
                continue
            return keras.tree.flatten(op.output)[int(ti)]
        raise ValueError(
            f"Tensor {tid!r} has no symbolic tensor in the outer model (it "
            "is inside a nested model or comes from a later call of a "
            "shared layer).")

    # -- indices (built on first use) ------------------------------------
    def _idx(self) -> dict:
        if self._index is None:
            by_key, by_path, producer, consumers = {}, {}, {}, {}
            for n in self.nodes:
                by_key[n.key] = n
                by_path.setdefault(n.path, []).append(n)
                for t in n.outputs:
                    producer[t] = n
                for t in dict.fromkeys(n.inputs):
                    consumers.setdefault(t, []).append(n)
            self._index = {"key": by_key, "path": by_path,
                           "producer": producer, "consumers": consumers}
        return self._index

    def node(self, key: str) -> Node:
        """The node with ``key`` (``"path#call"``).

        Example:
            >>> parsed.node("conv1#0").inputs
        """
        try:
            return self._idx()["key"][key]
        except KeyError:
            raise ValueError(f"No node {key!r} in the parsed model.") from None

    def layer(self, path: str):
        """The layer object at ``path`` (``outer/inner`` for nested).

        Example:
            >>> parsed.layer("backbone/conv1")
        """
        try:
            return self.layers[path]
        except KeyError:
            raise ValueError(
                f"No layer {path!r} in the parsed model. Known layers "
                f"include {list(self.layers)[:12]}.") from None

    def nodes_of(self, path: str) -> list:
        """The calls of the layer at ``path``, in topological order.

        Example:
            >>> len(parsed.nodes_of("shared_dense"))   # called twice
            2
        """
        return list(self._idx()["path"].get(path, []))

    @property
    def shared_layers(self) -> list:
        """Paths of the layers called more than once."""
        return [p for p, ns in self._idx()["path"].items() if len(ns) > 1]

    def producer(self, tid: str) -> Node | None:
        """The node whose output is ``tid`` (None if unknown).

        ``node.outputs.index(tid)`` gives the output position.

        Example:
            >>> parsed.producer(parsed.outputs[0]).path
            'predictions'
        """
        return self._idx()["producer"].get(self.resolve(tid))

    def consumers(self, tid: str) -> list:
        """Nodes that take ``tid`` as an input, in topological order.

        Example:
            >>> [n.path for n in parsed.consumers("conv1:0:0")]
            ['bn1']
        """
        return list(self._idx()["consumers"].get(self.resolve(tid), []))

    def upstream(self, tids, stop=()) -> list:
        """Nodes needed to compute ``tids`` from the model inputs and the
        tensors in ``stop``, in topological order (input nodes excluded).

        Example:
            >>> [n.path for n in parsed.upstream(["conv2:0:0"],
            ...                                  stop=["conv1:0:0"])]
            ['bn1', 'relu1', 'conv2']
        """
        stop = {self.resolve(t) for t in stop} | set(self.inputs)
        producer = self._idx()["producer"]
        needed: set = set()
        stack = [self.resolve(t) for t in tids]
        while stack:
            t = stack.pop()
            n = producer.get(t)
            if t in stop or n is None or n.key in needed:
                continue
            needed.add(n.key)
            stack.extend(n.inputs)
        return [n for n in self.nodes if n.key in needed]

    def downstream(self, paths) -> set:
        """Layer paths that depend on the given layers (inclusive).

        Example:
            >>> "fc" in parsed.downstream(["conv1"])
            True
        """
        out = set(paths)
        producer = self._idx()["producer"]
        changed = True
        while changed:  # a shared layer's later call can feed earlier ones
            changed = False
            for n in self.nodes:
                if n.path not in out and any(
                        t in producer and producer[t].path in out
                        for t in n.inputs):
                    out.add(n.path)
                    changed = True
        return out


def is_tensor_ref(obj) -> bool:
    """True for a serialised Keras tensor (``__keras_tensor__``) in a config.

    Example:
        >>> is_tensor_ref(model.get_config()["layers"][1]["inbound_nodes"][0]
        ...               ["args"][0])
        True
    """
    return (isinstance(obj, dict) and obj.get("class_name") == "__keras_tensor__"
            and "keras_history" in obj.get("config", {}))
