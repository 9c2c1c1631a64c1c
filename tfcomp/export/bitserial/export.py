"""``export_bitserial``: QAT Keras model -> verified bit-serial descriptor.

Example:
    >>> report = export_bitserial(qat, "out/net.json", hardware="bitfusion",
    ...                           verify_x=x_test[:64])
    >>> report.top1_agreement, report.latency_s
    >>> export_bitserial(qat2, "out/two.json", verify_x=[img, meta])
"""

from __future__ import annotations

import dataclasses
import os
import warnings

import keras
import numpy as np

from tfcomp._batches import as_model_input
from tfcomp.export._inputs import rows, sliced, take
from tfcomp.export.bitserial.descriptor import (
    descriptor_blob_path,
    write_descriptor,
)
from tfcomp.export.bitserial.hardware_hook import (
    hardware_args,
    resolve_hardware,
)
from tfcomp.export.bitserial.keras_import import (
    build_ir_from_keras,
    model_data,
)
from tfcomp.export.bitserial.reference import integer_reference
from tfcomp.export.bitserial.simulator import simulate_bitserial
from tfcomp.export.tflite_verify import binary_threshold, side_agreement, top1_agreement

__all__ = ["BitSerialReport", "export_bitserial"]


@dataclasses.dataclass
class BitSerialReport:
    """What ``export_bitserial`` wrote and how it was verified.

    Attributes:
        path: descriptor JSON path.
        blob_path: packed weight blob path.
        size_bytes: descriptor + blob bytes.
        blob_bytes: blob bytes (the packed weights).
        target: the accelerator, "bismo" or "bitfusion" (the descriptor's
            ``target`` field).
        num_layers: IR ops (array and host).
        cycles, latency_s, energy_j: descriptor totals (hardware model).
        compute_cycles: array compute cycles (per ``batch`` samples).
        num_verified: verification inputs simulated.
        simulator_exact: simulator output == integer reference, bit for bit.
        max_abs_error: max |dequantized simulator - Keras| output (the
            pre-softmax tensor when a final softmax was dropped).
        top1_agreement: fraction of inputs (of output positions, for
            per-pixel outputs) whose argmax over the last axis agrees with
            Keras; for a sigmoid output, whose side of 0.5 agrees (per
            label of a multi-label head).
        notes: approximations made by the importer.

    Example:
        >>> r = export_bitserial(qat, "net.json", verify_x=x[:16])
        >>> r.to_dict()["simulator_exact"]
        True
    """

    path: str
    blob_path: str
    size_bytes: int
    blob_bytes: int
    target: str
    num_layers: int
    cycles: int | None
    latency_s: float | None
    energy_j: float | None
    compute_cycles: int
    num_verified: int = 0
    simulator_exact: bool | None = None
    max_abs_error: float | None = None
    top1_agreement: float | None = None
    notes: list = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _eager_outputs(model, x, batch_size: int = 256) -> np.ndarray:
    """Inference-mode outputs from eager calls.

    Eager calls quantize weights exactly as ``quantization_params`` does;
    a compiled ``predict`` may round a weight that sits on a rounding tie
    (|w / s - k - 0.5| ~ 1e-7) the other way.
    """
    outs = [keras.ops.convert_to_numpy(model(as_model_input(
        model, sliced(x, i, i + batch_size)), training=False))
            for i in range(0, rows(x), batch_size)]
    return np.concatenate(outs, axis=0)


def export_bitserial(model, path: str, hardware=None,
                     hardware_config: dict | None = None,
                     calibration_data=None, verify_x=None, batch: int = 1,
                     verify: bool = True, *, target: str | None = None,
                     calibration_x=None) -> BitSerialReport:
    """Writes a QAT model as a bit-serial descriptor + blob and verifies it.

    The model is mapped to an integer IR (:func:`build_ir_from_keras`),
    written by :func:`write_descriptor`, and (with ``verify``) simulated
    bit-serially from the files on ``verify_x``: the simulator must equal
    the integer reference exactly, and its dequantized output is compared
    with the model's inference-mode output (eager calls; max abs error,
    top-1 agreement).

    Supported layers: Conv1D, Conv2D (also grouped), Conv2DTranspose,
    DepthwiseConv2D, Dense (QAT or float: 8-bit weights), BinaryConv2D /
    BinaryDense (1-bit sign weights, ``keras_binary``), QuantActivation,
    QuantReLU, ReLU / ReLU6 / linear activations, element-wise
    activations (tables: sigmoid, swish, ...), Add (two inputs),
    Concatenate (channel axis; N inputs, each requantized onto the output
    grid unless already on it), Multiply (two inputs of one shape, or a
    squeeze-excite per-channel gate; TFLite's MUL),
    Max/Average/GlobalAverage/GlobalMaxPooling 1D/2D, ZeroPadding1D/2D,
    UpSampling1D/2D (interpolation="nearest") and Cropping1D/2D (values
    moved on their input's grid), Rescaling and Normalization (per
    channel; folded into the model input, else tables), Flatten, Reshape,
    dropout-like identities and a final softmax; see
    :func:`build_ir_from_keras`. Any other layer (Embedding,
    MultiHeadAttention / EinsumDense, LayerNormalization,
    GroupNormalization, an unfolded BatchNormalization, Conv3D, Lambda,
    bilinear UpSampling2D, UpSampling3D / Cropping3D, ``keras.ops``
    calls, hard-swish's ``x + 3``, ...) raises a ValueError
    naming the layer, its type and the supported types, before anything
    is written.

    Args:
        model: a calibrated / trained QAT model (``quantize_model``).
        path: descriptor path (``.json``; the blob goes beside it).
        hardware: the accelerator (default "bismo"): "bismo", "bitfusion"
            or a cost model (see :func:`write_descriptor`).
        hardware_config: parameters of the accelerator's default model
            (see :func:`write_descriptor`).
        calibration_data: inputs for tensors the model does not quantize
            (an array, ``(x, y)`` or batches, as ``fit`` takes; for a model
            of several inputs a list of arrays in ``model.inputs`` order,
            ``((x1, x2), y)`` or batches of those).
        verify_x: verification inputs (default: the calibration inputs),
            in the same forms.
        batch: samples per program run recorded in the descriptor.
        verify: simulate and compare (needs ``verify_x`` or
            ``calibration_data``).
        target: deprecated name of ``hardware``.
        calibration_x: deprecated name of ``calibration_data``.

    Returns:
        A :class:`BitSerialReport`.

    Example:
        >>> r = export_bitserial(qat, "net.json", "bismo", verify_x=x[:32])
        >>> r.simulator_exact, r.top1_agreement
        (True, 1.0)
    """
    hw = resolve_hardware(*hardware_args(hardware, hardware_config, target))
    if calibration_x is not None:
        warnings.warn("calibration_x= is deprecated; use calibration_data=.",
                      DeprecationWarning, stacklevel=2)
        if calibration_data is None:
            calibration_data = calibration_x
    cal_x = None if calibration_data is None else model_data(
        calibration_data, model)
    x = verify_x if verify_x is not None else cal_x
    if verify and x is not None:  # checked before anything is written
        x = model_data(x, model, "verify_x" if verify_x is not None
                       else "calibration_data")
        if isinstance(batch, bool) or not isinstance(
                batch, (int, np.integer)) or batch < 1:
            raise ValueError(f"batch must be an int >= 1. Received: "
                             f"batch={batch!r}")
        n = (rows(x) // batch) * batch
        if n == 0:
            raise ValueError(f"verify_x must hold at least batch={batch} "
                             f"samples. Received: {rows(x)}")
    ir = build_ir_from_keras(model, cal_x)
    desc = write_descriptor(ir, path, hw, batch=batch)
    blob = descriptor_blob_path(path, desc)
    totals = desc["totals"]
    report = BitSerialReport(
        path=path, blob_path=blob,
        size_bytes=os.path.getsize(path) + os.path.getsize(blob),
        blob_bytes=os.path.getsize(blob), target=desc["target"],
        num_layers=len(ir.ops), cycles=totals["cycles"],
        latency_s=totals["latency_s"], energy_j=totals["energy_j"],
        compute_cycles=totals["compute_cycles"],
        notes=list(ir.notes))
    if not verify or x is None:
        return report
    x = take(x, n)
    y_sim = simulate_bitserial(path, x)
    report.simulator_exact = bool(np.array_equal(y_sim,
                                                 integer_reference(ir, x)))
    ref = model
    if ir.keras_output is not None and not any(
            ir.keras_output is t for t in keras.tree.flatten(model.outputs)):
        ref = keras.Model(model.inputs, ir.keras_output)  # before softmax
    y_keras = np.asarray(_eager_outputs(ref, x))
    if y_keras.ndim < 2:
        y_keras = y_keras.reshape(n, -1)
    y_real = ir.quant(ir.output).dequantize(y_sim).reshape(y_keras.shape)
    report.num_verified = n
    report.max_abs_error = float(np.max(np.abs(y_real - y_keras)))
    t = binary_threshold(model, y_keras, 1)
    if t is not None:  # a sigmoid: its decisions (per label)
        report.top1_agreement = side_agreement(y_real, y_keras, t)
    elif y_keras.shape[-1] > 1:  # per input, or per position (per pixel)
        report.top1_agreement = top1_agreement(y_real, y_keras)
    return report
