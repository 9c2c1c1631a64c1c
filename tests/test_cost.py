import keras
import numpy as np
import pytest

import tfcomp
from tfcomp.cost import profile


def test_mobilenet_v1_macs_match_paper():
    p = profile(keras.applications.MobileNet(weights=None))
    assert abs(p.macs - 569e6) / 569e6 < 0.01
    assert p.params == 4253864


def test_mobilenet_v2_macs_match_paper():
    p = profile(keras.applications.MobileNetV2(weights=None))
    assert abs(p.macs - 300e6) / 300e6 < 0.01


def _single(layer, in_shape):
    inp = keras.Input(in_shape)
    model = keras.Model(inp, layer(inp))
    return profile(model).by_name(layer.name)


@pytest.mark.parametrize("kwargs,in_shape,expected", [
    # Conv2D: Ho*Wo*Cout*Cin*k*k
    (dict(filters=8, kernel_size=3, padding="same"), (10, 10, 4),
     10 * 10 * 8 * 4 * 9),
    (dict(filters=8, kernel_size=3, strides=2, padding="valid"), (11, 11, 4),
     5 * 5 * 8 * 4 * 9),
    (dict(filters=8, kernel_size=3, dilation_rate=2, padding="valid"),
     (11, 11, 4), 7 * 7 * 8 * 4 * 9),
    (dict(filters=8, kernel_size=3, groups=2, padding="same"), (6, 6, 4),
     6 * 6 * 8 * 2 * 9),
])
def test_conv2d_macs(kwargs, in_shape, expected):
    rec = _single(keras.layers.Conv2D(**kwargs), in_shape)
    assert rec.macs == expected


def test_conv1d_depthwise_separable_transpose_dense_macs():
    assert _single(keras.layers.Conv1D(6, 3), (10, 4)).macs == 8 * 6 * 4 * 3
    assert _single(keras.layers.DepthwiseConv2D(3, depth_multiplier=2,
                                                padding="same"),
                   (5, 5, 3)).macs == 5 * 5 * 3 * 2 * 9
    sep = _single(keras.layers.SeparableConv2D(7, 3, padding="same"),
                  (5, 5, 3))
    assert sep.macs == 5 * 5 * 3 * 9 + 5 * 5 * 3 * 7
    tr = _single(keras.layers.Conv2DTranspose(5, 3, strides=2), (4, 4, 3))
    assert tr.macs == 4 * 4 * 3 * 5 * 9
    dense = _single(keras.layers.Dense(6), (7, 5))  # rank-3 input
    assert dense.macs == 7 * 5 * 6


def test_zero_mac_layers_and_unknown_layer_note():
    class Mystery(keras.layers.Layer):  # two tensors: not traced
        def call(self, x, scale):
            return x * scale

    inp = keras.Input((4, 4, 3))
    x = keras.layers.BatchNormalization()(inp)
    x = keras.layers.MaxPooling2D()(x)
    y = Mystery(name="mystery")(x, x)
    out = keras.layers.Add()([x, y])
    p = profile(keras.Model(inp, out))
    assert p.macs == 0
    rec = p.by_name("mystery")
    assert rec.macs == 0 and "unknown" in rec.note
    assert p.unknown_layers == ["mystery"]
    assert p.by_name("batch_normalization").params == 12


def test_keras_ops_products_count():
    """ops.matmul / einsum / tensordot / dot nodes of a functional graph,
    and those a Lambda or a weightless layer class computes, count
    (output elements) x (contracted size); element-wise ops count 0."""

    class PixelAttention(keras.layers.Layer):  # weightless, keras.ops only
        def call(self, x):
            s = keras.ops.softmax(keras.ops.matmul(
                x, keras.ops.transpose(x, (0, 2, 1))))
            return keras.ops.matmul(s, x) * 0.5

    ops = keras.ops
    inp = keras.Input((8, 4))
    a = ops.matmul(inp, ops.transpose(inp, (0, 2, 1)))      # 8*8*4
    b = ops.einsum("btc,bsc->bts", inp, inp)                 # 8*8*4
    c = ops.tensordot(inp, ops.ones((4, 3)), axes=1)         # 8*3*4
    d = keras.layers.Lambda(lambda t: ops.dot(t, ops.ones((4, 2))))(inp)
    e = PixelAttention(name="pix")(inp)                      # 2 * 8*8*4
    p = profile(keras.Model(inp, [a, b, c, d, e]))
    macs = {r.type: r.macs for r in p.layers}
    assert macs["Matmul"] == macs["Einsum"] == 256
    assert macs["Tensordot"] == 96 and macs["Lambda"] == 64
    assert p.by_name("pix").macs == 512 and "traced" in p.by_name("pix").note
    assert macs["Transpose"] == 0 and p.unknown_layers == []
    assert p.macs == 256 * 2 + 96 + 64 + 512


def test_nested_model_and_bits_bops():
    inner_in = keras.Input((6, 6, 3))
    inner = keras.Model(inner_in, keras.layers.Conv2D(
        4, 1, name="c")(inner_in), name="inner")
    inp = keras.Input((6, 6, 3))
    out = keras.layers.Dense(2, name="d")(
        keras.layers.Flatten()(inner(inp)))
    p = profile(keras.Model(inp, out), bits={"inner/c": (4, 8)})
    conv = p.by_name("inner/c")
    assert conv.macs == 36 * 4 * 3
    assert conv.bops == conv.macs * 4 * 8
    assert conv.act_bytes == 6 * 6 * 4 * 8 / 8
    assert p.by_name("d").bops == p.by_name("d").macs * 32 * 32
    assert p.macs == 36 * 12 + 144 * 2


def test_summary_and_to_dict_are_consistent():
    model = tfcomp.zoo.resnet(depth=8)
    p = profile(model)
    text = p.summary(print_fn=None)
    assert "Total MACs" in text and "stem_conv (Conv2D)" in text
    d = p.to_dict()
    import json
    assert json.loads(json.dumps(d))["macs"] == p.macs
    assert p.params == model.count_params()


def test_profile_errors():
    with pytest.raises(TypeError, match="keras.Model"):
        profile("not a model")
    with pytest.raises(ValueError, match="bits"):
        profile(tfcomp.zoo.resnet(depth=8), bits={"stem_conv": 4})
    unbuilt = keras.Sequential([keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="not built"):
        profile(unbuilt)


def test_profile_bits_from_layer_attributes():
    class FakeQuantDense(keras.layers.Dense):
        w_bits = 4
        a_bits = 6

    inp = keras.Input((5,))
    p = profile(keras.Model(inp, FakeQuantDense(3, name="q")(inp)))
    assert p.by_name("q").bops == 15 * 4 * 6
    assert np.isclose(p.weight_bytes, (15 + 3) * 4 / 8)


def test_every_call_of_a_shared_layer_counts():
    """A siamese encoder (a nested model called twice) and a Conv1D shared
    by two inputs compute once per call: each call's MACs count."""
    L = keras.layers
    enc_in = keras.Input((8, 8, 1))
    enc = keras.Model(enc_in, L.Conv2D(4, 3, name="c")(enc_in), name="enc")
    a, b = keras.Input((8, 8, 1)), keras.Input((8, 8, 1))
    shared = L.Conv1D(2, 1, name="s")
    ta, tb = keras.Input((5, 3)), keras.Input((7, 3))
    model = keras.Model([a, b, ta, tb], [L.Add()([enc(a), enc(b)]),
                                         shared(ta), shared(tb)])
    rows = {r.name: r for r in tfcomp.profile(model).layers}
    assert rows["enc/c"].macs == 2 * 6 * 6 * 9 * 4
    assert rows["s"].macs == (5 + 7) * 3 * 2  # each call at its own length
    assert "called 2 times" in rows["s"].note


def test_call_counts_are_read_once_per_model_and_follow_add():
    """profile reads a model's call graph once (it runs in search loops);
    a Sequential that grows by add() is read again."""
    from tfcomp import cost

    L = keras.layers
    model = keras.Sequential([keras.Input((4,)), L.Dense(3)])
    before = tfcomp.profile(model).macs
    assert cost.call_shapes(model) is cost.call_shapes(model)
    model.add(L.Dense(2))
    assert tfcomp.profile(model).macs == before + 3 * 2


@pytest.mark.parametrize("layer, per_position", [
    (keras.layers.Conv2D(8, 3, padding="same", data_format="channels_first"),
     9 * 3 * 8),
    (keras.layers.DepthwiseConv2D(3, padding="same",
                                  data_format="channels_first"), 9 * 3),
    (keras.layers.SeparableConv2D(8, 3, padding="same",
                                  data_format="channels_first"),
     9 * 3 + 3 * 8),
    (keras.layers.Conv2DTranspose(8, 3, padding="same",
                                  data_format="channels_first"), 9 * 3 * 8),
])
def test_channels_first_convs_count_spatial_positions(layer, per_position):
    # (3, 16, 12) channels first: 16 x 12 positions, not 16 x 3 (before,
    # profile took the last axis as the channels and the channel axis as
    # a spatial one)
    inputs = keras.Input((3, 16, 12))
    model = keras.Model(inputs, layer(inputs))
    assert tfcomp.profile(model).macs == 16 * 12 * per_position
