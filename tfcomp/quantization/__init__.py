"""Mixed-precision quantization: quantizers, QAT, calibration, DNAS.

Example:
    >>> from tfcomp.quantization import quantize_model, calibrate
    >>> qat = quantize_model(tfcomp.zoo.resnet(depth=20), bits=4)
    >>> calibrate(qat, x_train[:512])
    >>> tfcomp.export.export_tflite(qat, "r20_w4a4.tflite", "int8")
"""

# quantizers first: tfcomp.layers imports it while this package initialises.
from tfcomp.quantization import quantizers  # noqa: I001
from tfcomp.quantization.quantizers import (ActivationQuantizer,
                                            KMeansQuantizer, Quantizer,
                                            SymmetricQuantizer,
                                            WeightQuantizer, check_bits,
                                            deserialize, get,
                                            kl_optimal_threshold, serialize)
from tfcomp.quantization.calibration import calibrate
from tfcomp.quantization.dynamic_bits import DynamicBits, make_bits_dynamic
from tfcomp.quantization.export_support import (is_qat_model,
                                                prepare_for_tflite,
                                                quantization_params,
                                                tflite_weight_levels)
from tfcomp.quantization.quantize import (QuantizationReport,
                                          fold_batchnorm_weights,
                                          link_shared_inputs,
                                          quantizable_layers, quantize_model,
                                          strip)
from tfcomp.quantization import dnas

__all__ = [
    "quantizers", "Quantizer", "WeightQuantizer", "SymmetricQuantizer",
    "KMeansQuantizer", "ActivationQuantizer", "get", "serialize",
    "deserialize", "check_bits", "kl_optimal_threshold", "calibrate",
    "quantize_model", "quantizable_layers", "QuantizationReport",
    "fold_batchnorm_weights", "strip", "is_qat_model", "prepare_for_tflite",
    "quantization_params", "tflite_weight_levels", "dnas",
    "link_shared_inputs", "make_bits_dynamic", "DynamicBits",
]
