"""Activation quantizer layers: QuantActivation and QuantReLU.

Example:
    >>> from tfcomp.layers import QuantReLU
    >>> y = QuantReLU(a_bits=4, quantizer="pact")(x)
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from tfcomp.layers import quantizers as qz
from tfcomp.layers.quant_base import (
    exact_requantize,
    fake_quant_activation,
    save_linked_variables,
    typed_quantizer,
)

__all__ = ["QuantActivation", "QuantReLU"]


class _FixedGrid:
    """A constant range for ``ActivationQuantizer.share_range``: the grid of
    a quantizer that neither EMA updates nor ``calibrate`` move."""

    def __init__(self, quantizer, lo: float, hi: float):
        self.bits = quantizer.bits
        self.signed = quantizer.signed
        self.range_mode = quantizer.range_mode
        self.range_min = np.asarray(lo, np.float32) if self.signed else None
        self.range_max = np.asarray(hi, np.float32)


def _check_fixed_range(fixed_range, name):
    if fixed_range is None:
        return None
    try:
        lo, hi = (float(v) for v in fixed_range)
    except (TypeError, ValueError):
        lo = hi = float("nan")
    if not (lo <= 0.0 < hi):
        raise ValueError(
            f"fixed_range of layer {name!r} must be a (lo, hi) pair with "
            f"lo <= 0 < hi. Received: fixed_range={fixed_range!r}")
    return (lo, hi)


class _ActQuantBase(keras.layers.Layer):
    """State and export path shared by the activation quantizer layers."""

    _default_quantizer = "signed"
    fixed_range = None

    def _init_aq(self, a_bits, quantizer):
        # element-wise: a Keras mask (Embedding(mask_zero=True)) passes on
        self.supports_masking = True
        self.a_bits = qz.check_bits(a_bits, "a_bits", allow_float=False)
        q = typed_quantizer(quantizer, self._default_quantizer,
                            qz.ActivationQuantizer, "quantizer",
                            "an ActivationQuantizer", self.name)
        self.quantizer = q.with_bits(self.a_bits)
        self._q_config = qz.serialize(self.quantizer)
        self._tfcomp_export = None

    def build(self, input_shape):
        self.quantizer.build(self, "output")
        if self.fixed_range is not None:
            self.quantizer.share_range(_FixedGrid(self.quantizer,
                                                  *self.fixed_range))
            self.quantizer.seen.assign(1.0)
        self.built = True

    def save_own_variables(self, store):
        # a range linked by ``share_range`` (link_shared_inputs) is saved as
        # its source's, so the loaded layer computes what this one does
        save_linked_variables(self, store, [self.quantizer])

    def _quantize(self, x, training):
        if self._tfcomp_export is not None:
            s, z, b = self._tfcomp_export["output"]
            if self._tfcomp_export.get("requantize"):  # see int8 export
                x = exact_requantize(x, self._tfcomp_export["requantize"])
            return fake_quant_activation(x, s, z, b)
        return self.quantizer(x, training=bool(training))

    def compute_output_shape(self, input_shape):
        return input_shape

    @property
    def input_quantizer(self):
        """The quantizer (named like the conv layers' for ``calibrate``)."""
        return self.quantizer


@keras.saving.register_keras_serializable(package="tfcomp")
class QuantActivation(_ActQuantBase):
    """Fake-quantizes a tensor to ``a_bits`` (an activation quantizer layer).

    Used on tensors that are not the input of exactly one quantized layer
    (residual sums, logits, tensors with several consumers) so that every
    tensor of an int8 TFLite file gets its range from the QAT model.
    ``quantize_model`` inserts these automatically.

    With ``fixed_range`` the grid is constant (training and ``calibrate``
    do not move it): ``quantize_model`` puts one on the 1/256 grid
    ``(0, 255/256)`` after a sigmoid / softmax and on ``(-1, 127/128)``
    after a tanh, the fixed output grids of TFLite's int8 LOGISTIC /
    SOFTMAX / TANH kernels.

    Args:
        a_bits: bits in [1, 8].
        quantizer: activation quantizer alias / dict / instance ("signed"
            by default: an affine EMA range, safe for any input; "unsigned"
            for non-negative inputs).
        fixed_range: None, or a constant ``(lo, hi)`` range
            (``lo <= 0 < hi``; ``lo`` must be 0 for an unsigned quantizer).
        round_half_away: round ties of the int8 value (code - 128) away
            from zero, as TFLite's int8 AVERAGE_POOL_2D does
            (``quantize_model`` sets it on the observer after an average
            pooling, which shares the pool's input grid).
        round_ties_up: round ties up, found through float error (a
            bilinear RESIZE_BILINEAR as XNNPACK computes it: ``quantize_model``
            sets it on the observer after a bilinear upsampling).
        **kwargs: base layer arguments (name, dtype, ...).

    Reference: Jacob et al., arXiv:1712.05877.

    Example:
        >>> y = QuantActivation(8)(x)
        >>> gate = QuantActivation(8, "unsigned", fixed_range=(0, 255 / 256))(
        ...     keras.layers.Activation("sigmoid")(x))
    """

    def __init__(self, a_bits=8, quantizer=None, fixed_range=None,
                 round_half_away: bool = False, round_ties_up: bool = False,
                 **kwargs):
        super().__init__(**kwargs)
        self._init_aq(a_bits, quantizer)
        self.round_half_away = bool(round_half_away)
        self.round_ties_up = bool(round_ties_up)
        if self.round_half_away and self.round_ties_up:
            raise ValueError(
                f"layer {self.name!r}: round_half_away and round_ties_up "
                "are exclusive. Received: both True")
        self.fixed_range = _check_fixed_range(fixed_range, self.name)
        if (self.fixed_range is not None and self.fixed_range[0] < 0
                and not self.quantizer.signed):
            raise ValueError(
                f"fixed_range of layer {self.name!r} has lo < 0 but its "
                f"quantizer is unsigned. Received: fixed_range={fixed_range!r}"
                " (use a signed quantizer)")

    def call(self, inputs, training=None):
        y = self._quantize(inputs, training)
        if (self.round_half_away or self.round_ties_up) and \
                self._tfcomp_export is None:
            y = y + ops.stop_gradient(self._tie_shift(inputs, y))
        return y

    def _tie_shift(self, x, y):
        """What moves ``y`` (FakeQuant: half up, but float error breaks
        exact ties either way) to the code TFLite gives: the int8 value
        ``code - 128`` rounded half away from zero (AVERAGE_POOL_2D) or
        half up (``round_ties_up``). A mean of n codes is a multiple of
        1/n step: the 1e-3 step tolerance finds ties through float error
        for n < 500."""
        q = self.quantizer
        s, z, _, _ = q.grid()
        s, z = ops.stop_gradient(s), ops.stop_gradient(z)
        r = ops.stop_gradient(x) / s + z - 128.0
        if self.round_ties_up:
            raw = ops.floor(r + 0.5 + 1e-3)
        else:
            raw = ops.sign(r) * ops.floor(ops.abs(r) + 0.5 + 1e-3)
        code = ops.clip(raw + 128.0, 0.0, float(q.levels))
        shift = (code - z) * s - ops.stop_gradient(y)
        return ops.where(q.seen > 0, shift, ops.zeros_like(shift))

    def get_config(self):
        config = super().get_config()
        config.update({"a_bits": self.a_bits, "quantizer": self._q_config,
                       "fixed_range": None if self.fixed_range is None
                       else list(self.fixed_range),
                       "round_half_away": self.round_half_away,
                       "round_ties_up": self.round_ties_up})
        return config


@keras.saving.register_keras_serializable(package="tfcomp")
class QuantReLU(_ActQuantBase):
    """``keras.layers.ReLU`` followed by an ``a_bits`` quantizer.

    With the default unsigned quantizer and ``range_mode="learned"``
    (``quantizer="pact"``) this is PACT's clipped, quantized ReLU.

    Args:
        max_value, negative_slope, threshold: as ``keras.layers.ReLU``.
        a_bits: output bits in [1, 8].
        quantizer: activation quantizer alias / dict / instance ("unsigned"
            by default; "signed" when ``negative_slope != 0``).
        **kwargs: base layer arguments.

    Reference: Choi et al., PACT, arXiv:1805.06085.

    Example:
        >>> y = QuantReLU(a_bits=4, quantizer="pact")(x)
    """

    def __init__(self, max_value=None, negative_slope=0.0, threshold=0.0,
                 a_bits=8, quantizer=None, **kwargs):
        super().__init__(**kwargs)
        if max_value is not None and max_value < 0:
            raise ValueError(
                "max_value of a ReLU cannot be negative. Received: "
                f"max_value={max_value}")
        if negative_slope is None or negative_slope < 0:
            raise ValueError(
                "negative_slope of a ReLU must be >= 0. Received: "
                f"negative_slope={negative_slope}")
        self.max_value = max_value
        self.negative_slope = float(negative_slope)
        self.threshold = float(threshold)
        if quantizer is None and self.negative_slope != 0:
            quantizer = "signed"
        self._default_quantizer = "unsigned"
        self._init_aq(a_bits, quantizer)

    def call(self, inputs, training=None):
        y = keras.activations.relu(
            inputs, negative_slope=self.negative_slope,
            max_value=self.max_value, threshold=self.threshold)
        return self._quantize(y, training)

    def get_config(self):
        config = super().get_config()
        config.update({
            "max_value": self.max_value,
            "negative_slope": self.negative_slope,
            "threshold": self.threshold,
            "a_bits": self.a_bits,
            "quantizer": self._q_config,
        })
        return config

