"""MaskedEmbedding: magnitude pruning of the table, FPGM of its columns,
strip_pruning to a smaller ``output_dim``, .keras round trip, refusals."""

import warnings

import keras
import numpy as np
import pytest
from keras import layers
from scipy.spatial.distance import cdist

import tfcomp
from tfcomp.graph import DependencyGraph
from tfcomp.layers import MaskedEmbedding, masked_class_for, plain_class_of
from tfcomp.pruning import (
    FPGMPruning,
    MagnitudePruning,
    apply_fpgm,
    apply_magnitude_pruning,
    strip_pruning,
)
from tfcomp.pruning.schedules import ConstantSparsity

VOCAB, DIM = 30, 8


def _np(t):
    return keras.ops.convert_to_numpy(t)


def _ids(n=16, length=9, seed=0):
    ids = np.random.default_rng(seed).integers(1, VOCAB, (n, length))
    ids[:, -3:] = 0  # padding (mask_zero)
    return ids.astype("int32")


def _text_lstm():
    """Token ids of any length -> Embedding(mask_zero) -> LSTM -> Dense."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((None,), dtype="int32")
    h = layers.Embedding(VOCAB, DIM, mask_zero=True, name="emb")(inp)
    h = layers.LSTM(6, name="r")(h)
    return keras.Model(inp, layers.Dense(3, name="head")(h))


def _text_conv():
    """keras.io text classification: Embedding -> Conv1D -> pooling."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((None,), dtype="int32")
    h = layers.Embedding(VOCAB, DIM, name="emb")(inp)
    h = layers.Conv1D(8, 3, activation="relu", name="conv")(h)
    h = layers.GlobalMaxPooling1D()(h)
    return keras.Model(inp, layers.Dense(3, name="head")(h))


def _fit(model, cb, epochs=1):
    x, y = _ids(32), np.random.default_rng(1).integers(0, 3, 32)
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.
                  SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=epochs, batch_size=8, verbose=0, callbacks=[cb])


def _quiet(fn, model):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(model)
    said = " ".join(str(w.message) for w in caught)
    assert "'emb'" not in said, said  # the Embedding is wrapped
    return out


def test_registered_twin_equals_plain_and_gates_columns():
    plain = layers.Embedding(VOCAB, DIM, mask_zero=True)
    assert masked_class_for(plain) is MaskedEmbedding
    twin = MaskedEmbedding(VOCAB, DIM, mask_zero=True, weight_mask=True,
                           channel_mask=True)
    assert plain_class_of(twin) is layers.Embedding
    ids = _ids(4)
    ref = _np(plain(ids))
    twin.build()
    twin.embeddings.assign(plain.embeddings)
    np.testing.assert_array_equal(_np(twin(ids)), ref)
    np.testing.assert_array_equal(_np(twin.compute_mask(ids)), ids != 0)
    twin.channel_mask_var.assign([1, 0, 1, 1, 1, 0, 1, 1])
    mask = np.ones((VOCAB, DIM), "float32")
    mask[ids[0, 0], 2] = 0.0
    twin.kernel_mask.assign(mask)
    out = _np(twin(ids))
    assert np.abs(out[..., [1, 5]]).max() == 0.0
    assert out[0, 0, 2] == 0.0
    expect = ref * mask[ids] * _np(twin.channel_mask_var)
    np.testing.assert_array_equal(out, expect)
    np.testing.assert_array_equal(_np(twin.effective_kernel()),
                                  _np(plain.embeddings) * mask
                                  * _np(twin.channel_mask_var))
    twin.mask_active.assign(0.0)  # the selection kept, the gate off
    np.testing.assert_array_equal(_np(twin(ids)), ref * mask[ids])
    # inputs of any length (no input_length), float ids cast as in Keras
    sym = keras.Input((None,))
    assert tuple(twin(sym).shape) == (None, None, DIM)
    np.testing.assert_array_equal(
        _np(twin(ids.astype("float32"))), ref * mask[ids])


def test_layer_contract():
    from tfcomp.testing import run_layer_test

    ids = np.random.default_rng(0).integers(0, 10, (2, 6))
    layer = run_layer_test(
        MaskedEmbedding, dict(input_dim=10, output_dim=4, mask_zero=True,
                              weight_mask=True, channel_mask=True),
        (2, 6), (2, 6, 4), input_data=ids,
        expected_num_trainable_weights=1,
        expected_num_non_trainable_weights=4)
    assert [v.name for v in layer.mask_variables] == [
        "embeddings_mask", "pruning_step", "channel_mask", "mask_active"]


def test_fpgm_filter_is_the_column_and_strip_shrinks_output_dim():
    model = _text_lstm()
    soft = _quiet(apply_fpgm, model)
    emb = soft.get_layer("emb")
    assert type(emb) is MaskedEmbedding and emb.channel_mask
    group = DependencyGraph(soft).group("emb")
    table = _np(emb.embeddings)
    # the producer's filter of output channel j is embeddings[:, j]
    np.testing.assert_array_equal(group.weight_matrix(), table.T)
    cb = FPGMPruning(ratio=0.5)
    cb.set_model(soft)
    chosen = cb.update_masks()["emb"]
    scores = cdist(table.T.astype("float64"),
                   table.T.astype("float64")).sum(axis=1)
    assert chosen.tolist() == sorted(np.argsort(scores, kind="stable")[:4])
    _fit(soft, cb)
    cols = cb.history[-1]["masked"]["emb"]
    assert len(cols) == 4
    assert np.flatnonzero(_np(emb.channel_mask_var) == 0).tolist() == cols
    assert np.abs(_np(emb.embeddings)[:, cols]).max() == 0.0  # zeroed
    small = strip_pruning(soft)
    got = small.get_layer("emb")
    assert type(got) is layers.Embedding and got.output_dim == 4
    assert got.mask_zero
    for length in (9, 4):  # None-length input
        x = _ids(8, length)
        np.testing.assert_allclose(_np(small(x)), _np(soft(x)), atol=1e-5)
    assert tfcomp.profile(small).macs == cb.history[-1]["macs"] < \
        tfcomp.profile(model).macs


def test_magnitude_prunes_the_table_and_keeps_zeros():
    model = _text_conv()
    sparse = _quiet(apply_magnitude_pruning, model)
    emb = sparse.get_layer("emb")
    assert [m.name for _, m in emb.weight_masks()] == ["embeddings_mask"]
    _fit(sparse, MagnitudePruning(ConstantSparsity(0.5, frequency=1)), 2)
    mask = _np(emb.kernel_mask)
    assert 1 - mask.mean() == pytest.approx(0.5, abs=0.01)
    assert np.abs(_np(emb.embeddings)[mask == 0]).max() == 0.0  # Adam too
    plain = strip_pruning(sparse)
    table = _np(plain.get_layer("emb").embeddings)
    assert type(plain.get_layer("emb")) is layers.Embedding
    np.testing.assert_array_equal(table == 0, mask == 0)
    x = _ids(8)
    np.testing.assert_allclose(_np(plain(x)), _np(sparse(x)), atol=1e-6)


def test_keras_round_trip_keeps_masks_and_outputs(tmp_path):
    model = apply_fpgm(apply_magnitude_pruning(_text_lstm()))
    emb = model.get_layer("emb")
    emb.channel_mask_var.assign([1, 0, 1, 1, 0, 1, 1, 1])
    m = np.random.default_rng(1).random((VOCAB, DIM)) > 0.3
    emb.kernel_mask.assign(m.astype("float32"))
    path = tmp_path / "emb.keras"
    model.save(path)
    back = keras.saving.load_model(path)  # known after `import tfcomp`
    got = back.get_layer("emb")
    assert type(got) is MaskedEmbedding and got.weight_mask and \
        got.channel_mask and got.mask_zero
    for a, b in zip(emb.mask_variables, got.mask_variables):
        np.testing.assert_array_equal(_np(a), _np(b))
    x = _ids(8)
    np.testing.assert_allclose(_np(back(x)), _np(model(x)), atol=1e-6)
    small = strip_pruning(back)
    assert small.get_layer("emb").output_dim == 6
    np.testing.assert_allclose(_np(small(x)), _np(model(x)), atol=1e-5)


def test_lora_and_quantized_embeddings_stay_plain_with_a_reason():
    with pytest.raises(ValueError, match="LoRA"):
        MaskedEmbedding(10, 4, lora_rank=2)
    twin = MaskedEmbedding(10, 4, weight_mask=True)
    twin.build()
    with pytest.raises(ValueError, match="LoRA"):
        twin.enable_lora(2)
    with pytest.raises(NotImplementedError, match="strip the pruning"):
        twin.quantize("int8")
    table = np.arange(40, dtype="float32").reshape(10, 4)
    preset = MaskedEmbedding(10, 4, weights=[table], channel_mask=True)
    np.testing.assert_array_equal(_np(preset.embeddings), table)
    for kind in ("lora", "int8"):
        model = _text_conv()
        emb = model.get_layer("emb")
        if kind == "lora":
            emb.enable_lora(2)
            why = "LoRA enabled"
        else:
            emb.quantize("int8")
            why = "quantization_mode='int8'"
        for wrap in (apply_fpgm, apply_magnitude_pruning):
            with pytest.warns(UserWarning, match=f"'emb' \\(Embedding: .*"
                                                 f"{why}"):
                out = wrap(model)
            assert type(out.get_layer("emb")) is layers.Embedding
            assert type(out.get_layer("conv")).__name__ == "MaskedConv1D"


# run_mirrored puts _mirrored.PRELUDE (json, os, tf, keras, np) first
_MIRRORED = """
    from tfcomp.pruning import FPGMPruning, MagnitudePruning, apply_fpgm
    from tfcomp.pruning import apply_magnitude_pruning, strip_pruning
    keras.utils.set_random_seed(0)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    rng = np.random.default_rng(0)
    xs = rng.integers(0, 30, (32, 9)).astype("int32")
    ys = rng.integers(0, 3, 32)
    out = {}
    for name, wrap, cb in [
            ("fpgm", apply_fpgm, FPGMPruning(ratio=0.5)),
            ("mag", apply_magnitude_pruning, MagnitudePruning(0.5))]:
        with strategy.scope():
            inp = keras.Input((None,), dtype="int32")
            h = keras.layers.Embedding(30, 8, mask_zero=True, name="e")(inp)
            h = keras.layers.GRU(6)(h)
            model = wrap(keras.Model(inp, keras.layers.Dense(3)(h)))
            model.compile("adam", keras.losses.SparseCategoricalCrossentropy(
                from_logits=True))
        model.fit(xs, ys, epochs=1, batch_size=8, verbose=0, callbacks=[cb])
        layer = model.get_layer("e")
        small = strip_pruning(model)
        var = layer.channel_mask_var if name == "fpgm" else layer.kernel_mask
        out[name] = {
            "mirrored": type(var.value).__name__,
            "zeros": float((keras.ops.convert_to_numpy(var) == 0).mean()),
            "dim": int(small.get_layer("e").output_dim),
            "err": float(np.abs(keras.ops.convert_to_numpy(small(xs))
                                - keras.ops.convert_to_numpy(model(xs))
                                ).max())}
    print(json.dumps(out))
"""


@pytest.mark.slow
def test_mirrored_strategy_two_replicas():
    from _mirrored import run_mirrored

    res = run_mirrored(_MIRRORED)
    assert res["fpgm"]["mirrored"] == res["mag"]["mirrored"] == \
        "MirroredVariable"
    assert res["fpgm"]["zeros"] == 0.5 and res["fpgm"]["dim"] == 4
    assert res["mag"]["zeros"] == pytest.approx(0.5, abs=0.01)
    assert res["mag"]["dim"] == 8
    assert res["fpgm"]["err"] < 1e-5 and res["mag"]["err"] < 1e-5
