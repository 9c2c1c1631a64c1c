"""A model with a variable sequence length (``keras.Input((None, 4))``, a
keras.io habit for text and time series): the files keep the dynamic size,
verification feeds the data's length, the QAT model's int8 file is fully
integer (its Conv1D bias fused at any length), and latency asks which
length to time."""

import os

import keras
import numpy as np
import pytest

from tfcomp.export import export_tflite, measure_latency
from tfcomp.export.runtime import make_interpreter, run_interpreter
from tfcomp.quantization import calibrate, quantize_model

L = keras.layers


def _model():
    keras.utils.set_random_seed(0)
    inp = keras.Input((None, 4))
    h = L.Conv1D(8, 3, padding="same", activation="relu")(inp)
    h = L.Conv1D(16, 3, padding="causal", activation="relu")(h)
    h = L.GlobalMaxPooling1D()(h)
    return keras.Model(inp, L.Dense(3)(h))


def _x(length, n=24, seed=0):
    return np.random.default_rng(seed).normal(size=(n, length, 4)).astype(
        "float32")


def test_float_and_qat_int8_files_run_at_any_length(tmp_path):
    model = _model()
    path = os.path.join(tmp_path, "f.tflite")
    report = export_tflite(model, path, verify_data=_x(20))
    assert report.num_verified == 24 and report.max_abs_error < 1e-5
    interp = make_interpreter(path)[0]
    for length in (7, 31):  # one file, several lengths
        np.testing.assert_allclose(
            run_interpreter(interp, _x(length)),
            keras.ops.convert_to_numpy(model(_x(length))), atol=1e-5)
    q = quantize_model(model)
    calibrate(q, _x(20))
    report = export_tflite(q, os.path.join(tmp_path, "q.tflite"), "int8",
                           verify_data=_x(20, seed=1))
    assert report.float_ops == [], report.float_ops
    assert report.top1_agreement >= 0.95, report


def test_latency_of_a_dynamic_file_needs_its_sizes(tmp_path):
    path = os.path.join(tmp_path, "f.tflite")
    export_tflite(_model(), path, verify=False)
    with pytest.raises(ValueError, match=r"input .* has a dynamic size.*"
                       r"input_shapes"):
        measure_latency(path, runs=2, warmup=0)
    with pytest.raises(ValueError, match=r"input_shapes must give one "
                       r"shape per input.*Received: input_shapes=\[\(1, 20, "
                       r"5\)\]"):
        measure_latency(path, runs=2, warmup=0, input_shapes=[(1, 20, 5)])
    short = measure_latency(path, runs=5, warmup=1,
                            input_shapes=[(1, 16, 4)])
    assert short.median_ms > 0
