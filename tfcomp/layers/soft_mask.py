"""``SoftMask``: a trainable, non-negative scale on a tensor's channels (or
one scalar for the whole tensor), the soft mask GAL learns.

The layer multiplies its input by ``mask`` (shape ``(channels,)`` when
``per_channel``, else ``()``), initialised to ``initial_value`` (GAL: 1).
With ``units`` (one entry per input channel) the mask has one entry per
unit and channel ``c`` is scaled by ``mask[units[c]]``: channels that can
only be removed together (the input positions a grouped convolution ties
across its groups, a GroupNormalization group, a flattened feature map's
channel) share one entry.
The mask is an ordinary trainable variable, so ``.keras`` files,
checkpoints and ``tf.distribute`` strategies keep and mirror it; who
updates it decides that it stays >= 0: GAL's :class:`FISTA`, a Keras
optimizer (proximal L1 step, clamp at 0) defined here with the mask.

Reference: Lin et al., Towards Optimal Structured CNN Pruning via
Generative Adversarial Learning, CVPR 2019, arXiv:1903.09291.

Example:
    >>> layer = SoftMask(per_channel=True)
    >>> y = layer(np.ones((2, 4, 4, 8), "float32"))
    >>> tuple(layer.mask.shape)
    (8,)
"""

from __future__ import annotations

import keras
from keras import ops

from tfcomp._io import check_number, check_positive_int
from tfcomp.graph.walk import iter_leaf_layers

__all__ = ["FISTA", "SoftMask", "gal_masks", "has_soft_masks"]


@keras.saving.register_keras_serializable(package="tfcomp")
class SoftMask(keras.layers.Layer):
    """Multiplies its input by a learned mask (per channel or a scalar).

    Args:
        per_channel: one mask entry per channel (last axis); False: one
            scalar for the whole tensor (a residual branch, GAL's block
            mask).
        initial_value: the mask's initial value (GAL: 1.0).
        units: optional, per_channel only: the mask entry of each input
            channel (ints ``0..n-1``, each used; the mask has ``n``
            entries). None: one entry per channel.
        **kwargs: ``keras.layers.Layer`` arguments (``name``, ``dtype``).

    Example:
        >>> x = keras.Input((8, 8, 16))
        >>> y = SoftMask(name="branch_mask", per_channel=False)(x)
        >>> tied = SoftMask(units=[0, 1, 0, 1])  # 4 channels, 2 entries
    """

    def __init__(self, per_channel: bool = True, initial_value: float = 1.0,
                 units=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(per_channel, bool):
            raise TypeError("per_channel must be a bool. Received: "
                            f"per_channel={per_channel!r}")
        if isinstance(initial_value, bool) or not isinstance(
                initial_value, (int, float)) or initial_value < 0:
            raise ValueError("initial_value must be a number >= 0. "
                             f"Received: initial_value={initial_value!r}")
        self.per_channel = per_channel
        self.initial_value = float(initial_value)
        self.units = _check_units(units, per_channel)
        self.mask = None

    def build(self, input_shape):
        shape = ()
        if self.per_channel:
            channels = input_shape[-1]
            if channels is None:
                raise ValueError(
                    f"SoftMask {self.name!r} needs a known channel axis. "
                    f"Received: input_shape={input_shape}")
            shape = (int(channels),)
            if self.units is not None:
                if len(self.units) != int(channels):
                    raise ValueError(
                        f"SoftMask {self.name!r}: units has {len(self.units)}"
                        f" entries but the input has {channels} channels. "
                        f"Received: input_shape={input_shape}")
                shape = (max(self.units) + 1,)
        self.mask = self.add_weight(
            name="mask", shape=shape,
            initializer=keras.initializers.Constant(self.initial_value),
            trainable=True, dtype="float32")

    def call(self, inputs):
        mask = self.mask
        if self.units is not None:
            mask = ops.take(mask, ops.convert_to_tensor(self.units, "int32"))
        return inputs * ops.cast(mask, inputs.dtype)

    def channel_mask(self):
        """The mask per input channel as a numpy array (``mask`` expanded
        by ``units``; a scalar mask as a 0-d array).

        Example:
            >>> SoftMask(units=[0, 1, 0])  # channel_mask(): [m0, m1, m0]
        """
        m = keras.ops.convert_to_numpy(self.mask)
        return m if self.units is None else m[list(self.units)]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "per_channel": self.per_channel,
                "initial_value": self.initial_value,
                "units": None if self.units is None else list(self.units)}


def _check_units(units, per_channel):
    """``units`` as a tuple of ints (or None), validated."""
    if units is None:
        return None
    if not per_channel:
        raise ValueError("units needs per_channel=True. Received: "
                         f"per_channel={per_channel!r}, units={units!r}")
    try:
        out = tuple(int(u) for u in units)
    except (TypeError, ValueError):
        raise TypeError("units must be a sequence of ints. Received: "
                        f"units={units!r}") from None
    if not out or min(out) < 0 or set(out) != set(range(max(out) + 1)):
        raise ValueError("units must use each of 0..n-1 (n mask entries). "
                         f"Received: units={units!r}")
    return out


@keras.saving.register_keras_serializable(package="tfcomp")
class FISTA(keras.optimizers.Optimizer):
    """GAL's proximal update of the soft masks, every ``mask_step`` steps.

    At steps ``k`` with ``(k + 1) % mask_step == 0`` (other steps leave the
    masks alone): ``alpha' = (1 + sqrt(1 + 4 alpha^2)) / 2``,
    ``y = x + (alpha - 1) / alpha' * (x - x_prev)``, ``z = y - lr * g``,
    ``x <- max(soft_threshold(z, lr * lam), 0) = max(z - lr * lam, 0)``.
    On the first step and whenever the learning rate differs from the one
    of the previous FISTA step (a decay), ``alpha = 1`` and ``y = x``.

    Args:
        learning_rate: float, schedule or callable (GAL passes the
            student optimizer's current rate).
        lam: the L1 weight (threshold ``lr * lam``; times the entry's
            weight in ``l1_weights``, a list of arrays in the order of the
            variables, when set: GAL's ``lam_weights="macs"``).
        mask_step: batches between two FISTA steps.

    Example:
        >>> opt = FISTA(0.01, lam=0.6, mask_step=1)
        >>> opt.apply([g], [mask_variable])
    """

    def __init__(self, learning_rate=0.01, lam: float = 0.0,
                 mask_step: int = 200, name: str = "fista", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.lam = check_number(lam, "lam", minimum=0.0)
        self.mask_step = check_positive_int(mask_step, "mask_step")
        self.l1_weights = None  # per-variable entry weights (GAL sets them)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._prev = [self.add_variable_from_reference(v, "prev")
                      for v in variables]
        self._alpha = [self.add_variable_from_reference(
            v, "alpha", initializer="ones") for v in variables]
        self._last_lr = [self.add_variable((), initializer="zeros",
                                           dtype="float32", name="last_lr")
                         for _ in variables]

    def update_step(self, gradient, variable, learning_rate):
        i = self._get_variable_index(variable)
        prev, alpha, last = self._prev[i], self._alpha[i], self._last_lr[i]
        x = ops.convert_to_tensor(variable)
        lr = ops.cast(learning_rate, x.dtype)
        g = ops.cast(gradient, x.dtype)
        do = ops.equal(ops.mod(ops.cast(self.iterations, "int64") + 1,
                               self.mask_step), 0)
        # last_lr starts at 0: the first step resets too
        reset = ops.not_equal(ops.cast(last, x.dtype), lr)
        a = ops.convert_to_tensor(alpha)
        a_new = ops.where(reset, ops.ones_like(a),
                          (1.0 + ops.sqrt(1.0 + 4.0 * a * a)) / 2.0)
        y = ops.where(reset, x, x + (a - 1.0) / a_new * (x - prev))
        lam = self.lam
        if self.l1_weights is not None:  # per-entry weights of the L1 term
            lam = lam * ops.cast(self.l1_weights[i], x.dtype)
        new = ops.maximum(y - lr * g - lr * lam, 0.0)
        self.assign(prev, ops.where(do, x, prev))
        self.assign(alpha, ops.where(do, a_new, a))
        self.assign(last, ops.where(do, ops.cast(lr, last.dtype), last))
        self.assign(variable, ops.where(do, new, x))

    def get_config(self):
        config = super().get_config()
        if callable(self._learning_rate) and not isinstance(
                self._learning_rate,
                keras.optimizers.schedules.LearningRateSchedule):
            config["learning_rate"] = 0.01
        return {**config, "lam": self.lam, "mask_step": self.mask_step}


def gal_masks(model) -> dict:
    """``{mask layer name: mask values}`` of a GAL student.

    Example:
        >>> sum(int((m == 0).sum()) for m in gal_masks(student).values())
    """
    return {lyr.name: keras.ops.convert_to_numpy(lyr.mask)
            for _, lyr in iter_leaf_layers(model)
            if isinstance(lyr, SoftMask)}


def has_soft_masks(model) -> bool:
    """Whether ``model`` holds GAL soft masks."""
    return any(isinstance(lyr, SoftMask) for _, lyr in iter_leaf_layers(model))
