"""Layer and group normalization in QAT models and their int8 TFLite
files: ``quantize_model`` makes them ``QuantLayerNormalization`` /
``QuantGroupNormalization``, whose 8-bit quantizers sit on each tensor of
TFLite's MEAN / SUB / MUL / RSQRT form, so the int8 file is full-integer
and computes what the QAT model computes (before, the export refused them:
the converter kept them float)."""

import os

import keras
import numpy as np
import pytest

from tfcomp.export import export_tflite
from tfcomp.export.runtime import make_interpreter, run_interpreter
from tfcomp.layers import QuantGroupNormalization, QuantLayerNormalization
from tfcomp.quantization import (
    calibrate,
    quantization_report,
    quantize_model,
    strip_quantization,
)
from tfcomp.testing import run_layer_test

L = keras.layers


def _convnext_mini():
    """A ConvNeXt-style block as keras.io writes one: patchify stem + LN,
    depthwise conv, LN, pointwise MLP with GELU, residual, LN head."""
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(16, 2, strides=2, name="stem")(inp)
    x = L.LayerNormalization(epsilon=1e-6, name="stem_ln")(x)
    h = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    h = L.LayerNormalization(epsilon=1e-6, name="ln")(h)
    h = L.Dense(32, activation="gelu", name="pw1")(h)
    h = L.Dense(16, name="pw2")(h)
    x = L.Add(name="residual")([x, h])
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.LayerNormalization(epsilon=1e-6, name="head_ln")(x)
    return keras.Model(inp, L.Dense(5, name="logits")(x), name="convnext_mini")


def _token_mlp():
    """Tokens: Conv1D embedding, pre-norm MLP block without beta / gamma
    variants, LayerNorm over two axes."""
    inp = keras.Input((12, 4))
    x = L.Conv1D(8, 1, name="embed")(inp)
    h = L.LayerNormalization(center=False, name="ln_nocenter")(x)
    h = L.Dense(8, activation="relu", name="mlp")(h)
    x = L.Add(name="residual")([x, h])
    x = L.LayerNormalization(scale=False, name="ln_noscale")(x)
    x = L.LayerNormalization(axis=[1, 2], name="ln_2axes")(x)
    x = L.Flatten(name="flat")(x)
    return keras.Model(inp, L.Dense(3, name="logits")(x), name="token_mlp")


def _groupnorm_unet_block():
    """A diffusion-style residual block: Conv2D, GroupNormalization,
    swish, Conv2D, GroupNormalization, residual add."""
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", name="stem")(inp)
    h = L.GroupNormalization(groups=4, name="gn1")(x)
    h = L.Activation("swish", name="act1")(h)
    h = L.Conv2D(8, 3, padding="same", name="conv")(h)
    h = L.GroupNormalization(groups=2, epsilon=1e-5, name="gn2")(h)
    x = L.Add(name="residual")([x, h])
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, L.Dense(4, name="logits")(x), name="gn_block")


def _x(shape, n=96, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, *shape)).astype(
        "float32")


def test_layer_contract():
    run_layer_test(QuantLayerNormalization, {"epsilon": 1e-3},
                   input_shape=(2, 5, 6), atol=1e-5)
    run_layer_test(QuantGroupNormalization, {"groups": 2},
                   input_shape=(2, 3, 3, 4), atol=1e-5)


@pytest.mark.parametrize("kwargs", [{"groups": 2}, {"groups": 4},
                                    {"groups": 2, "center": False},
                                    {"groups": 1, "scale": False}])
def test_uncalibrated_equals_groupnorm_with_8bit_weights(kwargs):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(4, 3, 5, 8)) * 2 + 0.5).astype("float32")
    gn = L.GroupNormalization(**kwargs)
    gn.build(x.shape)
    gn.set_weights([rng.normal(size=w.shape).astype("float32")
                    for w in gn.get_weights()])
    qgn = QuantGroupNormalization.from_config(gn.get_config())
    qgn.build(x.shape)
    qgn.load_float_weights(gn)
    gn.set_weights(qgn.quantized_weights())
    np.testing.assert_allclose(np.asarray(qgn(x)), np.asarray(gn(x)),
                               atol=3e-5)
    groups = x.reshape(4, 3, 5, kwargs["groups"], -1)
    np.testing.assert_allclose(
        qgn.step_values(x)["variance"].ravel(),
        groups.var(axis=(1, 2, 4)).ravel(), rtol=1e-4)


@pytest.mark.parametrize("kwargs", [
    {}, {"center": False}, {"scale": False},
    {"center": False, "scale": False}, {"axis": [1, 2]},
    {"axis": 1, "epsilon": 1e-3}])
def test_uncalibrated_equals_layernorm_with_8bit_weights(kwargs):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(8, 5, 6)) * 2 + 0.5).astype("float32")
    ln = L.LayerNormalization(**kwargs)
    ln.build(x.shape)
    ln.set_weights([rng.normal(size=w.shape).astype("float32")
                    for w in ln.get_weights()])
    qln = QuantLayerNormalization.from_config(ln.get_config())
    qln.build(x.shape)
    qln.load_float_weights(ln)
    ln.set_weights(qln.quantized_weights())  # the 8-bit gamma and beta
    np.testing.assert_allclose(np.asarray(qln(x)), np.asarray(ln(x)),
                               atol=2e-5)
    # step_values (what calibrate reads) are the call's intermediates
    values = qln.step_values(x)
    assert set(values) == set(qln.step_quantizers)
    shifted = x.var(axis=tuple(a % 3 for a in qln.axis),
                    keepdims=True) + qln.epsilon
    np.testing.assert_allclose(  # floored at one step of a max grid
        values["inv_std"], 1.0 / np.sqrt(np.maximum(
            shifted, shifted.max() / 255.0)), rtol=1e-4)


def test_constant_tokens_keep_ranges_finite():
    """A constant token (a black background patch) has variance 0: its
    ``var + eps`` rounds to code 0 and RSQRT would give inf (an inf EMA
    range, NaN gradients); the floor keeps every range finite."""
    x = np.random.default_rng(0).normal(size=(64, 6, 8)).astype("float32")
    x[:, :3] = 0.0  # half the tokens constant
    inp = keras.Input((6, 8))
    h = L.Dense(8, name="proj")(L.LayerNormalization(name="ln")(inp))
    model = keras.Model(inp, L.Dense(2, name="head")(L.Flatten()(h)))
    qat = quantize_model(model)
    qat.compile(keras.optimizers.SGD(0.01), "mse")
    history = qat.fit(x, np.zeros((64, 2)), epochs=2, batch_size=16,
                      verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    grids = qat.get_layer("ln").export_grids()
    assert all(np.isfinite(s) and s > 0 for s, _, _ in grids.values())
    step = grids["shifted"][0]
    assert grids["inv_std"][0] * 255 <= 1.01 / np.sqrt(step)


@pytest.mark.parametrize("build,shape", [(_convnext_mini, (8, 8, 3)),
                                         (_token_mlp, (12, 4)),
                                         (_groupnorm_unet_block, (8, 8, 3))])
def test_int8_file_is_full_integer_and_equals_qat(tmp_path, build, shape):
    keras.utils.set_random_seed(0)
    model = build()
    x = _x(shape)
    qat = quantize_model(model, bits=8)
    norms = [lay.name for lay in model.layers if isinstance(
        lay, (L.LayerNormalization, L.GroupNormalization))]
    assert quantization_report(qat).normalizations == norms
    assert all(isinstance(qat.get_layer(n), (
        QuantLayerNormalization, QuantGroupNormalization)) for n in norms)
    calibrate(qat, x[:64])
    path = os.path.join(tmp_path, "m.tflite")
    report = export_tflite(qat, path, "int8", verify_data=x[64:])
    assert report.top1_agreement >= 0.99, report
    assert report.float_ops == []  # MEAN, SUB, MUL, RSQRT... all int8
    y_qat = keras.ops.convert_to_numpy(qat(x[64:]))
    y_file = run_interpreter(make_interpreter(path)[0], x[64:])
    assert np.abs(y_file - y_qat).max() <= 0.02 * np.ptp(y_qat)
    # the QAT model stays close to the float model at 8 bits
    y_float = keras.ops.convert_to_numpy(model(x[64:]))
    assert np.mean(y_qat.argmax(1) == y_float.argmax(1)) >= 0.9


def test_training_round_trip_and_strip(tmp_path):
    keras.utils.set_random_seed(0)
    x = _x((8, 8, 3), n=64)
    y = np.random.default_rng(1).integers(0, 5, 64)
    qat = quantize_model(_convnext_mini(), bits=8)
    qat.compile("adam", "sparse_categorical_crossentropy")
    qat.fit(x, y, epochs=1, batch_size=16, verbose=0)  # EMA ranges
    ln = qat.get_layer("ln")
    assert all(q.calibrated for q in ln.step_quantizers.values())
    path = os.path.join(tmp_path, "qat.keras")
    qat.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x[:8])),
        keras.ops.convert_to_numpy(qat(x[:8])), atol=1e-5)
    assert loaded.get_layer("ln").export_grids() == ln.export_grids()
    plain = strip_quantization(qat)
    assert type(plain.get_layer("ln")) is L.LayerNormalization
    np.testing.assert_allclose(plain.get_layer("ln").get_weights()[0],
                               ln.quantized_weights()[0])


def test_uncalibrated_layernorm_is_refused(tmp_path):
    qat = quantize_model(_convnext_mini(), bits=8)
    calibrate(qat, _x((8, 8, 3), n=16))
    qat.get_layer("ln").step_quantizers["inv_std"].seen.assign(0.0)
    with pytest.raises(ValueError, match=r"never saw data: .*'ln'"):
        export_tflite(qat, os.path.join(tmp_path, "m.tflite"), "int8")
    assert not os.path.exists(os.path.join(tmp_path, "m.tflite"))


def test_preprocessing_normalization_is_integer(tmp_path):
    """keras.applications' preprocessing (Rescaling, then a Normalization
    with ImageNet statistics, ConvNeXt's) becomes 8-bit 1x1 depthwise
    convs: before, the file computed the Normalization as a float SUB +
    MUL between DEQUANTIZE and QUANTIZE."""
    inp = keras.Input((8, 8, 3))
    x = L.Rescaling(1 / 255.0, name="rescale")(inp)
    x = L.Normalization(mean=[0.485, 0.456, 0.406],
                        variance=[0.229 ** 2, 0.224 ** 2, 0.225 ** 2],
                        name="norm")(x)
    x = L.Conv2D(8, 2, strides=2, name="stem")(x)
    x = L.LayerNormalization(epsilon=1e-6, name="ln")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inp, L.Dense(4, name="logits")(x))
    x = np.random.default_rng(0).uniform(0, 255, (64, 8, 8, 3)).astype(
        "float32")
    qat = quantize_model(model)
    assert quantization_report(qat).quantized["norm"] == (8, 8)
    np.testing.assert_allclose(  # the same function before calibration
        keras.ops.convert_to_numpy(qat(x[:8])),
        keras.ops.convert_to_numpy(model(x[:8])), rtol=0.05, atol=0.05)
    calibrate(qat, x[:48])
    report = export_tflite(qat, os.path.join(tmp_path, "m.tflite"), "int8",
                           verify_data=x[48:])
    assert report.float_ops == [] and report.top1_agreement >= 0.99
