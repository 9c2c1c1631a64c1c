"""QAT int8 files of user models with a dilated convolution, Keras'
multi-op activations (hard_sigmoid, selu) and merges (Average, ...) are
full-integer and compute what the QAT model computes.

A dilated Conv2D / DepthwiseConv2D is exported with its dilation as zero
taps, or beyond 4x the MACs on its phase sub-images (the converter leaves
a dynamic-batch SPACE_TO_BATCH_ND -> CONV_2D -> BATCH_TO_SPACE_ND
float); Average, hard_sigmoid and selu become ``QuantAverage`` /
``QuantHardSigmoid`` / ``QuantSELU`` / ``QuantELU``, with a quantizer on
each tensor of their TFLite form (ADD + MUL; ADD + MUL; GREATER, MUL,
EXP, SUB, MUL, SELECT_V2). ELU has no int8 TFLite kernel: it stays float
in the QAT file exactly as in post-training int8."""

import os

import keras
import numpy as np
import pytest

from tfcomp.export import export_tflite
from tfcomp.export.runtime import make_interpreter, run_interpreter
from tfcomp.layers import QuantAverage, QuantELU, QuantHardSigmoid, QuantSELU
from tfcomp.quantization import (
    calibrate,
    quantize_model,
    strip_quantization,
)
from tfcomp.testing import run_layer_test

L = keras.layers


def _images(n=64, size=12, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, size, size, 3)) \
        .astype("float32")


def _dilated_bn(depthwise=False):
    """keras.io's DeepLab-style block: a dilated conv, BatchNorm without
    scale, ReLU (and a BatchNorm without center and scale, ReLU6)."""
    inp = keras.Input((12, 12, 3))
    x = L.Conv2D(8, 3, padding="same", use_bias=False)(inp)
    x = L.BatchNormalization(center=False, scale=False)(x)
    x = L.ReLU(6.0)(x)
    if depthwise:
        x = L.DepthwiseConv2D(3, padding="same", dilation_rate=2,
                              use_bias=False)(x)
    else:
        x = L.Conv2D(16, 3, padding="same", dilation_rate=(2, 3),
                     use_bias=False)(x)
    x = L.BatchNormalization(scale=False)(x)
    x = L.ReLU()(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(10)(x))


def _activations():
    inp = keras.Input((12, 12, 3))
    x = L.Conv2D(8, 3, padding="same", activation="selu")(inp)
    x = L.Conv2D(8, 3, padding="same", activation="hard_sigmoid")(x)
    x = L.Conv2D(8, 3, padding="same")(x)
    x = L.Activation("selu")(x)
    x = L.Conv2D(8, 3, padding="same", activation="gelu")(x)
    x = L.Activation("hard_sigmoid")(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(5, activation="hard_sigmoid")(x))


def _merges():
    inp = keras.Input((12, 12, 3))
    x = L.Conv2D(16, 3, strides=2, padding="same", activation="relu")(inp)
    a, b = L.Conv2D(16, 1)(x), L.Conv2D(16, 1)(x)
    s = L.Subtract()([a, b])
    m = L.Maximum()([a, b])
    av = L.Average()([s, m, a])
    p = L.Identity()(L.Permute((2, 1, 3))(av))
    g = L.GlobalAveragePooling2D()(p)
    dot = L.Dot(axes=1)([L.Dense(8)(g), L.Dense(8)(g)])
    return keras.Model(inp, L.Dense(10)(L.Concatenate()([g, dot])))


def _train(model, x, seed=1):
    keras.utils.set_random_seed(seed)
    y = np.random.default_rng(seed).integers(0, 5, len(x))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)


def _qat_file(model, x, tmp_path):
    """Float fit, QAT, calibrate, short QAT fit, int8 export (the user's
    sequence); ``(qat, report, |file - qat| in output steps)``."""
    _train(model, x)
    qat = quantize_model(model)
    calibrate(qat, x[:32])
    _train(qat, x, seed=2)
    path = os.path.join(tmp_path, "q.tflite")
    report = export_tflite(qat, path, "int8", verify_data=x[32:])
    y_qat = keras.ops.convert_to_numpy(qat(x[32:]))
    y_file = run_interpreter(make_interpreter(path)[0], x[32:])
    step = qat.layers[-1].quantizer.numpy_grid()[0]
    return qat, report, np.abs(y_file - y_qat).max() / step


@pytest.mark.parametrize("depthwise", [False, True])
def test_dilated_conv_with_scaleless_batchnorm_is_int8(tmp_path, depthwise):
    keras.utils.set_random_seed(0)
    qat, report, steps = _qat_file(_dilated_bn(depthwise), _images(),
                                   tmp_path)
    # both BatchNorms folded into their convs, nothing left float
    assert not any(isinstance(lay, L.BatchNormalization)
                   for lay in qat.layers)
    assert report.float_ops == [], report.float_ops
    assert steps <= 1.01, steps
    assert report.top1_agreement >= 0.95, report


def test_only_cheap_dilations_are_widened():
    """Zero taps cost ((k - 1) * r + 1) / k MACs per axis: 3x3 at rate 2
    (2.8x) is widened; at rate 6 (DeepLab, 18x) the file runs the conv on
    the phase sub-images instead (next test)."""
    from tfcomp.layers.quant_conv import widens

    assert widens(L.Conv2D(4, 3, dilation_rate=2))
    assert widens(L.DepthwiseConv2D(3, dilation_rate=(1, 4)))  # 3x
    assert not widens(L.Conv2D(4, 3, dilation_rate=6))
    assert not widens(L.Conv2D(4, 3))


def _aspp(size=(16, 14)):
    """keras.io DeepLabV3+'s atrous pyramid: dilated 3x3 convs at rates
    6, 12 and 18 (the cheapest widening would cost 18x to 144x the MACs),
    a dilated depthwise conv, a non-square rate and a "valid" one."""
    inp = keras.Input((*size, 3))
    x = L.Conv2D(8, 3, padding="same", activation="relu")(inp)
    branches = [L.Conv2D(8, 3, padding="same", dilation_rate=r,
                         use_bias=False)(x) for r in (6, 12, 18)]
    branches.append(L.DepthwiseConv2D(3, padding="same",
                                      dilation_rate=(3, 5))(x))
    x = L.Concatenate()([L.ReLU()(L.BatchNormalization()(b))
                         for b in branches])
    x = L.Conv2D(8, 3, dilation_rate=(4, 3), activation="relu")(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(10)(x))


def test_wide_dilations_export_int8_on_phase_images(tmp_path):
    """Beyond the widening bound, the export runs the undilated kernel on
    the input's rate x rate phase sub-images stacked on the batch axis
    (PAD, RESHAPE, TRANSPOSE, CONV_2D, ..., STRIDED_SLICE): every op int8,
    the file equal to the QAT model within one output step (TF's own
    lowering left the CONV_2D, BATCH_TO_SPACE_ND and bias ADD float)."""
    keras.utils.set_random_seed(0)
    qat, report, steps = _qat_file(_aspp(), _images(size=16)[..., :14, :],
                                   tmp_path)
    assert report.float_ops == [], report.float_ops
    assert steps <= 1.01, steps
    assert report.top1_agreement >= 0.95, report


def test_dilated_as_batches_equals_the_dilated_conv():
    from tfcomp.layers._kernel_ops import dilated_as_batches

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 11, 9, 3)).astype("float32")
    k = rng.normal(size=(3, 2, 3, 4)).astype("float32")
    for rate, padding in (((6, 6), "same"), ((3, 2), "same"),
                          ((2, 3), "valid")):
        want = keras.ops.conv(x, k, padding=padding, dilation_rate=rate)
        got = dilated_as_batches(
            x, rate, (3, 2), padding,
            lambda b: keras.ops.conv(b, k, padding="valid"))
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_selu_and_hard_sigmoid_are_int8(tmp_path):
    keras.utils.set_random_seed(0)
    qat, report, steps = _qat_file(_activations(), _images(), tmp_path)
    kinds = [type(lay) for lay in qat.layers]
    assert kinds.count(QuantSELU) == 2 and kinds.count(QuantHardSigmoid) == 3
    assert report.float_ops == [], report.float_ops
    assert steps <= 2.01, steps


def test_merges_are_int8(tmp_path):
    keras.utils.set_random_seed(0)
    qat, report, steps = _qat_file(_merges(), _images(), tmp_path)
    assert isinstance(qat.get_layer("average"), QuantAverage)
    assert report.float_ops == [], report.float_ops
    assert steps <= 2.01, steps
    assert report.top1_agreement >= 0.95, report


def test_elu_is_int8_where_post_training_leaves_it_float(tmp_path):
    """TFLite's ELU builtin has no int8 kernel in the converter
    (post-training int8 keeps DEQUANTIZE, ELU, QUANTIZE); QAT writes it as
    RELU, MINIMUM, EXP, SUB, MUL, ADD, all int8 (``QuantELU``), for the
    ELU layer (any alpha) and activation="elu" alike."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((12, 12, 3))
    x = L.ELU(alpha=0.5)(L.Conv2D(8, 3, padding="same")(inp))
    x = L.Conv2D(8, 3, padding="same", activation="elu")(x)
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, L.Dense(10)(x))
    x = _images()
    qat, report, steps = _qat_file(model, x, tmp_path)
    elus = [lay for lay in qat.layers if isinstance(lay, QuantELU)]
    assert sorted(lay.alpha for lay in elus) == [0.5, 1.0]
    ptq = export_tflite(model, os.path.join(tmp_path, "p.tflite"), "int8",
                        calibration_data=x[:32], verify_data=x[32:])
    assert "ELU" in ptq.float_ops and report.float_ops == [], report.float_ops
    assert steps <= 2.01, steps
    plain = strip_quantization(qat)
    assert [type(lay).__name__ for lay in plain.layers].count("ELU") == 1


@pytest.mark.parametrize("cls,name", [(QuantHardSigmoid, "hard_sigmoid"),
                                      (QuantSELU, "selu"), (QuantELU, "elu")])
def test_activation_layer_contract_and_float_equality(cls, name):
    run_layer_test(cls, {"momentum": 0.9}, input_shape=(2, 5, 4),
                   atol=1e-5)
    x = np.linspace(-6, 6, 96, dtype="float32").reshape(2, 12, 4)
    layer = cls()  # before its quantizers see data: the float function
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer(x)),
        keras.ops.convert_to_numpy(keras.layers.Activation(name)(x)),
        atol=1e-6)
    assert set(layer.step_values(x)) == set(layer.step_quantizers)


def test_save_load_and_strip(tmp_path):
    keras.utils.set_random_seed(0)
    x = _images(n=48)
    inp = keras.Input((12, 12, 3))
    a = L.Conv2D(4, 3, padding="same", activation="selu")(inp)
    b = L.Activation("hard_sigmoid")(L.Conv2D(4, 3, padding="same")(inp))
    c = L.Conv2D(4, 1)(inp)
    h = L.Average(name="avg")([a, b, c])
    out = L.Dense(3)(L.GlobalAveragePooling2D()(h))
    model = keras.Model(inp, out)
    qat = quantize_model(model)
    calibrate(qat, x[:32])
    avg = qat.get_layer("avg")
    assert set(avg.step_quantizers) == {"partial2", "sum"}
    assert set(avg.step_values([x[:2, ..., :1]] * 3)) == {"partial2", "sum"}
    path = os.path.join(tmp_path, "qat.keras")
    qat.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x[:8])),
                               keras.ops.convert_to_numpy(qat(x[:8])),
                               atol=1e-5)
    plain = strip_quantization(qat)
    assert type(plain.get_layer("avg")) is L.Average
    kinds = {type(lay) for lay in plain.layers}
    assert not kinds & {QuantAverage, QuantHardSigmoid, QuantSELU}
    # stripped: float activations, the QAT model's (quantized) weights
    y_plain = keras.ops.convert_to_numpy(plain(x[32:]))
    y_float = keras.ops.convert_to_numpy(model(x[32:]))
    assert np.abs(y_plain - y_float).max() <= 0.05 * np.ptp(y_float)
    report = export_tflite(loaded, os.path.join(tmp_path, "q.tflite"),
                           "int8", verify_data=x[32:])
    assert report.float_ops == [], report.float_ops

