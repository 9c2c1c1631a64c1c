"""Keras QAT model -> :class:`IntegerIR` (``build_ir_from_keras``).

Reads a quantization-aware model from ``tfcomp.quantization.quantize_model``
(or built by hand from ``tfcomp.layers``) through
``tfcomp.quantization.quantization_params``: integer weight codes and
per-channel scales of QuantConv2D / QuantDepthwiseConv2D / QuantDense, the
grids ``(scale, zero_point, bits)`` of every input quantizer and every
QuantActivation / QuantReLU. Activation codes are unsigned b-bit values with
a zero point (the QAT grid), so a QAT tensor maps to
``QuantParams(bits, signed=False, scale, zero_point)``.

Each Keras tensor is tracked as either an integer IR tensor or a *pending*
float value (a GEMM layer's output, a residual sum) that becomes an integer
tensor on the grid of whatever quantizes it next: the GEMM's requantization
then targets that grid directly (fused ReLU / ReLU6 as the clamp), as an
integer-only deployment does. Where a tensor is quantized twice on
different grids (a QuantActivation, then a layer's input quantizer) a
``requantize`` op is inserted. The merges (``keras_merge``: Add,
Concatenate on the last axis, Multiply of one shape or by a squeeze-excite
per-channel gate) are pending too and land on the grid of what quantizes
them next; read by an op with no quantizer of its own (max pooling, the
model output...) a concat keeps its inputs' grid when they share one,
else they take a calibrated grid. Tensors that the model never quantizes
(hand-built models without observers) take a min/max grid calibrated on
``calibration_data`` (8 bits; the model output 16 bits). A
``Normalization`` on the float model input folds into the input rescale
(after a folded ``Rescaling``: composed); on a quantized tensor it is a
per-channel table, as a BatchNormalization there.

A model of several inputs (functional, ``keras.Model([a, b], ...)``)
gives an IR of several inputs (``IntegerIR.inputs``, ``model.inputs``
order) named by their InputLayers, each on the grid of what quantizes it
first (its own folded Rescaling / Normalization too); its calibration data
is a list of arrays, ``((x1, x2), y)`` or batches of those, as ``fit``
takes them.

The int32 bias is the layer's bias on the accumulator grid ``input_scale
* weight_scale``; QAT layers add their bias rounded to that grid in the
forward pass too (``QuantMixin.quantized_bias``), so the integer network
reproduces the QAT model's codes except where a float rounding tie falls
the other way (fixed-point requantization vs. float32 FakeQuant). A bias
off that grid (a layer whose forward pass adds the float bias) is rounded
and reported in ``ir.notes``: at 2-4 bits that step can exceed an output
step, which cost ~4% top-1 agreement on a HAQ ResNet-8. Other
approximations: an average pool that no quantizer follows is rounded to
its input's grid; float (32-bit) weights are quantized to 8 bits per
channel (noted); binary (1-bit) +-1 weights are exported as 1-bit sign
codes; a final softmax is dropped (argmax-invariant); a folded
Normalization rescales the input in one float32 multiply-add where Keras
takes two steps (an input within an ulp of a rounding boundary can land
one code apart; noted).

Example:
    >>> qat = quantize_model(model, bits=4)
    >>> calibrate(qat, x_train[:256])
    >>> ir = build_ir_from_keras(qat, x_train[:64])
    >>> ir2 = build_ir_from_keras(qat_two_inputs, [img[:64], meta[:64]])
"""

from __future__ import annotations

import dataclasses
import warnings

import keras
import numpy as np

from tfcomp.export._inputs import input_names, model_data
from tfcomp.export.bitserial.builder import IRBuilder
from tfcomp.export.bitserial.ir import IntegerIR, QuantParams
from tfcomp.export.bitserial.keras_binary import sign_input
from tfcomp.export.bitserial.keras_gemm import emit_gemm
from tfcomp.export.bitserial.keras_layers import (
    LUT_ACTIVATIONS,
    check_single_calls,
    compose_rescale,
    fixed_shape,
    lut_table,
    normalization_affine,
    pool_window,
    qat_grid,
    rescale_of,
    unsupported_layer_error,
)
from tfcomp.export.bitserial.keras_merge import (
    MERGE,
    emit_average,
    emit_merge,
    merge_inputs,
    merge_kind,
    shared_grid,
)
from tfcomp.export.bitserial.keras_moves import (
    MOVES,
    emit_move,
    move_of,
    moved_source,
)
from tfcomp.export.bitserial.keras_moves import Pending as _Pending
from tfcomp.export.bitserial.keras_patterns import GEMM as _GEMM
from tfcomp.export.bitserial.keras_patterns import IDENTITY as _IDENTITY
from tfcomp.export.bitserial.keras_patterns import MIXED as _MIXED
from tfcomp.export.bitserial.keras_patterns import WINDOW_1D as _WINDOW_1D
from tfcomp.export.bitserial.keras_patterns import (
    elementwise_call,
    find_swish_muls,
    pooling_of_reduce,
    visit_swish,
)
from tfcomp.export.bitserial.random_ir import calibrated_quant
from tfcomp.layers import (
    QUANT_STEP_ACTIVATIONS,
    QuantActivation,
    QuantAverage,
    QuantReLU,
)
from tfcomp.quantization._analysis import act_name, relu_kind

__all__ = ["build_ir_from_keras", "model_data"]

L = keras.layers


def _act(layer) -> str:
    return act_name(getattr(layer, "activation", None))


class _Importer:
    def __init__(self, model, calibration_data, default_bits, output_bits):
        from tfcomp.quantization import quantization_params
        from tfcomp.quantization._graph import read_graph

        self.model = model
        self.graph = read_graph(model, "build_ir_from_keras")
        self.params = quantization_params(model)
        self.cal_x = None if calibration_data is None else model_data(
            calibration_data, model)
        self.default_bits = default_bits
        self.output_bits = output_bits
        self.state: dict = {}  # id(KerasTensor) -> str (IR name) | _Pending
        self.cache: dict = {}  # (id, grid key, relu) -> IR name
        self.builder: IRBuilder | None = None
        self.inputs = keras.tree.flatten(model.inputs)
        # IR input names: "input" for one, the InputLayer names for several
        self.in_names = ["input"] if len(self.inputs) == 1 else (
            input_names(model) or [t.name for t in self.inputs])
        self.fed: set = set()  # indices of the inputs already in the IR
        self._probe_values: dict | None = None
        self.notes: list[str] = []
        self.source: dict = {}  # id(tensor) -> tensor it merely forwards
        self.keras_output = None
        self.used: set = set(self.in_names)
        self.views: dict = {}  # reshape op -> the tensor it views
        self.has_bias: dict = {}  # GEMM op -> whether the layer has a bias
        self.swish, self.skipped = find_swish_muls(self.graph)

    # -- naming / calibration ------------------------------------------
    def name(self, base: str) -> str:
        n, i = base, 1
        while n in self.used or n == "input":
            n, i = f"{base}_{i}", i + 1
        self.used.add(n)
        return n

    def values(self, tensor) -> np.ndarray:
        if self.cal_x is None:
            prod = self.graph.producer_of(tensor)
            where = "the model input" if prod is None else \
                f"the output of layer {prod.name!r}"
            raise ValueError(
                "calibration_data is needed: no quantizer covers "
                f"{where}; pass calibration inputs or quantize the model "
                "with tfcomp.quantization.quantize_model")
        xs = self.cal_x if isinstance(self.cal_x, list) else [self.cal_x]
        xs = [np.asarray(a, np.float32) for a in xs]
        for t, a in zip(self.inputs, xs):
            if id(tensor) == id(t):
                return a
        if self._probe_values is None:
            outs = [n.output_list()[0] for n in self.graph.nodes]
            probe = keras.Model(self.model.inputs, outs)
            ys = probe.predict(xs if len(xs) > 1 else xs[0], verbose=0,
                               batch_size=256)
            ys = ys if isinstance(ys, list) else [ys]
            self._probe_values = {id(t): y for t, y in zip(outs, ys)}
        return self._probe_values[id(tensor)]

    def calibrated(self, tensor, bits) -> QuantParams:
        return calibrated_quant(self.values(tensor), bits, False)

    # -- materialisation -------------------------------------------------
    def materialize(self, tensor, grid: QuantParams | None,
                    relu: str = "linear", base: str = "t") -> str:
        st = self.state[id(tensor)]
        if isinstance(st, _Pending) and st.kind in MOVES:
            # moving values (padding with real 0, upsampling, cropping)
            # commutes with quantization and ReLU
            src = self.materialize(st.keras_tensor, grid, relu, base)
            key = (id(tensor), src)
            if key not in self.cache:
                self.cache[key] = emit_move(self, st, src)
            return self.cache[key]
        if grid is None:
            if isinstance(st, str) and relu == "linear":
                return st
            if isinstance(st, str):
                grid = self.builder.quant(st)
            elif st.kind == "avg":  # stay on the input's grid
                grid = self.builder.quant(st.x)
            elif st.kind in MERGE.values():  # a concat's shared grid
                grid = shared_grid(self.builder, st.kind, st.inputs)
            grid = grid or self.calibrated(tensor, self.default_bits)
        key = (id(tensor), grid.bits, grid.scale, grid.zero_point, relu)
        if key in self.cache:
            return self.cache[key]
        relu_max = 6.0 if relu == "relu6" else None
        on = relu != "linear"
        b = self.builder
        if isinstance(st, _Pending) and st.kind == "input":
            out = self.state[id(tensor)] = self._add_input(st, grid)
            b = self.builder
            if on:
                out = b.relu(self.name(f"{base}_relu"), out, relu_max)
        elif isinstance(st, str):
            if b.quant(st) == grid:
                out = b.relu(self.name(f"{base}_relu"), st, relu_max) if \
                    on else st
            else:
                out = b.requantize(self.name(f"{base}_rq"), st, grid,
                                   relu=on, relu_max=relu_max)
        elif st.kind == "gemm":
            out = emit_gemm(self, st, grid, relu)
        elif st.kind == "avg":
            out = self._emit_avg(st, grid, relu)
        elif st.kind == "lut":
            out = self._emit_lut(st, grid, relu)
        else:  # add / concat / mul
            out = emit_merge(b, st.kind, self.name(st.layer.name), st.inputs,
                             grid, st.relu if relu == "linear" else relu)
        self.cache[key] = out
        return out

    def _add_input(self, st: _Pending, grid: QuantParams) -> str:
        """Model input ``st.index`` into the IR on ``grid``: its name."""
        i, name = st.index, self.in_names[st.index]
        if i in self.fed:
            which = "the model input" if len(self.inputs) == 1 else \
                f"model input {name!r}"
            raise ValueError(
                f"{which} is read both before and after a Rescaling / "
                "Normalization layer; only one that every reader of the "
                "input goes through folds into the input quantization")
        shape = fixed_shape(self.inputs[i], name)
        if self.builder is None:
            self.builder = IRBuilder(shape, grid, input_name=name,
                                     name=self.model.name,
                                     input_rescale=st.rescale)
        else:
            self.builder.add_input(name, shape, grid, st.rescale)
        self.fed.add(i)
        return name

    def _emit_lut(self, st: _Pending, grid: QuantParams, relu: str) -> str:
        """The element-wise layer as a table onto ``grid``."""
        layer, b = st.layer, self.builder
        act = st.relu if relu == "linear" else relu
        table = lut_table(layer, b.quant(st.x), int(b.shape(st.x)[-1]),
                          len(st.out_shape), grid, act)
        return b.lut(self.name(layer.name), st.x, table, grid)

    def view(self, x: str, shape: tuple, base: str) -> str:
        """``x`` reshaped to ``shape`` (a layout-only reshape op, skipped
        when ``x`` is itself a view of a tensor of that shape)."""
        b = self.builder
        shape = tuple(int(d) for d in shape)
        if b.shape(x) == shape:
            return x
        src = self.views.get(x)
        if src is not None and b.shape(src) == shape:
            return src
        y = b.reshape(self.name(base), x, shape)
        self.views[y] = x
        return y

    def _emit_avg(self, st: _Pending, grid: QuantParams, relu: str) -> str:
        layer, b = st.layer, self.builder
        if relu == "relu6":
            raise ValueError(f"layer {layer.name!r}: ReLU6 after average "
                             "pooling has no integer form here")
        name = self.name(layer.name)
        if type(layer) in (L.GlobalAveragePooling2D,
                           L.GlobalAveragePooling1D):
            y = b.global_avg_pool(name, st.x, grid, relu=relu == "relu")
            return self.view(y, st.out_shape, f"{layer.name}_keepdims")
        y = b.avg_pool(name, st.x, pool_window(layer.pool_size),
                       pool_window(layer.strides), layer.padding, grid,
                       relu=relu == "relu")
        return self.view(y, st.out_shape, f"{layer.name}_1d")

    def as_int(self, tensor, base: str) -> str:
        st = self.state[id(tensor)]
        return st if isinstance(st, str) else self.materialize(tensor, None,
                                                               base=base)

    # -- the walk -----------------------------------------------------------
    def run(self) -> IntegerIR:
        for i, t in enumerate(self.inputs):
            self.state[id(t)] = _Pending("input", index=i)
        for node in self.graph.nodes:
            self.visit(node)
        out_t = keras.tree.flatten(self.model.outputs)
        if len(out_t) != 1:
            raise ValueError("build_ir_from_keras supports single-output "
                             f"models. Received {len(out_t)} outputs")
        st = self.state[id(out_t[0])]
        self.keras_output = self.source.get(id(out_t[0]), out_t[0])
        if not isinstance(st, str):  # moved integers keep their grid
            grid = None if isinstance(moved_source(
                self.state, self.keras_output), str) else self.calibrated(
                self.keras_output, self.output_bits)
            st = self.materialize(self.keras_output, grid, base="output")
        b = self.builder
        used = {st} | {n for op in b.ops for n in op.inputs}
        b.ops = [op for op in b.ops if op.name in used or op.name not in
                 self.views]  # drop view-backs no one reads
        for op in b.ops:
            if op.name in self.has_bias:
                op.attrs["use_bias"] = self.has_bias[op.name]
        unread = [n for i, n in enumerate(self.in_names) if i not in
                  self.fed]
        if unread:
            raise ValueError(f"model inputs {unread} never reach the model "
                             "output; the bit-serial export needs every "
                             "input to be read")
        return b.build(output=st, input_order=self.in_names)

    def visit(self, node) -> None:
        if visit_swish(self, node):  # x * q(sigmoid(x)): one table
            return
        layer = pooling_of_reduce(node) or node.layer  # ops.mean: pooling
        cls = type(layer)
        ins = node.input_list()
        outs = node.output_list()
        out = outs[0]
        p = self.params.get(layer.name)
        if isinstance(layer, _MIXED):
            raise ValueError(f"layer {layer.name!r} is a DNAS supernet "
                             "layer; derive its bits first")
        if cls in _GEMM:
            grid = qat_grid(p["input"]) if p else None
            if p and getattr(layer, "input_quantizer", None) is not None \
                    and grid is None:
                raise ValueError(f"layer {layer.name!r}: its input "
                                 "quantizer never saw data; calibrate or "
                                 "train the model first")
            act = _act(layer)
            if act not in ("linear", "relu", "relu6"):
                raise ValueError(
                    f"layer {layer.name!r}: activation {act!r} has no "
                    "integer form fused into the layer; quantize_model "
                    "splits it off (an observer, then an Activation: a "
                    "table), or use a separate Activation layer")
            src, pads = ins[0], (0, 0, 0, 0)
            st = self.state[id(src)]
            if isinstance(st, _Pending) and st.kind == "pad" and _GEMM[
                    cls] != "dense" and "transpose" not in _GEMM[cls]:
                # a ZeroPadding read by a conv folds into the conv's pads
                spatial = st.pads[:-1]
                pads = tuple(v for ax in ([[0, 0]] + spatial if len(
                    spatial) == 1 else spatial) for v in ax)
                src = st.keras_tensor
            x = self.materialize(src, grid, base=f"{layer.name}_in")
            if getattr(layer, "binary_activations", False):
                x = sign_input(self, x, layer)  # binary activations
            self.state[id(out)] = _Pending(
                "gemm", layer, x, relu=act, pads=pads,
                out_shape=tuple(int(d) for d in out.shape[1:]))
        elif cls in (QuantActivation, QuantReLU):
            grid = qat_grid(p["output"])
            if grid is None:
                raise ValueError(f"layer {layer.name!r}: quantizer never saw "
                                 "data; calibrate or train the model first")
            relu = "linear"
            if cls is QuantReLU:
                relu = relu_kind(keras.layers.ReLU(
                    max_value=layer.max_value,
                    negative_slope=layer.negative_slope,
                    threshold=layer.threshold))
                if relu is None:
                    raise ValueError(f"layer {layer.name!r}: only ReLU and "
                                     "ReLU6 have an integer form")
            self.state[id(out)] = self.materialize(ins[0], grid, relu,
                                                   base=layer.name)
        elif relu_kind(layer) is not None:
            relu = relu_kind(layer)
            st = self.state[id(ins[0])]
            if isinstance(st, _Pending) and st.kind in (
                    "gemm", "add", "concat", "mul", "lut") and \
                    st.relu == "linear":
                self.state[id(out)] = dataclasses.replace(st, relu=relu)
            else:
                x = self.as_int(ins[0], layer.name)
                self.state[id(out)] = self.builder.relu(
                    self.name(layer.name), x, 6.0 if relu == "relu6"
                    else None)
        elif isinstance(layer, QuantAverage):
            self.state[id(out)] = emit_average(self, layer, ins)
        elif merge_kind(layer, len(ins)) is not None:
            kind, xs = merge_inputs(self, layer, ins, out)
            self.state[id(out)] = _Pending(kind, layer, inputs=xs)
        elif (move := move_of(layer)) is not None:  # pad, upsample, crop
            self.state[id(out)] = _Pending(move[0], layer,
                                           keras_tensor=ins[0], pads=move[1])
        elif cls in (L.Rescaling, L.Normalization) and self.on_input(
                ins[0], cls is L.Rescaling):
            # the float model input: fold into the input quantization
            st = self.state[id(ins[0])]  # that input's pending state
            affine = rescale_of(layer) if cls is L.Rescaling else \
                normalization_affine(layer)
            self.state[id(out)] = dataclasses.replace(
                st, layer=layer, rescale=compose_rescale(st.rescale, affine))
            if cls is L.Normalization:
                self.notes.append(f"{layer.name}: Normalization folded into "
                                  "the input rescale (one float32 FMA)")
        elif cls in (L.Rescaling, L.BatchNormalization, L.Normalization,
                     L.PReLU, L.LeakyReLU, L.ELU, L.ReLU) or (
                         cls is L.Activation and _act(layer) in
                         LUT_ACTIVATIONS):  # ReLU here: leaky, thresholded
            st = self.state[id(ins[0])]
            if cls is L.BatchNormalization and isinstance(
                    st, _Pending) and st.kind == "gemm":
                raise ValueError(f"layer {layer.name!r}: BatchNormalization "
                                 "must be folded (quantize_model(..., "
                                 "fold_batchnorm=True))")
            if cls is L.Normalization:
                normalization_affine(layer)  # per channel, or refused
            elif getattr(layer, "data_format", "channels_last") not in (
                    "channels_last",) or getattr(layer, "axis", -1) not in (
                    -1, len(out.shape) - 1):
                raise ValueError(f"layer {layer.name!r}: only channels-last "
                                 "element-wise layers have a table form")
            self.lut(layer, ins[0], out)
        elif issubclass(cls, QUANT_STEP_ACTIVATIONS):  # a table of codes
            self.lut(layer, ins[0], out)
        elif cls in (L.MaxPooling2D, L.MaxPooling1D):
            x = self.window_input(ins[0], layer)
            y = self.builder.max_pool(
                self.name(layer.name), x, pool_window(layer.pool_size),
                pool_window(layer.strides), layer.padding)
            self.state[id(out)] = self.view(y, tuple(out.shape[1:]),
                                            f"{layer.name}_1d")
        elif cls in (L.AveragePooling2D, L.GlobalAveragePooling2D,
                     L.AveragePooling1D, L.GlobalAveragePooling1D):
            # the exact mean goes straight onto the next quantizer's grid
            x = self.window_input(ins[0], layer)
            self.state[id(out)] = _Pending(
                "avg", layer, x, out_shape=tuple(int(d) for d in
                                                 out.shape[1:]))
        elif cls in (L.GlobalMaxPooling2D, L.GlobalMaxPooling1D):
            x = self.window_input(ins[0], layer)
            b = self.builder
            h, w = b.shape(x)[:2]
            y = b.max_pool(self.name(f"{layer.name}_max"), x, (h, w))
            self.state[id(out)] = self.view(
                y, tuple(out.shape[1:]), layer.name) if getattr(
                layer, "keepdims", False) else b.flatten(
                self.name(layer.name), y)
        elif cls in (L.Flatten, L.Reshape):
            x, nm = self.as_int(ins[0], layer.name), self.name(layer.name)
            self.state[id(out)] = self.builder.flatten(nm, x) if cls is \
                L.Flatten else self.builder.reshape(nm, x, tuple(out.shape[1:]))
        elif cls in _IDENTITY or (cls is L.Activation and _act(layer) ==
                                  "linear"):
            self.state[id(out)] = self.state[id(ins[0])]
            self.source[id(out)] = self.source.get(id(ins[0]), ins[0])
        elif cls in (L.Activation, L.Softmax) and (
                cls is L.Softmax or _act(layer) == "softmax") and \
                any(out is t for t in keras.tree.flatten(self.model.outputs)):
            self.state[id(out)] = self.state[id(ins[0])]
            self.source[id(out)] = ins[0]
            self.notes.append(f"{layer.name}: final softmax dropped "
                              "(argmax-invariant)")
        elif (call := elementwise_call(self.graph, node)) is not None:
            self.lut(call, ins[0], out)
        else:
            raise unsupported_layer_error(layer)

    def on_input(self, tensor, unscaled: bool) -> bool:
        """Whether ``tensor`` is the float model input (not yet rescaled,
        when ``unscaled``): a Rescaling / Normalization there folds."""
        st = self.state[id(tensor)]
        return isinstance(st, _Pending) and st.kind == "input" and not (
            unscaled and st.rescale is not None)

    def lut(self, layer, tensor, out) -> None:
        """``out`` = ``layer`` (element-wise) of ``tensor``: a pending table."""
        x = self.as_int(tensor, layer.name)
        if self.builder.quant(x).bits > 12:
            raise ValueError(f"layer {layer.name!r}: its input has "
                             f"{self.builder.quant(x).bits} bits; a table "
                             "needs <= 12")
        self.state[id(out)] = _Pending("lut", layer, x, out_shape=tuple(
            int(d) for d in out.shape[1:]))

    def window_input(self, tensor, layer) -> str:
        """The integer input of a pooling layer ((1, L, C) for 1D ones)."""
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            raise ValueError(f"layer {layer.name!r}: only data_format="
                             f"'channels_last' is supported. Received: "
                             f"{layer.data_format!r}")
        x = self.as_int(tensor, layer.name)
        if isinstance(layer, _WINDOW_1D):
            x = self.view(x, (1,) + tuple(self.builder.shape(x)),
                          f"{layer.name}_in2d")
        return x


def build_ir_from_keras(model, calibration_data=None, default_bits: int = 8,
                        output_bits: int = 16, *,
                        calibration_x=None) -> IntegerIR:
    """Maps a quantization-aware Keras model to an :class:`IntegerIR`.

    Supported layers (``keras_layers.SUPPORTED_LAYERS``): Conv1D /
    DepthwiseConv1D / Conv1DTranspose (their 2D forms at height 1), Conv2D
    (grouped too), Conv2DTranspose (a stride-1 conv over the
    zero-inserted input), DepthwiseConv2D, dilated convs (zero taps),
    Dense (QAT forms, or float: 8-bit weights; linear / ReLU / ReLU6),
    PReLU (a slope per channel: a table), LeakyReLU / ELU / a leaky or
    thresholded ReLU (tables), QuantActivation, QuantReLU, ReLU, Add (two
    inputs), Concatenate (last axis),
    Multiply (two inputs: one shape, or a per-channel squeeze-excite
    gate; see the module doc for their grids), pooling 1D/2D,
    ZeroPadding1D/2D (folded into a conv's padding, else a ``pad`` op),
    UpSampling1D/2D (interpolation="nearest": an ``upsample`` op) and
    Cropping1D/2D (a ``crop`` op), on their input's grid,
    Rescaling and Normalization (folded into a float input, else tables),
    a BatchNormalization that reads a quantized tensor and element-wise
    activations (``lut`` tables; also a swish built as ``x *
    QuantActivation(fixed)(sigmoid(x))``), Flatten, Reshape, dropout-like
    identities, a final softmax (dropped). Other layers (Embedding,
    attention, LayerNormalization, Conv3D, Lambda, ``keras.ops`` calls,
    bilinear UpSampling2D, ...) raise a ValueError.

    Args:
        model: a calibrated or trained QAT model (one output; one input,
            functional or Sequential, or several, functional).
        calibration_data: inputs used only for tensors the model never
            quantizes (min/max grids): an array, ``(x, y)`` or batches, as
            ``fit`` takes (several inputs: a list of arrays in
            ``model.inputs`` order, ``((x1, x2), y)`` or batches of those);
            may be None for ``quantize_model`` output.
        default_bits: bits of such calibrated intermediate grids.
        output_bits: bits of a calibrated model-output grid.
        calibration_x: deprecated name of ``calibration_data``.

    Like ``calibrate`` and int8 TFLite export, this links same-width input
    quantizers to the observer grid of their input (in place), so the
    descriptor and an int8 TFLite file of the model share every grid.

    Returns:
        A validated :class:`IntegerIR` whose op names follow the Keras
        layer names (its inputs: "input", or the InputLayer names of a
        model of several); ``ir.notes`` lists approximations made and
        ``ir.keras_output`` is the Keras tensor its output stands for (the
        pre-softmax logits when a final softmax was dropped).

    Example:
        >>> ir = build_ir_from_keras(qat_model)
        >>> y = integer_reference(ir, x_test[:8])
    """
    if calibration_x is not None:
        warnings.warn("calibration_x= is deprecated; use calibration_data=.",
                      DeprecationWarning, stacklevel=2)
        if calibration_data is None:
            calibration_data = calibration_x
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model. Received: "
                        f"{type(model).__name__}")
    for name, v in (("default_bits", default_bits),
                    ("output_bits", output_bits)):
        if not isinstance(v, int) or not 2 <= v <= 16:
            raise ValueError(f"{name} must be an int in [2, 16]. Received: "
                             f"{name}={v!r}")
    from tfcomp.quantization.quantize import link_shared_inputs

    check_single_calls(model)
    link_shared_inputs(model)  # one grid per tensor, as int8 TFLite export
    imp = _Importer(model, calibration_data, default_bits, output_bits)
    ir = imp.run()
    ir.notes = imp.notes
    ir.keras_output = imp.keras_output
    return ir
