"""tfcomp.profile counts every layer type a user brings, by formulas
checked here by hand (one small layer each), attention included."""

import keras
import pytest
from keras import layers as L

import tfcomp
from tfcomp.cost import attention_macs, einsum_macs, profile


def _single(layer, in_shape, dtype="float32"):
    inp = keras.Input(in_shape, dtype=dtype)
    model = keras.Model(inp, layer(inp))
    return profile(model).by_name(layer.name)


def _params(layer):
    return sum(int(w.numpy().size) for w in layer.weights)


# --------------------------------------------------------- convolutions


def test_conv1d_conv3d_grouped_transpose_separable_by_hand():
    # Conv1D: positions * k * cin * cout
    assert _single(L.Conv1D(6, 3, padding="same"), (10, 4)).macs == \
        10 * 3 * 4 * 6
    # Conv3D: 4x4x4 outputs (valid 3x3x3 on 6^3), cin 2, cout 5
    assert _single(L.Conv3D(5, 3), (6, 6, 6, 2)).macs == 4 ** 3 * 27 * 2 * 5
    # grouped Conv2D: divided by groups (cin 8 / 4 groups = 2 per filter)
    assert _single(L.Conv2D(12, 3, padding="same", groups=4),
                   (5, 5, 8)).macs == 5 * 5 * 9 * (8 // 4) * 12
    # Conv2DTranspose: over input positions, k*k*cout per input channel
    assert _single(L.Conv2DTranspose(4, 3, strides=2, padding="same"),
                   (3, 3, 6)).macs == 3 * 3 * 9 * 4 * 6
    # SeparableConv2D: depthwise (dm 2) then pointwise
    rec = _single(L.SeparableConv2D(7, 3, padding="same", depth_multiplier=2),
                  (4, 4, 3))
    assert rec.macs == 4 * 4 * 9 * 3 * 2 + 4 * 4 * (3 * 2) * 7


# --------------------------------------------------------- attention


def test_einsum_dense_is_the_product_of_its_indices():
    # "abc,cd->abd": (batch) b=5, c=8, d=4
    layer = L.EinsumDense("abc,cd->abd", output_shape=(5, 4), name="e1")
    assert _single(layer, (5, 8)).macs == 5 * 8 * 4
    # heads projection "abc,cde->abde": b=5, c=8, d=2 heads, e=3
    layer = L.EinsumDense("abc,cde->abde", output_shape=(5, 2, 3), name="e2")
    assert _single(layer, (5, 8)).macs == 5 * 8 * 2 * 3
    # ellipsis covers the non-batch leading axes (4 x 5)
    layer = L.EinsumDense("...b,bc->...c", output_shape=6, name="e3")
    assert _single(layer, (4, 5, 8)).macs == 4 * 5 * 8 * 6
    assert einsum_macs("abc,cd->abd", (None, 5, 8), (8, 4)) == 160


def test_multi_head_attention_self_and_cross_by_hand():
    # self-attention: T = S = 6 tokens of 16, 2 heads of 8
    q = keras.Input((6, 16))
    mha = L.MultiHeadAttention(2, 8, name="mha")
    rec = profile(keras.Model(q, mha(q, q))).by_name("mha")
    t, d, h, k = 6, 16, 2, 8
    proj = t * d * h * k                      # each of Q, K, V, O
    assert rec.macs == 4 * proj + 2 * h * t * t * k
    assert rec.params == _params(mha)
    # cross-attention: query 5x8, value / key 7x6, value_dim 3, output 10
    q, v = keras.Input((5, 8)), keras.Input((7, 6))
    mha = L.MultiHeadAttention(2, 4, value_dim=3, output_shape=(10,),
                               name="x")
    rec = profile(keras.Model([q, v], mha(query=q, value=v, key=v))
                  ).by_name("x")
    expected = (5 * 8 * 2 * 4        # Q
                + 7 * 6 * 2 * 4      # K
                + 7 * 6 * 2 * 3      # V
                + 2 * 5 * 7 * 4      # Q K^T
                + 2 * 5 * 7 * 3      # softmax . V
                + 5 * 2 * 3 * 10)    # output
    assert rec.macs == expected == attention_macs(
        (None, 5, 8), (None, 7, 6), 2, 4, value_dim=3, output_features=10)


def test_multi_head_attention_over_some_axes():
    # a 4x6 image of 8 features, attention along axis 2 only (rows apart)
    x = keras.Input((4, 6, 8))
    mha = L.MultiHeadAttention(2, 3, attention_axes=(2,), name="rows")
    rec = profile(keras.Model(x, mha(x, x))).by_name("rows")
    t = 4 * 6
    proj = t * 8 * 2 * 3
    assert rec.macs == 4 * proj + 2 * (2 * t * 6 * 3)


def test_dot_and_additive_attention():
    q, v = keras.Input((5, 8)), keras.Input((7, 8))
    model = keras.Model([q, v], [L.Attention(name="dot")([q, v]),
                                 L.AdditiveAttention(name="add")([q, v])])
    p = profile(model)
    assert p.by_name("dot").macs == 5 * 7 * 8 + 5 * 7 * 8
    assert p.by_name("add").macs == 5 * 7 * 8 + 5 * 7 * 8
    assert p.by_name("add").params == 8


# --------------------------------------------------------- zero-MAC layers


@pytest.mark.parametrize("layer,params", [
    (L.LayerNormalization(name="ln"), 2 * 6),
    (L.GroupNormalization(3, name="gn"), 2 * 6),
    (L.BatchNormalization(name="bn"), 4 * 6),
])
def test_normalisations_count_params_and_no_macs(layer, params):
    rec = _single(layer, (4, 4, 6))
    assert rec.macs == 0 and rec.params == params and rec.note == ""


def test_embedding_is_a_lookup():
    rec = _single(L.Embedding(50, 8, name="emb"), (10,), dtype="int32")
    assert rec.macs == 0 and rec.params == 50 * 8 and rec.note == ""


def test_unknown_sequence_length_counts_one_position():
    inp = keras.Input((None, 8))
    out = L.Conv1D(4, 3, name="conv")(L.Dense(6, name="dense")(inp))
    p = profile(keras.Model(inp, out))
    assert p.by_name("dense").macs == 8 * 6
    assert p.by_name("conv").macs == 3 * 6 * 4
    assert "None" in p.by_name("dense").note
    assert p.unknown_layers == []


# --------------------------------------------------------- a tiny ViT


def test_tiny_vit_total_by_hand():
    inp = keras.Input((16, 16, 3))
    x = L.Conv2D(16, 4, strides=4, name="patch")(inp)      # 4x4 tokens
    x = L.Reshape((16, 16))(x)
    h = L.LayerNormalization()(x)
    x = L.Add()([x, L.MultiHeadAttention(2, 8, name="mha")(h, h)])
    h = L.Dense(32, activation="gelu", name="mlp1")(L.LayerNormalization()(x))
    x = L.Add()([x, L.Dense(16, name="mlp2")(h)])
    out = L.Dense(10, name="head")(L.GlobalAveragePooling1D()(x))
    p = tfcomp.profile(keras.Model(inp, out))
    patch = 16 * (4 * 4 * 3) * 16
    mha = 4 * (16 * 16 * 2 * 8) + 2 * (2 * 16 * 16 * 8)
    mlp = 16 * 16 * 32 + 16 * 32 * 16
    assert p.by_name("mha").macs == mha
    assert p.macs == patch + mha + mlp + 16 * 10 == 53408
    assert p.unknown_layers == []
