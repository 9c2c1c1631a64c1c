"""Per-layer float32 / float16 / int8 / int4w LiteRT files
(``export_tflite(..., quantization=policy)``): the policy read back from
the file's tensor types, QAT int4 weights equal to the QAT integer
weights, fallbacks named, clear errors that leave no file."""

import os
import sys

import keras
import numpy as np
import pytest

from tfcomp.export import export_tflite
from tfcomp.export.litert_quant import layer_ops, layer_precisions
from tfcomp.export.runtime import run_interpreter
from tfcomp.hardware.precision import (
    op_precisions,
    pack_int4,
    unpack_int4,
    weight_ops,
    weight_values,
)
from tfcomp.quantization import calibrate, quantization_params, quantize_model

pytest.importorskip("ai_edge_quantizer")


def _model():
    keras.utils.set_random_seed(0)
    x = keras.Input((8, 8, 3))
    y = keras.layers.Conv2D(16, 3, name="conv_a")(x)
    y = keras.layers.BatchNormalization(name="bn")(y)
    y = keras.layers.ReLU()(y)
    y = keras.layers.DepthwiseConv2D(3, name="dw_b")(y)
    y = keras.layers.Conv2D(16, 1, name="conv_c")(y)
    y = keras.layers.GlobalAveragePooling2D()(y)
    return keras.Model(x, keras.layers.Dense(10, name="fc")(y))


@pytest.fixture(scope="module")
def data():
    return np.random.default_rng(0).uniform(0, 1, (64, 8, 8, 3)).astype(
        "float32")


@pytest.fixture(scope="module")
def qat(data):
    q = quantize_model(_model(), bits={"conv_a": (8, 8), "dw_b": (4, 8),
                                       "conv_c": (4, 8), "fc": (3, 8)},
                       first_last_bits=None)
    calibrate(q, data)
    return q


def test_pack_int4_round_trip():
    v = np.arange(-8, 8).repeat(3)[:-1]
    assert np.array_equal(unpack_int4(pack_int4(v), v.size), v)


def test_policy_read_back_from_file(tmp_path, data):
    model = _model()
    policy = {"conv_a": "int4w", "dw_b": "float16", "conv_c": "int8"}
    path = tmp_path / "mix.tflite"
    r = export_tflite(model, str(path), quantization=policy,
                      verify_data=data, min_agreement=0.5)
    fb = path.read_bytes()
    assert r.runtime == "ai_edge_litert" and r.size_bytes == len(fb)
    got = layer_precisions(model, fb)
    assert got == {**policy, "fc": "float32"} == r.layer_precisions
    types = {w.weight.split("/")[1]: w.dtype for w in weight_ops(fb)}
    assert types == {"conv_a_1": "INT4", "dw_b_1": "FLOAT16",
                     "conv_c_1": "INT8", "fc_1": "FLOAT32"}
    assert r.int8_fallback == {}
    # int4 weights halve int8's: the whole file is smaller than all-int8
    r8 = export_tflite(model, str(tmp_path / "i8.tflite"),
                       quantization={n: "int8" for n in got},
                       verify_data=data, min_agreement=0.5)
    r4 = export_tflite(model, str(tmp_path / "i4.tflite"),
                       quantization="int4w", verify_data=data,
                       min_agreement=0.5)
    assert r4.size_bytes < r8.size_bytes
    # no int4 depthwise recipe: named, stays int8
    assert r4.layer_precisions["dw_b"] == "int8"
    assert "DEPTHWISE_CONV_2D" in r4.int8_fallback["dw_b"]
    assert set(op_precisions((tmp_path / "i4.tflite").read_bytes()
                             ).values()) == {"int4w", "int8"}


def test_layer_ops_maps_every_weight_layer(data):
    from tfcomp.export.litert_quant import float_tflite

    model = _model()
    ops = layer_ops(model, float_tflite(model))
    assert {n: [o.op for o in v] for n, v in ops.items()} == {
        "conv_a": ["CONV_2D"], "dw_b": ["DEPTHWISE_CONV_2D"],
        "conv_c": ["CONV_2D"], "fc": ["FULLY_CONNECTED"]}


def _layout(codes, shape):
    for a in (np.moveaxis(codes, -1, 0), codes):
        if a.size == np.prod(shape):
            yield a.reshape(shape)


def test_qat_int4_weights_are_the_qat_integer_weights(tmp_path, qat, data):
    path = tmp_path / "qat4.tflite"
    r = export_tflite(qat, str(path), quantization="int4w",
                      verify_data=data)
    r8 = export_tflite(qat, str(tmp_path / "qat8.tflite"),
                       quantization="int8", verify_data=data)
    assert r.layer_precisions == {"conv_a": "int8", "dw_b": "int4w",
                                  "conv_c": "int4w", "fc": "int4w"}
    assert r.int8_fallback == {}
    fb = path.read_bytes()
    params = quantization_params(qat)
    int4 = [w for w in weight_ops(fb) if w.dtype == "INT4"]
    assert len(int4) == 3
    matched = set()
    for w in int4:
        stored = weight_values(fb, w.index)
        for name in ("dw_b", "conv_c", "fc"):
            if any(np.array_equal(stored, c) for c in _layout(
                    params[name]["codes"], stored.shape)):
                matched.add(name)
    assert matched == {"dw_b", "conv_c", "fc"}
    # the int4 ops run in LiteRT's built-in kernels: there the int4 file is
    # within one output step of the int8 file, whose weights hold the codes
    # times a power of two at a scale divided by it (XNNPACK's limit): the
    # same product, requantized with one rounding less (measured: 95 of
    # 640 outputs one step off the QAT model in the int8 file, 146 in the
    # int4 file)
    out = _builtin_outputs(fb, data)
    step = float(np.min(np.diff(np.unique(out))))
    assert np.abs(np.array(out) - np.array(_builtin_outputs(
        (tmp_path / "qat8.tflite").read_bytes(), data))).max() <= step * 1.01
    assert r.top1_agreement >= 0.9
    assert r.max_abs_error <= r8.max_abs_error + step * 1.01
    assert r.size_bytes < r8.size_bytes


def _builtin_outputs(fb, x):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_content=fb, experimental_op_resolver_type=(
        OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
    return run_interpreter(it, x).ravel().tolist()


def test_qat_policy_and_errors(tmp_path, qat, data):
    r = export_tflite(qat, str(tmp_path / "q.tflite"),
                      quantization={"conv_c": "int8"}, verify_data=data)
    assert r.layer_precisions["conv_c"] == "int8"
    assert r.layer_precisions["dw_b"] == "int4w"  # its w_bits <= 4
    with pytest.raises(ValueError, match="w_bits=8"):
        export_tflite(qat, str(tmp_path / "x.tflite"),
                      quantization={"conv_a": "int4w"})
    with pytest.raises(ValueError, match="full-integer"):
        export_tflite(qat, str(tmp_path / "x.tflite"),
                      quantization={"conv_c": "float16"})
    assert not (tmp_path / "x.tflite").exists()


@pytest.mark.parametrize("policy, match", [
    ({"nope": "int8"}, "'nope'"),
    ({"conv_a": "int3"}, "int3"),
    ("int2w", "int2w"),
])
def test_bad_policy_is_clear_and_leaves_no_file(tmp_path, policy, match):
    path = tmp_path / "m.tflite"
    with pytest.raises(ValueError, match=match):
        export_tflite(_model(), str(path), quantization=policy)
    assert os.listdir(tmp_path) == []
    path.write_bytes(b"old")  # an existing file is kept as it was
    with pytest.raises(ValueError):
        export_tflite(_model(), str(path), quantization=policy)
    assert path.read_bytes() == b"old"


def test_missing_extra_names_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ai_edge_quantizer", None)
    with pytest.raises(ImportError, match=r"tfcomp\[litert\]"):
        export_tflite(_model(), str(tmp_path / "m.tflite"),
                      quantization={"conv_a": "int8"})
    assert not (tmp_path / "m.tflite").exists()


def test_file_loads_in_tflite_runtime(tmp_path, data):
    rt = pytest.importorskip("tflite_runtime.interpreter")
    path = tmp_path / "m.tflite"
    export_tflite(_model(), str(path), quantization={"conv_c": "int8"},
                  verify_data=data, min_agreement=0.5)
    interp = rt.Interpreter(model_path=str(path))
    interp.allocate_tensors()


def test_cli_reads_a_policy_file(tmp_path):
    import json

    from tfcomp.cli import _common
    from tfcomp.cli.export import _quantization

    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"conv_a": "int4w"}))
    assert _quantization(str(path)) == {"conv_a": "int4w"}
    assert _quantization("int8") == "int8"
    path.write_text("[1]")
    with pytest.raises(_common.CLIError, match="JSON object"):
        _quantization(str(path))
