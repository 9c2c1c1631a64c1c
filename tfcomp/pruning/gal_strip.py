"""GAL's strip step and the graph rebuild GAL's model edits share.

``strip_gal(student)`` turns a GAL student (:func:`tfcomp.pruning.apply_gal`)
into a plain, smaller model with the same logits: zero block masks remove
their branch (the ``Add`` drops that operand, or becomes its shortcut),
other block masks are folded into the branch's last BatchNormalization (or
a ``Rescaling``), channel masks are folded into their consumers' input
weights (:func:`tfcomp.pruning.gal_sites.fold_channel_mask`: grouped
convolutions included), and units every consumer reads with a zero mask
are removed by :func:`tfcomp.pruning.surgery.prune_channels`.
Re-exported by :mod:`tfcomp.pruning.gal` and :mod:`tfcomp.pruning`.

Reference: Lin et al., Towards Optimal Structured CNN Pruning via
Generative Adversarial Learning, CVPR 2019, arXiv:1903.09291.

Example:
    >>> small = strip_gal(gal.student)  # small(x) == gal.student(x)
"""

from __future__ import annotations

import logging

import keras
import numpy as np

from tfcomp._compile import carry_compile
from tfcomp.graph import DependencyGraph, parse_model
from tfcomp.graph.copy import clone_layer, copy_weights, functional_view
from tfcomp.graph.walk import iter_leaf_layers
from tfcomp.layers.soft_mask import SoftMask, has_soft_masks
from tfcomp.pruning.gal_sites import (
    add_operands,
    fold_channel_mask,
    input_weights,
    tensor_units,
    with_operands,
)
from tfcomp.pruning.wrappers import _check_model

__all__ = ["strip_gal"]

logger = logging.getLogger("tfcomp.pruning")


def _rebuild(model, call_function):
    """``keras.models.clone_model`` with tfcomp's layer copier and a
    ``call_function`` that sees the source layer's path."""
    paths = {id(lyr): p for p, lyr in iter_leaf_layers(model)}
    # keras.ops calls (``x + y``) are not cloned: they keep their identity
    paths.update({id(n.layer): n.path for n in parse_model(model).nodes
                  if not isinstance(n.layer, keras.layers.Layer)})
    origin = {}

    def clone(layer):
        new = clone_layer(layer)
        origin[id(new)] = paths.get(id(layer))
        return new

    def call(layer, *args, **kwargs):
        return call_function(origin.get(id(layer), paths.get(id(layer))),
                             layer, args, kwargs)

    return keras.models.clone_model(model, clone_function=clone,
                                    call_function=call, recursive=True)


def _mask_sites(student):
    """``(channel masks {consumer path: per-channel mask}, blocks {add
    path: {operand index: (m, foldable BN path or None, mask name)}})``."""
    parsed = parse_model(student)
    chan, blocks = {}, {}
    for node in parsed.nodes:
        if not isinstance(node.layer, SoftMask):
            continue
        m = node.layer.channel_mask().astype("float64")
        out = parsed.resolve(node.outputs[0])
        for c in parsed.consumers(out):
            if node.layer.per_channel:
                chan[c.path] = m
                continue
            src = parsed.producer(node.inputs[0])
            bn = None
            if src is not None and isinstance(
                    src.layer, keras.layers.BatchNormalization) and \
                    src.layer.scale and src.layer.center and \
                    len(parsed.consumers(node.inputs[0])) == 1:
                bn = src.path
            blocks.setdefault(c.path, {})[c.inputs.index(out)] = (
                float(m), bn, node.layer.name)
    return chan, blocks


def _consumer_scaled(graph, path, layer, m) -> dict:
    """The consumer's input-side weights scaled by the channel mask."""
    out = {}
    for name, axis, arr in input_weights(graph, path, layer):
        folded = fold_channel_mask(layer, name, axis, arr, m)
        if folded is None:
            raise ValueError(
                f"strip_gal: cannot fold the channel mask ({m.size} "
                f"entries) into variable {name!r} {arr.shape} of layer "
                f"{path!r} ({type(layer).__name__}).")
        out[name] = folded.astype(arr.dtype)
    return out


def _dead_units(graph, chan) -> dict:
    """``{group id: units}`` whose channels every consumer reads with a
    zero mask (a group keeps at least one unit)."""
    removed = {}
    for g in graph.prunable_groups:
        cons = [m for m in g.consumers if m.port == "in"]
        if not cons or any(m.layer not in chan for m in g.consumers):
            continue
        dead = np.ones(g.size, bool)
        for mem in cons:
            nodes = graph.parsed.nodes_of(mem.layer)
            units = tensor_units(graph, nodes[0].inputs[0], g)
            m = chan[mem.layer]
            if units is None or units.size != m.size:
                dead[:] = False
                break
            alive = np.zeros(g.size, bool)
            np.logical_or.at(alive, units, m != 0.0)
            dead &= ~alive
        dead = np.flatnonzero(dead)
        if len(dead) == g.size:  # never remove a whole group
            dead = dead[1:]
        if len(dead):
            removed[g.id] = dead.tolist()
    return removed


def strip_gal(model: keras.Model) -> keras.Model:
    """The plain, smaller model of a GAL student (logits unchanged).

    A zero block mask removes the block's branch (the ``Add`` drops the
    operand; with one operand left it becomes the shortcut); a non-zero
    one is folded into the branch's last BatchNormalization (or kept as a
    ``keras.layers.Rescaling``). Channel masks are folded into their
    consumers' input weights (grouped convolutions included) and the
    units every consumer reads with a zero mask are removed with
    :func:`tfcomp.pruning.surgery.prune_channels` (a group keeps at least
    one unit). A compiled ``model`` gives a model compiled the same way.

    Args:
        model: a GAL student (:func:`apply_gal`), also loaded from .keras
            (functional, or Sequential with an input shape).

    Returns:
        A new model of plain Keras layers.

    Example:
        >>> small = strip_gal(gal.student)  # small(x) == gal.student(x)
    """
    _check_model(model)
    if not has_soft_masks(model):
        raise ValueError(f"strip_gal: model {model.name!r} has no GAL soft "
                         "masks (make the student with apply_gal).")
    source = model
    model = functional_view(model, "strip_gal")
    chan, blocks = _mask_sites(model)
    scales = {}

    def call(path, layer, args, kwargs):
        if isinstance(layer, SoftMask):
            return args[0]
        if path in blocks:
            parts = []
            for i, t in enumerate(add_operands(layer, args)):
                m, bn, name = blocks[path].get(i, (1.0, None, None))
                if m == 0.0:
                    continue
                if name is not None and bn is None:
                    t = keras.layers.Rescaling(m, name=f"{name}_scale")(t)
                elif name is not None:
                    scales[bn] = m
                parts.append(t)
            if len(parts) == 1:  # the shortcut alone
                return parts[0]
            args = with_operands(layer, args, parts)
        return layer(*args, **kwargs)

    plain = _rebuild(model, call)
    graph = DependencyGraph(plain)
    plain_layers = dict(iter_leaf_layers(plain))

    def transform(old):
        path = paths.get(id(old))
        if path in chan and path in plain_layers:
            return _consumer_scaled(graph, path, old, chan[path])
        if path in scales:
            return {n: keras.ops.convert_to_numpy(getattr(old, n)) *
                    scales[path] for n in ("gamma", "beta")}
        return None

    paths = {id(lyr): p for p, lyr in iter_leaf_layers(model)}
    copy_weights(model, plain, transform)
    removed = _dead_units(graph, chan)
    gone = sum(m == 0.0 for ops_ in blocks.values()
               for m, _, _ in ops_.values())
    if removed:
        from tfcomp.pruning.plan import Plan
        from tfcomp.pruning.surgery import prune_channels

        plan = Plan.from_removed(graph, removed,
                                 meta={"source": "tfcomp.pruning.strip_gal"})
        plain = prune_channels(plain, plan, graph=graph)
    logger.info("strip_gal: %r: %d blocks removed, %d channels removed in "
                "%d groups", model.name, gone,
                sum(len(v) for v in removed.values()), len(removed))
    return carry_compile(source, plain, what="the stripped GAL model")
