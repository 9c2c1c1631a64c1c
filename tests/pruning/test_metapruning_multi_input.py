"""MetaPruning on a functional model with two inputs (image + features)."""

import keras
import numpy as np
import pytest
from keras import layers

import tfcomp
from tfcomp.pruning.metapruning import PAPER_SCALES, PruningNet, kept_count


def _model():
    img = keras.Input((8, 8, 3), name="image")
    meta = keras.Input((6,), name="meta")
    x = layers.Conv2D(8, 3, padding="same", activation="relu",
                      name="c1")(img)
    x = layers.BatchNormalization()(x)
    x = layers.Conv2D(8, 3, padding="same", activation="relu",
                      name="c2")(x)
    x = layers.GlobalAveragePooling2D()(x)
    m = layers.Dense(8, activation="relu", name="m1")(meta)
    h = layers.Concatenate()([x, m])
    h = layers.Dense(16, activation="relu", name="fc")(h)
    return keras.Model([img, meta], layers.Dense(3, name="logits")(h))


def _data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.normal(size=(n, 8, 8, 3)).astype("float32")
    meta = rng.normal(size=(n, 6)).astype("float32")
    y = ((img.mean(axis=(1, 2, 3)) > 0).astype("int64")
         + (meta[:, 0] > 0).astype("int64"))
    return [img, meta], y


def _np(t):
    return keras.ops.convert_to_numpy(t)


def test_fits_one_epoch_on_two_inputs():
    keras.utils.set_random_seed(0)
    net = PruningNet(_model(), seed=0)
    assert net.input_names == ["image", "meta"]
    assert set(net.sizes) == {"c1", "c2", "m1", "fc"}
    x, y = _data()
    net.compile(keras.optimizers.Adam(1e-2),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [_np(v).copy() for v in net.trainable_variables]
    hist = net.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert np.isfinite(hist.history["loss"]).all()
    assert any(np.abs(_np(v) - b).max() > 0
               for v, b in zip(net.trainable_variables, before))


def test_sample_equals_the_net_at_random_widths_with_fewer_macs():
    keras.utils.set_random_seed(0)
    model = _model()
    net = PruningNet(model, seed=0)
    x, _ = _data(32)
    dense = tfcomp.profile(model).macs
    rng = np.random.default_rng(1)
    for _ in range(2):
        widths = {g: kept_count(PAPER_SCALES[rng.integers(25)], n)
                  for g, n in net.sizes.items()}
        # one batch: the recomputed statistics are the batch statistics
        small = net.sample(widths, x, batch_size=len(x[0]))
        assert [t.name for t in small.inputs] == ["image", "meta"]
        for gid, k in widths.items():
            assert small.get_layer(gid).kernel.shape[-1] == k
        net.set_widths(widths)
        np.testing.assert_allclose(_np(small(x, training=False)),
                                   _np(net(x)), atol=1e-4)
        assert tfcomp.profile(small).macs < dense
    net.set_widths(None)


def test_dict_inputs_match_the_list():
    keras.utils.set_random_seed(0)
    net = PruningNet(_model(), seed=0)
    (img, meta), _ = _data(8)
    net.set_widths({g: max(1, n // 2) for g, n in net.sizes.items()})
    ref = _np(net([img, meta]))
    np.testing.assert_allclose(_np(net({"meta": meta, "image": img})), ref,
                               atol=1e-6)
    np.testing.assert_allclose(_np(net((img, meta))), ref, atol=1e-6)
    widths = {g: max(1, n // 2) for g, n in net.sizes.items()}
    a = net.sample(widths, [img, meta])
    b = net.sample(widths, {"meta": meta, "image": img})
    np.testing.assert_allclose(_np(b([img, meta], training=False)),
                               _np(a([img, meta], training=False)),
                               atol=1e-6)
    # the forms model.fit takes: ([x1, x2], y) and a tf.data of them
    import tensorflow as tf
    y = np.zeros(len(img), "int64")
    for data in (([img, meta], y), tf.data.Dataset.from_tensor_slices(
            ((img, meta), y)).batch(4)):
        c = net.sample(widths, data)
        np.testing.assert_allclose(_np(c([img, meta], training=False)),
                                   _np(a([img, meta], training=False)),
                                   atol=1e-5)
    with pytest.raises(ValueError, match=r"2 input\(s\).*image.*meta"):
        net(img)
    with pytest.raises(ValueError, match=r"keys \['image'\]"):
        net({"image": img})
    with pytest.raises(ValueError, match=r"x: the model has 2 inputs.*list of 1"):
        net.sample(widths, [img])


def test_metaprune_on_two_inputs(tmp_path):
    from tfcomp.tuners.metapruning import metaprune

    keras.utils.set_random_seed(0)
    model = _model()
    (img, meta), y = _data(96)
    val = ({"image": img[64:], "meta": meta[64:]}, y[64:])
    plan = metaprune(model, ([img[:64], meta[:64]], y[:64]), val,
                     target_macs=0.5, epochs=1, batch_size=32,
                     bn_samples=48, directory=str(tmp_path), population=3,
                     mutations=0, crossovers=0, generations=1, top_k=2,
                     lower=0.0, verbose=0)
    assert 0.0 <= plan.meta["fitness"] <= 1.0
    small = tfcomp.prune_channels(model, plan)
    assert [t.name for t in small.inputs] == ["image", "meta"]
    assert _np(small([img[:4], meta[:4]])).shape == (4, 3)
    dense = tfcomp.profile(model).macs
    assert plan.meta["macs"] == tfcomp.profile(small).macs <= 0.5 * dense
