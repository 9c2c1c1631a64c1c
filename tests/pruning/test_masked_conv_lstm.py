"""Masked ConvLSTM1D / 2D / 3D twins (and Bidirectional of them): masks on
both kernels, FPGM of filters (all 4 gate blocks), strip_pruning, .keras
round trip, on keras.io's next-frame model."""

import inspect
import warnings

import keras
import numpy as np
import pytest
from keras import layers

import tfcomp
from tfcomp.layers import (
    MaskedBidirectional,
    MaskedConvLSTM1D,
    MaskedConvLSTM2D,
    MaskedConvLSTM3D,
)
from tfcomp.pruning import (
    FPGMPruning,
    MagnitudePruning,
    apply_fpgm,
    apply_magnitude_pruning,
    strip_pruning,
)
from tfcomp.pruning.fpgm import channels_to_remove
from tfcomp.pruning.schedules import ConstantSparsity


def next_frame_convlstm():
    """keras.io "Next-frame video prediction with convolutional LSTMs", as
    tests/models/models.py builds it, with layer names (the mirrored check
    runs its source)."""
    L = keras.layers
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(None, 8, 8, 1))
    x = L.ConvLSTM2D(8, (5, 5), padding="same", return_sequences=True,
                     activation="relu", name="clstm1")(inputs)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.ConvLSTM2D(8, (3, 3), padding="same", return_sequences=True,
                     activation="relu", name="clstm2")(x)
    x = L.BatchNormalization(name="bn2")(x)
    x = L.ConvLSTM2D(8, (1, 1), padding="same", return_sequences=True,
                     activation="relu", name="clstm3")(x)
    outputs = L.Conv3D(2, (3, 3, 3), activation="softmax",
                       padding="same", name="head")(x)
    return keras.Model(inputs, outputs, name="next_frame_convlstm")


def _np(t):
    return keras.ops.convert_to_numpy(t)


def _rel(a, b):
    a, b = _np(a), _np(b)
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-12)


def _frames(n=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n, 4, 8, 8, 1)).astype("float32")
    return x, rng.integers(0, 2, (n, 4, 8, 8))


def _fit(model, x, y, cb, **kw):
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(), **kw)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[cb])


def _quietly(fn, model):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(model)
    assert not caught, [str(w.message) for w in caught]
    return out


CONV_LSTMS = [
    (MaskedConvLSTM1D, layers.ConvLSTM1D, (2, 3, 6, 2)),
    (MaskedConvLSTM2D, layers.ConvLSTM2D, (2, 3, 5, 5, 2)),
    (MaskedConvLSTM3D, layers.ConvLSTM3D, (2, 3, 4, 4, 4, 2)),
]


@pytest.mark.parametrize("cls,plain,shape", CONV_LSTMS)
def test_masks_act_like_zeroed_weights(cls, plain, shape):
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    ref = plain(5, 3, padding="same", return_sequences=True)
    twin = cls(5, 3, padding="same", return_sequences=True,
               weight_mask=True, channel_mask=True)
    ref(x), twin(x)
    assert type(twin.cell).__name__ == "_MaskedConvLSTMCell"
    for a, b in zip(twin.cell.weights, ref.cell.weights):
        a.assign(b)
    np.testing.assert_allclose(_np(twin(x)), _np(ref(x)), atol=1e-6)
    # a weight mask equals the plain layer with those weights zeroed
    rng = np.random.default_rng(1)
    masks = [(rng.random(m.shape) > 0.5).astype("float32")
             for _, m in twin.weight_masks()]
    for (var, mask), m in zip(twin.weight_masks(), masks):
        mask.assign(m)
        ref.cell.weights[[v.name for v in ref.cell.weights].index(
            var.name)].assign(_np(var) * m)
    np.testing.assert_allclose(_np(twin(x)), _np(ref(x)), atol=1e-5)
    twin.channel_mask_var.assign([1, 0, 1, 1, 0])  # filters 1, 4 output 0
    out = _np(twin(x))
    assert np.abs(out[..., [1, 4]]).max() == 0.0
    assert (np.abs(out[..., [0, 2, 3]]).reshape(-1, 3).max(axis=0) > 0).all()


def test_bidirectional_conv_lstm_one_mask_for_both_directions():
    x = np.random.default_rng(0).normal(size=(2, 3, 6, 2)).astype("float32")
    bi = MaskedBidirectional(layers.ConvLSTM1D(4, 3, padding="same"),
                             weight_mask=True, channel_mask=True)
    bi(x)
    assert bi.channel_mask_var.shape == (4,)
    assert len(bi.weight_masks()) == 4
    assert bi.get_config()["layer"]["class_name"] == "ConvLSTM1D"
    bi.channel_mask_var.assign([0, 1, 1, 0])
    assert np.abs(_np(bi(x))[..., [0, 3, 4, 7]]).max() == 0.0


def test_fpgm_filter_is_every_gate_column():
    model = _quietly(apply_fpgm, next_frame_convlstm())
    graph = tfcomp.DependencyGraph(model)
    g = graph.group("clstm2")  # 3x3 kernels, 8 inputs, 8 filters
    widths = {m.port: g.member_matrix(m)[0].shape[1] for m in g.producers}
    # gates: 4 columns of kernel (3*3*8) and recurrent kernel (3*3*8)
    assert widths == {"gates": 4 * (72 + 72), "out": 3 * 3 * 32}
    expected = channels_to_remove(g, 4, "fpgm")
    cb = FPGMPruning(ratio=0.5)
    cb.set_model(model)
    picked = cb.update_masks()["clstm2"]
    np.testing.assert_array_equal(picked, expected)
    layer = model.get_layer("clstm2")
    assert np.flatnonzero(_np(layer.channel_mask_var) == 0).tolist() == \
        picked.tolist()
    cols = [k * 8 + u for k in range(4) for u in picked]
    cell = layer.cell
    for var in (cell._raw_kernel, cell._raw_recurrent_kernel, cell._raw_bias):
        assert np.abs(_np(var)[..., cols]).max() == 0.0


def test_next_frame_fpgm_strip_and_keras_round_trip(tmp_path):
    model = next_frame_convlstm()
    x, y = _frames()
    soft = _quietly(apply_fpgm, model)
    assert type(soft.layers[1]) is MaskedConvLSTM2D
    cb = FPGMPruning(ratio=0.5)
    _fit(soft, x, y, cb)
    assert all(len(v) == 4 for v in cb.history[-1]["masked"].values())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optimizer slots restart
        small = strip_pruning(soft)
    assert [lyr.filters for lyr in small.layers
            if isinstance(lyr, layers.ConvLSTM2D)] == [4, 4, 4]
    assert all(type(lyr).__module__.startswith("keras")
               for lyr in small.layers)
    assert _rel(small(x, training=False), soft(x, training=False)) < 1e-4
    assert tfcomp.profile(small).macs == cb.history[-1]["macs"] < \
        tfcomp.profile(model).macs
    path = tmp_path / "soft.keras"
    soft.save(path)
    back = keras.saving.load_model(path)
    got = back.get_layer("clstm1")
    assert type(got) is MaskedConvLSTM2D and got.channel_mask
    for a, b in zip(soft.get_layer("clstm1").mask_variables,
                    got.mask_variables):
        np.testing.assert_array_equal(_np(a), _np(b))
    assert _rel(back(x, training=False), soft(x, training=False)) < 1e-6


def test_next_frame_magnitude_half_sparsity():
    x, y = _frames()
    sparse = _quietly(apply_magnitude_pruning, next_frame_convlstm())
    cb = MagnitudePruning(ConstantSparsity(0.5, frequency=1))
    _fit(sparse, x, y, cb)
    assert cb.sparsity() == pytest.approx(0.5, abs=0.01)
    plain = strip_pruning(sparse)
    cells = [lyr.cell for lyr in plain.layers
             if isinstance(lyr, layers.ConvLSTM2D)]
    assert len(cells) == 3
    for cell in cells:
        for k in (cell.kernel, cell.recurrent_kernel):
            assert np.mean(_np(k) == 0) == pytest.approx(0.5, abs=0.01)
    assert _rel(plain(x, training=False), sparse(x, training=False)) < 1e-5


def test_refusals_and_contract():
    from tfcomp.testing import run_layer_test

    with pytest.raises(ValueError, match=r"activation\(0\) == 0"):
        MaskedConvLSTM2D(4, 3, activation="sigmoid", channel_mask=True)
    MaskedConvLSTM2D(4, 3, activation="sigmoid", weight_mask=True)  # fine
    run_layer_test(MaskedConvLSTM1D, {
        "filters": 3, "kernel_size": 2, "padding": "same",
        "weight_mask": True, "channel_mask": True},
        input_shape=(2, 3, 5, 2), expected_output_shape=(2, 5, 3))


# run_mirrored puts _mirrored.PRELUDE (json, os, tf, keras, np) first
_MIRRORED = """
    from tfcomp.pruning import FPGMPruning, MagnitudePruning, apply_fpgm
    from tfcomp.pruning import apply_magnitude_pruning, strip_pruning
    exec(os.environ["TFCOMP_NEXT_FRAME"])
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    rng = np.random.default_rng(0)
    xs = rng.uniform(0, 1, (16, 4, 8, 8, 1)).astype("float32")
    ys = rng.integers(0, 2, (16, 4, 8, 8))
    out = {}
    for name, wrap, cb in [
            ("fpgm", apply_fpgm, FPGMPruning(ratio=0.5)),
            ("mag", apply_magnitude_pruning, MagnitudePruning(0.5))]:
        with strategy.scope():
            model = wrap(next_frame_convlstm())
            model.compile("adam", "sparse_categorical_crossentropy")
        model.fit(xs, ys, epochs=1, batch_size=8, verbose=0, callbacks=[cb])
        layer = model.get_layer("clstm2")
        small = strip_pruning(model)
        var = layer.channel_mask_var if name == "fpgm" else layer.kernel_mask
        a = keras.ops.convert_to_numpy(small(xs, training=False))
        b = keras.ops.convert_to_numpy(model(xs, training=False))
        out[name] = {
            "mirrored": type(var.value).__name__,
            "zeros": float((keras.ops.convert_to_numpy(var) == 0).mean()),
            "filters": int(small.get_layer("clstm2").filters),
            "err": float(np.abs(a - b).max() / np.abs(b).max())}
    print(json.dumps(out))
"""


@pytest.mark.slow
def test_mirrored_strategy_two_replicas():
    from _mirrored import run_mirrored

    res = run_mirrored(_MIRRORED, env={
        "TFCOMP_NEXT_FRAME": inspect.getsource(next_frame_convlstm)})
    assert res["fpgm"]["mirrored"] == res["mag"]["mirrored"] == \
        "MirroredVariable"
    assert res["fpgm"]["zeros"] == 0.5 and res["fpgm"]["filters"] == 4
    assert res["mag"]["zeros"] == pytest.approx(0.5, abs=0.01)
    assert res["mag"]["filters"] == 8
    assert res["fpgm"]["err"] < 1e-4 and res["mag"]["err"] < 1e-4
