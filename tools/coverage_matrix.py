"""Writes the README's layer-coverage matrix from the user-model tests.

``tests/models`` records the outcome of every (model, step) pair ("ok",
"clear error", "fail") in a JSON file when ``TFCOMP_COVERAGE_JSON`` is set
(``tests/models/conftest.py``). This script turns it into a Markdown table
(rows: Keras layer types, columns: pipeline steps) and rewrites the part of
README.md between the ``coverage-matrix`` marker comments. A cell is
derived from every model that contains the row's layer type:

* ``ok``: every such model passed the step;
* ``partly [n]`` / ``no [n]``: some / all of them raise the documented clear
  error ``[n]`` for this layer type, or the step runs but leaves layers of
  this type alone (``limited``, note ``[n]``) (footnotes under the table);
* ``FAIL [n]``: a test failed (a bug to fix, not a documented limit);
* ``–``: no model with this layer type got to the step (another layer of
  the model stopped it first, or the tests were not run).

``make coverage-matrix`` runs the tests and this script.

Example:
    TFCOMP_COVERAGE_JSON=build/coverage.json pytest tests/models
    python tools/coverage_matrix.py --json build/coverage.json
"""

import argparse
import json
import os
import sys

BEGIN = "<!-- coverage-matrix:begin -->"
END = "<!-- coverage-matrix:end -->"
# column title -> the test steps it covers
COLUMNS = {
    "profile": ("profile",),
    "pruning": ("prune",),
    "FPGM / magnitude": ("fpgm", "magnitude"),
    "QAT": ("qat",),
    "int8 TFLite": ("int8",),
    "bit-serial": ("bitserial",),
    "LASSO / AMC": ("lasso",),
    "DCP": ("dcp",),
    "distill": ("distill",),
    "slimmable": ("slimmable",),
    "MetaPruning": ("metapruning",),
    "GAL channels": ("gal_channels",),
    "GAL blocks": ("gal_blocks",),
    "joint (compress)": ("joint",),
}


def _cell(row: str, steps: tuple, data: dict, notes: dict) -> str:
    """The text of one cell; adds its footnotes to ``notes``."""
    ok = blamed = failed = False
    refs = []
    for model, info in sorted(data["models"].items()):
        if row not in info["rows"]:
            continue
        for step in steps:
            rec = data["outcomes"].get(model, {}).get(step)
            if rec is None:
                continue
            if rec["outcome"] == "ok" or (rec["outcome"] == "limited"
                                          and row not in rec["rows"]):
                ok = True
                continue
            if rec["outcome"] == "limited":
                ok = True  # it ran, leaving this layer type alone
            if rec["outcome"] == "clear error" and row not in rec["rows"]:
                continue  # stopped by another layer type of the model
            text = rec["note"].split(": ", 1)[1] if rec["note"].startswith(
                "needs ") else rec["note"]
            if rec["outcome"] == "fail":
                failed = True
                text = f"unexpected failure: {text}"
            else:
                blamed = True
            if text not in notes:
                notes[text] = (len(notes) + 1, [])
            key, where = notes[text]
            if f"{model} {step}" not in where:
                where.append(f"{model} {step}")
            if key not in refs:
                refs.append(key)
    marks = " " + " ".join(f"[{k}]" for k in sorted(refs)) if refs else ""
    if failed:
        return "FAIL" + marks
    if blamed:
        return ("partly" if ok else "no") + marks
    return "ok" if ok else "–"


def render(data: dict) -> str:
    """The Markdown table and its footnotes.

    Example:
        >>> render({"rows": ["Dense"], "models": {}, "outcomes": {}})[:9]
        '| layer |'
    """
    notes: dict = {}
    lines = ["| layer | " + " | ".join(COLUMNS) + " |",
             "|---|" + "---|" * len(COLUMNS)]
    for row in data["rows"]:
        cells = [_cell(row, steps, data, notes) for steps in COLUMNS.values()]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    lines.append("")
    for text, (key, where) in sorted(notes.items(), key=lambda kv: kv[1]):
        lines.append(f"[{key}] {text} ({', '.join(where)})  ")
    run = sorted(m for m in data["models"] if m in data["outcomes"])
    lines += ["", f"Models tested ({len(run)}): " + ", ".join(
        f"`{m}`" for m in run) + "."]
    return "\n".join(lines)


def rewrite(readme: str, table: str) -> str:
    """``readme`` with the text between the markers replaced by ``table``."""
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README has no {BEGIN} ... {END} section")
    return (readme[:start + len(BEGIN)] + "\n" + table + "\n"
            + readme[end:])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", default=os.environ.get(
        "TFCOMP_COVERAGE_JSON", "build/coverage.json"))
    parser.add_argument("--readme", default="README.md")
    parser.add_argument("--print", action="store_true",
                        help="print the table instead of rewriting README")
    args = parser.parse_args(argv)
    with open(args.json) as f:
        data = json.load(f)
    table = render(data)
    if args.print:
        print(table)
        return 0
    with open(args.readme) as f:
        text = rewrite(f.read(), table)
    tmp = f"{args.readme}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, args.readme)
    print(f"{args.readme}: coverage matrix from {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
