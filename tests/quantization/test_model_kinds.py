"""quantize_model on the model kinds pruning handles: a Sequential convnet
loaded from .keras, a shared layer (called twice), a nested functional
model and keras.ops calls between layers."""

import os

import keras
import numpy as np
import pytest

from tfcomp.export.int8 import convert_int8
from tfcomp.export.runtime import make_interpreter, run_interpreter
from tfcomp.layers import QuantConv2D
from tfcomp.quantization import (
    calibrate,
    quantizable_layers,
    quantization_report,
    quantize_model,
    strip_quantization,
)


def _np(t):
    return keras.ops.convert_to_numpy(t)


def _keras_io_convnet():
    """keras.io's "Simple MNIST convnet", narrower."""
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        keras.layers.Conv2D(8, kernel_size=(3, 3), activation="relu"),
        keras.layers.MaxPooling2D(pool_size=(2, 2)),
        keras.layers.Conv2D(16, kernel_size=(3, 3), activation="relu"),
        keras.layers.MaxPooling2D(pool_size=(2, 2)),
        keras.layers.Flatten(),
        keras.layers.Dropout(0.5),
        keras.layers.Dense(10, activation="softmax"),
    ])


def test_sequential_convnet_loaded_from_keras_file(tmp_path):
    path = os.path.join(tmp_path, "convnet.keras")
    _keras_io_convnet().save(path)
    model = keras.saving.load_model(path)
    x = np.random.default_rng(0).uniform(0, 1, (32, 28, 28, 1)).astype(
        "float32")
    q = quantize_model(model, bits=4)
    rep = quantization_report(q)
    assert len(rep.quantized) == 3
    assert list(rep.quantized.values()) == [(8, 8), (4, 4), (8, 8)]
    calibrate(q, calibration_data=x)
    y_q, y_f = _np(q(x)), _np(model(x))
    assert np.abs(y_q - y_f).max() < 0.05
    interp, _ = make_interpreter(convert_int8(q, io_type="float32"))
    y_lite = run_interpreter(interp, x)
    assert np.mean(y_lite.argmax(1) == y_q.argmax(1)) >= 0.9


def _shared_model():
    keras.utils.set_random_seed(1)
    inp = keras.Input((8, 8, 3))
    shared = keras.layers.Conv2D(4, 3, padding="same", name="shared")
    a = keras.layers.ReLU(name="r1")(shared(inp))
    b = keras.layers.Conv2D(3, 1, name="proj")(a)
    c = keras.layers.ReLU(name="r2")(shared(b))
    h = keras.layers.GlobalAveragePooling2D(name="gap")(c)
    return keras.Model(inp, keras.layers.Dense(5, name="head")(h))


def test_shared_layer_stays_one_shared_quantized_layer(tmp_path):
    model = _shared_model()
    x = np.random.default_rng(0).uniform(0, 1, (16, 8, 8, 3)).astype(
        "float32")
    same = quantize_model(model, bits=32, first_last_bits=None)
    np.testing.assert_allclose(_np(same(x)), _np(model(x)), atol=1e-5)
    q = quantize_model(model, bits=8)
    convs = [layer for layer in q.layers if isinstance(layer, QuantConv2D)]
    assert sorted(layer.name for layer in convs) == ["proj", "shared"]
    assert list(quantization_report(q).quantized) == ["shared", "proj",
                                                      "head"]
    shared = q.get_layer("shared")
    assert shared.input_quantizer.signed  # the raw input and proj's output
    ranges = calibrate(q, x)
    lo, hi = ranges["shared/input"]
    # the range covers both calls: x is in [0, 1], proj's output is not
    assert lo < 0 and hi >= float(x.max()) - 1e-6
    y_q = _np(q(x))
    assert np.abs(y_q - _np(model(x))).max() < 0.05
    interp, _ = make_interpreter(convert_int8(q, io_type="float32"))
    assert np.abs(run_interpreter(interp, x) - y_q).max() < 0.05
    plain = strip_quantization(q)
    assert sum(type(layer) is keras.layers.Conv2D
               for layer in plain.layers) == 2
    np.testing.assert_allclose(_np(plain.get_layer("shared").kernel),
                               shared.quantized_kernel())
    path = os.path.join(tmp_path, "shared_qat.keras")
    q.save(path)
    np.testing.assert_allclose(_np(keras.saving.load_model(path)(x)), y_q,
                               atol=1e-6)


def _nested_model():
    keras.utils.set_random_seed(2)
    inner_in = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(6, 3, padding="same", use_bias=False,
                            name="conv")(inner_in)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.ReLU(name="relu")(h)
    backbone = keras.Model(inner_in, h, name="backbone")
    inp = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, name="conv")(backbone(inp))
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    return keras.Model(inp, keras.layers.Dense(3, name="head")(h))


def test_nested_functional_model_is_flattened(tmp_path):
    model = _nested_model()
    x = np.random.default_rng(0).uniform(0, 1, (16, 8, 8, 3)).astype(
        "float32")
    # the inner "conv" collides with the outer one: it becomes outer_inner
    assert quantizable_layers(model) == ["backbone_conv", "conv", "head"]
    q = quantize_model(model, bits={"backbone/conv": (4, 8)})
    rep = quantization_report(q)
    assert rep.quantized == {"backbone_conv": (4, 8), "conv": (8, 8),
                             "head": (8, 8)}
    assert rep.folded == {"backbone_conv": "backbone_bn"}
    assert rep.fused == {"backbone_conv": "backbone_relu"}
    assert not any(isinstance(layer, keras.Model) for layer in q.layers)
    same = quantize_model(model, bits=32, first_last_bits=None)
    np.testing.assert_allclose(_np(same(x)), _np(model(x)), atol=1e-5)
    calibrate(q, x)
    assert np.abs(_np(q(x)) - _np(model(x))).max() < 0.1
    path = os.path.join(tmp_path, "nested_qat.keras")
    q.save(path)
    loaded = quantization_report(keras.saving.load_model(path))
    assert loaded.quantized == rep.quantized and loaded.folded == {}


def test_keras_ops_between_layers():
    inp = keras.Input((8,))
    h = keras.layers.Dense(6, name="d1")(inp)
    h = keras.ops.relu(h) * 2.0
    model = keras.Model(inp, keras.layers.Dense(3, name="d2")(h))
    x = np.random.default_rng(0).normal(size=(32, 8)).astype("float32")
    same = quantize_model(model, bits=32, first_last_bits=None)
    np.testing.assert_allclose(_np(same(x)), _np(model(x)), atol=1e-5)
    q = quantize_model(model, bits=8)
    calibrate(q, x)
    assert np.abs(_np(q(x)) - _np(model(x))).max() < 0.1


def test_skip_accepts_nested_paths():
    q = quantize_model(_nested_model(), skip=["backbone/conv"])
    assert type(q.get_layer("backbone_conv")) is keras.layers.Conv2D
    with pytest.raises(ValueError, match="not quantizable"):
        quantize_model(_nested_model(), bits={"backbone/bn": (4, 4)})
