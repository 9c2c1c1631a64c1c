"""AutoSlim: a planted half-dead layer is slimmed first at ~zero loss
increase, every greedy step removes exactly one group step, targets met."""

import keras
import numpy as np
import pytest

import tfcomp
from tfcomp.pruning.autoslim import autoslim


def _planted():
    inp = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(16, 3, padding="same", name="stem")(inp)
    h = keras.layers.BatchNormalization(name="stem_bn")(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.Conv2D(16, 3, padding="same", name="mid")(h)
    h = keras.layers.BatchNormalization(name="mid_bn")(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inp, keras.layers.Dense(4, name="head")(h))
    mid, bn = model.get_layer("mid"), model.get_layer("mid_bn")
    k, b = mid.get_weights()
    k[..., 8:] = 0.0
    b[8:] = 0.0
    mid.set_weights([k, b])
    gamma, beta, mean, var = bn.get_weights()
    beta[8:] = 0.0
    bn.set_weights([gamma, beta, mean, var])
    return model


def _data(n=128, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 8, 8, 3)).astype("float32"),
            rng.integers(0, 4, n))


def test_planted_half_dead_layer_slimmed_first_one_step_each():
    model = _planted()
    res = autoslim(model, _data(), target_macs=(0.75, 0.5), step=4,
                   batches=2, batch_size=64)
    hist = res.history
    assert [h["group"] for h in hist[1:3]] == ["mid", "mid"]
    assert abs(hist[2]["loss"] - hist[0]["loss"]) < 1e-4
    for prev, cur in zip(hist, hist[1:]):
        changed = [g for g in cur["keep"]
                   if cur["keep"][g] != prev["keep"][g]]
        assert changed == [cur["group"]]
        assert prev["keep"][cur["group"]] - cur["keep"][cur["group"]] == 4
        assert cur["macs"] < prev["macs"]
    dense = tfcomp.profile(model).macs
    assert res.dense_macs == dense
    for t in (0.75, 0.5):
        arch = res.architectures[t]
        assert arch["macs"] <= t * dense
        small = res.prune(model, t)
        assert tfcomp.profile(small).macs == arch["macs"]
    setup = res.scratch(model, 0.5, base_epochs=2)
    assert setup.epochs == 2


def test_errors():
    model = _planted()
    with pytest.raises(ValueError, match="labels"):
        autoslim(model, _data()[0], target_macs=0.5)
    with pytest.raises(ValueError, match="step"):
        autoslim(model, _data(), step=1.5)
    with pytest.raises(ValueError, match="target_macs"):
        autoslim(model, _data(), target_macs=-1)
    inp = keras.Input((4,))
    with pytest.raises(ValueError, match="nothing slimmable"):
        autoslim(keras.Model(inp, keras.layers.Dense(3)(inp)),
                 (np.zeros((4, 4), "float32"), np.zeros(4, "int64")))


def test_loss_per_mac_criterion_slims_the_dead_half_first():
    model = _planted()
    res = autoslim(model, _data(), target_macs=0.5, step=4, batches=2,
                   batch_size=64, criterion="loss_per_mac")
    hist = res.history
    assert [h["group"] for h in hist[1:3]] == ["mid", "mid"]
    assert abs(hist[2]["loss"] - hist[0]["loss"]) < 1e-4
    assert res.architectures[0.5]["macs"] <= 0.5 * res.dense_macs
    with pytest.raises(ValueError, match="criterion"):
        autoslim(model, _data(), criterion="accuracy")
