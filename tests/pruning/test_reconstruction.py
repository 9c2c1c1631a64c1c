"""Per-layer reconstruction: patch sampling, selectors, least squares."""

import keras
import numpy as np
import pytest

from tfcomp.pruning.reconstruction import (
    LayerSamples,
    channel_contributions,
    layer_kernel,
    least_squares_refit,
    reconstruct_layer,
    reconstruction_error,
    sample_layer,
    sample_patches,
    select_channels,
)


def _planted(seed, m=1500, n=8, wnoise=0.05):
    """16 channels: 4 triples (a, b, a + b) and 4 small independent ones.

    Each triple shares one weight direction ``u``: ``a`` and ``b`` have
    large weights (``3u``), their sum ``c = a + b`` slightly smaller ones
    (``2.5u``): linearly dependent inputs with large weight norms. The sum
    alone carries the whole triple (``5.5 (a + b) u``), so keeping 8
    channels can be lossless (4 sums + 4 independent ones); keeping by
    weight norm takes every ``a`` and ``b`` and loses the independent
    channels; a random choice often keeps a lone ``a`` or ``b`` of a
    triple, which cannot stand for it.
    """
    rng = np.random.default_rng(seed)
    cols, rows, kind = [], [], []
    for _ in range(4):
        a, b = rng.normal(size=(2, m))
        u = rng.normal(size=n)
        cols += [a, b, a + b]
        rows += [3.0 * u + wnoise * rng.normal(size=n),
                 3.0 * u + wnoise * rng.normal(size=n),
                 2.5 * u + wnoise * rng.normal(size=n)]
        kind += ["a", "b", "sum"]
    for _ in range(4):
        cols.append(rng.normal(size=m))
        rows.append(0.5 * rng.normal(size=n))
        kind.append("ind")
    x = np.stack(cols, 1)
    w = np.stack(rows)
    perm = rng.permutation(16)
    x, w = x[:, perm], w[perm]
    kind = np.asarray(kind)[perm]
    return (x[:, None, :].astype("float32"), (x @ w).astype("float32"),
            w[None].astype("float32"), kind)


@pytest.mark.parametrize("cfg", [
    dict(kernel_size=3, strides=1, padding="same"),
    dict(kernel_size=3, strides=2, padding="same"),
    dict(kernel_size=4, strides=2, padding="same", use_bias=True),
    dict(kernel_size=(3, 2), strides=(2, 1), padding="valid"),
    dict(kernel_size=3, dilation_rate=2, padding="same"),
])
def test_conv2d_patches_reproduce_layer_output(cfg):
    rng = np.random.default_rng(0)
    layer = keras.layers.Conv2D(5, **cfg)
    x = rng.normal(size=(3, 9, 8, 4)).astype("float32")
    out = keras.ops.convert_to_numpy(layer(x))
    patches, (img, pos) = sample_patches(layer, x, samples_per_image=7,
                                         seed=1)
    w, b = layer_kernel(layer)
    y = np.einsum("mkp,kpn->mn", patches, w) + (0 if b is None else b)
    ow = out.shape[2]
    assert patches.shape == (21, w.shape[0], 4)
    np.testing.assert_allclose(y, out[img, pos // ow, pos % ow], atol=1e-5)
    # distinct locations per image
    assert all(len(set(pos[img == i])) == 7 for i in range(3))


@pytest.mark.parametrize("padding", ["causal", "same", "valid"])
def test_conv1d_and_dense_patches(padding):
    rng = np.random.default_rng(1)
    conv = keras.layers.Conv1D(5, 3, padding=padding, dilation_rate=2)
    x = rng.normal(size=(3, 11, 4)).astype("float32")
    out = keras.ops.convert_to_numpy(conv(x))
    p, (img, pos) = sample_patches(conv, x, samples_per_image=5)
    w, b = layer_kernel(conv)
    np.testing.assert_allclose(np.einsum("mkp,kpn->mn", p, w) + b,
                               out[img, pos], atol=1e-5)
    dense = keras.layers.Dense(3)
    x3 = rng.normal(size=(6, 5, 4)).astype("float32")
    out = keras.ops.convert_to_numpy(dense(x3))
    p, (img, pos) = sample_patches(dense, x3, samples_per_image=2)
    w, b = layer_kernel(dense)
    assert p.shape == (12, 1, 4)
    np.testing.assert_allclose(np.einsum("mkp,kpn->mn", p, w) + b,
                               out[img, pos], atol=1e-5)
    x2 = x3[:, 0]
    p, (img, _) = sample_patches(dense, x2, samples_per_image=10)
    assert p.shape == (6, 1, 4) and list(img) == list(range(6))


def test_sample_layer_targets_from_original_inputs():
    rng = np.random.default_rng(2)
    conv = keras.layers.Conv2D(4, 3, padding="same", use_bias=True)
    x_orig = rng.normal(size=(2, 6, 6, 3)).astype("float32")
    x_now = x_orig.copy()
    x_now[..., 1] = 0.0  # as if channel 1 had been pruned upstream
    ref = keras.ops.convert_to_numpy(conv(x_orig))
    s = sample_layer(conv, x_now, original_inputs=x_orig,
                     samples_per_image=4, seed=3)
    _, (img, pos) = sample_patches(conv, x_orig, 4, seed=3)
    np.testing.assert_allclose(s.y, ref[img, pos // 6, pos % 6], atol=1e-5)
    assert np.all(s.x[:, :, 1] == 0)


def test_contributions_sum_to_output_with_units():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(20, 1, 12))
    w = rng.normal(size=(1, 12, 5))
    units = np.arange(12) % 3  # Flatten -> Dense: feature s*C + c is c
    z = channel_contributions(x, w, units)
    assert z.shape == (3, 20, 5)
    np.testing.assert_allclose(z.sum(0), x[:, 0] @ w[0], atol=1e-10)


def test_lasso_ls_beats_l1_ls_beats_random_ls_on_planted_channels():
    for seed in range(3):
        x, y, w, kind = _planted(seed)
        s = LayerSamples(x=x, y=y, kernel=w)
        lasso = reconstruct_layer(None, samples=s, num_keep=8)
        l1 = reconstruct_layer(None, samples=s, num_keep=8, selector="l1")
        rand = np.mean([reconstruct_layer(None, samples=s, num_keep=8,
                                          selector="random", seed=r).error
                        for r in range(6)])
        assert lasso.error < l1.error < rand
        assert lasso.error < 0.01 < l1.error
        # LASSO keeps every sum and (nearly) every independent channel;
        # L1 keeps large-norm triple members and no independent channel
        assert (kind[lasso.keep] == "sum").sum() == 4
        assert (kind[lasso.keep] == "ind").sum() >= 3
        assert "ind" not in kind[l1.keep]


def test_lasso_beats_l1_on_planted_conv_channels():
    """Same planted structure through a real Conv2D and patch sampling."""
    rng = np.random.default_rng(5)
    n_img, h = 40, 8
    base = rng.normal(size=(n_img, h, h, 12))
    chans, kind = [], []
    for t in range(4):
        a, b = base[..., 2 * t], base[..., 2 * t + 1]
        chans += [a, b, a + b]
        kind += ["a", "b", "sum"]
    for t in range(4):
        chans.append(base[..., 8 + t])
        kind.append("ind")
    x = np.stack(chans, -1).astype("float32")
    conv = keras.layers.Conv2D(6, 3, padding="same", use_bias=False)
    conv.build(x.shape)
    k = rng.normal(size=(3, 3, 16, 6)).astype("float32")
    for t in range(4):  # one large kernel direction per triple
        shared = rng.normal(size=(3, 3, 6))
        for j, scale in enumerate((3.0, 3.0, 2.5)):
            k[:, :, 3 * t + j, :] = scale * shared
    k[:, :, 12:, :] *= 0.3
    conv.kernel.assign(k)
    s = sample_layer(conv, x, samples_per_image=10, seed=0)
    kind = np.asarray(kind)
    lasso = reconstruct_layer(None, samples=s, num_keep=8)
    l1 = reconstruct_layer(None, samples=s, num_keep=8, selector="l1")
    rand = np.mean([reconstruct_layer(None, samples=s, num_keep=8,
                                      selector="random", seed=r).error
                    for r in range(6)])
    assert lasso.error < l1.error < rand
    assert lasso.error < 0.01
    assert (kind[lasso.keep] == "sum").sum() == 4
    assert (kind[lasso.keep] == "ind").sum() >= 3


def test_bisection_hits_exact_count():
    rng = np.random.default_rng(7)
    x = (rng.normal(size=(400, 9, 24)) *
         rng.uniform(0.2, 2.0, size=24)).astype("float32")
    w = rng.normal(size=(9, 24, 12)).astype("float32")
    y = np.einsum("mkp,kpn->mn", x, w) + 0.1 * rng.normal(size=(400, 12))
    s = LayerSamples(x=x, y=y, kernel=w, bias=np.zeros(12))
    bisected = 0
    for c in (1, 3, 7, 12, 18, 23):
        keep, info = select_channels(s, c, "lasso")
        assert len(keep) == c == len(set(keep.tolist()))
        assert info["exact"] and info["nnz_at_alpha"] == c
        assert info["nnz"][-1] == c or c in info["nnz"]
        bisected += info["bisect_iterations"] > 0
    assert bisected >= 1  # the bisection itself was exercised


def test_ls_refit_beats_zeroing_and_is_exact_when_all_kept():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(300, 4, 10)).astype("float32")
    x[:, :, 5:] += x[:, :, :5]  # correlated inputs
    w = rng.normal(size=(4, 10, 6)).astype("float32")
    b = rng.normal(size=6).astype("float32")
    y = np.einsum("mkp,kpn->mn", x, w) + b
    s = LayerSamples(x=x, y=y, kernel=w, bias=b)
    for sel in ("lasso", "l1", "random"):
        r = reconstruct_layer(None, samples=s, num_keep=5, selector=sel)
        assert r.error < r.error_zeroed
        assert r.kernel.shape == (4, 10, 6)
        assert np.all(r.kernel[:, np.setdiff1d(np.arange(10), r.keep)] == 0)
        assert r.kernel_kept.shape == (4, 5, 6)
    full = reconstruct_layer(None, samples=s, num_keep=10)
    assert full.error < 1e-8
    np.testing.assert_allclose(full.kernel, w, atol=1e-3)
    np.testing.assert_allclose(full.bias, b, atol=1e-3)


def test_reconstruct_layer_on_dense_layer_and_assign():
    rng = np.random.default_rng(9)
    dense = keras.layers.Dense(4, use_bias=True)
    x = rng.normal(size=(200, 8)).astype("float32")
    x[:, 4:] = x[:, :4] * 0.5 + 0.01 * rng.normal(size=(200, 4))
    dense.build(x.shape)
    s = sample_layer(dense, x)
    r = reconstruct_layer(dense, s.x, s.y, num_keep=4)
    dense.kernel.assign(r.kernel)
    dense.bias.assign(r.bias)
    out = keras.ops.convert_to_numpy(dense(x))
    err = np.sum((out - s.y) ** 2) / np.sum((s.y - s.y.mean(0)) ** 2)
    assert abs(err - r.error) < 1e-4
    assert r.error < r.error_zeroed


def test_joint_selection_keeps_channel_needed_by_second_consumer():
    rng = np.random.default_rng(10)
    x = rng.normal(size=(500, 1, 6)).astype("float32")
    w1 = rng.normal(size=(1, 6, 4)).astype("float32")
    w1[:, 5] = 0.0  # consumer 1 ignores channel 5
    w2 = 0.1 * rng.normal(size=(1, 6, 4)).astype("float32")
    w2[:, 5] = 3.0  # consumer 2 depends on it
    s1 = LayerSamples(x=x, y=x[:, 0] @ w1[0], kernel=w1, layer="c1")
    s2 = LayerSamples(x=x, y=x[:, 0] @ w2[0], kernel=w2, layer="c2")
    alone, _ = select_channels(s1, 5)
    joint, _ = select_channels([s1, s2], 5)
    assert 5 not in alone and 5 in joint


def test_errors():
    conv = keras.layers.Conv2D(4, 3)
    conv.build((None, 6, 6, 3))
    with pytest.raises(ValueError, match="empty"):
        sample_patches(conv, np.zeros((0, 6, 6, 3)))
    with pytest.raises(ValueError, match="shape"):
        sample_patches(conv, np.zeros((2, 6, 6, 5)))
    dw = keras.layers.DepthwiseConv2D(3)
    dw.build((None, 6, 6, 3))
    with pytest.raises(ValueError, match="depthwise"):
        sample_patches(dw, np.zeros((2, 6, 6, 3)))
    with pytest.raises(ValueError, match="depthwise"):
        reconstruct_layer(dw, np.zeros((4, 9, 3)), np.zeros((4, 3)),
                          num_keep=1)
    w = np.ones((1, 4, 2), "float32")
    with pytest.raises(ValueError, match="empty"):
        LayerSamples(x=np.zeros((0, 1, 4)), y=np.zeros((0, 2)), kernel=w)
    with pytest.raises(ValueError, match="x of layer"):
        LayerSamples(x=np.zeros((5, 1, 3)), y=np.zeros((5, 2)), kernel=w)
    with pytest.raises(ValueError, match="y of layer"):
        LayerSamples(x=np.zeros((5, 1, 4)), y=np.zeros((4, 2)), kernel=w)
    s = LayerSamples(x=np.ones((5, 1, 4)), y=np.ones((5, 2)), kernel=w)
    with pytest.raises(ValueError, match="empty the layer"):
        select_channels(s, 0)
    with pytest.raises(ValueError, match="num_keep"):
        select_channels(s, 5)
    with pytest.raises(ValueError, match="selector"):
        select_channels(s, 2, "bogus")
    with pytest.raises(ValueError, match="empty the layer"):
        reconstruct_layer(None, samples=s, keep=[])
    with pytest.raises(ValueError, match="exactly one"):
        reconstruct_layer(None, samples=s)
    kernel, bias, pos = least_squares_refit(s, [0, 1])
    assert bias is None and list(pos) == [0, 1]
    assert reconstruction_error(s.x, s.y, kernel) < 1e-6
