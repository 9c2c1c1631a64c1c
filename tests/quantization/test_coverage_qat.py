"""Every kind of model a Keras user brings goes through quantize_model and
an int8 TFLite export that agrees with the QAT model, or gets a clear,
documented error (issue #17's layer-coverage matrix, QAT / int8 columns)."""

import os
import warnings

import keras
import numpy as np
import pytest

from tfcomp.export import export_tflite, measure_latency
from tfcomp.export.runtime import make_interpreter
from tfcomp.layers import (
    QuantConv1D,
    QuantConv2D,
    QuantConv2DTranspose,
    QuantConv3D,
    QuantDepthwiseConv2D,
    QuantEmbedding,
)
from tfcomp.quantization import (
    calibrate,
    quantization_report,
    quantize_model,
    strip_quantization,
)

L = keras.layers


def _np(t):
    return keras.ops.convert_to_numpy(t)


# ---------------------------------------------------------------- models


def conv1d_net():
    inp = keras.Input((32, 3))
    x = L.Conv1D(8, 3, padding="same", use_bias=False)(inp)
    x = L.ReLU()(L.BatchNormalization()(x))
    x = L.Conv1D(16, 3, padding="causal", dilation_rate=2,
                 activation="relu")(x)
    x = L.MaxPooling1D(2)(x)
    x = L.Conv1D(16, 3, strides=2, activation="relu")(x)
    x = L.GlobalAveragePooling1D()(x)
    return keras.Model(inp, L.Dense(5)(x), name="conv1d_net")


def conv3d_net():
    inp = keras.Input((8, 8, 8, 1))
    x = L.Conv3D(4, 3, padding="same", activation="relu")(inp)
    x = L.Conv3D(8, 3, strides=2, padding="same", activation="relu")(x)
    x = L.Conv3D(8, (2, 3, 1), strides=(1, 2, 1))(x)
    x = L.GlobalAveragePooling3D()(x)
    return keras.Model(inp, L.Dense(5)(x), name="conv3d_net")


def separable_net():
    inp = keras.Input((16, 16, 3))
    x = L.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = L.SeparableConv2D(16, 3, padding="same", use_bias=False)(x)
    x = L.ReLU()(L.BatchNormalization()(x))
    x = L.SeparableConv2D(16, 3, strides=2, padding="same",
                          activation="relu")(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(5)(x), name="separable_net")


def unet():
    inp = keras.Input((16, 16, 3))
    c1 = L.Conv2D(8, 3, padding="same", activation="relu")(inp)
    p1 = L.MaxPooling2D()(c1)
    c2 = L.Conv2D(16, 3, padding="same", activation="relu")(p1)
    u = L.Conv2DTranspose(8, 2, strides=2, padding="same")(c2)
    x = L.Concatenate()([u, c1])
    x = L.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = L.Conv2DTranspose(4, 3, strides=2, padding="valid",
                          output_padding=1)(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(5)(x), name="unet")


def grouped_net():
    inp = keras.Input((16, 16, 3))
    x = L.Conv2D(16, 3, padding="same", activation="relu")(inp)
    x = L.Conv2D(16, 3, padding="same", groups=4, use_bias=False)(x)
    x = L.ReLU()(L.BatchNormalization()(x))
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(5)(x), name="grouped_net")


def tiny_vit():
    inp = keras.Input((16, 16, 3))
    x = L.Conv2D(16, 4, strides=4)(inp)
    x = L.Reshape((16, 16))(x)
    h = L.LayerNormalization()(x)
    h = L.MultiHeadAttention(num_heads=2, key_dim=8, name="mha")(h, h)
    x = L.Add()([x, h])
    h = L.LayerNormalization()(x)
    h = L.Dense(32, activation="gelu")(h)
    x = L.Add()([x, L.Dense(16)(h)])
    x = L.GlobalAveragePooling1D()(x)
    return keras.Model(inp, L.Dense(5)(x), name="tiny_vit")


def text_net():
    inp = keras.Input((20,), dtype="int32")
    x = L.Embedding(50, 16)(inp)
    x = L.Conv1D(16, 3, activation="relu")(x)
    x = L.GlobalMaxPooling1D()(x)
    return keras.Model(inp, L.Dense(5)(x), name="text_net")


def nested_net():
    inner_in = keras.Input((16, 16, 3))
    h = L.Conv2D(8, 3, padding="same", use_bias=False)(inner_in)
    h = L.ReLU()(L.BatchNormalization()(h))
    backbone = keras.Model(inner_in, h, name="backbone")
    inp = keras.Input((16, 16, 3))
    x = L.Conv2D(8, 3, activation="relu")(backbone(inp))
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(5)(x), name="nested_net")


def lambda_net():
    inp = keras.Input((16, 16, 3))
    x = L.Lambda(lambda t: t * 2.0 - 1.0)(inp)
    x = L.Conv2D(8, 3, activation="relu")(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(5)(x), name="lambda_net")


def sequential_net():
    return keras.Sequential([
        keras.Input((16, 16, 3)), L.Conv2D(8, 3, activation="relu"),
        L.MaxPooling2D(), L.Conv2D(8, 3, activation="relu"),
        L.MaxPooling2D(), L.Flatten(), L.Dropout(0.5), L.Dense(5)],
        name="sequential_net")


def _data(model, n=32, seed=0):
    rng = np.random.default_rng(seed)
    t = model.inputs[0]
    if "int" in str(t.dtype):
        return rng.integers(0, 50, (n, *t.shape[1:])).astype("int32")
    return rng.uniform(0, 1, (n, *t.shape[1:])).astype("float32")


def _qat_int8(model, tmp_path, n=32):
    """quantize_model (no float-weight warning) -> calibrate -> int8 file;
    returns (qat model, export report, inputs)."""
    x = _data(model, n)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*weights in float.*")
        q = quantize_model(model, bits=8)
    calibrate(q, x)
    report = export_tflite(q, os.path.join(tmp_path, "m.tflite"), "int8",
                           verify_data=x, num_verify=n, io_type="float32")
    return q, report, x


KINDS = {"conv1d": conv1d_net, "conv3d": conv3d_net,
         "separable": separable_net, "unet": unet, "grouped": grouped_net,
         "text": text_net, "nested": nested_net, "lambda": lambda_net,
         "sequential": sequential_net}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_user_model_qat_int8_agrees(kind, tmp_path):
    keras.utils.set_random_seed(0)
    model = KINDS[kind]()
    q, report, x = _qat_int8(model, tmp_path)
    assert report.top1_agreement >= 0.99
    y_q = _np(q(x))
    assert report.max_abs_error <= 0.02 * np.ptp(y_q) + 1e-6
    # QAT stays close to the float model
    assert np.abs(y_q - _np(model(x))).max() <= 0.1 * np.ptp(y_q) + 1e-3
    assert not quantization_report(q).skipped


def test_new_layer_kinds_are_quantized_and_round_trip(tmp_path):
    keras.utils.set_random_seed(0)
    expect = {"conv1d": QuantConv1D, "conv3d": QuantConv3D,
              "unet": QuantConv2DTranspose, "text": QuantEmbedding}
    for kind, cls in expect.items():
        model = KINDS[kind]()
        x = _data(model, 8)
        q = quantize_model(model, bits=4)
        assert any(isinstance(layer, cls) for layer in q.layers), kind
        calibrate(q, x)
        path = os.path.join(tmp_path, f"{kind}.keras")
        q.save(path)
        np.testing.assert_allclose(_np(keras.saving.load_model(path)(x)),
                                   _np(q(x)), atol=1e-5)
        plain = strip_quantization(q)
        assert not any(isinstance(layer, cls) for layer in plain.layers)
        np.testing.assert_allclose(_np(plain(x)), _np(q(x)), atol=0.5)


def test_separable_conv_becomes_depthwise_and_pointwise():
    model = separable_net()
    q = quantize_model(model, bits=4, first_last_bits=None)
    names = {layer.name: type(layer) for layer in q.layers}
    sep = [layer.name for layer in model.layers
           if isinstance(layer, L.SeparableConv2D)]
    for name in sep:
        assert names[f"{name}_depthwise"] is QuantDepthwiseConv2D
        assert names[name] is QuantConv2D
        assert q.get_layer(name).w_bits == 4
    assert sep[0] in quantization_report(q).folded  # its BN, pointwise


def test_embedding_table_is_one_bbit_grid():
    q = quantize_model(text_net(), bits=4, first_last_bits=None)
    emb = next(layer for layer in q.layers
               if isinstance(layer, QuantEmbedding))
    assert emb.w_bits == 4 and emb.input_quantizer is None
    assert np.unique(emb.quantized_kernel()).size <= 15


def test_integer_input_file_keeps_int32_ids_and_times(tmp_path):
    model = text_net()
    q, report, x = _qat_int8(model, tmp_path)
    interp, _ = make_interpreter(report.path)
    assert interp.get_input_details()[0]["dtype"] == np.int32
    # verification without data draws ids in [0, input_dim)
    r2 = export_tflite(q, os.path.join(tmp_path, "m2.tflite"), "int8",
                       num_verify=16)
    assert r2.top1_agreement >= 0.99
    assert measure_latency(r2.path, runs=2, warmup=1).median_ms > 0
    # float PTQ calibration feeds int32 ids
    r3 = export_tflite(model, os.path.join(tmp_path, "m3.tflite"), "int8",
                       calibration_data=x, io_type="float32")
    assert r3.top1_agreement >= 0.9


def test_attention_stays_float_with_one_warning_and_clear_export_error(
        tmp_path):
    model = tiny_vit()
    x = _data(model, 8)
    with pytest.warns(UserWarning, match="'mha': MultiHeadAttention") as rec:
        q = quantize_model(model, bits=8)
    assert sum("weights in float" in str(w.message) for w in rec) == 1
    assert "mha" in quantization_report(q).skipped
    calibrate(q, x)
    np.testing.assert_allclose(_np(q(x)), _np(model(x)), atol=0.1)
    with pytest.raises(ValueError, match=r"mha \(MultiHeadAttention\)"):
        export_tflite(q, os.path.join(tmp_path, "vit.tflite"), "int8")
    assert not os.path.exists(os.path.join(tmp_path, "vit.tflite"))


def test_vit_variants_do_not_crash(tmp_path):
    vit = tiny_vit()
    path = os.path.join(tmp_path, "vit.keras")
    vit.save(path)
    inp = keras.Input((16, 16, 3))
    nested = keras.Model(inp, L.Dense(3)(tiny_vit()(inp)))
    for model in (keras.saving.load_model(path), nested):
        x = _data(model, 4)
        with pytest.warns(UserWarning, match="MultiHeadAttention"):
            q = quantize_model(model)
        calibrate(q, x)
        assert np.abs(_np(q(x)) - _np(model(x))).max() < 0.2


def test_sequential_from_keras_file(tmp_path):
    path = os.path.join(tmp_path, "seq.keras")
    sequential_net().save(path)
    _, report, _ = _qat_int8(keras.saving.load_model(path), tmp_path)
    assert report.top1_agreement >= 0.99


def test_compiled_model_stays_compiled():
    model = sequential_net()
    model.compile(keras.optimizers.Adam(3e-4),
                  "sparse_categorical_crossentropy", metrics=["accuracy"])
    x = _data(model, 8)
    model.fit(x, np.zeros(8, "int32"), epochs=1, verbose=0)
    q = quantize_model(model)
    assert q.compiled and isinstance(q.optimizer, keras.optimizers.Adam)
    assert int(q.optimizer.iterations.numpy()) == 1
    assert abs(float(q.optimizer.learning_rate.numpy()) - 3e-4) < 1e-9
    calibrate(q, x)
    plain = strip_quantization(q)
    assert plain.compiled
    plain.fit(x, np.zeros(8, "int32"), epochs=1, verbose=0)


def test_lambda_model_strips_without_unsafe_deserialization():
    model = lambda_net()
    q = quantize_model(model)
    x = _data(model, 4)
    calibrate(q, x)
    plain = strip_quantization(q)
    assert any(isinstance(layer, L.Lambda) for layer in plain.layers)
    np.testing.assert_allclose(_np(plain(x)), _np(q(x)), atol=0.2)


def test_float_kernels_named_in_one_warning():
    class MyConv(L.Conv2D):
        pass

    inp = keras.Input((8, 8, 3))
    x = MyConv(4, 3, name="mine")(inp)
    x = L.SeparableConv1D(4, 3, name="sep1d")(L.Reshape((36, 4))(x))
    model = keras.Model(inp, L.Dense(2)(L.Flatten()(x)))
    with pytest.warns(UserWarning) as rec:
        q = quantize_model(model)
    msgs = [str(w.message) for w in rec if "weights in float" in str(w.message)]
    assert len(msgs) == 1 and "'mine'" in msgs[0] and "'sep1d'" in msgs[0]
    assert set(quantization_report(q).skipped) == {"mine", "sep1d"}


# ------------------------------------------------ keras.applications (slow)

#: Top-1 agreement of the int8 file with the QAT model reached on untrained
#: (BN statistics adapted) 32x32 models; below 0.99 is a known gap (see the
#: issue #17 report): these deep random nets amplify one-step rounding
#: differences of TFLite's int8 kernels.
APP_AGREEMENT = {"DenseNet121": 0.99, "ConvNeXtTiny": 0.99}


def _integer_ops(path) -> bool:
    interp, _ = make_interpreter(path)
    det = interp.get_tensor_details()
    for op in interp._get_ops_details():
        if op["op_name"] in ("QUANTIZE", "DEQUANTIZE", "DELEGATE"):
            continue
        if any(det[i]["dtype"] == np.float32 for i in op["inputs"] if i >= 0):
            return False
    return True


@pytest.mark.slow
@pytest.mark.parametrize("name", ["MobileNetV3Small", "EfficientNetB0",
                                  "DenseNet121", "ResNet50V2",
                                  "ConvNeXtTiny"])
def test_keras_application_qat_int8(name, tmp_path):
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, name)(
        weights=None, input_shape=(32, 32, 3), classes=10,
        classifier_activation=None)
    x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype(
        "float32")
    bns = [layer for layer in model._flatten_layers()
           if isinstance(layer, L.BatchNormalization)]
    for bn in bns:  # BN statistics of the data: outputs that are not ~0
        bn.momentum = 0.0
    model(x, training=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*weights in float.*")
        q = quantize_model(model, bits=8)
    calibrate(q, x)
    report = export_tflite(q, os.path.join(tmp_path, "app.tflite"), "int8",
                           verify_data=x, num_verify=8, io_type="float32",
                           min_agreement=0.0)
    assert _integer_ops(report.path)  # no same-scale error, no float op
    want = APP_AGREEMENT.get(name)
    if want is None:
        pytest.xfail(f"{name}: int8 file agrees {report.top1_agreement:.0%}"
                     " with the QAT model (known gap, issue #17)")
    assert report.top1_agreement >= want


def test_mixed_float16_export_gives_a_clear_error(tmp_path):
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = sequential_net()
    finally:
        keras.config.set_dtype_policy("float32")
    with pytest.raises(ValueError, match="mixed_float16"):
        export_tflite(model, os.path.join(tmp_path, "m.tflite"))
