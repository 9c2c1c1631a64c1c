"""Masked layers: Keras layer contract, forward equals masked weights."""

import keras
import numpy as np
import pytest

from tfcomp.layers.masked import (
    MaskedBatchNormalization,
    MaskedConv2D,
    MaskedDense,
    MaskedDepthwiseConv2D,
)
from tfcomp.testing import run_layer_test


@pytest.mark.parametrize("cls, kwargs, shape, out", [
    (MaskedConv2D, {"filters": 4, "kernel_size": 3, "padding": "same",
                    "channel_mask": True, "weight_mask": True},
     (2, 6, 6, 3), (2, 6, 6, 4)),
    (MaskedDepthwiseConv2D, {"kernel_size": 3, "padding": "same",
                             "depth_multiplier": 2, "weight_mask": True,
                             "channel_mask": True}, (2, 6, 6, 3),
     (2, 6, 6, 6)),
    (MaskedDense, {"units": 5, "weight_mask": True}, (3, 4), (3, 5)),
    (MaskedBatchNormalization, {"channel_mask": True}, (4, 5, 5, 3),
     (4, 5, 5, 3)),
])
def test_layer_contract(cls, kwargs, shape, out):
    run_layer_test(cls, kwargs, input_shape=shape,
                   expected_output_shape=out)


def test_channel_mask_zeroes_outputs_even_with_sigmoid():
    x = np.random.default_rng(0).normal(size=(2, 5, 5, 3)).astype("float32")
    conv = MaskedConv2D(4, 3, padding="same", activation="sigmoid",
                        channel_mask=True)
    conv(x)
    conv.channel_mask_var.assign([1, 0, 1, 0])
    y = keras.ops.convert_to_numpy(conv(x))
    assert np.all(y[..., [1, 3]] == 0) and np.all(y[..., [0, 2]] > 0)
    conv.mask_active.assign(0.0)
    assert np.all(keras.ops.convert_to_numpy(conv(x))[..., 1] > 0)

    bn = MaskedBatchNormalization(channel_mask=True)
    bn(x)
    bn.beta.assign([1.0, 2.0, 3.0])
    bn.channel_mask_var.assign([1, 0, 1])
    for training in (True, False):
        z = keras.ops.convert_to_numpy(bn(x, training=training))
        assert np.all(z[..., 1] == 0) and np.all(z[..., 2] != 0)
    ref = keras.layers.BatchNormalization()
    ref(x)
    ref.set_weights(bn.get_weights()[:4])
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(bn(x, training=False))[..., [0, 2]],
        keras.ops.convert_to_numpy(ref(x, training=False))[..., [0, 2]],
        atol=1e-6)


def test_weight_mask_forward_and_zero_gradient():
    import tensorflow as tf

    x = np.random.default_rng(1).normal(size=(3, 4)).astype("float32")
    dense = MaskedDense(2, weight_mask=True)
    dense(x)
    mask = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], "float32")
    dense.kernel_mask.assign(mask)
    k = keras.ops.convert_to_numpy(dense.kernel)
    b = keras.ops.convert_to_numpy(dense.bias)
    np.testing.assert_allclose(dense(x), x @ (k * mask) + b, atol=1e-6)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(dense(x) ** 2)
    g = tape.gradient(loss, dense.kernel.value)
    assert np.all(g.numpy()[mask == 0] == 0)


def test_bad_switches():
    with pytest.raises(TypeError, match="weight_mask"):
        MaskedConv2D(4, 3, weight_mask="yes")
    with pytest.raises(ValueError, match="no kernel"):
        MaskedBatchNormalization(weight_mask=True)
