"""The TFLite converter's "op is neither a custom op nor a flex op" errors
as one clear message naming the TensorFlow ops and the model's layers that
use them (a VAE's sampling layer: ``keras.random.normal``), instead of the
MLIR dump; and the layers known to have no builtin op (3D pooling, hash
table lookups), refused by name before converting.

Example:
    >>> check_tables(model, "export_tflite")
    >>> flatbuffer = run_converter(converter, model)
"""

from __future__ import annotations

import contextlib
import io
import re

import keras

from tfcomp.graph.walk import iter_leaf_layers

__all__ = ["run_converter", "unsupported_ops_message", "check_builtins",
           "check_tables", "TABLE_LAYERS", "NO_TFLITE_OPS"]

_OP = re.compile(r"'tf\.(\w+)' op is neither a custom op nor a flex op")
_LOC = re.compile(r'fused\["(\w+):", "([^"@]+)')


def _layer_of(path: str, names: set) -> str | None:
    """The model layer a traced op path (``model_1/sampling_1/...``)
    belongs to: its first segment that names a layer (Keras' tracing may
    append ``_<n>``)."""
    for seg in path.split("/"):
        for cand in (seg, re.sub(r"_\d+$", "", seg)):
            if cand in names:
                return cand
    return None


_OP_16X8 = re.compile(r"16x8-bit not yet supported for op: '(\w+)'")
_UNCALIBRATED = re.compile(r"Max and min for dynamic tensors should be "
                           r"recorded during calibration: Failed for tensor "
                           r"(\S+)")


def _int16x8_message(text: str, model, verb: str) -> str | None:
    """TFLite's 16x8 mode's refusals, or None: an op it has no int16
    kernel for (the NEG of Layer / GroupNormalization's decomposition), or
    an input it cannot calibrate (integer token ids of an Embedding)."""
    if m := _OP_16X8.search(text):
        return (f"{verb}: TFLite's 16x8 mode (quantization='int16x8') has "
                f"no int16 kernel for op {m.group(1)!r} in model "
                f"{model.name!r} (a Layer / GroupNormalization decomposes "
                "into NEG); export it with quantization='int8' (a tfcomp "
                "QAT model's normalizations are integer there) or 'float16'.")
    if m := _UNCALIBRATED.search(text):
        return (f"{verb}: TFLite's 16x8 mode (quantization='int16x8') "
                f"cannot calibrate tensor {m.group(1)!r} of model "
                f"{model.name!r} (integer token ids of an Embedding input "
                "have no int16 range); export it with quantization='int8' "
                "or 'float16'.")
    return None


def unsupported_ops_message(text: str, model, verb: str) -> str | None:
    """The clear message for a converter error ``text``, or None when it
    is not an unsupported-op error."""
    if (message := _int16x8_message(text, model, verb)) is not None:
        return message
    ops = sorted(set(_OP.findall(text)))
    if not ops:
        return None
    names = {layer.name for _, layer in iter_leaf_layers(model)}
    layers = sorted({lyr for op, path in _LOC.findall(text) if op in ops
                     for lyr in [_layer_of(path, names)] if lyr})
    random = any("Random" in op for op in ops)
    where = f" in layer(s) {layers}" if layers else ""
    return (f"{verb}: TFLite has no builtin op for TensorFlow op(s) {ops}"
            f"{where} of model {model.name!r}"
            f"{' (random sampling, e.g. a VAE sampling layer)' if random else ''}"
            ". Export the part of the model a device runs without them, e.g. "
            "keras.Model(model.input, model.get_layer(NAME).output), or "
            "replace the layer.")


def run_converter(converter, model, verb: str = "convert_to_tflite"
                  ) -> bytes:
    """``converter.convert()`` (its stdout silenced); an unsupported-op
    error becomes a ``ValueError`` naming the ops and layers."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return converter.convert()
    except Exception as e:  # the converter's own error type is internal
        message = unsupported_ops_message(str(e), model, verb)
        if message is None:
            raise
        raise ValueError(message) from e


#: Layers TFLite has no builtin for (float or int8): 3D pooling.
NO_TFLITE_OPS = (keras.layers.MaxPooling3D, keras.layers.AveragePooling3D)
#: Preprocessing layers computed with TensorFlow hash tables.
TABLE_LAYERS = (keras.layers.IntegerLookup, keras.layers.StringLookup,
                keras.layers.Hashing)


def _named(model, classes, exact: bool = False) -> list:
    """``["path (Class)", ...]`` of the model's layers of ``classes``
    (``exact``: of those very classes, not their subclasses)."""
    return [f"{path} ({type(layer).__name__})"
            for path, layer in iter_leaf_layers(model)
            if (type(layer) in classes if exact
                else isinstance(layer, classes))]


def check_builtins(model, verb: str) -> None:
    """A ``ValueError`` naming the layers TFLite has no builtin op for (the
    converter would fail with an MLIR error)."""
    bad = _named(model, NO_TFLITE_OPS, exact=True)  # not the export twins
    if bad:
        raise ValueError(
            f"{verb}: layers {bad} of model {model.name!r} have no TFLite "
            "builtin op (TFLite has no 3D pooling; a channels_last one with "
            "a static input shape is exported as two 2D poolings); replace "
            "them (e.g. a strided Conv3D, or GlobalAveragePooling3D) before "
            "exporting.")


def check_tables(model, verb: str) -> None:
    """A ``ValueError`` naming the hash-table preprocessing layers inside
    the model (TFLite builtins have none; the QAT path's converter error
    names no layer)."""
    tables = _named(model, TABLE_LAYERS)
    if tables:
        raise ValueError(
            f"{verb}: layers {tables} of model {model.name!r} look values up "
            "in a hash table, which TFLite builtins do not have. Export the "
            "part of the model after them (feed it their outputs, e.g. "
            "one-hot or index inputs) and keep the lookup in the app's "
            "preprocessing.")
