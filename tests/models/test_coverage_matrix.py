"""tools/coverage_matrix.py: cells from outcomes, README rewrite; and the
EXPECTED_UNSUPPORTED table is well formed."""

import importlib.util
import os

import pytest
from models import CASES, ROWS
from test_pipeline import EXPECTED_UNSUPPORTED
from test_pipeline_structured import EXPECTED_UNSUPPORTED as STRUCTURED

TOOL = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir,
                    "tools", "coverage_matrix.py")
STEPS = {"profile", "prune", "fpgm", "magnitude", "qat", "int8", "bitserial",
         "slimmable", "metapruning", "gal_channels", "gal_blocks", "joint",
         "lasso", "dcp", "distill"}


def _tool():
    spec = importlib.util.spec_from_file_location("coverage_matrix", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cells_follow_the_outcomes():
    data = {"rows": ["Conv2D", "Embedding", "Dense"], "models": {
        "a": {"rows": ["Conv2D", "Dense"]},
        "b": {"rows": ["Embedding", "Dense"]}}, "outcomes": {
        "a": {"prune": {"outcome": "ok", "note": "", "rows": []},
              "int8": {"outcome": "fail", "note": "TypeError: x",
                       "rows": ["Conv2D", "Dense"]}},
        "b": {"prune": {"outcome": "clear error", "note": "ValueError: e",
                        "rows": ["Embedding"]}}}}
    table = _tool().render(data).splitlines()
    assert table[2] == ("| Conv2D | – | ok | – | – | FAIL [1] | – | – | – | – "
                        "| – | – | – | – | – |")
    assert table[3].startswith("| Embedding | – | no [2] |")
    assert table[4].startswith("| Dense | – | ok |")  # b's error: Embedding
    assert table[6].startswith("[1] unexpected failure: TypeError: x (a int8)")
    assert table[7].startswith("[2] ValueError: e (b prune)")


def test_rewrite_between_markers():
    tool = _tool()
    text = f"a\n{tool.BEGIN}\nold\n{tool.END}\nb\n"
    assert tool.rewrite(text, "new") == f"a\n{tool.BEGIN}\nnew\n{tool.END}\nb\n"
    with pytest.raises(ValueError, match="coverage-matrix"):
        tool.rewrite("no markers", "new")


def test_expected_unsupported_is_well_formed():
    for (model, step), entry in {**EXPECTED_UNSUPPORTED,
                                 **STRUCTURED}.items():
        assert model in CASES and step in STEPS
        assert issubclass(entry[0], Exception) and entry[1] and entry[2]
        assert set(entry[3] if len(entry) > 3 else ()) <= set(ROWS)
