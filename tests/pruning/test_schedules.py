"""Sparsity schedules: values, update steps, serialisation, TFMOT duck-typing."""

import json

import keras
import numpy as np
import pytest

from tfcomp.pruning.schedules import ConstantSparsity, PolynomialDecay, get_schedule


def test_polynomial_decay_values_and_update_steps():
    s = PolynomialDecay(0.1, 0.8, begin_step=10, end_step=110, power=3,
                        frequency=25)
    assert s.sparsity(0) == pytest.approx(0.1)
    assert s.sparsity(10) == pytest.approx(0.1)
    # p = 0.5 -> 0.8 + (0.1 - 0.8) * 0.125
    assert s.sparsity(60) == pytest.approx(0.8 - 0.7 * 0.125)
    assert s.sparsity(110) == pytest.approx(0.8)
    assert s.sparsity(500) == pytest.approx(0.8)
    updates = [t for t in range(200) if s.should_prune(t)]
    # begin, every 25 steps, and the end step itself
    assert updates == [10, 35, 60, 85, 110]
    assert s(60) == (True, pytest.approx(0.8 - 0.7 * 0.125))
    assert s(61)[0] is False
    assert s.end_sparsity() == 0.8


def test_polynomial_decay_is_monotone():
    s = PolynomialDecay(0.0, 0.9, 0, 1000)
    values = [s.sparsity(t) for t in range(0, 1001, 50)]
    assert np.all(np.diff(values) >= 0)
    assert values[0] == 0.0 and values[-1] == pytest.approx(0.9)


def test_constant_sparsity():
    s = ConstantSparsity(0.5, begin_step=5, end_step=20, frequency=10)
    assert [t for t in range(40) if s.should_prune(t)] == [5, 15, 20]
    assert s(15) == (True, 0.5)
    forever = ConstantSparsity(0.3, frequency=4)
    assert forever.should_prune(4000) and not forever.should_prune(4001)


@pytest.mark.parametrize("sched", [
    ConstantSparsity(0.5, begin_step=3, end_step=9, frequency=2),
    PolynomialDecay(0.0, 0.75, 0, 100, power=2, frequency=7),
])
def test_config_round_trip(sched):
    cfg = sched.get_config()
    json.dumps(cfg)
    assert type(sched).from_config(cfg) == sched
    ser = keras.saving.serialize_keras_object(sched)
    assert keras.saving.deserialize_keras_object(ser) == sched
    assert get_schedule(cfg) == sched


@pytest.mark.parametrize("kwargs, match", [
    (dict(initial_sparsity=0.0, final_sparsity=1.0, begin_step=0,
          end_step=10), "final_sparsity must be in \\[0, 1\\). Received"),
    (dict(initial_sparsity=-0.1, final_sparsity=0.5, begin_step=0,
          end_step=10), "initial_sparsity"),
    (dict(initial_sparsity=0.0, final_sparsity=0.5, begin_step=10,
          end_step=10), "end_step must be > begin_step"),
    (dict(initial_sparsity=0.0, final_sparsity=0.5, begin_step=0,
          end_step=10, frequency=0), "frequency must be >= 1"),
])
def test_polynomial_decay_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PolynomialDecay(**kwargs)


def test_constant_sparsity_errors():
    with pytest.raises(ValueError, match="target_sparsity"):
        ConstantSparsity(1.2)
    with pytest.raises(TypeError, match="target_sparsity"):
        ConstantSparsity("0.5")
    with pytest.raises(ValueError, match="end_step"):
        ConstantSparsity(0.5, begin_step=10, end_step=5)


def test_get_schedule_accepts_floats_and_rejects_junk():
    assert get_schedule(0.25) == ConstantSparsity(0.25)
    with pytest.raises(TypeError, match="schedule must be"):
        get_schedule([0.5])
    with pytest.raises(ValueError, match="Unknown schedule"):
        get_schedule({"class_name": "Nope", "config": {}})


class _FakeTfmotSchedule:
    """Mimics tfmot.sparsity.keras.ConstantSparsity: returns tensors."""

    def __init__(self):
        self.calls = []

    def __call__(self, step):
        import tensorflow as tf

        self.calls.append(int(step))
        should = tf.equal(tf.math.floormod(tf.cast(step, tf.int64), 3), 0)
        return should, tf.constant(0.6, tf.float32)

    def get_config(self):
        return {"class_name": "ConstantSparsity",
                "config": {"target_sparsity": 0.6, "begin_step": 0,
                           "end_step": -1, "frequency": 3}}


def test_tfmot_style_schedule_is_duck_typed():
    fake = _FakeTfmotSchedule()
    s = get_schedule(fake)
    assert s(6) == (True, pytest.approx(0.6))
    assert s(7)[0] is False
    assert s.end_sparsity() == pytest.approx(0.6)
    assert fake.calls == [6, 7]
