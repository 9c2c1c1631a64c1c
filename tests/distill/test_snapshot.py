"""Snapshot Distillation: cosine cycles, the teacher frozen within a cycle
and replaced exactly at its boundaries, resume, MirroredStrategy."""

import math

import keras
import numpy as np
import pytest
from _mirrored import run_mirrored

from tfcomp.distill import Distiller, SnapshotDistillation, cosine_cycle_lr


def _net():
    inp = keras.Input((6,))
    x = keras.layers.Dense(8, activation="relu")(inp)
    return keras.Model(inp, keras.layers.Dense(4)(x))


def _data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 6)).astype("float32"),
            rng.integers(0, 4, n))


class _Recorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.rows = []

    def on_train_batch_begin(self, batch, logs=None):
        kd = self.model
        self.rows.append({
            "t": int(kd.optimizer.iterations),
            "lr": float(keras.ops.convert_to_numpy(
                kd.optimizer.learning_rate)),
            "kd": float(keras.ops.convert_to_numpy(kd.kd_scale)),
            "teacher": [w.copy() for w in kd.teacher.get_weights()],
            "student": [w.copy() for w in kd.student.get_weights()]})


def _same(a, b):
    return all(np.array_equal(u, v) for u, v in zip(a, b))


def test_cosine_lr():
    assert cosine_cycle_lr(0, 10, 0.1) == pytest.approx(0.1)
    assert cosine_cycle_lr(5, 10, 0.1) == pytest.approx(0.05)
    assert cosine_cycle_lr(10, 10, 0.1, 0.01) == pytest.approx(0.1)
    assert cosine_cycle_lr(9, 10, 0.1) == pytest.approx(
        0.05 * (1 + math.cos(math.pi * 0.9)))


def test_teacher_replaced_exactly_at_cycle_boundaries():
    keras.utils.set_random_seed(0)
    kd = Distiller(_net(), teacher=None, alpha=0.5, temperature=2.0)
    kd.compile(keras.optimizers.SGD(0.2, momentum=0.9))
    assert float(kd.kd_scale) == 0.0
    x, y = _data(32)
    sd, rec = SnapshotDistillation(cycles=3), _Recorder()
    kd.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=[sd, rec])
    assert sd.cycle_steps == 4 and sd.boundaries == [4, 8]
    rows = rec.rows
    assert [r["t"] for r in rows] == list(range(12))
    for r in rows:
        assert r["lr"] == pytest.approx(cosine_cycle_lr(r["t"], 4, 0.2),
                                        rel=1e-6)
        assert r["kd"] == (0.0 if r["t"] < 4 else 1.0)
    for prev, r in zip(rows, rows[1:]):
        if r["t"] in (4, 8):   # the last snapshot of the cycle
            assert _same(r["teacher"], r["student"])
            assert not _same(r["teacher"], prev["teacher"])
        else:                  # frozen within a cycle
            assert _same(r["teacher"], prev["teacher"])


def test_resume_from_keras_save(tmp_path):
    x, y = _data(24)

    def fresh():
        keras.utils.set_random_seed(1)
        kd = Distiller(_net(), teacher=None, temperature=2.0)
        kd.compile(keras.optimizers.SGD(0.1, momentum=0.9))
        return kd

    full = fresh()
    full.fit(x, y, epochs=4, batch_size=8, verbose=0, shuffle=False,
             callbacks=[SnapshotDistillation(cycles=3)])
    part = fresh()
    part.fit(x, y, epochs=2, batch_size=8, verbose=0, shuffle=False,
             callbacks=[SnapshotDistillation(cycles=3, total_steps=12)])
    path = str(tmp_path / "sd.keras")
    part.save(path)
    back = keras.saving.load_model(path)
    sd = SnapshotDistillation(cycles=3, max_lr=0.1)
    back.fit(x, y, epochs=4, initial_epoch=2, batch_size=8, verbose=0,
             shuffle=False, callbacks=[sd])
    assert sd.boundaries == [8]
    for a, b in zip(back.student.get_weights(), full.student.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_errors():
    with pytest.raises(ValueError, match="cycles"):
        SnapshotDistillation(cycles=0)
    with pytest.raises(ValueError, match="max_lr"):
        SnapshotDistillation(max_lr=-1.0)
    model = _net()
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(True))
    x, y = _data(8)
    with pytest.raises(TypeError, match="Distiller"):
        model.fit(x, y, verbose=0, callbacks=[SnapshotDistillation()])


# run_mirrored puts _mirrored.PRELUDE (json, os, tf, keras, np) first
_MIRRORED = """
    from tfcomp.distill import Distiller, SnapshotDistillation

    def net():
        inp = keras.Input((6,))
        h = keras.layers.Dense(8, activation="relu")(inp)
        return keras.Model(inp, keras.layers.Dense(4)(h))

    keras.utils.set_random_seed(0)
    s0, t0 = net().get_weights(), net().get_weights()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 6)).astype("float32")
    y = rng.integers(0, 4, 32)

    def run(strategy):
        with strategy.scope():
            s, t = net(), net()
            s.set_weights(s0)
            t.set_weights(t0)
            kd = Distiller(s, t, alpha=0.5, temperature=2.0)
            kd.compile(keras.optimizers.SGD(0.1))
        kd.fit(x, y, epochs=2, batch_size=16, verbose=0, shuffle=False)
        with strategy.scope():
            sd_model = Distiller(net(), None, alpha=0.5)
            sd_model.compile(keras.optimizers.SGD(0.1))
        sd = SnapshotDistillation(cycles=2)
        h = sd_model.fit(x, y, epochs=2, batch_size=16, verbose=0,
                         callbacks=[sd])
        return s.get_weights(), sd.boundaries, h.history["loss"], kd

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    wm, bm, lm, kd = run(mirrored)
    w1, b1, l1, _ = run(tf.distribute.get_strategy())
    print(json.dumps({
        "replicas": mirrored.num_replicas_in_sync,
        "mirrored": type(kd.kd_scale.value).__name__,
        "max_diff": max(float(np.abs(a - b).max()) for a, b in zip(wm, w1)),
        "boundaries": bm, "finite": bool(np.isfinite(lm).all())}))
"""

@pytest.mark.slow
def test_mirrored_strategy_two_replicas():
    res = run_mirrored(_MIRRORED)
    assert res["replicas"] == 2 and res["mirrored"] == "MirroredVariable"
    assert res["max_diff"] < 1e-5      # same steps as on one device
    assert res["boundaries"] == [2] and res["finite"]


def test_teacher_is_a_frozen_copy_of_the_cycle_end_not_a_live_reference():
    """At a boundary the teacher computes exactly the student's function
    (BatchNorm moving statistics included, inference mode); its variables
    are its own, so the next steps move the student only."""
    keras.utils.set_random_seed(3)

    def bn_net():
        inp = keras.Input((6,))
        h = keras.layers.BatchNormalization(momentum=0.5)(
            keras.layers.Dense(8)(inp))
        h = keras.layers.Dense(8, activation="relu")(h)
        h = keras.layers.BatchNormalization(momentum=0.5)(h)
        return keras.Model(inp, keras.layers.Dense(4)(h))

    kd = Distiller(bn_net(), teacher=None, alpha=0.5, temperature=2.0)
    kd.compile(keras.optimizers.SGD(0.2, momentum=0.9))
    assert not {id(v) for v in kd.teacher.weights} & {
        id(v) for v in kd.student.weights}
    x, y = _data(32)
    seen = {}

    class Check(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            t = int(self.model.optimizer.iterations)
            zt = keras.ops.convert_to_numpy(
                self.model.teacher(x, training=False))
            zs = keras.ops.convert_to_numpy(
                self.model.student(x, training=False))
            seen[t] = float(np.abs(zt - zs).max())

    sd = SnapshotDistillation(cycles=2)
    kd.fit(x, y, epochs=2, batch_size=8, verbose=0, shuffle=False,
           callbacks=[sd, Check()])
    assert sd.boundaries == [4]
    assert seen[4] == 0.0           # the weights after the cycle's last step
    assert seen[5] > 1e-4 and seen[3] > 1e-4   # frozen, student moves on
