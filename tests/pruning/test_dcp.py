"""dcp_prune: discrimination-aware greedy channel selection."""

import keras
import numpy as np
import pytest

import tfcomp
from tfcomp.pruning.dcp import dcp_prune, find_stage_ends


def _informative_model(seed=0, n=512):
    """fc1 = fc2 = identity on 8 inputs: 4 loud label-free noise channels
    (std 2) and 4 quieter label-informative ones (+-0.5 + N(0, 1)); the
    classifier reads only the informative ones. Reconstruction alone
    prefers the loud channels, the classification loss the informative
    ones."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    noise = 2.0 * rng.normal(size=(n, 4))
    info = (2 * y - 1)[:, None] * 0.5 + rng.normal(size=(n, 4))
    x = np.concatenate([noise, info], 1).astype("float32")
    inp = keras.Input((8,), name="input")
    h = keras.layers.Dense(8, use_bias=False, name="fc1")(inp)
    o = keras.layers.Dense(8, use_bias=False, name="fc2")(h)
    out = keras.layers.Dense(2, name="logits")(o)
    model = keras.Model(inp, out)
    eye = np.eye(8, dtype="float32")
    model.get_layer("fc1").set_weights([eye])
    model.get_layer("fc2").set_weights([eye])
    w = np.zeros((8, 2), "float32")
    w[4:, 0], w[4:, 1] = -2.0, 2.0
    model.get_layer("logits").set_weights([w, np.zeros(2, "float32")])
    return model, x, y


_FULL_BATCH = dict(num_stages=1, finetune_epochs=0, batch_size=512,
                   grad_batches=1, eval_batches=1, verbose=0)


def _run(*args, **kwargs):
    """``(model, plan, report)`` of a dcp_prune call."""
    result = dcp_prune(*args, **kwargs)
    return (*result, result.report)


def test_label_informative_channels_chosen_and_lambda_zero_is_reconstruction():
    model, x, y = _informative_model()
    _, p0, i0 = _run(model, (x, y), {"fc1": 0.5}, lam=0.0, **_FULL_BATCH)
    _, p0b, _ = _run(model, (x, np.random.default_rng(1).permutation(y)),
                     {"fc1": 0.5}, lam=0.0, **_FULL_BATCH)
    small, p5, i5 = _run(model, (x, y), {"fc1": 0.5}, lam=5.0,
                         **_FULL_BATCH)
    # lam = 0: pure reconstruction -> the loud channels, labels irrelevant
    assert p0.kept("fc1") == [0, 1, 2, 3]
    assert p0b.kept("fc1") == p0.kept("fc1")
    np.testing.assert_allclose(i0["groups"]["fc1"]["loss_history"],
                               _run(model, (x, 1 - y), {"fc1": 0.5},
                                    lam=0.0, **_FULL_BATCH)[2]
                               ["groups"]["fc1"]["loss_history"], rtol=1e-5)
    # lam > 0: the planted label-informative channels
    assert p5.kept("fc1") == [4, 5, 6, 7]
    assert small.get_layer("fc1").units == 4
    acc = np.mean(np.argmax(keras.ops.convert_to_numpy(small(x)), 1) == y)
    acc0 = np.mean(np.argmax(keras.ops.convert_to_numpy(model(x)), 1) == y)
    assert acc >= acc0 - 0.05


def test_loss_never_increases_and_count_is_exact():
    model, x, y = _informative_model(seed=1, n=256)
    _, plan, info = _run(model, (x, y), {"fc1": 0.3, "fc2": 0.6},
                         lam=1.0, num_stages=1, finetune_epochs=0,
                         batch_size=64, sgd_steps=5, verbose=0)
    for gid, c, eta in (("fc1", 8, 0.3), ("fc2", 8, 0.6)):
        hist = np.asarray(info["groups"][gid]["loss_history"])
        assert len(hist) == c - int(np.floor(eta * c)) + 1
        assert np.all(np.diff(hist) <= 1e-6 * np.abs(hist[:-1]).max())
        assert hist[-1] < hist[0]
        assert len(plan.kept(gid)) == c - int(np.floor(eta * c))


def _tiny_cnn():
    inp = keras.Input((12, 12, 1), name="input")
    h = inp
    for i, (f, s) in enumerate(((8, 1), (8, 1), (12, 2), (12, 1))):
        h = keras.layers.Conv2D(f, 3, strides=s, padding="same",
                                use_bias=False, name=f"c{i + 1}")(h)
        h = keras.layers.BatchNormalization(name=f"bn{i + 1}")(h)
        h = keras.layers.ReLU(name=f"r{i + 1}")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    return keras.Model(inp, keras.layers.Dense(3, name="logits")(h))


@pytest.mark.slow
def test_heads_removed_and_stages():
    model = _tiny_cnn()
    assert find_stage_ends(model, 2) == ["r2"]
    assert find_stage_ends(model, 1) == []
    assert find_stage_ends(tfcomp.zoo.resnet(depth=20), 3) == [
        "s1b3_out", "s2b3_out"]
    rng = np.random.default_rng(0)
    x = rng.random((48, 12, 12, 1)).astype("float32")
    y = rng.integers(0, 3, 48)
    small, plan, info = _run(model, (x, y), {"c1": 0.5, "c3": 0.5},
                             num_stages=2, finetune_epochs=1, head_epochs=1,
                             sgd_steps=2, batch_size=24, verbose=1)
    assert info["stage_ends"] == ["r2"]
    assert info["heads"] == {"r2": "dcp_aux1"}
    assert {g: v["stage"] for g, v in info["groups"].items()} == {
        "c1": 1, "c3": 2}
    names = [layer.name for layer in small.layers]
    assert not any("dcp_aux" in n for n in names)
    assert len(names) == len(model.layers)
    assert [small.get_layer(f"c{i}").filters for i in (1, 2, 3, 4)] == \
        [4, 8, 6, 12]
    assert small(x).shape == (48, 3)
    assert tfcomp.profile(small).macs == plan.meta["macs_after"]
    for v in info["groups"].values():
        assert np.all(np.diff(v["loss_history"]) <= 1e-6)
    # the input model is untouched
    assert model.get_layer("c1").filters == 8


def test_errors():
    model, x, y = _informative_model(n=16)
    with pytest.raises(ValueError, match="labels"):
        dcp_prune(model, x, verbose=0)
    with pytest.raises(ValueError, match="empty"):
        dcp_prune(model, (x[:0], y[:0]), verbose=0)
    with pytest.raises(ValueError, match="shape"):
        dcp_prune(model, (x[:, :5], y), verbose=0)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\)"):
        dcp_prune(model, (x, y), {"fc1": 1.0}, verbose=0)
    with pytest.raises(ValueError, match="lam"):
        dcp_prune(model, (x, y), lam=-1.0, verbose=0)
    with pytest.raises(ValueError, match="class indices"):
        dcp_prune(model, (x, y + 5), verbose=0)
    with pytest.raises(ValueError, match="stage_ends"):
        dcp_prune(model, (x, y), stage_ends=["nope"], verbose=0)


def test_round_to_and_deprecated_keywords():
    model, x, y = _informative_model(n=64)
    kw = dict(num_stages=1, finetune_epochs=0, sgd_steps=1, batch_size=64,
              grad_batches=1, eval_batches=1, verbose=0)
    small, plan = dcp_prune(model, (x, y), ratio=0.7, round_to=3,
                            ignored_layers=["fc2"], **kw)
    assert len(plan.kept("fc1")) == 3 and plan.meta["round_to"] == 3
    assert small.get_layer("fc2").units == 8
    with pytest.warns(DeprecationWarning, match="data="):
        old = dcp_prune(model, data=(x, y), ratio={"fc1": 0.5}, **kw)
    assert len(old.plan.kept("fc1")) == 4
    with pytest.warns(DeprecationWarning, match="return_info"):
        assert len(dcp_prune(model, (x, y), {"fc1": 0.5}, return_info=True,
                             **kw)) == 3
