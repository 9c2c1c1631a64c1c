"""The joint result deploys: ``tfcomp.joint.compress`` -> ``res.model`` ->
``quantize_model(bits=res.bits)`` -> calibrate -> a short QAT fine-tune ->
``export_bitserial`` (the simulator equals the integer reference bit for
bit and agrees with Keras; the descriptor's latency is the cost the
allocator priced) and ``export_tflite`` int8 (verified against Keras), on
user-style models (functional with BatchNorm and a residual add;
Sequential with Flatten -> Dense), and the CLI's ``compress --epochs``
output through ``tfcomp export bitserial``."""

import json

import keras
import numpy as np
import pytest

from tfcomp.export import export_tflite
from tfcomp.export.bitserial import export_bitserial
from tfcomp.export.runtime import make_interpreter, run_interpreter
from tfcomp.hardware import BISMO, BitFusion, CostTable
from tfcomp.joint import compress
from tfcomp.quantization import calibrate, quantization_report, quantize_model

SHAPE = (12, 12, 1)
L = keras.layers


def _data(n=320, seed=0):
    """Four classes: the brightest quadrant (brightened, so it is learnt
    in a few epochs)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n,) + SHAPE).astype("float32")
    y = x.reshape(n, 2, 6, 2, 6).mean((2, 4)).reshape(n, 4).argmax(1)
    for i, c in enumerate(y):
        r, s = divmod(int(c), 2)
        x[i, r * 6:(r + 1) * 6, s * 6:(s + 1) * 6, 0] += 0.3
    return x, y.astype("int64")


def _residual_cnn():
    inp = keras.Input(SHAPE)
    h = L.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(inp)
    h = L.BatchNormalization(momentum=0.9, name="stem_bn")(h)
    h = L.ReLU(name="stem_relu")(h)
    r = L.Conv2D(12, 3, padding="same", activation="relu",
                 name="b_conv1")(h)
    r = L.Conv2D(8, 3, padding="same", name="b_conv2")(r)
    h = L.ReLU(name="b_out")(L.Add(name="b_add")([h, r]))
    h = L.Conv2D(16, 3, strides=2, padding="same", activation="relu",
                 name="down")(h)
    h = L.GlobalAveragePooling2D(name="gap")(h)
    return keras.Model(inp, L.Dense(4, name="logits")(h), name="user_cnn")


def _sequential():
    return keras.Sequential([
        keras.Input(SHAPE),
        L.Conv2D(8, 3, activation="relu", name="c1"),
        L.MaxPooling2D(name="pool"),
        L.Conv2D(12, 3, activation="relu", name="c2"),
        L.Flatten(name="flat"),
        L.Dense(16, activation="relu", name="fc1"),
        L.Dense(4, name="logits")], name="user_seq")


def _compile(model, lr):
    model.compile(optimizer=keras.optimizers.Adam(lr),
                  loss=keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True), metrics=["accuracy"])
    return model


def _trained(build, x, y):
    keras.utils.set_random_seed(0)
    model = _compile(build(), 3e-3)
    model.fit(x[:256], y[:256], batch_size=32, epochs=8, verbose=0)
    return model


def _deploy(model, x, y, hardware, budget, tmp_path, tflite=True):
    """The whole chain; returns what each step produced."""
    res = compress(model, (x[:64], y[:64]), hardware=hardware,
                   budget=budget, num_samples=64)
    assert res.cost <= budget * (1 + 1e-9)
    small = res.model
    dense = CostTable(model, "latency", hardware).full_cost
    priced = CostTable(small, "latency", hardware).total(res.bits)
    assert priced / dense == pytest.approx(res.cost, rel=1e-9)
    qat = quantize_model(small, bits=res.bits)
    assert quantization_report(qat).quantized == res.bits
    calibrate(qat, x[:128])
    _compile(qat, 1e-4).fit(x[:256], y[:256], batch_size=32, epochs=1,
                            steps_per_epoch=4, verbose=0)
    bs = export_bitserial(qat, str(tmp_path / "joint.json"),
                          hardware=hardware, verify_x=x[256:])
    tfl = export_tflite(qat, str(tmp_path / "joint.tflite"), "int8",
                        calibration_data=x[:128],
                        verify_data=x[256:]) if tflite else None
    return res, qat, priced, bs, tfl


def _check_deployed(qat, x, y, priced, bs, tfl, tmp_path):
    # bit-serial: simulator == integer reference, == Keras' top-1, and the
    # descriptor runs in the time the allocator's cost model priced
    assert bs.simulator_exact is True
    assert bs.num_verified == len(x) - 256
    assert bs.top1_agreement >= 0.99
    assert bs.latency_s == pytest.approx(priced, rel=1e-6)
    y_keras = qat.predict(x[256:], verbose=0).argmax(-1)
    assert len(np.unique(y_keras)) >= 2  # not a constant classifier
    if tfl is None:
        return
    # int8 TFLite: verified against the QAT model, integer input
    assert tfl.num_verified == len(x) - 256
    assert tfl.top1_agreement >= 0.99
    interp, _ = make_interpreter(str(tmp_path / "joint.tflite"))
    assert interp.get_input_details()[0]["dtype"] == np.int8
    y_tfl = np.asarray(run_interpreter(interp, x[256:])).argmax(-1)
    assert np.mean(y_tfl == y[256:]) > 0.4  # chance is 0.25


@pytest.fixture(scope="module")
def functional():
    x, y = _data()
    return x, y, _trained(_residual_cnn, x, y)


@pytest.mark.slow
def test_functional_residual_cnn_deploys_on_bismo(tmp_path, functional):
    x, y, model = functional
    res, qat, priced, bs, tfl = _deploy(model, x, y, BISMO(), 0.45,
                                        tmp_path)
    assert min(res.keep.values()) < 12 or min(
        w for w, _ in res.bits.values()) < 8  # it did compress
    _check_deployed(qat, x, y, priced, bs, tfl, tmp_path)


@pytest.mark.slow
def test_sequential_deploys_on_bitfusion(tmp_path):
    """Flatten -> Dense pruned across the flatten; Bit Fusion descriptor
    (its int8 TFLite export is the functional test's)."""
    x, y = _data(seed=1)
    model = _trained(_sequential, x, y)
    res, qat, priced, bs, tfl = _deploy(model, x, y, BitFusion("edge"),
                                        0.95, tmp_path, tflite=False)
    assert bs.target == "bitfusion"
    assert qat.get_layer("fc1").kernel.shape[0] == (
        res.model.get_layer("flat").output.shape[-1])
    _check_deployed(qat, x, y, priced, bs, tfl, tmp_path)


# ------------------------------------------------------------------ CLI


@pytest.mark.slow
def test_cli_compress_with_epochs_then_export(tmp_path, capsys, functional):
    from tfcomp.cli import main as cli_main

    x, y, model = functional
    np.savez(tmp_path / "data.npz", x_train=x[:256], y_train=y[:256],
             x_test=x[256:], y_test=y[256:])
    model.save(tmp_path / "model.keras")
    code = cli_main(["--quiet", "compress", str(tmp_path / "model.keras"),
                     str(tmp_path / "out.keras"), "--hardware", "bismo",
                     "--budget", "0.5", "--data", str(tmp_path / "data.npz"),
                     "--candidate-bits", "2,4,8",
                     "--sensitivity-samples", "64", "--calibration-size",
                     "64", "--epochs", "2", "--steps-per-epoch", "2",
                     "--batch-size", "32", "--report",
                     str(tmp_path / "joint.json")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "compressed" in out
    rep = json.loads((tmp_path / "joint.json").read_text())
    assert rep["cost"] <= 0.5 + 1e-9
    qat = keras.saving.load_model(tmp_path / "out.keras")
    bits = {k: tuple(v) for k, v in rep["bits"].items()}
    assert quantization_report(qat).quantized == bits
    # fine-tuned: --epochs 2 x --steps-per-epoch 2 optimizer steps saved
    assert qat.optimizer is not None and int(qat.optimizer.iterations) == 4
    code = cli_main(["--quiet", "export", "bitserial",
                     str(tmp_path / "out.keras"), str(tmp_path / "d.json"),
                     "--data", str(tmp_path / "data.npz"), "--verify", "64"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert (tmp_path / "d.json").exists()


@pytest.mark.slow
def test_cli_failed_fine_tune_leaves_nothing(tmp_path, capsys, functional,
                                             monkeypatch):
    from tfcomp.cli import _common, main

    x, y, model = functional
    np.savez(tmp_path / "data.npz", x_train=x[:64], y_train=y[:64],
             x_test=x[256:], y_test=y[256:])
    model.save(tmp_path / "model.keras")

    def diverge(*args, **kwargs):
        raise FloatingPointError("QAT fine-tune diverged (loss [nan])")

    monkeypatch.setattr(_common, "fit", diverge)
    before = sorted(p.name for p in tmp_path.iterdir())
    code = main(["--quiet", "compress", str(tmp_path / "model.keras"),
                 str(tmp_path / "out.keras"), "--budget", "0.6", "--data",
                 str(tmp_path / "data.npz"), "--candidate-bits", "2,8",
                 "--sensitivity-samples", "16", "--calibration-size", "16",
                 "--epochs", "1", "--report", str(tmp_path / "j.json"),
                 "--plan", str(tmp_path / "p.json"), "--policy",
                 str(tmp_path / "b.json")])
    _, err = capsys.readouterr()
    assert code == 1 and "diverged" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.slow
def test_saved_qat_model_with_a_linked_input_computes_the_same(tmp_path):
    """A saved compressed model (``tfcomp compress``'s OUTPUT) computes, once
    loaded, what it did: an input quantizer linked to the 8-bit observer of
    a shared tensor (``link_shared_inputs``; the link lives in memory) is
    saved with its source's range."""
    from tfcomp.quantization.quantize import input_observers

    keras.utils.set_random_seed(0)
    inp = keras.Input((10, 10, 1))
    h = L.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inp)
    r = L.Conv2D(8, 3, padding="same", activation="relu", name="a")(h)
    r = L.Conv2D(8, 3, padding="same", name="b")(r)
    h = L.GlobalAveragePooling2D()(L.ReLU()(L.Add()([h, r])))
    model = keras.Model(inp, L.Dense(4, name="fc")(h))
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (128, 10, 10, 1)).astype("float32")
    qat = quantize_model(model, bits=8)
    assert [(la.name, o.name) for la, o in input_observers(qat)] == [
        ("a", "stem_aq")]
    calibrate(qat, x[:64])
    _compile(qat, 1e-3).fit(x, rng.integers(0, 4, 128), batch_size=16,
                            epochs=2, verbose=0)  # the two ranges drift apart
    linked = qat.get_layer("a").input_quantizer
    own = keras.ops.convert_to_numpy(linked.range_max)
    assert own != keras.ops.convert_to_numpy(linked._source.range_max)
    ref = keras.ops.convert_to_numpy(qat(x, training=False))
    qat.save(tmp_path / "q.keras")
    loaded = keras.saving.load_model(tmp_path / "q.keras")
    got = keras.ops.convert_to_numpy(loaded(x, training=False))
    np.testing.assert_array_equal(got, ref)
    # the in-memory model's own (unused) range is left as it was
    assert keras.ops.convert_to_numpy(linked.range_max) == own
