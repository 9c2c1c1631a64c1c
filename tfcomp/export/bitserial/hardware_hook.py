"""Bridge from the descriptor writer to ``tfcomp.hardware`` cost models.

The schedules in ``schedule.py`` say how a layer runs; the cycles, latency
and energy recorded in a descriptor come from ``tfcomp.hardware.BISMO`` /
``tfcomp.hardware.BitFusion`` (``layer_cost(spec, w_bits, a_bits)``), which
this module imports lazily. Where that package cannot be imported, layers
record only the schedule's compute cycles (``cost.source`` says so).

Example:
    >>> hw = resolve_hardware("bismo", {"dm": 4})
    >>> hw.schedule_params["dm"], hw.name
    (4, 'BISMO')
"""

from __future__ import annotations

import dataclasses
import importlib

import numpy as np

from tfcomp.export.bitserial.ir import same_padding
from tfcomp.export.bitserial.schedule import BISMO_BUFFER_DEFAULTS

__all__ = ["ResolvedHardware", "layer_cost", "layer_spec", "perf_factor",
           "resolve_hardware"]

_CLASSES = {"bismo": "BISMO", "bitfusion": "BitFusion"}
_ARRAY_KEYS = {"bismo": ("dm", "dk", "dn"), "bitfusion": ("rows", "cols")}
_ARRAY_DEFAULTS = {"bismo": {"dm": 2, "dk": 64, "dn": 2},
                   "bitfusion": {"rows": 16, "cols": 32}}
_OPS = {"conv2d": "conv", "depthwise_conv2d": "depthwise", "dense": "dense"}


@dataclasses.dataclass
class ResolvedHardware:
    """A target's cost model (or None) and the schedule parameters.

    Example:
        >>> resolve_hardware("bismo").source
        'tfcomp.hardware.bismo.BISMO'
    """

    target: str
    name: str
    model: object | None
    schedule_params: dict
    config: dict
    source: str


def _hardware_module():
    try:
        return importlib.import_module("tfcomp.hardware")
    except ImportError:
        return None


def resolve_hardware(target: str, hardware=None) -> ResolvedHardware:
    """Picks the cost model and schedule parameters for ``target``.

    Args:
        target: "bismo" or "bitfusion".
        hardware: None (the default ``tfcomp.hardware`` model of the
            target), a dict of constructor arguments for that model (for
            BISMO also ``lhs_depth`` / ``rhs_depth`` buffer entries), or a
            model object with ``layer_cost(spec, w_bits, a_bits)``.

    Returns:
        A :class:`ResolvedHardware`.

    Example:
        >>> resolve_hardware("bitfusion").schedule_params
        {'rows': 16, 'cols': 32}
    """
    buffers = dict(BISMO_BUFFER_DEFAULTS) if target == "bismo" else {}
    model = hardware
    if hardware is None or isinstance(hardware, dict):
        kwargs = dict(hardware or {})
        for key in list(kwargs):
            if key in buffers:
                buffers[key] = int(kwargs.pop(key))
        hw = _hardware_module()
        if hw is None:
            if kwargs:
                raise ValueError("hardware parameters need tfcomp.hardware, "
                                 "which cannot be imported")
            params = dict(_ARRAY_DEFAULTS[target], **buffers)
            return ResolvedHardware(target, _CLASSES[target], None, params,
                                    {}, "schedule compute cycles only "
                                    "(tfcomp.hardware unavailable)")
        try:
            model = getattr(hw, _CLASSES[target])(**kwargs)
        except TypeError as e:
            raise ValueError(f"bad hardware parameters for {target}: {e}. "
                             f"Received: hardware={hardware!r}") from e
    if not callable(getattr(model, "layer_cost", None)):
        raise TypeError("hardware must be None, a dict of parameters or an "
                        "object with layer_cost(spec, w_bits, a_bits). "
                        f"Received: {type(model).__name__}")
    params = {k: int(getattr(model, k, _ARRAY_DEFAULTS[target][k]))
              for k in _ARRAY_KEYS[target]}
    params.update(buffers)
    config = model.get_config() if hasattr(model, "get_config") else {}
    name = getattr(model, "name", type(model).__name__)
    return ResolvedHardware(target, name, model, params, config,
                            f"{type(model).__module__}.{type(model).__name__}")


def perf_factor(hw: ResolvedHardware, w_bits: int, a_bits: int) -> int:
    """Bit Fusion fused PEs per unit, from the model when it has one.

    Example:
        >>> perf_factor(resolve_hardware("bitfusion"), 3, 4)
        4
    """
    fn = getattr(hw.model, "perf_factor", None)
    if fn is not None:
        return int(fn(w_bits, a_bits))
    return (8 // max(a_bits, 2)) * (8 // max(w_bits, 2))


def _padding(in_shape, out_shape, kernel, strides, pads) -> str:
    same = same_padding(in_shape[0], kernel[0], strides[0]) + same_padding(
        in_shape[1], kernel[1], strides[1])
    if tuple(pads) == same:
        return "same"
    if not any(pads):
        return "valid"
    return "same" if tuple(out_shape[:2]) == tuple(
        -(-s // st) for s, st in zip(in_shape[:2], strides)) else "valid"


def layer_spec(op, in_shape, out_shape, batch: int):
    """``tfcomp.hardware.LayerSpec`` of a GEMM op (None without hardware).

    Example:
        >>> layer_spec(ir.ops[0], (8, 8, 3), (8, 8, 8), 1).op
        'conv'
    """
    hw = _hardware_module()
    if hw is None:
        return None
    common = {"name": op.name, "op": _OPS[op.op], "batch": int(batch),
              "cin": int(in_shape[-1]), "cout": int(out_shape[-1])}
    if op.op == "dense":
        h = int(np.prod(in_shape[:-1], dtype=np.int64)) if len(
            in_shape) > 1 else 1
        return hw.LayerSpec(in_h=h, in_w=1, **common)
    at = op.attrs
    return hw.LayerSpec(
        in_h=int(in_shape[0]), in_w=int(in_shape[1]),
        kernel=tuple(at["kernel"]), stride=tuple(at["strides"]),
        groups=int(in_shape[2]) if op.op == "depthwise_conv2d" else 1,
        padding=_padding(in_shape, out_shape, at["kernel"], at["strides"],
                         at["pads"]), **common)


def layer_cost(hw: ResolvedHardware, op, in_shape, out_shape, batch,
               w_bits, a_bits, compute_cycles) -> dict:
    """The descriptor's ``cost`` entry of one GEMM layer.

    Args:
        hw: the resolved hardware.
        op: the GEMM ``IntOp``.
        in_shape, out_shape: shapes without batch.
        batch: samples per program run.
        w_bits, a_bits: operand bits.
        compute_cycles: the schedule's compute cycles (kept beside the
            model's total).

    Returns:
        ``{"cycles", "latency_s", "energy_j", "source", "compute_cycles"}``
        plus the model's ``breakdown`` when it gives one.

    Example:
        >>> layer_cost(hw, op, (8, 8, 3), (8, 8, 8), 1, 4, 4, 576)["cycles"]
    """
    spec = layer_spec(op, in_shape, out_shape, batch)
    if hw.model is None or spec is None:
        return {"cycles": int(compute_cycles), "latency_s": None,
                "energy_j": None, "source": hw.source,
                "compute_cycles": int(compute_cycles)}
    cost = hw.model.layer_cost(spec, int(w_bits), int(a_bits))
    out = {"cycles": None if cost.cycles is None else int(cost.cycles),
           "latency_s": float(cost.latency_s),
           "energy_j": None if cost.energy_j is None else float(
               cost.energy_j),
           "source": hw.source, "compute_cycles": int(compute_cycles)}
    if getattr(cost, "breakdown", None):
        out["breakdown"] = {k: (int(v) if float(v).is_integer() else
                                float(v)) for k, v in cost.breakdown.items()}
    return out
