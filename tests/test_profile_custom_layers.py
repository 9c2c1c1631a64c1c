"""profile() of user layers holding inner Keras layers and of subclassed
models: MACs traced from one call of their inner layers."""

import keras
import numpy as np
import pytest
from _keras_io_layers import TokenAndPositionEmbedding, TransformerBlock

import tfcomp
from tfcomp.cost import layer_macs
from tfcomp.hardware.spec import extract_specs

L = keras.layers


class ConvBN(L.Layer):
    """Inner layers in a list and a dict, and a call counter."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.parts = [L.Conv2D(filters, 3, padding="same")]
        self.norms = {"bn": L.BatchNormalization()}
        self.calls = 0

    def call(self, x):
        self.calls += 1
        return keras.ops.relu(self.norms["bn"](self.parts[0](x)))


class Fragile(L.Layer):
    """Builds in the graph, raises when the trace calls it."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = L.Dense(4)
        self.armed = False

    def call(self, x):
        if self.armed:
            raise RuntimeError("no zeros here")
        return self.dense(x)


class SubNet(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = L.Conv2D(4, 3)
        self.bn = L.BatchNormalization()
        self.flat = L.Flatten()
        self.head = keras.Sequential([L.Dense(8, activation="relu"),
                                      L.Dense(3)])

    def call(self, x):
        return self.head(self.flat(self.bn(self.conv(x))))


class TwoArgs(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = L.Dense(3, name="proj")

    def call(self, a, b):
        return self.dense(a) + b


def _transformer_model():
    inputs = L.Input(shape=(20,))
    emb = TokenAndPositionEmbedding(20, 100, 16)
    emb.name = "emb"  # keras.io's classes take no name argument
    block = TransformerBlock(16, 2, 16)
    block.name = "block"
    x = block(emb(inputs))
    x = L.GlobalAveragePooling1D()(x)
    x = L.Dense(20, activation="relu")(x)
    return keras.Model(inputs, L.Dense(2, activation="softmax")(x))


def _block_twin():
    """The TransformerBlock's layers, functional."""
    x = L.Input(shape=(20, 16))
    att = L.MultiHeadAttention(num_heads=2, key_dim=16)(x, x)
    out1 = L.LayerNormalization(epsilon=1e-6)(L.Add()([x, L.Dropout(0.1)(att)]))
    ffn = L.Dense(16)(L.Dense(16, activation="relu")(out1))
    y = L.LayerNormalization(epsilon=1e-6)(L.Add()([out1, L.Dropout(0.1)(ffn)]))
    return keras.Model(x, y)


def test_transformer_block_traced_like_its_functional_twin():
    p = tfcomp.profile(_transformer_model())
    block = p.by_name("block")
    assert block.macs == tfcomp.profile(_block_twin()).macs > 0
    assert "traced from one call of its inner layers" in block.note
    assert "MultiHeadAttention" in block.note and "2 Dense" in block.note
    assert "keras.ops matmuls" in block.note
    assert block.bops == block.macs * 32 * 32
    emb = p.by_name("emb")
    assert emb.macs == 0 and "2 Embedding" in emb.note
    assert p.macs == block.macs + 16 * 20 + 20 * 2
    assert not p.unknown_layers


def test_trace_restores_calls_and_is_cached():
    inputs = L.Input((8, 8, 3))
    block = ConvBN(8, name="convbn")
    x = L.GlobalAveragePooling2D()(block(L.Conv2D(4, 1)(inputs)))
    model = keras.Model(inputs, L.Dense(2)(x))
    before = block.calls
    p = tfcomp.profile(model)
    # the conv inside: 8x8 outputs ('same'), 3x3 kernel, 4 -> 8 channels
    assert p.by_name("convbn").macs == layer_macs(64, (3, 3), 4, 8)
    assert p.by_name("convbn").params == 3 * 3 * 4 * 8 + 8 + 4 * 8
    assert "Conv2D" in p.by_name("convbn").note
    assert "call" not in vars(block.parts[0])
    assert "call" not in vars(block.norms["bn"])
    traced = block.calls
    assert traced == before + 1
    assert tfcomp.profile(model).macs == p.macs
    assert block.calls == traced  # cached: not traced again


def test_shared_custom_layer_counts_every_call():
    a, b = L.Input((8, 8, 3)), L.Input((8, 8, 3))
    block = ConvBN(4, name="shared")
    y = L.Add()([block(a), block(b)])
    p = tfcomp.profile(keras.Model([a, b], y))
    assert p.by_name("shared").macs == 2 * layer_macs(64, (3, 3), 3, 4)
    assert "called 2 times" in p.by_name("shared").note


def test_failed_trace_keeps_zero_with_a_note():
    inputs = L.Input((6,))
    fragile = Fragile(name="fragile")
    model = keras.Model(inputs, L.Dense(2)(fragile(inputs)))
    fragile.armed = True
    p = tfcomp.profile(model)
    row = p.by_name("fragile")
    assert row.macs == 0
    assert "trace of its inner layers failed" in row.note
    assert "no zeros here" in row.note
    assert p.unknown_layers == ["fragile"]  # listed by summary() too
    assert p.macs == 4 * 2
    assert "call" not in vars(fragile.dense)


def test_subclassed_model_equals_functional_twin():
    sub = SubNet(name="sub")
    sub(np.zeros((2, 8, 8, 3), "float32"))
    x = L.Input((8, 8, 3))
    y = L.Conv2D(4, 3)(x)
    y = L.Flatten()(L.BatchNormalization()(y))
    y = L.Dense(3)(L.Dense(8, activation="relu")(y))
    twin = keras.Model(x, y)
    p = tfcomp.profile(sub)
    assert p.macs == tfcomp.profile(twin).macs > 0
    assert p.params == sub.count_params()
    assert [r.type for r in p.layers] == [
        "Conv2D", "BatchNormalization", "Flatten", "Dense", "Dense"]
    assert all("subclassed model 'sub'" in r.note for r in p.layers)
    # nested in a functional model: the same MACs, under its path
    i = keras.Input((8, 8, 3))
    outer = tfcomp.profile(keras.Model(i, sub(i)))
    assert outer.macs == p.macs
    assert any(r.name.startswith("sub/") and r.macs for r in outer.layers)


def test_subclassed_model_without_a_traceable_input_raises():
    two = TwoArgs(name="two")
    two(np.zeros((1, 4), "float32"), np.zeros((1, 3), "float32"))
    with pytest.raises(ValueError, match=r"keras\.Model\(inputs"):
        tfcomp.profile(two)
    # wrapped as the error says: both arguments reach it
    a, b = keras.Input((4,)), keras.Input((3,))
    p = tfcomp.profile(keras.Model([a, b], two(a, b)))
    assert p.by_name("two/proj").macs == 4 * 3


def test_subclassed_model_without_input_shape_raises():
    sub = SubNet(name="unshaped")
    sub.built = True  # built by hand: no input shape recorded
    with pytest.raises(ValueError, match="input shape is unknown"):
        tfcomp.profile(sub)


def test_custom_layer_priced_by_hardware_is_reported_skipped():
    inputs = L.Input((8, 8, 3))
    x = ConvBN(8, name="convbn")(inputs)
    model = keras.Model(inputs, L.Dense(2)(L.Flatten()(x)))
    specs, skipped = extract_specs(model, return_skipped=True)
    reasons = dict(skipped)
    assert "MACs in tfcomp.profile are not priced" in reasons["convbn"]
    assert [s.name for s in specs] == ["dense"]


def test_spectral_normalization_counts_its_layer():
    # a GAN discriminator's wrapped convs were counted as 0 MACs
    inp = keras.Input((16, 16, 3))
    h = L.SpectralNormalization(L.Conv2D(8, 3, padding="same"))(inp)
    h = L.Flatten()(h)
    out = L.SpectralNormalization(L.Dense(1))(h)
    p = tfcomp.profile(keras.Model(inp, out))
    assert p.macs == 16 * 16 * 27 * 8 + 16 * 16 * 8
