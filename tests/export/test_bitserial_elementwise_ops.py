"""Element-wise ``keras.ops`` calls in the bit-serial exporter: each is a
``lut`` table over its input's codes (keras.applications' hard sigmoid
``ReLU(6.0)(x + 3.0) * (1.0 / 6.0)`` in a squeeze-excite block, ``ops.gelu``,
a per-channel scale), verified against the QAT model; calls that are not
element-wise on one tensor keep the clear error."""

import keras
import numpy as np
import pytest

from tfcomp.export.bitserial import build_ir_from_keras, export_bitserial
from tfcomp.quantization import calibrate, quantize_model

L = keras.layers


def _hard_sigmoid(x):
    return L.ReLU(6.0)(x + 3.0) * (1.0 / 6.0)  # keras.applications' form


def _mbv3_block():
    """A MobileNetV3-style block written as keras.applications writes it."""
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", name="stem")(inp)
    x = L.Activation("hard_swish", name="stem_hs")(x)
    x = L.DepthwiseConv2D(3, padding="same", activation="relu", name="dw")(x)
    s = L.GlobalAveragePooling2D(keepdims=True, name="squeeze")(x)
    s = L.Conv2D(4, 1, activation="relu", name="reduce")(s)
    s = L.Conv2D(8, 1, name="expand")(s)
    x = L.Multiply(name="excite")([x, _hard_sigmoid(s)])
    x = L.Conv2D(8, 1, name="project")(x)
    x = keras.ops.gelu(x)
    x = x * np.linspace(0.5, 1.5, 8).astype("float32")  # per-channel scale
    x = 2.0 - x
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, L.Dense(5, name="logits")(x), name="mbv3_mini")


def _x(n=24, seed=1):
    return np.random.default_rng(seed).uniform(
        -1.0, 1.0, (n, 8, 8, 3)).astype("float32")


@pytest.mark.parametrize("bits,target", [(8, "bismo"), (4, "bitfusion")])
def test_elementwise_ops_are_tables_and_verified(tmp_path, bits, target):
    x = _x()
    keras.utils.set_random_seed(0)
    qat = quantize_model(_mbv3_block(), bits=bits)
    calibrate(qat, x[:16])
    report = export_bitserial(qat, str(tmp_path / "m.json"), hardware=target,
                              verify_x=x[16:])
    assert report.simulator_exact is True, report
    assert report.max_abs_error <= 1e-5, report  # the QAT model's codes
    assert report.top1_agreement >= 0.99, report
    ir = build_ir_from_keras(qat)
    luts = [op for op in ir.ops if op.op == "lut"]
    # hard swish, x + 3, * 1/6, gelu, the per-channel scale, 2 - x
    assert len(luts) >= 6, [op.name for op in ir.ops]
    scale = [op for op in luts if np.asarray(op.attrs["table"]).shape[0] == 8]
    assert scale, "the per-channel constant gives a table per channel"


def test_ops_that_are_not_elementwise_on_one_tensor_are_refused(tmp_path):
    inp = keras.Input((4, 4, 2))
    a = L.Conv2D(2, 1, name="a")(inp)
    b = L.Conv2D(2, 1, name="b")(inp)
    y = a * b  # two tensors: keras.ops multiply, not a table
    model = keras.Model(inp, L.Dense(3)(L.Flatten()(y)))
    x = np.random.default_rng(0).uniform(-1, 1, (8, 4, 4, 2)).astype(
        "float32")
    qat = quantize_model(model)
    calibrate(qat, x)
    with pytest.raises(ValueError, match=r"keras.ops call .*\(Multiply\) has "
                       "no integer mapping"):
        export_bitserial(qat, str(tmp_path / "m.json"), verify_x=x)
    assert not (tmp_path / "m.json").exists()
