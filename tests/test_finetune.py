"""The short fine-tune engine (tfcomp._finetune) shared by HAQ trials, the
joint search and the joint allocator's fine-tune selection."""

import keras
import numpy as np
import pytest

from tfcomp._finetune import data_order, outputs_logits, short_finetune


def _tiny(softmax=False):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    x = keras.layers.Dense(8, activation="relu")(inputs)
    x = keras.layers.Dense(3, activation="softmax" if softmax else None)(x)
    return keras.Model(inputs, x)


def test_data_order_is_a_numpy_permutation_per_epoch():
    order = data_order(10, None, 4, 2, seed=3)
    assert sorted(order[:10]) == list(range(10))
    assert sorted(order[10:]) == list(range(10))
    assert np.array_equal(order, data_order(10, None, 4, 2, seed=3))
    assert len(data_order(10, 2, 4, 1, seed=0)) == 8


def test_outputs_logits():
    assert outputs_logits(_tiny())
    assert not outputs_logits(_tiny(softmax=True))


@pytest.mark.parametrize("decay, last_rate", [("constant", 0.1),
                                              ("cosine", 0.0)])
def test_cosine_decay_anneals_to_zero(decay, last_rate):
    model = _tiny()
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    y = np.arange(64) % 3
    before = [w.copy() for w in model.get_weights()]
    short_finetune(model, x, y, steps=4, batch_size=16, learning_rate=0.1,
                   decay=decay)
    opt = model.optimizer
    assert int(opt.iterations) == 4
    rate = opt.learning_rate
    assert float(rate) == pytest.approx(last_rate, abs=1e-6)
    assert any(not np.allclose(a, b) for a, b in zip(before,
                                                      model.get_weights()))


def test_bad_decay_is_a_clear_error():
    with pytest.raises(ValueError, match="decay must be one of"):
        short_finetune(_tiny(), np.zeros((4, 4)), np.zeros(4), decay="step")
