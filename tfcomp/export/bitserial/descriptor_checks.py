"""Semantic checks of a decoded bit-serial descriptor (what its JSON
Schema cannot express).

Example:
    >>> semantic_errors(desc)
    []
"""

from __future__ import annotations

from tfcomp.export.bitserial import packing
from tfcomp.export.bitserial.descriptor_inputs import input_errors
from tfcomp.export.bitserial.fixedpoint import INT32_MAX
from tfcomp.export.bitserial.ir import (
    QuantParams,
    mul_product_bound,
    same_grid,
)
from tfcomp.export.bitserial.shapes import (
    concat_shape,
    crop_shape,
    mul_shape,
    upsample_shape,
)

__all__ = ["semantic_errors"]


def semantic_errors(desc: dict) -> list[str]:
    """Consistency errors a schema cannot express (model input names
    unique, names defined before use, one input quantization per input and
    equal to its producer's, concat shapes and requantization, mul shapes
    and int32 products, upsample / crop shapes and grids, GEMM sizes, blob
    ranges, newer features in an older version); empty when none.

    Example:
        >>> semantic_errors(json.load(open("net.json")))
        []
    """
    errs, quants = input_errors(desc)
    names = set(quants)
    for i, la in enumerate(desc["layers"]):
        where = f"$.layers[{i}] ({la['name']!r})"
        for n in la["inputs"]:
            if n not in names:
                errs.append(f"{where}: input {n!r} is not defined before use")
        if la["name"] in names:
            errs.append(f"{where}: duplicate name")
        names.add(la["name"])
        quants[la["name"]] = la["out_quant"]
        groups = la.get("attrs", {}).get("groups", 1)
        if desc["schema_version"] < 2 and (la["op"] in ("pad", "lut") or
                                           groups != 1):
            errs.append(f"{where}: {la['op']} with these attrs needs "
                        "schema_version >= 2")
        need = {"concat": 3, "mul": 4, "upsample": 6, "crop": 6}.get(
            la["op"], 1)
        if desc["schema_version"] < need:
            errs.append(f"{where}: {la['op']} needs schema_version >= "
                        f"{need}")
        errs += _input_errors(la, where, quants)
        if la["op"] == "concat":
            errs += _concat_errors(la, where)
        elif la["op"] == "mul":
            errs += _mul_errors(la, where)
        elif la["op"] in _MOVES:
            errs += _move_errors(la, where, quants)
        if la["engine"] != "array":
            continue
        g = la["gemm"]
        n_out = g["groups"] * g["N"]
        if la["op"] == "conv2d" and g["groups"] != groups:
            errs.append(f"{where}: gemm.groups={g['groups']} != attrs.groups"
                        f"={groups}")
        for key, arr in (("bias", la["bias"]),
                         ("requant.multiplier", la["requant"]["multiplier"]),
                         ("requant.shift", la["requant"]["shift"]),
                         ("weights.zero_point", la["weights"]["zero_point"])):
            if len(arr) != n_out:
                errs.append(f"{where}: {key} has {len(arr)} entries, "
                            f"expected {n_out}")
        w = la["weights"]
        if w["rows"] != n_out or w["k"] != g["K"]:
            errs.append(f"{where}: weights are {w['rows']}x{w['k']}, GEMM "
                        f"needs {n_out}x{g['K']}")
        if la["schedule"]["kind"] != desc["target"]:
            errs.append(f"{where}: schedule kind {la['schedule']['kind']!r} "
                        f"!= target {desc['target']!r}")
        expect = (w["bits"] * w["rows"] * 8 * packing.words_for(w["k"])
                  if w["packing"] == "bitplanes_u64"
                  else -(-w["rows"] * w["k"] * w["bits"] // 8))
        if w["nbytes"] != expect:
            errs.append(f"{where}: weights.nbytes={w['nbytes']}, the "
                        f"packing needs {expect}")
        if w["offset"] + w["nbytes"] > desc["blob"]["nbytes"]:
            errs.append(f"{where}: weights [{w['offset']}, "
                        f"{w['offset'] + w['nbytes']}) lie beyond the blob "
                        f"({desc['blob']['nbytes']} bytes)")
    if desc["output"] not in names:
        errs.append(f"$.output: {desc['output']!r} is not a tensor")
    return errs


def _input_errors(la: dict, where: str, quants: dict) -> list[str]:
    """``input_shapes`` / ``input_quants``: one per input; each quant the
    one its input tensor was written with."""
    errs = []
    n = len(la["inputs"])
    for key in ("input_shapes", "input_quants"):
        if key in la and len(la[key]) != n:
            errs.append(f"{where}: {key} has {len(la[key])} entries, "
                        f"expected {n} (one per input)")
    for j, (name, q) in enumerate(zip(la["inputs"], la.get(
            "input_quants", ()))):
        if name in quants and q != quants[name]:
            errs.append(f"{where}: input_quants[{j}] is {q}, but {name!r} "
                        f"is quantized as {quants[name]}")
    return errs


def _shape_errors(rule, la: dict, where: str, what: str) -> list[str]:
    """The IR's shape ``rule`` (``concat_shape`` / ``mul_shape``) applied to
    a layer's input shapes: its error, or an ``output_shape`` that differs.
    """
    try:
        shape = list(rule(la["input_shapes"], la["name"]))
    except ValueError as e:
        return [f"{where}: {e}"]
    if shape != la["output_shape"]:
        return [f"{where}: output_shape {la['output_shape']} is not {what} "
                f"({shape})"]
    return []


def _concat_errors(la: dict, where: str) -> list[str]:
    """A concat's shapes and per-input requantization (null: a copy, only
    for an input on the output grid)."""
    errs = _shape_errors(concat_shape, la, where,
                         "the concatenation of the inputs")
    n, rq = len(la["inputs"]), la["requant"]
    ms, ss = rq["input_multipliers"], rq["input_shifts"]
    if not len(ms) == len(ss) == n:
        return errs + [f"{where}: requant.input_multipliers / input_shifts "
                       f"have {len(ms)} / {len(ss)} entries, expected {n} "
                       "(one per input)"]
    for j, (m, s, q) in enumerate(zip(ms, ss, la["input_quants"])):
        if (m is None) != (s is None):
            errs.append(f"{where}: input {j}: input_multipliers and "
                        "input_shifts must both be null (a copy) or both "
                        f"integers. Received: {m!r}, {s!r}")
        elif m is None and not _on_grid(q, la["out_quant"]):
            errs.append(f"{where}: input {j} is copied (null requant) but "
                        f"its grid {q} is not the output's "
                        f"{la['out_quant']}")
    return errs


def _mul_errors(la: dict, where: str) -> list[str]:
    """A mul's shapes (one, or a per-channel gate) and int32 product."""
    errs = _shape_errors(mul_shape, la, where, "the inputs' broadcast shape")
    if len(la["input_quants"]) == 2:
        try:
            bound = mul_product_bound(
                [QuantParams.from_dict(q) for q in la["input_quants"]])
        except ValueError as e:
            return errs + [f"{where}: {e}"]
        if bound > INT32_MAX:
            errs.append(f"{where}: the int32 product of the inputs may "
                        f"overflow (worst case {bound})")
    return errs


_MOVES = {"upsample": upsample_shape, "crop": crop_shape}


def _move_errors(la: dict, where: str, quants: dict) -> list[str]:
    """An upsample's / crop's output shape (from its attrs) and grid (its
    input's: the values are only moved)."""
    rule = _MOVES[la["op"]]
    if len(la["input_shapes"]) != 1:
        return []  # reported by _input_errors / the schema
    errs = _shape_errors(
        lambda shapes, name: rule(shapes[0], la.get("attrs", {}), name), la,
        where, f"the {la['op']} of the input")
    src = la["inputs"][0] if la["inputs"] else None
    if src in quants and src != la["name"] and \
            quants[src] != la["out_quant"]:
        errs.append(f"{where}: {la['op']} keeps its input's grid, but "
                    f"out_quant {la['out_quant']} is not {src!r}'s "
                    f"{quants[src]}")
    return errs


def _on_grid(q: dict, out: dict) -> bool:
    try:
        return same_grid(QuantParams.from_dict(q), QuantParams.from_dict(out))
    except ValueError:  # an invalid quant: reported as not on the grid
        return False
