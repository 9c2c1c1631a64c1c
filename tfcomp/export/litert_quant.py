"""Per-layer float32 / float16 / int8 / int4w LiteRT files.

``export_tflite(model, path, quantization=policy)`` with ``policy`` a
``{layer name: precision}`` dict, or ``quantization="int4w"``, lands here:

* **float models**: the model is converted to a float32 file by Keras' own
  ``model.export(format="litert")`` (the same file as
  ``tf.lite.TFLiteConverter.from_keras_model``: same ops and weights), each
  layer is found in the file by the scope of its weight op, and the file is
  quantized per op with ``ai-edge-quantizer`` recipes
  (:mod:`tfcomp.hardware.precision`): float16 weights, int8 or int4
  dynamic-range weights (``dynamic_wi8_afp32`` / ``dynamic_wi4_afp32``).
  Layers not in the policy stay float32; ``"int4w"`` alone puts every
  weight layer at int4w. ai-edge-quantizer 0.10 has no int4 recipe for
  DEPTHWISE_CONV_2D: such layers become int8 and are named in
  ``ExportReport.int8_fallback``.
* **tfcomp QAT models** (``tfcomp.quantization.quantize_model``): the full-
  integer int8 file of :mod:`tfcomp.export.int8` (unchanged), whose int8
  weight tensors of the int4w layers are rewritten as int4 tensors of the
  QAT codes at the QAT per-channel scales (the int8 file stores them times
  :func:`tfcomp.export.int8.code_multiplier`). The codes are the QAT model's
  integer weights (``quantization_params``), so the int4 file holds exactly
  the QAT grid; ai-edge-quantizer cannot do this (it quantizes float files,
  with scales of its own). ``"int4w"`` (or a layer absent from a policy)
  means int4 for every layer with ``w_bits <= 4`` and int8 otherwise; a
  policy may only ask int8 or int4w (the file is full-integer). A layer
  whose op has no int4 kernel (anything but CONV_2D, DEPTHWISE_CONV_2D,
  FULLY_CONNECTED), whose codes exceed [-8, 7] (k-means weights are stored
  on an 8-bit grid) or whose op is not found stays int8 and is named in
  ``ExportReport.int8_fallback`` with the reason.

Measured here (ai-edge-litert 2.3.0, x86): the int4 ops of a QAT file run
in LiteRT's built-in integer kernels, not XNNPACK; those kernels round some
ties one output step differently from XNNPACK's int8 kernels, so the int4
file can differ from the QAT model by one quantization step on a few
outputs, as the int8 file does when run without XNNPACK (its int4 weights
are equal to the int8 file's).

Reference: ai-edge-quantizer (github.com/google-ai-edge/ai-edge-quantizer).

Example:
    >>> r = export_tflite(model, "mix.tflite",
    ...                   quantization={"conv1": "int4w", "fc": "int8"})
    >>> r.layer_precisions["conv1"]
    'int4w'
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile

import keras
import numpy as np

from tfcomp.export.int8 import code_multiplier
from tfcomp.graph import iter_leaf_layers
from tfcomp.hardware.precision import (
    PRECISIONS,
    check_precision,
    op_precisions,
    pack_int4,
    quantize_tflite,
    read_model,
    require_quantizer,
    weight_ops,
)
from tfcomp.quantization import is_qat_model, quantization_params

__all__ = ["MIXED_MODES", "check_policy", "convert_mixed",
           "float_tflite", "layer_ops", "layer_precisions"]

#: ``quantization`` values (besides a dict) handled here.
MIXED_MODES = ("int4w",)
_INT4_RANGE = (-8, 7)


def _weight_layers(model) -> list:
    """Leaf layers with a kernel (the layers a policy may name)."""
    return [layer for _, layer in iter_leaf_layers(model)
            if any(w.name in ("kernel", "depthwise_kernel",
                              "pointwise_kernel") for w in layer.weights)]


def check_policy(model, policy, qat: bool | None = None) -> dict:
    """``policy`` as ``{layer name: precision}``, checked against the
    model's weight layers (a ``ValueError`` names an unknown layer or
    precision; a QAT model takes only ``"int8"`` / ``"int4w"``).

    Example:
        >>> check_policy(model, {"conv1": "int4w"})
        {'conv1': 'int4w'}
    """
    if not isinstance(policy, dict):
        raise TypeError("quantization policy must be a dict {layer name: "
                        f"precision}}. Received: {type(policy).__name__}")
    names = [layer.name for layer in _weight_layers(model)]
    qat = is_qat_model(model) if qat is None else qat
    out = {}
    for name, p in policy.items():
        if name not in names:
            raise ValueError(
                f"quantization policy names layer {name!r}, which is not a "
                f"weight layer of model {model.name!r}. Its weight layers: "
                f"{names[:20]}{' ...' if len(names) > 20 else ''}")
        check_precision(p, f"quantization[{name!r}]")
        if qat and p not in ("int8", "int4w"):
            raise ValueError(
                f"quantization[{name!r}]={p!r}: a quantization-aware model "
                "exports as a full-integer file, whose layers are 'int8' or "
                "'int4w'. Export tfcomp.quantization.strip_quantization("
                "model) for float layers.")
        out[name] = p
    return out


def float_tflite(model) -> bytes:
    """The float32 file of a float model through Keras' own
    ``model.export(format="litert")`` (falls back to ``convert_to_tflite``
    when Keras' exporter fails).

    Example:
        >>> fb = float_tflite(model)
    """
    from tfcomp.export.tflite import convert_to_tflite

    tmp = tempfile.mkdtemp(prefix="tfcomp-litert-")
    path = os.path.join(tmp, "model.tflite")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            model.export(path, format="litert", verbose=False)
        with open(path, "rb") as f:
            return f.read()
    except (ValueError, TypeError, RuntimeError, NotImplementedError):
        return convert_to_tflite(model, None)
    finally:
        with contextlib.suppress(OSError):
            os.remove(path)
        with contextlib.suppress(OSError):
            os.rmdir(tmp)


def _components(name: str) -> list:
    return [c for part in name.split(";") for c in part.split("/")]


def _kernel_size(layer) -> int:
    return int(sum(np.prod(w.shape) for w in layer.weights
                   if w.name in ("kernel", "depthwise_kernel",
                                 "pointwise_kernel")))


def layer_ops(model, flatbuffer) -> dict:
    """``{layer name: [WeightOp]}``: the weight ops of a float file that
    each weight layer of ``model`` became, matched by the layer's name
    scope in the weight tensor's name (``<model>/<layer>_1/convolution``)
    and its weight count.

    Example:
        >>> {n: [o.op for o in ops] for n, ops in layer_ops(m, fb).items()}
        {'conv1': ['CONV_2D'], 'fc': ['FULLY_CONNECTED']}
    """
    layers = _weight_layers(model)
    out = {layer.name: [] for layer in layers}
    tensors = read_model(flatbuffer).subgraphs[0].tensors
    for w in weight_ops(flatbuffer):
        comps = _components(w.weight)
        size = int(np.prod([int(s) for s in tensors[w.tensor].shape]))
        found = []
        for layer in layers:
            pat = re.compile(re.escape(layer.name) + r"(_\d+)?")
            hits = [c for c in comps if pat.fullmatch(c)]
            if hits and _fits(layer, size):
                # a scope "conv_1" is layer "conv" traced once, or layer
                # "conv_1" itself: prefer the suffixed reading
                exact = any(c == layer.name + "_1" for c in hits)
                found.append((not exact, layer.name))
        if found:
            out[sorted(found)[0][1]].append(w)
    return out


def _fits(layer, size: int) -> bool:
    total = _kernel_size(layer)
    sizes = {total} | {int(np.prod(w.shape)) for w in layer.weights
                       if w.name in ("depthwise_kernel",
                                     "pointwise_kernel")}
    return size in sizes


def layer_precisions(model, flatbuffer, ops: dict | None = None) -> dict:
    """``{layer name: precision}`` read back from the file's weight types
    (a layer with several ops reports the widest).

    Example:
        >>> layer_precisions(model, open("mix.tflite", "rb").read())
    """
    ops = layer_ops(model, flatbuffer) if ops is None else ops
    by_weight = {w.weight: p for w, p in zip(
        weight_ops(flatbuffer), op_precisions(flatbuffer).values())}
    out = {}
    for name, items in ops.items():
        got = [by_weight[w.weight] for w in items if w.weight in by_weight]
        if got:
            out[name] = min(got, key=PRECISIONS.index)
    return out


# ------------------------------------------------------------- float path


def _convert_float(model, policy: dict):
    require_quantizer()
    flatbuffer = float_tflite(model)
    ops = layer_ops(model, flatbuffer)
    missing = [n for n in policy if not ops.get(n)]
    if missing:
        raise ValueError(
            f"quantization policy names layers {missing} whose weights have "
            "no CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED op in the "
            "converted file; leave them out of the policy.")
    chosen = {w.index: p for n, p in policy.items() for w in ops[n]}
    out = quantize_tflite(flatbuffer, chosen)
    got = layer_precisions(model, out)
    fallback = {n: f"ai-edge-quantizer has no int4 recipe for "
                   f"{', '.join(sorted({w.op for w in ops[n]}))}"
                for n, p in policy.items()
                if p == "int4w" and got.get(n) != "int4w"}
    return out, got, fallback


# --------------------------------------------------------------- QAT path


def _file_layouts(codes: np.ndarray, shape) -> list:
    """The QAT codes in the layouts a file may store them in."""
    shape = tuple(int(s) for s in shape)
    outs = []
    for a in (np.moveaxis(codes, -1, 0), codes):
        if a.size == int(np.prod(shape)):
            outs.append(a.reshape(shape))
    return outs


def _qat_int4(model, flatbuffer, wanted: dict):
    """Rewrites the int8 weights of the ``wanted`` int4w layers as int4."""
    import flatbuffers

    from tfcomp.hardware.precision import _schema

    schema = _schema()
    params = quantization_params(model)
    fb = read_model(flatbuffer)
    sg = fb.subgraphs[0]
    ops = [w for w in weight_ops(flatbuffer) if w.dtype == "INT8"]
    fallback, done = {}, {}
    for name in wanted:
        codes = params.get(name, {}).get("codes")
        if codes is None:
            fallback[name] = "no integer weights"
            continue
        lo, hi = int(codes.min()), int(codes.max())
        if lo < _INT4_RANGE[0] or hi > _INT4_RANGE[1]:
            fallback[name] = (f"integer weights span [{lo}, {hi}], outside "
                              "int4's [-8, 7]")
            continue
        match = None
        m = code_multiplier(codes)  # the int8 file stores codes * m
        for w in ops:
            t = sg.tensors[w.tensor]
            data = np.asarray(fb.buffers[t.buffer].data, np.uint8)
            stored = data.view(np.int8)
            if any(np.array_equal(stored, c.reshape(-1) * m)
                   for c in _file_layouts(codes, t.shape)):
                match = (w, m)
                break
        if match is None:
            fallback[name] = (
                "no CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED op holds "
                "its weights (no int4 kernel for its op)")
        else:
            done[name] = match
    for w, m in {w.tensor: (w, m) for w, m in done.values()}.values():
        t = sg.tensors[w.tensor]
        buf = fb.buffers[t.buffer]
        codes = np.asarray(buf.data, np.uint8).view(np.int8) // m
        buf.data = pack_int4(codes.astype(np.int8))
        t.quantization.scale = np.asarray(t.quantization.scale,
                                          np.float32) * m  # the QAT scale
        t.type = schema.TensorType.INT4
    done = {name: w for name, (w, _) in done.items()}
    builder = flatbuffers.Builder(1024)
    builder.Finish(fb.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output()), done, fallback


def _convert_qat(model, policy: dict, io_type: str):
    from tfcomp.export.int8 import convert_int8

    params = quantization_params(model)
    wanted = []
    for layer in _weight_layers(model):
        p = policy.get(layer.name)
        w_bits = params.get(layer.name, {}).get("w_bits", 32)
        if p is None:
            p = "int4w" if w_bits <= 4 else "int8"
        elif p == "int4w" and w_bits > 4:
            raise ValueError(
                f"quantization[{layer.name!r}]='int4w' but the QAT layer has "
                f"w_bits={w_bits}: its trained weights do not fit int4. "
                "Quantize it at w_bits <= 4 (quantize_model(..., bits=...)) "
                "or ask 'int8'.")
        if p == "int4w":
            wanted.append(layer.name)
    int8_file = convert_int8(model, io_type=io_type)
    if not wanted:
        return int8_file, {n: "int8" for n in params if "codes" in
                           params[n]}, {}
    out, done, fallback = _qat_int4(model, int8_file, wanted)
    try:
        from tfcomp.export.runtime import make_interpreter
        make_interpreter(out)[0].invoke()
    except (RuntimeError, ValueError) as e:
        reason = f"the runtime rejected int4 weights ({e})"
        fallback.update({n: reason for n in done})
        out, done = int8_file, {}
    precisions = {n: ("int4w" if n in done else "int8") for n in params
                  if "codes" in params[n]}
    return out, precisions, fallback


def convert_mixed(model: keras.Model, quantization, io_type: str = "int8"):
    """The per-layer file of ``model``: ``(bytes, {layer: precision},
    {layer: why it fell back to int8})``.

    Args:
        model: a float or tfcomp QAT Keras model.
        quantization: ``"int4w"`` or a ``{layer name: precision}`` policy.
        io_type: input / output type of a QAT model's full-integer file.

    Example:
        >>> fb, prec, fallback = convert_mixed(qat, "int4w")
    """
    qat = is_qat_model(model)
    if isinstance(quantization, str):
        if quantization not in MIXED_MODES:
            raise ValueError(f"quantization must be one of {MIXED_MODES} "
                             f"or a policy dict. Received: {quantization!r}")
        policy = {} if qat else {
            layer.name: "int4w" for layer in _weight_layers(model)}
    else:
        policy = check_policy(model, quantization, qat)
    if qat:
        return _convert_qat(model, policy, io_type)
    return _convert_float(model, policy)
