"""MACs of the layers :func:`tfcomp.cost.profile` cannot read from a graph,
traced from one call.

A user's own ``keras.layers.Layer`` holding inner Keras layers (a
Transformer block with a ``MultiHeadAttention`` and a ``Sequential`` FFN,
say) is one leaf of the model's graph, and a subclassed ``keras.Model``
has no graph at all. ``profile`` calls such a layer or model once, eagerly,
on zeros (batch 1, the shapes of its call in the model; unknown sizes 1,
integer inputs stay integer) with every inner leaf layer's ``call``
temporarily replaced by a recorder of its input and output shapes
(``tfcomp.graph.calls.override_calls``: restored on exit, errors
included). Each recorded call is then counted by the per-layer formulas
(``_count_macs``), the same ones as every built-in layer of a graph.
``keras.ops`` products written directly in such a ``call`` are not layers
and are not counted. A ``Lambda``, or a weightless layer class of your own,
is traced symbolically instead (:func:`traced_call_macs`): its ``call`` run
once on new ``keras.Input`` s of its first call's shapes, the ``keras.ops``
products of the graph it builds counted by the same formulas
(``op_macs``).

Inner layers are found through the layer's public attributes
(``vars(layer)``, names without a leading underscore): layers, and lists /
tuples / dicts of them at any depth; a nested ``keras.Model`` counts
through its ``layers``, a nested user layer through its own attributes.
Keras's and tfcomp's own layers are leaves (their formulas know them).
Traces are cached per layer object and call shapes (profile runs in search
loops); a failed trace is cached too, with its reason.

Example:
    >>> calls = trace_calls(block, (keras.ops.zeros((1, 20, 16)),), {})
    >>> macs, note = traced_macs(block, calls)
    >>> note.split(":")[0]
    'traced from one call of its inner layers (MultiHeadAttention, 2 Dense, ...)'
"""

from __future__ import annotations

import collections
import logging
import re
import weakref

from tfcomp._cost_layers import _count_macs, is_keras_op

__all__ = ["GraphArgs", "build_call_args", "cached_trace",
           "graph_call_args", "inner_leaves", "is_container",
           "leaf_calls_macs", "trace_calls", "traced_call_macs", "traced_macs",
           "unknown_sizes"]

_log = logging.getLogger(__name__)

# {layer or model: {signature: ({id(leaf): [(ins, outs), ...]}, error)}}
_TRACES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

_NOT_COUNTED = "keras.ops matmuls written directly in its call are not counted"


def children(layer) -> list:
    """Inner layers of ``layer``: a model's ``layers``; otherwise the layers
    among its public attributes (lists / tuples / dicts searched:
    ``tfcomp.graph.walk.held_layers``)."""
    import keras

    from tfcomp.graph.walk import held_layers

    if isinstance(layer, keras.Model):
        return list(layer.layers)
    return [inner for _, inner in held_layers(layer)]


def is_container(layer) -> bool:
    """A user's layer (not Keras's or tfcomp's) holding inner layers."""
    from tfcomp.graph.copy import user_layer_class

    return user_layer_class(type(layer)) and bool(children(layer))


def inner_leaves(layer, prefix: str = "") -> list:
    """``[(path, leaf)]`` of the layers a trace of ``layer`` records:
    models and user containers are walked into (``outer/inner`` paths),
    every other layer is a leaf; each object once.

    Example:
        >>> [p for p, _ in inner_leaves(block)][:3]
        ['multi_head_attention', 'sequential/dense', 'sequential/dense_1']
    """
    import keras

    out, seen = [], {id(layer)}

    def walk(obj, pre):
        for child in children(obj):
            if id(child) in seen:
                continue
            seen.add(id(child))
            path = f"{pre}{child.name}"
            if (isinstance(child, keras.Model) and child.layers) or \
                    is_container(child):
                walk(child, path + "/")
            else:
                out.append((path, child))

    walk(layer, prefix)
    return out


# -- zeros to call on --------------------------------------------------------

def _is_shape(s) -> bool:
    return isinstance(s, (list, tuple)) and all(
        d is None or isinstance(d, int) for d in s)


def zeros(shape, dtype="float32"):
    """Zeros of ``shape`` at batch 1, unknown sizes 1."""
    import keras

    dims = [1 if d is None else int(d) for d in tuple(shape)]
    if dims:
        dims[0] = 1
    return keras.ops.zeros(tuple(dims), dtype=dtype)


def _dtype_of(t) -> str:
    return str(getattr(t, "dtype", None) or "float32")


def _with_call_config(parsed, node, model):
    """``node``, with its call's serialised arguments read from its owner's
    config where the parser keeps none (a subclassed nested model's call:
    ``sub(a, b)`` stays two arguments). Only a call the owner's config
    numbers itself (not a later call of a nested model)."""
    import dataclasses

    if isinstance(node.call_config, dict):
        return node
    outer, _, name = node.path.rpartition("/")
    owner = parsed.nested.get(outer) if outer else model
    try:
        for entry in owner.get_config()["layers"]:
            if (entry.get("name") or entry["config"]["name"]) == name:
                calls = entry.get("inbound_nodes") or []
                if node.node_index < len(calls) and isinstance(
                        calls[node.node_index], dict):
                    return dataclasses.replace(
                        node, call_config=calls[node.node_index])
    except Exception:  # noqa: BLE001 - no config: the parser's inputs
        pass
    return node


def graph_call_args(parsed, path: str, index: int, layer,
                    model=None) -> tuple:
    """``(args, kwargs)`` of zeros for call ``index`` of the layer at
    ``path`` of parsed ``model`` (its graph shapes; its first call's input
    dtypes). ``parsed`` None: the layer's first call's inputs, one
    positional argument (a list when several)."""
    import keras

    try:
        first = keras.tree.flatten(layer.input)
    except (AttributeError, ValueError):
        first = []
    if parsed is None:
        if not first:
            raise ValueError(f"layer {layer.name!r} has no graph input")
        xs = [zeros(t.shape, _dtype_of(t)) for t in first]
        return ((xs[0] if len(xs) == 1 else xs),), {}
    from tfcomp.graph.replay import TensorId, call_arguments

    node = parsed.nodes_of(path)[index]
    if isinstance(layer, keras.Model):
        node = _with_call_config(parsed, node, model)
    args, kwargs = call_arguments(parsed, node)
    dtypes = dict(zip(node.inputs, (_dtype_of(t) for t in first))) \
        if len(first) == len(node.inputs) else {}

    def sub(v):
        if not isinstance(v, TensorId):
            return v
        shape = parsed.shapes.get(v) or parsed.shapes[parsed.resolve(v)]
        return zeros(shape, dtypes.get(v, "float32"))

    return (tuple(keras.tree.map_structure(sub, args)),
            dict(keras.tree.map_structure(sub, kwargs)))


class GraphArgs:
    """``(path, index, layer) -> (args, kwargs)``: :func:`graph_call_args`
    of ``model``'s graph, read once and only when a trace misses its
    cache (a graph that cannot be read: first-call inputs)."""

    def __init__(self, model):
        self.model = model
        self.graph = None

    def __call__(self, path: str, index: int, layer) -> tuple:
        if self.graph is None:
            from tfcomp.graph import parse_model

            try:
                self.graph = parse_model(self.model)
            except Exception:  # noqa: BLE001 - first-call inputs instead
                self.graph = False
        return graph_call_args(self.graph or None, path, index, layer,
                               self.model)


def unknown_sizes(shapes) -> str:
    """The note for input shapes with unknown non-batch sizes, or ""."""
    if any(d is None for s in shapes for d in tuple(s)[1:]):
        return "sizes known at run time only (None) counted as 1"
    return ""


def build_call_args(model) -> tuple:
    """``(args, kwargs)`` of zeros for a built subclassed model, from its
    build input shape (``model.get_build_config()``).

    Raises:
        ValueError: when the model has no recorded input shape.
    """
    import keras

    cfg = model.get_build_config() or {}

    def to_zeros(s):
        if _is_shape(s):
            return zeros(s)
        if isinstance(s, dict):
            return {k: to_zeros(v) for k, v in s.items()}
        if isinstance(s, (list, tuple)):
            return [to_zeros(v) for v in s]
        raise ValueError(f"not a shape: {s!r}")

    if cfg.get("input_shape") is not None:
        return (to_zeros(cfg["input_shape"]),), {}
    shapes = cfg.get("shapes_dict")
    if shapes:
        return (), {k[:-len("_shape")] if k.endswith("_shape") else k:
                    to_zeros(v) for k, v in shapes.items()}
    raise ValueError(
        f"Model {model.name!r} (class {type(model).__name__}) is a "
        "subclassed keras.Model whose input shape is unknown, so its MACs "
        "cannot be traced. Call it on data first, or wrap it as "
        "keras.Model(inputs, model(inputs)) with inputs = keras.Input(...). "
        f"(build config: {keras.tree.map_structure(str, cfg)!r})")


# -- the trace ---------------------------------------------------------------

def _shapes(struct) -> list:
    import keras

    return [tuple(None if d is None else int(d) for d in t.shape)
            for t in keras.tree.flatten(struct)
            if hasattr(t, "shape") and hasattr(t, "dtype")]


def trace_calls(obj, args, kwargs) -> dict:
    """``{id(leaf): [(input shapes, output shapes), ...]}`` of one call
    ``obj(*args, **kwargs, training=False)``, for every leaf of
    :func:`inner_leaves`; every ``call`` is restored afterwards."""
    from tfcomp.graph.calls import override_calls

    seen: dict = {}

    def recorder(leaf):
        def wrap(call):
            def hooked(*a, **k):
                out = call(*a, **k)
                seen.setdefault(id(leaf), []).append(
                    (_shapes(a) + _shapes(k), _shapes(out)))
                return out
            return hooked
        return wrap

    leaves = inner_leaves(obj)
    with override_calls([(leaf, recorder(leaf)) for _, leaf in leaves]):
        obj(*args, **{**kwargs, "training": False})
    return seen


def _reason(e: BaseException) -> str:
    """One line: the error's type and message (Keras's call wrapper's
    ``Exception encountered when calling ...`` shows the original's)."""
    lines = [ln.strip() for ln in re.sub(r"\x1b\[[0-9;]*m", "", str(e))
             .splitlines() if ln.strip()]
    if len(lines) > 1 and lines[0].startswith("Exception encountered"):
        lines = lines[1:2]
    return f"{type(e).__name__}: {(lines or [''])[0]}"[:200]


def cached_trace(obj, key, make_args) -> tuple[dict, str]:
    """``(calls by leaf id, error)`` of :func:`trace_calls` of ``obj``,
    cached per object and ``key`` (its call shapes); ``make_args()`` gives
    ``(args, kwargs)`` on a miss only. A failed trace gives ``({},
    reason)``, logged at debug level."""
    key = (key, len(inner_leaves(obj)))
    per = _TRACES.get(obj)
    if per is None:
        per = {}
        try:
            _TRACES[obj] = per
        except TypeError:  # not weak-referenceable: no cache
            pass
    if key not in per:
        try:
            args, kwargs = make_args()
            per[key] = (trace_calls(obj, args, kwargs), "")
        except Exception as e:  # noqa: BLE001 - any failure: 0 MACs, noted
            reason = _reason(e)
            _log.debug("tracing %s (%s) failed: %s", getattr(obj, "name", obj),
                       type(obj).__name__, reason, exc_info=True)
            per[key] = ({}, reason)
    return per[key]


def leaf_calls_macs(leaf, calls: list) -> tuple[int, list]:
    """Summed ``_count_macs`` over one leaf's recorded calls, and its
    notes (each once)."""
    total, notes = 0, []
    for ins, outs in calls:
        macs, note = _count_macs(leaf, ins, outs)
        total += int(macs)
        if note and note not in notes:
            notes.append(note)
    return total, notes


def traced_macs(layer, calls: dict) -> tuple[int, str]:
    """MACs of a user container from one trace's calls, with its note."""
    total, kinds, notes = 0, collections.Counter(), []
    for path, leaf in inner_leaves(layer):
        leaf_calls = calls.get(id(leaf), [])
        if not leaf_calls:
            continue
        kinds[type(leaf).__name__] += len(leaf_calls)
        macs, leaf_notes = leaf_calls_macs(leaf, leaf_calls)
        total += macs
        notes += [f"{path}: {n}" for n in leaf_notes]
    named = ", ".join(k if n == 1 else f"{n} {k}" for k, n in kinds.items())
    head = (f"traced from one call of its inner layers ({named})" if named
            else "traced: no inner layer was called")
    return total, "; ".join([f"{head}: {_NOT_COUNTED}", *notes])


def traced_call_macs(layer) -> int | None:
    """MACs of the ``keras.ops`` products ``layer.call`` computes, traced on
    new symbolic inputs of its first call's shapes and dtypes; None when
    the call cannot be traced that way (several positional tensors, a
    layer inside, a failure).

    Example:
        >>> traced_call_macs(keras.layers.Lambda(
        ...     lambda t: keras.ops.matmul(t, t)))  # once called on (4, 4)
        64
    """
    import keras

    try:
        fresh = keras.tree.map_structure(
            lambda t: keras.Input(batch_shape=t.shape, dtype=t.dtype),
            layer.input)
        traced = keras.Model(fresh, layer.call(fresh))
    except Exception:  # noqa: BLE001 - arbitrary Python: not traceable
        return None
    total = 0
    for op in traced.operations:
        if isinstance(op, keras.layers.InputLayer):
            continue
        if not is_keras_op(op):
            return None  # a layer inside: its own formula, not traced here
        total += _count_macs(op, _shapes(op.input), _shapes(op.output))[0]
    return total
