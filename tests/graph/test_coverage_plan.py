"""Every model a Keras user brings goes through profile -> make_plan ->
prune_channels with pruned == masked and fewer MACs (issue #17).

Each model is written inline, keras.io style and tiny: a ViT (patch conv,
MultiHeadAttention, LayerNormalization, MLP), a Conv3D net, a grouped-conv
net, a GroupNormalization net, a nested model, a model with a Lambda and
keras.ops calls, an Embedding + Conv1D text net, a U-Net (Conv2DTranspose +
Concatenate) and a ConvNeXt block; keras.applications.ConvNeXtTiny at 32x32
is the slow one.
"""

import keras
import numpy as np
import pytest
from keras import layers as L

import tfcomp
from tfcomp.graph import DependencyGraph
from tfcomp.pruning import estimate_macs, make_plan, mask_channels, prune_channels

LN_REASON = "LayerNormalization normalises over all channels: pruning would " \
            "change it"
# Weighted layers whose MACs are 0 by convention (normalisations and
# per-channel scales like BN, Embedding is a lookup).
ZERO_MACS = ("BatchNormalization", "LayerNormalization", "GroupNormalization",
             "Embedding", "LayerScale")


def _randomize(model, seed=0):
    """Non-trivial BN / norm statistics and biases (as test_applications)."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        if v.name in ("gamma", "moving_variance"):
            v.assign(rng.uniform(0.5, 1.5, v.shape).astype(v.dtype))
        elif v.name in ("beta", "moving_mean", "bias"):
            v.assign((0.1 * rng.normal(size=v.shape)).astype(v.dtype))
    return model


def _x(model, seed=0):
    rng = np.random.default_rng(seed)
    shape = (2,) + tuple(model.inputs[0].shape[1:])
    if "int" in str(model.inputs[0].dtype):
        return rng.integers(0, 50, size=shape).astype("int32")
    return rng.normal(size=shape).astype("float32")


def _np(model, x):
    return keras.ops.convert_to_numpy(model(x))


def check_prunes(model, ratio=0.5, importance="l1"):
    """Profile MACs > 0 per weighted layer; plan + prune give pruned ==
    masked (1e-5 relative) and fewer MACs. Returns (graph, plan, pruned)."""
    _randomize(model)
    prof = tfcomp.profile(model)
    for rec in prof.layers:
        if rec.params and rec.type not in ZERO_MACS:
            assert rec.macs > 0, (rec.name, rec.type, rec.note)
        if rec.type != "Lambda":
            assert not rec.note.startswith("unknown"), (rec.name, rec.note)
    graph = DependencyGraph(model)
    assert graph.prunable_groups, graph.summary(print_fn=None)
    plan = make_plan(graph, ratio=ratio, importance=importance)
    assert plan.num_removed() > 0
    pruned = prune_channels(model, plan, graph=graph)
    x = _x(model)
    y_pruned = _np(pruned, x)
    mask_channels(model, plan, inplace=True, graph=graph)
    y_masked = _np(model, x)
    err = np.abs(y_pruned - y_masked).max() / np.abs(y_masked).max()
    assert err < 1e-5, err
    after = tfcomp.profile(pruned).macs
    assert after == estimate_macs(graph, plan) < prof.macs
    assert pruned.count_params() < model.count_params()
    return graph, plan, pruned


# ----------------------------------------------------------------- models


def tiny_vit(size=16, patch=4, dim=16, heads=2, mlp=32, classes=10):
    """keras.io "image classification with ViT", tiny: patches by a strided
    conv, one transformer block (pre-LN, MHA, MLP), pooled logits."""
    inp = keras.Input((size, size, 3))
    x = L.Conv2D(dim, patch, strides=patch, name="patch")(inp)
    x = L.Reshape(((size // patch) ** 2, dim), name="tokens")(x)
    h = L.LayerNormalization(epsilon=1e-6, name="ln1")(x)
    h = L.MultiHeadAttention(heads, dim // heads, name="mha")(h, h)
    x = L.Add(name="add1")([x, h])
    h = L.LayerNormalization(epsilon=1e-6, name="ln2")(x)
    h = L.Dense(mlp, activation="gelu", name="mlp1")(h)
    h = L.Dense(dim, name="mlp2")(h)
    x = L.Add(name="add2")([x, h])
    x = L.LayerNormalization(epsilon=1e-6, name="ln3")(x)
    x = L.GlobalAveragePooling1D(name="pool")(x)
    return keras.Model(inp, L.Dense(classes, name="head")(x), name="vit")


def conv3d_net():
    inp = keras.Input((8, 8, 8, 1))
    x = L.Conv3D(8, 3, padding="same", name="c1")(inp)
    x = L.ReLU()(L.BatchNormalization(name="bn1")(x))
    x = L.MaxPooling3D(2)(x)
    x = L.Conv3D(16, 3, padding="same", activation="relu", name="c2")(x)
    x = L.GlobalAveragePooling3D()(x)
    return keras.Model(inp, L.Dense(4, name="fc")(x), name="conv3d")


def grouped_net():
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(16, 3, padding="same", activation="relu", name="c1")(inp)
    x = L.Conv2D(32, 3, padding="same", groups=4, name="gconv")(x)
    x = L.ReLU()(L.BatchNormalization(name="bn")(x))
    x = L.Conv2D(16, 1, activation="relu", name="c3")(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(4, name="fc")(x), name="grouped")


def groupnorm_net():
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(16, 3, padding="same", name="c1")(inp)
    x = L.Activation("relu")(L.GroupNormalization(4, name="gn")(x))
    x = L.Conv2D(8, 3, padding="same", name="c2")(x)
    x = L.GroupNormalization(-1, name="inorm")(x)
    x = L.Conv2D(8, 3, padding="same", name="c3")(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(4, name="fc")(x), name="groupnorm")


def nested_net():
    inner_in = keras.Input((8, 8, 8))
    h = L.Conv2D(12, 3, padding="same", name="ic1")(inner_in)
    h = L.ReLU()(L.BatchNormalization(name="ibn")(h))
    h = L.Conv2D(8, 3, padding="same", name="ic2")(h)
    block = keras.Model(inner_in, h, name="block")
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inp)
    x = L.Add()([x, block(x)])
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(4, name="fc")(x), name="nested")


def lambda_ops_net():
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", name="c1")(inp)
    x = keras.ops.relu(x) * 0.5
    x = L.Conv2D(12, 3, padding="same", name="c2")(x)
    x = L.Lambda(lambda t: t * 2.0, name="double")(x)
    x = L.Conv2D(8, 3, padding="same", name="c3")(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(4, name="fc")(x), name="lambda_ops")


def text_net(vocab=50, length=20):
    """keras.io "text classification from scratch", tiny."""
    inp = keras.Input((length,), dtype="int32")
    x = L.Embedding(vocab, 8, name="emb")(inp)
    x = L.Conv1D(16, 3, activation="relu", name="conv1")(x)
    x = L.MaxPooling1D(2)(x)
    x = L.Conv1D(16, 3, activation="relu", name="conv2")(x)
    x = L.GlobalMaxPooling1D()(x)
    x = L.Dense(8, activation="relu", name="fc1")(x)
    return keras.Model(inp, L.Dense(2, name="fc2")(x), name="text")


def unet():
    inp = keras.Input((16, 16, 3))
    c1 = L.Conv2D(8, 3, padding="same", activation="relu", name="d1")(inp)
    x = L.MaxPooling2D()(c1)
    x = L.Conv2D(16, 3, padding="same", activation="relu", name="d2")(x)
    x = L.Conv2DTranspose(8, 2, strides=2, padding="same", name="up")(x)
    x = L.Concatenate(name="cat")([x, c1])
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="u1")(x)
    return keras.Model(inp, L.Conv2D(1, 1, name="mask")(x), name="unet")


def convnext_block(dim=16):
    """DepthwiseConv2D 7x7 -> LayerNorm -> Dense 4x -> gelu -> Dense ->
    add (ConvNeXt)."""
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(dim, 2, strides=2, name="stem")(inp)
    h = L.DepthwiseConv2D(7, padding="same", name="dw")(x)
    h = L.LayerNormalization(epsilon=1e-6, name="ln")(h)
    h = L.Dense(4 * dim, name="pw1")(h)
    h = L.Activation("gelu")(h)
    h = L.Dense(dim, name="pw2")(h)
    x = L.Add(name="add")([x, h])
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(4, name="fc")(x), name="convnext_block")


# ----------------------------------------------------------------- tests


@pytest.mark.parametrize("build", [
    conv3d_net, grouped_net, groupnorm_net, nested_net, text_net, unet,
], ids=lambda f: f.__name__)
def test_user_model_prunes_exactly(build):
    check_prunes(build())


def test_lambda_and_keras_ops_model():
    model = lambda_ops_net()
    graph = DependencyGraph(model)
    assert "double" in graph.barriers
    try:
        check_prunes(model)
    except ValueError as e:  # Lambda deserialisation (safe_mode)
        if "lambda" not in str(e).lower():
            raise
        pytest.xfail(f"H1 Lambda copy: {e}"[:200])


def test_tiny_vit_prunes_its_mlp_and_counts_attention():
    model = tiny_vit()
    graph, plan, pruned = check_prunes(model)
    # LayerNorm over the channels: the residual stream is left whole
    assert graph.barriers["ln1"] == LN_REASON
    assert not graph.producer_group("patch").prunable
    assert LN_REASON in graph.producer_group("patch").reason
    assert list(plan.removed) == ["mlp1"]
    assert pruned.get_layer("mlp1").units == 16
    assert tfcomp.profile(pruned).by_name("mha").macs == tfcomp.profile(
        model).by_name("mha").macs > 0


def test_convnext_block_prunes_hidden_layer_only():
    model = convnext_block()
    graph, plan, pruned = check_prunes(model)
    assert graph.barriers["ln"] == LN_REASON
    assert list(plan.removed) == ["pw1"]
    assert pruned.get_layer("pw1").units == 32
    assert pruned.get_layer("ln").gamma.shape == (16,)


def test_groupnorm_prunes_whole_groups():
    model = groupnorm_net()
    graph, plan, pruned = check_prunes(model)
    g = graph.producer_group("c1")
    assert g.size == 4 and g.unit_width == 4   # 4 norm groups of 4
    assert pruned.get_layer("gn").groups == 2
    assert pruned.get_layer("c1").filters == 8
    # one group per channel (groups=-1 is stored as the channel count)
    assert pruned.get_layer("inorm").groups == pruned.get_layer(
        "c2").filters == 4


def test_groupnorm_with_one_group_is_a_barrier():
    inp = keras.Input((6, 6, 3))
    x = L.Conv2D(8, 3, name="c1")(inp)
    x = L.GroupNormalization(1, name="gn")(x)
    out = L.Dense(2)(L.GlobalAveragePooling2D()(L.Conv2D(4, 1)(x)))
    graph = DependencyGraph(keras.Model(inp, out))
    assert "normalises over all channels" in graph.barriers["gn"]
    assert not graph.producer_group("c1").prunable


@pytest.mark.slow
def test_convnext_tiny_application():
    model = keras.applications.ConvNeXtTiny(
        weights=None, input_shape=(32, 32, 3), classes=10,
        classifier_activation=None)
    graph, plan, _ = check_prunes(model, ratio=0.3, importance="random")
    # only the 4x hidden layers of the 18 blocks can lose channels
    assert len(plan.removed) == 18
    assert all(gid.endswith("pointwise_conv_1") for gid in plan.removed)
