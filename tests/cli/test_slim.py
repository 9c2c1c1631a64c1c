"""``tfcomp slim`` / ``tfcomp autoslim`` end to end on a tiny model."""

import json

import keras
import numpy as np
import pytest

import tfcomp
from tfcomp.cli import main

SHAPE = (8, 8, 1)


def _files(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (96,) + SHAPE).astype("float32")
    y = rng.integers(0, 4, 96).astype("int64")
    np.savez(tmp_path / "data.npz", x_train=x[:64], y_train=y[:64],
             x_test=x[64:], y_test=y[64:])
    inp = keras.Input(SHAPE)
    h = keras.layers.Conv2D(8, 3, padding="same", name="a")(inp)
    h = keras.layers.BatchNormalization(name="a_bn")(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    h = keras.layers.Dense(8, activation="relu", name="fc")(h)
    model = keras.Model(inp, keras.layers.Dense(4, name="head")(h))
    model.save(tmp_path / "model.keras")
    return model


@pytest.mark.slow
def test_slim_then_autoslim(tmp_path, capsys):
    model = _files(tmp_path)
    out = tmp_path / "out"
    code = main(["--quiet", "slim", str(tmp_path / "model.keras"), str(out),
                 "--widths", "0.5,1.0", "--universal", "--data",
                 str(tmp_path / "data.npz"), "--epochs", "1",
                 "--batch-size", "32"])
    assert code == 0, capsys.readouterr().err
    rows = json.loads((out / "slim.json").read_text())["widths"]
    assert [r["width"] for r in rows] == [0.5, 1.0]
    half = keras.saving.load_model(out / "width_050.keras")
    assert half.get_layer("a").kernel.shape[-1] == 4
    assert rows[0]["macs"] == tfcomp.profile(half).macs
    assert rows[1]["macs"] == tfcomp.profile(model).macs
    code = main(["--quiet", "autoslim", str(out / "slimmable.keras"),
                 str(out), "--data", str(tmp_path / "data.npz"),
                 "--target-macs", "0.5", "--step", "2", "--batches", "2",
                 "--batch-size", "16"])
    assert code == 0, capsys.readouterr().err
    res = json.loads((out / "autoslim.json").read_text())
    assert res["architectures"][0]["macs"] <= 0.5 * res["dense_macs"]
    plan = tfcomp.pruning.Plan.load(str(out / "autoslim_050.json"))
    small = tfcomp.prune_channels(model, plan)
    assert tfcomp.profile(small).macs == res["architectures"][0]["macs"]
    code = main(["--quiet", "autoslim", str(out / "slimmable.keras"),
                 str(tmp_path / "per_mac"), "--data",
                 str(tmp_path / "data.npz"), "--target-macs", "0.5",
                 "--step", "2", "--batches", "2", "--batch-size", "16",
                 "--criterion", "loss_per_mac"])
    assert code == 0, capsys.readouterr().err
    res = json.loads((tmp_path / "per_mac" / "autoslim.json").read_text())
    assert res["criterion"] == "loss_per_mac"
    assert res["architectures"][0]["macs"] <= 0.5 * res["dense_macs"]


def test_bad_widths_exit_2(tmp_path, capsys):
    _files(tmp_path)
    code = main(["--quiet", "slim", str(tmp_path / "model.keras"),
                 str(tmp_path / "o"), "--widths", "0.5,1.5", "--data",
                 str(tmp_path / "data.npz")])
    assert code == 2
    assert "(0, 1]" in capsys.readouterr().err
