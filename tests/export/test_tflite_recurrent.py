"""TFLite export of recurrent models (LSTM / GRU / SimpleRNN, Bidirectional):
unrolled in a copy for TFLite builtins, float and full-integer int8."""

import os

import keras
import numpy as np
import pytest

import tfcomp
from tfcomp.export import convert_to_tflite, export_tflite
from tfcomp.export._recurrent import recurrent_layers, unrolled_for_tflite
from tfcomp.export.runtime import make_interpreter, run_interpreter

L = keras.layers
T, VOCAB, CLASSES = 12, 48, 3


def _tokens(n=192, seed=0):
    """Token ids whose class is the range most of them come from."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, n)
    own = rng.integers(1, 16, (n, T)) + 16 * y[:, None]
    noise = rng.integers(1, VOCAB, (n, T))
    x = np.where(rng.uniform(size=(n, T)) < 0.7, own, noise)
    return x.astype("int32"), y


def _series(n=192, seed=1):
    """Sequences (T, 2) whose class is their trend (down, flat, up)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, n)
    t = np.linspace(0, 1, T)[None, :, None]
    x = (y[:, None, None] - 1) * t + rng.normal(0, 0.3, (n, T, 2))
    return x.astype("float32"), y


def _bilstm(length=T):
    """keras.io's text classifier, small: Embedding -> 2 Bidirectional
    LSTMs -> softmax."""
    inp = keras.Input((length,), dtype="int32")
    x = L.Embedding(VOCAB, 8)(inp)
    x = L.Bidirectional(L.LSTM(16, return_sequences=True))(x)
    x = L.Bidirectional(L.LSTM(16))(x)
    return keras.Model(inp, L.Dense(CLASSES, activation="softmax")(x))


def _conv_gru():
    inp = keras.Input((T, 2))
    x = L.Conv1D(8, 3, padding="same", activation="relu")(inp)
    x = L.GRU(16, return_sequences=True)(x)
    x = L.SimpleRNN(16)(x)
    return keras.Model(inp, L.Dense(CLASSES, activation="softmax")(x))


def _trained(model, x, y, epochs):
    keras.utils.set_random_seed(0)
    model.compile(keras.optimizers.Adam(1e-2),
                  "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="module")
def text():
    keras.utils.set_random_seed(0)
    x, y = _tokens()
    return _trained(_bilstm(), x, y, epochs=4), x


@pytest.fixture(scope="module")
def series():
    keras.utils.set_random_seed(0)
    x, y = _series()
    return _trained(_conv_gru(), x, y, epochs=6), x


def _unrolled_flags(model):
    return [layer.unroll for _, layer in recurrent_layers(model)]


def _check_int8(model, path, x):
    """The file's top-1 equals the Keras model's on every input with a
    clear top-2 margin (> 0.2)."""
    p = keras.ops.convert_to_numpy(model(x, training=False))
    top2 = np.sort(p, axis=1)[:, -2:]
    clear = x[top2[:, 1] - top2[:, 0] > 0.2]
    assert len(clear) >= 0.5 * len(x)
    interp, _ = make_interpreter(path)
    lite = run_interpreter(interp, clear)
    want = keras.ops.convert_to_numpy(model(clear, training=False))
    assert np.array_equal(lite.argmax(1), want.argmax(1))


def _export_both(model, x, tmp_path, name, **kw):
    f32 = export_tflite(model, str(tmp_path / f"{name}.tflite"),
                        calibration_data=x[:64], **kw)
    assert f32.max_abs_error < 1e-5 and f32.top1_agreement == 1.0
    i8 = export_tflite(model, str(tmp_path / f"{name}_int8.tflite"), "int8",
                       calibration_data=x[:64], **kw)
    assert i8.float_ops == []  # every op integer (FILL of the zero state too)
    _check_int8(model, i8.path, x)
    return f32, i8


@pytest.mark.slow
def test_bidirectional_lstm_tokens(text, tmp_path):
    model, x = text
    f32, i8 = _export_both(model, x, tmp_path, "bilstm")
    interp, _ = make_interpreter(i8.path)
    assert interp.get_input_details()[0]["dtype"] == np.int32  # token ids
    assert _unrolled_flags(model) == [False] * 4  # the model is untouched


def test_conv_gru_simple_rnn(series, tmp_path):
    model, x = series
    _export_both(model, x, tmp_path, "gru")
    assert _unrolled_flags(model) == [False, False]


@pytest.mark.slow
def test_variable_length_takes_the_data_length(text, tmp_path):
    trained, x = text
    model = _bilstm(length=None)  # keras.io's IMDB input: shape=(None,)
    model.set_weights(trained.get_weights())
    _export_both(model, x, tmp_path, "var")
    interp, _ = make_interpreter(str(tmp_path / "var_int8.tflite"))
    assert list(interp.get_input_details()[0]["shape_signature"]) == [-1, T]
    # an explicit length: the file and the verification inputs get it
    r = export_tflite(model, str(tmp_path / "var8.tflite"), sequence_length=8,
                      verify_data=x[:32])
    assert r.max_abs_error < 1e-5 and r.num_verified == 32
    shape = make_interpreter(r.path)[0].get_input_details()[0]["shape"]
    assert list(shape)[1:] == [8]
    # no data: random token ids (below the Embedding's input_dim), 8 steps
    r = export_tflite(model, str(tmp_path / "var_rand.tflite"),
                      sequence_length=8, num_verify=16)
    assert r.max_abs_error < 1e-5 and r.num_verified == 16
    assert model.inputs[0].shape == (None, None)
    assert _unrolled_flags(model) == [False] * 4


def test_variable_length_without_a_length_is_a_clear_error(tmp_path):
    model = _bilstm(length=None)
    path = tmp_path / "m.tflite"
    with pytest.raises(ValueError, match=r"'bidirectional.*static sequence "
                                         r"length.*sequence_length"):
        export_tflite(model, str(path))
    assert not path.exists()
    with pytest.raises(ValueError, match="static sequence length"):
        convert_to_tflite(model)
    with pytest.raises(ValueError, match="sequence_length=0"):
        convert_to_tflite(model, sequence_length=0)


@pytest.mark.slow
def test_qat_lstm_exports_int8(text, tmp_path):
    model, x = text
    q = tfcomp.quantization.quantize_model(model)
    tfcomp.quantization.calibrate(q, x[:64])
    r = export_tflite(q, str(tmp_path / "qat.tflite"), "int8",
                      calibration_data=x[:64])
    # the LSTMs, kept float by quantize_model, calibrated on the data
    assert r.float_ops == [] and r.top1_agreement >= 0.95
    _check_int8(q, r.path, x)
    # without data they stay float ops inside the integer file (warned)
    with pytest.warns(UserWarning, match="recurrent layer.*calibration_data"):
        r = export_tflite(q, str(tmp_path / "qat_nocal.tflite"), "int8",
                          verify_data=x[:64])
    assert "FULLY_CONNECTED" in r.float_ops and os.path.exists(r.path)
    assert _unrolled_flags(q) == [False] * 4


def test_mixed_policy_of_a_recurrent_model(text, tmp_path):
    pytest.importorskip("ai_edge_quantizer")
    model, x = text
    r = export_tflite(model, str(tmp_path / "mixed.tflite"), {"dense": "int8"},
                      calibration_data=x[:32])
    assert r.layer_precisions == {"dense": "int8"} and r.top1_agreement == 1.0


def test_masked_lstm_int8_runs_where_xnnpack_fails(tmp_path):
    """A post-training int8 LSTM behind a Masking layer (padded series):
    XNNPACK fails to prepare the file, so it is verified on the reference
    kernels, as a TFLite app runs it, and the report says so."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 3))
    h = L.LSTM(8)(L.Masking(0.0)(inp))
    model = keras.Model(inp, L.Dense(CLASSES)(h))
    x = np.random.default_rng(0).normal(size=(48, 8, 3)).astype("float32")
    x[:, 6:] = 0.0
    report = export_tflite(model, str(tmp_path / "m.tflite"), "int8",
                           calibration_data=x[:32], verify_data=x[32:])
    # the mask's ZEROS_LIKE / SELECT_V2 stay float (the converter's
    # choice); every LSTM op is integer
    assert set(report.float_ops) <= {"ZEROS_LIKE", "SELECT_V2"}, report
    assert report.top1_agreement >= 0.9, report
    assert "XNNPACK failed to prepare" in report.runtime, report.runtime
    interp, runtime = make_interpreter(str(tmp_path / "m.tflite"))
    assert runtime == report.runtime
    np.testing.assert_allclose(run_interpreter(interp, x[32:]),
                               model.predict(x[32:], verbose=0), atol=0.2)


def test_stateful_rnn_is_a_clear_error(tmp_path):
    inp = keras.Input((5, 3), batch_size=2)
    model = keras.Model(inp, L.GRU(4, stateful=True, name="gru_s")(inp))
    with pytest.raises(ValueError, match="'gru_s'.*stateful=True"):
        export_tflite(model, str(tmp_path / "s.tflite"))


def test_unrolled_copy_nested_and_untouched():
    inner_in = keras.Input((None, 4))
    inner = keras.Model(inner_in, L.Bidirectional(L.GRU(6))(inner_in),
                        name="encoder")
    inp = keras.Input((T, 3))
    model = keras.Model(inp, L.Dense(2)(inner(L.Dense(4)(inp))))
    copy = unrolled_for_tflite(model)
    assert copy is not model
    assert _unrolled_flags(copy) == [True, True]
    assert _unrolled_flags(model) == [False, False]
    # the nested model's own input gets the length it is fed (Keras traces
    # it on that input when the converter saves the model)
    assert copy.get_layer("encoder").inputs[0].shape == (None, T, 4)
    x = np.random.default_rng(0).normal(size=(4, T, 3)).astype("float32")
    np.testing.assert_allclose(copy(x), model(x), atol=1e-6)
    assert unrolled_for_tflite(copy) is copy  # nothing left to unroll
    interp, _ = make_interpreter(convert_to_tflite(model))
    np.testing.assert_allclose(run_interpreter(interp, x), model(x), atol=1e-5)
    plain = keras.Sequential([keras.Input((3,)), L.Dense(2)])
    assert unrolled_for_tflite(plain) is plain


def test_unregistered_custom_layer_is_rebuilt_from_its_live_class():
    class Scale(L.Layer):  # not registered, as a script defines it
        def call(self, x):
            return 2.0 * x

    inp = keras.Input((T, 3))
    model = keras.Model(inp, L.LSTM(4)(Scale()(inp)))
    copy = unrolled_for_tflite(model)
    x = np.random.default_rng(0).normal(size=(2, T, 3)).astype("float32")
    np.testing.assert_allclose(copy(x), model(x), atol=1e-5)


def test_custom_layer_whose_config_cannot_rebuild_is_a_clear_error():
    class Scale(L.Layer):
        def call(self, x):
            return 2.0 * x

        def get_config(self):  # a key its __init__ does not take
            return {**super().get_config(), "factor": 2.0}

    inp = keras.Input((T, 3))
    model = keras.Model(inp, L.LSTM(4)(Scale()(inp)))
    with pytest.raises(ValueError, match="rebuild from its config"):
        unrolled_for_tflite(model)
