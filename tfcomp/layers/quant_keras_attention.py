"""QuantAttention / QuantAdditiveAttention: Keras' dot-product (Luong) and
additive (Bahdanau) attention layers whose int8 TFLite form is
full-integer.

The converter lowers these layers to BATCH_MATMUL, MUL, ADD, TANH, SUM and
SOFTMAX; each tensor between them gets an 8-bit range here (EMA in
training, or ``calibrate``), the weights (``scale``,
``concat_score_weight``) a symmetric 8-bit grid, and the fixed-grid
kernels' outputs are rounded where TFLite's int8 kernels round them::

    "dot":      q = Q(q * scale)             # "query_scaled" (use_scale)
                s = Q(q k^T)                 # "scores"
    "concat":   a = Q(q + k)                 # "sum": (batch, Tq, Tv, dim)
                a = Q(scale * a)             # "sum_scaled" (use_scale)
                t = tanh(a)                  # on 1/128: TFLite's TANH grid
                s = Q(sum(t, -1))            # "scores_sum"
                s = Q(s * concat_score_weight)   # "scores"
    additive:   a = Q(q + k); t = tanh(a)
                t = Q(scale * t)             # "weighted" (use_scale)
                s = Q(sum(t, -1))            # "scores"
    p = softmax(s)                           # on 1/256 (TFLite's SOFTMAX)
    y = Q(p v)                               # "context"

Masks (the value mask, ``use_causal_mask``) set masked scores to the
lowest value of the scores' grid and masked probabilities to exactly 0
(int8 SELECT_V2s); the scores' range (EMA, ``calibrate``) is made to reach
10 below each row's max, so masked scores take ~0 softmax mass (e^-10)
and the kept probabilities match Keras' (-1e9) within the grid's
rounding. A query mask zeroes output rows as Keras does.
``return_attention_scores`` returns the probabilities (on their 1/256
grid). Supported: 3D inputs
``(batch, tokens, features)``; :func:`unsupported_keras_attention` says
why another call is kept float by ``quantize_model``.

Reference: Luong et al., arXiv:1508.04025; Bahdanau et al.,
arXiv:1409.0473; Jacob et al., arXiv:1712.05877 (integer inference).

Example:
    >>> att = QuantAttention.from_config(keras.layers.Attention().get_config())
    >>> y = att([query, value])
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from tfcomp.layers.quant_attention import (
    UnsupportedAttention,
    lift_masked_scores,
    with_margin_column,
)
from tfcomp.layers.quant_base import fake_quant_activation
from tfcomp.layers.quant_steps import QuantSteps, weight_fake_quant

__all__ = ["QuantAttention", "QuantAdditiveAttention", "KERAS_ATTENTION_OF",
           "unsupported_keras_attention"]

#: Keras' additive mask value before a float softmax (masked scores).
_LARGE_NEGATIVE = -1e9
#: TFLite's int8 TANH / SOFTMAX output grids: (scale, zero point).
_TANH_GRID = (1.0 / 128.0, 128)
_SOFTMAX_GRID = (1.0 / 256.0, 0)


def unsupported_keras_attention(rank: int | None) -> str | None:
    """Why a Keras ``Attention`` / ``AdditiveAttention`` with inputs of
    ``rank`` cannot be quantized, or None.

    Example:
        >>> unsupported_keras_attention(3) is None
        True
    """
    if rank is not None and rank != 3:
        return f"rank-{rank} inputs (only (batch, tokens, features))"
    return None


class _QuantScoreAttention(QuantSteps):
    """The quantized computation shared by both layers (see module doc)."""

    def _init_quant(self, momentum: float) -> None:
        self._init_steps(momentum)
        self._recording = None
        self._masked = False  # called with a value mask (Keras' or given)

    def _additive(self) -> bool:
        return isinstance(self, keras.layers.AdditiveAttention)

    def _uses(self, name: str) -> bool:
        if name in ("scores", "context"):
            return True
        if self._additive():
            return name == "sum" or (name == "weighted" and self.use_scale)
        if self.score_mode == "dot":
            return name == "query_scaled" and self.use_scale
        return name in ("sum", "scores_sum") or (
            name == "sum_scaled" and self.use_scale)

    def build(self, input_shape):
        rank = len(input_shape[0])
        if unsupported_keras_attention(rank) is not None:
            raise UnsupportedAttention(
                f"{type(self).__name__} {self.name!r} takes 3D inputs "
                f"(batch, tokens, features). Received: {input_shape}")
        super().build(input_shape)
        self._build_steps()

    def _q(self, name, x, training):
        if self._recording is not None:
            if name in self.step_quantizers:
                self._recording[name] = x
            return x
        return super()._q(name, x, training)

    @staticmethod
    def _w(weight):
        """A weight on its symmetric 8-bit grid (a FakeQuant constant)."""
        return weight_fake_quant(ops.cast(weight, "float32"))

    def _scores(self, q, k, training):
        if not self._additive() and self.score_mode == "dot":
            if self.use_scale:
                q = self._q("query_scaled", q * self._w(self.scale),
                            training)
            return ops.matmul(q, ops.swapaxes(k, -2, -1))
        a = self._q("sum", ops.expand_dims(q, -2) + ops.expand_dims(k, -3),
                    training)
        if not self._additive() and self.use_scale:
            a = self._q("sum_scaled", a * self._w(self.scale), training)
        t = fake_quant_activation(ops.tanh(a), *_TANH_GRID, 8)
        if self._additive():
            if self.use_scale:
                t = self._q("weighted", t * self._w(self.scale), training)
            return ops.sum(t, axis=-1)
        s = self._q("scores_sum", ops.sum(t, axis=-1), training)
        return s * self._w(self.concat_score_weight)

    def _scores_floor(self):
        """The lowest value of the scores' grid (Keras' -1e9 before the
        grid has seen data): what masked scores become."""
        if self._tfcomp_export is not None:
            scale, zero, _ = self._tfcomp_export["scores"]
            return -float(zero) * float(scale)
        if self._recording is not None:
            return _LARGE_NEGATIVE
        q = self.step_quantizers["scores"]
        scale, zero, _, _ = q.grid()
        return ops.where(q.seen > 0, ops.stop_gradient(-zero * scale),
                         _LARGE_NEGATIVE)

    def _score_mask(self, scores, v_mask, use_causal_mask):
        mask = None
        if v_mask is not None:
            mask = ops.expand_dims(ops.cast(v_mask, "bool"), -2)
        if use_causal_mask:
            shape = ops.shape(scores)
            ones = ops.ones((1, shape[-2], shape[-1]), "int32")
            causal = ops.greater_equal(ops.cumsum(ones, axis=-2),
                                       ops.cumsum(ones, axis=-1))
            mask = causal if mask is None else ops.logical_and(mask, causal)
        return mask

    def call(self, inputs, mask=None, training=False,
             return_attention_scores=False, use_causal_mask=False):
        self._validate_inputs(inputs=inputs, mask=mask)
        q, v = (ops.cast(t, "float32") for t in inputs[:2])
        k = ops.cast(inputs[2], "float32") if len(inputs) > 2 else v
        q_mask = mask[0] if mask else None
        v_mask = mask[1] if mask else None
        raw = self._scores(q, k, training)
        smask = self._score_mask(raw, v_mask, use_causal_mask)
        if smask is not None and self._tfcomp_export is None:
            raw = lift_masked_scores(raw, smask)
        scores = self._q("scores", raw, training)
        self._masked = self._masked or v_mask is not None
        if self._masked and smask is None and self._recording is not None:
            # calibrate replays the call without Keras' masks: the range
            # must still reach MASK_MARGIN below each row's max
            self._recording["scores"] = with_margin_column(raw)
        if smask is not None:
            scores = ops.where(smask, scores, self._scores_floor())
        probs = fake_quant_activation(ops.softmax(scores, axis=-1),
                                      *_SOFTMAX_GRID, 8)
        if smask is not None:  # masked positions exactly 0 (causality)
            probs = fake_quant_activation(ops.where(smask, probs, 0.0),
                                          *_SOFTMAX_GRID, 8)
        if training and self.dropout > 0:
            probs = keras.random.dropout(probs, self.dropout,
                                         seed=self.seed_generator)
        y = self._q("context", ops.matmul(probs, v), training)
        if q_mask is not None:
            y = ops.where(ops.expand_dims(ops.cast(q_mask, "bool"), -1), y,
                          0.0)
        y = ops.cast(y, self.compute_dtype)
        if return_attention_scores:
            return y, ops.cast(probs, self.compute_dtype)
        return y

    def compute_output_spec(self, inputs, mask=None, **kwargs):
        if mask and len(mask) > 1 and mask[1] is not None:
            self._masked = True  # a symbolic call with Keras' masks
        return super().compute_output_spec(inputs, mask=mask, **kwargs)

    def step_values(self, inputs, **kwargs) -> dict:
        """``{step: float array}``: the float intermediates of one call on
        NumPy batches (8-bit weights, tanh / softmax on their fixed grids),
        what ``calibrate`` sets the step ranges from.

        Example:
            >>> att.step_values([q, v])["scores"].shape   # (B, Tq, Tv)
        """
        self._recording = {}
        try:
            kwargs.pop("training", None)
            self.call(list(inputs), training=False, **kwargs)
            return {k: np.asarray(keras.ops.convert_to_numpy(v))
                    for k, v in self._recording.items()}
        finally:
            self._recording = None

    def _weights(self, layer) -> list:
        return [w for w in (layer.scale,
                            getattr(layer, "concat_score_weight", None))
                if w is not None]

    def load_float_weights(self, layer) -> None:
        """Copies ``scale`` / ``concat_score_weight`` of the float Keras
        layer ``layer`` (both built).

        Example:
            >>> qatt.load_float_weights(att)
        """
        for mine, theirs in zip(self._weights(self), self._weights(layer)):
            mine.assign(theirs)

    def quantized_weights(self) -> list:
        """The Keras layer's ``get_weights()`` on their 8-bit grids
        (``strip_quantization``).

        Example:
            >>> keras.layers.Attention(use_scale=True).set_weights(
            ...     qatt.quantized_weights())
        """
        return [keras.ops.convert_to_numpy(self._w(w))
                for w in self._weights(self)]

    def get_config(self):
        config = super().get_config()
        config["momentum"] = self.momentum
        return config


@keras.saving.register_keras_serializable(package="tfcomp")
class QuantAttention(_QuantScoreAttention, keras.layers.Attention):
    """``keras.layers.Attention`` (``score_mode`` "dot" or "concat") with
    8-bit quantizers on each tensor of its int8 form (see the module doc).

    Args:
        momentum: EMA momentum of the intermediate ranges.
        **kwargs: the arguments of ``keras.layers.Attention``.

    Example:
        >>> qatt = QuantAttention(use_scale=True)
        >>> y = qatt([query, value])
    """

    _STEPS = {"query_scaled": True, "sum": True, "sum_scaled": True,
              "scores_sum": True, "scores": True, "context": True}

    def __init__(self, use_scale=False, score_mode="dot", dropout=0.0,
                 seed=None, momentum: float = 0.99, **kwargs):
        super().__init__(use_scale=use_scale, score_mode=score_mode,
                         dropout=dropout, seed=seed, **kwargs)
        self._init_quant(momentum)


@keras.saving.register_keras_serializable(package="tfcomp")
class QuantAdditiveAttention(_QuantScoreAttention,
                             keras.layers.AdditiveAttention):
    """``keras.layers.AdditiveAttention`` with 8-bit quantizers on each
    tensor of its int8 form (see the module doc).

    Args:
        momentum: EMA momentum of the intermediate ranges.
        **kwargs: the arguments of ``keras.layers.AdditiveAttention``.

    Example:
        >>> qatt = QuantAdditiveAttention()
        >>> y = qatt([query, value])
    """

    _STEPS = {"sum": True, "weighted": True, "scores": True,
              "context": True}

    def __init__(self, use_scale=True, dropout=0.0, momentum: float = 0.99,
                 **kwargs):
        super().__init__(use_scale=use_scale, dropout=dropout, **kwargs)
        self._init_quant(momentum)


#: Keras attention class -> its quantized form (exact types).
KERAS_ATTENTION_OF = {keras.layers.Attention: QuantAttention,
                      keras.layers.AdditiveAttention: QuantAdditiveAttention}
