"""``quantize_model`` opens the user's own layer classes into the Keras
layers their ``call`` uses (``tfcomp.graph.open_layers``), so a
residual block or a Transformer block written as a ``Layer`` subclass (as
keras.io writes them) is quantized inside and exports as a full-integer
int8 file; layers that cannot be opened faithfully stay whole, with the
reason."""

import keras
import numpy as np
import pytest
from _keras_io_layers import (
    ResidualBlock,
    ScaledDense,
    TokenAndPositionEmbedding,
    TransformerBlock,
)

from tfcomp.export import export_tflite
from tfcomp.graph.open_layers import open_layers
from tfcomp.layers import Constant
from tfcomp.quantization import (
    calibrate,
    quantization_report,
    quantize_model,
)

L = keras.layers


class TrainingBranch(L.Layer):
    """A layer whose ``call`` branches on ``training`` in Python."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.dense = L.Dense(units)

    def call(self, x, training=None):
        y = self.dense(x)
        if training:
            y = y + keras.random.normal(keras.ops.shape(y), stddev=0.1)
        return y


def _residual_model():
    keras.utils.set_random_seed(0)
    inp = L.Input((8, 8, 1))
    x = L.Conv2D(4, 3, padding="same", activation="relu", name="stem")(inp)
    x = ResidualBlock(4)(x)
    x = ResidualBlock(4, name="block2")(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(3, name="head")(x))


def _images(n=32):
    return np.random.default_rng(0).random((n, 8, 8, 1), np.float32)


def test_opened_model_computes_the_same_with_the_same_weights():
    model = _residual_model()
    opened = open_layers(model)
    assert opened.names == ["residual_block", "block2"]
    assert opened.kept == {}
    names = [layer.name for layer in opened.model.layers]
    assert "block2_conv1" in names and "residual_block_bn2" in names
    x = _images(4)
    np.testing.assert_allclose(opened.model(x), model(x), atol=1e-6)
    # the user's layers gained no nodes; a second opening names alike
    assert len(model.get_layer("block2").conv1._inbound_nodes) == 0
    again = open_layers(model)
    assert [lyr.name for lyr in again.model.layers] == names


def test_qat_quantizes_inside_and_exports_full_integer(tmp_path):
    model = _residual_model()
    x = _images()
    q = quantize_model(model)
    report = quantization_report(q)
    assert report.opened == ["residual_block", "block2"]
    assert set(report.quantized) == {
        "stem", "residual_block_conv1", "residual_block_conv2",
        "block2_conv1", "block2_conv2", "head"}
    assert len(report.folded) == 4 and not report.skipped
    calibrate(q, x)
    rep = export_tflite(q, str(tmp_path / "q.tflite"), quantization="int8",
                        calibration_data=x)
    assert rep.float_ops == [] and rep.top1_agreement >= 0.9


def test_bits_and_skip_name_the_inner_layers():
    model = _residual_model()
    q = quantize_model(model, bits={"block2_conv1": (4, 8)},
                       skip=["residual_block_conv2"])
    report = quantization_report(q)
    assert report.quantized["block2_conv1"] == (4, 8)
    assert "residual_block_conv2" not in report.quantized
    # skipping the user layer itself keeps it whole and float
    whole = quantize_model(model, skip=["block2"])
    report = quantization_report(whole)
    assert report.opened == ["residual_block"]
    assert "listed in skip" in report.skipped["block2"]


@pytest.mark.parametrize("layer, reason", [
    (ScaledDense(4), "add_weight of its own"),
    (TrainingBranch(4), "branches on 'training'"),
])
def test_layers_that_cannot_be_opened_stay_whole(layer, reason):
    inp = L.Input((6,))
    model = keras.Model(inp, L.Dense(2)(layer(inp)))
    opened = open_layers(model)
    assert opened.model is None and opened.names == []
    assert reason in opened.kept[layer.name]
    with pytest.warns(UserWarning, match=type(layer).__name__):
        q = quantize_model(model)
    assert reason in quantization_report(q).skipped[layer.name]


def test_keras_io_text_transformer_opens_and_its_positions_train(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = L.Input(shape=(12,))
    x = TokenAndPositionEmbedding(12, 50, 8)(inputs)
    x = TransformerBlock(8, 2, 8)(x)
    x = L.GlobalAveragePooling1D()(x)
    model = keras.Model(inputs, L.Dense(2)(x))
    opened = open_layers(model)
    assert opened.names == ["token_and_position_embedding",
                            "transformer_block"]
    # the position lookup on ops.arange reads a Constant layer: a node
    const = opened.model.get_layer("token_and_position_embedding_pos_emb_const")
    assert isinstance(const, Constant)
    tokens = np.random.default_rng(0).integers(1, 50, (32, 12))
    np.testing.assert_allclose(opened.model(tokens), model(tokens),
                               atol=1e-5)
    q = quantize_model(model)
    q.compile("adam", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    pos = q.get_layer("token_and_position_embedding_pos_emb")
    before = keras.ops.convert_to_numpy(pos.embeddings).copy()
    q.fit(tokens, tokens[:, 0] % 2, epochs=1, verbose=0)
    assert np.abs(keras.ops.convert_to_numpy(pos.embeddings)
                  - before).max() > 0
    q.save(tmp_path / "q.keras")
    again = keras.saving.load_model(tmp_path / "q.keras")
    np.testing.assert_allclose(again.predict(tokens, verbose=0),
                               q.predict(tokens, verbose=0), atol=1e-6)


def test_compiled_with_a_custom_loss_function():
    """Opening rebuilds the model uncompiled (Keras' clone would compile it
    from its config, which cannot find an unregistered loss function)."""
    model = _residual_model()

    def my_loss(y_true, y_pred):
        return keras.ops.mean(keras.ops.square(y_pred), axis=-1)

    model.compile("adam", my_loss)
    q = quantize_model(model)
    assert quantization_report(q).opened == ["residual_block", "block2"]
    assert q.compiled
    q.fit(_images(8), np.zeros(8), verbose=0)


def test_hardware_costs_price_the_opened_layers():
    """The hardware cost models open the classes as quantize_model does:
    a bit policy over the inner layers has a cost spec per layer."""
    from tfcomp.hardware import CostTable, extract_specs

    model = _residual_model()
    names = [s.name for s in extract_specs(model)]
    assert {"residual_block_conv1", "block2_conv2"} <= set(names)
    table = CostTable(model, "latency", "bismo")
    assert table.layers == list(quantization_report(
        quantize_model(model)).quantized)
    assert table.cost("block2_conv1", 4, 4) < table.cost("block2_conv1", 8, 8)
