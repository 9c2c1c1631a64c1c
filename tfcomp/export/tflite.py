"""Verified TFLite (LiteRT) export of Keras models.

Example:
    >>> report = export_tflite(model, "m_int8.tflite", quantization="int8",
    ...                        calibration_data=x_train[:256])
    >>> report.size_bytes, report.top1_agreement
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import tempfile
import warnings

import keras
import numpy as np
import tensorflow as tf

from tfcomp import _io
from tfcomp.export.int8 import prepare_for_tflite
from tfcomp.export.runtime import make_interpreter, run_interpreter
from tfcomp.quantization import is_qat_model, strip_quantization

__all__ = ["ExportReport", "export_tflite", "convert_to_tflite",
           "atomic_write_bytes"]

QUANTIZATION_MODES = (None, "dynamic", "float16", "int8")


@dataclasses.dataclass
class ExportReport:
    """What ``export_tflite`` wrote and how closely it matches Keras.

    Attributes:
        path: the written file.
        size_bytes: file size.
        quantization: the mode used.
        max_abs_error: max |TFLite - Keras| over the verification inputs
            (None when not verified).
        top1_agreement: fraction of verification inputs whose argmax agrees
            (None when not verified or outputs are not class scores).
        num_verified: number of verification inputs.
        runtime: the runtime that ran the file.
    """

    path: str
    size_bytes: int
    quantization: str | None
    max_abs_error: float | None = None
    top1_agreement: float | None = None
    num_verified: int = 0
    runtime: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


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


def _representative_gen(data, limit: int = 512):
    x, _ = _io.as_arrays(data, max_items=limit)

    def gen():
        for i in range(len(x)):
            yield [x[i:i + 1]]
    return gen


def _make_converter(model):
    """A converter from the Keras model (weights frozen as constants)."""
    try:
        return tf.lite.TFLiteConverter.from_keras_model(model)
    except (ValueError, TypeError, AttributeError):
        # Fallback: through a SavedModel written by Keras' own exporter.
        tmp = tempfile.mkdtemp(prefix="tfcomp-savedmodel-")
        model.export(tmp, format="tf_saved_model", verbose=False)
        return tf.lite.TFLiteConverter.from_saved_model(tmp)


def convert_to_tflite(model: keras.Model, quantization: str | None = None,
                      calibration_data=None, sparsity: bool = False,
                      io_type: str = "int8", *,
                      representative_data=None) -> bytes:
    """Converts a Keras model to a TFLite flatbuffer (no file, no checks).

    Args:
        model: a built single-input Keras model.
        quantization: None (float32), "dynamic", "float16" or "int8".
        calibration_data: calibration inputs for "int8" (an array, an
            ``(x, y)`` tuple or an iterable / ``tf.data`` of batches; the
            first 512 inputs are used).
        sparsity: let the converter encode sparse weights (XNNPACK sparse
            inference for block-sparse 1x1 convolutions).
        io_type: "int8" or "float32" model inputs/outputs for "int8".
        representative_data: deprecated name of ``calibration_data``.

    Example:
        >>> flatbuffer = convert_to_tflite(model, "float16")
    """
    calibration_data = _calibration_data(
        calibration_data, representative_data, "convert_to_tflite")
    if quantization not in QUANTIZATION_MODES:
        raise ValueError(
            f"quantization must be one of {QUANTIZATION_MODES}. Received: "
            f"quantization={quantization!r}")
    if io_type not in ("int8", "float32"):
        raise ValueError(
            f"io_type must be 'int8' or 'float32'. Received: {io_type!r}")
    if not model.built or not model.inputs:
        raise ValueError(
            f"Model {model.name!r} must be a built functional or Sequential "
            "model with known inputs to export.")
    converter_kwargs: dict = {}
    # A QAT model goes through the integer path for "int8" (its ranges come
    # from training); the float modes convert ``strip_quantization(model)``:
    # quantized weights baked into plain layers, activations in float.
    is_qat = is_qat_model(model)
    qat = is_qat and quantization == "int8"
    if qat:
        model, converter_kwargs = prepare_for_tflite(model)
    elif is_qat:
        model = strip_quantization(model)
    if quantization == "int8" and calibration_data is None and not qat:
        raise ValueError(
            "quantization='int8' needs calibration_data (a few hundred "
            "training inputs) to calibrate activation ranges. Received: "
            "calibration_data=None")

    with contextlib.redirect_stdout(io.StringIO()):
        converter = _make_converter(model)
    optimizations = []
    if quantization in ("dynamic", "float16", "int8"):
        optimizations.append(tf.lite.Optimize.DEFAULT)
    if sparsity:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = optimizations
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantization == "int8":
        if calibration_data is not None:
            converter.representative_dataset = _representative_gen(
                calibration_data)
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if io_type == "int8":
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    for key, value in converter_kwargs.items():
        setattr(converter, key, value)
    with contextlib.redirect_stdout(io.StringIO()):
        return converter.convert()


def _verification_inputs(model, verify_data, calibration_data, n, seed):
    if verify_data is not None:
        return _io.as_arrays(verify_data, max_items=n, name="verify_data")[0]
    if calibration_data is not None:
        return _io.as_arrays(calibration_data, max_items=n)[0]
    rng = np.random.default_rng(seed)
    shape = [n, *model.inputs[0].shape[1:]]
    return rng.uniform(0, 1, size=shape).astype(np.float32)


def export_tflite(model: keras.Model, path: str,
                  quantization: str | None = None,
                  calibration_data=None, verify: bool = True,
                  sparsity: bool = False, verify_data=None,
                  num_verify: int = 256, io_type: str = "int8",
                  seed: int = 0, *, representative_data=None
                  ) -> ExportReport:
    """Converts a Keras model to ``.tflite``, writes it atomically, verifies it.

    ``quantization="int8"`` is full-integer quantization: every op in int8,
    activation ranges calibrated on ``calibration_data`` (or taken from
    a tfcomp quantization-aware model, whose ranges are used as trained).
    The float modes export a QAT model as
    ``tfcomp.quantization.strip_quantization`` does (its b-bit weights baked
    in, activations in float), so its verification against the QAT model
    shows the cost of float activations.

    Args:
        model: a built single-input Keras model.
        path: output ``.tflite`` path.
        quantization: None (float32), "dynamic", "float16" or "int8".
        calibration_data: calibration inputs (required for "int8" unless
            the model is quantization-aware): an array, an ``(x, y)``
            tuple or an iterable / ``tf.data`` of batches.
        verify: run the file in the runtime and compare with Keras.
        sparsity: emit sparse weights (see ``convert_to_tflite``).
        verify_data: inputs for verification (default: the representative
            data, else uniform random inputs).
        num_verify: number of verification inputs.
        io_type: input/output type of "int8" models.
        seed: seed of the random verification inputs.
        representative_data: deprecated name of ``calibration_data``.

    Returns:
        An ``ExportReport``.

    Example:
        >>> r = export_tflite(model, "m.tflite")
        >>> r.max_abs_error < 1e-4
        True
    """
    calibration_data = _calibration_data(
        calibration_data, representative_data, "export_tflite")
    flatbuffer = convert_to_tflite(
        model, quantization=quantization, calibration_data=calibration_data,
        sparsity=sparsity, io_type=io_type)
    _io.atomic_write_bytes(path, flatbuffer)
    report = ExportReport(path=str(path), size_bytes=len(flatbuffer),
                          quantization=quantization)
    if not verify:
        return report
    x = _verification_inputs(model, verify_data, calibration_data,
                             num_verify, seed)
    interp, runtime = make_interpreter(flatbuffer)
    y_lite = run_interpreter(interp, x)
    y_keras = np.concatenate([
        keras.ops.convert_to_numpy(model(x[i:i + 256], training=False))
        for i in range(0, len(x), 256)])
    y_keras = y_keras.reshape(y_lite.shape)
    report.max_abs_error = float(np.max(np.abs(y_lite - y_keras)))
    report.num_verified = int(len(x))
    report.runtime = runtime
    if y_lite.ndim == 2 and y_lite.shape[1] > 1:
        report.top1_agreement = float(np.mean(
            y_lite.argmax(1) == y_keras.argmax(1)))
    return report
