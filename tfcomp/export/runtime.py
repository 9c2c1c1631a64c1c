"""The TFLite runtime as ``tfcomp.export`` uses it; the one finder and
timing loop live in ``tfcomp.hardware.runtime`` (re-exported here).

Integer inputs that are not quantized (token ids of an Embedding model:
an int32 tensor with scale 0) are passed through as integers by
:func:`quantize_input` / :func:`run_interpreter` here, and
:func:`feed_inputs` fills them with valid ids (``[0, n)`` with ``n`` the
smallest table the file gathers from), never with random int32 values.

Example:
    >>> interp, name = make_interpreter("model.tflite", threads=1)
    >>> name
    'ai_edge_litert'
"""

from __future__ import annotations

import numpy as np

from tfcomp.hardware import runtime as _hw
from tfcomp.hardware.runtime import (
    TFLiteModelError,
    dequantize_output,
    interpreter_class,
    interpreter_classes,
    make_interpreter,
    read_tflite,
    time_invokes,
)

__all__ = ["TFLiteModelError", "dequantize_output", "feed_inputs",
           "integer_id_bound", "interpreter_class", "interpreter_classes",
           "make_interpreter", "quantize_input", "read_tflite",
           "run_interpreter", "time_invokes"]


def _is_raw_integer(detail) -> bool:
    """An integer input that is not quantized (ids, not int8 codes)."""
    scale = detail.get("quantization", (0.0, 0))[0]
    return np.issubdtype(np.dtype(detail["dtype"]), np.integer) and not scale


def quantize_input(x: np.ndarray, detail: dict) -> np.ndarray:
    """Casts / quantizes an array to an input tensor's dtype (integer ids
    of an unquantized integer input are cast, not divided by a scale).

    Example:
        >>> quantize_input(x, interp.get_input_details()[0])
    """
    if _is_raw_integer(detail):
        return np.asarray(x).astype(detail["dtype"])
    return _hw.quantize_input(x, detail)


def run_interpreter(interp, x: np.ndarray, batch_size: int = 64
                    ) -> np.ndarray:
    """Runs a single-input, single-output interpreter over ``x`` in batches
    (``tfcomp.hardware.runtime.run_interpreter`` that also takes integer
    id inputs).

    Example:
        >>> y = run_interpreter(interp, x_test[:100])
    """
    inp = interp.get_input_details()[0]
    if not _is_raw_integer(inp):
        return _hw.run_interpreter(interp, x, batch_size)
    outs, current = [], None
    for start in range(0, len(x), batch_size):
        chunk = x[start:start + batch_size]
        if current != len(chunk):
            interp.resize_tensor_input(inp["index"],
                                       [len(chunk), *inp["shape"][1:]])
            interp.allocate_tensors()
            current = len(chunk)
        interp.set_tensor(inp["index"], quantize_input(chunk, inp))
        interp.invoke()
        out = interp.get_output_details()[0]
        outs.append(dequantize_output(interp.get_tensor(out["index"]), out))
    return np.concatenate(outs, axis=0)


def integer_id_bound(interp, tensor_index: int) -> int:
    """The number of valid ids of an integer input: the smallest first
    dimension of a table the file GATHERs with it (1 when unknown, so
    only id 0 is used).

    Example:
        >>> integer_id_bound(interp, interp.get_input_details()[0]["index"])
    """
    try:
        ops = interp._get_ops_details()  # noqa: SLF001 - only op listing
        tensors = {d["index"]: d for d in interp.get_tensor_details()}
    except (AttributeError, RuntimeError, ValueError):
        return 1
    sizes = []
    for op in ops:
        ins = [int(i) for i in op.get("inputs", ())]
        if op.get("op_name") == "GATHER" and len(ins) >= 2 \
                and ins[1] == tensor_index and ins[0] in tensors:
            shape = tensors[ins[0]]["shape"]
            if len(shape):
                sizes.append(int(shape[0]))
    return max(1, min(sizes)) if sizes else 1


def feed_inputs(interp, rng) -> None:
    """Sets every input of ``interp`` to valid random values: quantized /
    float inputs as ``feed_random`` does, unquantized integer inputs to ids
    in ``[0, integer_id_bound)``.

    Example:
        >>> feed_inputs(interp, np.random.default_rng(0))
    """
    _hw.feed_random(interp, rng)
    for d in interp.get_input_details():
        if _is_raw_integer(d):
            n = integer_id_bound(interp, d["index"])
            interp.set_tensor(d["index"], rng.integers(
                0, n, size=d["shape"]).astype(d["dtype"]))
