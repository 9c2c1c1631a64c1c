"""Verified TFLite (LiteRT) export of Keras models.

Example:
    >>> report = export_tflite(model, "m_int8.tflite", quantization="int8",
    ...                        calibration_data=x_train[:256])
    >>> report.size_bytes, report.top1_agreement
"""

from __future__ import annotations

import collections
import contextlib
import io
import shutil
import tempfile
import warnings
import weakref

import keras
import numpy as np
import tensorflow as tf

from tfcomp import _io
from tfcomp.export import _recurrent
from tfcomp.export._converter_errors import (
    check_builtins,
    check_tables,
    run_converter,
)
from tfcomp.export._inputs import (
    check_numeric_inputs,
    input_dtype,
    is_multi,
    model_data,
    random_inputs,
    random_shape,
    rows,
    signature_input_names,
    sliced,
    take,
)
from tfcomp.export._volumes import lower_volume_layers
from tfcomp.export.int8 import prepare_for_tflite
from tfcomp.export.runtime import make_interpreter
from tfcomp.export.tflite_verify import (
    INTEGER_MODES,
    ExportReport,
    VerificationError,
    check_integer_file,
    verify_file,
)
from tfcomp.graph import parse_model
from tfcomp.graph.copy import float32_copy
from tfcomp.quantization import is_qat_model, strip_quantization

__all__ = ["ExportReport", "VerificationError", "export_tflite",
           "convert_to_tflite", "atomic_write_bytes", "DEFAULT_MIN_AGREEMENT"]

QUANTIZATION_MODES = (None, "dynamic", "float16", *INTEGER_MODES)
#: The converter's op set of each integer mode.
_OPS_SETS = {"int8": tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
             "int16x8": tf.lite.OpsSet.
             EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8}
#: Per-layer modes (:mod:`tfcomp.export.litert_quant`): "int4w" or a
#: ``{layer name: "float32" | "float16" | "int8" | "int4w"}`` dict.
MIXED_MODES = ("int4w",)

#: Default ``min_agreement`` of :func:`export_tflite`: the fraction of
#: verification inputs whose TFLite top-1 class must equal Keras'. Float
#: files agree ~100%, tfcomp QAT int8 files >= 99.9% and int8 PTQ of a
#: trained float model ~99%; 0.9 leaves room for untrained models and
#: small verification sets while a file calibrated on other inputs than it
#: is run on (0..255 vs 0..1) agrees about at chance and fails.
DEFAULT_MIN_AGREEMENT = 0.9

# Calibration inputs read once by export_tflite (conversion uses the first
# 512, verification the first ``num_verify``).
_CALIBRATION_ITEMS = 512


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Deprecated alias of :func:`tfcomp._io.atomic_write_bytes`.

    Example:
        >>> from tfcomp._io import atomic_write_bytes
        >>> atomic_write_bytes("model.tflite", flatbuffer)
    """
    warnings.warn("tfcomp.export.tflite.atomic_write_bytes is deprecated; "
                  "use tfcomp._io.atomic_write_bytes.", DeprecationWarning,
                  stacklevel=2)
    _io.atomic_write_bytes(path, data)


def _calibration_data(calibration_data, representative_data, verb: str):
    """``calibration_data``, or the deprecated ``representative_data``."""
    if representative_data is not None:
        warnings.warn(
            f"{verb}(representative_data=...) is deprecated; use "
            "calibration_data=...", DeprecationWarning, stacklevel=3)
        if calibration_data is None:
            return representative_data
    return calibration_data


def _calibration_arrays(data, model, limit: int = _CALIBRATION_ITEMS):
    """``calibration_data`` as an array of the model's input dtype:
    non-empty, numeric, finite and shaped like the model's input (errors
    name it); a list of them for a multi-input model."""
    return model_data(data, model, "calibration_data", limit)


def _representative_gen(data, model, limit: int = _CALIBRATION_ITEMS):
    """The converter's representative dataset: one sample per step (``B``
    for a model whose input fixes the batch size ``B``), a dict
    keyed by the signature's input names (the input tensors' names) for a
    multi-input model (a list is matched to the signature's own input
    order, not the model's)."""
    x = _calibration_arrays(data, model, limit)
    names = signature_input_names(model) if isinstance(x, list) else None
    step = _fixed_batch(model) or 1  # keras.Input(batch_size=B): B rows
    if rows(x) < step:
        raise ValueError(
            f"calibration_data has {rows(x)} rows, but model {model.name!r} "
            f"fixes its batch size at {step} (keras.Input(batch_size="
            f"{step})): give at least {step}")

    def gen():
        for i in range(0, rows(x) - step + 1, step):
            one = sliced(x, i, i + step)
            if names is not None:
                yield dict(zip(names, one))
            else:
                yield one if isinstance(one, list) else [one]
    return gen


def _fixed_batch(model) -> int | None:
    """The batch size ``keras.Input(batch_size=B)`` fixes, or None."""
    sizes = {getattr(t, "shape", (None,))[0] for t in model.inputs} \
        if model is not None else {None}
    return int(next(iter(sizes))) if len(sizes) == 1 and None not in sizes \
        else None


def _is_mixed(quantization) -> bool:
    return isinstance(quantization, dict) or (
        isinstance(quantization, str) and quantization in MIXED_MODES)


def _check_modes(quantization, io_type, mixed: bool = False) -> None:
    if not (quantization in QUANTIZATION_MODES
            or (mixed and _is_mixed(quantization))):
        also = " or 'int4w' / a {layer: precision} dict" if mixed else ""
        raise ValueError(
            f"quantization must be one of {QUANTIZATION_MODES}{also}. "
            f"Received: quantization={quantization!r}")
    if io_type not in ("int8", "float32"):
        raise ValueError(
            f"io_type must be 'int8' or 'float32'. Received: {io_type!r}")


def _make_converter(model):
    """A converter from the Keras model (weights frozen as constants). A
    model built on a dict of inputs goes through Keras' own SavedModel
    exporter: TF's Keras path calls it on a flat list of inputs, which
    fails unless the dict's keys happen to be in sorted order."""
    try:
        if not isinstance(getattr(model, "input", None), dict):
            return tf.lite.TFLiteConverter.from_keras_model(model)
    except (ValueError, TypeError, AttributeError):
        pass
    # through a SavedModel written by Keras' own exporter (inference mode),
    # removed once the converter (which reads it when converting) is gone
    tmp = tempfile.mkdtemp(prefix="tfcomp-savedmodel-")
    model.export(tmp, format="tf_saved_model", verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
    weakref.finalize(converter, shutil.rmtree, tmp, True)
    return converter


def _check_exportable_model(model, verb: str) -> None:
    """A built functional / Sequential model with numeric symbolic inputs,
    or a ``TypeError`` / ``ValueError`` naming the model."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"{verb} expects a keras.Model. Received: "
                        f"model={type(model).__name__}")
    inputs = getattr(model, "inputs", None) if model.built else None
    if not inputs:
        raise ValueError(
            f"{verb}: model {model.name!r} ({type(model).__name__}) must be a "
            "built functional or Sequential model with known inputs; wrap a "
            "subclassed one: keras.Model(inputs, model(inputs)).")
    check_numeric_inputs(model, verb)


def convert_to_tflite(model: keras.Model, quantization: str | None = None,
                      calibration_data=None, sparsity: bool = False,
                      io_type: str = "int8", *,
                      representative_data=None,
                      sequence_length: int | None = None) -> bytes:
    """Converts a Keras model to a TFLite flatbuffer (no file, no checks).

    Args:
        model: a built single-input Keras model.
        quantization: None (float32), "dynamic", "float16", "int8" or
            "int16x8".
        calibration_data: calibration inputs for "int8" (an array, an
            ``(x, y)`` tuple or an iterable / ``tf.data`` of batches; the
            first 512 inputs are used). Checked: non-empty, numeric, finite
            and shaped like the model's input (errors name it).
        sparsity: let the converter encode sparse weights (XNNPACK sparse
            inference for block-sparse 1x1 convolutions).
        io_type: "int8" or "float32" model inputs/outputs for "int8".
        representative_data: deprecated name of ``calibration_data``.
        sequence_length: steps recurrent layers (LSTM, GRU...) are unrolled
            for (in a copy) if their time axis is None; None: the data's.

    Example:
        >>> flatbuffer = convert_to_tflite(model, "float16")
    """
    calibration_data = _calibration_data(
        calibration_data, representative_data, "convert_to_tflite")
    _check_modes(quantization, io_type)
    _check_exportable_model(model, "convert_to_tflite")
    model = float32_copy(model)  # mixed_float16 compute: not convertible
    converter_kwargs: dict = {}
    model, calibration_data = _recurrent.unroll_with_data(  # no while_loop in TFLite
        model, sequence_length, calibration_data, _calibration_arrays)
    # A QAT model goes through the integer path for "int8" (its ranges come
    # from training); the float modes convert ``strip_quantization(model)``:
    # quantized weights baked into plain layers, activations in float.
    check_tables(model, "convert_to_tflite")
    is_qat = is_qat_model(model)
    qat = is_qat and quantization == "int8"
    if qat:  # (its float recurrent layers calibrated on calibration_data)
        model, converter_kwargs = _recurrent.qat_kwargs(
            *prepare_for_tflite(model), calibration_data)
    elif is_qat:
        model = strip_quantization(model)
    if not qat:  # the QAT int8 path: prepare_for_tflite's check says it
        model = lower_volume_layers(  # no 3D pooling, no int8 CONV_3D
            model, integer=quantization in INTEGER_MODES)
        check_builtins(model, "convert_to_tflite")
    if quantization in INTEGER_MODES and calibration_data is None \
            and not qat:
        raise ValueError(
            f"quantization={quantization!r} needs calibration_data (a few hundred "
            "training inputs) to calibrate activation ranges. Received: "
            "calibration_data=None")

    with contextlib.redirect_stdout(io.StringIO()):
        converter = _make_converter(model)
    optimizations = []
    if quantization in ("dynamic", "float16", *INTEGER_MODES):
        optimizations.append(tf.lite.Optimize.DEFAULT)
    if sparsity:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = optimizations
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantization in INTEGER_MODES:
        if calibration_data is not None:
            converter.representative_dataset = _representative_gen(
                calibration_data, model)
        converter.target_spec.supported_ops = [_OPS_SETS[quantization]]
        if io_type == "int8":  # integer I/O: int8, or int16 for 16x8
            io_dtype = tf.as_dtype(INTEGER_MODES[quantization])
            converter.inference_input_type = io_dtype
            converter.inference_output_type = io_dtype
    for key, value in converter_kwargs.items():
        setattr(converter, key, value)
    return run_converter(converter, model)


def _id_bound(model) -> int | None:
    """``input_dim`` of the Embedding(s) the model's input feeds (the
    smallest), or None."""
    parsed = parse_model(model)
    bounds = [int(c.layer.input_dim) for t in parsed.inputs[:1]
              for c in parsed.consumers(t)
              if isinstance(c.layer, keras.layers.Embedding)]
    return min(bounds) if bounds else None


def _verification_inputs(model, verify_data, x_cal, n, seed, length=None):
    if verify_data is not None:
        return model_data(verify_data, model, "verify_data", n)
    if x_cal is not None:
        return take(x_cal, n)
    if is_multi(model):
        return random_inputs(model, n, np.random.default_rng(seed))
    rng = np.random.default_rng(seed)
    shape = random_shape(model.inputs[0], n, length)  # unrolled RNN's
    dtype = input_dtype(model.inputs[0])
    if np.issubdtype(dtype, np.integer):
        bound = _id_bound(model)
        if bound is None:
            raise ValueError(
                f"export_tflite: the input of model {model.name!r} is "
                f"integer ({dtype}) and feeds no Embedding, so valid random "
                "inputs are unknown: pass verify_data (or calibration_data)"
                " or verify=False.")
        return rng.integers(0, bound, size=shape).astype(dtype)
    return rng.uniform(0, 1, size=shape).astype(np.float32)


def export_tflite(model: keras.Model, path: str,
                  quantization: str | None = None,
                  calibration_data=None, verify: bool = True,
                  sparsity: bool = False, verify_data=None,
                  num_verify: int = 256, io_type: str = "int8",
                  seed: int = 0, *, representative_data=None,
                  min_agreement: float = DEFAULT_MIN_AGREEMENT,
                  sequence_length: int | None = None) -> ExportReport:
    """Converts a Keras model to ``.tflite``, verifies it, writes it
    atomically.

    ``quantization="int8"`` is full-integer quantization: every op in int8,
    activation ranges calibrated on ``calibration_data`` (or taken from
    a tfcomp quantization-aware model, whose ranges are used as trained).
    ``"int16x8"`` is TFLite's 16x8 mode: int16 activations calibrated on
    ``calibration_data`` and int8 weights (a QAT model's b-bit weights
    baked in; its int8 ranges are not used).
    The float modes export a QAT model as
    ``tfcomp.quantization.strip_quantization`` does (its b-bit weights baked
    in, activations in float), so its verification against the QAT model
    shows the cost of float activations.

    Verification runs the converted bytes in the TFLite runtime on
    ``verify_data`` (else the calibration inputs, else uniform random
    inputs) and compares with Keras. It fails when, for class-score
    outputs (``(N, classes)``; per position for a segmentation net's
    softmax), fewer than ``min_agreement`` of the inputs (positions) get
    the same top-1 class, when an output is not finite, or when an
    "int8" file is not integer. A failed file raises
    ``VerificationError`` and is not written: ``path`` keeps what it held.
    Calibration inputs on another scale than the inputs the model is run on
    (0..255 vs 0..1) give such a file.

    Args:
        model: a built single-input Keras model.
        path: output ``.tflite`` path.
        quantization: None (float32), "dynamic", "float16", "int8",
            "int16x8", or per layer (:mod:`tfcomp.export.litert_quant`, needs the extra
            ``tfcomp[litert]`` for float models): a ``{layer name:
            "float32" | "float16" | "int8" | "int4w"}`` policy (float
            models: unlisted layers stay float32; int8 / int4w are
            dynamic-range int8 / int4 weights) or "int4w" (every weight
            layer int4w). A QAT model exports full-integer with int4
            weights, exactly its integer weights, for its w_bits <= 4
            layers (or the policy's int4w layers); layers that cannot be
            int4 stay int8 and are named in ``report.int8_fallback``.
        calibration_data: calibration inputs (required for "int8" unless
            the model is quantization-aware): an array, an ``(x, y)``
            tuple or an iterable / ``tf.data`` of batches, read once (the
            first 512 inputs). Checked: non-empty, numeric, finite and
            shaped like the model's input.
        verify: run the file in the runtime and compare with Keras.
        sparsity: emit sparse weights (see ``convert_to_tflite``).
        verify_data: inputs for verification (default: the calibration
            data, else uniform random inputs in [0, 1)); checked like
            ``calibration_data``.
        num_verify: number of verification inputs.
        io_type: input/output type of "int8" models ("int8" or
            "float32"); for "int16x8" "int8" means integer (int16) I/O.
        seed: seed of the random verification inputs.
        representative_data: deprecated name of ``calibration_data``.
        min_agreement: the lowest accepted top-1 agreement with Keras, in
            [0, 1] (default :data:`DEFAULT_MIN_AGREEMENT` = 0.9, every
            mode; 0 disables the check). Only class-score outputs are
            checked.
        sequence_length: see ``convert_to_tflite`` (None: the data's); data cut to it.

    Returns:
        An ``ExportReport``.

    Raises:
        VerificationError: the file failed verification (nothing written;
            ``error.report`` has the numbers).
        ValueError / TypeError: bad arguments or data (the message names
            the argument).

    Example:
        >>> r = export_tflite(model, "m.tflite")
        >>> r.max_abs_error < 1e-4
        True
    """
    calibration_data = _calibration_data(
        calibration_data, representative_data, "export_tflite")
    _check_modes(quantization, io_type, mixed=True)
    mixed = _is_mixed(quantization)
    min_agreement = _io.check_number(min_agreement, "min_agreement", 0, 1)
    if verify:
        num_verify = _io.check_positive_int(num_verify, "num_verify")
    x_cal = None
    _check_exportable_model(model, "export_tflite")
    model = float32_copy(model)  # verified as the float32 model it is
    if mixed and is_multi(model):
        raise ValueError(
            f"export_tflite: per-layer quantization={quantization!r} reads "
            f"single-input models; model {model.name!r} has "
            f"{len(model.inputs)} inputs (export it with 'int8', "
            "'dynamic' or 'float16').")
    if calibration_data is not None:
        # read once (an iterable may be single-pass), checked against the
        # model's input
        x_cal = _calibration_arrays(
            calibration_data, model,
            max(_CALIBRATION_ITEMS, num_verify if verify else 1))
    if mixed:
        return _export_mixed(model, path, quantization, io_type, verify,
                             verify_data, x_cal, num_verify, seed,
                             min_agreement)
    length, x = _recurrent.export_length(  # unrolled recurrent layers'
        model, sequence_length, x_cal, verify_data if verify else None,
        lambda d: _verification_inputs(model, d, None, num_verify, seed))
    flatbuffer = convert_to_tflite(
        model, quantization=quantization,
        calibration_data=None if x_cal is None else take(
            x_cal, _CALIBRATION_ITEMS),
        sparsity=sparsity, io_type=io_type, sequence_length=length)
    report = ExportReport(path=str(path), size_bytes=len(flatbuffer),
                          quantization=quantization)
    if verify:
        x = _recurrent.fit_length(x if x is not None else _verification_inputs(
            model, verify_data, x_cal, num_verify, seed, length), model, length)
        verify_file(model, flatbuffer, x, report, min_agreement, quantization,
                io_type, x_cal)
    elif quantization in INTEGER_MODES:
        check_integer_file(make_interpreter(flatbuffer)[0], io_type, report)
    _io.atomic_write_bytes(path, flatbuffer)
    if quantization in INTEGER_MODES:
        _warn_float_ops(path, report)
    return report


def _warn_float_ops(path, report) -> None:
    """A warning naming the ops an integer file still computes in float."""
    if report.float_ops:
        counts = collections.Counter(report.float_ops)
        warnings.warn(
            f"export_tflite: {str(path)!r} ({report.quantization}) computes "
            f"{len(report.float_ops)} "
            f"op(s) in float ({', '.join(f'{k} x{v}' for k, v in counts.items())}"
            "): TFLite has no integer kernel for them (e.g. softplus, mish, "
            "UnitNormalization) or the model keeps them float; they run "
            "between DEQUANTIZE / QUANTIZE ops, which an integer-only "
            "accelerator delegate may refuse (report.float_ops).",
            stacklevel=3)


def _export_mixed(model, path, quantization, io_type, verify, verify_data,
                  x_cal, num_verify, seed, min_agreement) -> ExportReport:
    """``export_tflite`` of a per-layer policy (see
    :mod:`tfcomp.export.litert_quant`): convert, verify, write."""
    from tfcomp.export.litert_quant import convert_mixed

    qat = is_qat_model(model)
    flatbuffer, precisions, fallback = convert_mixed(  # recurrent: fixed length
        _recurrent.unrolled_for_tflite(model), quantization, io_type)
    label = quantization if isinstance(quantization, str) else "mixed"
    report = ExportReport(path=str(path), size_bytes=len(flatbuffer),
                          quantization=label, layer_precisions=precisions,
                          int8_fallback=fallback)
    if fallback:
        warnings.warn(
            f"export_tflite: layers {sorted(fallback)} stay int8 instead of "
            f"int4w: {fallback}", stacklevel=3)
    if verify:
        x = _verification_inputs(model, verify_data, x_cal, num_verify, seed)
        verify_file(model, flatbuffer, x, report, min_agreement, label,
                io_type, x_cal, integer=qat)
    elif qat:
        check_integer_file(make_interpreter(flatbuffer)[0], io_type, report)
    _io.atomic_write_bytes(path, flatbuffer)
    if label == "int8":
        _warn_float_ops(path, report)
    return report
