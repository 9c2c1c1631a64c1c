"""The on-device TFLite runtime: ai-edge-litert, else tflite-runtime, else TF.

Example:
    >>> interp, name = make_interpreter("model.tflite", threads=1)
    >>> name
    'ai_edge_litert'
"""

from __future__ import annotations

import numpy as np

__all__ = ["make_interpreter", "run_interpreter", "quantize_input",
           "dequantize_output"]


def _interpreter_classes():
    try:
        from ai_edge_litert.interpreter import Interpreter
        yield "ai_edge_litert", Interpreter
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter
        yield "tflite_runtime", Interpreter
    except (ImportError, AttributeError):
        pass
    import tensorflow as tf
    yield "tf.lite", tf.lite.Interpreter


def make_interpreter(model, threads: int = 1):
    """Creates an allocated interpreter from a path or flatbuffer bytes.

    Args:
        model: path to a ``.tflite`` file, or its bytes.
        threads: number of CPU threads for the interpreter.

    Returns:
        ``(interpreter, runtime_name)``.

    Example:
        >>> interp, runtime = make_interpreter("m.tflite")
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1. Received: threads={threads}")
    kwargs = ({"model_content": bytes(model)}
              if isinstance(model, (bytes, bytearray))
              else {"model_path": str(model)})
    errors = []
    for name, cls in _interpreter_classes():
        try:
            interp = cls(num_threads=threads, **kwargs)
            interp.allocate_tensors()
            return interp, name
        except (ValueError, RuntimeError) as e:  # try the next runtime
            errors.append(f"{name}: {e}")
    raise RuntimeError("No TFLite runtime could load the model: "
                       + "; ".join(errors))


def quantize_input(x: np.ndarray, detail: dict) -> np.ndarray:
    """Casts/quantizes a float array to an input tensor's dtype."""
    dtype = detail["dtype"]
    if np.issubdtype(dtype, np.integer):
        scale, zero = detail["quantization"]
        info = np.iinfo(dtype)
        q = np.round(x / scale + zero)
        return np.clip(q, info.min, info.max).astype(dtype)
    return x.astype(dtype)


def dequantize_output(y: np.ndarray, detail: dict) -> np.ndarray:
    """Converts an output tensor back to float32."""
    if np.issubdtype(detail["dtype"], np.integer):
        scale, zero = detail["quantization"]
        return (y.astype(np.float32) - zero) * scale
    return y.astype(np.float32)


def run_interpreter(interp, x: np.ndarray, batch_size: int = 64
                    ) -> np.ndarray:
    """Runs a single-input, single-output interpreter over ``x`` in batches.

    Example:
        >>> y = run_interpreter(interp, x_test[:100])
    """
    inp = interp.get_input_details()[0]
    out_detail = interp.get_output_details()[0]
    outs = []
    current = None
    for start in range(0, len(x), batch_size):
        chunk = x[start:start + batch_size]
        if current != len(chunk):
            interp.resize_tensor_input(inp["index"],
                                       [len(chunk), *inp["shape"][1:]])
            interp.allocate_tensors()
            current = len(chunk)
            out_detail = interp.get_output_details()[0]
        interp.set_tensor(inp["index"], quantize_input(chunk, inp))
        interp.invoke()
        outs.append(dequantize_output(
            interp.get_tensor(out_detail["index"]), out_detail))
    return np.concatenate(outs, axis=0)
