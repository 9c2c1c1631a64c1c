"""Keras layer geometry for the bit-serial importer.

How the Keras layers the IR has no op of its own map onto IR ops, exactly:

- ``Conv1D`` is a ``1 x k`` conv2d on the ``(1, L, C)`` view of its input
  (``padding="causal"`` pads ``k - 1`` on the left); groups allowed.
  ``DepthwiseConv1D`` (``SeparableConv1D``'s first half after
  ``quantize_model``) is a ``1 x k`` depthwise_conv2d on that view,
  ``Conv1DTranspose`` the height-1 form of ``Conv2DTranspose``.
- A dilated conv / depthwise conv (``dilation_rate > 1``) is the undilated
  conv whose kernel has ``rate - 1`` zero taps between its taps
  (:func:`dilate_taps`): exact, and the op's kernel, MACs and cycles are
  those of the undilated ``(k - 1) * rate + 1`` kernel, zero taps
  included (the accelerator multiplies them).
- ``Conv2DTranspose`` is a stride-1 conv2d with the spatially flipped,
  in/out-swapped kernel over the input with ``stride - 1`` zero points
  inserted between neighbours (a ``pad`` op) and ``k - 1 - p`` padded at
  the edges, where ``p`` is the forward conv's padding (TF's
  ``conv2d_backprop_input``); the accelerator runs ``stride**2`` times the
  transposed conv's MACs.
- ``ZeroPadding1D/2D`` pad with the zero point (real 0): folded into the
  padding of a conv that reads them, else a ``pad`` op.
- ``UpSampling1D/2D`` (interpolation="nearest", integer sizes) and
  ``Cropping1D/2D`` only move values: ``upsample`` / ``crop`` ops on the
  grid of their input (``keras_moves``); bilinear upsampling is refused.
- ``Rescaling`` of the model input is folded into the input: float inputs
  are rescaled (float32, as Keras) before quantization.
- ``Concatenate`` on the last (channel) axis is a ``concat`` op; other
  axes are refused (:func:`concat_axis`).
- ``Normalization`` (per channel, or one mean / variance) is the affine
  ``x / std - mean / std`` (``invert``: ``x * std + mean``;
  :func:`normalization_affine`): on the float model input (after a folded
  ``Rescaling`` or not) it folds into the input rescale
  (:func:`compose_rescale`), on a quantized tensor it is a per-channel
  table that Keras computes.
- ``PReLU`` whose alpha varies only along the channel axis is such a
  per-channel table too (:class:`ChannelPReLU`).

Example:
    >>> kernel_as_conv2d("conv1d", np.zeros((3, 4, 8))).shape
    (1, 3, 4, 8)
"""

from __future__ import annotations

import keras
import numpy as np

from tfcomp.export.bitserial.ir import QuantParams, same_padding

__all__ = [
    "LUT_ACTIVATIONS",
    "ChannelPReLU",
    "SUPPORTED_LAYERS",
    "compose_rescale",
    "concat_axis",
    "conv_pads",
    "dilate_taps",
    "gemm_weights",
    "kernel_as_conv2d",
    "lut_table",
    "normalization_affine",
    "pool_window",
    "qat_grid",
    "rescale_of",
    "transpose_geometry",
    "unsupported_layer_error",
    "zero_pads",
]

# element-wise activations exported as a table (lut op)
LUT_ACTIVATIONS = ("sigmoid", "hard_sigmoid", "tanh", "swish", "silu",
                   "hard_swish", "hard_silu", "gelu", "elu", "selu",
                   "softplus", "softsign", "leaky_relu", "mish")

SUPPORTED_LAYERS = (
    "Conv1D", "Conv2D (groups >= 1; both dilated too)", "Conv1DTranspose",
    "Conv2DTranspose", "DepthwiseConv1D/2D (dilated too)",
    "SeparableConv1D/2D as quantize_model splits them", "Dense",
    "their tfcomp Quant* forms", "QuantActivation", "QuantReLU",
    "ReLU (any slope / threshold / max_value)", "LeakyReLU", "ELU",
    "Activation('relu' | 'relu6' | 'linear' | element-wise)",
    "BatchNormalization (folded, or on a quantized tensor)",
    "Normalization (channel axis)",
    "PReLU (alpha per channel: shared_axes = the non-channel axes)",
    "Add (2 inputs; or x + y)", "Average (2 inputs)",
    "Concatenate (channel axis; or ops.concatenate)",
    "Multiply (2 inputs: one shape, or a per-channel gate; or x * y)",
    "MaxPooling1D/2D", "AveragePooling1D/2D",
    "GlobalAveragePooling1D/2D", "GlobalMaxPooling1D/2D (or ops.mean / "
    "ops.max over every spatial axis)", "ZeroPadding1D/2D",
    "UpSampling1D/2D (interpolation='nearest')", "Cropping1D/2D",
    "Rescaling", "Flatten", "Reshape",
    "element-wise keras.ops calls of one tensor and constants (x + 3.0, "
    "ops.gelu(x): tables)",
    "Dropout-like identities", "a final softmax (dropped)")


def unsupported_layer_error(layer, detail: str = "") -> ValueError:
    """The error for a layer (or ``keras.ops`` call) with no integer form;
    ``detail`` (the setting refused, then why) follows its name.

    Example:
        >>> str(unsupported_layer_error(keras.layers.LayerNormalization(
        ...     name="ln")))[:40]
        "layer 'ln' (LayerNormalization) has no "
    """
    cls = type(layer).__name__
    what = (f"layer {layer.name!r} ({cls})" if isinstance(
        layer, keras.layers.Layer) else
        f"keras.ops call {getattr(layer, 'name', cls)!r} ({cls})")
    return ValueError(
        f"{what}{' ' + detail if detail else ''} has no integer mapping in "
        "the bit-serial exporter. "
        f"Supported layer types: {', '.join(SUPPORTED_LAYERS)}. Replace or "
        "remove the layer, or export the model to int8 TFLite instead "
        "(tfcomp.export.export_tflite).")


def concat_axis(layer, rank: int) -> int:
    """The axis of a ``Concatenate`` whose output has ``rank`` axes (batch
    included), which must be the last one: the IR's ``concat`` joins
    channels only.

    Example:
        >>> concat_axis(keras.layers.Concatenate(axis=3), 4)
        -1
    """
    axis = int(layer.axis)
    if axis not in (-1, rank - 1):
        raise ValueError(
            f"layer {layer.name!r} (Concatenate): only the last (channel) "
            f"axis has an integer concat op in the bit-serial IR. Received: "
            f"axis={layer.axis} for {rank}-D tensors (batch included)")
    return -1


def kernel_as_conv2d(kind: str, kernel) -> np.ndarray:
    """A Keras kernel (or its integer codes) as conv2d weights
    ``(kh, kw, cin / groups, cout)`` (depthwise: ``(kh, kw, cin, mult)``).

    Args:
        kind: "conv1d" / "depthwise_conv1d" (``(k, cin, cout)``: height
            1), "conv2d_transpose" (``(kh, kw, cout, cin)``: flipped and
            swapped), "conv1d_transpose" (``(k, cout, cin)``: likewise,
            height 1) or a kind whose kernel is already in conv2d layout.
        kernel: the array.

    Example:
        >>> kernel_as_conv2d("conv2d_transpose", np.zeros((3, 2, 8, 4))).shape
        (3, 2, 4, 8)
    """
    k = np.asarray(kernel)
    if kind in ("conv1d", "depthwise_conv1d", "conv1d_transpose"):
        k = k[None]
    if kind in ("conv2d_transpose", "conv1d_transpose"):
        return k[::-1, ::-1].transpose(0, 1, 3, 2)
    return k


def dilate_taps(kernel, rates) -> np.ndarray:
    """A conv2d-layout kernel ``(kh, kw, ...)`` with ``rate - 1`` zero taps
    between neighbouring taps per spatial axis: the undilated kernel of a
    conv with dilation ``rates`` (h, w). The same outputs, exactly; the
    accelerator runs the ``((kh - 1) * rh + 1) x ((kw - 1) * rw + 1)``
    kernel, so the descriptor's MACs and cycles count the zero taps.

    Example:
        >>> dilate_taps(np.ones((1, 3, 1, 1), int), (1, 2))[0, :, 0, 0]
        array([1, 0, 1, 0, 1])
    """
    k = np.asarray(kernel)
    for axis, rate in enumerate(int(r) for r in rates):
        if rate > 1:
            shape = list(k.shape)
            shape[axis] = (shape[axis] - 1) * rate + 1
            out = np.zeros(shape, k.dtype)
            out[(slice(None),) * axis + (slice(None, None, rate),)] = k
            k = out
    return k


def dilation_of(layer) -> tuple:
    """A conv layer's dilation as (h, w); 1D layers are (1, d).

    Example:
        >>> dilation_of(keras.layers.Conv1D(4, 3, dilation_rate=2))
        (1, 2)
    """
    return pool_window(getattr(layer, "dilation_rate", (1, 1)))


def _check(layer) -> None:
    fmt = getattr(layer, "data_format", "channels_last")
    if fmt != "channels_last":
        raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}): "
                         "only data_format='channels_last' is supported. "
                         f"Received: data_format={fmt!r}")


def conv_pads(layer, kind: str, in_hw, kernel, strides,
              extra=(0, 0, 0, 0)) -> tuple:
    """(top, bottom, left, right) pads of a conv over an input that a
    folded ``ZeroPadding`` grows by ``extra`` (both pad with real 0).

    Args:
        layer: the Keras conv layer (``padding``).
        kind: "conv2d", "depthwise_conv2d", "conv1d" or
            "depthwise_conv1d".
        in_hw: the unpadded input (H, W) (``(1, L)`` for 1D convs).
        kernel, strides: the conv2d geometry (``kernel``: a dilated
            conv's undilated kernel, :func:`dilate_taps`).
        extra: folded zero padding.

    Example:
        >>> conv_pads(keras.layers.Conv1D(4, 3, padding="causal"), "conv1d",
        ...           (1, 10), (1, 3), (1, 1))
        (0, 0, 2, 0)
    """
    _check(layer)
    h = in_hw[0] + extra[0] + extra[1]
    w = in_hw[1] + extra[2] + extra[3]
    padding = layer.padding.lower()
    if padding == "causal":
        own = (0, 0, kernel[1] - 1, 0)
    elif padding == "same":
        own = same_padding(h, kernel[0], strides[0]) + same_padding(
            w, kernel[1], strides[1])
    else:
        own = (0, 0, 0, 0)
    return tuple(int(a + b) for a, b in zip(own, extra))


def transpose_geometry(layer, in_hw, out_hw) -> tuple:
    """``(interior, pads)`` of a Conv2DTranspose as a stride-1 conv:
    ``stride - 1`` zero points between inputs, ``pads`` (top, bottom, left,
    right) so the conv yields the Keras output size ``out_hw``. A
    Conv1DTranspose is the height-1 case (``in_hw`` / ``out_hw`` ``(1,
    L)``). A dilated transposed conv is refused.

    Example:
        >>> transpose_geometry(keras.layers.Conv2DTranspose(
        ...     4, 3, strides=2, padding="same"), (4, 4), (8, 8))
        ((1, 1), (2, 1, 2, 1))
    """
    _check(layer)
    if any(int(d) != 1 for d in layer.dilation_rate):
        raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}): "
                         "a dilated transposed conv has no mapping in the "
                         "bit-serial exporter; dilation_rate must be 1. "
                         f"Received: dilation_rate={layer.dilation_rate}")
    pads = []
    for size, out, k, s in zip(in_hw, out_hw, pool_window(layer.kernel_size),
                               pool_window(layer.strides)):
        before = 0  # the forward conv (out -> size) pads `before`
        if layer.padding.lower() == "same":
            before = max((size - 1) * s + k - out, 0) // 2
        left = k - 1 - before
        right = out + k - 1 - left - ((size - 1) * s + 1)
        if left < 0 or right < 0:
            raise ValueError(f"layer {layer.name!r}: this transposed conv "
                             "geometry has no stride-1 conv form. Received:"
                             f" kernel_size={layer.kernel_size}, strides="
                             f"{layer.strides}, padding={layer.padding!r}")
        pads += [left, right]
    interior = tuple(int(s) - 1 for s in pool_window(layer.strides))
    return interior, tuple(pads)


def zero_pads(layer) -> list:
    """``[[before, after], ...]`` per non-batch axis of a ZeroPadding1D /
    ZeroPadding2D output (channels unpadded).

    Example:
        >>> zero_pads(keras.layers.ZeroPadding2D(((1, 2), (0, 3))))
        [[1, 2], [0, 3], [0, 0]]
    """
    _check(layer)
    p = layer.padding
    if isinstance(layer, keras.layers.ZeroPadding1D):
        return [[int(p[0]), int(p[1])], [0, 0]]
    return [[int(p[0][0]), int(p[0][1])], [int(p[1][0]), int(p[1][1])],
            [0, 0]]


def pool_window(v) -> tuple:
    """A pooling window / stride as (h, w); 1D windows are (1, w).

    Example:
        >>> pool_window((3,))
        (1, 3)
    """
    v = tuple(int(i) for i in v)
    return (1,) + v if len(v) == 1 else v


def qat_grid(entry) -> QuantParams | None:
    """The QAT activation grid ``(scale, zero_point, bits)`` of a
    ``quantization_params`` entry as unsigned QuantParams (None: none).

    Example:
        >>> qat_grid((0.1, 3, 4))
        QuantParams(bits=4, signed=False, scale=0.1, zero_point=3)
    """
    if entry is None:
        return None
    s, z, b = entry
    return QuantParams(int(b), False, float(s), int(z))


def rescale_of(layer) -> tuple:
    """``(scale, offset)`` of a ``Rescaling`` layer as float tuples.

    Example:
        >>> rescale_of(keras.layers.Rescaling(1 / 127.5, offset=-1))
        ((0.00784313725490196,), (-1.0,))
    """
    scale = tuple(float(v) for v in np.ravel(np.asarray(layer.scale,
                                                        np.float64)))
    offset = tuple(float(v) for v in np.ravel(np.asarray(layer.offset,
                                                         np.float64)))
    if min(scale) <= 0:
        raise ValueError(f"layer {layer.name!r} (Rescaling): only positive "
                         f"scales fold into the input quantization. "
                         f"Received: scale={layer.scale}")
    return scale, offset


def normalization_affine(layer) -> tuple:
    """``(scale, offset)`` float tuples (one value, or one per channel) of
    a ``Normalization``: ``x * scale + offset`` is ``(x - mean) / std``
    (``invert``: ``mean + x * std``), ``std = max(sqrt(variance),
    epsilon)`` in float32 as Keras.

    Raises:
        ValueError: mean / variance vary along another axis than the last.

    Example:
        >>> normalization_affine(keras.layers.Normalization(
        ...     mean=1.0, variance=4.0))
        ((0.5,), (-0.5,))
    """
    if not layer.built or getattr(layer, "mean", None) is None:
        raise ValueError(f"layer {layer.name!r} (Normalization) is not "
                         "built; adapt it or call the model first")
    mean = np.asarray(keras.ops.convert_to_numpy(layer.mean), np.float32)
    var = np.asarray(keras.ops.convert_to_numpy(layer.variance), np.float32)
    if any(d != 1 for d in mean.shape[:-1]):
        raise ValueError(
            f"layer {layer.name!r} (Normalization): only a mean and "
            "variance per channel (the last axis) or one for all have an "
            f"affine integer form. Received: axis={layer.axis}, mean of "
            f"shape {mean.shape}")
    mean, var = mean.reshape(-1), var.reshape(-1)
    std = np.maximum(np.sqrt(var), np.float32(keras.config.epsilon()))
    std = std.astype(np.float64)
    if layer.invert:
        scale, offset = std, mean.astype(np.float64)
    else:
        scale, offset = 1.0 / std, -mean / std
    return (tuple(float(v) for v in scale), tuple(float(v) for v in
                                                  np.broadcast_to(
                                                      offset, scale.shape)))


def compose_rescale(first, second) -> tuple:
    """``(scale, offset)`` of ``x * scale + offset`` = ``second`` applied
    after ``first`` (each ``(scale, offset)`` tuples of 1 or C values;
    ``first`` None: the identity).

    Example:
        >>> compose_rescale(((0.5,), (1.0,)), ((2.0, 4.0), (0.0, -1.0)))
        ((1.0, 2.0), (2.0, 3.0))
    """
    if first is None:
        return second
    (s1, o1), (s2, o2) = ((np.asarray(v, np.float64) for v in r)
                          for r in (first, second))
    scale, offset = np.broadcast_arrays(s1 * s2, o1 * s2 + o2)
    return (tuple(float(v) for v in scale.reshape(-1)),
            tuple(float(v) for v in offset.reshape(-1)))


class ChannelPReLU:
    """A ``PReLU`` as a per-channel element-wise function: Keras' own
    ``relu(x) + -alpha * relu(-x)`` (float32) with ``alpha`` one value per
    channel (or one for all), for :func:`lut_table`.

    Raises:
        ValueError: alpha varies along another axis than the channels (a
            PReLU without ``shared_axes`` on a sequence / image has one
            slope per position: no per-channel table).

    Example:
        >>> f = ChannelPReLU(keras.layers.PReLU(shared_axes=[1]))
    """

    def __init__(self, layer):
        if not layer.built:
            raise ValueError(f"layer {layer.name!r} (PReLU) is not built")
        a = np.asarray(keras.ops.convert_to_numpy(layer.alpha), np.float32)
        flat = a.reshape(-1, a.shape[-1] if a.ndim else 1)
        if np.any(flat != flat[:1]):
            raise ValueError(
                f"layer {layer.name!r} (PReLU): its alpha (shape {a.shape}) "
                "varies along axes other than the channels; only a slope "
                "per channel has an integer (per-channel table) form in the "
                "bit-serial exporter. Use shared_axes for every axis but "
                "the channels (e.g. PReLU(shared_axes=[1]) on (L, C))")
        self.alpha, self.name = flat[0], layer.name

    def __call__(self, x):
        x = keras.ops.convert_to_tensor(x, "float32")
        neg = -self.alpha * keras.ops.relu(-x)
        return keras.ops.relu(x) + neg


def lut_table(layer, q_in: QuantParams, channels: int, rank: int,
              grid: QuantParams, act: str = "linear") -> np.ndarray:
    """The ``lut`` table of an element-wise layer: Keras computes it on
    every value of the input grid (inference mode), then ReLU / ReLU6
    (``act``) and quantization onto ``grid``.

    Args:
        layer: the Keras layer (Rescaling, BatchNormalization, Activation,
            PReLU: :class:`ChannelPReLU`).
        q_in: the input grid.
        channels: the last axis' size.
        rank: the layer input's rank without batch.
        grid: the output grid.
        act: "linear", "relu" or "relu6" applied after the layer.

    Returns:
        ``(1 or channels, 2**q_in.bits)`` int64 (one row when every channel
        has the same table).

    Example:
        >>> lut_table(keras.layers.Rescaling(2.0), QuantParams(2, False, 1.0),
        ...           3, 3, QuantParams(4, False, 1.0))
        array([[0, 2, 4, 6]])
    """
    if isinstance(layer, keras.layers.PReLU):
        layer = ChannelPReLU(layer)
    codes = np.arange(q_in.qmin, q_in.qmax + 1)
    v = np.repeat(q_in.dequantize(codes)[:, None], channels, axis=1)
    probe = v.reshape((1,) * (rank - 1) + v.shape)
    kw = {"training": False} if isinstance(
        layer, keras.layers.BatchNormalization) else {}
    y = keras.ops.convert_to_numpy(layer(probe, **kw)).reshape(v.shape)
    if act != "linear":
        y = np.maximum(y, np.float32(0))
    if act == "relu6":
        y = np.minimum(y, np.float32(6))
    table = grid.quantize(y).T
    return table[:1] if np.all(table == table[:1]) else table


def gemm_weights(layer, kind: str, p: dict, notes: list) -> tuple:
    """``(codes, w_scale, w_bits)`` of a GEMM layer in conv2d / dense
    layout: the QAT codes from ``quantization_params`` entry ``p``, else
    the float kernel quantized to 8 bits per output channel (noted); a
    dilated conv's codes with zero taps (:func:`dilate_taps`).

    Example:
        >>> codes, s, b = gemm_weights(keras.layers.Dense(2), "dense", {},
        ...                            [])
    """
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    if hasattr(layer, "sign_codes"):  # tfcomp.layers.binary: alpha * sign
        p = {"codes": layer.sign_codes(), "scale": layer.alpha()}
    if "codes" in p:
        codes = kernel_as_conv2d(kind, np.asarray(p["codes"], np.int64))
        w_scale = np.asarray(p["scale"], np.float64).reshape(-1)
        w_bits = int(getattr(layer, "w_bits", 1))
        if w_scale.size != codes.shape[-1] and "depthwise" not in kind:
            raise ValueError(f"layer {layer.name!r}: expected one weight "
                             f"scale per output channel "
                             f"({codes.shape[-1]}). Received: "
                             f"{w_scale.size}")
    else:  # float weights: 8-bit symmetric per output channel
        k = kernel_as_conv2d(kind, kernel.astype(np.float64))
        axes = (0, 1) if "depthwise" in kind else tuple(
            range(k.ndim - 1))
        amax = np.maximum(np.abs(k).max(axis=axes, keepdims=True), 1e-12)
        s = amax / 127.0
        codes = np.clip(np.round(k / s), -127, 127).astype(np.int64)
        w_scale, w_bits = s.reshape(-1), 8
        notes.append(f"{layer.name}: float weights quantized to 8 bits")
    if "transpose" not in kind:  # transposed convs: refused if dilated
        codes = dilate_taps(codes, dilation_of(layer))
    return codes, w_scale, w_bits  # 1 bit: sign codes {-1, +1}


def fixed_shape(tensor, name: str) -> tuple:
    """A model input's shape without the batch axis, every size fixed.

    Example:
        >>> fixed_shape(model.inputs[0], "input")
        (28, 28, 1)
    """
    if any(d is None for d in tensor.shape[1:]):
        raise ValueError(
            f"model input {name!r} has shape {tuple(tensor.shape)}: the "
            "bit-serial descriptor needs every size but the batch fixed "
            "(give the model a fixed sequence length / image size)")
    return tuple(int(d) for d in tensor.shape[1:])


def check_single_calls(model) -> None:
    """Refuses a model that calls a layer more than once (a shared layer,
    a siamese encoder): the descriptor maps one call per layer.

    Example:
        >>> check_single_calls(qat_model)
    """
    from tfcomp.graph import parse_model

    shared = parse_model(model).shared_layers
    if shared:
        raise ValueError(
            f"layer {shared[0]!r} of model {model.name!r} is called more "
            "than once (a shared layer, or a nested model called several "
            "times, e.g. a siamese encoder): the bit-serial descriptor maps "
            "one call per layer. Export a model that calls it once (e.g. "
            "the encoder alone).")
