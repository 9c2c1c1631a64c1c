"""Mixed-precision quantization: QAT, BN folding, calibration, DNAS.

The quantizers and quantized layers live in :mod:`tfcomp.layers`
(``tfcomp.quantization.quantizers`` re-exports the quantizers); converting
a QAT model to an int8 TFLite file is :mod:`tfcomp.export`'s job.

Example:
    >>> from tfcomp.quantization import quantize_model, calibrate
    >>> qat = quantize_model(tfcomp.zoo.resnet(depth=20), bits=4)
    >>> calibrate(qat, calibration_data=x_train[:512])
    >>> tfcomp.export.export_tflite(qat, "r20_w4a4.tflite", "int8")
"""

from tfcomp.quantization import dnas, quantizers
from tfcomp.quantization.bits import per_layer_bits
from tfcomp.quantization.calibration import calibrate
from tfcomp.quantization.dynamic_bits import DynamicBits, make_bits_dynamic
from tfcomp.quantization.params import (
    channel_shape,
    is_qat_model,
    quantization_params,
)
from tfcomp.quantization.quantize import (
    fold_batchnorm_weights,
    link_shared_inputs,
    quantizable_layers,
    quantize_model,
    strip,
)
from tfcomp.quantization.quantizers import *  # noqa: F403 - quantizer names
from tfcomp.quantization.report import QuantizationReport, quantization_report
from tfcomp.quantization.stripping import strip_quantization

__all__ = quantizers.__all__ + [
    "quantizers", "calibrate", "quantize_model", "quantizable_layers",
    "QuantizationReport", "quantization_report", "fold_batchnorm_weights",
    "strip_quantization", "strip", "is_qat_model", "quantization_params",
    "dnas", "link_shared_inputs", "make_bits_dynamic", "DynamicBits",
    "per_layer_bits", "channel_shape",
]
