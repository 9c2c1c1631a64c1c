"""QuantMultiHeadAttention: each step is the float computation of Keras'
attention (8-bit weights), the probabilities lie on TFLite's 1/256 SOFTMAX
grid, calibrate reads its steps, quantize_model makes it from a
MultiHeadAttention (or keeps a masked / gated one float, saying why), the
int8 file is full-integer, and .keras files and strip_quantization keep
it."""

import math
import os

import keras
import numpy as np
import pytest

from tfcomp.export import export_tflite
from tfcomp.layers import QuantMultiHeadAttention
from tfcomp.layers.quant_attention import (
    UnsupportedAttention,
    attention_projections,
)
from tfcomp.quantization import (
    calibrate,
    quantization_report,
    quantize_model,
    strip_quantization,
)

L = keras.layers


def _np(t):
    return np.asarray(keras.ops.convert_to_numpy(t))


def _np_all(ts):
    return [_np(t) for t in ts]


def _project(weights, equation, x):
    y = np.einsum(equation, x, weights[0])
    return y + weights[1] if len(weights) > 1 else y


@pytest.mark.parametrize("kwargs, cross", [
    ({"num_heads": 2, "key_dim": 5}, False),
    ({"num_heads": 3, "key_dim": 4, "value_dim": 6, "use_bias": False,
      "output_shape": 7}, True)])
def test_steps_are_keras_attention_with_8bit_weights(kwargs, cross):
    rng = np.random.default_rng(0)
    q_in = rng.normal(size=(3, 6, 10)).astype("float32")
    v_in = rng.normal(size=(3, 4, 9)).astype("float32") if cross else q_in
    k_in = rng.normal(size=(3, 4, 8)).astype("float32") if cross else None
    mha = L.MultiHeadAttention(**kwargs)
    mha(q_in, v_in, k_in)
    qatt = QuantMultiHeadAttention.from_config(mha.get_config())
    qatt(q_in, v_in, k_in)
    qatt.load_float_weights(mha)
    steps = qatt.step_values(q_in, v_in, k_in)
    wq, wk, wv, wo = qatt.quantized_projections()
    eq = [p.equation for p in attention_projections(mha)]
    query = _project(wq, eq[0], q_in)
    np.testing.assert_allclose(steps["query"], query, atol=1e-5)
    np.testing.assert_allclose(
        steps["key"], _project(wk, eq[1], v_in if k_in is None else k_in),
        atol=1e-5)
    np.testing.assert_allclose(steps["value"], _project(wv, eq[2], v_in),
                               atol=1e-5)
    np.testing.assert_allclose(
        steps["query_scaled"], query / math.sqrt(kwargs["key_dim"]),
        atol=1e-5)
    np.testing.assert_allclose(
        steps["scores"], np.einsum("aecd,abcd->acbe", steps["key"],
                                   steps["query_scaled"]), atol=1e-4)
    # probabilities on 1/256 (TFLite's int8 SOFTMAX output), then Wo
    e = np.exp(steps["scores"] - steps["scores"].max(-1, keepdims=True))
    probs = np.clip(np.round(e / e.sum(-1, keepdims=True) * 256), 0, 255)
    context = np.einsum("acbe,aecd->abcd", probs / 256, steps["value"])
    np.testing.assert_allclose(steps["context"], context, atol=1e-4)
    np.testing.assert_allclose(_np(qatt(q_in, v_in, k_in)),
                               _project(wo, eq[3], context), atol=1e-4)
    # and the 8-bit kernels are what a plain layer gets back
    assert len(np.unique(wq[0])) <= 255


def test_unsupported_configurations_raise_clearly():
    with pytest.raises(UnsupportedAttention, match="use_gate"):
        QuantMultiHeadAttention(2, 4, use_gate=True)
    with pytest.raises(UnsupportedAttention, match="attention_axes"):
        QuantMultiHeadAttention(2, 4, attention_axes=(1, 2))
    x = np.zeros((2, 3, 3, 4), "float32")
    with pytest.raises(UnsupportedAttention, match="3D inputs"):
        QuantMultiHeadAttention(2, 4)(x, x)
    layer, x = QuantMultiHeadAttention(2, 4), x[:, 0]
    layer(x, x)
    with pytest.raises(UnsupportedAttention, match="return_attention_scores"):
        layer(x, x, return_attention_scores=True)


@pytest.mark.parametrize("calibrated", [False, True])
def test_causal_mask_keeps_the_future_out(calibrated):
    """With use_causal_mask, token t's output does not move when later
    tokens change (masked probabilities are exactly 0 on the 1/256 grid,
    calibrated or not); uncalibrated, the layer is Keras' masked attention
    with 8-bit weights."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 6, 8)).astype("float32")
    mha = L.MultiHeadAttention(2, 4)
    mha(x, x)
    layer = QuantMultiHeadAttention.from_config(mha.get_config())
    layer(x, x)
    layer.load_float_weights(mha)
    if calibrated:
        for name, values in layer.step_values(
                x, x, use_causal_mask=True).items():
            layer.step_quantizers[name].set_range(values.min(), values.max())
    else:
        for dense, w in zip(attention_projections(mha),
                            layer.quantized_projections()):
            dense.set_weights(w)
        np.testing.assert_allclose(
            _np(layer(x, x, use_causal_mask=True)),
            _np(mha(x, x, use_causal_mask=True)), atol=0.05)
    y = _np(layer(x, x, use_causal_mask=True))
    later = x.copy()
    later[:, 3:] = rng.normal(size=later[:, 3:].shape) * 3
    y2 = _np(layer(later, later, use_causal_mask=True))
    np.testing.assert_array_equal(y2[:, :3], y[:, :3])
    assert np.abs(y2[:, 3:] - y[:, 3:]).max() > 0.01


def _text_model(mask_zero=False, gate=False):
    inp = keras.Input((6,), dtype="int32")
    x = L.Embedding(20, 8, mask_zero=mask_zero, name="emb")(inp)
    h = L.MultiHeadAttention(2, 4, use_gate=gate, name="mha")(x, x)
    x = L.GlobalAveragePooling1D()(L.Add()([x, h]))
    return keras.Model(inp, L.Dense(3)(x))


def test_gated_or_score_returning_attention_is_kept_float():
    with pytest.warns(UserWarning, match="mha"):
        q = quantize_model(_text_model(gate=True))
    report = quantization_report(q)
    assert report.attention == [] and "use_gate" in report.skipped["mha"]
    assert type(q.get_layer("mha")) is L.MultiHeadAttention
    inp = keras.Input((6, 8))
    out, scores = L.MultiHeadAttention(2, 4, name="mha")(
        inp, inp, return_attention_scores=True)
    model = keras.Model(inp, [L.Dense(2)(L.Flatten()(out)), scores])
    with pytest.warns(UserWarning, match="mha"):
        q = quantize_model(model)
    assert quantization_report(q).skipped["mha"] == (
        "MultiHeadAttention called with return_attention_scores=True (the "
        "scores are not quantized; kept float)")


def test_keras_padding_mask_reaches_the_quantized_attention():
    """Embedding(mask_zero=True): the observers pass the Keras mask on and
    the quantized attention applies it, as Keras' layer does (the QAT
    outputs of real tokens follow the masked float model, not the same
    weights unmasked)."""
    model = _text_model(mask_zero=True)
    table = model.get_layer("emb")
    table.set_weights([np.random.default_rng(1).normal(
        size=table.embeddings.shape).astype("float32")])
    unmasked = _text_model()
    unmasked.set_weights(model.get_weights())
    q = quantize_model(model)
    assert quantization_report(q).attention == ["mha"]
    ids = np.random.default_rng(0).integers(1, 20, (16, 6))
    ids[:, 3:] = 0
    calibrate(q, ids)

    def attended(m):
        return _np(keras.Model(m.inputs, m.get_layer("mha").output)(
            ids))[:, :3]

    err = np.abs(attended(q) - attended(model)).max()
    assert err < 0.25 * np.abs(attended(unmasked) - attended(model)).max()
    # the padding keys take ~0 softmax mass (the scores' grid reaches
    # MASK_MARGIN below each row's max): within 8-bit rounding of Keras'
    rel = np.abs(attended(q) - attended(model)).mean() / np.abs(
        attended(model)).mean()
    assert rel < 0.06, rel


def test_padding_mask_after_qat_steps_and_in_the_int8_file(tmp_path):
    """The EMA ranges of QAT training reach low enough for the masked
    scores too, and the int8 file (SELECT_V2 at the grid's floor) follows
    the masked float model."""
    model = _text_model(mask_zero=True)
    ids = np.random.default_rng(0).integers(1, 20, (64, 6))
    ids[:, 3:] = 0
    y = np.random.default_rng(1).integers(0, 3, 64)
    q = quantize_model(model)
    q.compile("sgd", "sparse_categorical_crossentropy")
    q.fit(ids, y, epochs=1, batch_size=16, verbose=0)  # lr 0.01: small
    scores_lo = _np(q.get_layer("mha").step_quantizers["scores"].range_min)
    assert scores_lo < -5.0, scores_lo
    calibrate(q, ids[:32])
    report = export_tflite(q, os.path.join(tmp_path, "m.tflite"), "int8",
                           verify_data=ids[32:])
    assert report.top1_agreement >= 0.95, report


def _cross_model():
    """Cross-attention: queries, keys and values from three tensors, the
    keys and values shorter than the queries."""
    keras.utils.set_random_seed(0)
    tokens = keras.Input((6, 8))
    h = L.LayerNormalization(name="ln")(tokens)
    value = L.Conv1D(10, 2, strides=2, name="value_conv")(tokens)
    key = L.Conv1D(5, 2, strides=2, name="key_conv")(tokens)
    h = L.MultiHeadAttention(2, 4, dropout=0.1, name="mha")(h, value, key)
    x = L.GlobalAveragePooling1D()(L.Add()([tokens, h]))
    return keras.Model(tokens, L.Dense(3)(x))


def test_cross_attention_trains_saves_strips_and_exports_int8(tmp_path):
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(64, 6, 8)).astype("float32")
    y = rng.integers(0, 3, 64)
    q = quantize_model(_cross_model())
    layer = q.get_layer("mha")
    assert isinstance(layer, QuantMultiHeadAttention)
    ranges = calibrate(q, xs)
    # the ranges come from the layer's three (observed) inputs
    probe = keras.Model(q.inputs, [q.get_layer(n).output for n in (
        "ln_aq", "value_conv_aq", "key_conv_aq")])
    scores = layer.step_values(*_np_all(probe(xs)))["scores"]
    assert ranges["mha/scores"][1] == pytest.approx(scores.max(), rel=0.02)
    q.compile("adam", "sparse_categorical_crossentropy")
    q.fit(xs, y, epochs=1, batch_size=16, verbose=0)  # dropout on
    path = os.path.join(tmp_path, "q.keras")
    q.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(_np(loaded(xs)), _np(q(xs)), atol=1e-6)
    plain = strip_quantization(loaded)
    assert type(plain.get_layer("mha")) is L.MultiHeadAttention
    out = _np(q(xs))  # stripped: float activations, 8-bit weights
    assert np.abs(_np(plain(xs)) - out).max() <= 0.05 * np.ptp(out)
    report = export_tflite(q, os.path.join(tmp_path, "q.tflite"), "int8",
                           verify_data=xs)
    assert report.float_ops == [] and report.top1_agreement >= 0.95


def test_uncalibrated_attention_is_refused():
    q = quantize_model(_cross_model())
    for name, layer in [(ly.name, ly) for ly in q.layers]:
        if name != "mha" and hasattr(layer, "step_quantizers"):
            for sq in layer.step_quantizers.values():
                sq.set_range(-1.0, 1.0)
    with pytest.raises(ValueError, match="mha"):
        export_tflite(q, "unused.tflite", "int8")


def test_two_input_cross_attention_calibrates_and_exports(tmp_path):
    """A decoder's cross-attention (queries from its tokens, keys / values
    from an encoder's output): calibrate takes the inputs as model.fit
    does (a list, ((x1, x2), y), batches of those) and names a wrong
    shape of data; its int8 file is full-integer and verified on both
    inputs."""
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    tokens, memory = keras.Input((6, 8)), keras.Input((4, 10))
    h = L.MultiHeadAttention(2, 4, name="mha")(
        L.LayerNormalization()(tokens), memory)
    x = L.GlobalAveragePooling1D()(L.Add()([tokens, h]))
    q = quantize_model(keras.Model([tokens, memory], L.Dense(3)(x)))
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=(32, 6, 8)).astype("float32"),
          rng.normal(size=(32, 4, 10)).astype("float32")]
    first = calibrate(q, xs)["mha/scores"]
    again = calibrate(q, (xs, np.zeros(32)))["mha/scores"]
    ds = tf.data.Dataset.from_tensor_slices((tuple(xs), np.zeros(32)))
    batched = calibrate(q, ds.batch(8))["mha/scores"]
    assert first[1] > 0 and again == pytest.approx(batched, rel=0.05)
    with pytest.raises(ValueError, match="2 inputs.*Received: ndarray"):
        calibrate(q, xs[0])
    with pytest.raises(ValueError, match=r"one length.*\[32, 5\]"):
        calibrate(q, [xs[0], xs[1][:5]])
    report = export_tflite(q, os.path.join(tmp_path, "two.tflite"), "int8",
                           verify_data=xs)
    assert report.float_ops == [] and report.top1_agreement >= 0.95
