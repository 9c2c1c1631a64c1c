"""The user's own layer classes opened up into the Keras layers they call,
so tfcomp's verbs see what is inside them.

keras.io writes a Transformer block as a ``keras.layers.Layer`` subclass
holding a ``MultiHeadAttention``, a ``Sequential`` of ``Dense`` layers and
``LayerNormalization`` s; as one opaque layer it stayed float in a QAT model
(and so in its int8 file), and a channel-graph barrier for pruning.
:func:`open_user_layers` rebuilds the model (``keras.models.clone_model``
with a ``call_function``; the other layers are reused, nested functional
and ``Sequential`` models opened the same way) with each such call
replaced by the layer's own ``call`` run on the symbolic tensors: Keras then
records the inner layers and the ``keras.ops`` between them as nodes of the
new functional model (the same function, the same weights).
``quantize_model`` (and every quantization verb, and the hardware cost
models) opens them itself; pruning verbs keep your classes whole unless you
open the model first.

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
by an attribute or a list of them (one in a dict stays unnamed: the class
is kept whole), a ``call`` that takes other arguments than tensors, does
not run on symbolic tensors (``tf.*`` functions), or traces to different
operations with ``training=True`` (a Python branch on ``training`` the
functional graph cannot keep). Python side effects of a ``call`` (a
counter, a print) run when the class is opened, not at each call of the
opened model.

Example:
    >>> opened = tfcomp.graph.open_user_layers(model)
    >>> plan = tfcomp.pruning.make_plan(opened, ratio=0.5)  # inside too
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import warnings

import keras

from tfcomp.graph.constant import Constant
from tfcomp.graph.copy import (
    clone_layer,
    functional_view,
    model_like,
    refresh_state,
    user_layer_class,
)
from tfcomp.graph.walk import held_layers, iter_leaf_layers

__all__ = ["Opened", "open_layers", "open_user_layers", "opened_model"]


@dataclasses.dataclass
class Opened:
    """The result of :func:`open_layers`.

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


def _rename_inside(owner, prefix: str) -> None:
    """Names every layer ``owner`` holds ``<prefix>_<attribute>`` (the
    layers of a held ``Sequential`` / functional model by their index: flat
    names ``<its name>_<index>``), recursively through the user's own
    classes (Keras' layers keep their insides)."""
    for attr, layer in held_layers(owner, dicts=False):
        layer.name = f"{prefix}_{attr}"
        if isinstance(layer, keras.Model):  # Sequential or functional
            inners = [inner for inner in layer.layers
                      if not isinstance(inner, keras.layers.InputLayer)]
            for i, inner in enumerate(inners):
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

    def __init__(self, layer, anchor, made: dict):
        self.layer, self.anchor, self.made = layer, anchor, made

    def _symbolic(self, value):
        if isinstance(value, keras.KerasTensor) or not hasattr(
                value, "shape") or not hasattr(value, "dtype"):
            return value
        base = f"{self.layer.name}_const"
        n = self.made[base] = self.made.get(base, 0) + 1  # one per use
        name = base if n == 1 else f"{base}_{n}"
        value = keras.ops.convert_to_numpy(value)
        return Constant(value, name=name)(self.anchor)

    def __call__(self, *args, **kwargs):
        flat = keras.tree.flatten((args, kwargs))
        if not any(isinstance(v, keras.KerasTensor) for v in flat):
            args, kwargs = keras.tree.map_structure(self._symbolic,
                                                    (args, kwargs))
        return self.layer(*args, **kwargs)

    def __getattr__(self, attr):
        return getattr(self.layer, attr)


@contextlib.contextmanager
def _constant_feeds(twin, anchor, made: dict):
    """Puts a :class:`_ConstantFeed` in place of each layer ``twin`` holds
    in a plain attribute, for the duration of the block (``made`` counts
    the Constant layers per name, so a shared layer's calls get distinct
    ones)."""
    held = [(attr, layer) for attr, layer in held_layers(twin, dicts=False)
            if vars(twin).get(attr) is layer]
    try:
        for attr, layer in held:
            object.__setattr__(twin, attr, _ConstantFeed(layer, anchor, made))
        yield
    finally:
        for attr, layer in held:
            object.__setattr__(twin, attr, layer)


def _trace(twin, args, kwargs, made: dict):
    """``twin.call`` on symbolic tensors, its inner layers' calls on
    constants fed from the first of them."""
    anchor = next(v for v in keras.tree.flatten((args, kwargs))
                  if isinstance(v, keras.KerasTensor))
    with _constant_feeds(twin, anchor, made):
        return twin.call(*args, **kwargs)


def _op_classes(inputs, outputs) -> list:
    probe = keras.Model(inputs, outputs)
    return [type(op).__name__ for op in probe.operations]


class _Opener:
    """The ``call_function`` of the rebuild: opens the calls of the user
    layers not in ``kept`` (adding to ``opened`` / ``kept``)."""

    def __init__(self, opened: list, kept: dict):
        self.opened, self.kept = opened, kept
        self.twins = {}  # id(user layer) -> built, renamed copy
        self.made = {}  # Constant layer name -> count

    def __call__(self, layer, *args, **kwargs):
        if _candidate(layer) and layer.name not in self.kept:
            try:
                out = self.open(layer, args, kwargs)
            except _Refused as exc:
                self.kept[layer.name] = str(exc)
            else:
                if layer.name not in self.opened:
                    self.opened.append(layer.name)
                return out
        return layer(*args, **kwargs)

    def twin(self, layer, args):
        """The copy of ``layer`` to open, built on the call's inputs with
        ``layer``'s weights, its inner layers renamed."""
        if id(layer) in self.twins:
            return self.twins[id(layer)]
        try:
            twin = clone_layer(layer)
        except Exception as exc:  # a class that cannot be rebuilt
            raise _Refused(f"{type(layer).__name__}: cannot be copied to "
                           f"open it ({exc}) (kept float)") from None
        _rename_inside(twin, layer.name)
        twin(*args)  # builds it
        twin.set_weights(layer.get_weights())
        refresh_state(twin)
        self.twins[id(layer)] = twin
        return twin

    def open(self, layer, args, kwargs):
        """The outputs of one call of ``layer`` traced through its
        ``call``."""
        cls = type(layer).__name__
        flat_args = keras.tree.flatten(args)
        inputs = [v for v in flat_args if isinstance(v, keras.KerasTensor)]
        if not inputs or len(inputs) < len(flat_args) or any(
                v is not None for k, v in kwargs.items() if k != "training"):
            raise _Refused(f"{cls}: called with other arguments than "
                           "tensors (kept float)")
        twin = self.twin(layer, args)
        try:
            out = _trace(twin, args, kwargs, self.made)
        except Exception as exc:  # tf.* calls, value-dependent Python
            raise _Refused(f"{cls}: its call does not run on symbolic "
                           f"tensors ({exc}) (kept float)") from None
        flat = keras.tree.flatten(out)
        probe = keras.Model(inputs, flat)
        stray = [inner.name for inner in probe.layers
                 if not isinstance(inner, keras.layers.InputLayer)
                 and not inner.name.startswith(f"{layer.name}_")]
        if stray:
            raise _Refused(f"{cls}: calls layers not held in its attributes "
                           f"({stray[:3]}) (kept float)")
        reached = {id(v) for v in probe.weights}
        frozen = [v.path for v in twin.weights if id(v) not in reached]
        if frozen:
            raise _Refused(
                f"{cls}: its weights {frozen[:3]} are not read through an "
                "inner layer called in its call (an add_weight of its own?) "
                "(kept float)")
        if "training" in inspect.signature(twin.call).parameters:
            try:
                trained = _op_classes(inputs, keras.tree.flatten(_trace(
                    twin, args, {**kwargs, "training": True}, {})))
            except Exception:  # the training branch does not trace
                trained = None
            if trained != _op_classes(inputs, flat):
                raise _Refused(f"{cls}: its call branches on 'training' in "
                               "Python (kept float)")
        return out


class _Nested:
    """The ``clone_function`` of the rebuild: a nested model (functional
    or ``Sequential``) opened by :func:`open_layers` itself (once per
    model), any other layer reused."""

    def __init__(self, keep, opened: list, kept: dict):
        self.keep, self.opened, self.kept = keep, opened, kept
        self.done = {}

    def __call__(self, layer):
        if not isinstance(layer, keras.Model):
            return layer
        if id(layer) not in self.done:
            sub = open_layers(layer, self.keep)
            self.kept.update(sub.kept)
            self.opened.extend(n for n in sub.names if n not in self.opened)
            self.done[id(layer)] = sub.model or layer
        return self.done[id(layer)]


def open_layers(model, keep=()) -> Opened:
    """The model with the user's own layers that hold weights opened into
    the layers they call (see the module doc), and what was opened.

    Args:
        model: a built functional or Sequential model.
        keep: names of user layers to leave whole.

    Returns:
        An :class:`Opened` (``model`` None when no layer was opened).

    Example:
        >>> open_layers(model).kept
        {'scaled': 'OwnWeight: its weights [...] are not read ...'}
    """
    if not any(_candidate(layer) for _, layer in iter_leaf_layers(model)):
        return Opened(None, [], {})
    kept = {name: "listed in skip (kept float)" for name in keep}
    view = functional_view(model)
    # an uncompiled model over the same graph: clone_model would compile
    # its copy from the config, which fails for a custom loss function
    view = keras.Model(view.input, view.output, name=view.name)
    # a layer refused at its second call must be whole at its first too:
    # rebuild until no new refusal
    for _ in range(len(view.layers) + 1):
        before, opened = dict(kept), []
        try:
            new = keras.models.clone_model(
                view, clone_function=_Nested(keep, opened, kept),
                call_function=_Opener(opened, kept))
        except ValueError as exc:  # e.g. an inner name taken in the model
            names = {layer.name for _, layer in iter_leaf_layers(model)
                     if _candidate(layer) and layer.name not in keep}
            return Opened(None, [], {n: f"opening failed ({exc}) (kept "
                                        "float)" for n in sorted(names)})
        if kept == before:
            break
    kept = {name: why for name, why in kept.items() if name not in keep}
    if not opened:
        return Opened(None, [], kept)
    return Opened(model_like(model, new.input, new.output), opened, kept)


def open_user_layers(model, keep=()):
    """``model`` with your own layer classes opened into the Keras layers
    their ``call`` uses, so pruning (and every other verb) sees inside them.

    The new model computes the same function with the same weights (the
    inner layers are copies named ``<your layer>_<attribute>``); classes
    that cannot be opened faithfully stay whole, named in one warning with
    the reason. ``quantize_model`` opens them by itself.

    Args:
        model: a built functional or Sequential model.
        keep: names of your layers to leave whole.

    Returns:
        A new functional model, or ``model`` when nothing was opened.

    Example:
        >>> opened = tfcomp.graph.open_user_layers(model)
        >>> small = tfcomp.pruning.prune_channels(
        ...     opened, tfcomp.pruning.make_plan(opened, ratio=0.5))
    """
    result = open_layers(model, keep)
    if result.kept:
        warnings.warn(
            "open_user_layers kept these layers whole: " + "; ".join(
                f"{name!r}: {why}" for name, why in result.kept.items()),
            stacklevel=2)
    return model if result.model is None else result.model


def opened_model(model):
    """``model`` with its user layers opened as ``quantize_model`` opens
    them (the same names), or ``model`` itself when none opens (or it is
    not a functional / Sequential model): what the hardware cost models
    price, so a policy over ``quantizable_layers(model)`` has a spec per
    layer.

    Example:
        >>> [s.name for s in extract_specs(opened_model(model))][:2]
        ['stem', 'residual_block_conv1']
    """
    try:
        return open_layers(model).model or model
    except (TypeError, ValueError, AttributeError):
        return model
