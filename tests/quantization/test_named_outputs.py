"""Models with several outputs (keras.io's Functional API guide: a list of
outputs from named layers, losses keyed by those names; or a dict of
outputs): the QAT and stripped models keep the output names and structure,
so the user's ``compile(loss={...})`` and ``fit(x, {...})`` run on them,
also after a ``.keras`` round trip, and the int8 file verifies every
output."""

import os

import keras
import numpy as np
import pytest

from tfcomp.export import export_tflite
from tfcomp.pruning import apply_fpgm
from tfcomp.quantization import calibrate, quantize_model, strip_quantization

L = keras.layers


def _model(as_dict: bool):
    keras.utils.set_random_seed(0)
    inp = keras.Input((10,), name="features")
    h = L.Dense(16, activation="relu")(inp)
    priority = L.Dense(1, activation="sigmoid", name="priority")(h)
    department = L.Dense(4, activation="softmax", name="department")(h)
    outputs = ({"priority": priority, "department": department} if as_dict
               else [priority, department])
    return keras.Model(inp, outputs)


def _data(n=48):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 10)).astype("float32")
    return x, {"priority": rng.integers(0, 2, (n, 1)).astype("float32"),
               "department": rng.integers(0, 4, n)}


def _compile(model):
    model.compile("adam", loss={
        "priority": "binary_crossentropy",
        "department": "sparse_categorical_crossentropy"},
        loss_weights={"priority": 1.0, "department": 0.2})


@pytest.mark.parametrize("as_dict", [False, True])
def test_named_outputs_train_save_strip_and_export(as_dict, tmp_path):
    model = _model(as_dict)
    x, y = _data()
    q = quantize_model(model)
    assert q.output_names == model.output_names
    assert type(q.output) is type(model.output)
    calibrate(q, x)
    _compile(q)
    q.fit(x, y, epochs=1, batch_size=16, verbose=0)
    path = os.path.join(tmp_path, "q.keras")
    q.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.output_names == model.output_names
    loaded.fit(x, y, epochs=1, batch_size=16, verbose=0)  # its compile
    plain = strip_quantization(loaded)
    assert plain.output_names == model.output_names
    # and through the copies pruning makes of it
    assert apply_fpgm(plain).output_names == model.output_names
    _compile(plain)
    plain.fit(x, y, epochs=1, batch_size=16, verbose=0)
    report = export_tflite(loaded, os.path.join(tmp_path, "q.tflite"),
                           "int8", verify_data=x)
    assert report.float_ops == [] and report.max_abs_error < 0.05, report
