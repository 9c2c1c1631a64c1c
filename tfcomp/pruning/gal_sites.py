"""Where GAL's soft masks go, and how a channel mask folds into weights.

:func:`channel_sites` places one mask per prunable channel group of the
:class:`tfcomp.graph.DependencyGraph` at the inputs of the group's
consumers. The mask has one entry per group *unit* (what the graph can
remove as one): usually a channel, but a grouped convolution ties input
position ``p`` of every group (unit ``c % (cin / groups)`` for channel
``c``), a GroupNormalization ties its groups' channels and a
``Flatten -> Dense`` reads each channel at every pixel; such a mask is
expanded per channel by its ``units`` (:class:`~tfcomp.layers.soft_mask.
SoftMask`). A group is skipped (with its reason) when a consumer reads the
channels together with another group's, is called more than once, or has
input weights the mask cannot be folded into (:func:`fold_channel_mask`).
A SeparableConv consumer's input mask is folded into its depthwise kernel
(the pointwise kernel reads the same channels, unbiased, inside it).

:func:`block_sites` masks the residual branches of every ``Add`` (the
layer, or a residual sum written ``x + y`` / ``keras.ops.add`` of two
tensors, as keras.applications' ConvNeXt writes it): the
operand(s) with the fewest weighted layers since the operands' common
ancestors are the shortcut(s), kept; every other operand (the branch) gets
a scalar mask. Two-input ``Add`` s (either operand order),
``keras.layers.add`` of three or more inputs and 1x1 projection shortcuts
(a shortcut with one conv, a branch with two) all follow the rule; an
``Add`` whose operands are equally deep has no branch and is skipped.

Reference: Lin et al., Towards Optimal Structured CNN Pruning via
Generative Adversarial Learning, CVPR 2019, arXiv:1903.09291.

Example:
    >>> sites, skipped = channel_sites(model)   # {consumer: (name, units)}
    >>> sites, skipped = block_sites(model)     # {add: [(operand, name)]}
"""

from __future__ import annotations

import re

import keras
import numpy as np

from tfcomp.graph import CONSUMER, DependencyGraph, ops_name, parse_model

__all__ = ["add_operands", "block_sites", "channel_sites",
           "fold_channel_mask", "input_weights", "is_residual_add",
           "tensor_units", "with_operands"]


_SEPARABLE = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)


def mask_name(key: str) -> str:
    """The SoftMask layer name for a group id / Add path."""
    return "gal_mask_" + re.sub(r"[^0-9A-Za-z_]", "_", key)


def is_residual_add(op, n_inputs: int) -> bool:
    """An ``Add`` layer, or a ``keras.ops`` add of two tensors (``x + y``;
    ``x + 3.0`` has one tensor input and is not a residual sum).

    Example:
        >>> is_residual_add(keras.layers.Add(), 2)
        True
    """
    if isinstance(op, keras.layers.Add):
        return True
    return ops_name(op) == "Add" and n_inputs == 2


def add_operands(op, args) -> list:
    """The summed tensors of an ``Add`` call's positional ``args`` (the
    layer takes a list, ``keras.ops.add`` two arguments).

    Example:
        >>> add_operands(keras.layers.Add(), ([a, b],))
        [a, b]
    """
    return list(args[0]) if isinstance(op, keras.layers.Layer) \
        else list(args[:2])


def with_operands(op, args, operands) -> tuple:
    """``args`` of an ``Add`` call with its summed tensors replaced.

    Example:
        >>> with_operands(keras.layers.Add(), ([a, b],), [a, masked_b])
        ([a, masked_b],)
    """
    if isinstance(op, keras.layers.Layer):
        return (list(operands),) + tuple(args[1:])
    return tuple(operands) + tuple(args[2:])


def _has_kernel(layer) -> bool:
    return any(len(v.shape) >= 2 for v in getattr(layer, "weights", []))


def tensor_units(graph, tid: str, group):
    """The unit of ``group`` carried by each channel of tensor ``tid``
    (an int array), or None when a channel belongs to another group.

    Found with :meth:`DependencyGraph.channel_keep` (bit ``b`` of a unit's
    index: the channels lost when removing the units with that bit set).

    Example:
        >>> tensor_units(graph, "conv1:0:0", graph.group("conv1"))
        array([0, 1, 2, 3])
    """
    tid = graph.parsed.resolve(tid)
    if not graph.has_tensor(tid) or not graph.tensor_channels(tid):
        return None
    every = np.arange(group.size)
    if graph.channel_keep({group.id: every}).tensor(tid).any():
        return None
    units = np.zeros(graph.tensor_channels(tid), np.int64)
    for b in range(max(1, int(group.size - 1).bit_length())):
        sel = every[(every >> b) & 1 == 1]
        if sel.size:
            gone = ~graph.channel_keep({group.id: sel}).tensor(tid)
            units |= gone.astype(np.int64) << b
    return units


def fold_channel_mask(layer, name: str, axis: int, arr, full):
    """``arr`` (variable ``name`` of ``layer``, input channels on ``axis``)
    scaled by ``full`` (one factor per input channel), or None when the
    axis does not match.

    A grouped convolution's kernel ``(..., cin / groups, out)`` is scaled
    at ``[..., p, o]`` by ``full[(o // (out / groups)) * cin / groups + p]``
    (group ``g`` reads input channels ``g * cin / groups + p``).

    Example:
        >>> k = fold_channel_mask(conv, "kernel", -2, kernel, mask)
    """
    arr = np.asarray(arr)
    full = np.asarray(full, arr.dtype)
    axis = axis % arr.ndim
    n = arr.shape[axis]
    if n == full.size:
        shape = [1] * arr.ndim
        shape[axis] = n
        return arr * full.reshape(shape)
    groups = int(getattr(layer, "groups", 1) or 1)
    out = arr.shape[-1]
    if (groups > 1 and name == "kernel" and axis == arr.ndim - 2
            and n * groups == full.size and out % groups == 0):
        p = np.arange(n)[:, None]
        o = np.arange(out)[None, :]
        return arr * full[(o // (out // groups)) * n + p]
    return None


def input_weights(graph, path: str, layer) -> list:
    """``[(variable name, axis, array)]`` of the consumer input port
    ``"in"`` of the layer at ``path``.

    Example:
        >>> [w[0] for w in input_weights(graph, "conv2", conv2)]
        ['kernel']
    """
    out = []
    for p in graph.layer_ports(path):
        if p.role != CONSUMER or p.name != "in":
            continue
        for spec in p.weights:
            name, axis = spec[0], int(spec[1])
            var = next(v for v in layer.weights if v.name == name)
            out.append((name, axis, keras.ops.convert_to_numpy(var)))
    return out


def _consumer_reason(graph, g, m, layout):
    """``(reason or None, units)`` of consumer member ``m`` of group ``g``
    (``layout``: the units an earlier consumer read, or None)."""
    parsed = graph.parsed
    if m.port == "mid" and isinstance(parsed.layer(m.layer), _SEPARABLE) \
            and any(o.layer == m.layer and o.port == "in"
                    for o in g.consumers):
        # the depthwise step (no bias) carries a masked input channel to
        # the pointwise kernel: the input mask covers both
        return None, layout
    if m.port != "in":
        return (f"consumer {m.layer!r} reads the channels inside the "
                f"layer (port {m.port!r}), where no input mask reaches",
                None)
    if not m.covers_all:
        return (f"consumer {m.layer!r} reads the channels together with "
                f"other channels ({len(m.indices)} of {m.port_size} input "
                "positions)", None)
    nodes = parsed.nodes_of(m.layer)
    if len(nodes) != 1:
        return (f"consumer {m.layer!r} is shared ({len(nodes)} calls)",
                None)
    units = tensor_units(graph, nodes[0].inputs[0], g)
    if units is None or set(units.tolist()) != set(range(g.size)):
        return (f"consumer {m.layer!r} reads a tensor that mixes this "
                "group's channels with others", None)
    if layout is not None and not np.array_equal(units, layout):
        return ("consumers read the channels in different layouts "
                f"({m.layer!r})", None)
    layer = parsed.layer(m.layer)
    ws = input_weights(graph, m.layer, layer)
    ones = np.ones(units.size, "float32")
    if not ws or any(fold_channel_mask(layer, n, a, w, ones) is None
                     for n, a, w in ws):
        return (f"a channel mask cannot be folded into consumer "
                f"{m.layer!r} ({type(layer).__name__}) input weights", None)
    return None, units


def channel_sites(model):
    """``({consumer path: (mask name, units or None)}, {group: reason})``.

    Example:
        >>> sites, skipped = channel_sites(model)
    """
    graph = DependencyGraph(model)
    sites, skipped = {}, {}
    for g in graph.prunable_groups:
        cons = [m for m in g.consumers if m.port == "in"]
        reason, layout = (None if cons else "no consumer layer"), None
        recurrent = [m.layer for m in g.producers if isinstance(
            graph.layer(m.layer), (keras.layers.RNN, keras.layers.Bidirectional))]
        if recurrent:
            reason = (f"units of recurrent layer {recurrent[0]!r}: a mask on "
                      "its output is not a removed unit (the unit still "
                      "feeds its own recurrence)")
        scores = [m.layer for m in g.members if m.port == "qk"]
        if scores and reason is None:
            reason = (f"query / key channels of attention layer "
                      f"{scores[0]!r}: a mask on its consumers' inputs is "
                      "not a removed channel (the channel still adds to the "
                      "attention scores)")
        for m in g.consumers:
            if reason is not None:
                break
            reason, layout = _consumer_reason(graph, g, m, layout)
        if reason is not None:
            skipped[g.id] = reason
            continue
        units = None if np.array_equal(layout, np.arange(g.size)) \
            else tuple(layout.tolist())
        sites.update({m.layer: (mask_name(g.id), units) for m in cons})
    return sites, skipped


def _branches(parsed, node):
    """Operands of an ``Add`` node that are residual branches (the others
    have the fewest weighted layers since the common ancestors)."""
    n = len(node.inputs)
    if n < 2:
        return []
    anc = [{k.key for k in parsed.upstream([t])} for t in node.inputs]
    counts = []
    for i in range(n):
        others = set().union(*(anc[j] for j in range(n) if j != i))
        counts.append(sum(_has_kernel(parsed.node(k).layer)
                          for k in anc[i] - others))
    low = min(counts)
    return [i for i in range(n) if counts[i] > low]


def block_sites(model):
    """``({add path: [(operand index, mask name)]}, {add path: reason})``.

    Example:
        >>> sites, skipped = block_sites(tfcomp.zoo.resnet(depth=20))
    """
    parsed = parse_model(model)
    sites, skipped = {}, {}
    for node in parsed.nodes:
        if not is_residual_add(node.layer, len(node.inputs)):
            continue
        if len(parsed.nodes_of(node.path)) != 1:
            skipped[node.path] = "the Add layer is shared"
            continue
        branches = _branches(parsed, node)
        if not branches:
            skipped[node.path] = ("no residual branch (every operand has "
                                  "as many weighted layers)")
            continue
        if len(branches) == 1:
            sites[node.path] = [(branches[0], mask_name(node.path))]
        else:
            sites[node.path] = [(i, mask_name(f"{node.path}_{i}"))
                                for i in branches]
    return sites, skipped
