"""The main job's module: its stages exist and its table renders.

The whole job (`make demo`) trains on Fashion-MNIST and takes minutes; it
is run by hand / by `make demo`, not here.
"""

import tfcomp.demo as demo


def test_stages_are_callables_in_order():
    names = [f.__name__ for f in demo.STAGES + demo.FINAL_STAGES]
    assert names == ["stage_train", "stage_export_baseline", "stage_prune",
                     "stage_quantize", "stage_bitserial", "stage_joint",
                     "stage_latency", "stage_report"]


def test_format_table_renders_every_row_and_missing_values():
    rows = [{"stage": "baseline float32", "accuracy": 0.9, "macs": 9.35e6,
             "params": 78426, "tflite_bytes": 316804, "latency_ms": 0.18},
            {"stage": "descriptor", "accuracy": 0.88, "macs": 4.4e6,
             "params": 37500, "accel_ms": 0.0653}]
    table = demo.format_table(rows).splitlines()
    assert len(table) == 4
    assert "| baseline float32 | 0.9000 | 9.35 | 78.4 | 316.8 | 0.180 | - |" \
        == table[2]
    assert table[3].endswith("| - | - | 0.0653 |")
