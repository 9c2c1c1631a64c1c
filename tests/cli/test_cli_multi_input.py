"""The ``tfcomp`` verbs on a model with two inputs (an image and a metadata
vector, as in keras.io's multi-input functional-API example).

Its ``.npz`` holds ``x_train_image``, ``x_train_meta``, ``y_train``,
``x_test_image``, ``x_test_meta``, ``y_test``; every written model must
load and take both inputs.
"""

import json

import keras
import numpy as np
import pytest

from tfcomp.cli import main

IMAGE, META, CLASSES = (8, 8, 1), (5,), 4


def _save_model(path):
    """An image branch (two convs, pooling) and a metadata branch (Dense)
    joined by a Concatenate, then two Dense layers."""
    keras.utils.set_random_seed(0)
    L = keras.layers
    image = keras.Input(IMAGE, name="image")
    meta = keras.Input(META, name="meta")
    h = L.Conv2D(8, 3, activation="relu", name="c1")(image)
    h = L.Conv2D(8, 3, activation="relu", name="c2")(h)
    h = L.GlobalAveragePooling2D()(h)
    m = L.Dense(8, activation="relu", name="m1")(meta)
    h = L.Dense(8, activation="relu", name="d1")(L.Concatenate()([h, m]))
    keras.Model([image, meta], L.Dense(CLASSES, name="fc")(h)).save(path)


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """``two.keras``, ``two.npz`` (32 train / 16 test) and ``arrays``
    (what ``two.npz`` holds)."""
    d = tmp_path_factory.mktemp("multi")
    _save_model(d / "two.keras")
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 1, (48,) + IMAGE).astype("float32")
    meta = rng.uniform(0, 1, (48,) + META).astype("float32")
    y = rng.integers(0, CLASSES, 48)
    arrays = {"x_train_image": img[:32], "x_train_meta": meta[:32],
              "y_train": y[:32], "x_test_image": img[32:],
              "x_test_meta": meta[32:], "y_test": y[32:]}
    np.savez(d / "two.npz", **arrays)
    return d, arrays


def run(args, capsys):
    """``main(args)`` -> (exit code, stdout, stderr)."""
    code = main(["--quiet", *[str(a) for a in args]])
    out, err = capsys.readouterr()
    return code, out, err


def _takes_two_inputs(path, arrays):
    """The saved model loads and predicts on [image, meta]."""
    import tfcomp.layers  # noqa: F401 - registers tfcomp's layers

    model = keras.saving.load_model(path)
    assert [t.shape[1:] for t in model.inputs] == [IMAGE, META]
    out = model.predict([arrays["x_test_image"], arrays["x_test_meta"]],
                        verbose=0)
    assert out.shape == (16, CLASSES) and np.all(np.isfinite(out))


def _bad_npz(d, name, **change):
    arrays = dict(np.load(d / "two.npz"))
    arrays.update(change)
    for k in [k for k, v in change.items() if v is None]:
        del arrays[k]
    np.savez(d / name, **arrays)
    return d / name


# ------------------------------------------------------------ the files


def test_load_npz_reads_one_array_per_input_in_order(ws):
    from tfcomp.data import load_npz

    d, arrays = ws
    (x, y), (xt, yt) = load_npz(str(d / "two.npz"), ["meta", "image"])
    assert [a.shape[1:] for a in x] == [META, IMAGE]
    assert all(a.dtype == np.float32 for a in x + xt)
    np.testing.assert_array_equal(xt[1], arrays["x_test_image"])
    assert len(y) == 32 and len(yt) == 16


def test_missing_input_array_is_named(ws, capsys):
    d, _ = ws
    path = _bad_npz(d, "nometa.npz", x_train_meta=None)
    code, _, err = run(["prune", d / "two.keras", d / "o.keras", "--method",
                        "lasso", "--ratio", "0.5", "--data", path], capsys)
    assert code == 2
    assert err.count("\n") == 1 and "error:" in err
    assert "['x_train_meta']" in err and "x_train_image" in err
    assert not (d / "o.keras").exists()


def test_fashion_mnist_with_two_inputs_is_refused(ws, capsys):
    d, _ = ws
    code, _, err = run(["quantize", d / "two.keras", d / "o.keras",
                        "--data", "fashion-mnist"], capsys)
    assert code == 2
    assert "fashion-mnist" in err and "2 inputs (image, meta)" in err
    assert "x_train_<input name>" in err


@pytest.mark.parametrize("change, words", [
    ({"x_test_meta": np.zeros((16, 6), "float32")},
     ["x_test_meta", "(6,)", "(5,)", "'meta'"]),
    ({"x_train_meta": np.zeros((30,) + META, "float32")},
     ["x_train_image 32", "x_train_meta 30", "y_train 32"]),
    ({"x_train_image": np.full((32,) + IMAGE, np.nan, "float32")},
     ["x_train_image", "non-finite"]),
])
def test_bad_input_arrays_are_named(ws, capsys, change, words):
    d, _ = ws
    path = _bad_npz(d, "bad.npz", **change)
    code, _, err = run(["quantize", d / "two.keras", d / "o.keras",
                        "--data", path], capsys)
    assert code == 2, err
    assert all(w in err for w in words), err


# ------------------------------------------------------------ the verbs


@pytest.mark.parametrize("method", ["l1", "lasso", "taylor"])
def test_prune(ws, capsys, method):
    d, arrays = ws
    out = d / f"pruned_{method}.keras"
    data = [] if method == "l1" else ["--data", d / "two.npz"]
    code, stdout, err = run(["prune", d / "two.keras", out, "--method",
                             method, "--ratio", "0.5", *data], capsys)
    assert code == 0, err
    assert "MACs" in stdout
    assert ("test accuracy" in stdout) == bool(data)
    _takes_two_inputs(out, arrays)


def test_quantize_calibrates(ws, capsys):
    d, arrays = ws
    code, out, err = run(["quantize", d / "two.keras", d / "q8.keras",
                          "--bits", "8", "--data", d / "two.npz",
                          "--calibration-size", "16"], capsys)
    assert code == 0, err
    assert "quantized" in out
    _takes_two_inputs(d / "q8.keras", arrays)


def test_export_tflite_int8(ws, capsys):
    from tfcomp.hardware.runtime import make_interpreter, run_interpreter

    d, arrays = ws
    code, out, err = run(["export", "tflite", d / "two.keras",
                          d / "two.tflite", "--quantization", "int8",
                          "--data", d / "two.npz", "--verify", "8"],
                         capsys)
    assert code == 0, err
    rep = json.loads(out[:out.rindex("}") + 1])
    assert rep["quantization"] == "int8" and rep["num_verified"] == 8
    interp, _ = make_interpreter(str(d / "two.tflite"))
    assert len(interp.get_input_details()) == 2
    y = run_interpreter(interp, [arrays["x_test_image"],
                                 arrays["x_test_meta"]],
                        input_names=["image", "meta"])
    assert np.asarray(y).shape == (16, CLASSES)


def test_export_bitserial_then_simulate(ws, capsys):
    d, arrays = ws
    if not (d / "q8.keras").exists():
        assert main(["-q", "quantize", str(d / "two.keras"),
                     str(d / "q8.keras"), "--data", str(d / "two.npz")]) == 0
        capsys.readouterr()
    code, out, err = run(["export", "bitserial", d / "q8.keras",
                          d / "two.json", "--data", d / "two.npz",
                          "--verify", "8"], capsys)
    assert code == 0, err
    rep = json.loads(out[:out.rindex("}") + 1])
    assert rep["num_verified"] == 8
    assert [i["name"] for i in json.loads(
        (d / "two.json").read_text())["inputs"]] == ["image", "meta"]
    # the descriptor's input names alone, then with the model
    code, out, err = run(["simulate", d / "two.json", "--data",
                          d / "two.npz", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["images"] == 16
    code, out, err = run(["simulate", d / "two.json", "--data",
                          d / "two.npz", "--num", "8", "--model",
                          d / "q8.keras", "--json"], capsys)
    assert code == 0, err
    res = json.loads(out.strip().splitlines()[-1])
    assert res["images"] == 8 and res["top1_agreement"] >= 0.75
    path = _bad_npz(d, "nometa_test.npz", x_test_meta=None)
    code, _, err = run(["simulate", d / "two.json", "--data", path],
                       capsys)
    assert code == 2 and "['x_test_meta']" in err


def test_compress(ws, capsys):
    d, arrays = ws
    code, out, err = run(["compress", d / "two.keras", d / "joint.keras",
                          "--data", d / "two.npz", "--budget", "0.9",
                          "--sensitivity-samples", "16",
                          "--calibration-size", "16"], capsys)
    assert code == 0, err
    assert "compressed" in out
    _takes_two_inputs(d / "joint.keras", arrays)


def test_search_haq_and_report(ws, capsys):
    d, arrays = ws
    code, _, err = run(["search", "haq", d / "two.keras", d / "haq.keras",
                        "--data", d / "two.npz", "--trials", "1",
                        "--budget", "0.6", "--cost", "bops",
                        "--finetune-epochs", "0", "--calibration-size", "16",
                        "--val-size", "8", "--directory", d / "runs"], capsys)
    assert code == 0, err
    _takes_two_inputs(d / "haq.keras", arrays)
    code, _, err = run(["report", "--model", f"dense={d / 'two.keras'}",
                        "--model", f"haq={d / 'haq.keras'}", "--data",
                        d / "two.npz", "--num", "12", "--output",
                        d / "rep"], capsys)
    assert code == 0, err
    assert "| haq |" in (d / "rep" / "report.md").read_text()
