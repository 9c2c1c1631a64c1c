"""Weights of a MetaPruning :class:`~tfcomp.pruning.PruningNet`: which
variables are generated, the generators, and cropping any layer's weights
to the sampled widths the way ``prune_channels`` crops them.

Every weight axis that carries channels of a prunable group is named by
the layer's channel handler (``graph.layer_ports(path)``: ``(variable,
axis[, fill])`` per port). A :class:`WeightSpec` lists, for one variable,
the ports on its axes; in the supernet the variable is cropped by zeroing
the positions beyond the widths (``fill`` for e.g. a variance), in a
sampled model by slicing them away (:func:`crop_value`).

Example:
    >>> specs, problems = weight_specs(graph, "conv1", model.layers[1])
    >>> [(s.name, [(a, p.name) for a, p, _ in s.axes]) for s in specs]
    [('kernel', [(-2, 'in'), (-1, 'out')]), ('bias', [(0, 'out')])]
"""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np

__all__ = ["GENERATED", "WeightSpec", "channel_units", "crop_value",
           "generated_names", "make_generator", "weight_specs"]

_L = keras.layers
# layer classes -> the variables generated from the channel encoding
GENERATED = (
    ((_L.SeparableConv1D, _L.SeparableConv2D),
     ("depthwise_kernel", "pointwise_kernel")),
    ((_L.Conv1D, _L.Conv2D, _L.Conv3D, _L.Conv1DTranspose,
      _L.Conv2DTranspose, _L.Conv3DTranspose, _L.DepthwiseConv1D,
      _L.DepthwiseConv2D, _L.Dense), ("kernel",)),
)


def generated_names(layer) -> tuple:
    """Names of ``layer``'s variables a generator produces (``()`` for
    layers the paper has no generator for).

    Example:
        >>> generated_names(keras.layers.SeparableConv2D(8, 3))
        ('depthwise_kernel', 'pointwise_kernel')
    """
    for classes, names in GENERATED:
        if isinstance(layer, classes):
            return names
    return ()


@dataclasses.dataclass
class WeightSpec:
    """One variable of a layer and the ports on its axes.

    Attributes:
        index: position in ``layer.weights``.
        name: the variable's name.
        variable: the layer's variable.
        axes: ``(axis, Port, fill)`` per axis that carries channels.
        generated: produced by a generator (else a copy the net owns, or
            the layer's own variable when ``owned`` is False).
        owned: the net holds a copy (trainable or channel-carrying).
    """

    index: int
    name: str
    variable: object
    axes: list
    generated: bool
    owned: bool


def weight_specs(graph, path: str, layer) -> tuple:
    """``([WeightSpec], {Port: reason})`` of layer ``path``.

    A port whose weight entries name no variable of the layer (entries
    may be alternatives: ``kernel`` or ``depthwise_kernel``), or a
    variable whose axis does not have the port's size, cannot be cropped
    consistently: it is returned as a problem (its groups are then kept
    whole) and left out of the specs.

    Example:
        >>> specs, problems = weight_specs(graph, "ln", ln_layer)
    """
    variables = list(getattr(layer, "weights", ()))
    gen = generated_names(layer)
    axes = {i: [] for i in range(len(variables))}
    problems = {}
    for port in graph.layer_ports(path):
        found = []
        for entry in port.weights:
            name, axis = entry[0], int(entry[1])
            fill = float(entry[2]) if len(entry) > 2 else 0.0
            hits = [i for i, v in enumerate(variables) if v.name == name]
            if any(len(variables[i].shape) == 0
                   or variables[i].shape[axis] != port.size for i in hits):
                found = None  # a variable the port cannot crop
                break
            found += [(i, (axis, port, fill)) for i in hits]
        if port.weights and not found:
            problems[port] = (
                f"layer {path!r} ({type(layer).__name__}): the weights "
                f"{[e[0] for e in port.weights]} of port {port.name!r} "
                f"({port.size} channels) cannot be cropped: no such "
                "variable, or one of another size")
            continue
        for i, a in found:
            axes[i].append(a)
    specs = []
    for i, v in enumerate(variables):
        generated = v.name in gen
        owned = not generated and (v.trainable or bool(axes[i]))
        if generated or owned:
            specs.append(WeightSpec(i, v.name, v, axes[i], generated, owned))
    return specs, problems


def channel_units(graph, groups, tids, ports) -> dict:
    """``{tensor id or port key: (group index or -1, unit)}`` per channel
    position, through ``graph.channel_keep`` (removing a group's units with
    bit b set tells bit b of each position's unit).

    Example:
        >>> gidx, unit = channel_units(graph, groups, ["conv1:0:0"], [])[
        ...     "conv1:0:0"]
    """
    items = {t: (graph.tensor_channels(t), t, None) for t in tids}
    items.update({p.key: (p.size, None, p) for p in ports})

    def mask(keep, tid, port):
        return keep.tensor(tid) if port is None else keep.port(port)

    out = {k: (np.full(c, -1, np.int32), np.zeros(c, np.int32))
           for k, (c, _, _) in items.items()}
    for gi, g in enumerate(groups):
        keep = graph.channel_keep({g.id: np.arange(g.size)})
        member = {k: ~mask(keep, t, p) for k, (_, t, p) in items.items()}
        for k in items:
            out[k][0][member[k]] = gi
        for b in range(max(1, int(g.size - 1).bit_length())):
            units = np.flatnonzero((np.arange(g.size) >> b) & 1)
            keep = graph.channel_keep({g.id: units})
            for k, (_, t, p) in items.items():
                hit = member[k] & ~mask(keep, t, p)
                out[k][1][hit] += 1 << b
    return out


def make_generator(path: str, spec: WeightSpec, hidden: int,
                   init_from_model: bool) -> tuple:
    """``(fc1, fc2, shape)``: ``FC(2 -> hidden) -> ReLU -> FC(-> the
    flattened variable)``; fc2's bias starts at the model's variable when
    ``init_from_model`` (else zero), its kernel small.

    Example:
        >>> fc1, fc2, shape = make_generator("conv1", spec, 32, True)
    """
    shape = tuple(int(d) for d in spec.variable.shape)
    size = int(np.prod(shape))
    init = keras.ops.convert_to_numpy(spec.variable).ravel() \
        if init_from_model else np.zeros(size, "float32")
    std = float(np.std(init)) or math.sqrt(2.0 / max(1, size // shape[-1]))
    base = f"gen_{path}".replace("/", "_")
    if spec.name != "kernel":
        base += f"_{spec.name}"
    fc1 = keras.layers.Dense(hidden, activation="relu", name=f"{base}_fc1")
    fc2 = keras.layers.Dense(
        size, name=f"{base}_fc2",
        kernel_initializer=keras.initializers.RandomNormal(
            0.0, std / math.sqrt(hidden) * (0.01 if init_from_model
                                            else 1.0)),
        bias_initializer=keras.initializers.Constant(init))
    fc1.build((None, 2))
    fc2.build((None, hidden))
    return fc1, fc2, shape


def crop_value(value, spec: WeightSpec, keep) -> np.ndarray:
    """The full-width ``value`` of ``spec``'s variable with every channel
    axis sliced to the positions ``keep`` (a ``ChannelKeep``) keeps, as
    ``prune_channels`` slices it.

    Example:
        >>> crop_value(kernel, spec, graph.channel_keep({"conv1": [0]}))
    """
    out = np.asarray(value)
    for axis, port, _ in spec.axes:
        out = np.compress(keep.port(port), out, axis=axis)
    return out
