"""Quantizer objects: grids, level counts, KL clip, k-means, registry."""

import keras
import numpy as np
import pytest

from tfcomp.quantization import quantizers as qz


class _Host(keras.layers.Layer):
    """A bare layer that owns quantizer state."""


def _weight_q(q, w, reduce_axes=(0, 1, 2)):
    host = _Host()
    q.build(host, w.shape, reduce_axes)
    q.refresh(w)
    return q


def _heavy_tailed(seed=0, shape=(3, 3, 32, 8)):
    return (np.random.default_rng(seed).standard_t(3, size=shape) * 0.05
            ).astype("float32")


@pytest.mark.parametrize("bits", [5, 6, 8])
def test_symmetric_scale_is_max_over_qmax(bits):
    w = _heavy_tailed(bits)
    q = _weight_q(qz.SymmetricQuantizer(bits), w)
    codes, scale = q.integer_codes(w)
    qmax = 2 ** (bits - 1) - 1
    np.testing.assert_allclose(
        scale.reshape(-1), np.abs(w).max(axis=(0, 1, 2)) / qmax, rtol=1e-5)
    assert codes.min() >= -qmax and codes.max() <= qmax
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(q(w)), codes * scale, rtol=1e-6)


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 7, 8])
def test_symmetric_levels_at_most_2b_minus_1(bits):
    w = np.random.default_rng(1).normal(size=(3, 3, 16, 4)).astype("float32")
    q = _weight_q(qz.SymmetricQuantizer(bits), w)
    out = keras.ops.convert_to_numpy(q(w))
    for c in range(4):
        assert np.unique(out[..., c]).size <= 2 ** bits - 1
    assert np.unique(out).size <= 4 * (2 ** bits - 1)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_kl_clip_below_max_with_lower_mse_on_heavy_tails(bits):
    w = _heavy_tailed(10 + bits, shape=(4096,))
    t = qz.kl_optimal_threshold(w, 2 ** (bits - 1))
    assert t < np.abs(w).max()

    def mse(c):
        s = c / (2 ** (bits - 1) - 1)
        qw = np.clip(np.round(w / s), -(2 ** (bits - 1) - 1),
                     2 ** (bits - 1) - 1) * s
        return float(np.mean((qw - w) ** 2))

    assert mse(t) < mse(np.abs(w).max())


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_symmetric_auto_uses_kl_clip_at_low_bits(bits):
    w = _heavy_tailed(bits, shape=(3, 3, 64, 4))
    q_kl = _weight_q(qz.SymmetricQuantizer(bits, clip="auto"), w)
    q_max = _weight_q(qz.SymmetricQuantizer(bits, clip="max"), w)
    ratio = float(keras.ops.convert_to_numpy(q_kl.clip_ratio))
    assert 0 < ratio < 1
    err_kl = np.mean((keras.ops.convert_to_numpy(q_kl(w)) - w) ** 2)
    err_max = np.mean((keras.ops.convert_to_numpy(q_max(w)) - w) ** 2)
    assert err_kl < err_max
    assert not qz.SymmetricQuantizer(5).uses_kl


def test_kl_threshold_from_histogram_matches_samples():
    x = np.abs(_heavy_tailed(3, shape=(8192,)))
    h, e = np.histogram(x, bins=1024, range=(0, x.max()))
    assert qz.kl_threshold_from_histogram(h, e, 8) == pytest.approx(
        qz.kl_optimal_threshold(x, 8, num_bins=1024))


def test_kl_clip_of_a_sparse_depthwise_kernel_is_not_degenerate():
    # 16 channels of 3x3 depthwise weights: 144 magnitudes in 1024 bins.
    # One tiny magnitude alone below a candidate threshold made Q equal P
    # there (KL = 0), and the clip collapsed to ~0 (MobileNetV2 at 4 bits
    # scored 10 %).
    rng = np.random.default_rng(0)
    w = (rng.choice([-1.0, 1.0], size=(3, 3, 16, 1))
         * rng.uniform(0.05, 1.0, size=(3, 3, 16, 1))
         * rng.uniform(0.3, 3.0, size=(16, 1))).astype("float32")
    w[0, 0, 0, 0] = 0.0074 * np.abs(w[..., 0, 0]).max()  # bin 7 of 1024
    q = _weight_q(qz.SymmetricQuantizer(4), w, reduce_axes=(0, 1))
    ratio = float(keras.ops.convert_to_numpy(q.clip_ratio))
    assert ratio > 0.5
    q_max = _weight_q(qz.SymmetricQuantizer(4, clip="max"), w,
                      reduce_axes=(0, 1))
    err = np.mean((keras.ops.convert_to_numpy(q(w)) - w) ** 2)
    err_max = np.mean((keras.ops.convert_to_numpy(q_max(w)) - w) ** 2)
    assert err < 2 * err_max


def test_kmeans_at_most_2b_values_and_beats_linear_init():
    w = _heavy_tailed(4, shape=(3, 3, 16, 8))
    q = qz.KMeansQuantizer(bits=3)
    host = _Host()
    q.build(host, w.shape, (0, 1, 2))
    linear = keras.ops.convert_to_numpy(q(w))  # before fitting: linear init
    q.refresh(w)
    fitted = keras.ops.convert_to_numpy(q(w))
    assert np.unique(fitted).size <= 8
    assert np.mean((fitted - w) ** 2) < np.mean((linear - w) ** 2)
    np.testing.assert_allclose(np.sort(np.unique(fitted)),
                               keras.ops.convert_to_numpy(q.centroids),
                               rtol=1e-6)


def test_kmeans_1d_finds_planted_clusters():
    x = np.concatenate([np.full(50, -1.0), np.full(30, 0.2), np.full(20, 3)])
    np.testing.assert_allclose(qz.kmeans_1d(x, 3), [-1.0, 0.2, 3.0],
                               atol=1e-6)


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_unsigned_activation_grid(bits):
    q = qz.ActivationQuantizer(bits, signed=False)
    q.build(_Host())
    q.set_range(0.0, 3.0)
    x = np.linspace(-1, 4, 1001).astype("float32")
    y = keras.ops.convert_to_numpy(q(x))
    s = 3.0 / (2 ** bits - 1)
    assert np.unique(y).size <= 2 ** bits
    np.testing.assert_allclose(y, np.clip(np.floor(x / s + 0.5), 0,
                                          2 ** bits - 1) * s, atol=1e-5)


def test_registry_round_trip_and_aliases():
    for alias in qz.ALIASES:
        q = qz.get(alias)
        back = qz.deserialize(qz.serialize(q))
        assert back == q and back is not q
    assert qz.get("pact").range_mode == "learned"
    assert qz.get("signed").signed
    assert qz.get(None) is None
    assert qz.get(qz.SymmetricQuantizer(3)).bits == 3
    with pytest.raises(ValueError, match="Unknown quantizer alias"):
        qz.get("bogus")
    with pytest.raises(TypeError):
        qz.get(3.5)
    with pytest.raises(ValueError, match="Unknown quantizer class"):
        qz.deserialize({"class_name": "Nope", "config": {}})


@pytest.mark.parametrize("value", [0, 9, 16, 33, -1, 4.0, "8", True, None])
def test_check_bits_rejects(value):
    with pytest.raises(ValueError, match="bits must be an integer"):
        qz.check_bits(value)


def test_check_bits_accepts_float_marker_only_when_allowed():
    assert qz.check_bits(32) == 32
    assert qz.check_bits(np.int64(4)) == 4
    with pytest.raises(ValueError, match=r"\[1, 8\]"):
        qz.check_bits(32, allow_float=False)
