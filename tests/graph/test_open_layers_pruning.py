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
