"""Layers that are the identity at inference (dropouts, noise, Keras'
random augmentation layers): the list lives in the light module
``tfcomp._identity``; this is its public name.

Example:
    >>> from tfcomp.graph.identity import is_inference_identity
    >>> is_inference_identity(keras.layers.RandomFlip("horizontal"))
    True
"""

from tfcomp._identity import (
    INFERENCE_IDENTITY,
    is_inference_identity,
    keras_layer_classes,
)

__all__ = ["INFERENCE_IDENTITY", "is_inference_identity", "keras_layer_classes"]
