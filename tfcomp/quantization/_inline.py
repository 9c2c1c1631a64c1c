"""The user's own layer classes opened up into the Keras layers they call,
so ``quantize_model`` quantizes what is inside them.

keras.io writes a Transformer block as a ``keras.layers.Layer`` subclass
holding a ``MultiHeadAttention``, a ``Sequential`` of ``Dense`` layers and
``LayerNormalization`` s; as one opaque layer it stayed float in a QAT
model (and so in its int8 file). ``inline_user_layers(graph)`` rebuilds the
float model with each such call replaced by the layer's own ``call`` run on
the symbolic tensors: Keras then records the inner layers and the
``keras.ops`` between them as nodes of the new functional model (the same
function, the same weights), which the planner reads like any other model.

A copy of the layer is opened (the user's objects gain no nodes); its inner
layers are renamed after the attributes holding them
(``transformer_block_att``, ``transformer_block_ffn``, the ``Sequential``'s
layers by index: flat names ``transformer_block_ffn_0``, ...), so two calls
of ``quantize_model`` (or a sensitivity pass and the ``quantize_model`` it
feeds) name them alike.

An inner layer called on constants only (keras.io's
``TokenAndPositionEmbedding`` and ViT ``PatchEncoder`` look their position
embeddings up on ``ops.arange(...)``) reads them from a
:class:`~tfcomp.layers.Constant` layer fed by the block's input, so it is
a node whose weights train (traced eagerly, its result would be a frozen
constant).

A layer stays one float layer (its reason in the report) when opening it
would not give the same trainable model: a weight of its own (``add_weight``
in the class) or one read outside the inner layers, an inner layer not held
by an attribute, a ``call`` that takes other arguments than tensors, does
not run on symbolic tensors (``tf.*`` functions), or traces to different
operations with ``training=True`` (a Python branch on ``training`` the
functional graph cannot keep).

Example:
    >>> opened = inline_user_layers(read_graph(model))
    >>> opened.names
    ['transformer_block']
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect

import keras

from tfcomp.graph.copy import model_like, refresh_state, user_layer_class
from tfcomp.graph.outputs import output_structure, pack_like_inputs
from tfcomp.graph.replay import TensorId, replay_call
from tfcomp.layers.constant import Constant
from tfcomp.quantization._graph import clone_layer, new_inputs, read_graph

__all__ = ["Inlined", "inline_user_layers", "opened_model"]


@dataclasses.dataclass
class Inlined:
    """The result of :func:`inline_user_layers`.

    Attributes:
        model: the rewritten float model, or None when nothing was opened.
        names: the user layers opened into their inner layers.
        kept: ``{name: reason}`` of the user layers left whole.
    """

    model: object
    names: list
    kept: dict


class _Refused(Exception):
    """A user layer that cannot be opened (the message is the reason)."""


def _candidate(layer) -> bool:
    return (user_layer_class(type(layer)) and bool(layer.weights)
            and not isinstance(layer, keras.Model))


def _held_layers(owner) -> list:
    """``[(attribute, layer)]`` of the layers ``owner`` holds in its
    attributes (lists and tuples of layers indexed), in assignment order."""
    held = []
    for attr, value in vars(owner).items():
        if attr.startswith("_"):
            continue
        if isinstance(value, keras.layers.Layer):
            held.append((attr, value))
        elif isinstance(value, (list, tuple)):
            held.extend((f"{attr}_{i}", v) for i, v in enumerate(value)
                        if isinstance(v, keras.layers.Layer))
    return held


def _rename_inside(owner, prefix: str) -> None:
    """Names every layer ``owner`` holds ``<prefix>_<attribute>`` (the
    layers of a held ``Sequential`` by their index: flat names
    ``<its name>_<index>``), recursively
    through the user's own classes (Keras' layers keep their insides)."""
    for attr, layer in _held_layers(owner):
        layer.name = f"{prefix}_{attr}"
        if isinstance(layer, keras.Sequential):
            for i, inner in enumerate(layer.layers):
                inner.name = str(i)
                if user_layer_class(type(inner)):
                    _rename_inside(inner, f"{layer.name}_{i}")
        elif user_layer_class(type(layer)):
            _rename_inside(layer, layer.name)


class _ConstantFeed:
    """Stands in for an inner layer while its owner's ``call`` is traced:
    a call on constants only (no symbolic tensor) gets them from
    :class:`~tfcomp.layers.Constant` layers fed by ``anchor``, so the inner
    layer is a node of the graph (its weights train) instead of an eager
    call frozen into a constant."""

    def __init__(self, layer, anchor, name: str):
        self.layer, self.anchor, self.name, self.made = layer, anchor, name, 0

    def _symbolic(self, value):
        if isinstance(value, keras.KerasTensor) or not hasattr(
                value, "shape") or not hasattr(value, "dtype"):
            return value
        self.made += 1
        suffix = "" if self.made == 1 else f"_{self.made}"
        value = keras.ops.convert_to_numpy(value)
        return Constant(value, name=f"{self.name}_const{suffix}")(self.anchor)

    def __call__(self, *args, **kwargs):
        flat = keras.tree.flatten((args, kwargs))
        if not any(isinstance(v, keras.KerasTensor) for v in flat):
            args, kwargs = keras.tree.map_structure(self._symbolic,
                                                    (args, kwargs))
        return self.layer(*args, **kwargs)

    def __getattr__(self, attr):
        return getattr(self.layer, attr)


@contextlib.contextmanager
def _constant_feeds(twin, anchor):
    """Puts a :class:`_ConstantFeed` in place of each layer ``twin`` holds
    in a plain attribute, for the duration of the block."""
    held = [(attr, layer) for attr, layer in _held_layers(twin)
            if vars(twin).get(attr) is layer]
    try:
        for attr, layer in held:
            object.__setattr__(twin, attr,
                               _ConstantFeed(layer, anchor, layer.name))
        yield
    finally:
        for attr, layer in held:
            object.__setattr__(twin, attr, layer)


def _trace(twin, node, tensors, **extra):
    """``twin.call`` on the symbolic tensors of ``node``'s arguments, its
    inner layers' calls on constants fed from the first of them."""
    anchor = tensors[node.inputs[0]]
    with _constant_feeds(twin, anchor):
        return replay_call(twin.call, node.args, node.kwargs, tensors,
                           **extra)


def _op_classes(inputs, outputs) -> list:
    probe = keras.Model(inputs, outputs)
    return [type(op).__name__ for op in probe.operations]


class _Opener:
    def __init__(self, graph):
        self.graph = graph
        self.twins = {}  # user layer name -> built, renamed copy

    def twin(self, name: str, layer, node, tensors):
        """The copy of ``layer`` to open, built on ``node``'s inputs with
        ``layer``'s weights, its inner layers renamed."""
        if name in self.twins:
            return self.twins[name]
        simple = all(isinstance(a, TensorId) for a in node.args) and all(
            v is None for k, v in node.kwargs.items() if k != "training")
        if not simple:
            raise _Refused(f"{type(layer).__name__}: called with other "
                           "arguments than tensors (kept float)")
        try:
            twin = clone_layer(layer, name)
        except Exception as exc:  # a class that cannot be rebuilt
            raise _Refused(f"{type(layer).__name__}: cannot be copied to "
                           f"open it ({exc}) (kept float)") from None
        _rename_inside(twin, name)
        replay_call(twin, node.args, {}, tensors)  # builds it
        twin.set_weights(layer.get_weights())
        refresh_state(twin)
        self.twins[name] = twin
        return twin

    def open(self, name: str, layer, node, tensors):
        """The outputs of ``node`` traced through its layer's ``call``."""
        twin = self.twin(name, layer, node, tensors)
        inputs = [tensors[t] for t in node.inputs]
        try:
            out = _trace(twin, node, tensors)
        except Exception as exc:  # tf.* calls, value-dependent Python
            raise _Refused(f"{type(layer).__name__}: its call does not run "
                           f"on symbolic tensors ({exc}) (kept float)"
                           ) from None
        flat = keras.tree.flatten(out)
        probe = keras.Model(inputs, flat)
        stray = [inner.name for inner in probe.layers
                 if not isinstance(inner, keras.layers.InputLayer)
                 and not inner.name.startswith(f"{name}_")]
        if stray:
            raise _Refused(f"{type(layer).__name__}: calls layers not held "
                           f"in its attributes ({stray[:3]}) (kept float)")
        reached = {id(v) for v in probe.weights}
        frozen = [v.path for v in twin.weights if id(v) not in reached]
        if frozen:
            raise _Refused(
                f"{type(layer).__name__}: its weights {frozen[:3]} are not "
                "read through an inner layer called in its call (an "
                "add_weight of its own?) (kept float)")
        if "training" in inspect.signature(twin.call).parameters:
            try:
                trained = _op_classes(inputs, keras.tree.flatten(
                    _trace(twin, node, tensors, training=True)))
            except Exception:  # the training branch does not trace
                trained = None
            if trained != _op_classes(inputs, flat):
                raise _Refused(
                    f"{type(layer).__name__}: its call branches on "
                    "'training' in Python (kept float)")
        return out

    def build(self, opened: list, kept: dict):
        graph, model = self.graph, self.graph.model
        inputs = new_inputs(model)
        tensors = dict(zip(graph.inputs, inputs))
        for node in graph.nodes:
            out = None
            if _candidate(node.layer) and node.name not in kept:
                try:
                    out = self.open(node.name, node.layer, node, tensors)
                    if node.name not in opened:
                        opened.append(node.name)
                except _Refused as exc:
                    kept[node.name] = str(exc)
            if out is None:
                out = node.call(node.layer, tensors)
            for t, v in zip(node.outputs, keras.tree.flatten(out)):
                tensors[t] = v
        outputs = keras.tree.pack_sequence_as(
            output_structure(model), [tensors[t] for t in graph.outputs])
        if isinstance(outputs, list) and len(outputs) == 1:
            outputs = outputs[0]
        return model_like(model, pack_like_inputs(model, inputs), outputs)


def inline_user_layers(graph, whole=()) -> Inlined:
    """The float model of ``graph`` with the user's own layers that hold
    weights opened into the layers they call (see the module doc).

    Args:
        graph: a :func:`~tfcomp.quantization._graph.read_graph` graph.
        whole: names of layers to leave whole (``quantize_model``'s
            ``skip``).

    Returns:
        An :class:`Inlined` (``model`` None when no layer was opened).

    Example:
        >>> inline_user_layers(read_graph(model)).kept
        {'token_and_position_embedding': 'TokenAndPositionEmbedding: ...'}
    """
    if not any(_candidate(layer) for _, layer, _ in graph.layers()):
        return Inlined(None, [], {})
    opened = []
    kept = {n: "listed in skip (kept float)" for n in whole
            if any(n == name and _candidate(layer)
                   for name, layer, _ in graph.layers())}
    # a layer refused at its second call must be whole at its first too:
    # rebuild until no new refusal
    for _ in range(len(graph.nodes) + 1):
        before = dict(kept)
        opener = _Opener(graph)
        try:
            model = opener.build(opened, kept)
        except ValueError as exc:  # e.g. a name clash in the new model
            names = [name for name, layer, _ in graph.layers()
                     if _candidate(layer)]
            return Inlined(None, [], {
                n: f"opening it failed ({exc}) (kept float)" for n in names})
        opened = [n for n in opened if n not in kept]
        if kept == before:
            break
    if not opened:
        return Inlined(None, [], kept)
    return Inlined(model, opened, kept)


def opened_model(model):
    """``model`` with its user layers opened as ``quantize_model`` opens
    them (the same names), or ``model`` itself when none opens (or it is not
    a functional / Sequential model): what the hardware cost models price,
    so a policy over ``quantizable_layers(model)`` has a spec per layer.

    Example:
        >>> [s.name for s in extract_specs(opened_model(model))][:2]
        ['stem', 'residual_block_conv1']
    """
    from tfcomp.graph import iter_leaf_layers

    if not any(_candidate(layer) for _, layer in iter_leaf_layers(model)):
        return model
    try:
        graph = read_graph(model)
    except (TypeError, ValueError):
        return model
    return inline_user_layers(graph).model or model
