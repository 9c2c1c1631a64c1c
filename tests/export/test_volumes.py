"""Volume models in TFLite files: 3D pooling exported as two 2D poolings
(TFLite has no 3D pooling builtin), equal to Keras; Conv3D /
Conv3DTranspose as int8 CONV_2D in QAT and post-training integer files
(TFLite's CONV_3D is float only); keras.io's CT-scan volume classifier
(Conv3D + MaxPool3D + BatchNormalization), trained, exports float and
full-integer."""

import keras
import numpy as np
import pytest

from tfcomp.export import export_tflite
from tfcomp.export._volumes import lower_volume_layers
from tfcomp.quantization import calibrate, quantize_model

L = keras.layers


@pytest.mark.parametrize("layer", [
    L.MaxPooling3D(2),
    L.MaxPooling3D((2, 3, 2), strides=(1, 2, 2), padding="same"),
    L.AveragePooling3D((3, 2, 2), strides=(2, 1, 2), padding="same"),
    L.AveragePooling3D((2, 2, 3), strides=(2, 2, 1)),
], ids=["max2", "max_same", "avg_same", "avg_valid"])
def test_lowered_pooling_equals_keras(layer, tmp_path):
    inputs = keras.Input((7, 9, 6, 3))
    model = keras.Model(inputs, layer(L.Conv3D(4, 1)(inputs)))
    x = np.random.default_rng(0).normal(size=(4, 7, 9, 6, 3)).astype(
        "float32")
    low = lower_volume_layers(model, integer=False)
    assert low is not model and low.layers[-1].name == layer.name
    assert low.output.shape == model.output.shape
    np.testing.assert_allclose(low(x), model(x), atol=1e-5)
    report = export_tflite(model, str(tmp_path / "m.tflite"), verify_data=x)
    assert report.max_abs_error < 1e-4


def _ct_scan_classifier():
    """keras.io "3D image classification from CT scans", tiny."""
    inputs = keras.Input((8, 8, 8, 1))
    x = L.Conv3D(4, 3, activation="relu")(inputs)
    x = L.MaxPool3D(2)(x)
    x = L.BatchNormalization()(x)
    x = L.Conv3D(8, 3, padding="same", activation="relu")(x)
    x = L.AveragePooling3D(2, padding="same")(x)
    x = L.GlobalAveragePooling3D()(x)
    return keras.Model(inputs, L.Dense(3)(L.Dense(8, "relu")(x)))


def test_qat_volume_classifier_exports_full_integer(tmp_path):
    keras.utils.set_random_seed(0)
    model = _ct_scan_classifier()
    x = np.random.default_rng(1).uniform(size=(64, 8, 8, 8, 1)).astype(
        "float32")
    q = quantize_model(model)
    calibrate(q, x)
    # trained: nonzero conv biases (a zero bias hid that Conv3D's bias was
    # added after the reshape to 5D: a float CONV_2D + ADD in the file)
    q.compile("adam", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    q.fit(x, np.arange(64) % 3, epochs=1, batch_size=16, verbose=0)
    report = export_tflite(q, str(tmp_path / "q.tflite"), "int8",
                           calibration_data=x)
    assert report.float_ops == []
    assert report.top1_agreement >= 0.95


def test_unknown_depth_is_a_clear_error(tmp_path):
    inputs = keras.Input((None, 4, 4, 1))
    h = L.MaxPooling3D(2)(L.Conv3D(2, 3, padding="same")(inputs))
    model = keras.Model(inputs, L.Dense(2)(L.GlobalAveragePooling3D()(h)))
    assert lower_volume_layers(model, integer=False) is model
    with pytest.raises(ValueError, match=r"max_pooling3d.* \(MaxPooling3D\)"
                       r"'\] of model .* have no TFLite builtin op"):
        export_tflite(model, str(tmp_path / "m.tflite"))
    assert not list(tmp_path.iterdir())


def test_trained_dense_on_a_volume_is_integer(tmp_path):
    """A Dense on a volume (rank 5) with a nonzero bias: its bias was added
    after the reshape back to 5D, a float CONV_2D + ADD in the file."""
    inputs = keras.Input((3, 3, 3, 2))
    model = keras.Model(inputs, L.Dense(3)(L.Flatten()(L.Dense(4)(inputs))))
    rng = np.random.default_rng(0)
    model.set_weights([np.abs(rng.normal(size=w.shape)).astype("float32")
                       + (0.6 if w.ndim == 1 else 0.0)
                       for w in model.get_weights()])
    x = rng.uniform(size=(32, 3, 3, 3, 2)).astype("float32")
    q = quantize_model(model)
    calibrate(q, x)
    report = export_tflite(q, str(tmp_path / "q.tflite"), "int8",
                           calibration_data=x)
    assert report.float_ops == []


@pytest.mark.parametrize("layer", [
    L.Conv3D(4, 3, strides=(2, 1, 2), padding="same", activation="relu"),
    L.Conv3D(4, (2, 3, 1), dilation_rate=(2, 1, 1)),
    L.Conv3DTranspose(4, 3, strides=2, padding="same"),
    L.Conv3D(4, (2, 3, 3), strides=(2, 1, 1), groups=2),
], ids=["conv3d_same_strided", "conv3d_dilated", "conv3d_transpose",
        "conv3d_grouped"])
def test_float_volume_convs_post_training_int8_are_integer(layer, tmp_path):
    """A float model's Conv3D / Conv3DTranspose: TFLite's CONV_3D /
    CONV_3D_TRANSPOSE are float only; an integer file takes the CONV_2D
    twin (the float file keeps CONV_3D)."""
    inputs = keras.Input((6, 6, 6, 2))
    model = keras.Model(inputs, L.Dense(3)(L.Flatten()(layer(inputs))))
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(size=w.shape).astype("float32") * 0.5
                       + (0.3 if w.ndim == 1 else 0.0)
                       for w in model.get_weights()])
    x = rng.uniform(size=(32, 6, 6, 6, 2)).astype("float32")
    twin = lower_volume_layers(model, integer=True)
    np.testing.assert_allclose(twin(x), model(x), atol=1e-4)
    assert lower_volume_layers(model, integer=False) is model
    report = export_tflite(model, str(tmp_path / "q.tflite"), "int8",
                           calibration_data=x)
    assert report.float_ops == []
    assert report.top1_agreement >= 0.95


def test_qat_grouped_conv3d_exports_full_integer(tmp_path):
    """A grouped Conv3D's CONV_2D form stacks the depth taps inside each
    group, so the CONV_2D is grouped too (it was refused)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 6, 6, 4))
    x = L.Conv3D(8, 3, padding="same", groups=4, activation="relu")(inputs)
    model = keras.Model(inputs, L.Dense(3)(L.GlobalAveragePooling3D()(x)))
    x = np.random.default_rng(0).uniform(size=(16, 4, 6, 6, 4)).astype(
        "float32")
    q = quantize_model(model)
    calibrate(q, x)
    report = export_tflite(q, str(tmp_path / "q.tflite"), "int8",
                           calibration_data=x)
    assert report.float_ops == [] and report.max_abs_error < 1e-4
