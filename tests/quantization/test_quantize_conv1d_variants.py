"""DepthwiseConv1D, SeparableConv1D, Conv1DTranspose and Conv3DTranspose
through quantize_model, strip_quantization and int8 TFLite export (the
audio / time-series layers a WaveNet-like model uses)."""

import keras
import numpy as np
import pytest

from tfcomp.export import export_tflite
from tfcomp.export.runtime import make_interpreter, run_interpreter
from tfcomp.layers import (
    QuantConv1D,
    QuantConv1DTranspose,
    QuantConv3DTranspose,
    QuantDepthwiseConv1D,
)
from tfcomp.quantization import (
    calibrate,
    channel_shape,
    quantizable_layers,
    quantization_report,
    quantize_model,
    strip_quantization,
)
from tfcomp.quantization.sensitivity import quantized_kernel, sensitivity

L = keras.layers


def _np(t):
    return keras.ops.convert_to_numpy(t)


def _x(shape, n=32, seed=0):
    return np.random.default_rng(seed).uniform(
        -1, 1, (n, *shape)).astype("float32")


def wavenet1d():
    """The user-model probe's WaveNet-like classifier."""
    keras.utils.set_random_seed(0)
    i = keras.Input((32, 2))
    x = L.Conv1D(8, 2, padding="causal")(i)
    for d in (1, 2, 4):
        t = L.Conv1D(8, 2, dilation_rate=d, padding="causal",
                     activation="tanh")(x)
        s = L.Conv1D(8, 2, dilation_rate=d, padding="causal",
                     activation="sigmoid")(x)
        g = L.Conv1D(8, 1)(L.Multiply()([t, s]))
        x = L.Add()([x, g])
    x = L.SeparableConv1D(16, 3, padding="same", activation="relu",
                          name="sep")(x)
    x = L.DepthwiseConv1D(3, padding="same", name="dw")(x)
    x = L.UpSampling1D(2)(x)
    x = L.Cropping1D((2, 2))(x)
    x = L.Conv1DTranspose(8, 3, strides=2, padding="same", name="up")(x)
    x = L.GlobalMaxPooling1D()(x)
    o = L.Dense(10, activation="softmax")(x)
    return keras.Model(i, o, name="wavenet1d")


def _randomize_bn(model, seed=1):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 2, n), rng.normal(0, .3, n),
                               rng.normal(0, .3, n), rng.uniform(.5, 2, n)])


def variants1d():
    """Strides, dilation (transposed too), multipliers, valid padding,
    output padding and BatchNorms after each new kind."""
    keras.utils.set_random_seed(0)
    i = keras.Input((24, 3))
    x = L.Conv1D(6, 3, padding="same", activation="relu")(i)
    x = L.DepthwiseConv1D(3, dilation_rate=2, depth_multiplier=2,
                          padding="same", use_bias=False, name="dw")(x)
    x = L.ReLU()(L.BatchNormalization(name="dw_bn")(x))
    x = L.DepthwiseConv1D(3, strides=2, dilation_rate=2, padding="same",
                          name="dw2")(x)
    x = L.SeparableConv1D(8, 3, strides=2, depth_multiplier=2,
                          padding="valid", name="sep")(x)
    x = L.BatchNormalization(name="sep_bn")(x)
    x = L.Conv1DTranspose(6, 3, strides=3, padding="valid",
                          output_padding=1, name="up")(x)
    x = L.ReLU()(L.BatchNormalization(name="up_bn")(x))
    x = L.Conv1DTranspose(4, 3, dilation_rate=2, padding="same",
                          name="up2")(x)
    x = L.GlobalAveragePooling1D()(x)
    model = keras.Model(i, L.Dense(6)(x), name="variants1d")
    _randomize_bn(model)
    return model


def conv3d_transpose_net():
    keras.utils.set_random_seed(0)
    i = keras.Input((4, 6, 6, 2))
    x = L.Conv3D(4, 3, padding="same", activation="relu")(i)
    x = L.Conv3DTranspose(4, 2, strides=2, padding="same",
                          activation="relu", name="up")(x)
    x = L.Conv3DTranspose(3, 3, strides=(1, 2, 2), padding="valid",
                          output_padding=(0, 1, 1), name="up2")(x)
    x = L.Conv3DTranspose(3, 2, dilation_rate=2, padding="same",
                          name="up3")(x)
    x = L.GlobalAveragePooling3D()(x)
    return keras.Model(i, L.Dense(5)(x), name="conv3dt")


# ------------------------------------------------------------ the layers

LAYERS = [
    (QuantDepthwiseConv1D, L.DepthwiseConv1D,
     dict(kernel_size=3, depth_multiplier=2, dilation_rate=2,
          padding="same"), (16, 4)),
    (QuantDepthwiseConv1D, L.DepthwiseConv1D,
     dict(kernel_size=3, strides=2, padding="valid"), (17, 3)),
    (QuantConv1DTranspose, L.Conv1DTranspose,
     dict(filters=5, kernel_size=3, strides=2, padding="same"), (9, 4)),
    (QuantConv1DTranspose, L.Conv1DTranspose,
     dict(filters=5, kernel_size=4, strides=3, padding="valid",
          output_padding=2), (7, 3)),
    (QuantConv1DTranspose, L.Conv1DTranspose,
     dict(filters=2, kernel_size=3, dilation_rate=2, padding="valid"),
     (6, 3)),
    (QuantConv3DTranspose, L.Conv3DTranspose,
     dict(filters=3, kernel_size=2, strides=2, padding="same"),
     (3, 4, 4, 2)),
]


@pytest.mark.parametrize("cls,base,kw,shape", LAYERS)
def test_quant_layer_matches_float_layer(cls, base, kw, shape):
    x = _x(shape, 4)
    ref = base(**kw)
    y_ref = _np(ref(x))
    flt = cls(**kw, w_bits=32, a_bits=32)
    flt(x)
    flt.set_weights(ref.get_weights())
    np.testing.assert_allclose(_np(flt(x)), y_ref, atol=1e-5)
    q8 = cls(**kw, w_bits=8, a_bits=8, input_quantizer="signed")
    q8(x)
    q8.set_weights(ref.get_weights()[:2] + q8.get_weights()[2:])
    q8.refresh_weight_quantizer()
    q8(x, training=True)  # the input range sees the data
    err = np.abs(_np(q8(x)) - y_ref).max()
    assert err <= 0.03 * np.abs(y_ref).max(), err
    # per output channel scale on the right kernel axes
    n_out = int(np.prod(channel_shape(q8)))
    assert n_out == y_ref.shape[-1]
    codes = q8.weight_quantizer.integer_codes(_np(q8.kernel))[0]
    reduce = tuple(cls._kernel_reduce_axes)
    keep = tuple(i for i in range(codes.ndim) if i not in reduce)
    peak = np.abs(np.transpose(codes, reduce + keep).reshape(-1, n_out))
    peak = peak.max(0)
    np.testing.assert_array_equal(peak, 127)  # every channel's own range


def test_get_config_round_trip():
    for cls, _, kw, _ in LAYERS:
        layer = cls(**kw, w_bits=4, a_bits=6, name="q")
        cfg = layer.get_config()
        assert (cfg["w_bits"], cfg["a_bits"]) == (4, 6)
        again = cls.from_config(cfg)
        assert again.get_config() == cfg


def test_depthwise_1d_scale_is_per_channel_times_multiplier():
    """Output channel c * m + j owns kernel[:, c, j]: scale one of them
    up 100x, only its step grows."""
    layer = QuantDepthwiseConv1D(3, depth_multiplier=2, w_bits=8)
    layer(_x((8, 3), 1))
    k = np.full((3, 3, 2), 0.1, np.float32)
    k[:, 1, 0] *= 100  # output channel 2
    layer.kernel.assign(k)
    layer.refresh_weight_quantizer()
    scale = np.asarray(layer.weight_quantizer.integer_codes(k)[1]).reshape(-1)
    assert scale.size == 6
    np.testing.assert_allclose(scale[2] / scale[0], 100, rtol=1e-4)
    np.testing.assert_allclose(np.delete(scale, 2), scale[0], rtol=1e-6)


# ----------------------------------------------------------- the models


def test_wavenet1d_quantizes_every_weight_layer(tmp_path):
    model = wavenet1d()
    names = quantizable_layers(model)
    assert {"sep", "dw", "up"} <= set(names)  # a separable conv: one name
    q = quantize_model(model, bits={"sep": (4, 4), "dw": (6, 8)})
    report = quantization_report(q)
    assert not report.skipped
    assert isinstance(q.get_layer("sep_depthwise"), QuantDepthwiseConv1D)
    assert type(q.get_layer("sep")) is QuantConv1D
    assert isinstance(q.get_layer("dw"), QuantDepthwiseConv1D)
    assert isinstance(q.get_layer("up"), QuantConv1DTranspose)
    assert report.quantized["sep_depthwise"] == (4, 4)
    assert report.quantized["sep"] == (4, 4)
    assert report.quantized["dw"] == (6, 8)
    x = _x((32, 2))
    calibrate(q, x)
    path = str(tmp_path / "w.keras")
    q.save(path)
    np.testing.assert_allclose(_np(keras.saving.load_model(path)(x)),
                               _np(q(x)), atol=1e-6)


def test_strip_equals_qat_in_float():
    """Weights-only QAT (no activation quantizers): the stripped plain
    Keras model computes the QAT model's function."""
    for build, shape in ((variants1d, (24, 3)), (wavenet1d, (32, 2)),
                         (conv3d_transpose_net, (4, 6, 6, 2))):
        model = build()
        q = quantize_model(model, bits=(4, 32), first_last_bits=None,
                           observers=False)
        plain = strip_quantization(q)
        assert not any(type(lay).__module__.startswith("tfcomp")
                       for lay in plain.layers), build.__name__
        x = _x(shape, 8)
        np.testing.assert_allclose(_np(plain(x)), _np(q(x)), atol=1e-5)


def test_batchnorm_folds_into_1d_kinds():
    model = variants1d()
    q = quantize_model(model, bits=32, first_last_bits=None,
                       observers=False)
    report = quantization_report(q)
    assert report.folded == {"dw": "dw_bn", "sep": "sep_bn", "up": "up_bn"}
    assert {"dw", "up"} <= set(report.fused)
    assert q.get_layer("dw").activation.__name__ == "relu"
    x = _x((24, 3), 8)
    np.testing.assert_allclose(_np(q(x)), _np(model(x)), atol=1e-4)


def _int8_agrees(q, x, tmp_path):
    """The int8 file of calibrated ``q`` is all integer and within two
    output steps of the QAT model (top-1 equal where decisive)."""
    path = str(tmp_path / f"{q.name}.tflite")
    report = export_tflite(q, path, "int8", verify=False)
    assert report.float_ops == []
    interp = make_interpreter(path)[0]
    step = interp.get_output_details()[0]["quantization"][0]
    y_lite = run_interpreter(interp, x)
    y_q = _np(q(x))
    assert np.abs(y_lite - y_q).max() <= 2 * step + 1e-6
    top2 = np.sort(y_q, -1)[:, -2:]
    decisive = top2[:, 1] - top2[:, 0] > 4 * step
    assert decisive.mean() >= 0.5
    assert np.mean((y_lite.argmax(-1) == y_q.argmax(-1))[decisive]) >= 0.99


def _sharpen(model):
    """Logits spread out (a trained classifier's margins)."""
    dense = model.layers[-1]
    dense.kernel.assign(dense.kernel * 20.0)
    return model


@pytest.mark.parametrize("build,shape,bits", [
    (wavenet1d, (32, 2), 8), (variants1d, (24, 3), 4),
    (conv3d_transpose_net, (4, 6, 6, 2), 8)])
def test_int8_file_is_integer_and_agrees(build, shape, bits, tmp_path):
    model = _sharpen(build())
    q = quantize_model(model, bits=bits)
    assert not quantization_report(q).skipped
    x = _x(shape, 64)
    calibrate(q, x)
    _int8_agrees(q, x, tmp_path)


def test_sensitivity_reads_separable_1d_parts():
    model = wavenet1d()
    sep = model.get_layer("sep")
    dw4 = quantized_kernel(sep, 4, part="depthwise")
    assert dw4.shape == tuple(sep.depthwise_kernel.shape)
    assert np.unique(dw4[:, 0, 0]).size <= 15
    x = _x((32, 2), 16)
    s = sensitivity(model, x, method="distortion", bits=[4, 8],
                    num_samples=16)
    assert "sep" in s.layers and s.meta["parts"]["sep"] == [
        "sep_depthwise", "sep"]
    act = sensitivity(model, x, method="distortion", bits=[4, 8],
                      num_samples=16, kind="activations")
    assert np.all(np.isfinite(act.table))
