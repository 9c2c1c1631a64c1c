"""Slimmable layers: a sliced layer equals a standalone layer with the
sliced kernel; width 1.0 equals the plain layer; the layer contract."""

import keras
import numpy as np
import pytest

from tfcomp.layers.slimmable import (
    SlimmableConv2D,
    SlimmableDense,
    SlimmableDepthwiseConv2D,
    SwitchableBatchNormalization,
    active_count,
    width_scope,
)
from tfcomp.testing import run_layer_test


def _x(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


@pytest.mark.parametrize("width", [0.25, 0.5, 0.75, 1.0])
def test_conv_at_width_equals_conv_with_sliced_kernel(width):
    x = _x((2, 8, 8, 8))
    conv = SlimmableConv2D(16, 3, padding="same", activation="relu")
    full = keras.ops.convert_to_numpy(conv(x))
    conv.set_width(width)
    n_in, n_out = active_count(width, 8), active_count(width, 16)
    ref = keras.layers.Conv2D(n_out, 3, padding="same", activation="relu")
    ref.build((None, 8, 8, n_in))
    k = keras.ops.convert_to_numpy(conv.kernel)
    ref.set_weights([k[:, :, :n_in, :n_out],
                     keras.ops.convert_to_numpy(conv.bias)[:n_out]])
    got = keras.ops.convert_to_numpy(conv(x))
    want = keras.ops.convert_to_numpy(ref(x[..., :n_in]))
    np.testing.assert_allclose(got[..., :n_out], want, atol=1e-5)
    assert np.abs(got[..., n_out:]).max(initial=0) == 0.0
    # the in-graph width (sandwich step) gives the same masks
    conv.set_width(1.0)
    with width_scope(width):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(conv(x)), got,
                                   atol=1e-6)
    if width == 1.0:
        np.testing.assert_allclose(got, full, atol=1e-6)


def test_dense_and_depthwise_at_width_equal_sliced_layers():
    x = _x((3, 10))
    fc = SlimmableDense(6)
    fc(x)
    fc.set_width(0.5)
    ref = keras.layers.Dense(3)
    ref.build((None, 5))
    ref.set_weights([keras.ops.convert_to_numpy(fc.kernel)[:5, :3],
                     keras.ops.convert_to_numpy(fc.bias)[:3]])
    got = keras.ops.convert_to_numpy(fc(x))
    np.testing.assert_allclose(got[:, :3], ref(x[:, :5]), atol=1e-5)
    xi = _x((2, 6, 6, 4))
    dw = SlimmableDepthwiseConv2D(3, padding="same", depth_multiplier=2)
    dw(xi)
    dw.set_width(0.5)  # 4 of 8 outputs = input channels 0 and 1
    ref = keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2)
    ref.build((None, 6, 6, 2))
    ref.set_weights([keras.ops.convert_to_numpy(dw.kernel)[:, :, :2],
                     keras.ops.convert_to_numpy(dw.bias)[:4]])
    got = keras.ops.convert_to_numpy(dw(xi))
    np.testing.assert_allclose(got[..., :4], ref(xi[..., :2]), atol=1e-5)
    assert np.abs(got[..., 4:]).max() == 0.0


def test_switchable_bn_keeps_private_rows_per_switch():
    bn = SwitchableBatchNormalization(num_switches=3)
    x = _x((16, 4, 4, 6)) * 3 + 1
    bn(x)
    with width_scope(1.0, switch=2):
        bn(x, training=True)
    mm = keras.ops.convert_to_numpy(bn.moving_mean)
    assert np.all(mm[:2] == 0) and np.all(mm[2] != 0)
    bn.set_switch(2)
    with pytest.raises(ValueError, match="switch must be in"):
        bn.set_switch(3)
    shared = SwitchableBatchNormalization(num_switches=3, shared_affine=True)
    shared(x)
    assert tuple(shared.gamma.shape) == (6,)
    assert tuple(shared.moving_mean.shape) == (3, 6)


def test_active_count_and_bad_widths():
    assert active_count(0.25, 16) == 4
    assert active_count(0.3, 16, step=4) == 4
    assert active_count(0.3, 16, step=3) == 6
    assert active_count(0.01, 16, step=4) == 4
    conv = SlimmableConv2D(4, 1)
    conv.build((None, 4, 4, 2))
    for bad in (0.0, 1.5, -0.2):
        with pytest.raises(ValueError, match=r"width must be in \(0, 1\]"):
            conv.set_width(bad)
    with pytest.raises(ValueError, match="channels_last"):
        SlimmableConv2D(4, 1, data_format="channels_first")


@pytest.mark.parametrize("cls,kwargs,shape", [
    (SlimmableConv2D, {"filters": 4, "kernel_size": 3}, (2, 6, 6, 3)),
    (SlimmableDepthwiseConv2D, {"kernel_size": 3, "depth_multiplier": 2},
     (2, 6, 6, 3)),
    (SlimmableDense, {"units": 5}, (2, 7)),
    (SwitchableBatchNormalization, {"num_switches": 3}, (2, 6, 6, 3)),
    (SwitchableBatchNormalization, {"num_switches": 2,
                                    "shared_affine": True}, (2, 6, 6, 3)),
])
def test_layer_contract(cls, kwargs, shape):
    run_layer_test(cls, kwargs, shape)
