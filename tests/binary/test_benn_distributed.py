"""Binary layers and BENN under tf.distribute.MirroredStrategy (two logical
CPU devices, in a subprocess: same steps as on one device), BENN resumed
from its per-member ``checkpoint`` and a binary member resumed from a
``.keras`` ModelCheckpoint."""

import keras
import numpy as np
import pytest
from _binary_models import binary_member, xy
from _mirrored import run_mirrored

from tfcomp.binary import binary_net

# run_mirrored puts _mirrored.PRELUDE (json, os, tf, keras, np) first
_MIRRORED = """
    from tfcomp.binary import BENN, binary_net
    from tfcomp.layers import BinaryConv2D, BinaryDense

    def net():
        # no BatchNormalization: its batch statistics are per replica under
        # MirroredStrategy, so only a BN-free net matches one device exactly
        inp = keras.Input((8, 8, 1))
        h = BinaryConv2D(4, 3, padding="same", use_bias=False)(inp)
        h = keras.layers.MaxPooling2D(2)(h)
        h = keras.layers.Flatten()(h)
        out = BinaryDense(4, binary_activations=True, use_bias=False)(h)
        m = keras.Model(inp, out)
        m.compile(keras.optimizers.SGD(0.05),
                  keras.losses.SparseCategoricalCrossentropy(True),
                  jit_compile=False)
        return m

    keras.utils.set_random_seed(0)
    w0 = net().get_weights()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 8, 8, 1)).astype("float32")
    y = (x[:, :4].mean(axis=(1, 2, 3)) > 0).astype(int) + \\
        2 * (x[:, :, :4].mean(axis=(1, 2, 3)) > 0).astype(int)

    def plain(strategy):
        with strategy.scope():
            m = net()
            m.set_weights(w0)
        h = m.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0)
        return m, h.history["loss"]

    def benn(strategy, mode, build):
        with strategy.scope():
            b = BENN(build, members=2, mode=mode, seed=1)
            b.fit(x, y, epochs=2, batch_size=16, shuffle=False)
            p = b.predict(x)
        return b, p

    def diff(a, b):
        return max(float(np.abs(u - v).max()) for u, v in zip(a, b))

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    one = tf.distribute.get_strategy()
    res = {"replicas": mirrored.num_replicas_in_sync}
    mm, lm = plain(mirrored)
    m1, l1 = plain(one)
    res["plain"] = {
        "mirrored": sorted({type(v.value).__name__ for v in mm.weights}),
        "max_diff": diff(mm.get_weights(), m1.get_weights()),
        "loss_diff": float(np.abs(np.array(lm) - np.array(l1)).max()),
        "moved": diff(mm.get_weights(), w0),
        "finite": bool(np.isfinite(lm).all())}
    for mode in ("bagging", "boosting"):
        bm, pm = benn(mirrored, mode, net)
        b1, p1 = benn(one, mode, net)
        res[mode] = {
            "mirrored": sorted({type(v.value).__name__
                                for m in bm.members_ for v in m.weights}),
            "max_diff": max(diff(a.get_weights(), b.get_weights())
                            for a, b in zip(bm.members_, b1.members_)),
            "pred_diff": float(np.abs(pm - p1).max()),
            "alpha_diff": float(np.abs(np.array(bm.member_weights_)
                                       - np.array(b1.member_weights_)).max()),
            "finite": bool(np.isfinite(pm).all())}
    # binary_net (with BatchNormalization) trains under the strategy too
    bn, pn = benn(mirrored, "boosting",
                  lambda: binary_net((8, 8, 1), 4, width=4))
    res["binary_net"] = {
        "mirrored": sorted({type(v.value).__name__
                            for m in bn.members_ for v in m.weights}),
        "finite": bool(np.isfinite(pn).all()),
        "alphas": [float(a) for a in bn.member_weights_]}
    print(json.dumps(res))
"""


@pytest.fixture(scope="module")
def mirrored_result():
    return run_mirrored(_MIRRORED, timeout=600)


@pytest.mark.slow
def test_binary_layers_mirrored_match_one_device(mirrored_result):
    res = mirrored_result
    assert res["replicas"] == 2
    plain = res["plain"]
    assert plain["mirrored"] == ["MirroredVariable"]
    assert plain["moved"] > 1e-3 and plain["finite"]
    assert plain["max_diff"] < 1e-5      # same steps as on one device
    assert plain["loss_diff"] < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["bagging", "boosting"])
def test_benn_fit_inside_strategy_scope(mirrored_result, mode):
    """``BENN.fit`` called inside ``strategy.scope()`` builds its members
    there: mirrored variables, the same members, votes and predictions as on
    one device."""
    res = mirrored_result[mode]
    assert res["mirrored"] == ["MirroredVariable"]
    assert res["max_diff"] < 1e-5
    assert res["alpha_diff"] < 1e-5 and res["pred_diff"] < 1e-5
    assert res["finite"]


@pytest.mark.slow
def test_binary_net_with_batchnorm_trains_mirrored(mirrored_result):
    res = mirrored_result["binary_net"]
    assert "MirroredVariable" in res["mirrored"]
    assert res["finite"] and len(res["alphas"]) == 2


def test_member_fit_resumes_from_keras_checkpoint(tmp_path):
    """A binary member (BENN's default compile: Adam, BatchNormalization)
    fitted 1 epoch, checkpointed to ``.keras`` by ModelCheckpoint, reloaded
    and fitted 2 more equals 3 uninterrupted epochs."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 4, 48)

    def build():
        keras.utils.set_random_seed(5)
        return binary_member()

    full = build()
    full.fit(x, y, epochs=3, batch_size=16, shuffle=False, verbose=0)
    part = build()
    ck = str(tmp_path / "member_{epoch}.keras")
    part.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0,
             callbacks=[keras.callbacks.ModelCheckpoint(ck)])
    resumed = keras.saving.load_model(str(tmp_path / "member_1.keras"))
    assert int(resumed.optimizer.iterations) == 3
    resumed.fit(x, y, epochs=3, initial_epoch=1, batch_size=16,
                shuffle=False, verbose=0)
    moved = max(float(np.abs(a - b).max()) for a, b in
                zip(full.get_weights(), part.get_weights()))
    assert moved > 1e-4          # the last two epochs changed the weights
    for a, b in zip(full.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("mode,sampling", [
    pytest.param("bagging", "resample", marks=pytest.mark.slow),
    ("boosting", "resample"),        # ~10 s: the path with the most state
    pytest.param("boosting", "weights", marks=pytest.mark.slow)])
def test_benn_resumes_from_checkpoint_after_member_1(tmp_path, mode,
                                                     sampling):
    """Training stopped after member 1 of 3 (its ``checkpoint`` file holds
    one member) and fitted again with the same arguments equals an
    uninterrupted run: members, votes, draws, sample weights."""
    from tfcomp.binary import BENN

    x, y = xy(48)

    def benn(members):
        return BENN(binary_member, members=members, mode=mode, seed=3,
                    sampling=sampling)

    full = benn(3).fit(x, y, epochs=2, batch_size=16)
    ck = str(tmp_path / "benn.keras")
    first = benn(1).fit(x, y, epochs=2, batch_size=16, checkpoint=ck)
    assert len(BENN.load(ck).members_) == 1
    resumed = benn(3).fit(x, y, epochs=2, batch_size=16, checkpoint=ck)
    assert len(BENN.load(ck).members_) == 3
    for a, b in zip(first.members_[0].get_weights(),
                    resumed.members_[0].get_weights()):
        np.testing.assert_array_equal(a, b)     # member 0 reused, not refit
    for ma, mb in zip(full.members_, resumed.members_):
        for a, b in zip(ma.get_weights(), mb.get_weights()):
            np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(full.member_weights_, resumed.member_weights_,
                               atol=1e-6)
    for a, b in zip(full.samples_, resumed.samples_):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(full.sample_weights_, resumed.sample_weights_):
        np.testing.assert_allclose(a, b, atol=1e-12)
    np.testing.assert_allclose(full.predict(x), resumed.predict(x), atol=1e-5)


def test_benn_checkpoint_of_another_mode_or_format_is_refused(tmp_path):
    from tfcomp.binary import BENN

    x, y = xy(16)
    ck = str(tmp_path / "benn.keras")
    BENN(lambda: binary_net((8, 8, 1), 4, width=2), members=1,
         mode="bagging").fit(x, y, checkpoint=ck)
    with pytest.raises(ValueError, match="checkpoint="):
        BENN(lambda: binary_net((8, 8, 1), 4, width=2), members=2,
             mode="boosting").fit(x, y, checkpoint=ck)
    with pytest.raises(ValueError, match="checkpoint must"):
        BENN(lambda: binary_net((8, 8, 1), 4, width=2), members=1).fit(
            x, y, checkpoint=str(tmp_path / "benn.h5"))
