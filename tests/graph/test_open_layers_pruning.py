"""``tfcomp.graph.open_user_layers``: your own layer classes opened into
the Keras layers their ``call`` uses, so pruning reaches inside them (the
channel graph keeps a class whole otherwise)."""

import warnings

import keras
import numpy as np
import pytest
from _keras_io_layers import ResidualBlock, ScaledDense

import tfcomp
from tfcomp.graph import DependencyGraph, open_user_layers
from tfcomp.pruning import make_plan, mask_channels, prune_channels

L = keras.layers


def _cnn():
    keras.utils.set_random_seed(0)
    inp = L.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inp)
    x = ResidualBlock(8, name="block1")(x)
    x = ResidualBlock(8, name="block2")(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(4, name="head")(x))


def _images(n=8):
    return np.random.default_rng(0).random((n, 8, 8, 3), np.float32)


def test_pruning_reaches_inside_opened_layers(tmp_path):
    model = _cnn()
    x = _images()
    assert [g.id for g in DependencyGraph(model).prunable_groups] == []
    opened = open_user_layers(model)
    np.testing.assert_allclose(opened(x), model(x), atol=1e-6)
    plan = make_plan(opened, ratio=0.5)
    assert {"block1_conv1", "block2_conv1"} <= set(plan.removed)
    small = prune_channels(opened, plan)
    np.testing.assert_allclose(small(x), mask_channels(opened, plan)(x),
                               atol=1e-5)
    assert tfcomp.profile(small).macs < tfcomp.profile(model).macs
    small.save(tmp_path / "small.keras")  # no custom objects needed
    again = keras.saving.load_model(tmp_path / "small.keras")
    np.testing.assert_allclose(again(x), small(x), atol=1e-6)


def test_sequential_and_nested_models_open():
    keras.utils.set_random_seed(0)
    seq = keras.Sequential([L.Input((8, 8, 3)), L.Conv2D(8, 1, name="c"),
                            ResidualBlock(8, name="blk"),
                            L.GlobalAveragePooling2D(), L.Dense(2)])
    x = _images(4)
    opened = open_user_layers(seq)
    assert "blk_conv1" in [lyr.name for lyr in opened.layers]
    np.testing.assert_allclose(opened(x), seq(x), atol=1e-6)
    inp = L.Input((8, 8, 3))
    outer = keras.Model(inp, L.Dense(2)(L.Flatten()(_cnn()(inp))))
    opened = open_user_layers(outer)
    inner = [lyr for lyr in opened.layers if isinstance(lyr, keras.Model)]
    assert "block1_conv2" in [lyr.name for lyr in inner[0].layers]
    np.testing.assert_allclose(opened(x), outer(x), atol=1e-6)
    # a nested Sequential's class too
    inp = L.Input((8, 8, 3))
    wrapped = keras.Model(inp, L.Dense(2)(L.Flatten()(seq(inp))))
    opened = open_user_layers(wrapped)
    inner = [lyr for lyr in opened.layers if isinstance(lyr, keras.Model)]
    assert "blk_conv2" in [lyr.name for lyr in inner[0].layers]
    np.testing.assert_allclose(opened(x), wrapped(x), atol=1e-6)


def test_classes_that_cannot_open_stay_whole_with_a_warning():
    inp = L.Input((6,))
    model = keras.Model(inp, L.Dense(2)(ScaledDense(4, name="scaled")(inp)))
    with pytest.warns(UserWarning, match="'scaled'.*add_weight"):
        assert open_user_layers(model) is model
    # keep= leaves a class whole on purpose (no warning)
    cnn = _cnn()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert open_user_layers(cnn, keep=["block1", "block2"]) is cnn


class PositionAdd(L.Layer):
    """keras.io-style position embedding added to its input (a lookup on
    ``ops.arange``), used twice in one model below."""

    def __init__(self, length, dim, **kwargs):
        super().__init__(**kwargs)
        self.length = length
        self.table = L.Embedding(length, dim)
        inp = keras.Input((length, dim))
        self.mix = keras.Model(inp, L.Dense(dim)(inp))  # a held functional

    def call(self, x):
        return self.mix(x) + self.table(keras.ops.arange(self.length))


def test_shared_layer_with_constant_lookups_and_a_held_model():
    keras.utils.set_random_seed(0)
    block = PositionAdd(5, 4, name="pos")
    a, b = L.Input((5, 4)), L.Input((5, 4))
    model = keras.Model([a, b], L.Add()([block(a), block(b)]))
    x = [np.ones((2, 5, 4), np.float32), np.zeros((2, 5, 4), np.float32)]
    opened = open_user_layers(model)
    names = [lyr.name for lyr in opened.layers]
    assert {"pos_table_const", "pos_table_const_2", "pos_mix"} <= set(names)
    assert [lyr.name for lyr in opened.get_layer("pos_mix").layers][1:] == \
        ["0"]  # the held model's layers named by index: same every time
    np.testing.assert_allclose(opened(x), model(x), atol=1e-6)
    again = open_user_layers(model)
    assert [lyr.name for lyr in again.layers] == names


def test_a_name_clash_keeps_the_class_whole():
    inp = L.Input((8, 8, 3))
    x = L.Conv2D(8, 1, name="block1_conv1")(inp)  # the name opening needs
    model = keras.Model(inp, ResidualBlock(8, name="block1")(x))
    with pytest.warns(UserWarning, match="'block1': opening failed"):
        assert open_user_layers(model) is model
