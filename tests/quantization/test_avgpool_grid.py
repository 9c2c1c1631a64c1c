"""Average pooling keeps its input's grid in the QAT model, as TFLite's
int8 AVERAGE_POOL_2D does (DenseNet's transition pools, issue #17)."""

import os

import keras
import numpy as np

from tfcomp.export import export_tflite
from tfcomp.export.runtime import make_interpreter, run_interpreter
from tfcomp.quantization import calibrate, quantization_params, quantize_model

L = keras.layers


def _transition_net():
    """DenseNet-style: conv -> average pool -> two consumers."""
    inp = keras.Input((16, 16, 3))
    x = L.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = L.Conv2D(8, 1, name="transition_conv")(x)
    x = L.AveragePooling2D(2, name="pool")(x)
    h = L.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = L.Concatenate()([x, h])
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(5)(x))


def test_average_pool_output_shares_its_input_grid(tmp_path):
    keras.utils.set_random_seed(0)
    model = _transition_net()
    x = np.random.default_rng(0).uniform(0, 1, (32, 16, 16, 3)).astype(
        "float32")
    q = quantize_model(model, bits=8)
    calibrate(q, x)
    params = quantization_params(q)
    before = params["transition_conv_aq"]["output"]
    after = params["pool_aq"]["output"]
    assert before[:2] == after[:2]  # one grid: the pool's input's
    # ... kept through a save / load
    path = os.path.join(tmp_path, "q.keras")
    q.save(path)
    loaded = keras.saving.load_model(path)
    calibrate(loaded, x[:8])
    p2 = quantization_params(loaded)
    assert p2["pool_aq"]["output"][:2] == p2["transition_conv_aq"][
        "output"][:2]
    # the converter accepts it (same-scale AVERAGE_POOL_2D), the file agrees
    report = export_tflite(q, os.path.join(tmp_path, "m.tflite"), "int8",
                           verify_data=x, num_verify=32, io_type="float32")
    assert report.top1_agreement >= 0.99
    interp, _ = make_interpreter(report.path)
    y_q = keras.ops.convert_to_numpy(q(x))
    y_t = run_interpreter(interp, x)
    assert np.abs(y_t - y_q).max() <= 0.05 * np.ptp(y_q)
