"""Bridge from the descriptor writer to ``tfcomp.hardware`` cost models.

The schedules (``tfcomp.hardware.schedule``) say how a layer runs; the
cycles, latency and energy recorded in a descriptor come from
``tfcomp.hardware.BISMO`` / ``tfcomp.hardware.BitFusion``
(``layer_cost(spec, w_bits, a_bits)``). Array sizes, buffer depths and
their defaults come from ``tfcomp.hardware`` too.

Example:
    >>> hw = resolve_hardware("bismo", {"dm": 4})
    >>> hw.schedule_params["dm"], hw.name
    (4, 'BISMO')
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from tfcomp.export.bitserial.ir import same_padding
from tfcomp.hardware import (
    BISMO,
    BISMO_ARRAY_DEFAULTS,
    BISMO_BUFFER_DEFAULTS,
    BITFUSION_ARRAY_DEFAULTS,
    BitFusion,
    LayerSpec,
    bitfusion_perf_factor,
)

__all__ = ["HARDWARE", "ResolvedHardware", "hardware_args", "layer_cost",
           "layer_spec", "perf_factor", "resolve_hardware", "uses_im2col"]

HARDWARE = ("bismo", "bitfusion")
_CLASSES = {"bismo": BISMO, "bitfusion": BitFusion}
_ARRAY_DEFAULTS = {"bismo": BISMO_ARRAY_DEFAULTS,
                   "bitfusion": BITFUSION_ARRAY_DEFAULTS}
_OPS = {"conv2d": "conv", "depthwise_conv2d": "depthwise", "dense": "dense"}


@dataclasses.dataclass
class ResolvedHardware:
    """An accelerator's cost model and the schedule parameters.

    Attributes:
        kind: "bismo" or "bitfusion" (the descriptor's ``target``).
        name: the model's name.
        model: the cost model (``layer_cost(spec, w_bits, a_bits)``).
        schedule_params: array size (and BISMO buffer depths).
        config: the model's ``get_config()``.
        source: ``module.Class`` of the model.

    Example:
        >>> resolve_hardware("bismo").source
        'tfcomp.hardware.bismo.BISMO'
    """

    kind: str
    name: str
    model: object
    schedule_params: dict
    config: dict
    source: str


def _kind_of(model) -> str | None:
    """"bismo" / "bitfusion" for those models (or any whose ``name`` is
    BISMO / BitFusion), else None."""
    for kind, cls in _CLASSES.items():
        if isinstance(model, cls):
            return kind
    name = str(getattr(model, "name", "")).lower()
    return name if name in HARDWARE else None


def hardware_args(hardware, hardware_config=None, target=None,
                  stacklevel: int = 3):
    """Normalises the accelerator arguments of ``write_descriptor`` /
    ``export_bitserial``, old forms included.

    Old forms (each with a ``DeprecationWarning``): ``target="bismo"``
    with ``hardware`` a dict of parameters or a model; ``hardware`` a dict
    of BISMO parameters; a model passed as ``hardware_config``.

    Returns:
        ``(hardware, hardware_config, kind)`` for :func:`resolve_hardware`:
        a name or a model, None or a dict, and the accelerator a model
        stands for (None: from the model itself).

    Example:
        >>> hardware_args("bitfusion", {"rows": 8})
        ('bitfusion', {'rows': 8}, None)
    """
    def warn(msg):
        warnings.warn(msg, DeprecationWarning, stacklevel=stacklevel + 1)

    if target is not None:
        warn("target= is deprecated: name the accelerator with hardware= "
             "('bismo', 'bitfusion' or a BISMO / BitFusion model) and give "
             "its parameters as hardware_config=.")
        if hardware is None or isinstance(hardware, dict):
            return target, (hardware if hardware is not None
                            else hardware_config), None
        if isinstance(hardware, str) and hardware != target:
            raise ValueError(f"target={target!r} and hardware={hardware!r} "
                             "name different accelerators")
        return hardware, hardware_config, target
    if isinstance(hardware, dict):
        warn("hardware= as a dict of parameters is deprecated: pass "
             "hardware='bismo' (or 'bitfusion') and hardware_config=.")
        return "bismo", hardware, None
    if hardware_config is not None and not isinstance(hardware_config, dict):
        warn("a cost model as hardware_config is deprecated: pass it as "
             "hardware=.")
        return hardware_config, None, hardware
    return ("bismo" if hardware is None else hardware), hardware_config, None


def resolve_hardware(hardware="bismo", config=None,
                     kind: str | None = None) -> ResolvedHardware:
    """Picks the cost model and schedule parameters of an accelerator.

    Args:
        hardware: "bismo" or "bitfusion" (the default ``tfcomp.hardware``
            model, ``BISMO()`` or ``BitFusion("edge")``), or a model
            object with ``layer_cost(spec, w_bits, a_bits)``: a ``BISMO``
            / ``BitFusion`` instance, or one whose ``name`` is one of those.
        config: None or a dict: constructor arguments of the default model
            (with a name), plus for BISMO ``lhs_depth`` / ``rhs_depth``
            buffer entries (with a name or a model).
        kind: for a model, the accelerator it stands for ("bismo" /
            "bitfusion"); default: from the model.

    Returns:
        A :class:`ResolvedHardware`.

    Raises:
        ValueError: an unknown accelerator or bad parameters.
        TypeError: a model without ``layer_cost``.

    Example:
        >>> resolve_hardware("bitfusion").schedule_params
        {'rows': 16, 'cols': 32}
    """
    config = dict(config or {})
    model = None
    if isinstance(hardware, str):
        kind = hardware
    else:
        model = hardware
        if not callable(getattr(model, "layer_cost", None)):
            raise TypeError("hardware must be 'bismo', 'bitfusion' or an "
                            "object with layer_cost(spec, w_bits, a_bits). "
                            f"Received: {type(model).__name__}")
        kind = kind or _kind_of(model)
    if kind not in HARDWARE:
        raise ValueError(f"hardware must be one of {HARDWARE}, or a BISMO /"
                         " BitFusion model (or one named so). Received: "
                         f"hardware={hardware!r}")
    buffers = dict(BISMO_BUFFER_DEFAULTS) if kind == "bismo" else {}
    for key in list(config):
        if key in buffers:
            buffers[key] = int(config.pop(key))
    if model is None:
        try:
            model = _CLASSES[kind](**config)
        except TypeError as e:
            raise ValueError(f"bad hardware parameters for {kind}: {e}. "
                             f"Received: hardware_config={config!r}") from e
    elif config:
        raise ValueError("hardware_config may only hold buffer depths when "
                         "hardware is a model. Received: hardware_config="
                         f"{config!r}")
    params = {k: int(getattr(model, k, v))
              for k, v in _ARRAY_DEFAULTS[kind].items()}
    params.update(buffers)
    config = model.get_config() if hasattr(model, "get_config") else {}
    name = getattr(model, "name", type(model).__name__)
    return ResolvedHardware(kind, name, model, params, config,
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
    return bitfusion_perf_factor(w_bits, a_bits)


def _padding(in_shape, out_shape, kernel, strides, pads) -> str:
    same = same_padding(in_shape[0], kernel[0], strides[0]) + same_padding(
        in_shape[1], kernel[1], strides[1])
    if tuple(pads) == same:
        return "same"
    if not any(pads):
        return "valid"
    return "same" if tuple(out_shape[:2]) == tuple(
        -(-s // st) for s, st in zip(in_shape[:2], strides)) else "valid"


def layer_spec(op, in_shape, out_shape, batch: int,
               reads_input: bool = False):
    """``tfcomp.hardware.LayerSpec`` of a GEMM op (``reads_input``: it reads
    the model input, ``LayerSpec.fixed_in``).

    Example:
        >>> layer_spec(ir.ops[0], (8, 8, 3), (8, 8, 8), 1).op
        'conv'
    """
    use_bias = op.attrs.get("use_bias", bool(np.any(op.bias)))
    common = {"name": op.name, "op": _OPS[op.op], "batch": int(batch),
              "cin": int(in_shape[-1]), "cout": int(out_shape[-1]),
              "use_bias": bool(use_bias), "fixed_in": bool(reads_input)}
    if op.op == "dense":
        h = int(np.prod(in_shape[:-1], dtype=np.int64)) if len(
            in_shape) > 1 else 1
        return LayerSpec(in_h=h, in_w=1, **common)
    at = op.attrs
    return LayerSpec(
        in_h=int(in_shape[0]), in_w=int(in_shape[1]),
        kernel=tuple(at["kernel"]), stride=tuple(at["strides"]),
        groups=int(in_shape[2]) if op.op == "depthwise_conv2d" else int(
            at.get("groups", 1)),
        padding=_padding(in_shape, out_shape, at["kernel"], at["strides"],
                         at["pads"]), **common)


def uses_im2col(hw: ResolvedHardware, op, in_shape, out_shape, batch,
                reads_input: bool = False) -> bool:
    """Whether the model runs this GEMM op in im2col form (Bit Fusion's
    first layer, ``BitFusion.uses_im2col``); the schedule must match.

    Example:
        >>> uses_im2col(hw, ir.ops[0], (8, 8, 3), (8, 8, 8), 1, True)
        True
    """
    fn = getattr(hw.model, "uses_im2col", None)
    if fn is None or not reads_input:
        return False
    return bool(fn(layer_spec(op, in_shape, out_shape, batch, reads_input)))


def layer_cost(hw: ResolvedHardware, op, in_shape, out_shape, batch,
               w_bits, a_bits, compute_cycles,
               reads_input: bool = False) -> dict:
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
    spec = layer_spec(op, in_shape, out_shape, batch, reads_input)
    cost = hw.model.layer_cost(spec, int(w_bits), int(a_bits))
    out = {"cycles": None if cost.cycles is None else int(cost.cycles),
           "latency_s": float(cost.latency_s),
           "energy_j": None if cost.energy_j is None else float(
               cost.energy_j),
           "source": hw.source, "compute_cycles": int(compute_cycles)}
    if getattr(cost, "breakdown", None):
        out["breakdown"] = {k: _plain(v) for k, v in cost.breakdown.items()}
    return out


def _plain(v):
    """A breakdown value as JSON: integral numbers as int, other numbers
    as float, sequences / mappings element-wise, anything else as str."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_plain(x) for x in np.asarray(v, object).ravel()]
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return int(f) if f.is_integer() else f
