"""A swish built as ``x * QuantActivation(fixed)(sigmoid(x))`` (TFLite's
LOGISTIC + MUL, ``quantize_model``'s default) exports as one table; other
multiplies are ``mul`` ops."""

import keras
import numpy as np
import pytest

from tfcomp.export.bitserial import build_ir_from_keras, export_bitserial
from tfcomp.export.bitserial.keras_patterns import SwishLogisticMul
from tfcomp.layers import QuantActivation
from tfcomp.quantization import calibrate, quantize_model

L = keras.layers


def _x(n=16, shape=(8, 8, 3)):
    return np.random.default_rng(0).uniform(-1, 1, (n, *shape)).astype(
        "float32")


def _swish_qat(x):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 3)),
        L.Conv2D(6, 3, activation="swish", name="c1"),
        L.Conv2D(4, 3, padding="same", name="c2"),
        L.Activation("silu", name="act2"),
        L.GlobalAveragePooling2D(), L.Dense(5, name="head")])
    q = quantize_model(model, bits=8)
    calibrate(q, x)
    return q


def test_decomposed_swish_is_one_table(tmp_path):
    x = _x()
    q = _swish_qat(x)
    assert sum(isinstance(layer, L.Multiply) for layer in q.layers) == 2
    ir = build_ir_from_keras(q)
    kinds = [op.op for op in ir.ops]
    assert kinds.count("lut") == 2  # one per swish, no sigmoid table
    assert not any("sigmoid" in op.name for op in ir.ops)
    report = export_bitserial(q, str(tmp_path / "m.json"), "bismo",
                              verify_x=x)
    assert report.simulator_exact
    assert report.top1_agreement == 1.0


def test_table_is_the_qat_function():
    gate = QuantActivation(8, "unsigned", fixed_range=(0, 255 / 256))
    f = SwishLogisticMul(L.Activation("sigmoid"), gate, "s")
    v = np.linspace(-6, 6, 97, dtype="float32")
    q256 = np.clip(np.floor(keras.ops.convert_to_numpy(
        keras.ops.sigmoid(v)) * 256 + 0.5), 0, 255) / 256
    np.testing.assert_allclose(keras.ops.convert_to_numpy(f(v)), v * q256,
                               atol=1e-6)


def _gate_net(x_is_other: bool, extra_reader: bool):
    inp = keras.Input((8, 8, 3))
    h = L.Conv2D(4, 3, padding="same", name="c")(inp)
    h = QuantActivation(8, name="h_aq")(h)
    s = L.Activation("sigmoid", name="sig")(h)
    g = QuantActivation(8, "unsigned", fixed_range=(0, 255 / 256),
                        name="gate")(s)
    other = QuantActivation(8, name="o_aq")(L.Conv2D(
        4, 3, padding="same", name="c_other")(inp)) if x_is_other else h
    y = L.Multiply(name="mul")([other, g])
    if extra_reader:
        y = L.Add(name="add")([y, L.Conv2D(4, 1, name="c3")(g)])
    y = QuantActivation(8, name="y_aq")(y)
    return keras.Model(inp, L.Dense(3)(L.GlobalAveragePooling2D()(y)))


@pytest.mark.parametrize("x_is_other,extra_reader", [(True, False),
                                                     (False, True)])
def test_other_multiplies_are_mul_ops(tmp_path, x_is_other, extra_reader):
    """x * gate of another tensor, or a gate that another layer reads too:
    not the swish pattern, a ``mul`` op (and the sigmoid a table)."""
    model = _gate_net(x_is_other, extra_reader)
    x = _x(8)
    calibrate(model, x)
    ir = build_ir_from_keras(model, x)
    assert ir.op("mul").op == "mul" and ir.op("sig").op == "lut"
    report = export_bitserial(model, str(tmp_path / "m.json"),
                              calibration_data=x, verify_x=x)
    assert report.simulator_exact is True


def test_hand_built_pattern_matches(tmp_path):
    model = _gate_net(False, False)
    x = _x(8)
    calibrate(model, x)
    report = export_bitserial(model, str(tmp_path / "m.json"), "bitfusion",
                              calibration_data=x, verify_x=x)
    assert report.simulator_exact
    assert report.top1_agreement == 1.0
