"""FlatView: a nested model's layers as one functional model over the
model's own layers (what reconstruction and DCP read through)."""

import keras
import numpy as np
import pytest

from tfcomp.graph import parse_model
from tfcomp.graph.replay import FlatView, call_arguments, replay_call

L = keras.layers


def _np(t):
    return np.asarray(keras.ops.convert_to_numpy(t))


def _transfer_model(training=False):
    """keras.io's transfer-learning shape: a functional backbone called
    with ``training=False``, a Sequential augmentation block, a head."""
    keras.utils.set_random_seed(0)
    b_in = keras.Input((10, 10, 3))
    h = L.Conv2D(8, 3, use_bias=False, name="b_conv1")(b_in)
    h = L.BatchNormalization(name="b_bn")(h)
    h = L.ReLU()(h)
    h2 = L.Conv2D(8, 3, padding="same", name="b_conv2")(h)
    h = L.Add()([h, h2])
    backbone = keras.Model(b_in, h, name="backbone")
    prep = keras.Sequential([L.Rescaling(0.5), L.Conv2D(3, 1, name="p_conv")],
                            name="prep")
    inputs = keras.Input((10, 10, 3))
    x = prep(inputs)
    x = backbone(x, training=training)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dropout(0.2)(x)
    return keras.Model(inputs, L.Dense(4, name="head")(x), name="transfer")


def test_view_computes_the_model_and_reaches_inner_tensors():
    model = _transfer_model()
    bn = model.get_layer("backbone").get_layer("b_bn")
    bn.moving_mean.assign(np.linspace(-1, 1, 8).astype("float32"))
    config = model.get_config()
    first_input = model.get_layer("backbone").get_layer("b_conv2").input
    view = FlatView(model)
    x = np.random.default_rng(0).normal(size=(3, 10, 10, 3)).astype(
        "float32")
    np.testing.assert_allclose(_np(view.model(x)), _np(model(x)), atol=1e-6)
    inner = keras.Model(view.inputs[0], view.input_of("backbone/b_conv2"))
    ref = L.ReLU()(bn(model.get_layer("backbone").get_layer("b_conv1")(
        model.get_layer("prep")(x)), training=False))
    np.testing.assert_allclose(_np(inner(x)), _np(ref), atol=1e-5)
    # the model itself: same config, same first-call tensors, same layers
    assert model.get_config() == config
    assert model.get_layer("backbone").get_layer("b_conv2").input is \
        first_input
    assert view.layer("backbone/b_bn") is bn


@pytest.mark.parametrize("training", [False, None])
def test_a_nested_training_argument_acts_as_in_the_model(training):
    """``backbone(x, training=False)``: Keras' functional call context
    overrides it when the outer model is called with ``training`` set, and
    applies it otherwise; the view's inner layers behave the same."""
    model = _transfer_model(training=training)
    assert parse_model(model).nested_calls["backbone"].get("training") is \
        training
    bn = model.get_layer("backbone").get_layer("b_bn")
    bn.moving_mean.assign(np.linspace(-1, 1, 8).astype("float32"))
    view = FlatView(model)
    x = np.random.default_rng(1).normal(size=(4, 10, 10, 3)).astype(
        "float32")
    sub = keras.Model(model.inputs[0], model.get_layer("gap").input)
    vsub = keras.Model(view.inputs[0], view.input_of("gap"))
    for mode in (True, False, None):
        np.testing.assert_allclose(_np(vsub(x, training=mode)),
                                   _np(sub(x, training=mode)), atol=1e-5,
                                   err_msg=f"training={mode}")


def test_replayed_call_arguments():
    inputs = keras.Input((4,))
    a = L.Dense(3, name="a")(inputs)
    b = L.Dense(3, name="b")(inputs)
    out = L.Add(name="add")([a, b])
    model = keras.Model(inputs, out)
    parsed = parse_model(model)
    args, kwargs = call_arguments(parsed, parsed.node("add#0"))
    assert args == (["a:0:0", "b:0:0"],)
    one = np.ones((2, 3), "float32")
    got = replay_call(model.get_layer("add"), args, kwargs,
                      {"a:0:0": one, "b:0:0": 2 * one})
    np.testing.assert_allclose(_np(got), 3 * one)
