"""A small JSON Schema (draft-07 subset) validator, so tfcomp needs no
``jsonschema`` dependency.

Supported keywords: type, enum, const, properties, required,
additionalProperties, items, minItems, maxItems, minimum, maximum,
exclusiveMinimum, minLength, pattern, $ref (local ``#/definitions/...``),
allOf, anyOf, oneOf, if/then/else. Unknown keywords are ignored, as the
specification asks.

Example:
    >>> schema = {"type": "object", "required": ["a"],
    ...           "properties": {"a": {"type": "integer", "minimum": 0}}}
    >>> schema_errors({"a": -1}, schema)
    ['$.a: -1 is less than the minimum 0']
"""

from __future__ import annotations

import re

__all__ = ["schema_errors"]

_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(
        v, bool),
}


def _resolve(ref: str, root: dict) -> dict:
    if not ref.startswith("#/"):
        raise ValueError(f"only local $ref are supported. Received: {ref!r}")
    node = root
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def _short(v) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def schema_errors(value, schema: dict, root: dict | None = None,
                  where: str = "$", limit: int = 20) -> list[str]:
    """All violations of ``schema`` by ``value`` (empty list when valid).

    Args:
        value: a decoded JSON document (dicts, lists, str, numbers, ...).
        schema: the schema (or sub-schema).
        root: the root schema for ``$ref`` (default: ``schema``).
        where: JSON path of ``value`` used in messages.
        limit: stop after this many errors.

    Returns:
        Messages of the form ``"$.layers[2].op: 'x' is not one of [...]"``.

    Example:
        >>> schema_errors([1, "a"], {"items": {"type": "integer"}})
        ["$[1]: 'a' is not of type integer"]
    """
    root = schema if root is None else root
    errs: list[str] = []
    _check(value, schema, root, where, errs, limit)
    return errs[:limit]


def _check(v, s, root, where, errs, limit):
    if s is False and len(errs) < limit:
        errs.append(f"{where}: no value is allowed here")
        return
    if len(errs) >= limit or s is True or not s:
        return
    if "$ref" in s:
        _check(v, _resolve(s["$ref"], root), root, where, errs, limit)
    if "type" in s:
        types = s["type"] if isinstance(s["type"], list) else [s["type"]]
        if not any(_TYPES[t](v) for t in types):
            errs.append(f"{where}: {_short(v)} is not of type "
                        f"{' or '.join(types)}")
            return
    if "enum" in s and v not in s["enum"]:
        errs.append(f"{where}: {_short(v)} is not one of {s['enum']}")
    if "const" in s and v != s["const"]:
        errs.append(f"{where}: {_short(v)} should be {s['const']!r}")
    if _TYPES["number"](v):
        if "minimum" in s and v < s["minimum"]:
            errs.append(f"{where}: {v} is less than the minimum "
                        f"{s['minimum']}")
        if "maximum" in s and v > s["maximum"]:
            errs.append(f"{where}: {v} is more than the maximum "
                        f"{s['maximum']}")
        if "exclusiveMinimum" in s and v <= s["exclusiveMinimum"]:
            errs.append(f"{where}: {v} must be > {s['exclusiveMinimum']}")
    if isinstance(v, str):
        if "minLength" in s and len(v) < s["minLength"]:
            errs.append(f"{where}: string shorter than {s['minLength']}")
        if "pattern" in s and not re.search(s["pattern"], v):
            errs.append(f"{where}: {_short(v)} does not match "
                        f"{s['pattern']!r}")
    if isinstance(v, list):
        if "minItems" in s and len(v) < s["minItems"]:
            errs.append(f"{where}: needs at least {s['minItems']} items, "
                        f"has {len(v)}")
        if "maxItems" in s and len(v) > s["maxItems"]:
            errs.append(f"{where}: allows at most {s['maxItems']} items, "
                        f"has {len(v)}")
        if "items" in s:
            for i, item in enumerate(v):
                _check(item, s["items"], root, f"{where}[{i}]", errs, limit)
    if isinstance(v, dict):
        for key in s.get("required", []):
            if key not in v:
                errs.append(f"{where}: missing required property {key!r}")
        props = s.get("properties", {})
        for key, item in v.items():
            if key in props:
                _check(item, props[key], root, f"{where}.{key}", errs, limit)
            elif "additionalProperties" in s:
                extra = s["additionalProperties"]
                if extra is False:
                    errs.append(f"{where}: unexpected property {key!r}")
                else:
                    _check(item, extra, root, f"{where}.{key}", errs, limit)
    for sub in s.get("allOf", []):
        _check(v, sub, root, where, errs, limit)
    if "anyOf" in s and not any(
            not schema_errors(v, sub, root, where) for sub in s["anyOf"]):
        errs.append(f"{where}: matches none of the allowed forms (anyOf)")
    if "oneOf" in s:
        results = [schema_errors(v, sub, root, where) for sub in s["oneOf"]]
        ok = sum(1 for r in results if not r)
        if ok != 1:
            detail = min(results, key=len) if ok == 0 else []
            errs.append(f"{where}: must match exactly one form (oneOf); "
                        f"matches {ok}" + (f" (closest: {detail[0]})"
                                           if detail else ""))
    if "if" in s:
        if not schema_errors(v, s["if"], root, where):
            if "then" in s:
                _check(v, s["then"], root, where, errs, limit)
        elif "else" in s:
            _check(v, s["else"], root, where, errs, limit)
