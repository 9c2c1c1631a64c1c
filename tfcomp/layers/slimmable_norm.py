"""Slimmable ``GroupNormalization``: whole normalisation groups switch off.

A ``GroupNormalization(groups=G)`` over ``C`` channels normalises each
block of ``C / G`` consecutive channels with that block's own statistics,
so dropping whole blocks leaves the kept blocks' outputs unchanged (the
dependency graph makes one block one channel unit). At width ``w`` the
layer keeps its first blocks and zeroes the others: on the kept channels
it equals a plain ``GroupNormalization(groups=n)`` holding the sliced
gamma and beta (``tfcomp.pruning.export_width`` builds that layer).

Example:
    >>> gn = SlimmableGroupNormalization(groups=4)
    >>> y = gn(np.ones((2, 6, 6, 8), "float32"))
    >>> gn.set_width(0.5)          # blocks 0 and 1: channels 0..3
"""

from __future__ import annotations

import keras
from keras import ops

from tfcomp.layers.slimmable import _check_segments, _SlimMixin

__all__ = ["SlimmableGroupNormalization"]


@keras.saving.register_keras_serializable(package="tfcomp")
class SlimmableGroupNormalization(_SlimMixin, keras.layers.GroupNormalization):
    """``GroupNormalization`` (channels on the last axis) whose active
    width keeps whole normalisation groups and zeroes the others.

    Args:
        groups: as ``keras.layers.GroupNormalization`` (``groups=-1``: one
            per channel); every other argument is accepted (channels on the
            last axis).
        segments: channel layout (:mod:`tfcomp.layers.slimmable`); None:
            unit ``i // (C / groups)`` at channel ``i``.

    Example:
        >>> gn = SlimmableGroupNormalization(groups=2)
        >>> gn.build((None, 4, 4, 8)); gn.set_width(0.5)
    """

    _PORTS = (("segments", "mask"),)

    def __init__(self, groups=32, segments=None, **kwargs):
        super().__init__(groups=groups, **kwargs)
        self.segments = _check_segments(segments, "segments")

    def build(self, input_shape):
        rank = len(input_shape)
        if int(self.axis) % rank != rank - 1:
            raise ValueError(
                "SlimmableGroupNormalization needs the channels on the last "
                f"axis. Received: axis={self.axis!r} for inputs of rank "
                f"{rank}")
        super().build(input_shape)
        c = int(input_shape[-1])
        g = c if int(self.groups) == -1 else int(self.groups)
        if self.segments is None:  # one unit per normalisation group
            self.segments = [{"group": "", "start": 0, "length": c,
                              "period": g, "div": c // g, "size": g,
                              "step": 1}]
        self._add_masks((c,))

    def call(self, inputs):
        return super().call(inputs) * ops.cast(self._mask(0),
                                               self.compute_dtype)

    def get_config(self):
        return self._slim_config(super().get_config())
