"""Element-wise layers whose int8 TFLite form is several builtin ops, with
an 8-bit quantizer on each intermediate tensor (see ``quant_steps``):

* ``QuantAverage``: ``keras.layers.Average`` is ADD (pairwise), then MUL
  by ``1/n``::

      y = Q("sum", ... Q("partial2", x_1 + x_2) ... + x_n) * (1 / n)

* ``QuantHardSigmoid``: Keras' ``hard_sigmoid`` is ``relu6(x + 3) / 6``,
  ADD (RELU6 fused) then MUL::

      y = Q("shifted", relu6(x + 3)) * (1 / 6)

* ``QuantSELU``: the converter lowers SELU to GREATER, MUL, EXP, SUB, MUL
  and SELECT_V2 (``exp`` of ``min(x, 0)`` here, an int8 MINIMUM first, so
  its range is ``(0, 1]`` whatever the positive side)::

      pos = Q("scaled", x * scale)
      neg = Q("negative", Q("expm1", Q("exp", exp(min(x, 0))) - 1)
                          * (scale * alpha))
      y   = where(x > 0, pos, neg)

The last op's output is left to the quantizer after the layer (the
observer or the next layer's input quantizer ``quantize_model`` puts
there), so the converter finds a range on every tensor and the int8 file
rounds where the QAT model does. Before the step quantizers have seen data
each layer computes its float function.

Reference: Jacob et al., arXiv:1712.05877 (integer-arithmetic inference);
Klambauer et al., SELU, arXiv:1706.02515.

Example:
    >>> y = QuantAverage()([a, b])   # == keras.layers.Average()([a, b])
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from tfcomp.layers.quant_steps import QuantSteps

__all__ = ["QuantAverage", "QuantELU", "QuantHardSigmoid", "QuantSELU",
           "QUANT_ELEMENTWISE_LAYERS", "QUANT_STEP_ACTIVATIONS",
           "quant_activation_class"]

#: SELU's constants (Klambauer et al.; Keras' and TensorFlow's values).
_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


class _ElementwiseSteps(QuantSteps):
    """``momentum`` in the config, steps built with the layer, no
    weights."""

    def _init_elementwise(self, momentum):
        self._init_steps(momentum)

    def build(self, input_shape):
        super().build(input_shape)
        self._build_steps()

    def get_config(self):
        config = super().get_config()
        config["momentum"] = self.momentum
        return config

    def load_float_weights(self, layer) -> None:
        """No weights to copy (the plain layer has none).

        Example:
            >>> qavg.load_float_weights(avg)
        """

    def plain_layer(self, name: str):
        """The Keras layer this one quantizes (``strip_quantization``).

        Example:
            >>> qavg.plain_layer("average")
        """
        raise NotImplementedError


@keras.saving.register_keras_serializable(package="tfcomp")
class QuantAverage(_ElementwiseSteps, keras.layers.Average):
    """``keras.layers.Average`` with an 8-bit quantizer on the sum (TFLite:
    ADD, then MUL by ``1 / n``; see the module doc). With ``n > 2`` inputs
    the converter adds them pairwise: each partial sum has its own
    quantizer (``"partial2"``... for ``x_1 + x_2``...).

    Args:
        momentum: EMA momentum of the sums' ranges.
        **kwargs: ``keras.layers.Average`` arguments.

    Example:
        >>> y = QuantAverage()([a, b])
    """

    def __init__(self, momentum=0.99, **kwargs):
        super().__init__(**kwargs)
        self.momentum = float(momentum)
        self._tfcomp_export = None
        self.step_quantizers = {}

    @staticmethod
    def _names(n: int) -> list:
        """The step after each ADD of ``n`` inputs."""
        return [f"partial{i}" for i in range(2, n)] + ["sum"]

    def build(self, input_shape):
        self._STEPS = {name: True for name in self._names(len(input_shape))}
        self._init_steps(self.momentum)
        super().build(input_shape)

    def call(self, inputs, training=None):
        total = inputs[0]
        for name, x in zip(self._names(len(inputs)), inputs[1:]):
            total = self._q(name, ops.add(total, x), training)
        return ops.multiply(total, 1.0 / len(inputs))

    def step_values(self, inputs, **kwargs) -> dict:
        """``{"sum": ...}`` (and the partial sums): the float sums of the
        inputs (NumPy; what ``calibrate`` sets the ranges from).

        Example:
            >>> qavg.step_values([a, b])["sum"].shape
        """
        arrays = [np.asarray(keras.ops.convert_to_numpy(x), np.float32)
                  for x in inputs]
        out, total = {}, arrays[0]
        for name, x in zip(self._names(len(arrays)), arrays[1:]):
            out[name] = total = total + x
        return out

    def plain_layer(self, name: str):
        return keras.layers.Average(name=name, dtype=self.dtype_policy)


class _QuantActivationSteps(_ElementwiseSteps, keras.layers.Activation):
    """A ``keras.layers.Activation`` of a fixed function with step
    quantizers; subclasses set ``_ACTIVATION`` and ``_forward``."""

    _ACTIVATION = ""

    def __init__(self, momentum=0.99, **kwargs):
        kwargs.pop("activation", None)
        super().__init__(self._ACTIVATION, **kwargs)
        self._init_elementwise(momentum)

    def call(self, inputs, training=None):
        return self._forward(inputs, lambda name, t: self._q(
            name, t, training))

    def step_values(self, inputs, **kwargs) -> dict:
        """The float intermediates (NumPy) that ``calibrate`` sets each
        step's range from.

        Example:
            >>> qact.step_values(x)
        """
        out = {}

        def record(name, t):
            out[name] = np.asarray(keras.ops.convert_to_numpy(t))
            return t

        x = np.asarray(keras.ops.convert_to_numpy(inputs), np.float32)
        self._forward(ops.convert_to_tensor(x), record)
        return out

    def plain_layer(self, name: str):
        return keras.layers.Activation(self._ACTIVATION, name=name,
                                       dtype=self.dtype_policy)


@keras.saving.register_keras_serializable(package="tfcomp")
class QuantHardSigmoid(_QuantActivationSteps):
    """``keras.layers.Activation("hard_sigmoid")`` with an 8-bit quantizer
    on ``relu6(x + 3)`` (TFLite: ADD with a fused RELU6, then MUL by 1/6).

    Args:
        momentum: EMA momentum of the step's range.
        **kwargs: base layer arguments.

    Example:
        >>> y = QuantHardSigmoid()(x)
    """

    _ACTIVATION = "hard_sigmoid"
    _STEPS = {"shifted": False}

    @staticmethod
    def _forward(x, q):
        shifted = q("shifted", ops.relu6(ops.add(x, 3.0)))
        return ops.multiply(shifted, 1.0 / 6.0)


@keras.saving.register_keras_serializable(package="tfcomp")
class QuantSELU(_QuantActivationSteps):
    """``keras.layers.Activation("selu")`` with 8-bit quantizers on each
    tensor of its TFLite form (GREATER, MUL, EXP, SUB, MUL, SELECT_V2; see
    the module doc).

    Args:
        momentum: EMA momentum of the steps' ranges.
        **kwargs: base layer arguments.

    Example:
        >>> y = QuantSELU()(x)
    """

    _ACTIVATION = "selu"
    _STEPS = {"scaled": True, "exp": False, "expm1": True,
              "negative": True}

    @staticmethod
    def _forward(x, q):
        pos = q("scaled", ops.multiply(x, _SELU_SCALE))
        e = q("exp", ops.exp(ops.minimum(x, 0.0)))
        em1 = q("expm1", ops.subtract(e, 1.0))
        neg = q("negative", ops.multiply(
            em1, _SELU_SCALE * _SELU_ALPHA))
        return ops.where(ops.greater(x, 0.0), pos, neg)


@keras.saving.register_keras_serializable(package="tfcomp")
class QuantELU(_QuantActivationSteps):
    """``keras.layers.ELU(alpha)`` / ``Activation("elu")`` written as
    ``relu(x) + alpha * (exp(min(x, 0)) - 1)`` with 8-bit quantizers on
    ``relu(x)``, ``exp``, ``exp - 1`` and the negative part: TFLite's ELU builtin has
    no int8 kernel in the converter (post-training int8 leaves it float),
    while RELU, MINIMUM, EXP, SUB, MUL and ADD are all int8.

    Args:
        alpha: ELU's negative-side scale (Keras' default 1.0).
        momentum: EMA momentum of the steps' ranges.
        **kwargs: base layer arguments.

    Example:
        >>> y = QuantELU(alpha=0.5)(x)   # == keras.layers.ELU(0.5)(x)
    """

    _ACTIVATION = "elu"
    _STEPS = {"positive": False, "exp": False, "expm1": True,
              "negative": True}

    def __init__(self, alpha=1.0, momentum=0.99, **kwargs):
        super().__init__(momentum=momentum, **kwargs)
        self.alpha = float(alpha)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha}

    def _forward(self, x, q):
        e = q("exp", ops.exp(ops.minimum(x, 0.0)))
        em1 = q("expm1", ops.subtract(e, 1.0))
        neg = q("negative", ops.multiply(em1, self.alpha))
        # relu(x) + negative part, not a SELECT_V2: int8 SELECT_V2 needs
        # one scale on both branches, ADD rescales each input
        return ops.add(q("positive", ops.relu(x)), neg)

    def plain_layer(self, name: str):
        if self.alpha == 1.0:
            return super().plain_layer(name)
        return keras.layers.ELU(self.alpha, name=name,
                                dtype=self.dtype_policy)


#: The quantized element-wise layers (all QuantSteps layers).
QUANT_ELEMENTWISE_LAYERS = (QuantAverage, QuantHardSigmoid, QuantSELU,
                            QuantELU)
_ACTIVATIONS = {"hard_sigmoid": QuantHardSigmoid, "selu": QuantSELU,
                "elu": QuantELU}
#: The element-wise activations among them (one input: a table per code).
QUANT_STEP_ACTIVATIONS = tuple(_ACTIVATIONS.values())


def quant_activation_class(name: str):
    """The quantized Activation layer class of activation ``name`` whose
    int8 TFLite form is several ops ("hard_sigmoid", "selu", "elu"), else
    None.

    Example:
        >>> quant_activation_class("selu")
        <class 'tfcomp.layers.quant_elementwise.QuantSELU'>
    """
    return _ACTIVATIONS.get(name)
