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
``requantize`` op is inserted. Tensors that the model never quantizes
(hand-built models without observers) take a min/max grid calibrated on
``calibration_data`` (8 bits; the model output 16 bits).

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
channel (noted); binary (1-bit) +-1 weights are exported as 2-bit signed
codes; a final softmax is dropped (argmax-invariant).

Example:
    >>> qat = quantize_model(model, bits=4)
    >>> calibrate(qat, x_train[:256])
    >>> ir = build_ir_from_keras(qat, x_train[:64])
"""

from __future__ import annotations

import dataclasses
import warnings

import keras
import numpy as np

from tfcomp._io import as_arrays
from tfcomp.export.bitserial.builder import IRBuilder
from tfcomp.export.bitserial.ir import IntegerIR, QuantParams
from tfcomp.export.bitserial.random_ir import calibrated_quant
from tfcomp.layers import (
    MixedQuantConv2D,
    MixedQuantDense,
    MixedQuantDepthwiseConv2D,
    QuantActivation,
    QuantConv2D,
    QuantDense,
    QuantDepthwiseConv2D,
    QuantReLU,
)
from tfcomp.quantization._analysis import act_name, relu_kind

__all__ = ["build_ir_from_keras"]

L = keras.layers
# Layers are matched by exact type, not isinstance: a subclass may change
# what ``call`` computes (masks, extra terms), so it is not taken for its
# parent.
_GEMM = {QuantConv2D: "conv2d", QuantDepthwiseConv2D: "depthwise_conv2d",
         QuantDense: "dense", L.Conv2D: "conv2d",
         L.DepthwiseConv2D: "depthwise_conv2d", L.Dense: "dense"}
_MIXED = (MixedQuantConv2D, MixedQuantDepthwiseConv2D, MixedQuantDense)
_IDENTITY = (L.Dropout, L.SpatialDropout2D, L.GaussianNoise,
             L.GaussianDropout, L.AlphaDropout, L.ActivityRegularization,
             L.Identity)


@dataclasses.dataclass
class _Pending:
    """A float value not yet on an integer grid."""

    kind: str  # "gemm" | "add" | "avg" | "input"
    layer: object = None
    x: str | None = None  # IR input (gemm)
    inputs: tuple = ()  # IR inputs (add)
    relu: str = "linear"  # "linear" | "relu" | "relu6"
    keras_tensor: object = None


def _act(layer) -> str:
    return act_name(getattr(layer, "activation", None))


def _grid(entry) -> QuantParams | None:
    if entry is None:
        return None
    s, z, b = entry
    return QuantParams(int(b), False, float(s), int(z))


class _Importer:
    def __init__(self, model, calibration_data, default_bits, output_bits):
        from tfcomp.quantization import quantization_params
        from tfcomp.quantization._graph import read_graph

        self.model = model
        self.graph = read_graph(model, "build_ir_from_keras")
        self.params = quantization_params(model)
        self.cal_x = None if calibration_data is None else as_arrays(
            calibration_data, model=model)[0]
        self.default_bits = default_bits
        self.output_bits = output_bits
        self.state: dict = {}  # id(KerasTensor) -> str (IR name) | _Pending
        self.cache: dict = {}  # (id, grid key, relu) -> IR name
        self.builder: IRBuilder | None = None
        self.inputs = keras.tree.flatten(model.inputs)
        if len(self.inputs) != 1:
            raise ValueError("build_ir_from_keras supports single-input "
                             f"models. Received {len(self.inputs)} inputs")
        self.in_shape = tuple(int(d) for d in self.inputs[0].shape[1:])
        self._probe_values: dict | None = None
        self.notes: list[str] = []
        self.source: dict = {}  # id(tensor) -> tensor it merely forwards
        self.keras_output = None
        self.used: set = set()

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
        if id(tensor) == id(self.inputs[0]):
            return np.asarray(self.cal_x, np.float32)
        if self._probe_values is None:
            outs = [n.output_list()[0] for n in self.graph.nodes]
            probe = keras.Model(self.model.inputs, outs)
            ys = probe.predict(np.asarray(self.cal_x, np.float32),
                               verbose=0, batch_size=256)
            ys = ys if isinstance(ys, list) else [ys]
            self._probe_values = {id(t): y for t, y in zip(outs, ys)}
        return self._probe_values[id(tensor)]

    def calibrated(self, tensor, bits) -> QuantParams:
        return calibrated_quant(self.values(tensor), bits, False)

    # -- materialisation -------------------------------------------------
    def materialize(self, tensor, grid: QuantParams | None,
                    relu: str = "linear", base: str = "t") -> str:
        st = self.state[id(tensor)]
        if grid is None:
            if isinstance(st, str) and relu == "linear":
                return st
            if isinstance(st, str):
                grid = self.builder.quant(st)
            elif st.kind == "avg":  # stay on the input's grid
                grid = self.builder.quant(st.x)
            else:
                grid = self.calibrated(tensor, self.default_bits)
        key = (id(tensor), grid.bits, grid.scale, grid.zero_point, relu)
        if key in self.cache:
            return self.cache[key]
        relu_max = 6.0 if relu == "relu6" else None
        on = relu != "linear"
        b = self.builder
        if isinstance(st, _Pending) and st.kind == "input":
            if b is None:
                self.builder = b = IRBuilder(self.in_shape, grid,
                                             name=self.model.name)
                st = self.state[id(tensor)] = "input"
            else:
                raise AssertionError("input materialised twice")
            out = "input"
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
            out = self._emit_gemm(st, grid, relu)
        elif st.kind == "avg":
            out = self._emit_avg(st, grid, relu)
        else:  # add
            act = st.relu if relu == "linear" else relu
            out = b.add(self.name(st.layer.name), *st.inputs, grid,
                        relu=act != "linear",
                        relu_max=6.0 if act == "relu6" else None)
        self.cache[key] = out
        return out

    def _emit_gemm(self, st: _Pending, grid: QuantParams, relu: str) -> str:
        layer, b = st.layer, self.builder
        kind = _GEMM[type(layer)]
        p = self.params.get(layer.name, {})
        if "codes" in p:
            codes = np.asarray(p["codes"], np.int64)
            w_scale = np.asarray(p["scale"], np.float64)
            w_bits = int(layer.w_bits)
        else:  # float weights: 8-bit symmetric per output channel
            k = keras.ops.convert_to_numpy(layer.kernel).astype(np.float64)
            axes = (0, 1) if kind == "depthwise_conv2d" else tuple(
                range(k.ndim - 1))
            amax = np.maximum(np.abs(k).max(axis=axes, keepdims=True), 1e-12)
            s = amax / 127.0
            codes = np.clip(np.round(k / s), -127, 127).astype(np.int64)
            w_scale, w_bits = s.reshape(-1), 8
            self.notes.append(f"{layer.name}: float weights quantized to 8 "
                              "bits")
        if w_bits == 1:
            w_bits = 2
            self.notes.append(f"{layer.name}: binary weights exported as "
                              "2-bit codes")
        a = b.quant(st.x)
        bias = p.get("bias") if p else (
            keras.ops.convert_to_numpy(layer.bias) if layer.use_bias
            else None)
        n = w_scale.size
        bias_int = np.zeros(n, np.int64)
        if bias is not None:
            step = a.scale * w_scale
            r = np.asarray(bias, np.float64).reshape(-1) / step
            bias_int = np.clip(np.round(r), -(2**31), 2**31 - 1).astype(
                np.int64)
            # QAT layers add the bias already rounded to s_in * s_w; a bias
            # off that grid (float-bias forward pass) makes the integer
            # network deviate by up to half an accumulator step per channel
            off = np.abs(r - np.round(r)) * step / grid.scale
            if off.size and float(off.max()) > 0.01:
                self.notes.append(
                    f"{layer.name}: bias is not on the accumulator grid "
                    f"s_in * s_w; rounding it moves outputs by up to "
                    f"{float(off.max()):.2f} output steps")
        act = st.relu if relu == "linear" else relu
        kw = {"w_bits": w_bits, "relu": act != "linear",
              "relu_max": 6.0 if act == "relu6" else None}
        if kind != "dense":
            if tuple(layer.dilation_rate) != (1, 1):
                raise ValueError(f"layer {layer.name!r}: dilation_rate must "
                                 f"be 1. Received: {layer.dilation_rate}")
            if kind == "conv2d" and getattr(layer, "groups", 1) != 1:
                raise ValueError(f"layer {layer.name!r}: grouped convs are "
                                 f"not supported. Received: groups="
                                 f"{layer.groups}")
            kw.update(strides=tuple(layer.strides), padding=layer.padding)
        return getattr(b, kind)(self.name(layer.name), st.x, codes, w_scale,
                                bias_int, grid, **kw)

    def _emit_avg(self, st: _Pending, grid: QuantParams, relu: str) -> str:
        layer, b = st.layer, self.builder
        if relu == "relu6":
            raise ValueError(f"layer {layer.name!r}: ReLU6 after average "
                             "pooling has no integer form here")
        name = self.name(layer.name)
        if type(layer) is L.GlobalAveragePooling2D:
            return b.global_avg_pool(name, st.x, grid, relu=relu == "relu")
        return b.avg_pool(name, st.x, tuple(layer.pool_size),
                          tuple(layer.strides), layer.padding, grid,
                          relu=relu == "relu")

    def as_int(self, tensor, base: str) -> str:
        st = self.state[id(tensor)]
        return st if isinstance(st, str) else self.materialize(tensor, None,
                                                               base=base)

    # -- the walk -----------------------------------------------------------
    def run(self) -> IntegerIR:
        self.state[id(self.inputs[0])] = _Pending("input")
        for node in self.graph.nodes:
            self.visit(node)
        out_t = keras.tree.flatten(self.model.outputs)
        if len(out_t) != 1:
            raise ValueError("build_ir_from_keras supports single-output "
                             f"models. Received {len(out_t)} outputs")
        st = self.state[id(out_t[0])]
        self.keras_output = self.source.get(id(out_t[0]), out_t[0])
        if not isinstance(st, str):
            st = self.materialize(self.keras_output, self.calibrated(
                self.keras_output, self.output_bits), base="output")
        return self.builder.build(output=st)

    def visit(self, node) -> None:
        layer = node.layer
        cls = type(layer)
        ins = node.input_list()
        outs = node.output_list()
        out = outs[0]
        p = self.params.get(layer.name)
        if isinstance(layer, _MIXED):
            raise ValueError(f"layer {layer.name!r} is a DNAS supernet "
                             "layer; derive its bits first")
        if cls in _GEMM:
            grid = _grid(p["input"]) if p else None
            if p and getattr(layer, "input_quantizer", None) is not None \
                    and grid is None:
                raise ValueError(f"layer {layer.name!r}: its input "
                                 "quantizer never saw data; calibrate or "
                                 "train the model first")
            x = self.materialize(ins[0], grid, base=f"{layer.name}_in")
            act = _act(layer)
            if act not in ("linear", "relu", "relu6"):
                raise ValueError(f"layer {layer.name!r}: activation {act!r} "
                                 "has no integer form")
            self.state[id(out)] = _Pending("gemm", layer, x, relu=act)
        elif cls in (QuantActivation, QuantReLU):
            grid = _grid(p["output"])
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
            if isinstance(st, _Pending) and st.kind in ("gemm", "add") and (
                    st.relu == "linear"):
                self.state[id(out)] = dataclasses.replace(st, relu=relu)
            else:
                x = self.as_int(ins[0], layer.name)
                self.state[id(out)] = self.builder.relu(
                    self.name(layer.name), x, 6.0 if relu == "relu6"
                    else None)
        elif cls is L.Add:
            if len(ins) != 2:
                raise ValueError(f"layer {layer.name!r}: Add of {len(ins)} "
                                 "tensors; only 2 are supported")
            xs = tuple(self.as_int(t, f"{layer.name}_in{i}")
                       for i, t in enumerate(ins))
            self.state[id(out)] = _Pending("add", layer, inputs=xs)
        elif cls is L.MaxPooling2D:
            x = self.as_int(ins[0], layer.name)
            self.state[id(out)] = self.builder.max_pool(
                self.name(layer.name), x, tuple(layer.pool_size),
                tuple(layer.strides), layer.padding)
        elif cls in (L.AveragePooling2D, L.GlobalAveragePooling2D):
            if getattr(layer, "keepdims", False):
                raise ValueError(f"layer {layer.name!r}: keepdims=True is "
                                 "not supported")
            # the exact mean goes straight onto the next quantizer's grid
            x = self.as_int(ins[0], layer.name)
            self.state[id(out)] = _Pending("avg", layer, x)
        elif cls is L.GlobalMaxPooling2D:
            if getattr(layer, "keepdims", False):
                raise ValueError(f"layer {layer.name!r}: keepdims=True is "
                                 "not supported")
            x = self.as_int(ins[0], layer.name)
            b = self.builder
            h, w = b.shape(x)[:2]
            self.state[id(out)] = b.flatten(self.name(layer.name), b.max_pool(
                self.name(f"{layer.name}_max"), x, (h, w)))
        elif cls in (L.Flatten, L.Reshape):
            x = self.as_int(ins[0], layer.name)
            if cls is L.Flatten:
                y = self.builder.flatten(self.name(layer.name), x)
            else:
                y = self.builder.reshape(self.name(layer.name), x,
                                         tuple(out.shape[1:]))
            self.state[id(out)] = y
        elif cls in _IDENTITY:
            self.state[id(out)] = self.state[id(ins[0])]
            self.source[id(out)] = self.source.get(id(ins[0]), ins[0])
        elif cls in (L.Activation, L.Softmax) and (
                cls is L.Softmax or _act(layer) == "softmax") and \
                any(out is t for t in keras.tree.flatten(self.model.outputs)):
            self.state[id(out)] = self.state[id(ins[0])]
            self.source[id(out)] = ins[0]
            self.notes.append(f"{layer.name}: final softmax dropped "
                              "(argmax-invariant)")
        elif cls is L.BatchNormalization:
            raise ValueError(f"layer {layer.name!r}: BatchNormalization must "
                             "be folded (quantize_model(..., "
                             "fold_batchnorm=True))")
        else:
            raise ValueError(f"layer {layer.name!r} ({cls.__name__}) has no "
                             "integer mapping in the bit-serial exporter")


def _link_shared_inputs(model) -> None:
    """Shares an observer's grid with the same-width input quantizers that
    read its tensor, as int8 TFLite export does, so both exporters see one
    grid per tensor (``tfcomp.quantization.quantize.link_shared_inputs``)."""
    from tfcomp.quantization.quantize import link_shared_inputs

    link_shared_inputs(model)


def build_ir_from_keras(model, calibration_data=None, default_bits: int = 8,
                        output_bits: int = 16, *,
                        calibration_x=None) -> IntegerIR:
    """Maps a quantization-aware Keras model to an :class:`IntegerIR`.

    Supported layers: QuantConv2D / QuantDepthwiseConv2D / QuantDense
    (BatchNorm folded, linear / ReLU / ReLU6 activation), QuantActivation,
    QuantReLU, ReLU / Activation("relu"|"relu6"), Add (two inputs),
    Max/AveragePooling2D, GlobalAverage/MaxPooling2D, Flatten, Reshape,
    Dropout-like identities and a final softmax (dropped).

    Args:
        model: a calibrated or trained QAT model (single input and output,
            functional or Sequential).
        calibration_data: inputs used only for tensors the model never
            quantizes (min/max grids): an array, ``(x, y)`` or batches, as
            ``fit`` takes; may be None for ``quantize_model`` output.
        default_bits: bits of such calibrated intermediate grids.
        output_bits: bits of a calibrated model-output grid.
        calibration_x: deprecated name of ``calibration_data``.

    Like ``calibrate`` and int8 TFLite export, this links same-width input
    quantizers to the observer grid of their input (in place), so the
    descriptor and an int8 TFLite file of the model share every grid.

    Returns:
        A validated :class:`IntegerIR` whose op names follow the Keras
        layer names; ``ir.notes`` lists approximations made and
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
    _link_shared_inputs(model)
    imp = _Importer(model, calibration_data, default_bits, output_bits)
    ir = imp.run()
    ir.notes = imp.notes
    ir.keras_output = imp.keras_output
    return ir
