"""TuckerConv2D, TuckerTensor, TNetConv2D: HOSVD exactness at full rank,
truncated HOSVD, parameter counts, rank errors, the layer contract."""

import keras
import numpy as np
import pytest

from tfcomp.layers.tucker import (
    TNetConv2D,
    TuckerConv2D,
    TuckerTensor,
    hosvd,
    resolve_ranks,
    tucker_params,
    tucker_to_tensor,
)
from tfcomp.testing import run_layer_test


def _np(t):
    return keras.ops.convert_to_numpy(t)


def _conv(cin=6, cout=5, k=3, **kw):
    conv = keras.layers.Conv2D(cout, k, padding="same", **kw)
    conv.build((None, 8, 8, cin))
    conv.bias.assign(np.random.default_rng(1).normal(size=cout)
                     .astype("float32"))
    return conv


def test_from_conv_full_rank_equals_conv():
    conv = _conv(activation="relu", strides=2)
    t = TuckerConv2D.from_conv(conv)
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 6)).astype("float32")
    np.testing.assert_allclose(_np(t(x)), _np(conv(x)), atol=1e-5)
    np.testing.assert_allclose(t.dense_kernel(), _np(conv.kernel), atol=1e-6)
    assert t.resolved_ranks == (3, 3, 6, 5) and t.strides == (2, 2)
    assert t.name == conv.name


def test_full_rank_where_a_mode_exceeds_its_unfolding():
    # Cout = 20 > kh * kw * Cin = 9: U_cout must be completed to a basis.
    conv = _conv(cin=1, cout=20)
    t = TuckerConv2D.from_conv(conv)
    np.testing.assert_allclose(t.dense_kernel(), _np(conv.kernel), atol=1e-6)


def test_truncated_hosvd_and_param_count():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 3, 6, 5))
    ranks = (2, 3, 4, 2)
    core, factors = hosvd(w, ranks)
    assert core.shape == ranks
    for u, r, i in zip(factors, ranks, w.shape):
        assert u.shape == (i, r)
        np.testing.assert_allclose(u.T @ u, np.eye(r), atol=1e-10)
    # core = W x_n U_n^T (projection onto the leading subspaces)
    proj = np.einsum("abcd,aA,bB,cC,dD->ABCD", w, *factors)
    np.testing.assert_allclose(core, proj, atol=1e-10)
    conv = _conv()
    conv.kernel.assign(w.astype("float32"))
    t = TuckerConv2D.from_conv(conv, ranks=ranks)
    np.testing.assert_allclose(
        t.dense_kernel(), tucker_to_tensor(core, factors), atol=1e-5)
    # params = prod(R) + sum(I * R) (+ bias)
    expected = 2 * 3 * 4 * 2 + 3 * 2 + 3 * 3 + 6 * 4 + 5 * 2
    assert tucker_params(w.shape, ranks) == expected
    assert t.count_params() == expected + 5
    # a lower rank reconstructs worse
    err = [np.linalg.norm(tucker_to_tensor(*hosvd(w, (3, 3, r, 5))) - w)
           for r in (6, 4, 2)]
    assert err[0] < 1e-10 < err[1] < err[2]


def test_rank_errors_name_mode_size_and_rank():
    with pytest.raises(ValueError, match=r"'kernel height'.*\[1, 3\].*"
                       r"Received: rank 4"):
        TuckerConv2D(8, 3, ranks=(4, 3, 2, 2))
    with pytest.raises(ValueError, match=r"'input channels'.*\[1, 6\].*"
                       r"rank 7"):
        TuckerConv2D.from_conv(_conv(), ranks=(3, 3, 7, 2))
    layer = TuckerConv2D(8, 3, ranks=(3, 3, 9, 2))
    with pytest.raises(ValueError, match=r"'input channels'.*size is 6"):
        layer(np.zeros((1, 8, 8, 6), "float32"))
    with pytest.raises(ValueError, match=r"'output channels'.*\[1, 8\]"):
        TuckerConv2D(8, 3, ranks=(1, 1, 1, 9))
    with pytest.raises(ValueError, match="at least 1"):
        TuckerConv2D(8, 3, ranks=(1, 1, 0, 1))
    with pytest.raises(ValueError, match="one rank per mode"):
        TuckerConv2D(8, 3, ranks=(1, 1, 1))
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        TuckerConv2D(8, 3, ranks=1.5)
    with pytest.raises(TypeError, match="ranks must be"):
        TuckerConv2D(8, 3, ranks="low")
    with pytest.raises(TypeError, match="built keras.layers.Conv2D"):
        TuckerConv2D.from_conv(keras.layers.Dense(3))
    grouped = keras.layers.Conv2D(4, 3, groups=2)
    grouped.build((None, 8, 8, 4))
    with pytest.raises(ValueError, match="groups=2"):
        TuckerConv2D.from_conv(grouped)


def test_fraction_ranks_fit_the_budget():
    shape = (4, 3, 3, 16, 16)
    for f in (1.0, 0.5, 0.25, 0.125):
        r = resolve_ranks(shape, f)
        assert tucker_params(shape, r) <= f * np.prod(shape)
        bigger = tuple(min(i, x + 1) for i, x in zip(shape, r))
        assert bigger == shape or tucker_params(shape, bigger) > \
            0.5 * f * np.prod(shape)


def test_run_layer_test_tucker_conv():
    run_layer_test(TuckerConv2D,
                   {"filters": 4, "kernel_size": 3, "ranks": (2, 3, 2, 3),
                    "padding": "same", "activation": "relu"},
                   (2, 6, 6, 3), (2, 6, 6, 4),
                   expected_num_trainable_weights=6)
    run_layer_test(TuckerConv2D, {"filters": 4, "kernel_size": (3, 1),
                                  "ranks": 0.5, "use_bias": False},
                   (2, 6, 6, 3), (2, 4, 6, 4),
                   expected_num_trainable_weights=5, mixed_precision=False)


def test_init_keeps_the_initializer_scale():
    layer = TuckerConv2D(32, 3, ranks=(2, 2, 8, 8))
    layer.build((None, 8, 8, 32))
    std = float(np.std(layer.dense_kernel()))
    glorot = np.sqrt(2.0 / (9 * 32 + 9 * 32))
    assert 0.6 * glorot < std < 1.4 * glorot


def test_channels_first():
    conv = keras.layers.Conv2D(4, 3, data_format="channels_first")
    conv.build((None, 3, 8, 8))
    t = TuckerConv2D.from_conv(conv)
    x = np.random.default_rng(0).normal(size=(2, 3, 8, 8)).astype("float32")
    np.testing.assert_allclose(_np(t(x)), _np(conv(x)), atol=1e-5)


def test_tucker_tensor_and_slice_conv():
    # TuckerTensor outputs no batch axis: a batch of L rows makes the
    # contract's training step line up.
    run_layer_test(TuckerTensor, {"shape": (2, 3, 3, 2, 2),
                                  "ranks": (2, 2, 2, 2, 1)},
                   (2, 1), (2, 3, 3, 2, 2), symbolic=False,
                   expected_num_trainable_weights=6)
    kernels = TuckerTensor((2, 3, 3, 4, 4), ranks=None)
    x = np.random.default_rng(0).normal(size=(1, 6, 6, 4)).astype("float32")
    k = kernels(x)
    conv = TNetConv2D(4, 3, index=1, padding="same", activation="relu")
    y = conv(x, k)
    ref = keras.layers.Conv2D.from_config(conv.conv_config())
    ref.build(x.shape)
    ref.kernel.assign(_np(k)[1])
    ref.bias.assign(_np(conv.bias))
    np.testing.assert_allclose(_np(y), _np(ref(x)), atol=1e-5)
    again = TNetConv2D.from_config(conv.get_config())
    assert again.get_config() == conv.get_config()
    with pytest.raises(ValueError, match="no slice 2"):
        TNetConv2D(4, 3, index=2)(x, k)
    with pytest.raises(ValueError, match="modes must name"):
        TuckerTensor((2, 3), modes=("a",))
