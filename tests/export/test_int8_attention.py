"""A model with MultiHeadAttention: quantize_model keeps the attention
float, so the QAT model's int8 export refuses it by name and points to
post-training int8 of the float model, which works (the converter
calibrates the attention itself) and names the ops it leaves float."""

import os

import keras
import numpy as np
import pytest

from tfcomp.export import export_tflite
from tfcomp.quantization import calibrate, quantize_model

L = keras.layers


def _encoder():
    """keras.io's text-classification transformer block, tiny."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 12))
    h = L.MultiHeadAttention(num_heads=2, key_dim=6, name="mha")(inp, inp)
    x = L.LayerNormalization(epsilon=1e-6, name="ln1")(L.Add()([inp, h]))
    h = L.Dense(16, activation="relu", name="ffn1")(x)
    h = L.Dense(12, name="ffn2")(h)
    x = L.LayerNormalization(epsilon=1e-6, name="ln2")(L.Add()([x, h]))
    x = L.GlobalAveragePooling1D(name="gap")(x)
    return keras.Model(inp, L.Dense(3, name="logits")(x))


def test_qat_refuses_attention_and_post_training_int8_works(tmp_path):
    x = np.random.default_rng(0).normal(size=(96, 8, 12)).astype("float32")
    model = _encoder()
    with pytest.warns(UserWarning, match="mha"):
        qat = quantize_model(model)
    calibrate(qat, x[:32])
    with pytest.raises(ValueError, match=r"'mha \(MultiHeadAttention\)'\] "
                       r"have float weights.*calibration_data"):
        export_tflite(qat, os.path.join(tmp_path, "q.tflite"), "int8")
    report = export_tflite(model, os.path.join(tmp_path, "p.tflite"),
                           "int8", calibration_data=x[:64],
                           verify_data=x[64:])
    assert report.top1_agreement >= 0.9, report
    assert isinstance(report.float_ops, list)
