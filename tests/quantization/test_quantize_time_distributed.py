"""quantize_model on ``keras.layers.TimeDistributed``: the inner layer runs
on the time steps folded into the batch (reshape -> QuantConv2D... ->
reshape), planned like a plain layer (BN folding, ReLU fusion, observers),
with per-layer bits, profile MACs, strip, int8 export and .keras round
trip."""

import warnings

import keras
import numpy as np
from keras import layers

import tfcomp
from tfcomp.layers import QuantConv2D, QuantDense, QuantDepthwiseConv2D
from tfcomp.quantization import (
    calibrate,
    quantizable_layers,
    quantization_report,
    quantize_model,
    strip_quantization,
)

TD = layers.TimeDistributed
T = 3


def _np(t):
    return keras.ops.convert_to_numpy(t)


def _video():
    """The keras.io-style video model of the issue, tiny."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((T, 10, 10, 3))
    x = TD(layers.Conv2D(8, 3, activation="relu"), name="c1")(inp)
    x = TD(layers.BatchNormalization(), name="bn")(x)
    x = TD(layers.MaxPooling2D(), name="pool")(x)
    x = TD(layers.Conv2D(12, 3, activation="relu"), name="c2")(x)
    x = TD(layers.GlobalAveragePooling2D(), name="gap")(x)
    x = layers.GRU(8, name="gru")(x)
    out = layers.Dense(5, activation="softmax", name="head")(x)
    model = keras.Model(inp, out)
    rng = np.random.default_rng(0)
    bn = model.get_layer("bn").layer
    bn.moving_mean.assign(rng.normal(0, 0.2, 8))
    bn.moving_variance.assign(rng.uniform(0.5, 2.0, 8))
    head = model.get_layer("head")
    head.kernel.assign(8.0 * _np(head.kernel))  # decisive classes
    return model


def _sequence():
    """TimeDistributed(Dense) -> (BN) -> (ReLU) on a (B, T, F) sequence."""
    keras.utils.set_random_seed(1)
    inp = keras.Input((T, 6))
    x = TD(layers.Dense(8), name="d1")(inp)
    x = TD(layers.BatchNormalization(), name="bn")(x)
    x = TD(layers.ReLU(), name="relu")(x)
    x = TD(layers.Dense(4), name="d2")(x)
    model = keras.Model(inp, layers.Dense(3, name="head")(
        layers.Flatten()(x)))
    bn = model.get_layer("bn").layer
    bn.moving_mean.assign(np.linspace(-0.3, 0.3, 8))
    bn.moving_variance.assign(np.linspace(0.5, 2.0, 8))
    return model


def _x(n=32):
    return np.random.default_rng(2).uniform(
        size=(n, T, 10, 10, 3)).astype("float32")


def _quantize(model, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        q = quantize_model(model, **kwargs)
    return q, " ".join(str(w.message) for w in caught
                       if issubclass(w.category, UserWarning))


def test_video_model_is_quantized_through_time_distributed():
    model = _video()
    q, said = _quantize(model)
    report = quantization_report(q)
    assert {"c1", "bn", "c2", "head"} <= set(report.quantized)
    assert list(report.skipped) == ["gru"]  # the GRU alone stays float
    assert "TimeDistributed" not in said and "'gru'" in said
    assert isinstance(q.get_layer("c1"), QuantConv2D)
    assert isinstance(q.get_layer("c2"), QuantConv2D)
    # c1 -> ReLU -> BN: the BN is an 8-bit 1x1 depthwise, as without TD
    assert isinstance(q.get_layer("bn"), QuantDepthwiseConv2D)
    assert not any(isinstance(layer, TD) for layer in q.layers)
    assert quantizable_layers(model) == ["c1", "c2", "head"]
    x = _x(8)
    np.testing.assert_allclose(_np(q(x)), _np(model(x)), atol=2e-3)


def test_sequence_dense_folds_batchnorm_and_fuses_relu():
    model = _sequence()
    q, said = _quantize(model)
    report = quantization_report(q)
    assert report.folded == {"d1": "bn"} and report.fused == {"d1": "relu"}
    assert not report.skipped and not said
    assert isinstance(q.get_layer("d1"), QuantDense)
    assert q.get_layer("d1").activation.__name__ == "relu"
    x = np.random.default_rng(3).normal(size=(16, T, 6)).astype("float32")
    calibrate(q, x)
    y, y_q = _np(model(x)), _np(q(x))
    assert np.abs(y_q - y).max() < 0.03 * np.abs(y).max()


def test_bits_reach_the_inner_layer_and_profile_counts_t_steps():
    model = _video()
    q, _ = _quantize(model, bits={"c2": (4, 6)})
    assert (q.get_layer("c2").w_bits, q.get_layer("c2").a_bits) == (4, 6)
    assert quantization_report(q).quantized["c2"] == (4, 6)
    p, p_float = tfcomp.profile(q), tfcomp.profile(model)
    for name in ("c1", "c2"):
        assert p.by_name(name).macs == p_float.by_name(name).macs > 0
    assert p.by_name("c1").macs == T * 8 * 8 * 27 * 8
    c2 = p.by_name("c2")
    assert (c2.w_bits, c2.a_bits) == (4, 6)
    assert p.macs == p_float.macs + p.by_name("bn").macs  # BN: a depthwise


def test_dynamic_time_axis_stays_float_with_a_reason():
    inp = keras.Input((None, 6))
    y = TD(layers.Dense(4), name="td")(inp)
    model = keras.Model(inp, layers.Dense(2)(layers.GlobalAveragePooling1D()(
        y)))
    q, said = _quantize(model)
    reason = quantization_report(q).skipped["td"]
    assert "time axis" in reason and "kept float" in reason
    assert "'td'" in said
    assert isinstance(q.get_layer("td"), TD)


def test_skip_and_nested_shared_time_distributed():
    enc = keras.Sequential([keras.Input((T, 6)), TD(layers.Dense(
        5, activation="relu"), name="td")], name="enc")
    a, b = keras.Input((T, 6)), keras.Input((T, 6))
    shared = TD(layers.Dense(4), name="shared")
    y = layers.Add()([shared(enc(a)), shared(enc(b))])
    model = keras.Model([a, b], layers.Dense(2)(layers.Flatten()(y)))
    q, _ = _quantize(model, bits={"enc/td": (4, 8)})
    assert quantization_report(q).quantized["enc_td"] == (4, 8)
    assert isinstance(q.get_layer("shared"), QuantDense)  # one, shared
    xs = [np.random.default_rng(i).normal(size=(4, T, 6)).astype("float32")
          for i in (4, 5)]
    np.testing.assert_allclose(_np(q(xs)), _np(model(xs)), atol=0.3)
    q2, _ = _quantize(model, skip=["enc/td"])
    assert quantization_report(q2).skipped["enc_td"].startswith(
        "listed in skip")


def test_strip_save_load_and_int8_export(tmp_path):
    from tfcomp.export import export_tflite

    model, x = _video(), _x(64)
    q, _ = _quantize(model)
    plain = strip_quantization(q)
    assert not any(type(layer).__name__.startswith("Quant")
                   for layer in plain.layers)
    np.testing.assert_array_equal(_np(plain.get_layer("c2").kernel),
                                  q.get_layer("c2").quantized_kernel())
    np.testing.assert_allclose(_np(plain(x[:8])), _np(q(x[:8])), atol=1e-5)
    calibrate(q, x)
    path = str(tmp_path / "qat.keras")
    q.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.get_layer("c1"), QuantConv2D)
    np.testing.assert_allclose(_np(loaded(x[:8])), _np(q(x[:8])), atol=1e-6)
    report = export_tflite(q, str(tmp_path / "video.tflite"),
                           quantization="int8", calibration_data=x,
                           min_agreement=0.99)
    assert report.float_ops == []
    assert report.top1_agreement >= 0.99


def test_folded_rows_in_hardware_specs():
    from tfcomp.hardware import extract_specs

    inp = keras.Input((T, 6, 6, 2))
    model = keras.Model(inp, TD(layers.Conv2D(4, 3), name="td")(inp))
    q, _ = _quantize(model)
    spec = {s.name: s for s in extract_specs(q, batch=2)}["td"]
    want = {s.name: s for s in extract_specs(model, batch=2)}["td"]
    assert (spec.batch, spec.macs) == (want.batch, want.macs) == (
        2 * T, 2 * T * 4 * 4 * 18 * 4)
