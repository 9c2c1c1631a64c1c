import json
import os

import pytest

from tfcomp.report import pareto_front, write_report


def test_pareto_front():
    assert pareto_front([1, 2, 3, 4], [0.5, 0.9, 0.8, 0.95]) == [0, 1, 3]


def test_write_report_with_all_plots(tmp_path):
    results = {
        "rows": [
            {"stage": "dense", "accuracy": 0.9, "macs": 4e7,
             "latency_ms": 1.0, "accel_ms": 0.05},
            {"stage": "pruned", "accuracy": 0.89, "macs": 2e7,
             "latency_ms": 0.7, "accel_ms": 0.03},
        ],
        "channels": {"conv1": [8, 16], "conv2": [12, 16]},
        "bits": {"conv1": [8, 8], "conv2": [4, 5]},
        "hardware_table": {"name": "BitFusion", "layers": ["conv1", "conv2"],
                           "bits": [2, 4, 8],
                           "latency_ms": [[1, 2, 4], [2, 3, 5]]},
    }
    path = tmp_path / "r.json"
    path.write_text(json.dumps(results))
    md = write_report(str(path), str(tmp_path / "out"))
    text = open(md).read()
    for png in ("acc_vs_macs.png", "acc_vs_latency.png", "acc_vs_accel.png",
                "channels.png", "bits.png", "hardware_table.png"):
        assert png in text
        assert os.path.getsize(tmp_path / "out" / png) > 1000
    assert "| pruned |" in text


def test_write_report_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_report(str(tmp_path / "none.json"), str(tmp_path))
    with pytest.raises(ValueError, match="rows"):
        write_report({"nope": 1}, str(tmp_path))
