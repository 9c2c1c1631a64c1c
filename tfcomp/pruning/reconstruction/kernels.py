"""Consumer layers seen as one linear map of their input patches.

Reconstruction works on a *dense view* of a consumer's kernel: ``(K, P, n)``
with ``K`` kernel taps, ``P`` input channels (all of them) and ``n``
outputs, so that ``y = sum_{k,p} X[m, k, p] W[k, p, n] + b`` at every
sampled output location. This module maps each supported layer to and
from that view:

- ``Dense``, ``Conv1D`` / ``Conv2D`` / ``Conv3D``: the kernel reshaped
  (``(*kernel_size, P, n)`` -> ``(K, P, n)``).
- grouped convolutions (``groups=g``): the ``(*kernel_size, P / g, n)``
  kernel expanded block-diagonally to ``(K, P, n)`` (zeros where an output
  does not read an input); :func:`connections` gives the ``(P, n)`` blocks,
  and the least-squares refit solves each block on its own so that the
  refit kernel maps back.
- ``Conv1DTranspose`` / ``Conv2DTranspose`` / ``Conv3DTranspose``: the
  ``(*kernel_size, n, P)`` kernel with its last two axes swapped; the
  patches are gathered by Keras' own ``keras.ops.conv_transpose`` run with
  an identity kernel (:func:`identity_patches`), so strides, padding,
  ``output_padding`` and dilation are exactly the layer's.

- ``SeparableConv1D`` / ``SeparableConv2D``: the pointwise kernel over the
  depthwise outputs (``P * depth_multiplier`` of them, channel ``c``'s at
  ``c * dm .. c * dm + dm - 1``), as AMC reconstructs MobileNet's pointwise
  convolutions: the depthwise kernel is kept, its output at each sampled
  location is the "patch" (one tap) and the pointwise kernel is refit on
  the kept channels' outputs (:func:`kernel_variable`: the variable the
  dense view maps to).

Depthwise convolutions are not channel consumers of this kind
(:func:`consumer_kind` says why); ``channels_first`` is refused.

Reference: He, Zhang & Sun, arXiv:1707.06168 (the per-layer step).

Example:
    >>> w, b = layer_kernel(model.get_layer("up1"))   # Conv2DTranspose
    >>> layer.kernel.assign(from_dense(layer, w))
"""

from __future__ import annotations

import keras
import numpy as np

__all__ = ["connections", "consumer_kind", "dense_shape", "expand_rows",
           "from_dense", "identity_patches", "input_channels", "kernel_rows",
           "kernel_variable", "layer_kernel", "output_positions", "to_dense",
           "depthwise_outputs"]

_TRANSPOSED = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
               keras.layers.Conv3DTranspose)
_SEPARABLE = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
_SUPPORTED = ("Conv1D, Conv2D, Conv3D (grouped too), Conv1DTranspose, "
              "Conv2DTranspose, Conv3DTranspose, SeparableConv1D, "
              "SeparableConv2D (channels_last) and Dense")


def consumer_kind(layer) -> str:
    """``"conv"`` (Conv1D / Conv2D: patches gathered in numpy), ``"ops"``
    (Conv3D and transposed convolutions: patches through ``keras.ops``),
    ``"separable"`` (the depthwise outputs, through ``keras.ops``) or
    ``"dense"``.

    Raises:
        ValueError: for depthwise convolutions,
            ``channels_first`` layers and any other layer, saying why.

    Example:
        >>> consumer_kind(keras.layers.Dense(4))
        'dense'
    """
    name = getattr(layer, "name", repr(layer))
    if isinstance(layer, keras.layers.TimeDistributed):
        raise ValueError(
            f"Layer {name!r} is a TimeDistributed("
            f"{type(layer.layer).__name__}) consumer: reconstruction does "
            "not fold the time axis into the batch; prune this group with "
            "tfcomp.pruning.make_plan and prune_channels instead.")
    if isinstance(layer, (keras.layers.DepthwiseConv1D,
                          keras.layers.DepthwiseConv2D)):
        raise ValueError(
            f"Layer {name!r} is a depthwise convolution: every output "
            "channel reads only its own input channel, so it is not a "
            "channel consumer. Its channels pass through to the next "
            "pointwise/dense layer; reconstruct that layer instead.")
    if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D,
                          keras.layers.Conv3D) + _TRANSPOSED + _SEPARABLE):
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            raise ValueError(
                f"Layer {name!r} uses data_format={layer.data_format!r}; "
                "reconstruction supports channels_last only.")
        if isinstance(layer, _SEPARABLE):
            return "separable"
        if isinstance(layer, _TRANSPOSED) or isinstance(
                layer, keras.layers.Conv3D):
            return "ops"
        return "conv"
    if isinstance(layer, keras.layers.Dense):
        return "dense"
    raise ValueError(
        f"Layer {name!r} ({type(layer).__name__}) is not supported by "
        f"reconstruction; supported consumers are {_SUPPORTED}.")


def kernel_variable(layer):
    """The variable the dense view maps to: ``kernel``, or a separable
    convolution's ``pointwise_kernel``.

    Example:
        >>> kernel_variable(sep).assign(from_dense(sep, refit))
    """
    return layer.pointwise_kernel if isinstance(layer, _SEPARABLE) \
        else layer.kernel


def _depth_multiplier(layer) -> int:
    """Depthwise outputs per input channel of a separable convolution."""
    return int(layer.depthwise_kernel.shape[-1])


def _groups(layer) -> int:
    """Convolution groups (1 for transposed convolutions, which have none)."""
    if isinstance(layer, _TRANSPOSED):
        return 1
    return int(getattr(layer, "groups", 1) or 1)


def input_channels(layer) -> int:
    """``P``: the input channels of a consumer (all groups).

    Example:
        >>> input_channels(keras.layers.Conv2D(8, 3, groups=2))  # built
    """
    if isinstance(layer, _SEPARABLE):
        return int(layer.depthwise_kernel.shape[-2])
    shape = tuple(layer.kernel.shape)
    if isinstance(layer, _TRANSPOSED):
        return int(shape[-1])
    return int(shape[-2]) * _groups(layer)


def expand_rows(layer, per_row) -> np.ndarray:
    """A per-kernel-row array (the layer's input axis, ``P / groups`` rows
    for a grouped convolution) repeated over the groups, one entry per input
    channel ``P``: the dependency graph's consumer indices are kernel rows,
    and row ``r`` of every group reads input channel ``q * P / g + r``.

    Example:
        >>> expand_rows(grouped_conv, np.array([0, 1]))   # groups=2
        array([0, 1, 0, 1])
    """
    per_row = np.asarray(per_row)
    if isinstance(layer, _SEPARABLE):  # channel c: depthwise outputs c*dm+m
        return np.repeat(per_row, _depth_multiplier(layer))
    g = _groups(layer)
    return np.tile(per_row, g) if g > 1 else per_row


def kernel_rows(layer) -> int:
    """Rows of the kernel's input axis (``P / groups``).

    Example:
        >>> kernel_rows(keras.layers.Conv2D(8, 3, groups=2))  # built, P=6
        3
    """
    g = _groups(layer)
    return input_channels(layer) // g


def dense_shape(layer) -> tuple:
    """The dense view's shape ``(*kernel_size, P, n)`` (``(P, n)`` for
    ``Dense``).

    Example:
        >>> dense_shape(conv_t)     # Conv2DTranspose(8, 3) on 16 channels
        (3, 3, 16, 8)
    """
    shape = tuple(int(d) for d in kernel_variable(layer).shape)
    if isinstance(layer, _TRANSPOSED):
        return shape[:-2] + (shape[-1], shape[-2])
    if isinstance(layer, _SEPARABLE):  # (1.., P * dm, n)
        return shape
    return shape[:-2] + (input_channels(layer), shape[-1])


def connections(layer):
    """``(P, n)`` bool, True where output ``j`` reads input ``p``; None when
    every output reads every input (all but grouped convolutions).

    Example:
        >>> connections(keras.layers.Conv2D(4, 1, groups=2))  # built, 4 in
    """
    g = 1 if isinstance(layer, _SEPARABLE) else _groups(layer)
    if g == 1:
        return None
    p, n = dense_shape(layer)[-2:]
    rows = np.arange(p) // (p // g)
    cols = np.arange(n) // (n // g)
    return rows[:, None] == cols[None, :]


def to_dense(layer, kernel) -> np.ndarray:
    """``kernel`` (in the layer's own layout) in the dense view
    ``(*kernel_size, P, n)``.

    Example:
        >>> w = to_dense(layer, keras.ops.convert_to_numpy(layer.kernel))
    """
    w = np.asarray(kernel, "float32")
    if isinstance(layer, _TRANSPOSED):
        return np.swapaxes(w, -1, -2)
    if isinstance(layer, _SEPARABLE):
        return w
    g = _groups(layer)
    if g == 1:
        return w
    cg, n = w.shape[-2], w.shape[-1]
    og = n // g
    full = np.zeros(w.shape[:-2] + (cg * g, n), "float32")
    for q in range(g):
        full[..., q * cg:(q + 1) * cg, q * og:(q + 1) * og] = \
            w[..., :, q * og:(q + 1) * og]
    return full


def from_dense(layer, dense) -> np.ndarray:
    """The dense view (any shape with the layer's ``(P, n)`` last) back in
    the layer's kernel layout (grouped: the diagonal blocks).

    Example:
        >>> layer.kernel.assign(from_dense(layer, refit_kernel))
    """
    shape = tuple(int(d) for d in kernel_variable(layer).shape)
    w = np.asarray(dense, "float32").reshape(dense_shape(layer))
    if isinstance(layer, _TRANSPOSED):
        return np.swapaxes(w, -1, -2).reshape(shape)
    if isinstance(layer, _SEPARABLE):
        return w.reshape(shape)
    g = _groups(layer)
    if g == 1:
        return w.reshape(shape)
    cg, n = shape[-2], shape[-1]
    og = n // g
    out = np.zeros(shape, "float32")
    for q in range(g):
        out[..., :, q * og:(q + 1) * og] = \
            w[..., q * cg:(q + 1) * cg, q * og:(q + 1) * og]
    return out


def layer_kernel(layer) -> tuple:
    """A consumer's kernel as ``(K, P, n)`` (dense view, taps flattened)
    and its bias (or None), float32 numpy.

    Example:
        >>> w, b = layer_kernel(model.get_layer("s1b1_conv2"))
        >>> w.shape                       # (9, 16, 16)
    """
    consumer_kind(layer)
    if not layer.built:
        raise ValueError(f"Layer {layer.name!r} is not built.")
    w = to_dense(layer, keras.ops.convert_to_numpy(kernel_variable(layer)))
    b = None
    if getattr(layer, "use_bias", False) and layer.bias is not None:
        b = np.asarray(keras.ops.convert_to_numpy(layer.bias), "float32")
    return w.reshape(-1, w.shape[-2], w.shape[-1]), b


def _identity_kernel(layer) -> np.ndarray:
    """A kernel that copies tap ``t`` of input channel ``p`` to output
    channel ``t * P + p`` (the layer's layout: ``(*k, P, K*P)`` for a
    convolution, ``(*k, K*P, P)`` for a transposed one)."""
    ks = tuple(int(k) for k in layer.kernel_size)
    taps = int(np.prod(ks))
    p = input_channels(layer)
    eye = np.zeros((taps, p, taps * p), "float32")
    for t in range(taps):
        eye[t, np.arange(p), t * p + np.arange(p)] = 1.0
    eye = eye.reshape(ks + (p, taps * p))
    if isinstance(layer, _TRANSPOSED):
        eye = np.swapaxes(eye, -1, -2)
    return eye


def output_positions(layer, x_shape) -> int:
    """Number of output positions of a convolution on inputs ``x_shape``.

    Example:
        >>> output_positions(conv_t, (8, 7, 7, 16))    # stride 2, same
        196
    """
    out = layer.compute_output_shape((1,) + tuple(x_shape[1:]))
    return int(np.prod(out[1:-1]))


def identity_patches(layer, x, img, pos,
                     max_floats: int = 16_000_000) -> np.ndarray:
    """Input patches at output locations ``(img, pos)``, through the layer's
    own op.

    Runs ``keras.ops.conv`` / ``keras.ops.conv_transpose`` with the layer's
    strides, padding, dilation (and ``output_padding``) on an identity
    kernel, a few images at a time (at most ``max_floats`` values each),
    and keeps the sampled locations.

    Args:
        layer: a built consumer (:func:`consumer_kind` ``"ops"``).
        x: its input batch ``(N, *spatial, P)``.
        img, pos: image index and row-major flat output position of each
            sample.

    Returns:
        ``(M, K, P)`` float32, so that ``patches @ dense_kernel`` equals the
        layer's pre-activation output at the samples.

    Example:
        >>> pt = identity_patches(conv_t, x_in, img, pos)
    """
    eye = _identity_kernel(layer)
    taps = int(np.prod(layer.kernel_size))
    p = input_channels(layer)
    transposed = isinstance(layer, _TRANSPOSED)
    x = np.asarray(x, "float32")
    img = np.asarray(img, np.int64)
    pos = np.asarray(pos, np.int64)
    per_image = output_positions(layer, x.shape) * taps * p
    step = max(1, int(max_floats) // max(per_image, 1))
    out = np.zeros((len(img), taps, p), "float32")
    for a in range(0, x.shape[0], step):
        sel = np.flatnonzero((img >= a) & (img < a + step))
        if not sel.size:
            continue
        chunk = x[a:a + step]
        if transposed:
            res = keras.ops.conv_transpose(
                chunk, eye, strides=list(layer.strides),
                padding=layer.padding, output_padding=layer.output_padding,
                dilation_rate=layer.dilation_rate,
                data_format="channels_last")
        else:
            res = keras.ops.conv(
                chunk, eye, strides=list(layer.strides),
                padding=layer.padding, dilation_rate=layer.dilation_rate,
                data_format="channels_last")
        res = np.asarray(keras.ops.convert_to_numpy(res), "float32")
        res = res.reshape(res.shape[0], -1, taps, p)
        out[sel] = res[img[sel] - a, pos[sel]]
    return out


def depthwise_outputs(layer, x, img, pos,
                      max_floats: int = 16_000_000) -> np.ndarray:
    """A separable convolution's depthwise outputs at output locations
    ``(img, pos)`` (its strides, padding and dilation, through
    ``keras.ops.depthwise_conv``), a few images at a time.

    Returns:
        ``(M, 1, P * dm)`` float32, so that ``out @ pointwise_kernel`` is
        the layer's pre-activation output there (before its bias).

    Example:
        >>> z = depthwise_outputs(sep, x_in, img, pos)
    """
    dk = np.asarray(keras.ops.convert_to_numpy(layer.depthwise_kernel),
                    "float32")
    width = dk.shape[-2] * dk.shape[-1]
    x = np.asarray(x, "float32")
    img = np.asarray(img, np.int64)
    pos = np.asarray(pos, np.int64)
    per_image = output_positions(layer, x.shape) * width
    step = max(1, int(max_floats) // max(per_image, 1))
    out = np.zeros((len(img), 1, width), "float32")
    for a in range(0, x.shape[0], step):
        sel = np.flatnonzero((img >= a) & (img < a + step))
        if not sel.size:
            continue
        res = keras.ops.depthwise_conv(
            x[a:a + step], dk, strides=tuple(layer.strides),
            padding=layer.padding, dilation_rate=layer.dilation_rate,
            data_format="channels_last")
        res = np.asarray(keras.ops.convert_to_numpy(res), "float32")
        out[sel, 0] = res.reshape(res.shape[0], -1, width)[img[sel] - a,
                                                            pos[sel]]
    return out
