"""Outcome recording for the user-model pipeline tests.

Every pipeline test runs its step through :func:`run_step`, which decides
the outcome of ``(model, step)``:

* ``"ok"``: the step ran and its checks held;
* ``"clear error"``: the step raised the error listed for it in the test
  module's ``EXPECTED_UNSUPPORTED`` (type and message fragment): the test
  passes;
* ``"limited"``: the step ran and its checks held, but it leaves a
  documented part of the model alone (``models.LIMITED``: recurrent units
  that GAL channel masks skip, say): the matrix says ``partly`` for those rows;
* ``"fail"``: anything else: the test fails.

With ``TFCOMP_COVERAGE_JSON=path`` set, the outcomes of the session are
merged into that JSON file at the end (``tools/coverage_matrix.py`` turns it
into the README's coverage matrix; ``make coverage-matrix`` does both).

Example:
    def test_profile(step):
        step(case, "profile", lambda: check_profile(case),
             EXPECTED_UNSUPPORTED)
"""

import json
import os

import pytest
from models import CASES, LIMITED, ROWS

OUTCOMES: dict = {}  # (model, step) -> {"outcome": ..., "note": ...}
ENV = "TFCOMP_COVERAGE_JSON"


def _matches(expected, err) -> bool:
    return (expected is not None and isinstance(err, expected[0])
            and expected[1] in str(err))


def run_step(case, step: str, fn, expected: dict, upstream: tuple = ()):
    """Runs ``fn()`` as ``step`` of ``case`` and records the outcome.

    Args:
        case: a :class:`models.Case`.
        step: the step's name (``"profile"``, ``"prune"``, ...).
        fn: the step and its checks; raises on failure.
        expected: ``{(model, step): (ErrorType, fragment, why[, rows])}``;
            ``rows`` (optional) are the matrix rows the limitation is about
            (default: every row of the model).
        upstream: steps whose expected errors also excuse this one (the
            int8 export of a model whose QAT step is unsupported).

    Raises:
        Whatever ``fn`` raised, unless it is the expected clear error.

    Example:
        >>> run_step(CASES["unet"], "profile", check, EXPECTED_UNSUPPORTED)
    """
    key = (case.name, step)
    try:
        fn()
    except Exception as err:
        for name in (step, *upstream):
            entry = expected.get((case.name, name))
            if _matches(entry, err):
                rows = list(entry[3]) if len(entry) > 3 else list(case.rows)
                note = f"{type(err).__name__}: {entry[2]}"
                if name != step:
                    note = f"needs {name}: {note}"
                OUTCOMES[key] = {"outcome": "clear error", "note": note,
                                 "rows": rows}
                return
        note = f"{type(err).__name__}: {str(err)[:200]}"
        origin = getattr(err, "pipeline_step", step)
        if origin != step:
            note = f"needs {origin}: {note}"
        OUTCOMES[key] = {"outcome": "fail", "note": note,
                         "rows": list(case.rows)}
        raise
    note = ""
    if key in expected:
        note = "works although listed in EXPECTED_UNSUPPORTED"
    if key in LIMITED:
        why, rows = LIMITED[key]
        OUTCOMES[key] = {"outcome": "limited", "note": f"limited: {why}",
                         "rows": list(rows)}
        return
    OUTCOMES[key] = {"outcome": "ok", "note": note, "rows": []}


@pytest.fixture
def step():
    """:func:`run_step`, for the test modules (``conftest`` itself is not
    importable by name: ``tests/conftest.py`` has the same one)."""
    return run_step


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get(ENV)
    if not path or not OUTCOMES:
        return
    data = {"models": {}, "outcomes": {}}
    if os.path.exists(path):
        with open(path) as f:
            data = json.load(f)
    data["rows"] = list(ROWS)
    data["models"] = {c.name: {"rows": list(c.rows), "slow": c.slow}
                      for c in CASES.values()}
    for (model, step), record in sorted(OUTCOMES.items()):
        data["outcomes"].setdefault(model, {})[step] = record
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, path)
