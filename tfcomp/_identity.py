"""Layers that are the identity at inference: dropouts, noise, and Keras'
random augmentation layers (``RandomFlip``, ``RandomRotation``, ...; in a
``model.predict`` / ``training=False`` call they pass their input through).
The one list the channel graph, the cost model, quantization and both
exporters read (public as ``tfcomp.graph.identity``; this module imports
nothing heavy, so the cost formulas can use it without loading Keras).

Keras 3 runs a random augmentation layer in any call that does not set
``training`` (``model(x)``); tfcomp always calls models with
``training=False`` (or through ``predict``) where it measures them.

Example:
    >>> is_inference_identity(keras.layers.RandomFlip("horizontal"))
    True
"""

from __future__ import annotations

__all__ = ["INFERENCE_IDENTITY", "is_inference_identity", "keras_layer_classes"]

#: Class names (Keras layers) that return their input when
#: ``training=False``, with the same shape.
INFERENCE_IDENTITY = (
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
    "GaussianNoise", "GaussianDropout", "AlphaDropout",
    "ActivityRegularization", "Identity",
    # random augmentation (RandomCrop is not here: it crops at inference)
    "RandomFlip", "RandomRotation", "RandomTranslation", "RandomZoom",
    "RandomContrast", "RandomBrightness", "RandomColorDegeneration",
    "RandomColorJitter", "RandomElasticTransform", "RandomErasing",
    "RandomGaussianBlur", "RandomGrayscale", "RandomHue", "RandomInvert",
    "RandomPerspective", "RandomPosterization", "RandomSaturation",
    "RandomSharpness", "RandomShear", "Solarization", "AugMix",
    "RandAugment", "CutMix", "MixUp",
)


def is_inference_identity(layer) -> bool:
    """True for a layer whose class is in :data:`INFERENCE_IDENTITY`.

    Example:
        >>> is_inference_identity(keras.layers.Dropout(0.5))
        True
    """
    return type(layer).__name__ in INFERENCE_IDENTITY


def keras_layer_classes(names) -> tuple:
    """The ``keras.layers`` classes named in ``names`` that this Keras has
    (for ``isinstance``).

    Example:
        >>> keras_layer_classes(("Dropout", "NoSuchLayer"))
        (<class 'keras.src.layers...Dropout'>,)
    """
    import keras

    return tuple(c for c in (getattr(keras.layers, n, None) for n in names)
                 if isinstance(c, type))
