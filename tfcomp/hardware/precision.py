"""Per-op precisions of a LiteRT (TFLite) file: read them, and set them with
``ai-edge-quantizer`` recipes on an already converted float file.

Precisions (one per weight op: CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED):

* ``"float32"``: left as converted.
* ``"float16"``: float16 weights, dequantized to float32 at load time
  (ai-edge-quantizer's ``FLOAT_CASTING`` weight-only recipe).
* ``"int8"``: int8 per-channel symmetric weights, activations float32 and
  quantized on the fly by the kernel (``dynamic_wi8_afp32``).
* ``"int4w"``: the same with int4 weights (``dynamic_wi4_afp32``); LiteRT
  stores two weights per byte.

Each precision has a ``(w_bits, a_bits)`` pair (:data:`PRECISION_BITS`,
activations float: a = 32) under which latency tables and the bit
allocation store and price it. ``ai-edge-quantizer`` is the optional extra
``tfcomp[litert]``, imported only when a file is quantized.

Reference: ai-edge-quantizer (github.com/google-ai-edge/ai-edge-quantizer),
recipes ``dynamic_wi8_afp32`` / ``dynamic_wi4_afp32`` / float casting.

Example:
    >>> ops = weight_ops(flatbuffer)
    >>> small = quantize_tflite(flatbuffer, {ops[0].index: "int4w"})
    >>> op_precisions(small)[ops[0].index]
    'int4w'
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from collections import namedtuple

import numpy as np

__all__ = ["NO_INT4_OPS", "PRECISIONS", "PRECISION_BITS", "WEIGHT_OPS",
           "WeightOp", "bits_precision", "check_precision", "op_precisions",
           "pack_int4", "quantize_tflite", "require_quantizer", "supported",
           "unpack_int4", "weight_ops", "weight_values"]

PRECISIONS = ("float32", "float16", "int8", "int4w")
PRECISION_BITS = {"float32": (32, 32), "float16": (16, 32),
                  "int8": (8, 32), "int4w": (4, 32)}
WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
EXTRA = "tfcomp[litert]"

WeightOp = namedtuple("WeightOp", "index op scope weight dtype tensor")
WeightOp.__doc__ = """A weight op of a file: its operator index, op name
(``"CONV_2D"``...), scope (its output tensor names, as ai-edge-quantizer
matches recipes), weight tensor name and the stored weight type
(``"FLOAT32"``, ``"FLOAT16"``, ``"INT8"``, ``"INT4"``) and its tensor
index."""


def check_precision(value, name: str = "precision") -> str:
    """``value`` if it is one of :data:`PRECISIONS`, else a ``ValueError``
    naming ``name`` and the value.

    Example:
        >>> check_precision("int4w")
        'int4w'
    """
    if not isinstance(value, str) or value not in PRECISIONS:
        raise ValueError(f"{name} must be one of {PRECISIONS}. Received: "
                         f"{name}={value!r}")
    return value


def bits_precision(w_bits: int, a_bits: int = 32) -> str | None:
    """The precision stored under ``(w_bits, a_bits)``, or None.

    Example:
        >>> bits_precision(4, 32)
        'int4w'
    """
    for p, pair in PRECISION_BITS.items():
        if pair == (int(w_bits), int(a_bits)):
            return p
    return None


def require_quantizer():
    """The ``ai_edge_quantizer`` module, or an ``ImportError`` naming the
    extra that installs it.

    Example:
        >>> aeq = require_quantizer()
    """
    try:
        import ai_edge_quantizer
        from ai_edge_quantizer import recipe_manager  # noqa: F401
    except ImportError as e:
        raise ImportError(
            "Per-layer float16 / int8 / int4w LiteRT files need "
            f"ai-edge-quantizer: pip install '{EXTRA}' (or pip install "
            f"ai-edge-quantizer). ({e})") from None
    return ai_edge_quantizer


def _schema():
    from ai_edge_litert import schema_py_generated as schema
    return schema


def _names(enum_cls) -> dict:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_")}


def _op_name(model, op, ops) -> str:
    code = model.operatorCodes[op.opcodeIndex]
    return ops.get(max(int(code.builtinCode),
                       int(code.deprecatedBuiltinCode)), "CUSTOM")


def _tensor_name(t) -> str:
    name = t.name
    return name.decode() if isinstance(name, bytes) else str(name or "")


def read_model(flatbuffer):
    """The file as the schema's object API (``ModelT``)."""
    schema = _schema()
    buf = bytearray(flatbuffer)
    return schema.ModelT.InitFromObj(schema.Model.GetRootAs(buf, 0))


def weight_ops(flatbuffer) -> list:
    """The weight ops of a file's main graph, in operator order.

    Args:
        flatbuffer: ``.tflite`` bytes.

    Returns:
        ``[WeightOp]``; ``dtype`` is the stored weight type (the input of a
        weight DEQUANTIZE for float16 / weight-only files).

    Example:
        >>> [w.op for w in weight_ops(flatbuffer)]
        ['CONV_2D', 'FULLY_CONNECTED']
    """
    schema = _schema()
    model = read_model(flatbuffer)
    ops, types = _names(schema.BuiltinOperator), _names(schema.TensorType)
    sg = model.subgraphs[0]
    producer = {}
    for op in sg.operators:
        for o in op.outputs if op.outputs is not None else ():
            producer[int(o)] = op
    out = []
    for i, op in enumerate(sg.operators):
        name = _op_name(model, op, ops)
        if name not in WEIGHT_OPS or op.inputs is None or len(op.inputs) < 2:
            continue
        w = int(op.inputs[1])
        src = producer.get(w)
        if src is not None and _op_name(model, src, ops) == "DEQUANTIZE":
            w = int(src.inputs[0])
        outs = [_tensor_name(sg.tensors[int(o)]) for o in op.outputs]
        scope = ";".join(n for n in outs if n) + ";"
        out.append(WeightOp(i, name, scope, _tensor_name(sg.tensors[w]),
                            types.get(int(sg.tensors[w].type), "?"), w))
    return out


_DTYPE_PRECISION = {"FLOAT32": "float32", "FLOAT16": "float16",
                    "INT8": "int8", "INT4": "int4w"}


def op_precisions(flatbuffer) -> dict:
    """``{operator index: precision}`` of every weight op, read from the
    file's tensor types.

    Example:
        >>> set(op_precisions(open("m.tflite", "rb").read()).values())
        {'int8', 'int4w'}
    """
    return {w.index: _DTYPE_PRECISION.get(w.dtype, w.dtype.lower())
            for w in weight_ops(flatbuffer)}


#: Weight ops without an int4 recipe in ai-edge-quantizer 0.10 (checked
#: with its policy): their "int4w" becomes "int8" (:func:`supported`).
NO_INT4_OPS = ("DEPTHWISE_CONV_2D",)


def supported(op: str, precision: str) -> str:
    """The precision ``op`` gets when ``precision`` is asked: the same, or
    "int8" for "int4w" on an op without an int4 recipe (depthwise).

    Example:
        >>> supported("DEPTHWISE_CONV_2D", "int4w")
        'int8'
    """
    check_precision(precision)
    return "int8" if precision == "int4w" and op in NO_INT4_OPS \
        else precision


def _recipe(ops: list, precisions: dict):
    """A per-op ai-edge-quantizer recipe: one scope (anchored regex of the
    op's output names) and op type per quantized op."""
    require_quantizer()
    from ai_edge_quantizer import algorithm_manager, qtyping, recipe_manager

    rm = recipe_manager.RecipeManager()
    for w in ops:
        p = supported(w.op, precisions.get(w.index, "float32"))
        if p == "float32":
            continue
        regex = "^" + re.escape(w.scope) + "$"
        name = qtyping.TFLOperationName(w.op)
        if p == "float16":
            rm.add_weight_only_config(
                regex, name, num_bits=16,
                algorithm_key=algorithm_manager.AlgorithmName.FLOAT_CASTING)
        else:
            rm.add_dynamic_config(regex, name,
                                  num_bits=PRECISION_BITS[p][0])
    return rm.get_quantization_recipe()


def quantize_tflite(flatbuffer, precisions: dict) -> bytes:
    """Sets the precision of chosen weight ops of a float ``.tflite``.

    Args:
        flatbuffer: a float32 file (bytes).
        precisions: ``{operator index: precision}`` (indices from
            :func:`weight_ops`); ops not listed stay float32; "int4w" on
            an op without an int4 recipe becomes "int8" (:func:`supported`).

    Returns:
        The quantized file's bytes (the input when nothing is quantized).

    Raises:
        ValueError: an index that is not a weight op, an unknown precision,
            a file that is not float, or two ops sharing one scope with
            different precisions.
        ImportError: ai-edge-quantizer is missing (names the extra).

    Example:
        >>> small = quantize_tflite(fb, {0: "int8", 3: "float16"})
    """
    ops = weight_ops(flatbuffer)
    by_index = {w.index: w for w in ops}
    for i, p in precisions.items():
        check_precision(p, f"precisions[{i}]")
        if i not in by_index:
            raise ValueError(f"precisions: operator {i} is not a weight op "
                             f"({'/'.join(WEIGHT_OPS)}) of the file; its "
                             f"weight ops are {sorted(by_index)}.")
    if any(w.dtype != "FLOAT32" for w in ops):
        raise ValueError("quantize_tflite needs a float32 file; its weight "
                         f"types are {sorted({w.dtype for w in ops})}.")
    scopes = {}
    for w in ops:
        p = precisions.get(w.index, "float32")
        if scopes.setdefault((w.scope, w.op), p) != p:
            raise ValueError(f"two {w.op} ops share the scope {w.scope!r} "
                             "but were given different precisions.")
    if all(p == "float32" for p in precisions.values()):
        return bytes(flatbuffer)
    aeq = require_quantizer()
    recipe = _recipe(ops, precisions)
    quiet = logging.getLogger("absl")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            q = aeq.Quantizer(bytearray(flatbuffer), recipe)
            result = q.quantize(enable_progress_bar=False,
                                enable_progress_report=False)
    finally:
        quiet.setLevel(level)
    return bytes(result.quantized_model)


def pack_int4(values) -> np.ndarray:
    """int4 values (in [-8, 7]) packed two per byte, low nibble first (the
    LiteRT layout).

    Example:
        >>> pack_int4(np.array([1, -1])).tolist()
        [241]
    """
    a = np.asarray(values).astype(np.int8).reshape(-1)
    if a.size % 2:
        a = np.append(a, np.int8(0))
    lo = a[0::2].astype(np.uint8) & 0x0F
    hi = (a[1::2].astype(np.uint8) & 0x0F) << 4
    return (lo | hi).astype(np.uint8)


def unpack_int4(packed, size: int) -> np.ndarray:
    """Inverse of :func:`pack_int4`: ``size`` int8 values.

    Example:
        >>> unpack_int4(pack_int4(np.array([1, -1])), 2).tolist()
        [1, -1]
    """
    b = np.asarray(packed, np.uint8).reshape(-1)
    lo = (b & 0x0F).astype(np.int8)
    hi = (b >> 4).astype(np.int8)
    out = np.empty(b.size * 2, np.int8)
    out[0::2], out[1::2] = lo, hi
    out = np.where(out > 7, out - 16, out).astype(np.int8)
    return out[:size]


def weight_values(flatbuffer, op_index: int) -> np.ndarray:
    """The stored integer weights of a weight op (int8 / int4 unpacked to
    int8, in the file's layout), for checks.

    Example:
        >>> weight_values(fb, 0).shape
        (16, 3, 3, 3)
    """
    model = read_model(flatbuffer)
    sg = model.subgraphs[0]
    w = next(x for x in weight_ops(flatbuffer) if x.index == op_index)
    t = sg.tensors[w.tensor]
    data = np.asarray(model.buffers[t.buffer].data, np.uint8)
    shape = [int(s) for s in t.shape]
    if w.dtype == "INT4":
        return unpack_int4(data, int(np.prod(shape))).reshape(shape)
    if w.dtype == "INT8":
        return data.view(np.int8).reshape(shape)
    raise ValueError(f"operator {op_index}'s weights are {w.dtype}, not "
                     "integer.")
