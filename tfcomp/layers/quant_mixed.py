"""DNAS mixed-precision layers: one float kernel, several (w, a) candidates.

Each layer holds architecture logits ``theta`` (one per candidate
``(w_bits, a_bits)`` pair), a temperature and per-candidate costs in its own
variables. In training the output is ``sum_i m_i * op_i(x)`` with
``m ~ GumbelSoftmax(theta, tau)``; in inference ``m`` is the one-hot argmax
of ``theta`` (the most likely architecture). Candidates that share an
activation width share one convolution: by linearity
``sum_{i: a_i = a} m_i conv(Qa(x), Qw_i(W)) = conv(Qa(x), sum m_i Qw_i(W))``,
so a layer costs one convolution per distinct ``a_bits``, not per pair.

Reference: Wu et al., Mixed Precision Quantization of ConvNets via
Differentiable Neural Architecture Search, arXiv:1812.00090.

Example:
    >>> from tfcomp.layers import MixedQuantConv2D
    >>> layer = MixedQuantConv2D(16, 3, candidates=[(2, 4), (4, 4), (8, 8)])
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from tfcomp.layers import quantizers as qz
from tfcomp.layers._kernel_ops import ConvOp, DenseOp, DepthwiseOp
from tfcomp.layers.gumbel import gumbel_softmax
from tfcomp.layers.quant_base import (
    QuantMixin,
    base_quantizers,
    pop_unsupported,
    refresh_quietly,
    round_bias,
)

__all__ = ["gumbel_softmax", "MixedQuantConv1D", "MixedQuantConv2D",
           "MixedQuantDepthwiseConv2D", "MixedQuantDense", "MixedMixin"]


def _check_candidates(candidates, layer_name):
    if not candidates:
        raise ValueError(
            f"candidates of layer {layer_name!r} must be a non-empty list of "
            f"(w_bits, a_bits) pairs. Received: {candidates!r}")
    out = []
    for c in candidates:
        if not (isinstance(c, (tuple, list)) and len(c) == 2):
            raise ValueError(
                f"Each candidate of layer {layer_name!r} must be a (w_bits, "
                f"a_bits) pair. Received: {c!r}")
        out.append((qz.check_bits(c[0], "w_bits"),
                    qz.check_bits(c[1], "a_bits")))
    if len(set(out)) != len(out):
        raise ValueError(
            f"candidates of layer {layer_name!r} contain duplicates. "
            f"Received: {candidates!r}")
    return out


class MixedMixin(QuantMixin):
    """Candidate quantizers, logits, temperature and costs of a mixed layer.

    Subclasses implement ``_op(x, kernel)`` (the convolution / matmul).
    """

    def __init__(self, *args, candidates=((4, 4), (8, 8)),
                 weight_quantizer=None, input_quantizer=None,
                 temperature=5.0, seed=None, **kwargs):
        pop_unsupported(kwargs, ("lora_rank", "lora_alpha",
                                 "quantization_config"), "mixed_layer")
        super().__init__(*args, **kwargs)
        self._init_mixed(candidates, weight_quantizer, input_quantizer,
                         temperature, seed)

    def _init_mixed(self, candidates, weight_quantizer, input_quantizer,
                    temperature, seed):
        self.candidates = _check_candidates(candidates, self.name)
        if not float(temperature) > 0:
            raise ValueError(
                f"temperature must be > 0. Received: temperature="
                f"{temperature}")
        self.initial_temperature = float(temperature)
        self.seed = seed
        wq, iq = base_quantizers(self.name, weight_quantizer,
                                 input_quantizer)
        self._wq_config = qz.serialize(wq)
        self._iq_config = qz.serialize(iq)
        self.weight_quantizers = {
            w: (wq.with_bits(w) if w != qz.FLOAT_BITS else None)
            for w in sorted({c[0] for c in self.candidates})}
        self.input_quantizers = {
            a: (iq.with_bits(a) if a != qz.FLOAT_BITS else None)
            for a in sorted({c[1] for c in self.candidates})}
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._tfcomp_export = None

    def _state_config(self) -> dict:
        return {"candidates": [list(c) for c in self.candidates],
                "weight_quantizer": self._wq_config,
                "input_quantizer": self._iq_config,
                "temperature": self.initial_temperature, "seed": self.seed}

    def _build_state(self):
        k = len(self.candidates)
        self.theta = self.add_weight(
            name="theta", shape=(k,), initializer="zeros", trainable=True)
        self.temperature = self.add_weight(
            name="temperature", shape=(),
            initializer=keras.initializers.Constant(self.initial_temperature),
            trainable=False)
        self.costs = self.add_weight(
            name="candidate_costs", shape=(k,), initializer="zeros",
            trainable=False)
        for w, q in self.weight_quantizers.items():
            if q is not None:
                q.build(self, self.kernel.shape, self._kernel_reduce_axes,
                        f"kernel_w{w}")
                refresh_quietly(q, self.kernel)
        for a, q in self.input_quantizers.items():
            if q is not None:
                q.build(self, f"input_a{a}")

    # -- architecture distribution -------------------------------------------
    def mixing_weights(self, training=False):
        """Gumbel-softmax sample (training) or one-hot argmax (inference)."""
        if training:
            return gumbel_softmax(self.theta, self.temperature,
                                  seed=self.seed_generator)
        return ops.one_hot(ops.argmax(self.theta), len(self.candidates),
                           dtype="float32")

    def probabilities(self):
        """``softmax(theta)`` as a tensor (differentiable)."""
        return ops.softmax(self.theta)

    def expected_cost(self):
        """``sum_i softmax(theta)_i * cost_i`` (differentiable)."""
        return ops.sum(self.probabilities() * self.costs)

    def set_costs(self, costs) -> None:
        """Sets the per-candidate costs (e.g. BOPs or params * w_bits)."""
        c = np.asarray(costs, dtype=np.float32).reshape(-1)
        if c.shape != (len(self.candidates),):
            raise ValueError(
                f"costs of layer {self.name!r} must have one value per "
                f"candidate ({len(self.candidates)}). Received shape "
                f"{c.shape}")
        self.costs.assign(c)

    def best_candidate(self) -> tuple:
        """The argmax candidate ``(w_bits, a_bits)``."""
        t = keras.ops.convert_to_numpy(self.theta)
        return self.candidates[int(np.argmax(t))]

    @property
    def w_bits(self):
        return self.best_candidate()[0] if self.built else max(
            c[0] for c in self.candidates)

    @property
    def a_bits(self):
        return self.best_candidate()[1] if self.built else max(
            c[1] for c in self.candidates)

    # -- forward ----------------------------------------------------------------
    def call(self, inputs, training=None):
        y, bias = self._mixed_forward(inputs, training)
        return self._apply_bias_activation(y, bias)

    def _mixed_forward(self, inputs, training):
        # compute dtype: float16 under a mixed_float16 policy
        m = ops.cast(self.mixing_weights(training), self.compute_dtype)
        qkernels = {w: (q(self.kernel) if q is not None else self.kernel)
                    for w, q in self.weight_quantizers.items()}
        y = None
        bias = None
        for a, q in self.input_quantizers.items():
            x = inputs if q is None else q(inputs, training=bool(training))
            k = None
            for i, (wb, ab) in enumerate(self.candidates):
                if ab != a:
                    continue
                term = m[i] * qkernels[wb]
                k = term if k is None else k + term
                if self.use_bias:
                    # each candidate adds its bias on its own int32 grid,
                    # as the layer quantize_model would deploy does
                    b = m[i] * round_bias(self.bias, self.kernel,
                                          self.weight_quantizers[wb], q)
                    bias = b if bias is None else bias + b
            out = self._op(x, k)
            y = out if y is None else y + out
        return y, bias

    def refresh_weight_quantizer(self) -> None:
        for q in self.weight_quantizers.values():
            if q is not None:
                q.refresh(self.kernel)

    def activation_quantizers(self) -> list:
        return [q for q in self.input_quantizers.values() if q is not None]


_MIXED_DOC = """
        candidates: list of ``(w_bits, a_bits)`` pairs (bits in [1, 8] or 32).
        weight_quantizer: base weight quantizer (bits set per candidate).
        input_quantizer: base input activation quantizer.
        temperature: initial Gumbel-softmax temperature (annealed by
            ``tfcomp.quantization.dnas.TemperatureAnnealing``).
        seed: seed of the Gumbel noise.
"""


@keras.saving.register_keras_serializable(package="tfcomp")
class MixedQuantConv2D(ConvOp, MixedMixin, keras.layers.Conv2D):
    """Conv2D supernet layer for DNAS mixed-precision search.

    Args:
        *args, **kwargs: ``keras.layers.Conv2D`` arguments (filters,
            kernel_size, strides, padding, ...).
    """ + _MIXED_DOC + """
    Reference: Wu et al., arXiv:1812.00090.

    Example:
        >>> layer = MixedQuantConv2D(16, 3, candidates=[(2, 4), (4, 4), (8, 8)])
    """


@keras.saving.register_keras_serializable(package="tfcomp")
class MixedQuantConv1D(ConvOp, MixedMixin, keras.layers.Conv1D):
    """Conv1D supernet layer for DNAS mixed-precision search (grouped,
    dilated and causal convolutions included; time series, text).

    Args:
        *args, **kwargs: ``keras.layers.Conv1D`` arguments (filters,
            kernel_size, strides, padding, ...).
    """ + _MIXED_DOC + """
    Reference: Wu et al., arXiv:1812.00090.

    Example:
        >>> layer = MixedQuantConv1D(16, 3, candidates=[(2, 4), (8, 8)])
    """

    _kernel_reduce_axes = (0, 1)


@keras.saving.register_keras_serializable(package="tfcomp")
class MixedQuantDepthwiseConv2D(DepthwiseOp, MixedMixin,
                                keras.layers.DepthwiseConv2D):
    """DepthwiseConv2D supernet layer for DNAS mixed-precision search.

    Args:
        *args, **kwargs: ``keras.layers.DepthwiseConv2D`` arguments
            (kernel_size, strides, padding, depth_multiplier, ...).
    """ + _MIXED_DOC + """
    Reference: Wu et al., arXiv:1812.00090.

    Example:
        >>> layer = MixedQuantDepthwiseConv2D(3, candidates=[(4, 4), (8, 8)])
    """


@keras.saving.register_keras_serializable(package="tfcomp")
class MixedQuantDense(DenseOp, MixedMixin, keras.layers.Dense):
    """Dense supernet layer for DNAS mixed-precision search.

    Args:
        *args, **kwargs: ``keras.layers.Dense`` arguments (units,
            activation, use_bias, ...; LoRA and Keras' own quantization are
            not supported).
    """ + _MIXED_DOC + """
    Reference: Wu et al., arXiv:1812.00090.

    Example:
        >>> layer = MixedQuantDense(10, candidates=[(4, 8), (8, 8)])
    """

    _config_drop = ("quantization_config",)
