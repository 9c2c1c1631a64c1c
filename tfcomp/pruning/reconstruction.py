"""Per-layer channel selection with least-squares reconstruction.

The building block of reconstruction-based channel pruning (He, Zhang & Sun
2017) that :func:`tfcomp.pruning.lasso_prune` runs layer by layer and that
AMC reuses for its per-layer step:

1. **Sample** a consumer layer's input patches ``X`` and its original
   outputs ``Y`` on calibration data (:func:`sample_patches`,
   :func:`sample_layer`): random output locations per image for
   convolutions (stride, padding and dilation are honoured), one row per
   image (or random positions along extra axes) for ``Dense``.
   ``X`` has shape ``(M, K, P)``: ``M`` samples, ``K`` kernel taps
   (``kh * kw`` for ``Conv2D``, 1 for ``Dense``) and ``P`` input positions
   (channels, or features of a ``Flatten`` -> ``Dense``); ``Y`` is
   ``(M, n)``, the layer's pre-activation output.
2. **Select** input channels (*units*; a unit may own several positions,
   e.g. all the features of one channel after ``Flatten``):
   :func:`select_channels` with ``"lasso"`` (LASSO on the per-channel
   contributions ``Z_i = X_i W_i``, alpha raised then bisected until exactly
   ``num_keep`` channels survive), ``"l1"`` (L1 norm of the consumer's
   input slices, AMC's official criterion) or ``"random"``.
3. **Refit** the kernel (and bias) on the kept channels by least squares
   (:func:`least_squares_refit`).

:func:`reconstruct_layer` does 2 and 3 for one layer and returns a
:class:`LayerReconstruction` (kept channels, refit kernel in the original
shape with zeros at removed inputs, and the sliced kernel).

Depthwise convolutions are not channel consumers: each output channel reads
only its own input channel, so removing an input channel removes that
output channel too. The dependency graph treats them as pass-through and
the pointwise (or dense) layer that reads their output is reconstructed
instead; :func:`sample_layer` and :func:`reconstruct_layer` raise a
``ValueError`` that says so when given one.

Reference: He, Zhang & Sun, Channel Pruning for Accelerating Very Deep
Neural Networks, ICCV 2017, arXiv:1707.06168.

Example:
    >>> layer = model.get_layer("s1b1_conv2")
    >>> s = sample_layer(layer, inputs=x_in, samples_per_image=10, seed=0)
    >>> r = reconstruct_layer(layer, s.x, s.y, num_keep=8)
    >>> r.keep, r.kernel.shape, r.relative_error
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import keras
import numpy as np

__all__ = [
    "LayerSamples", "LayerReconstruction", "layer_kernel", "sample_patches",
    "sample_layer", "channel_contributions", "select_channels",
    "least_squares_refit", "reconstruct_layer", "reconstruction_error",
    "SELECTORS",
]

SELECTORS = ("lasso", "l1", "random")
_CHUNK_ELEMS = 1 << 22  # elements of one (m, P, n) block in Gram sums


# ---------------------------------------------------------------------------
# layer kernels


def _layer_kind(layer) -> str:
    """'conv' (Conv1D/2D, groups 1), 'dense', or raises a ValueError."""
    name = getattr(layer, "name", repr(layer))
    if isinstance(layer, (keras.layers.DepthwiseConv1D,
                          keras.layers.DepthwiseConv2D)):
        raise ValueError(
            f"Layer {name!r} is a depthwise convolution: every output "
            "channel reads only its own input channel, so it is not a "
            "channel consumer. Its channels pass through to the next "
            "pointwise/dense layer; reconstruct that layer instead.")
    if isinstance(layer, (keras.layers.SeparableConv1D,
                          keras.layers.SeparableConv2D,
                          keras.layers.Conv2DTranspose,
                          keras.layers.Conv1DTranspose,
                          keras.layers.Conv3D)):
        raise ValueError(
            f"Layer {name!r} ({type(layer).__name__}) is not supported by "
            "reconstruction; supported consumers are Conv1D, Conv2D "
            "(groups=1, channels_last) and Dense.")
    if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D)):
        if int(getattr(layer, "groups", 1) or 1) != 1:
            raise ValueError(
                f"Layer {name!r} is a grouped convolution (groups="
                f"{layer.groups}); reconstruction supports groups=1 only.")
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            raise ValueError(
                f"Layer {name!r} uses data_format={layer.data_format!r}; "
                "reconstruction supports channels_last only.")
        return "conv"
    if isinstance(layer, keras.layers.Dense):
        return "dense"
    raise ValueError(
        f"Layer {name!r} ({type(layer).__name__}) is not supported by "
        "reconstruction; supported consumers are Conv1D, Conv2D (groups=1, "
        "channels_last) and Dense.")


def layer_kernel(layer) -> tuple:
    """A consumer's kernel as ``(K, P, n)`` and its bias (or None).

    ``K`` is the number of kernel taps (``kh * kw``; 1 for ``Dense``), ``P``
    the input channels and ``n`` the filters / units, in the tap order used
    by :func:`sample_patches`.

    Args:
        layer: a built ``Conv1D`` / ``Conv2D`` (groups 1) or ``Dense``.

    Returns:
        ``(kernel, bias)`` float32 numpy arrays; ``bias`` is None when the
        layer has none.

    Example:
        >>> w, b = layer_kernel(model.get_layer("s1b1_conv2"))
        >>> w.shape                       # (9, 16, 16)
    """
    _layer_kind(layer)
    if not layer.built:
        raise ValueError(f"Layer {layer.name!r} is not built.")
    w = np.asarray(keras.ops.convert_to_numpy(layer.kernel), "float32")
    b = None
    if getattr(layer, "use_bias", False) and layer.bias is not None:
        b = np.asarray(keras.ops.convert_to_numpy(layer.bias), "float32")
    return w.reshape(-1, w.shape[-2], w.shape[-1]), b


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
    cin = int(layer.kernel.shape[-2])
    if kind == "conv":
        rank = len(layer.kernel_size) + 2
        if x.ndim != rank or x.shape[-1] != cin:
            raise ValueError(
                f"inputs of layer {layer.name!r} must have shape (N, "
                f"{', '.join(['H', 'W'][:rank - 2])}, {cin}). Received: "
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
        layer: a built ``Conv1D`` / ``Conv2D`` (groups 1) or ``Dense``.
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
    kind = _layer_kind(layer)
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
        kernel_shape: the layer's kernel shape (to map results back).
        out_mask: ``(n,)`` bool, outputs to reconstruct (False for output
            channels already removed); None means all.

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
        layer: a built ``Conv1D`` / ``Conv2D`` (groups 1) or ``Dense``.
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
        w0 = w0.reshape(-1, w0.shape[-2], w0.shape[-1])
        if w0.shape != w.shape:
            raise ValueError(
                f"original_kernel of layer {layer.name!r} has shape "
                f"{w0.shape}, expected {w.shape}.")
    else:
        w0 = w
    b0 = b if original_bias is None else np.asarray(original_bias,
                                                    "float32")
    y = np.einsum("mkp,kpn->mn", orig, w0, optimize=True)
    if b0 is not None:
        y = y + b0
    return LayerSamples(x=patches, y=y, kernel=w, bias=b, units=units,
                        layer=layer.name,
                        kernel_shape=tuple(layer.kernel.shape))


# ---------------------------------------------------------------------------
# contributions and the Gram form of the LASSO


def _unit_positions(units, num_units):
    return [np.flatnonzero(units == u) for u in range(num_units)]


def channel_contributions(x, kernel, units=None) -> np.ndarray:
    """Per-channel contributions ``Z_i = X_i W_i`` to the output.

    Args:
        x: ``(M, K, P)`` patches.
        kernel: ``(K, P, n)`` kernel (any shape ending in ``(P, n)``).
        units: optional ``(P,)`` unit id per position (``-1``: none);
            default one unit per position.

    Returns:
        ``(U, M, n)`` array; ``Z.sum(0)`` plus the positions outside any
        unit equals ``x @ kernel``.

    Example:
        >>> Z = channel_contributions(s.x, s.kernel)
        >>> np.allclose(Z.sum(0), np.einsum("mkp,kpn->mn", s.x, s.kernel))
    """
    x = np.asarray(x, "float64")
    if x.ndim == 2:
        x = x[:, None, :]
    w = np.asarray(kernel, "float64")
    w = w.reshape(-1, w.shape[-2], w.shape[-1])
    units = np.arange(w.shape[1]) if units is None else np.asarray(units)
    per_pos = np.einsum("mkp,kpn->pmn", x, w, optimize=True)
    u_max = int(units.max()) + 1
    out = np.zeros((u_max,) + per_pos.shape[1:])
    np.add.at(out, units[units >= 0], per_pos[units >= 0])
    return out


class _Stats:
    """Sufficient statistics of ``||y - sum_i b_i Z_i||^2`` (one layer)."""

    def __init__(self, s: LayerSamples):
        U = s.num_units
        _, p, n = s.kernel.shape
        om = (np.ones(n, bool) if s.out_mask is None else s.out_mask)
        w = s.kernel[:, :, om].astype("float64")
        nn = int(om.sum())
        units = s.units
        sel = units >= 0
        per_unit = np.bincount(units[sel], minlength=U)
        single = per_unit.max() == 1 and per_unit.min() == 1
        if single:
            pos_of = np.empty(U, np.int64)
            pos_of[units[sel]] = np.flatnonzero(sel)
        else:
            onehot = np.zeros((p, U))
            onehot[np.flatnonzero(sel), units[sel]] = 1.0
        fixed = (~sel).astype("float64")
        G = np.zeros((U, U))
        Zy = np.zeros(U)
        yy = 0.0
        sz = np.zeros((U, nn))
        sy = np.zeros(nn)
        m_total = s.x.shape[0]
        step = max(1, _CHUNK_ELEMS // max(1, p * nn))
        for a in range(0, m_total, step):
            xc = s.x[a:a + step].astype("float64")
            yc = s.y[a:a + step][:, om].astype("float64")
            per_pos = np.einsum("mkp,kpn->mpn", xc, w, optimize=True)
            if fixed.any():
                yc = yc - np.einsum("mpn,p->mn", per_pos, fixed)
            if single:
                Z = np.moveaxis(per_pos[:, pos_of, :], 1, 0)
            else:
                Z = np.einsum("mpn,pu->umn", per_pos, onehot, optimize=True)
            Zf = Z.reshape(U, -1)
            G += Zf @ Zf.T
            Zy += Zf @ yc.ravel()
            yy += float((yc * yc).sum())
            sz += Z.sum(axis=1)
            sy += yc.sum(axis=0)
        if s.fit_intercept:  # centring == fitting a free intercept
            mu_z, mu_y = sz / m_total, sy / m_total
            G -= m_total * (mu_z @ mu_z.T)
            Zy -= m_total * (mu_z @ mu_y)
            yy -= m_total * float(mu_y @ mu_y)
        self.G, self.Zy, self.yy = G, Zy, max(yy, 0.0)
        self.rows = m_total * nn


def _joint_stats(samples: list):
    """Sum of per-layer statistics, each scaled by 1 / ||y||^2."""
    G = Zy = None
    yy = 0.0
    rows = 0
    for s in samples:
        st = _Stats(s)
        scale = 1.0 / st.yy if st.yy > 0 else 1.0
        if G is None:
            G, Zy = st.G * scale, st.Zy * scale
        else:
            if st.G.shape != G.shape:
                raise ValueError(
                    "All layers of a joint selection must have the same "
                    f"number of units. Received: {G.shape[0]} and "
                    f"{st.G.shape[0]} (layer {s.layer!r}).")
            G = G + st.G * scale
            Zy = Zy + st.Zy * scale
        yy += st.yy * scale
        rows += st.rows
    return G, Zy, yy, rows


def _lasso_select(G, Zy, num_keep, max_bisect=60, tol=1e-7):
    """LASSO on the Gram form; alpha raised, then bisected to ``num_keep``.

    ``||y - Z b||^2 = b'Gb - 2 b'Zy + const``; with ``G = V S V'`` the same
    objective is ``||c - A b||^2`` for ``A = S^1/2 V'`` and
    ``c = S^-1/2 V' Zy``, a problem with as many rows as the rank of ``G``
    that sklearn's ``Lasso`` solves exactly as it would the full one (alpha
    is rescaled by the row count, which the search absorbs).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import Lasso

    s, V = np.linalg.eigh(0.5 * (G + G.T))
    smax = float(s.max(initial=0.0))
    info = {"alphas": [], "nnz": []}
    if smax <= 0:
        return None, info
    keep_ev = s > smax * 1e-12
    A = np.sqrt(s[keep_ev])[:, None] * V[:, keep_ev].T
    c = (V[:, keep_ev].T @ Zy) / np.sqrt(s[keep_ev])
    rows = A.shape[0]
    alpha_max = float(np.abs(Zy).max()) / rows
    if alpha_max <= 0:
        return None, info
    model = Lasso(alpha=1.0, fit_intercept=False, max_iter=20000, tol=tol,
                  warm_start=True, selection="cyclic")
    cache = {}

    def fit(alpha):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.set_params(alpha=alpha)
            model.fit(A, c)
        coef = model.coef_.copy()
        nnz = int(np.count_nonzero(coef))
        info["alphas"].append(float(alpha))
        info["nnz"].append(nnz)
        cache[alpha] = coef
        return coef, nnz

    # raise alpha until at most num_keep channels are left
    alpha = alpha_max * 1e-4
    coef, nnz = fit(alpha)
    lo, lo_coef = (None, None)
    if nnz > num_keep:
        lo, lo_coef = alpha, coef
        while nnz > num_keep and alpha < alpha_max:
            alpha = min(2.0 * alpha, alpha_max)
            coef, nnz = fit(alpha)
            if nnz > num_keep:
                lo, lo_coef = alpha, coef
    hi, hi_coef, hi_nnz = alpha, coef, nnz
    iters = 0
    # bisect (geometric) between lo (too many) and hi (at most num_keep)
    while hi_nnz != num_keep and lo is not None and iters < max_bisect \
            and hi / lo > 1.0 + 1e-9:
        iters += 1
        mid = math.sqrt(lo * hi)
        coef, nnz = fit(mid)
        if nnz > num_keep:
            lo, lo_coef = mid, coef
        else:
            hi, hi_coef, hi_nnz = mid, coef, nnz
    info.update(alpha=float(hi), bisect_iterations=iters,
                exact=bool(hi_nnz == num_keep), nnz_at_alpha=int(hi_nnz))
    if hi_nnz == num_keep:
        return np.flatnonzero(hi_coef), info
    # not exact (ties / degenerate): keep the top num_keep by |beta_i|*||Z_i||
    ref = lo_coef if lo_coef is not None else hi_coef
    mag = np.abs(ref) * np.sqrt(np.maximum(np.diag(G), 0.0))
    order = np.lexsort((-np.sqrt(np.maximum(np.diag(G), 0)), -mag))
    return np.sort(order[:num_keep]), info


def _l1_scores(samples: list) -> np.ndarray:
    total = None
    for s in samples:
        w = np.abs(s.kernel.astype("float64"))
        if s.out_mask is not None:
            w = w[:, :, s.out_mask]
        per_pos = w.sum(axis=(0, 2))
        sc = np.zeros(s.num_units)
        np.add.at(sc, s.units[s.units >= 0], per_pos[s.units >= 0])
        total = sc if total is None else total + sc
    return total


def _check_num_keep(num_keep, num_units, name="num_keep") -> int:
    if isinstance(num_keep, bool) or not isinstance(
            num_keep, (int, np.integer)):
        raise TypeError(f"{name} must be an integer. Received: "
                        f"{name}={num_keep!r}")
    if not 1 <= int(num_keep) <= num_units:
        raise ValueError(
            f"{name} must be in [1, {num_units}] (keeping no channel would "
            f"empty the layer). Received: {name}={num_keep}")
    return int(num_keep)


def select_channels(samples, num_keep: int, selector="lasso",
                    seed: int = 0) -> tuple:
    """Chooses ``num_keep`` units (input channels) of one or more layers.

    With several :class:`LayerSamples` (the consumers of one coupled group,
    e.g. every conv reading a residual stream), one channel set is chosen
    for all of them: the LASSO minimises the sum of the consumers'
    objectives, each normalised by its target energy ``||Y_c||^2`` so that
    every consumer counts by its *relative* reconstruction error; ``"l1"``
    sums the consumers' input-slice L1 norms.

    Args:
        samples: a :class:`LayerSamples` or a list of them (same units).
        num_keep: channels to keep, in ``[1, num_units]``.
        selector: ``"lasso"``, ``"l1"``, ``"random"``, or an array of
            ``num_units`` scores (the highest are kept).
        seed: seed for ``"random"``.

    Returns:
        ``(keep, info)``: sorted kept unit indices (exactly ``num_keep``)
        and a dict (for ``"lasso"``: the final ``alpha``, the ``alphas`` /
        ``nnz`` tried, ``exact`` = the LASSO itself left ``num_keep``).

    Raises:
        ValueError: ``num_keep`` out of range or an unknown selector.

    Reference: He, Zhang & Sun, arXiv:1707.06168 (LASSO selection);
    Li et al., arXiv:1608.08710 (L1 norm).

    Example:
        >>> keep, info = select_channels(s, num_keep=8)
        >>> len(keep), info["exact"]
        (8, True)
    """
    samples = [samples] if isinstance(samples, LayerSamples) else list(
        samples)
    if not samples:
        raise ValueError("samples is empty: give at least one LayerSamples.")
    U = samples[0].num_units
    for s in samples[1:]:
        if s.num_units != U:
            raise ValueError(
                "All layers of a joint selection must have the same number "
                f"of units. Received: {U} and {s.num_units} "
                f"(layer {s.layer!r}).")
    num_keep = _check_num_keep(num_keep, U)
    info: dict = {"selector": selector if isinstance(selector, str)
                  else "scores"}
    if num_keep == U:
        return np.arange(U), info
    if isinstance(selector, str):
        if selector == "random":
            rng = np.random.default_rng(seed)
            return np.sort(rng.choice(U, num_keep, replace=False)), info
        if selector == "l1":
            scores = _l1_scores(samples)
        elif selector == "lasso":
            G, Zy, _, _ = _joint_stats(samples)
            keep, linfo = _lasso_select(G, Zy, num_keep)
            info.update(linfo)
            if keep is not None:
                return keep, info
            # all contributions are zero: nothing to choose from
            scores = _l1_scores(samples)
            info["fallback"] = "l1 (all contributions are zero)"
        else:
            raise ValueError(
                f"selector must be one of {SELECTORS} or an array of scores."
                f" Received: selector={selector!r}")
    else:
        scores = np.asarray(selector, dtype="float64").ravel()
        if scores.shape != (U,):
            raise ValueError(
                f"selector scores must have {U} entries. Received: "
                f"{scores.shape}")
    order = np.argsort(-scores, kind="stable")
    return np.sort(order[:num_keep]), info


# ---------------------------------------------------------------------------
# least squares


def _kept_positions(s: LayerSamples, keep) -> np.ndarray:
    keep = np.asarray(keep, dtype=np.int64)
    return np.flatnonzero((s.units < 0) | np.isin(s.units, keep))


def least_squares_refit(samples: LayerSamples, keep, ridge: float = 1e-6
                        ) -> tuple:
    """Least-squares kernel (and bias) on the kept channels.

    Solves ``min ||X_kept W' + b' - Y||^2 + r ||W' - W_kept||^2`` where
    ``r = ridge * mean(diag(X_kept' X_kept))``: a plain least-squares fit
    with a tiny pull towards the current weights that only matters when the
    samples do not determine ``W'`` (fewer samples than inputs, dead
    inputs).

    Args:
        samples: a :class:`LayerSamples`.
        keep: kept unit indices (positions with unit ``-1`` are always
            kept).
        ridge: relative strength of the pull towards the current weights.

    Returns:
        ``(kernel, bias, positions)``: ``kernel`` in the layer's kernel
        shape with zeros at removed input positions (and at masked
        outputs), ``bias`` (None when the layer has none) and the kept
        input positions.

    Example:
        >>> kernel, bias, pos = least_squares_refit(s, keep)
        >>> layer.kernel.assign(kernel)
    """
    s = samples
    pos = _kept_positions(s, keep)
    k, p, n = s.kernel.shape
    m = s.x.shape[0]
    X = s.x[:, :, pos].reshape(m, -1).astype("float64")
    Y = s.y.astype("float64")
    w0 = s.kernel[:, pos, :].reshape(-1, n).astype("float64")
    if s.fit_intercept:
        mx, my = X.mean(axis=0), Y.mean(axis=0)
        X = X - mx
        Y = Y - my
    A = X.T @ X
    B = X.T @ Y
    d = A.shape[0]
    r = float(ridge) * (np.trace(A) / max(d, 1)) if d else 0.0
    if r <= 0:
        r = 1e-12
    A[np.diag_indices(d)] += r
    B += r * w0
    try:
        from scipy.linalg import cho_factor, cho_solve

        W = cho_solve(cho_factor(A, lower=False, check_finite=False), B,
                      check_finite=False)
    except Exception:  # not positive definite numerically
        W = np.linalg.lstsq(A, B, rcond=None)[0]
    bias = None
    if s.fit_intercept:
        bias = (my - mx @ W).astype("float32")
    full = np.zeros((k, p, n), "float32")
    full[:, pos, :] = W.reshape(k, len(pos), n)
    if s.out_mask is not None:
        full[:, :, ~s.out_mask] = 0.0
        if bias is not None:
            bias[~s.out_mask] = 0.0
    return full.reshape(s.kernel_shape), bias, pos


def reconstruction_error(x, y, kernel, bias=None, out_mask=None) -> float:
    """Relative squared error ``||y - (x W + b)||^2 / ||y - mean(y)||^2``.

    Args:
        x: ``(M, K, P)`` patches.
        y: ``(M, n)`` targets.
        kernel: kernel of shape ``(..., P, n)``.
        bias: optional ``(n,)``.
        out_mask: optional bool ``(n,)``: outputs to include.

    Returns:
        The relative error (0 = perfect, 1 = no better than the mean).

    Example:
        >>> reconstruction_error(s.x, s.y, r.kernel, r.bias)
    """
    x = np.asarray(x, "float64")
    if x.ndim == 2:
        x = x[:, None, :]
    w = np.asarray(kernel, "float64")
    w = w.reshape(-1, w.shape[-2], w.shape[-1])
    pred = np.einsum("mkp,kpn->mn", x, w, optimize=True)
    if bias is not None:
        pred = pred + np.asarray(bias, "float64")
    y = np.asarray(y, "float64")
    if out_mask is not None:
        pred, y = pred[:, out_mask], y[:, out_mask]
    den = float(((y - y.mean(axis=0)) ** 2).sum())
    num = float(((y - pred) ** 2).sum())
    return num / den if den > 0 else num


# ---------------------------------------------------------------------------
# the building block


@dataclasses.dataclass
class LayerReconstruction:
    """Result of :func:`reconstruct_layer`.

    Attributes:
        keep: sorted kept unit (input channel) indices.
        kernel: refit kernel in the layer's kernel shape, zeros at the
            removed input positions (assign it to the layer, then remove
            the channels with ``prune_channels``).
        bias: refit bias, or None.
        positions: kept input positions along the kernel's input axis.
        kernel_kept: ``kernel`` sliced to ``positions`` (the weights of the
            physically smaller layer).
        error: relative reconstruction error after the refit.
        error_zeroed: relative error when the removed inputs are only
            zeroed (no refit), for comparison.
        info: selector details (``alpha``, ``exact``, ...).

    Example:
        >>> r = reconstruct_layer(layer, s.x, s.y, num_keep=8)
        >>> r.error <= r.error_zeroed
        True
    """

    keep: np.ndarray
    kernel: np.ndarray
    bias: np.ndarray | None
    positions: np.ndarray
    kernel_kept: np.ndarray
    error: float
    error_zeroed: float
    info: dict


def reconstruct_layer(layer, x=None, y=None, num_keep: int | None = None,
                      keep=None, selector="lasso", units=None,
                      samples: LayerSamples | None = None, seed: int = 0,
                      ridge: float = 1e-6) -> LayerReconstruction:
    """Selects a consumer's input channels and refits its kernel.

    The per-layer step of He et al. 2017 (and of AMC): choose ``num_keep``
    input channels (``selector``) or take the given ``keep``, then refit
    the kernel (and bias) by least squares so that the kept channels
    reproduce the original outputs ``y``.

    Args:
        layer: a built ``Conv1D`` / ``Conv2D`` (groups 1) or ``Dense``
            (its current kernel/bias define the contributions ``Z_i``), or
            None when ``samples`` carries the kernel.
        x: ``(M, K, P)`` input patches (:func:`sample_patches`).
        y: ``(M, n)`` target outputs (original network).
        num_keep: number of channels to keep.
        keep: explicit unit indices to keep (skips selection).
        selector: ``"lasso"`` (default), ``"l1"``, ``"random"`` or scores.
        units: optional ``(P,)`` unit id per input position (``-1`` =
            always kept); default one unit per input channel.
        samples: a :class:`LayerSamples` instead of ``x`` / ``y``.
        seed: seed for ``"random"``.
        ridge: see :func:`least_squares_refit`.

    Returns:
        A :class:`LayerReconstruction`.

    Raises:
        ValueError: neither or both of ``num_keep`` / ``keep``, counts that
            would empty the layer, mis-shaped or empty samples, depthwise
            or unsupported layers.

    Reference: He, Zhang & Sun, arXiv:1707.06168.

    Example:
        >>> p, loc = sample_patches(conv, x_in, samples_per_image=10)
        >>> y = np.einsum("mkp,kpn->mn", p, layer_kernel(conv)[0])
        >>> r = reconstruct_layer(conv, p, y, num_keep=8)
        >>> conv.kernel.assign(r.kernel)
    """
    if samples is None:
        if layer is None:
            raise ValueError("Give a layer (with x and y) or samples.")
        if x is None or y is None:
            raise ValueError(
                f"reconstruct_layer({layer.name!r}) needs x and y (or "
                "samples).")
        w, b = layer_kernel(layer)
        samples = LayerSamples(x=x, y=y, kernel=w, bias=b, units=units,
                               layer=layer.name,
                               kernel_shape=tuple(layer.kernel.shape))
    elif not isinstance(samples, LayerSamples):
        raise TypeError("samples must be a LayerSamples. Received: "
                        f"{type(samples).__name__}")
    U = samples.num_units
    if (num_keep is None) == (keep is None):
        raise ValueError(
            "Give exactly one of num_keep and keep. Received: "
            f"num_keep={num_keep!r}, keep={'None' if keep is None else '...'}")
    if keep is not None:
        keep = np.unique(np.asarray(keep, dtype=np.int64).ravel())
        if keep.size == 0:
            raise ValueError(
                f"keep is empty for layer {samples.layer!r}: keeping no "
                "channel would empty the layer.")
        if keep.min() < 0 or keep.max() >= U:
            raise ValueError(
                f"keep must hold unit indices in [0, {U}). Received: "
                f"{keep.tolist()[:10]}")
        info = {"selector": "given"}
    else:
        keep, info = select_channels(samples, num_keep, selector, seed)
    kernel, bias, pos = least_squares_refit(samples, keep, ridge)
    k3 = kernel.reshape(samples.kernel.shape)
    err = reconstruction_error(samples.x, samples.y, k3, bias,
                               samples.out_mask)
    zeroed = np.zeros_like(samples.kernel)
    zeroed[:, pos, :] = samples.kernel[:, pos, :]
    err0 = reconstruction_error(samples.x, samples.y, zeroed, samples.bias,
                                samples.out_mask)
    kept_shape = list(samples.kernel_shape)
    kept_shape[-2] = len(pos)
    kernel_kept = k3[:, pos, :].reshape(kept_shape)
    return LayerReconstruction(keep=np.asarray(keep), kernel=kernel,
                               bias=bias, positions=pos,
                               kernel_kept=kernel_kept, error=err,
                               error_zeroed=err0, info=info)
