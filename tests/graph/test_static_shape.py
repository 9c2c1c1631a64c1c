"""``profile(model, input_shape=...)``: a fully convolutional net read as
``keras.Input((None, None, 3))`` is counted at a chosen image size (a
copy with its input fixed, same weights), functional or Sequential, one
input or several; shapes that do not fit are named."""

import keras
import numpy as np
import pytest

import tfcomp
from tfcomp.graph.static_shape import with_input_shape

L = keras.layers


def _fcn():
    keras.utils.set_random_seed(0)
    inp = keras.Input((None, None, 3))
    x = L.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = L.MaxPooling2D()(x)
    return keras.Model(inp, L.Conv2D(4, 1)(x))


def test_open_sizes_are_counted_at_the_given_shape():
    model = _fcn()
    hand = 16 * 16 * 8 * 27 + 8 * 8 * 4 * 8
    assert tfcomp.profile(model, input_shape=(16, 16, 3)).macs == hand
    assert tfcomp.profile(model).macs < hand  # None counted as 1
    fixed = with_input_shape(model, (16, 16, 3))
    x = np.random.default_rng(0).uniform(size=(2, 16, 16, 3))
    np.testing.assert_allclose(fixed.predict(x, verbose=0),
                               model.predict(x, verbose=0), atol=1e-6)


def test_sequential_and_two_inputs():
    seq = keras.Sequential([keras.Input((None, 2)), L.Conv1D(4, 3),
                            L.GlobalAveragePooling1D(), L.Dense(2)])
    assert tfcomp.profile(seq, input_shape=(10, 2)).macs == 8 * 4 * 6 + 8
    a, b = keras.Input((None, 2)), keras.Input((3,))
    h = L.Concatenate()([L.GlobalAveragePooling1D()(L.Conv1D(4, 3)(a)), b])
    two = keras.Model([a, b], L.Dense(2)(h))
    assert tfcomp.profile(two, input_shape=[(10, 2), (3,)]).macs == \
        8 * 4 * 6 + 7 * 2


@pytest.mark.parametrize("shape", [(16, 16), (16, 16, 4), (0, 16, 3),
                                   (16.5, 16, 3)])
def test_shapes_that_do_not_fit_are_named(shape):
    with pytest.raises(ValueError, match=r"input_shape must give every size"
                       r".*\(None, None, 3\)"):
        tfcomp.profile(_fcn(), input_shape=shape)


def test_hardware_costs_name_the_fix_and_run_on_the_copy():
    from tfcomp.hardware import BISMO

    inp = keras.Input((None, None, 3))
    x = L.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = L.Conv2D(8, 3, padding="same", activation="relu")(x)
    model = keras.Model(inp, L.Conv2D(4, 1)(L.MaxPooling2D()(x)))
    x = np.random.default_rng(0).uniform(size=(16, 16, 16, 3)).astype(
        "float32")
    with pytest.raises(ValueError, match="tfcomp.with_input_shape"):
        tfcomp.compress(model, x, hardware=BISMO(), budget=0.8,
                        num_samples=16, starts=1, check_gap=False)
    res = tfcomp.compress(tfcomp.with_input_shape(model, (16, 16, 3)), x,
                          hardware=BISMO(), budget=0.8, num_samples=16,
                          starts=1, check_gap=False)
    assert res.cost <= 0.8 + 1e-9
