"""Top-1 agreement of a TFLite file with Keras per position: a
segmentation net's per-pixel softmax (or logits, compiled with a sparse
categorical cross-entropy) is checked pixel by pixel against
``min_agreement``; a one-unit binary output (a sigmoid, or a logit of a
model compiled with a binary cross-entropy) by the side of its threshold;
a multi-feature regression output (an autoencoder) is not read as class
scores."""

import os

import keras
import numpy as np
import pytest

from tfcomp.export import VerificationError, export_tflite
from tfcomp.export.tflite_verify import side_agreement

L = keras.layers


def _segmenter(softmax=True):
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", activation="relu")(inp)
    out = L.Conv2D(4, 1, activation="softmax" if softmax else None)(x)
    return keras.Model(inp, out)


def _x(n=16):
    return np.random.default_rng(0).uniform(size=(n, 8, 8, 3)).astype(
        "float32")


def test_per_pixel_softmax_agreement_is_measured(tmp_path):
    report = export_tflite(_segmenter(), os.path.join(tmp_path, "s.tflite"),
                           verify_data=_x())
    assert report.top1_agreement == 1.0  # float file: every pixel


def test_per_pixel_logits_need_a_categorical_loss_to_count(tmp_path):
    model = _segmenter(softmax=False)
    report = export_tflite(model, os.path.join(tmp_path, "a.tflite"),
                           verify_data=_x())
    assert report.top1_agreement is None  # logits or a regression: unknown
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    report = export_tflite(model, os.path.join(tmp_path, "b.tflite"),
                           verify_data=_x())
    assert report.top1_agreement == 1.0


def test_per_pixel_disagreement_fails_the_file(tmp_path):
    """Calibrated on inputs 100x larger than it runs on, an int8 file
    mislabels pixels: the per-pixel gate refuses it (it used to pass,
    checked by its max error only)."""
    path = os.path.join(tmp_path, "q.tflite")
    with pytest.raises(VerificationError, match="top-1 class"):
        export_tflite(_segmenter(), path, "int8",
                      calibration_data=_x(64) * 100, verify_data=_x())
    assert not os.path.exists(path)


def test_sequence_autoencoder_output_is_not_class_scores(tmp_path):
    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 3))
    model = keras.Model(inp, L.Dense(3)(L.Dense(8, activation="relu")(inp)))
    x = np.random.default_rng(0).normal(size=(16, 6, 3)).astype("float32")
    report = export_tflite(model, os.path.join(tmp_path, "r.tflite"),
                           verify_data=x)
    assert report.top1_agreement is None


def _binary(sigmoid=True):
    keras.utils.set_random_seed(0)
    inp = keras.Input((6,))
    h = L.Dense(8, activation="relu")(inp)
    return keras.Model(inp, L.Dense(1, activation="sigmoid" if sigmoid
                                    else None)(h))


def test_binary_output_agreement_is_the_side_of_its_threshold(tmp_path):
    x = np.random.default_rng(0).normal(size=(64, 6)).astype("float32")
    report = export_tflite(_binary(), os.path.join(tmp_path, "p.tflite"),
                           verify_data=x)
    assert report.top1_agreement == 1.0  # a sigmoid: 0.5
    logits = _binary(sigmoid=False)
    report = export_tflite(logits, os.path.join(tmp_path, "l.tflite"),
                           verify_data=x)
    assert report.top1_agreement is None  # a logit or a regression: unknown
    logits.compile("adam", keras.losses.BinaryCrossentropy(from_logits=True))
    report = export_tflite(logits, os.path.join(tmp_path, "c.tflite"),
                           verify_data=x)
    assert report.top1_agreement == 1.0  # compiled: 0 on the logit


def test_binary_decisions_that_flip_fail_the_file(tmp_path):
    path = os.path.join(tmp_path, "q.tflite")
    x = np.random.default_rng(0).normal(size=(64, 6)).astype("float32")
    with pytest.raises(VerificationError, match="top-1 class"):
        export_tflite(_binary(), path, "int8", calibration_data=x * 0.01,
                      verify_data=x, min_agreement=0.99)  # measured 0.92
    assert not os.path.exists(path)


def test_multi_label_sigmoid_head_is_checked_per_label(tmp_path):
    keras.utils.set_random_seed(0)
    inp = keras.Input((6,))
    model = keras.Model(inp, L.Dense(5, activation="sigmoid")(
        L.Dense(8, activation="relu")(inp)))
    x = np.random.default_rng(0).normal(size=(64, 6)).astype("float32")
    report = export_tflite(model, os.path.join(tmp_path, "m.tflite"),
                           verify_data=x)
    assert report.top1_agreement == 1.0
    from tfcomp.hardware.runtime import make_interpreter, run_interpreter

    path = os.path.join(tmp_path, "q.tflite")
    report = export_tflite(model, path, "int8", calibration_data=x * 0.01,
                           verify_data=x, min_agreement=0.0)
    lite = run_interpreter(make_interpreter(path)[0], x)
    keras_y = model.predict(x, verbose=0)
    per_label = side_agreement(lite, keras_y, 0.5)  # 320 decisions
    assert report.top1_agreement == pytest.approx(per_label)
    assert side_agreement(np.array([0.5, 0.9]), np.array([0.5003, 0.2]),
                          0.5) == 0.5  # a tie at the threshold agrees


def test_bitserial_sigmoid_head_reports_its_decisions(tmp_path):
    """The bit-serial report reads a sigmoid head the same way; outputs on
    the int8 grid's 0.5 where Keras sits a hair off it are ties."""
    from tfcomp.export import export_bitserial
    from tfcomp.quantization import calibrate, quantize_model

    keras.utils.set_random_seed(0)
    inp = keras.Input((6,))
    model = keras.Model(inp, L.Dense(3, activation="sigmoid")(
        L.Dense(8, activation="relu")(inp)))
    x = np.random.default_rng(0).normal(size=(64, 6)).astype("float32")
    qat = quantize_model(model)
    calibrate(qat, x)
    report = export_bitserial(qat, str(tmp_path / "m.json"),
                              hardware="bismo", calibration_data=x,
                              verify_x=x[:16])
    assert report.simulator_exact and report.top1_agreement == 1.0


def test_a_softmax_after_a_sigmoid_layer_is_read_as_classes():
    from tfcomp.export.tflite_verify import binary_threshold

    keras.utils.set_random_seed(0)
    inp = keras.Input((6,))
    model = keras.Model(inp, L.Dense(4, activation="softmax")(
        L.Dense(8, activation="sigmoid")(inp)))
    y = model.predict(np.ones((2, 6)), verbose=0)
    assert binary_threshold(model, y, 1) is None
    logits = keras.Model(inp, L.Dense(1)(L.Dense(8, activation="sigmoid")(
        inp)))
    assert binary_threshold(logits, np.full((2, 1), 0.3), 1) is None


def test_top1_agreement_counts_classes_tied_on_the_int8_grid():
    from tfcomp.export.tflite_verify import top1_agreement
    file_out = np.array([[51, 51, 51], [10, 200, 45], [85, 85, 85]]) / 256
    keras_out = np.array([[0.3330, 0.3337, 0.3333], [0.6, 0.3, 0.1],
                          [0.2, 0.7, 0.1]])
    # row 0: Keras's scores lie within the file's 1/256 step, which ties
    # them; row 2: a collapsed row of the file, Keras's scores are apart
    assert top1_agreement(file_out, keras_out, 1 / 256) == 1 / 3
    assert top1_agreement(keras_out, file_out, 1 / 256) == 1 / 3
    assert top1_agreement(file_out, keras_out) == 0.0


def test_int8_file_of_an_untrained_softmax_verifies(tmp_path):
    # near-uniform class scores (a model not trained yet) differ by less
    # than the int8 output's 1/256 step: the file ties them, which is not
    # a disagreement (before, argmax took the first tied class: 20-30%)
    keras.utils.set_random_seed(0)
    inp = keras.Input((8,))
    h = L.Dense(16, activation="relu")(inp)
    out = L.Dense(5, activation="softmax",
                  kernel_initializer=keras.initializers.RandomNormal(
                      stddev=1e-4))(h)
    model = keras.Model(inp, out)
    x = np.random.default_rng(0).uniform(size=(64, 8)).astype("float32")
    report = export_tflite(model, os.path.join(tmp_path, "u.tflite"),
                           quantization="int8", calibration_data=x,
                           verify_data=x)
    assert report.top1_agreement >= 0.9
