"""Tucker-factorised convolution kernels: :class:`TuckerConv2D` and the
pieces of T-Net (one shared Tucker tensor for several convs).

A Tucker tensor is ``W = G x_1 U_1 x_2 ... x_N U_N``: a core ``G`` of shape
``(R_1, ..., R_N)`` and one factor ``U_n`` of shape ``(I_n, R_n)`` per mode;
it holds ``prod(R) + sum(I * R)`` numbers instead of ``prod(I)``.

* :class:`TuckerConv2D`: a ``Conv2D`` whose ``(kh, kw, Cin, Cout)`` kernel is
  a 4-mode Tucker tensor; :meth:`TuckerConv2D.from_conv` factorises a built
  ``Conv2D`` by HOSVD (full rank reproduces it to float precision, lower
  ranks are the truncated HOSVD).
* :class:`TuckerTensor`: a layer holding one Tucker tensor whose first mode
  indexes layers; its call returns the reconstructed tensor (the input is
  only a graph anchor). :class:`TNetConv2D`: a conv taking its kernel as a
  second input, ``kernels[index]``. ``tfcomp.tensorized.tnet`` wires them.
* :func:`hosvd`, :func:`tucker_to_tensor`, :func:`tucker_params`,
  :func:`resolve_ranks`: the numerics, shared by both.

Why ``keras.ops`` and not ``tensorly``: tensorly is not a dependency of
tfcomp; its backend is a process-global switch, and on the TensorFlow
backend it works on ``tf.Tensor`` s, not on Keras variables (no autocast
under ``mixed_float16``, no Keras-backend independence). The
reconstruction is a single ``keras.ops.einsum`` (TensorFlow picks the
contraction order with opt_einsum); HOSVD runs once, in numpy / scipy.

Ranks: ``None`` (full), a float in (0, 1] (fraction of the dense tensor's
parameters; as TensorLy-Torch's float rank, every mode keeps the same
fraction of its size: here the largest within the budget), or one int per
mode (in ``[1, mode size]``).

Reference: Kossaifi et al., T-Net: Parametrizing Fully Convolutional Nets
with a Single High-Order Tensor, CVPR 2019, arXiv:1904.02698; HOSVD: De
Lathauwer et al., SIAM J. Matrix Anal. Appl. 2000.

Example:
    >>> conv = keras.layers.Conv2D(32, 3, padding="same")
    >>> conv.build((None, 28, 28, 16))
    >>> tucker = TuckerConv2D.from_conv(conv, ranks=(3, 3, 8, 16))
    >>> tucker.count_params() < conv.count_params()
    True
"""

from __future__ import annotations

import math
import string

import keras
import numpy as np
import scipy.linalg

__all__ = ["TuckerConv2D", "TuckerTensor", "TNetConv2D", "hosvd",
           "tucker_to_tensor", "tucker_params", "resolve_ranks",
           "CONV_MODES"]

#: Mode names of a ``Conv2D`` kernel (channels-last kernel layout).
CONV_MODES = ("kernel height", "kernel width", "input channels",
              "output channels")


def tucker_params(shape, ranks) -> int:
    """``prod(R) + sum(I * R)``: numbers held by a Tucker tensor.

    Example:
        >>> tucker_params((3, 3, 16, 32), (3, 3, 8, 8))
        978
    """
    return int(math.prod(ranks) + sum(i * r for i, r in zip(shape, ranks)))


def _fraction_ranks(shape, fraction: float) -> tuple:
    """Largest uniform scale ``s`` with ``ranks = ceil(s * I)`` holding at
    most ``fraction * prod(I)`` parameters (bisection; at least rank 1)."""
    budget = fraction * math.prod(shape)

    def ranks_at(s):
        return tuple(min(i, max(1, math.ceil(s * i - 1e-9))) for i in shape)

    lo, hi = 0.0, 1.0
    if tucker_params(shape, ranks_at(hi)) <= budget:
        return ranks_at(hi)
    for _ in range(60):
        mid = (lo + hi) / 2
        if tucker_params(shape, ranks_at(mid)) <= budget:
            lo = mid
        else:
            hi = mid
    return ranks_at(lo)


def resolve_ranks(shape, ranks, modes=None, what: str = "ranks") -> tuple:
    """Per-mode integer ranks of a tensor of ``shape``.

    Args:
        shape: the mode sizes (None: not known yet, only ``>= 1`` checked).
        ranks: None (full), a float in (0, 1] (fraction of the dense
            parameter count) or one int per mode.
        modes: mode names for error messages (default ``mode 0``...).
        what: the argument's name in error messages.

    Returns:
        A tuple of ints, one per mode.

    Raises:
        ValueError: wrong length, a rank < 1 or larger than its mode
            (the message names the mode, its size and the rank), a float
            outside (0, 1].
        TypeError: anything else.

    Example:
        >>> resolve_ranks((3, 3, 16, 32), 0.25)
        (2, 2, 8, 15)
    """
    shape = tuple(None if s is None else int(s) for s in shape)
    modes = tuple(modes) if modes is not None else tuple(
        f"mode {i}" for i in range(len(shape)))
    if ranks is None:
        return shape
    if isinstance(ranks, float):
        if not (0.0 < ranks <= 1.0) or math.isnan(ranks):
            raise ValueError(
                f"{what} as a float is the fraction of the dense parameter "
                f"count and must be in (0, 1]. Received: {what}={ranks}")
        return None if None in shape else _fraction_ranks(shape, ranks)
    if isinstance(ranks, (int, np.integer)) or not isinstance(
            ranks, (list, tuple)):
        raise TypeError(
            f"{what} must be None, a float in (0, 1] or one int per mode "
            f"{list(modes)}. Received: {what}={ranks!r}")
    if len(ranks) != len(shape):
        raise ValueError(
            f"{what} needs one rank per mode {list(modes)} ({len(shape)} "
            f"values). Received: {what}={tuple(ranks)}")
    out = []
    for mode, size, r in zip(modes, shape, ranks):
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)):
            raise TypeError(f"{what}: the rank of mode {mode!r} must be an "
                            f"int. Received: {r!r}")
        if r < 1:
            raise ValueError(
                f"{what}: the rank of mode {mode!r} must be at least 1. "
                f"Received: rank {r} in {what}={tuple(ranks)}")
        if size is not None and r > size:
            raise ValueError(
                f"{what}: the rank of mode {mode!r} must be in [1, {size}] "
                f"(the mode's size is {size}). Received: rank {r} in "
                f"{what}={tuple(ranks)}")
        out.append(int(r))
    return tuple(out)


def _unfold(tensor: np.ndarray, mode: int) -> np.ndarray:
    return np.moveaxis(tensor, mode, 0).reshape(tensor.shape[mode], -1)


def hosvd(tensor, ranks) -> tuple:
    """Truncated higher-order SVD: ``(core, [U_1, ..., U_N])``.

    ``U_n`` are the leading ``R_n`` left singular vectors of the mode-n
    unfolding (orthonormal columns, completed to a full basis when ``R_n``
    exceeds the unfolding's other dimension), ``core = W x_n U_n^T``. At
    full rank ``tucker_to_tensor(core, factors)`` equals ``tensor``.
    Computed in float64.

    Args:
        tensor: an array.
        ranks: one int per mode (see :func:`resolve_ranks`).

    Example:
        >>> core, factors = hosvd(np.ones((3, 3, 4, 4)), (1, 1, 1, 1))
        >>> core.shape, factors[2].shape
        ((1, 1, 1, 1), (4, 1))
    """
    w = np.asarray(tensor, dtype="float64")
    factors = []
    for mode, r in enumerate(ranks):
        unfolded = _unfold(w, mode)
        full = r > min(unfolded.shape)
        u = scipy.linalg.svd(unfolded, full_matrices=full,
                             lapack_driver="gesvd")[0]
        factors.append(u[:, :r])
    core = w
    for mode, u in enumerate(factors):
        core = np.moveaxis(np.tensordot(core, u, axes=([mode], [0])), -1,
                           mode)
    return core, factors


def _equation(order: int) -> str:
    if order > 26:
        raise ValueError(f"Tucker tensors of order {order} > 26 are not "
                         "supported.")
    low, up = string.ascii_lowercase[:order], string.ascii_uppercase[:order]
    return ",".join([low] + [u + c for u, c in zip(up, low)]) + "->" + up


def tucker_to_tensor(core, factors):
    """``core x_1 U_1 ... x_N U_N`` with ``keras.ops.einsum`` (numpy arrays
    go through ``np.einsum`` in float64).

    Example:
        >>> w = tucker_to_tensor(*hosvd(kernel, kernel.shape))
    """
    eq = _equation(len(factors))
    if isinstance(core, np.ndarray):
        return np.einsum(eq, core, *factors, optimize=True)
    return keras.ops.einsum(eq, core, *factors)


def _init_from_dense(dense: np.ndarray, ranks) -> tuple:
    """Truncated HOSVD of an initialiser's sample, the core rescaled so the
    reconstruction keeps the sample's Frobenius norm (the initialiser's
    variance)."""
    core, factors = hosvd(dense, ranks)
    norm = np.linalg.norm(core)
    if norm > 0:
        core = core * (np.linalg.norm(dense) / norm)
    return core, factors


class _TuckerWeights:
    """Creates / reads the ``core`` and ``factor_<n>`` variables."""

    def _add_tucker_weights(self, shape, ranks, core, factors):
        def const(value):
            return lambda shape, dtype=None: keras.ops.convert_to_tensor(
                np.asarray(value, dtype="float32"), dtype=dtype)

        self.core = self.add_weight(name="core", shape=tuple(ranks),
                                    initializer=const(core))
        self.factors = [
            self.add_weight(name=f"factor_{n}", shape=(i, r),
                            initializer=const(u))
            for n, (i, r, u) in enumerate(zip(shape, ranks, factors))]

    def set_tucker(self, core, factors) -> None:
        """Assigns a core and factors (arrays of the variables' shapes).

        Example:
            >>> layer.set_tucker(*hosvd(kernel, layer.ranks))
        """
        self.core.assign(np.asarray(core, dtype="float32"))
        for var, u in zip(self.factors, factors):
            var.assign(np.asarray(u, dtype="float32"))

    def tucker_weights(self) -> tuple:
        """``(core, [factors])`` as float64 numpy arrays.

        Example:
            >>> dense = tucker_to_tensor(*layer.tucker_weights())
        """
        core = keras.ops.convert_to_numpy(self.core).astype("float64")
        return core, [keras.ops.convert_to_numpy(u).astype("float64")
                      for u in self.factors]


@keras.saving.register_keras_serializable(package="tfcomp")
class TuckerConv2D(_TuckerWeights, keras.layers.Layer):
    """2D convolution whose kernel is a Tucker tensor over
    ``(kh, kw, Cin, Cout)``; the kernel is rebuilt by one einsum per call.

    Initialisation: ``kernel_initializer`` samples a dense kernel, whose
    truncated HOSVD (core rescaled to keep its norm) gives the core and
    factors, so the layer starts with the dense initialiser's variance.

    Args:
        filters: output channels.
        kernel_size: int or pair.
        ranks: None (full), a float in (0, 1] (fraction of the dense kernel's
            parameters) or ``(R_kh, R_kw, R_cin, R_cout)``.
        strides, padding, data_format, dilation_rate, activation, use_bias,
        kernel_initializer, bias_initializer: as ``keras.layers.Conv2D``.

    Example:
        >>> layer = TuckerConv2D(32, 3, ranks=(3, 3, 8, 8), padding="same")
        >>> y = layer(np.zeros((1, 28, 28, 16), "float32"))
    """

    def __init__(self, filters, kernel_size, ranks=None, strides=(1, 1),
                 padding="valid", data_format=None, dilation_rate=(1, 1),
                 activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        if isinstance(filters, bool) or not isinstance(
                filters, (int, np.integer)) or filters < 1:
            raise ValueError(f"filters must be a positive int. Received: "
                             f"filters={filters!r}")
        self.filters = int(filters)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.strides = _pair(strides, "strides")
        self.dilation_rate = _pair(dilation_rate, "dilation_rate")
        padding = str(padding).lower()
        if padding not in ("valid", "same"):
            raise ValueError(f"padding must be 'valid' or 'same'. Received: "
                             f"padding={padding!r}")
        self.padding = padding
        self.data_format = data_format or keras.config.image_data_format()
        if self.data_format not in ("channels_last", "channels_first"):
            raise ValueError("data_format must be 'channels_last' or "
                             f"'channels_first'. Received: {data_format!r}")
        if isinstance(ranks, (list, tuple)):
            ranks = tuple(int(r) if isinstance(r, np.integer) else r
                          for r in ranks)
        if isinstance(ranks, tuple) and len(ranks) == 4:
            # Input channels are unknown until build(): None = any size.
            resolve_ranks((*self.kernel_size, None, self.filters), ranks,
                          CONV_MODES)
        elif ranks is not None:
            resolve_ranks((None,) * 4, ranks, CONV_MODES)  # type / length
        self.ranks = ranks
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape):
        axis = -1 if self.data_format == "channels_last" else 1
        cin = input_shape[axis]
        if cin is None:
            raise ValueError("TuckerConv2D needs a known number of input "
                             f"channels. Received input_shape={input_shape}")
        self.input_channels = int(cin)
        shape = (*self.kernel_size, self.input_channels, self.filters)
        self.resolved_ranks = resolve_ranks(shape, self.ranks, CONV_MODES)
        dense = keras.ops.convert_to_numpy(
            self.kernel_initializer(shape, dtype="float32"))
        core, factors = _init_from_dense(dense, self.resolved_ranks)
        self._add_tucker_weights(shape, self.resolved_ranks, core, factors)
        self.bias = (self.add_weight(name="bias", shape=(self.filters,),
                                     initializer=self.bias_initializer)
                     if self.use_bias else None)

    @property
    def kernel(self):
        """The reconstructed ``(kh, kw, Cin, Cout)`` kernel (a tensor)."""
        return tucker_to_tensor(self.core, self.factors)

    def dense_kernel(self) -> np.ndarray:
        """The reconstructed kernel as a float32 numpy array (computed in
        float64).

        Example:
            >>> keras.layers.Conv2D(...).kernel.assign(t.dense_kernel())
        """
        return tucker_to_tensor(*self.tucker_weights()).astype("float32")

    def call(self, inputs):
        return _conv_call(self, inputs, self.kernel)

    def compute_output_shape(self, input_shape):
        return keras.layers.Conv2D(
            **_conv_kwargs(self)).compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(_conv_config(self))
        config.update({
            "ranks": list(self.ranks) if isinstance(self.ranks, tuple)
            else self.ranks,
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer)})
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("ranks"), list):
            config["ranks"] = tuple(config["ranks"])
        return cls(**config)

    @classmethod
    def from_conv(cls, conv, ranks=None, name: str | None = None):
        """A built ``TuckerConv2D`` equal to ``conv`` at full rank (the
        truncated HOSVD of its kernel at lower ranks), same bias and config.

        Args:
            conv: a built ``keras.layers.Conv2D`` (``groups == 1``).
            ranks: see the class; None keeps every mode's full size.
            name: the new layer's name (default ``conv.name``).

        Raises:
            TypeError: ``conv`` is not a built Conv2D.
            ValueError: grouped conv; ranks larger than the mode sizes.

        Example:
            >>> t = TuckerConv2D.from_conv(model.get_layer("conv2"), 0.25)
        """
        if not isinstance(conv, keras.layers.Conv2D) or not conv.built:
            raise TypeError("from_conv needs a built keras.layers.Conv2D. "
                            f"Received: {type(conv).__name__} {conv!r}")
        if getattr(conv, "groups", 1) != 1:
            raise ValueError(f"from_conv: layer {conv.name!r} is a grouped "
                             f"conv (groups={conv.groups}); only groups=1 "
                             "is supported.")
        kernel = keras.ops.convert_to_numpy(conv.kernel)
        resolved = resolve_ranks(kernel.shape, ranks, CONV_MODES)
        cfg = conv.get_config()
        layer = cls(ranks=ranks, name=name or conv.name, dtype=cfg["dtype"],
                    **{k: cfg[k] for k in _CONV_ARGS})
        cin = kernel.shape[2]
        layer.build((None, None, None, cin)
                    if layer.data_format == "channels_last"
                    else (None, cin, None, None))
        layer.set_tucker(*hosvd(kernel, resolved))
        if layer.use_bias:
            layer.bias.assign(keras.ops.convert_to_numpy(conv.bias))
        return layer


_CONV_ARGS = ("filters", "kernel_size", "strides", "padding", "data_format",
              "dilation_rate", "activation", "use_bias", "kernel_initializer",
              "bias_initializer")


def _conv_kwargs(layer) -> dict:
    cfg = layer.get_config()
    return {k: cfg[k] for k in _CONV_ARGS if k in cfg}


def _conv_config(layer) -> dict:
    return {"filters": layer.filters, "kernel_size": layer.kernel_size,
            "strides": layer.strides, "padding": layer.padding,
            "data_format": layer.data_format,
            "dilation_rate": layer.dilation_rate,
            "activation": keras.activations.serialize(layer.activation),
            "use_bias": layer.use_bias,
            "bias_initializer": keras.initializers.serialize(
                layer.bias_initializer)}


def _conv_call(layer, inputs, kernel):
    """conv + bias + activation, as ``keras.layers.Conv2D`` computes."""
    y = keras.ops.conv(inputs, kernel, strides=layer.strides,
                       padding=layer.padding, data_format=layer.data_format,
                       dilation_rate=layer.dilation_rate)
    if layer.use_bias:
        shape = ((1, 1, 1, layer.filters)
                 if layer.data_format == "channels_last"
                 else (1, layer.filters, 1, 1))
        y = y + keras.ops.reshape(layer.bias, shape)
    return layer.activation(y) if layer.activation is not None else y


def _pair(value, name: str) -> tuple:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (value, value)
    if (not isinstance(value, (list, tuple)) or len(value) != 2 or any(
            isinstance(v, bool) or not isinstance(v, (int, np.integer))
            or v < 1 for v in value)):
        raise ValueError(f"{name} must be a positive int or a pair of them. "
                         f"Received: {name}={value!r}")
    return tuple(int(v) for v in value)


@keras.saving.register_keras_serializable(package="tfcomp")
class TuckerTensor(_TuckerWeights, keras.layers.Layer):
    """One Tucker tensor as a layer: ``call(anchor)`` returns the
    reconstructed tensor of ``shape`` (no batch axis; ``anchor``, any
    tensor of the graph, only places the layer in a functional model).

    T-Net stacks same-shaped conv kernels on mode 0, so ``shape`` is
    ``(L, kh, kw, Cin, Cout)`` and :class:`TNetConv2D` ``index`` i reads
    slice i. Initialisation (when not assigned by ``tnet``):
    ``kernel_initializer`` samples each slice ``shape[1:]``, the stack's
    truncated HOSVD (norm kept) gives core and factors.

    Args:
        shape: the tensor's mode sizes.
        ranks: None, a float in (0, 1] or one int per mode.
        modes: optional mode names (errors and summaries).
        kernel_initializer: initialiser of one slice.

    Example:
        >>> t = TuckerTensor((4, 3, 3, 16, 16), ranks=0.25)
        >>> t(x).shape
        TensorShape([4, 3, 3, 16, 16])
    """

    def __init__(self, shape, ranks=None, modes=None,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        if not isinstance(shape, (list, tuple)) or not shape or any(
                isinstance(s, bool) or not isinstance(s, (int, np.integer))
                or s < 1 for s in shape):
            raise ValueError("shape must be a non-empty sequence of positive "
                             f"ints. Received: shape={shape!r}")
        self.tensor_shape = tuple(int(s) for s in shape)
        self.modes = tuple(modes) if modes is not None else None
        if self.modes is not None and len(self.modes) != len(shape):
            raise ValueError(f"modes must name each of the {len(shape)} "
                             f"modes. Received: modes={modes!r}")
        if isinstance(ranks, list):
            ranks = tuple(ranks)
        self.ranks = resolve_ranks(self.tensor_shape, ranks, self.modes)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape=None):
        dense = np.stack([keras.ops.convert_to_numpy(
            self.kernel_initializer(self.tensor_shape[1:], dtype="float32"))
            for _ in range(self.tensor_shape[0])])
        core, factors = _init_from_dense(dense, self.ranks)
        self._add_tucker_weights(self.tensor_shape, self.ranks, core,
                                 factors)

    @property
    def param_count(self) -> int:
        """``prod(R) + sum(I * R)``."""
        return tucker_params(self.tensor_shape, self.ranks)

    def call(self, inputs):
        return tucker_to_tensor(self.core, self.factors)

    def compute_output_shape(self, input_shape):
        return self.tensor_shape

    def get_config(self):
        config = super().get_config()
        config.update({
            "shape": list(self.tensor_shape), "ranks": list(self.ranks),
            "modes": list(self.modes) if self.modes is not None else None,
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer)})
        return config


@keras.saving.register_keras_serializable(package="tfcomp")
class TNetConv2D(keras.layers.Layer):
    """A 2D convolution that takes its kernel as a second input:
    ``call(inputs, kernels)`` convolves with ``kernels[index]`` (a slice of
    a :class:`TuckerTensor`'s output) and adds its own bias.

    Args:
        filters, kernel_size, strides, padding, data_format, dilation_rate,
        activation, use_bias, bias_initializer: as ``keras.layers.Conv2D``.
        index: which slice of the kernel stack (mode 0) this conv uses.

    Example:
        >>> kernels = TuckerTensor((2, 3, 3, 8, 8))(x)
        >>> y = TNetConv2D(8, 3, index=1, padding="same")(x, kernels)
    """

    def __init__(self, filters, kernel_size, index=0, strides=(1, 1),
                 padding="valid", data_format=None, dilation_rate=(1, 1),
                 activation=None, use_bias=True, bias_initializer="zeros",
                 **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        if isinstance(index, bool) or not isinstance(
                index, (int, np.integer)) or index < 0:
            raise ValueError("index must be a non-negative int. Received: "
                             f"index={index!r}")
        self.index = int(index)
        self.strides = _pair(strides, "strides")
        self.dilation_rate = _pair(dilation_rate, "dilation_rate")
        self.padding = str(padding).lower()
        self.data_format = data_format or keras.config.image_data_format()
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, inputs_shape, kernels_shape):
        want = (*self.kernel_size, self.filters)
        got = tuple(kernels_shape)
        if (len(got) != 5 or got[1:3] != want[:2] or got[4] != want[2]
                or self.index >= got[0]):
            raise ValueError(
                f"TNetConv2D {self.name!r}: the kernel stack of shape {got} "
                f"has no slice {self.index} of shape (kh, kw, Cin, Cout) = "
                f"({want[0]}, {want[1]}, Cin, {want[2]}).")
        self.bias = (self.add_weight(name="bias", shape=(self.filters,),
                                     initializer=self.bias_initializer)
                     if self.use_bias else None)

    def call(self, inputs, kernels):
        return _conv_call(self, inputs, kernels[self.index])

    def compute_output_shape(self, inputs_shape, kernels_shape):
        kw = {k: v for k, v in _conv_kwargs(self).items()
              if k != "kernel_initializer"}
        return keras.layers.Conv2D(**kw).compute_output_shape(inputs_shape)

    def conv_config(self) -> dict:
        """The equivalent ``keras.layers.Conv2D`` config (name and dtype
        kept), for :func:`tfcomp.tensorized.to_dense`.

        Example:
            >>> keras.layers.Conv2D.from_config(layer.conv_config())
        """
        cfg = self.get_config()
        cfg.pop("index")
        return cfg

    def get_config(self):
        config = super().get_config()
        config.update(_conv_config(self))
        config["index"] = self.index
        return config
