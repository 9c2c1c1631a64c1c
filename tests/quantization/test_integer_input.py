"""A model that takes uint8 pixels (``keras.Input(dtype="uint8")`` then
``Rescaling(1 / 255)``, as phone models often do): quantize_model makes the
Rescaling a 1x1 depthwise conv, which must cast the integers as the
Rescaling did, in training and in the int8 file."""

import os

import keras
import numpy as np

from tfcomp.export import export_tflite
from tfcomp.quantization import quantize_model

L = keras.layers


def _uint8_net():
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1), dtype="uint8")
    x = L.Rescaling(1 / 255.0)(inp)
    x = L.Conv2D(4, 3, activation="relu")(x)
    x = L.Flatten()(x)
    return keras.Model(inp, L.Dense(3)(x))


def test_uint8_input_trains_and_exports_after_quantize_model(tmp_path):
    model = _uint8_net()
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 8, 8, 1)).astype("uint8")
    y = rng.integers(0, 3, 64)
    qat = quantize_model(model)
    assert type(qat.layers[1]).__name__ == "QuantDepthwiseConv2D"
    qat.compile("adam", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    qat.fit(x, y, epochs=1, batch_size=16, verbose=0)  # was a TypeError
    np.testing.assert_allclose(  # before training: the same function
        quantize_model(model).predict(x[:8], verbose=0),
        model.predict(x[:8], verbose=0), atol=0.1)
    report = export_tflite(qat, os.path.join(tmp_path, "q.tflite"), "int8",
                           verify_data=x[:32])
    assert report.top1_agreement >= 0.9
    assert report.float_ops == ["CAST"]  # uint8 pixels to float, then int8


def test_bitserial_file_reads_float_pixels_as_keras_casts_them(tmp_path):
    """Pixels given as floats (254.9) reach a uint8 input truncated, as
    Keras casts them; the simulator must read the same codes."""
    from tfcomp.export import export_bitserial
    from tfcomp.quantization import calibrate

    model = _uint8_net()
    x = np.random.default_rng(1).uniform(0, 255, (32, 8, 8, 1)).astype(
        "float32")
    qat = quantize_model(model)
    calibrate(qat, x)
    report = export_bitserial(qat, str(tmp_path / "m.json"),
                              hardware="bismo", calibration_data=x,
                              verify_x=x[:16])
    assert report.simulator_exact is True
    scale = float(np.abs(qat.predict(x[:16], verbose=0)).max())
    assert report.max_abs_error <= 1e-3 * max(scale, 1.0), report
