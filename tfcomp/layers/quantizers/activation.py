"""The activation quantizer: unsigned or affine, EMA or learned range.

Example:
    >>> from tfcomp.layers.quantizers.activation import ActivationQuantizer
    >>> q = ActivationQuantizer(bits=4, signed=False)
"""

from __future__ import annotations

import math

import keras
from keras import ops

from tfcomp.layers.quantizers.base import _EPS, Quantizer, _floor_round, _ste

__all__ = ["ActivationQuantizer"]


class ActivationQuantizer(Quantizer):
    """Activation quantizer with an EMA-calibrated or learned range.

    Unsigned (``signed=False``, after a ReLU): range ``[0, c]``, scale
    ``s = c / (2^b - 1)``, ``q(x) = s * clip(round(x / s), 0, 2^b - 1)``.
    Signed (``signed=True``): affine range ``[lo, hi]`` with ``lo <= 0 <= hi``,
    ``s = (hi - lo) / (2^b - 1)``, integer zero point ``z = round(-lo / s)``,
    ``q(x) = s * (clip(round(x / s) + z, 0, 2^b - 1) - z)`` - the grid
    TensorFlow's FakeQuant and TFLite's int8 tensors use.

    ``range_mode="ema"``: in training, ``c <- m c + (1 - m) max(batch)``
    (the first batch initialises it). ``range_mode="learned"``: ``c`` (and
    ``lo``) are trainable, with PACT's straight-through gradient (1 where
    the input is clipped). Until the quantizer has seen data (training or
    ``tfcomp.quantization.calibrate``) it passes its input through, and
    int8 export refuses it.

    Args:
        bits: activation bit-width in [1, 8].
        signed: whether inputs may be negative (affine range).
        range_mode: "ema" or "learned".
        momentum: EMA momentum.
        init_range: initial ``c`` (and ``-lo`` when signed) of a learned
            range.

    Reference: Wang et al., HAQ, arXiv:1811.08886; Choi et al., PACT,
    arXiv:1805.06085; Jacob et al., arXiv:1712.05877 (EMA ranges).

    Example:
        >>> q = ActivationQuantizer(bits=4, signed=False)
    """

    def __init__(self, bits: int = 8, signed: bool = False,
                 range_mode: str = "ema", momentum: float = 0.99,
                 init_range: float = 6.0):
        super().__init__(bits)
        if range_mode not in ("ema", "learned"):
            raise ValueError(
                "range_mode must be 'ema' or 'learned'. Received: "
                f"range_mode={range_mode!r}")
        if not 0.0 <= float(momentum) < 1.0:
            raise ValueError(
                f"momentum must be in [0, 1). Received: momentum={momentum}")
        if not float(init_range) > 0:
            raise ValueError(
                f"init_range must be > 0. Received: init_range={init_range}")
        self.signed = bool(signed)
        self.range_mode = range_mode
        self.momentum = float(momentum)
        self.init_range = float(init_range)
        self._source = None
        self._link_var = None

    def share_range(self, source) -> None:
        """Takes the grid from ``source`` (another built quantizer of the same
        bits and signedness) instead of this quantizer's own range.

        ``quantize_model`` links a layer's input quantizer to the 8-bit
        ``QuantActivation`` that already quantizes its input (a tensor with
        several consumers): re-quantizing onto a slightly different grid of
        the same width would round twice, which an int8 TFLite tensor (one
        scale per tensor) cannot represent. With the shared grid the second
        quantization is the identity. The link lives in memory;
        ``link_shared_inputs`` (called by ``quantize_model``, ``calibrate``
        and int8 export) restores it on a loaded model.

        Example:
            >>> layer.input_quantizer.share_range(observer.quantizer)
        """
        if source is not None and (
                source.bits != self.bits or source.signed != self.signed
                or source.range_mode != self.range_mode):
            raise ValueError(
                "share_range needs a quantizer with the same bits, "
                f"signedness and range mode. Received: {source!r} for "
                f"{self!r}")
        self._source = source

    def _ranges(self):
        if self._link_var is not None:
            # dynamic bits: shared only while the bit-widths match
            src, on = self._link_source, self._link_var > 0
            lo = (ops.where(on, src.range_min, self.range_min)
                  if self.signed else None)
            return lo, ops.where(on, src.range_max, self.range_max)
        src = self._source if self._source is not None else self
        return src.range_min, src.range_max

    @property
    def levels(self) -> int:
        return 2 ** self.bits - 1

    def _levels_tensor(self):
        if self._bits_var is None:
            return float(self.levels)
        return ops.power(2.0, self._bits_var) - 1.0

    def enable_dynamic_bits(self, range_source=None) -> None:
        """As ``Quantizer.enable_dynamic_bits``; ``range_source`` is the
        observer whose grid this quantizer shares (see ``share_range``)
        while both have the same bits, at run time."""
        super().enable_dynamic_bits()
        if range_source is not None and self._link_var is None:
            if (range_source.signed != self.signed
                    or range_source.range_mode != self.range_mode):
                raise ValueError(
                    "range_source needs the same signedness and range mode."
                    f" Received: {range_source!r} for {self!r}")
            self._link_source = range_source
            self._link_var = keras.Variable(
                0.0, trainable=False, dtype="float32",
                name=f"{self._prefix}_dynamic_link")
        self._update_link()

    def set_bits(self, bits: int) -> None:
        super().set_bits(bits)
        self._update_link()

    def _update_link(self) -> None:
        if self._link_var is not None:
            self._link_var.assign(
                1.0 if self._link_source.bits == self.bits else 0.0)

    def get_config(self) -> dict:
        return {"bits": self.bits, "signed": self.signed,
                "range_mode": self.range_mode, "momentum": self.momentum,
                "init_range": self.init_range}

    def build(self, layer, name: str = "input"):
        self._layer = layer
        self._prefix = name
        learned = self.range_mode == "learned"
        init = self.init_range if learned else 0.0
        self.range_max = layer.add_weight(
            name=f"{name}_max", shape=(),
            initializer=keras.initializers.Constant(init), trainable=learned)
        self.range_min = None
        if self.signed:
            self.range_min = layer.add_weight(
                name=f"{name}_min", shape=(),
                initializer=keras.initializers.Constant(-init),
                trainable=learned)
        self.seen = layer.add_weight(
            name=f"{name}_seen", shape=(), initializer="zeros",
            trainable=False)

    # -- range handling -------------------------------------------------
    def _update_ema(self, x):
        m = self.momentum
        seen = self.seen > 0
        bmax = ops.maximum(ops.max(x), 0.0)
        new_max = ops.where(seen, m * self.range_max + (1 - m) * bmax, bmax)
        self.range_max.assign(new_max)
        if self.signed:
            bmin = ops.minimum(ops.min(x), 0.0)
            new_min = ops.where(seen, m * self.range_min + (1 - m) * bmin,
                                bmin)
            self.range_min.assign(new_min)

    def grid(self):
        """``(scale, zero_point, lo, hi)`` tensors of the current grid
        (``lo``/``hi`` differentiable for learned ranges)."""
        range_min, range_max = self._ranges()
        hi = ops.maximum(range_max, 0.0)
        lo = ops.minimum(range_min, 0.0) if self.signed else 0.0
        levels = self._levels_tensor()
        s = ops.maximum(hi - lo, _EPS) / levels
        if self.signed:
            z = ops.clip(_floor_round(ops.stop_gradient(-lo / s)), 0.0,
                         levels)
        else:
            z = 0.0
        return s, z, lo, hi

    def quantize(self, x, training=False):
        """Fake-quantized ``x`` with straight-through gradients.

        For ``b >= 2`` this is one fused op,
        ``keras.quantizers.fake_quant_with_min_max_vars`` (TensorFlow's
        FakeQuant kernel on the TF backend: the same nudged grid TFLite
        uses, clipped-STE input gradient and PACT-style range gradients);
        With dynamic bits the op (whose bit-width is a constant) is chosen
        at run time among one per bit-width (``keras.ops.switch``);
        ``b = 1`` uses the explicit formula below.
        """
        s, z, lo, hi = self.grid()
        if self.bits >= 2:
            lo_t = ops.convert_to_tensor(lo, "float32")
            hi_t = ops.maximum(hi, lo_t + _EPS)
            if self._bits_var is None:
                return keras.quantizers.fake_quant_with_min_max_vars(
                    x, lo_t, hi_t, num_bits=self.bits, narrow_range=False)
            branches = [
                (lambda v, a, b, n=n: keras.quantizers
                 .fake_quant_with_min_max_vars(v, a, b, num_bits=n,
                                               narrow_range=False))
                for n in range(2, 9)]
            index = ops.cast(self._bits_var, "int32") - 2
            return ops.switch(index, branches, x, lo_t, hi_t)
        sg_s = ops.stop_gradient(s)
        levels = self._levels_tensor()
        codes = ops.clip(_floor_round(x / sg_s) + z, 0.0, levels)
        q = (codes - z) * sg_s
        # Clipped straight-through: gradient 1 inside the range; for learned
        # ranges the clip also carries PACT's gradient to lo / hi.
        if self.range_mode == "learned":
            y = ops.minimum(x, hi)
            y = ops.maximum(y, lo) if self.signed else ops.maximum(y, 0.0)
        else:
            y = ops.clip(x, -z * sg_s, (levels - z) * sg_s)
        return _ste(y, q)

    def __call__(self, x, training=False):
        x = ops.convert_to_tensor(x)
        if training:
            if self.range_mode == "ema":
                self._update_ema(ops.stop_gradient(x))
            self.seen.assign(1.0)
        # Before any data the quantizer is the identity (cond: one branch).
        return ops.cond(self.seen > 0, lambda: self.quantize(x, training),
                        lambda: x)

    # -- numpy helpers ----------------------------------------------------
    def numpy_grid(self):
        """``(scale, zero_point)`` as Python floats / ints (for export)."""
        range_min, range_max = self._ranges()
        hi = max(float(keras.ops.convert_to_numpy(range_max)), 0.0)
        lo = (min(float(keras.ops.convert_to_numpy(range_min)), 0.0)
              if self.signed else 0.0)
        s = max(hi - lo, _EPS) / self.levels
        z = int(min(max(math.floor(-lo / s + 0.5), 0), self.levels))
        return s, z

    def set_range(self, lo: float, hi: float) -> None:
        """Sets the range (used by ``calibrate``) and marks it as seen."""
        self.range_max.assign(max(float(hi), 0.0))
        if self.signed:
            self.range_min.assign(min(float(lo), 0.0))
        self.seen.assign(1.0)

    @property
    def calibrated(self) -> bool:
        return bool(keras.ops.convert_to_numpy(self.seen) > 0)
