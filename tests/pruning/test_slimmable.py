"""Slimmable networks: conversion over coupled groups, sandwich training,
export equality and MACs, BN ablation, .keras round trip, MirroredStrategy,
errors."""

import keras
import numpy as np
import pytest
from _mirrored import run_mirrored

import tfcomp
from tfcomp.graph.walk import leaf_layers
from tfcomp.pruning.slimmable import (
    SlimmableModel,
    export_width,
    group_counts,
    recalibrate_widths,
    set_width,
    to_slimmable,
)


def _residual(concat=True, momentum=0.99):
    bn = keras.layers.BatchNormalization
    inp = keras.Input((8, 8, 3))
    s = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inp)
    s = bn(momentum=momentum, name="stem_bn")(s)
    s = keras.layers.ReLU()(s)
    a = keras.layers.Conv2D(8, 3, padding="same", name="a")(s)
    a = bn(momentum=momentum, name="a_bn")(a)
    a = keras.layers.ReLU()(a)
    b = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(a)
    b = keras.layers.Conv2D(8, 1, name="b")(b)
    b = bn(momentum=momentum, name="b_bn")(b)
    x = keras.layers.ReLU()(keras.layers.Add()([b, s]))
    if concat:
        c1 = keras.layers.Conv2D(8, 3, strides=2, padding="same",
                                 name="c1")(x)
        c2 = keras.layers.Conv2D(12, 3, strides=2, padding="same",
                                 name="c2")(x)
        x = keras.layers.Concatenate()([c1, c2])
        x = bn(momentum=momentum, name="c_bn")(x)
        x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(12, activation="relu", name="fc")(x)
    return keras.Model(inp, keras.layers.Dense(4, name="head")(x),
                       name="res")


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8, 8, 3)).astype("float32")
    w = np.random.default_rng(99).normal(size=(3, 4))
    return x, np.argmax(x.mean(axis=(1, 2)) @ w, axis=1)


def _compile(model, lr=1e-2):
    model.compile(keras.optimizers.Adam(lr),
                  keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True), metrics=["accuracy"])
    return model


def _np(t):
    return keras.ops.convert_to_numpy(t)


def test_width_one_equals_original_and_groups_couple():
    model = _residual()
    x, _ = _data(8)
    slim = to_slimmable(model)
    np.testing.assert_allclose(_np(slim(x)), _np(model(x)), atol=1e-5)
    counts = group_counts(slim, 0.25)
    # stem / b / the residual add are one group; c1, c2 (concat) separate
    assert "b" not in counts and counts["stem"] == 2
    assert counts["c1"] == 2 and counts["c2"] == 3 and counts["fc"] == 3
    assert "head" not in counts  # classifier outputs never shrink


@pytest.mark.slow
@pytest.mark.parametrize("concat", [True, False])
def test_export_equals_slimmable_and_has_width_macs(concat):
    model = _residual(concat)
    x, y = _data()
    slim = _compile(to_slimmable(model))
    slim.fit(x, y, epochs=1, batch_size=16, verbose=0)
    recalibrate_widths(slim, x)
    dense = tfcomp.profile(model).macs
    cost = tfcomp.pruning.targets.ChannelMacs(tfcomp.DependencyGraph(model))
    macs = []
    for w in (0.25, 0.75, 1.0):
        set_width(slim, w)
        small = export_width(slim, w)
        assert not any(type(layer).__module__.startswith("tfcomp")
                       for layer in leaf_layers(small))
        np.testing.assert_allclose(_np(small(x)), _np(slim(x)), atol=1e-4)
        macs.append(tfcomp.profile(small).macs)
        assert macs[-1] == cost(group_counts(slim, w))
    assert macs == sorted(macs) and macs[-1] == dense


@pytest.mark.slow
def test_sandwich_training_learns_every_width():
    x, y = _data(192)
    slim = _compile(to_slimmable(_residual(), widths=(0.25, 0.5, 1.0)))
    hist = slim.fit(x, y, epochs=5, batch_size=32, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    recalibrate_widths(slim, x)
    for w in slim.widths:
        set_width(slim, w)
        acc = slim.evaluate(x, y, verbose=0, return_dict=True)["accuracy"]
        assert acc > (0.5 if w == 1.0 else 0.35), (w, acc)  # chance .25


def _chain(depth=4):
    inp = keras.Input((8, 8, 3))
    h = inp
    for _ in range(depth):
        h = keras.layers.Conv2D(16, 3, padding="same", use_bias=False)(h)
        h = keras.layers.BatchNormalization(momentum=0.9)(h)
        h = keras.layers.ReLU()(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inp, keras.layers.Dense(4)(h))


@pytest.mark.slow
def test_shared_bn_collapses_smallest_width_switchable_keeps_it():
    """The paper's ablation: one BN shared by every width mixes their
    statistics, the smallest width collapses; private BN keeps it."""
    x, y = _data(256)
    res = {}
    for shared in (False, True):
        keras.utils.set_random_seed(0)
        slim = _compile(to_slimmable(_chain(), widths=(0.25, 1.0),
                                     shared_bn=shared))
        slim.fit(x, y, epochs=6, batch_size=32, verbose=0)
        set_width(slim, 0.25)
        res[shared] = slim.evaluate(x, y, verbose=0, return_dict=True)
    assert res[True]["loss"] > res[False]["loss"] + 0.25, res
    assert res[False]["accuracy"] > res[True]["accuracy"] + 0.1, res


@pytest.mark.slow
def test_keras_round_trip_keeps_every_width_bn(tmp_path):
    x, y = _data()
    slim = _compile(to_slimmable(_residual(), widths=(0.5, 1.0),
                                 universal=True))
    slim.fit(x, y, epochs=1, batch_size=32, verbose=0)
    recalibrate_widths(slim, x)
    path = str(tmp_path / "slim.keras")
    slim.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, SlimmableModel) and loaded.universal
    assert loaded.widths == slim.widths
    for a, b in zip(leaf_layers(slim), leaf_layers(loaded)):
        for va, vb in zip(a.weights, b.weights):
            np.testing.assert_array_equal(_np(va), _np(vb))
    for w in (0.5, 0.6, 1.0):
        set_width(slim, w)
        set_width(loaded, w)
        np.testing.assert_allclose(_np(loaded(x)), _np(slim(x)), atol=1e-6)
    assert int(_np(loaded.optimizer.iterations)) == 2


def test_errors():
    with pytest.raises(ValueError, match=r"widths must all be in \(0, 1\]"):
        to_slimmable(_residual(), widths=(0.0, 1.0))
    with pytest.raises(ValueError, match=r"widths must all be in \(0, 1\]"):
        to_slimmable(_residual(), widths=(0.5, 1.5))
    inp = keras.Input((4,))
    plain = keras.Model(inp, keras.layers.Dense(3)(inp))
    with pytest.raises(ValueError, match="nothing slimmable"):
        to_slimmable(plain)
    slim = to_slimmable(_residual(), widths=(0.5, 1.0))
    with pytest.raises(ValueError, match="not one this slimmable network "
                                         "was trained at"):
        set_width(slim, 0.75)
    with pytest.raises(ValueError, match="No slimmable group"):
        set_width(slim, {"nope": 2})
    with pytest.raises(TypeError, match="SlimmableModel"):
        set_width(plain, 0.5)


# run_mirrored puts _mirrored.PRELUDE (json, os, tf, keras, np) first
_MIRRORED = """
    from tfcomp.pruning.slimmable import (to_slimmable, set_width,
                                          export_width)
    keras.utils.set_random_seed(0)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        inp = keras.Input((8, 8, 3))
        x = keras.layers.Conv2D(8, 3, padding="same", name="a")(inp)
        x = keras.layers.BatchNormalization(name="a_bn")(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        slim = to_slimmable(keras.Model(inp, keras.layers.Dense(4)(x)),
                            universal=True)
        slim.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                     keras.losses.SparseCategoricalCrossentropy(
                         from_logits=True))
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(32, 8, 8, 3)).astype("float32")
    ys = rng.integers(0, 4, 32)
    ckpt = os.path.join(os.environ["OUT_DIR"], "ck.keras")
    cb = keras.callbacks.ModelCheckpoint(ckpt)
    h = slim.fit(xs, ys, epochs=2, batch_size=8, verbose=0, callbacks=[cb])
    with strategy.scope():
        loaded = keras.saving.load_model(ckpt)
    loaded.fit(xs, ys, epochs=1, batch_size=8, verbose=0)
    set_width(slim, 0.5)
    small = export_width(slim, 0.5)
    layer = slim.get_layer("a")
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "mirrored": type(layer.kernel.value).__name__,
        "loss": [float(v) for v in h.history["loss"]],
        "resumed_iters": int(loaded.optimizer.iterations.numpy()),
        "filters": int(small.get_layer("a").kernel.shape[-1]),
        "err": float(np.abs(np.asarray(small(xs)) - np.asarray(slim(xs))
                            ).max())}))
"""


@pytest.mark.slow
def test_mirrored_strategy_two_replicas_and_checkpoint_resume(tmp_path):
    res = run_mirrored(_MIRRORED, env={"OUT_DIR": str(tmp_path)})
    assert res["replicas"] == 2 and res["mirrored"] == "MirroredVariable"
    assert all(np.isfinite(res["loss"]))
    assert res["resumed_iters"] == 12
    assert res["filters"] == 4 and res["err"] < 1e-4


# -- user-style models: Sequential, attention, Conv1D / 3D, separable,
# transposed, grouped convs, GroupNormalization ------------------------------

def _sequential():
    return keras.Sequential([
        keras.Input((12, 12, 1)),
        keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax")], name="seq")


def _attention():
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(16, 2, strides=2)(inp)
    x = keras.layers.Reshape((16, 16))(x)
    h = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)(x, x)
    x = keras.layers.Add()([h, x])
    h = keras.layers.Dense(32, activation="gelu", name="mlp_up")(x)
    x = keras.layers.Add()([keras.layers.Dense(16)(h), x])
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inp, keras.layers.Dense(4)(x), name="vit")


def _conv1d():
    inp = keras.Input((32, 2))
    x = keras.layers.Conv1D(8, 5, padding="causal", use_bias=False)(inp)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    x = keras.layers.SeparableConv1D(12, 3, padding="same")(x)
    x = keras.layers.Conv1DTranspose(8, 3, strides=2, padding="same")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inp, keras.layers.Dense(4)(x), name="c1d")


def _separable():
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same")(inp)
    r = x
    x = keras.layers.SeparableConv2D(8, 3, padding="same",
                                     depth_multiplier=2)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Add()([x, r])
    x = keras.layers.Conv2DTranspose(8, 3, strides=2, padding="same")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(4)(x), name="sep")


def _conv3d():
    inp = keras.Input((6, 6, 6, 1))
    x = keras.layers.Conv3D(4, 3, activation="relu")(inp)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Conv3D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling3D()(x)
    return keras.Model(inp, keras.layers.Dense(4)(x), name="c3d")


def _grouped_gn():
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inp)
    x = keras.layers.Conv2D(16, 3, padding="same", groups=4)(x)
    x = keras.layers.GroupNormalization(groups=4)(x)
    x = keras.layers.Conv2D(8, 1, groups=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(4)(x), name="grouped")


def _randomize(model):
    rng = np.random.default_rng(1)
    for v in model.weights:
        if "moving_variance" in v.path:
            v.assign(rng.uniform(0.5, 2.0, v.shape).astype("float32"))
        elif "moving_mean" in v.path or "beta" in v.path \
                or "bias" in v.path:
            v.assign(rng.normal(0, 0.3, v.shape).astype("float32"))
    return model


@pytest.mark.parametrize("build", [_sequential, _attention, _conv1d,
                                   _separable, _conv3d, _grouped_gn])
def test_user_models_export_equals_slimmable_and_round_trips(build,
                                                             tmp_path):
    keras.utils.set_random_seed(0)
    model = _randomize(build())
    x = np.random.default_rng(0).normal(
        size=(4,) + tuple(model.inputs[0].shape[1:])).astype("float32")
    slim = to_slimmable(model, widths=(0.5, 1.0))
    np.testing.assert_allclose(_np(slim(x)), _np(model(x)), atol=1e-5)
    set_width(slim, 0.5)
    want = _np(slim(x))
    small = export_width(slim, 0.5)
    assert not any(type(layer).__module__.startswith("tfcomp")
                   for layer in leaf_layers(small))
    np.testing.assert_allclose(_np(small(x)), want, atol=1e-5)
    assert tfcomp.profile(small).macs < tfcomp.profile(model).macs
    path = str(tmp_path / "slim.keras")
    slim.save(path)
    loaded = keras.saving.load_model(path)
    set_width(loaded, 0.5)
    np.testing.assert_allclose(_np(loaded(x)), want, atol=1e-6)


def test_attention_groups_stay_full_width():
    """MultiHeadAttention is a barrier of the dependency graph: the
    residual stream through it keeps its width, the MLP slims."""
    model = _attention()
    assert "multi_head_attention" in tfcomp.DependencyGraph(model).barriers
    slim = to_slimmable(model, widths=(0.5, 1.0))
    assert group_counts(slim, 0.5) == {"mlp_up": 16}
    small = export_width(slim, 0.5)
    assert small.get_layer("mlp_up").units == 16
    mha = small.get_layer("multi_head_attention")
    assert tuple(mha.get_weights()[0].shape) == (16, 2, 4)
