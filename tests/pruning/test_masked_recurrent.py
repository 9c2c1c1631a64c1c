"""Masked LSTM / GRU / SimpleRNN / Bidirectional twins: magnitude pruning
of both kernels, FPGM of hidden units, strip_pruning, .keras round trip."""

import warnings

import keras
import numpy as np
import pytest
from keras import layers

import tfcomp
from tfcomp.layers import (
    MaskedBidirectional,
    MaskedGRU,
    MaskedLSTM,
    MaskedSimpleRNN,
)
from tfcomp.pruning import (
    FPGMPruning,
    MagnitudePruning,
    apply_fpgm,
    apply_magnitude_pruning,
    strip_pruning,
)
from tfcomp.pruning.schedules import ConstantSparsity

RNNS = {
    "lstm": lambda: layers.LSTM(8, name="r"),
    "gru": lambda: layers.GRU(8, name="r"),
    "simple_rnn": lambda: layers.SimpleRNN(8, name="r"),
}


def _np(t):
    return keras.ops.convert_to_numpy(t)


def _seq(rnn):
    keras.utils.set_random_seed(0)
    inp = keras.Input((7, 3))
    h = layers.Conv1D(8, 3, padding="same", name="conv")(inp)
    return keras.Model(inp, layers.Dense(3, name="head")(rnn(h)))


def _bidi():
    keras.utils.set_random_seed(0)
    inp = keras.Input((None,), dtype="int32")
    h = layers.Embedding(40, 8, name="emb")(inp)
    h = layers.Bidirectional(layers.LSTM(8), name="r")(h)
    return keras.Model(inp, layers.Dense(3, name="head")(h))


def _data(kind, n=32):
    rng = np.random.default_rng(0)
    x = rng.integers(1, 40, (n, 9)) if kind == "bidi" else \
        rng.normal(size=(n, 7, 3)).astype("float32")
    return x, rng.integers(0, 3, n)


def _build(kind):
    return _bidi() if kind == "bidi" else _seq(RNNS[kind]())


def _fit(model, x, y, cb, **kw):
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.
                  SparseCategoricalCrossentropy(from_logits=True), **kw)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[cb])


def _cells(layer):
    if isinstance(layer, layers.Bidirectional):
        return [layer.forward_layer.cell, layer.backward_layer.cell]
    return [layer.cell]


def _wrap_quietly(fn, model):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(model)
    said = " ".join(str(w.message) for w in caught)
    assert "'r'" not in said, said  # the recurrent layer is wrapped
    return out


@pytest.mark.parametrize("kind", ["lstm", "gru", "simple_rnn", "bidi"])
def test_magnitude_prunes_both_kernels(kind):
    x, y = _data(kind)
    sparse = _wrap_quietly(apply_magnitude_pruning, _build(kind))
    masked = sparse.get_layer("r")
    assert len(masked.weight_masks()) == 2 * len(_cells(masked))
    _fit(sparse, x, y, MagnitudePruning(ConstantSparsity(0.5, frequency=1)),
         run_eagerly=kind == "gru")  # graph mode and eager
    for var, mask in masked.weight_masks():  # raw variables stay 0
        m = _np(mask)
        assert 1 - m.mean() == pytest.approx(0.5, abs=0.01)
        assert np.abs(_np(var)[m == 0]).max() == 0.0
    plain = strip_pruning(sparse)
    assert type(plain.get_layer("r")) is type(_build(kind).get_layer("r"))
    for cell in _cells(plain.get_layer("r")):
        for k in (cell.kernel, cell.recurrent_kernel):
            assert np.mean(_np(k) == 0) == pytest.approx(0.5, abs=0.01)
    np.testing.assert_allclose(_np(plain(x)), _np(sparse(x)), atol=1e-6)


@pytest.mark.parametrize("kind", ["lstm", "gru", "simple_rnn", "bidi"])
def test_fpgm_masks_units_and_strip_removes_them(kind):
    x, y = _data(kind)
    model = _build(kind)
    soft = _wrap_quietly(apply_fpgm, model)
    cb = FPGMPruning(ratio=0.5)
    _fit(soft, x, y, cb)
    assert len(cb.history[-1]["masked"]["r"]) == 4  # floor(8 * 0.5)
    units = cb.history[-1]["masked"]["r"]
    layer = soft.get_layer("r")
    assert np.flatnonzero(_np(layer.channel_mask_var) == 0).tolist() == units
    gates = {"lstm": 4, "gru": 3, "simple_rnn": 1, "bidi": 4}[kind]
    cols = [g * 8 + u for g in range(gates) for u in units]
    for cell in _cells(layer):  # raw gate columns zeroed by FPGM
        assert np.abs(_np(cell._raw_kernel)[:, cols]).max() == 0.0
    small = strip_pruning(soft)
    np.testing.assert_allclose(_np(small(x)), _np(soft(x)), atol=1e-5)
    assert all(c.units == 4 for c in _cells(small.get_layer("r")))
    macs = tfcomp.profile(small).macs
    assert macs < tfcomp.profile(model).macs
    assert macs == cb.history[-1]["macs"]


def test_keras_round_trip_keeps_masks_and_outputs(tmp_path):
    x, y = _data("bidi", 8)
    for name, model in [("lstm", _seq(layers.LSTM(
            8, return_sequences=True, name="r"))), ("bidi", _bidi())]:
        xs = x if name == "bidi" else _data("lstm", 8)[0]
        model = apply_fpgm(apply_magnitude_pruning(model))
        layer = model.get_layer("r")
        layer.channel_mask_var.assign([1, 0, 1, 1, 0, 1, 1, 1])
        for _, mask in layer.weight_masks():
            m = np.random.default_rng(1).random(mask.shape) > 0.3
            mask.assign(m.astype("float32"))
        path = tmp_path / f"{name}.keras"
        model.save(path)
        back = keras.saving.load_model(path)
        got = back.get_layer("r")
        assert type(got) is type(layer) and got.weight_mask and \
            got.channel_mask
        for a, b in zip(layer.mask_variables, got.mask_variables):
            np.testing.assert_array_equal(_np(a), _np(b))
        np.testing.assert_allclose(_np(back(xs)), _np(model(xs)), atol=1e-6)


@pytest.mark.parametrize("cls,plain,kwargs", [
    (MaskedLSTM, layers.LSTM, {"implementation": 1, "dropout": 0.2}),
    (MaskedGRU, layers.GRU, {"reset_after": False}),
    (MaskedGRU, layers.GRU, {}),
    (MaskedSimpleRNN, layers.SimpleRNN, {"activation": "relu"}),
])
def test_all_ones_masks_equal_the_plain_layer(cls, plain, kwargs):
    x = _data("lstm", 4)[0]
    ref = plain(5, return_sequences=True, **kwargs)
    twin = cls(5, return_sequences=True, weight_mask=True,
               channel_mask=True, **kwargs)
    ref(x), twin(x)
    for a, b in zip(twin.cell.weights, ref.cell.weights):
        a.assign(b)
    np.testing.assert_allclose(_np(twin(x)), _np(ref(x)), atol=1e-6)
    twin.channel_mask_var.assign([1, 0, 1, 1, 0])  # units 1, 4 output 0
    out = _np(twin(x))
    assert np.abs(out[..., [1, 4]]).max() == 0.0
    assert (np.abs(out[..., [0, 2, 3]]).max(axis=(0, 1)) > 0).all()


def test_bidirectional_one_unit_mask_for_both_directions():
    x = _data("lstm", 4)[0]
    bi = MaskedBidirectional(layers.GRU(4, return_sequences=True),
                             merge_mode="concat", channel_mask=True)
    bi(x)
    assert bi.channel_mask_var.shape == (4,)
    assert bi.get_config()["layer"]["class_name"] == "GRU"
    bi.channel_mask_var.assign([0, 1, 1, 0])
    out = _np(bi(x))
    assert np.abs(out[..., [0, 3, 4, 7]]).max() == 0.0


@pytest.mark.parametrize("cls,kwargs,out", [
    (MaskedLSTM, {"units": 4}, (2, 4)),
    (MaskedGRU, {"units": 4, "return_sequences": True}, (2, 5, 4)),
    (MaskedBidirectional, {"layer": layers.SimpleRNN(4)}, (2, 8)),
])
def test_layer_contract(cls, kwargs, out):
    from tfcomp.testing import run_layer_test

    run_layer_test(cls, {**kwargs, "weight_mask": True, "channel_mask": True},
                   input_shape=(2, 5, 3), expected_output_shape=out)


def test_refusals_are_clear():
    with pytest.raises(ValueError, match=r"activation\(0\) == 0"):
        MaskedSimpleRNN(4, activation="sigmoid", channel_mask=True)
    MaskedSimpleRNN(4, activation="sigmoid", weight_mask=True)  # fine
    with pytest.raises(TypeError, match="only LSTM, GRU and SimpleRNN"):
        MaskedBidirectional(layers.RNN(layers.LSTMCell(4)))
    # apply_fpgm leaves a unit it could not zero plain, and says why
    model = _seq(layers.LSTM(8, activation="sigmoid", name="r"))
    with pytest.warns(UserWarning, match=r"'r': channel_mask needs"):
        soft = apply_fpgm(model)
    assert type(soft.get_layer("r")) is layers.LSTM
    # a Bidirectional of a custom cell stays plain with the usual warning
    inp = keras.Input((7, 3))
    h = layers.Bidirectional(layers.RNN(layers.SimpleRNNCell(4)),
                             name="r")(inp)
    model = keras.Model(inp, layers.Dense(2)(h))
    with pytest.warns(UserWarning, match="no masked twin"):
        sparse = apply_magnitude_pruning(model)
    assert type(sparse.get_layer("r")) is layers.Bidirectional


# run_mirrored puts _mirrored.PRELUDE (json, os, tf, keras, np) first
_MIRRORED = """
    from tfcomp.pruning import FPGMPruning, MagnitudePruning, apply_fpgm
    from tfcomp.pruning import apply_magnitude_pruning, strip_pruning
    keras.utils.set_random_seed(0)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(32, 7, 3)).astype("float32")
    ys = rng.integers(0, 3, 32)
    out = {}
    for name, wrap, cb in [
            ("fpgm", apply_fpgm, FPGMPruning(ratio=0.5)),
            ("mag", apply_magnitude_pruning, MagnitudePruning(0.5))]:
        with strategy.scope():
            inp = keras.Input((7, 3))
            h = keras.layers.Conv1D(8, 3, padding="same")(inp)
            h = keras.layers.LSTM(8, name="r")(h)
            model = wrap(keras.Model(inp, keras.layers.Dense(3)(h)))
            model.compile("adam", keras.losses.SparseCategoricalCrossentropy(
                from_logits=True))
        model.fit(xs, ys, epochs=1, batch_size=8, verbose=0, callbacks=[cb])
        layer = model.get_layer("r")
        small = strip_pruning(model)
        var = layer.channel_mask_var if name == "fpgm" else layer.kernel_mask
        out[name] = {
            "mirrored": type(var.value).__name__,
            "zeros": float((keras.ops.convert_to_numpy(var) == 0).mean()),
            "units": int(small.get_layer("r").cell.units),
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
    assert res["fpgm"]["zeros"] == 0.5 and res["fpgm"]["units"] == 4
    assert res["mag"]["zeros"] == pytest.approx(0.5, abs=0.01)
    assert res["mag"]["units"] == 8
    assert res["fpgm"]["err"] < 1e-5 and res["mag"]["err"] < 1e-5
