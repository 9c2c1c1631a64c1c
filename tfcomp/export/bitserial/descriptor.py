"""Versioned bit-serial descriptor (JSON) + packed weight blob: write, load,
validate.

A descriptor ``model.json`` sits beside its blob ``model.<sha256[:16]>.bin``
(the name the JSON's ``blob.file`` records; descriptors written before blobs
were content-addressed name ``model.bin`` and still load). The JSON
holds, per layer: op, shapes, the grouped GEMM view (M, K, N), operand bits
and signedness, scales / zero points, int32 bias, per-channel requantization
(multiplier, shift), the weights' offset and size in the blob, the target's
schedule (BISMO: tiling + Fetch/Exec/Result/Sync program; Bit Fusion: loop
tiling and order) and the layer's cycles / latency / energy. The blob holds
only weights: BISMO bit planes ``(w_bits, rows, words)`` of little-endian
uint64, Bit Fusion packed ``w_bits``-bit fields; rows are output channels
(depthwise: ``channel * multiplier + m``), K in (kh, kw, cin) order.
Layers with ``attrs.sign_weights`` (binary layers; 1-bit signed weights)
hold signs: the plane bit 1 is +1, 0 is -1 (``w = 2b - 1``). The blob
is covered by its length and sha256. The JSON Schema ships as
``tfcomp/export/schemas/bitserial_descriptor.schema.json``.

Inputs: a network of one input has ``input``: ``name``, ``shape`` (no
batch axis), ``quant`` and, from version 2, ``rescale`` (the format of
every version). A network of several inputs has ``inputs`` instead
(version 5): a list, two or more entries of that form, in the order a
runtime feeds them (the Keras model's ``model.inputs`` order), each named
by its Keras ``InputLayer`` so a runtime can also feed them by name, each
with its own quantization and rescale; layers read them by those names.

Schema versions: a descriptor records the lowest version that has every
feature it uses, so networks of version-1 features stay readable by older
tfcomp; this tfcomp reads versions 1 to 6.

- 1: conv2d, depthwise_conv2d, dense, add, max/avg/global_avg_pool,
  flatten, reshape, clamp, requantize.
- 2: adds the ``lut`` op (``attrs.table``: an element-wise function as
  one row, or one row per channel, of ``2**in_bits`` integers), the
  ``pad`` op (``attrs.pads`` / ``attrs.interior``: zero padding, the zero
  insertion of a transposed conv), grouped conv2d (``attrs.groups`` > 1:
  ``gemm.groups`` GEMMs of N = cout / groups; weight rows stay output
  channels) and ``input.rescale`` (a folded Keras ``Rescaling`` applied to
  float inputs before quantization).
- 3: adds the ``concat`` op (N >= 2 inputs joined on the last axis;
  ``input_quants`` one per input, ``requant.input_multipliers`` /
  ``input_shifts`` one per input, ``null`` for an input copied because
  it is on the output grid).
- 4: adds the ``mul`` op (two inputs, one shape or one a per-channel gate
  ``(C,)`` / ``(1, C)`` / ``(1, 1, C)`` of the other: squeeze-excite;
  ``input_quants`` one per input, ``requant.multiplier`` / ``shift``:
  ``s_a * s_b / s_out`` in fixed point, TFLite's int8 MUL).
- 5: adds ``inputs`` (several model inputs, above) in place of ``input``.
- 6: adds the ``upsample`` op (``attrs.factors``: each value repeated
  that many times per non-batch axis, nearest-neighbour UpSampling1D /
  2D) and the ``crop`` op (``attrs.crops``: ``[before, after]`` values
  dropped per non-batch axis, Cropping1D / 2D); both keep the grid.

Writing is crash-safe as a pair: the blob goes first under its
content-addressed name, the JSON is replaced last (both atomically), then
the blobs of this descriptor that no longer are referenced are removed. A
reader (or a process killed at any point) sees the old pair or the new pair,
never a JSON whose blob is another one's. Blobs left by a writer killed
before its JSON landed are removed by the next write of that descriptor.
Two descriptors whose names differ only by ``.json`` (``net`` and
``net.json``) share a blob stem: do not keep both in one folder.

Example:
    >>> desc = write_descriptor(ir, "out/model.json", hardware="bismo")
    >>> validate_descriptor("out/model.json")["schema_version"]
    1
"""

from __future__ import annotations

import hashlib
import json
import os
import re

import numpy as np

from tfcomp._io import atomic_write_bytes, remove_stale_temps
from tfcomp.export.bitserial import packing
from tfcomp.export.bitserial.descriptor_checks import semantic_errors
from tfcomp.export.bitserial.descriptor_host import ROUNDING, host_layer
from tfcomp.export.bitserial.descriptor_inputs import (
    MULTI_INPUT_VERSION,
    input_fields,
)
from tfcomp.export.bitserial.errors import (
    BlobIntegrityError,
    DescriptorError,
    SchemaVersionError,
)
from tfcomp.export.bitserial.hardware_hook import (
    HARDWARE,
    ResolvedHardware,
    hardware_args,
    layer_cost,
    perf_factor,
    resolve_hardware,
    uses_im2col,
)
from tfcomp.export.bitserial.ir import IntegerIR, IntOp, groups_of
from tfcomp.export.bitserial.validator import schema_errors
from tfcomp.hardware import bismo_schedule, bitfusion_schedule

__all__ = [
    "FORMAT",
    "SCHEMA_VERSION",
    "TARGETS",
    "blob_path_for",
    "descriptor_blob_path",
    "load_descriptor",
    "load_schema",
    "required_version",
    "schema_path",
    "validate_descriptor",
    "weight_rows",
    "write_descriptor",
]

SCHEMA_VERSION = 6  # the newest version this tfcomp reads
FORMAT = "tfcomp-bitserial"
TARGETS = HARDWARE  # the accelerators, as the descriptor's "target" names
ALIGNMENT = 64


def schema_path() -> str:
    """Path of the shipped JSON Schema.

    Example:
        >>> os.path.basename(schema_path())
        'bitserial_descriptor.schema.json'
    """
    return os.path.join(os.path.dirname(os.path.dirname(__file__)),
                        "schemas", "bitserial_descriptor.schema.json")


def load_schema() -> dict:
    """The descriptor JSON Schema as a dict (versions 1 to 6).

    Example:
        >>> load_schema()["title"]
        'tfcomp bit-serial accelerator descriptor'
    """
    with open(schema_path(), encoding="utf-8") as f:
        return json.load(f)


def _blob_stem(path: str) -> str:
    root, ext = os.path.splitext(os.fspath(path))
    return root if ext.lower() == ".json" else os.fspath(path)


def blob_path_for(path: str, sha256: str | None = None) -> str:
    """The blob path of descriptor ``path``: ``model.json`` ->
    ``model.<sha256[:16]>.bin`` for a blob of that sha256 (what
    :func:`write_descriptor` writes); without ``sha256`` the name
    descriptors written before blobs were content-addressed used,
    ``model.bin`` (else ``path + ".bin"``). The blob a descriptor uses is
    the one its JSON names: :func:`descriptor_blob_path`.

    Example:
        >>> blob_path_for("out/net.json")
        'out/net.bin'
        >>> blob_path_for("out/net.json", "ab" * 32)
        'out/net.abababababababab.bin'
    """
    stem = _blob_stem(path)
    if sha256 is None:
        return stem + ".bin"
    if not re.fullmatch(r"[0-9a-f]{16,64}", str(sha256)):
        raise ValueError("sha256 must be a lowercase hex digest. Received: "
                         f"sha256={sha256!r}")
    return f"{stem}.{sha256[:16]}.bin"


def descriptor_blob_path(path: str, desc: dict | None = None) -> str:
    """The blob the descriptor at ``path`` names (its ``blob.file``, beside
    it).

    Example:
        >>> os.path.basename(descriptor_blob_path("out/net.json"))
        'net.3f2a9c0d1e2b4a5c.bin'
    """
    if desc is None:
        desc = _read_json(path)
    blob = desc.get("blob") if isinstance(desc, dict) else None
    if not isinstance(blob, dict) or not isinstance(blob.get("file"), str):
        raise DescriptorError(f"descriptor {path!r} names no blob file "
                              "($.blob.file).")
    return os.path.join(os.path.dirname(os.fspath(path)), blob["file"])


def _referenced_blob(path: str) -> str | None:
    """``blob.file`` of the JSON now at ``path`` (None if unreadable)."""
    try:
        with open(path, encoding="utf-8") as f:
            name = json.load(f)["blob"]["file"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return name if isinstance(name, str) else None


def _remove_stale_blobs(path: str, keep: str, replaced: str | None) -> None:
    """Removes this descriptor's blobs that its JSON no longer names.

    ``keep`` is the blob just written; ``replaced`` the one the replaced JSON
    named (the legacy ``model.bin`` is only removed as such). Content-
    addressed blobs of this stem that the JSON now on disk does not name
    are left over from killed or earlier writes and go too.
    """
    directory = os.path.dirname(os.path.abspath(path))
    current = _referenced_blob(path)  # a concurrent writer's JSON wins
    protect = {keep, current}
    pattern = re.compile(re.escape(os.path.basename(_blob_stem(path)))
                         + r"\.[0-9a-f]{16}\.bin")
    try:
        names = os.listdir(directory)
    except OSError:
        return
    doomed = [n for n in names if pattern.fullmatch(n)]
    if replaced == os.path.basename(blob_path_for(path)):
        doomed.append(replaced)  # the blob name of older tfcomp versions
    for name in set(doomed) - protect:
        try:
            os.unlink(os.path.join(directory, name))
        except OSError:
            pass  # already gone, or not ours to remove
    # temporary files of blobs of other contents (a killed write)
    temp = re.compile(re.escape(".tmp-") + "(" + pattern.pattern + ")-")
    for base in {m.group(1) for m in map(temp.match, names) if m}:
        remove_stale_temps(os.path.join(directory, base))


def weight_rows(op: IntOp) -> np.ndarray:
    """(rows = output channels, K) weight matrix in blob order.

    Example:
        >>> weight_rows(ir.ops[0]).shape   # conv 3x3x3 -> 8 filters
        (8, 27)
    """
    w = np.asarray(op.weights, np.int64)
    if op.op == "depthwise_conv2d":
        kh, kw, c, m = w.shape
        return w.reshape(kh * kw, c * m).T
    return w.reshape(-1, w.shape[-1]).T


def _gemm_view(op: IntOp, in_shape, out_shape, batch) -> dict:
    if op.op == "dense":
        m = batch * int(np.prod(in_shape[:-1], dtype=np.int64))
        return {"groups": 1, "M": m, "K": int(in_shape[-1]),
                "N": int(out_shape[-1]), "kernel_positions": 1,
                "k_order": ["cin"]}
    kh, kw = op.attrs["kernel"]
    m = batch * int(out_shape[0]) * int(out_shape[1])
    if op.op == "conv2d":
        g = groups_of(op)
        return {"groups": g, "M": m, "K": kh * kw * int(in_shape[2]) // g,
                "N": int(out_shape[2]) // g, "kernel_positions": kh * kw,
                "k_order": ["kh", "kw", "cin"]}
    return {"groups": int(in_shape[2]), "M": m, "K": kh * kw,
            "N": int(op.weights.shape[3]), "kernel_positions": kh * kw,
            "k_order": ["kh", "kw"]}


def _quant(q) -> dict:
    return q.to_dict()


def _ints(a) -> list:
    return [int(v) for v in np.ravel(a)]


def _gemm_layer(op, ir, shapes, target, hw, batch, blob) -> dict:
    in_shape, out_shape = shapes[op.inputs[0]], shapes[op.name]
    a = ir.quant(op.inputs[0])
    gemm = _gemm_view(op, in_shape, out_shape, batch)
    rows = weight_rows(op)
    sign = bool(op.attrs.get("sign_weights"))
    if sign:  # signs: plane bit 1 is +1 (two's complement packing of -b)
        rows = -(np.asarray(rows) > 0).astype(np.int64)
    if target == "bismo":
        data = packing.pack_bitplanes(rows, op.w_bits, op.w_signed).tobytes()
        packing_kind = "bitplanes_u64"
    else:
        data = packing.pack_values(rows, op.w_bits, op.w_signed)
        packing_kind = "packed_bits"
    blob.extend(b"\0" * (-len(blob) % ALIGNMENT))
    offset = len(blob)
    blob.extend(data)
    weights = {"bits": op.w_bits, "signed": op.w_signed,
               "shape": _ints(op.weights.shape),
               "zero_point": _ints(op.w_zero_point),
               "scale": [float(s) for s in np.ravel(op.w_scale)] if
               op.w_scale is not None else [],
               "packing": packing_kind, "rows": int(rows.shape[0]),
               "k": int(rows.shape[1]), "offset": offset,
               "nbytes": len(data)}
    sp = hw.schedule_params
    src, names = op.inputs[0], ir.input_names
    while src not in names and ir.op(src).op == "reshape":
        src = ir.op(src).inputs[0]  # a layout-only view of ...
    reads_input = src in names  # a model input
    if target == "bismo":
        weights["words_per_row"] = packing.words_for(rows.shape[1])
        sched = bismo_schedule(gemm["groups"], gemm["M"], gemm["K"],
                               gemm["N"], a.bits, op.w_bits, a.signed,
                               op.w_signed, **sp)
        compute = sched["exec_cycles"]
    else:
        sched = bitfusion_schedule(
            gemm["groups"], gemm["M"], gemm["K"], gemm["N"],
            gemm["kernel_positions"], perf_factor(hw, op.w_bits, a.bits),
            sp["rows"], sp["cols"], a.bits, op.w_bits,
            im2col=uses_im2col(hw, op, in_shape, out_shape, batch,
                               reads_input))
        compute = sched["compute_cycles"]
    cost = layer_cost(hw, op, in_shape, out_shape, batch, op.w_bits, a.bits,
                      compute, reads_input=reads_input)
    layer = {"name": op.name, "op": op.op, "inputs": list(op.inputs),
             "input_shapes": [list(in_shape)],
             "output_shape": list(out_shape), "out_quant": _quant(op.out),
             "act_min": op.act_min, "act_max": op.act_max,
             "engine": "array", "gemm": gemm, "lhs": _quant(a),
             "weights": weights, "bias": _ints(op.bias),
             "requant": {"multiplier": _ints(op.multiplier),
                         "shift": _ints(op.shift), "rounding": ROUNDING},
             "schedule": sched, "cost": cost}
    if op.op != "dense":
        layer["attrs"] = {"kernel": list(op.attrs["kernel"]),
                          "strides": list(op.attrs["strides"]),
                          "pads": list(op.attrs["pads"])}
        if groups_of(op) > 1:
            layer["attrs"]["groups"] = groups_of(op)
    if sign:
        layer.setdefault("attrs", {})["sign_weights"] = True
    return layer


def required_version(ir: IntegerIR) -> int:
    """The lowest schema version that has every feature ``ir`` uses.

    Example:
        >>> required_version(random_ir(seed=0))
        1
    """
    ops = {op.op for op in ir.ops}
    if ops & {"upsample", "crop"}:
        return 6
    if ir.extra_inputs:
        return MULTI_INPUT_VERSION
    if "mul" in ops:
        return 4
    if "concat" in ops:
        return 3
    v2 = ir.input_rescale is not None or any(
        op.op in ("pad", "lut") or (op.op == "conv2d" and
                                    groups_of(op) > 1)
        for op in ir.ops)
    return 2 if v2 else 1


def _total(costs, key, cast):
    vals = [c[key] for c in costs]
    return cast(sum(vals)) if None not in vals else None


def write_descriptor(ir: IntegerIR, path: str, hardware=None,
                     hardware_config: dict | None = None, batch: int = 1, *,
                     target: str | None = None) -> dict:
    """Writes ``path`` (JSON) and its weight blob as a crash-safe pair.

    The blob is written (atomically) under its content-addressed name
    ``blob_path_for(path, sha256)``, then the JSON naming it replaces the
    old one, then blobs of ``path`` that the JSON no longer names are
    removed: a reader sees the old pair or the new pair.

    Args:
        ir: the integer network.
        path: descriptor path; the blob goes beside it (see above).
        hardware: the accelerator, default "bismo" (bit-plane packed weights,
            Fetch/Exec/Result/Sync program) or "bitfusion" (packed b-bit
            weights, loop tiling), costed by the default ``tfcomp.hardware``
            model (``BISMO()`` / ``BitFusion("edge")``); or a cost model
            (a ``BISMO`` / ``BitFusion`` instance, or any object with
            ``layer_cost(spec, w_bits, a_bits)`` named "BISMO" or
            "BitFusion"); or a ``ResolvedHardware``.
        hardware_config: constructor arguments of the default model; BISMO
            also takes ``lhs_depth`` / ``rhs_depth`` buffer entries for the
            program's blocking (the only keys allowed with a model).
        batch: samples per program run (GEMM M and cycle counts scale).
        target: deprecated name of the accelerator (use ``hardware``).

    Returns:
        The descriptor dict that was written.

    Example:
        >>> d = write_descriptor(random_ir(seed=0), "/tmp/m.json",
        ...                      hardware="bitfusion")
        >>> d["layers"][0]["schedule"]["kind"]
        'bitfusion'
    """
    if isinstance(hardware, ResolvedHardware):
        hw = hardware
    else:
        hw = resolve_hardware(*hardware_args(hardware, hardware_config,
                                             target))
    if not isinstance(ir, IntegerIR):
        raise TypeError(f"ir must be an IntegerIR. Received: "
                        f"{type(ir).__name__}")
    if not isinstance(batch, (int, np.integer)) or batch < 1:
        raise ValueError(f"batch must be an int >= 1. Received: "
                         f"batch={batch!r}")
    target = hw.kind
    shapes = ir.validate()
    blob = bytearray()
    layers = []
    for op in ir.ops:
        if op.is_gemm:
            layers.append(_gemm_layer(op, ir, shapes, target, hw, int(batch),
                                      blob))
        else:
            layers.append(host_layer(op, ir, shapes))
    from tfcomp.export.bitserial import __version__
    blob_bytes = bytes(blob)
    digest = hashlib.sha256(blob_bytes).hexdigest()
    blob_file = blob_path_for(path, digest)
    arr = [la["cost"] for la in layers if la["engine"] == "array"]
    desc = {
        "format": FORMAT, "schema_version": required_version(ir),
        "generator": f"tfcomp {__version__}", "name": ir.name,
        "target": target, "batch": int(batch),
        "blob": {"file": os.path.basename(blob_file),
                 "nbytes": len(blob_bytes),
                 "sha256": digest,
                 "alignment": ALIGNMENT, "byte_order": "little"},
        "hardware": {"name": hw.name, "config": hw.config,
                     "schedule_params": hw.schedule_params,
                     "cost_source": hw.source},
        **input_fields(ir),
        "output": ir.output,
        "layers": layers,
        "totals": {
            "cycles": _total(arr, "cycles", int),
            "latency_s": _total(arr, "latency_s", float),
            "energy_j": _total(arr, "energy_j", float),
            "compute_cycles": int(sum(c["compute_cycles"] for c in arr))},
    }
    text = json.dumps(desc, indent=1).encode("utf-8")
    replaced = _referenced_blob(path)
    atomic_write_bytes(blob_file, blob_bytes)  # 1. the new blob
    atomic_write_bytes(path, text)             # 2. the JSON naming it
    _remove_stale_blobs(path, os.path.basename(blob_file), replaced)
    if not os.path.exists(blob_file) and _referenced_blob(path) == \
            os.path.basename(blob_file):
        atomic_write_bytes(blob_file, blob_bytes)  # a concurrent writer's
        # clean-up removed it between our steps; ours is the live pair
    return desc


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise DescriptorError(f"cannot read descriptor {path!r}: {e}") from e
    except UnicodeDecodeError:
        raise DescriptorError(f"descriptor {path!r} is not UTF-8 text; is it "
                              "the JSON (not the blob)?") from None
    if not text.strip():
        raise DescriptorError(f"descriptor {path!r} is empty.")
    try:
        desc = json.loads(text)
    except json.JSONDecodeError as e:
        raise DescriptorError(f"descriptor {path!r} is not valid JSON "
                              f"(line {e.lineno}, column {e.colno}: "
                              f"{e.msg})") from e
    if not isinstance(desc, dict):
        raise DescriptorError(f"descriptor {path!r} must hold a JSON object. "
                              f"Received: {type(desc).__name__}")
    return desc


def _check_document(desc: dict, origin: str) -> None:
    if desc.get("format") != FORMAT:
        raise DescriptorError(f"{origin} is not a tfcomp bit-serial "
                              f"descriptor (format={desc.get('format')!r}, "
                              f"expected {FORMAT!r})")
    version = desc.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise DescriptorError(f"{origin}: schema_version must be an integer."
                              f" Received: {version!r}")
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{origin} has schema_version {version}, newer than the "
            f"{SCHEMA_VERSION} this tfcomp reads; upgrade tfcomp to load it")
    errs = schema_errors(desc, load_schema())
    if not errs:
        errs = semantic_errors(desc)
    if errs:
        more = "" if len(errs) < 20 else "\n  ..."
        raise DescriptorError(f"{origin} is not a valid descriptor:\n  " +
                              "\n  ".join(errs) + more)


def _read_blob(desc: dict, path: str) -> bytes:
    blob_file = descriptor_blob_path(path, desc)
    try:
        with open(blob_file, "rb") as f:
            data = f.read()
    except OSError as e:
        raise BlobIntegrityError(f"cannot read the weight blob {blob_file!r}"
                                 f" of {path!r}: {e}") from e
    want = desc["blob"]["nbytes"]
    if len(data) != want:
        kind = "truncated" if len(data) < want else "longer than recorded"
        raise BlobIntegrityError(f"weight blob {blob_file!r} is {kind}: "
                                 f"{len(data)} bytes, descriptor records "
                                 f"{want}")
    digest = hashlib.sha256(data).hexdigest()
    if digest != desc["blob"]["sha256"]:
        raise BlobIntegrityError(f"weight blob {blob_file!r} is corrupt: "
                                 f"sha256 {digest} != recorded "
                                 f"{desc['blob']['sha256']}")
    return data


def _read_pair(path: str, check_blob: bool = True) -> tuple:
    """``(desc, blob or None)``; a blob that vanished because a writer
    replaced the pair meanwhile is read again from the new JSON."""
    for attempt in range(3):
        desc = _read_json(path)
        _check_document(desc, repr(path))
        if not check_blob:
            return desc, None
        try:
            return desc, _read_blob(desc, path)
        except BlobIntegrityError:
            if attempt == 2 or _referenced_blob(path) == desc["blob"]["file"]:
                raise  # not a replaced pair: the blob itself is bad
    raise AssertionError("unreachable")


def load_descriptor(path: str) -> tuple[dict, bytes]:
    """Reads, validates and integrity-checks a descriptor and its blob.

    Args:
        path: the descriptor JSON path.

    Returns:
        ``(descriptor dict, blob bytes)``.

    Raises:
        DescriptorError: unreadable / invalid JSON or schema violations.
        SchemaVersionError: a newer schema version than this tfcomp reads.
        BlobIntegrityError: blob missing, truncated or corrupt.

    Example:
        >>> desc, blob = load_descriptor("out/model.json")
    """
    return _read_pair(path)


def validate_descriptor(path, check_blob: bool = True) -> dict:
    """Validates a descriptor against the shipped schema and its blob.

    Args:
        path: descriptor path, or an already-decoded descriptor dict (then
            the blob is not checked).
        check_blob: also verify the blob's length and sha256.

    Returns:
        The descriptor dict.

    Example:
        >>> validate_descriptor("out/model.json")["target"]
        'bismo'
    """
    if isinstance(path, dict):
        _check_document(path, "descriptor")
        return path
    return _read_pair(path, check_blob)[0]
