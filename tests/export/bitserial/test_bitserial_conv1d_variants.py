"""Bit-serial export of the 1D conv variants quantize_model produces
(QuantDepthwiseConv1D, a SeparableConv1D split into a depthwise and a 1x1
conv, QuantConv1DTranspose), dilated convs (zero taps), PReLU (a
per-channel table) and LeakyReLU / ELU / leaky ReLUs (tables): each tiny
QAT net is simulated bit for bit equal to the integer reference, and its
dequantized output is the Keras QAT model's (as
tests/export/bitserial/test_coverage.py checks)."""

import json

import keras
import numpy as np
import pytest
from _exact_checks import check_exact, qat_of

from tfcomp.export.bitserial import (
    build_ir_from_keras,
)
from tfcomp.export.bitserial.keras_layers import dilate_taps
from tfcomp.layers import QuantConv1DTranspose, QuantDepthwiseConv1D
from tfcomp.quantization import calibrate

L = keras.layers


_qat = qat_of


def _check(model, x, tmp_path, hardware=("bismo", "bitfusion")):
    return check_exact(model, x, tmp_path, hardware)


def _model(body):
    def build(inp):
        return keras.Model(inp, body(inp))
    return build


def test_dilate_taps():
    k = np.arange(1, 7).reshape(2, 3, 1, 1)
    d = dilate_taps(k, (2, 2))
    assert d.shape == (3, 5, 1, 1)
    assert d[::2, ::2, 0, 0].tolist() == k[..., 0, 0].tolist()
    assert int(np.count_nonzero(d)) == 6
    assert np.array_equal(dilate_taps(k, (1, 1)), k)


@pytest.mark.parametrize("mult,strides,padding", [(1, 1, "same"),
                                                   (2, 2, "valid")])
def test_depthwise_conv1d(tmp_path, mult, strides, padding):
    qat, x = _qat(_model(lambda h: L.Dense(3)(L.GlobalAveragePooling1D()(
        L.DepthwiseConv1D(3, strides=strides, padding=padding,
                          depth_multiplier=mult, activation="relu",
                          name="dw")(L.ZeroPadding1D((1, 2))(h))))),
        (12, 4), seed=1, bits=6)
    assert isinstance(qat.get_layer("dw"), QuantDepthwiseConv1D)
    ir = _check(qat, x, tmp_path)
    op = ir.op("dw")
    assert op.op == "depthwise_conv2d" and op.attrs["kernel"] == (1, 3)
    assert op.attrs["strides"] == (1, strides)
    assert "pad" not in {o.op for o in ir.ops}  # folded into the conv
    assert np.asarray(op.weights).shape == (1, 3, 4, mult)


def test_separable_conv1d(tmp_path):
    qat, x = _qat(_model(lambda h: L.GlobalMaxPooling1D()(
        L.SeparableConv1D(6, 3, padding="same", activation="relu",
                          name="sep")(h))), (10, 3), seed=2)
    assert isinstance(qat.get_layer("sep_depthwise"), QuantDepthwiseConv1D)
    ir = _check(qat, x, tmp_path)
    assert ir.op("sep_depthwise").op == "depthwise_conv2d"
    assert ir.op("sep").op == "conv2d" and ir.op("sep").attrs["kernel"] == (
        1, 1)


@pytest.mark.parametrize("rate,padding", [(2, "causal"), (3, "same"),
                                          (2, "valid")])
def test_dilated_conv1d(tmp_path, rate, padding):
    qat, x = _qat(_model(lambda h: L.Conv1D(5, 3, dilation_rate=rate,
                                            padding=padding, name="dil")(
        L.Conv1D(4, 2, dilation_rate=rate, padding=padding, name="d0")(h))),
        (16, 2), seed=3)
    ir = build_ir_from_keras(qat)
    op = ir.op("dil")
    assert op.attrs["kernel"] == (1, 2 * rate + 1)  # zero taps
    w = np.asarray(op.weights)
    assert not np.any(w[:, [i for i in range(w.shape[1]) if i % rate]])
    assert any("zero taps" in n for n in ir.notes)
    _check(qat, x, tmp_path)
    # the cycles the descriptor reports are the undilated kernel's
    with open(tmp_path / "bismo.json") as f:
        layer = {la["name"]: la for la in json.load(f)["layers"]}["dil"]
    assert layer["cost"]["cycles"] > 0


def test_dilated_conv2d_and_depthwise(tmp_path):
    def body(h):
        h = L.Conv2D(4, 3, dilation_rate=(2, 1), padding="same",
                     activation="relu", name="c")(h)
        h = L.DepthwiseConv2D(3, dilation_rate=2, padding="same",
                              name="dw")(h)
        h = L.DepthwiseConv1D(3, dilation_rate=2, padding="same",
                              name="dw1")(L.Reshape((36, 4))(h))
        return L.Dense(3)(L.Flatten()(h))
    qat, x = _qat(_model(body), (6, 6, 2), seed=4)
    ir = _check(qat, x, tmp_path)
    assert ir.op("c").attrs["kernel"] == (5, 3)
    assert ir.op("dw").attrs["kernel"] == (5, 5)
    assert ir.op("dw1").attrs["kernel"] == (1, 5)


@pytest.mark.parametrize("strides,padding,k", [(2, "same", 3),
                                               (2, "valid", 3),
                                               (1, "same", 2), (3, "valid", 2)])
def test_conv1d_transpose(tmp_path, strides, padding, k):
    qat, x = _qat(_model(lambda h: L.Conv1DTranspose(
        4, k, strides=strides, padding=padding, activation="relu",
        name="up")(L.Conv1D(3, 1, name="c0")(h))), (7, 2), seed=5)
    assert isinstance(qat.get_layer("up"), QuantConv1DTranspose)
    ir = _check(qat, x, tmp_path)
    assert ir.op("up").op == "conv2d" and ir.op("up").attrs["kernel"] == (
        1, k)
    assert ir.shapes()[ir.output] == tuple(qat.output.shape[1:])


def test_dilated_transpose_is_refused():
    qat, _ = _qat(_model(lambda h: L.Conv1DTranspose(
        4, 3, dilation_rate=2, name="upd")(h)), (7, 2), seed=6)
    with pytest.raises(ValueError, match=r"'upd'.*dilat"):
        build_ir_from_keras(qat)


@pytest.mark.parametrize("shape,shared", [((12, 3), [1]),
                                          ((5, 5, 3), [1, 2])])
def test_prelu_per_channel(tmp_path, shape, shared):
    def body(h):
        h = L.Conv1D(4, 3, name="c")(h) if len(shape) == 2 else L.Conv2D(
            4, 3, name="c")(h)
        h = L.PReLU(shared_axes=shared, name="pr")(h)
        return L.Dense(3)(L.Flatten()(h))
    qat, x = _qat(_model(body), shape, seed=7)
    pr = qat.get_layer("pr")
    alpha = np.linspace(-0.5, 0.7, 4).reshape(pr.alpha.shape)
    pr.alpha.assign(alpha.astype("float32"))
    calibrate(qat, x)
    ir = _check(qat, x, tmp_path, hardware=("bismo",))
    op = ir.op("pr")
    assert op.op == "lut" and len(op.attrs["table"]) == 4  # per channel


def test_prelu_per_position_is_refused():
    qat, _ = _qat(_model(lambda h: L.PReLU(name="pp")(L.Conv1D(
        4, 3, name="c")(h))), (8, 2), seed=8)
    pp = qat.get_layer("pp")
    pp.alpha.assign(np.random.default_rng(0).normal(
        size=pp.alpha.shape).astype("float32"))
    with pytest.raises(ValueError, match=r"'pp' \(PReLU\).*shared_axes"):
        build_ir_from_keras(qat)


@pytest.mark.parametrize("act", [
    lambda: L.LeakyReLU(0.2), lambda: L.ELU(),
    lambda: L.ReLU(negative_slope=0.1, max_value=4.0),
    lambda: L.ReLU(threshold=0.25)])
def test_leaky_relu_elu_and_other_relus_are_tables(tmp_path, act):
    """LeakyReLU (GAN discriminators, YOLO-style nets), ELU and a ReLU
    with a slope or threshold: element-wise, so tables, as PReLU is (they
    were refused as 'no integer mapping')."""
    def body(h):
        h = act()(L.Conv2D(4, 3, name="c")(h))
        return L.Dense(3)(L.Flatten()(L.Conv2D(4, 3)(h)))
    qat, x = _qat(_model(body), (7, 7, 2), seed=9)
    ir = _check(qat, x, tmp_path, hardware=("bismo",))
    assert "lut" in {o.op for o in ir.ops}
