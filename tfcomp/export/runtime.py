"""The TFLite runtime as ``tfcomp.export`` uses it; the one finder and
timing loop live in ``tfcomp.hardware.runtime`` (re-exported here).

Example:
    >>> interp, name = make_interpreter("model.tflite", threads=1)
    >>> name
    'ai_edge_litert'
"""

from tfcomp.hardware.runtime import (
    TFLiteModelError,
    dequantize_output,
    interpreter_class,
    interpreter_classes,
    make_interpreter,
    quantize_input,
    read_tflite,
    run_interpreter,
    time_invokes,
)

__all__ = ["TFLiteModelError", "dequantize_output", "interpreter_class",
           "interpreter_classes", "make_interpreter", "quantize_input",
           "read_tflite", "run_interpreter", "time_invokes"]
