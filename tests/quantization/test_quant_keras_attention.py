"""QuantAttention / QuantAdditiveAttention: they compute Keras' Attention /
AdditiveAttention (8-bit weights, tanh and softmax on TFLite's fixed
grids), honour masks, causality and return_attention_scores,
quantize_model makes them (or keeps a skipped / rank-4 one float, saying
why), the int8 file is full-integer and agrees with the QAT model, and
strip_quantization / .keras files keep them."""

import os
import warnings

import keras
import numpy as np
import pytest

from tfcomp.export import export_tflite
from tfcomp.export.runtime import make_interpreter, run_interpreter
from tfcomp.layers import QuantAdditiveAttention, QuantAttention
from tfcomp.quantization import (
    calibrate,
    quantization_report,
    quantize_model,
    strip_quantization,
)

L = keras.layers


def _np(t):
    return np.asarray(keras.ops.convert_to_numpy(t))


def _pair(keras_layer, quant_cls, q_in, v_in, **call):
    """The float layer and its quantized copy (weights loaded), built."""
    keras_layer([q_in, v_in], **call)
    qatt = quant_cls.from_config(keras_layer.get_config())
    qatt([q_in, v_in], **call)
    qatt.load_float_weights(keras_layer)
    return qatt


@pytest.mark.parametrize("make, cls", [
    (lambda: L.Attention(), QuantAttention),
    (lambda: L.Attention(use_scale=True), QuantAttention),
    (lambda: L.Attention(score_mode="concat"), QuantAttention),
    (lambda: L.Attention(use_scale=True, score_mode="concat"),
     QuantAttention),
    (lambda: L.AdditiveAttention(), QuantAdditiveAttention),
    (lambda: L.AdditiveAttention(use_scale=False), QuantAdditiveAttention)])
def test_computes_keras_attention(make, cls):
    rng = np.random.default_rng(0)
    q_in = rng.normal(size=(4, 5, 6)).astype("float32")
    v_in = rng.normal(size=(4, 7, 6)).astype("float32")
    att = make()
    qatt = _pair(att, cls, q_in, v_in)
    for w in att.weights:  # not the all-ones initial values
        w.assign(_np(w) * 0.7 - 0.1)
    qatt.load_float_weights(att)
    want, p_want = (_np(t) for t in att([q_in, v_in],
                                        return_attention_scores=True))
    got, p_got = (_np(t) for t in qatt([q_in, v_in],
                                       return_attention_scores=True))
    # probabilities on the 1/256 grid, tanh on 1/128, 8-bit weights
    assert np.allclose(p_got * 256, np.round(p_got * 256), atol=1e-3)
    assert np.abs(p_got - p_want).max() < 0.03
    assert np.abs(got - want).max() < 0.1
    steps = qatt.step_values([q_in, v_in])
    assert set(steps) == set(qatt.step_quantizers)
    assert steps["scores"].shape == (4, 5, 7)
    calibrate_like = {k: (v.min(), v.max()) for k, v in steps.items()}
    for name, (lo, hi) in calibrate_like.items():
        qatt.step_quantizers[name].set_range(lo, hi)
    y8 = _np(qatt([q_in, v_in]))
    assert np.abs(y8 - want).max() < 0.15


def test_masks_and_causality_exact_zeros():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 6, 4)).astype("float32")
    v_mask = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], bool)
    att = L.AdditiveAttention()
    qatt = _pair(att, QuantAdditiveAttention, x, x)
    masks = {"mask": [v_mask, v_mask], "use_causal_mask": True}
    for name, v in qatt.step_values([x, x], **masks).items():
        qatt.step_quantizers[name].set_range(v.min(), v.max())
    kw = dict(masks, return_attention_scores=True)
    want, p_want = (_np(t) for t in att([x, x], **kw))
    got, p_got = (_np(t) for t in qatt([x, x], **kw))
    allowed = np.tril(np.ones((6, 6), bool))[None] & v_mask[:, None, :]
    assert np.all(p_got[~allowed] == 0.0)
    assert np.abs(p_got - p_want).max() < 0.05
    assert np.all(got[~v_mask] == 0.0)  # the query mask zeroes rows
    assert np.abs(got - want).max() < 0.15


def _attention_model():
    tokens = keras.Input(shape=(12,), dtype="int32")
    emb = L.Embedding(30, 8)(tokens)
    query = L.Conv1D(8, 3, padding="same")(emb)
    value = L.Conv1D(8, 3, padding="same")(emb)
    dot, probs = L.Attention(use_scale=True, name="dot")(
        [query, value], use_causal_mask=True, return_attention_scores=True)
    concat = L.Attention(score_mode="concat", name="concat")([query, value])
    additive = L.AdditiveAttention(name="additive")([query, value])
    pooled = [L.GlobalAveragePooling1D()(t)
              for t in (query, dot, probs, concat, additive)]
    outputs = L.Dense(5)(L.Concatenate()(pooled))
    return keras.Model(tokens, outputs)


def test_quantize_export_strip_and_save(tmp_path):
    keras.utils.set_random_seed(0)
    model = _attention_model()
    x = np.random.default_rng(0).integers(0, 30, (128, 12)).astype("int32")
    q = quantize_model(model)
    report = quantization_report(q)
    assert set(report.attention) == {"dot", "concat", "additive"}
    assert isinstance(q.get_layer("dot"), QuantAttention)
    assert isinstance(q.get_layer("additive"), QuantAdditiveAttention)
    calibrate(q, x)
    y_f, y_q = _np(model(x)), _np(q(x))
    assert np.abs(y_q - y_f).max() < 0.05 * np.abs(y_f).max()
    path = str(tmp_path / "att.tflite")
    lite = export_tflite(q, path, quantization="int8", calibration_data=x,
                         verify=False)
    assert lite.float_ops == []
    y_lite = run_interpreter(make_interpreter(path)[0], x)
    assert np.abs(y_lite - y_q).max() < 0.05 * np.abs(y_q).max()
    assert np.mean(y_lite.argmax(-1) == y_q.argmax(-1)) >= 0.95
    plain = strip_quantization(q)
    assert type(plain.get_layer("dot")) is L.Attention
    assert type(plain.get_layer("additive")) is L.AdditiveAttention
    scale = _np(plain.get_layer("additive").scale)
    codes = scale / np.abs(scale).max() * 127
    assert np.allclose(codes, np.round(codes), atol=1e-3)  # 8-bit grid
    assert np.abs(_np(plain(x)) - y_f).max() < 0.05 * np.abs(y_f).max()
    file = os.path.join(tmp_path, "att.keras")
    q.save(file)
    loaded = keras.saving.load_model(file)
    assert isinstance(loaded.get_layer("concat"), QuantAttention)
    np.testing.assert_allclose(_np(loaded(x)), y_q, atol=1e-6)


def test_keras_masks_calibrated_and_integer(tmp_path):
    """Embedding(mask_zero=True) masks reach both layers (calibrate replays
    the calls without them: the scores' range still reaches below the
    padding's scores), a causal mask too; the file stays integer."""
    keras.utils.set_random_seed(1)
    tokens = keras.Input(shape=(12,), dtype="int32")
    emb = L.Embedding(30, 8, mask_zero=True)(tokens)
    dot = L.Attention(use_scale=True, name="dot")([emb, emb],
                                                  use_causal_mask=True)
    add = L.AdditiveAttention(name="additive")([emb, emb])
    out = L.Dense(5)(L.Concatenate()([L.Flatten()(dot), L.Flatten()(add)]))
    model = keras.Model(tokens, out)
    x = np.random.default_rng(1).integers(1, 30, (64, 12)).astype("int32")
    x[:, -4:] = 0  # padding
    q = quantize_model(model)
    calibrate(q, x)
    for name in ("dot", "additive"):
        scores = q.get_layer(name).step_quantizers["scores"]
        assert float(_np(scores.range_min)) < -9.0
    y_f, y_q = _np(model(x)), _np(q(x))
    assert np.abs(y_q - y_f).max() < 0.05 * np.abs(y_f).max()
    q.compile("adam", "mse")  # QAT steps (EMA ranges) with the masks
    q.fit(x, y_f, epochs=1, batch_size=32, verbose=0)
    for name in ("dot", "additive"):
        scores = q.get_layer(name).step_quantizers["scores"]
        assert float(_np(scores.range_min)) < -9.0
    y_q = _np(q(x))
    path = str(tmp_path / "m.tflite")
    lite = export_tflite(q, path, quantization="int8", calibration_data=x,
                         verify=False)
    assert lite.float_ops == []
    y_lite = run_interpreter(make_interpreter(path)[0], x)
    assert np.abs(y_lite - y_q).max() < 0.05 * np.abs(y_q).max()


def test_skip_and_rank4_kept_float_with_reason():
    inp = keras.Input((3, 6, 4))
    h = L.Dense(4)(inp)
    y = L.Attention(name="att4")([h, h])  # rank 4: kept float
    z = L.Dense(4)(L.Reshape((18, 4))(y))
    a = L.AdditiveAttention(name="add3")([z, z])
    model = keras.Model(inp, L.Dense(2)(L.Flatten()(a)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        q = quantize_model(model, skip=["add3"])
    report = quantization_report(q)
    assert "rank-4" in report.skipped["att4"]
    assert report.skipped["add3"].startswith("listed in skip")
    assert report.attention == []
    assert type(q.get_layer("att4")) is L.Attention
    assert type(q.get_layer("add3")) is L.AdditiveAttention
    assert any("att4" in str(w.message) for w in caught)
