"""Models with several inputs through the data adapter, the reconstruction
engine (LASSO / AMC's per-layer step, pruning sensitivity, DCP), the
quantization sensitivities, ``compress`` and the slimmable / AutoSlim
pieces: data as ``model.fit`` takes it (``[x1, x2]``, ``([x1, x2], y)``,
a dict by input name, a ``tf.data`` of those)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfcomp
from tfcomp._io import as_arrays
from tfcomp.hardware import BISMO
from tfcomp.pruning import (
    dcp_prune,
    lasso_prune,
    recalibrate_widths,
    sensitivity,
    to_slimmable,
)
from tfcomp.pruning.autoslim import autoslim
from tfcomp.quantization.sensitivity import sensitivity as quant_sensitivity
from tfcomp.tuners.amc import AMCHyperModel

L = keras.layers


def _model():
    """Image + metadata classifier (keras.io functional API guide style)."""
    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 3), name="image")
    meta = keras.Input((5,), name="meta")
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="c1")(image)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="c2")(x)
    x = L.GlobalAveragePooling2D()(x)
    m = L.Dense(8, activation="relu", name="m1")(meta)
    h = L.Concatenate()([x, m])
    h = L.Dense(12, activation="relu", name="fc")(h)
    return keras.Model([image, meta], L.Dense(4, name="logits")(h))


def _data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    xs = [rng.uniform(0, 1, (n, 8, 8, 3)).astype("float32"),
          rng.uniform(0, 1, (n, 5)).astype("float32")]
    return xs, rng.integers(0, 4, n)


def _out(model, xs):
    return keras.ops.convert_to_numpy(model(xs, training=False))


def test_as_arrays_takes_every_form_fit_takes():
    model = _model()
    xs, y = _data(20)
    forms = {
        "list": (xs, None),
        "pair": ((xs, y), y),
        "tuple inputs": ((tuple(xs), y), y),
        "dict": ({"image": xs[0], "meta": xs[1]}, None),
        "dict pair": (({"image": xs[0], "meta": xs[1]}, y), y),
        "dataset": (tf.data.Dataset.from_tensor_slices(
            ((xs[0], xs[1]), y)).batch(6), y),
    }
    for name, (data, want_y) in forms.items():
        got, got_y = as_arrays(data, model=model, name="data")
        assert isinstance(got, list) and len(got) == 2, name
        np.testing.assert_array_equal(got[0], xs[0], err_msg=name)
        np.testing.assert_array_equal(got[1], xs[1], err_msg=name)
        if want_y is None:
            assert got_y is None, name
        else:
            np.testing.assert_array_equal(got_y, want_y, err_msg=name)
    got, _ = as_arrays(xs, model=model, max_items=7)
    assert [len(a) for a in got] == [7, 7]


def test_as_arrays_names_what_is_wrong():
    model = _model()
    xs, y = _data(10)
    with pytest.raises(ValueError, match="2 inputs"):
        as_arrays(xs[0], model=model)
    with pytest.raises(ValueError, match=r"input 1 must have shape"):
        as_arrays([xs[0], xs[0]], model=model)
    with pytest.raises(ValueError, match="input names"):
        as_arrays({"image": xs[0], "other": xs[1]}, model=model)
    with pytest.raises(ValueError, match="one length"):
        as_arrays([xs[0], xs[1][:5]], model=model)
    with pytest.raises(ValueError, match="must hold labels"):
        as_arrays(xs, model=model, need_labels=True)


def test_lasso_and_amc_step_prune_both_branches():
    model = _model()
    xs, y = _data()
    res = lasso_prune(model, xs, ratio=0.5, verbose=0)
    removed = set(res.plan.removed)
    assert {"c1", "m1"} <= removed, removed
    assert tfcomp.profile(res.model).macs < tfcomp.profile(model).macs
    assert np.all(np.isfinite(_out(res.model, xs)))
    hm = AMCHyperModel(model, xs, (xs, y), budget=1.0, round_to=1,
                       max_images=16)
    values, _, _ = hm.space.rollout(lambda s: [0.5])
    small, _ = hm.prune(values)
    np.testing.assert_allclose(_out(small, xs), _out(hm._engine().work, xs),
                               rtol=1e-4, atol=1e-5)


def test_pruning_sensitivity_of_a_dead_metadata_group_is_zero():
    model = _model()
    m1 = model.get_layer("m1")
    k, b = m1.get_weights()
    k[:, :4], b[:4] = 0.0, -1.0  # 4 of 8 units always 0 after the relu
    m1.set_weights([k, b])
    fc = model.get_layer("fc")  # reads [c2 (8), m1 (8)]: rows 8..11 unused
    kf, bf = fc.get_weights()
    kf[8:12] = 0.0
    fc.set_weights([kf, bf])
    xs, y = _data()
    s = sensitivity(model, xs, ratios=(0.5,))  # output MSE after the refit
    table = dict(zip(s.groups, s.table[:, 0]))
    assert table["m1"] < 1e-9, table
    assert max(table.values()) > 1e-6, table


def test_dcp_on_two_inputs():
    model = _model()
    xs, y = _data(32)
    res = dcp_prune(model, (xs, y), 0.5, finetune_epochs=0, head_epochs=1,
                    sgd_steps=1, max_images=16, verbose=0)
    assert tfcomp.profile(res.model).macs < tfcomp.profile(model).macs
    assert np.all(np.isfinite(_out(res.model, xs)))


@pytest.mark.parametrize("method,kind", [
    ("distortion", "weights"), ("hessian", "weights"),
    ("distortion", "activations")])
def test_quantization_sensitivity_on_two_inputs(method, kind):
    xs, y = _data(32)
    s = quant_sensitivity(_model(), (xs, y), method=method, kind=kind,
                          bits=[4, 8], num_samples=32, max_probes=4)
    assert s.table.shape == (5, 2)
    assert np.all(np.isfinite(s.table))


def test_compress_on_two_inputs():
    model = _model()
    xs, _ = _data(32)
    res = tfcomp.compress(model, xs, hardware=BISMO(), budget=0.6,
                          num_samples=32, starts=1, check_gap=False)
    assert res.cost <= 0.6 + 1e-9
    small = res.model if res.model is not None else tfcomp.prune_channels(
        model, res.plan)
    q = tfcomp.quantization.quantize_model(small, bits=res.bits)
    assert np.all(np.isfinite(_out(q, xs)))


def test_slimmable_recalibration_and_autoslim_on_two_inputs():
    xs, y = _data(32)
    slim = to_slimmable(_model(), widths=(0.5, 1.0), universal=True,
                        inplace_distillation=False)
    slim.compile("adam", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    slim.fit(xs, y, epochs=1, batch_size=16, verbose=0)
    assert recalibrate_widths(slim, xs) == [0.5, 1.0]
    dense = {"image": xs[0], "meta": xs[1]}
    assert recalibrate_widths(slim, dense) == [0.5, 1.0]
    res = autoslim(slim, (xs, y), target_macs=(0.6,), batch_size=16)
    small = res.prune(_model(), 0.6)
    assert tfcomp.profile(small).macs <= 0.6 * tfcomp.profile(
        _model()).macs * 1.001
    assert np.all(np.isfinite(_out(small, xs)))
