"""The cost model: the only MACs / BOPs / size formulas in tfcomp.

Per-layer cost profile of a Keras model: params, MACs, bits, BOPs, bytes.
One profile feeds every consumer in tfcomp: the summary table, pruning
budgets (``target_macs``), tuner rewards, hardware models and reports.
``tfcomp.profile`` is :func:`profile` of this module.

Conventions (the ones the MobileNet papers use, so published figures match):

* MACs count multiply-accumulates of convolutions and dense layers, batch 1.
  Element-wise layers (BatchNormalization, activations, pooling, merges) are
  listed with 0 MACs and a note; BN is folded into the conv at deployment.
* ``Conv2DTranspose`` MACs are counted over *input* positions (each input
  pixel scatters a ``k x k x cout`` patch).
* ``EinsumDense``: the product of the sizes of every index of its equation
  (:func:`einsum_macs`). ``MultiHeadAttention``: its four projections plus
  ``QK^T`` and ``softmax(.) V`` over its ``attention_axes``
  (:func:`attention_macs`). ``Attention`` / ``AdditiveAttention``: scores
  and weighted sum, ``T * S * (d + dv)``. ``Embedding`` is a lookup (0 MACs,
  its table counts as params); normalisations count 0 MACs like BN.
* ``LSTM`` / ``GRU`` / ``SimpleRNN`` (and ``RNN`` of their cells): per time
  step every gate's input and recurrent matmul, ``T * (din + units) *
  gates * units`` (gates 4 / 3 / 1; gate products not counted);
  ``Bidirectional``: both directions.
* ``TimeDistributed``: T times its inner layer's MACs on one time step;
  so are layers after a ``keras.ops.reshape`` that folds T steps into the
  batch (``quantize_model``'s form of ``TimeDistributed``) until one
  unfolds them (the record's note says so).
* A dimension unknown until run time (``None``, e.g. a variable sequence
  length) counts as 1 position; the record's note says so.
* A user's own layer holding inner Keras layers (a Transformer block) and
  a subclassed ``keras.Model`` have no readable graph: their MACs are
  traced from one call on zeros, each inner layer's call counted by these
  formulas (``tfcomp._cost_trace``); ``keras.ops`` products written in a
  ``call`` are not counted (the record's note says so).
* Bits default to 32/32 (float). A layer carrying ``w_bits`` / ``a_bits``
  attributes (tfcomp's quantized layers) contributes its own widths; the
  ``bits`` argument overrides both.
* BOPs = MACs * w_bits * a_bits; activation bytes = output elements * a_bits/8.
* Size = params * w_bits / 8 bytes, bias included.

The formulas are public so that every consumer uses the same ones:
:func:`weight_count`, :func:`param_count`, :func:`layer_macs`,
:func:`bops`, :func:`size_bytes`, :func:`activation_bytes`
(``tfcomp.hardware.LayerSpec``, HAQ / DNAS costs and pruning targets call
them; none keeps a formula of its own).

Example:
    >>> import keras, tfcomp
    >>> m = keras.applications.MobileNet(weights=None)
    >>> p = tfcomp.profile(m)
    >>> round(p.macs / 1e6)
    569
"""

from __future__ import annotations

import dataclasses
import weakref
from typing import TYPE_CHECKING, Any

# The formulas and the per-layer MAC counter live in tfcomp._cost_layers;
# every name stays importable from tfcomp.cost.
from tfcomp._cost_layers import (
    _ZERO_MAC_LAYERS,  # noqa: F401
    _attention_layer_macs,  # noqa: F401
    _count_macs,
    _keras_classes,  # noqa: F401
    _kernel_macs,  # noqa: F401
    _known,  # noqa: F401
    _layer_macs_of,  # noqa: F401
    _prod,
    activation_bytes,
    attention_macs,
    bops,
    einsum_axis_sizes,
    einsum_macs,
    is_keras_op,
    layer_macs,
    param_count,
    size_bytes,
    weight_count,
)

if TYPE_CHECKING:  # Keras is imported on first use: ``import tfcomp`` and
    import keras  # ``tfcomp --help`` stay free of TensorFlow.

__all__ = [
    "FLOAT_BITS", "LayerProfile", "ModelProfile", "activation_bytes",
    "attention_macs", "bops", "einsum_axis_sizes", "einsum_macs",
    "batch_rows", "layer_macs", "param_count",
    "profile", "size_bytes", "weight_count",
]

FLOAT_BITS = 32


@dataclasses.dataclass
class LayerProfile:
    """Cost record of one layer (batch size 1).

    Attributes:
        name: layer name; ``outer/inner`` inside nested models.
        type: the layer's class name.
        output_shape: output shape without the batch axis.
        params: number of weights (trainable and not).
        macs: multiply-accumulates.
        w_bits: weight bit-width (32 = float).
        a_bits: activation (output) bit-width (32 = float).
        bops: ``macs * w_bits * a_bits``.
        act_bytes: bytes of the output activation at ``a_bits``.
        note: why MACs are zero or approximate, empty otherwise.
    """

    name: str
    type: str
    output_shape: tuple
    params: int
    macs: int
    w_bits: int = FLOAT_BITS
    a_bits: int = FLOAT_BITS
    bops: int = 0
    act_bytes: float = 0.0
    note: str = ""

    @property
    def size_bytes(self) -> float:
        """Bytes of the layer's weights at ``w_bits`` (:func:`size_bytes`)."""
        return size_bytes(self.params, self.w_bits)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["output_shape"] = list(self.output_shape)
        return d


@dataclasses.dataclass
class ModelProfile:
    """Per-layer records plus totals for a whole model.

    Example:
        >>> import keras, tfcomp
        >>> L = keras.layers
        >>> model = keras.Sequential([
        ...     keras.Input((8, 8, 3)), L.Conv2D(4, 3, name="conv1"),
        ...     L.Flatten(), L.Dense(10, name="fc")])
        >>> p = tfcomp.profile(model)
        >>> p.by_name("conv1").macs  # 6x6 outputs * 3x3x3 kernel * 4 filters
        3888
        >>> p.macs, p.params
        (5328, 1562)
        >>> p.summary(print_fn=None).splitlines()[-3]  # the printed table
        'Total MACs:   5,328 (0.01 M)'
    """

    name: str
    layers: list

    def _total(self, key: str) -> int:
        return int(sum(getattr(r, key) for r in self.layers))

    macs = property(lambda self: self._total("macs"), doc="Total MACs.")
    params = property(lambda self: self._total("params"),
                      doc="Total parameters.")
    bops = property(lambda self: self._total("bops"), doc="Total BOPs.")

    @property
    def weight_bytes(self) -> float:
        """Bytes of all weights stored at their own bit-widths."""
        return float(sum(r.size_bytes for r in self.layers))

    @property
    def unknown_layers(self) -> list:
        return [r.name for r in self.layers if r.note.startswith("unknown")]

    def by_name(self, name: str) -> LayerProfile:
        for r in self.layers:
            if r.name == name:
                return r
        raise KeyError(
            f"No layer named {name!r} in profile of {self.name!r}. "
            f"Known: {[r.name for r in self.layers][:20]}"
        )

    def layer_macs(self, name: str) -> int:
        return self.by_name(name).macs

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "macs": self.macs,
            "params": self.params,
            "bops": self.bops,
            "weight_bytes": self.weight_bytes,
            "layers": [r.to_dict() for r in self.layers],
        }

    def summary(self, print_fn=print, max_rows: int | None = None) -> str:
        """Prints (and returns) an aligned table like ``model.summary()``."""
        head = ("Layer (type)", "Output shape", "Params", "MACs", "W/A bits",
                "BOPs", "Note")
        rows = []
        for r in self.layers[:max_rows]:
            rows.append((
                f"{r.name} ({r.type})", str(tuple(r.output_shape)),
                f"{r.params:,}", f"{r.macs:,}", f"{r.w_bits}/{r.a_bits}",
                f"{r.bops:,}", r.note,
            ))
        widths = [max(len(h), *(len(row[i]) for row in rows)) if rows
                  else len(h) for i, h in enumerate(head)]
        fmt = "  ".join("{:<%d}" % w for w in widths)
        line = "-" * (sum(widths) + 2 * (len(widths) - 1))
        out = [f'Profile: "{self.name}"', line, fmt.format(*head), line]
        out += [fmt.format(*row) for row in rows]
        out += [
            line,
            f"Total params: {self.params:,}",
            f"Total MACs:   {self.macs:,} ({self.macs / 1e6:.2f} M)",
            f"Total BOPs:   {self.bops:,}",
            f"Weight bytes: {self.weight_bytes:,.0f}",
        ]
        if self.unknown_layers:
            out.append(f"Unknown layers (0 MACs): {self.unknown_layers}")
        text = "\n".join(out)
        if print_fn is not None:
            print_fn(text)
        return text


def _shape(t) -> tuple:
    return tuple(int(d) if d is not None else None for d in t.shape)


def _io_shapes(layer) -> tuple[list, list]:
    """Input and output shapes (with batch axis) of a layer's first call."""
    try:
        ins = layer.input
        outs = layer.output
    except (AttributeError, ValueError):
        return [], []
    import keras

    ins = keras.tree.flatten(ins)
    outs = keras.tree.flatten(outs)
    return [_shape(t) for t in ins], [_shape(t) for t in outs]


def _layer_bits(layer, bits: dict | None, name: str) -> tuple[int, int]:
    if bits and name in bits:
        w, a = bits[name]
    elif bits and layer.name in bits:
        w, a = bits[layer.name]
    else:
        w = getattr(layer, "w_bits", FLOAT_BITS) or FLOAT_BITS
        a = getattr(layer, "a_bits", FLOAT_BITS) or FLOAT_BITS
    return int(w), int(a)


def _called_more_than_once(cfg) -> bool:
    """Whether a functional / Sequential config calls a layer (or a nested
    model) more than once, at any depth."""
    for entry in (cfg or {}).get("layers", []) if isinstance(
            cfg, dict) else []:
        if len(entry.get("inbound_nodes") or []) > 1 or \
                _called_more_than_once(entry.get("config")):
            return True
    return False


_CALLS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def call_shapes(model) -> dict:
    """``{path: [(input shapes, output shapes), ...]}`` of the leaf layers
    called more than once (shared layers, the layers of a nested model
    called twice): each call computes, so each call counts.

    Example:
        >>> call_shapes(siamese)["encoder/conv1"]   # two calls
        [([(None, 12, 12, 1)], [(None, 10, 10, 8)]), ...]
    """
    from tfcomp.graph import parse_model

    # a built model's call graph is fixed (a Sequential grows only by add):
    # read once per model and layer count (profile runs in search loops)
    key = len(getattr(model, "layers", ()) or ())
    cached = _CALLS.get(model)
    if cached is not None and cached[0] == key:
        return cached[1]
    out = {}
    try:
        if _called_more_than_once(model.get_config()):
            parsed = parse_model(model)
            for path in parsed.shared_layers:
                out[path] = [([parsed.shapes.get(t) for t in n.inputs],
                              [parsed.shapes.get(t) for t in n.outputs])
                             for n in parsed.nodes_of(path)]
    except Exception:  # noqa: BLE001 - no readable graph: first calls only
        out = {}
    try:
        _CALLS[model] = (key, out)
    except TypeError:  # not weak-referenceable
        pass
    return out


def _macs_of_calls(layer, calls: list) -> tuple[int, str]:
    total, notes = 0, []
    for ins, outs in calls:
        if any(s is None for s in ins + outs):
            return _count_macs(layer, *_io_shapes(layer))
        macs, note = _count_macs(layer, ins, outs)
        total += macs
        if note and note not in notes:
            notes.append(note)
    notes.append(f"called {len(calls)} times: every call counted")
    return total, "; ".join(notes)


def _batch_reshape(op) -> bool:
    """A ``keras.ops.reshape`` operation (it may move axes into or out of
    the batch axis; a ``keras.layers.Reshape`` never does)."""
    import keras

    return type(op).__name__ == "Reshape" and not isinstance(
        op, keras.layers.Layer)


def _has_batch_reshape(model) -> bool:
    import keras

    return any(_batch_reshape(op) or (isinstance(op, keras.Model)
                                      and _has_batch_reshape(op))
               for op in getattr(model, "operations", ()))


def batch_rows(model) -> dict:
    """``{path: n}`` of the layers that run on ``n > 1`` rows per model
    sample: after a ``keras.ops.reshape`` that folds axes into the batch
    (``quantize_model`` folds a ``TimeDistributed``'s T steps: ``(B, T,
    ...) -> (B*T, ...)``), until one unfolds them.

    Example:
        >>> batch_rows(quantize_model(video_model))["time_distributed"]
        4
    """
    from fractions import Fraction

    from tfcomp.graph import parse_model

    try:
        if not _has_batch_reshape(model):
            return {}
        parsed = parse_model(model)
    except Exception:  # noqa: BLE001 - no readable graph: no factors
        return {}
    factor, out = {}, {}
    for node in parsed.nodes:
        f = max((factor.get(t, Fraction(1)) for t in node.inputs),
                default=Fraction(1))
        if _batch_reshape(node.op) and node.inputs:
            x = parsed.shapes.get(node.inputs[0])
            y = parsed.shapes.get(node.outputs[0])
            if x and y and None not in tuple(x[1:]) + tuple(y[1:]):
                f *= Fraction(_prod(x[1:]), _prod(y[1:]))
        out.setdefault(node.path, f)
        for t in node.outputs:
            factor[t] = f
    return {p: int(f) for p, f in out.items()
            if f.denominator == 1 and f > 1}


def _subclassed(model) -> bool:
    """A subclassed ``keras.Model``: no graph (a functional model has its
    ``inputs`` / ``outputs``, even one whose config cannot be written)."""
    import keras

    return not isinstance(model, keras.Sequential) and not (
        getattr(model, "inputs", None) and getattr(model, "outputs", None))


def _walk_items(model, prefix: str):
    """``(path, layer, subclassed)`` of ``iter_leaf_layers``' leaves, a
    nested subclassed model given whole (``subclassed`` True)."""
    import keras

    # a functional model's operations: its layers and its keras.ops nodes
    for layer in getattr(model, "operations", None) or model.layers:
        path = f"{prefix}{layer.name}"
        if is_keras_op(layer):
            yield path, layer, False
        elif not (isinstance(layer, keras.Model) and layer.layers):
            yield path, layer, False
        elif _subclassed(layer):
            yield path, layer, True
        else:
            yield from _walk_items(layer, path + "/")


def _traced_layer(layer, name, graph_args, shared) -> tuple[int, str]:
    """MACs and note of a user layer holding inner layers: one trace per
    call of it in the graph."""
    from tfcomp._cost_trace import cached_trace, traced_macs, unknown_sizes

    first = _io_shapes(layer)
    calls = shared or [first]
    total, notes = 0, []
    for i, (ins, _) in enumerate(calls):
        traced, error = cached_trace(
            layer, (i, tuple(map(tuple, ins))),
            lambda i=i: graph_args(name, i, layer))
        if error:
            return 0, (f"unknown MACs: trace of its inner layers failed "
                       f"({error}), counted as 0")
        macs, note = traced_macs(layer, traced)
        total += macs
        for n in (note, unknown_sizes(ins)):
            if n and n not in notes:
                notes.append(n)
    if shared:
        notes.append(f"called {len(calls)} times: every call counted")
    return total, "; ".join(notes)


def _traced_ops_macs(layer, name, calls, note) -> tuple[int, str]:
    """MACs of the ``keras.ops`` products a Lambda / weightless layer class
    computes in its call (``_cost_trace.traced_call_macs``); ``note`` kept
    when its call cannot be traced."""
    from tfcomp._cost_trace import traced_call_macs

    macs = traced_call_macs(layer)
    if macs is None:
        return 0, note
    n = len(calls.get(name) or ()) or 1  # a shared layer: every call
    return macs * n, (f"keras.ops in its call traced ({n} calls)" if n > 1
                      else "keras.ops in its call traced")


def _record(name, layer, macs, note, out_shapes, rows, bits
            ) -> LayerProfile:
    w_bits, a_bits = _layer_bits(layer, bits, name)
    params = int(sum(_prod(w.shape) for w in getattr(layer, "weights", ())))
    out_shape = tuple(out_shapes[0][1:]) if out_shapes else ()
    if params == 0:
        w_bits = FLOAT_BITS if not hasattr(layer, "w_bits") else w_bits
    act_elems = rows * sum(_prod(s[1:]) for s in out_shapes
                           if None not in s[1:])
    return LayerProfile(
        name=name, type=type(layer).__name__, output_shape=out_shape,
        params=params, macs=int(macs), w_bits=w_bits, a_bits=a_bits,
        bops=bops(macs, w_bits, a_bits),
        act_bytes=activation_bytes(act_elems, a_bits), note=note)


def _rows_factor(macs, note, rows):
    if rows > 1 and macs:
        macs *= rows
        note = "; ".join(filter(None, [
            note, f"runs on {rows} rows per sample (time steps folded "
            f"into the batch): counted {rows} times"]))
    return macs, note


def _traced_model(model, prefix, key, make_args, bits, records,
                  rows: int = 1, raise_errors: bool = False) -> None:
    """One row per inner leaf layer of a subclassed model, from one call
    traced on zeros (``make_args()``)."""
    from tfcomp._cost_trace import cached_trace, inner_leaves, leaf_calls_macs

    traced, error = cached_trace(model, key, make_args)
    if error and raise_errors:
        raise ValueError(
            f"Cannot profile subclassed model {model.name!r} (class "
            f"{type(model).__name__}): calling it once on zeros of its "
            f"input shape {model.get_build_config()} to trace its layers "
            f"failed ({error}). Wrap it as a functional model, "
            "keras.Model(inputs, model(inputs)) with keras.Input(...) inputs, "
            "and profile that.")
    for name, leaf in inner_leaves(model, prefix):
        calls = traced.get(id(leaf), [])
        macs, notes = leaf_calls_macs(leaf, calls)
        if error:
            notes = [f"unknown MACs: trace of subclassed model "
                     f"{model.name!r} failed ({error}), counted as 0"]
        elif not calls:
            notes = ["not called in the traced call"]
        elif len(calls) > 1:
            notes.append(f"called {len(calls)} times: every call counted")
        notes.append(f"traced from one call of subclassed model "
                     f"{model.name!r}")
        macs, note = _rows_factor(macs, "; ".join(notes), rows)
        records.append(_record(name, leaf, macs, note,
                               calls[0][1] if calls else [], rows, bits))


def _walk(model, prefix: str, bits, records: list) -> None:
    from tfcomp._cost_trace import GraphArgs, is_container

    calls = call_shapes(model) if not prefix else {}
    factors = batch_rows(model) if not prefix else {}
    graph_args = GraphArgs(model)
    for name, layer, subclassed in _walk_items(model, prefix):
        rows = factors.get(name, 1)
        if subclassed:
            ins = tuple(map(tuple, _io_shapes(layer)[0]))
            _traced_model(layer, name + "/", (0, ins),
                          lambda n=name, lyr=layer: graph_args(n, 0, lyr),
                          bits, records, rows)
            continue
        if name in calls:
            macs, note = _macs_of_calls(layer, calls[name])
            in_shapes, out_shapes = _io_shapes(layer)
        else:
            in_shapes, out_shapes = _io_shapes(layer)
            macs, note = _count_macs(layer, in_shapes, out_shapes)
        if not macs and note.startswith("unknown layer type"):
            if is_container(layer):
                macs, note = _traced_layer(layer, name, graph_args,
                                           calls.get(name))
            else:  # a Lambda, a weightless layer class
                macs, note = _traced_ops_macs(layer, name, calls, note)
        macs, note = _rows_factor(macs, note, rows)
        records.append(_record(name, layer, macs, note, out_shapes, rows,
                               bits))


def profile(model: keras.Model, bits: dict[str, Any] | None = None,
            input_shape=None) -> ModelProfile:
    """Profiles a built Keras model layer by layer (batch size 1).

    Args:
        model: a built functional or Sequential ``keras.Model``; nested
            functional models are recursed into. A built subclassed model
            is traced: one call on zeros of its build input shape, one
            record per inner layer.
        bits: optional ``{layer_name: (w_bits, a_bits)}`` overriding the
            layers' own widths (names as in the profile, ``outer/inner``
            for nested models, or the bare layer name).
        input_shape: the input size to count a model with open sizes at
            (a fully convolutional net's ``keras.Input((None, None, 3))``:
            ``(256, 256, 3)``; a list of shapes for several inputs).
            Without it, a size known at run time only is counted as 1
            (each such layer's note says so).

    Returns:
        A ``ModelProfile`` with per-layer ``LayerProfile`` records.

    Raises:
        ValueError: an unbuilt model; a subclassed model whose input shape
            is unknown or whose call on zeros of it fails.

    Example:
        >>> import tfcomp
        >>> p = tfcomp.profile(tfcomp.zoo.resnet(depth=20))  # 28x28x1 input
        >>> print(p.macs, p.params)
        31021952 273754
    """
    import keras

    if not isinstance(model, keras.Model):
        raise TypeError(
            f"profile() expects a keras.Model. Received: {type(model)!r}")
    if not model.built:
        raise ValueError(
            f"Model {model.name!r} is not built; call it on data or build it "
            "with an input shape before profiling.")
    if input_shape is not None:
        from tfcomp.graph.static_shape import with_input_shape

        model = with_input_shape(model, input_shape)
    if bits is not None:
        for k, v in bits.items():
            if not (isinstance(v, (tuple, list)) and len(v) == 2):
                raise ValueError(
                    f"bits[{k!r}] must be a (w_bits, a_bits) pair. "
                    f"Received: {v!r}")
    records: list[LayerProfile] = []
    if _subclassed(model):
        from tfcomp._cost_trace import build_call_args

        args = build_call_args(model)  # a clear ValueError if unknown
        _traced_model(model, "", repr(model.get_build_config()),
                      lambda: args, bits, records, raise_errors=True)
    else:
        _walk(model, "", bits, records)
    return ModelProfile(name=model.name, layers=records)
