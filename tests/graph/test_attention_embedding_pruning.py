"""Embedding, Attention and AdditiveAttention in the dependency graph:
embedding columns pruned as a producer's filters, query / key channels and
value / output channels pruned as coupled sets, masks and None-length
token inputs, MACs of the cost model."""

import os

import keras
import numpy as np
import pytest
from keras import layers

import tfcomp
from tfcomp.graph.handlers_attention import AttentionHandler
from tfcomp.layers import QuantEmbedding
from tfcomp.pruning import (
    estimate_macs,
    make_plan,
    mask_channels,
    prune_channels,
)


def _np(t):
    return keras.ops.convert_to_numpy(t)


def _ids(model, n=3, length=7, seed=1):
    rng = np.random.default_rng(seed)
    xs = [rng.integers(0, 30, size=(n, t.shape[1] or length)).astype("int32")
          for t in model.inputs]
    return xs if len(xs) > 1 else xs[0]


def _attention_model(att, key=False, dv=8, scores=False, masks=False,
                     act=None):
    """The keras.io-style probe: a shared Embedding, Conv1D query / value
    (/ key), the attention and a pooled Dense head."""
    keras.utils.set_random_seed(0)
    q_in = keras.Input((6,), dtype="int32")
    v_in = keras.Input((5,), dtype="int32")
    emb = layers.Embedding(30, 8, name="emb")
    q = layers.Conv1D(8, 3, padding="same", activation=act, name="cq")(
        emb(q_in))
    v = layers.Conv1D(dv, 3, padding="same", activation=act, name="cv")(
        emb(v_in))
    inputs = [q, v]
    if key:
        inputs.append(layers.Conv1D(8, 3, padding="same", name="ck")(
            emb(v_in)))
    kw = {"return_attention_scores": True} if scores else {}
    if masks:
        kw["mask"] = [keras.ops.not_equal(q_in, 0),
                      keras.ops.not_equal(v_in, 0)]
    out = att(inputs, **kw)
    extra = []
    if scores:
        out, s = out
        extra = [layers.Flatten()(s)]
    x = layers.Concatenate()([layers.GlobalAveragePooling1D()(q),
                              layers.GlobalAveragePooling1D()(out), *extra])
    return keras.Model([q_in, v_in], layers.Dense(3, name="head")(x))


def _check_pruned(model, ratio=0.5):
    """pruned == masked, MACs fall and equal the plan's estimate."""
    plan = make_plan(model, ratio=ratio)
    pruned, masked = prune_channels(model, plan), mask_channels(model, plan)
    x = _ids(model)
    np.testing.assert_allclose(_np(pruned(x, training=False)),
                               _np(masked(x, training=False)), atol=1e-5)
    dense, small = tfcomp.profile(model).macs, tfcomp.profile(pruned).macs
    assert small < dense
    assert small == estimate_macs(model, plan)
    return pruned


ATTENTIONS = {
    "dot": lambda: layers.Attention(name="att"),
    "dot_scale": lambda: layers.Attention(use_scale=True, name="att"),
    "concat": lambda: layers.Attention(score_mode="concat", name="att"),
    "additive": lambda: layers.AdditiveAttention(name="att"),
    "additive_no_scale": lambda: layers.AdditiveAttention(
        use_scale=False, name="att"),
}


@pytest.mark.parametrize("kind", sorted(ATTENTIONS))
def test_attention_prunes_exactly(kind):
    model = _attention_model(ATTENTIONS[kind]())
    graph = tfcomp.DependencyGraph(model)
    assert not graph.barriers
    # no key: query, value (= key) and output are one set
    assert graph.group("cq").prunable and graph.group("cq").size == 8
    assert graph.group("cq").producer_layers == ["cq", "cv"]
    assert graph.group("emb").prunable
    pruned = _check_pruned(model)
    att = pruned.get_layer("att")
    if kind == "additive":
        assert tuple(att.scale.shape) == (4,)


def test_key_couples_with_query_value_with_output():
    model = _attention_model(layers.AdditiveAttention(name="att"), key=True,
                             dv=6)
    graph = tfcomp.DependencyGraph(model)
    qk, v = graph.group("cq"), graph.group("cv")
    assert qk.producer_layers == ["cq", "ck"] and qk.size == 8
    assert v.producer_layers == ["cv"] and v.size == 6
    ports = {p.name: p for p in graph.layer_ports("att")}
    assert ports["qk"].weights == (("scale", 0),) and ports["v"].size == 6
    _check_pruned(model)


def test_sigmoid_producers_and_masks_still_exact():
    # removed channels are a constant sigmoid(0) = 0.5: a constant score
    # term that softmax ignores; mask= tensors are not channel inputs
    model = _attention_model(layers.Attention(score_mode="concat",
                                              name="att"), act="sigmoid",
                             masks=True)
    graph = tfcomp.DependencyGraph(model)
    assert "att" not in graph.barriers
    _check_pruned(model)


def test_attention_scores_output_is_locked():
    model = _attention_model(layers.Attention(name="att"), scores=True)
    graph = tfcomp.DependencyGraph(model)
    scores = graph.group("att:out1")
    assert not scores.prunable and "attention scores" in scores.reason
    _check_pruned(model)


def test_none_length_self_attention_with_scores_and_masks():
    # token ids, the Embedding's mask (mask=) and the scores (B, T, T) all
    # have an unknown last axis: none of them is a channel tensor
    keras.utils.set_random_seed(0)
    inp = keras.Input((None,), dtype="int32")
    h = layers.Embedding(30, 8, mask_zero=True, name="emb")(inp)
    h = layers.Dense(8, name="proj")(h)
    out, _ = layers.AdditiveAttention(name="att")(
        [h, h], return_attention_scores=True)
    pooled = layers.GlobalAveragePooling1D(name="gap")(out)
    model = keras.Model(inp, layers.Dense(2, name="head")(pooled))
    graph = tfcomp.DependencyGraph(model)
    for name in ("emb", "proj", "att", "gap"):
        assert name not in graph.barriers
    assert graph.group("proj").prunable
    _check_pruned(model)


def test_attention_macs_scale():
    model = _attention_model(layers.Attention(name="att"), key=True, dv=6)
    layer = model.get_layer("att")
    h = AttentionHandler()
    assert h.macs_scale({"qk": 0.5, "v": 0.5}, layer) == pytest.approx(0.5)
    assert h.macs_scale({"qk": 0.5, "v": 1.0}, layer) == pytest.approx(
        (8 * 0.5 + 6) / 14)


def test_embedding_none_length_conv_classifier(tmp_path):
    keras.utils.set_random_seed(0)
    inp = keras.Input((None,), dtype="int32")
    x = layers.Embedding(40, 8, name="emb")(inp)
    x = layers.Conv1D(6, 3, activation="relu", name="conv")(x)
    x = layers.GlobalMaxPooling1D()(x)
    model = keras.Model(inp, layers.Dense(2, name="head")(x))
    graph = tfcomp.DependencyGraph(model)
    assert not graph.barriers  # token ids of unknown length: no barrier
    (port,) = graph.layer_ports("emb")
    assert (port.role, port.weights, port.config_key, port.macs) == (
        "producer", (("embeddings", -1),), "output_dim", False)
    assert graph.group("emb").consumer_layers == ["conv"]
    pruned = _check_pruned(model)
    assert pruned.get_layer("emb").output_dim == 4
    path = os.path.join(tmp_path, "small.keras")
    pruned.save(path)
    loaded = keras.models.load_model(path)
    x = _ids(model, length=9)
    np.testing.assert_allclose(_np(loaded(x)), _np(pruned(x)), atol=1e-6)


def test_mask_zero_lstm_units_prune():
    # the Embedding's mask reaches the LSTM as mask=: not an initial state
    keras.utils.set_random_seed(0)
    inp = keras.Input((None,), dtype="int32")
    x = layers.Embedding(40, 8, mask_zero=True, name="emb")(inp)
    x = layers.LSTM(6, name="lstm")(x)
    model = keras.Model(inp, layers.Dense(2, name="head")(x))
    graph = tfcomp.DependencyGraph(model)
    assert graph.group("emb").prunable and graph.group("lstm").prunable
    pruned = _check_pruned(model)
    assert pruned.get_layer("lstm").units == 3


def test_quant_embedding_prunes_like_embedding():
    keras.utils.set_random_seed(0)
    inp = keras.Input((7,), dtype="int32")
    x = QuantEmbedding(40, 8, w_bits=4, name="emb")(inp)
    x = layers.Conv1D(6, 3, name="conv")(x)
    model = keras.Model(inp, layers.Dense(2)(layers.Flatten()(x)))
    assert tfcomp.DependencyGraph(model).group("emb").prunable
    _check_pruned(model)


@pytest.mark.parametrize("variant", ["lora", "int8"])
def test_unsupported_embedding_is_a_barrier(variant):
    keras.utils.set_random_seed(0)
    inp = keras.Input((7,), dtype="int32")
    emb = layers.Embedding(40, 8, name="emb")
    x = layers.Conv1D(6, 3, name="conv")(emb(inp))
    model = keras.Model(inp, layers.Dense(2)(layers.Flatten()(x)))
    if variant == "lora":
        emb.enable_lora(2)
        want = "LoRA enabled"
    else:
        emb.quantize("int8")
        want = "quantization_mode='int8'"
    graph = tfcomp.DependencyGraph(model)
    assert want in graph.barriers["emb"]
    assert not graph.group("emb").prunable
    assert graph.group("conv").prunable  # the rest still prunes
