"""Random, calibrated integer networks for tests and examples.

Weights are random integers at random bits (2..8, signed or unsigned with a
per-channel zero point); every activation's scale and zero point is
calibrated on random inputs (min / max of the real values), so outputs are
neither all saturated nor all zero.

Example:
    >>> ir = random_ir(seed=3, bits=(2, 4))
    >>> sorted({op.op for op in ir.ops})[:3]
    ['add', 'avg_pool', 'conv2d']
"""

from __future__ import annotations

import numpy as np

from tfcomp.export.bitserial.builder import IRBuilder, _pads
from tfcomp.export.bitserial.ir import IntegerIR, IntOp, QuantParams
from tfcomp.export.bitserial.reference import gemm_accumulator, run_op

__all__ = ["calibrated_quant", "random_ir"]


def calibrated_quant(values, bits: int, signed: bool,
                     relu: bool = False) -> QuantParams:
    """Min/max calibration of a tensor's QuantParams.

    With ``relu`` real 0 maps to the lowest code; otherwise the range is
    asymmetric with a zero point.

    Args:
        values: real samples of the tensor.
        bits: code width.
        signed: code range (two's complement or unsigned).
        relu: the tensor is non-negative.

    Returns:
        A :class:`QuantParams`.

    Example:
        >>> calibrated_quant(np.array([0., 3.]), 2, False, relu=True).scale
        1.0
    """
    v = np.asarray(values, np.float64)
    lo = 0.0 if relu else min(0.0, float(v.min()))
    hi = max(float(v.max()), lo + 1e-6)
    qmin = -(1 << (bits - 1)) if signed else 0
    qmax = qmin + (1 << bits) - 1
    scale = (hi - lo) / (qmax - qmin)
    zp = int(np.clip(np.round(qmin - lo / scale), qmin, qmax))
    return QuantParams(bits, signed, scale, zp)


class _RandomNet:
    def __init__(self, seed, input_shape, bits, n_calib):
        self.rng = np.random.default_rng(seed)
        self.bits = bits
        rng = self.rng
        x = rng.uniform(-1.0, 1.0, (n_calib,) + tuple(input_shape))
        q = calibrated_quant(x, self.rbits(), bool(rng.integers(2)))
        self.b = IRBuilder(input_shape, q, name=f"random_{seed}")
        self.t = {"input": q.quantize(x)}

    def rbits(self):
        return int(self.rng.integers(self.bits[0], self.bits[1] + 1))

    def _run_last(self):
        op = self.b.ops[-1]
        self.t[op.name] = run_op(op, [self.t[n] for n in op.inputs],
                                 [self.b.quant(n) for n in op.inputs])
        return op.name

    def gemm(self, kind, name, x, cout, kernel=3, strides=1, padding="same",
             relu=True, mult=1):
        rng, b = self.rng, self.b
        cin = b.shape(x)[-1]
        wb = self.rbits()
        w_signed = bool(rng.random() < 0.7)
        if kind == "conv2d":
            shape = (kernel, kernel, cin, cout)
        elif kind == "depthwise_conv2d":
            shape = (kernel, kernel, cin, mult)
        else:
            shape = (cin, cout)
        n = cin * mult if kind == "depthwise_conv2d" else cout
        if w_signed:
            w = rng.integers(-(1 << (wb - 1)), 1 << (wb - 1), shape)
            zp = np.zeros(n, np.int64)
        else:
            w = rng.integers(0, 1 << wb, shape)
            zp = np.clip((1 << (wb - 1)) + rng.integers(-1, 2, n), 0,
                         (1 << wb) - 1)
        k = int(np.prod(shape[:2])) if kind == "depthwise_conv2d" else int(
            np.prod(shape[:-1]))
        w_scale = rng.uniform(0.5, 1.5, n) / ((1 << (wb - 1)) * np.sqrt(k))
        a = b.quant(x)
        bias = np.round(rng.normal(0, 0.2, n) / (a.scale * w_scale))
        attrs = {}
        if kind != "dense":
            kk = (kernel, kernel)
            st = (strides, strides)
            attrs = {"kernel": kk, "strides": st,
                     "pads": _pads(padding, b.shape(x), kk, st)}
        probe = IntOp(name, kind, [x], QuantParams(8, True, 1.0), attrs,
                      weights=np.asarray(w, np.int64), w_bits=wb,
                      w_signed=w_signed, w_zero_point=zp, w_scale=w_scale,
                      bias=bias.astype(np.int64))
        acc = gemm_accumulator(probe, self.t[x], a)
        real = acc * a.scale * w_scale
        signed = bool(rng.random() < (0.2 if relu else 0.6))
        out = calibrated_quant(real, self.rbits(), signed, relu=relu)
        kwargs = {"w_bits": wb, "w_signed": w_signed, "w_zero_point": zp,
                  "relu": relu}
        if kind != "dense":
            kwargs.update(strides=strides, padding=padding)
        getattr(b, kind)(name, x, w, w_scale, bias.astype(np.int64), out,
                         **kwargs)
        return self._run_last()

    def add(self, name, a, c, relu=True):
        real = (self.b.quant(a).dequantize(self.t[a]).astype(np.float64) +
                self.b.quant(c).dequantize(self.t[c]))
        out = calibrated_quant(real, self.rbits(), bool(self.rng.integers(2)),
                               relu=relu)
        self.b.add(name, a, c, out, relu=relu)
        return self._run_last()

    def concat(self, name, xs):
        """Concat onto the grid of the input with the widest range (that
        input copied) or a calibrated one (every input requantized, a ReLU
        clamp or not)."""
        rng, b = self.rng, self.b
        relu = False
        if rng.random() < 0.5:
            out = b.quant(max(xs, key=lambda x: b.quant(x).scale * (
                b.quant(x).qmax - b.quant(x).qmin)))
        else:
            real = np.concatenate([b.quant(x).dequantize(self.t[x])
                                   for x in xs], axis=-1)
            out = calibrated_quant(real, self.rbits(), bool(rng.integers(2)))
            relu = bool(rng.integers(2))
        b.concat(name, xs, out, relu=relu)
        return self._run_last()

    def mul(self, name, a, c):
        """``a * c`` (either order) onto a calibrated grid, a ReLU clamp or
        not (not where it would zero nearly every product)."""
        rng, b = self.rng, self.b
        if rng.random() < 0.5:
            a, c = c, a
        ra, rc = (b.quant(n).dequantize(self.t[n]).astype(np.float64)
                  for n in (a, c))
        nd = max(ra.ndim, rc.ndim)  # a gate broadcasts after the batch
        ra, rc = (v.reshape(v.shape[:1] + (1,) * (nd - v.ndim) + v.shape[1:])
                  for v in (ra, rc))
        real = ra * rc
        out = calibrated_quant(real, self.rbits(), bool(rng.integers(2)))
        relu = bool(rng.integers(2)) and np.mean(real > 0) >= 0.1
        b.mul(name, a, c, out, relu=relu)
        return self._run_last()

    def host(self, method, name, x, **kw):
        getattr(self.b, method)(name, x, **kw)
        return self._run_last()


def random_ir(seed: int = 0, input_shape=(8, 8, 3), bits=(2, 8),
              num_classes: int = 10, width: int = 8, head: str | None = None,
              n_calib: int = 16, concat: bool | None = False,
              mul: bool | None = False) -> IntegerIR:
    """A random calibrated network covering every IR op.

    conv3x3 -> depthwise3x3/2 (multiplier 1 or 2) -> conv1x1 -> residual
    block (conv, conv, add + ReLU) [-> concat of the block's output with
    a 1x1 conv of it (and a 3x3 conv: 3 inputs), on one input's grid or a
    calibrated one, ReLU or not] [-> squeeze-excite: global average pool
    -> dense -> gate of shape (C,), (1, C) or (1, 1, C) -> mul with the
    block's output (either order) -> mul with a 1x1 conv of the block's
    output (one shape)] -> avg_pool 3x3/1 same -> max_pool 2 ->
    requantize (new grid) -> head: ``"gap"`` (global average pool -> dense)
    or ``"flatten"`` (flatten -> dense + ReLU6 clamp -> reshape -> dense).

    Args:
        seed: random seed (weights, bits, signedness, calibration data).
        input_shape: (H, W, C), H and W at least 4.
        bits: inclusive (min, max) bits for weights and activations.
        num_classes: output width.
        width: channels of the convolutions.
        head: "gap", "flatten" or None (chosen by the seed).
        n_calib: calibration samples.
        concat: add the concat block (True), leave it out (False, the
            default: the networks of earlier tfcomp versions, whose
            descriptors need schema version 1), or let the seed choose
            (None, half of the seeds).
        mul: add the squeeze-excite ``mul`` block (schema version 4);
            True, False (default) or None, as ``concat``.

    Returns:
        A validated :class:`IntegerIR`.

    Example:
        >>> random_ir(seed=0, head="gap").ops[-1].op
        'dense'
    """
    lo, hi = bits
    if not 1 <= lo <= hi <= 8:
        raise ValueError(f"bits must be (min, max) within [1, 8]. Received: "
                         f"bits={bits}")
    net = _RandomNet(seed, input_shape, bits, n_calib)
    rng = net.rng
    head = head or ("gap" if rng.integers(2) else "flatten")
    if head not in ("gap", "flatten"):
        raise ValueError(f"head must be 'gap' or 'flatten'. Received: "
                         f"head={head!r}")
    h = net.gemm("conv2d", "conv1", "input", width)
    h = net.gemm("depthwise_conv2d", "dw2", h, None, strides=2,
                 mult=int(rng.integers(1, 3)))
    h = net.gemm("conv2d", "pw3", h, width, kernel=1)
    r = net.gemm("conv2d", "res_a", h, width)
    r = net.gemm("conv2d", "res_b", r, width, relu=False)
    h = net.add("add", h, r)
    if concat is None:
        concat = bool(rng.integers(2))
    if concat:
        xs = [h, net.gemm("conv2d", "cat_a", h, int(rng.integers(1, 5)),
                          kernel=1, relu=bool(rng.integers(2)))]
        if rng.random() < 0.5:
            xs.append(net.gemm("conv2d", "cat_b", h, 3))
        h = net.concat("concat", xs)
    if mul is None:
        mul = bool(rng.integers(2))
    if mul:
        c = net.b.shape(h)[-1]
        m = net.gemm("conv2d", "mul_b", h, c, kernel=1, relu=False)
        g = net.host("global_avg_pool", "se_pool", h)
        g = net.gemm("dense", "se_fc", g, c, relu=False)
        rank = int(rng.integers(1, 4))  # (C,), (1, C) or (1, 1, C)
        if rank > 1:
            g = net.host("reshape", "se_gate", g,
                         shape=(1,) * (rank - 1) + (c,))
        h = net.mul("se_mul", h, g)
        h = net.mul("mul", h, m)
    h = net.host("avg_pool", "avgpool", h, pool=3, strides=1,
                 padding="same")
    h = net.host("max_pool", "maxpool", h, pool=2)
    real = net.b.quant(h).dequantize(net.t[h])
    h = net.host("requantize", "requant", h, out=calibrated_quant(
        real, net.rbits(), bool(rng.integers(2))))
    if head == "gap":
        h = net.host("global_avg_pool", "gap", h)
    else:
        h = net.host("flatten", "flatten", h)
        h = net.gemm("dense", "fc1", h, 16)
        h = net.host("relu", "relu6", h, max_value=6.0)
        h = net.host("reshape", "reshape", h, shape=(16,))
    net.gemm("dense", "logits", h, num_classes, relu=False)
    return net.b.build()
