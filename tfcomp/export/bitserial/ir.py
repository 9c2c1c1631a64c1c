"""Integer intermediate representation (IR) of a quantized network.

Every tensor is an integer array ``q`` whose real value is
``scale * (q - zero_point)``; a tensor has ``bits`` and a signedness, so
``q`` lies in ``[-2**(bits-1), 2**(bits-1) - 1]`` (signed) or
``[0, 2**bits - 1]`` (unsigned). Tensors are NHWC with a leading batch axis.
A network has one input tensor (``input_*`` fields) or several
(``IntegerIR.inputs``: the first, then ``extra_inputs``), each with its
own name, shape, quantization and float rescale.

Ops (``IntOp.op``):

- ``conv2d``: weights ``(kh, kw, cin / groups, cout)``; ``attrs`` strides,
  pads and ``groups`` (default 1; output channel ``o`` belongs to group
  ``o // (cout / groups)``, as Keras).
- ``depthwise_conv2d``: weights ``(kh, kw, cin, multiplier)``.
- ``dense``: weights ``(cin, cout)``, applied to the last axis.
- ``add``: two inputs, TFLite-style integer rescaling (``attrs``).
- ``concat``: N >= 2 inputs of one shape but the last axis, joined on the
  last axis (TFLite's int8 CONCATENATION): input ``i`` is copied when it
  is on the output grid (``attrs["multipliers"][i]`` is None), else
  requantized ``out_zp + MBQM(q - in_zp, multipliers[i], shifts[i])``;
  every value is clamped to ``[act_min, act_max]``.
- ``mul``: two inputs of one shape, or one a per-channel gate of the
  other (``(C,)``, ``(1, C)``, ``(1, 1, C)``: squeeze-excite), multiplied
  as TFLite's int8 MUL: ``out_zp + MBQM((qa - za) * (qb - zb), attrs
  multiplier, shift)`` (``s_a * s_b / s_out``) clamped to ``[act_min,
  act_max]``; the int32 product is bounded by the inputs' bits.
- ``max_pool`` / ``avg_pool``: ``attrs`` pool, strides, pads; max keeps
  its input's grid, avg requantizes the exact window mean onto its output
  grid (``attrs["count_requant"]``: ``(cells, multiplier, shift)`` per
  window size).
- ``global_avg_pool``: mean over H and W, requantized as avg_pool.
- ``flatten`` / ``reshape``: layout only (``attrs["shape"]`` for reshape).
- ``clamp``: ``act_min <= q <= act_max`` (a ReLU on quantized values).
- ``pad``: writes the input's zero point (real 0) around and between the
  values, keeping the grid: ``attrs["pads"]`` ``[[before, after], ...]``
  per non-batch axis, ``attrs["interior"]`` values inserted between
  neighbours per axis (XLA's Pad; zero insertion of a transposed conv).
- ``upsample`` / ``crop``: move values, keeping the grid: each value
  repeated ``attrs["factors"][a]`` times along non-batch axis ``a``
  (nearest-neighbour UpSampling), or ``attrs["crops"][a]`` ``[before,
  after]`` values dropped at the ends of axis ``a`` (Cropping).
- ``lut``: an element-wise function as a table: ``out = table[c][q -
  in_qmin]`` with ``attrs["table"]`` one row (every channel) or one row per
  channel (last axis) of ``2**in_bits`` output integers (a folded
  Rescaling, an inference BatchNormalization or an activation, computed by
  Keras itself on every input value, so it is exact).
- ``requantize``: to another grid, ``out_zp + MBQM(q - in_zp, attrs
  multiplier, shift)`` then clamped (TFLite's int-to-int QUANTIZE).

GEMM ops (conv2d, depthwise_conv2d, dense) compute the int32 accumulator
``acc[n] = sum_k (w[k, n] - w_zp[n]) * (a[k] - a_zp) + bias[n]`` and
requantize per output channel:
``out = clamp(out_zp + MultiplyByQuantizedMultiplier(acc, mult[n],
shift[n]), act_min, act_max)``. Padding inserts ``a_zp`` (real zero).

Example:
    >>> ir = random_ir(seed=0)            # from tfcomp.export.bitserial
    >>> [op.op for op in ir.ops][:2]
    ['conv2d', 'depthwise_conv2d']
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from tfcomp.export.bitserial.fixedpoint import INT32_MAX, quantize_multiplier
from tfcomp.export.bitserial.ir_checks import (
    mul_product_bound,
    same_grid,
    validate_concat,
    validate_mul,
)
from tfcomp.export.bitserial.shapes import (
    MOVE_SHAPES,
    concat_shape,
    conv_output_size,
    mul_shape,
    pad_shape,
    same_padding,
)

__all__ = [
    "GEMM_OPS",
    "OPS",
    "IRInput",
    "IntOp",
    "IntegerIR",
    "QuantParams",
    "check_rescale",
    "concat_shape",
    "groups_of",
    "mul_product_bound",
    "mul_shape",
    "pad_shape",
    "conv_output_size",
    "same_grid",
    "same_padding",
]

GEMM_OPS = ("conv2d", "depthwise_conv2d", "dense")
OPS = GEMM_OPS + ("add", "concat", "mul", "max_pool", "avg_pool",
                  "global_avg_pool", "flatten", "reshape", "clamp",
                  "requantize", "pad", "lut", "upsample", "crop")
ADD_LEFT_SHIFT = 20


@dataclasses.dataclass
class QuantParams:
    """Quantization of one integer tensor: real = scale * (q - zero_point).

    Attributes:
        bits: 1..16 bits per value.
        signed: two's complement range when True, else ``[0, 2**bits - 1]``.
        scale: positive real step.
        zero_point: the integer that represents real 0 (inside the range).

    Example:
        >>> qp = QuantParams(bits=4, signed=False, scale=0.1)
        >>> qp.quantize(np.array([0.33, 9.0]))
        array([ 3, 15])
    """

    bits: int
    signed: bool
    scale: float
    zero_point: int = 0

    def __post_init__(self):
        if not isinstance(self.bits, (int, np.integer)) or not (
                1 <= int(self.bits) <= 16):
            raise ValueError(f"bits must be an int in [1, 16]. Received: "
                             f"bits={self.bits!r}")
        self.bits = int(self.bits)
        self.signed = bool(self.signed)
        self.scale = float(self.scale)
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"scale must be finite and > 0. Received: "
                             f"scale={self.scale}")
        self.zero_point = int(self.zero_point)
        if not self.qmin <= self.zero_point <= self.qmax:
            raise ValueError(
                f"zero_point must lie in [{self.qmin}, {self.qmax}] for "
                f"bits={self.bits}, signed={self.signed}. Received: "
                f"zero_point={self.zero_point}")

    @property
    def qmin(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (
            1 << self.bits) - 1

    def quantize(self, x) -> np.ndarray:
        """Float -> int64 q: ``floor(x / scale + 0.5) + zero_point`` (half
        up, as tfcomp's QAT quantizers), clamped to the range."""
        q = np.floor(np.asarray(x, np.float64) / self.scale + 0.5)
        return np.clip(q + self.zero_point, self.qmin,
                       self.qmax).astype(np.int64)

    def dequantize(self, q) -> np.ndarray:
        """Int q -> float32 real values."""
        return (self.scale * (np.asarray(q, np.float64) - self.zero_point)
                ).astype(np.float32)

    def to_dict(self) -> dict:
        return {"bits": self.bits, "signed": self.signed,
                "scale": self.scale, "zero_point": self.zero_point}

    @classmethod
    def from_dict(cls, d: dict) -> QuantParams:
        return cls(d["bits"], d["signed"], d["scale"], d["zero_point"])


@dataclasses.dataclass
class IntOp:
    """One integer op of an :class:`IntegerIR`; its name names its output.

    Attributes:
        name: unique op (and output tensor) name.
        op: one of ``OPS``.
        inputs: names of input tensors ("input" or earlier op names).
        out: quantization of the output tensor.
        attrs: op attributes (strides, pads, pool, shape, add rescaling).
        weights: signed/unsigned int weights (GEMM ops), see module doc.
        w_bits: weight bits (GEMM ops).
        w_signed: weight signedness (GEMM ops).
        w_zero_point: int per output channel (GEMM ops).
        w_scale: float per output channel (informational).
        bias: int32 per output channel (GEMM ops).
        multiplier: int32 per output channel (GEMM ops; length 1 for add).
        shift: int per output channel (GEMM ops; length 1 for add).
        act_min: lower output clamp (``out.zero_point`` for a fused ReLU).
        act_max: upper output clamp.

    Example:
        >>> op = IntOp("flat", "flatten", ["pool"], QuantParams(8, False, .1))
    """

    name: str
    op: str
    inputs: list
    out: QuantParams
    attrs: dict = dataclasses.field(default_factory=dict)
    weights: np.ndarray | None = None
    w_bits: int | None = None
    w_signed: bool = True
    w_zero_point: np.ndarray | None = None
    w_scale: np.ndarray | None = None
    bias: np.ndarray | None = None
    multiplier: np.ndarray | None = None
    shift: np.ndarray | None = None
    act_min: int | None = None
    act_max: int | None = None

    def __post_init__(self):
        if self.op not in OPS:
            raise ValueError(f"op must be one of {OPS}. Received: "
                             f"op={self.op!r} (layer {self.name!r})")
        if self.act_min is None:
            self.act_min = self.out.qmin
        if self.act_max is None:
            self.act_max = self.out.qmax
        self.act_min, self.act_max = int(self.act_min), int(self.act_max)

    @property
    def is_gemm(self) -> bool:
        return self.op in GEMM_OPS

    @property
    def out_channels(self) -> int:
        if self.op == "depthwise_conv2d":
            return int(self.weights.shape[2] * self.weights.shape[3])
        return int(self.weights.shape[-1])


def find_named(items, name: str, what: str):
    """The first of ``items`` whose ``.name`` is ``name``.

    Raises:
        KeyError: none is, naming ``what`` was looked for.

    Example:
        >>> find_named(ir.ops, "conv1", "op").op
        'conv2d'
    """
    for item in items:
        if item.name == name:
            return item
    raise KeyError(f"no {what} named {name!r}")


@dataclasses.dataclass
class IRInput:
    """One input tensor of an :class:`IntegerIR`.

    Attributes:
        name: the tensor name ops read it by.
        shape: shape without the batch axis.
        quant: quantization of the integer input.
        rescale: ``(scale, offset)`` applied to float inputs before
            quantization (see :class:`IntegerIR`), or None.

    Example:
        >>> IRInput("meta", (8,), QuantParams(8, False, 0.1)).shape
        (8,)
    """

    name: str
    shape: tuple
    quant: QuantParams
    rescale: tuple | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("an input's name must be a non-empty string. "
                             f"Received: name={self.name!r}")
        self.shape = tuple(int(d) for d in self.shape)
        if not isinstance(self.quant, QuantParams):
            raise TypeError(f"input {self.name!r}: quant must be a "
                            "QuantParams. Received: "
                            f"{type(self.quant).__name__}")
        if self.rescale is not None:
            self.rescale = check_rescale(self.rescale, self.shape)


@dataclasses.dataclass
class IntegerIR:
    """An integer network: the input's quantization and a list of ops.

    Attributes:
        input_shape: input shape without the batch axis (e.g. ``(H, W, C)``).
        input_quant: quantization of the integer input tensor.
        ops: ops in execution order (each input defined before use).
        output: name of the output tensor (default: the last op).
        input_name: name of the input tensor.
        name: model name.
        input_rescale: ``(scale, offset)`` tuples of floats (one value, or
            one per input channel) applied to float inputs in float32
            (``x * scale + offset``, a folded Keras ``Rescaling``) before
            they are quantized with ``input_quant``; None for none.
        notes: approximations an importer made (informational).
        keras_output: for imported models, the Keras tensor the output
            stands for (informational; not compared).
        extra_inputs: further input tensors (:class:`IRInput`) of a
            network with several; ``inputs`` lists them all, the one of the
            ``input_*`` fields first.

    Example:
        >>> ir = random_ir(seed=1)
        >>> ir.shapes()[ir.output]
        (10,)
    """

    input_shape: tuple
    input_quant: QuantParams
    ops: list
    output: str | None = None
    input_name: str = "input"
    name: str = "model"
    input_rescale: tuple | None = None
    notes: list = dataclasses.field(default_factory=list, compare=False,
                                    repr=False)
    keras_output: object = dataclasses.field(default=None, compare=False,
                                             repr=False)
    extra_inputs: list = dataclasses.field(default_factory=list)

    def __post_init__(self):
        self.input_shape = tuple(int(d) for d in self.input_shape)
        if self.input_rescale is not None:
            self.input_rescale = check_rescale(self.input_rescale,
                                               self.input_shape)
        self.extra_inputs = list(self.extra_inputs)
        for i in self.extra_inputs:
            if not isinstance(i, IRInput):
                raise TypeError("extra_inputs must hold IRInput objects. "
                                f"Received: {type(i).__name__}")
        if self.output is None and self.ops:
            self.output = self.ops[-1].name

    @property
    def inputs(self) -> list:
        """Every input tensor (:class:`IRInput`), in feeding order."""
        return [IRInput(self.input_name, self.input_shape, self.input_quant,
                        self.input_rescale)] + self.extra_inputs

    @property
    def input_names(self) -> list:
        """The names of :attr:`inputs`."""
        return [self.input_name] + [i.name for i in self.extra_inputs]

    def quant(self, name: str) -> QuantParams:
        """Quantization of the tensor called ``name``."""
        if name == self.input_name:
            return self.input_quant
        for i in self.extra_inputs:
            if i.name == name:
                return i.quant
        return self.op(name).out

    def op(self, name: str) -> IntOp:
        """The op called ``name``."""
        return find_named(self.ops, name, "op")

    def shapes(self) -> dict:
        """Shapes (without batch) of every tensor; validates the IR."""
        shapes = {}
        for i in self.inputs:
            if i.name in shapes:
                raise ValueError(f"duplicate input name {i.name!r}")
            shapes[i.name] = i.shape
        for op in self.ops:
            if op.name in shapes:
                raise ValueError(f"duplicate tensor name {op.name!r}")
            for name in op.inputs:
                if name not in shapes:
                    raise ValueError(f"layer {op.name!r}: input {name!r} is "
                                     "not defined before use")
            shapes[op.name] = _infer_shape(op, [shapes[n] for n in
                                                op.inputs])
        if self.output not in shapes:
            raise ValueError(f"output {self.output!r} is not a tensor of "
                             "the IR")
        return shapes

    def validate(self) -> dict:
        """Checks shapes, ranges and int32 safety; returns the shapes."""
        shapes = self.shapes()
        for op in self.ops:
            _validate_op(op, self, shapes)
        return shapes


def _window_out(shape, attrs, name):
    h, w = shape[0], shape[1]
    kh, kw = attrs["kernel"] if "kernel" in attrs else attrs["pool"]
    sh, sw = attrs["strides"]
    pt, pb, pl, pr = attrs["pads"]
    ho = conv_output_size(h, kh, sh, pt, pb)
    wo = conv_output_size(w, kw, sw, pl, pr)
    if ho < 1 or wo < 1:
        raise ValueError(f"layer {name!r}: window larger than its input "
                         f"{shape}")
    return ho, wo


def _infer_shape(op: IntOp, ins: list) -> tuple:
    if op.op == "concat":
        return concat_shape(ins, op.name)
    if op.op == "mul":
        return mul_shape(ins, op.name)
    n_in = {"add": 2}.get(op.op, 1)
    if len(ins) != n_in:
        raise ValueError(f"layer {op.name!r} ({op.op}) takes {n_in} inputs. "
                         f"Received: {len(ins)}")
    s = ins[0]
    if op.op in ("conv2d", "depthwise_conv2d", "max_pool", "avg_pool"):
        if len(s) != 3:
            raise ValueError(f"layer {op.name!r} ({op.op}) needs an (H, W, "
                             f"C) input. Received shape: {s}")
        ho, wo = _window_out(s, op.attrs, op.name)
        if op.op == "conv2d":
            g = groups_of(op)
            if op.weights.shape[2] * g != s[2] or op.weights.shape[3] % g:
                raise ValueError(f"layer {op.name!r}: weights expect "
                                 f"{op.weights.shape[2] * g} input channels"
                                 f" and groups={g} to divide "
                                 f"{op.weights.shape[3]} filters. Received:"
                                 f" {s[2]} input channels")
            return (ho, wo, int(op.weights.shape[3]))
        if op.op == "depthwise_conv2d":
            if op.weights.shape[2] != s[2]:
                raise ValueError(f"layer {op.name!r}: weights expect "
                                 f"{op.weights.shape[2]} channels. "
                                 f"Received: {s[2]}")
            return (ho, wo, op.out_channels)
        return (ho, wo, s[2])
    if op.op == "dense":
        if op.weights.shape[0] != s[-1]:
            raise ValueError(f"layer {op.name!r}: weights expect "
                             f"{op.weights.shape[0]} inputs. Received: "
                             f"{s[-1]}")
        return tuple(s[:-1]) + (int(op.weights.shape[1]),)
    if op.op == "add":
        if tuple(ins[0]) != tuple(ins[1]):
            raise ValueError(f"layer {op.name!r}: add inputs differ in "
                             f"shape: {ins[0]} vs {ins[1]}")
        return tuple(s)
    if op.op == "global_avg_pool":
        return (s[-1],)
    if op.op == "flatten":
        return (int(np.prod(s)),)
    if op.op == "reshape":
        new = tuple(int(d) for d in op.attrs["shape"])
        if int(np.prod(new)) != int(np.prod(s)):
            raise ValueError(f"layer {op.name!r}: cannot reshape {s} to "
                             f"{new}")
        return new
    if op.op in MOVE_SHAPES:  # pad, upsample, crop
        return MOVE_SHAPES[op.op](s, op.attrs, op.name)
    return tuple(s)  # clamp, requantize


def _validate_op(op: IntOp, ir: IntegerIR, shapes: dict) -> None:
    qin = [ir.quant(n) for n in op.inputs]
    if not op.out.qmin <= op.act_min <= op.act_max <= op.out.qmax:
        raise ValueError(f"layer {op.name!r}: need qmin <= act_min <= "
                         f"act_max <= qmax. Received: act_min={op.act_min}, "
                         f"act_max={op.act_max}")
    if op.op in ("avg_pool", "global_avg_pool"):
        if not op.attrs.get("count_requant"):
            raise ValueError(f"layer {op.name!r}: {op.op} needs "
                             "attrs['count_requant']")
        return
    if op.op in ("max_pool", "flatten", "reshape", "clamp", *MOVE_SHAPES):
        if op.out != qin[0]:
            raise ValueError(f"layer {op.name!r} ({op.op}) keeps its input's"
                             f" quantization. Received: out={op.out}, "
                             f"input={qin[0]}")
        return
    if op.op == "lut":
        t = np.asarray(op.attrs.get("table"), np.int64)
        n = 1 << qin[0].bits
        c = shapes[op.name][-1]
        if t.ndim != 2 or t.shape[0] not in (1, c) or t.shape[1] != n:
            raise ValueError(f"layer {op.name!r}: lut table must be (1 or "
                             f"{c}, {n}). Received: {t.shape}")
        if t.min() < op.act_min or t.max() > op.act_max:
            raise ValueError(f"layer {op.name!r}: lut values outside "
                             f"[{op.act_min}, {op.act_max}]")
        return
    if op.op == "requantize":
        for key in ("multiplier", "shift"):
            if key not in op.attrs:
                raise ValueError(f"layer {op.name!r}: requantize needs "
                                 f"attrs[{key!r}]")
        return
    if op.op == "concat":
        validate_concat(op, qin)
        return
    if op.op == "mul":
        validate_mul(op, qin)
        return
    if op.op == "add":
        for key in ("multipliers", "shifts", "output_multiplier",
                    "output_shift", "left_shift"):
            if key not in op.attrs:
                raise ValueError(f"layer {op.name!r}: add needs attrs[{key!r}]")
        return
    n = op.out_channels
    wb = op.w_bits
    if wb is None or not 1 <= wb <= 16:
        raise ValueError(f"layer {op.name!r}: w_bits must be in [1, 16]. "
                         f"Received: w_bits={wb}")
    lo = -(1 << (wb - 1)) if op.w_signed else 0
    hi = (1 << (wb - 1)) - 1 if op.w_signed else (1 << wb) - 1
    w = np.asarray(op.weights)
    if op.attrs.get("sign_weights"):  # binary layers: w in {-1, +1}
        lo, hi = -1, 1
        if wb != 1 or not op.w_signed or np.any(w == 0) or np.any(
                np.asarray(op.w_zero_point)):
            raise ValueError(f"layer {op.name!r}: sign weights are 1-bit "
                             "signed, -1 or +1, with zero point 0")
    if w.size and (w.min() < lo or w.max() > hi):
        raise ValueError(f"layer {op.name!r}: weights outside [{lo}, {hi}] "
                         f"for w_bits={wb}, w_signed={op.w_signed}")
    for field in ("w_zero_point", "bias", "multiplier", "shift"):
        v = getattr(op, field)
        if v is None or np.shape(v) != (n,):
            raise ValueError(f"layer {op.name!r}: {field} must have shape "
                             f"({n},). Received: {np.shape(v)}")
    zp = np.asarray(op.w_zero_point)
    if zp.min() < lo or zp.max() > hi:
        raise ValueError(f"layer {op.name!r}: w_zero_point outside "
                         f"[{lo}, {hi}]")
    k = int(np.prod(w.shape[:2])) if op.op == "depthwise_conv2d" else int(
        np.prod(w.shape[:-1]))
    a = qin[0]
    bound = k * max(hi - int(zp.min()), int(zp.max()) - lo) * max(
        a.qmax - a.zero_point, a.zero_point - a.qmin) + int(
        np.abs(np.asarray(op.bias, np.int64)).max(initial=0))
    if bound > INT32_MAX:
        raise ValueError(f"layer {op.name!r}: the int32 accumulator may "
                         f"overflow (worst case {bound}); lower the bits or "
                         "split the layer")


def groups_of(op: IntOp) -> int:
    """Convolution groups of a GEMM op (``attrs["groups"]``, default 1).

    Example:
        >>> groups_of(ir.ops[0])
        1
    """
    g = op.attrs.get("groups", 1) if op.op == "conv2d" else 1
    if isinstance(g, bool) or not isinstance(g, (int, np.integer)) or g < 1:
        raise ValueError(f"layer {op.name!r}: groups must be an int >= 1. "
                         f"Received: groups={g!r}")
    return int(g)


def check_rescale(rescale, input_shape) -> tuple:
    """Validates an input ``(scale, offset)``: tuples of finite floats of
    length 1 or the input's channels; scales > 0.

    Example:
        >>> check_rescale((1 / 255, 0.0), (8, 8, 3))
        ((0.00392156862745098,), (0.0,))
    """
    try:
        scale, offset = rescale
        scale = tuple(float(v) for v in np.ravel(scale))
        offset = tuple(float(v) for v in np.ravel(offset))
    except (TypeError, ValueError):
        raise ValueError("input_rescale must be (scale, offset). Received: "
                         f"{rescale!r}") from None
    c = int(input_shape[-1]) if input_shape else 1
    for what, v in (("scale", scale), ("offset", offset)):
        if len(v) not in (1, c) or not all(math.isfinite(t) for t in v):
            raise ValueError(f"input_rescale {what} needs 1 or {c} finite "
                             f"values. Received: {v}")
    if min(scale) <= 0:
        raise ValueError("input_rescale scales must be > 0. Received: "
                         f"{scale}")
    return scale, offset


def requant_params(real_multipliers) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (multiplier int32, shift) for real multipliers."""
    pairs = [quantize_multiplier(float(r)) for r in np.ravel(real_multipliers)]
    return (np.array([p[0] for p in pairs], np.int64),
            np.array([p[1] for p in pairs], np.int64))
