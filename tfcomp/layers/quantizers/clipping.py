"""Numpy helpers of the quantizers: KL-optimal clipping and 1-D k-means.

Example:
    >>> from tfcomp.layers.quantizers.clipping import kmeans_1d
    >>> kmeans_1d([0., 0.1, 1., 1.1], 2)
    array([0.05, 1.05], dtype=float32)
"""

from __future__ import annotations

import numpy as np

__all__ = ["kl_optimal_threshold", "kl_threshold_from_histogram",
           "kmeans_1d"]


def kl_optimal_threshold(values, num_levels: int, num_bins: int = 1024
                         ) -> float:
    """KL-optimal clipping threshold of ``|values|`` for ``num_levels`` bins.

    The TensorRT / HAQ calibration: histogram ``|x|`` into ``num_bins`` bins
    on ``[0, max|x|]``; for every candidate threshold ``t`` (bin edge ``i``),
    ``P`` is the histogram up to ``i`` with the clipped tail added to its
    last bin, ``Q`` is the same bins (without the tail) merged into
    ``num_levels`` groups and expanded back over the non-empty bins; the
    threshold minimising ``KL(P || Q)`` is returned.

    Args:
        values: array of samples (weights or activations).
        num_levels: quantization levels of the magnitude: ``2^(b-1)`` for a
            symmetric b-bit quantizer, ``2^b`` for an unsigned one.
        num_bins: histogram resolution (TensorRT uses 2048; 1024 here for
            speed on CPU).

    Returns:
        The threshold (``<= max|values|``); ``max|values|`` when the data
        has fewer distinct magnitudes than ``num_levels``.

    Example:
        >>> w = np.random.default_rng(0).standard_t(3, 4096)
        >>> kl_optimal_threshold(w, 8) < np.abs(w).max()
        True
    """
    a = np.abs(np.asarray(values, dtype=np.float64).ravel())
    if a.size == 0:
        return 0.0
    amax = float(a.max())
    if amax <= 0.0:
        return 0.0
    num_levels = int(num_levels)
    if num_levels < 1:
        raise ValueError(
            f"num_levels must be >= 1. Received: num_levels={num_levels}")
    num_bins = max(int(num_bins), num_levels)
    hist, edges = np.histogram(a, bins=num_bins, range=(0.0, amax))
    return kl_threshold_from_histogram(hist, edges, num_levels)


def kl_threshold_from_histogram(hist, edges, num_levels: int) -> float:
    """``kl_optimal_threshold`` on an accumulated histogram of magnitudes.

    Args:
        hist: counts of ``|x|`` per bin on ``[0, edges[-1]]``.
        edges: the ``len(hist) + 1`` bin edges.
        num_levels: quantization levels of the magnitude.

    Returns:
        The KL-optimal threshold (an element of ``edges``).

    Example:
        >>> h, e = np.histogram(np.abs(x), bins=1024, range=(0, 6))
        >>> t = kl_threshold_from_histogram(h, e, 16)
    """
    hist = np.asarray(hist, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.float64)
    num_bins = len(hist)
    num_levels = int(num_levels)
    if num_bins < num_levels or np.count_nonzero(hist) <= num_levels:
        return float(edges[-1])
    csum = np.cumsum(hist)
    total = csum[-1]
    best_kl, best_i = np.inf, num_bins
    # At most ~256 candidate thresholds (TensorRT tries every bin; the
    # coarser sweep changes the threshold by < 1/256 of the range).
    step = max(1, (num_bins - num_levels) // 256)
    nonzero_below = np.cumsum(hist > 0)
    for i in range(num_levels, num_bins + 1, step):
        if nonzero_below[i - 1] < num_levels:
            # Fewer distinct magnitudes below t than levels: Q copies P and
            # the KL is 0 however much is clipped (on a sparse histogram,
            # e.g. 3x3 depthwise kernels, this picked t ~ 0).
            continue
        sliced = hist[:i]
        p = sliced.copy()
        p[-1] += total - csum[i - 1]
        group = (np.arange(i) * num_levels) // i
        nonzero = sliced > 0
        sums = np.bincount(group, weights=sliced, minlength=num_levels)
        counts = np.bincount(group, weights=nonzero.astype(np.float64),
                             minlength=num_levels)
        q = np.where(nonzero, sums[group] / np.maximum(counts[group], 1.0),
                     0.0)
        psum, qsum = p.sum(), q.sum()
        if psum <= 0 or qsum <= 0:
            continue
        ps, qs = p / psum, q / qsum
        mask = ps > 0
        qm = np.where(qs[mask] > 0, qs[mask], 1e-10)
        kl = float(np.sum(ps[mask] * np.log(ps[mask] / qm)))
        if kl < best_kl:
            best_kl, best_i = kl, i
    return float(edges[best_i])


def kmeans_1d(values, k: int, iters: int = 30, seed: int = 0) -> np.ndarray:
    """1-D k-means with linear initialisation (Deep Compression's choice).

    Args:
        values: samples.
        k: number of centroids.
        iters: Lloyd iterations.
        seed: seed used to re-seed empty clusters.

    Returns:
        Sorted centroids, shape ``(k,)``.

    Example:
        >>> kmeans_1d([0., 0.1, 1., 1.1], 2)
        array([0.05, 1.05], dtype=float32)
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    rng = np.random.default_rng(seed)
    lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
    c = np.linspace(lo, hi, k)
    if hi <= lo:
        return c.astype(np.float32)
    for _ in range(iters):
        mids = (c[1:] + c[:-1]) / 2
        idx = np.searchsorted(mids, x)
        sums = np.bincount(idx, weights=x, minlength=k)
        counts = np.bincount(idx, minlength=k)
        new = np.where(counts > 0, sums / np.maximum(counts, 1), c)
        empty = counts == 0
        if empty.any():
            new[empty] = rng.choice(x, size=int(empty.sum()))
        new = np.sort(new)
        if np.allclose(new, c):
            c = new
            break
        c = new
    return c.astype(np.float32)
