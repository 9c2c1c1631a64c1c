"""QAT model -> full-integer TFLite: ranges, integer weights, agreement,
errors.

One tiny mixed-precision model (8/8 first and last layers, a 3-bit
depthwise, a 2-bit conv feeding a residual Add, a 5/3-bit hidden Dense) is
trained once on synthetic stripes and exported once; the tests read the
file with the interpreter.
"""

import os

import keras
import numpy as np
import pytest

from tfcomp.export import export_tflite, tflite_weight_levels
from tfcomp.export.int8 import code_multiplier, convert_int8
from tfcomp.export.runtime import make_interpreter, run_interpreter
from tfcomp.quantization import (
    calibrate,
    dnas,
    quantization_params,
    quantization_report,
    quantize_model,
)

BITS = {"dw": (3, 4), "c2": (2, 2), "d1": (5, 3)}


def _stripes(n, seed):
    """3 classes: horizontal stripes, vertical stripes, checkerboard."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    i, j = np.meshgrid(np.arange(10), np.arange(10), indexing="ij")
    x = np.empty((n, 10, 10, 1), np.float32)
    for k in range(n):
        period = rng.integers(2, 4)
        phase = rng.integers(0, period)
        pat = [(i + phase) // 1 % period == 0, (j + phase) % period == 0,
               (i + j + phase) % 2 == 0][y[k]]
        x[k, ..., 0] = 0.8 * pat + rng.uniform(0, 0.3, (10, 10))
    return x, y


def _float_model():
    keras.utils.set_random_seed(3)
    inp = keras.Input((10, 10, 1), name="img")
    h = keras.layers.Conv2D(8, 3, padding="same", use_bias=False,
                            name="c1")(inp)
    h = keras.layers.BatchNormalization(name="bn1")(h)
    h1 = keras.layers.ReLU(name="r1")(h)
    h = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(h1)
    h = keras.layers.ReLU(name="r2")(h)
    h = keras.layers.Conv2D(8, 3, padding="same", name="c2")(h)
    h = keras.layers.BatchNormalization(name="bn2")(h)
    h = keras.layers.Add(name="add")([h, h1])
    h = keras.layers.ReLU(name="r3")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    h = keras.layers.Dense(12, activation="relu", name="d1")(h)
    out = keras.layers.Dense(3, name="logits")(h)
    return keras.Model(inp, out)


def _np(t):
    return keras.ops.convert_to_numpy(t)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Trains the QAT model, exports it; returns numpy facts only."""
    x, y = _stripes(384, 0)
    xv, _ = _stripes(256, 1)
    q = quantize_model(_float_model(), bits=BITS)
    q.compile(keras.optimizers.Adam(1e-2),
              keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"], jit_compile=False)
    hist = q.fit(x, y, batch_size=32, epochs=4, verbose=0)
    path = str(tmp_path_factory.mktemp("qat") / "qat_int8.tflite")
    report = export_tflite(q, path, quantization="int8", verify_data=xv)
    params = quantization_params(q)
    grids = {}
    for layer in q.layers:
        iq = getattr(layer, "input_quantizer", None)
        if iq is not None and iq.calibrated:
            grids[layer.name] = iq.numpy_grid()
    biases = {}
    for name in params:
        layer = q.get_layer(name)
        if getattr(layer, "use_bias", False):
            biases[name] = (layer.quantized_bias(), _np(layer.bias))
    float_io = convert_int8(q, io_type="float32")
    out = {"path": path, "report": report, "params": params, "grids": grids,
           "biases": biases, "xv": xv, "keras": _np(q(xv, training=False)),
           "train_acc": hist.history["accuracy"][-1], "float_io": float_io,
           "bits": dict(quantization_report(q).quantized)}
    keras.backend.clear_session()
    return out


def _tensors(path):
    interp, _ = make_interpreter(path)
    out = []
    for d in interp.get_tensor_details():
        try:
            value = interp.get_tensor(d["index"])
        except ValueError:
            value = None
        out.append((d, value))
    return interp, out


def _tflite_layout(cls, codes):
    """QAT integer codes in the layout TFLite stores the weights in."""
    if cls == "QuantConv2D":  # (kh, kw, in, out) -> (out, kh, kw, in)
        return np.transpose(codes, (3, 0, 1, 2))
    if cls == "QuantDepthwiseConv2D":  # (kh, kw, in, m) -> (1, kh, kw, in*m)
        kh, kw, cin, m = codes.shape
        return codes.reshape(1, kh, kw, cin * m)
    # QuantDense is emitted as a 1x1 CONV_2D: (in, out) -> (out, 1, 1, in)
    return np.transpose(codes, (1, 0))[:, None, None, :]


def _weight_tensors(exported):
    """{layer: (details, int8 values)} found by their integer values."""
    _, tensors = _tensors(exported["path"])
    found = {}
    for name, p in exported["params"].items():
        if "codes" not in p:
            continue
        want = _tflite_layout(p["type"], p["codes"]) * code_multiplier(
            p["codes"])
        for d, v in tensors:
            if (v is not None and d["dtype"] == np.int8
                    and v.shape == want.shape and np.array_equal(v, want)):
                found[name] = (d, v)
    return found


@pytest.mark.slow
def test_qat_model_learned_the_task(exported):
    assert exported["train_acc"] > 0.9
    assert exported["bits"]["c1"] == (8, 8)
    assert exported["bits"]["logits"] == (8, 8)
    assert exported["bits"]["c2"] == (2, 2)


def test_file_is_full_integer(exported):
    interp, tensors = _tensors(exported["path"])
    assert interp.get_input_details()[0]["dtype"] == np.int8
    assert interp.get_output_details()[0]["dtype"] == np.int8
    dtypes = {np.dtype(d["dtype"]) for d, _ in tensors}
    assert dtypes <= {np.dtype(np.int8), np.dtype(np.int32)}, dtypes
    ops = {op["op_name"] for op in interp._get_ops_details()}
    assert "DEQUANTIZE" not in ops and "CONV_2D" in ops
    # int32 tensors are biases and shape constants only
    for d, v in tensors:
        if d["dtype"] == np.int32 and v is not None:
            assert v.ndim == 1


def test_weights_are_the_qat_integer_codes_and_scales(exported):
    found = _weight_tensors(exported)
    weighted = {n for n, p in exported["params"].items() if "codes" in p}
    assert weighted == {"c1", "dw", "c2", "d1", "logits"}
    assert set(found) == weighted  # every layer's codes, exactly
    for name, (d, v) in found.items():
        qp = d["quantization_parameters"]
        p = exported["params"][name]
        m = code_multiplier(p["codes"])  # 127 // max|codes|: XNNPACK's limit
        np.testing.assert_allclose(qp["scales"], p["scale"] / m,
                                   rtol=1e-6, err_msg=name)
        assert np.all(qp["zero_points"] == 0)
        assert np.abs(v).max() <= 127


@pytest.mark.parametrize("name", ["dw", "c2", "d1", "c1", "logits"])
def test_low_bit_layers_store_at_most_2b_minus_1_levels(exported, name):
    w_bits = exported["bits"][name][0]
    d, v = _weight_tensors(exported)[name]
    axis = d["quantization_parameters"]["quantized_dimension"]
    rows = np.moveaxis(v, axis, 0).reshape(v.shape[axis], -1)
    levels = [np.unique(r).size for r in rows]
    assert max(levels) <= 2 ** w_bits - 1, (name, levels)
    qmax = 2 ** (w_bits - 1) - 1
    m = code_multiplier(exported["params"][name]["codes"])
    assert m * qmax <= 127 < 2 * m * qmax  # the codes times a power of 2
    assert np.all(v % m == 0) and np.abs(v).max() <= 127
    if w_bits < 8:  # the low-bit grid is used, not a 2-level degenerate one
        assert max(levels) > 2
    # tflite_weight_levels reports the same counts for this tensor
    assert tflite_weight_levels(exported["path"])[d["name"]] == levels


def test_activation_ranges_come_from_the_qat_model(exported):
    # No representative data was given: every scale / zero point in the
    # file must be one of the QAT quantizers' grids (int8 zp = z - 128).
    interp, tensors = _tensors(exported["path"])
    qat = [(s, z - 128) for s, z in exported["grids"].values()]
    seen = set()
    for d, _ in tensors:
        s, z = d["quantization"]
        if d["dtype"] != np.int8 or s == 0:  # per-channel weights: s == 0
            continue
        match = [i for i, (qs, qz) in enumerate(qat)
                 if abs(s - qs) <= 1e-6 * qs and z == qz]
        assert match, f"{d['name']}: scale {s}, zero point {z} not from QAT"
        seen.update(match)
    assert seen == set(range(len(qat)))  # and every QAT grid is used
    s, z = interp.get_input_details()[0]["quantization"]
    qs, qz = exported["grids"]["c1"]
    assert s == pytest.approx(qs, rel=1e-6) and z == qz - 128


def test_bias_is_on_the_accumulator_grid_in_qat_and_file(exported):
    grids, params = exported["grids"], exported["params"]
    _, tensors = _tensors(exported["path"])
    by_values = [(d, v) for d, v in tensors if d["dtype"] == np.int32
                 and v is not None and len(
                     d["quantization_parameters"]["scales"]) > 0]
    for name, (qbias, fbias) in exported["biases"].items():
        step = grids[name][0] * params[name]["scale"]
        k = qbias / step
        np.testing.assert_allclose(k, np.round(k), atol=1e-3, err_msg=name)
        assert np.abs(qbias - fbias).max() <= step.max() / 2 + 1e-7
        hits = [(d, v) for d, v in by_values if v.shape == qbias.shape
                and np.allclose(v * d["quantization_parameters"]["scales"],
                                qbias, rtol=1e-5, atol=1e-7)]
        assert hits, f"bias of {name} not stored as in the QAT model"


def test_file_outputs_agree_with_the_qat_model(exported):
    rep = exported["report"]
    assert rep.num_verified == 256 and rep.runtime
    assert rep.top1_agreement >= 0.98
    interp, _ = make_interpreter(exported["path"])
    lite = run_interpreter(interp, exported["xv"])
    keras_out = exported["keras"]
    assert np.mean(lite.argmax(1) == keras_out.argmax(1)) >= 0.98
    out_scale = interp.get_output_details()[0]["quantization"][0]
    err = np.abs(lite - keras_out)
    # Typically identical to an output step. At 2-4 bits a single input
    # code that TFLite's fixed-point requantization rounds the other way
    # (near-ties) moves a logit by several steps, so only the bulk is
    # bounded tightly here; the all-8-bit test below bounds the maximum.
    assert np.median(err) <= 1.01 * out_scale
    assert np.mean(err <= 2.01 * out_scale) >= 0.95
    assert rep.max_abs_error == pytest.approx(err.max(), abs=1e-6)
    # float32 I/O: QUANTIZE / DEQUANTIZE at the ends, same integer core
    interp32, _ = make_interpreter(exported["float_io"])
    assert interp32.get_input_details()[0]["dtype"] == np.float32
    lite32 = run_interpreter(interp32, exported["xv"])
    np.testing.assert_allclose(lite32, lite, atol=1.01 * out_scale)


@pytest.mark.slow
def test_uniform_8bit_file_matches_qat_model_to_one_step(tmp_path):
    x, y = _stripes(256, 0)
    xv, _ = _stripes(256, 2)
    q = quantize_model(_float_model(), bits=8)
    # c1's output feeds dw and the residual Add: it has an 8-bit observer,
    # and dw's 8-bit input quantizer shares its grid (no second rounding)
    dw, obs = q.get_layer("dw"), q.get_layer("c1_aq")
    assert dw.input_quantizer._source is obs.quantizer
    q.compile(keras.optimizers.Adam(1e-2),
              keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              jit_compile=False)
    q.fit(x, y, batch_size=32, epochs=2, verbose=0)
    assert dw.input_quantizer.numpy_grid() == obs.quantizer.numpy_grid()
    h = _np(keras.Model(q.inputs, obs.output)(xv[:8]))
    np.testing.assert_array_equal(_np(dw.input_quantizer(h)), h)
    path = str(tmp_path / "q8.tflite")
    rep = export_tflite(q, path, quantization="int8", verify_data=xv)
    interp, _ = make_interpreter(path)
    out_scale = interp.get_output_details()[0]["quantization"][0]
    assert rep.top1_agreement == 1.0
    assert rep.max_abs_error <= 2.01 * out_scale


@pytest.mark.parametrize("w_bits", [1, 2, 4, 7])
def test_levels_per_bit_width_on_a_calibrated_model(tmp_path, w_bits):
    inp = keras.Input((6, 6, 2))
    h = keras.layers.Conv2D(4, 3, activation="relu", name="first")(inp)
    h = keras.layers.Conv2D(6, 3, name="mid")(h)
    out = keras.layers.Dense(3, name="last")(keras.layers.Flatten()(h))
    x = np.random.default_rng(w_bits).uniform(0, 1, (32, 6, 6, 2)).astype(
        "float32")
    q = quantize_model(keras.Model(inp, out), bits={"mid": (w_bits, 4)})
    calibrate(q, x)
    path = str(tmp_path / "m.tflite")
    rep = export_tflite(q, path, quantization="int8", verify_data=x)
    codes = quantization_params(q)["mid"]["codes"]
    levels = next(v for k, v in tflite_weight_levels(path).items()
                  if "mid" in k)
    limit = 2 if w_bits == 1 else 2 ** w_bits - 1  # 1 bit: sign(w)*mean|w|
    assert max(levels) <= limit
    assert levels == [np.unique(codes[..., c]).size for c in range(6)]
    assert rep.top1_agreement >= 0.9


# -- errors -------------------------------------------------------------------

@pytest.mark.parametrize("bits", [0, 9, 16, -4, 2.5, True, "8", (4, 12),
                                  {"c2": (0, 4)}])
def test_bits_outside_1_to_8_or_32_raise(bits):
    with pytest.raises(ValueError, match="bits") as info:
        quantize_model(_float_model(), bits=bits)
    msg = str(info.value)
    assert "[1, 8] or 32" in msg and "Received" in msg


def test_bits_32_keeps_float_but_refuses_int8(tmp_path):
    q = quantize_model(_float_model(), bits={"c2": (32, 32)})
    assert type(q.get_layer("c2")).__name__ == "QuantConv2D"
    assert q.get_layer("c2").weight_quantizer is None
    calibrate(q, _stripes(16, 0)[0])
    with pytest.raises(ValueError, match="float weights"):
        export_tflite(q, str(tmp_path / "m.tflite"), quantization="int8")


def test_never_built_model_raises():
    seq = keras.Sequential([keras.layers.Conv2D(2, 3),
                            keras.layers.Flatten(), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="never built"):
        quantize_model(seq, bits=4)
    with pytest.raises(ValueError, match="never built"):
        dnas.build_supernet(seq)
    seq.build((None, 6, 6, 1))  # once built it quantizes
    assert quantization_report(quantize_model(seq, bits=4)).quantized


def test_int8_export_without_calibration_raises(tmp_path):
    q = quantize_model(_float_model(), bits=4)
    path = str(tmp_path / "m.tflite")
    with pytest.raises(ValueError, match="calibrate") as info:
        export_tflite(q, path, quantization="int8")
    assert "c1" in str(info.value)  # names the uncalibrated layers
    assert not os.path.exists(path)
    # a float model needs representative data for int8
    with pytest.raises(ValueError, match="calibration_data"):
        export_tflite(_float_model(), path, quantization="int8")


def test_supernet_export_raises(tmp_path):
    sn = dnas.build_supernet(_float_model(), candidates=[(2, 4), (8, 8)])
    calibrate(sn, _stripes(16, 0)[0])
    with pytest.raises(ValueError, match="derive"):
        export_tflite(sn, str(tmp_path / "m.tflite"), quantization="int8")
