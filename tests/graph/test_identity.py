"""The one list of layers that are the identity at inference."""

import keras
import numpy as np
import pytest

from tfcomp.graph.identity import (
    INFERENCE_IDENTITY,
    is_inference_identity,
    keras_layer_classes,
)

_ARGS = {"RandomBrightness": (0.2,), "RandomContrast": (0.2,),
         "RandomRotation": (0.1,), "RandomTranslation": (0.1, 0.1),
         "RandomZoom": (0.1,), "RandomHue": (0.2,),
         "RandomSaturation": (0.2,), "RandomSharpness": (0.2,),
         "RandomPosterization": (4,), "RandomColorDegeneration": (0.2,),
         "RandomShear": (0.1,), "Dropout": (0.5,),
         "SpatialDropout2D": (0.5,), "GaussianNoise": (0.1,),
         "GaussianDropout": (0.1,), "AlphaDropout": (0.1,)}
_IMAGE = ("SpatialDropout1D", "SpatialDropout3D")  # other ranks


@pytest.mark.parametrize("cls", keras_layer_classes(INFERENCE_IDENTITY),
                         ids=lambda c: c.__name__)
def test_each_listed_layer_passes_its_input_through_at_inference(cls):
    if cls.__name__ in _IMAGE:
        pytest.skip("not an image layer")
    layer = cls(*_ARGS.get(cls.__name__, ()))
    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype(
        "float32")
    np.testing.assert_allclose(
        np.asarray(keras.ops.convert_to_numpy(layer(x, training=False))), x)
    assert tuple(layer.compute_output_shape((None, 8, 8, 3))) == \
        (None, 8, 8, 3)
    assert is_inference_identity(layer)


def test_crops_and_deterministic_transforms_are_not_listed():
    assert not is_inference_identity(keras.layers.RandomCrop(4, 4))
    assert not is_inference_identity(keras.layers.AutoContrast())
    assert keras_layer_classes(("Dropout", "NoSuchLayer")) == (
        keras.layers.Dropout,)
