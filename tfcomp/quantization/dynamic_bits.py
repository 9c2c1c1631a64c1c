"""Bit-widths of a QAT model as run-time variables.

A bit-width search (HAQ) trains and evaluates hundreds of policies. Built
with ``quantize_model`` each policy is a new model, and TensorFlow traces
its training and inference graphs again: on a CPU that costs more than the
short fine-tune itself. ``make_bits_dynamic`` turns the bit-widths of one
QAT model into variables instead; ``set_policy`` then reconfigures it in
place and the traced graphs are reused.

For a given policy the dynamic model computes what
``quantize_model(model, bits=policy)`` computes: the same quantizers and
grids (the fused FakeQuant op, which takes the bit-width as a constant, is
picked per bit-width at run time), and an input quantizer shares its 8-bit
observer's grid exactly while its bits equal the observer's
(``ActivationQuantizer.share_range``). Eager outputs are identical
(tested). Traced graphs of either model differ from eager execution by
the float round-off of fused kernels, which at 2-4 bits flips some codes
at rounding boundaries: single evaluations after a short fine-tune then
differ by up to about a point of accuracy, in both directions.
The variables are search state, not layer weights: to keep or export a
policy, rebuild it with ``quantize_model(model, bits=dyn.policy())``.

Example:
    >>> qat = quantize_model(model, bits=8)
    >>> dyn = make_bits_dynamic(qat)
    >>> initial = qat.get_weights()
    >>> for policy in policies:
    ...     qat.set_weights(initial)   # weights, ranges, "seen" flags
    ...     dyn.set_policy(policy)
    ...     calibrate(qat, x_cal)
    ...     qat.fit(x, y, epochs=1)    # traced once, reused
"""

from __future__ import annotations

import keras

from tfcomp.layers import QUANT_WEIGHT_LAYERS
from tfcomp.layers import quantizers as qz
from tfcomp.quantization.quantize import input_observers, quantize_model

__all__ = ["DynamicBits", "PolicyModels", "make_bits_dynamic"]


class DynamicBits:
    """Sets the ``(w_bits, a_bits)`` of a QAT model's layers in place.

    Created by :func:`make_bits_dynamic`.

    Attributes:
        model: the QAT model.
        layers: names of the layers whose bits can change.
    """

    def __init__(self, model, layers: dict):
        self.model = model
        self._layers = layers

    @property
    def layers(self) -> list:
        return list(self._layers)

    def policy(self) -> dict:
        """``{layer: (w_bits, a_bits)}`` now in effect."""
        return {n: (int(lyr.w_bits), int(lyr.a_bits))
                for n, lyr in self._layers.items()}

    def set_policy(self, bits: dict) -> None:
        """Sets ``{layer: (w_bits, a_bits)}`` (layers not listed keep theirs).

        The weight quantizers' clip ratios (KL at <= 4 bits) are refreshed
        from the current kernels, as ``quantize_model`` does; activation
        ranges need ``calibrate`` (or training) afterwards.

        Raises:
            ValueError: an unknown layer or bits outside [2, 8].
        """
        if not isinstance(bits, dict):
            raise ValueError("bits must be a {layer: (w_bits, a_bits)} dict."
                             f" Received: {type(bits).__name__}")
        unknown = sorted(set(bits) - set(self._layers))
        if unknown:
            raise ValueError(
                f"Layers {unknown} have no dynamic bit-widths in model "
                f"{self.model.name!r}. Known: {self.layers}")
        checked = {}
        for name, wa in bits.items():
            if not (isinstance(wa, (tuple, list)) and len(wa) == 2):
                raise ValueError(
                    f"bits of layer {name!r} must be a (w_bits, a_bits) "
                    f"pair. Received: {wa!r}")
            w, a = (qz.check_bits(v, f"bits of layer {name!r}",
                                  allow_float=False) for v in wa)
            for v in (w, a):
                if v < 2:
                    raise ValueError(
                        f"Dynamic bit-widths must be in [2, 8]. Received: "
                        f"{(w, a)} for layer {name!r}")
            checked[name] = (w, a)
        for name, (w, a) in checked.items():
            layer = self._layers[name]
            layer.weight_quantizer.set_bits(w)
            if layer.input_quantizer is not None:
                layer.input_quantizer.set_bits(a)
            layer.w_bits, layer.a_bits = w, a
            layer.refresh_weight_quantizer()
        # the deprecated attribute (quantization_report() reads the layers)
        report = getattr(self.model, "quantization_report", None)
        if report is not None:
            report.quantized.update(checked)


def make_bits_dynamic(model) -> DynamicBits:
    """Makes the bit-widths of a QAT model's quantized conv / dense layers
    run-time variables (in place; see the module doc).

    Call it before the model's first ``fit`` / ``predict``: graphs traced
    earlier keep the static bits.

    Args:
        model: a model from ``quantize_model`` with linear (symmetric)
            weight quantizers. Layers kept float (32 bits) stay float.

    Returns:
        A :class:`DynamicBits` controller.

    Raises:
        ValueError: the model has no quantized conv / dense layer, or a
            layer is at 1 bit (dynamic bit-widths are 2-8).
        TypeError: k-means weight quantizers (their codebook size depends
            on the bits).

    Example:
        >>> dyn = make_bits_dynamic(quantize_model(model, bits=8))
        >>> dyn.set_policy({"s1b1_conv1": (4, 3)})
    """
    sources = {layer.name: obs.quantizer
               for layer, obs in input_observers(model)}
    layers = {}
    for layer in model.layers:
        if not isinstance(layer, QUANT_WEIGHT_LAYERS):
            continue
        wq = getattr(layer, "weight_quantizer", None)
        iq = getattr(layer, "input_quantizer", None)
        if wq is None:
            continue
        wq.enable_dynamic_bits()
        if iq is not None:  # None: an Embedding (integer ids, a_bits noted)
            iq.enable_dynamic_bits(range_source=sources.get(layer.name))
        layers[layer.name] = layer
    if not layers:
        raise ValueError(
            f"Model {model.name!r} has no quantized conv / dense layer "
            "(quantize it with quantize_model first).")
    return DynamicBits(model, layers)


class PolicyModels:
    """The QAT model of one bit policy after another, from one traced graph:
    the first from ``quantize_model`` (then ``compile_fn(q)`` and its
    optimizer built), made bit-dynamic; each later policy restores its
    initial weights and optimizer state and sets the bits in place. A
    model the dynamic bits do not cover (k-means weights, 1 bit) is
    rebuilt and compiled per policy. HAQ's ``reuse_graph`` and DNAS's
    ``select_best`` train their candidates on it.

    Example:
        >>> models = PolicyModels(model, lambda q: q.compile("sgd", loss))
        >>> for policy in policies:
        ...     q = models.model_for(policy)   # calibrate / fit it
    """

    def __init__(self, model, compile_fn):
        self.model, self.compile_fn = model, compile_fn
        self._state = None  # (q, DynamicBits, weights, optimizer state)
        self._dynamic = True

    @property
    def shared(self):
        """The reconfigured model (None before the first, or when every
        policy gets a new one)."""
        return self._state[0] if self._state else None

    def _fresh(self, bits):
        q = quantize_model(self.model, bits=bits)
        self.compile_fn(q)
        return q

    def model_for(self, bits: dict):
        """The compiled QAT model of ``bits`` (``{layer: (w, a)}``), at the
        initial weights with a fresh optimizer state."""
        if not self._dynamic:
            return self._fresh(bits)
        if self._state is None:
            q = quantize_model(self.model, bits=bits)
            try:
                dyn = make_bits_dynamic(q)
            except (TypeError, ValueError):
                self._dynamic = False
                self.compile_fn(q)
                return q
            weights = q.get_weights()  # before calibration: ranges unseen
            self.compile_fn(q)
            q.optimizer.build(q.trainable_variables)
            self._state = (q, dyn, weights, [
                keras.ops.convert_to_numpy(v) for v in q.optimizer.variables])
            return q
        q, dyn, weights, _ = self._state
        q.set_weights(weights)
        dyn.set_policy(bits)  # also refreshes the weight clip ratios
        self.reset_optimizer()
        return q

    def reset_optimizer(self) -> None:
        """The shared model's optimizer back to its fresh state (without
        compiling again: no retracing)."""
        if self._state:
            for v, value in zip(self._state[0].optimizer.variables,
                                self._state[3]):
                v.assign(value)
