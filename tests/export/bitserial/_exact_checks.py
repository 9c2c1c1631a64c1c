"""Shared checks of the bit-serial tests on small QAT models: build and
calibrate one, then simulation == integer reference bit for bit on each
target, and the dequantized integer output == the Keras QAT model's.

Example:
    qat, x = qat_of(lambda h: L.Conv1D(3, 3)(h), (12, 2))
    ir = check_exact(qat, x, tmp_path)
"""

import keras
import numpy as np

from tfcomp.export.bitserial import (
    build_ir_from_keras,
    export_bitserial,
    integer_reference,
    simulate_bitserial,
    validate_descriptor,
)
from tfcomp.quantization import calibrate, quantize_model


def qat_of(build, shape, seed=0, bits=8):
    """``(qat, x_test)``: ``build(keras.Input(shape))`` (a model, or its
    output tensor) quantized at ``bits``, calibrated on 24 random inputs;
    16 more to test on."""
    keras.utils.set_random_seed(seed)
    x = np.random.default_rng(seed).normal(size=(40,) + shape)
    x = x.astype("float32")
    inp = keras.Input(shape)
    out = build(inp)
    model = out if isinstance(out, keras.Model) else keras.Model(inp, out)
    qat = quantize_model(model, bits=bits)
    calibrate(qat, x[:24])
    return qat, x[24:]


def check_exact(model, x, tmp_path, hardware=("bismo", "bitfusion"),
                schema_version=None, varied=False):
    """The IR of ``model`` after the checks (see the module doc);
    ``schema_version``: the descriptors' too; ``varied``: the output is not
    a constant."""
    ir = build_ir_from_keras(model)
    ref = integer_reference(ir, x)
    for hw in hardware:
        path = str(tmp_path / f"{hw}.json")
        report = export_bitserial(model, path, hardware=hw, verify_x=x)
        assert report.simulator_exact is True, report
        assert np.array_equal(simulate_bitserial(path, x), ref)
        if schema_version is not None:
            assert validate_descriptor(path)["schema_version"] == \
                schema_version
    out_q = ir.quant(ir.output)
    y_int = out_q.dequantize(ref).reshape(len(x), -1)
    ref_model = keras.Model(model.inputs, ir.keras_output)
    y_keras = keras.ops.convert_to_numpy(ref_model(x, training=False))
    err = np.abs(y_int - y_keras.reshape(len(x), -1))
    assert np.mean(err <= 1e-5) >= 0.95, float(np.mean(err <= 1e-5))
    assert np.mean(err <= out_q.scale * 1.001) >= 0.99
    scale = float(np.abs(y_keras).max())
    assert float(err.max()) <= 1e-3 * max(scale, 1.0) + out_q.scale
    if varied:
        assert len(np.unique(ref)) > 3  # not a constant output
    return ir
