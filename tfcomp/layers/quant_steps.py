"""8-bit quantizers on the intermediate tensors of a layer whose int8
TFLite form is several builtin ops (a normalization's MEAN / RSQRT / MUL,
attention's FULLY_CONNECTED / BATCH_MATMUL / SOFTMAX): the converter needs
a range on each of those tensors to keep them integer.

A layer mixes in :class:`QuantSteps`, names its steps in ``_STEPS``
(``{step: signed}``) and routes each intermediate tensor through
``self._q(step, x, training)``: an EMA-range 8-bit fake quantizer in
training, the quantizer's calibrated grid after ``calibrate``, and the
grid ``export_grids`` gave (``_tfcomp_export``) in the int8 export clone.
``step_values`` (the layer's) gives ``calibrate`` the float intermediates.

Reference: Jacob et al., arXiv:1712.05877 (integer-arithmetic inference,
EMA ranges).

Example:
    >>> class MyLayer(QuantSteps, keras.layers.Layer):
    ...     _STEPS = {"hidden": True}
"""

from __future__ import annotations

import keras
from keras import ops

from tfcomp.layers import quantizers as qz
from tfcomp.layers.quant_base import fake_quant_activation

__all__ = ["QuantSteps", "weight_fake_quant"]


def weight_fake_quant(w):
    """``w`` on a symmetric 8-bit grid (``[-m, m]``, m = max |w|, narrow
    range: codes -127..127, TFLite's int8 weight grid).

    Example:
        >>> weight_fake_quant(layer.kernel)
    """
    m = ops.maximum(ops.stop_gradient(ops.max(ops.abs(w))), 1e-8)
    return keras.quantizers.fake_quant_with_min_max_vars(
        w, -m, m, num_bits=8, narrow_range=True)


class QuantSteps:
    """The step quantizers of a layer (see the module doc). The layer sets
    ``_STEPS``, calls ``_init_steps`` in ``__init__`` and ``_build_steps``
    in ``build``, and may override ``_uses`` (steps it does not have)."""

    _STEPS: dict = {}

    def _init_steps(self, momentum: float) -> None:
        self.momentum = float(momentum)
        self._tfcomp_export = None
        self.step_quantizers = {
            name: qz.ActivationQuantizer(8, signed=signed,
                                         momentum=self.momentum)
            for name, signed in self._STEPS.items() if self._uses(name)}

    def _uses(self, name: str) -> bool:
        """Whether the layer has step ``name`` (all, unless overridden)."""
        return True

    def _build_steps(self) -> None:
        for name, q in self.step_quantizers.items():
            q.build(self, name)

    def _q(self, name, x, training):
        if name not in self.step_quantizers:
            return x
        if self._tfcomp_export is not None:
            return fake_quant_activation(x, *self._tfcomp_export[name])
        return self.step_quantizers[name](x, training=bool(training))

    def export_grids(self) -> dict:
        """``{step: (scale, zero point, 8)}`` of every step quantizer (what
        int8 export fake-quantizes with).

        Example:
            >>> ln.export_grids()["mean"]
        """
        return {name: (*q.numpy_grid(), 8)
                for name, q in self.step_quantizers.items()}
