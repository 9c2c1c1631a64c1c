"""recalibrate_batchnorm: moving statistics = average of batch statistics."""

import keras
import numpy as np
import pytest

from tfcomp.pruning import recalibrate_batchnorm


def _model():
    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 6, 2))
    h = keras.layers.Conv2D(3, 3, name="c1")(inp)
    h = keras.layers.BatchNormalization(name="bn1")(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.Conv2D(4, 3, name="c2")(h)
    h = keras.layers.BatchNormalization(name="bn2")(h)
    out = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inp, out)


def test_moving_stats_become_the_mean_of_batch_stats():
    model = _model()
    for bn in ("bn1", "bn2"):  # stale statistics
        layer = model.get_layer(bn)
        layer.moving_mean.assign(np.full(layer.moving_mean.shape, 5.0))
        layer.moving_variance.assign(np.full(layer.moving_mean.shape, 9.0))
    x = np.random.default_rng(0).normal(1.0, 2.0, (40, 6, 6, 2)).astype(
        "float32")
    assert recalibrate_batchnorm(model, x, batch_size=16) == 2
    # bn1's input does not depend on BN statistics: check it exactly
    pre = keras.Model(model.input, model.get_layer("c1").output)
    means, variances = [], []
    for a in range(0, 40, 16):
        z = keras.ops.convert_to_numpy(pre(x[a:a + 16])).reshape(-1, 3)
        means.append(z.mean(0))
        variances.append(z.var(0))
    bn1 = model.get_layer("bn1")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn1.moving_mean),
                               np.mean(means, 0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(bn1.moving_variance),
        np.mean(variances, 0), rtol=1e-3, atol=1e-5)
    assert bn1.momentum == 0.99 and model.get_layer("bn2").momentum == 0.99
    # bn2 now normalises its input in inference mode
    out = keras.ops.convert_to_numpy(
        keras.Model(model.input, model.get_layer("bn2").output)(x))
    assert np.abs(out.reshape(-1, 4).mean(0)).max() < 0.1
    # steps limits the batches: one batch -> that batch's statistics
    recalibrate_batchnorm(model, x, batch_size=16, steps=1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn1.moving_mean),
                               means[0], rtol=1e-4, atol=1e-5)


def test_no_batchnorm_and_bad_arguments():
    inp = keras.Input((3,))
    plain = keras.Model(inp, keras.layers.Dense(2)(inp))
    assert recalibrate_batchnorm(plain, np.zeros((4, 3), "float32")) == 0
    model = _model()
    x = np.zeros((4, 6, 6, 2), "float32")
    with pytest.raises(ValueError, match="batch_size"):
        recalibrate_batchnorm(model, x, batch_size=0)
    with pytest.raises(ValueError, match="steps"):
        recalibrate_batchnorm(model, x, steps=0)
    with pytest.raises(ValueError, match="empty"):
        recalibrate_batchnorm(model, x[:0])


def test_takes_the_forms_model_fit_takes():
    """(x, y), tf.data, and for two inputs a list, a dict by input name or
    ([x1, x2], y): the same statistics."""
    import tensorflow as tf
    rng = np.random.default_rng(1)
    x = rng.normal(1.0, 2.0, (32, 6, 6, 2)).astype("float32")
    y = np.zeros(32, "int64")
    model = _model()
    recalibrate_batchnorm(model, x, batch_size=16)
    ref = keras.ops.convert_to_numpy(model.get_layer("bn2").moving_mean)
    for data in ((x, y), tf.data.Dataset.from_tensor_slices((x, y)).batch(8)):
        model = _model()
        recalibrate_batchnorm(model, data, batch_size=16)
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(model.get_layer("bn2").moving_mean),
            ref, rtol=1e-4, atol=1e-5)
    img, meta = keras.Input((6, 6, 2), name="image"), keras.Input(
        (3,), name="meta")
    h = keras.layers.BatchNormalization(name="bn")(
        keras.layers.Conv2D(3, 3)(img))
    h = keras.layers.Concatenate()([keras.layers.GlobalAveragePooling2D()(h),
                                    meta])
    two = keras.Model([img, meta], keras.layers.Dense(2)(h))
    m = rng.normal(size=(32, 3)).astype("float32")
    means = []
    for data in ([x, m], {"meta": m, "image": x}, ([x, m], y)):
        assert recalibrate_batchnorm(two, data, batch_size=16) == 1
        means.append(keras.ops.convert_to_numpy(
            two.get_layer("bn").moving_mean).copy())
    np.testing.assert_allclose(means[1], means[0], rtol=1e-6)
    np.testing.assert_allclose(means[2], means[0], rtol=1e-6)
    with pytest.raises(ValueError, match="x: the model has 2 inputs"):
        recalibrate_batchnorm(two, [x], batch_size=16)
