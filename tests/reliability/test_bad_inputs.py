"""Table of bad inputs to plans, targets, FPGM, latency tables, TFLite
timing, bit-serial descriptors, reports and the atomic writer: each raises
the expected error type, the message names the argument or the file, and
nothing is left on disk.

Each case is ``(id, call, error type, substring)``: ``call(tmp, ctx)`` runs
in an empty folder ``tmp`` (after the case's own files are made there);
``ctx`` holds a small model, its graph, an integer IR and a descriptor
written elsewhere.
"""

import math
import os

import keras
import numpy as np
import pytest

from tfcomp import _io
from tfcomp.export import measure_latency
from tfcomp.export.bitserial import (
    DescriptorError,
    integer_reference,
    load_descriptor,
    random_ir,
    simulate_bitserial,
    write_descriptor,
)
from tfcomp.graph import DependencyGraph
from tfcomp.hardware import LatencyTable
from tfcomp.hardware import device_profiler as dp
from tfcomp.hardware.latency_table import LatencyTableError
from tfcomp.hardware.runtime import make_interpreter
from tfcomp.pruning import FPGMPruning, Plan, make_plan
from tfcomp.pruning.targets import resolve, resolve_keep_counts
from tfcomp.report import collect_results, load_results, write_report

NAN, INF = math.nan, math.inf


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    x = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(8, 3, name="conv1")(x)
    h = keras.layers.Conv2D(8, 3, name="conv2")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(x, keras.layers.Dense(4, name="fc")(h))
    ir = random_ir(seed=3, head="flatten")
    desc = str(tmp_path_factory.mktemp("desc") / "m.json")
    write_descriptor(ir, desc)
    return {"model": model, "graph": DependencyGraph(model), "ir": ir,
            "desc": desc}


MADE = []  # the current case's own input files (they may stay)


def _file(tmp, name, data):
    MADE.append(name)
    path = os.path.join(tmp, name)
    with open(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
    return path


def _blocker(tmp):
    """A file where a folder would have to be."""
    return _file(tmp, "blocker", "I am a file")


def _x(ir, bad):
    x = np.zeros((2,) + ir.input_shape)
    x.flat[3] = bad
    return x


PLAN_OK = ('{"format": "tfcomp.pruning.plan", "version": 1, "order": ["c"],'
           ' "sizes": {"c": 4}, "removed": {"c": [1]}}')
TFLITE_HEAD = b"\x1c\x00\x00\x00TFL3"

CASES = [
    # -- make_plan: every numeric argument at the boundary
    ("plan-target-nan", lambda t, c: make_plan(c["model"], target_macs=NAN),
     ValueError, "target_macs=nan"),
    ("plan-target-inf", lambda t, c: make_plan(c["model"], target_macs=INF),
     ValueError, "target_macs=inf"),
    ("plan-target-str",
     lambda t, c: make_plan(c["model"], target_macs="half"),
     TypeError, "target_macs='half'"),
    ("plan-target-zero", lambda t, c: make_plan(c["model"], target_macs=0),
     ValueError, "target_macs=0"),
    ("plan-target-neg", lambda t, c: make_plan(c["model"], target_macs=-2),
     ValueError, "target_macs=-2"),
    ("plan-ratio-nan", lambda t, c: make_plan(c["model"], ratio=NAN),
     ValueError, "ratio=nan"),
    ("plan-ratio-one", lambda t, c: make_plan(c["model"], ratio=1.0),
     ValueError, "ratio=1.0"),
    ("plan-ratio-str", lambda t, c: make_plan(c["model"], ratio="0.3"),
     TypeError, "ratio='0.3'"),
    ("plan-ratio-dict-nan",
     lambda t, c: make_plan(c["model"], ratio={"conv1": NAN}),
     ValueError, "ratio['conv1']"),
    ("plan-round-to-zero", lambda t, c: make_plan(c["model"], round_to=0),
     ValueError, "round_to=0"),
    ("plan-round-to-float", lambda t, c: make_plan(c["model"], round_to=2.5),
     ValueError, "round_to=2.5"),
    ("plan-seed-neg", lambda t, c: make_plan(c["model"], seed=-1),
     ValueError, "seed=-1"),
    # -- the target resolver
    ("resolve-target-nan", lambda t, c: resolve(c["graph"], target_macs=NAN),
     ValueError, "target_macs=nan"),
    ("resolve-target-inf",
     lambda t, c: resolve_keep_counts(c["graph"], target_macs=INF),
     ValueError, "target_macs=inf"),
    ("resolve-ratio-inf", lambda t, c: resolve_keep_counts(c["graph"], INF),
     ValueError, "ratio=inf"),
    ("resolve-ratio-none", lambda t, c: resolve(c["graph"], [0.5]),
     TypeError, "ratio=[0.5]"),
    ("resolve-round-to-str",
     lambda t, c: resolve(c["graph"], 0.5, round_to="8"),
     ValueError, "round_to='8'"),
    ("resolve-steps-zero",
     lambda t, c: resolve(c["graph"], target_macs=0.5, bisection_steps=0),
     ValueError, "bisection_steps=0"),
    # -- FPGM
    ("fpgm-target-nan", lambda t, c: FPGMPruning(target_macs=NAN),
     ValueError, "target_macs=nan"),
    ("fpgm-target-inf", lambda t, c: FPGMPruning(target_macs=INF),
     ValueError, "target_macs=inf"),
    ("fpgm-target-str", lambda t, c: FPGMPruning(target_macs="half"),
     TypeError, "target_macs='half'"),
    ("fpgm-ratio-nan", lambda t, c: FPGMPruning(ratio=NAN),
     ValueError, "ratio=nan"),
    ("fpgm-round-to", lambda t, c: FPGMPruning(round_to=0),
     ValueError, "round_to=0"),
    ("fpgm-seed-none", lambda t, c: FPGMPruning(seed=None),
     ValueError, "seed=None"),
    ("fpgm-every", lambda t, c: FPGMPruning(update_every_epochs=0),
     ValueError, "update_every_epochs=0"),
    # -- Plan.load: the file is named, and what is wrong
    ("plan-load-missing",
     lambda t, c: Plan.load(os.path.join(t, "missing.json")),
     FileNotFoundError, "missing.json"),
    ("plan-load-empty", lambda t, c: Plan.load(_file(t, "empty.json", "")),
     ValueError, "empty.json' is empty"),
    ("plan-load-truncated",
     lambda t, c: Plan.load(_file(t, "cut.json", PLAN_OK[:40])),
     ValueError, "cut.json' is not valid JSON"),
    ("plan-load-binary",
     lambda t, c: Plan.load(_file(t, "bin.json", b"\xff\xfe\x00plan")),
     ValueError, "bin.json' is not UTF-8"),
    ("plan-load-list", lambda t, c: Plan.load(_file(t, "list.json", "[1]")),
     ValueError, "must be a JSON object"),
    ("plan-load-format",
     lambda t, c: Plan.load(_file(t, "fmt.json", '{"format": "x"}')),
     ValueError, "fmt.json"),
    ("plan-load-no-sizes",
     lambda t, c: Plan.load(_file(t, "ns.json", PLAN_OK.replace(
         '"sizes"', '"sizez"'))),
     ValueError, "no 'sizes' field"),
    ("plan-load-removed-shape",
     lambda t, c: Plan.load(_file(t, "rs.json", PLAN_OK.replace(
         '"removed": {"c": [1]}', '"removed": [1]'))),
     ValueError, "'removed' must be a dict"),
    ("plan-load-removed-str",
     lambda t, c: Plan.load(_file(t, "rstr.json", PLAN_OK.replace(
         '[1]', '["one"]'))),
     ValueError, "removed['c']"),
    ("plan-load-folder", lambda t, c: Plan.load(t),
     ValueError, "is a folder"),
    ("plan-save-under-file",
     lambda t, c: Plan.from_json(PLAN_OK).save(
         os.path.join(_blocker(t), "sub", "plan.json")),
     ValueError, "blocker' is a file"),
    # -- latency tables
    ("table-load-empty",
     lambda t, c: LatencyTable.load(_file(t, "t.json", "")),
     LatencyTableError, "t.json' is empty"),
    ("table-load-binary",
     lambda t, c: LatencyTable.load(_file(t, "t.json", b"\x80\x81")),
     LatencyTableError, "not UTF-8"),
    ("table-load-truncated",
     lambda t, c: LatencyTable.load(_file(t, "t.json", '{"format": "t')),
     LatencyTableError, "corrupt JSON"),
    ("table-load-missing",
     lambda t, c: LatencyTable.load(os.path.join(t, "none.json")),
     FileNotFoundError, "none.json"),
    ("table-save-under-file",
     lambda t, c: LatencyTable().save(os.path.join(_blocker(t), "t.json")),
     ValueError, "blocker' is a file"),
    # -- atomic writes
    ("bytes-under-file",
     lambda t, c: _io.atomic_write_bytes(
         os.path.join(_blocker(t), "a", "m.tflite"), b"x"),
     _io.ParentNotADirectoryError, "blocker"),
    ("keras-under-file",
     lambda t, c: _io.atomic_save_keras(
         c["model"], os.path.join(_blocker(t), "m.keras")),
     NotADirectoryError, "blocker"),
    ("keras-bad-suffix",
     lambda t, c: _io.atomic_save_keras(c["model"], os.path.join(t, "m.h5")),
     ValueError, "m.h5"),
    # -- TFLite timing: never a crash, the file named
    ("tflite-missing",
     lambda t, c: measure_latency(os.path.join(t, "no.tflite")),
     FileNotFoundError, "no.tflite"),
    ("tflite-empty",
     lambda t, c: measure_latency(_file(t, "e.tflite", b"")),
     ValueError, "e.tflite"),
    ("tflite-text",
     lambda t, c: measure_latency(_file(t, "txt.tflite", "not a model")),
     ValueError, "no TFLite identifier"),
    ("tflite-truncated",
     lambda t, c: measure_latency(_file(t, "cut.tflite",
                                        TFLITE_HEAD + b"\x10" * 40)),
     ValueError, "cut.tflite"),
    ("tflite-folder", lambda t, c: measure_latency(t),
     ValueError, "is a folder"),
    ("tflite-runs-zero",
     lambda t, c: measure_latency(os.path.join(t, "m.tflite"), runs=0),
     ValueError, "runs=0"),
    ("tflite-threads-nan",
     lambda t, c: measure_latency(os.path.join(t, "m.tflite"), threads=NAN),
     ValueError, "threads=nan"),
    ("tflite-bytes", lambda t, c: make_interpreter(b"\x00" * 64),
     ValueError, "TFLite model (bytes)"),
    ("tflite-type", lambda t, c: make_interpreter(3.5),
     TypeError, "float"),
    ("archive-missing",
     lambda t, c: dp.profile_archive(os.path.join(t, "l.tar")),
     FileNotFoundError, "l.tar"),
    ("archive-corrupt",
     lambda t, c: dp.profile_archive(_file(t, "l.tar", b"\x00junk" * 200)),
     ValueError, "l.tar"),
    # -- bit-serial descriptors and the simulator
    ("sim-nan", lambda t, c: simulate_bitserial(c["desc"], _x(c["ir"], NAN)),
     ValueError, "x holds 1 NaN"),
    ("sim-inf", lambda t, c: simulate_bitserial(c["desc"], _x(c["ir"], INF)),
     ValueError, "x holds 1 NaN or infinite"),
    ("reference-nan",
     lambda t, c: integer_reference(c["ir"], _x(c["ir"], NAN)),
     ValueError, "x holds"),
    ("sim-shape",
     lambda t, c: simulate_bitserial(c["desc"], np.zeros((2, 3))),
     ValueError, "x.shape=(2, 3)"),
    ("desc-missing",
     lambda t, c: load_descriptor(os.path.join(t, "none.json")),
     DescriptorError, "none.json"),
    ("desc-empty", lambda t, c: load_descriptor(_file(t, "d.json", " ")),
     DescriptorError, "d.json' is empty"),
    ("desc-binary",
     lambda t, c: load_descriptor(_file(t, "d.json", b"\x93NUMPY")),
     DescriptorError, "not UTF-8"),
    ("desc-under-file",
     lambda t, c: write_descriptor(c["ir"], os.path.join(_blocker(t),
                                                          "d.json")),
     ValueError, "blocker' is a file"),
    ("desc-batch", lambda t, c: write_descriptor(
        c["ir"], os.path.join(t, "d.json"), batch=0),
     ValueError, "batch=0"),
    # -- reports
    ("report-tflite-missing",
     lambda t, c: collect_results({"m": c["model"]}, tflite={
         "m": os.path.join(t, "gone.tflite")}),
     FileNotFoundError, "gone.tflite"),
    ("report-tflite-corrupt",
     lambda t, c: collect_results({"m": c["model"]}, tflite={
         "m": _file(t, "bad.tflite", TFLITE_HEAD + b"\xff" * 30)}),
     ValueError, "bad.tflite"),
    ("report-runs", lambda t, c: collect_results({"m": c["model"]}, runs=0),
     ValueError, "runs=0"),
    ("report-results-corrupt",
     lambda t, c: load_results(_file(t, "r.json", '{"rows": [')),
     ValueError, "r.json"),
    ("report-out-under-file",
     lambda t, c: write_report({"rows": []}, os.path.join(_blocker(t),
                                                          "rep")),
     ValueError, "blocker' is a file"),
    # -- the helpers themselves
    ("check-number-str", lambda t, c: _io.check_number("1", "lr"),
     TypeError, "lr='1'"),
    ("check-number-nan", lambda t, c: _io.check_number(NAN, "lr", 0),
     ValueError, "lr=nan"),
    ("read-json-binary",
     lambda t, c: _io.read_json(_file(t, "x.json", b"\xc3\x28"), "policy"),
     ValueError, "policy"),
]


def _listing(root):
    out = set()
    for d, dirs, files in os.walk(root):
        out.update(os.path.relpath(os.path.join(d, n), root)
                   for n in dirs + files)
    return out


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, ctx, tmp_path):
    _, call, error, text = case
    MADE.clear()
    with pytest.raises(error) as info:
        call(str(tmp_path), ctx)
    assert text in str(info.value), str(info.value)
    assert _listing(str(tmp_path)) == set(MADE), "left on disk"


def test_table_is_large_enough():
    assert len(CASES) >= 30
    assert len({c[0] for c in CASES}) == len(CASES)
