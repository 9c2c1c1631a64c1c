"""``keras.ops`` calls in the bit-serial exporter. Element-wise calls of
one tensor are ``lut`` tables over its input's codes (keras.applications'
hard sigmoid ``ReLU(6.0)(x + 3.0) * (1.0 / 6.0)`` in a squeeze-excite
block, ``ops.gelu``, a per-channel scale); ``x + y`` and ``x * gate`` of two
tensors are the ``add`` and ``mul`` ops, as the Add / Multiply layers;
all verified against the QAT model. Other calls keep the clear error."""

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


def _verified(build, bits, target, tmp_path):
    """The QAT model of ``build()``, exported and verified exactly."""
    x = _x()
    keras.utils.set_random_seed(0)
    qat = quantize_model(build(), bits=bits)
    calibrate(qat, x[:16])
    report = export_bitserial(qat, str(tmp_path / "m.json"), hardware=target,
                              verify_x=x[16:])
    assert report.simulator_exact is True, report
    assert report.max_abs_error <= 1e-5, report  # the QAT model's codes
    assert report.top1_agreement >= 0.99, report
    return qat


@pytest.mark.parametrize("bits,target", [(8, "bismo"), (4, "bitfusion")])
def test_elementwise_ops_are_tables_and_verified(tmp_path, bits, target):
    qat = _verified(_mbv3_block, bits, target, tmp_path)
    ir = build_ir_from_keras(qat)
    luts = [op for op in ir.ops if op.op == "lut"]
    # hard swish, x + 3, * 1/6, gelu, the per-channel scale, 2 - x
    assert len(luts) >= 6, [op.name for op in ir.ops]
    scale = [op for op in luts if np.asarray(op.attrs["table"]).shape[0] == 8]
    assert scale, "the per-channel constant gives a table per channel"


def _plus_resnet():
    """keras.io-style residual and squeeze-excite written with operators."""
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inp)
    y = L.Conv2D(8, 3, padding="same", name="branch")(x)
    y = L.BatchNormalization(name="bn")(y)
    x = L.Activation("relu", name="post")(x + y)
    g = L.GlobalAveragePooling2D(keepdims=True, name="squeeze")(x)
    x = x * L.Conv2D(8, 1, activation="sigmoid", name="gate")(g)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, L.Dense(4, name="logits")(x), name="plus")


@pytest.mark.parametrize("bits,target", [(8, "bismo"), (4, "bitfusion")])
def test_two_tensor_add_and_multiply_are_merge_ops(tmp_path, bits, target):
    qat = _verified(_plus_resnet, bits, target, tmp_path)
    kinds = [op.op for op in build_ir_from_keras(qat).ops]
    assert "add" in kinds and "mul" in kinds, kinds


def test_ops_that_have_no_integer_form_are_refused(tmp_path):
    inp = keras.Input((4, 4, 2))
    a = L.Conv2D(2, 1, name="a")(inp)
    b = L.Conv2D(2, 1, name="b")(inp)
    x = np.random.default_rng(0).uniform(-1, 1, (8, 4, 4, 2)).astype(
        "float32")
    for y, pattern in [
            (a - b, r"keras.ops call .*\(Subtract\) has no integer mapping"),
            (a * keras.ops.mean(b, axis=-1, keepdims=True),
             r"keras.ops call .*\(Mean\) has no integer mapping"),
            (a + L.GlobalAveragePooling2D(keepdims=True)(b),
             r"\(Add\) broadcasts two shapes \[\(4, 4, 2\), \(1, 1, 2\)\]")]:
        model = keras.Model(inp, L.Dense(3)(L.Flatten()(y)))
        qat = quantize_model(model)
        calibrate(qat, x)
        with pytest.raises(ValueError, match=pattern):
            export_bitserial(qat, str(tmp_path / "m.json"), verify_x=x)
        assert not (tmp_path / "m.json").exists()
