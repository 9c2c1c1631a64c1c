"""Channel selection for reconstruction: LASSO on the channel contributions,
L1 norm of the consumers' input slices, random, or given scores.

Step 2 of reconstruction-based channel pruning (He, Zhang & Sun 2017):
:func:`select_channels` returns the input channels (units) to **keep**.

Reference: He, Zhang & Sun, arXiv:1707.06168 (LASSO selection);
Li et al., arXiv:1608.08710 (L1 norm).

Example:
    >>> keep, info = select_channels(samples, num_keep=8, selector="lasso")
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from tfcomp.pruning.reconstruction.sampling import LayerSamples

__all__ = ["SELECTORS", "channel_contributions", "select_channels"]

SELECTORS = ("lasso", "l1", "random")
_CHUNK_ELEMS = 1 << 22  # elements of one (m, P, n) block in Gram sums


# contributions and the Gram form of the LASSO


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
