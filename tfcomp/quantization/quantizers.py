"""Linear and k-means quantizers with straight-through gradients.

A quantizer is a small serialisable object (``get_config`` / ``from_config``)
that holds *configuration only*. Its state (clip ratios, activation ranges,
centroids, "has seen data" flags) lives in variables of the layer that owns
it: ``build(layer, ...)`` creates them with ``layer.add_weight`` so that
checkpoints and ``.keras`` files carry everything. ``__call__`` uses
``keras.ops`` only.

Weight quantizers (symmetric, as HAQ uses them):

* ``SymmetricQuantizer``: scale ``s = c / (2^(b-1) - 1)`` per output channel,
  integer codes in ``[-(2^(b-1)-1), 2^(b-1)-1]`` (so at most ``2^b - 1``
  levels); ``c = max|w|`` for ``b >= 5``, a KL-optimal clip for ``b <= 4``.
  ``b = 1`` is the binary special case ``sign(w) * mean|w|`` (two levels).
* ``KMeansQuantizer``: ``2^b`` shared values per layer (Deep Compression
  weight sharing), for model-size objectives.

Activation quantizers:

* ``ActivationQuantizer(signed=False)``: unsigned ``[0, c]`` after a ReLU,
  ``s = c / (2^b - 1)``; ``c`` tracked as an exponential moving average of
  the batch maximum (``range_mode="ema"``) or learned by gradient descent
  (``range_mode="learned"``, PACT-style).
* ``ActivationQuantizer(signed=True)``: an affine ``[lo, hi]`` range (with
  ``lo <= 0 <= hi``) and an integer zero point, for inputs that may be
  negative (residual sums, the network input).

All quantizers use straight-through estimators: the forward pass rounds, the
backward pass treats rounding as the identity (clipped to the range for
activations).

Reference: Wang et al., HAQ: Hardware-Aware Automated Quantization,
arXiv:1811.08886 (linear quantizers, KL clip); Han et al., Deep Compression,
arXiv:1510.00149 (k-means weight sharing); Choi et al., PACT,
arXiv:1805.06085 (learned activation clip).

Example:
    >>> from tfcomp.quantization import quantizers
    >>> q = quantizers.get("symmetric")
    >>> quantizers.serialize(q)["class_name"]
    'SymmetricQuantizer'
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

__all__ = [
    "FLOAT_BITS", "Quantizer", "WeightQuantizer", "SymmetricQuantizer",
    "KMeansQuantizer", "ActivationQuantizer", "get", "serialize",
    "deserialize", "check_bits", "kl_optimal_threshold",
    "kl_threshold_from_histogram", "kmeans_1d",
    "ALIASES",
]

FLOAT_BITS = 32
_EPS = 1e-8


def check_bits(bits, name: str = "bits", allow_float: bool = True) -> int:
    """Validates a bit-width: an integer in [1, 8], or 32 (float).

    Args:
        bits: the value to check.
        name: argument name used in the error message.
        allow_float: whether 32 (no quantization) is accepted.

    Returns:
        ``int(bits)``.

    Example:
        >>> check_bits(4, "w_bits")
        4
    """
    ok = isinstance(bits, (int, np.integer)) and not isinstance(bits, bool)
    if ok:
        b = int(bits)
        if 1 <= b <= 8 or (allow_float and b == FLOAT_BITS):
            return b
    allowed = "[1, 8] or 32 (float)" if allow_float else "[1, 8]"
    raise ValueError(
        f"{name} must be an integer in {allowed}. Received: {name}={bits!r}")


def _floor_round(x):
    """Round half up, as TensorFlow's FakeQuant and TFLite kernels do."""
    return ops.floor(x + 0.5)


def _ste(x, q):
    """Forward exactly ``q``, backward identity w.r.t. ``x``."""
    return ops.stop_gradient(q) + (x - ops.stop_gradient(x))


# ---------------------------------------------------------------------------
# Numpy helpers: KL-optimal threshold and 1-D k-means.
# ---------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------
# Base classes.
# ---------------------------------------------------------------------------

class Quantizer:
    """Base of all tfcomp quantizers: configuration plus ``build``/``call``.

    Subclasses set ``bits`` and implement ``build`` and ``__call__``.

    Example:
        >>> q = SymmetricQuantizer(bits=4)
        >>> SymmetricQuantizer.from_config(q.get_config()).bits
        4
    """

    def __init__(self, bits: int = 8):
        self.bits = check_bits(bits, "bits", allow_float=False)
        self._layer = None
        self._prefix = None
        self._bits_var = None

    # -- bit-widths that change without rebuilding the graph (searches) ----
    @property
    def dynamic(self) -> bool:
        """Whether the bit-width is read from a variable at run time."""
        return self._bits_var is not None

    def enable_dynamic_bits(self) -> None:
        """Reads the bit-width from a variable from now on, so that
        ``set_bits`` changes what an already traced graph computes (a search
        then trains many policies with one traced model). Needs a built
        quantizer and ``bits >= 2``. The variable is search state only: it
        is not a layer weight and is not saved.

        Example:
            >>> layer.input_quantizer.enable_dynamic_bits()
            >>> layer.input_quantizer.set_bits(3)
        """
        if not self.built:
            raise ValueError(f"{self!r} must be built before its bits can be "
                             "made dynamic.")
        if self._bits_var is None:
            self._check_dynamic_bits(self.bits)
            self._bits_var = keras.Variable(
                float(self.bits), trainable=False, dtype="float32",
                name=f"{self._prefix}_dynamic_bits")

    def _check_dynamic_bits(self, bits: int) -> None:
        if bits < 2:
            raise ValueError(
                f"Dynamic bit-widths must be in [2, 8] ({type(self).__name__}"
                f" of layer {getattr(self._layer, 'name', None)!r}). "
                f"Received: bits={bits}")

    def set_bits(self, bits: int) -> None:
        """Changes the bit-width of a quantizer made dynamic by
        ``enable_dynamic_bits`` (Python attribute and variable)."""
        if self._bits_var is None:
            raise ValueError(
                f"{self!r} has static bits; call enable_dynamic_bits() "
                "first (or rebuild the model with quantize_model).")
        b = check_bits(bits, "bits", allow_float=False)
        self._check_dynamic_bits(b)
        self.bits = b
        self._bits_var.assign(float(b))

    @property
    def built(self) -> bool:
        return self._layer is not None

    def get_config(self) -> dict:
        return {"bits": self.bits}

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def with_bits(self, bits: int):
        """An unbuilt copy of this quantizer at another bit-width."""
        cfg = self.get_config()
        cfg["bits"] = bits
        return type(self).from_config(cfg)

    def copy(self):
        """An unbuilt copy with the same configuration."""
        return type(self).from_config(self.get_config())

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other) -> bool:
        return (type(self) is type(other)
                and self.get_config() == other.get_config())

    def __hash__(self):  # configuration objects; identity hashing is fine
        return id(self)


class WeightQuantizer(Quantizer):
    """Base of weight quantizers.

    ``build(layer, kernel_shape, reduce_axes, name)`` creates the state on
    ``layer``; ``reduce_axes`` are the kernel axes that a per-channel scale
    reduces over (all but the output-channel axes).
    """

    def build(self, layer, kernel_shape, reduce_axes, name: str = "kernel"):
        self._layer = layer
        self._prefix = name
        self._kernel_shape = tuple(int(d) for d in kernel_shape)
        self._reduce_axes = tuple(int(a) for a in reduce_axes)

    def refresh(self, kernel) -> None:
        """Recomputes data-dependent state (clip ratio, centroids) from a
        kernel value; a no-op for quantizers without such state."""

    def integer_codes(self, kernel):
        """``(codes, scale)`` with ``codes * scale`` equal to the quantized
        kernel; ``scale`` broadcasts against ``codes``. numpy in, numpy out.
        """
        raise NotImplementedError

    def channel_scale(self, kernel):
        """The per-output-channel scale of ``integer_codes`` as a tensor
        (keepdims layout, ``keras.ops``); used to put the bias on the
        ``s_in * s_w`` accumulator grid."""
        raise NotImplementedError


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
        linear = lo + (hi - lo) * ops.arange(k, dtype="float32") / max(k - 1,
                                                                        1)
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


class ActivationQuantizer(Quantizer):
    """Activation quantizer with an EMA-calibrated or learned range.

    Unsigned (``signed=False``, after a ReLU): range ``[0, c]``, scale
    ``s = c / (2^b - 1)``, ``q(x) = s * clip(round(x / s), 0, 2^b - 1)``.
    Signed (``signed=True``): affine range ``[lo, hi]`` with ``lo <= 0 <= hi``,
    ``s = (hi - lo) / (2^b - 1)``, integer zero point ``z = round(-lo / s)``,
    ``q(x) = s * (clip(round(x / s) + z, 0, 2^b - 1) - z)`` - the grid
    TensorFlow's FakeQuant and TFLite's int8 tensors use.

    ``range_mode="ema"``: in training, ``c <- m c + (1 - m) max(batch)``
    (the first batch initialises it). ``range_mode="learned"``: ``c`` (and
    ``lo``) are trainable, with PACT's straight-through gradient (1 where
    the input is clipped). Until the quantizer has seen data (training or
    ``tfcomp.quantization.calibrate``) it passes its input through, and
    int8 export refuses it.

    Args:
        bits: activation bit-width in [1, 8].
        signed: whether inputs may be negative (affine range).
        range_mode: "ema" or "learned".
        momentum: EMA momentum.
        init_range: initial ``c`` (and ``-lo`` when signed) of a learned
            range.

    Reference: Wang et al., HAQ, arXiv:1811.08886; Choi et al., PACT,
    arXiv:1805.06085; Jacob et al., arXiv:1712.05877 (EMA ranges).

    Example:
        >>> q = ActivationQuantizer(bits=4, signed=False)
    """

    def __init__(self, bits: int = 8, signed: bool = False,
                 range_mode: str = "ema", momentum: float = 0.99,
                 init_range: float = 6.0):
        super().__init__(bits)
        if range_mode not in ("ema", "learned"):
            raise ValueError(
                "range_mode must be 'ema' or 'learned'. Received: "
                f"range_mode={range_mode!r}")
        if not 0.0 <= float(momentum) < 1.0:
            raise ValueError(
                f"momentum must be in [0, 1). Received: momentum={momentum}")
        if not float(init_range) > 0:
            raise ValueError(
                f"init_range must be > 0. Received: init_range={init_range}")
        self.signed = bool(signed)
        self.range_mode = range_mode
        self.momentum = float(momentum)
        self.init_range = float(init_range)
        self._source = None
        self._link_var = None

    def share_range(self, source) -> None:
        """Takes the grid from ``source`` (another built quantizer of the same
        bits and signedness) instead of this quantizer's own range.

        ``quantize_model`` links a layer's input quantizer to the 8-bit
        ``QuantActivation`` that already quantizes its input (a tensor with
        several consumers): re-quantizing onto a slightly different grid of
        the same width would round twice, which an int8 TFLite tensor (one
        scale per tensor) cannot represent. With the shared grid the second
        quantization is the identity. The link lives in memory;
        ``link_shared_inputs`` (called by ``quantize_model``, ``calibrate``
        and int8 export) restores it on a loaded model.

        Example:
            >>> layer.input_quantizer.share_range(observer.quantizer)
        """
        if source is not None and (
                source.bits != self.bits or source.signed != self.signed
                or source.range_mode != self.range_mode):
            raise ValueError(
                "share_range needs a quantizer with the same bits, "
                f"signedness and range mode. Received: {source!r} for "
                f"{self!r}")
        self._source = source

    def _ranges(self):
        if self._link_var is not None:
            # dynamic bits: shared only while the bit-widths match
            src, on = self._link_source, self._link_var > 0
            lo = (ops.where(on, src.range_min, self.range_min)
                  if self.signed else None)
            return lo, ops.where(on, src.range_max, self.range_max)
        src = self._source if self._source is not None else self
        return src.range_min, src.range_max

    @property
    def levels(self) -> int:
        return 2 ** self.bits - 1

    def _levels_tensor(self):
        if self._bits_var is None:
            return float(self.levels)
        return ops.power(2.0, self._bits_var) - 1.0

    def enable_dynamic_bits(self, range_source=None) -> None:
        """As ``Quantizer.enable_dynamic_bits``; ``range_source`` is the
        observer whose grid this quantizer shares (see ``share_range``)
        while both have the same bits, at run time."""
        super().enable_dynamic_bits()
        if range_source is not None and self._link_var is None:
            if (range_source.signed != self.signed
                    or range_source.range_mode != self.range_mode):
                raise ValueError(
                    "range_source needs the same signedness and range mode."
                    f" Received: {range_source!r} for {self!r}")
            self._link_source = range_source
            self._link_var = keras.Variable(
                0.0, trainable=False, dtype="float32",
                name=f"{self._prefix}_dynamic_link")
        self._update_link()

    def set_bits(self, bits: int) -> None:
        super().set_bits(bits)
        self._update_link()

    def _update_link(self) -> None:
        if self._link_var is not None:
            self._link_var.assign(
                1.0 if self._link_source.bits == self.bits else 0.0)

    def get_config(self) -> dict:
        return {"bits": self.bits, "signed": self.signed,
                "range_mode": self.range_mode, "momentum": self.momentum,
                "init_range": self.init_range}

    def build(self, layer, name: str = "input"):
        self._layer = layer
        self._prefix = name
        learned = self.range_mode == "learned"
        init = self.init_range if learned else 0.0
        self.range_max = layer.add_weight(
            name=f"{name}_max", shape=(),
            initializer=keras.initializers.Constant(init), trainable=learned)
        self.range_min = None
        if self.signed:
            self.range_min = layer.add_weight(
                name=f"{name}_min", shape=(),
                initializer=keras.initializers.Constant(-init),
                trainable=learned)
        self.seen = layer.add_weight(
            name=f"{name}_seen", shape=(), initializer="zeros",
            trainable=False)

    # -- range handling -------------------------------------------------
    def _update_ema(self, x):
        m = self.momentum
        seen = self.seen > 0
        bmax = ops.maximum(ops.max(x), 0.0)
        new_max = ops.where(seen, m * self.range_max + (1 - m) * bmax, bmax)
        self.range_max.assign(new_max)
        if self.signed:
            bmin = ops.minimum(ops.min(x), 0.0)
            new_min = ops.where(seen, m * self.range_min + (1 - m) * bmin,
                                bmin)
            self.range_min.assign(new_min)

    def grid(self):
        """``(scale, zero_point, lo, hi)`` tensors of the current grid
        (``lo``/``hi`` differentiable for learned ranges)."""
        range_min, range_max = self._ranges()
        hi = ops.maximum(range_max, 0.0)
        lo = ops.minimum(range_min, 0.0) if self.signed else 0.0
        levels = self._levels_tensor()
        s = ops.maximum(hi - lo, _EPS) / levels
        if self.signed:
            z = ops.clip(_floor_round(ops.stop_gradient(-lo / s)), 0.0,
                         levels)
        else:
            z = 0.0
        return s, z, lo, hi

    def quantize(self, x, training=False):
        """Fake-quantized ``x`` with straight-through gradients.

        For ``b >= 2`` this is one fused op,
        ``keras.quantizers.fake_quant_with_min_max_vars`` (TensorFlow's
        FakeQuant kernel on the TF backend: the same nudged grid TFLite
        uses, clipped-STE input gradient and PACT-style range gradients);
        With dynamic bits the op (whose bit-width is a constant) is chosen
        at run time among one per bit-width (``keras.ops.switch``);
        ``b = 1`` uses the explicit formula below.
        """
        s, z, lo, hi = self.grid()
        if self.bits >= 2:
            lo_t = ops.convert_to_tensor(lo, "float32")
            hi_t = ops.maximum(hi, lo_t + _EPS)
            if self._bits_var is None:
                return keras.quantizers.fake_quant_with_min_max_vars(
                    x, lo_t, hi_t, num_bits=self.bits, narrow_range=False)
            branches = [
                (lambda v, a, b, n=n: keras.quantizers
                 .fake_quant_with_min_max_vars(v, a, b, num_bits=n,
                                               narrow_range=False))
                for n in range(2, 9)]
            index = ops.cast(self._bits_var, "int32") - 2
            return ops.switch(index, branches, x, lo_t, hi_t)
        sg_s = ops.stop_gradient(s)
        levels = self._levels_tensor()
        codes = ops.clip(_floor_round(x / sg_s) + z, 0.0, levels)
        q = (codes - z) * sg_s
        # Clipped straight-through: gradient 1 inside the range; for learned
        # ranges the clip also carries PACT's gradient to lo / hi.
        if self.range_mode == "learned":
            y = ops.minimum(x, hi)
            y = ops.maximum(y, lo) if self.signed else ops.maximum(y, 0.0)
        else:
            y = ops.clip(x, -z * sg_s, (levels - z) * sg_s)
        return _ste(y, q)

    def __call__(self, x, training=False):
        x = ops.convert_to_tensor(x)
        if training:
            if self.range_mode == "ema":
                self._update_ema(ops.stop_gradient(x))
            self.seen.assign(1.0)
        # Before any data the quantizer is the identity (cond: one branch).
        return ops.cond(self.seen > 0, lambda: self.quantize(x, training),
                        lambda: x)

    # -- numpy helpers ----------------------------------------------------
    def numpy_grid(self):
        """``(scale, zero_point)`` as Python floats / ints (for export)."""
        range_min, range_max = self._ranges()
        hi = max(float(keras.ops.convert_to_numpy(range_max)), 0.0)
        lo = (min(float(keras.ops.convert_to_numpy(range_min)), 0.0)
              if self.signed else 0.0)
        s = max(hi - lo, _EPS) / self.levels
        z = int(min(max(math.floor(-lo / s + 0.5), 0), self.levels))
        return s, z

    def set_range(self, lo: float, hi: float) -> None:
        """Sets the range (used by ``calibrate``) and marks it as seen."""
        self.range_max.assign(max(float(hi), 0.0))
        if self.signed:
            self.range_min.assign(min(float(lo), 0.0))
        self.seen.assign(1.0)

    @property
    def calibrated(self) -> bool:
        return bool(keras.ops.convert_to_numpy(self.seen) > 0)


# ---------------------------------------------------------------------------
# Registry.
# ---------------------------------------------------------------------------

_CLASSES = {c.__name__: c for c in (SymmetricQuantizer, KMeansQuantizer,
                                    ActivationQuantizer)}

ALIASES = {
    "symmetric": (SymmetricQuantizer, {}),
    "symmetric_max": (SymmetricQuantizer, {"clip": "max"}),
    "symmetric_kl": (SymmetricQuantizer, {"clip": "kl"}),
    "per_tensor": (SymmetricQuantizer, {"per_channel": False}),
    "kmeans": (KMeansQuantizer, {}),
    "unsigned": (ActivationQuantizer, {"signed": False}),
    "signed": (ActivationQuantizer, {"signed": True}),
    "pact": (ActivationQuantizer, {"signed": False, "range_mode": "learned"}),
}


def serialize(quantizer) -> dict | None:
    """Serialises a quantizer to ``{"class_name", "config"}`` (None -> None).

    Example:
        >>> serialize(SymmetricQuantizer(4))
        {'class_name': 'SymmetricQuantizer', 'config': {...}}
    """
    if quantizer is None:
        return None
    if not isinstance(quantizer, Quantizer):
        raise TypeError(
            "serialize() expects a tfcomp Quantizer. Received: "
            f"{type(quantizer)!r}")
    return {"class_name": type(quantizer).__name__,
            "config": quantizer.get_config()}


def deserialize(config) -> Quantizer | None:
    """Inverse of ``serialize``.

    Example:
        >>> deserialize({"class_name": "KMeansQuantizer",
        ...              "config": {"bits": 4}}).bits
        4
    """
    if config is None:
        return None
    if not isinstance(config, dict) or "class_name" not in config:
        raise ValueError(
            "A serialised quantizer is a dict with 'class_name' and 'config'."
            f" Received: {config!r}")
    name = config["class_name"]
    if name not in _CLASSES:
        raise ValueError(
            f"Unknown quantizer class {name!r}. Known: {sorted(_CLASSES)}")
    return _CLASSES[name].from_config(dict(config.get("config", {})))


def get(identifier) -> Quantizer | None:
    """Resolves a quantizer from an alias, a serialised dict or an instance.

    Aliases: ``"symmetric"`` (clip auto), ``"symmetric_max"``,
    ``"symmetric_kl"``, ``"per_tensor"``, ``"kmeans"`` (weights);
    ``"unsigned"``, ``"signed"``, ``"pact"`` (activations). Instances are
    copied (a quantizer's state belongs to one layer).

    Example:
        >>> get("kmeans")
        KMeansQuantizer(bits=4, iters=30, seed=0)
    """
    if identifier is None:
        return None
    if isinstance(identifier, Quantizer):
        return identifier.copy()
    if isinstance(identifier, str):
        if identifier not in ALIASES:
            raise ValueError(
                f"Unknown quantizer alias {identifier!r}. Known aliases: "
                f"{sorted(ALIASES)}")
        cls, kwargs = ALIASES[identifier]
        return cls(**kwargs)
    if isinstance(identifier, dict):
        return deserialize(identifier)
    raise TypeError(
        "A quantizer must be None, an alias string, a serialised dict or a "
        f"Quantizer instance. Received: {identifier!r}")
