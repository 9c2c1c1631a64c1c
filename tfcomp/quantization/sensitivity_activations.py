"""The input-activation side of :func:`tfcomp.quantization.sensitivity.
sensitivity` (``kind="activations"``): the calibration-range grid, each
layer's measured tensors, the output-distortion table and the inputs of
HAWQ-V2's activation term; and the operands (parts) of a layer that
``quantize_model`` quantizes as two.

A layer's operands are what QAT quantizes at its bits: its kernel and its
input, or for a ``SeparableConv2D`` (``SeparableConv1D``), which
``quantize_model`` splits into a depthwise conv ``<name>_depthwise`` and
a 1x1 conv ``<name>`` at the layer's bits, both kernels, and both the
layer's input and the depthwise output the 1x1 conv reads. While its
activations are measured such a layer runs as its two halves
(:func:`split_separable`: ``keras.ops.depthwise_conv`` then
``keras.ops.conv``, the same arithmetic), so hooks reach the tensor
between them.

Reference: Dong et al., HAWQ-V2, arXiv:1911.03852 (activation term); Sony
Model Compression Toolkit (MCT) mixed precision (output distortion).

Example:
    >>> ops = operands(["sep", "fc"], [sep_layer, fc_layer])
    >>> [(o.row, o.name, o.part) for o in ops]
    [(0, 'sep_depthwise', 'depthwise'), (0, 'sep', 'pointwise'),
     (1, 'fc', None)]
"""

from __future__ import annotations

import contextlib
import functools
from collections import namedtuple

import keras
import numpy as np

from tfcomp._batches import as_model_input, index_rows
from tfcomp._batches import rows as num_rows
from tfcomp.graph.calls import override_calls
from tfcomp.quantization._separable import is_separable
from tfcomp.quantization.hessian import _batches, activation_traces

__all__ = ["Operand", "operands", "rows_sum", "parts_meta",
           "split_separable", "input_grid", "fake_quant_input",
           "input_ranges", "activation_terms", "activation_table"]

Operand = namedtuple("Operand", "row name layer part target")
Operand.__doc__ = """One quantized operand of a table row: ``row`` (the
layer's index), ``name`` (``quantize_model``'s layer name of the part),
``layer`` (the float layer), ``part`` (None, ``"depthwise"`` or
``"pointwise"``) and ``target`` (what activation hooks wrap: the layer, or
the pointwise half of a split ``SeparableConv2D``; None outside
:func:`split_separable`)."""


def operands(names, layers) -> list:
    """The :class:`Operand` list of ``layers`` (one per layer, two per
    ``SeparableConv2D``: ``<name>_depthwise``, then ``<name>``).

    Example:
        >>> [o.name for o in operands(["sep"], [sep_layer])]
        ['sep_depthwise', 'sep']
    """
    out = []
    for i, (name, layer) in enumerate(zip(names, layers)):
        if is_separable(layer):
            out += [Operand(i, f"{name}_depthwise", layer, "depthwise", None),
                    Operand(i, name, layer, "pointwise", None)]
        else:
            out.append(Operand(i, name, layer, None, None))
    return out


def rows_sum(part_table, ops, n_rows: int) -> np.ndarray:
    """Per-operand rows summed into their layers' rows.

    Example:
        >>> rows_sum(np.ones((3, 2)), ops, 2)  # ops: sep (2 parts), fc
        array([[2., 2.], [1., 1.]])
    """
    part_table = np.asarray(part_table, np.float64)
    table = np.zeros((n_rows, part_table.shape[1]))
    np.add.at(table, [o.row for o in ops], part_table)
    return table


def parts_meta(ops) -> dict:
    """``{layer: [part names]}`` of the layers measured as several
    operands ({} when there are none)."""
    groups = {}
    for o in ops:
        groups.setdefault(o.row, []).append(o.name)
    return {names[-1]: names for names in groups.values() if len(names) > 1}


class _Pointwise:
    """The second half of a ``SeparableConv2D`` (1x1 conv, bias,
    activation), with a ``call`` activation hooks can wrap as a layer's."""

    def __init__(self, layer):
        self.layer = layer
        self.name = layer.name

    def depthwise(self, inputs):
        lay = self.layer
        return keras.ops.depthwise_conv(
            inputs, lay.depthwise_kernel, strides=lay.strides,
            padding=lay.padding, data_format=lay.data_format,
            dilation_rate=lay.dilation_rate)

    def call(self, mid):
        lay = self.layer
        y = keras.ops.conv(mid, lay.pointwise_kernel, strides=1,
                           padding="valid", data_format=lay.data_format)
        if lay.use_bias:
            ones = (1,) * len(lay.kernel_size)
            shape = ((1,) + ones + (lay.filters,)
                     if lay.data_format == "channels_last"
                     else (1, lay.filters) + ones)
            y = y + keras.ops.reshape(lay.bias, shape)
        return y if lay.activation is None else lay.activation(y)

    def split_call(self, _call):
        """The layer's ``call`` while split (an :func:`~tfcomp.graph.calls.
        override_calls` wrapper): the depthwise half, then this one."""
        return lambda inputs: self.call(self.depthwise(inputs))


@contextlib.contextmanager
def split_separable(ops):
    """Runs every ``SeparableConv2D`` of ``ops`` as its depthwise half and
    a :class:`_Pointwise` half (restored on exit, errors included); yields
    ``ops`` with their activation ``target`` set.

    Example:
        >>> with split_separable(operands(names, layers)) as ops:
        ...     table = activation_table(model, ops, len(names), ...)
    """
    stages, out = {}, []
    for o in ops:
        if o.part is None:
            out.append(o._replace(target=o.layer))
            continue
        stage = stages.get(id(o.layer))
        if stage is None:
            stage = stages[id(o.layer)] = _Pointwise(o.layer)
        out.append(o._replace(target=o.layer if o.part == "depthwise"
                              else stage))
    with override_calls({s.layer: s.split_call for s in stages.values()}):
        yield out


# ------------------------------------------------------------- the grid


def input_grid(bits: int, lo: float, hi: float) -> tuple:
    """``(scale, qmin, qmax)`` of :func:`fake_quant_input`'s grid."""
    if lo >= 0:
        return max(hi, 1e-12) / (2 ** bits - 1), 0, 2 ** bits - 1
    levels = max(2 ** (bits - 1) - 1, 1)
    return max(abs(lo), abs(hi), 1e-12) / levels, -levels, levels


def fake_quant_input(x, bits: int, lo: float, hi: float):
    """``x`` on a ``bits``-bit grid over the calibration range: unsigned on
    ``[0, hi]`` when ``lo >= 0``, else symmetric on ``max(|lo|, |hi|)``."""
    scale, qmin, qmax = input_grid(bits, lo, hi)
    ops = keras.ops
    return ops.clip(ops.round(x / scale), qmin, qmax) * scale


# ------------------------------------------------------------- probing


def _input_probe(model, ops, x, batch_size):
    """Yields, per batch, every operand's input (numpy arrays): a layer's
    input, or for a pointwise half its layer's depthwise output. The inputs
    are recorded by the layers' own calls during an eager forward pass, so
    layers inside nested models are reached too (their symbolic ``input``
    belongs to the inner model's graph, which the outer inputs do not
    feed)."""
    seen: dict = {}

    def recorder(key, f):
        def call(inputs, *args, **kwargs):
            seen[key] = inputs
            return f(inputs, *args, **kwargs)
        return call

    with override_calls({o.layer: functools.partial(recorder, id(o.layer))
                         for o in ops}):
        for sl in _batches(num_rows(x), batch_size):
            seen.clear()
            model(as_model_input(model, index_rows(x, sl)), training=False)
            got = []
            for o in ops:
                t = seen[id(o.layer)]
                if isinstance(o.target, _Pointwise):
                    t = o.target.depthwise(t)
                got.append(keras.ops.convert_to_numpy(t))
            yield got


def input_ranges(model, ops, x, batch_size) -> tuple:
    """``(ranges, shapes, floating)``: per operand the calibration range
    ``(lo, hi)`` of its input, one sample's input shape, and whether the
    input is floating point (an Embedding's indices are not)."""
    lo = np.full(len(ops), np.inf)
    hi = np.full(len(ops), -np.inf)
    shapes, floating = [None] * len(ops), [True] * len(ops)
    for outs in _input_probe(model, ops, x, batch_size):
        for i, t in enumerate(outs):
            lo[i], hi[i] = min(lo[i], t.min()), max(hi[i], t.max())
            shapes[i] = tuple(t.shape[1:])
            floating[i] = np.issubdtype(t.dtype, np.floating)
    return list(zip(lo.tolist(), hi.tolist())), shapes, floating


def activation_terms(model, ops, x, bits, batch_size, ranges, shapes,
                     floating, meta, hutch) -> tuple:
    """HAWQ-V2's activation term: ``(noise, sizes, traces_of)`` per operand
    for :func:`~tfcomp.quantization.hessian.hessian_table`, ``noise[i, j] =
    ||Q_b(A_i) - A_i||^2`` over all samples, ``sizes`` their element
    counts. Operands with integer inputs (Embedding) count 0."""
    names = [o.name for o in ops]
    noise = np.zeros((len(ops), len(bits)))
    grids = [[input_grid(b, *r) for b in bits] for r in ranges]
    for outs in _input_probe(model, ops, x, batch_size):
        for i, t in enumerate(outs):
            for j, (scale, qmin, qmax) in enumerate(grids[i] if floating[i]
                                                    else []):
                q = np.clip(np.round(t / scale), qmin, qmax) * scale
                noise[i, j] += float(np.sum((q.astype(np.float64) - t) ** 2))
    sizes = [num_rows(x) * int(np.prod(s)) for s in shapes]
    idx = [i for i, f in enumerate(floating) if f]
    meta.update(n_activations=dict(zip(names, sizes)),
                probing="sample-disjoint",
                quant_noise={n: noise[i].tolist()
                             for i, n in enumerate(names)})
    if len(idx) < len(ops):
        meta["not_measured"] = [names[i] for i in range(len(ops))
                                if i not in idx]

    def traces_of(targets, fn):
        traces, se = np.zeros(len(ops)), np.zeros(len(ops))
        if not idx:
            return traces, 0, se
        t, probes, e = activation_traces(
            model, [ops[i].target for i in idx], [shapes[i] for i in idx], x,
            targets, fn, batch_size, **hutch)
        traces[idx], se[idx] = t, e
        return traces, probes, se
    return noise, sizes, traces_of


def activation_table(model, ops, n_rows, x, float_out, bits, batch_size,
                     ranges, forward_fn, predict_fn):
    """Output distortion per layer and width with the layer's operand
    inputs quantized (both of a split separable). Every operand's input
    passes through a switchable fake quantizer whose grid lives in
    variables, so one compiled forward (``forward_fn(model)``, evaluated by
    ``predict_fn``) serves every (layer, width) pair: the layer under test
    is switched on, the others pass their input through unchanged."""
    table = np.zeros((n_rows, len(bits)))
    grid = keras.Variable(np.zeros((len(ops), 4), np.float32),
                          trainable=False, name="input_grid")

    def hooked(i, f):
        def call(inputs, *args, **kwargs):
            kops = keras.ops
            if not keras.backend.is_float_dtype(inputs.dtype):
                return f(inputs, *args, **kwargs)  # token ids: exact
            on, scale, qmin, qmax = (kops.cast(grid[i, k], inputs.dtype)
                                     for k in range(4))
            q = kops.clip(kops.round(inputs / scale), qmin, qmax) * scale
            return f(kops.where(on > 0, q, inputs), *args, **kwargs)
        return call

    with override_calls({o.target: functools.partial(hooked, i)
                         for i, o in enumerate(ops)}):
        forward = forward_fn(model)
        for r in range(n_rows):
            mine = [i for i, o in enumerate(ops) if o.row == r]
            for j, b in enumerate(bits):
                rows = np.zeros((len(ops), 4), np.float32)
                rows[:, 1] = 1.0
                for i in mine:
                    rows[i] = (1.0, *input_grid(b, *ranges[i]))
                grid.assign(rows)
                out = predict_fn(model, x, batch_size, forward)
                table[r, j] = float(np.mean((out - float_out) ** 2))
    return table
