"""Inputs and outputs of user models that are not one class per image:
per-pixel labels, token inputs (3D pooling: tests/export/test_volumes.py)."""

import keras
import numpy as np
import pytest

from tfcomp._io import as_arrays
from tfcomp.export import export_tflite
from tfcomp.quantization import make_bits_dynamic, quantize_model
from tfcomp.tuners._common import accuracy

L = keras.layers


def _segmenter():
    inputs = keras.Input((6, 6, 2))
    h = L.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    return keras.Model(inputs, L.Conv2D(3, 1)(h))


def test_per_pixel_labels_are_kept_and_scored_per_pixel():
    model = _segmenter()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 6, 6, 2)).astype("float32")
    y = rng.integers(0, 3, (5, 6, 6))
    _, got = as_arrays((x, y), model=model, need_labels=True)
    np.testing.assert_array_equal(got, y)  # before: y[:, 0, 0], silently
    onehot = np.eye(3)[y]
    np.testing.assert_array_equal(
        as_arrays((x, onehot), model=model, need_labels=True)[1], y)
    pred = keras.ops.convert_to_numpy(model(x)).argmax(-1)
    assert accuracy(model, x, y) == pytest.approx(np.mean(pred == y))
    with pytest.raises(ValueError, match=r"labels of shape \(5, 7\)"):
        as_arrays((x, rng.integers(0, 3, (5, 7))), model=model,
                  need_labels=True)
    # one class per sample, as before
    clf = keras.Sequential([keras.Input((4,)), L.Dense(3)])
    xs = rng.normal(size=(5, 4)).astype("float32")
    for labels in (np.arange(5) % 3, (np.arange(5) % 3)[:, None],
                   np.eye(3)[np.arange(5) % 3]):
        np.testing.assert_array_equal(
            as_arrays((xs, labels), model=clf, need_labels=True)[1],
            np.arange(5) % 3)


def test_dynamic_bits_cover_an_embedding_table():
    inputs = keras.Input((8,), dtype="int32")
    h = L.Embedding(20, 4)(inputs)
    h = L.Conv1D(4, 3, activation="relu")(h)
    outputs = L.Dense(3)(L.GlobalAveragePooling1D()(h))
    q = quantize_model(keras.Model(inputs, outputs))
    dyn = make_bits_dynamic(q)
    name = next(n for n in dyn.layers if "embedding" in n)
    dyn.set_policy({name: (4, 8)})  # before: "no dynamic bit-widths"
    assert dyn.policy()[name][0] == 4


def test_regression_targets_are_ignored_where_labels_are_not_needed():
    """A next-frame / denoising model's (x, y) pairs: y is not class
    labels. Readers that only need x (TFLite calibration, LASSO, BN
    recalibration) take the pair; those that need labels say why."""
    inputs = keras.Input((4, 4, 1))
    model = keras.Model(inputs, L.Conv2D(1, 3, padding="same")(inputs))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 4, 4, 1)).astype("float32")
    y = rng.normal(size=(6, 4, 4, 1)).astype("float32")
    got_x, got_y = as_arrays((x, y), model=model)
    np.testing.assert_array_equal(got_x, x)
    assert got_y is None
    # shaped like a one-unit output, as a binary mask would be: read as
    # labels per position, and float targets are not labels
    with pytest.raises(ValueError, match=r"non-integer values .*regression"):
        as_arrays((x, y), model=model, need_labels=True)


def test_soft_labels_are_classes_and_rgb_targets_are_not():
    rng = np.random.default_rng(1)
    clf = keras.Sequential([keras.Input((4,)), L.Dense(3)])
    xs = rng.normal(size=(5, 4)).astype("float32")
    soft = 0.8 * np.eye(3)[np.arange(5) % 3] + 0.2 / 3  # mixup-style
    np.testing.assert_array_equal(
        as_arrays((xs, soft), model=clf, need_labels=True)[1],
        np.arange(5) % 3)
    inputs = keras.Input((4, 4, 3))
    denoiser = keras.Model(inputs, L.Conv2D(3, 1)(inputs))
    x = rng.normal(size=(5, 4, 4, 3)).astype("float32")
    assert as_arrays((x, x), model=denoiser)[1] is None


def test_per_position_labels_of_a_variable_length_output():
    """keras.io's next-frame ConvLSTM takes a variable number of frames:
    labels per frame and pixel match an output of shape (None, T?, H, W,
    classes)."""
    inputs = keras.Input((None, 4, 4, 1))
    model = keras.Model(inputs, L.Conv3D(2, 1)(inputs))
    x = np.zeros((3, 5, 4, 4, 1), "float32")
    y = np.ones((3, 5, 4, 4), "int64")
    np.testing.assert_array_equal(
        as_arrays((x, y), model=model, need_labels=True)[1], y)


def test_labels_of_a_dict_output_model_are_the_first_outputs():
    """``fit``'s (x, {name: y}) form of a model with a dict of outputs, as
    a pair and as tf.data batches: the verbs score the first output."""
    import tensorflow as tf

    inputs = keras.Input((4,))
    h = L.Dense(8)(inputs)
    model = keras.Model(inputs, {"cls": L.Dense(3, name="cls")(h),
                                 "box": L.Dense(2, name="box")(h)})
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 4)).astype("float32")
    y = {"cls": np.arange(6) % 3,
         "box": rng.normal(size=(6, 2)).astype("float32")}
    first = model.output_names[0]
    got = as_arrays((x, y), model=model)[1]
    if first == "cls":
        np.testing.assert_array_equal(got, np.arange(6) % 3)
    else:  # the box targets are not class labels: ignored
        assert got is None
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    np.testing.assert_array_equal(as_arrays(ds, model=model)[0], x)


def test_a_fixed_batch_size_exports_and_verifies(tmp_path):
    """keras.Input(batch_size=8) bakes the batch into Flatten's reshape:
    the file is fed 8 rows at a time (the last chunk padded) and
    post-training int8 calibrates on batches of 8."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 2), batch_size=8)
    h = L.Conv2D(4, 3, activation="relu")(inputs)
    model = keras.Model(inputs, L.Dense(3)(L.Flatten()(h)))
    x = np.random.default_rng(0).normal(size=(20, 6, 6, 2)).astype("float32")
    report = export_tflite(model, str(tmp_path / "f.tflite"), verify_data=x)
    assert report.num_verified == 20 and report.max_abs_error < 1e-5
    report = export_tflite(model, str(tmp_path / "q.tflite"), "int8",
                           calibration_data=x, verify_data=x)
    assert report.float_ops == [] and report.top1_agreement >= 0.9
    with pytest.raises(ValueError, match="fixes its batch size at 8"):
        export_tflite(model, str(tmp_path / "e.tflite"), "int8",
                      calibration_data=x[:5], verify_data=x)
    assert not (tmp_path / "e.tflite").exists()
