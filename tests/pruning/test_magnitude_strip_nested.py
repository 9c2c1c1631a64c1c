"""Wrapping and stripping keep the weights of layers with unnamed
variables (ConvNeXt's ``LayerScale``: ``add_weight`` without a name, which
Keras calls ``variable_<n>`` from a process-wide counter), inside a nested
model too (issue #17: ConvNeXtTiny's stripped model had its LayerScale
gammas reset to their initial values, relative output error 2e-3)."""

import keras
import numpy as np

from tfcomp.graph.copy import clone_model, copy_weights
from tfcomp.pruning import (
    ConstantSparsity,
    MagnitudePruning,
    apply_fpgm,
    apply_magnitude_pruning,
    strip_pruning,
)


class Scale(keras.layers.Layer):
    """Per-channel scale with an unnamed weight, as keras.applications'
    ConvNeXt ``LayerScale``."""

    def __init__(self, dim, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim

    def build(self, _):
        self.gamma = self.add_weight(
            shape=(self.dim,), initializer=keras.initializers.Constant(1e-6))

    def call(self, x):
        return x * self.gamma

    def get_config(self):
        return {**super().get_config(), "dim": self.dim}


def _model():
    keras.utils.set_random_seed(0)
    inner_in = keras.Input((6, 6, 8))
    h = keras.layers.Conv2D(8, 3, padding="same", name="c")(inner_in)
    h = Scale(8, name="scale_inner")(h)
    block = keras.Model(inner_in, keras.layers.Add()([inner_in, h]),
                        name="block")
    inp = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inp)
    x = block(x)
    x = Scale(8, name="scale_outer")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(4, name="head")(x))
    rng = np.random.default_rng(0)
    for layer in (block.get_layer("scale_inner"),
                  model.get_layer("scale_outer")):  # "trained" gammas
        layer.gamma.assign(rng.uniform(0.5, 1.5, 8).astype("float32"))
    return model


def _x():
    return np.random.default_rng(1).normal(size=(4, 6, 6, 3)).astype(
        "float32")


def _gammas(model):
    return [keras.ops.convert_to_numpy(v) for v in model.weights
            if v.path.split("/")[-1].startswith("variable")]


def test_copy_weights_matches_unnamed_variables():
    model = _model()
    twin = clone_model(model)
    assert copy_weights(model, twin) == len(model.weights)
    for a, b in zip(_gammas(model), _gammas(twin)):
        np.testing.assert_array_equal(a, b)


def test_magnitude_wrap_and_strip_keep_unnamed_weights():
    model, x = _model(), _x()
    sparse = apply_magnitude_pruning(model)
    np.testing.assert_allclose(sparse(x), model(x), rtol=1e-6, atol=1e-6)
    sparse.compile(keras.optimizers.Adam(1e-2), "mse", run_eagerly=True)
    sparse.fit(x, np.zeros((4, 4), "float32"), epochs=1, verbose=0,
               callbacks=[MagnitudePruning(ConstantSparsity(0.5, 1))])
    plain = strip_pruning(sparse)
    for a, b in zip(_gammas(sparse), _gammas(plain)):  # trained, copied
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(plain(x), sparse(x), rtol=1e-5, atol=1e-6)


def test_fpgm_wrap_keeps_unnamed_weights():
    model, x = _model(), _x()
    soft = apply_fpgm(model)  # (Scale has no channel handler: no groups)
    for a, b in zip(_gammas(model), _gammas(soft)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(soft(x), model(x), rtol=1e-6, atol=1e-6)
