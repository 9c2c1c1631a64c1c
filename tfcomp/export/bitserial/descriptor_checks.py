"""Semantic checks of a decoded bit-serial descriptor (what its JSON
Schema cannot express).

Example:
    >>> semantic_errors(desc)
    []
"""

from __future__ import annotations

from tfcomp.export.bitserial import packing

__all__ = ["semantic_errors"]


def semantic_errors(desc: dict) -> list[str]:
    """Consistency errors a schema cannot express (names defined before
    use, GEMM sizes, blob ranges, version-2 features in a version-1
    descriptor); empty when none.

    Example:
        >>> semantic_errors(json.load(open("net.json")))
        []
    """
    errs = []
    names = {desc["input"]["name"]}
    for i, la in enumerate(desc["layers"]):
        where = f"$.layers[{i}] ({la['name']!r})"
        for n in la["inputs"]:
            if n not in names:
                errs.append(f"{where}: input {n!r} is not defined before use")
        if la["name"] in names:
            errs.append(f"{where}: duplicate name")
        names.add(la["name"])
        groups = la.get("attrs", {}).get("groups", 1)
        if desc["schema_version"] < 2 and (la["op"] in ("pad", "lut") or
                                           groups != 1):
            errs.append(f"{where}: {la['op']} with these attrs needs "
                        "schema_version >= 2")
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
    if desc["schema_version"] < 2 and "rescale" in desc["input"]:
        errs.append("$.input.rescale needs schema_version >= 2")
    if desc["output"] not in names:
        errs.append(f"$.output: {desc['output']!r} is not a tensor")
    return errs
