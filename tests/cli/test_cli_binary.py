"""The ``tfcomp`` verbs on binary models, as users bring them: keras.io's
one-unit sigmoid classifier with integer 0 / 1 labels, a one-logit
classifier, and a sigmoid segmentation head with float 0 / 1 masks. The
CLI reads their labels as the library does (classes per unit, scored by
the side of the output's threshold), where it reported a mean squared
error and refused them where classes are needed."""

import keras
import numpy as np
import pytest

from tfcomp.cli import main

L = keras.layers


def ok(capsys, *args):
    code = main(["--quiet", *[str(a) for a in args]])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def _net(head):
    inp = keras.Input((8, 8, 1))
    h = L.Conv2D(8, 3, padding="same", activation="relu")(inp)
    return keras.Model(inp, head(L.Conv2D(8, 3, padding="same",
                                          activation="relu")(h)))


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    d = tmp_path_factory.mktemp("binary")
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    x = rng.normal(size=(96, 8, 8, 1)).astype("float32")
    y = (x.mean((1, 2, 3)) > 0).astype("int64")
    np.savez(d / "bin.npz", x_train=x[:64], y_train=y[:64], x_test=x[64:],
             y_test=y[64:])
    for name, act, loss in (
            ("sigmoid", "sigmoid", "binary_crossentropy"),
            ("logit", None, keras.losses.BinaryCrossentropy(
                from_logits=True))):
        model = _net(lambda h, a=act: L.Dense(1, activation=a)(
            L.GlobalAveragePooling2D()(h)))
        model.compile("adam", loss)
        model.fit(x, y, epochs=4, verbose=0)
        model.save(d / f"{name}.keras")
    masks = (x > 0).astype("float32")
    np.savez(d / "seg.npz", x_train=x[:64], y_train=masks[:64],
             x_test=x[64:], y_test=masks[64:])
    _net(lambda h: L.Conv2D(1, 1, activation="sigmoid")(h)).save(
        d / "seg.keras")
    return d


def _accuracy(model, x, y, threshold):
    out = model.predict(x, verbose=0).reshape(y.shape)
    return float(np.mean((out > threshold) == (y > 0)))


@pytest.mark.parametrize("name, threshold", [("sigmoid", 0.5),
                                             ("logit", 0.0)])
def test_one_unit_classifier_is_scored_by_accuracy(ws, capsys, name,
                                                   threshold):
    out = ok(capsys, "prune", ws / f"{name}.keras", ws / f"{name}_p.keras",
             "--ratio", "0.25", "--data", ws / "bin.npz")
    before, _ = map(float, out.split("test accuracy: ")[1].split(" -> "))
    data = np.load(ws / "bin.npz")
    model = keras.saving.load_model(ws / f"{name}.keras")
    assert before == pytest.approx(_accuracy(
        model, data["x_test"], data["y_test"], threshold), abs=1e-6)


def test_sigmoid_masks_are_labels_per_pixel(ws, capsys):
    out = ok(capsys, "prune", ws / "seg.keras", ws / "seg_p.keras",
             "--ratio", "0.5", "--data", ws / "seg.npz",
             "--finetune-epochs", "1")
    assert "test accuracy: " in out and "mse" not in out


def test_compress_loss_objective_and_simulate_on_a_binary_model(ws, capsys):
    """The compiled ``"binary_crossentropy"`` (a function) with (N,) labels
    of a (N, 1) output: the loss sensitivities raised 'must have the same
    rank'; ``simulate`` took the argmax of one unit (always class 0)."""
    out = ok(capsys, "compress", ws / "sigmoid.keras", ws / "c.keras",
             "--resource", "bops", "--budget", "0.3", "--data",
             ws / "bin.npz", "--objective", "both")
    assert "test accuracy: float" in out
    ok(capsys, "export", "bitserial", ws / "c.keras", ws / "c.json",
       "--data", ws / "bin.npz")
    data = np.load(ws / "bin.npz")
    want = _accuracy(keras.saving.load_model(ws / "c.keras"),
                     data["x_test"], data["y_test"], 0.5)
    for extra in ([], ["--model", ws / "c.keras"]):
        out = ok(capsys, "simulate", ws / "c.json", "--data", ws / "bin.npz",
                 *extra)
        acc = float(out.split("top-1 ")[1].split()[0])
        assert acc == pytest.approx(want, abs=1 / 32 + 1e-6)
    assert "agreement with" in out
