"""The integer pipeline follows a *trained-like* mixed-precision QAT model.

A QAT model fresh from ``calibrate`` has zero biases, so it cannot show a
bias-rounding mismatch; here every bias is non-zero (as after training) and
activations go down to 2 bits, with a residual add and a projection
shortcut. The dequantized integer output must match the QAT model's fake-
quant forward pass within one output step almost everywhere, and top-1 must
agree on >= 99% of inputs.
"""

import keras
import numpy as np
import pytest

from tfcomp.export.bitserial import (
    build_ir_from_keras,
    export_bitserial,
    integer_reference,
)
from tfcomp.quantization import calibrate, quantize_model

_BITS = {"c0": (8, 8), "b_conv1": (3, 4), "b_conv2": (4, 2),
         "b_proj": (2, 3), "c2": (6, 3), "fc": (2, 3)}


def _float_model():
    inp = keras.Input((10, 10, 1), name="x")
    init = "he_normal"
    h = keras.layers.Conv2D(6, 3, padding="same", activation="relu",
                            kernel_initializer=init, name="c0")(inp)
    r = keras.layers.Conv2D(8, 3, strides=2, padding="same",
                            activation="relu", kernel_initializer=init,
                            name="b_conv1")(h)
    r = keras.layers.Conv2D(8, 3, padding="same", kernel_initializer=init,
                            name="b_conv2")(r)
    s = keras.layers.Conv2D(8, 1, strides=2, kernel_initializer=init,
                            name="b_proj")(h)
    h = keras.layers.Add(name="b_add")([r, s])
    h = keras.layers.ReLU(name="b_out")(h)
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu",
                            kernel_initializer=init, name="c2")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    out = keras.layers.Dense(10, kernel_initializer=init, name="fc")(h)
    return keras.Model(inp, out)


@pytest.fixture(scope="module")
def mixed_qat():
    keras.utils.set_random_seed(7)
    rng = np.random.default_rng(7)
    model = _float_model()
    for layer in model.layers:  # non-zero biases, as after training
        if getattr(layer, "use_bias", False):
            n = layer.bias.shape[0]
            layer.bias.assign(rng.normal(0.0, 0.1, n).astype("float32"))
    qat = quantize_model(model, bits=_BITS, first_last_bits=None)
    x = rng.uniform(0, 1, (600, 10, 10, 1)).astype("float32")
    # labels of a random linear teacher; a short QAT fit sets EMA ranges
    # and moves the biases off the accumulator grid
    y = (x.reshape(len(x), -1) @ rng.normal(size=(100, 10))).argmax(1)
    calibrate(qat, x[:100])
    qat.compile(optimizer=keras.optimizers.Adam(1e-3),
                loss=keras.losses.SparseCategoricalCrossentropy(
                    from_logits=True))
    qat.fit(x[:300], y[:300], batch_size=30, epochs=2, verbose=0)
    return qat, x[300:]


@pytest.mark.slow
def test_mixed_precision_residual_qat_matches_integer_ir(mixed_qat):
    qat, x = mixed_qat
    got = {n: (qat.get_layer(n).w_bits, qat.get_layer(n).a_bits)
           for n in _BITS}
    assert got == _BITS
    ir = build_ir_from_keras(qat)
    assert {"add", "requantize", "global_avg_pool"} <= {
        op.op for op in ir.ops}
    # biases really are non-zero on the accumulator grid
    assert all(np.abs(op.bias).max() > 0 for op in ir.ops if op.is_gemm)
    out_q = ir.quant(ir.output)
    y_int = out_q.dequantize(integer_reference(ir, x))
    y_keras = keras.ops.convert_to_numpy(qat(x, training=False))
    err = np.abs(y_int - y_keras)
    # same output codes almost everywhere, never more than a step or two off
    assert np.mean(err <= out_q.scale * 1.001) >= 0.99
    assert np.mean(err <= 1e-5) >= 0.95
    assert np.mean(y_int.argmax(1) == y_keras.argmax(1)) >= 0.99
    assert len(np.unique(y_keras.argmax(1))) >= 2


def test_mixed_precision_residual_qat_simulator(mixed_qat, tmp_path):
    qat, x = mixed_qat
    report = export_bitserial(qat, str(tmp_path / "m.json"),
                              hardware="bitfusion", verify_x=x[:128])
    assert report.simulator_exact is True
    assert report.top1_agreement >= 0.99


def test_off_grid_bias_is_reported(mixed_qat, monkeypatch):
    qat, _ = mixed_qat
    assert not any("accumulator grid" in n
                   for n in build_ir_from_keras(qat).notes)
    # a layer whose forward pass adds the float bias (off the s_in * s_w
    # grid) cannot be matched by an int32 bias: the importer says so
    from tfcomp.layers.quant_base import QuantMixin

    def float_bias(layer):
        return keras.ops.convert_to_numpy(layer.bias)

    monkeypatch.setattr(QuantMixin, "quantized_bias", float_bias)
    notes = build_ir_from_keras(qat).notes
    flagged = {n.split(":")[0] for n in notes if "accumulator grid" in n}
    assert "fc" in flagged and "b_proj" in flagged
