"""Exporters: verified TFLite files and bit-serial accelerator descriptors.

``export_tflite`` converts float models (float32 / dynamic / float16 / int8
post-training) and tfcomp quantization-aware models (full-integer int8 from
their trained ranges, :mod:`tfcomp.export.int8`).

Example:
    >>> from tfcomp.export import export_tflite, measure_latency
    >>> report = export_tflite(model, "model.tflite")
    >>> measure_latency(report.path).median_ms
"""

from tfcomp.export.bitserial import (
    BitSerialReport,
    export_bitserial,
    simulate_bitserial,
    validate_descriptor,
)
from tfcomp.export.int8 import convert_int8, tflite_weight_levels
from tfcomp.export.latency import LatencyResult, measure_latencies, measure_latency
from tfcomp.export.litert_quant import layer_precisions
from tfcomp.export.tflite import convert_to_tflite, export_tflite
from tfcomp.export.tflite_verify import ExportReport, VerificationError

__all__ = [
    "BitSerialReport", "ExportReport", "LatencyResult", "convert_int8",
    "convert_to_tflite", "export_bitserial", "export_tflite",
    "measure_latencies", "measure_latency", "simulate_bitserial",
    "tflite_weight_levels", "validate_descriptor", "VerificationError",
    "layer_precisions",
]
