"""A user's own layer classes, written as keras.io writes them: defined in
a script, never registered, often without ``get_config`` or ``**kwargs``
(keras.io "Text classification with Transformer": ``TransformerBlock``,
``TokenAndPositionEmbedding``).

Before, every verb that copies the model failed inside Keras: surgery
("Could not locate class 'TokenAndPositionEmbedding'"), ``apply_fpgm`` and
``quantize_model`` ("__init__() got an unexpected keyword argument
'trainable'"). The copies now rebuild such layers from the live class
(:func:`tfcomp.graph.copy.rebuild_layer`); the layers stay whole (graph
barriers) and float, but ``quantize_model`` opens them into the layers
they call (``tests/quantization/test_open_user_layers.py``).
"""

import keras
import numpy as np
import pytest
from _keras_io_layers import TokenAndPositionEmbedding, TransformerBlock

import tfcomp
from tfcomp.export import export_tflite
from tfcomp.graph.copy import clone_model, copy_weights, rebuild_layer
from tfcomp.pruning import apply_fpgm, make_plan, mask_channels, prune_channels
from tfcomp.quantization import calibrate, quantize_model

L = keras.layers


def text_transformer():
    keras.utils.set_random_seed(0)
    inputs = L.Input(shape=(12,))
    x = TokenAndPositionEmbedding(12, 50, 8)(inputs)
    x = TransformerBlock(8, 2, 8)(x)
    x = L.GlobalAveragePooling1D()(x)
    x = L.Dense(12, activation="relu", name="hidden")(x)
    outputs = L.Dense(2, activation="softmax", name="out")(x)
    return keras.Model(inputs, outputs)


def _tokens(n=16):
    return np.random.default_rng(0).integers(1, 50, (n, 12)).astype(
        "float32")


def test_prune_channels_copies_user_layers():
    model = text_transformer()
    x = _tokens()
    plan = make_plan(model, ratio=0.5)
    assert set(plan.removed) == {"hidden"}  # the custom blocks stay whole
    pruned = prune_channels(model, plan)
    assert [lyr.name for lyr in pruned.layers] == \
        [lyr.name for lyr in model.layers]
    assert type(pruned.layers[2]) is TransformerBlock
    np.testing.assert_allclose(pruned.predict(x, verbose=0),
                               mask_channels(model, plan).predict(
                                   x, verbose=0), atol=1e-5)
    assert pruned.get_layer("hidden").units == 6


def test_wrap_and_quantize_copy_user_layers():
    model = text_transformer()
    x = _tokens()
    with pytest.warns(UserWarning, match="TransformerBlock"):
        soft = apply_fpgm(model)
    np.testing.assert_allclose(soft.predict(x, verbose=0),
                               model.predict(x, verbose=0), atol=1e-5)
    q = quantize_model(model)
    report = tfcomp.quantization.quantization_report(q)
    assert report.opened == ["token_and_position_embedding",
                             "transformer_block"]
    assert {"transformer_block_ffn_0", "transformer_block_ffn_1",
            "token_and_position_embedding_pos_emb"} <= set(report.quantized)
    assert not report.skipped
    calibrate(q, x)
    assert np.all(np.isfinite(q.predict(x, verbose=0)))


def test_int8_export_of_qat_model_with_user_layers(tmp_path):
    model = text_transformer()
    x = _tokens()
    q = quantize_model(model)  # opens both classes: no float layer left
    calibrate(q, x)
    rep = export_tflite(q, str(tmp_path / "q.tflite"), quantization="int8",
                        calibration_data=x)
    assert rep.float_ops == [] and rep.top1_agreement >= 0.9


def test_clone_keeps_names_and_weights():
    model = text_transformer()
    twin = clone_model(model)
    assert copy_weights(model, twin) == len(model.weights)
    x = _tokens(4)
    np.testing.assert_allclose(twin(x), model(x), atol=1e-6)
    assert tfcomp.profile(twin).macs == tfcomp.profile(model).macs


class Scale(L.Layer):
    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def call(self, x):
        return x * self.factor

    def get_config(self):
        return {"factor": self.factor, "offset": 1.0}  # not an __init__ arg


def test_rebuild_layer_names_the_keys_init_does_not_take():
    layer = Scale(2.0)
    with pytest.raises(TypeError, match=r"Scale from its config: its "
                       r"__init__ takes no \['offset'\]"):
        rebuild_layer(Scale, {**layer.get_config(), "name": "s"})


def test_rebuild_layer_sets_base_arguments():
    block = TransformerBlock(8, 2, 8)
    block.trainable = False
    twin = rebuild_layer(TransformerBlock, block.get_config()
                         | {"name": "blk", "trainable": False})
    assert (twin.name, twin.trainable) == ("blk", False)
