"""Models with several outputs (keras.io functional API guide: a class head
and a regression head): the TFLite file's outputs are read in the Keras
model's order (the file may order its output tensors otherwise) and every
output is verified; pruning sensitivity ("reconstruction") and ``compress``
take them."""

import keras
import numpy as np
import pytest

import tfcomp
from tfcomp.export import export_tflite
from tfcomp.export.runtime import make_interpreter, run_interpreter
from tfcomp.hardware import BISMO
from tfcomp.quantization import calibrate, quantize_model

L = keras.layers


def _two_heads():
    keras.utils.set_random_seed(0)
    image = keras.Input((10, 10, 3), name="image")
    x = L.Conv2D(8, 3, padding="same", activation="relu")(image)
    x = L.BatchNormalization()(x)
    x = L.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = L.GlobalAveragePooling2D()(x)
    scores = L.Dense(5, name="scores")(x)
    box = L.Dense(4, name="box")(x)  # a regression head
    return keras.Model(image, [scores, box])


def _x(n=64):
    return np.random.default_rng(0).uniform(0, 1, (n, 10, 10, 3)).astype(
        "float32")


def _keras(model, x):
    return [keras.ops.convert_to_numpy(o) for o in model(x, training=False)]


@pytest.mark.parametrize("mode", [None, "float16", "dynamic", "int8"])
def test_every_output_in_the_models_order(tmp_path, mode):
    model, x = _two_heads(), _x()
    path = str(tmp_path / "m.tflite")
    rep = export_tflite(model, path, quantization=mode,
                        calibration_data=x if mode == "int8" else None)
    interp = make_interpreter(path)[0]
    scores, box = run_interpreter(interp, x, all_outputs=True)
    want = _keras(model, x)
    assert scores.shape == (64, 5) and box.shape == (64, 4)
    tol = 0.2 if mode == "int8" else 0.02
    np.testing.assert_allclose(scores, want[0], atol=tol)
    np.testing.assert_allclose(box, want[1], atol=tol)
    np.testing.assert_array_equal(run_interpreter(interp, x), scores)
    assert rep.top1_agreement is not None and rep.max_abs_error < tol


def test_qat_model_with_two_heads_is_full_integer(tmp_path):
    q, x = quantize_model(_two_heads()), _x()
    calibrate(q, x)
    rep = export_tflite(q, str(tmp_path / "q.tflite"), quantization="int8",
                        calibration_data=x)
    assert rep.float_ops == []
    assert rep.top1_agreement >= 0.95


def test_pruning_sensitivity_and_compress_read_every_output():
    model, x = _two_heads(), _x(32)
    s = tfcomp.pruning.sensitivity(model, x, ratios=(0.5,))
    assert np.all(np.isfinite(s.table)) and s.table.max() > 0
    with pytest.raises(NotImplementedError, match="reconstruction"):
        tfcomp.pruning.sensitivity(model, (x, np.zeros(32, "int64")),
                                   method="loss")
    res = tfcomp.compress(model, x, hardware=BISMO(), budget=0.7,
                          num_samples=32, starts=1, check_gap=False)
    assert res.cost <= 0.7 + 1e-9


def test_labels_of_several_outputs_are_the_first_outputs():
    from tfcomp._io import as_arrays

    model, x = _two_heads(), _x(8)
    y_cls, y_box = np.arange(8) % 5, np.zeros((8, 4), "float32")
    got_x, got_y = as_arrays((x, [y_cls, y_box]), model=model,
                             need_labels=True)
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, y_cls)
