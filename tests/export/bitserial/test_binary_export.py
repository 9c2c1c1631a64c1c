"""Binary (1-bit sign) layers through export_bitserial: the descriptor
runs in the simulator bit for bit as the integer reference and agrees with
the binary Keras model."""

import keras
import numpy as np
import pytest

from tfcomp.export.bitserial import (
    build_ir_from_keras,
    export_bitserial,
    integer_reference,
    load_descriptor,
    simulate_bitserial,
)
from tfcomp.layers.binary import BinaryConv2D, BinaryDense


def _binary_net(seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((6, 6, 2))
    h = BinaryConv2D(8, 3, padding="same", use_bias=False,
                     binary_activations=True, name="bc1")(inp)
    h = BinaryConv2D(8, 3, strides=2, use_bias=False,
                     binary_activations=True, name="bc2")(h)
    h = keras.layers.Flatten()(h)
    out = BinaryDense(5, use_bias=False, binary_activations=True,
                      name="bd")(h)
    return keras.Model(inp, out)


def _pm1(n, shape, seed=0):
    rng = np.random.default_rng(seed)
    return np.where(rng.random((n,) + shape) < 0.5, -1.0, 1.0).astype(
        "float32")


def test_binary_member_bit_exact_in_simulator(tmp_path):
    model = _binary_net()
    x = _pm1(24, (6, 6, 2))
    path = str(tmp_path / "bin.json")
    rep = export_bitserial(model, path, "bismo", calibration_data=x,
                           verify_x=x)
    assert rep.simulator_exact is True
    assert rep.top1_agreement == 1.0
    desc, _ = load_descriptor(path)
    gemms = [la for la in desc["layers"] if la.get("weights")]
    assert [g["name"] for g in gemms] == ["bc1", "bc2", "bd"]
    for g in gemms:  # native 1-bit sign weights: one plane, one Exec per
        assert g["weights"]["bits"] == 1 and g["attrs"]["sign_weights"]
        execs = [i for i in g["schedule"]["body"] if i["op"] == "Exec"]
        assert len(execs) == g["lhs"]["bits"]  # activation plane
    assert [g["lhs"]["bits"] for g in gemms[1:]] == [2, 2]  # -1 / 0 / +1
    # the binary Keras model's pre-activation is alpha * an integer: the
    # simulator's dequantized output matches it to its output step
    ir = build_ir_from_keras(model, x)
    y_sim = simulate_bitserial(path, x)
    np.testing.assert_array_equal(y_sim, integer_reference(ir, x))
    step = ir.quant(ir.output).scale
    y_k = keras.ops.convert_to_numpy(model(x))
    assert np.abs(ir.quant(ir.output).dequantize(y_sim) - y_k).max() <= \
        step / 2 + 1e-6


def test_sign_weights_in_ir_and_errors():
    from tfcomp.export.bitserial import IRBuilder, QuantParams

    b = IRBuilder((4,), QuantParams(4, False, 0.1, 3))
    w = np.array([[1, -1], [-1, -1], [1, 1], [-1, 1]])
    b.dense("d", "input", w, 0.5, 0, QuantParams(8, False, 0.05, 100),
            w_bits=1)
    ir = b.build()
    assert ir.ops[0].attrs["sign_weights"] is True
    ir.ops[0].weights[0, 0] = 0
    with pytest.raises(ValueError, match="sign weights"):
        ir.validate()


def test_sign_codes_reach_the_descriptor(tmp_path):
    model = _binary_net(1)
    x = _pm1(8, (6, 6, 2), 1)
    ir = build_ir_from_keras(model, x)
    op = next(o for o in ir.ops if o.name == "bd")
    np.testing.assert_array_equal(
        np.asarray(op.weights).reshape(-1, 5),
        model.get_layer("bd").sign_codes().reshape(-1, 5))
    assert set(np.unique(op.weights)) <= {-1, 1}


@pytest.mark.parametrize("bad", ["bitfusion"])
def test_other_hardware_also_exact(tmp_path, bad):
    model = _binary_net(2)
    x = _pm1(8, (6, 6, 2), 2)
    rep = export_bitserial(model, str(tmp_path / "b.json"), bad,
                           calibration_data=x)
    assert rep.simulator_exact is True
