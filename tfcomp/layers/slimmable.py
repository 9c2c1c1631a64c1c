"""Slimmable layers: one shared kernel run at several widths.

At width ``w`` a slimmable layer uses the first ``n = floor(w * C)`` output
channels and the matching input channels of its full kernel (Slimmable
Networks). Shapes stay static, which ``tf.function``, ``MirroredStrategy``
and the functional graph need: the inactive channels are *masked*, not
sliced. The kernel is multiplied by a 0/1 input mask and a 0/1 output mask
(and the bias by the output mask), so inactive outputs are exactly 0 and
inactive inputs are ignored whatever value they carry. A slimmable layer
at width ``w`` therefore computes, on its first ``n`` channels, exactly
what a plain layer holding the sliced kernel ``kernel[..., :n_in, :n_out]``
computes, and a slimmable model at width ``w`` equals the plain model with
only the first channels (``tfcomp.pruning.export_width`` builds that
model). The price: training and inference of the masked form cost the full
width's MACs; the exported model has the small width's MACs.

The active width lives in non-trainable variables (``in_mask``,
``out_mask``, BN ``switch``), so checkpoints and ``.keras`` files keep it
and compiled functions read it without retracing. ``layer.set_width(w)``
sets it. Inside :func:`width_scope` (the sandwich train step) the masks are
computed in the graph from the scope's width instead, which may be a
tensor (a width sampled per step).

Positions of a port may belong to several channel groups (the input of a
layer after a ``Concatenate``, the ``Flatten`` expansion before a Dense);
``in_segments`` / ``out_segments`` describe them. A segment is a dict
``{"group", "start", "length", "period", "div", "size", "step"}``:
position ``start + i`` carries group unit ``(i // div) % period`` of group
``group`` (``size`` units, kept counts multiples of ``step``); positions no
segment covers always stay active. ``None`` (a standalone layer) means one
segment covering the whole port. ``tfcomp.pruning.to_slimmable`` fills them
from the dependency graph.

Kept count of a group of ``size`` units at width ``w`` with step ``s``:
``min(size, max(s, ceil(floor(w * size) / s) * s))``; the paper's
``floor(w * C)`` when ``s == 1``.

Layers here: ``SlimmableConv2D`` (grouped too), ``SlimmableDepthwiseConv2D``,
``SlimmableDense``, ``SwitchableBatchNormalization``; Conv1D / Conv3D,
SeparableConv1D/2D and Conv1D/2D/3DTranspose twins are in
:mod:`tfcomp.layers.slimmable_conv` (same N-D conv code),
``SlimmableGroupNormalization`` in :mod:`tfcomp.layers.slimmable_norm`;
:mod:`tfcomp.layers.slimmable_groups` maps each Keras class to its twin
(``SLIMMABLE_CLASSES``) and reads a dependency-graph group's segments.
channels_first layers, LayerNormalization, MultiHeadAttention and other
layers without a twin keep their groups at full width.

``SwitchableBatchNormalization`` keeps private gamma, beta and moving
statistics per width switch (S-Nets); ``shared_affine=True`` shares gamma
and beta and keeps statistics per switch (universally slimmable networks,
whose statistics are recalibrated per width after training).

Reference: Yu et al., Slimmable Neural Networks, ICLR 2019,
arXiv:1812.08928.
Reference: Yu & Huang, Universally Slimmable Networks and Improved Training
Techniques, ICCV 2019, arXiv:1903.05134.

Example:
    >>> layer = SlimmableConv2D(16, 3, padding="same")
    >>> y = layer(np.zeros((1, 8, 8, 4), "float32"))
    >>> layer.set_width(0.5)       # first 8 filters, first 2 input channels
"""

from __future__ import annotations

import contextlib
import math

import keras
import numpy as np
from keras import ops

__all__ = ["SlimmableConv2D", "SlimmableDense", "SlimmableDepthwiseConv2D",
           "SwitchableBatchNormalization", "active_count", "check_widths",
           "full_segment", "width_scope"]

_EPS = 1e-6
_SEGMENT_KEYS = ("group", "start", "length", "period", "div", "size", "step")
# Width overrides of the sandwich train step (innermost last).
_SCOPES: list = []


@contextlib.contextmanager
def width_scope(width=None, switch=None, batch_stats: bool = False):
    """Runs slimmable layers at ``width`` (and BN slot ``switch``).

    Args:
        width: a float or scalar tensor in (0, 1]; None keeps each layer's
            own masks.
        switch: BN slot (int or int tensor); None keeps each layer's own.
        batch_stats: BN layers normalise with the batch's statistics and
            leave their moving statistics alone (AutoSlim's evaluation).

    Example:
        >>> with width_scope(0.25, switch=0):
        ...     y = model(x, training=True)
    """
    _SCOPES.append({"width": width, "switch": switch,
                    "batch_stats": bool(batch_stats)})
    try:
        yield
    finally:
        _SCOPES.pop()


def _scope() -> dict:
    return _SCOPES[-1] if _SCOPES else {}


def active_count(width: float, size: int, step: int = 1) -> int:
    """Kept units of a group of ``size`` at ``width`` (see module doc).

    Example:
        >>> active_count(0.5, 16), active_count(0.3, 16, step=3)
        (8, 6)
    """
    n = math.floor(float(width) * size + _EPS)
    n = math.ceil(n / step) * step
    return int(min(size, max(step, n)))


def full_segment(size: int, group: str = "") -> dict:
    """One segment covering a whole port of ``size`` channels."""
    return {"group": group, "start": 0, "length": int(size),
            "period": int(size), "div": 1, "size": int(size), "step": 1}


def _check_segments(segments, name):
    if segments is None:
        return None
    if not isinstance(segments, (list, tuple)):
        raise TypeError(f"{name} must be a list of segment dicts or None. "
                        f"Received: {name}={segments!r}")
    out = []
    for s in segments:
        if not isinstance(s, dict) or set(s) != set(_SEGMENT_KEYS):
            raise ValueError(f"Each entry of {name} must be a dict with keys "
                             f"{_SEGMENT_KEYS}. Received: {s!r}")
        out.append({k: (str(s[k]) if k == "group" else int(s[k]))
                    for k in _SEGMENT_KEYS})
    return out


def _unit_table(segments, size):
    """Per position: unit (-1 uncovered), group size, step, group id."""
    units = np.full(size, -1, "int64")
    sizes = np.ones(size, "int64")
    steps = np.ones(size, "int64")
    groups = np.full(size, "", dtype=object)
    for s in segments:
        a, n = s["start"], s["length"]
        if a < 0 or a + n > size:
            raise ValueError(f"Segment {s} does not fit a port of {size} "
                             "channels.")
        i = np.arange(n)
        units[a:a + n] = (i // s["div"]) % s["period"]
        sizes[a:a + n] = s["size"]
        steps[a:a + n] = s["step"]
        groups[a:a + n] = s["group"]
    return units, sizes, steps, groups


def host_mask(segments, size, width) -> np.ndarray:
    """0/1 mask of a port for a float width or ``{group: kept units}``."""
    units, sizes, steps, groups = _unit_table(segments, size)
    keep = np.ones(size, bool)
    for i in np.flatnonzero(units >= 0):
        if isinstance(width, dict):
            n = width.get(groups[i])
            if n is None:
                continue
        else:
            n = active_count(width, int(sizes[i]), int(steps[i]))
        keep[i] = units[i] < n
    return keep.astype("float32")


def _graph_mask(segments, size, width, dtype):
    """The mask of a port at a (possibly tensor) width, in the graph."""
    units, sizes, steps, _ = _unit_table(segments, size)
    if (units < 0).all():
        return ops.ones((size,), dtype)
    w = ops.cast(width, "float32")
    sz = ops.convert_to_tensor(sizes.astype("float32"))
    st = ops.convert_to_tensor(steps.astype("float32"))
    n = ops.floor(w * sz + _EPS)
    n = ops.minimum(sz, ops.maximum(st, ops.ceil(n / st) * st))
    u = ops.convert_to_tensor(units.astype("float32"))
    active = ops.logical_or(u < n, u < 0)
    return ops.cast(active, dtype)


class _SlimMixin:
    """Mask variables and width switching shared by the slimmable layers."""

    _PORTS: tuple = ()  # ((config attribute, variable attribute), ...)

    def _add_masks(self, sizes):
        for (seg_attr, var_attr), size in zip(self._PORTS, sizes):
            if getattr(self, seg_attr) is None:
                setattr(self, seg_attr, [full_segment(size)])
            setattr(self, var_attr, self.add_weight(
                name=var_attr, shape=(size,), initializer="ones",
                trainable=False, aggregation="only_first_replica"))

    def _mask(self, port: int):
        seg_attr, var_attr = self._PORTS[port]
        var = getattr(self, var_attr)
        width = _scope().get("width")
        if width is None:
            return ops.cast(var, self.compute_dtype)
        return _graph_mask(getattr(self, seg_attr), int(var.shape[0]), width,
                           self.compute_dtype)

    def set_width(self, width) -> None:
        """Sets the masks for a float width in (0, 1] or per-group kept
        units ``{group: n}`` (segments of other groups stay whole).

        Example:
            >>> layer.set_width(0.5)
        """
        if not isinstance(width, dict):
            width = _check_width(width)
        for seg_attr, var_attr in self._PORTS:
            var = getattr(self, var_attr)
            var.assign(host_mask(getattr(self, seg_attr), int(var.shape[0]),
                                 width))

    # Keras' Conv / Dense save only their kernel and bias: save every
    # variable (the masks too), as the base Layer does.
    def save_own_variables(self, store):
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store):
        keras.layers.Layer.load_own_variables(self, store)

    def _slim_config(self, config):
        for seg_attr, _ in self._PORTS:
            config[seg_attr] = getattr(self, seg_attr)
        return config


def _check_width(width) -> float:
    if isinstance(width, bool) or not isinstance(width, (int, float,
                                                         np.floating)):
        raise TypeError(f"width must be a float in (0, 1]. Received: "
                        f"width={width!r}")
    w = float(width)
    if not 0.0 < w <= 1.0:
        raise ValueError(f"width must be in (0, 1]. Received: width={w}")
    return w


def check_widths(widths) -> tuple:
    """Sorted unique widths, each in (0, 1].

    Example:
        >>> check_widths([1.0, 0.25])
        (0.25, 1.0)
    """
    if isinstance(widths, (int, float)) or not hasattr(widths, "__iter__"):
        raise TypeError("widths must be a list of floats in (0, 1]. "
                        f"Received: widths={widths!r}")
    out = []
    for w in widths:
        try:
            out.append(_check_width(w))
        except (TypeError, ValueError):
            raise ValueError("widths must all be in (0, 1]. Received: "
                             f"widths={list(widths)!r}") from None
    if not out:
        raise ValueError("widths is empty. Received: widths=[]")
    return tuple(sorted(set(out)))


def _channels_last(layer):
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise ValueError(f"{type(layer).__name__} supports channels_last "
                         f"only. Received: data_format={layer.data_format!r}")


class _SlimConvMixin(_SlimMixin):
    """Conv1D/2D/3D of any rank: kernel ``(*k, in / groups, out)`` masked
    on its input and output channel axes (``channels_last``). A grouped
    conv's input mask covers one group's channels (the same positions in
    every group)."""

    _PORTS = (("in_segments", "in_mask"), ("out_segments", "out_mask"))

    def __init__(self, filters, kernel_size, in_segments=None,
                 out_segments=None, **kwargs):
        super().__init__(filters, kernel_size, **kwargs)
        _channels_last(self)
        self.in_segments = _check_segments(in_segments, "in_segments")
        self.out_segments = _check_segments(out_segments, "out_segments")

    def build(self, input_shape):
        super().build(input_shape)
        self._add_masks(self._port_sizes(int(input_shape[-1])))

    def _port_sizes(self, cin):
        # a grouped conv's input port is one group's channels (kernel -2)
        return (cin // int(getattr(self, "groups", 1) or 1), int(self.filters))

    def _masked_kernel(self):
        return self.kernel * self._mask(0)[:, None] * self._mask(1)

    def _conv(self, inputs, kernel):
        padding = self.padding
        if padding == "causal":  # Conv1D: pad on the left, then "valid"
            left = self.dilation_rate[0] * (self.kernel_size[0] - 1)
            inputs = ops.pad(inputs, [[0, 0], [left, 0], [0, 0]])
            padding = "valid"
        return ops.conv(inputs, kernel, strides=self.strides,
                        padding=padding, dilation_rate=self.dilation_rate,
                        data_format=self.data_format)

    def call(self, inputs):
        y = self._conv(inputs, self._masked_kernel())
        return self._bias_act(y, self._mask(len(self._PORTS) - 1))

    def _bias_act(self, y, out_mask):
        if self.use_bias:
            y = y + self.bias * out_mask
        if self.activation is not None:
            y = self.activation(y)
        return y

    def get_config(self):
        return self._slim_config(super().get_config())


@keras.saving.register_keras_serializable(package="tfcomp")
class SlimmableConv2D(_SlimConvMixin, keras.layers.Conv2D):
    """``Conv2D`` whose active width masks its input and output channels.

    Args:
        filters, kernel_size: as ``keras.layers.Conv2D``
            (``channels_last``); every other Conv2D argument is accepted
            (``groups`` too: ``in_segments`` then describe one group's
            ``C / groups`` input positions).
        in_segments, out_segments: channel layout of the input / output
            (module doc); None: one segment over the whole port.

    Example:
        >>> conv = SlimmableConv2D(8, 3, padding="same")
        >>> conv.build((None, 8, 8, 4)); conv.set_width(0.5)
    """


@keras.saving.register_keras_serializable(package="tfcomp")
class SlimmableDepthwiseConv2D(_SlimMixin, keras.layers.DepthwiseConv2D):
    """``DepthwiseConv2D`` whose active width masks its channels.

    Output channel ``c * m + j`` follows input channel ``c``; ``segments``
    describe the output channels (input ``c`` is active with output
    ``c * m``).

    Args:
        kernel_size: as ``keras.layers.DepthwiseConv2D``; every other
            argument is accepted (``channels_last``).
        segments: channel layout of the output (module doc).

    Example:
        >>> dw = SlimmableDepthwiseConv2D(3, padding="same")
    """

    _PORTS = (("segments", "out_mask"),)

    def __init__(self, kernel_size, segments=None, **kwargs):
        super().__init__(kernel_size, **kwargs)
        _channels_last(self)
        self.segments = _check_segments(segments, "segments")

    def build(self, input_shape):
        super().build(input_shape)
        cin = int(input_shape[-1])
        self._add_masks((cin * int(self.depth_multiplier),))

    def call(self, inputs):
        out_mask = self._mask(0)
        cin = int(self.kernel.shape[-2])
        m = int(self.depth_multiplier)
        kernel = self.kernel * ops.reshape(out_mask, (cin, m))
        y = ops.depthwise_conv(inputs, kernel, strides=self.strides,
                               padding=self.padding,
                               dilation_rate=self.dilation_rate,
                               data_format=self.data_format)
        if self.use_bias:
            y = y + self.bias * out_mask
        if self.activation is not None:
            y = self.activation(y)
        return y

    def get_config(self):
        return self._slim_config(super().get_config())


@keras.saving.register_keras_serializable(package="tfcomp")
class SlimmableDense(_SlimMixin, keras.layers.Dense):
    """``Dense`` whose active width masks its input and output units.

    Args:
        units: as ``keras.layers.Dense``; every other argument is accepted.
        in_segments, out_segments: layout of the input / output (a Dense
            after ``Flatten`` reads channel ``p % C`` at position ``p``:
            ``period=C``).

    Example:
        >>> fc = SlimmableDense(10)
    """

    _PORTS = (("in_segments", "in_mask"), ("out_segments", "out_mask"))

    def __init__(self, units, in_segments=None, out_segments=None, **kwargs):
        super().__init__(units, **kwargs)
        self.in_segments = _check_segments(in_segments, "in_segments")
        self.out_segments = _check_segments(out_segments, "out_segments")

    def build(self, input_shape):
        super().build(input_shape)
        self._add_masks((int(input_shape[-1]), int(self.units)))

    def call(self, inputs, training=None):
        out_mask = self._mask(1)
        kernel = self.kernel * self._mask(0)[:, None] * out_mask
        y = ops.matmul(inputs, kernel)
        if self.use_bias:
            y = y + self.bias * out_mask
        if self.activation is not None:
            y = self.activation(y)
        return y

    def get_config(self):
        return self._slim_config(super().get_config())


@keras.saving.register_keras_serializable(package="tfcomp")
class SwitchableBatchNormalization(_SlimMixin, keras.layers.Layer):
    """BatchNorm with private parameters and statistics per width switch.

    ``gamma``, ``beta``, ``moving_mean`` and ``moving_variance`` have shape
    ``(num_switches, C)``; the scalar ``switch`` variable (or the
    :func:`width_scope` switch) picks the row. ``shared_affine=True`` keeps
    one ``(C,)`` gamma and beta (universally slimmable networks: only the
    statistics are per width, recalibrated after training). Inactive
    channels are set to 0. Normalises the last axis only.

    Args:
        num_switches: number of width switches (rows).
        shared_affine: one gamma / beta for every switch.
        momentum, epsilon, center, scale: as ``BatchNormalization``.
        segments: channel layout (module doc).

    Example:
        >>> bn = SwitchableBatchNormalization(num_switches=4)
        >>> bn.build((None, 8, 8, 16)); bn.set_switch(0)
    """

    _PORTS = (("segments", "mask"),)

    def __init__(self, num_switches: int = 4, shared_affine: bool = False,
                 momentum: float = 0.99, epsilon: float = 1e-3,
                 center: bool = True, scale: bool = True, segments=None,
                 **kwargs):
        super().__init__(**kwargs)
        if isinstance(num_switches, bool) or not isinstance(
                num_switches, (int, np.integer)) or num_switches < 1:
            raise ValueError("num_switches must be an integer >= 1. "
                             f"Received: num_switches={num_switches!r}")
        if not 0.0 <= float(momentum) <= 1.0:
            raise ValueError(f"momentum must be in [0, 1]. Received: "
                             f"momentum={momentum!r}")
        self.num_switches = int(num_switches)
        self.shared_affine = bool(shared_affine)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.center = bool(center)
        self.scale = bool(scale)
        self.segments = _check_segments(segments, "segments")
        self.supports_masking = True

    def build(self, input_shape):
        c = int(input_shape[-1])
        k = self.num_switches
        affine = (c,) if self.shared_affine else (k, c)
        self.gamma = self.add_weight(
            name="gamma", shape=affine, initializer="ones",
            trainable=True, autocast=False) if self.scale else None
        self.beta = self.add_weight(
            name="beta", shape=affine, initializer="zeros",
            trainable=True, autocast=False) if self.center else None
        self.moving_mean = self.add_weight(
            name="moving_mean", shape=(k, c), initializer="zeros",
            trainable=False, autocast=False)
        self.moving_variance = self.add_weight(
            name="moving_variance", shape=(k, c), initializer="ones",
            trainable=False, autocast=False)
        self.switch = self.add_weight(
            name="switch", shape=(), initializer="zeros", dtype="int32",
            trainable=False, aggregation="only_first_replica")
        self._add_masks((c,))

    def set_switch(self, switch: int) -> None:
        """Selects the row of parameters used outside a width scope."""
        if not 0 <= int(switch) < self.num_switches:
            raise ValueError(f"switch must be in [0, {self.num_switches}). "
                             f"Received: switch={switch!r}")
        self.switch.assign(int(switch))

    def _row(self, var, k):
        if var is None:
            return None
        if len(var.shape) == 1:
            return var
        return ops.take(var, k, axis=0)

    def call(self, inputs, training=None, mask=None):
        del mask  # per-channel: a Keras mask passes through unchanged
        scope = _scope()
        k = scope.get("switch")
        k = self.switch if k is None else k
        k = ops.cast(k, "int32")
        mask = ops.cast(self._mask(0), "float32")
        x = ops.cast(inputs, "float32")
        axes = list(range(len(inputs.shape) - 1))
        if training or scope.get("batch_stats"):
            mean, var = ops.moments(x, axes=axes)
            if training and not scope.get("batch_stats"):
                hot = ops.one_hot(k, self.num_switches)[:, None]
                rate = (1.0 - self.momentum) * hot
                self.moving_mean.assign(
                    self.moving_mean + rate * (mean - self.moving_mean))
                self.moving_variance.assign(
                    self.moving_variance
                    + rate * (var - self.moving_variance))
        else:
            mean = self._row(self.moving_mean, k)
            var = self._row(self.moving_variance, k)
        y = (x - mean) * ops.rsqrt(var + self.epsilon)
        gamma, beta = self._row(self.gamma, k), self._row(self.beta, k)
        if gamma is not None:
            y = y * gamma
        if beta is not None:
            y = y + beta
        return ops.cast(y * mask, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"num_switches": self.num_switches,
                       "shared_affine": self.shared_affine,
                       "momentum": self.momentum, "epsilon": self.epsilon,
                       "center": self.center, "scale": self.scale})
        return self._slim_config(config)
