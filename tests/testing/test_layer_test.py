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


def test_weight_counts_are_checked():
    run_layer_test(keras.layers.BatchNormalization, {}, (4, 3), (4, 3),
                   expected_num_trainable_weights=2,
                   expected_num_non_trainable_weights=2)
    with pytest.raises(AssertionError, match="1 trainable weights"):
        run_layer_test(keras.layers.Dense, {"units": 3, "use_bias": False},
                       (2, 4), expected_num_trainable_weights=2)
    with pytest.raises(AssertionError, match="non-trainable weights"):
        run_layer_test(keras.layers.Dense, {"units": 3}, (2, 4),
                       expected_num_non_trainable_weights=1)


@keras.saving.register_keras_serializable(package="tfcomp_tests")
class WrongShape(keras.layers.Layer):
    """Declares a symbolic output shape its call does not produce."""

    def call(self, x):
        return x * 2.0

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] + 1)


def test_symbolic_call_is_checked_and_switchable():
    with pytest.raises(AssertionError, match="symbolic output shape"):
        run_layer_test(WrongShape, {}, (2, 4), mixed_precision=False)
    run_layer_test(WrongShape, {}, (2, 4), symbolic=False,
                   mixed_precision=False)


@keras.saving.register_keras_serializable(package="tfcomp_tests")
class Float32Out(keras.layers.Layer):
    """Ignores the compute dtype: always returns float32."""

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1],),
                                 initializer="ones")

    def call(self, x):
        return keras.ops.cast(x, "float32") * keras.ops.cast(self.w,
                                                              "float32")


def test_mixed_precision_is_checked_and_policy_restored():
    assert keras.mixed_precision.global_policy().name == "float32"
    with pytest.raises(AssertionError, match="mixed_float16 an output is "
                                             "float32"):
        run_layer_test(Float32Out, {}, (2, 4))
    assert keras.mixed_precision.global_policy().name == "float32"
    run_layer_test(Float32Out, {}, (2, 4), mixed_precision=False)


def test_mixed_precision_passes_keras_layers():
    for cls, kwargs, shape in (
            (keras.layers.Dense, {"units": 3}, (2, 4)),
            (keras.layers.Conv2D, {"filters": 2, "kernel_size": 3},
             (1, 5, 5, 2)),
            (keras.layers.BatchNormalization, {}, (4, 3))):
        run_layer_test(cls, kwargs, shape)
    assert keras.mixed_precision.global_policy().name == "float32"
