"""IRBuilder: assemble an IntegerIR from integer weights and real scales.

The builder turns real scales into the integer requantization (int32
multiplier + shift per output channel, TFLite style) and resolves
``padding="same"`` into explicit pads, so callers (random test networks,
the Keras importer) only deal with quantized values and scales.

Example:
    >>> b = IRBuilder((4, 4, 1), QuantParams(8, True, 1 / 127))
    >>> h = b.conv2d("c", "input", np.ones((3, 3, 1, 2), int), 0.1,
    ...              np.zeros(2, int), QuantParams(4, False, 0.05),
    ...              w_bits=2, relu=True)
    >>> ir = b.build()
"""

from __future__ import annotations

import numpy as np

from tfcomp.export.bitserial.fixedpoint import quantize_multiplier
from tfcomp.export.bitserial.ir import (
    ADD_LEFT_SHIFT,
    IntegerIR,
    IntOp,
    IRInput,
    QuantParams,
    _infer_shape,
    requant_params,
    same_grid,
    same_padding,
)
from tfcomp.export.bitserial.kernels import window_counts

__all__ = ["IRBuilder"]


def _pair(v, name):
    if isinstance(v, (int, np.integer)):
        return (int(v), int(v))
    v = tuple(int(i) for i in v)
    if len(v) != 2:
        raise ValueError(f"{name} must be an int or a pair. Received: "
                         f"{name}={v}")
    return v


def _pads(padding, shape, kernel, strides):
    if isinstance(padding, str):
        p = padding.lower()
        if p == "valid":
            return (0, 0, 0, 0)
        if p == "same":
            return same_padding(shape[0], kernel[0], strides[0]) + \
                same_padding(shape[1], kernel[1], strides[1])
        raise ValueError(f"padding must be 'same', 'valid' or 4 ints. "
                         f"Received: padding={padding!r}")
    pads = tuple(int(p) for p in padding)
    if len(pads) != 4 or min(pads) < 0:
        raise ValueError("padding must be 'same', 'valid' or 4 ints >= 0 "
                         f"(top, bottom, left, right). Received: {padding}")
    return pads


class IRBuilder:
    """Builds an :class:`IntegerIR` op by op.

    Args:
        input_shape: input shape without batch.
        input_quant: quantization of the integer input.
        input_name: name of the input tensor.
        name: model name.
        input_rescale: ``(scale, offset)`` applied to float inputs before
            quantization (see :class:`IntegerIR`).

    Further inputs come with :meth:`add_input`.

    Example:
        >>> b = IRBuilder((8,), QuantParams(8, False, 1 / 255))
        >>> y = b.dense("fc", "input", np.ones((8, 3), int), 0.01,
        ...             np.zeros(3, int), QuantParams(8, True, 0.1), w_bits=4)
        >>> b.build().shapes()["fc"]
        (3,)
    """

    def __init__(self, input_shape, input_quant: QuantParams,
                 input_name: str = "input", name: str = "model",
                 input_rescale=None):
        if not isinstance(input_quant, QuantParams):
            raise TypeError("input_quant must be a QuantParams. Received: "
                            f"{type(input_quant).__name__}")
        self.input_name = input_name
        self.name = name
        self.input_shape = tuple(int(d) for d in input_shape)
        self.input_quant = input_quant
        self.input_rescale = input_rescale
        self.ops: list[IntOp] = []
        self._shapes = {input_name: self.input_shape}
        self._quants = {input_name: input_quant}
        self.inputs = [IRInput(input_name, self.input_shape, input_quant,
                               input_rescale)]

    def add_input(self, name: str, shape, quant: QuantParams,
                  rescale=None) -> str:
        """Adds another input tensor ``name`` (see :class:`IRInput`).

        Example:
            >>> b.add_input("meta", (8,), QuantParams(8, False, 0.1))
            'meta'
        """
        if name in self._shapes:
            raise ValueError(f"duplicate tensor name {name!r}")
        spec = IRInput(name, shape, quant, rescale)
        self.inputs.append(spec)
        self._shapes[name], self._quants[name] = spec.shape, spec.quant
        return name

    def _known(self, name: str) -> None:
        if name not in self._shapes:
            raise ValueError(f"unknown input {name!r}; defined tensors: "
                             f"{sorted(self._shapes)}")

    def shape(self, name: str) -> tuple:
        """Shape (without batch) of tensor ``name``."""
        self._known(name)
        return self._shapes[name]

    def quant(self, name: str) -> QuantParams:
        """Quantization of tensor ``name``."""
        self._known(name)
        return self._quants[name]

    def _append(self, op: IntOp) -> str:
        if op.name in self._shapes:
            raise ValueError(f"duplicate layer name {op.name!r}")
        for n in op.inputs:
            if n not in self._shapes:
                raise ValueError(f"layer {op.name!r}: unknown input {n!r}")
        self._shapes[op.name] = _infer_shape(
            op, [self._shapes[n] for n in op.inputs])
        self._quants[op.name] = op.out
        self.ops.append(op)
        return op.name

    @staticmethod
    def _clamp(out: QuantParams, relu, relu_max):
        lo, hi = out.qmin, out.qmax
        if relu:
            lo = max(lo, out.zero_point)
        if relu_max is not None:
            hi = min(hi, out.zero_point + int(np.floor(relu_max / out.scale
                                                       + 0.5)))
        return lo, hi

    def _gemm(self, op_type, name, x, weights, w_scale, bias, out, w_bits,
              w_signed, w_zero_point, relu, relu_max, attrs):
        weights = np.asarray(weights, np.int64)
        if int(w_bits) == 1 and w_signed and np.any(weights == 1):
            attrs = dict(attrs, sign_weights=True)  # signs, not {-1, 0}
        n = weights.shape[2] * weights.shape[3] if op_type == \
            "depthwise_conv2d" else weights.shape[-1]
        w_scale = np.broadcast_to(np.asarray(w_scale, np.float64),
                                  (n,)).copy()
        zp = np.broadcast_to(np.asarray(w_zero_point, np.int64), (n,)).copy()
        bias = np.broadcast_to(np.asarray(bias, np.int64), (n,)).copy()
        a_scale = self.quant(x).scale
        mult, shift = requant_params(a_scale * w_scale / out.scale)
        lo, hi = self._clamp(out, relu, relu_max)
        return self._append(IntOp(
            name, op_type, [x], out, attrs, weights=weights,
            w_bits=int(w_bits), w_signed=bool(w_signed), w_zero_point=zp,
            w_scale=w_scale, bias=bias, multiplier=mult, shift=shift,
            act_min=lo, act_max=hi))

    def conv2d(self, name, x, weights, w_scale, bias, out, *, w_bits,
               w_signed=True, w_zero_point=0, strides=1, padding="same",
               relu=False, relu_max=None, groups=1) -> str:
        """Adds a conv2d; ``weights`` int ``(kh, kw, cin / groups, cout)``.

        ``bias`` is int32 in units of ``input_scale * w_scale``; the real
        requantization multiplier is ``input_scale * w_scale / out.scale``.
        ``groups > 1`` is a grouped conv (one GEMM per group).
        """
        kernel = tuple(int(k) for k in np.shape(weights)[:2])
        strides = _pair(strides, "strides")
        attrs = {"kernel": kernel, "strides": strides,
                 "pads": _pads(padding, self.shape(x), kernel, strides)}
        if int(groups) != 1:
            attrs["groups"] = int(groups)
        return self._gemm("conv2d", name, x, weights, w_scale, bias, out,
                          w_bits, w_signed, w_zero_point, relu, relu_max,
                          attrs)

    def depthwise_conv2d(self, name, x, weights, w_scale, bias, out, *,
                         w_bits, w_signed=True, w_zero_point=0, strides=1,
                         padding="same", relu=False, relu_max=None) -> str:
        """Adds a depthwise conv; ``weights`` int ``(kh, kw, cin, mult)``."""
        kernel = tuple(int(k) for k in np.shape(weights)[:2])
        strides = _pair(strides, "strides")
        attrs = {"kernel": kernel, "strides": strides,
                 "pads": _pads(padding, self.shape(x), kernel, strides)}
        return self._gemm("depthwise_conv2d", name, x, weights, w_scale,
                          bias, out, w_bits, w_signed, w_zero_point, relu,
                          relu_max, attrs)

    def dense(self, name, x, weights, w_scale, bias, out, *, w_bits,
              w_signed=True, w_zero_point=0, relu=False,
              relu_max=None) -> str:
        """Adds a dense layer; ``weights`` int ``(cin, cout)``."""
        return self._gemm("dense", name, x, weights, w_scale, bias, out,
                          w_bits, w_signed, w_zero_point, relu, relu_max, {})

    def add(self, name, a, b, out: QuantParams, relu=False,
            relu_max=None, scale: float = 1.0) -> str:
        """Adds ``scale * (a + b)`` with TFLite's integer rescaling (left
        shift 20); ``scale`` (0.5: an average) goes into the output
        multiplier."""
        qa, qb = self.quant(a), self.quant(b)
        left = min(ADD_LEFT_SHIFT, 30 - max(qa.bits, qb.bits) - 1)
        twice_max = 2.0 * max(qa.scale, qb.scale)
        m1, s1 = quantize_multiplier(qa.scale / twice_max)
        m2, s2 = quantize_multiplier(qb.scale / twice_max)
        mo, so = quantize_multiplier(
            scale * twice_max / ((1 << left) * out.scale))
        lo, hi = self._clamp(out, relu, relu_max)
        attrs = {"left_shift": left, "multipliers": [m1, m2],
                 "shifts": [s1, s2], "output_multiplier": mo,
                 "output_shift": so}
        return self._append(IntOp(name, "add", [a, b], out, attrs,
                                  act_min=lo, act_max=hi))

    def concat(self, name, inputs, out: QuantParams, relu=False,
               relu_max=None) -> str:
        """Adds the concatenation of ``inputs`` (N >= 2 tensor names) on
        the last axis onto grid ``out``, as TFLite's int8 CONCATENATION:
        an input on ``out``'s grid (same scale and zero point) is copied,
        another is requantized by ``in_scale / out.scale`` in fixed point;
        all are clamped to the output range (and ReLU / ``relu_max``).

        Example:
            >>> b.concat("cat", ["conv_a", "conv_b"], b.quant("conv_a"))
            'cat'
        """
        if isinstance(inputs, str) or not all(
                isinstance(n, str) for n in inputs):
            raise TypeError(f"layer {name!r}: concat inputs must be a list "
                            f"of tensor names. Received: {inputs!r}")
        inputs = list(inputs)
        mults, shifts = [], []
        for n in inputs:
            q = self.quant(n)
            m, s = (None, None) if same_grid(q, out) else \
                quantize_multiplier(q.scale / out.scale)
            mults.append(m)
            shifts.append(s)
        lo, hi = self._clamp(out, relu, relu_max)
        return self._append(IntOp(name, "concat", inputs, out,
                                  {"multipliers": mults, "shifts": shifts},
                                  act_min=lo, act_max=hi))

    def mul(self, name, a, b, out: QuantParams, relu=False,
            relu_max=None) -> str:
        """Adds ``a * b`` onto grid ``out`` as TFLite's int8 MUL: one
        shape, or one input a per-channel gate of the other (``(C,)``,
        ``(1, C)``, ``(1, 1, C)``: squeeze-excite); the product of the
        zero-point-free codes is requantized by ``s_a * s_b / out.scale``
        in fixed point and clamped (ReLU / ``relu_max``).

        Example:
            >>> b.mul("se", "features", "gate", b.quant("features"))
            'se'
        """
        qa, qb = self.quant(a), self.quant(b)
        m, s = quantize_multiplier(qa.scale * qb.scale / out.scale)
        lo, hi = self._clamp(out, relu, relu_max)
        return self._append(IntOp(name, "mul", [a, b], out,
                                  {"multiplier": m, "shift": s},
                                  act_min=lo, act_max=hi))

    def _pool(self, op_type, name, x, pool, strides, padding, out=None,
              relu=False):
        pool = _pair(pool, "pool")
        strides = pool if strides is None else _pair(strides, "strides")
        attrs = {"pool": pool, "strides": strides,
                 "pads": _pads(padding, self.shape(x), pool, strides)}
        if op_type == "max_pool":
            return self._append(IntOp(name, op_type, [x], self.quant(x),
                                      attrs))
        counts = window_counts(self.shape(x)[:2], pool, strides,
                               attrs["pads"])
        return self._avg(op_type, name, x, attrs, np.unique(counts), out,
                         relu)

    def _avg(self, op_type, name, x, attrs, counts, out, relu):
        q = self.quant(x)
        out = q if out is None else out
        table = []
        for c in counts:
            m, s = quantize_multiplier(q.scale / (int(c) * out.scale))
            table.append((int(c), m, s))
        lo, hi = self._clamp(out, relu, None)
        return self._append(IntOp(name, op_type, [x], out,
                                  dict(attrs, count_requant=table),
                                  act_min=lo, act_max=hi))

    def max_pool(self, name, x, pool=2, strides=None,
                 padding="valid") -> str:
        """Adds a max pool (padded cells never win; keeps the grid)."""
        return self._pool("max_pool", name, x, pool, strides, padding)

    def avg_pool(self, name, x, pool=2, strides=None, padding="valid",
                 out: QuantParams | None = None, relu=False) -> str:
        """Adds an average pool onto grid ``out`` (default: the input's);
        padded cells are not counted; the mean is rounded once."""
        return self._pool("avg_pool", name, x, pool, strides, padding, out,
                          relu)

    def global_avg_pool(self, name, x, out: QuantParams | None = None,
                        relu=False) -> str:
        """Adds a mean over H and W onto grid ``out`` (default: input's)."""
        h, w = self.shape(x)[:2]
        return self._avg("global_avg_pool", name, x, {}, [h * w], out, relu)

    def flatten(self, name, x) -> str:
        """Adds a flatten (NHWC order, as Keras)."""
        return self._append(IntOp(name, "flatten", [x], self.quant(x)))

    def reshape(self, name, x, shape) -> str:
        """Adds a reshape to ``shape`` (without batch)."""
        return self._append(IntOp(name, "reshape", [x], self.quant(x),
                                  {"shape": tuple(int(d) for d in shape)}))

    def requantize(self, name, x, out: QuantParams, relu=False,
                   relu_max=None) -> str:
        """Adds a move of ``x`` onto the grid ``out`` (int to int)."""
        m, s = quantize_multiplier(self.quant(x).scale / out.scale)
        lo, hi = self._clamp(out, relu, relu_max)
        return self._append(IntOp(name, "requantize", [x], out,
                                  {"multiplier": m, "shift": s},
                                  act_min=lo, act_max=hi))

    def pad(self, name, x, pads, interior=None) -> str:
        """Adds a pad with ``x``'s zero point (keeps the grid): ``pads``
        ``[before, after]`` per non-batch axis, ``interior`` values between
        neighbours per axis (default none)."""
        rank = len(self.shape(x))
        attrs = {"pads": [[int(a), int(b)] for a, b in pads],
                 "interior": [0] * rank if interior is None else
                 [int(i) for i in interior]}
        return self._append(IntOp(name, "pad", [x], self.quant(x), attrs))

    def upsample(self, name, x, factors) -> str:
        """Adds a nearest-neighbour upsampling (keeps the grid): each value
        repeated ``factors[a]`` times along non-batch axis ``a``."""
        return self._append(IntOp(name, "upsample", [x], self.quant(x),
                                  {"factors": [int(f) for f in factors]}))

    def crop(self, name, x, crops) -> str:
        """Adds a crop (keeps the grid): ``crops[a] = [before, after]``
        values dropped at the ends of non-batch axis ``a``."""
        return self._append(IntOp(name, "crop", [x], self.quant(x), {
            "crops": [[int(a), int(b)] for a, b in crops]}))

    def lut(self, name, x, table, out: QuantParams) -> str:
        """Adds an element-wise table lookup onto grid ``out``: ``table``
        ``(1 or C, 2**in_bits)`` integers indexed by ``q - in_qmin``."""
        t = [[int(v) for v in row] for row in np.asarray(table, np.int64)]
        return self._append(IntOp(name, "lut", [x], out, {"table": t}))

    def relu(self, name, x, max_value=None) -> str:
        """Adds a clamp at real 0 (and ``max_value`` if given)."""
        q = self.quant(x)
        lo, hi = self._clamp(q, True, max_value)
        return self._append(IntOp(name, "clamp", [x], q, act_min=lo,
                                  act_max=hi))

    def build(self, output: str | None = None,
              input_order=None) -> IntegerIR:
        """Returns the validated :class:`IntegerIR`; its inputs in the
        order added, or as the names in ``input_order`` list them."""
        ins = self.inputs
        if input_order is not None:
            by_name = {i.name: i for i in ins}
            if sorted(input_order) != sorted(by_name):
                raise ValueError(f"input_order must list the inputs "
                                 f"{sorted(by_name)}. Received: "
                                 f"{list(input_order)}")
            ins = [by_name[n] for n in input_order]
        first = ins[0]
        ir = IntegerIR(first.shape, first.quant, list(self.ops),
                       output=output, input_name=first.name,
                       name=self.name, input_rescale=first.rescale,
                       extra_inputs=ins[1:])
        ir.validate()
        return ir
