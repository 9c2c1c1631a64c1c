"""Quantization-aware and DNAS mixed layers: the layer contract, levels, STE."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcomp.layers import (
    MixedQuantConv2D,
    MixedQuantDense,
    MixedQuantDepthwiseConv2D,
    QuantActivation,
    QuantConv1D,
    QuantConv2D,
    QuantConv2DTranspose,
    QuantConv3D,
    QuantDense,
    QuantDepthwiseConv2D,
    QuantEinsumDense,
    QuantEmbedding,
    QuantReLU,
)
from tfcomp.testing import run_layer_test


def _f(v):
    return float(keras.ops.convert_to_numpy(v))


LAYER_CASES = [
    (QuantConv2D, dict(filters=4, kernel_size=3, padding="same", w_bits=4,
                       a_bits=4), (2, 8, 8, 3), (2, 8, 8, 4)),
    (QuantConv2D, dict(filters=4, kernel_size=3, w_bits=8, a_bits=8,
                       input_quantizer="signed", weight_quantizer="kmeans",
                       activation="relu"), (2, 8, 8, 3), (2, 6, 6, 4)),
    (QuantDepthwiseConv2D, dict(kernel_size=3, depth_multiplier=2, w_bits=2,
                                a_bits=3), (2, 8, 8, 3), (2, 6, 6, 6)),
    (QuantDense, dict(units=5, w_bits=1, a_bits=8, input_quantizer="pact"),
     (2, 7), (2, 5)),
    (QuantDense, dict(units=5, w_bits=32, a_bits=32), (2, 7), (2, 5)),
    (QuantActivation, dict(a_bits=4), (2, 7), (2, 7)),
    (QuantReLU, dict(a_bits=4, max_value=6.0,
                     quantizer={"class_name": "ActivationQuantizer",
                                "config": {"range_mode": "learned",
                                           "init_range": 0.5}}),
     (2, 7), (2, 7)),
    (MixedQuantConv2D, dict(filters=4, kernel_size=3,
                            candidates=[(2, 4), (4, 4), (8, 8)], seed=1),
     (2, 8, 8, 3), (2, 6, 6, 4)),
    (MixedQuantDepthwiseConv2D, dict(kernel_size=3, candidates=[(2, 4),
                                                                (8, 8)],
                                     seed=1), (2, 8, 8, 3), (2, 6, 6, 3)),
    (MixedQuantDense, dict(units=3, candidates=[(2, 4), (8, 8)], seed=1),
     (2, 7), (2, 3)),
    (QuantConv1D, dict(filters=4, kernel_size=3, padding="causal", w_bits=4,
                       a_bits=4, dilation_rate=2), (2, 9, 3), (2, 9, 4)),
    (QuantConv3D, dict(filters=4, kernel_size=3, padding="same", w_bits=8,
                       a_bits=8), (2, 4, 4, 4, 2), (2, 4, 4, 4, 4)),
    (QuantConv2DTranspose, dict(filters=4, kernel_size=3, strides=2,
                                padding="same", w_bits=4, a_bits=8),
     (2, 4, 4, 3), (2, 8, 8, 4)),
    (QuantEinsumDense, dict(equation="abc,cde->abde", output_shape=(None, 2, 3),
                            bias_axes="de", w_bits=4, a_bits=8),
     (2, 5, 4), (2, 5, 2, 3)),
]


@pytest.mark.parametrize("cls,kwargs,in_shape,out_shape", LAYER_CASES,
                         ids=[f"{c[0].__name__}-{i}"
                              for i, c in enumerate(LAYER_CASES)])
def test_layer_contract(cls, kwargs, in_shape, out_shape):
    layer = run_layer_test(cls, kwargs, in_shape, out_shape)
    assert layer.built


def test_quant_embedding_contract():
    ids = np.random.default_rng(0).integers(0, 10, (2, 6)).astype("int32")
    layer = run_layer_test(QuantEmbedding, dict(input_dim=10, output_dim=4,
                                                w_bits=4),
                           (2, 6), (2, 6, 4), input_data=ids, train=False)
    table = layer.quantized_kernel()
    assert np.unique(table).size <= 15  # one 4-bit grid for the table


def test_einsum_dense_needs_a_dense_like_equation():
    with pytest.raises(ValueError, match="dense-like"):
        QuantEinsumDense("abc,acd->abd", (None, 4))


@pytest.mark.parametrize("kwargs", [dict(w_bits=9), dict(a_bits=0),
                                    dict(w_bits=16), dict(a_bits=True),
                                    dict(w_bits="4"), dict(w_bits=2.5)])
def test_bits_out_of_range_raise(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        QuantConv2D(2, 3, **kwargs)


def test_bad_quantizer_kind_raises():
    with pytest.raises(TypeError, match="weight_quantizer"):
        QuantDense(3, weight_quantizer="unsigned")
    with pytest.raises(ValueError, match="alias"):
        QuantDense(3, input_quantizer="nope")


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8])
def test_conv_weight_levels_per_channel(bits):
    layer = QuantConv2D(6, 3, w_bits=bits, a_bits=8)
    layer.build((None, 8, 8, 4))
    rng = np.random.default_rng(bits)
    layer.kernel.assign(rng.standard_t(3, size=layer.kernel.shape) * 0.1)
    layer.refresh_weight_quantizer()
    q = layer.quantized_kernel()
    for c in range(q.shape[-1]):
        assert np.unique(q[..., c]).size <= 2 ** bits - 1
    if bits >= 5:  # max clip: the extreme weight is a level
        w = keras.ops.convert_to_numpy(layer.kernel)
        np.testing.assert_allclose(np.abs(q).max(axis=(0, 1, 2)),
                                   np.abs(w).max(axis=(0, 1, 2)), rtol=1e-5)


def test_binary_weights_have_two_levels():
    layer = QuantDense(4, w_bits=1)
    layer.build((None, 16))
    q = layer.quantized_kernel()
    for c in range(4):
        vals = np.unique(q[:, c])
        assert vals.size == 2 and np.isclose(vals[0], -vals[1])


def test_depthwise_levels_per_output_channel():
    layer = QuantDepthwiseConv2D(3, depth_multiplier=2, w_bits=3)
    layer.build((None, 8, 8, 5))
    q = layer.quantized_kernel()  # (3, 3, 5, 2)
    for ci in range(5):
        for m in range(2):
            assert np.unique(q[:, :, ci, m]).size <= 7


def test_weight_ste_gradient_is_identity_through_quantizer():
    layer = QuantConv2D(3, 3, w_bits=3, a_bits=32)
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 2)).astype("float32")
    layer.build(x.shape)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x) ** 2)
    g = tape.gradient(loss, layer.kernel.value)
    qk = tf.constant(layer.quantized_kernel())
    with tf.GradientTape() as tape2:
        tape2.watch(qk)
        y = tf.nn.conv2d(x, qk, 1, "VALID") + layer.bias
        loss2 = tf.reduce_sum(y ** 2)
    g_ref = tape2.gradient(loss2, qk)
    np.testing.assert_allclose(g.numpy(), g_ref.numpy(), rtol=1e-5,
                               atol=1e-5)


def test_activation_ste_is_clipped_identity():
    layer = QuantActivation(a_bits=4, quantizer="unsigned")
    layer.build((None, 6))
    layer.quantizer.set_range(0.0, 2.0)
    x = tf.constant([[-1.0, 0.3, 0.7, 1.5, 2.5, 3.0]])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
    g = tape.gradient(y, x).numpy()
    np.testing.assert_array_equal(g, [[0, 1, 1, 1, 0, 0]])
    # values: unsigned 4-bit grid of [0, 2]
    s = 2.0 / 15
    np.testing.assert_allclose(
        y.numpy(), [[0, round(0.3 / s) * s, round(0.7 / s) * s,
                     round(1.5 / s) * s, 2.0, 2.0]], atol=1e-6)


def test_pact_gradient_reaches_clip_value():
    layer = QuantReLU(a_bits=4, quantizer="pact")
    layer.build((None, 5))
    layer.quantizer.set_range(0.0, 1.0)
    x = tf.constant([[0.2, 0.5, 1.5, 2.0, 3.0]])
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(layer(x, training=True))
    g = tape.gradient(y, layer.quantizer.range_max.value)
    assert float(g) == pytest.approx(3.0)  # three inputs above c = 1


def test_ema_range_and_passthrough_before_data():
    layer = QuantActivation(a_bits=8, quantizer={
        "class_name": "ActivationQuantizer",
        "config": {"signed": False, "momentum": 0.9}})
    x1 = np.array([[0.1, 2.0, 1.3]], "float32")
    y0 = keras.ops.convert_to_numpy(layer(x1, training=False))
    np.testing.assert_array_equal(y0, x1)  # never saw data: pass-through
    layer(x1, training=True)
    assert _f(layer.quantizer.range_max) == pytest.approx(2.0)
    layer(np.array([[4.0]], "float32"), training=True)
    assert _f(layer.quantizer.range_max) == pytest.approx(
        0.9 * 2.0 + 0.1 * 4.0)


def test_signed_grid_represents_zero_and_matches_fakequant():
    layer = QuantActivation(a_bits=8, quantizer="signed")
    layer.build((None, 7))
    layer.quantizer.set_range(-1.3, 2.9)
    x = np.linspace(-2, 3.5, 7, dtype="float32")[None]
    y = keras.ops.convert_to_numpy(layer(x))
    s, z = layer.quantizer.numpy_grid()
    ref = tf.quantization.fake_quant_with_min_max_vars(
        x, -z * s, (255 - z) * s, num_bits=8).numpy()
    np.testing.assert_allclose(y, ref, atol=1e-5)
    assert float(keras.ops.convert_to_numpy(layer(np.zeros((1, 7),
                                                           "float32"))).max()
                 ) == 0.0


def test_mixed_layer_inference_uses_argmax_candidate():
    layer = MixedQuantConv2D(4, 3, candidates=[(2, 8), (8, 8)], seed=0)
    x = np.random.default_rng(0).uniform(0, 1, (2, 6, 6, 3)).astype(
        "float32")
    layer(x, training=True)  # sees data: input ranges set
    layer.theta.assign([0.0, 3.0])
    assert layer.best_candidate() == (8, 8)
    assert (layer.w_bits, layer.a_bits) == (8, 8)
    ref = QuantConv2D(4, 3, w_bits=8, a_bits=8)
    ref.build(x.shape)
    ref.kernel.assign(layer.kernel)
    ref.bias.assign(layer.bias)
    ref.input_quantizer.set_range(0.0, _f(
        layer.input_quantizers[8].range_max))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer(x)),
        keras.ops.convert_to_numpy(ref(x)), atol=1e-5)


def test_mixed_candidates_validation():
    with pytest.raises(ValueError, match="duplicates"):
        MixedQuantDense(3, candidates=[(4, 4), (4, 4)])
    with pytest.raises(ValueError, match="w_bits"):
        MixedQuantDense(3, candidates=[(9, 4)])
