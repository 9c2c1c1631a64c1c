import keras
import pytest

from tfcomp.testing import run_layer_test


def test_run_layer_test_passes_keras_dense():
    layer = run_layer_test(keras.layers.Dense, {"units": 3}, (2, 4), (2, 3))
    assert layer.units == 3


def test_run_layer_test_catches_missing_config_arg():
    @keras.saving.register_keras_serializable(package="tfcomp_tests")
    class Forgetful(keras.layers.Layer):
        def __init__(self, scale=2.0, **kwargs):
            super().__init__(**kwargs)
            self.scale = scale

        def call(self, x):
            return x * self.scale

        def get_config(self):
            return {"name": self.name}

    with pytest.raises(AssertionError, match="scale"):
        run_layer_test(Forgetful, {"scale": 3.0}, (2, 4))


def test_run_layer_test_catches_wrong_shape():
    with pytest.raises(AssertionError, match="output shape"):
        run_layer_test(keras.layers.Dense, {"units": 3}, (2, 4), (2, 5))
