"""The input fields of a bit-serial descriptor: ``input`` (one input) or
``inputs`` (several, schema version 5), written from and read back as
:class:`IRInput` objects (see ``descriptor.py`` for the format).

Example:
    >>> [i.name for i in descriptor_inputs(json.load(open("net.json")))]
    ['image', 'meta']
"""

from __future__ import annotations

from tfcomp.export.bitserial.ir import IntegerIR, IRInput, QuantParams

__all__ = ["MULTI_INPUT_VERSION", "descriptor_inputs", "input_errors",
           "input_fields"]

MULTI_INPUT_VERSION = 5  # the schema version that adds ``inputs``


def _entry(spec: IRInput) -> dict:
    entry = {"name": spec.name, "shape": list(spec.shape),
             "quant": spec.quant.to_dict()}
    if spec.rescale is not None:
        entry["rescale"] = {"scale": list(spec.rescale[0]),
                            "offset": list(spec.rescale[1])}
    return entry


def input_fields(ir: IntegerIR) -> dict:
    """``{"input": {...}}`` for a network of one input (the format of
    every version), ``{"inputs": [{...}, ...]}`` in ``ir.inputs`` order for
    several.

    Example:
        >>> input_fields(random_ir(seed=0))["input"]["name"]
        'input'
    """
    specs = ir.inputs
    if len(specs) == 1:
        return {"input": _entry(specs[0])}
    return {"inputs": [_entry(s) for s in specs]}


def _raw_inputs(desc: dict) -> list:
    return desc["inputs"] if "inputs" in desc else [desc["input"]]


def descriptor_inputs(desc: dict) -> list:
    """The inputs of a (validated) descriptor as :class:`IRInput` objects,
    in feeding order, whether it has ``input`` or ``inputs``.

    Example:
        >>> descriptor_inputs(desc)[0].quant.bits
        8
    """
    out = []
    for e in _raw_inputs(desc):
        r = e.get("rescale")
        out.append(IRInput(e["name"], e["shape"],
                           QuantParams.from_dict(e["quant"]),
                           None if r is None else (r["scale"], r["offset"])))
    return out


def input_errors(desc: dict) -> tuple:
    """``(errors, {name: quant dict})`` of a descriptor's inputs: names
    unique, ``inputs`` and ``rescale`` only in the versions that have
    them.

    Example:
        >>> input_errors(desc)[0]
        []
    """
    errs, quants = [], {}
    version = desc["schema_version"]
    if "inputs" in desc and version < MULTI_INPUT_VERSION:
        errs.append(f"$.inputs needs schema_version >= "
                    f"{MULTI_INPUT_VERSION}")
    for j, e in enumerate(_raw_inputs(desc)):
        at = f"$.inputs[{j}]" if "inputs" in desc else "$.input"
        if e["name"] in quants:
            errs.append(f"{at}: duplicate input name {e['name']!r}")
        quants[e["name"]] = e["quant"]
        if version < 2 and "rescale" in e:
            errs.append(f"{at}.rescale needs schema_version >= 2")
    return errs, quants
