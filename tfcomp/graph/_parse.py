"""The one model reader: a functional / Sequential Keras model as a flat,
topologically ordered list of call nodes (:func:`parse_model`).

The connectivity comes from the model's own serialised graph
(``model.get_config()``: every layer's ``inbound_nodes`` with
``keras_history`` references), shapes from the same references and from the
public ``layer.output`` / ``model.outputs`` tensors. Nothing is traced and no
private attribute is read. Functional and Sequential models nested inside the
model are flattened: their layers get ``outer/inner`` paths and their input /
output tensors are aliased to the outer tensors. A layer called several times
(shared) gives one :class:`Node` per call; so does every layer of a nested
model called several times (a siamese network's encoder): call ``k`` of the
nested model is call ``k * c + i`` of an inner layer that the nested graph
calls ``c`` times.

Tensors are named by string ids ``"<outer/>layer:node:index"``; the result
is a :class:`~tfcomp.graph.parsed.ParsedModel`.

Example:
    >>> from tfcomp.graph import parse_model
    >>> parsed = parse_model(model)
    >>> for node in parsed.nodes:                 # topological order
    ...     node.path, node.layer, node.inputs, node.outputs
    >>> parsed.consumers(parsed.inputs[0])        # nodes reading the input
    >>> parsed.producer(parsed.outputs[0]).path   # the last layer
    >>> parsed.shared_layers                      # paths called > once
"""

from __future__ import annotations

import keras

from tfcomp.graph.parsed import Node, ParsedModel, _tid, is_tensor_ref

__all__ = ["Node", "ParsedModel", "is_tensor_ref", "model_kind", "parse_model"]


def _walk_refs(obj, out: list) -> None:
    """Collects ``__keras_tensor__`` dicts in call-argument order."""
    if is_tensor_ref(obj):
        out.append(obj)
    elif isinstance(obj, dict):
        for k in obj:
            _walk_refs(obj[k], out)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _walk_refs(v, out)


def _walk_constants(obj, out: list) -> None:
    if is_tensor_ref(obj):
        return
    if isinstance(obj, dict) and obj.get("class_name") is None:
        for k in obj:
            _walk_constants(obj[k], out)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _walk_constants(v, out)
    else:
        out.append(obj)


def _flat_io_refs(struct) -> list:
    """Flattens ``input_layers`` / ``output_layers`` into [name, node, idx]."""
    if (isinstance(struct, (list, tuple)) and len(struct) == 3
            and isinstance(struct[0], str) and isinstance(struct[1], int)):
        return [tuple(struct)]
    out = []
    if isinstance(struct, dict):
        for k in sorted(struct):
            out += _flat_io_refs(struct[k])
    elif isinstance(struct, (list, tuple)):
        for v in struct:
            out += _flat_io_refs(v)
    return out


def _output_refs(model, cfg) -> list:
    """``output_layers`` of a functional config as ``(name, node, index)``
    in the numbering of the layers' ``inbound_nodes``: Keras numbers a
    nested *functional* model's calls from 1 there (its legacy
    "pre-existing node"), while the tensors in ``inbound_nodes`` count
    them from 0."""
    ops = {op.name: op for op in model.operations}
    out = []
    for name, ni, ti in _flat_io_refs(cfg["output_layers"]):
        op = ops.get(name)
        if isinstance(op, keras.Model) and model_kind(op) == "functional":
            ni = max(int(ni) - 1, 0)
        out.append((name, ni, ti))
    return out


def _shape(t) -> tuple:
    return tuple(None if d is None else int(d) for d in t.shape)


def model_kind(model) -> str:
    """'sequential', 'functional' or 'subclassed' (public API only).

    Example:
        >>> model_kind(keras.Sequential([keras.layers.Dense(2)]))
        'sequential'
    """
    if isinstance(model, keras.Sequential):
        return "sequential"
    try:
        cfg = model.get_config()
    except Exception:  # noqa: BLE001 - any failure means no graph config
        return "subclassed"
    if isinstance(cfg, dict) and "layers" in cfg and "input_layers" in cfg \
            and "output_layers" in cfg:
        return "functional"
    return "subclassed"


def check_built_model(model, verb: str, name: str = "model") -> None:
    """Raises clear errors for a non-model (TypeError), a subclassed model
    and an unbuilt one (ValueError), naming ``verb`` and the model: what
    every verb that reads or copies a model's layer graph needs.

    Example:
        >>> check_built_model(keras.Sequential([keras.layers.Dense(2)]),
        ...                   "quantize_model")  # raises: never built
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"{verb} expects a keras.Model as {name}. Received: "
                        f"{type(model)!r}")
    if model_kind(model) == "subclassed":
        raise ValueError(
            f"{verb} supports functional and Sequential models; model "
            f"{model.name!r} is subclassed (class {type(model).__name__}): "
            "it cannot be read or cloned layer by layer. Rebuild it "
            "functionally (keras.Input -> layers -> keras.Model).")
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not model.built or not inputs:
        raise ValueError(
            f"Model {model.name!r} was never built: {verb} needs a built "
            "functional or Sequential model with known inputs (create it "
            "with keras.Input, or call model.build(input_shape) first).")


class _Parser:
    def __init__(self):
        self.nodes: list[Node] = []
        self.shapes: dict = {}
        self.alias: dict = {}
        self.layers: dict = {}
        self.nested: dict = {}
        self.nested_inputs: dict = {}
        self.nested_calls: dict = {}

    tid = staticmethod(_tid)

    def add_leaf(self, path, op, ni, inputs, outputs, constants,
                 reason=None, call_config=None, ref_ids=None):
        self.layers[path] = op
        self.nodes.append(Node(f"{path}#{ni}", path, op, ni, list(inputs),
                               list(outputs), list(constants), reason,
                               call_config, ref_ids))

    # -- functional ------------------------------------------------------
    def functional(self, model, prefix: str, cfg: dict | None,
                   outer_inputs: list | None, outer_outputs: list | None,
                   call: int = 0):
        cfg = cfg if cfg is not None else model.get_config()
        ops = {op.name: op for op in model.operations}
        # call ``call`` of a nested model: its layers' nodes and tensors
        # are numbered after those of the earlier calls
        counts = {(e.get("name") or e["config"]["name"]):
                  max(1, len(e.get("inbound_nodes") or []))
                  for e in cfg["layers"]}

        def tid(name, ni, ti):
            return self.tid(prefix, name, int(ni) + call * counts.get(
                name, 1), ti)

        # Input correspondences of a nested model.
        in_refs = _flat_io_refs(cfg["input_layers"])
        out_refs = _output_refs(model, cfg)
        if outer_inputs is not None:
            if len(outer_inputs) != len(in_refs):
                raise ValueError(
                    f"Nested model {model.name!r} was called with "
                    f"{len(outer_inputs)} tensors but has {len(in_refs)} "
                    "inputs.")
            for (name, ni, ti), outer in zip(in_refs, outer_inputs):
                inner = tid(name, ni, ti)
                self.alias[inner] = outer
                self.nested_inputs.setdefault(prefix + name, inner)
        # Shapes of model outputs.
        for (name, ni, ti), t in zip(out_refs, keras.tree.flatten(
                model.outputs)):
            self.shapes.setdefault(tid(name, ni, ti), _shape(t))
        if outer_outputs is not None:
            for (name, ni, ti), outer in zip(out_refs, outer_outputs):
                self.alias[outer] = tid(name, ni, ti)
        for entry in cfg["layers"]:
            name = entry.get("name") or entry["config"]["name"]
            op = ops.get(name)
            if op is None:
                raise ValueError(
                    f"Layer {name!r} of model {model.name!r} appears in its "
                    "config but not in model.operations.")
            path = prefix + name
            nodes = entry.get("inbound_nodes") or []
            if isinstance(op, keras.layers.InputLayer):
                if outer_inputs is None:
                    out = tid(name, 0, 0)
                    self.shapes.setdefault(out, _shape(op.output))
                    self.add_leaf(path, op, 0, [], [out], [])
                continue
            for ni, node in enumerate(nodes):
                refs: list = []
                _walk_refs(node, refs)
                consts: list = []
                _walk_constants(node.get("args", []), consts)
                inputs, ref_ids = [], {}
                for r in refs:
                    h = r["config"]["keras_history"]
                    t = tid(h[0], h[1], h[2])
                    inputs.append(t)
                    if call:
                        ref_ids[self.tid(prefix, h[0], h[1], h[2])] = t
                    shape = r["config"].get("shape")
                    if shape is not None:
                        self.shapes.setdefault(t, tuple(shape))
                n_out = self._num_outputs(op)
                outputs = [tid(name, ni, j) for j in range(n_out)]
                if ni == 0:
                    for j, t in enumerate(self._outputs_of(op)):
                        self.shapes.setdefault(outputs[j], _shape(t))
                index = ni + call * counts[name]
                if isinstance(op, keras.Model):
                    self.nested_model(op, path, index, inputs, outputs,
                                      entry, node)
                else:
                    self.add_leaf(path, op, index, inputs, outputs, consts,
                                  call_config=node, ref_ids=ref_ids or None)

    @staticmethod
    def _outputs_of(op) -> list:
        try:
            return keras.tree.flatten(op.output)
        except (AttributeError, ValueError, RuntimeError):
            return []

    def _num_outputs(self, op) -> int:
        return max(1, len(self._outputs_of(op)))

    def nested_model(self, op, path, ni, inputs, outputs, entry,
                     call=None):
        """Flattens call ``ni`` of nested model ``op`` (a leaf with a
        reason if its graph cannot be read)."""
        kind = model_kind(op)
        if kind == "subclassed":
            reason = (f"subclassed nested model (class "
                      f"{type(op).__name__}) has no readable graph")
            self.add_leaf(path, op, ni, inputs, outputs, [], reason)
            return
        self.nested[path] = op
        kwargs = (call or {}).get("kwargs") or {}
        self.nested_calls.setdefault(path, {
            k: v for k, v in kwargs.items()
            if not isinstance(v, (dict, list))})
        if kind == "sequential":
            self.sequential(op, path + "/", entry.get("config"), inputs,
                            outputs, call=ni)
        else:
            self.functional(op, path + "/", entry.get("config"), inputs,
                            outputs, call=ni)

    # -- sequential ------------------------------------------------------
    def sequential(self, model, prefix: str, cfg: dict | None,
                   outer_inputs: list | None, outer_outputs: list | None,
                   call: int = 0):
        cfg = cfg if cfg is not None else model.get_config()
        entries = list(cfg["layers"])
        layers = list(model.layers)
        if entries and entries[0]["class_name"] == "InputLayer":
            in_name = entries[0]["config"]["name"]
        else:
            in_name = f"{model.name}_input"
        prev = self.tid(prefix, in_name, call, 0)
        if outer_inputs is not None:
            self.alias[prev] = outer_inputs[0]
            self.nested_inputs.setdefault(prefix + in_name, prev)
        else:
            self.shapes[prev] = _shape(model.inputs[0])
            in_layer = None
            for op in getattr(model, "operations", []):
                if isinstance(op, keras.layers.InputLayer):
                    in_layer = op
            self.add_leaf(prefix + in_name, in_layer, 0, [], [prev], [])
        for layer in layers:
            path = prefix + layer.name
            out = self.tid(prefix, layer.name, call, 0)
            try:
                self.shapes[out] = _shape(layer.output)
            except Exception as e:
                raise ValueError(
                    f"Layer {layer.name!r} of Sequential model "
                    f"{model.name!r} has no output shape; build the model "
                    "first.") from e
            if isinstance(layer, keras.Model):
                self.nested_model(layer, path, call, [prev], [out],
                                  {"config": layer.get_config()
                                   if model_kind(layer) != "subclassed"
                                   else None})
            else:
                self.add_leaf(path, layer, call, [prev], [out], [])
            prev = out
        if outer_outputs is not None:
            self.alias[outer_outputs[0]] = prev
        self.seq_output = prev


def _toposort(nodes: list, resolve) -> list:
    produced = {}
    for n in nodes:
        for t in n.outputs:
            produced[resolve(t)] = n.key
    deps = {n.key: {produced[resolve(t)] for t in n.inputs
                    if resolve(t) in produced} for n in nodes}
    order, done = [], set()
    by_key = {n.key: n for n in nodes}
    pending = [n.key for n in nodes]
    while pending:
        progressed = False
        rest = []
        for k in pending:
            if deps[k] <= done:
                order.append(by_key[k])
                done.add(k)
                progressed = True
            else:
                rest.append(k)
        if not progressed:
            raise ValueError(f"Cycle in model graph near {rest[:5]}")
        pending = rest
    return order


def parse_model(model) -> ParsedModel:
    """Reads ``model``'s call graph into a :class:`ParsedModel`.

    Args:
        model: a built functional or Sequential ``keras.Model`` (nested
            functional / Sequential models are flattened).

    Raises:
        TypeError: for non-models and subclassed models.
        ValueError: for models that are not built.

    Example:
        >>> parsed = parse_model(tfcomp.zoo.resnet(depth=8))
        >>> [n.path for n in parsed.nodes][:3]
        ['input_layer', 'stem_conv', 'stem_bn']
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Expected a keras.Model (functional or Sequential). Received: "
            f"model={type(model).__name__}")
    kind = model_kind(model)
    if kind == "subclassed":
        raise TypeError(
            f"Model {model.name!r} (class {type(model).__name__}) is a "
            "subclassed keras.Model: its layer graph is Python code that "
            "tfcomp cannot read without tracing. Rebuild it as a functional "
            "or Sequential model (keras.Input -> layers -> keras.Model).")
    if not model.built:
        raise ValueError(
            f"Model {model.name!r} is not built; call it on data or give it "
            "an input shape first.")
    p = _Parser()
    if kind == "sequential":
        p.sequential(model, "", None, None, None)
        outputs = [p.seq_output]
        inputs = [n.outputs[0] for n in p.nodes if not n.inputs][:1]
    else:
        cfg = model.get_config()
        p.functional(model, "", cfg, None, None)
        outputs = [p.tid("", *r) for r in _output_refs(model, cfg)]
        inputs = [p.tid("", *r) for r in _flat_io_refs(cfg["input_layers"])]
    parsed = ParsedModel(nodes=[], shapes={}, inputs=[], outputs=[],
                         layers=p.layers, nested=p.nested,
                         nested_inputs=p.nested_inputs, alias=p.alias,
                         nested_calls=p.nested_calls)
    res = parsed.resolve
    for n in p.nodes:
        n.inputs = [res(t) for t in n.inputs]
        n.outputs = [res(t) for t in n.outputs]
    shapes = {}
    for t, s in p.shapes.items():
        shapes.setdefault(res(t), s)
    parsed.shapes = shapes
    parsed.nodes = _toposort(p.nodes, res)
    parsed.inputs = [res(t) for t in inputs]
    parsed.outputs = [res(t) for t in outputs]
    return parsed
