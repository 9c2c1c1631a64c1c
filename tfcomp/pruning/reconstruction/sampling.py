"""Sampling of a consumer layer's input patches and target outputs.

Step 1 of reconstruction-based channel pruning (He, Zhang & Sun 2017): random
output locations per image for convolutions (stride, padding and dilation are
honoured), one row per image (or random positions along extra axes) for
``Dense``. ``X`` has shape ``(M, K, P)`` (``M`` samples, ``K`` kernel taps,
``P`` input positions), ``Y`` is ``(M, n)``, the pre-activation output.

Reference: He, Zhang & Sun, arXiv:1707.06168.

Example:
    >>> s = sample_layer(conv, x_in, samples_per_image=10, seed=0)
    >>> s.x.shape, s.y.shape
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tfcomp.pruning.reconstruction.kernels import (
    connections,
    consumer_kind,
    dense_shape,
    depthwise_outputs,
    identity_patches,
    input_channels,
    kernel_variable,
    layer_kernel,
    output_positions,
    to_dense,
)

__all__ = ["LayerSamples", "sample_layer", "sample_patches"]

# ---------------------------------------------------------------------------
# patch sampling


def _geometry(layer, spatial: tuple) -> tuple:
    """Per spatial dim: (k, stride, dilation, pad_before, out_size)."""
    ks = tuple(layer.kernel_size)
    st = tuple(layer.strides)
    dl = tuple(layer.dilation_rate)
    pad = str(layer.padding).lower()
    dims = []
    for size, k, s, d in zip(spatial, ks, st, dl):
        eff = (k - 1) * d + 1
        if pad == "valid":
            out = (size - eff) // s + 1
            before = 0
        elif pad == "same":
            out = -(-size // s)
            total = max((out - 1) * s + eff - size, 0)
            before = total // 2
        elif pad == "causal":
            before = eff - 1
            out = (size + before - eff) // s + 1
        else:
            raise ValueError(f"Layer {layer.name!r}: unsupported padding "
                             f"{layer.padding!r}.")
        if out < 1:
            raise ValueError(
                f"Layer {layer.name!r}: input spatial size {size} is smaller"
                f" than the kernel's receptive field {eff}.")
        dims.append((k, s, d, before, out))
    return tuple(dims)


def _check_inputs(layer, inputs, kind) -> np.ndarray:
    x = np.asarray(inputs)
    if x.dtype == object or not np.issubdtype(x.dtype, np.number):
        raise TypeError(f"inputs of layer {layer.name!r} must be a numeric "
                        f"array. Received: dtype={x.dtype}")
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(
            f"inputs of layer {layer.name!r} are empty. Received: "
            f"inputs.shape={x.shape}")
    cin = input_channels(layer)
    if kind in ("conv", "ops", "separable"):
        rank = len(layer.kernel_size) + 2
        if x.ndim != rank or x.shape[-1] != cin:
            raise ValueError(
                f"inputs of layer {layer.name!r} must have shape (N, "
                f"{', '.join(['D', 'H', 'W'][3 - (rank - 2):])}, {cin}). "
                f"Received: "
                f"inputs.shape={x.shape}")
    elif x.ndim < 2 or x.shape[-1] != cin:
        raise ValueError(
            f"inputs of layer {layer.name!r} must have shape (N, ..., "
            f"{cin}). Received: inputs.shape={x.shape}")
    return x


def _locations(num_images, num_positions, samples_per_image, rng):
    """(image index, flat output position) pairs, distinct per image."""
    s = min(int(samples_per_image), num_positions)
    if s == num_positions:
        pos = np.tile(np.arange(num_positions), num_images)
    else:
        keys = rng.random((num_images, num_positions))
        pos = np.argpartition(keys, s - 1, axis=1)[:, :s].ravel()
    img = np.repeat(np.arange(num_images), s)
    return img.astype(np.int64), pos.astype(np.int64)


def sample_patches(layer, inputs, samples_per_image: int = 10,
                   seed: int = 0, locations=None) -> tuple:
    """Input patches of a consumer layer at random output locations.

    For a convolution, ``samples_per_image`` distinct output positions are
    drawn per image and the receptive field of each is gathered from the
    zero-padded input (``same`` / ``valid`` / ``causal`` padding, strides
    and dilation as Keras computes them), so that
    ``patches @ kernel + bias`` equals the layer's output there. For
    ``Dense`` on 2-D inputs every row is one sample; on inputs with extra
    axes, positions along them are drawn like output locations.

    Args:
        layer: a built consumer (:func:`~.kernels.consumer_kind`).
        inputs: the layer's input batch, ``(N, H, W, C)`` / ``(N, L, C)``
            / ``(N, ..., C)``.
        samples_per_image: output locations per image (capped at the
            number of output positions).
        seed: seed of the location draw.
        locations: optional ``(image_index, flat_position)`` arrays from an
            earlier call, to gather the same patches from another input
            (e.g. the original network's activations).

    Returns:
        ``(patches, locations)``: ``patches`` is ``(M, K, C)`` float32 with
        ``K`` kernel taps (see :func:`layer_kernel`), ``locations`` the
        ``(image_index, flat_position)`` arrays of the ``M`` samples.

    Raises:
        ValueError: empty inputs, a wrong shape or a depthwise / unsupported
            layer.

    Example:
        >>> p, loc = sample_patches(conv, x_in, samples_per_image=10)
        >>> p_orig, _ = sample_patches(conv, x_orig, locations=loc)
    """
    kind = consumer_kind(layer)
    x = _check_inputs(layer, inputs, kind)
    n = x.shape[0]
    if samples_per_image is None or int(samples_per_image) < 1:
        raise ValueError(f"samples_per_image must be >= 1. Received: "
                         f"samples_per_image={samples_per_image!r}")
    if kind == "dense":
        flat = x.reshape(n, -1, x.shape[-1])
        if locations is None:
            locations = _locations(n, flat.shape[1], samples_per_image,
                                   np.random.default_rng(seed))
        img, pos = locations
        return flat[img, pos][:, None, :].astype("float32"), (img, pos)
    if kind in ("ops", "separable"):  # through keras.ops
        num = output_positions(layer, x.shape)
        if locations is None:
            locations = _locations(n, num, samples_per_image,
                                   np.random.default_rng(seed))
        img, pos = locations
        if img.size and (pos.max() >= num or img.max() >= n):
            raise ValueError(
                f"locations do not fit the inputs of layer {layer.name!r} "
                f"({n} images, {num} output positions).")
        if kind == "separable":
            return depthwise_outputs(layer, x, img, pos), (img, pos)
        return identity_patches(layer, x, img, pos), (img, pos)
    if x.ndim == 3:  # Conv1D: treat as (N, 1, L, C)
        geo = ((1, 1, 1, 0, 1),) + _geometry(layer, x.shape[1:2])
        x = x[:, None]
    else:
        geo = _geometry(layer, x.shape[1:3])
    (kh, sh, dh, ph, oh), (kw, sw, dw, pw, ow) = geo
    if locations is None:
        locations = _locations(n, oh * ow, samples_per_image,
                               np.random.default_rng(seed))
    img, pos = locations
    if img.size and (pos.max() >= oh * ow or img.max() >= n):
        raise ValueError(
            f"locations do not fit the inputs of layer {layer.name!r} "
            f"({n} images, {oh}x{ow} output positions).")
    r0 = (pos // ow) * sh
    c0 = (pos % ow) * sw
    rows = r0[:, None] + np.arange(kh) * dh  # padded coordinates
    cols = c0[:, None] + np.arange(kw) * dw
    need_h = int(rows.max()) + 1 if rows.size else 0
    need_w = int(cols.max()) + 1 if cols.size else 0
    xp = np.pad(x, ((0, 0), (ph, max(need_h - ph - x.shape[1], 0)),
                    (pw, max(need_w - pw - x.shape[2], 0)), (0, 0)))
    patches = xp[img[:, None, None], rows[:, :, None], cols[:, None, :], :]
    return (patches.reshape(len(img), kh * kw, x.shape[-1])
            .astype("float32"), (img, pos))


# ---------------------------------------------------------------------------
# samples


@dataclasses.dataclass
class LayerSamples:
    """Sampled inputs and target outputs of one consumer layer.

    Attributes:
        x: ``(M, K, P)`` input patches (from the network being pruned).
        y: ``(M, n)`` target pre-activation outputs (from the original
            network).
        kernel: ``(K, P, n)`` kernel used for the contributions ``Z_i``
            (the layer's current kernel).
        bias: ``(n,)`` bias or None; when present the selection and refit
            fit an intercept.
        units: ``(P,)`` unit (channel) index of each input position; ``-1``
            marks positions outside the selection (kept and refit, e.g.
            channels of another group in a concatenation).
        layer: the layer name.
        kernel_shape: the shape results are returned in: the dense view
            ``(*kernel_size, P, n)`` (:func:`~.kernels.dense_shape`; the
            layer's own kernel shape except for grouped and transposed
            convolutions, whose kernels map back with
            :func:`~.kernels.from_dense`).
        out_mask: ``(n,)`` bool, outputs to reconstruct (False for output
            channels already removed); None means all.
        connect: ``(P, n)`` bool, True where an output may read an input
            (a grouped convolution's blocks); None means all.

    Example:
        >>> s = sample_layer(layer, x_in, samples_per_image=10)
        >>> s.x.shape, s.y.shape, s.num_units
    """

    x: np.ndarray
    y: np.ndarray
    kernel: np.ndarray
    bias: np.ndarray | None = None
    units: np.ndarray | None = None
    layer: str = ""
    kernel_shape: tuple | None = None
    out_mask: np.ndarray | None = None
    connect: np.ndarray | None = None

    def __post_init__(self):
        self.x = np.asarray(self.x, "float32")
        self.y = np.asarray(self.y, "float32")
        self.kernel = np.asarray(self.kernel, "float32")
        name = self.layer or "<layer>"
        if self.x.ndim == 2:
            self.x = self.x[:, None, :]
        if self.x.ndim != 3:
            raise ValueError(
                f"x of layer {name!r} must be (M, K, P) patches. Received: "
                f"x.shape={self.x.shape}")
        if self.x.shape[0] == 0:
            raise ValueError(f"x of layer {name!r} is empty. Received: "
                             f"x.shape={self.x.shape}")
        if self.kernel.ndim == 2:
            self.kernel = self.kernel[None]
        if self.kernel.ndim != 3:
            self.kernel = self.kernel.reshape(-1, *self.kernel.shape[-2:])
        k, p, n = self.kernel.shape
        if self.x.shape[1:] != (k, p):
            raise ValueError(
                f"x of layer {name!r} has shape {self.x.shape}; the kernel "
                f"needs (M, {k}, {p}).")
        if self.y.ndim != 2 or self.y.shape != (self.x.shape[0], n):
            raise ValueError(
                f"y of layer {name!r} must have shape ({self.x.shape[0]}, "
                f"{n}). Received: y.shape={self.y.shape}")
        if not (np.all(np.isfinite(self.x)) and np.all(np.isfinite(self.y))):
            raise ValueError(f"x / y of layer {name!r} contain NaN or inf.")
        if self.bias is not None:
            self.bias = np.asarray(self.bias, "float32").reshape(n)
        if self.units is None:
            self.units = np.arange(p)
        self.units = np.asarray(self.units, dtype=np.int64).ravel()
        if self.units.shape != (p,):
            raise ValueError(
                f"units of layer {name!r} must have {p} entries (one per "
                f"input position). Received: {self.units.shape[0]}")
        if self.units.max(initial=-1) < 0:
            raise ValueError(f"units of layer {name!r} select no channel.")
        if self.kernel_shape is None:
            self.kernel_shape = self.kernel.shape
        self.kernel_shape = tuple(int(d) for d in self.kernel_shape)
        if self.out_mask is not None:
            self.out_mask = np.asarray(self.out_mask, bool).reshape(n)
        if self.connect is not None:
            self.connect = np.asarray(self.connect, bool).reshape(p, n)

    @property
    def num_units(self) -> int:
        """Number of selectable units (channels)."""
        return int(self.units.max()) + 1

    @property
    def fit_intercept(self) -> bool:
        return self.bias is not None


def sample_layer(layer, inputs, original_inputs=None,
                 samples_per_image: int = 10, seed: int = 0,
                 original_kernel=None, original_bias=None, units=None,
                 locations=None) -> LayerSamples:
    """Samples ``X`` (current inputs) and ``Y`` (original outputs).

    ``Y`` is the original layer's pre-activation output at the sampled
    locations, computed from ``original_inputs`` (the original network's
    activations; default ``inputs``) and ``original_kernel`` / ``_bias``
    (default the layer's current weights).

    Args:
        layer: a built consumer (:func:`~.kernels.consumer_kind`).
        inputs: the layer's inputs in the network being pruned.
        original_inputs: the same images' inputs in the original network.
        samples_per_image: random output locations per image.
        seed: seed of the location draw.
        original_kernel, original_bias: the original layer's weights when
            ``layer`` has been changed already.
        units: optional per-input-position unit ids (see
            :class:`LayerSamples`).
        locations: reuse the locations of an earlier draw.

    Returns:
        A :class:`LayerSamples`.

    Example:
        >>> s = sample_layer(conv, x_pruned, original_inputs=x_orig)
    """
    patches, loc = sample_patches(layer, inputs, samples_per_image, seed,
                                  locations)
    if original_inputs is None:
        orig = patches
    else:
        orig_arr = np.asarray(original_inputs)
        if orig_arr.shape != np.asarray(inputs).shape:
            raise ValueError(
                f"original_inputs of layer {layer.name!r} must match inputs"
                f" {np.asarray(inputs).shape}. Received: "
                f"original_inputs.shape={orig_arr.shape}")
        orig, _ = sample_patches(layer, orig_arr, locations=loc)
    w, b = layer_kernel(layer)
    if original_kernel is not None:
        w0 = np.asarray(original_kernel, "float32")
        want = tuple(kernel_variable(layer).shape)
        if w0.shape != want:
            raise ValueError(
                f"original_kernel of layer {layer.name!r} has shape "
                f"{w0.shape}, expected {want}.")
        w0 = to_dense(layer, w0).reshape(w.shape)
    else:
        w0 = w
    b0 = b if original_bias is None else np.asarray(original_bias,
                                                    "float32")
    y = np.einsum("mkp,kpn->mn", orig, w0, optimize=True)
    if b0 is not None:
        y = y + b0
    return LayerSamples(x=patches, y=y, kernel=w, bias=b, units=units,
                        layer=layer.name, kernel_shape=dense_shape(layer),
                        connect=connections(layer))
