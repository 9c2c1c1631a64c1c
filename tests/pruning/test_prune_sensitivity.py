"""Tests of ``tfcomp.pruning.prune_sensitivity`` (per-group pruning
sensitivity after AMC's least-squares refit) and its saved object."""

import json

import keras
import numpy as np
import pytest

from tfcomp._io import BadInputError
from tfcomp.pruning.prune_sensitivity import PruningSensitivity, sensitivity


def _model(width=8):
    L = keras.layers
    inp = keras.Input((12, 12, 1), name="input")
    x = L.Conv2D(width, 3, padding="same", activation="relu",
                 name="conv1")(inp)
    x = L.Conv2D(width, 3, padding="same", activation="relu",
                 name="conv2")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(4, name="logits")(x)
    return keras.Model(inp, out, name="tiny")


def _data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n, 12, 12, 1)).astype("float32")
    return x, rng.integers(0, 4, n).astype("int64")


def _plant_dead(model, dead=slice(4, 8)):
    """Half of conv1's channels are dead: zero filters (and biases) and
    zero input slices in conv2."""
    lay = model.get_layer("conv1")
    k, b = lay.get_weights()
    k[..., dead] = 0.0
    b[dead] = 0.0
    lay.set_weights([k, b])
    nxt = model.get_layer("conv2")
    k, b = nxt.get_weights()
    k[:, :, dead, :] = 0.0
    nxt.set_weights([k, b])


def test_dead_channels_have_no_sensitivity_live_ones_do():
    model = _model()
    _plant_dead(model)
    x, _ = _data()
    s = sensitivity(model, x, ratios=(0.25, 0.5, 0.75))
    assert s.groups == ["conv1", "conv2"]
    assert s.counts.tolist() == [[2, 4, 6], [2, 4, 6]]
    # keep 4 of 8: L1 drops the 4 dead filters, nothing changes
    live = s.value("conv1", 0.25)               # a live channel goes
    assert live > 1e-7 and s.value("conv2", 0.25) > 1e-7
    assert s.value("conv1", 0.5) < 1e-4 * live
    assert s.value("conv1", 0.75) < 1e-4 * live
    assert max(s.meta["layer_error"]["conv1"][1:]) < 1e-3
    assert s.value("conv1", 1.0) == 0.0
    assert s.options("conv1")[-1] == (8, 0.0)
    # more pruning never hurts less on the live group
    row = s.table[1]
    assert row[0] >= row[1] >= row[2] >= 0
    assert "conv1" in s.summary() and "keep 0.5" in s.summary()


def test_loss_method_needs_labels_and_planted_group_is_free():
    model = _model()
    _plant_dead(model)
    x, y = _data()
    with pytest.raises(ValueError, match="label"):
        sensitivity(model, x, ratios=0.5, method="loss")
    s = sensitivity(model, (x, y), ratios=[0.5], method="loss")
    assert s.method == "loss"
    assert s.value("conv1", 0.5) == pytest.approx(0.0, abs=1e-6)
    assert np.all(s.table >= 0)
    assert np.isfinite(s.meta["base_loss"])


def test_save_load_round_trip(tmp_path):
    model = _model()
    x, _ = _data(24)
    s = sensitivity(model, x, ratios=(0.5,), groups=["conv2"])
    assert s.groups == ["conv2"]
    path = s.to_json(str(tmp_path / "ps.json"))
    back = PruningSensitivity.from_json(path)
    assert back.groups == s.groups and back.ratios == s.ratios
    np.testing.assert_array_equal(back.counts, s.counts)
    np.testing.assert_allclose(back.table, s.table)
    assert back.method == s.method
    assert back.meta["selector"] == "l1"
    assert [p.name for p in tmp_path.iterdir()] == ["ps.json"]


def test_clear_errors(tmp_path):
    model = _model()
    x, _ = _data(8)
    with pytest.raises(ValueError, match="method"):
        sensitivity(model, x, method="hessian")
    with pytest.raises(ValueError, match="ratios"):
        sensitivity(model, x, ratios=(0.5, 1.0))
    with pytest.raises(ValueError, match="ratios"):
        sensitivity(model, x, ratios=())
    with pytest.raises(ValueError, match="selector"):
        sensitivity(model, x, selector="taylor")
    with pytest.raises(TypeError, match="keras.Model"):
        sensitivity("model.keras", x)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "tfcomp.sensitivity"}))
    with pytest.raises(BadInputError, match="not a tfcomp pruning"):
        PruningSensitivity.from_json(str(bad))
    doc = PruningSensitivity(["a"], [8], [0.5], [[4]], [[0.1]]).to_dict()
    doc["table"] = [[0.1, 0.2]]
    with pytest.raises(BadInputError, match="shape"):
        PruningSensitivity.from_dict(doc)
    with pytest.raises(KeyError, match="ratios"):
        PruningSensitivity(["a"], [8], [0.5], [[4]], [[0.1]]).value("a", 0.3)
