"""Attention models to int8: quantize_model makes a MultiHeadAttention
(unmasked or causal) a QuantMultiHeadAttention whose int8 file is
full-integer; a gated one stays float, so the QAT model's int8 export
refuses it by name and points to post-training int8 of the float model,
which works (the converter calibrates the attention itself) and names the
ops it leaves float."""

import os

import keras
import numpy as np
import pytest

from tfcomp.export import export_tflite
from tfcomp.quantization import calibrate, quantization_report, quantize_model

L = keras.layers


def _encoder(causal=False, gate=False):
    """keras.io's text-classification transformer block, tiny (``causal``:
    a GPT-style decoder block)."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 12))
    h = L.MultiHeadAttention(num_heads=2, key_dim=6, use_gate=gate,
                             name="mha")(inp, inp, use_causal_mask=causal)
    x = L.LayerNormalization(epsilon=1e-6, name="ln1")(L.Add()([inp, h]))
    h = L.Dense(16, activation="relu", name="ffn1")(x)
    h = L.Dense(12, name="ffn2")(h)
    x = L.LayerNormalization(epsilon=1e-6, name="ln2")(L.Add()([x, h]))
    x = L.GlobalAveragePooling1D(name="gap")(x)
    return keras.Model(inp, L.Dense(3, name="logits")(x))


def _x():
    return np.random.default_rng(0).normal(size=(96, 8, 12)).astype(
        "float32")


@pytest.mark.parametrize("causal", [False, True])
def test_qat_encoder_int8_is_full_integer(causal, tmp_path):
    x = _x()
    qat = quantize_model(_encoder(causal))
    assert quantization_report(qat).attention == ["mha"]
    calibrate(qat, x[:32])
    report = export_tflite(qat, os.path.join(tmp_path, "q.tflite"), "int8",
                           verify_data=x[32:])
    assert report.float_ops == [], report.float_ops
    # untrained, so near-ties: the causal file's one miss in 64 is an exact
    # tie of the QAT model's (8-bit) logits
    assert report.top1_agreement >= 0.95, report


def test_gated_attention_stays_float_and_post_training_int8_works(
        tmp_path):
    x = _x()
    model = _encoder(gate=True)
    with pytest.warns(UserWarning, match="mha"):
        qat = quantize_model(model)
    assert "use_gate" in quantization_report(qat).skipped["mha"]
    calibrate(qat, x[:32])
    with pytest.raises(ValueError, match=r"'mha \(MultiHeadAttention\)'\] "
                       r"have float weights.*calibration_data"):
        export_tflite(qat, os.path.join(tmp_path, "q.tflite"), "int8")
    report = export_tflite(model, os.path.join(tmp_path, "p.tflite"),
                           "int8", calibration_data=x[:64],
                           verify_data=x[64:])
    assert report.top1_agreement >= 0.9, report
    assert isinstance(report.float_ops, list)
