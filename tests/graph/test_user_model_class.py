"""The user's own functional ``keras.Model`` subclass (keras.io's
"Customizing what happens in fit()": ``CustomModel(inputs, outputs)`` with
its own ``train_step``) stays that class through tfcomp's verbs, so ``fit``
on the pruned or quantized model still runs the user's step.

Before, surgery failed inside Keras ("Could not locate class
'CustomModel'") and ``quantize_model`` returned a plain ``keras.Model``.
"""

import keras
import numpy as np
import pytest

from tfcomp.pruning import (
    FPGMPruning,
    apply_fpgm,
    make_plan,
    prune_channels,
    strip_pruning,
)
from tfcomp.quantization import quantize_model, strip_quantization

L = keras.layers


class CustomModel(keras.Model):
    """Counts its own train steps (a stand-in for a custom loss / GAN
    step)."""

    steps = 0

    def train_step(self, data):
        CustomModel.steps += 1
        return super().train_step(data)


class Scaled(keras.Model):
    """A constructor beyond ``(inputs, outputs)``: no graph config."""

    def __init__(self, inputs, outputs, scale, **kwargs):
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.scale = scale


def _layers():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, activation="relu")(inputs)
    x = L.GlobalAveragePooling2D()(x)
    return inputs, L.Dense(3)(x)


def _data():
    rng = np.random.default_rng(0)
    return (rng.uniform(size=(16, 8, 8, 3)).astype("float32"),
            rng.integers(0, 3, 16))


def _fit_counts_steps(model, callbacks=()):
    x, y = _data()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    before = CustomModel.steps
    model.fit(x, y, epochs=1, batch_size=8, verbose=0,
              callbacks=list(callbacks))
    return CustomModel.steps - before


def test_pruned_and_soft_pruned_models_keep_the_class():
    model = CustomModel(*_layers())
    pruned = prune_channels(model, make_plan(model, ratio=0.5))
    assert type(pruned) is CustomModel
    assert _fit_counts_steps(pruned) == 2
    soft = apply_fpgm(model)
    assert type(soft) is CustomModel
    assert _fit_counts_steps(soft, [FPGMPruning(ratio=0.5)]) == 2
    assert type(strip_pruning(soft)) is CustomModel


def test_quantized_and_stripped_models_keep_the_class():
    model = CustomModel(*_layers())
    q = quantize_model(model)
    assert type(q) is CustomModel
    assert _fit_counts_steps(q) == 2
    assert type(strip_quantization(q)) is CustomModel


def test_other_constructor_is_a_clear_error():
    # Keras writes no graph config for a constructor beyond (inputs,
    # outputs): tfcomp cannot read its graph and says so
    model = Scaled(*_layers(), scale=2.0)
    with pytest.raises(ValueError, match="'scaled' is subclassed"):
        quantize_model(model)
    with pytest.raises(TypeError, match="is a subclassed keras.Model"):
        make_plan(model, ratio=0.5)
