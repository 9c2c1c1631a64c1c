"""Descriptor entries of host (non-GEMM) layers: quantization of the
inputs, requantization constants and attributes, as the simulator reads
them (see ``descriptor.py`` for the format).

Example:
    >>> [host_layer(op, ir, ir.shapes())["op"] for op in ir.ops
    ...  if not op.is_gemm][:1]
    ['add']
"""

from __future__ import annotations

import numpy as np

from tfcomp.export.bitserial.ir import IntegerIR, IntOp

__all__ = ["ROUNDING", "host_layer"]

ROUNDING = "tflite_single_rounding"  # see fixedpoint.py


def _q(q) -> dict:
    return q.to_dict()


def _ints(a) -> list:
    return [int(v) for v in np.ravel(a)]


def host_layer(op: IntOp, ir: IntegerIR, shapes: dict) -> dict:
    """The descriptor entry of host op ``op`` (``shapes``: the IR's).

    Example:
        >>> host_layer(ir.op("add"), ir, ir.shapes())["requant"]["rounding"]
        'tflite_single_rounding'
    """
    layer = {"name": op.name, "op": op.op, "inputs": list(op.inputs),
             "input_shapes": [list(shapes[n]) for n in op.inputs],
             "output_shape": list(shapes[op.name]),
             "out_quant": _q(op.out), "act_min": op.act_min,
             "act_max": op.act_max, "engine": "host",
             "cost": {"cycles": 0, "latency_s": 0.0, "energy_j": None,
                      "source": "host op (not costed)"}}
    at = op.attrs
    if op.op in ("add", "concat", "mul", "requantize", "avg_pool",
                 "global_avg_pool", "lut"):
        layer["input_quants"] = [_q(ir.quant(n)) for n in op.inputs]
    if op.op == "add":
        layer["requant"] = {
            "left_shift": int(at["left_shift"]),
            "input_multipliers": _ints(at["multipliers"]),
            "input_shifts": _ints(at["shifts"]),
            "output_multiplier": int(at["output_multiplier"]),
            "output_shift": int(at["output_shift"])}
    elif op.op == "concat":
        layer["requant"] = {
            "input_multipliers": [None if m is None else int(m)
                                  for m in at["multipliers"]],
            "input_shifts": [None if v is None else int(v)
                             for v in at["shifts"]]}
    elif op.op in ("requantize", "mul"):
        layer["requant"] = {"multiplier": int(at["multiplier"]),
                            "shift": int(at["shift"])}
    elif op.op in ("avg_pool", "global_avg_pool"):
        layer["requant"] = {"count_multipliers": [
            [int(c), int(m), int(s)] for c, m, s in at["count_requant"]]}
    elif op.op == "reshape":
        layer["attrs"] = {"shape": list(at["shape"])}
    elif op.op == "lut":
        layer["attrs"] = {"table": [_ints(r) for r in at["table"]]}
    elif op.op == "pad":
        layer["attrs"] = {"pads": [[int(a), int(b)] for a, b in at["pads"]],
                          "interior": _ints(at["interior"])}
    elif op.op == "upsample":
        layer["attrs"] = {"factors": _ints(at["factors"])}
    elif op.op == "crop":
        layer["attrs"] = {"crops": [[int(a), int(b)] for a, b in at["crops"]]}
    if "requant" in layer:
        layer["requant"]["rounding"] = ROUNDING
    if op.op in ("max_pool", "avg_pool"):
        layer["attrs"] = {"pool": list(at["pool"]),
                          "strides": list(at["strides"]),
                          "pads": list(at["pads"])}
    return layer
