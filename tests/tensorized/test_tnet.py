"""T-Net: full rank equals the dense net, compression by ranks, errors that
name the layers, training end to end, .keras resume, to_dense + TFLite,
MirroredStrategy with two logical CPUs."""

import os

import keras
import numpy as np
import pytest
from _mirrored import run_mirrored

from tfcomp.layers.tucker import (
    TNetConv2D,
    TuckerConv2D,
    TuckerTensor,
    tucker_params,
)
from tfcomp.tensorized import shareable_convs, tnet, to_dense


def _np(t):
    return keras.ops.convert_to_numpy(t)


def _allconv(width=8, blocks=3, name="allconv"):
    """A small fully convolutional net: stem, same-shaped middle convs (one
    strided, one with BN), 1x1 classifier conv, global pooling."""
    inp = keras.Input((12, 12, 1))
    x = keras.layers.Conv2D(width, 3, padding="same", name="stem")(inp)
    x = keras.layers.ReLU()(x)
    for i in range(blocks):
        x = keras.layers.Conv2D(width, 3, strides=2 if i == 1 else 1,
                                padding="same", name=f"mid{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(4, 1, name="cls")(x)
    out = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, out, name=name)
    rng = np.random.default_rng(0)
    for layer in model.layers:  # non-trivial biases and BN statistics
        for w in layer.weights:
            if w.name in ("bias", "moving_mean", "beta"):
                w.assign(rng.normal(size=w.shape).astype("float32") * 0.1)
    return model


def _x(n=4, seed=0):
    return np.random.default_rng(seed).normal(
        size=(n, 12, 12, 1)).astype("float32")


def test_full_rank_equals_the_dense_net():
    model = _allconv()
    tn = tnet(model)
    x = _x()
    np.testing.assert_allclose(_np(tn(x)), _np(model(x)), atol=1e-5)
    tensor = tn.get_layer("tnet_tensor")
    assert isinstance(tensor, TuckerTensor)
    assert tensor.tensor_shape == (3, 3, 3, 8, 8)
    assert tensor.ranks == tensor.tensor_shape
    assert [type(tn.get_layer(f"mid{i}")).__name__ for i in range(3)] == \
        ["TNetConv2D"] * 3
    assert [tn.get_layer(f"mid{i}").index for i in range(3)] == [0, 1, 2]
    assert tn.get_layer("mid1").strides == (2, 2)
    assert type(tn.get_layer("stem")) is keras.layers.Conv2D
    # the original model is untouched
    assert type(model.get_layer("mid0")) is keras.layers.Conv2D


def test_param_count_is_tucker_count():
    model = _allconv()
    ranks = (2, 2, 2, 4, 4)
    tn = tnet(model, ranks=ranks)
    dense_mid = 3 * 3 * 3 * 8 * 8
    assert tn.get_layer("tnet_tensor").param_count == \
        tucker_params((3, 3, 3, 8, 8), ranks) == 2 * 2 * 2 * 4 * 4 + (
            3 * 2 + 3 * 2 + 3 * 2 + 8 * 4 + 8 * 4)
    assert tn.count_params() == model.count_params() - dense_mid + \
        tucker_params((3, 3, 3, 8, 8), ranks)
    # float ranks: a fraction of the stacked kernels' parameters
    quarter = tnet(model, ranks=0.25).get_layer("tnet_tensor")
    assert quarter.param_count <= 0.25 * dense_mid


def test_to_dense_equals_and_exports(tmp_path):
    model = _allconv()
    tn = tnet(model, ranks=0.3)
    x = _x()
    dense = to_dense(tn)
    np.testing.assert_allclose(_np(dense(x)), _np(tn(x)), atol=1e-5)
    assert not any(isinstance(layer, (TNetConv2D, TuckerTensor))
                   for layer in dense.layers)
    assert [layer.name for layer in dense.layers] == [
        layer.name for layer in model.layers]
    assert dense.count_params() == model.count_params()
    from tfcomp.export import export_tflite

    report = export_tflite(dense, str(tmp_path / "tnet.tflite"),
                           verify_data=x)
    assert os.path.getsize(tmp_path / "tnet.tflite") > 0
    assert report is not None


def test_layers_argument_and_errors_name_the_layers():
    model = _allconv()
    assert shareable_convs(model) == {
        (3, 3, 1, 8): ["stem"], (3, 3, 8, 8): ["mid0", "mid1", "mid2"],
        (1, 1, 8, 4): ["cls"]}
    two = tnet(model, layers=["mid2", "mid0"])
    assert two.get_layer("tnet_tensor").tensor_shape == (2, 3, 3, 8, 8)
    assert type(two.get_layer("mid1")) is keras.layers.Conv2D
    assert two.get_layer("mid0").index == 0  # graph order
    np.testing.assert_allclose(_np(two(_x())), _np(model(_x())), atol=1e-5)
    with pytest.raises(ValueError, match=r"cannot share one Tucker tensor.*"
                       r"\['stem'\] have kernel shape \(3, 3, 1, 8\).*"
                       r"\['mid0', 'mid1'\] have kernel shape \(3, 3, 8, 8\)"):
        tnet(model, layers=["stem", "mid0", "mid1"])
    with pytest.raises(ValueError, match=r"'bn0' is a BatchNormalization"):
        tnet(model, layers=["mid0", "bn0"])
    with pytest.raises(ValueError, match="no top-level layer 'nope'"):
        tnet(model, layers=["nope"])
    with pytest.raises(TypeError, match="layers must be a list"):
        tnet(model, layers="mid0")
    with pytest.raises(ValueError, match=r"'layers'.*\[1, 3\].*rank 4"):
        tnet(model, ranks=(4, 3, 3, 8, 8))
    inp = keras.Input((12, 12, 3))
    a = keras.layers.Conv2D(4, 3, name="a")(inp)
    b = keras.layers.Conv2D(6, 3, name="b")(a)
    c = keras.layers.Conv2D(6, 3, groups=2, name="c")(b)
    odd = keras.Model(inp, c)
    with pytest.raises(ValueError, match=r"at least two.*\['a'\] have kernel"
                       r" shape \(3, 3, 3, 4\); \['b'\] have kernel shape"):
        tnet(odd)
    with pytest.raises(ValueError, match="groups=2"):
        tnet(odd, layers=["b", "c"])


def test_user_graphs_sequential_nested_shared_lambda():
    seq = keras.Sequential([
        keras.Input((10, 10, 2)),
        keras.layers.Conv2D(6, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(6, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(6, 3, padding="same"),
        keras.layers.GlobalAveragePooling2D()], name="seq")
    x = np.random.default_rng(1).normal(size=(3, 10, 10, 2)).astype(
        "float32")
    tn = tnet(seq)
    np.testing.assert_allclose(_np(tn(x)), _np(seq(x)), atol=1e-5)
    np.testing.assert_allclose(_np(to_dense(tn)(x)), _np(seq(x)), atol=1e-5)

    inner_in = keras.Input((10, 10, 6))
    inner = keras.Model(inner_in, keras.layers.Conv2D(
        6, 3, padding="same", name="inner_conv")(inner_in), name="inner")
    inp = keras.Input((10, 10, 2))
    h = keras.layers.Conv2D(6, 3, padding="same", name="h")(inp)
    shared = keras.layers.Conv2D(6, 3, padding="same", name="shared")
    y = shared(keras.layers.Lambda(lambda t: t * 0.5, name="half")(h))
    y = shared(keras.layers.ReLU()(y))  # called twice
    y = inner(y)
    y = keras.layers.Conv2D(6, 3, padding="same", name="last")(y)
    user = keras.Model(inp, y)
    tn = tnet(user)
    assert tn.get_layer("tnet_tensor").tensor_shape[0] == 2  # shared, last
    np.testing.assert_allclose(_np(tn(x)), _np(user(x)), atol=1e-5)
    with pytest.raises(ValueError, match="inside a nested model as "
                       "'inner/inner_conv'"):
        tnet(user, layers=["inner_conv", "last"])


def _compiled_tnet(seed=0):
    keras.utils.set_random_seed(seed)
    tn = tnet(_allconv(), ranks=0.5)
    tn.compile(keras.optimizers.SGD(0.05, momentum=0.9),
               keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return tn


def _data(n=16):
    rng = np.random.default_rng(3)
    return _x(n, 2), rng.integers(0, 4, n)


def test_trains_end_to_end_and_resumes_from_keras_file(tmp_path):
    x, y = _data()
    straight = _compiled_tnet()
    core0 = _np(straight.get_layer("tnet_tensor").core).copy()
    fit = {"batch_size": 8, "shuffle": False, "verbose": 0}
    straight.fit(x, y, epochs=2, **fit)
    assert not np.allclose(_np(straight.get_layer("tnet_tensor").core),
                           core0)
    resumed = _compiled_tnet()
    resumed.fit(x, y, epochs=1, **fit)
    path = str(tmp_path / "tnet.keras")
    resumed.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.get_layer("mid0"), TNetConv2D)
    loaded.fit(x, y, epochs=2, initial_epoch=1, **fit)
    for a, b in zip(straight.weights, loaded.weights):
        np.testing.assert_allclose(_np(a), _np(b), atol=1e-5, err_msg=a.path)


def test_compile_state_is_carried():
    model = _allconv()
    model.compile("adam", "mse")
    tn = tnet(model, ranks=0.5)
    assert tn.compiled and type(tn.optimizer).__name__ == "Adam"
    assert to_dense(tn).compiled


def test_to_dense_converts_tucker_conv2d_in_nested_models():
    inner_in = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(5, 3, name="k")
    conv.build((None, 8, 8, 3))
    tucker = TuckerConv2D.from_conv(conv, ranks=(2, 2, 2, 3))
    inner = keras.Model(inner_in, tucker(inner_in), name="inner")
    inp = keras.Input((8, 8, 3))
    model = keras.Model(inp, keras.layers.ReLU()(inner(inp)))
    dense = to_dense(model)
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(_np(dense(x)), _np(model(x)), atol=1e-5)
    assert type(dense.get_layer("inner").get_layer("k")) is \
        keras.layers.Conv2D
    with pytest.raises(ValueError, match="no T-Net or TuckerConv2D"):
        to_dense(_allconv())


# run_mirrored puts _mirrored.PRELUDE (json, os, tf, keras, np) first
_MIRRORED = """
    from tfcomp.tensorized import tnet, to_dense
    keras.utils.set_random_seed(0)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        inp = keras.Input((8, 8, 2))
        x = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(inp)
        for i in range(3):
            x = keras.layers.Conv2D(6, 3, padding="same",
                                    activation="relu", name=f"m{i}")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        model = keras.Model(inp, keras.layers.Dense(3)(x))
        tn = tnet(model, ranks=0.5)
        tn.compile(keras.optimizers.SGD(0.1),
                   keras.losses.SparseCategoricalCrossentropy(
                       from_logits=True))
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(32, 8, 8, 2)).astype("float32")
    ys = rng.integers(0, 3, 32)
    tensor = tn.get_layer("tnet_tensor")
    core0 = keras.ops.convert_to_numpy(tensor.core).copy()
    hist = tn.fit(xs, ys, epochs=2, batch_size=8, verbose=0)
    core1 = keras.ops.convert_to_numpy(tensor.core)
    dense = to_dense(tn)
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "mirrored": type(tensor.core.value).__name__,
        "moved": float(np.abs(core1 - core0).max()),
        "finite": bool(np.isfinite(hist.history["loss"]).all()),
        "err": float(np.abs(keras.ops.convert_to_numpy(dense(xs))
                            - keras.ops.convert_to_numpy(tn(xs))).max())}))
"""

@pytest.mark.slow
def test_mirrored_strategy_two_replicas():
    res = run_mirrored(_MIRRORED)
    assert res["replicas"] == 2
    assert res["mirrored"] == "MirroredVariable"
    assert res["moved"] > 0 and res["finite"]
    assert res["err"] < 1e-4
