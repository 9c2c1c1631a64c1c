"""Binary (XNOR-Net style) convolution and dense layers.

The layer keeps a latent float kernel ``w``; the forward pass computes ``(x
* sign(w)) * alpha`` (equal to ``x * (alpha * sign(w))``, XNOR-Net's order,
which keeps binary sums exact in float32) with ``alpha = mean |w|`` per
output channel (XNOR-Net's optimal scaling), ``sign(0) = +1``. The gradient
is the straight-through estimator of Courbariaux et al. / XNOR-Net: it
passes to ``w`` only where ``|w| <= 1`` (the derivative of ``clip(w, -1,
1)``); ``alpha`` is treated as a constant in the backward pass (XNOR-Net
adds a ``1/n`` term through it, negligible for kernels of more than a few
weights). With ``binary_activations=True`` the layer's input is binarized
the same way (``sign`` forward, STE inside ``[-1, 1]``), without XNOR-Net's
activation scaling matrix ``K`` (as in BNN / BENN's binary members; the per-
channel weight scale and the following BatchNormalization absorb the
magnitude). Zero padding of a binarized input pads with 0, as every
framework does.

Reference: Rastegari et al., "XNOR-Net", ECCV 2016, arXiv 1603.05279;
Courbariaux et al., "Binarized Neural Networks", arXiv 1602.02830.

Example:
    >>> conv = BinaryConv2D(16, 3, padding="same", binary_activations=True)
    >>> y = conv(np.ones((1, 8, 8, 3), "float32"))
    >>> np.unique(np.abs(conv.binarized_kernel())[..., 0]).size
    1
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

__all__ = ["BinaryConv2D", "BinaryDense", "ste_sign"]


def ste_sign(x):
    """``sign(x)`` (``+1`` at 0) forward; gradient ``1`` inside ``[-1, 1]``,
    ``0`` outside.

    Example:
        >>> ste_sign(keras.ops.convert_to_tensor([-2.0, 0.0, 0.3]))
    """
    x = ops.convert_to_tensor(x)
    one = ops.ones_like(x)
    s = ops.where(x >= 0, one, -one)
    c = ops.clip(x, -1.0, 1.0)
    return c + ops.stop_gradient(s - c)


class _BinaryMixin:
    """The binarized kernel and the forward pass, shared by both layers."""

    _reduce_axes: tuple = ()

    def _alpha(self, w):
        return ops.stop_gradient(ops.mean(ops.abs(w), axis=self._reduce_axes,
                                          keepdims=True))

    def _scale_output(self, y):
        # (x * sign(w)) * alpha: the binary sums stay exact integers in
        # float32 (a zero stays 0 for sign()), then one scale per channel
        a = ops.reshape(self._alpha(self.kernel), (-1,))
        if self.data_format == "channels_first":
            a = ops.reshape(a, (1, -1) + (1,) * (len(y.shape) - 2))
        return y * ops.cast(a, y.dtype)

    def binarized_kernel(self) -> np.ndarray:
        """The effective kernel ``alpha * sign(w)`` as a numpy array."""
        w = keras.ops.convert_to_numpy(self.kernel).astype(np.float32)
        return np.where(w >= 0, 1.0, -1.0).astype(np.float32) * \
            self.alpha()

    def alpha(self) -> np.ndarray:
        """The per-output-channel scale ``mean |w|`` (kernel-shaped
        broadcastable)."""
        w = keras.ops.convert_to_numpy(self.kernel).astype(np.float32)
        return np.abs(w).mean(axis=self._reduce_axes, keepdims=True)

    def sign_codes(self) -> np.ndarray:
        """The kernel's signs as int8 in ``{-1, +1}``."""
        w = keras.ops.convert_to_numpy(self.kernel)
        return np.where(w >= 0, 1, -1).astype(np.int8)

    def _forward(self, inputs, op):
        x = ste_sign(inputs) if self.binary_activations else inputs
        y = self._scale_output(op(x, ste_sign(self.kernel)))
        if self.use_bias:
            if self.data_format == "channels_first":
                y = ops.add(y, ops.reshape(
                    self.bias, (1, -1) + (1,) * (len(y.shape) - 2)))
            else:
                y = ops.add(y, self.bias)
        if self.activation is not None:
            y = self.activation(y)
        return y


@keras.saving.register_keras_serializable(package="tfcomp")
class BinaryConv2D(_BinaryMixin, keras.layers.Conv2D):
    """Conv2D with a binarized kernel ``alpha * sign(w)`` (XNOR-Net).

    Args:
        filters, kernel_size, ...: as ``keras.layers.Conv2D`` (``groups``
            is not supported).
        binary_activations: binarize the input too (``sign``, STE).

    Example:
        >>> BinaryConv2D(8, 3, padding="same", use_bias=False)
    """

    _reduce_axes = (0, 1, 2)

    def __init__(self, filters, kernel_size, binary_activations: bool = False,
                 **kwargs):
        super().__init__(filters, kernel_size, **kwargs)
        if int(getattr(self, "groups", 1)) != 1:
            raise ValueError(f"BinaryConv2D supports groups=1. Received: "
                             f"groups={self.groups}")
        if not isinstance(binary_activations, bool):
            raise TypeError(f"binary_activations must be a bool. Received: "
                            f"binary_activations={binary_activations!r}")
        self.binary_activations = binary_activations

    def call(self, inputs):
        return self._forward(inputs, lambda x, k: ops.conv(
            x, k, strides=self.strides, padding=self.padding,
            data_format=self.data_format, dilation_rate=self.dilation_rate))

    def get_config(self) -> dict:
        return {**super().get_config(),
                "binary_activations": self.binary_activations}


@keras.saving.register_keras_serializable(package="tfcomp")
class BinaryDense(_BinaryMixin, keras.layers.Dense):
    """Dense with a binarized kernel ``alpha * sign(w)`` (XNOR-Net).

    Args:
        units, ...: as ``keras.layers.Dense``.
        binary_activations: binarize the input too (``sign``, STE).

    Example:
        >>> BinaryDense(10, binary_activations=True)
    """

    _reduce_axes = (0,)
    data_format = "channels_last"

    def __init__(self, units, binary_activations: bool = False, **kwargs):
        super().__init__(units, **kwargs)
        if not isinstance(binary_activations, bool):
            raise TypeError(f"binary_activations must be a bool. Received: "
                            f"binary_activations={binary_activations!r}")
        self.binary_activations = binary_activations

    def build(self, input_shape):
        if len(input_shape) != 2:
            raise ValueError(f"BinaryDense takes (batch, features) inputs. "
                             f"Received: input_shape={tuple(input_shape)}")
        super().build(input_shape)

    def call(self, inputs, training=None):
        return self._forward(inputs, ops.matmul)

    def get_config(self) -> dict:
        return {**super().get_config(),
                "binary_activations": self.binary_activations}
