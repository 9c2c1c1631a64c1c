"""Distiller: the KD loss by hand, logits / probabilities, shape errors,
training in place, pruned and QAT students, .keras resume."""

import keras
import numpy as np
import pytest

from tfcomp.distill import Distiller, kd_loss


def _net(n_out=4, softmax=False, width=8, name=None):
    inp = keras.Input((6,))
    x = keras.layers.Dense(width, activation="relu")(inp)
    out = keras.layers.Dense(n_out, activation="softmax" if softmax
                             else None)(x)
    return keras.Model(inp, out, name=name)


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 6)).astype("float32"),
            rng.integers(0, 4, n))


def test_kd_loss_by_hand():
    keras.utils.set_random_seed(0)
    s, t = _net(name="s"), _net(name="t")
    x, y = _data()
    kd = Distiller(s, t, alpha=0.3, temperature=2.0)
    got = float(kd.compute_loss(x, y, kd(x)))
    zs = keras.ops.convert_to_numpy(s(x)).astype(np.float64)
    zt = keras.ops.convert_to_numpy(t(x)).astype(np.float64)
    ce = -np.log(_softmax(zs)[np.arange(len(y)), y]).mean()
    pt, ps = _softmax(zt / 2), _softmax(zs / 2)
    kl = (pt * (np.log(pt) - np.log(ps))).sum(-1).mean()
    assert got == pytest.approx(0.7 * ce + 0.3 * 4 * kl, rel=1e-5)
    per = keras.ops.convert_to_numpy(kd_loss(zt, zs, 2.0))
    np.testing.assert_allclose(per.mean(), 4 * kl, rtol=1e-5)


def test_probability_outputs_read_as_logits():
    keras.utils.set_random_seed(1)
    s, t = _net(), _net()
    sp, tp = _net(softmax=True), _net(softmax=True)
    sp.set_weights(s.get_weights())
    tp.set_weights(t.get_weights())
    x, y = _data()
    a = float(Distiller(s, t, 0.5, 3.0).compute_loss(x, y, s(x)))
    kd = Distiller(sp, tp, 0.5, 3.0)
    b = float(kd.compute_loss(x, y, sp(x)))
    assert a == pytest.approx(b, rel=1e-4)
    forced = Distiller(sp, tp, 0.5, 3.0, student_outputs="probabilities",
                       teacher_outputs="probabilities")
    assert float(forced.compute_loss(x, y, sp(x))) == pytest.approx(
        b, rel=1e-5)


def test_errors():
    with pytest.raises(ValueError, match="output shape"):
        Distiller(_net(4), _net(5))
    with pytest.raises(ValueError, match="alpha"):
        Distiller(_net(), _net(), alpha=1.5)
    with pytest.raises(ValueError, match="temperature"):
        Distiller(_net(), _net(), temperature=0)
    with pytest.raises(TypeError, match="student"):
        Distiller("model", _net())
    with pytest.raises(ValueError, match="student_outputs"):
        Distiller(_net(), _net(), student_outputs="logit")


def test_fit_trains_student_in_place_teacher_frozen():
    keras.utils.set_random_seed(2)
    s, t = _net(), _net()
    s0, t0 = s.get_weights(), t.get_weights()
    kd = Distiller(s, t)
    kd.compile(keras.optimizers.SGD(0.1), metrics=["accuracy"])
    x, y = _data(32)
    hist = kd.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert "accuracy" in hist.history and np.isfinite(hist.history["loss"]).all()
    assert any(np.abs(a - b).max() > 0 for a, b in zip(s.get_weights(), s0))
    for a, b in zip(t.get_weights(), t0):
        np.testing.assert_array_equal(a, b)
    assert len(kd.trainable_weights) == len(s.trainable_weights)


def test_one_hot_labels_and_compiled_loss():
    keras.utils.set_random_seed(3)
    s, t = _net(), _net()
    x, y = _data()
    kd = Distiller(s, t, alpha=0.0)
    sparse = float(kd.compute_loss(x, y, s(x)))
    onehot = float(kd.compute_loss(x, np.eye(4)[y], s(x)))
    assert sparse == pytest.approx(onehot, rel=1e-5)
    kd.compile("sgd", loss=keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    assert float(kd.compute_loss(x, y, s(x))) == pytest.approx(sparse,
                                                               rel=1e-5)


def test_pruned_and_qat_students():
    import tfcomp
    from tfcomp.quantization import quantize_model

    keras.utils.set_random_seed(4)
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu",
                            name="c1")(inp)
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu",
                            name="c2")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    teacher = keras.Model(inp, keras.layers.Dense(4, name="head")(h))
    plan = tfcomp.pruning.make_plan(teacher, ratio=0.5, importance="l1")
    pruned = tfcomp.prune_channels(teacher, plan)
    qat = quantize_model(teacher, bits=4)
    x = np.random.default_rng(0).normal(size=(16, 8, 8, 1)).astype(
        "float32")
    y = np.arange(16) % 4
    for student in (pruned, qat):
        kd = Distiller(student, teacher)
        kd.compile(keras.optimizers.Adam(1e-3))
        loss = kd.fit(x, y, epochs=1, batch_size=8, verbose=0).history[
            "loss"][0]
        assert np.isfinite(loss)


def test_save_load_resume(tmp_path):
    keras.utils.set_random_seed(5)
    s, t = _net(), _net()
    kd = Distiller(s, t, alpha=0.4, temperature=3.0)
    kd.compile(keras.optimizers.Adam(1e-2))
    x, y = _data(32)
    kd.fit(x, y, epochs=1, batch_size=8, verbose=0)
    path = str(tmp_path / "kd.keras")
    kd.save(path)
    back = keras.saving.load_model(path)
    assert isinstance(back, Distiller)
    assert back.alpha == 0.4 and back.temperature == 3.0
    np.testing.assert_allclose(keras.ops.convert_to_numpy(back(x)),
                               keras.ops.convert_to_numpy(kd(x)), atol=1e-6)
    for a, b in zip(back.teacher.get_weights(), t.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert int(back.optimizer.iterations) == 4
    kd.fit(x, y, epochs=1, batch_size=8, verbose=0, shuffle=False)
    back.fit(x, y, epochs=1, batch_size=8, verbose=0, shuffle=False)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(back(x)),
                               keras.ops.convert_to_numpy(kd(x)), atol=1e-5)


def test_teacher_flag_untouched_and_not_trained():
    keras.utils.set_random_seed(6)
    s, t = _net(), _net()
    kd = Distiller(s, t)
    assert t.trainable is True
    assert {id(v) for v in kd.trainable_weights} == {
        id(v) for v in s.trainable_weights}
    kd.compile(keras.optimizers.Adam(1e-2))
    t0 = t.get_weights()
    x, y = _data(16)
    kd.fit(x, y, epochs=1, batch_size=8, verbose=0)
    for a, b in zip(t.get_weights(), t0):
        np.testing.assert_array_equal(a, b)


def test_defaults_are_hintons_high_soft_weight():
    kd = Distiller(_net(), _net())
    assert kd.alpha == 0.9 and kd.temperature == 10.0


def _reg_net(name):
    inp = keras.Input((6,))
    h = keras.layers.Dense(8, activation="relu",
                           kernel_regularizer=keras.regularizers.L2(0.1))(inp)
    return keras.Model(inp, keras.layers.Dense(
        4, kernel_regularizer=keras.regularizers.L2(0.1))(h), name=name)


def test_student_regularization_unscaled_teacher_left_out():
    keras.utils.set_random_seed(7)
    s, t = _reg_net("s"), _reg_net("t")
    x, y = _data()
    zs = keras.ops.convert_to_numpy(s(x)).astype(np.float64)
    zt = keras.ops.convert_to_numpy(t(x)).astype(np.float64)
    ce = -np.log(_softmax(zs)[np.arange(len(y)), y]).mean()
    pt, ps = _softmax(zt / 3), _softmax(zs / 3)
    kl = (pt * (np.log(pt) - np.log(ps))).sum(-1).mean()
    reg = sum(0.1 * (w ** 2).sum() for w in
              (s.layers[1].kernel.numpy(), s.layers[2].kernel.numpy()))
    want = 0.2 * ce + 0.8 * 9 * kl + reg
    kd = Distiller(s, t, alpha=0.8, temperature=3.0)
    assert len(kd.losses) == 2     # the student's two, not the teacher's
    assert float(kd.compute_loss(x, y, kd(x))) == pytest.approx(want,
                                                                rel=1e-5)
    kd.compile("sgd", loss=keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    assert float(kd.compute_loss(x, y, kd(x))) == pytest.approx(want,
                                                                rel=1e-5)


def _bn_net():
    inp = keras.Input((6,))
    h = keras.layers.BatchNormalization(momentum=0.5)(
        keras.layers.Dense(8)(inp))
    return keras.Model(inp, keras.layers.Dense(4)(keras.layers.ReLU()(h)))


def test_batchnorm_teacher_inference_student_training():
    keras.utils.set_random_seed(8)
    s, t = _bn_net(), _bn_net()
    x, y = _data(32)
    kd = Distiller(s, t, alpha=0.5, temperature=2.0)
    # the teacher term uses the teacher in inference mode (moving stats)
    zt = keras.ops.convert_to_numpy(t(x, training=False)).astype(np.float64)
    zs = keras.ops.convert_to_numpy(s(x, training=True)).astype(np.float64)
    ce = -np.log(_softmax(zs)[np.arange(len(y)), y]).mean()
    pt, ps = _softmax(zt / 2), _softmax(zs / 2)
    kl = (pt * (np.log(pt) - np.log(ps))).sum(-1).mean()
    got = float(kd.compute_loss(x, y, kd(x, training=True)))
    assert got == pytest.approx(0.5 * ce + 0.5 * 4 * kl, rel=1e-5)
    t_stats = [w.copy() for w in t.layers[2].get_weights()]
    s_stats = [w.copy() for w in s.layers[2].get_weights()]
    kd.compile(keras.optimizers.SGD(0.0))      # moving stats only
    kd.fit(x, y, epochs=1, batch_size=16, verbose=0)
    for a, b in zip(t.layers[2].get_weights(), t_stats):
        np.testing.assert_array_equal(a, b)     # teacher BN not updated
    assert not np.allclose(s.layers[2].get_weights()[2], s_stats[2])


def test_pruning_callbacks_prune_the_student_during_kd():
    """FPGM / magnitude pruning inside ``Distiller.fit``: the callbacks get
    the wrapper and prune its student."""
    from tfcomp.pruning import (
        ConstantSparsity,
        FPGMPruning,
        MagnitudePruning,
        apply_fpgm,
        apply_magnitude_pruning,
        strip_pruning,
    )

    keras.utils.set_random_seed(5)
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu",
                            name="c1")(inp)
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu",
                            name="c2")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    teacher = keras.Model(inp, keras.layers.Dense(4, name="head")(h))
    x = np.random.default_rng(0).normal(size=(16, 8, 8, 1)).astype(
        "float32")
    y = np.arange(16) % 4
    for prepare, callback, kind in (
            (apply_fpgm, FPGMPruning(ratio=0.5), "channel"),
            (apply_magnitude_pruning,
             MagnitudePruning(ConstantSparsity(0.5, frequency=1)), "weight")):
        student = prepare(teacher)
        kd = Distiller(student, teacher)
        kd.compile(keras.optimizers.Adam(1e-3))
        kd.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[callback])
        plain = strip_pruning(student)
        kernel = keras.ops.convert_to_numpy(plain.get_layer("c1").kernel)
        if kind == "channel":
            assert kernel.shape[-1] == 4 or np.sum(
                np.all(kernel == 0, axis=(0, 1, 2))) == 4
        else:
            assert np.mean(kernel == 0) >= 0.4


def test_per_pixel_outputs_per_position_losses():
    """A segmentation net (per-pixel classes): the hard loss is the sparse
    cross entropy averaged over positions, the soft loss kd_loss's."""
    keras.utils.set_random_seed(0)

    def seg():
        inputs = keras.Input((6, 6, 2))
        h = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(
            inputs)
        return keras.Model(inputs, keras.layers.Conv2D(3, 1)(h))

    student, teacher = seg(), seg()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 6, 6, 2)).astype("float32")
    y = rng.integers(0, 3, (4, 6, 6))
    kd = Distiller(student, teacher, alpha=0.25, temperature=2.0)
    kd.compile("adam")
    got = float(kd.compute_loss(x, y, student(x)))
    zs, zt = student(x), teacher(x)
    hard = float(keras.ops.mean(keras.losses.sparse_categorical_crossentropy(
        y, zs, from_logits=True)))
    soft = float(keras.ops.mean(kd_loss(zt, zs, 2.0)))
    assert got == pytest.approx(0.75 * hard + 0.25 * soft, rel=1e-5)
    kd.fit(x, y, epochs=1, batch_size=2, verbose=0)
