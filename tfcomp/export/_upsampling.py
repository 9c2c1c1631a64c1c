"""Nearest-neighbour ``UpSampling1D`` / ``UpSampling2D`` with a static
output shape, for the int8 export clone.

Keras computes nearest upsampling with ``ops.repeat``, whose TensorFlow
graph loses the static shape (``?x?x?x?``); a quantized conv reading it
then cannot become an int8 CONV_2D (the converter needs its input
channels). The replacement computes the same values and states the shape:
a 2D one as ``ops.image.resize(..., "nearest")`` (TFLite's
RESIZE_NEAREST_NEIGHBOR, same-scale in int8; for an integer factor it
picks pixel ``i // factor``, as the repeat does), a 1D one as the repeat
followed by a RESHAPE to the known shape.

Example:
    >>> clone = clone_model(qat, clone_function=static_upsampling)
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["static_upsampling"]


class _StaticUpSampling1D(keras.layers.UpSampling1D):
    def call(self, inputs):
        y = super().call(inputs)
        steps, channels = inputs.shape[1], inputs.shape[2]
        if steps is None or channels is None:
            return y
        return ops.reshape(y, (-1, steps * self.size, channels))


class _StaticUpSampling2D(keras.layers.UpSampling2D):
    def call(self, inputs):
        h, w = inputs.shape[1], inputs.shape[2]
        if h is None or w is None:
            return super().call(inputs)
        fh, fw = self.size
        return ops.image.resize(inputs, (h * fh, w * fw),
                                interpolation="nearest")


def static_upsampling(layer):
    """A ``clone_model`` clone function: the static-shape twin of a
    channels_last nearest ``UpSampling1D`` / ``UpSampling2D`` (same config
    and name), None for any other layer.

    Example:
        >>> static_upsampling(keras.layers.UpSampling2D(2)).size
        (2, 2)
    """
    kinds = {keras.layers.UpSampling1D: _StaticUpSampling1D,
             keras.layers.UpSampling2D: _StaticUpSampling2D}
    twin = kinds.get(type(layer))
    config = layer.get_config()
    if twin is None or config.get("data_format", "channels_last") != \
            "channels_last" or config.get("interpolation",
                                          "nearest") != "nearest":
        return None
    return twin.from_config(config)
