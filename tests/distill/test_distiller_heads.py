"""Distiller on heads that are not multi-class logits: one-unit regression,
binary sigmoid / logit and multi-label heads, multi-unit regression (boxes,
an autoencoder's reconstruction): the losses by hand, training, the kinds
inferred from compiled losses and activations, explicit kinds, errors and
the .keras round trip."""

import keras
import numpy as np
import pytest

from tfcomp.distill import Distiller

L = keras.layers


def _np(t):
    return keras.ops.convert_to_numpy(t).astype(np.float64)


def _sig(z):
    return 1.0 / (1.0 + np.exp(-z))


def _bce(p, q):
    """Per element BCE of targets p given probabilities q."""
    return -(p * np.log(q) + (1 - p) * np.log(1 - q))


def _head(units=1, activation=None, seed=None, name=None):
    inp = keras.Input((6,))
    h = L.Dense(8, activation="relu")(inp)
    return keras.Model(inp, L.Dense(units, activation=activation)(h),
                       name=name)


def _x(n=16, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 6)).astype("float32")


def test_one_unit_regression_head_by_hand():
    keras.utils.set_random_seed(0)
    s, t = _head(), _head()
    x = _x()
    y = np.random.default_rng(1).normal(size=16).astype("float32")
    sw = np.linspace(0.5, 1.5, 16).astype("float32")
    kd = Distiller(s, t, alpha=0.3, temperature=4.0)
    assert kd.kinds == "regression"           # one unit, no sigmoid
    zs, zt = _np(s(x))[:, 0], _np(t(x))[:, 0]
    want = 0.7 * ((zs - y) ** 2).mean() + 0.3 * ((zs - zt) ** 2).mean()
    assert float(kd.compute_loss(x, y, kd(x))) == pytest.approx(want,
                                                                rel=1e-5)
    assert want > 0.0
    # (N, 1) targets alike; sample weights; no temperature in the loss
    weighted = (0.7 * sw * (zs - y) ** 2 + 0.3 * sw * (zs - zt) ** 2).mean()
    hot = Distiller(s, t, alpha=0.3, temperature=1.0)
    assert float(hot.compute_loss(x, y[:, None], kd(x), sw)) == \
        pytest.approx(weighted, rel=1e-5)


def test_binary_sigmoid_and_multi_label_heads_by_hand():
    keras.utils.set_random_seed(1)
    x = _x()
    rng = np.random.default_rng(2)
    for units in (1, 3):
        s, t = _head(units, "sigmoid"), _head(units, "sigmoid")
        y = rng.integers(0, 2, (16, units)).astype("float32")
        kd = Distiller(s, t, alpha=0.4, temperature=2.0)
        assert kd.kinds == "binary"           # a sigmoid output
        ps, pt = _np(s(x)), _np(t(x))
        zs, zt = np.log(ps / (1 - ps)), np.log(pt / (1 - pt))
        hard = _bce(y, ps).mean(-1).mean()
        soft = 4 * _bce(_sig(zt / 2), _sig(zs / 2)).mean(-1).mean()
        want = 0.6 * hard + 0.4 * soft
        labels = y[:, 0] if units == 1 else y     # (N,) for one unit
        assert float(kd.compute_loss(x, labels, kd(x))) == pytest.approx(
            want, rel=1e-4)


def test_binary_logit_head_by_hand_equals_its_sigmoid_twin():
    keras.utils.set_random_seed(2)
    s, t = _head(), _head()
    x = _x()
    y = (np.arange(16) % 2).astype("float32")
    kd = Distiller(s, t, alpha=0.5, temperature=3.0, kinds="binary")
    assert kd.kinds == "binary"
    zs, zt = _np(s(x))[:, 0], _np(t(x))[:, 0]
    want = 0.5 * _bce(y, _sig(zs)).mean() + \
        0.5 * 9 * _bce(_sig(zt / 3), _sig(zs / 3)).mean()
    got = float(kd.compute_loss(x, y, kd(x)))
    assert got == pytest.approx(want, rel=1e-5)
    # the same nets ending in a sigmoid, read as probabilities
    ss, ts = _head(1, "sigmoid"), _head(1, "sigmoid")
    ss.set_weights(s.get_weights())
    ts.set_weights(t.get_weights())
    twin = Distiller(ss, ts, alpha=0.5, temperature=3.0)
    assert float(twin.compute_loss(x, y, twin(x))) == pytest.approx(
        got, rel=1e-4)
    # a logit student of a sigmoid teacher
    mixed = Distiller(s, ts, alpha=0.5, temperature=3.0, kinds="binary")
    assert float(mixed.compute_loss(x, y, mixed(x))) == pytest.approx(
        got, rel=1e-4)


def _autoencoder():
    inp = keras.Input((5, 3))
    h = L.LSTM(4, return_sequences=True)(inp)
    return keras.Model(inp, L.TimeDistributed(L.Dense(4))(h))


def test_multi_unit_regression_heads_by_hand():
    """An LSTM autoencoder's TimeDistributed(Dense(4)) reconstruction
    (student compiled with MSE), and a class + box model with loss weights
    and sample weights."""
    keras.utils.set_random_seed(3)
    rng = np.random.default_rng(3)
    s, t = _autoencoder(), _autoencoder()
    s.compile("adam", "mse")
    x = rng.normal(size=(8, 5, 3)).astype("float32")
    y = rng.normal(size=(8, 5, 4)).astype("float32")
    kd = Distiller(s, t, alpha=0.25, temperature=5.0)
    assert kd.kinds == "regression"
    zs, zt = _np(s(x)), _np(t(x))
    want = 0.75 * ((zs - y) ** 2).mean() + 0.25 * ((zs - zt) ** 2).mean()
    assert float(kd.compute_loss(x, y, kd(x))) == pytest.approx(want,
                                                                rel=1e-5)
    # several outputs: a class head and a box head, weighted
    inp = keras.Input((6,))

    def two():
        h = L.Dense(8, activation="relu")(inp)
        return keras.Model(inp, {"cls": L.Dense(3)(h), "box": L.Dense(4)(h)})

    s2, t2 = two(), two()
    xs = _x()
    yc, yb = rng.integers(0, 3, 16), rng.normal(size=(16, 4))
    sw = np.linspace(0.0, 2.0, 16).astype("float32")
    kd2 = Distiller(s2, t2, alpha=0.5, temperature=2.0,
                    loss_weights={"box": 0.5}, kinds={"box": "regression"})
    assert kd2.kinds == ["regression", "classification"]   # box, cls
    o_s, o_t = s2(xs), t2(xs)
    bs, bt = _np(o_s["box"]), _np(o_t["box"])
    cs, ct = _np(o_s["cls"]), _np(o_t["cls"])

    def lsm(z):
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    ce = -lsm(cs)[np.arange(16), yc]
    kl = 4 * (np.exp(lsm(ct / 2)) * (lsm(ct / 2) - lsm(cs / 2))).sum(-1)
    box = 0.5 * ((bs - yb) ** 2).mean(-1) + 0.5 * ((bs - bt) ** 2).mean(-1)
    want2 = (sw * (0.5 * ce + 0.5 * kl)).mean() + 0.5 * (sw * box).mean()
    got = kd2.compute_loss(xs, {"cls": yc, "box": yb}, kd2(xs), sw)
    assert float(got) == pytest.approx(want2, rel=1e-5)


def test_regression_distiller_trains_the_student_toward_the_teacher():
    keras.utils.set_random_seed(4)
    teacher, student = _head(name="t"), _head(name="s")
    x = _x(64)
    target = _np(teacher(x))

    def mse():
        return float(((_np(student(x)) - target) ** 2).mean())

    kd = Distiller(student, teacher, alpha=1.0)   # soft term only
    before = mse()
    assert float(kd.compute_loss(x, target, kd(x))) == pytest.approx(
        before, rel=1e-5)
    assert before > 0.0       # a softmax over one unit: exactly 0 before
    kd.compile(keras.optimizers.Adam(1e-2))
    hist = kd.fit(x, target, epochs=15, batch_size=16, verbose=0).history
    assert hist["loss"][-1] < 0.5 * hist["loss"][0]
    assert mse() < 0.5 * before


def test_kinds_inferred_from_compiled_losses_and_activations():
    def kind(model, **kw):
        return Distiller(model, keras.models.clone_model(model), **kw).kinds

    assert kind(_head(4)) == "classification"
    assert kind(_head(4, "softmax")) == "classification"
    assert kind(_head(1)) == "regression"
    assert kind(_head(1, "sigmoid")) == "binary"
    assert kind(_head(5, "sigmoid")) == "binary"
    seq = keras.Sequential([keras.Input((6,)), L.Dense(2),
                            L.Activation("sigmoid")])
    assert kind(seq) == "binary"
    inp = keras.Input((5, 3))
    td = keras.Model(inp, L.TimeDistributed(L.Dense(4, "sigmoid"))(inp))
    assert kind(td) == "binary"
    for loss, want in (("mse", "regression"), ("mae", "regression"),
                       ("mean_squared_error", "regression"),
                       (keras.losses.Huber(), "regression"),
                       (keras.losses.LogCosh(), "regression"),
                       (keras.losses.MeanSquaredLogarithmicError(),
                        "regression"),
                       (keras.losses.mean_absolute_error, "regression"),
                       ("binary_crossentropy", "binary"),
                       (keras.losses.BinaryCrossentropy(from_logits=True),
                        "binary"),
                       ("categorical_crossentropy", "classification"),
                       (keras.losses.SparseCategoricalCrossentropy(),
                        "classification")):
        m = _head(4, "sigmoid")      # the loss wins over the activation
        m.compile("sgd", loss)
        assert kind(m) == want, loss
    logit = _head(1)
    logit.compile("sgd", keras.losses.BinaryCrossentropy(from_logits=True))
    assert kind(logit) == "binary"
    # per output: a list of losses, and a loss dict by name
    inp = keras.Input((6,))
    two = keras.Model(inp, [L.Dense(3, name="cls")(inp),
                            L.Dense(4, name="box")(inp)])
    two.compile("sgd", ["sparse_categorical_crossentropy", "huber"])
    assert kind(two) == ["classification", "regression"]
    two.compile("sgd", {"box": "mse"})
    assert kind(two) == ["classification", "regression"]
    # an uncompiled student (a pruned copy) of a compiled binary teacher
    teacher = _head(1)
    teacher.compile("sgd", keras.losses.BinaryCrossentropy(from_logits=True))
    assert Distiller(_head(1), teacher).kinds == "binary"
    # the Distiller's own compiled loss
    kd = Distiller(_head(4), _head(4))
    assert kd.kinds == "classification"
    kd.compile("sgd", loss="mse")
    assert kd.kinds == "regression"


def test_explicit_kinds_override():
    m = _head(4, "sigmoid")
    m.compile("sgd", "mse")
    assert Distiller(m, _head(4), kinds="classification").kinds == \
        "classification"
    assert Distiller(_head(4), _head(4), kinds="regression").kinds == \
        "regression"
    assert Distiller(_head(1), _head(1), kinds=["binary"]).kinds == "binary"
    inp = keras.Input((6,))

    def two():
        return keras.Model(inp, [L.Dense(3, name="a")(inp),
                                 L.Dense(1, name="b")(inp)])

    assert Distiller(two(), two(), kinds=["regression", "binary"]).kinds \
        == ["regression", "binary"]
    assert Distiller(two(), two(), kinds={"b": "binary"}).kinds == \
        ["classification", "binary"]
    assert Distiller(two(), two()).kinds == ["classification", "regression"]


def test_bad_kinds_are_named():
    for bad in ("regresion", "Regression", 3, ["binary", "logits"],
                {"output": "mse"}):
        with pytest.raises(ValueError, match=r"kinds=.*"):
            Distiller(_head(4), _head(4), kinds=bad)
    with pytest.raises(ValueError, match=r"kinds=.*regresion"):
        Distiller(_head(4), _head(4), kinds="regresion")
    inp = keras.Input((6,))
    two = keras.Model(inp, [L.Dense(3, name="a")(inp),
                            L.Dense(1, name="b")(inp)])
    with pytest.raises(ValueError, match="one entry per student output"):
        Distiller(two, keras.models.clone_model(two), kinds=["binary"])
    with pytest.raises(ValueError, match=r"outputs \['c'\]"):
        Distiller(two, keras.models.clone_model(two), kinds={"c": "binary"})
    with pytest.raises(ValueError, match="one unit"):
        Distiller(_head(1), _head(1), kinds="classification")


def test_keras_round_trip_keeps_kinds(tmp_path):
    keras.utils.set_random_seed(5)
    inp = keras.Input((6,))

    def net():
        h = L.Dense(8, activation="relu")(inp)
        return keras.Model(inp, {"cls": L.Dense(3)(h), "box": L.Dense(4)(h),
                                 "real": L.Dense(1)(h)})

    x = _x()
    rng = np.random.default_rng(5)
    y = {"cls": rng.integers(0, 3, 16), "box": rng.normal(size=(16, 4)),
         "real": (np.arange(16) % 2).astype("float32")}
    kd = Distiller(net(), net(), alpha=0.5, temperature=2.0,
                   kinds={"box": "regression", "real": "binary"})
    assert kd.kinds == ["regression", "classification", "binary"]
    kd.compile(keras.optimizers.Adam(1e-2))
    hist = kd.fit(x, y, epochs=1, batch_size=8, verbose=0).history
    assert {"box_loss", "cls_loss", "real_loss"} <= set(hist)
    assert kd.get_config()["kinds"] == kd.kinds
    path = str(tmp_path / "kd_heads.keras")
    kd.save(path)
    back = keras.saving.load_model(path)
    assert back.kinds == ["regression", "classification", "binary"]
    assert float(back.compute_loss(x, y, back(x))) == pytest.approx(
        float(kd.compute_loss(x, y, kd(x))), rel=1e-5)
    # one bare output: its kind as a string
    one = Distiller(_head(1), _head(1), kinds="binary")
    one.save(str(tmp_path / "kd_one.keras"))
    assert keras.saving.load_model(
        str(tmp_path / "kd_one.keras")).kinds == "binary"
