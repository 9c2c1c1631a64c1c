"""QuantLayerNormalization and QuantGroupNormalization: normalizations
whose int8 TFLite form is full-integer.

TFLite has no int8 LAYER_NORM (or group norm) builtin: the converter lowers
a normalization to MEAN, SUB, MUL, ADD and RSQRT (a group norm between two
RESHAPEs), and in its QAT mode every
one of those tensors needs a range. This layer computes the same
normalization as those ops and fake-quantizes each intermediate tensor on
an 8-bit grid (EMA ranges in training, or ``calibrate``), and its ``gamma``
and ``beta`` on symmetric 8-bit grids, so the int8 file computes what the
QAT model computes::

    mu   = Q(mean(x))              # "mean"
    d    = Q(x - mu)               # "centered"
    var  = Q(mean(Q(d * d)))       # "square", "variance"
    r    = Q(rsqrt(max(Q(var + eps), step)))  # "shifted", "inv_std"
    y    = Q(Q(d * r) * Qw(gamma)) + Qw(beta)   # "normalized", "scaled"

(with ``rms_scaling``, Keras' definition: ``x * r * gamma``, no beta;
``step``: one step of the "shifted" grid, see ``_shift_floor``).

The last op's output is left to the quantizer after the layer (the
observer or the next layer's input quantizer ``quantize_model`` puts
there). Before its quantizers have seen data the layer computes the float
normalization exactly (up to the order of the float ops). The 8-bit grids
cost precision, chiefly in ``d * d`` when tokens' scales differ a lot;
quantization-aware training adapts the model to them.

Reference: Jacob et al., arXiv:1712.05877 (integer-arithmetic inference,
EMA ranges); Ba et al., Layer Normalization, arXiv:1607.06450; Wu & He,
Group Normalization, arXiv:1803.08494.

Example:
    >>> ln = QuantLayerNormalization(epsilon=1e-6)
    >>> y = ln(x)   # == keras.layers.LayerNormalization(epsilon=1e-6)(x)
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from tfcomp.layers.quant_steps import QuantSteps, weight_fake_quant

__all__ = ["QuantGroupNormalization", "QuantLayerNormalization",
           "QUANT_NORM_OF"]

#: Each intermediate tensor's quantizer: name -> signed.
_STEPS = {"mean": True, "centered": True, "square": False,
          "variance": False, "shifted": False, "inv_std": False,
          "normalized": True, "scaled": True}


class _QuantNormSteps(QuantSteps):
    """The step quantizers, the quantized normalization and its NumPy
    intermediates, shared by the quantized normalization layers. A layer
    sets ``_has_gamma`` / ``_has_beta`` / ``_rms`` and calls
    ``_init_steps`` in ``__init__`` and ``_build_steps`` in ``build``."""

    _rms = False
    _STEPS = _STEPS

    def _uses(self, name: str) -> bool:
        """Whether step ``name`` is not the layer's last op."""
        if name == "normalized":  # read by the gamma / beta op
            return self._has_gamma or self._has_beta
        if name == "scaled":  # read by the beta op
            return self._has_gamma and self._has_beta
        return True

    def _shift_floor(self):
        """One step of the ``shifted`` grid: ``var + eps`` rounded to code
        0 (a constant token: Fashion-MNIST's black background patches)
        is raised to it before RSQRT (an int8 MAXIMUM in the file), so
        ``inv_std`` stays finite (no inf in its EMA range, no NaN
        gradient) and its range ends at ``1 / sqrt(step)``."""
        if self._tfcomp_export is not None:
            return float(self._tfcomp_export["shifted"][0])
        q = self.step_quantizers["shifted"]
        return ops.where(q.seen > 0, ops.stop_gradient(q.grid()[0]),
                         float(self.epsilon))

    def _normalize(self, x, axes, gamma, beta, training):
        """Keras' order of ops over ``axes`` of float32 ``x``: centered
        moments, ``x * rsqrt(var + eps) * gamma (+ beta)`` (``gamma`` /
        ``beta``: None or broadcastable, on their 8-bit grid); with
        ``_rms`` (LayerNormalization's rms_scaling) x itself is scaled."""
        q = lambda name, t: self._q(name, t, training)  # noqa: E731
        mu = q("mean", ops.mean(x, axis=axes, keepdims=True))
        d = q("centered", x - mu)
        var = q("variance", ops.mean(q("square", d * d), axis=axes,
                                     keepdims=True))
        shifted = ops.maximum(q("shifted", var + self.epsilon),
                              self._shift_floor())
        r = q("inv_std", ops.rsqrt(shifted))
        y = q("normalized", (x if self._rms else d) * r)
        if gamma is not None:
            y = q("scaled", y * gamma)
        if beta is not None:
            y = y + beta
        return y

    def _numpy_steps(self, x, axes, gamma) -> dict:
        """The float intermediates of :meth:`_normalize` (NumPy)."""
        out = {"mean": x.mean(axis=axes, keepdims=True)}
        out["centered"] = d = x - out["mean"]
        out["square"] = d * d
        out["variance"] = out["square"].mean(axis=axes, keepdims=True)
        out["shifted"] = out["variance"] + self.epsilon
        # the grid a max calibration gives: one step = max / 255
        floor = max(float(out["shifted"].max()) / 255.0, self.epsilon)
        out["inv_std"] = 1.0 / np.sqrt(np.maximum(out["shifted"], floor))
        out["normalized"] = (x if self._rms else d) * out["inv_std"]
        if gamma is not None:
            out["scaled"] = out["normalized"] * gamma
        return {k: v for k, v in out.items() if k in self.step_quantizers}

    def load_float_weights(self, layer) -> None:
        """Copies ``gamma`` / ``beta`` of the float normalization ``layer``
        (the Keras layer this one quantizes; both built).

        Example:
            >>> qln.load_float_weights(ln)
        """
        for mine, theirs in zip((self.gamma, self.beta),
                                (layer.gamma, layer.beta)):
            if mine is not None:
                mine.assign(theirs)

    def quantized_weights(self) -> list:
        """``get_weights()`` of the plain Keras layer with this layer's
        8-bit gamma and beta (``strip_quantization``).

        Example:
            >>> keras.layers.LayerNormalization(**cfg).set_weights(
            ...     qln.quantized_weights())
        """
        return [keras.ops.convert_to_numpy(weight_fake_quant(w))
                for w in (self.gamma, self.beta) if w is not None]


@keras.saving.register_keras_serializable(package="tfcomp")
class QuantLayerNormalization(_QuantNormSteps,
                              keras.layers.LayerNormalization):
    """``keras.layers.LayerNormalization`` with 8-bit quantizers on each
    tensor of its integer form (see the module doc).

    Args:
        momentum: EMA momentum of the intermediate ranges.
        **kwargs: the arguments of ``keras.layers.LayerNormalization``
            (``axis``, ``epsilon``, ``center``, ``scale``,
            ``rms_scaling``, initializers...).

    Example:
        >>> qln = QuantLayerNormalization.from_config(ln.get_config())
    """

    def __init__(self, momentum: float = 0.99, **kwargs):
        super().__init__(**kwargs)
        self._has_gamma = bool(self.scale or self.rms_scaling)
        self._has_beta = bool(self.center and not self.rms_scaling)
        self._rms = bool(self.rms_scaling)
        self._init_steps(momentum)

    def build(self, input_shape):
        super().build(input_shape)
        self._build_steps()

    def _broadcast(self, w, shape):
        if w is None:
            return None
        full = [1] * len(shape)
        for dim in self.axis:
            full[dim] = shape[dim]
        return ops.reshape(weight_fake_quant(ops.cast(w, "float32")), full)

    def call(self, inputs, training=None):
        x = ops.cast(inputs, "float32")
        y = self._normalize(x, list(self.axis),
                            self._broadcast(self.gamma, x.shape),
                            self._broadcast(self.beta, x.shape), training)
        return ops.cast(y, self.compute_dtype)

    def step_values(self, x, **_) -> dict:
        """``{step: float array}``: the float intermediates of input ``x``
        (a NumPy batch), what ``calibrate`` sets the step ranges from.

        Example:
            >>> ln.step_values(x)["inv_std"].max()
        """
        x = np.asarray(x, np.float32)
        axes = tuple(a % x.ndim for a in self.axis)
        gamma = None
        if self.gamma is not None:
            shape = [1] * x.ndim
            for dim in axes:
                shape[dim] = x.shape[dim]
            gamma = keras.ops.convert_to_numpy(self.gamma).astype(
                np.float32).reshape(shape)
        return self._numpy_steps(x, axes, gamma)

    def get_config(self):
        config = super().get_config()
        config["momentum"] = self.momentum
        return config


@keras.saving.register_keras_serializable(package="tfcomp")
class QuantGroupNormalization(_QuantNormSteps,
                              keras.layers.GroupNormalization):
    """``keras.layers.GroupNormalization`` with 8-bit quantizers on each
    tensor of its integer form (see the module doc): the channels are
    reshaped into ``(groups, channels // groups)`` and normalized over
    every axis but the batch and the group one, as Keras does.

    Args:
        momentum: EMA momentum of the intermediate ranges.
        **kwargs: the arguments of ``keras.layers.GroupNormalization``.

    Example:
        >>> qgn = QuantGroupNormalization.from_config(gn.get_config())
    """

    def __init__(self, momentum: float = 0.99, **kwargs):
        super().__init__(**kwargs)
        self._has_gamma = bool(self.scale)
        self._has_beta = bool(self.center)
        self._init_steps(momentum)

    def build(self, input_shape):
        super().build(input_shape)
        self._build_steps()

    def _grouped(self, shape) -> tuple:
        """``(grouped shape, reduction axes, gamma / beta shape)`` for an
        input of ``shape`` (batch first)."""
        rank, axis = len(shape), self.axis % len(shape)
        grouped = list(shape)
        grouped[axis:axis + 1] = [self.groups, shape[axis] // self.groups]
        axes = [i for i in range(1, rank + 1) if i != axis]
        param = [1] * (rank + 1)
        param[axis:axis + 2] = grouped[axis:axis + 2]
        return grouped, axes, param

    def call(self, inputs, training=None):
        x = ops.cast(inputs, "float32")
        grouped, axes, param = self._grouped(x.shape)
        grouped[0] = -1
        for i, size in enumerate(grouped):
            if size is None:  # a dynamic spatial size
                grouped[i] = ops.shape(x)[i]
        g = ops.reshape(x, grouped)

        def weight(w):
            return None if w is None else ops.reshape(
                weight_fake_quant(ops.cast(w, "float32")), param)

        y = self._normalize(g, axes, weight(self.gamma), weight(self.beta),
                            training)
        return ops.cast(ops.reshape(y, ops.shape(inputs)),
                        self.compute_dtype)

    def step_values(self, x, **_) -> dict:
        """As :meth:`QuantLayerNormalization.step_values`, on the grouped
        input.

        Example:
            >>> gn.step_values(x)["variance"].shape   # (batch, 1, 1, G, 1)
        """
        x = np.asarray(x, np.float32)
        grouped, axes, param = self._grouped(x.shape)
        gamma = None if self.gamma is None else keras.ops.convert_to_numpy(
            self.gamma).astype(np.float32).reshape(param)
        return self._numpy_steps(x.reshape(grouped), tuple(axes), gamma)

    def get_config(self):
        config = super().get_config()
        config["momentum"] = self.momentum
        return config


#: Keras normalization -> its quantized form (exact types; ``quantize_model``
#: makes it, ``strip_quantization`` maps it back through the inverse).
QUANT_NORM_OF = {keras.layers.LayerNormalization: QuantLayerNormalization,
                 keras.layers.GroupNormalization: QuantGroupNormalization}
