"""Distiller on models with several outputs (an auxiliary head, deep
supervision): the loss by hand per output with loss weights, list and dict
outputs training, a pruned student of a compiled 2-output model, Snapshot
Distillation, .keras resume, and clear errors for mismatched outputs."""

import keras
import numpy as np
import pytest

from tfcomp.distill import Distiller, SnapshotDistillation

L = keras.layers
SCE = keras.losses.SparseCategoricalCrossentropy


def _net(kind="list", n_main=4, n_aux=4, names=("main", "aux")):
    inp = keras.Input((6,))
    h = L.Dense(8, activation="relu", name="hidden")(inp)
    main = L.Dense(n_main, name=names[0])(h)
    aux = L.Dense(n_aux, name=names[1])(inp)
    if kind == "dict":
        return keras.Model(inp, {"main": main, "aux": aux})
    return keras.Model(inp, [main, aux])


def _data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 6)).astype("float32"),
            rng.integers(0, 4, n), rng.integers(0, 4, n))


def _np(t):
    return keras.ops.convert_to_numpy(t).astype(np.float64)


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _parts(zs, zt, y, alpha, temp):
    ce = -np.log(_softmax(zs)[np.arange(len(zs)), y]).mean() \
        if y is not None else 0.0
    pt, ps = _softmax(zt / temp), _softmax(zs / temp)
    kl = (pt * (np.log(pt) - np.log(ps))).sum(-1).mean()
    return (1 - alpha) * ce + alpha * temp ** 2 * kl


def test_two_output_loss_by_hand_list_dict_and_compiled():
    keras.utils.set_random_seed(0)
    s, t = _net(), _net()
    x, y1, y2 = _data()
    kd = Distiller(s, t, alpha=0.3, temperature=2.0, loss_weights=[1.0, 0.4])
    (zs1, zs2), (zt1, zt2) = [_np(v) for v in s(x)], [_np(v) for v in t(x)]
    want = 1.0 * _parts(zs1, zt1, y1, 0.3, 2.0) + \
        0.4 * _parts(zs2, zt2, y2, 0.3, 2.0)
    assert float(kd.compute_loss(x, [y1, y2], kd(x))) == pytest.approx(
        want, rel=1e-5)
    # labels as a dict by output name; the aux head without a label is
    # only distilled
    assert float(kd.compute_loss(x, {"main": y1, "aux": y2}, kd(x))) == \
        pytest.approx(want, rel=1e-5)
    only_main = 1.0 * _parts(zs1, zt1, y1, 0.3, 2.0) + \
        0.4 * _parts(zs2, zt2, None, 0.3, 2.0)
    assert float(kd.compute_loss(x, {"main": y1}, kd(x))) == pytest.approx(
        only_main, rel=1e-5)
    # the same nets with a dict of outputs, weights by name
    sd, td = _net("dict"), _net("dict")
    for a, b in ((sd, s), (td, t)):
        for name in ("hidden", "main", "aux"):
            a.get_layer(name).set_weights(b.get_layer(name).get_weights())
    kdd = Distiller(sd, td, alpha=0.3, temperature=2.0,
                    loss_weights={"aux": 0.4})
    assert kdd.loss_weights == [0.4, 1.0]     # sorted keys: aux, main
    assert float(kdd.compute_loss(x, {"main": y1, "aux": y2}, kdd(x))) == \
        pytest.approx(want, rel=1e-5)
    # a compiled loss gives the hard parts, weighted as compiled
    kd.compile("sgd", loss=[SCE(from_logits=True)] * 2,
               loss_weights=[1.0, 0.4])
    assert float(kd.compute_loss(x, [y1, y2], kd(x))) == pytest.approx(
        want, rel=1e-5)


def test_loss_weights_default_to_the_students_compiled_ones():
    s, t = _net(), _net()
    assert Distiller(s, t).loss_weights == [1.0, 1.0]
    s.compile("adam", [SCE(from_logits=True)] * 2, loss_weights=[1.0, 0.3])
    assert Distiller(s, t).loss_weights == [1.0, 0.3]
    assert Distiller(s, t, loss_weights={"aux": 2}).loss_weights == [1.0,
                                                                     2.0]
    sd = _net("dict")
    sd.compile("adam", SCE(from_logits=True),
               loss_weights={"main": 1.0, "aux": 0.3})
    assert Distiller(sd, _net("dict")).loss_weights == [0.3, 1.0]
    assert Distiller(_net(), _net()).output_names == ["main", "aux"]


@pytest.mark.parametrize("kind", ["list", "dict"])
def test_list_and_dict_outputs_train(kind):
    keras.utils.set_random_seed(1)
    s, t = _net(kind), _net(kind)
    t0 = t.get_weights()
    x, y1, y2 = _data(32)
    labels = [y1, y2] if kind == "list" else {"main": y1, "aux": y2}
    kd = Distiller(s, t, alpha=0.5, temperature=2.0)
    kd.compile(keras.optimizers.Adam(1e-2), metrics={"main": "accuracy"})
    hist = kd.fit(x, labels, epochs=4, batch_size=16, verbose=0).history
    assert {"loss", "main_loss", "aux_loss", "main_accuracy"} <= set(hist)
    assert np.isfinite(hist["loss"]).all()
    assert hist["loss"][-1] < hist["loss"][0]
    np.testing.assert_allclose(
        hist["loss"][-1], hist["main_loss"][-1] + hist["aux_loss"][-1],
        rtol=1e-4)
    for a, b in zip(t.get_weights(), t0):
        np.testing.assert_array_equal(a, b)     # the teacher stays frozen
    assert np.isfinite(kd.evaluate(x, labels, verbose=0, return_dict=True)[
        "loss"])


def test_pruned_student_of_a_compiled_aux_head_model():
    """The issue's case: a conv body with an auxiliary head compiled with
    loss weights, its pruned copy distilled from it."""
    import tfcomp

    keras.utils.set_random_seed(2)
    inp = keras.Input((8, 8, 3))
    h = L.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inp)
    aux = L.Dense(4, name="aux")(L.GlobalAveragePooling2D()(h))
    h = L.Conv2D(8, 3, padding="same", activation="relu", name="c2")(h)
    main = L.Dense(4, name="main")(L.GlobalAveragePooling2D()(h))
    model = keras.Model(inp, [main, aux])
    model.compile("adam", [SCE(from_logits=True)] * 2,
                  loss_weights=[1.0, 0.3])
    x = np.random.default_rng(0).normal(size=(16, 8, 8, 3)).astype(
        "float32")
    y = np.arange(16) % 4
    student = tfcomp.pruning.prune_channels(
        model, tfcomp.pruning.make_plan(model, target_macs=0.6))
    kd = Distiller(student, model)
    assert kd.loss_weights == [1.0, 0.3]
    kd.compile("adam")
    hist = kd.fit(x, [y, y], epochs=1, batch_size=8, verbose=0).history
    assert np.isfinite(hist["loss"]).all()


def test_snapshot_distillation_multi_output():
    keras.utils.set_random_seed(3)
    x, y1, y2 = _data(32)
    kd = Distiller(_net("dict"), teacher=None, alpha=0.5, temperature=2.0)
    kd.compile(keras.optimizers.SGD(0.1))
    sd = SnapshotDistillation(cycles=2)
    hist = kd.fit(x, {"main": y1, "aux": y2}, epochs=2, batch_size=8,
                  verbose=0, callbacks=[sd]).history
    assert sd.boundaries == [4] and float(kd.kd_scale) == 1.0
    assert np.isfinite(hist["loss"]).all()
    for a, b in zip(kd.teacher.get_weights(), kd.student.get_weights()):
        assert a.shape == b.shape


def test_save_load_keeps_loss_weights(tmp_path):
    keras.utils.set_random_seed(4)
    kd = Distiller(_net(), _net(), alpha=0.4, temperature=3.0,
                   loss_weights=[1.0, 0.5])
    kd.compile(keras.optimizers.Adam(1e-2))
    x, y1, y2 = _data(16)
    kd.fit(x, [y1, y2], epochs=1, batch_size=8, verbose=0)
    path = str(tmp_path / "kd_multi.keras")
    kd.save(path)
    back = keras.saving.load_model(path)
    assert back.loss_weights == [1.0, 0.5]
    assert float(back.compute_loss(x, [y1, y2], back(x))) == pytest.approx(
        float(kd.compute_loss(x, [y1, y2], kd(x))), rel=1e-5)
    assert np.isfinite(back.fit(x, [y1, y2], epochs=1, batch_size=8,
                                verbose=0).history["loss"]).all()


def test_mismatched_outputs_clear_errors():
    one = keras.Model(*(lambda i: (i, L.Dense(4)(i)))(keras.Input((6,))))
    with pytest.raises(ValueError, match=r"do not match the student's \["):
        Distiller(_net(), one)
    with pytest.raises(ValueError, match=r"teacher's outputs \[main"):
        Distiller(one, _net())
    inp = keras.Input((6,))
    three = keras.Model(inp, [L.Dense(4)(inp) for _ in range(3)])
    with pytest.raises(ValueError, match="do not match"):
        Distiller(_net(), three)
    with pytest.raises(ValueError, match=r"'aux' has output shape \(5,\)"):
        Distiller(_net(), _net(n_aux=5))
    other = keras.Model(inp, {"main": L.Dense(4)(inp),
                              "box": L.Dense(4)(inp)})
    with pytest.raises(ValueError, match="'box'.*'main'"):
        Distiller(_net("dict"), other)
    # a list and a dict pair by output name
    assert Distiller(_net("dict"), _net("list")).loss_weights == [1.0, 1.0]
    kd = Distiller(_net(), _net())
    x, y1, y2 = _data()
    with pytest.raises(ValueError, match="pass y as a list"):
        kd.compute_loss(x, y1, kd(x))
    with pytest.raises(ValueError, match=r"outputs \['mian'\]"):
        kd.compute_loss(x, {"mian": y1}, kd(x))
    with pytest.raises(ValueError, match="3 entries"):
        kd.compute_loss(x, [y1, y2, y2], kd(x))
    with pytest.raises(ValueError, match="loss_weights"):
        Distiller(_net(), _net(), loss_weights=[1.0])
    with pytest.raises(ValueError, match="loss_weights"):
        Distiller(_net(), _net(), loss_weights={"box": 1.0})
    # a one-unit head is a regression head unless told otherwise (see
    # test_distiller_heads.py); as a classifier it would learn nothing
    unit = _net(n_aux=1)
    with pytest.raises(ValueError, match="one unit"):
        Distiller(unit, _net(n_aux=1), kinds={"aux": "classification"})


class _TwoHeads(keras.Model):
    """A subclassed student: its outputs are known only when called."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = L.Dense(8, activation="relu")
        self.main, self.aux = L.Dense(4), L.Dense(4)

    def call(self, x):
        return [self.main(self.hidden(x)), self.aux(x)]


def test_subclassed_student_and_one_output_weight():
    keras.utils.set_random_seed(5)
    x, y1, y2 = _data()
    s, t = _TwoHeads(), _net()
    kd = Distiller(s, t, alpha=0.3, temperature=2.0, loss_weights=[1.0, 0.4])
    (zs1, zs2), (zt1, zt2) = [_np(v) for v in s(x)], [_np(v) for v in t(x)]
    want = _parts(zs1, zt1, y1, 0.3, 2.0) + 0.4 * _parts(zs2, zt2, y2, 0.3,
                                                         2.0)
    assert float(kd.compute_loss(x, [y1, y2], kd(x))) == pytest.approx(
        want, rel=1e-5)
    # one bare output: weighted only when a weight is given
    inp = keras.Input((6,))
    one, two = (keras.Model(inp, L.Dense(4)(inp)) for _ in range(2))
    plain = float(Distiller(one, two).compute_loss(x, y1, one(x)))
    assert float(Distiller(one, two, loss_weights=2.0).compute_loss(
        x, y1, one(x))) == pytest.approx(2 * plain, rel=1e-6)
