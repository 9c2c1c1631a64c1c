"""QuantMultiHeadAttention: multi-head attention whose int8 TFLite form is
full-integer.

TFLite has no attention builtin: the converter lowers the four projections
to FULLY_CONNECTED, the two einsums between heads to BATCH_MATMUL, and the
softmax to SOFTMAX; in its QAT mode each of those tensors needs a range.
This layer computes what those ops compute, with 8-bit weights (one
symmetric scale per projection kernel: TFLite's int8 FULLY_CONNECTED) and an
8-bit quantizer on each intermediate tensor (EMA ranges in training, or
``calibrate``)::

    q = Q(x_q Wq + bq)        # "query"  (and "key", "value" alike)
    q = Q(q / sqrt(key_dim))   # "query_scaled"
    s = Q(einsum(k, q))        # "scores": (batch, heads, T, S)
    p = softmax(s)             # on 1/256: TFLite's int8 SOFTMAX output grid
    c = Q(einsum(p, v))        # "context"
    y = c Wo + bo              # left to the quantizer after the layer

The layer's inputs and output are quantized by the observers
``quantize_model`` puts around it. Before its quantizers have seen data
the layer computes Keras' attention with 8-bit weights (and probabilities
on the 1/256 grid). A subclass of ``keras.layers.MultiHeadAttention``: the
weights are Keras' own sublayers (``query_dense``...), so the cost model,
``.keras`` files and ``strip_quantization`` treat it as the Keras layer.

Masks (``attention_mask``, ``use_causal_mask``, the Keras masks of
``mask_zero`` embeddings) are combined as Keras does; masked scores become
the lowest value of the scores' grid, which (EMA, ``calibrate``) is made
to reach ``MASK_MARGIN`` below each row's max, and masked probabilities
exactly 0
(two int8 SELECT_V2 in the file): causality holds bit-exactly, but a row's
kept probabilities are not renormalized for the (small) mass the masked
scores took before the softmax, as Keras' -1e9 would; QAT trains with
that. Supported: 3D inputs ``(batch, tokens, features)`` with the default
attention axes, no gate, no sliding window; ``return_attention_scores``
raises :class:`UnsupportedAttention`, and ``quantize_model`` keeps such a
layer float (``QuantizationReport.skipped`` says why). The weights are
per-tensor (not per output channel) so that the converter writes one
FULLY_CONNECTED per projection.

Reference: Vaswani et al., Attention Is All You Need, arXiv:1706.03762;
Jacob et al., arXiv:1712.05877 (integer-arithmetic inference, EMA ranges).

Example:
    >>> att = QuantMultiHeadAttention(num_heads=4, key_dim=16)
    >>> y = att(x, x)   # self-attention, as keras.layers.MultiHeadAttention
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from tfcomp.layers.quant_base import fake_quant_activation
from tfcomp.layers.quant_steps import QuantSteps, weight_fake_quant

__all__ = ["QuantMultiHeadAttention", "UnsupportedAttention",
           "attention_projections", "unsupported_attention"]

#: The intermediate tensors' quantizers: name -> signed.
_STEPS = {"query": True, "key": True, "value": True, "query_scaled": True,
          "scores": True, "context": True}
#: Key / query -> scores, probabilities / value -> context, for projected
#: tensors (batch, tokens, heads, dim) and attention over the tokens
#: (Keras' equations for 3D inputs).
_DOT = "aecd,abcd->acbe"
_COMBINE = "acbe,aecd->abcd"
#: Keras' additive mask value before a float softmax (masked scores).
_LARGE_NEGATIVE = -1e9
#: How far below its row's max a masked score is kept in the scores' range
#: (EMA / ``calibrate``): its softmax mass exp(-10) rounds to 0 on the
#: 1/256 grid, so the kept probabilities are Keras' (-1e9) within rounding.
MASK_MARGIN = 10.0


def lift_masked_scores(raw, mask):
    """``raw`` scores with each masked one at its row's max less
    ``MASK_MARGIN`` (a fully masked row: the batch's lowest score), what the
    scores' quantizer sees: its range then reaches low enough for masked
    scores, put at the grid's floor, to get ~0 probability.

    Example:
        >>> lift_masked_scores(scores, mask)   # same shape as scores
    """
    top = ops.max(ops.where(mask, raw, ops.min(raw)), axis=-1, keepdims=True)
    return ops.where(mask, raw, ops.stop_gradient(top) - MASK_MARGIN)


def with_margin_column(raw):
    """``raw`` with one more key per row, at the row's max less
    ``MASK_MARGIN``: what ``calibrate`` records for the scores of a layer
    called with Keras masks, which the replayed call does not see.

    Example:
        >>> with_margin_column(scores).shape[-1] == scores.shape[-1] + 1
        True
    """
    floor = ops.max(raw, axis=-1, keepdims=True) - MASK_MARGIN
    return ops.concatenate([raw, floor], -1)


class UnsupportedAttention(ValueError):
    """A MultiHeadAttention configuration or call the quantized layer does
    not compute (``quantize_model`` keeps such a layer float)."""


def attention_projections(layer) -> tuple:
    """``(query, key, value, output)`` EinsumDense sublayers of a built
    ``MultiHeadAttention`` (Keras' public properties).

    Example:
        >>> [p.name for p in attention_projections(mha)]
        ['query', 'key', 'value', 'attention_output']
    """
    return (layer.query_dense, layer.key_dense, layer.value_dense,
            layer.output_dense)


def unsupported_attention(config: dict, rank: int | None = None):
    """Why a MultiHeadAttention with ``config`` (``get_config()``) and
    inputs of ``rank`` cannot be quantized, or None.

    Example:
        >>> unsupported_attention(mha.get_config(), 3) is None
        True
    """
    if config.get("use_gate"):
        return "use_gate=True (the gated output is not quantized)"
    if config.get("sliding_window") is not None:
        return "a sliding window mask"
    axes = config.get("attention_axes")
    if axes is not None and tuple(np.atleast_1d(axes)) not in ((1,), (-2,)):
        return f"attention_axes={axes!r} (only the token axis)"
    if rank is not None and rank != 3:
        return f"rank-{rank} inputs (only (batch, tokens, features))"
    return None


@keras.saving.register_keras_serializable(package="tfcomp")
class QuantMultiHeadAttention(QuantSteps, keras.layers.MultiHeadAttention):
    """``keras.layers.MultiHeadAttention`` with 8-bit weights and 8-bit
    quantizers on each tensor of its int8 form (see the module doc).

    Args:
        momentum: EMA momentum of the intermediate ranges.
        **kwargs: the arguments of ``keras.layers.MultiHeadAttention``
            (``num_heads``, ``key_dim``, ``value_dim``, ``dropout``,
            ``use_bias``, ``output_shape``, initializers...).

    Raises:
        UnsupportedAttention: ``use_gate``, ``sliding_window`` or attention
            axes other than the tokens'.

    Example:
        >>> qatt = QuantMultiHeadAttention.from_config(mha.get_config())
    """

    _STEPS = _STEPS

    def __init__(self, num_heads, key_dim, momentum: float = 0.99,
                 **kwargs):
        super().__init__(num_heads=num_heads, key_dim=key_dim, **kwargs)
        reason = unsupported_attention(
            keras.layers.MultiHeadAttention.get_config(self))
        if reason is not None:
            raise UnsupportedAttention(
                f"QuantMultiHeadAttention {self.name!r} does not support "
                f"{reason}.")
        self._init_steps(momentum)
        self._recording = None
        self._masked = False  # called with a mask (Keras' or given)
        self._probs_dropout = (keras.layers.Dropout(self.dropout,
                                                    seed=self.seed)
                               if self.dropout > 0 else None)

    def build(self, query_shape, value_shape, key_shape=None):
        if len(query_shape) != 3:
            raise UnsupportedAttention(
                f"QuantMultiHeadAttention {self.name!r} takes 3D inputs "
                f"(batch, tokens, features). Received: query_shape="
                f"{tuple(query_shape)}")
        super().build(query_shape, value_shape, key_shape)
        self._build_steps()

    def _q(self, name, x, training):
        if self._recording is not None:
            self._recording[name] = x
            return x
        return super()._q(name, x, training)

    @staticmethod
    def _project(dense, x):
        """``dense(x)`` with the kernel on its 8-bit grid, as a 2D matmul
        (tokens flattened into the batch, contracted axes into one) plus a
        flat bias, then reshaped: the form the converter fuses into one
        int8 FULLY_CONNECTED with its bias (an einsum's or a 3D matmul's
        bias stays a float ADD after the FULLY_CONNECTED)."""
        kernel = weight_fake_quant(ops.cast(dense.kernel, "float32"))
        spec, rest = dense.equation.split(",")
        contracted = sum(ch in rest.split("->")[0] for ch in spec)
        dims = tuple(kernel.shape)
        k, out = math.prod(dims[:contracted]), dims[contracted:]
        tokens = ops.shape(x)[1]  # (batch, tokens, *contracted)
        y = ops.matmul(ops.reshape(x, (-1, k)),
                       ops.reshape(kernel, (k, math.prod(out))))
        if dense.bias is not None:
            y = y + ops.reshape(ops.cast(dense.bias, "float32"), (-1,))
        return ops.reshape(y, (-1, tokens, *out))

    def _check_call(self, return_attention_scores) -> None:
        """Raises :class:`UnsupportedAttention` for a call asking for the
        attention scores (checked on symbolic inputs too, so
        ``quantize_model`` sees it)."""
        if return_attention_scores:
            raise UnsupportedAttention(
                f"QuantMultiHeadAttention {self.name!r} does not return "
                "attention scores; it was called with "
                "return_attention_scores=True.")

    @staticmethod
    def attention_mask(query, value, query_mask=None, value_mask=None,
                       key_mask=None, attention_mask=None,
                       use_causal_mask=False):
        """The boolean ``(batch, T, S)`` mask Keras' MultiHeadAttention
        derives from its arguments (query / value / key masks, an explicit
        mask, the causal lower triangle), or None.

        Example:
            >>> QuantMultiHeadAttention.attention_mask(
            ...     x, x, use_causal_mask=True).shape   # (1, T, T)
        """
        mask = None
        parts = []
        if query_mask is not None:
            parts.append(ops.expand_dims(ops.cast(query_mask, "bool"), -1))
        for m in (value_mask, key_mask):
            if m is not None:
                parts.append(ops.expand_dims(ops.cast(m, "bool"), -2))
        if use_causal_mask:
            ones = ops.ones((ops.shape(query)[1], ops.shape(value)[1]),
                            "int32")
            parts.append(ops.expand_dims(ops.greater_equal(
                ops.cumsum(ones, axis=-2), ops.cumsum(ones, axis=-1)), 0))
        if attention_mask is not None:
            parts.append(ops.cast(attention_mask, "bool"))
        for part in parts:
            mask = part if mask is None else ops.logical_and(mask, part)
        return mask

    def _scores_floor(self):
        """What masked scores become: the lowest value of the scores' grid
        (an int8 SELECT_V2 in the file, so their probability is about
        ``exp(lo - max)``, rounded to 0 on the 1/256 grid when the scores
        span a few units); Keras' -1e9 before the grid has seen data."""
        if self._tfcomp_export is not None:
            scale, zero, _ = self._tfcomp_export["scores"]
            return -float(zero) * float(scale)
        q = self.step_quantizers["scores"]
        if self._recording is not None:
            return _LARGE_NEGATIVE
        scale, zero, _, _ = q.grid()
        return ops.where(q.seen > 0, ops.stop_gradient(-zero * scale),
                         _LARGE_NEGATIVE)

    def compute_output_spec(self, query, value, key=None, query_mask=None,
                            value_mask=None, key_mask=None,
                            attention_mask=None,
                            return_attention_scores=False, training=None,
                            use_causal_mask=False):
        self._check_call(return_attention_scores)
        if any(m is not None for m in (query_mask, value_mask, key_mask,
                                       attention_mask)) or use_causal_mask:
            self._masked = True  # a symbolic call with masks
        return super().compute_output_spec(query, value, key,
                                           training=training)

    def call(self, query, value, key=None, query_mask=None,
             value_mask=None, key_mask=None, attention_mask=None,
             return_attention_scores=False, training=None,
             use_causal_mask=False):
        self._check_call(return_attention_scores)
        mask = self.attention_mask(query, value, query_mask, value_mask,
                                   key_mask, attention_mask, use_causal_mask)
        key = value if key is None else key
        q = self._q("query", self._project(self.query_dense,
                                           ops.cast(query, "float32")),
                    training)
        k = self._q("key", self._project(self.key_dense,
                                         ops.cast(key, "float32")), training)
        v = self._q("value", self._project(self.value_dense,
                                           ops.cast(value, "float32")),
                    training)
        q = self._q("query_scaled", q * (1.0 / math.sqrt(self.key_dim)),
                    training)
        raw = ops.einsum(_DOT, k, q)
        if mask is not None:
            mask = ops.expand_dims(mask, 1)  # (batch, 1, T, S): every head
            self._masked = True
            if self._tfcomp_export is None:
                raw = lift_masked_scores(raw, mask)
        scores = self._q("scores", raw, training)
        if self._masked and self._recording is not None:
            # calibrate replays the call without Keras' masks
            self._recording["scores"] = with_margin_column(raw)
        if mask is not None:
            scores = ops.where(mask, scores, self._scores_floor())
        # on TFLite's int8 SOFTMAX output grid (fixed: also when recording)
        probs = fake_quant_activation(ops.softmax(scores, axis=-1),
                                      1.0 / 256.0, 0, 8)
        if mask is not None:  # masked positions exactly 0 (causality)
            probs = fake_quant_activation(ops.where(mask, probs, 0.0),
                                          1.0 / 256.0, 0, 8)
        if self._probs_dropout is not None:
            probs = self._probs_dropout(probs, training=training)
        context = self._q("context", ops.einsum(_COMBINE, probs, v),
                          training)
        y = self._project(self.output_dense, context)
        return ops.cast(y, self.compute_dtype)

    def step_values(self, query, value, key=None, **kwargs) -> dict:
        """``{step: float array}``: the float intermediates (8-bit weights,
        probabilities on their fixed grid, no other activation rounding) of
        one call on NumPy batches, what ``calibrate`` sets the step ranges
        from.

        Example:
            >>> att.step_values(x, x)["scores"].shape   # (B, heads, T, S)
        """
        self._recording = {}
        try:
            kwargs.pop("training", None)
            self.call(query, value, key, training=False, **kwargs)
            return {k: np.asarray(keras.ops.convert_to_numpy(v))
                    for k, v in self._recording.items()}
        finally:
            self._recording = None

    def load_float_weights(self, layer) -> None:
        """Copies the projections of the float ``MultiHeadAttention``
        ``layer`` (both built).

        Example:
            >>> qatt.load_float_weights(mha)
        """
        for mine, theirs in zip(attention_projections(self),
                                attention_projections(layer)):
            mine.set_weights(theirs.get_weights())

    def quantized_projections(self) -> list:
        """Per projection (query, key, value, output) its ``get_weights()``
        with the kernel on its 8-bit grid (``strip_quantization``).

        Example:
            >>> for p, w in zip(attention_projections(mha),
            ...                 qatt.quantized_projections()):
            ...     p.set_weights(w)
        """
        out = []
        for dense in attention_projections(self):
            weights = [keras.ops.convert_to_numpy(weight_fake_quant(
                ops.cast(dense.kernel, "float32")))]
            if dense.bias is not None:
                weights.append(keras.ops.convert_to_numpy(dense.bias))
            out.append(weights)
        return out

    def get_config(self):
        config = super().get_config()
        config["momentum"] = self.momentum
        return config
