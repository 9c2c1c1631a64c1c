"""QAT Keras model -> integer IR -> descriptor -> bit-serial simulation."""

import json

import keras
import numpy as np
import pytest

import tfcomp
from tfcomp.export.bitserial import (
    build_ir_from_keras,
    descriptor_blob_path,
    export_bitserial,
    integer_reference,
)
from tfcomp.layers import QuantConv2D, QuantDense, QuantDepthwiseConv2D, QuantReLU
from tfcomp.quantization import calibrate, quantizable_layers, quantize_model


@pytest.fixture(scope="module")
def resnet_qat():
    keras.utils.set_random_seed(1)
    model = tfcomp.zoo.resnet(depth=8, width=8, input_shape=(12, 12, 1))
    rng = np.random.default_rng(0)
    names = quantizable_layers(model)
    bits = {n: (int(rng.integers(2, 9)), int(rng.integers(2, 9)))
            for n in names[1:-1]}
    qat = quantize_model(model, bits=bits)
    x = rng.uniform(0, 1, (96, 12, 12, 1)).astype("float32")
    calibrate(qat, x[:64])
    return qat, x[64:]


@pytest.mark.parametrize("target", ["bismo", "bitfusion"])
def test_resnet_qat_export_matches_keras(resnet_qat, tmp_path, target):
    qat, x = resnet_qat
    path = str(tmp_path / "r8.json")
    report = export_bitserial(qat, path, hardware=target, verify_x=x)
    assert report.simulator_exact is True
    assert report.num_verified == len(x)
    assert report.top1_agreement >= 0.99
    ir = build_ir_from_keras(qat)
    assert report.max_abs_error <= 1e-5  # same integer codes as Keras
    ops = {op.op for op in ir.ops}
    assert {"conv2d", "dense", "add", "global_avg_pool"} <= ops
    # per-layer cycles are the hardware model's for the layer's own bits
    from tfcomp.hardware import BISMO, BitFusion, extract_specs
    hw = BISMO() if target == "bismo" else BitFusion("edge")
    with open(path) as f:
        layers = {la["name"]: la for la in json.load(f)["layers"]}
    for spec in extract_specs(qat):
        if spec.op not in ("conv", "depthwise", "dense"):
            continue
        layer = qat.get_layer(spec.name)
        cost = hw.layer_cost(spec, layer.w_bits, layer.a_bits)
        assert layers[spec.name]["cost"]["cycles"] == cost.cycles
        assert layers[spec.name]["weights"]["bits"] == layer.w_bits
        assert layers[spec.name]["lhs"]["bits"] == layer.a_bits


@pytest.mark.slow
def test_resnet_ir_equals_keras_codes(resnet_qat):
    qat, x = resnet_qat
    ir = build_ir_from_keras(qat)
    y = ir.quant(ir.output).dequantize(integer_reference(ir, x))
    np.testing.assert_allclose(y, qat(x, training=False), atol=1e-5)
    agree = np.mean(y.argmax(1) == qat.predict(x, verbose=0).argmax(1))
    assert agree >= 0.99


def _hand_model():
    inp = keras.Input((10, 10, 2))
    h = QuantConv2D(6, 3, padding="same", activation="relu", w_bits=3,
                    a_bits=8, input_quantizer="signed", name="c1")(inp)
    h = keras.layers.MaxPooling2D(2, name="mp")(h)
    d = QuantDepthwiseConv2D(3, padding="same", depth_multiplier=1,
                             activation="relu6", w_bits=4, a_bits=5,
                             name="dw")(h)
    h = keras.layers.Add(name="res")([h, d])
    h = QuantReLU(a_bits=4, name="qrelu")(h)
    h = keras.layers.AveragePooling2D(2, name="ap")(h)
    h = keras.layers.Flatten(name="flat")(h)
    h = QuantDense(10, w_bits=5, a_bits=6, name="fc")(h)
    out = keras.layers.Activation("softmax", name="softmax")(h)
    return keras.Model(inp, out)


def test_hand_built_qat_model_needs_and_uses_calibration(tmp_path):
    keras.utils.set_random_seed(2)
    model = _hand_model()
    x = np.random.default_rng(3).uniform(-1, 1, (128, 10, 10, 2))
    x = x.astype("float32")
    with pytest.raises(ValueError, match="never saw data"):
        build_ir_from_keras(model, x)
    calibrate(model, x[:64])
    with pytest.raises(ValueError, match="output of layer 'c1'"):
        build_ir_from_keras(model)
    report = export_bitserial(model, str(tmp_path / "h.json"), "bismo",
                              calibration_data=x[:64], verify_x=x[64:])
    assert report.simulator_exact is True
    assert report.top1_agreement >= 0.95
    assert any("softmax dropped" in n for n in report.notes)
    ir = build_ir_from_keras(model, x[:64])
    ops = [op.op for op in ir.ops]
    assert "depthwise_conv2d" in ops and "add" in ops and "avg_pool" in ops
    assert ir.quant(ir.output).bits == 16  # calibrated logits grid
    with pytest.warns(DeprecationWarning, match="calibration_data"):
        old = build_ir_from_keras(model, calibration_x=x[:64])
    assert [op.op for op in old.ops] == ops
    old_path = str(tmp_path / "old.json")
    with pytest.warns(DeprecationWarning, match="target= is deprecated"):
        export_bitserial(model, old_path, target="bismo",
                         calibration_x=x[:64], verify=False)
    with open(descriptor_blob_path(old_path), "rb") as f, open(
            descriptor_blob_path(str(tmp_path / "h.json")), "rb") as g:
        assert f.read() == g.read()


def test_unsupported_layers_are_named():
    inp = keras.Input((6, 6, 1))
    h = QuantConv2D(4, 3, w_bits=4, a_bits=8, input_quantizer="signed",
                    name="c")(inp)
    h = keras.layers.BatchNormalization(name="bn")(h)
    out = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inp, out)
    x = np.random.default_rng(0).uniform(-1, 1, (8, 6, 6, 1))
    calibrate(model, x)
    with pytest.raises(ValueError, match="'bn'.*folded"):
        build_ir_from_keras(model, x)
    with pytest.raises(TypeError, match="keras.Model"):
        build_ir_from_keras("model")


@pytest.mark.slow
def test_simulator_agrees_with_int8_tflite_at_8_bits(tmp_path):
    from tfcomp.export import export_tflite
    from tfcomp.export.bitserial import simulate_bitserial
    from tfcomp.export.runtime import make_interpreter, run_interpreter
    keras.utils.set_random_seed(1)
    model = tfcomp.zoo.resnet(depth=8, width=8, input_shape=(12, 12, 1))
    qat = quantize_model(model, bits=8)
    x = np.random.default_rng(0).uniform(0, 1, (96, 12, 12, 1))
    x = x.astype("float32")
    calibrate(qat, x[:64])
    tfl = str(tmp_path / "r8.tflite")
    export_tflite(qat, tfl, quantization="int8", calibration_data=x[:64],
                  verify=False)
    interp, _ = make_interpreter(tfl)
    y_tfl = np.asarray(run_interpreter(interp, x[64:])).reshape(32, -1)
    path = str(tmp_path / "r8.json")
    report = export_bitserial(qat, path, "bismo", verify_x=x[64:])
    assert report.simulator_exact
    y_sim = simulate_bitserial(path, x[64:], dequantize=True)
    step = build_ir_from_keras(qat).quant("logits").scale
    assert np.max(np.abs(y_sim - y_tfl)) <= step * 1.001
    assert np.mean(y_sim.argmax(1) == y_tfl.argmax(1)) >= 0.99


def test_average_merge_is_an_add_onto_half_the_sum_grid(tmp_path):
    """``Average`` of two branches (an ensemble head, a multi-scale block):
    the QAT model's QuantAverage (sum on its own grid, then * 1/2) is one
    ``add`` whose codes are the sum's, on a grid of half its step: exact in
    the simulator and Keras' codes."""
    keras.utils.set_random_seed(4)
    inp = keras.Input((8, 8, 2))
    a = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    b = keras.layers.Conv2D(4, 1, activation="relu")(inp)
    h = keras.layers.Average(name="avg")([a, b])
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inp, keras.layers.Dense(5)(h))
    x = np.random.default_rng(5).uniform(0, 1, (96, 8, 8, 2)).astype(
        "float32")
    qat = quantize_model(model)
    calibrate(qat, x[:64])
    report = export_bitserial(qat, str(tmp_path / "avg.json"), "bismo",
                              verify_x=x[64:])
    assert report.simulator_exact is True
    assert report.top1_agreement >= 0.95
    ir = build_ir_from_keras(qat)
    assert ir.op("avg").op == "add"
    assert report.max_abs_error <= 1e-5  # the same integer codes as Keras
    three = quantize_model(keras.Model(inp, keras.layers.Average()([a, b, a])))
    calibrate(three, x[:8])
    with pytest.raises(ValueError, match="of 3 tensors; only 2"):
        build_ir_from_keras(three)
