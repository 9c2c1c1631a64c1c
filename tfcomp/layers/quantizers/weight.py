"""Weight quantizers: symmetric linear (HAQ) and k-means weight sharing.

Example:
    >>> from tfcomp.layers.quantizers.weight import SymmetricQuantizer
    >>> q = SymmetricQuantizer(bits=4, clip="kl")
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from tfcomp.layers.quantizers.base import _EPS, WeightQuantizer, _ste
from tfcomp.layers.quantizers.clipping import kl_optimal_threshold, kmeans_1d

__all__ = ["SymmetricQuantizer", "KMeansQuantizer"]


class SymmetricQuantizer(WeightQuantizer):
    """Symmetric linear weight quantizer, per output channel by default.

    ``q(w) = s * clip(round(w / s), -(2^(b-1)-1), 2^(b-1)-1)`` with
    ``s = c / (2^(b-1) - 1)``. ``c = r * max|w|`` per channel, where the clip
    ratio ``r`` is 1 for ``clip="max"`` and the KL-optimal ratio for
    ``clip="kl"``; ``clip="auto"`` uses max for ``b >= 5`` and KL for
    ``b <= 4`` (HAQ). The KL ratio is computed on the pooled, per-channel
    normalised magnitudes ``|w| / max|w_channel|`` (a per-channel KL on a few
    dozen weights would be noise) and stored in a layer variable; it is
    refreshed by ``refresh`` (``quantize_model`` and ``calibrate`` call it).
    ``bits=1`` is binary: ``sign(w) * mean|w|`` per channel.

    Args:
        bits: weight bit-width in [1, 8].
        per_channel: one scale per output channel (else per tensor).
        clip: "auto", "max" or "kl".

    Reference: Wang et al., HAQ, arXiv:1811.08886.

    Example:
        >>> q = SymmetricQuantizer(bits=4, clip="kl")
    """

    def __init__(self, bits: int = 8, per_channel: bool = True,
                 clip: str = "auto"):
        super().__init__(bits)
        if clip not in ("auto", "max", "kl"):
            raise ValueError(
                "clip must be 'auto', 'max' or 'kl'. Received: "
                f"clip={clip!r}")
        self.per_channel = bool(per_channel)
        self.clip = clip

    @property
    def uses_kl(self) -> bool:
        if self.bits == 1:
            return False
        return self.clip == "kl" or (self.clip == "auto" and self.bits <= 4)

    @property
    def qmax(self) -> int:
        return max(2 ** (self.bits - 1) - 1, 1)

    def _qmax_tensor(self):
        if self._bits_var is None:
            return float(self.qmax)
        return ops.maximum(ops.power(2.0, self._bits_var - 1.0) - 1.0, 1.0)

    def enable_dynamic_bits(self) -> None:
        super().enable_dynamic_bits()
        if self.clip_ratio is None:  # built at b >= 5: no KL ratio yet
            self.clip_ratio = keras.Variable(
                1.0, trainable=False, dtype="float32",
                name=f"{self._prefix}_dynamic_clip_ratio")

    def get_config(self) -> dict:
        return {"bits": self.bits, "per_channel": self.per_channel,
                "clip": self.clip}

    def build(self, layer, kernel_shape, reduce_axes, name: str = "kernel"):
        super().build(layer, kernel_shape, reduce_axes, name)
        if not self.per_channel:
            self._reduce_axes = tuple(range(len(self._kernel_shape)))
        self.clip_ratio = None
        if self.uses_kl:
            self.clip_ratio = layer.add_weight(
                name=f"{name}_clip_ratio", shape=(),
                initializer="ones", trainable=False)

    def _absmax(self, w):
        return ops.max(ops.abs(w), axis=self._reduce_axes, keepdims=True)

    def scale(self, w):
        """Per-channel scale tensor (broadcastable against ``w``)."""
        if self.bits == 1:
            return ops.mean(ops.abs(w), axis=self._reduce_axes,
                            keepdims=True) + _EPS
        c = self._absmax(w)
        if self.clip_ratio is not None:
            c = c * self.clip_ratio
        return c / self._qmax_tensor() + _EPS

    def quantize(self, w):
        """Fake-quantized ``w`` (forward values only, no STE)."""
        s = self.scale(w)
        if self.bits == 1:
            return ops.where(w >= 0, s, -s)
        qmax = self._qmax_tensor()
        codes = ops.clip(ops.round(w / s), -qmax, qmax)
        return codes * s

    def __call__(self, w):
        w = ops.convert_to_tensor(w)
        return _ste(w, self.quantize(w))

    def refresh(self, kernel) -> None:
        if self.clip_ratio is None:
            return
        if not self.uses_kl:  # dynamic bits now at b >= 5: max clip
            self.clip_ratio.assign(1.0)
            return
        w = np.asarray(keras.ops.convert_to_numpy(kernel), dtype=np.float64)
        amax = np.max(np.abs(w), axis=self._reduce_axes, keepdims=True)
        normed = np.abs(w) / np.maximum(amax, 1e-12)
        t = kl_optimal_threshold(normed, 2 ** (self.bits - 1))
        self.clip_ratio.assign(float(min(max(t, 1e-3), 1.0)))

    def channel_scale(self, kernel):
        return self.scale(ops.convert_to_tensor(kernel))

    def integer_codes(self, kernel):
        w = keras.ops.convert_to_tensor(np.asarray(kernel, np.float32))
        s = self.scale(w)
        if self.bits == 1:
            codes = ops.where(w >= 0, 1.0, -1.0)
        else:
            codes = ops.clip(ops.round(w / s), -self.qmax, self.qmax)
        return (keras.ops.convert_to_numpy(codes).astype(np.int32),
                keras.ops.convert_to_numpy(s).astype(np.float32))


class KMeansQuantizer(WeightQuantizer):
    """Weight sharing: every weight snaps to one of ``2^b`` centroids.

    Centroids live in a layer variable, initialised linearly between the
    kernel's min and max (Deep Compression's best initialisation) and fitted
    by 1-D k-means in ``refresh``. Forward: nearest centroid; backward:
    straight-through. Intended for model-size objectives (index bits +
    codebook); the centroids are not on a uniform grid, so an int8 TFLite
    file stores them rounded to an 8-bit per-channel grid (still at most
    ``2^b`` distinct values per channel).

    Args:
        bits: index bits; ``2^bits`` centroids per layer.
        iters: k-means iterations in ``refresh``.
        seed: seed for re-seeding empty clusters.

    Reference: Han et al., Deep Compression, arXiv:1510.00149.

    Example:
        >>> q = KMeansQuantizer(bits=4)
    """

    def __init__(self, bits: int = 4, iters: int = 30, seed: int = 0):
        super().__init__(bits)
        self.iters = int(iters)
        self.seed = int(seed)

    def get_config(self) -> dict:
        return {"bits": self.bits, "iters": self.iters, "seed": self.seed}

    def enable_dynamic_bits(self) -> None:
        raise TypeError(
            "KMeansQuantizer cannot change bits at run time: its codebook "
            "has 2^bits variables; rebuild the model with quantize_model.")

    def build(self, layer, kernel_shape, reduce_axes, name: str = "kernel"):
        super().build(layer, kernel_shape, reduce_axes, name)
        k = 2 ** self.bits
        self.centroids = layer.add_weight(
            name=f"{name}_centroids", shape=(k,), initializer="zeros",
            trainable=False)
        self.fitted = layer.add_weight(
            name=f"{name}_centroids_fitted", shape=(), initializer="zeros",
            trainable=False)

    def _codebook(self, w):
        k = 2 ** self.bits
        lo, hi = ops.min(w), ops.max(w)
        # w's dtype: float16 kernels under a mixed_float16 policy
        levels = ops.arange(k, dtype=w.dtype)
        linear = lo + (hi - lo) * levels / max(k - 1, 1)
        return ops.where(self.fitted > 0, self.centroids, linear)

    def _assign(self, w, c):
        mids = (c[1:] + c[:-1]) / 2.0
        flat = ops.reshape(w, (-1,))
        idx = ops.searchsorted(mids, flat, side="left")
        return ops.reshape(idx, ops.shape(w))

    def quantize(self, w):
        c = self._codebook(w)
        idx = self._assign(w, c)
        return ops.take(c, idx)

    def __call__(self, w):
        w = ops.convert_to_tensor(w)
        return _ste(w, self.quantize(w))

    def refresh(self, kernel) -> None:
        w = np.asarray(keras.ops.convert_to_numpy(kernel))
        self.centroids.assign(kmeans_1d(w, 2 ** self.bits, self.iters,
                                        self.seed))
        self.fitted.assign(1.0)

    def channel_scale(self, kernel):
        q = self.quantize(ops.convert_to_tensor(kernel))
        amax = ops.max(ops.abs(q), axis=self._reduce_axes, keepdims=True)
        return ops.maximum(amax, 1e-12) / 127.0

    def integer_codes(self, kernel):
        """Codes on an 8-bit symmetric per-channel grid (see class doc)."""
        w = keras.ops.convert_to_numpy(
            self.quantize(keras.ops.convert_to_tensor(
                np.asarray(kernel, np.float32))))
        amax = np.max(np.abs(w), axis=self._reduce_axes, keepdims=True)
        s = (np.maximum(amax, 1e-12) / 127.0).astype(np.float32)
        return np.clip(np.round(w / s), -127, 127).astype(np.int32), s
