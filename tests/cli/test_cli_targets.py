"""The ``tfcomp`` verbs on models that are not one class per row, as
users bring them: a U-Net with per-pixel class labels ``(N, H, W)`` and a
Conv1D regression net with float targets (fine-tuned with mean squared
error and scored by it); the searches score a regression model by R^2;
the loss-ranked methods (Taylor, DCP, MetaPruning) take the targets'
loss; the verbs that rank models by accuracy refuse targets by name."""

import keras
import numpy as np
import pytest

from tfcomp.cli import main

L = keras.layers


def run(args, capsys):
    code = main(["--quiet", *[str(a) for a in args]])
    out, err = capsys.readouterr()
    return code, out, err


def ok(capsys, *args):
    """The stdout of a verb that must succeed."""
    code, out, err = run(args, capsys)
    assert code == 0, err
    return out


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    d = tmp_path_factory.mktemp("targets")
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 1))
    c1 = L.Conv2D(4, 3, padding="same", activation="relu")(image)
    c2 = L.Conv2D(8, 3, padding="same", activation="relu")(
        L.MaxPooling2D()(c1))
    u = L.Concatenate()([L.Conv2DTranspose(4, 2, strides=2)(c2), c1])
    keras.Model(image, L.Conv2D(3, 1)(u)).save(d / "unet.keras")
    x = rng.uniform(0, 1, (48, 8, 8, 1)).astype("float32")
    y = np.clip((x[..., 0] * 3).astype("int64"), 0, 2)
    np.savez(d / "seg.npz", x_train=x[:32], y_train=y[:32], x_test=x[32:],
             y_test=y[32:])
    np.savez(d / "seg_onehot.npz", x_train=x[:32],
             y_train=np.eye(3)[y[:32]], x_test=x[32:], y_test=y[32:])
    series = keras.Input((16, 2))
    h = L.Conv1D(8, 3, activation="relu")(series)
    h = L.GlobalAveragePooling1D()(L.Conv1D(8, 3, activation="relu")(h))
    keras.Model(series, L.Dense(1)(h)).save(d / "reg.keras")
    xr = rng.normal(size=(48, 16, 2)).astype("float32")
    yr = xr.mean((1, 2))[:, None]
    np.savez(d / "reg.npz", x_train=xr[:32], y_train=yr[:32],
             x_test=xr[32:], y_test=yr[32:])
    np.savez(d / "bad.npz", x_train=xr[:32], y_train=np.zeros((32, 3)),
             x_test=xr[32:], y_test=yr[32:])
    return d


def test_unet_per_pixel_labels_prune_quantize_export(ws, capsys):
    out = ok(capsys, "prune", ws / "unet.keras", ws / "p.keras", "--method",
             "fpgm", "--target-macs", "0.5", "--data", ws / "seg.npz",
             "--finetune-epochs", "1")
    before, after = out.split("test accuracy: ")[1].split(" -> ")
    assert 0 <= float(before) <= 1 and 0 <= float(after) <= 1
    out = ok(capsys, "quantize", ws / "p.keras", ws / "q.keras", "--bits",
             "8", "--data", ws / "seg_onehot.npz", "--epochs", "1")
    assert "test accuracy: float" in out
    out = ok(capsys, "export", "tflite", ws / "q.keras", ws / "q.tflite",
             "--quantization", "int8", "--data", ws / "seg.npz")
    assert '"float_ops": []' in out
    # bit-serial: the simulator scores per pixel too (before: 0.0, the
    # flattened argmax against (N, H, W) labels)
    ok(capsys, "export", "bitserial", ws / "q.keras", ws / "q.json",
       "--hardware", "bismo", "--data", ws / "seg.npz")
    out = ok(capsys, "simulate", ws / "q.json", "--data", ws / "seg.npz",
             "--num", "16", "--model", ws / "q.keras")
    model = keras.saving.load_model(ws / "q.keras")
    data = np.load(ws / "seg.npz")
    keras_acc = float(np.mean(model.predict(data["x_test"][:16], verbose=0)
                              .argmax(-1) == data["y_test"][:16]))
    sim_acc = float(out.split("top-1 ")[1].split(" ")[0])
    assert keras_acc > 0.2 and abs(sim_acc - keras_acc) <= 0.02, out
    assert "agreement with" in out and float(out.split(
        "agreement with ")[1].split(": ")[1].split()[0]) >= 0.98


def test_regression_targets_fine_tune_and_score_by_mse(ws, capsys):
    out = ok(capsys, "prune", ws / "reg.keras", ws / "r.keras", "--method",
             "l1", "--target-macs", "0.5", "--data", ws / "reg.npz",
             "--finetune-epochs", "1")
    before, after = map(float, out.split("test mse: ")[1].split(" -> "))
    model = keras.saving.load_model(ws / "r.keras")
    data = np.load(ws / "reg.npz")
    mse = float(np.mean((model.predict(data["x_test"], verbose=0)
                         - data["y_test"]) ** 2))
    assert after == pytest.approx(mse, abs=1e-4) and before > 0
    out = ok(capsys, "quantize", ws / "r.keras", ws / "rq.keras", "--bits",
             "8", "--data", ws / "reg.npz", "--epochs", "1")
    assert "test mse: float" in out


@pytest.mark.parametrize("args, message", [
    (["prune", "{d}/reg.keras", "{d}/s.keras", "--method", "gal",
      "--data", "{d}/reg.npz"],
     "--method gal scores models by top-1 accuracy"),
    (["prune", "{d}/reg.keras", "{d}/s.keras", "--ratio", "0.5",
      "--data", "{d}/bad.npz"],
     "y_train must hold targets of shape \\(N, 1\\) for model .*Received: "
     "float64 array of shape \\(32, 3\\)"),
])
def test_targets_where_classes_are_needed_are_named(ws, capsys, args,
                                                    message):
    import re

    code, _, err = run([a.format(d=ws) for a in args], capsys)
    assert code != 0 and re.search(message, err), err
    assert not (ws / "s.keras").exists()


@pytest.mark.parametrize("method", ["taylor", "dcp", "metapruning"])
def test_loss_ranked_methods_prune_a_regression_model(ws, capsys, method):
    out = ok(capsys, "prune", ws / "reg.keras", ws / f"{method}.keras",
             "--method", method, "--target-macs", "0.6", "--data",
             ws / "reg.npz", *(["--meta-generations", "1",
                                "--meta-population", "4", "--meta-lower",
                                "0.3"] if method == "metapruning" else []))
    assert "test mse: " in out and (ws / f"{method}.keras").exists()


def test_amc_search_runs_on_a_regression_model(ws, capsys):
    out = ok(capsys, "search", "amc", ws / "reg.keras", ws / "s.keras",
             "--data", ws / "reg.npz", "--trials", "1", "--round-to", "1",
             "--directory", ws / "search")
    assert "test mse of the best model" in out and (ws / "s.keras").exists()
