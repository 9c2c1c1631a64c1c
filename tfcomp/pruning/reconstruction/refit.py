"""Least-squares refit of a consumer's kernel on the kept channels, and the
per-layer building block :func:`reconstruct_layer` (select, then refit).

Step 3 of reconstruction-based channel pruning (He, Zhang & Sun 2017).

Reference: He, Zhang & Sun, arXiv:1707.06168.

Example:
    >>> r = reconstruct_layer(conv, p, y, num_keep=8)
    >>> conv.kernel.assign(r.kernel)
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tfcomp.pruning.reconstruction.kernels import (
    connections,
    dense_shape,
    from_dense,
    kernel_variable,
    layer_kernel,
)
from tfcomp.pruning.reconstruction.sampling import LayerSamples
from tfcomp.pruning.reconstruction.selection import select_channels

__all__ = ["LayerReconstruction", "least_squares_refit", "reconstruct_layer",
           "reconstruction_error"]


# least squares


def _kept_positions(s: LayerSamples, keep) -> np.ndarray:
    keep = np.asarray(keep, dtype=np.int64)
    return np.flatnonzero((s.units < 0) | np.isin(s.units, keep))


def _solve(X, Y, w0, fit_intercept: bool, ridge: float) -> tuple:
    """``(W, b)`` of ``min ||X W + b - Y||^2 + r ||W - w0||^2``."""
    X = X.astype("float64")
    Y = Y.astype("float64")
    w0 = w0.astype("float64")
    mx = my = None
    if fit_intercept:
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
    bias = (my - mx @ W) if fit_intercept else None
    return W, bias


def least_squares_refit(samples: LayerSamples, keep, ridge: float = 1e-6
                        ) -> tuple:
    """Least-squares kernel (and bias) on the kept channels.

    Solves ``min ||X_kept W' + b' - Y||^2 + r ||W' - W_kept||^2`` where
    ``r = ridge * mean(diag(X_kept' X_kept))``: a plain least-squares fit
    with a tiny pull towards the current weights that only matters when the
    samples do not determine ``W'`` (fewer samples than inputs, dead
    inputs). With ``samples.connect`` (a grouped convolution) each block of
    outputs is fit on the kept inputs it reads, so the kernel keeps its
    groups.

    Args:
        samples: a :class:`LayerSamples`.
        keep: kept unit indices (positions with unit ``-1`` are always
            kept).
        ridge: relative strength of the pull towards the current weights.

    Returns:
        ``(kernel, bias, positions)``: ``kernel`` in ``samples.kernel_shape``
        (the dense view, :mod:`~tfcomp.pruning.reconstruction.kernels`)
        with zeros at removed input positions (and at masked outputs),
        ``bias`` (None when the layer has none) and the kept input
        positions.

    Example:
        >>> kernel, bias, pos = least_squares_refit(s, keep)
        >>> layer.kernel.assign(from_dense(layer, kernel))
    """
    s = samples
    pos = _kept_positions(s, keep)
    k, p, n = s.kernel.shape
    m = s.x.shape[0]
    full = np.zeros((k, p, n), "float32")
    bias = np.zeros(n, "float32") if s.fit_intercept else None
    if s.connect is None:
        blocks = [(pos, np.arange(n))]
    else:  # outputs with the same inputs are solved together
        patterns, inverse = np.unique(s.connect.T, axis=0,
                                      return_inverse=True)
        inverse = np.asarray(inverse).ravel()
        blocks = [(pos[patterns[c][pos]], np.flatnonzero(inverse == c))
                  for c in range(len(patterns))]
    for rows, cols in blocks:
        if not rows.size:
            if bias is not None:  # nothing left to read: the mean output
                bias[cols] = s.y[:, cols].mean(axis=0)
            continue
        W, b = _solve(s.x[:, :, rows].reshape(m, -1), s.y[:, cols],
                      s.kernel[:, rows][:, :, cols].reshape(-1, len(cols)),
                      s.fit_intercept, ridge)
        full[:, rows[:, None], cols[None, :]] = W.reshape(k, len(rows),
                                                          len(cols))
        if bias is not None:
            bias[cols] = b
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
        kernel: refit kernel in the layer's kernel shape (the dense view
            when only ``samples`` were given), zeros at the removed input
            positions (assign it to the layer, then remove the channels
            with ``prune_channels``).
        bias: refit bias, or None.
        positions: kept input positions along the kernel's input axis.
        kernel_kept: the dense view ``(*kernel_size, P, n)`` sliced to
            ``positions`` (the weights of the physically smaller layer;
            for a grouped or transposed convolution in the dense view).
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
        layer: a built consumer (:func:`~.kernels.consumer_kind`)
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
                               kernel_shape=dense_shape(layer),
                               connect=connections(layer))
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
    if layer is not None and tuple(kernel_variable(layer).shape) != tuple(
            samples.kernel_shape):  # grouped / transposed: the layer's own
        kernel = from_dense(layer, kernel)
    return LayerReconstruction(keep=np.asarray(keep), kernel=kernel,
                               bias=bias, positions=pos,
                               kernel_kept=kernel_kept, error=err,
                               error_zeroed=err0, info=info)
