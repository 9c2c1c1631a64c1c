"""Per-layer cost formulas behind :mod:`tfcomp.cost`: MACs, params, BOPs, bytes.

The public formulas (:func:`weight_count`, :func:`param_count`,
:func:`layer_macs`, :func:`einsum_macs`, :func:`attention_macs`,
:func:`bops`, :func:`size_bytes`, :func:`activation_bytes`) are re-exported
by ``tfcomp.cost``: import them from there. ``_count_macs`` gives the MACs
of one called Keras layer (batch 1) by its type, with the conventions listed
in ``tfcomp.cost``'s docstring; ``tfcomp.cost.profile`` calls it per layer.
Keras is imported on first use only.

Example:
    >>> from tfcomp.cost import bops, layer_macs
    >>> bops(layer_macs(14 * 14, (3, 3), 16, 32), 4, 8)  # 3x3 conv at W4A8
    28901376
"""

from __future__ import annotations

import functools
import math
from typing import Iterable

from tfcomp._identity import INFERENCE_IDENTITY
from tfcomp._identity import keras_layer_classes as _keras_classes

__all__ = [
    "activation_bytes", "attention_macs", "bops", "einsum_axis_sizes",
    "einsum_macs", "is_keras_op", "layer_macs", "op_macs", "param_count",
    "size_bytes", "weight_count",
]


def _prod(xs: Iterable) -> int:
    return int(math.prod(int(x) for x in xs))


# ------------------------------------------------------------- the formulas


def weight_count(kernel_size, cin: int, cout: int, groups: int = 1) -> int:
    """Kernel weights of a convolution or dense layer (no bias):
    ``prod(kernel_size) * (cin // groups) * cout``.

    Args:
        kernel_size: spatial kernel, e.g. ``(3, 3)``; ``()`` for dense.
        cin, cout: input and output channels.
        groups: convolution groups (``cin`` for a depthwise convolution,
            whose ``cout`` is ``cin * depth_multiplier``).

    Example:
        >>> weight_count((3, 3), 16, 32)
        4608
        >>> weight_count((3, 3), 8, 16, groups=8)  # depthwise, multiplier 2
        144
    """
    cin, cout, groups = int(cin), int(cout), int(groups)
    if groups < 1 or cin % groups:
        raise ValueError(f"groups must divide cin. Received: groups={groups},"
                         f" cin={cin}")
    return _prod(kernel_size) * (cin // groups) * cout


def param_count(kernel_size, cin: int, cout: int, groups: int = 1,
                use_bias: bool = True) -> int:
    """Parameters of a convolution or dense layer: kernel weights plus
    ``cout`` biases when ``use_bias``.

    Example:
        >>> param_count((), 64, 10)  # Dense(10) on 64 features
        650
    """
    return weight_count(kernel_size, cin, cout, groups) + (
        int(cout) if use_bias else 0)


def layer_macs(positions: int, kernel_size, cin: int, cout: int,
               groups: int = 1) -> int:
    """MACs of a convolution or dense layer: ``positions`` (output pixels
    times batch; input pixels for a transposed convolution; the input's
    middle axes for dense) times :func:`weight_count`.

    Example:
        >>> layer_macs(14 * 14, (3, 3), 16, 32)  # 3x3 conv, 14x14 output
        903168
    """
    return int(positions) * weight_count(kernel_size, cin, cout, groups)


def einsum_axis_sizes(equation: str, input_shape, kernel_shape) -> tuple:
    """``(input letters, kernel letters, output letters, {letter: size},
    ellipsis size)`` of an ``EinsumDense`` equation at batch 1 (the batch
    letter counts 1; a leading ``...`` folds into the ellipsis size).

    Example:
        >>> einsum_axis_sizes("abc,cd->abd", (None, 5, 8), (8, 4))[3]
        {'a': 1, 'b': 5, 'c': 8, 'd': 4}
    """
    lhs, out = str(equation).replace(" ", "").split("->")
    a, k = lhs.split(",")
    x = tuple(input_shape)
    sizes: dict = {}
    ellipsis = 1
    if a.startswith("..."):
        rest = a[3:]
        n_ell = len(x) - len(rest)
        ellipsis = _prod(d or 1 for d in x[1:n_ell])
        axes = zip(rest, x[n_ell:])
    else:
        sizes[a[0]] = 1  # the batch axis
        axes = zip(a[1:], x[1:])
    for ch, d in axes:
        sizes.setdefault(ch, int(d or 1))
    for ch, d in zip(k, tuple(kernel_shape)):
        sizes.setdefault(ch, int(d))
    return a, k, out, sizes, ellipsis


def einsum_macs(equation: str, input_shape, kernel_shape,
                output_shape=None) -> int:
    """MACs of an ``EinsumDense`` (batch 1): the product of the sizes of
    every index of ``equation`` (input, kernel and output indices, each
    once; the input's first axis is the batch and counts 1, an ellipsis
    counts the input's axes it covers).

    Args:
        equation: e.g. ``"abc,cd->abd"``.
        input_shape: the input's shape, batch axis included.
        kernel_shape: the kernel's shape.
        output_shape: the output's shape (batch included), for output-only
            indices (rare); optional.

    Example:
        >>> einsum_macs("abc,cd->abd", (None, 5, 8), (8, 4))  # 5 * 8 * 4
        160
        >>> einsum_macs("abc,cde->abde", (None, 5, 8), (8, 2, 4))
        320
    """
    a, k, out, sizes, ellipsis = einsum_axis_sizes(equation, input_shape,
                                                   kernel_shape)
    if output_shape is not None:
        y = tuple(output_shape)
        o = out[3:] if out.startswith("...") else out
        for ch, d in zip(reversed(o), reversed(y)):
            sizes.setdefault(ch, int(d or 1))
    letters = set(a + k + out) - {"."}
    return ellipsis * _prod(sizes.get(ch, 1) for ch in letters)


def attention_macs(query_shape, key_shape, num_heads: int, key_dim: int,
                   value_dim: int | None = None, value_features=None,
                   key_features=None, output_features=None,
                   attention_axes=None) -> int:
    """MACs of a ``MultiHeadAttention`` call (batch 1, no bias).

    With ``T`` the query positions (all axes between batch and features),
    ``S`` the key positions on the attention axes and ``Sa`` all key
    positions, ``H`` heads of size ``Kd`` / ``Vd``::

        Q projection    T  * dq * H * Kd
        K projection    Sa * dk * H * Kd
        V projection    Sa * dv * H * Vd
        Q K^T           H * T * S * Kd
        softmax(.) V    H * T * S * Vd
        output          T  * H * Vd * dout

    Args:
        query_shape, key_shape: ``(batch, *positions, features)``; the
            value has the key's positions.
        num_heads, key_dim, value_dim: the layer's arguments (``value_dim``
            defaults to ``key_dim``).
        value_features, key_features: ``dv`` / ``dk`` (default: the key
            shape's last axis).
        output_features: ``dout``, the product of the output's feature
            axes (default: the query's last axis).
        attention_axes: the axes attention runs over (default: every axis
            between batch and features).

    Example:
        >>> attention_macs((None, 5, 8), (None, 7, 6), num_heads=2,
        ...                key_dim=4)
        ... # Q 5*8*8 + K 7*6*8 + V 7*6*8 + QK 2*5*7*4 + AV 2*5*7*4 + O 5*8*8
        1872
    """
    q, kv = tuple(query_shape), tuple(key_shape)
    h, kd = int(num_heads), int(key_dim)
    vd = int(value_dim or key_dim)
    dq = int(q[-1])
    dk = int(key_features or kv[-1])
    dv = int(value_features or kv[-1])
    dout = int(output_features or dq)
    rank = len(q)
    if attention_axes is None:
        axes = list(range(1, rank - 1))
    else:
        axes = attention_axes if isinstance(attention_axes, (list, tuple)) \
            else [attention_axes]
        axes = sorted(int(ax) % rank for ax in axes)
    t = _prod(d or 1 for d in q[1:-1])
    s_all = _prod(d or 1 for d in kv[1:-1])
    s = _prod(kv[ax] or 1 for ax in axes if 0 < ax < len(kv) - 1)
    return (t * dq * h * kd + s_all * dk * h * kd + s_all * dv * h * vd
            + h * t * s * kd + h * t * s * vd + t * h * vd * dout)


def bops(macs: int, w_bits: int, a_bits: int) -> int:
    """Bit operations: ``macs * w_bits * a_bits``.

    Example:
        >>> bops(1000, 4, 8)
        32000
    """
    return int(macs) * int(w_bits) * int(a_bits)


def size_bytes(params: int, w_bits: int) -> float:
    """Bytes of ``params`` weights stored at ``w_bits`` bits:
    ``params * w_bits / 8`` (the profile's size; pass the bias in
    ``params``).

    Example:
        >>> size_bytes(650, 4)
        325.0
    """
    return int(params) * int(w_bits) / 8


def activation_bytes(elements: int, a_bits: int) -> float:
    """Bytes of ``elements`` activations at ``a_bits`` bits.

    Example:
        >>> activation_bytes(1024, 8)
        1024.0
    """
    return int(elements) * int(a_bits) / 8


# ----------------------------------------------------------- one Keras layer


# Layers with no MACs by convention (element-wise or data movement).
_ZERO_MAC_LAYERS = (
    "InputLayer", "BatchNormalization", "LayerNormalization",
    "GroupNormalization", "UnitNormalization", "Activation", "ReLU", "PReLU",
    "LeakyReLU", "ELU", "Softmax", *INFERENCE_IDENTITY,
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D",
    "AveragePooling2D", "AveragePooling3D", "GlobalMaxPooling1D",
    "GlobalMaxPooling2D", "GlobalMaxPooling3D", "GlobalAveragePooling1D",
    "GlobalAveragePooling2D", "GlobalAveragePooling3D", "Add", "Subtract",
    "Multiply", "Average", "Maximum", "Minimum", "Concatenate",
    "Flatten", "Reshape", "Permute", "RepeatVector", "Cropping1D",
    "Cropping2D", "Cropping3D", "ZeroPadding1D", "ZeroPadding2D",
    "ZeroPadding3D", "UpSampling1D", "UpSampling2D", "UpSampling3D",
    "Rescaling", "Normalization", "Resizing", "CenterCrop", "Identity",
    "Masking", "QuantActivation", "ActivationQuantizer", "Embedding",
    "RMSNormalization", "LayerScale", "StochasticDepth", "CustomScaleLayer",
)


def _kernel_macs(positions: int, kernel_shape) -> int:
    """:func:`layer_macs` of a kernel ``(*k, cin/groups, cout)`` (or
    ``(*k, cout, cin)``: the product is the same)."""
    shape = tuple(int(d) for d in kernel_shape)
    return layer_macs(positions, shape[:-2], shape[-2], shape[-1])


@functools.lru_cache(maxsize=None)
def _known(shape: tuple) -> tuple[tuple, bool]:
    """``shape`` with unknown non-batch sizes as 1, and whether any was."""
    dims = tuple(shape)
    unknown = any(d is None for d in dims[1:])
    return dims[:1] + tuple(1 if d is None else d for d in dims[1:]), unknown


def _count_macs(layer, in_shapes, out_shapes) -> tuple[int, str]:
    """MACs of one layer (batch 1) and a note.

    Unknown sizes (``None``) count as 1 and are noted.
    """
    if type(layer).__name__ == "InputLayer":
        return 0, ""
    if not in_shapes or not out_shapes:
        return 0, "not called in the graph"
    known = [_known(s) for s in list(in_shapes) + list(out_shapes)]
    n_in = len(in_shapes)
    ins = [k[0] for k in known[:n_in]]
    outs = [k[0] for k in known[n_in:]]
    macs, note = _layer_macs_of(layer, ins, outs)
    if macs and any(k[1] for k in known):
        extra = "sizes known at run time only (None) counted as 1"
        note = f"{note}, {extra}" if note else extra
    return macs, note


def _attention_layer_macs(layer, out_shape) -> tuple[int, str]:
    """MultiHeadAttention: :func:`attention_macs` from the shapes it was
    built with (query / value / key) and its kernels."""
    shapes = (layer.get_build_config() or {}).get("shapes_dict") or {}
    q = shapes.get("query_shape")
    kv = shapes.get("key_shape") or shapes.get("value_shape")
    v = shapes.get("value_shape") or kv
    if q is None or kv is None:
        return 0, "MultiHeadAttention: build shapes unknown, counted as 0"
    q, kv, v = _known(q)[0], _known(kv)[0], _known(v)[0]
    out_kernel = tuple(layer.output_dense.kernel.shape)  # (H, Vd, *out)
    return attention_macs(
        q, kv, num_heads=layer.num_heads,
        key_dim=layer.query_dense.kernel.shape[-1],
        value_dim=layer.value_dense.kernel.shape[-1],
        key_features=kv[-1], value_features=v[-1],
        output_features=_prod(out_kernel[2:]),
        attention_axes=layer.attention_axes), ""


def _recurrent_macs(layer, x, y) -> tuple[int, str]:
    """LSTM / GRU / SimpleRNN (a ``Bidirectional`` pair summed): per time
    step the input and recurrent matmuls of every gate,
    ``T * (din + units) * G * units`` (gate element-wise products not
    counted, as activations are not elsewhere). ConvLSTM: the same per
    output position, ``T * H * W * k * k * (din + filters) * 4 * filters``
    (its recurrent convolution is 'same', stride 1, over the output grid)."""
    import keras

    subs = ([layer.forward_layer, layer.backward_layer]
            if isinstance(layer, keras.layers.Bidirectional) else [layer])
    total = 0
    for sub in subs:
        cell = getattr(sub, "cell", None)
        kernel = getattr(cell, "kernel", None)
        recurrent = getattr(cell, "recurrent_kernel", None)
        if kernel is None or recurrent is None:
            return 0, (f"recurrent layer {type(layer).__name__} of cell "
                       f"{type(cell).__name__}: counted as 0 MACs")
        rank = int(getattr(cell, "rank", 0) or 0)  # ConvLSTM cells only
        positions = _prod(y[-1 - rank:-1]) if rank else 1
        total += positions * (_prod(kernel.shape) + _prod(recurrent.shape))
    steps = int(x[1]) if len(x) > 2 + int(
        getattr(getattr(subs[0], "cell", None), "rank", 0) or 0) else 1
    return steps * total, ""


def _time_distributed_macs(layer, in_shapes, out_shapes) -> tuple[int, str]:
    """``TimeDistributed``: T x the inner layer's MACs on one time step
    (shapes without axis 1); the inner layer's note is kept."""
    if len(in_shapes[0]) < 3 or len(out_shapes[0]) < 2:
        return 0, (f"TimeDistributed of {type(layer.layer).__name__} on "
                   f"input {in_shapes[0]}: counted as 0 MACs")

    def step(s):
        return tuple(s[:1]) + tuple(s[2:])

    macs, note = _layer_macs_of(layer.layer, [step(s) for s in in_shapes],
                                [step(s) for s in out_shapes])
    return int(in_shapes[0][1] or 1) * int(macs), note


def _positions(layer, shape) -> int:
    """Output (or input) positions of a conv: every axis but the batch and
    the channel axis (``data_format="channels_first"``: axis 1)."""
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        return _prod(shape[2:])
    return _prod(shape[1:-1])


def _layer_macs_of(layer, in_shapes, out_shapes) -> tuple[int, str]:
    """MACs and note of one layer from shapes with known sizes.

    tfcomp's own layers subclass Keras ones (QuantConv2D -> Conv2D), so the
    ``isinstance`` checks count them like their parent.
    """
    import keras

    if is_keras_op(layer):  # a keras.ops node of a functional graph
        return op_macs(layer, in_shapes, out_shapes), ""
    cls = type(layer).__name__
    L = keras.layers
    x, y = in_shapes[0], out_shapes[0]
    if isinstance(layer, (L.Conv1D, L.Conv2D, L.Conv3D)):
        kernel = layer.kernel.shape  # (*k, cin/groups, cout)
        return _kernel_macs(_positions(layer, y), kernel), ""
    if isinstance(layer, (L.Conv1DTranspose, L.Conv2DTranspose,
                          L.Conv3DTranspose)):
        kernel = layer.kernel.shape  # (*k, cout, cin)
        return _kernel_macs(_positions(layer, x), kernel), ""
    if isinstance(layer, (L.DepthwiseConv1D, L.DepthwiseConv2D)):
        kernel = layer.kernel.shape  # (*k, cin, dm)
        return _kernel_macs(_positions(layer, y), kernel), ""
    if isinstance(layer, (L.SeparableConv1D, L.SeparableConv2D)):
        dk = layer.depthwise_kernel.shape  # (*k, cin, dm)
        pk = layer.pointwise_kernel.shape  # (1.., cin*dm, cout)
        positions = _positions(layer, y)
        return (_kernel_macs(positions, dk)
                + _kernel_macs(positions, pk)), ""
    if isinstance(layer, L.Dense):
        return _kernel_macs(_prod(x[1:-1]), layer.kernel.shape), ""
    if isinstance(layer, L.EinsumDense):
        return einsum_macs(layer.equation, x, layer.kernel.shape, y), ""
    if isinstance(layer, L.MultiHeadAttention):
        return _attention_layer_macs(layer, y)
    if isinstance(layer, (L.Attention, L.AdditiveAttention)):
        # scores T*S*d (dot or additive), weighted sum T*S*dv
        built = (layer.get_build_config() or {}).get("input_shape")
        shapes = [_known(b)[0] for b in built] if isinstance(
            built, (list, tuple)) and built and isinstance(
            built[0], (list, tuple)) else in_shapes
        q = shapes[0]
        v = shapes[1] if len(shapes) > 1 else q
        t, s = _prod(q[1:-1]), _prod(v[1:-1])
        return t * s * (int(q[-1]) + int(v[-1])), ""
    if isinstance(layer, (L.RNN, L.Bidirectional)):
        return _recurrent_macs(layer, x, y)
    if isinstance(layer, L.Dot):
        # a batched matmul: every output element sums one contracted axis
        axes = layer.axes if isinstance(layer.axes, (list, tuple)) else [
            layer.axes] * 2
        return _prod(y[1:]) * int(x[int(axes[0]) % len(x)]), ""
    if isinstance(layer, L.TimeDistributed):
        return _time_distributed_macs(layer, in_shapes, out_shapes)
    if isinstance(layer, L.Wrapper) and isinstance(
            getattr(layer, "layer", None), L.Layer):
        # SpectralNormalization (a GAN's discriminator) and other wrappers
        # that call their layer once on their own input: the layer's MACs
        macs, note = _layer_macs_of(layer.layer, in_shapes, out_shapes)
        return macs, note and f"{cls} of {note}"
    # tfcomp's activation quantizers are matched by name: this module sits
    # below tfcomp.layers and cannot import them.
    if cls in _ZERO_MAC_LAYERS or isinstance(
            layer, _keras_classes(_ZERO_MAC_LAYERS)):
        return 0, ""
    if hasattr(layer, "tfcomp_macs"):
        return int(layer.tfcomp_macs(in_shapes, out_shapes)), ""
    return 0, f"unknown layer type {cls}: counted as 0 MACs"


# ---------------------------------------------------- keras.ops products

#: ``keras.ops`` operations with MACs: a functional model's
#: ``ops.matmul`` / ``einsum`` / ``tensordot`` / ``dot`` nodes (attention
#: written by hand, keras.io CCT's token pooling). Element-wise ops,
#: reductions and data movement count 0, as the corresponding layers do.
_PRODUCTS = ("Matmul", "Einsum", "Tensordot", "Dot")


def is_keras_op(obj) -> bool:
    """A ``keras.ops`` node of a functional graph (an operation, not a
    layer)."""
    import keras

    return isinstance(obj, keras.Operation) and not isinstance(
        obj, keras.layers.Layer)


def op_macs(op, in_shapes, out_shapes) -> int:
    """MACs (batch 1) of one ``keras.ops`` node from its shapes (the batch
    axis and unknown sizes count 1): a product counts ``(output elements)
    x (contracted size)``, any other op 0.

    Example:
        >>> op_macs(matmul_op, [(1, 8, 4), (1, 4, 8)], [(1, 8, 8)])
        256
    """
    cls = type(op).__name__
    if cls not in _PRODUCTS or not in_shapes or not out_shapes:
        return 0
    out = _prod(out_shapes[0][1:])
    x = in_shapes[0]
    if cls == "Einsum":  # two operands, as EinsumDense's input, kernel
        eq = str(getattr(op, "subscripts", "")).replace(" ", "")
        if len(in_shapes) != 2 or "->" not in eq or \
                eq.split("->")[0].count(",") != 1:
            return 0
        return einsum_macs(eq, x, tuple(d or 1 for d in in_shapes[1]),
                           out_shapes[0])
    if cls == "Tensordot":
        axes = getattr(op, "axes", 2)
        if isinstance(axes, int):
            k = _prod(d or 1 for d in x[len(x) - axes:]) if axes else 1
        else:
            first = axes[0] if isinstance(axes[0], (list, tuple)) \
                else [axes[0]]
            k = _prod(x[int(a)] or 1 for a in first)
        return out * k
    return out * int(x[-1] or 1)  # matmul / dot: x's last axis
