"""The forward op of each kernel layer family, shared by the
quantization-aware and the DNAS mixed layers.

Example:
    >>> class MyQuantConv(ConvOp, QuantMixin, keras.layers.Conv2D): ...
"""

from __future__ import annotations

from keras import ops

__all__ = ["ConvOp", "ConvTransposeOp", "DenseOp", "DepthwiseOp", "EinsumOp",
           "causal_pad", "parse_dense_equation", "undilated"]


def causal_pad(x, layer):
    """``x`` left-padded along the (single) spatial axis as Keras' Conv1D
    does for ``padding="causal"``."""
    n = layer.dilation_rate[0] * (layer.kernel_size[0] - 1)
    if layer.data_format == "channels_last":
        return ops.pad(x, ((0, 0), (n, 0), (0, 0)))
    return ops.pad(x, ((0, 0), (0, 0), (n, 0)))


def undilated(kernel, rate: int, axis: int = 0):
    """A kernel with ``rate - 1`` zero taps between its taps along spatial
    ``axis``: the same convolution without dilation. TF lowers a dilated
    convolution to SPACE_TO_BATCH_ND / BATCH_TO_SPACE_ND around it, which
    the int8 converter leaves float; zero weights are exact int8 codes."""
    rate, n = int(rate), int(kernel.shape[axis])
    if rate == 1:
        return kernel
    shape = list(kernel.shape)
    shape[axis] = rate - 1
    zeros = ops.zeros(tuple(shape), kernel.dtype)
    parts = []
    for i in range(n):
        parts.append(kernel[(slice(None),) * axis + (slice(i, i + 1),)])
        if i < n - 1:
            parts.append(zeros)
    return ops.concatenate(parts, axis=axis)


class ConvOp:
    """``ops.conv`` with the layer's strides, padding and dilation (N-d,
    grouped convolutions included; Conv1D's ``"causal"`` padding too;
    ``dilation_rate`` overrides the layer's, e.g. 1 for a kernel whose
    dilation is already zero taps: ``undilated``)."""

    _kernel_reduce_axes = (0, 1, 2)

    def _op(self, x, k, dilation_rate=None):
        padding = self.padding
        if padding == "causal":
            x, padding = causal_pad(x, self), "valid"
        return ops.conv(x, k, strides=self.strides, padding=padding,
                        data_format=self.data_format,
                        dilation_rate=dilation_rate or self.dilation_rate)


class ConvTransposeOp:
    """``ops.conv_transpose``; the kernel is ``(..., out, in)``, so the
    per-channel scale reduces over every axis but the second to last."""

    def _op(self, x, k):
        return ops.conv_transpose(
            x, k, strides=self.strides, padding=self.padding,
            output_padding=self.output_padding, data_format=self.data_format,
            dilation_rate=self.dilation_rate)


class DepthwiseOp:
    """``ops.depthwise_conv``; the per-channel scale is per output channel
    (``in_channel * depth_multiplier``); ``dilation_rate`` as ``ConvOp``'s."""

    _kernel_reduce_axes = (0, 1)

    def _op(self, x, k, dilation_rate=None):
        return ops.depthwise_conv(x, k, strides=self.strides,
                                  padding=self.padding,
                                  dilation_rate=dilation_rate
                                  or self.dilation_rate,
                                  data_format=self.data_format)


class DenseOp:
    """``ops.matmul`` of the inputs and the kernel."""

    _kernel_reduce_axes = (0,)

    def _op(self, x, k):
        return ops.matmul(x, k)


class EinsumOp:
    """``ops.einsum`` with the layer's equation."""

    def _op(self, x, k):
        return ops.einsum(self.equation, x, k)


def parse_dense_equation(equation: str, bias_axes=None):
    """``(n_contract, n_out)`` for a "dense-like" EinsumDense equation, else
    None.

    Dense-like: the input is ``batch + contract`` (``...`` allowed as
    batch), the kernel ``contract + out`` and the output ``batch + out``,
    each in that order, and ``bias_axes`` is empty or exactly ``out``. Such
    a layer is a Dense over the flattened contract axes (every projection of
    ``MultiHeadAttention`` is one: ``"abc,cde->abde"``, ``"abcd,cde->abe"``).

    Example:
        >>> parse_dense_equation("abc,cde->abde", "de")
        (1, 2)
    """
    try:
        lhs, out = equation.replace(" ", "").split("->")
        inp, ker = lhs.split(",")
    except ValueError:
        return None
    inp, out = inp.replace("...", ""), out.replace("...", "")
    if "." in inp + out + ker:
        return None
    contract = "".join(c for c in ker if c in inp and c not in out)
    kout = "".join(c for c in ker if c in out)
    if not contract or not kout or ker != contract + kout:
        return None
    if not inp.endswith(contract) or not out.endswith(kout):
        return None
    batch = inp[:len(inp) - len(contract)]
    if out[:len(out) - len(kout)] != batch or set(batch) & set(ker):
        return None
    if bias_axes and bias_axes != kout:
        return None
    return len(contract), len(kout)
