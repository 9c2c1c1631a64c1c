"""Keras layer -> ``LayerSpec``: the mapping ``extract_specs`` uses.

Every layer ``quantize_model`` quantizes gets a spec (so a mixed-precision
allocation can price it); layers with more than two spatial axes, one, or
none are mapped onto the NHWC geometry the hardware models know. The MACs
of every spec equal ``tfcomp.profile``'s for the layer (``extract_specs``
checks it), so no second MACs formula exists:

* ``Conv2D`` / ``DepthwiseConv2D`` / ``Dense``: exact.
* ``Conv1D`` (and ``DepthwiseConv1D``, ``SeparableConv1D``, 1-D pooling):
  a 1 x L image, kernel ``(1, k)``, stride ``(1, s)``, dilation ``(1, d)``:
  exactly the Conv2D with 1 x k kernels on a (1, L, C) input that TFLite
  lowers it to. ``padding="causal"`` counts as ``"same"`` (same output
  length; the zeros sit on the left).
* ``Conv3D``: the depth axis is folded into the height: a ``(Do*Ho) x Wi``
  image with kernel ``(kd*kh, kw)``, stride ``(1, sw)``, dilation ``(1,
  dw)`` (for ``"valid"`` the folded height is padded by ``kd*kh - 1`` so
  that it yields ``Do*Ho`` rows). The GEMM (M = Do*Ho*Wo, K = kd*kh*kw*Cin,
  N = Cout), MACs and weights are exact; the input footprint a tiled
  accelerator reads along the folded axis is an approximation.
* ``Conv2DTranspose`` (``Conv1DTranspose``, ``Conv3DTranspose``): priced as
  the direct convolution over its *input* pixels, stride 1, ``"same"``:
  MACs = H_in * W_in * kh * kw * Cin * Cout, the count ``tfcomp.cost`` uses
  (each input pixel scatters a k x k x Cout patch). Approximation: the real
  layer is a GEMM with K = Cin and N = kh*kw*Cout followed by a col2im
  scatter, and its output (``out_hw`` of the spec is the input size) is
  larger.
* ``SeparableConv2D``: one ``"separable"`` spec (one quantizable layer
  name), whose ``parts`` are its depthwise and 1x1 pointwise convolutions
  (what ``quantize_model`` splits it into); hardware models price it as
  the sum of the two.
* ``EinsumDense``: a ``"dense"`` GEMM with M = the product of its free
  input axes (the output positions), K = the contracted kernel axes, N =
  the kernel's output axes; axes shared by input, kernel and output make
  a grouped 1x1 ``"conv"`` (one GEMM per group). A bias over part of the
  output axes is counted as N biases (``quantize_model`` quantizes only
  equations whose bias covers them all).
* ``TimeDistributed``: its inner layer's spec with the T time steps folded
  into the batch (``batch * T`` images; MACs T x the inner layer's).
* ``Embedding``: an ``"embedding"`` spec: a gather, 0 MACs and 0 BOPs (0
  latency on BISMO / Bit Fusion), its table counting for size.

``MultiHeadAttention`` (which ``quantize_model`` makes a fixed 8-bit
``QuantMultiHeadAttention``, not a layer of the bit policy) is reported as
skipped: ``tfcomp.profile`` counts its projections and its weightless
``Q K^T`` / ``softmax(.) V`` products (``tfcomp.cost.attention_macs``) but
no bit-serial model prices it.

Example:
    >>> x = keras.Input((16, 8))
    >>> m = keras.Model(x, keras.layers.Conv1D(4, 3, name="c")(x))
    >>> s = extract_specs(m)[0]
    >>> (s.op, s.in_h, s.in_w, s.kernel)
    ('conv', 1, 16, (1, 3))
"""

from __future__ import annotations

import math

import keras

from tfcomp.cost import einsum_axis_sizes
from tfcomp.graph.identity import INFERENCE_IDENTITY, keras_layer_classes
from tfcomp.hardware.spec import LayerSpec
from tfcomp.layers import QuantActivation, QuantReLU

__all__ = ["FREE_LAYERS", "layer_has_bias", "spec_for_layer", "unwrap"]

# Layer types that cost nothing at deployment (folded into the producing
# conv, fused as its activation, or pure metadata) and are not "skipped".
FREE_LAYERS = keras_layer_classes((
    "InputLayer", "BatchNormalization", "Activation", "ReLU", "PReLU",
    "LeakyReLU", "ELU", "Softmax", "Flatten", "Reshape", *INFERENCE_IDENTITY,
)) + (QuantActivation, QuantReLU)

L = keras.layers


def unwrap(layer):
    """The layer inside any ``keras.layers.Wrapper``."""
    while isinstance(layer, L.Wrapper):
        layer = layer.layer
    return layer


def layer_has_bias(layer) -> bool:
    """Whether the (unwrapped) layer adds a bias."""
    inner = unwrap(layer)
    if isinstance(inner, L.EinsumDense):
        return getattr(inner, "bias", None) is not None
    return bool(getattr(inner, "use_bias", False))


def _channels_last(layer, name):
    fmt = getattr(layer, "data_format", "channels_last")
    if fmt != "channels_last":
        raise ValueError(
            f"Only channels_last layers can be costed. Received: "
            f"data_format={fmt!r} (layer {name!r})")


def _defined(shape, name, rank=None) -> tuple:
    if (rank is not None and len(shape) != rank) or None in shape[1:]:
        what = f"rank-{rank} " if rank else ""
        raise ValueError(
            f"Layer {name!r} needs a fully defined {what}input shape to be "
            f"costed: fix the sequence length / image size of the model's "
            "input, e.g. model = tfcomp.with_input_shape(model, (256, 256, "
            f"3)) (same weights). Received: {shape}")
    return shape


def _tuple(v, n) -> tuple:
    return tuple(int(x) for x in v) if isinstance(v, (tuple, list)) \
        else (int(v),) * n


def _padding(layer) -> str:
    pad = getattr(layer, "padding", "valid")
    return "same" if pad == "causal" else pad


def _geometry(layer, name, x, y) -> dict:
    """NHWC geometry of a 1-, 2- or 3-D windowed layer (conv or pooling):
    in_h, in_w, kernel, stride, dilation, padding."""
    _channels_last(layer, name)
    rank = len(x) - 2
    _defined(x, name)
    if hasattr(layer, "pool_size"):
        k = _tuple(layer.pool_size, rank)
        s = _tuple(layer.strides or layer.pool_size, rank)
        d = (1,) * rank
    else:
        k = _tuple(layer.kernel_size, rank)
        s = _tuple(layer.strides, rank)
        d = _tuple(layer.dilation_rate, rank)
    pad = _padding(layer)
    if rank == 1:
        return {"in_h": 1, "in_w": x[1], "kernel": (1, k[0]),
                "stride": (1, s[0]), "dilation": (1, d[0]), "padding": pad}
    if rank == 2:
        return {"in_h": x[1], "in_w": x[2], "kernel": k, "stride": s,
                "dilation": d, "padding": pad}
    # rank 3: fold depth into height (module docstring)
    _defined(y, name)
    rows, kh = y[1] * y[2], k[0] * k[1]
    return {"in_h": rows + (kh - 1 if pad == "valid" else 0), "in_w": x[3],
            "kernel": (kh, k[2]), "stride": (1, s[2]),
            "dilation": (1, d[2]), "padding": pad}


def _transposed(layer, name, x) -> dict:
    """A transposed conv as the stride-1 "same" conv over its input."""
    _channels_last(layer, name)
    _defined(x, name)
    rank = len(x) - 2
    k = _tuple(layer.kernel_size, rank)
    if rank == 1:
        hw, kernel = (1, x[1]), (1, k[0])
    elif rank == 2:
        hw, kernel = (x[1], x[2]), k
    else:
        hw, kernel = (x[1] * x[2], x[3]), (k[0] * k[1], k[2])
    return {"in_h": hw[0], "in_w": hw[1], "kernel": kernel,
            "padding": "same"}


def _split_einsum(equation: str, x: tuple, kernel: tuple):
    """(G, M, K, N) of an EinsumDense: shared, free input, contracted and
    kernel output axes (batch 1; an ellipsis counts as free input axes)."""
    a, k, out, sizes, m = einsum_axis_sizes(equation, x, kernel)
    a, out = a.replace(".", ""), out.replace(".", "")
    g = kk = n = 1
    for ch in set(a + k):
        size = sizes[ch]
        if ch in a and ch in k and ch in out:
            g *= size
        elif ch in k and ch in out:
            n *= size
        elif ch in k:
            kk *= size  # contracted (or summed kernel axis)
        else:
            m *= size   # free input axis (or summed input axis)
    return g, m, kk, n


def _time_distributed_spec(layer, name, in_shapes, out_shape, batch):
    """``TimeDistributed``: the inner layer's spec with the T time steps
    folded into the batch (T images per sample: MACs T x the inner's)."""
    x = in_shapes[0]
    if len(x) < 3 or len(out_shape) < 2:
        return None, (f"TimeDistributed of {type(layer.layer).__name__} on "
                      f"input {tuple(x)}: no cost model")
    if x[1] is None:
        raise ValueError(
            f"Layer {name!r} needs a defined time axis to be costed (fix "
            f"the sequence length of the model's input). Received: {x}")

    def step(s):
        return tuple(s[:1]) + tuple(s[2:])

    return spec_for_layer(layer.layer, name, [step(s) for s in in_shapes],
                          step(out_shape), batch * int(x[1]))


def spec_for_layer(layer, name, in_shapes, out_shape, batch):
    """``(LayerSpec | None, skip reason)`` of one leaf layer.

    Args:
        layer: the layer (a wrapper is unwrapped; a ``TimeDistributed``
            is its inner layer with the time steps folded into the batch).
        name: its path in the model (``outer/inner``).
        in_shapes, out_shape: its input shapes and first output shape,
            batch axis included.
        batch: the batch size to cost for.

    Returns:
        ``(spec, "")``, ``(None, "")`` for free layers (batch norm,
        activations, reshapes) and ``(None, reason)`` for layers without a
        cost model.

    Raises:
        ValueError: undefined input sizes, channels_first layers.

    Example:
        >>> spec_for_layer(conv, "c1", [(None, 8, 8, 3)], (None, 8, 8, 4),
        ...                1)[0].op
        'conv'
    """
    if isinstance(layer, L.TimeDistributed) and in_shapes:
        return _time_distributed_spec(layer, name, in_shapes, out_shape,
                                      batch)
    inner = unwrap(layer)
    common = {"name": name, "batch": batch}
    if isinstance(inner, FREE_LAYERS) or not in_shapes:
        return None, ""
    x, y = in_shapes[0], out_shape
    # Checked before their bases: SeparableConv / ConvTranspose / Depthwise
    # are not Conv subclasses in Keras 3, but tfcomp's Quant* layers are.
    if isinstance(inner, (L.SeparableConv1D, L.SeparableConv2D)):
        g = _geometry(inner, name, x, y)
        return LayerSpec(op="separable", cin=x[-1], cout=y[-1],
                         multiplier=int(inner.depth_multiplier), **g,
                         **common), ""
    if isinstance(inner, (L.DepthwiseConv1D, L.DepthwiseConv2D)):
        g = _geometry(inner, name, x, y)
        return LayerSpec(op="depthwise", cin=x[-1], cout=y[-1],
                         groups=x[-1], **g, **common), ""
    if isinstance(inner, (L.Conv1DTranspose, L.Conv2DTranspose,
                          L.Conv3DTranspose)):
        return LayerSpec(op="conv", cin=x[-1], cout=y[-1],
                         **_transposed(inner, name, x), **common), ""
    if isinstance(inner, (L.Conv1D, L.Conv2D, L.Conv3D)):
        g = _geometry(inner, name, x, y)
        return LayerSpec(op="conv", cin=x[-1], cout=y[-1],
                         groups=int(getattr(inner, "groups", 1) or 1), **g,
                         **common), ""
    if isinstance(inner, L.Dense):
        _defined(x, name)
        mid = math.prod(x[1:-1]) if len(x) > 2 else 1
        return LayerSpec(op="dense", in_h=int(mid), in_w=1, cin=x[-1],
                         cout=y[-1], **common), ""
    if isinstance(inner, L.EinsumDense):
        _defined(x, name)
        g, m, k, n = _split_einsum(inner.equation, x,
                                   tuple(inner.kernel.shape))
        if g == 1:
            return LayerSpec(op="dense", in_h=m, in_w=1, cin=k, cout=n,
                             **common), ""
        return LayerSpec(op="conv", in_h=m, in_w=1, cin=g * k, cout=g * n,
                         groups=g, **common), ""
    if isinstance(inner, L.Embedding):
        # A gather: positions only size the output; unknown ones count 1.
        positions = math.prod(int(d or 1) for d in x[1:])
        return LayerSpec(op="embedding", in_h=positions, in_w=1,
                         cin=int(inner.input_dim), cout=int(inner.output_dim),
                         **common), ""
    if isinstance(inner, L.Add):
        h, w = (x[1], x[2]) if len(x) == 4 else (1, 1)
        if None in (h, w):
            raise ValueError(f"Layer {name!r} needs a defined input shape. "
                             f"Received: {x}")
        return LayerSpec(op="add", in_h=h, in_w=w, cin=x[-1], cout=x[-1],
                         n_inputs=len(in_shapes), **common), ""
    pools = (((L.AveragePooling1D, L.AveragePooling2D), "avgpool"),
             ((L.MaxPooling1D, L.MaxPooling2D), "maxpool"),
             ((L.GlobalAveragePooling1D, L.GlobalAveragePooling2D),
              "global_avgpool"),
             ((L.GlobalMaxPooling1D, L.GlobalMaxPooling2D),
              "global_maxpool"))
    for classes, op in pools:
        if isinstance(inner, classes) and op.startswith("global_"):
            _defined(x, name)
            # channels_first (keras.io's time-series transformer pools the
            # features of each step): the same reduction, channels on axis 1
            first = getattr(inner, "data_format", None) == "channels_first"
            c, space = (x[1], x[2:]) if first else (x[-1], x[1:-1])
            g = ({"in_h": 1, "in_w": space[0]} if len(space) == 1
                 else {"in_h": space[0], "in_w": space[1]})
            return LayerSpec(op=op, cin=c, cout=c, **g, **common), ""
        if isinstance(inner, classes):
            g = _geometry(inner, name, x, y)
            return LayerSpec(op=op, cin=x[-1], cout=x[-1], **g,
                             **common), ""
    if isinstance(inner, L.MultiHeadAttention):
        return None, ("MultiHeadAttention is fixed 8-bit in quantize_model "
                      "(QuantMultiHeadAttention), not a "
                      "searched layer: no bit-width cost model (its MACs "
                      "are in tfcomp.profile)")
    return None, f"no cost model for {type(inner).__name__}"
