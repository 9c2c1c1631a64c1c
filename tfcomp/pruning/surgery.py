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

from tfcomp._compile import carry_compile
from tfcomp.graph import (
    DependencyGraph,
    LayerKeep,
    is_tensor_ref,
    model_kind,
)
from tfcomp.graph.copy import model_from_config, refresh_state

__all__ = ["LayerKeep", "mask_channels", "prune_channels", "weight_masks"]


def _graph_and_keep(model, plan, graph):
    """The graph of ``model`` and the :class:`ChannelKeep` of ``plan``."""
    from tfcomp.pruning.plan import Plan

    if not isinstance(plan, Plan):
        raise TypeError(
            "plan must be a tfcomp.pruning.Plan. Received: "
            f"plan={type(plan).__name__}")
    if graph is None or graph.model is not model:
        graph = DependencyGraph(model)
    return graph, graph.channel_keep(plan.resolve(graph))


def _weighted_layers(graph):
    """``(path, layer)`` of every graph layer that has weights."""
    for path, layer in graph.parsed.layers.items():
        if layer is not None and getattr(layer, "weights", None):
            yield path, layer


def _removed_slices(graph, keep, path):
    """``(port, keep mask, (name, axis, fill))`` for every weight axis of
    ``path`` that loses positions."""
    for p in graph.layer_ports(path):
        if not p.weights:
            continue
        mask = keep.port(p)
        if mask.all():
            continue
        for spec in p.weights:
            fill = float(spec[2]) if len(spec) > 2 else 0.0
            yield p, mask, (spec[0], int(spec[1]), fill)


def _arrays(graph, keep, path, layer, mode):
    variables = list(getattr(layer, "weights", []))
    arrays = [keras.ops.convert_to_numpy(v) for v in variables]
    names = [v.name for v in variables]
    touched = set()
    for p, mask, (name, axis, fill) in _removed_slices(graph, keep, path):
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
    refresh_state(layer)


def _rewrite(graph, keep, cfg, prefix, kind):
    parsed = graph.parsed
    for entry in cfg["layers"]:
        name = entry.get("name") or entry["config"]["name"]
        path = prefix + name
        for node in entry.get("inbound_nodes") or []:
            _fix_refs(graph, keep, node, prefix)
        if path in parsed.nested:
            entry.pop("build_config", None)
            sub = parsed.nested[path]
            _rewrite(graph, keep, entry["config"], path + "/",
                     model_kind(sub))
            continue
        if entry["class_name"] == "InputLayer":
            if path in parsed.nested_inputs:
                tid = parsed.resolve(parsed.nested_inputs[path])
                if graph.has_tensor(tid):
                    n = int(keep.tensor(tid).sum())
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
        layer_keep = keep.layer(path)
        if not layer_keep.changed:
            continue
        handler = graph.handler(path)
        if handler is not None:
            entry["config"] = handler.update_config(
                copy.deepcopy(entry["config"]), layer_keep)
        entry.pop("build_config", None)


def _fix_refs(graph, keep, obj, prefix):
    if is_tensor_ref(obj):
        tid = graph.parsed.tensor_id(obj, prefix)
        shape = obj["config"].get("shape")
        if graph.has_tensor(tid) and shape:
            shape = list(shape)
            shape[-1] = int(keep.tensor(tid).sum())
            obj["config"]["shape"] = shape
        return
    if isinstance(obj, dict):
        for v in obj.values():
            _fix_refs(graph, keep, v, prefix)
    elif isinstance(obj, list):
        for v in obj:
            _fix_refs(graph, keep, v, prefix)


def prune_channels(model: keras.Model, plan, graph: DependencyGraph | None
                   = None) -> keras.Model:
    """Returns a new, physically smaller model with the plan's channels gone.

    The model is rebuilt from its own config with the new widths and
    sliced weights; the input model is untouched. Inputs and outputs keep
    their shapes. ``Lambda`` layers keep their in-memory Python functions
    (no bytecode deserialisation, so no ``safe_mode`` error; see
    :mod:`tfcomp.graph.copy`). A compiled ``model`` gives a model compiled
    the same way (:func:`tfcomp._compile.carry_compile`: optimizer class,
    hyper-parameters and ``iterations``, loss, metrics; optimizer slots of
    sliced weights restart from zero, with a warning).

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
    return carry_compile(model, rebuild_pruned(model, plan, graph),
                         what="the pruned model")


def rebuild_pruned(model: keras.Model, plan, graph: DependencyGraph | None
                   = None) -> keras.Model:
    """:func:`prune_channels` without carrying the compile state: an
    uncompiled model, for callers that overwrite every weight (a
    PruningNet's sampled candidates). Example:
    ``rebuild_pruned(model, plan).compiled is False``."""
    graph, keep = _graph_and_keep(model, plan, graph)
    ser = keras.saving.serialize_keras_object(model)
    ser.pop("compile_config", None)
    ser = copy.deepcopy(ser)
    _rewrite(graph, keep, ser["config"], "", model_kind(model))
    new = model_from_config(ser, model)
    for path, layer in _weighted_layers(graph):
        _, arrays, _ = _arrays(graph, keep, path, layer, "prune")
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

    A copy (not ``inplace``) is compiled like a compiled ``model``, as in
    :func:`prune_channels`.

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
    graph, keep = _graph_and_keep(model, plan, graph)
    if inplace:
        new = model
    else:
        ser = copy.deepcopy(keras.saving.serialize_keras_object(model))
        ser.pop("compile_config", None)
        new = model_from_config(ser, model)
    for path, layer in _weighted_layers(graph):
        _, arrays, touched = _arrays(graph, keep, path, layer, "mask")
        target = layer if inplace else _get_layer(new, path)
        if inplace:
            for i in touched:
                target.weights[i].assign(arrays[i])
            refresh_state(target)
        else:
            _assign(target, arrays, path)
    return new if inplace else carry_compile(model, new,
                                             what="the masked model")


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
    graph, keep = _graph_and_keep(model, plan, graph)
    out = {}
    for path, layer in _weighted_layers(graph):
        variables = list(layer.weights)
        ones = [np.ones(tuple(v.shape), "float32") for v in variables]
        names = [v.name for v in variables]
        for _, mask, (name, axis, _) in _removed_slices(graph, keep, path):
            for i, n in enumerate(names):
                if n == name:
                    idx = [slice(None)] * ones[i].ndim
                    idx[axis] = ~mask
                    ones[i][tuple(idx)] = 0.0
                    out[(path, n)] = ones[i]
    return out
