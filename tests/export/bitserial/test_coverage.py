"""Layer coverage of the bit-serial exporter (issue #17).

ZeroPadding1D/2D, Rescaling, Conv1D, Conv2DTranspose and grouped Conv2D
are exported, simulated bit for bit equal to the integer reference, and
agree with the Keras QAT model. The Conv1D and Conv2DTranspose nets here
are hand-built QAT models: float convs between QuantActivation observers
(the exporter quantizes a float conv's weights itself), weights on the
8-bit per-channel grid it uses for float layers and biases on the
accumulator grid, so Keras and the integer network compute the same codes.
quantize_model wraps both layers too (QuantConv1D, QuantConv2DTranspose);
that path is exported exactly by tests/models (audio_conv1d,
conv_denoiser). The stem net goes through quantize_model. Other layers
are refused with a ValueError naming the layer, its type and the supported
types, and nothing is written.
"""

import json
import os

import keras
import numpy as np
import pytest

from tfcomp.export.bitserial import (
    build_ir_from_keras,
    export_bitserial,
    integer_reference,
    simulate_bitserial,
    validate_descriptor,
    write_descriptor,
)
from tfcomp.export.bitserial.errors import DescriptorError
from tfcomp.export.bitserial.kernels import pad_op
from tfcomp.layers import QuantActivation
from tfcomp.pruning import recalibrate_batchnorm
from tfcomp.quantization import calibrate, quantize_model

L = keras.layers


def _snap_weights(model, rng):
    """Float conv / dense kernels onto an 8-bit symmetric per-output-channel
    grid (what the exporter quantizes float layers to) and non-zero biases.
    """
    for layer in model.layers:
        if not hasattr(layer, "kernel") or isinstance(layer, QuantActivation):
            continue
        k = keras.ops.convert_to_numpy(layer.kernel).astype(np.float64)
        axes = (0, 1, 3) if isinstance(layer, L.Conv2DTranspose) else tuple(
            range(k.ndim - 1))
        s = np.abs(k).max(axis=axes, keepdims=True) / 127.0
        layer.kernel.assign((np.round(k / s) * s).astype("float32"))
        if layer.use_bias:
            layer.bias.assign(rng.normal(0, 0.05, layer.bias.shape).astype(
                "float32"))


def _snap_biases(model):
    """Biases onto the accumulator grid s_in * s_w (as QAT layers add
    them); s_in and s_w as the exporter reads them."""
    ir = build_ir_from_keras(model)
    for op in ir.ops:
        if not op.is_gemm:
            continue
        layer = model.get_layer(op.name)
        if layer.use_bias:
            step = ir.quant(op.inputs[0]).scale * op.w_scale
            b = keras.ops.convert_to_numpy(layer.bias).astype(np.float64)
            layer.bias.assign((np.round(b / step) * step).astype("float32"))


def _qat(build, x, seed):
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    model = build()
    _snap_weights(model, rng)
    calibrate(model, x)
    _snap_biases(model)
    return model


def _check(model, x, tmp_path, ops, version=2, cal=None):
    """Exports on both targets, simulation == reference bit for bit, and
    the dequantized integer output equals the Keras QAT model's codes."""
    ir = build_ir_from_keras(model, cal)
    assert ops <= {op.op for op in ir.ops}, [op.op for op in ir.ops]
    ref = integer_reference(ir, x)
    for hw in ("bismo", "bitfusion"):
        path = str(tmp_path / f"{hw}.json")
        report = export_bitserial(model, path, hardware=hw, verify_x=x,
                                  calibration_data=cal)
        assert report.simulator_exact is True
        assert np.array_equal(simulate_bitserial(path, x), ref)
        assert validate_descriptor(path)["schema_version"] == version
    out_q = ir.quant(ir.output)
    y_int = out_q.dequantize(ref).reshape(len(x), -1)
    ref_model = keras.Model(model.inputs, ir.keras_output)  # pre-softmax
    y_keras = keras.ops.convert_to_numpy(ref_model(x, training=False))
    y_keras = y_keras.reshape(len(x), -1)
    err = np.abs(y_int - y_keras)
    assert np.mean(err <= 1e-5) >= 0.95, float(np.mean(err <= 1e-5))
    assert np.mean(err <= out_q.scale * 1.001) >= 0.99
    return ir


def _conv1d_net():
    """keras.io-style Conv1D sequence classifier (audio / text features)."""
    inp = keras.Input((24, 8), name="seq")
    h = QuantActivation(8, name="q_in")(inp)
    h = L.ZeroPadding1D(2, name="pad")(h)
    h = L.Conv1D(12, 5, activation="relu", name="c1")(h)
    h = QuantActivation(6, quantizer="unsigned", name="q1")(h)
    h = L.Conv1D(12, 3, padding="causal", groups=3, activation="relu",
                 name="c2")(h)
    h = QuantActivation(8, quantizer="unsigned", name="q2")(h)
    h = L.MaxPooling1D(2, name="mp")(h)
    h = L.Conv1D(16, 3, strides=2, padding="same", activation="relu",
                 name="c3")(h)
    h = QuantActivation(8, quantizer="unsigned", name="q3")(h)
    h = L.GlobalAveragePooling1D(name="gap")(h)
    h = QuantActivation(8, name="q4")(h)
    h = L.Dense(5, name="fc")(h)
    out = QuantActivation(8, name="logits")(h)
    return keras.Model(inp, out)


def test_conv1d_net_exact(tmp_path):
    x = np.random.default_rng(0).normal(size=(48, 24, 8)).astype("float32")
    model = _qat(_conv1d_net, x[:24], seed=1)
    ir = _check(model, x[24:], tmp_path, {"conv2d", "max_pool",
                                          "global_avg_pool", "reshape"})
    c1 = ir.op("c1")
    assert c1.attrs["kernel"] == (1, 5) and c1.attrs["pads"] == (0, 0, 2, 2)
    assert ir.op("c2").attrs["pads"] == (0, 0, 2, 0)  # causal
    assert ir.op("c2").attrs["groups"] == 3
    assert "pad" not in {op.op for op in ir.ops}  # folded into c1


def _unet():
    """A tiny U-Net: strided convs down, Conv2DTranspose up, a skip Add."""
    inp = keras.Input((16, 16, 3), name="img")
    h = QuantActivation(8, name="q_in")(inp)
    e1 = L.Conv2D(8, 3, padding="same", activation="relu", name="e1")(h)
    e1 = QuantActivation(8, quantizer="unsigned", name="q_e1")(e1)
    e2 = L.Conv2D(16, 3, strides=2, padding="same", activation="relu",
                  name="e2")(e1)
    e2 = QuantActivation(8, quantizer="unsigned", name="q_e2")(e2)
    d1 = L.Conv2DTranspose(8, 3, strides=2, padding="same",
                           activation="relu", name="up")(e2)
    d1 = QuantActivation(8, quantizer="unsigned", name="q_up")(d1)
    h = L.Add(name="skip")([d1, e1])
    h = QuantActivation(8, quantizer="unsigned", name="q_skip")(h)
    h = L.Conv2DTranspose(8, 2, strides=2, padding="valid", name="up2")(h)
    h = QuantActivation(8, name="q_up2")(h)
    h = L.Conv2D(2, 1, name="head")(h)
    out = QuantActivation(8, name="mask")(h)
    return keras.Model(inp, out)


def test_unet_conv2d_transpose_exact(tmp_path):
    x = np.random.default_rng(2).uniform(-1, 1, (12, 16, 16, 3)).astype(
        "float32")
    model = _qat(_unet, x[:6], seed=3)
    ir = _check(model, x[6:], tmp_path, {"conv2d", "pad", "add"})
    zi = ir.op("up_zero_insert")
    assert zi.attrs["interior"] == [1, 1, 0]
    assert ir.shapes()["up2"] == (32, 32, 8)
    assert any("zero-inserted" in n for n in ir.notes)


def _stem_net():
    """keras.applications-style stem (Rescaling, ZeroPadding, strided conv,
    BN, padded max pool) and a grouped conv block, through quantize_model.
    """
    inp = keras.Input((16, 16, 3), name="img")
    h = L.Rescaling(1 / 127.5, offset=-1, name="rescale")(inp)
    h = L.ZeroPadding2D(3, name="conv1_pad")(h)
    h = L.Conv2D(8, 7, strides=2, use_bias=False, name="conv1")(h)
    h = L.BatchNormalization(name="bn1")(h)
    h = L.ReLU(name="relu1")(h)
    h = L.ZeroPadding2D(((1, 1), (1, 1)), name="pool1_pad")(h)
    h = L.MaxPooling2D(3, strides=2, name="pool1")(h)
    r = L.Conv2D(16, 3, padding="same", groups=4, activation="relu",
                 name="gconv")(h)
    r = L.Conv2D(8, 1, groups=2, name="gproj")(r)
    h = L.Add(name="add")([h, r])
    h = L.GlobalAveragePooling2D(name="gap")(h)
    out = L.Dense(10, activation="softmax", name="fc")(h)
    return keras.Model(inp, out)


@pytest.fixture(scope="module")
def stem_qat():
    keras.utils.set_random_seed(4)
    rng = np.random.default_rng(4)
    model = _stem_net()
    for layer in model.layers:
        if getattr(layer, "use_bias", False):
            layer.bias.assign(rng.normal(0, 0.1, layer.bias.shape).astype(
                "float32"))
    qat = quantize_model(model, bits=8)
    x = rng.uniform(0, 255, (64, 16, 16, 3)).astype("float32")
    calibrate(qat, x[:32])
    return qat, x[32:]


def test_stem_rescaling_padding_grouped_qat_exact(stem_qat, tmp_path):
    qat, x = stem_qat
    # quantize_model turns the 4D Rescaling into an 8-bit 1x1 depthwise conv
    ir = _check(qat, x, tmp_path, {"depthwise_conv2d", "pad", "max_pool", "conv2d"})
    assert ir.op("gconv").attrs["groups"] == 4
    assert ir.op("conv1").attrs["pads"] == (3, 3, 3, 3)  # folded pad
    assert ir.op("pool1_pad").attrs["pads"] == [[1, 1], [1, 1], [0, 0]]
    with open(tmp_path / "bismo.json") as f:
        layers = {la["name"]: la for la in json.load(f)["layers"]}
    g = layers["gconv"]["gemm"]
    assert (g["groups"], g["K"], g["N"]) == (4, 3 * 3 * 2, 4)


def test_rescaling_of_float_input_folds_into_input(tmp_path):
    """Without an observer on the raw input the Rescaling folds into the
    input quantization (descriptor ``input.rescale``)."""
    keras.utils.set_random_seed(5)
    inp = keras.Input((8, 8, 3))
    h = L.Rescaling([1 / 255, 1 / 128, 1 / 64], offset=-0.5)(inp)
    h = QuantActivation(8, name="q_in")(h)
    h = L.ZeroPadding2D(1)(h)
    h = L.Conv2D(8, 3, strides=2, activation="relu", name="c")(h)
    h = QuantActivation(8, quantizer="unsigned", name="q")(h)
    h = L.Flatten()(h)
    out = QuantActivation(8, name="out")(L.Dense(4, name="fc")(h))
    x = np.random.default_rng(5).uniform(0, 255, (24, 8, 8, 3))
    x = x.astype("float32")
    model = _qat(lambda: keras.Model(inp, out), x[:12], seed=5)
    ir = _check(model, x[12:], tmp_path, {"conv2d", "dense"})
    assert ir.input_rescale == ((1 / 255, 1 / 128, 1 / 64), (-0.5,))
    with open(tmp_path / "bismo.json") as f:
        assert json.load(f)["input"]["rescale"]["offset"] == [-0.5]


def test_version_1_features_keep_version_1(tmp_path):
    from tfcomp.export.bitserial import random_ir
    ir = random_ir(seed=0)
    desc = write_descriptor(ir, str(tmp_path / "v1.json"))
    assert desc["schema_version"] == 1


def test_v2_op_in_a_v1_descriptor_is_rejected(stem_qat, tmp_path):
    qat, _ = stem_qat
    path = str(tmp_path / "s.json")
    desc = write_descriptor(build_ir_from_keras(qat), path)
    desc["schema_version"] = 1
    with pytest.raises(DescriptorError, match="needs schema_version >= 2"):
        validate_descriptor(desc)


def test_pad_kernel_interior_and_edges():
    y = pad_op(np.array([[[1, 2], [3, 4]]]), [[1, 0], [0, 2]], [1, 0], 9)
    assert y.tolist() == [[[9, 9, 9, 9], [1, 2, 9, 9], [9, 9, 9, 9],
                           [3, 4, 9, 9]]]


def _embedding():
    inp = keras.Input((6,), dtype="int32")
    h = L.Embedding(20, 4, name="emb")(inp)
    return keras.Model(inp, L.Dense(2)(L.Flatten()(h)))


def _attention():
    inp = keras.Input((4, 8))
    h = L.MultiHeadAttention(2, 4, name="mha")(inp, inp)
    return keras.Model(inp, L.Dense(2)(L.Flatten()(h)))


def _conv_then(layer, shape=(8, 8, 4)):
    def build():
        inp = keras.Input(shape)
        h = L.Conv2D(4, 3, padding="same", name="c")(inp)
        return keras.Model(inp, layer(h))
    return build


def _lambda():
    inp = keras.Input((8, 8, 2))
    return keras.Model(inp, L.Lambda(lambda t: t * 2.0, name="lam")(inp))


def _conv3d():
    inp = keras.Input((4, 4, 4, 2))
    return keras.Model(inp, L.Conv3D(2, 3, name="c3d")(inp))


@pytest.mark.parametrize("build, name, kind", [
    (_embedding, "emb", "Embedding"),
    (_attention, "mha", "MultiHeadAttention"),
    (_conv_then(L.LayerNormalization(name="ln")), "ln",
     "LayerNormalization"),
    (_conv_then(L.GroupNormalization(2, name="gn")), "gn",
     "GroupNormalization"),
    (_conv3d, "c3d", "Conv3D"),
    (_lambda, "lam", "Lambda"),
    (_conv_then(L.UpSampling2D(interpolation="bilinear", name="up")), "up",
     "UpSampling2D"),
])
def test_unsupported_layers_are_refused_clearly(build, name, kind,
                                                tmp_path):
    keras.utils.set_random_seed(0)
    model = build()
    shape = (4,) + tuple(model.inputs[0].shape[1:])
    if model.inputs[0].dtype.startswith("int"):
        x = np.random.default_rng(0).integers(0, 20, shape).astype("int32")
    else:
        x = np.random.default_rng(0).uniform(-1, 1, shape).astype("float32")
    path = tmp_path / "m.json"
    with pytest.raises(ValueError) as err:
        export_bitserial(model, str(path), calibration_data=x)
    msg = str(err.value)
    assert f"'{name}'" in msg and kind in msg, msg
    assert "Supported layer types" in msg and "Conv2DTranspose" in msg
    assert os.listdir(tmp_path) == []  # nothing written


def test_multiply_limits_and_keras_ops_are_refused_clearly(tmp_path):
    """x * hard_sigmoid(x) is a table and a ``mul``; an element-wise
    ``keras.ops`` call is a table; a Multiply of three tensors and a
    ``keras.ops`` call that is not element-wise are refused, naming them."""
    inp = keras.Input((8, 8, 2))
    h = L.Conv2D(4, 3, padding="same", name="c")(inp)
    g = L.Activation("hard_sigmoid", name="hsig")(h)
    x = np.random.default_rng(0).uniform(-1, 1, (4, 8, 8, 2)).astype(
        "float32")
    ir = build_ir_from_keras(keras.Model(inp, L.Multiply(name="hswish")(
        [h, g])), x)
    assert ir.op("hswish").op == "mul" and ir.op("hsig").op == "lut"
    model = keras.Model(inp, L.Multiply(name="m3")([h, g, h]))
    with pytest.raises(ValueError, match=r"'m3' \(Multiply\) of 3 tensors"):
        export_bitserial(model, str(tmp_path / "m.json"),
                         calibration_data=x)
    assert os.listdir(tmp_path) == []
    inp = keras.Input((8, 8, 2))
    out = L.Conv2D(4, 3, name="c")(inp + 3.0)
    ir = build_ir_from_keras(keras.Model(inp, out), x)
    assert [op.op for op in ir.ops][:2] == ["lut", "conv2d"]
    out = L.Conv2D(4, 3, name="c")(keras.ops.mean(inp, axis=-1,
                                                   keepdims=True))
    with pytest.raises(ValueError, match=r"keras.ops call .*\(Mean\)"):
        build_ir_from_keras(keras.Model(inp, out), x)


def test_dilated_and_mid_network_limits_are_named():
    inp = keras.Input((10, 4))
    # dilated convs map (zero taps); a dilated transposed conv does not
    model = keras.Model(inp, L.Conv1DTranspose(4, 3, dilation_rate=2,
                                               name="dil")(inp))
    x = np.random.default_rng(0).uniform(-1, 1, (4, 10, 4)).astype(
        "float32")
    with pytest.raises(ValueError, match="'dil' .*dilation_rate"):
        build_ir_from_keras(model, x)


@pytest.mark.slow
@pytest.mark.apps  # keras.applications: the apps tier
def test_keras_applications_resnet50v2(tmp_path):
    """ResNet50V2 (32x32, weights=None) through quantize_model: exported
    and simulated exactly (ZeroPadding2D, pre-activation BatchNorm as
    per-channel tables)."""
    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50V2(
        weights=None, input_shape=(32, 32, 3), classes=10)
    qat = quantize_model(model, bits=8)
    x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype(
        "float32")
    calibrate(qat, x[:4])
    report = export_bitserial(qat, str(tmp_path / "r50.json"),
                              verify_x=x[4:])
    assert report.simulator_exact is True
    assert report.top1_agreement >= 0.75


@pytest.mark.slow
@pytest.mark.apps  # keras.applications: the apps tier
def test_keras_applications_mobilenetv3small(tmp_path):
    """MobileNetV3Small: its hard sigmoid (``ReLU(6.0)(x + 3.0) * (1.0 /
    6.0)``, two keras.ops calls) and hard swish are tables, its
    squeeze-excite gates ``mul`` ops; exported and simulated exactly, the
    QAT model's output codes. (BatchNorm statistics re-estimated first:
    at their initial values the untrained network's logits all lie within
    one output step.)"""
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV3Small(
        weights=None, input_shape=(32, 32, 3), classes=10)
    x = np.random.default_rng(0).uniform(0, 255, (24, 32, 32, 3)).astype(
        "float32")
    recalibrate_batchnorm(model, x[:16])
    qat = quantize_model(model, bits=8)
    calibrate(qat, x[:16])
    report = export_bitserial(qat, str(tmp_path / "m.json"),
                              verify_x=x[16:])
    assert report.simulator_exact is True
    assert report.max_abs_error <= 1e-5, report
    assert report.top1_agreement >= 0.875, report
    ops = {op.name: op.op for op in build_ir_from_keras(qat).ops}
    assert ops["add"] == ops["multiply"] == "lut"  # x + 3, * 1/6
    assert sum(kind == "mul" for kind in ops.values()) >= 9  # SE gates
