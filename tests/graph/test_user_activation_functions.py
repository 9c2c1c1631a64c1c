"""Layers built with the user's own activation function, a named function
or a lambda (``Conv2D(8, 3, activation=my_act)``): Keras serialises it as
a function it cannot read back (unregistered, or bytecode under
``safe_mode``), so before every copying verb failed inside Keras
(surgery, ``apply_fpgm``, ``quantize_model``). The copies now hand the new
layer the live function (``tfcomp.graph.copy.live_config``).
"""

import keras
import numpy as np
import pytest

from tfcomp.export import export_tflite
from tfcomp.pruning import (
    apply_fpgm,
    make_plan,
    mask_channels,
    prune_channels,
    strip_pruning,
)
from tfcomp.quantization import calibrate, quantize_model, strip_quantization

L = keras.layers


def half_relu(x):
    return keras.ops.relu(x) * 0.5


ACTIVATIONS = {"named": half_relu,
               "lambda": lambda t: keras.ops.relu(t) * 0.5}


def _model(act):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, activation=act)(inputs)
    x = L.Conv2D(8, 3, activation="relu")(x)
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dense(6, activation=act)(x)
    return keras.Model(inputs, L.Dense(3)(x))


def _x():
    return np.random.default_rng(0).uniform(size=(8, 8, 8, 3)).astype(
        "float32")


@pytest.mark.parametrize("kind", sorted(ACTIVATIONS))
def test_prune_and_soft_prune(kind):
    model, x = _model(ACTIVATIONS[kind]), _x()
    plan = make_plan(model, ratio=0.5)
    np.testing.assert_allclose(prune_channels(model, plan)(x),
                               mask_channels(model, plan)(x), atol=1e-5)
    soft = apply_fpgm(model)
    np.testing.assert_allclose(strip_pruning(soft)(x), model(x), atol=1e-5)


@pytest.mark.parametrize("kind", sorted(ACTIVATIONS))
def test_quantize_strip_and_export(kind, tmp_path):
    model, x = _model(ACTIVATIONS[kind]), _x()
    q = quantize_model(model)
    calibrate(q, x)
    np.testing.assert_allclose(q(x), model(x), atol=0.05)
    np.testing.assert_allclose(strip_quantization(q)(x), model(x),
                               atol=0.05)
    report = export_tflite(q, str(tmp_path / "q.tflite"),
                           quantization="int8", calibration_data=x,
                           min_agreement=0.0)
    # the user's function is arbitrary Python: its ops stay float, named
    assert set(report.float_ops) <= {"RELU", "MUL"}
