"""3D max / average pooling as two 2D poolings, for the TFLite export clone.

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

Example:
    >>> clone = clone_model(model, clone_function=separable_pooling3d)
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["POOLING_3D", "lowerable", "separable_pooling3d"]

#: The 3D pooling layers the export clone replaces.
POOLING_3D = (keras.layers.MaxPooling3D, keras.layers.AveragePooling3D)


def lowerable(layer) -> bool:
    """Whether ``layer`` is a 3D pooling the export clone can lower:
    channels_last with static depth, height, width and channels.

    Example:
        >>> lowerable(keras.layers.MaxPooling3D(2))  # unbuilt: no shape
        False
    """
    if type(layer) not in POOLING_3D or layer.data_format != "channels_last":
        return False
    try:
        shape = layer.input.shape
    except (AttributeError, ValueError):
        return False
    return len(shape) == 5 and all(d is not None for d in shape[1:])


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


def separable_pooling3d(layer):
    """A ``clone_model`` clone function: the two-2D-poolings twin of a
    :func:`lowerable` 3D pooling (same config and name), None for any
    other layer.

    Example:
        >>> twin = separable_pooling3d(model.get_layer("max_pooling3d"))
    """
    if not lowerable(layer):
        return None
    return _TWINS[type(layer)].from_config(layer.get_config())


def lower_pooling3d(model):
    """``model``, or when it holds a :func:`lowerable` 3D pooling a copy
    (same weights) with each one replaced by its twin.

    Example:
        >>> plain = lower_pooling3d(keras.Model(inp, MaxPooling3D(2)(inp)))
    """
    from tfcomp.graph.copy import clone_model
    from tfcomp.graph.walk import iter_leaf_layers

    if not any(lowerable(layer) for _, layer in iter_leaf_layers(model)):
        return model
    clone = clone_model(model, clone_function=separable_pooling3d)
    clone.set_weights(model.get_weights())
    return clone
