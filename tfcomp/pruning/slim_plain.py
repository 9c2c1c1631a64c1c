"""A slimmable model's plain Keras twin: every slimmable layer back to its
Keras class, every switchable BN to a BatchNormalization holding the
current width's slot. ``export_width`` prunes it to a width; AutoSlim reads
its dependency graph and MACs.

Reference: Yu et al., Slimmable Neural Networks, ICLR 2019,
arXiv:1812.08928.
"""

from __future__ import annotations

import keras

from tfcomp.graph.copy import clone_model, copy_weights, live_config
from tfcomp.layers.slimmable import SwitchableBatchNormalization
from tfcomp.layers.slimmable_groups import SLIMMABLE_CLASSES

__all__ = ["full_width_plain"]


def _plain_layer(layer):
    if isinstance(layer, SwitchableBatchNormalization):
        return keras.layers.BatchNormalization(
            momentum=layer.momentum, epsilon=layer.epsilon,
            center=layer.center, scale=layer.scale, name=layer.name,
            dtype=layer.dtype_policy)
    for plain, slim in SLIMMABLE_CLASSES.items():
        if type(layer) is slim:
            cfg = live_config(layer)
            for seg_attr, _ in slim._PORTS:
                cfg.pop(seg_attr, None)
            return plain.from_config(cfg)
    return None


def full_width_plain(model) -> keras.Model:
    """The plain Keras model (no tfcomp layers) of a slimmable model at full
    channel counts, its BN holding the current BN slot's parameters.

    Example:
        >>> plain = full_width_plain(slim)  # then prune_channels to a width
    """
    base = clone_model(model, clone_function=_plain_layer)
    plain = keras.Model(base.input, base.output, name=model.name)

    def bn_row(src):
        if not isinstance(src, SwitchableBatchNormalization):
            return None
        k = int(keras.ops.convert_to_numpy(src.switch))
        return {v.name: keras.ops.convert_to_numpy(v)[k] for v in src.weights
                if len(v.shape) == 2}

    copy_weights(model, plain, transform=bn_row)
    return plain
