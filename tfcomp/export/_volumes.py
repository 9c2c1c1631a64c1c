"""Volume layers TFLite cannot take as they are, as twins of 2D ops, for
the TFLite export clone.

TFLite has no 3D pooling builtin (float or int8), so keras.io's volume
classifiers ("3D image classification from CT scans": ``MaxPool3D``
between ``Conv3D`` layers) did not convert. A channels_last 3D pooling of
window ``(pd, ph, pw)`` and strides ``(sd, sh, sw)`` is separable: pool
``(ph, pw)`` over each depth slice (the depth folded into the batch), then
``(pd, 1)`` over depth (height and width folded into one axis). With
"same" padding each axis is padded independently and an average counts
the window's valid cells per axis, so the product form is exact too. The
converter makes RESHAPE + MAX_POOL_2D / AVERAGE_POOL_2D of them: in int8 a
max stays exact, an average rounds once more, at the intermediate tensor
(on the input's grid).

TFLite's CONV_3D / CONV_3D_TRANSPOSE have float kernels only, so for the
integer modes a float model's ``Conv3D`` / ``Conv3DTranspose`` becomes the
CONV_2D over its stacked depth taps that a QAT model's already is
(``tfcomp.layers.quant_nd``): the same products, an int8 CONV_2D with
per-channel weights. The float modes keep CONV_3D (one op, float anyway).

Example:
    >>> clone = lower_volume_layers(model, integer=True)
"""

from __future__ import annotations

import keras
from keras import ops

from tfcomp.layers.quant_nd import (
    conv3d_as_conv2d,
    conv3d_transpose_as_conv2d,
)

__all__ = ["POOLING_3D", "lower_volume_layers", "lowerable", "volume_twin"]

#: The 3D pooling layers the export clone replaces.
POOLING_3D = (keras.layers.MaxPooling3D, keras.layers.AveragePooling3D)


def lowerable(layer) -> bool:
    """Whether ``layer`` is a 3D pooling the export clone can lower:
    channels_last with static depth, height, width and channels.

    Example:
        >>> lowerable(keras.layers.MaxPooling3D(2))  # unbuilt: no shape
        False
    """
    return type(layer) in POOLING_3D and \
        layer.data_format == "channels_last" and _static_5d(layer)


class _Separable:
    """``call`` of the twins: a 2D pooling per depth slice, then over
    depth (``_pool`` is ``ops.max_pool`` or ``ops.average_pool``)."""

    def call(self, inputs):
        d, h, w, c = inputs.shape[1:]
        if None in (d, h, w, c):  # not lowered (``lowerable``)
            return super().call(inputs)
        (pd, ph, pw), (sd, sh, sw) = self.pool_size, self.strides
        y = ops.reshape(inputs, (-1, h, w, c))
        y = self._pool(y, (ph, pw), (sh, sw), self.padding)
        h2, w2 = y.shape[1], y.shape[2]
        y = ops.reshape(y, (-1, d, h2 * w2, c))
        y = self._pool(y, (pd, 1), (sd, 1), self.padding)
        return ops.reshape(y, (-1, y.shape[1], h2, w2, c))


class _SeparableMaxPooling3D(_Separable, keras.layers.MaxPooling3D):
    _pool = staticmethod(ops.max_pool)


class _SeparableAveragePooling3D(_Separable, keras.layers.AveragePooling3D):
    _pool = staticmethod(ops.average_pool)


_TWINS = {keras.layers.MaxPooling3D: _SeparableMaxPooling3D,
          keras.layers.AveragePooling3D: _SeparableAveragePooling3D}


class _Conv3DAsConv2D(keras.layers.Conv3D):
    def call(self, inputs):
        return conv3d_as_conv2d(self, inputs, None, _bias_activation(self))


class _Conv3DTransposeAsConv2D(keras.layers.Conv3DTranspose):
    def call(self, inputs):
        return conv3d_transpose_as_conv2d(self, inputs, None,
                                          _bias_activation(self))


def _bias_activation(layer):
    """``y -> activation(y + bias)`` of a channels_last layer."""
    def finish(y):
        if layer.use_bias:
            y = ops.add(y, layer.bias)
        return y if layer.activation is None else layer.activation(y)
    return finish


_CONV_TWINS = {keras.layers.Conv3D: _Conv3DAsConv2D,
               keras.layers.Conv3DTranspose: _Conv3DTransposeAsConv2D}


def _static_5d(layer) -> bool:
    try:
        shape = layer.input.shape
    except (AttributeError, ValueError):
        return False
    return len(shape) == 5 and all(d is not None for d in shape[1:])


def _twin_class(layer, integer: bool):
    """The twin class of ``layer`` (None: it stays): a :func:`lowerable`
    3D pooling's, or for an ``integer`` file a channels_last Conv3D
    (grouped too) / Conv3DTranspose's with a static input shape."""
    if lowerable(layer):
        return _TWINS[type(layer)]
    if integer and type(layer) in _CONV_TWINS and \
            layer.data_format == "channels_last" and _static_5d(layer):
        return _CONV_TWINS[type(layer)]
    return None


def volume_twin(layer, integer: bool = False):
    """A ``clone_model`` clone function: the 2D-op twin of ``layer`` (same
    config and name; see :func:`_twin_class`), None for any other layer.

    Example:
        >>> twin = volume_twin(model.get_layer("max_pooling3d"))
    """
    cls = _twin_class(layer, integer)
    return None if cls is None else cls.from_config(layer.get_config())


def lower_volume_layers(model, integer: bool):
    """``model``, or when it holds a layer with a twin (:func:`volume_twin`)
    a copy (same weights) with each replaced by its twin.

    Example:
        >>> plain = lower_volume_layers(keras.Model(inp, pool(inp)), False)
    """
    from tfcomp.graph.copy import clone_model
    from tfcomp.graph.walk import iter_leaf_layers

    if all(_twin_class(layer, integer) is None
           for _, layer in iter_leaf_layers(model)):
        return model
    clone = clone_model(model, clone_function=lambda layer: volume_twin(
        layer, integer))
    clone.set_weights(model.get_weights())
    return clone
