"""Shared machinery of tfcomp's quantization-aware layers.

``QuantMixin`` adds ``w_bits`` / ``a_bits``, a weight quantizer and an input
(activation) quantizer to a Keras layer with a ``kernel``. ``a_bits`` is the
bit-width of the layer's *input* activations, the convention of HAQ and of
BOPs = MACs * w_bits * a_bits.

It also holds the TFLite export path: ``prepare_for_tflite`` (in
``tfcomp.quantization.export_support``) sets ``_tfcomp_export`` on layers of
a clone, after which ``call`` emits TensorFlow FakeQuant ops (through
``keras.quantizers.fake_quant_with_min_max_vars``) that the TFLite converter
reads ranges and integer grids from.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from tfcomp.quantization import quantizers as qz

__all__ = ["QuantMixin", "exact_requantize", "fake_quant_activation",
           "fake_quant_weights"]

_fq = keras.quantizers.fake_quant_with_min_max_vars


def fake_quant_activation(x, scale: float, zero_point: int, bits: int):
    """Emits FakeQuant ops that reproduce a b-bit activation grid in int8.

    The int8 tensor gets scale ``scale`` and zero point ``zero_point - 128``
    so that the b-bit codes ``0 .. 2^b - 1`` are int8 codes exactly; for
    ``b < 8`` a ``minimum`` (int8 MINIMUM in TFLite) first clamps at the top
    of the b-bit range (the FakeQuant clamps the bottom).

    Args:
        x: float tensor.
        scale: quantization step.
        zero_point: integer zero point of the b-bit grid (0 = unsigned).
        bits: activation bits in [1, 8].

    Returns:
        The fake-quantized tensor.

    Example:
        >>> y = fake_quant_activation(x, 6 / 15, 0, 4)
    """
    lo = np.float32(-zero_point * scale)
    hi = np.float32((255 - zero_point) * scale)
    if bits < 8:
        # MINIMUM is a same-scale op in TFLite: it takes the producer's
        # params when the input is already quantized (then the FakeQuant
        # below becomes a requantization, as the QAT model rounds twice
        # too) and these params otherwise.
        top = np.float32((2 ** bits - 1 - zero_point) * scale)
        x = ops.minimum(x, top)
    return _fq(x, lo, hi, num_bits=8, narrow_range=False)


def exact_requantize(x, code: int = 127):
    """Routes an int8 tensor through a 1x1 identity DEPTHWISE_CONV_2D.

    A tensor quantized on one grid (an 8-bit observer) and read by a layer on
    another (a b-bit input quantizer) needs an int8 -> int8 requantization.
    TFLite emits a QUANTIZE op for it, which the default runtime (XNNPACK) runs
    with a low-precision multiplier: measured on a 4-bit ResNet-8, 1.6% of the
    codes differ from the QAT model's ``Q_b(Q_8(x))`` (and from an exact
    requantization). A depthwise convolution with unit weights (int8 code
    ``code``, scale ``1 / code``) computes the same value but requantizes its
    accumulator with a full-precision scale, so the file rounds where the QAT
    model does. Consumers of one tensor must use different codes: the converter
    merges identical ops, and the merged op would requantize one consumer's
    grid from the other's.

    Args:
        x: float tensor whose last axis is channels.
        code: int8 code of the unit weight, in [1, 127].

    Returns:
        ``x`` (numerically), as the output of an identity depthwise conv.

    Example:
        >>> y = fake_quant_activation(exact_requantize(x), s, z, 4)
    """
    shape = tuple(x.shape)
    c = int(shape[-1])
    x4 = x if len(shape) == 4 else ops.reshape(x, (-1, 1, 1, c))
    code = int(code)
    if not 1 <= code <= 127:
        raise ValueError(f"code must be in [1, 127]. Received: code={code}")
    k = fake_quant_weights(ops.ones((1, 1, 1, c), "float32"),
                           np.full((c,), 127.0 / code, np.float32), axis=-1)
    y = ops.depthwise_conv(x4, ops.reshape(k, (1, 1, c, 1)), padding="valid")
    if len(shape) != 4:
        y = ops.reshape(y, (-1,) + tuple(shape[1:]))
    return y


def fake_quant_weights(kernel, fq_max, axis: int):
    """Per-channel symmetric narrow-range int8 FakeQuant of a kernel.

    ``fq_max = 127 * scale`` per channel, so a kernel already holding
    ``codes * scale`` is stored as the integer codes themselves.

    Example:
        >>> k = fake_quant_weights(kernel, 127 * s, axis=-1)
    """
    m = np.asarray(fq_max, np.float32)
    return _fq(kernel, -m, m, num_bits=8, narrow_range=True, axis=axis)


def round_bias(bias, kernel, weight_quantizer, input_quantizer):
    """``bias`` rounded to the accumulator grid ``s_in * s_w`` (STE).

    The float bias while either quantizer is None (float weights / inputs)
    or before the input quantizer has seen data. Shared by the QAT layers
    and every candidate of the DNAS mixed layers.
    """
    if weight_quantizer is None or input_quantizer is None:
        return bias
    s_in = ops.stop_gradient(input_quantizer.grid()[0])
    s_w = ops.stop_gradient(ops.reshape(
        weight_quantizer.channel_scale(kernel), (-1,)))
    step = s_in * s_w
    r = bias / step
    q = ops.sign(r) * ops.floor(ops.abs(r) + 0.5) * step
    q = ops.where(input_quantizer.seen > 0, q, bias)
    return qz._ste(bias, q)


class QuantMixin:
    """Quantization state and helpers shared by QuantConv2D & co.

    Subclasses call ``_init_quant`` in ``__init__``, ``_build_quant`` at the
    end of ``build`` and use ``_quantized_inputs`` / ``_quantized_kernel`` in
    ``call``. ``_kernel_reduce_axes`` gives the axes a per-channel scale
    reduces over.
    """

    _kernel_reduce_axes: tuple = ()

    def _init_quant(self, w_bits, a_bits, weight_quantizer, input_quantizer):
        self.w_bits = qz.check_bits(w_bits, "w_bits")
        self.a_bits = qz.check_bits(a_bits, "a_bits")
        wq = qz.get(weight_quantizer if weight_quantizer is not None
                    else "symmetric")
        if not isinstance(wq, qz.WeightQuantizer):
            raise TypeError(
                f"weight_quantizer of layer {self.name!r} must be a weight "
                f"quantizer (symmetric, kmeans). Received: {wq!r}")
        iq = qz.get(input_quantizer if input_quantizer is not None
                    else "unsigned")
        if not isinstance(iq, qz.ActivationQuantizer):
            raise TypeError(
                f"input_quantizer of layer {self.name!r} must be an "
                f"ActivationQuantizer. Received: {iq!r}")
        if self.w_bits != qz.FLOAT_BITS:
            wq = wq.with_bits(self.w_bits)
        if self.a_bits != qz.FLOAT_BITS:
            iq = iq.with_bits(self.a_bits)
        self._wq_config = qz.serialize(wq)
        self._iq_config = qz.serialize(iq)
        self.weight_quantizer = wq if self.w_bits != qz.FLOAT_BITS else None
        self.input_quantizer = iq if self.a_bits != qz.FLOAT_BITS else None
        self._tfcomp_export = None

    def _quant_config(self) -> dict:
        return {"w_bits": self.w_bits, "a_bits": self.a_bits,
                "weight_quantizer": self._wq_config,
                "input_quantizer": self._iq_config}

    def _build_quant(self):
        if self.weight_quantizer is not None:
            self.weight_quantizer.build(self, self.kernel.shape,
                                        self._kernel_reduce_axes, "kernel")
            try:  # needs eager values; skipped if built inside a trace
                self.weight_quantizer.refresh(self.kernel)
            except Exception:  # noqa: BLE001 - state keeps its default
                pass
        if self.input_quantizer is not None:
            self.input_quantizer.build(self, "input")

    # -- forward helpers ----------------------------------------------------
    def _quantized_inputs(self, inputs, training):
        if self.input_quantizer is None:
            return inputs
        return self.input_quantizer(inputs, training=bool(training))

    def _quantized_kernel(self):
        if self.weight_quantizer is None:
            return self.kernel
        return self.weight_quantizer(self.kernel)

    def _quantized_bias(self):
        """The bias on the int32 accumulator grid ``s_in * s_w`` (STE).

        Integer inference (TFLite, bit-serial back ends) adds the bias to the
        int32 accumulator, i.e. rounded to multiples of ``s_in * s_w[c]``.
        At low bit-widths that step is coarse (2-bit inputs and weights:
        about a fifth of an output step), so the QAT forward pass rounds the
        bias the same way; the gradient passes straight through. Until the
        input quantizer has seen data (or with float weights / inputs) the
        float bias is used.
        """
        if not self.use_bias:
            return self.bias
        return round_bias(self.bias, self.kernel, self.weight_quantizer,
                          self.input_quantizer)

    def _apply_bias_activation(self, y, channels_last: bool = True,
                               bias=None):
        if self.use_bias:
            bias = self.bias if bias is None else bias
            if channels_last:
                y = ops.add(y, bias)
            else:
                shape = (1, -1) + (1,) * (len(y.shape) - 2)
                y = ops.add(y, ops.reshape(bias, shape))
        if self.activation is not None:
            y = self.activation(y)
        return y

    def _export_inputs(self, inputs):
        spec = self._tfcomp_export
        if spec.get("input") is None:
            return inputs
        s, z, b = spec["input"]
        if spec.get("requantize"):
            inputs = exact_requantize(inputs, spec["requantize"])
        return fake_quant_activation(inputs, s, z, b)

    # -- user-facing helpers ---------------------------------------------------
    def refresh_weight_quantizer(self) -> None:
        """Recomputes the weight quantizer's data-dependent state (KL clip
        ratio, k-means centroids) from the current kernel.

        Example:
            >>> layer.refresh_weight_quantizer()
        """
        if self.weight_quantizer is not None:
            self.weight_quantizer.refresh(self.kernel)

    def quantized_bias(self):
        """The bias as the forward pass adds it (numpy; None without bias):
        rounded to the accumulator grid ``s_in * s_w`` once the input
        quantizer has seen data.

        Example:
            >>> b = layer.quantized_bias()
        """
        if not self.use_bias:
            return None
        return keras.ops.convert_to_numpy(self._quantized_bias())

    def quantized_kernel(self) -> np.ndarray:
        """The kernel as the forward pass sees it (numpy).

        Example:
            >>> np.unique(layer.quantized_kernel()[..., 0]).size <= 15
            True
        """
        return keras.ops.convert_to_numpy(self._quantized_kernel())

    def save_own_variables(self, store):
        # Keras' conv / dense layers save only kernel and bias; tfcomp layers
        # also carry quantizer state, so use the generic Layer behaviour.
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store):
        keras.layers.Layer.load_own_variables(self, store)
