"""``tfcomp compress`` end to end on a tiny model (joint pruning +
quantization to one hardware budget)."""

import argparse
import json

import keras
import numpy as np
import pytest

import tfcomp
from tfcomp.cli import app, main
from tfcomp.cli import compress as compress_cli

SHAPE = (10, 10, 1)


@pytest.fixture(autouse=True)
def _verb_registered(monkeypatch):
    """Adds ``compress`` to the parser until ``tfcomp.cli.app`` does."""
    parser = app.build_parser()
    sub = next(a for a in parser._actions
               if isinstance(a, argparse._SubParsersAction))
    if "compress" in sub.choices:
        return
    original = app.build_parser

    def build():
        p = original()
        s = next(a for a in p._actions
                 if isinstance(a, argparse._SubParsersAction))
        compress_cli.add_parser(s, argparse.ArgumentDefaultsHelpFormatter)
        return p

    monkeypatch.setattr(app, "build_parser", build)


def _files(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (80,) + SHAPE).astype("float32")
    y = rng.integers(0, 4, 80).astype("int64")
    np.savez(tmp_path / "data.npz", x_train=x[:48], y_train=y[:48],
             x_test=x[48:], y_test=y[48:])
    L = keras.layers
    inp = keras.Input(SHAPE)
    h = L.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inp)
    h = L.Conv2D(8, 3, padding="same", activation="relu", name="c2")(h)
    h = L.GlobalAveragePooling2D()(h)
    model = keras.Model(inp, L.Dense(4, name="fc")(h))
    model.save(tmp_path / "model.keras")
    return model


def _run(args, capsys):
    code = main(["--quiet", *[str(a) for a in args]])
    out, err = capsys.readouterr()
    return code, out, err


def test_compress_writes_a_qat_model_under_the_budget(tmp_path, capsys):
    from tfcomp.hardware import BISMO, CostTable
    model = _files(tmp_path)
    code, out, err = _run(
        ["compress", tmp_path / "model.keras", tmp_path / "out.keras",
         "--hardware", "bismo", "--budget", "0.7", "--data",
         tmp_path / "data.npz", "--candidate-bits", "2,4,8",
         "--sensitivity-samples", "16", "--calibration-size", "16",
         "--report", tmp_path / "joint.json", "--plan",
         tmp_path / "plan.json", "--policy", tmp_path / "policy.json"],
        capsys)
    assert code == 0, err
    assert "kept channels" in out and "compressed" in out
    rep = json.loads((tmp_path / "joint.json").read_text())
    assert rep["cost"] <= 0.7 + 1e-9
    plan = tfcomp.pruning.Plan.load(str(tmp_path / "plan.json"))
    policy = {k: tuple(v) for k, v in json.loads(
        (tmp_path / "policy.json").read_text()).items()}
    small = tfcomp.prune_channels(model, plan)
    dense = CostTable(model, "latency", BISMO()).full_cost
    cost = CostTable(small, "latency", BISMO()).total(policy) / dense
    assert cost == pytest.approx(rep["cost"], rel=1e-9)
    qat = keras.saving.load_model(tmp_path / "out.keras")
    assert tfcomp.quantization.quantization_report(qat).quantized == policy
    assert qat.get_layer("c1").kernel.shape[-1] == rep["keep"]["c1"]


@pytest.mark.parametrize("extra,message", [
    ([], "needs --data"),
    (["--data", "{d}/data.npz", "--budget", "1.5"], "--budget must be in"),
    (["--data", "{d}/data.npz", "--budget", "0.001"], "minimum budget is"),
    (["--data", "{d}/data.npz", "--hardware", "tpu"], "--hardware must be"),
    (["--data", "{d}/data.npz", "--ratios", "0.5,1.0"], "--ratios"),
    (["--data", "{d}/data.npz", "--sensitivity-samples", "48",
      "--selection", "finetune"], "--selection finetune needs --data"),
])
def test_compress_clear_errors(tmp_path, capsys, extra, message):
    _files(tmp_path)
    extra = [a.format(d=tmp_path) for a in extra]
    code, _, err = _run(["compress", tmp_path / "model.keras",
                         tmp_path / "out.keras", "--sensitivity-samples",
                         "8", *extra], capsys)
    assert code == 2, err
    assert message in err
    assert not (tmp_path / "out.keras").exists()


def test_compress_pool_of_both_objectives_chosen_by_finetune(tmp_path,
                                                            capsys):
    _files(tmp_path)
    code, out, err = _run(
        ["compress", tmp_path / "model.keras", tmp_path / "out.keras",
         "--hardware", "bismo", "--budget", "0.7", "--data",
         tmp_path / "data.npz", "--candidate-bits", "2,4,8",
         "--sensitivity-samples", "16", "--calibration-size", "16",
         "--objective", "both", "--selection", "finetune",
         "--report", tmp_path / "joint.json"], capsys)
    assert code == 0, err
    rep = json.loads((tmp_path / "joint.json").read_text())
    assert rep["cost"] <= 0.7 + 1e-9
    meta = rep.get("meta", rep)
    assert meta["selection"] == "finetune"
    assert meta["objective"] in ("distortion", "loss")
    assert {c["objective_name"] for c in meta["candidates"]} == {
        "distortion", "loss"}
