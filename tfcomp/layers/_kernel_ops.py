"""The forward op of each kernel layer family, shared by the
quantization-aware and the DNAS mixed layers.

Example:
    >>> class MyQuantConv(ConvOp, QuantMixin, keras.layers.Conv2D): ...
"""

from __future__ import annotations

from keras import ops

__all__ = ["ConvOp", "ConvTransposeOp", "DenseOp", "DepthwiseOp", "EinsumOp",
           "causal_pad", "dilated_as_batches", "parse_dense_equation",
           "undilated"]


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


def _phase_plan(n: int, k: int, r: int, padding: str) -> tuple:
    """``(out, per_phase, pad_before, pad_after)`` of one spatial axis of
    a stride-1 convolution with kernel ``k`` at dilation ``r``."""
    if padding == "same":
        out, before = n, (k - 1) * r // 2
    else:
        out, before = n - (k - 1) * r, 0
    q = -(-out // r)
    return out, q, before, r * (q + k - 1) - n - before


def dilated_as_batches(x, rate, kernel_size, padding: str, conv):
    """A stride-1 dilated 2D convolution (channels last, static height and
    width) as ``conv`` (valid, undilated) on the ``rate[0] * rate[1]``
    phase sub-images of the padded input stacked on the batch axis.

    Output position ``q * r + s`` reads input taps ``(q + i) * r + s``: the
    undilated kernel run on the phase-``s`` sub-image ``x[s::r]``. Written
    with PAD / RESHAPE / TRANSPOSE / STRIDED_SLICE around one CONV_2D, every
    op of it is int8 in a TFLite file, where TF's own lowering
    (SPACE_TO_BATCH_ND -> CONV_2D -> BATCH_TO_SPACE_ND, then the bias ADD)
    leaves the convolution float for a dynamic batch. ``conv`` should add
    the bias and the (element-wise) activation: they commute with the
    rearrangement, and then the int8 convolution has its output range.

    Example:
        >>> y = dilated_as_batches(x, (6, 6), (3, 3), "same",
        ...                        lambda b: ops.conv(b, k, padding="valid"))
    """
    (rh, rw), (kh, kw) = rate, kernel_size
    h, w, c = x.shape[1:]
    ho, qh, bh, ah = _phase_plan(int(h), int(kh), int(rh), padding)
    wo, qw, bw, aw = _phase_plan(int(w), int(kw), int(rw), padding)
    hq, wq = qh + kh - 1, qw + kw - 1
    x = ops.pad(x, ((0, 0), (bh, ah), (bw, aw), (0, 0)))
    x = ops.reshape(x, (-1, hq, rh, wq, rw, c))
    x = ops.transpose(x, (2, 4, 0, 1, 3, 5))
    y = conv(ops.reshape(x, (-1, hq, wq, c)))
    co = y.shape[-1]
    y = ops.reshape(y, (rh, rw, -1, qh, qw, co))
    y = ops.transpose(y, (2, 3, 0, 4, 1, 5))
    y = ops.reshape(y, (-1, qh * rh, qw * rw, co))
    return y[:, :ho, :wo, :]


class ConvOp:
    """``ops.conv`` with the layer's strides, padding and dilation (N-d,
    grouped convolutions included; Conv1D's ``"causal"`` padding too;
    ``dilation_rate`` overrides the layer's, e.g. 1 for a kernel whose
    dilation is already zero taps: ``undilated``)."""

    _kernel_reduce_axes = (0, 1, 2)

    def _op(self, x, k, dilation_rate=None, padding=None):
        padding = padding or self.padding
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

    def _op(self, x, k, dilation_rate=None, padding=None):
        return ops.depthwise_conv(x, k, strides=self.strides,
                                  padding=padding or self.padding,
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
