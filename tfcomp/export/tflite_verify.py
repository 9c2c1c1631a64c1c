"""Verifying a converted TFLite file against its Keras model: the report
``export_tflite`` returns, the error a failed file raises, and the checks
(outputs compared, top-1 agreement on class scores, per position for
segmentation nets; an "int8" file's integer tensors and float ops).

Example:
    >>> report = ExportReport("m.tflite", 1234, "int8")
    >>> verify_file(model, flatbuffer, x, report, 0.9, "int8", "int8", None)
    >>> report.top1_agreement
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from tfcomp import _io
from tfcomp._batches import as_model_input
from tfcomp._output_kinds import compiled_loss, is_sigmoid, loss_kind
from tfcomp.export._inputs import is_multi, rows, signature_input_names, sliced
from tfcomp.export.runtime import (
    float_ops,
    make_interpreter,
    output_details_in_order,
    run_interpreter,
)

__all__ = ["ExportReport", "VerificationError", "binary_threshold",
           "check_integer_file", "side_agreement", "top1_agreement",
           "verify_file"]


@dataclasses.dataclass
class ExportReport:
    """What ``export_tflite`` wrote and how closely it matches Keras.

    Attributes:
        path: the written file.
        size_bytes: file size.
        quantization: the mode used.
        max_abs_error: max |TFLite - Keras| over the verification inputs
            and every output (None when not verified).
        top1_agreement: fraction of verification inputs whose argmax agrees
            (per position for per-pixel / per-step class scores: a
            softmax output, or logits of a model compiled with a
            categorical cross-entropy; for binary outputs, a sigmoid or a
            model compiled with a binary cross-entropy, the side of 0.5
            (of 0 for logits), per label of a multi-label head; None when
            not verified or no output holds class scores; for several
            such outputs, the lowest).
        num_verified: number of verification inputs.
        runtime: the runtime that ran the file.
        layer_precisions: per-layer files ("int4w" or a policy dict):
            ``{layer: precision}`` read back from the file's weight types.
        int8_fallback: per-layer files: ``{layer: reason}`` for the
            layers asked (or, in a QAT model, due) as int4w that stayed
            int8 (an op without int4 support, e.g. DEPTHWISE_CONV_2D in
            ai-edge-quantizer 0.10).
        float_ops: "int8" files: the ops that still compute in float
            (``[]`` for a full-integer file; a QAT model's file is one, its
            recurrent layers too given calibration_data; post-training int8
            of a float model may keep a few, e.g. NEG in a LayerNormalization),
            None for other modes.
    """

    path: str
    size_bytes: int
    quantization: str | None
    max_abs_error: float | None = None
    top1_agreement: float | None = None
    num_verified: int = 0
    runtime: str | None = None
    layer_precisions: dict | None = None
    int8_fallback: dict | None = None
    float_ops: list | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class VerificationError(_io.BadInputError):
    """A converted ``.tflite`` file does not compute what its Keras model
    does (top-1 agreement below ``min_agreement``, non-finite outputs, or
    an "int8" file that is not integer). Nothing was written under the
    final name; ``error.report`` holds the measurements.

    Example:
        >>> try:
        ...     export_tflite(model, "m.tflite", "int8",
        ...                   calibration_data=x_train * 255,
        ...                   verify_data=x_test)
        ... except VerificationError as e:
        ...     e.report.top1_agreement
    """

    def __init__(self, message: str, report: ExportReport):
        super().__init__(message)
        self.report = report


#: Full-integer modes and their activation type: int8, or TFLite's 16x8
#: mode (int16 activations, int8 weights; for models int8 activations
#: hurt: super-resolution, audio, regression).
INTEGER_MODES = {"int8": np.int8, "int16x8": np.int16}


def check_integer_file(interp, io_type: str, report: ExportReport) -> None:
    """An "int8" / "int16x8" file must run integer kernels (int8 / int16
    activations, never a float fallback); the ops left float are named in
    ``report.float_ops``."""
    report.float_ops = float_ops(interp)
    details = interp.get_tensor_details()
    act = INTEGER_MODES.get(report.quantization, np.int8)
    codes = [d for d in details if np.dtype(d["dtype"]) == act]
    want = act if io_type == "int8" else np.float32
    got = np.dtype(interp.get_input_details()[0]["dtype"])
    if np.issubdtype(got, np.integer) and got != act:
        want = got  # integer ids (Embedding inputs) stay integer
    if not codes or got != want:
        raise VerificationError(
            f"the converter did not produce an integer file for "
            f"quantization={report.quantization!r} (input type {got}, "
            f"{len(codes)} {np.dtype(act).name} tensors); {report.path!r} "
            "was not written.", report)


def _range(x) -> str:
    return f"[{float(np.min(x)):.4g}, {float(np.max(x)):.4g}]"


def _scale_hint(x_cal, x_verify) -> str:
    """A sentence when calibration and verification inputs differ in
    scale (e.g. 0..255 vs 0..1), the usual cause of a failed int8 file."""
    if x_cal is None or x_verify is None or isinstance(x_verify, list):
        return ""
    span_c = float(np.max(x_cal) - np.min(x_cal))
    span_v = float(np.max(x_verify) - np.min(x_verify))
    lo, hi = sorted((span_c, span_v))
    if hi > 0 and (lo == 0 or hi / lo > 4):
        return (f" calibration_data spans {_range(x_cal)} but the "
                f"verification inputs span {_range(x_verify)}: calibrate "
                "on inputs scaled as the model sees them at inference.")
    return ""


def _single_loss_kind(model, num_outputs: int) -> str | None:
    """The kind (:func:`tfcomp._output_kinds.loss_kind`) of the loss a
    model of one output is compiled with; None for several outputs."""
    return loss_kind(compiled_loss(model)) if num_outputs == 1 else None


def _class_scores(model, y, num_outputs: int) -> bool:
    """Whether Keras output ``y`` holds class scores on its last axis, so
    top-1 agreement is checked on it: any ``(N, classes)`` output; a
    per-position one (``(N, H, W, classes)``: a segmentation net, a
    per-step tagger) when its rows are probabilities (a softmax) or the
    model, of one output, is compiled with a categorical cross-entropy
    (logits), not for a multi-feature regression (an autoencoder)."""
    if y.ndim < 2 or y.shape[-1] < 2:
        return False
    if y.ndim == 2:
        return True
    if np.all(y >= 0) and np.allclose(y.sum(-1), 1.0, atol=1e-3):
        return True
    return _single_loss_kind(model, num_outputs) == "classification"


def binary_threshold(model, y, num_outputs: int,
                     index: int = 0) -> float | None:
    """The decision threshold of binary outputs, one unit or several
    independent labels (multi-label): 0.5 on a sigmoid's probability, 0 on
    a logit; None when output ``index`` (``y``) is not known to be such: a
    model of one output compiled with a binary cross-entropy (its
    ``from_logits``), or an output that comes out of a sigmoid
    (:func:`tfcomp._output_kinds.is_sigmoid`)."""
    if y.ndim < 2:
        return None
    if _single_loss_kind(model, num_outputs) == "binary":
        loss = compiled_loss(model)
        return 0.0 if getattr(loss, "from_logits", False) else 0.5
    outputs = keras.tree.flatten(getattr(model, "outputs", None) or [])
    if index < len(outputs) and is_sigmoid(model, outputs[index]):
        return 0.5
    return None


#: Outputs this close to a binary threshold are a tie: an int8 sigmoid
#: puts 0.5 on its grid (code 128), where the float model may sit a hair
#: above or below (a quarter of the 1/256 step).
TIE = 1e-3


def side_agreement(y_a, y_b, t: float) -> float:
    """The fraction of values of ``y_a`` and ``y_b`` on the same side of
    threshold ``t``; two values both within :data:`TIE` of it agree.

    Example:
        >>> side_agreement(np.array([0.5, 0.9]), np.array([0.5003, 0.2]), 0.5)
        0.5
    """
    tie = (np.abs(y_a - t) <= TIE) & (np.abs(y_b - t) <= TIE)
    return float(np.mean(((y_a > t) == (y_b > t)) | tie))


def top1_agreement(y_a, y_b, step: float = 0.0) -> float:
    """The fraction of rows (last axis: classes) whose top-1 class agrees.
    ``step``: the resolution of an output (an int8 file's output scale,
    1/256 for a softmax); a row whose two top classes differ still agrees
    when each output scores the other's top class within ``step`` of its
    own maximum: the near-uniform scores of an untrained model tie on the
    int8 grid, where numpy's argmax takes the first. A file that collapsed
    (every class equal) still disagrees wherever Keras's scores are apart.

    Example:
        >>> top1_agreement(np.array([[0.5, 0.5], [0.9, 0.1]]),
        ...                np.array([[0.499, 0.501], [0.2, 0.8]]), 1 / 256)
        0.5
    """
    y_a, y_b = np.asarray(y_a), np.asarray(y_b)

    def near_max(y, other):
        top = np.take_along_axis(y, other.argmax(-1)[..., None], -1)
        return top[..., 0] >= y.max(-1) - step

    same = y_a.argmax(-1) == y_b.argmax(-1)
    return float(np.mean(same | (near_max(y_a, y_b) & near_max(y_b, y_a))))


#: TFLite's int8 softmax / logistic output grid: scale 1/256, zero point
#: -128, whatever the calibration
_PROBABILITY_GRID = (1 / 256, -128)


def _fixed_probability_step(detail) -> float:
    """The 1/256 step of an int8 probability output (a softmax's), whose
    grid calibration does not choose; 0 for any other output, so a file
    calibrated on the wrong scale, whose coarse grid ties every class,
    still fails."""
    scale, zero_point = detail["quantization"]
    return float(scale) if (
        np.isclose(scale, _PROBABILITY_GRID[0])
        and int(zero_point) == _PROBABILITY_GRID[1]) else 0.0


def _agreement(model, y_lite, y_keras, num_outputs: int,
               index: int, step: float = 0.0) -> float | None:
    """The fraction of rows (positions) where output ``index`` of the file
    decides as Keras: the side of the threshold of binary outputs (per
    label of a multi-label head), the top-1 class of class scores; None
    for other outputs (regression)."""
    y_keras = y_keras.reshape(y_lite.shape)
    t = binary_threshold(model, y_keras, num_outputs, index)
    if t is not None:  # per label, for a multi-label head
        return side_agreement(y_lite, y_keras, t)
    if _class_scores(model, y_keras, num_outputs):
        return top1_agreement(y_lite, y_keras, step)
    return None


def verify_file(model, flatbuffer, x, report, min_agreement, quantization,
            io_type, x_cal, integer: bool | None = None) -> None:
    """Runs ``flatbuffer`` on ``x``, fills ``report``, raises
    ``VerificationError`` when it disagrees with ``model``."""
    interp, runtime = make_interpreter(flatbuffer)
    report.runtime = runtime
    if quantization in INTEGER_MODES if integer is None else integer:
        check_integer_file(interp, io_type, report)
    lite = run_interpreter(interp, x, input_names=signature_input_names(model)
                           if is_multi(model) else None, all_outputs=True)
    parts = [keras.tree.flatten(model(as_model_input(model, sliced(
        x, i, i + 256)), training=False))
             for i in range(0, rows(x), 256)]
    if len(parts[0]) != len(lite):
        raise VerificationError(
            f"the TFLite file has {len(lite)} outputs, the Keras model "
            f"{len(parts[0])}; {report.path!r} was not written.", report)
    keras_outs = [np.concatenate([keras.ops.convert_to_numpy(p[k])
                                  for p in parts]) for k in range(len(lite))]
    report.max_abs_error = max(
        float(np.max(np.abs(y_lite - y_keras.reshape(y_lite.shape))))
        for y_lite, y_keras in zip(lite, keras_outs))
    report.num_verified = int(rows(x))
    steps = [_fixed_probability_step(d)
             for d in output_details_in_order(interp)]
    agreements = [a for i, (y_lite, y_keras) in enumerate(zip(
                      lite, keras_outs))
                  if (a := _agreement(model, y_lite, y_keras,
                                      len(keras_outs), i,
                                      steps[i])) is not None]
    if agreements:  # several class-score outputs: the lowest
        report.top1_agreement = min(agreements)
    where = f"{report.path!r} was not written"
    if not np.isfinite(report.max_abs_error):
        bad = "TFLite" if not all(np.all(np.isfinite(y)) for y in lite) \
            else "Keras"
        raise VerificationError(
            f"the {bad} outputs of {report.num_verified} verification "
            f"inputs are not all finite (quantization={quantization!r}); "
            f"{where}.", report)
    if report.top1_agreement is not None \
            and report.top1_agreement < min_agreement:
        raise VerificationError(
            f"the TFLite file (quantization={quantization!r}) agrees with "
            f"the Keras model on the top-1 class of "
            f"{report.top1_agreement:.1%} of {report.num_verified} "
            f"verification inputs, below min_agreement={min_agreement:g} "
            f"(max |error| {report.max_abs_error:.4g}); {where}."
            + _scale_hint(x_cal, x)
            + " Pass min_agreement=... to accept a lower agreement.",
            report)
