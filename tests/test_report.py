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
    with open(md) as f:
        text = f.read()
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


def test_load_results_checks_rows(tmp_path):
    from tfcomp.report import load_results

    res = load_results([{"accuracy": 0.5, "macs": 10}])
    assert res["rows"] == [{"accuracy": 0.5, "macs": 10, "stage": "row 0"}]
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_results(str(bad))
    with pytest.raises(ValueError, match=r"rows\[1\] must be an object"):
        load_results({"rows": [{"stage": "a"}, 3]})
    with pytest.raises(ValueError, match=r"rows\[0\]\['macs'\] must be a "):
        load_results({"rows": [{"stage": "a", "macs": "many"}]})


def test_merge_results_keeps_base_plots():
    from tfcomp.report import merge_results

    out = merge_results(
        {"rows": [{"stage": "a"}], "bits": {"c": [4, 4]}},
        {"rows": [{"stage": "b"}], "bits": {"c": [8, 8]},
         "channels": {"c": [2, 4]}})
    assert [r["stage"] for r in out["rows"]] == ["a", "b"]
    assert out["bits"] == {"c": [4, 4]}
    assert out["channels"] == {"c": [2, 4]}


@pytest.mark.slow
def test_collect_results_channels_bits_and_heatmap(tmp_path):
    import numpy as np

    import tfcomp
    from tfcomp.hardware import BISMO, LatencyTable
    from tfcomp.report import collect_results, hardware_table

    model = tfcomp.zoo.resnet(depth=8, width=4, input_shape=(12, 12, 1))
    plan = tfcomp.pruning.make_plan(model, ratio=0.5)
    small = tfcomp.pruning.prune_channels(model, plan)
    qat = tfcomp.quantization.quantize_model(model, bits=4)
    table = LatencyTable.build(model, BISMO(), bits=[2, 8], progress=False)
    x = np.random.default_rng(0).uniform(0, 1, (8, 12, 12, 1)).astype("f4")
    y = np.zeros(8, "int64")
    res = collect_results({"dense": model, "pruned": small, "q": qat},
                          data=(x, y), table=table)
    rows = {r["stage"]: r for r in res["rows"]}
    assert rows["pruned"]["macs"] == tfcomp.profile(small).macs
    assert rows["pruned"]["macs"] < rows["dense"]["macs"]
    assert all(0 <= r["accuracy"] <= 1 for r in res["rows"])
    assert rows["dense"]["accel_ms"] == pytest.approx(
        table.model_cost(model).latency_s * 1e3)
    assert res["channels"]["stem_conv"] == [2, 4]
    assert res["channels"]["logits"] == [10, 10]
    assert res["bits"]["s1b1_conv1"] == [4, 4]
    assert res["bits"]["stem_conv"] == [8, 8]
    heat = res["hardware_table"]
    assert heat["bits"] == [2, 8]
    assert len(heat["latency_ms"]) == len(heat["layers"]) > 0
    assert all(lo <= hi for lo, hi in heat["latency_ms"])
    assert any(lo < hi for lo, hi in heat["latency_ms"])
    assert hardware_table(BISMO(), model)["bits"] == list(range(2, 9))
    md = write_report(res, str(tmp_path / "r"))
    with open(md) as f:
        assert "hardware_table.png" in f.read()
    with pytest.raises(ValueError, match="match no model"):
        collect_results({"dense": model}, tflite={"other": "x.tflite"})


def test_collect_results_scores_labels_as_every_verb_does(tmp_path):
    """One-hot labels, a binary classifier's (N,) labels of its one unit and
    a regression's float targets (argmax was compared with them: one-hot
    rows broadcast, one unit was always class 0)."""
    import keras
    import numpy as np

    from tfcomp.report import collect_results

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype("float32")
    inp = keras.Input((6,))
    h = keras.layers.Dense(8, activation="relu")(inp)
    soft = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(h))
    binary = keras.Model(inp, keras.layers.Dense(1, activation="sigmoid")(h))
    reg = keras.Model(inp, keras.layers.Dense(1)(h))
    cls = soft.predict(x, verbose=0).argmax(-1)
    row = collect_results({"s": soft}, data=(x, np.eye(3)[cls]))["rows"][0]
    assert row["accuracy"] == 1.0
    side = (binary.predict(x, verbose=0)[:, 0] > 0.5).astype("int64")
    row = collect_results({"b": binary}, data=(x, side))["rows"][0]
    assert row["accuracy"] == 1.0
    target = reg.predict(x, verbose=0)
    res = collect_results({"r": reg}, data=(x, target + 1e-3 * rng.normal(
        size=target.shape).astype("float32")))
    assert "accuracy" not in res["rows"][0]
    assert res["rows"][0]["r2"] > 0.99
    with open(write_report(res, str(tmp_path / "r"))) as f:
        assert "R^2" in f.read()
