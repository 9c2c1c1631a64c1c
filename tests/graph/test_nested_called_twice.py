"""A nested model called several times (a siamese network's encoder, as in
keras.io's contrastive-loss example): every call flattened, the encoder's
layers shared between the calls, so pruning, quantization and export see
one encoder applied to both inputs."""

import keras
import numpy as np
import pytest
from keras import layers

import tfcomp
from tfcomp.graph import parse_model
from tfcomp.pruning import make_plan, mask_channels, prune_channels


def _encoder(sequential):
    if sequential:
        return keras.Sequential([
            keras.Input((12, 12, 1)),
            layers.Conv2D(8, 3, activation="relu", name="c1"),
            layers.BatchNormalization(name="bn"),
            layers.Conv2D(12, 3, activation="relu", name="c2"),
            layers.GlobalAveragePooling2D(name="gap"),
            layers.Dense(6, name="emb")], name="encoder")
    inp = keras.Input((12, 12, 1))
    h = layers.Conv2D(8, 3, activation="relu", name="c1")(inp)
    h = layers.BatchNormalization(name="bn")(h)
    h = layers.Conv2D(12, 3, activation="relu", name="c2")(h)
    h = layers.GlobalAveragePooling2D(name="gap")(h)
    return keras.Model(inp, layers.Dense(6, name="emb")(h), name="encoder")


def _siamese(sequential=False):
    keras.utils.set_random_seed(0)
    enc = _encoder(sequential)
    a, b = keras.Input((12, 12, 1)), keras.Input((12, 12, 1))
    d = layers.Subtract(name="diff")([enc(a), enc(b)])
    d = layers.Multiply(name="sq")([d, d])
    return keras.Model([a, b], layers.Dense(1, name="head")(d),
                       name="siamese")


def _x(n=8):
    rng = np.random.default_rng(0)
    return [rng.random((n, 12, 12, 1), dtype=np.float32) for _ in range(2)]


def _np(t):
    return keras.ops.convert_to_numpy(t)


@pytest.mark.parametrize("sequential", [False, True])
def test_each_call_is_flattened_with_shared_layers(sequential):
    parsed = parse_model(_siamese(sequential))
    calls = parsed.nodes_of("encoder/c1")
    assert [n.node_index for n in calls] == [0, 1]
    assert calls[0].inputs != calls[1].inputs  # one per model input
    assert "encoder/c1" in parsed.shared_layers
    # the two calls' embeddings feed the Subtract
    diff = parsed.nodes_of("diff")[0]
    assert diff.inputs == [n.outputs[0] for n in
                           parsed.nodes_of("encoder/emb")]


@pytest.mark.parametrize("sequential", [False, True])
def test_encoder_channels_prune_in_both_calls(sequential, tmp_path):
    model = _siamese(sequential)
    graph = tfcomp.DependencyGraph(model)
    assert {"encoder/c1", "encoder/c2", "encoder/emb"} <= {
        g.id for g in graph.prunable_groups}
    plan = make_plan(model, ratio=0.5)
    pruned, masked = prune_channels(model, plan), mask_channels(model, plan)
    x = _x()
    np.testing.assert_allclose(_np(pruned(x, training=False)),
                               _np(masked(x, training=False)), atol=1e-5)
    assert tfcomp.profile(pruned).macs < 0.5 * tfcomp.profile(model).macs
    assert pruned.get_layer("encoder").get_layer("c1").filters == 4
    pruned.save(tmp_path / "p.keras")
    again = keras.saving.load_model(tmp_path / "p.keras")
    np.testing.assert_allclose(_np(again(x)), _np(pruned(x)), atol=1e-6)


def test_quantized_siamese_exports_int8_per_call(tmp_path):
    from tfcomp.export import export_tflite
    from tfcomp.quantization import calibrate, quantize_model

    model = _siamese()
    q = quantize_model(model)
    x = _x(32)
    calibrate(q, x)
    # the second call reads the second input (before: a copy of the
    # first, so the output was the head's bias for every pair)
    got, want = _np(q(x)).ravel(), _np(model(x)).ravel()
    assert np.corrcoef(got, want)[0, 1] > 0.95
    report = export_tflite(q, tmp_path / "s.tflite", quantization="int8",
                           calibration_data=x)
    # the encoder's BatchNormalization (after a ReLU: not foldable into the
    # conv) is one shared 1x1 depthwise conv, integer in both calls (kept
    # a BatchNormalization, the converter left both calls' MUL / ADD float)
    assert type(q.get_layer("encoder_bn")).__name__ == \
        "QuantDepthwiseConv2D"
    assert not report.float_ops
    assert report.max_abs_error < 0.05
