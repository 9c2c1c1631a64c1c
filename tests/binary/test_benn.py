"""BENN: bootstrap samples, SAMME weights (with shrinkage), weighted
resampling, warm start, the vote equals a hand vote, save/load, BN folding,
1-bit member export, TFLite, errors."""

import keras
import numpy as np
import pytest
from _binary_models import binary_member, xy

from tfcomp.binary import (
    BENN,
    EnsembleVote,
    binary_net,
    fold_binary_batchnorm,
    samme_update,
)
from tfcomp.layers.binary import BinaryDense


def _build():
    return binary_member(compiled=False)     # BENN compiles it


def _tiny(lr=1e-2):
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Flatten()(inp)
    out = BinaryDense(4, name="bd")(h)
    m = keras.Model(inp, out)
    m.compile(keras.optimizers.SGD(0.0) if lr == 0 else
              keras.optimizers.Adam(lr),
              keras.losses.SparseCategoricalCrossentropy(True),
              jit_compile=False)
    return m


@pytest.fixture(scope="module")
def boosted():
    x, y = xy()
    return x, y, BENN(_tiny, members=3, mode="boosting", vote="hard").fit(
        x, y, epochs=2, batch_size=16)


@pytest.fixture(scope="module")
def bagged():
    x, y = xy()
    return x, y, BENN(_tiny, members=3, mode="bagging", vote="soft",
                      seed=1).fit(x, y)


def _hand_vote(outs, weights, vote):
    acc = 0
    for w, o in zip(weights, outs):
        if vote == "hard":
            part = np.eye(o.shape[-1])[o.argmax(-1)]
        else:
            e = np.exp(o - o.max(-1, keepdims=True))
            part = e / e.sum(-1, keepdims=True)
        acc = acc + w * part
    return acc / sum(weights)


def test_bagging_draws_bootstrap_samples(bagged):
    x, y, benn = bagged
    assert len(benn.samples_) == 3 and benn.member_weights_ == [1.0] * 3
    for idx in benn.samples_:
        assert idx.shape == (64,) and idx.min() >= 0 and idx.max() < 64
        assert len(np.unique(idx)) < 64          # drawn with replacement
    assert not np.array_equal(benn.samples_[0], benn.samples_[1])
    again = BENN(_tiny, members=1, mode="bagging", seed=1).fit(x, y)
    np.testing.assert_array_equal(again.samples_[0], benn.samples_[0])


def test_boosting_weights_follow_samme(boosted):
    x, y, benn = boosted
    assert benn.learning_rate == 0.2 and benn.sampling == "resample"
    w = np.full(64, 1 / 64)
    for k, m in enumerate(benn.members_):
        np.testing.assert_allclose(benn.sample_weights_[k], w)
        wrong = m.predict(x, verbose=0).argmax(-1) != y
        err = (w * wrong).sum() / w.sum()
        assert benn.errors_[k] == pytest.approx(err)
        alpha = 0.2 * (np.log((1 - err) / err) + np.log(3)) \
            if err < 0.75 else 0.0
        assert benn.member_weights_[k] == pytest.approx(alpha)
        if alpha:
            w = w * np.exp(alpha * wrong)
            w = w / w.sum()
    err, alpha, new = samme_update(np.full(4, .25), np.array([1, 0, 0, 0],
                                                             bool), 3)
    assert err == .25 and alpha == pytest.approx(np.log(3) + np.log(2))
    np.testing.assert_allclose(new, np.array([6, 1, 1, 1]) / 9)
    _, half, new = samme_update(np.full(4, .25), np.array([1, 0, 0, 0],
                                                          bool), 3, 0.5)
    assert half == pytest.approx(alpha / 2)
    np.testing.assert_allclose(new, np.array([6 ** .5, 1, 1, 1])
                               / (6 ** .5 + 3))


def test_boosting_resamples_by_weight(boosted):
    _, _, benn = boosted
    rng = np.random.default_rng(0)           # the BENN's seed
    for k in range(3):                       # one row of n draws per epoch
        want = rng.choice(64, (2, 64), p=benn.sample_weights_[k])
        np.testing.assert_array_equal(benn.samples_[k], want)


def test_warm_start_copies_previous_member():
    x, y = xy()
    still = BENN(lambda: _tiny(0), members=2, mode="boosting").fit(x, y)
    a, b = (m.get_weights() for m in still.members_)
    assert still.warm_start and all(np.array_equal(u, v) for u, v in zip(a, b))
    cold = BENN(lambda: _tiny(0), members=2, mode="boosting",
                warm_start=False, sampling="weights").fit(x, y)
    a, b = (m.get_weights() for m in cold.members_)
    assert not all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not BENN(_tiny, mode="bagging").warm_start


@pytest.mark.parametrize("vote", ["hard", "soft"])
def test_vote_equals_hand_vote(boosted, vote):
    x, y, benn = boosted
    outs = [m.predict(x, verbose=0) for m in benn.members_]
    want = _hand_vote(outs, benn.member_weights_, vote)
    got = benn.ensemble(vote).predict(x, verbose=0)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert (got.argmax(-1) == want.argmax(-1)).all()


def test_save_load(tmp_path, bagged):
    x, y, benn = bagged
    path = str(tmp_path / "benn.keras")
    benn.save(path)
    back = BENN.load(path)
    assert back.vote == "soft" and back.mode == "bagging"
    assert len(back.members_) == 3
    np.testing.assert_allclose(back.predict(x), benn.predict(x), atol=1e-6)
    # the ensemble is compiled: evaluate reports the vote's accuracy
    _, acc = back.model.evaluate(x, y, verbose=0)
    assert acc == pytest.approx(np.mean(benn.predict(x).argmax(-1) == y))


def test_fold_batchnorm_equals_inference():
    x, y = xy()
    m = _build()
    m.compile("adam", keras.losses.SparseCategoricalCrossentropy(True))
    m.fit(x, y, epochs=2, verbose=0)
    folded = fold_binary_batchnorm(m)
    assert not any(isinstance(la, keras.layers.BatchNormalization)
                   for la in folded.layers)
    np.testing.assert_allclose(folded.predict(x, verbose=0),
                               m.predict(x, verbose=0), atol=1e-4)


@pytest.mark.slow
def test_member_bismo_descriptor_and_tflite(tmp_path):
    from tfcomp.export.bitserial import load_descriptor

    x, y = xy()
    benn = BENN(_build, members=2, mode="bagging").fit(x, y, epochs=2)
    reps = benn.export_bitserial(str(tmp_path / "bismo"), x[:32],
                                 verify_x=x[:32])
    assert len(reps) == 2
    for r in reps:
        # bit for bit with the integer reference; Keras agreement is
        # approximate here (real-valued first-layer outputs within half an
        # 8-bit step of 0 can flip the next sign; tests/export/bitserial/
        # test_binary_export.py checks the exact all-binary case)
        assert r.simulator_exact is True and r.top1_agreement >= 0.75
        desc, _ = load_descriptor(r.path)
        gem = {la["name"]: la for la in desc["layers"] if la.get("weights")}
        assert set(gem) == {"bconv1", "bconv2", "bdense"}
    # int8 weights (exact +-alpha), float activations: agrees
    rep = benn.export_tflite(str(tmp_path / "benn.tflite"), x[:32],
                             verify_data=x[:32])
    assert (tmp_path / "benn.tflite").exists()
    assert rep.top1_agreement >= 0.9


def test_errors():
    with pytest.raises(ValueError, match="members"):
        BENN(_build, members=0)
    with pytest.raises(ValueError, match="mode"):
        BENN(_build, mode="stacking")
    with pytest.raises(ValueError, match="vote"):
        BENN(_build, vote="median")
    with pytest.raises(TypeError, match="build_fn"):
        BENN("net")
    with pytest.raises(ValueError, match="fit first"):
        BENN(_build).ensemble()
    with pytest.raises(ValueError, match="weights"):
        EnsembleVote([0.0, 0.0])
    for bad in (0, 1.5, True, "0.2"):
        with pytest.raises(ValueError, match="learning_rate"):
            BENN(_build, learning_rate=bad)
    with pytest.raises(ValueError, match="sampling"):
        BENN(_build, sampling="bootstrap")
    with pytest.raises(TypeError, match="warm_start"):
        BENN(_build, warm_start="yes")

    def one_unit():  # a sigmoid binary classifier: a vote of one unit is 1
        inp = keras.Input((8, 8, 1))
        return keras.Model(inp, keras.layers.Dense(1, activation="sigmoid")(
            keras.layers.Flatten()(inp)))
    with pytest.raises(ValueError, match="1 output unit.*2-unit head"):
        BENN(one_unit, members=2).fit(*xy(8))
    x, y = xy(8)
    with pytest.raises(ValueError, match="sample_weight"):
        BENN(_build).fit(x, y, sample_weight=np.ones(8))
    with pytest.raises(ValueError, match="epochs"):
        BENN(_build).fit(x, y, epochs=0)
    widths = iter([4, 8])
    with pytest.raises(ValueError, match="same architecture"):
        BENN(lambda: binary_net((8, 8, 1), 4, width=next(widths)),
             members=2, mode="boosting").fit(x, y)
