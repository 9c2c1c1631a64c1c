"""Bit-serial export of UpSampling1D/2D (interpolation="nearest") and
Cropping1D/2D: ``upsample`` / ``crop`` host ops that only move values (the
input's grid in and out, schema version 6). Each tiny QAT net (conv ->
upsample -> conv, a U-Net-style decoder with a Concatenate skip after an
UpSampling2D, ...) is simulated bit for bit equal to the integer
reference on BISMO and Bit Fusion, and its dequantized output is the Keras
QAT model's; bilinear upsampling is refused by name."""

import json
import os

import keras
import numpy as np
import pytest
from _exact_checks import check_exact, qat_of

from tfcomp.export.bitserial import (
    SCHEMA_VERSION,
    DescriptorError,
    IRBuilder,
    QuantParams,
    export_bitserial,
    integer_reference,
    simulate_bitserial,
    validate_descriptor,
    write_descriptor,
)
from tfcomp.export.bitserial.keras_moves import move_of
from tfcomp.export.bitserial.kernels import crop_op, upsample_op
from tfcomp.export.bitserial.shapes import upsample_shape

L = keras.layers


_qat = qat_of


def _check(model, x, tmp_path, hardware=("bismo", "bitfusion")):
    return check_exact(model, x, tmp_path, hardware, schema_version=6,
                       varied=True)


def _op(ir, name):
    op = ir.op(name)
    assert op.out == ir.quant(op.inputs[0])  # the values only move
    return op


def test_upsampling1d(tmp_path):
    qat, x = _qat(lambda h: L.Conv1D(3, 3, name="c2")(L.UpSampling1D(
        3, name="up")(L.Conv1D(4, 3, padding="same", activation="relu",
                               name="c1")(h))), (10, 2), seed=1, bits=6)
    ir = _check(qat, x, tmp_path)
    op = _op(ir, "up")
    assert op.op == "upsample" and op.attrs["factors"][-1] == 1
    assert 3 in op.attrs["factors"] and ir.shapes()["c2"][-2:] == (28, 3)


@pytest.mark.parametrize("size", [(2, 2), (2, 3)])
def test_upsampling2d(tmp_path, size):
    qat, x = _qat(lambda h: L.Conv2D(3, 3, padding="same", name="c2")(
        L.UpSampling2D(size, name="up")(L.Conv2D(
            4, 3, padding="same", activation="relu", name="c1")(h))),
        (5, 4, 2), seed=2, bits=4)
    ir = _check(qat, x, tmp_path)
    op = _op(ir, "up")
    assert op.op == "upsample" and op.attrs["factors"] == [*size, 1]
    assert ir.shapes()["up"] == (5 * size[0], 4 * size[1], 4)
    _, t = integer_reference(ir, x[:2], return_all=True)
    assert np.array_equal(t["up"], np.repeat(np.repeat(
        t[op.inputs[0]], size[0], axis=1), size[1], axis=2))


def test_cropping1d(tmp_path):
    qat, x = _qat(lambda h: L.Conv1D(3, 2, name="c2")(L.Cropping1D(
        (1, 3), name="crop")(L.Conv1D(4, 3, padding="causal",
                                      activation="relu", name="c1")(h))),
        (12, 3), seed=3)
    ir = _check(qat, x, tmp_path)
    op = _op(ir, "crop")
    assert op.op == "crop" and op.attrs["crops"][-1] == [0, 0]
    assert [1, 3] in op.attrs["crops"]


def test_cropping2d_asymmetric(tmp_path):
    qat, x = _qat(lambda h: L.Conv2D(3, 2, name="c2")(L.Cropping2D(
        ((1, 0), (2, 3)), name="crop")(L.Conv2D(
            5, 3, padding="same", activation="relu", name="c1")(h))),
        (7, 9, 2), seed=4, bits=5)
    ir = _check(qat, x, tmp_path)
    op = _op(ir, "crop")
    assert op.attrs["crops"] == [[1, 0], [2, 3], [0, 0]]
    assert ir.shapes()["crop"] == (6, 4, 5)
    _, t = integer_reference(ir, x[:2], return_all=True)
    assert np.array_equal(t["crop"], t[op.inputs[0]][:, 1:, 2:-3])


def _unet(inp):
    """keras.io "Image segmentation with a U-Net-like architecture" in
    small: an encoder (strided conv, max pooling), a decoder that
    upsamples (UpSampling2D(2)), joins the skip (Concatenate) and adds an
    upsampled residual, per-pixel logits."""
    x = L.Conv2D(8, 3, strides=2, padding="same", activation="relu",
                 name="stem")(inp)  # 4x4
    skip = x
    x = L.SeparableConv2D(12, 3, padding="same", activation="relu",
                          name="enc")(x)
    x = L.MaxPooling2D(3, strides=2, padding="same", name="pool")(x)  # 2x2
    res = x
    x = L.Conv2DTranspose(8, 3, padding="same", activation="relu",
                          name="dec")(x)
    x = L.UpSampling2D(2, name="up")(x)  # 4x4
    x = L.Concatenate(name="cat")([x, skip])
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="fuse")(x)
    r = L.Conv2D(8, 1, padding="same", name="res_proj")(
        L.UpSampling2D(2, name="res_up")(res))
    x = L.Add(name="add")([x, r])
    x = L.UpSampling2D(2, name="up_out")(x)  # 8x8
    return L.Conv2D(3, 3, padding="same", name="logits")(x)


def test_unet_decoder(tmp_path):
    qat, x = _qat(_unet, (8, 8, 3), seed=5, bits=6)
    ir = _check(qat, x, tmp_path)
    ups = [op for op in ir.ops if op.op == "upsample"]
    assert {op.name for op in ups} >= {"up", "res_up", "up_out"}
    assert ir.op("cat").op == "concat" and ir.op("cat").inputs[0] == "up"
    assert ir.shapes()[ir.output] == (8, 8, 3)


def test_moves_at_the_model_input_and_output(tmp_path):
    """An upsample of the (float) model input, and a crop that is the
    model output (calibrated grids: none quantizes them)."""
    qat, x = _qat(lambda h: L.Cropping1D((2, 1), name="crop")(L.Conv1D(
        4, 3, padding="same", name="c")(L.UpSampling1D(2, name="up")(h))),
        (6, 2), seed=6)
    ir = _check(qat, x, tmp_path)
    assert ir.op("up").inputs == ["input"] and ir.output == "crop"
    assert ir.shapes()["crop"] == (9, 4)


def test_move_of_reads_the_layer_config():
    assert move_of(L.UpSampling1D(4)) == ("upsample", [4, 1])
    assert move_of(L.UpSampling2D((3, 2))) == ("upsample", [3, 2, 1])
    assert move_of(L.Cropping1D((0, 2))) == ("crop", [[0, 2], [0, 0]])
    assert move_of(L.Cropping2D(((2, 1), (0, 3)))) == (
        "crop", [[2, 1], [0, 3], [0, 0]])
    assert move_of(L.ZeroPadding1D(1)) == ("pad", [[1, 1], [0, 0]])
    assert move_of(L.Conv2D(2, 3)) is None
    assert move_of(L.UpSampling3D(2)) is None  # left to the general error


@pytest.mark.parametrize("layer, what", [
    (L.UpSampling2D(2, interpolation="bilinear", name="up"),
     "interpolation='bilinear'"),
    (L.UpSampling2D(2, interpolation="bicubic", name="up"),
     "interpolation='bicubic'"),
    (L.Cropping2D(1, data_format="channels_first", name="up"),
     "data_format='channels_first'"),
])
def test_refused_clearly(tmp_path, layer, what):
    inp = keras.Input((6, 6, 2))
    model = keras.Model(inp, L.Conv2D(2, 1, name="c2")(layer(L.Conv2D(
        4, 3, padding="same", name="c1")(inp))))
    x = np.random.default_rng(0).uniform(-1, 1, (4, 6, 6, 2))
    with pytest.raises(ValueError) as err:
        export_bitserial(model, str(tmp_path / "m.json"),
                         calibration_data=x.astype("float32"))
    msg = str(err.value)
    kind = type(layer).__name__
    assert f"layer 'up' ({kind}) with {what}" in msg, msg
    assert "no integer mapping" in msg and "Supported layer types" in msg
    assert "UpSampling1D/2D (interpolation='nearest')" in msg
    assert os.listdir(tmp_path) == []  # nothing written


def test_upsampling3d_and_cropping3d_stay_refused(tmp_path):
    for layer in (L.UpSampling3D(2, name="u3"), L.Cropping3D(1, name="u3")):
        inp = keras.Input((4, 4, 4, 2))
        model = keras.Model(inp, layer(inp))
        x = np.zeros((2, 4, 4, 4, 2), "float32")
        with pytest.raises(ValueError, match=f"'u3' \\({type(layer).__name__}"
                           r"\) has no integer mapping"):
            export_bitserial(model, str(tmp_path / "m.json"),
                             calibration_data=x)


def _move_ir():
    b = IRBuilder((3, 4, 2), QuantParams(5, False, 0.1, 3))
    b.upsample("up", "input", [2, 1, 1])
    b.crop("crop", "up", [[1, 2], [0, 1], [0, 0]])
    return b.build(output="crop")


def test_kernels_and_ir_shapes():
    x = np.arange(2 * 3 * 4 * 2).reshape(2, 3, 4, 2)
    y = upsample_op(x, [2, 3, 1])
    assert y.shape == (2, 6, 12, 2)
    assert np.array_equal(y[:, ::2, ::3], x) and np.array_equal(
        y[:, 1::2, 2::3], x)
    assert np.array_equal(crop_op(x, [[1, 0], [0, 2], [0, 0]]),
                          x[:, 1:, :2])
    ir = _move_ir()
    assert ir.shapes()["crop"] == (3, 3, 2)
    xq = np.random.default_rng(0).integers(0, 32, (2, 3, 4, 2))
    assert np.array_equal(integer_reference(ir, xq),
                          np.repeat(xq, 2, axis=1)[:, 1:-2, :3])
    for bad in ([0, 1, 1], [2, 1], [1.5, 1, 1], [True, 1, 1], None):
        with pytest.raises(ValueError, match="upsample needs an int factor"):
            upsample_shape((3, 4, 2), {"factors": bad}, "u")
    b = IRBuilder((3, 4, 2), QuantParams(5, False, 0.1, 3))
    with pytest.raises(ValueError, match="upsample needs an int factor"):
        b.upsample("u", "input", [0, 1, 1])
    with pytest.raises(ValueError, match="leaving >= 1 value"):
        b.crop("c", "input", [[2, 1], [0, 0], [0, 0]])


@pytest.mark.parametrize("target", ["bismo", "bitfusion"])
def test_descriptor_round_trip_and_version(tmp_path, target):
    ir = _move_ir()
    path = str(tmp_path / "m.json")
    desc = write_descriptor(ir, path, hardware=target)
    assert desc["schema_version"] == 6 == SCHEMA_VERSION
    with open(path) as f:
        layers = {la["name"]: la for la in json.load(f)["layers"]}
    assert layers["up"]["attrs"] == {"factors": [2, 1, 1]}
    assert layers["crop"]["attrs"] == {"crops": [[1, 2], [0, 1], [0, 0]]}
    assert {la["engine"] for la in layers.values()} == {"host"}
    xq = np.random.default_rng(1).integers(0, 32, (3, 3, 4, 2))
    assert np.array_equal(simulate_bitserial(path, xq),
                          integer_reference(ir, xq))
    old = json.loads(json.dumps(desc))
    old["schema_version"] = 5
    with pytest.raises(DescriptorError,
                       match="upsample needs schema_version >= 6"):
        validate_descriptor(old)
    for key, value, match in (
            ("output_shape", [5, 3, 2], "is not the crop of the input"),
            ("out_quant", dict(desc["layers"][1]["out_quant"], zero_point=4),
             "keeps its input's grid"),
            ("attrs", {"crops": [[1, 2], [0, 1]]}, "crop needs"),
            ("attrs", {"crops": [[-1, 2], [0, 1], [0, 0]]}, "minimum 0")):
        bad = json.loads(json.dumps(desc))
        bad["layers"][1][key] = value
        with pytest.raises(DescriptorError, match=match):
            validate_descriptor(bad)
    bad = json.loads(json.dumps(desc))
    bad["layers"][0]["attrs"] = {"factors": [0, 1, 1]}
    with pytest.raises(DescriptorError, match="minimum 1"):
        validate_descriptor(bad)
