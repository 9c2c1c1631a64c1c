"""Quantizer base classes, the bit-width check and the rounding helpers.

A quantizer holds configuration only; ``build(layer, ...)`` creates its
state as variables of the layer that owns it.

Example:
    >>> from tfcomp.layers.quantizers.base import check_bits
    >>> check_bits(4, "w_bits")
    4
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

__all__ = ["FLOAT_BITS", "Quantizer", "WeightQuantizer", "check_bits"]

FLOAT_BITS = 32
_EPS = 1e-8


def check_bits(bits, name: str = "bits", allow_float: bool = True) -> int:
    """Validates a bit-width: an integer in [1, 8], or 32 (float).

    Args:
        bits: the value to check.
        name: argument name used in the error message.
        allow_float: whether 32 (no quantization) is accepted.

    Returns:
        ``int(bits)``.

    Example:
        >>> check_bits(4, "w_bits")
        4
    """
    ok = isinstance(bits, (int, np.integer)) and not isinstance(bits, bool)
    if ok:
        b = int(bits)
        if 1 <= b <= 8 or (allow_float and b == FLOAT_BITS):
            return b
    allowed = "[1, 8] or 32 (float)" if allow_float else "[1, 8]"
    raise ValueError(
        f"{name} must be an integer in {allowed}. Received: {name}={bits!r}")


def _floor_round(x):
    """Round half up, as TensorFlow's FakeQuant and TFLite kernels do."""
    return ops.floor(x + 0.5)


def _ste(x, q):
    """Forward exactly ``q``, backward identity w.r.t. ``x``."""
    return ops.stop_gradient(q) + (x - ops.stop_gradient(x))


class Quantizer:
    """Base of all tfcomp quantizers: configuration plus ``build``/``call``.

    Subclasses set ``bits`` and implement ``build`` and ``__call__``.

    Example:
        >>> q = SymmetricQuantizer(bits=4)
        >>> SymmetricQuantizer.from_config(q.get_config()).bits
        4
    """

    def __init__(self, bits: int = 8):
        self.bits = check_bits(bits, "bits", allow_float=False)
        self._layer = None
        self._prefix = None
        self._bits_var = None

    # -- bit-widths that change without rebuilding the graph (searches) ----
    @property
    def dynamic(self) -> bool:
        """Whether the bit-width is read from a variable at run time."""
        return self._bits_var is not None

    def enable_dynamic_bits(self) -> None:
        """Reads the bit-width from a variable from now on, so that
        ``set_bits`` changes what an already traced graph computes (a search
        then trains many policies with one traced model). Needs a built
        quantizer and ``bits >= 2``. The variable is search state only: it
        is not a layer weight and is not saved.

        Example:
            >>> layer.input_quantizer.enable_dynamic_bits()
            >>> layer.input_quantizer.set_bits(3)
        """
        if not self.built:
            raise ValueError(f"{self!r} must be built before its bits can be "
                             "made dynamic.")
        if self._bits_var is None:
            self._check_dynamic_bits(self.bits)
            self._bits_var = keras.Variable(
                float(self.bits), trainable=False, dtype="float32",
                name=f"{self._prefix}_dynamic_bits")

    def _check_dynamic_bits(self, bits: int) -> None:
        if bits < 2:
            raise ValueError(
                f"Dynamic bit-widths must be in [2, 8] ({type(self).__name__}"
                f" of layer {getattr(self._layer, 'name', None)!r}). "
                f"Received: bits={bits}")

    def set_bits(self, bits: int) -> None:
        """Changes the bit-width of a quantizer made dynamic by
        ``enable_dynamic_bits`` (Python attribute and variable)."""
        if self._bits_var is None:
            raise ValueError(
                f"{self!r} has static bits; call enable_dynamic_bits() "
                "first (or rebuild the model with quantize_model).")
        b = check_bits(bits, "bits", allow_float=False)
        self._check_dynamic_bits(b)
        self.bits = b
        self._bits_var.assign(float(b))

    @property
    def built(self) -> bool:
        return self._layer is not None

    def get_config(self) -> dict:
        return {"bits": self.bits}

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def with_bits(self, bits: int):
        """An unbuilt copy of this quantizer at another bit-width."""
        cfg = self.get_config()
        cfg["bits"] = bits
        return type(self).from_config(cfg)

    def copy(self):
        """An unbuilt copy with the same configuration."""
        return type(self).from_config(self.get_config())

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other) -> bool:
        return (type(self) is type(other)
                and self.get_config() == other.get_config())

    def __hash__(self):  # configuration objects; identity hashing is fine
        return id(self)


class WeightQuantizer(Quantizer):
    """Base of weight quantizers.

    ``build(layer, kernel_shape, reduce_axes, name)`` creates the state on
    ``layer``; ``reduce_axes`` are the kernel axes that a per-channel scale
    reduces over (all but the output-channel axes).
    """

    def build(self, layer, kernel_shape, reduce_axes, name: str = "kernel"):
        self._layer = layer
        self._prefix = name
        self._kernel_shape = tuple(int(d) for d in kernel_shape)
        self._reduce_axes = tuple(int(a) for a in reduce_axes)

    def refresh(self, kernel) -> None:
        """Recomputes data-dependent state (clip ratio, centroids) from a
        kernel value; a no-op for quantizers without such state."""

    def integer_codes(self, kernel):
        """``(codes, scale)`` with ``codes * scale`` equal to the quantized
        kernel; ``scale`` broadcasts against ``codes``. numpy in, numpy out.
        """
        raise NotImplementedError

    def channel_scale(self, kernel):
        """The per-output-channel scale of ``integer_codes`` as a tensor
        (keepdims layout, ``keras.ops``); used to put the bias on the
        ``s_in * s_w`` accumulator grid."""
        raise NotImplementedError
