"""An "int8" TFLite file that still computes ops in float (a softplus has
no integer kernel) says so in a warning naming the ops, not only in
``report.float_ops``; a full-integer file warns nothing."""

import warnings

import keras
import numpy as np
import pytest

from tfcomp.export import export_tflite
from tfcomp.quantization import calibrate, quantize_model

L = keras.layers


def _qat(activation):
    inp = keras.Input((6, 6, 2))
    h = L.Conv2D(4, 3, activation=activation)(inp)
    model = keras.Model(inp, L.Dense(3)(L.GlobalAveragePooling2D()(h)))
    x = np.random.default_rng(0).normal(size=(32, 6, 6, 2)).astype("float32")
    q = quantize_model(model)
    calibrate(q, x)
    return q, x


def test_float_ops_of_an_int8_file_are_a_warning(tmp_path):
    q, x = _qat("softplus")
    with pytest.warns(UserWarning, match=r"computes 3 op\(s\) in float "
                      r"\(EXP x1, ADD x1, LOG x1\)"):
        report = export_tflite(q, tmp_path / "sp.tflite", quantization="int8",
                               calibration_data=x, verify=False)
    assert report.float_ops == ["EXP", "ADD", "LOG"]


def test_a_full_integer_file_warns_nothing(tmp_path):
    q, x = _qat("relu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = export_tflite(q, tmp_path / "r.tflite", quantization="int8",
                               calibration_data=x, verify=False)
    assert report.float_ops == []
    assert not [w for w in caught if "in float" in str(w.message)]
