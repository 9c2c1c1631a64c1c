"""Physical channel removal (``prune_channels``) and its soft form
(``mask_channels``).

``prune_channels`` rebuilds the model from its own config with the new
widths (``filters`` / ``units`` / reshape targets / nested input shapes) and
copies sliced weights: the result is an ordinary, smaller functional model
with no zero channels and no gather/slice ops, that saves and loads as
``.keras``. ``mask_channels`` keeps the architecture and zeroes every weight
slice the plan removes: producer filters and biases, per-channel parameters
(BatchNorm gamma/beta/mean, so the channel is exactly zero after BN) and the
consumers' input slices. Because consumers ignore removed channels in both
forms, ``prune_channels(m, p)(x) == mask_channels(m, p)(x)`` up to float
error, except after normalisations whose statistics span the channel axis
(LayerNormalization / GroupNormalization), where pruning changes the
statistics.
"""

from __future__ import annotations

import copy

import keras
import numpy as np

from tfcomp.graph import DependencyGraph
from tfcomp.graph._parse import is_tensor_ref, model_kind

__all__ = ["LayerKeep", "mask_channels", "prune_channels", "weight_masks"]


class LayerKeep:
    """Kept-channel masks of one layer, handed to ``update_config``.

    Example:
        >>> keep.port("out").sum()      # filters left
        >>> keep.input(0)               # bool mask of input 0's channels
    """

    def __init__(self, graph, rc, path):
        self.path = path
        self._ports = {}
        for p in graph._layer_ports(path):
            if p.node_key is not None and not p.node_key.endswith("#0"):
                continue
            if p.name in self._ports and p.node_key is not None:
                continue
            self._ports[p.name] = (p, graph._port_keep(p, rc))
        nodes = graph._b.layer_nodes.get(path, [])
        node = nodes[0] if nodes else None
        self._inputs = ([graph._tensor_keep(t, rc) for t in node.inputs]
                        if node else [])
        self._outputs = ([graph._tensor_keep(t, rc) for t in node.outputs]
                         if node else [])
        self.config_ports = {p.config_key: int(m.sum())
                             for p, m in self._ports.values() if p.config_key}

    def has_port(self, name) -> bool:
        return name in self._ports

    def port(self, name) -> np.ndarray:
        return self._ports[name][1]

    def port_role(self, name) -> str:
        return self._ports[name][0].role

    def input(self, i: int = 0) -> np.ndarray:
        return self._inputs[i]

    def output(self, j: int = 0) -> np.ndarray:
        return self._outputs[j]

    @property
    def changed(self) -> bool:
        masks = [m for _, m in self._ports.values()]
        masks += self._inputs + self._outputs
        return any(not m.all() for m in masks)


def _graph_and_removed(model, plan, graph):
    from tfcomp.pruning.plan import Plan

    if not isinstance(plan, Plan):
        raise TypeError(
            "plan must be a tfcomp.pruning.Plan. Received: "
            f"plan={type(plan).__name__}")
    if graph is None or graph.model is not model:
        graph = DependencyGraph(model)
    removed = plan.resolve(graph)
    return graph, removed, graph._removed_comps(removed)


def _arrays(graph, rc, path, layer, mode):
    variables = list(getattr(layer, "weights", []))
    arrays = [keras.ops.convert_to_numpy(v) for v in variables]
    names = [v.name for v in variables]
    touched = set()
    for p in graph._layer_ports(path):
        if not p.weights:
            continue
        mask = graph._port_keep(p, rc)
        if mask.all():
            continue
        for spec in p.weights:
            name, axis = spec[0], int(spec[1])
            fill = float(spec[2]) if len(spec) > 2 else 0.0
            for i, n in enumerate(names):
                if n != name:
                    continue
                arr = arrays[i]
                if arr.ndim == 0 or arr.shape[axis] != p.size:
                    raise ValueError(
                        f"Layer {path!r}: variable {name!r} has shape "
                        f"{arr.shape}, expected {p.size} on axis {axis}.")
                if mode == "prune":
                    arrays[i] = np.take(arr, np.flatnonzero(mask), axis=axis)
                else:
                    arr = arr.copy()
                    idx = [slice(None)] * arr.ndim
                    idx[axis] = ~mask
                    arr[tuple(idx)] = fill
                    arrays[i] = arr
                touched.add(i)
    return variables, arrays, touched


def _get_layer(model, path: str):
    obj = model
    for part in path.split("/"):
        obj = obj.get_layer(part)
    return obj


def _assign(layer, arrays, path):
    variables = list(layer.weights)
    if len(variables) != len(arrays):
        raise ValueError(
            f"Layer {path!r}: rebuilt layer has {len(variables)} weights, "
            f"expected {len(arrays)}.")
    for v, a in zip(variables, arrays):
        if tuple(v.shape) != tuple(a.shape):
            raise ValueError(
                f"Layer {path!r}: weight {v.name!r} has shape "
                f"{tuple(v.shape)} after rebuilding but the sliced weight "
                f"has shape {a.shape}.")
        v.assign(a)


def _rewrite(graph, rc, cfg, prefix, kind, seq_input=None):
    parsed = graph._parsed
    for entry in cfg["layers"]:
        name = entry.get("name") or entry["config"]["name"]
        path = prefix + name
        for node in entry.get("inbound_nodes") or []:
            _fix_refs(graph, rc, node, prefix)
        if path in parsed.nested:
            entry.pop("build_config", None)
            sub = parsed.nested[path]
            _rewrite(graph, rc, entry["config"], path + "/",
                     model_kind(sub))
            continue
        if entry["class_name"] == "InputLayer":
            if path in parsed.nested_inputs:
                tid = parsed.resolve(parsed.nested_inputs[path])
                if tid in graph._b.tensors:
                    n = int(graph._tensor_keep(tid, rc).sum())
                    shape = list(entry["config"]["batch_shape"])
                    shape[-1] = n
                    entry["config"]["batch_shape"] = shape
                    if kind == "sequential" and "build_input_shape" in cfg:
                        bis = list(cfg["build_input_shape"])
                        bis[-1] = n
                        cfg["build_input_shape"] = bis
            continue
        if path not in parsed.layers:
            continue
        keep = LayerKeep(graph, rc, path)
        if not keep.changed:
            continue
        handler = graph._b.handlers.get(path)
        if handler is not None:
            entry["config"] = handler.update_config(
                copy.deepcopy(entry["config"]), keep)
        entry.pop("build_config", None)


def _fix_refs(graph, rc, obj, prefix):
    if is_tensor_ref(obj):
        h = obj["config"]["keras_history"]
        tid = graph._parsed.resolve(f"{prefix}{h[0]}:{int(h[1])}:{int(h[2])}")
        shape = obj["config"].get("shape")
        if tid in graph._b.tensors and shape:
            shape = list(shape)
            shape[-1] = int(graph._tensor_keep(tid, rc).sum())
            obj["config"]["shape"] = shape
        return
    if isinstance(obj, dict):
        for v in obj.values():
            _fix_refs(graph, rc, v, prefix)
    elif isinstance(obj, list):
        for v in obj:
            _fix_refs(graph, rc, v, prefix)


def prune_channels(model: keras.Model, plan, graph: DependencyGraph | None
                   = None) -> keras.Model:
    """Returns a new, physically smaller model with the plan's channels gone.

    The model is rebuilt from its own config with the new widths and
    sliced weights; the input model is untouched. Inputs and outputs keep
    their shapes. The result is not compiled.

    Args:
        model: a functional or Sequential ``keras.Model``.
        plan: a :class:`tfcomp.pruning.Plan` (made for this architecture).
        graph: optional ``DependencyGraph(model)`` to reuse.

    Returns:
        The pruned ``keras.Model``.

    Raises:
        ValueError: if the plan was made for another architecture.

    Example:
        >>> plan = tfcomp.pruning.make_plan(model, ratio=0.5)
        >>> small = tfcomp.prune_channels(model, plan)
        >>> small.save("small.keras")
    """
    graph, _, rc = _graph_and_removed(model, plan, graph)
    ser = keras.saving.serialize_keras_object(model)
    ser.pop("compile_config", None)
    ser = copy.deepcopy(ser)
    _rewrite(graph, rc, ser["config"], "", model_kind(model))
    new = keras.saving.deserialize_keras_object(ser)
    for path, layer in graph._parsed.layers.items():
        if layer is None or not getattr(layer, "weights", None):
            continue
        _, arrays, _ = _arrays(graph, rc, path, layer, "prune")
        _assign(_get_layer(new, path), arrays, path)
    return new


def mask_channels(model: keras.Model, plan, inplace: bool = False,
                  graph: DependencyGraph | None = None) -> keras.Model:
    """Zeroes the plan's channels, keeping the architecture (soft pruning).

    Producer filters and biases, per-channel parameters (BatchNorm gamma,
    beta and moving mean; moving variance is set to 1) and the consumers'
    input slices of every removed channel are set to zero, so the removed
    channels are exactly zero after BN and are ignored downstream:
    ``mask_channels(m, p)(x)`` equals ``prune_channels(m, p)(x)``.

    Args:
        model: a functional or Sequential ``keras.Model``.
        plan: a :class:`tfcomp.pruning.Plan`.
        inplace: zero ``model``'s own weights (e.g. from an FPGM callback at
            each epoch end) instead of returning a copy.
        graph: optional ``DependencyGraph(model)`` to reuse.

    Returns:
        The masked model (``model`` itself when ``inplace``).

    Example:
        >>> soft = tfcomp.pruning.mask_channels(model, plan)
    """
    graph, _, rc = _graph_and_removed(model, plan, graph)
    if inplace:
        new = model
    else:
        ser = copy.deepcopy(keras.saving.serialize_keras_object(model))
        ser.pop("compile_config", None)
        new = keras.saving.deserialize_keras_object(ser)
    for path, layer in graph._parsed.layers.items():
        if layer is None or not getattr(layer, "weights", None):
            continue
        _, arrays, touched = _arrays(graph, rc, path, layer, "mask")
        target = layer if inplace else _get_layer(new, path)
        if inplace:
            for i in touched:
                target.weights[i].assign(arrays[i])
        else:
            _assign(target, arrays, path)
    return new


def weight_masks(model: keras.Model, plan,
                 graph: DependencyGraph | None = None) -> dict:
    """0/1 float masks of every weight the plan touches.

    Useful to zero gradients of removed filters while training (the FPGM
    official code does) or to re-apply a mask after an optimizer step.

    Returns:
        ``{(layer_path, variable_name): mask}`` with the variable's shape.

    Example:
        >>> masks = tfcomp.pruning.weight_masks(model, plan)
        >>> masks[("conv1", "kernel")].mean()
    """
    graph, _, rc = _graph_and_removed(model, plan, graph)
    out = {}
    for path, layer in graph._parsed.layers.items():
        if layer is None or not getattr(layer, "weights", None):
            continue
        variables = list(layer.weights)
        ones = [np.ones(tuple(v.shape), "float32") for v in variables]
        names = [v.name for v in variables]
        for p in graph._layer_ports(path):
            mask = graph._port_keep(p, rc)
            if not p.weights or mask.all():
                continue
            for spec in p.weights:
                for i, n in enumerate(names):
                    if n == spec[0]:
                        idx = [slice(None)] * ones[i].ndim
                        idx[int(spec[1])] = ~mask
                        ones[i][tuple(idx)] = 0.0
                        out[(path, n)] = ones[i]
    return out
