"""``TimeDistributed(inner)`` calls rewritten as ``inner`` on the time steps
folded into the batch, so ``quantize_model`` plans them like plain layers.

``fold_time_distributed(graph)`` rebuilds the float model with every
foldable ``TimeDistributed`` call replaced by ``keras.ops.reshape(x, (-1,
*step_shape))``, a copy of the inner layer (named like the wrapper, same
weights) and ``keras.ops.reshape(y, (-1, T, *out_step_shape))``. A tensor
read only by other folded calls stays folded (no reshape pair between two
``TimeDistributed`` layers), so a ``TimeDistributed(Conv2D)`` followed by a
``TimeDistributed(BatchNormalization)`` is a Conv2D -> BatchNormalization
pair for the planner (BN folding, ReLU fusion, observers unchanged). The
function is the same (``TimeDistributed`` calls the inner layer on each
step; the steps are independent), and TFLite runs it as RESHAPE + one op
instead of T ops.

A call stays a float ``TimeDistributed`` (with its reason) when its time
axis or step shape is not static, its inner layer is not one of Keras' own
per-step layers (a model, a wrapper, a recurrent layer, a ``Lambda``, a
subclass), or a mask may reach a layer that takes one.

Example:
    >>> folded = fold_time_distributed(read_graph(model))
    >>> folded.model is None or folded.names
"""

from __future__ import annotations

import dataclasses
import functools
import inspect

import keras

from tfcomp.graph.copy import model_like, refresh_state
from tfcomp.graph.outputs import output_structure, pack_like_inputs
from tfcomp.graph.replay import TensorId
from tfcomp.quantization._graph import clone_layer, new_inputs

__all__ = ["Folded", "fold_time_distributed", "fold_reason",
           "reshape_op_class"]

_TD = keras.layers.TimeDistributed


@functools.lru_cache(maxsize=None)
def reshape_op_class() -> type:
    """The class of the operation ``keras.ops.reshape`` adds to a
    functional graph (read off a one-op model: it is not exported).

    Example:
        >>> reshape_op_class().__name__
        'Reshape'
    """
    x = keras.Input((1,), name="tfcomp_reshape_probe_input")
    probe = keras.Model(x, keras.ops.reshape(x, (-1,)),
                        name="tfcomp_reshape_probe")
    return type(probe.operations[-1])


def _reshape(name: str, shape: tuple):
    """A ``keras.ops.reshape`` operation to ``shape`` named ``name``."""
    return reshape_op_class().from_config({"name": name,
                                           "newshape": tuple(shape)})


@dataclasses.dataclass
class Folded:
    """The result of :func:`fold_time_distributed`.

    Attributes:
        model: the rewritten float model, or None when no call was folded.
        names: the folded ``TimeDistributed`` layers (flat names).
        kept: ``{name: reason}`` of the ``TimeDistributed`` layers left
            as they are.
    """

    model: object
    names: list
    kept: dict


def _masked(graph, tid) -> bool:
    """Whether a Keras mask may reach ``tid`` (an ``Embedding(mask_zero=
    True)`` or a ``Masking`` upstream)."""
    for node in graph.parsed.upstream([tid]):
        layer = node.op
        if type(layer) is keras.layers.Masking or (
                type(layer) is keras.layers.Embedding and layer.mask_zero):
            return True
    return False


def _static(shape) -> bool:
    return len(shape) >= 3 and all(d is not None for d in shape[1:])


def fold_reason(graph, node) -> str | None:
    """Why the ``TimeDistributed`` call ``node`` cannot be folded, or None.

    Example:
        >>> fold_reason(graph, graph.nodes_of("td")[0]) is None
        True
    """
    inner = node.layer.layer
    cls = type(inner).__name__
    head = f"TimeDistributed({cls})"
    if (getattr(keras.layers, cls, None) is not type(inner)
            or isinstance(inner, (keras.Model, keras.layers.Wrapper,
                                  keras.layers.RNN, keras.layers.Lambda,
                                  keras.layers.InputLayer))):
        return (f"{head}: only Keras' own single-step layers inside "
                "TimeDistributed are quantized (kept float)")
    simple = (len(node.args) == 1 and isinstance(node.args[0], TensorId)
              and all(v is None for v in node.kwargs.values()))
    if len(node.inputs) != 1 or len(node.outputs) != 1 or not simple:
        return f"{head}: called with extra arguments (kept float)"
    shape, out = graph.shape(node.inputs[0]), graph.shape(node.outputs[0])
    if not (_static(shape) and _static(out) and shape[1] == out[1]):
        return (f"{head} on input shape {shape}: the time axis (axis 1) and "
                "the step shape must be static to fold the steps into the "
                "batch (kept float)")
    if "mask" in inspect.signature(inner.call).parameters and _masked(
            graph, node.inputs[0]):
        return f"{head}: its input may carry a Keras mask (kept float)"
    return None


class _Folder:
    def __init__(self, graph, fold: set):
        self.graph = graph
        self.fold = fold
        self.used = {n.name for n in graph.nodes} | set(graph.parsed.layers)
        self.tmap = {}  # tensor id -> tensor (batch, T, ...)
        self.folded = {}  # tensor id -> tensor (batch * T, ...)
        self.layers = {}  # flat name -> new layer

    def name(self, base: str) -> str:
        name, i = base, 1
        while name in self.used:
            name = f"{base}_{i}"
            i += 1
        self.used.add(name)
        return name

    def unfolded(self, tid):
        if tid not in self.tmap:
            shape = self.graph.shape(tid)
            op = _reshape(self.name(f"{self.graph.producer(tid).name}"
                                    "_unfold"), (-1, *shape[1:]))
            self.tmap[tid] = op(self.folded[tid])
        return self.tmap[tid]

    def folded_input(self, tid, consumer: str):
        if tid not in self.folded:
            shape = self.graph.shape(tid)
            op = _reshape(self.name(f"{consumer}_fold"), (-1, *shape[2:]))
            self.folded[tid] = op(self.unfolded(tid))
        return self.folded[tid]

    def made(self, name: str, source):
        """``(layer, first)``: the copy of ``source`` for flat name
        ``name``, made once (a shared layer stays shared)."""
        layer = self.layers.get(name)
        if layer is not None:
            return layer, False
        layer = self.layers[name] = clone_layer(source, name)
        return layer, True

    @staticmethod
    def load(layer, source) -> None:
        """Copies ``source``'s weights once the first call built ``layer``."""
        if isinstance(layer, keras.layers.Layer):
            layer.set_weights(source.get_weights())
            refresh_state(layer)

    def build(self):
        graph, model = self.graph, self.graph.model
        inputs = new_inputs(model)
        self.tmap.update(zip(graph.inputs, inputs))
        for node in graph.nodes:
            folded = node.name in self.fold
            source = node.layer.layer if folded else node.layer
            layer, first = self.made(node.name, source)
            if folded:
                x = self.folded_input(node.inputs[0], node.name)
                self.folded[node.outputs[0]] = layer(x)
            else:
                for t in node.inputs:
                    self.unfolded(t)
                y = node.call(layer, self.tmap)
                for to, tn in zip(node.outputs, keras.tree.flatten(y)):
                    self.tmap[to] = tn
            if first:
                self.load(layer, source)
        outputs = keras.tree.pack_sequence_as(
            output_structure(model), [self.unfolded(t) for t in graph.outputs])
        if isinstance(outputs, list) and len(outputs) == 1:
            outputs = outputs[0]
        inputs = pack_like_inputs(model, inputs)
        return model_like(model, inputs, outputs)


def fold_time_distributed(graph) -> Folded:
    """The float model of ``graph`` with its foldable ``TimeDistributed``
    calls as reshape -> inner layer -> reshape (see the module doc).

    Args:
        graph: a :func:`~tfcomp.quantization._graph.read_graph` graph.

    Returns:
        A :class:`Folded` (``model`` None when nothing was folded).

    Example:
        >>> folded = fold_time_distributed(read_graph(model))
        >>> folded.names
        ['time_distributed', 'time_distributed_1']
    """
    kept, fold = {}, []
    for name, layer, nodes in graph.layers():
        if type(layer) is not _TD:
            continue
        reasons = [fold_reason(graph, n) for n in nodes]
        reason = next((r for r in reasons if r is not None), None)
        if reason is None:
            fold.append(name)
        else:
            kept[name] = reason
    if not fold:
        return Folded(None, [], kept)
    return Folded(_Folder(graph, set(fold)).build(), fold, kept)
