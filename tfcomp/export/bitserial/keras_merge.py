"""Keras merge layers in the bit-serial importer: ``Add``, ``Concatenate``
and ``Multiply`` become the IR's ``add``, ``concat`` and ``mul`` ops; the
QAT model's ``QuantAverage`` of two tensors (TFLite's ADD onto its "sum"
grid, then MUL by 1/2) an ``add`` onto the sum's grid with half its scale
(:func:`emit_average`).

Each is a *pending* value until what reads it fixes its output grid (see
``keras_import``): the QuantActivation after it or the input quantizer of
the layer reading it (the TFLite converter gives the op that tensor's
grid); read by an op with no quantizer of its own (max pooling, flatten,
the model output...), it takes a grid calibrated on the calibration data,
except a concat whose inputs share one grid, which keeps it. A ReLU /
ReLU6 after it is its clamp.

- ``Add``: two inputs of one shape (TFLite's ADD); also ``x + y``
  (``keras.ops.add`` of two tensors of one shape).
- ``Concatenate``: the last (channel) axis (TFLite's CONCATENATION).
- ``Multiply``: two inputs of one shape, or a feature map times a
  per-channel gate (``(1, 1, C)``, ``(1, C)``, ``(C,)``: squeeze-excite),
  either order (TFLite's MUL); also ``x * y`` (``keras.ops.multiply``
  of two tensors). A decomposed swish ``x * q(sigmoid(x))``
  is one table instead (``keras_patterns``). A product exactly half-way
  between two output codes is rounded up, as the integer MUL does, where
  the QAT model's float32 rounds it either way; such ties are common when
  the output grid was calibrated on the product (its step is then a
  rational multiple of ``s_a * s_b``): those codes can differ by one.

Example:
    >>> kind, inputs = merge_inputs(importer, layer, ins, out)
"""

from __future__ import annotations

import keras

from tfcomp.export.bitserial.keras_layers import concat_axis, qat_grid
from tfcomp.export.bitserial.shapes import mul_shape
from tfcomp.graph import ops_name

__all__ = ["MERGE", "OPS_MERGE", "emit_average", "emit_merge",
           "merge_inputs", "merge_kind", "shared_grid"]

L = keras.layers
#: Keras merge layer type -> IR op.
MERGE = {L.Add: "add", L.Concatenate: "concat", L.Multiply: "mul"}
#: ``keras.ops`` operation (class name) of two tensors -> IR op.
OPS_MERGE = {"Add": "add", "Multiply": "mul"}


def merge_kind(op, n_inputs: int) -> str | None:
    """The IR op of a merge layer, or of a ``keras.ops`` add / multiply
    of ``n_inputs`` == 2 tensors (``x + y``); None otherwise.

    Example:
        >>> merge_kind(keras.layers.Concatenate(), 3)
        'concat'
    """
    if type(op) in MERGE:
        return MERGE[type(op)]
    if ops_name(op) == "Concatenate":  # ops.concatenate([x, y], axis=-1)
        return "concat"
    if n_inputs != 2:
        return None
    return OPS_MERGE.get(ops_name(op))


def merge_inputs(imp, layer, ins, out) -> tuple:
    """``(op, IR inputs)`` of merge ``layer`` reading Keras tensors
    ``ins`` (made integer by importer ``imp``), after checking its form.

    Raises:
        ValueError: an Add / Multiply of other than two tensors, a
            Concatenate on another axis, a Multiply whose shapes are
            neither one nor a per-channel gate (naming layer and shapes).

    Example:
        >>> merge_inputs(imp, keras.layers.Multiply(name="se"), [x, g], y)
        ('mul', ('x', 'gate'))
    """
    kind = merge_kind(layer, len(ins))
    cls = type(layer).__name__
    if not isinstance(layer, L.Layer) and kind == "add" and \
            tuple(ins[0].shape[1:]) != tuple(ins[1].shape[1:]):
        raise ValueError(
            f"keras.ops call {layer.name!r} ({cls}) broadcasts two shapes "
            f"{[tuple(t.shape[1:]) for t in ins]}; the IR's add needs one "
            "shape (TFLite's ADD). Use an Add layer on tensors of one "
            "shape.")
    if kind != "concat":
        _check_two(layer, ins)
    if kind == "concat":
        concat_axis(layer, len(out.shape))
    elif kind == "mul":
        mul_shape([t.shape[1:] for t in ins], layer.name, cls)
    return kind, tuple(imp.as_int(t, f"{layer.name}_in{i}")
                       for i, t in enumerate(ins))


def _check_two(layer, ins) -> None:
    """A ValueError naming ``layer`` unless it reads two tensors."""
    if len(ins) != 2:
        raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}) "
                         f"of {len(ins)} tensors; only 2 are supported. "
                         "Received shapes: "
                         f"{[tuple(t.shape[1:]) for t in ins]}")


def shared_grid(builder, kind: str, inputs):
    """The grid a pending concat keeps when nothing quantizes it: its
    inputs' one grid (None: they differ, or another op; calibrate).

    Example:
        >>> shared_grid(b, "concat", ("a", "b")) == b.quant("a")
        True
    """
    grids = {(q.scale, q.zero_point) for q in map(builder.quant, inputs)}
    if kind == "concat" and len(grids) == 1:
        return builder.quant(inputs[0])
    return None


def emit_merge(builder, kind: str, name: str, inputs, grid, act: str) -> str:
    """Adds merge op ``kind`` over IR ``inputs`` onto ``grid``, ``act``
    ("linear", "relu" or "relu6") as its clamp; returns its name.

    Example:
        >>> emit_merge(b, "mul", "se", ("x", "gate"), grid, "linear")
        'se'
    """
    kw = {"relu": act != "linear",
          "relu_max": 6.0 if act == "relu6" else None}
    if kind == "concat":
        return builder.concat(name, list(inputs), grid, **kw)
    return getattr(builder, kind)(name, *inputs, grid, **kw)


def emit_average(imp, layer, ins) -> str:
    """The IR tensor of a ``QuantAverage`` ``layer`` of two Keras tensors
    ``ins``: the add's codes are those of its "sum" quantizer, and read on
    a grid of half that step they are the average (the QAT layer's float
    ``* 0.5`` is exact), so one ``add`` with its output rescaling halved.

    Raises:
        ValueError: not two inputs, or a sum quantizer that never saw data.

    Example:
        >>> name = emit_average(importer, qat.get_layer("avg"), [a, b])
    """
    _check_two(layer, ins)
    q = layer.step_quantizers.get("sum")
    if q is None or not q.calibrated:
        raise ValueError(f"layer {layer.name!r} (QuantAverage): its sum's "
                         "quantizer never saw data; calibrate the model "
                         "first (tfcomp.quantization.calibrate)")
    s, z = q.numpy_grid()
    half = qat_grid((float(s) / 2, z, q.bits))
    a, b = (imp.as_int(t, f"{layer.name}_in{i}") for i, t in enumerate(ins))
    return imp.builder.add(imp.name(layer.name), a, b, half, scale=0.5)
