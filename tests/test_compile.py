"""carry_compile: a derived model is compiled like the user's model."""

import warnings

import keras
import numpy as np

from tfcomp._compile import carry_compile


def _mlp(units=3, name=None):
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(units, name="d1"),
                             keras.layers.Dense(3, name="d2")], name=name)


def _trained():
    m = _mlp()
    m.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy",
              metrics=["accuracy"])
    m.fit(np.random.rand(8, 4), np.zeros(8), verbose=0, epochs=2, batch_size=4)
    return m


def test_uncompiled_source_leaves_target_alone():
    target = _mlp()
    assert carry_compile(_mlp(), target) is target
    assert not target.compiled


def test_config_iterations_and_slots_carried():
    src = _trained()
    dst = carry_compile(src, _mlp(name="other"))
    assert dst.compiled
    assert dst.get_compile_config()["loss"] == "sparse_categorical_crossentropy"
    assert int(dst.optimizer.iterations.numpy()) == 4
    old = [v.numpy() for v in src.optimizer.variables]
    new = [v.numpy() for v in dst.optimizer.variables]
    assert len(old) == len(new)
    for a, b in zip(old, new):
        np.testing.assert_array_equal(a, b)
    dst.fit(np.random.rand(8, 4), np.zeros(8), verbose=0, epochs=1, batch_size=4)
    assert int(dst.optimizer.iterations.numpy()) == 6


def test_changed_shapes_warn_and_still_train():
    src = _trained()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dst = carry_compile(src, _mlp(units=2), what="the pruned model")
    messages = [str(w.message) for w in caught]
    expected = "6 optimizer slot variable(s) of the pruned model"
    assert any(expected in m for m in messages)
    dst.fit(np.random.rand(8, 4), np.zeros(8), verbose=0, epochs=1, batch_size=4)
    assert int(dst.optimizer.iterations.numpy()) == 6
