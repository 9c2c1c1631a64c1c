"""Shared machinery of tfcomp's quantization-aware layers.

``QuantMixin`` adds ``w_bits`` / ``a_bits``, a weight quantizer and an input
(activation) quantizer to a Keras layer with a ``kernel``. ``a_bits`` is the
bit-width of the layer's *input* activations, the convention of HAQ and of
BOPs = MACs * w_bits * a_bits.

It also holds the TFLite export path: ``prepare_for_tflite`` (in
``tfcomp.export.int8``) sets ``_tfcomp_export`` on layers of a clone, after
which ``call`` emits TensorFlow FakeQuant ops (through
``keras.quantizers.fake_quant_with_min_max_vars``) that the TFLite converter
reads ranges and integer grids from.

Example:
    >>> from tfcomp.layers.quant_base import fake_quant_weights
    >>> k = fake_quant_weights(kernel, 127 * scale, axis=-1)
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from tfcomp.layers import quantizers as qz
from tfcomp.layers.quantizers.base import _ste

__all__ = ["KernelLayerMixin", "QuantMixin", "exact_requantize",
           "save_linked_variables",
           "fake_quant_activation", "fake_quant_weights", "round_bias"]

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
    ``codes * scale`` is stored as the integer codes themselves. With
    ``axis=None`` the kernel has one scale (``fq_max``'s first entry).

    Example:
        >>> k = fake_quant_weights(kernel, 127 * s, axis=-1)
    """
    m = np.asarray(fq_max, np.float32)
    if axis is None:
        m = np.float32(m.reshape(-1)[0])
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
    return _ste(bias, q)


def save_linked_variables(layer, store, quantizers) -> None:
    """Keras' ``Layer.save_own_variables``, except that the range of each
    quantizer of ``quantizers`` linked by ``share_range`` (the link lives in
    memory) is saved as its source's: the loaded model, before anything
    relinks it, computes what the saved one does.

    Example:
        >>> save_linked_variables(self, store, [self.input_quantizer])
    """
    swap = {}
    for q in quantizers:
        src = getattr(q, "_source", None)
        if src is None or getattr(q, "_link_var", None) is not None:
            continue
        swap[id(q.range_max)] = src.range_max
        if q.range_min is not None and src.range_min is not None:
            swap[id(q.range_min)] = src.range_min
    # ``weights`` lists the layer's own variables in the order Keras' Layer
    # saves and loads them (trainable, then non-trainable, as created),
    # then its sublayers'. tfcomp's kernel layers have no sublayers (the
    # quantizers are plain objects whose state is the layer's add_weight),
    # so ``weights`` is exactly their own variables.
    for i, v in enumerate(layer.weights):
        store[f"{i}"] = swap.get(id(v), v)


def pop_unsupported(kwargs: dict, keys, default_name: str) -> None:
    """Removes Keras-only arguments (LoRA, Keras' own quantization) from
    ``kwargs``; a value other than None raises ``ValueError``."""
    for key in keys:
        value = kwargs.pop(key, None)
        if value is not None:
            raise ValueError(
                f"{key} is not supported by tfcomp's quantization-aware layer "
                f"{kwargs.get('name', default_name)!r} (use a plain Keras "
                f"layer). Received: {key}={value!r}")


def typed_quantizer(identifier, default: str, cls, arg: str, kind: str,
                    layer_name: str):
    """``quantizers.get(identifier or default)``, or a TypeError naming the
    argument when it is not a ``cls``."""
    q = qz.get(identifier if identifier is not None else default)
    if not isinstance(q, cls):
        raise TypeError(f"{arg} of layer {layer_name!r} must be {kind}. "
                        f"Received: {q!r}")
    return q


def base_quantizers(layer_name: str, weight_quantizer, input_quantizer):
    """``(weight quantizer, input quantizer)`` resolved from aliases /
    dicts / instances (defaults "symmetric" and "unsigned"), type-checked."""
    wq = typed_quantizer(weight_quantizer, "symmetric", qz.WeightQuantizer,
                         "weight_quantizer",
                         "a weight quantizer (symmetric, kmeans)",
                         layer_name)
    iq = typed_quantizer(input_quantizer, "unsigned", qz.ActivationQuantizer,
                         "input_quantizer", "an ActivationQuantizer",
                         layer_name)
    return wq, iq


def refresh_quietly(quantizer, kernel) -> None:
    """``quantizer.refresh(kernel)``; skipped when built inside a trace
    (the state keeps its default until the next eager refresh)."""
    try:
        quantizer.refresh(kernel)
    except Exception:  # noqa: BLE001 - needs eager values
        pass


class KernelLayerMixin:
    """``build`` / ``get_config`` / bias-and-activation shared by the
    quantization-aware and DNAS mixed kernel layers.

    Subclasses implement ``_build_state`` (variables created after the Keras
    layer's own), ``_state_config`` (their ``__init__`` arguments) and
    ``_op(x, kernel)`` (the convolution / matmul); ``_config_overrides``
    adjusts the Keras parent's config.
    """

    _config_overrides: dict = {}
    _config_drop: tuple = ()

    def build(self, input_shape):
        super().build(input_shape)
        self._build_state()

    def get_config(self):
        config = super().get_config()
        config["activity_regularizer"] = keras.regularizers.serialize(
            self.activity_regularizer)
        for key in self._config_drop:
            config.pop(key, None)
        config.update(self._config_overrides)
        config.update(self._state_config())
        return config

    def _channels_last(self) -> bool:
        return getattr(self, "data_format", "channels_last") == (
            "channels_last")

    def _apply_bias_activation(self, y, bias=None):
        if self.use_bias:
            bias = self.bias if bias is None else bias
            if self._channels_last():
                y = ops.add(y, bias)
            else:
                shape = (1, -1) + (1,) * (len(y.shape) - 2)
                y = ops.add(y, ops.reshape(bias, shape))
        if self.activation is not None:
            y = self.activation(y)
        return y

    def save_own_variables(self, store):
        # Keras' conv / dense layers save only kernel and bias; tfcomp layers
        # also carry quantizer state, so save every variable, as Keras' Layer
        # does (a linked input quantizer with its source's range).
        save_linked_variables(self, store,
                              [getattr(self, "input_quantizer", None)])

    def load_own_variables(self, store):
        keras.layers.Layer.load_own_variables(self, store)


class QuantMixin(KernelLayerMixin):
    """Quantization state and helpers shared by QuantConv2D & co.

    Subclasses call ``_init_quant`` in ``__init__`` and implement ``_op``
    and ``_export_kernel`` (the FakeQuant kernel of the TFLite path).
    ``_kernel_reduce_axes`` gives the axes a per-channel scale reduces over.
    """

    _kernel_reduce_axes: tuple = ()

    def _init_quant(self, w_bits, a_bits, weight_quantizer, input_quantizer):
        self.w_bits = qz.check_bits(w_bits, "w_bits")
        self.a_bits = qz.check_bits(a_bits, "a_bits")
        wq, iq = base_quantizers(self.name, weight_quantizer, input_quantizer)
        if self.w_bits != qz.FLOAT_BITS:
            wq = wq.with_bits(self.w_bits)
        if self.a_bits != qz.FLOAT_BITS:
            iq = iq.with_bits(self.a_bits)
        self._wq_config = qz.serialize(wq)
        self._iq_config = qz.serialize(iq)
        self.weight_quantizer = wq if self.w_bits != qz.FLOAT_BITS else None
        self.input_quantizer = iq if self.a_bits != qz.FLOAT_BITS else None
        self._tfcomp_export = None

    def _state_config(self) -> dict:
        return {"w_bits": self.w_bits, "a_bits": self.a_bits,
                "weight_quantizer": self._wq_config,
                "input_quantizer": self._iq_config}

    def _build_state(self):
        if self.weight_quantizer is not None:
            self.weight_quantizer.build(self, self.kernel.shape,
                                        self._kernel_reduce_axes, "kernel")
            refresh_quietly(self.weight_quantizer, self.kernel)
        if self.input_quantizer is not None:
            self.input_quantizer.build(self, "input")

    # -- forward --------------------------------------------------------------
    def call(self, inputs, training=None):
        inputs = self._float_inputs(inputs)
        if self._tfcomp_export is not None:
            return self._export_call(inputs)
        x = self._quantized_inputs(inputs, training)
        y = self._op(x, self._quantized_kernel())
        return self._apply_bias_activation(y, self._quantized_bias())

    def _float_inputs(self, inputs):
        """An integer input (a uint8 image read by a Rescaling that became
        a 1x1 depthwise conv) cast to the compute dtype, as
        ``keras.layers.Rescaling`` casts it; float inputs pass unchanged."""
        if "float" in keras.backend.standardize_dtype(inputs.dtype):
            return inputs
        return ops.cast(inputs, self.compute_dtype)

    def _export_call(self, inputs):
        y = self._op(self._export_inputs(inputs), self._export_kernel())
        return self._apply_bias_activation(y)

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

    def _export_inputs(self, inputs):
        spec = self._tfcomp_export
        if spec.get("input") is None:
            return inputs
        s, z, b = spec["input"]
        if spec.get("requantize_from") is not None:  # behind a plain ReLU
            inputs = fake_quant_activation(inputs, *spec["requantize_from"])
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
