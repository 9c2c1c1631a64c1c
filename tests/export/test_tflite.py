import os

import keras
import numpy as np
import pytest

from tfcomp.export import export_tflite, measure_latencies, measure_latency
from tfcomp.export.runtime import make_interpreter, run_interpreter


def _tiny_model():
    keras.utils.set_random_seed(1)
    inp = keras.Input((12, 12, 1))
    x = keras.layers.Conv2D(8, 3, padding="same")(inp)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(5)(x)
    return keras.Model(inp, out)


@pytest.fixture(scope="module")
def data():
    return np.random.default_rng(0).uniform(size=(64, 12, 12, 1)).astype(
        "float32")


@pytest.mark.parametrize("mode,tol,min_agree", [
    (None, 1e-4, 1.0), ("float16", 1e-2, 0.95), ("dynamic", 0.1, 0.9),
    ("int8", 0.2, 0.9), ("int16x8", 0.02, 0.95)])
def test_export_modes_verify(tmp_path, data, mode, tol, min_agree):
    model = _tiny_model()
    path = str(tmp_path / f"m_{mode}.tflite")
    rep = export_tflite(model, path, quantization=mode,
                        calibration_data=data)
    assert os.path.getsize(path) == rep.size_bytes
    assert rep.num_verified == 64
    assert rep.max_abs_error < tol
    assert rep.top1_agreement >= min_agree
    assert rep.runtime in ("ai_edge_litert", "tflite_runtime", "tf.lite")
    interp, _ = make_interpreter(path)
    if mode in ("int8", "int16x8"):
        want = np.int8 if mode == "int8" else np.int16
        assert interp.get_input_details()[0]["dtype"] == want
        assert rep.float_ops == []
    out = run_interpreter(interp, data[:3])
    assert out.shape == (3, 5)


def test_int8_is_about_4x_smaller_than_float(tmp_path, data):
    inp = keras.Input((64,))
    x = keras.layers.Dense(512, activation="relu")(inp)
    model = keras.Model(inp, keras.layers.Dense(10)(x))
    x_cal = np.random.default_rng(0).normal(size=(64, 64)).astype("float32")
    f32 = export_tflite(model, str(tmp_path / "f.tflite"),
                        calibration_data=x_cal)
    i8 = export_tflite(model, str(tmp_path / "q.tflite"), "int8",
                       calibration_data=x_cal)
    assert 3.0 < f32.size_bytes / i8.size_bytes < 4.5


def test_int8_without_data_is_a_clear_error(tmp_path):
    for mode in ("int8", "int16x8"):
        with pytest.raises(ValueError, match=f"'{mode}' needs "
                           "calibration_data"):
            export_tflite(_tiny_model(), str(tmp_path / "x.tflite"), mode)
    assert not os.listdir(tmp_path)  # nothing half-written


def test_int16x8_is_closer_to_float_than_int8(tmp_path, data):
    """TFLite's 16x8 mode (int16 activations, int8 weights): float32 I/O
    too, and a smaller error than int8's on the same model and data (the
    int8 weights, shared by both, bound it: about half here)."""
    model = _tiny_model()
    errs = {}
    for mode in ("int8", "int16x8"):
        errs[mode] = export_tflite(
            model, str(tmp_path / f"{mode}.tflite"), mode,
            calibration_data=data, io_type="float32").max_abs_error
        interp, _ = make_interpreter(str(tmp_path / f"{mode}.tflite"))
        assert interp.get_input_details()[0]["dtype"] == np.float32
    assert errs["int16x8"] < errs["int8"]


def test_bad_mode(tmp_path):
    with pytest.raises(ValueError, match="quantization"):
        export_tflite(_tiny_model(), str(tmp_path / "x.tflite"), "int4")


def test_measure_latency(tmp_path, data):
    path = str(tmp_path / "m.tflite")
    export_tflite(_tiny_model(), path, verify=False)
    r = measure_latency(path, runs=5, warmup=1)
    assert 0 < r.min_ms <= r.median_ms <= r.p90_ms
    assert r.runs == 5 and r.runtime
    both = measure_latencies({"a": path, "b": path}, runs=6, rounds=2)
    assert set(both) == {"a", "b"} and both["a"].runs == 6
    with pytest.raises(ValueError, match="runs"):
        measure_latency(path, runs=0)


def test_deprecated_representative_data_and_atomic_write(tmp_path, data):
    from tfcomp.export.tflite import atomic_write_bytes, convert_to_tflite

    model = _tiny_model()
    new = convert_to_tflite(model, "int8", calibration_data=data)
    with pytest.warns(DeprecationWarning, match="calibration_data"):
        old = convert_to_tflite(model, "int8", representative_data=data)
    assert old == new
    with pytest.warns(DeprecationWarning, match="calibration_data"):
        rep = export_tflite(model, str(tmp_path / "m.tflite"), "int8",
                            representative_data=data)
    assert rep.size_bytes == len(new)
    with pytest.warns(DeprecationWarning, match="_io.atomic_write_bytes"):
        atomic_write_bytes(str(tmp_path / "b.bin"), b"abc")
    assert (tmp_path / "b.bin").read_bytes() == b"abc"


def test_calibration_data_as_dataset_of_batches(data):
    """Calibration data in any form tfcomp._io.as_arrays takes."""
    import tensorflow as tf

    from tfcomp.export import convert_to_tflite

    model = _tiny_model()
    ds = tf.data.Dataset.from_tensor_slices(
        (data, np.zeros(len(data), "int64"))).batch(16)
    assert convert_to_tflite(model, "int8", calibration_data=ds) == (
        convert_to_tflite(model, "int8", calibration_data=data))


# ------------------------------------------------- no silently wrong files


def _classifier():
    """A linear classifier whose top-1 class varies over [0, 1) inputs."""
    inp = keras.Input((12, 12, 1))
    out = keras.layers.Dense(5)(keras.layers.Flatten()(inp))
    model = keras.Model(inp, out)
    w = np.random.default_rng(2).normal(size=(144, 5)).astype("float32")
    model.layers[-1].set_weights([w, -0.5 * w.sum(0)])
    return model


def test_calibration_on_another_scale_raises_and_writes_nothing(tmp_path,
                                                                data):
    from tfcomp.export import VerificationError

    model = _classifier()
    assert len(set(model.predict(data, verbose=0).argmax(1))) >= 4
    path = tmp_path / "m.tflite"
    path.write_bytes(b"old file")
    with pytest.raises(VerificationError, match="min_agreement") as info:
        export_tflite(model, str(path), "int8", calibration_data=data * 255,
                      verify_data=data)
    msg = str(info.value)
    assert "m.tflite" in msg and "not written" in msg
    assert "calibration_data spans" in msg  # the likely cause
    assert info.value.report.top1_agreement < 0.9
    assert isinstance(info.value, ValueError)
    assert path.read_bytes() == b"old file"  # the old file is untouched
    assert os.listdir(tmp_path) == ["m.tflite"]  # and no temp file left
    # the same data on one scale verifies
    rep = export_tflite(model, str(path), "int8", calibration_data=data,
                        verify_data=data)
    assert rep.top1_agreement >= 0.9 and path.read_bytes() != b"old file"


def test_min_agreement_is_settable_and_checked(tmp_path, data):
    model = _classifier()
    path = str(tmp_path / "low.tflite")
    rep = export_tflite(model, path, "int8", calibration_data=data * 255,
                        verify_data=data, min_agreement=0.0)
    assert rep.top1_agreement < 0.9 and os.path.getsize(path) > 0
    for bad, err in ((1.5, ValueError), (-0.1, ValueError),
                     (float("nan"), ValueError), ("high", TypeError)):
        with pytest.raises(err, match="min_agreement"):
            export_tflite(model, str(tmp_path / "x.tflite"),
                          min_agreement=bad)
    assert sorted(os.listdir(tmp_path)) == ["low.tflite"]


@pytest.mark.parametrize("bad,err,needle", [
    (np.zeros((0, 12, 12, 1), "float32"), ValueError, "empty"),
    ([], ValueError, "empty"),
    (iter([]), ValueError, "empty"),
    (np.zeros((8, 10, 10, 1), "float32"), ValueError, "(8, 10, 10, 1)"),
    (np.zeros((8, 144), "float32"), ValueError, "(8, 144)"),
    (np.full((8, 12, 12, 1), "a"), TypeError, "<U1"),
    (np.full((8, 12, 12, 1), np.nan, "float32"), ValueError, "NaN"),
    (np.full((8, 12, 12, 1), np.inf, "float32"), ValueError, "infinite"),
], ids=["empty_array", "empty_list", "empty_iterable", "wrong_shape",
        "wrong_rank", "strings", "nan", "inf"])
def test_bad_calibration_data_is_a_clear_error(tmp_path, bad, err, needle):
    with pytest.raises(err, match="calibration_data") as info:
        export_tflite(_tiny_model(), str(tmp_path / "m.tflite"), "int8",
                      calibration_data=bad)
    assert needle in str(info.value)
    assert os.listdir(tmp_path) == []


def test_bad_verify_data_is_a_clear_error(tmp_path, data):
    with pytest.raises(ValueError, match="verify_data") as info:
        export_tflite(_tiny_model(), str(tmp_path / "m.tflite"),
                      verify_data=data[:, :10, :10])
    assert "(64, 10, 10, 1)" in str(info.value)
    assert os.listdir(tmp_path) == []


def test_single_pass_calibration_iterable_calibrates_and_verifies(tmp_path,
                                                                  data):
    batches = (data[i:i + 16] for i in range(0, len(data), 16))
    rep = export_tflite(_classifier(), str(tmp_path / "m.tflite"), "int8",
                        calibration_data=batches)
    assert rep.num_verified == len(data) and rep.top1_agreement >= 0.9


def test_int8_request_never_writes_a_float_file(tmp_path, data,
                                                monkeypatch):
    """If the converter ever returned a float file for "int8" (as an empty
    representative dataset once did), the export raises, verified or not."""
    import tfcomp.export.tflite as tfl
    from tfcomp.export import VerificationError

    real = tfl.convert_to_tflite
    monkeypatch.setattr(
        tfl, "convert_to_tflite",
        lambda model, quantization=None, **kw: real(model, None))
    for verify in (True, False):
        with pytest.raises(VerificationError, match="integer"):
            export_tflite(_tiny_model(), str(tmp_path / "m.tflite"), "int8",
                          calibration_data=data, verify=verify)
    assert os.listdir(tmp_path) == []


def test_non_finite_outputs_fail_verification(tmp_path, data):
    from tfcomp.export import VerificationError

    model = _tiny_model()
    kernel, bias = model.layers[-1].get_weights()
    model.layers[-1].set_weights([kernel, np.full_like(bias, np.inf)])
    with pytest.raises(VerificationError, match="not all finite"):
        export_tflite(model, str(tmp_path / "m.tflite"), verify_data=data)
    assert os.listdir(tmp_path) == []


def test_subclassed_model_is_a_clear_error(tmp_path):
    """A subclassed model has no symbolic inputs: a ValueError that says how
    to wrap it, not an AttributeError; nothing is written."""

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(3)

        def call(self, x):
            return self.d(x)

    m = Sub()
    m(np.zeros((1, 4), "float32"))
    with pytest.raises(ValueError, match="functional or Sequential"):
        export_tflite(m, str(tmp_path / "m.tflite"))
    assert not list(tmp_path.iterdir())


def test_string_inputs_are_a_clear_error(tmp_path):
    """keras.io's end-to-end text model (TextVectorization inside): TFLite
    has no string builtins, so the export says which input and what to do
    instead of an MLIR error, and writes nothing."""
    vec = keras.layers.TextVectorization(max_tokens=20,
                                         output_sequence_length=4)
    vec.adapt(["a b c", "d e"])
    inp = keras.Input((1,), dtype="string")
    model = keras.Model(inp, keras.layers.Dense(2)(
        keras.layers.Embedding(20, 3)(vec(inp))))
    path = tmp_path / "text.tflite"
    with pytest.raises(ValueError, match="string tensor"):
        export_tflite(model, path)
    assert not path.exists()


def test_dict_outputs_are_verified_by_name(tmp_path):
    """A model with a dict of outputs (a class head and a box head): the
    file's outputs are matched to Keras' (sorted keys), so verification
    compares each head with itself."""
    inputs = keras.Input((6, 6, 3))
    h = keras.layers.GlobalAveragePooling2D()(
        keras.layers.Conv2D(4, 3, activation="relu")(inputs))
    model = keras.Model(inputs, {"cls": keras.layers.Dense(5, name="cls")(h),
                                 "box": keras.layers.Dense(4, name="box")(h)})
    x = np.random.default_rng(0).random((16, 6, 6, 3), dtype=np.float32)
    report = export_tflite(model, tmp_path / "two.tflite",
                           calibration_data=x)
    assert report.max_abs_error < 1e-4


def test_int16x8_refusals_are_clear(tmp_path, data):
    """TFLite's 16x8 mode has no int16 NEG (a LayerNormalization's
    decomposition) and cannot calibrate integer token ids: both named,
    nothing written (the converter's RuntimeError before)."""
    inp = keras.Input((12, 12, 1))
    h = keras.layers.LayerNormalization()(keras.layers.Conv2D(4, 3)(inp))
    model = keras.Model(inp, keras.layers.Dense(3)(
        keras.layers.GlobalAveragePooling2D()(h)))
    with pytest.raises(ValueError, match="16x8 mode.*no int16 kernel for "
                       "op 'NEG'.*quantization='int8'"):
        export_tflite(model, str(tmp_path / "ln.tflite"), "int16x8",
                      calibration_data=data)
    tokens = keras.Input((6,), dtype="int32")
    text = keras.Model(tokens, keras.layers.Dense(2)(
        keras.layers.GlobalAveragePooling1D()(
            keras.layers.Embedding(20, 4)(tokens))))
    ids = np.random.default_rng(0).integers(0, 20, (16, 6)).astype("int32")
    with pytest.raises(ValueError, match="16x8 mode.*cannot calibrate.*"
                       "token ids"):
        export_tflite(text, str(tmp_path / "t.tflite"), "int16x8",
                      calibration_data=ids)
    assert not os.listdir(tmp_path)
