"""The TFLite runtime as ``tfcomp.export`` uses it; the one finder and
timing loop live in ``tfcomp.hardware.runtime`` (re-exported here).

Integer inputs that are not quantized (token ids of an Embedding model:
an int32 tensor with scale 0) are cast, not divided by the scale, by
``tfcomp.hardware.runtime.quantize_input`` (and so by ``run_interpreter``);
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
    output_details_in_order,
    quantize_input,
    read_tflite,
    run_interpreter,
    time_invokes,
)

__all__ = ["TFLiteModelError", "dequantize_output", "feed_inputs",
           "float_ops", "integer_id_bound", "interpreter_class", "interpreter_classes",
           "make_interpreter", "output_details_in_order", "quantize_input",
           "read_tflite",
           "run_interpreter", "time_invokes"]


def _is_raw_integer(detail) -> bool:
    """An integer input that is not quantized (ids, not int8 codes)."""
    scale = detail.get("quantization", (0.0, 0))[0]
    return np.issubdtype(np.dtype(detail["dtype"]), np.integer) and not scale


#: Ops whose float output is the file's interface, not float compute.
_IO_OPS = ("DEQUANTIZE", "QUANTIZE", "DELEGATE")


def float_ops(interp) -> list[str]:
    """Names of the ops of a file that compute in float: a float32 output,
    the I/O DEQUANTIZE / QUANTIZE (and XNNPACK's DELEGATE entries) aside.
    An empty list for a full-integer file; None when the runtime cannot
    list its ops.

    Example:
        >>> float_ops(make_interpreter("m_int8.tflite")[0])
        []
    """
    try:
        ops = interp._get_ops_details()  # noqa: SLF001 - only op listing
        types = {d["index"]: np.dtype(d["dtype"])
                 for d in interp.get_tensor_details()}
    except (AttributeError, RuntimeError, ValueError):
        return None
    return [op["op_name"] for op in ops
            if op.get("op_name") not in _IO_OPS and any(
                types.get(int(t)) == np.float32 for t in op.get("outputs", ()))]


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
