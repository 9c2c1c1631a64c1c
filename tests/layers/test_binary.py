"""Binary layers: one |value| per output channel, STE only inside [-1, 1],
binary activations, the layer contract."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcomp.layers.binary import BinaryConv2D, BinaryDense, ste_sign
from tfcomp.testing import run_layer_test


@pytest.mark.parametrize("cls, kwargs, shape, out", [
    (BinaryConv2D, {"filters": 4, "kernel_size": 3, "padding": "same",
                    "binary_activations": True}, (2, 6, 6, 3), (2, 6, 6, 4)),
    (BinaryConv2D, {"filters": 4, "kernel_size": 3, "strides": 2,
                    "use_bias": False}, (2, 7, 7, 3), (2, 3, 3, 4)),
    (BinaryDense, {"units": 5, "binary_activations": True,
                   "activation": "relu"}, (2, 7), (2, 5)),
])
def test_layer_contract(cls, kwargs, shape, out):
    run_layer_test(cls, kwargs, input_shape=shape, expected_output_shape=out)


@pytest.mark.parametrize("layer, shape", [
    (BinaryConv2D(6, 3, use_bias=False), (1, 5, 5, 4)),
    (BinaryDense(6, use_bias=False), (1, 9))])
def test_one_magnitude_per_output_channel(layer, shape):
    layer.build(shape)
    k = layer.binarized_kernel()
    flat = np.abs(k).reshape(-1, k.shape[-1])
    w = keras.ops.convert_to_numpy(layer.kernel).reshape(-1, k.shape[-1])
    for c in range(k.shape[-1]):
        assert np.unique(flat[:, c]).size == 1
        assert flat[0, c] == pytest.approx(np.abs(w[:, c]).mean())
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    ref = keras.layers.Conv2D(6, 3, use_bias=False) if len(shape) == 4 \
        else keras.layers.Dense(6, use_bias=False)
    ref.build(shape)
    ref.kernel.assign(k)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)),
                               keras.ops.convert_to_numpy(ref(x)),
                               atol=1e-5)


def test_ste_gradient_only_inside_unit_interval():
    x = tf.constant([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = ste_sign(x)
        total = tf.reduce_sum(y * 3.0)
    g = tape.gradient(total, x).numpy()
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(y),
                                  [-1, -1, -1, 1, 1, 1, 1])
    np.testing.assert_array_equal(g, [0, 3, 3, 3, 3, 3, 0])
    dense = BinaryDense(1, use_bias=False)
    dense.build((1, 3))
    dense.kernel.assign([[2.0], [0.5], [-0.25]])
    with tf.GradientTape() as tape:
        out = dense(np.ones((1, 3), "float32"))
    gk = tape.gradient(out, dense.kernel).numpy().ravel()
    assert gk[0] == 0.0 and gk[1] > 0 and gk[2] > 0


def test_binary_activations_and_errors():
    dense = BinaryDense(2, binary_activations=True, use_bias=False)
    x = np.array([[0.3, -4.0, 0.0]], "float32")
    dense.build(x.shape)
    y = keras.ops.convert_to_numpy(dense(x))
    np.testing.assert_allclose(y, np.array([[1, -1, 1]]) @
                               dense.binarized_kernel(), atol=1e-6)
    with pytest.raises(TypeError, match="binary_activations"):
        BinaryConv2D(2, 3, binary_activations=1)
    with pytest.raises(ValueError, match="groups"):
        BinaryConv2D(4, 3, groups=2)
