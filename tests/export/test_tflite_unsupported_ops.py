"""A model using TensorFlow ops TFLite has no builtin for (keras.io's VAE
encoder: a ``Sampling`` layer drawing ``keras.random.normal``) gets one
clear error naming the ops and the layer, not the converter's MLIR dump,
and no file."""

import keras
import numpy as np
import pytest

from tfcomp.export import export_tflite
from tfcomp.export._converter_errors import unsupported_ops_message

L = keras.layers


class Sampling(L.Layer):
    """keras.io "Variational AutoEncoder": z = mean + exp(log_var / 2) * eps."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seed_generator = keras.random.SeedGenerator(1337)

    def call(self, inputs):
        z_mean, z_log_var = inputs
        epsilon = keras.random.normal(keras.ops.shape(z_mean),
                                      seed=self.seed_generator)
        return z_mean + keras.ops.exp(0.5 * z_log_var) * epsilon


def vae_encoder():
    inputs = keras.Input((12, 12, 1))
    x = L.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inputs)
    x = L.Flatten()(x)
    z_mean = L.Dense(2, name="z_mean")(x)
    z_log_var = L.Dense(2, name="z_log_var")(x)
    z = Sampling(name="sampling")([z_mean, z_log_var])
    return keras.Model(inputs, [z_mean, z_log_var, z], name="encoder")


@pytest.mark.parametrize("quantization", [None, "int8"])
def test_random_sampling_layer_is_named(tmp_path, quantization):
    x = np.random.default_rng(0).uniform(size=(8, 12, 12, 1)).astype(
        "float32")
    with pytest.raises(ValueError, match=r"TensorFlow op\(s\) \['Stateless"
                       r".*in layer\(s\) \['sampling'\] of model 'encoder' "
                       r"\(random sampling"):
        export_tflite(vae_encoder(), str(tmp_path / "e.tflite"),
                      quantization=quantization, calibration_data=x)
    assert not list(tmp_path.iterdir())


def test_the_deployable_part_exports(tmp_path):
    model = vae_encoder()
    part = keras.Model(model.input, model.get_layer("z_mean").output)
    assert export_tflite(part, str(tmp_path / "mean.tflite")).max_abs_error \
        < 1e-4


def test_other_converter_errors_are_left_alone():
    assert unsupported_ops_message("some other failure", vae_encoder(),
                                   "export_tflite") is None


def test_adapted_lookup_copies_and_refuses_tflite_by_name(tmp_path):
    """keras.io structured data: an adapted ``IntegerLookup`` inside the
    model. ``quantize_model``'s copy keeps its vocabulary (it started
    empty, and Keras refused the copy), and every export path names the
    layer: TFLite builtins have no hash tables."""
    from tfcomp.quantization import calibrate, quantize_model

    rng = np.random.default_rng(0)
    ids = rng.integers(0, 4, (64, 1))
    lookup = keras.layers.IntegerLookup(output_mode="one_hot")
    lookup.adapt(ids)
    inp = keras.Input((1,), dtype="int64")
    model = keras.Model(inp, keras.layers.Dense(2)(lookup(inp)))
    q = quantize_model(model)
    calibrate(q, ids)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(q(ids)),
                               keras.ops.convert_to_numpy(model(ids)),
                               atol=0.05)
    for m, mode in ((model, None), (q, "int8")):
        with pytest.raises(ValueError, match=r"integer_lookup.*\(IntegerLo"
                           r"okup\)'\] of model .* hash table"):
            export_tflite(m, str(tmp_path / "t.tflite"), mode,
                          verify_data=ids)
    assert not (tmp_path / "t.tflite").exists()
