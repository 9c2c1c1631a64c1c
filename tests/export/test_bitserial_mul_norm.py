"""The bit-serial IR's ``mul`` op (TFLite's int8 MUL, with the
squeeze-excite broadcast) and Keras ``Normalization`` in the exporter.

Random IRs with a squeeze-excite block (a gate of shape (C,), (1, C) or
(1, 1, C) times a feature map, and a same-shape mul): simulator == integer
reference bit for bit; an SE block through ``quantize_model`` exported and
verified (8 bits on BISMO, 4 bits on Bit Fusion); the mul's output grid
rules; a Normalization after a Rescaling (a table on a quantized tensor)
and on the float input (folded into the input rescale); the descriptor
round trip and its clear errors.
"""

import json

import keras
import numpy as np
import pytest

from tfcomp.export.bitserial import (
    SCHEMA_VERSION,
    DescriptorError,
    IRBuilder,
    QuantParams,
    build_ir_from_keras,
    export_bitserial,
    integer_reference,
    load_descriptor,
    load_schema,
    random_ir,
    simulate_bitserial,
    validate_descriptor,
    write_descriptor,
)
from tfcomp.export.bitserial.kernels import mul_op
from tfcomp.layers import QuantActivation, QuantConv2D, QuantDense
from tfcomp.quantization import calibrate, quantization_params, quantize_model

L = keras.layers


def _x(shape, n=3, seed=0, lo=-1.2, hi=1.2):
    return np.random.default_rng(seed).uniform(lo, hi, (n,) + tuple(shape))


def _muls(ir):
    return [op for op in ir.ops if op.op == "mul"]


# ------------------------------------------------------------ IR and kernel


@pytest.mark.parametrize("target", ["bismo", "bitfusion"])
@pytest.mark.parametrize("seed", range(4))
def test_random_mul_ir_simulator_equals_reference(tmp_path, target, seed):
    ir = random_ir(seed=seed, bits=(2, 8), mul=True, concat=seed % 2 == 0)
    assert [op.name for op in _muls(ir)] == ["se_mul", "mul"]
    x = _x(ir.input_shape, seed=seed)
    path = str(tmp_path / "net.json")
    desc = write_descriptor(ir, path, hardware=target)
    assert desc["schema_version"] == 4
    want, t = integer_reference(ir, x, return_all=True)
    np.testing.assert_array_equal(simulate_bitserial(path, x), want)
    assert len(np.unique(want)) > 3
    assert len(np.unique(t["se_mul"])) > 1


def test_random_irs_cover_mul_forms():
    gates, gate_first, clamped = set(), set(), set()
    for seed in range(10):
        ir = random_ir(seed=seed, mul=True)
        shapes = ir.shapes()
        se = ir.op("se_mul")
        gate = [n for n in se.inputs if shapes[n] != shapes["se_mul"]]
        gates.add(shapes[gate[0]])
        gate_first.add(se.inputs[0] == gate[0])
        clamped.update(op.act_min > op.out.qmin for op in _muls(ir))
        assert shapes[ir.op("mul").inputs[0]] == shapes[ir.op("mul").inputs[1]]
    c = 8
    assert gates == {(c,), (1, c), (1, 1, c)}
    assert gate_first == {True, False} and clamped == {True, False}
    chosen = [bool(_muls(random_ir(seed=s, mul=None))) for s in range(8)]
    assert any(chosen) and not all(chosen)
    assert not _muls(random_ir(seed=0))  # off by default: version 1


def test_mul_is_tflite_mul_and_gates_broadcast():
    """Every gate form, either order, equals the product with the gate
    tiled; the codes are the real product rounded once onto the output
    grid (half up) and clamped (a fused ReLU)."""
    qx, qg = QuantParams(8, False, 0.05, 7), QuantParams(8, False, 1 / 256)
    out = QuantParams(6, False, 0.02, 3)
    b = IRBuilder((3, 4, 6), qx)
    b.requantize("gate_grid", "input", qg)
    b.mul("m", "input", "gate_grid", out, relu=True)
    ir = b.build()
    a = ir.op("m").attrs
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (5, 3, 4, 6))
    g = rng.integers(0, 256, (5, 6))
    tiled = np.broadcast_to(g[:, None, None, :], x.shape)
    want = mul_op(x, tiled, 7, 0, a["multiplier"], a["shift"], 3, 3, 63)
    for gate in (g, g[:, None, :], g[:, None, None, :]):
        for u, v, zu, zv in ((x, gate, 7, 0), (gate, x, 0, 7)):
            np.testing.assert_array_equal(mul_op(
                u, v, zu, zv, a["multiplier"], a["shift"], 3, 3, 63), want)
    real = qx.dequantize(x).astype(np.float64) * qg.dequantize(tiled)
    exact = np.clip(out.quantize(real), 3, 63)
    assert np.mean(want == exact) >= 0.999
    assert np.abs(want - exact).max() <= 1  # a tie at most
    assert want.min() == 3 and want.max() == 63  # both clamps
    # the reference runs that kernel on the IR's tensors
    y, t = integer_reference(ir, _x((3, 4, 6), n=4, seed=2, lo=-0.3,
                                    hi=12.0), return_all=True)
    np.testing.assert_array_equal(y, mul_op(
        t["input"], t["gate_grid"], 7, 0, a["multiplier"], a["shift"], 3,
        3, 63))


def test_mul_ir_errors_name_the_layer():
    b = IRBuilder((4, 4, 8), QuantParams(8, False, 0.1))
    q = b.quant("input")
    b.max_pool("row", "input", (1, 4))  # (4, 1, 8)
    with pytest.raises(ValueError, match=r"'bad' \(mul\).*per-channel gate"
                       r".*\(4, 4, 8\) and \(4, 1, 8\)"):
        b.mul("bad", "input", "row", q)
    b.global_avg_pool("c", "input")
    b.reshape("c4", "c", (2, 4))
    with pytest.raises(ValueError, match=r"'bad2' \(mul\).*\(2, 4\)"):
        b.mul("bad2", "input", "c4", q)
    wide = IRBuilder((4,), QuantParams(16, False, 0.1))
    wide.mul("sq", "input", "input", QuantParams(16, False, 0.1))
    with pytest.raises(ValueError, match="'sq'.*int32 product .*overflow"):
        wide.build()
    b.mul("ok", "input", "c", q)
    ir = b.build()
    del ir.op("ok").attrs["shift"]
    with pytest.raises(ValueError, match=r"'ok': mul needs attrs\['shift'\]"):
        ir.validate()


# ------------------------------------------------------------ Keras models


def _se_block():
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inp)
    x = L.DepthwiseConv2D(3, padding="same", activation="relu",
                          name="dw")(x)
    s = L.GlobalAveragePooling2D(keepdims=True, name="squeeze")(x)
    s = L.Conv2D(4, 1, activation="relu", name="reduce")(s)
    s = L.Conv2D(8, 1, activation="sigmoid", name="expand")(s)
    x = L.Multiply(name="excite")([x, s])
    x = L.Conv2D(8, 3, strides=2, padding="same", activation="relu",
                 name="project")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(5, activation="softmax", name="logits")(x)
    return keras.Model(inp, out, name="se_mini")


def _qat(build, bits, x, seed=0):
    keras.utils.set_random_seed(seed)
    qat = quantize_model(build(), bits=bits)
    calibrate(qat, x[:16])
    return qat


def _verified(qat, x, path, target="bismo"):
    report = export_bitserial(qat, path, hardware=target, verify_x=x)
    assert report.simulator_exact is True, report
    assert report.num_verified == len(x)
    assert report.max_abs_error <= 1e-5, report  # the QAT model's codes
    assert report.top1_agreement >= 0.99, report
    return build_ir_from_keras(qat)


@pytest.mark.parametrize("bits,target", [(8, "bismo"), (4, "bitfusion")])
def test_se_block_export_is_verified(tmp_path, bits, target):
    x = _x((8, 8, 3), n=24, seed=1, lo=-1.0, hi=1.0).astype("float32")
    qat = _qat(_se_block, bits, x)
    ir = _verified(qat, x[16:], str(tmp_path / "se.json"), target)
    (mul,) = _muls(ir)
    shapes = ir.shapes()
    assert mul.name == "excite" and shapes["excite"] == (8, 8, 8)
    feat, gate = mul.inputs
    assert shapes[feat] == (8, 8, 8) and shapes[gate] == (1, 1, 8)
    # the sigmoid is a table onto LOGISTIC's fixed grid (1/256)
    assert ir.op(gate).op == "lut"
    assert ir.quant(gate).scale == 1 / 256 and ir.quant(gate).zero_point == 0
    # the product lands on the input grid of the conv reading it
    s, z, b = quantization_params(qat)["project"]["input"]
    assert (mul.out.scale, mul.out.zero_point, mul.out.bits) == (
        pytest.approx(s), z, b) and b == bits
    assert ir.op("project").inputs == ["excite"]
    with open(tmp_path / "se.json") as f:
        assert json.load(f)["schema_version"] == 4


def _two_grid_mul(after):
    """Two observers of the input (5 and 7 bits) multiplied, then
    ``after``: "relu_quant" (ReLU + 6-bit QuantActivation) or "pool" (max
    pooling, no quantizer)."""
    inp = keras.Input((4, 4, 2))
    q = QuantActivation(8, name="qin")(inp)
    a = QuantActivation(5, name="qa")(q)
    g = QuantActivation(7, name="qg")(L.GlobalAveragePooling2D(
        keepdims=True, name="pool_g")(q))
    m = L.Multiply(name="m")([g, a])  # the gate first
    if after == "relu_quant":
        m = QuantActivation(6, name="post")(L.ReLU(name="relu")(m))
    else:
        m = L.MaxPooling2D(2, name="mp")(m)
    out = QuantDense(3, w_bits=8, a_bits=8, name="fc")(L.Flatten()(m))
    return keras.Model(inp, out)


def test_mul_grid_follows_the_quantizer_after_it_or_is_calibrated():
    x = _x((4, 4, 2), n=32, seed=2, lo=-1.0, hi=1.0).astype("float32")
    model = _two_grid_mul("relu_quant")
    calibrate(model, x)
    ir = build_ir_from_keras(model, x)
    m = ir.op("m")
    assert m.out.bits == 6 and m.act_min == m.out.zero_point  # fused ReLU
    assert ir.shapes()[m.inputs[0]] == (1, 1, 2)
    _, t = integer_reference(ir, x, return_all=True)
    want = keras.ops.convert_to_numpy(keras.Model(
        model.inputs, model.get_layer("post").output)(x, training=False))
    err = np.abs(m.out.dequantize(t["m"]) - want)
    assert np.mean(err <= 1e-6) >= 0.99 and err.max() <= m.out.scale * 1.01
    model = _two_grid_mul("pool")
    calibrate(model, x)
    ir = build_ir_from_keras(model, x)  # no quantizer: calibrated 8 bits
    assert ir.op("m").out.bits == 8 and ir.op("mp").inputs == ["m"]


def test_bad_multiplies_are_clear_errors(tmp_path):
    inp = keras.Input((4, 4, 8))
    a = QuantActivation(8, name="qa")(inp)
    row = L.AveragePooling2D((1, 4), name="row")(a)  # (4, 1, 8)
    bad = L.Multiply(name="se_bad")([a, QuantActivation(8, name="qr")(row)])
    model = keras.Model(inp, QuantDense(3, name="fc")(L.Flatten()(bad)))
    x = _x((4, 4, 8), n=8).astype("float32")
    calibrate(model, x)
    with pytest.raises(ValueError, match=r"'se_bad' \(Multiply\).*per-chan"
                       r"nel gate.*\(4, 4, 8\) and \(4, 1, 8\)"):
        export_bitserial(model, str(tmp_path / "m.json"), verify_x=x)
    three = L.Multiply(name="m3")([a, a, a])
    model = keras.Model(inp, QuantDense(3, name="fc3")(L.Flatten()(three)))
    calibrate(model, x)
    with pytest.raises(ValueError, match=r"'m3' \(Multiply\) of 3 tensors; "
                       "only 2"):
        build_ir_from_keras(model, x)
    assert not list(tmp_path.iterdir())


def _normalized_net(data):
    """Input -> Rescaling(1/255) -> Normalization (adapted) -> conv ->
    Normalization(invert, per channel) -> conv -> head."""
    inp = keras.Input((8, 8, 3))
    h = L.Rescaling(1 / 255, name="rescale")(inp)
    norm = L.Normalization(name="norm")
    norm.adapt(data / 255.0)
    h = norm(h)
    h = L.Conv2D(6, 3, padding="same", activation="relu", name="c1")(h)
    h = L.Normalization(mean=np.linspace(0.1, 0.6, 6), variance=np.linspace(
        0.5, 3.0, 6), invert=True, name="denorm")(h)
    h = L.Conv2D(6, 3, padding="same", activation="relu", name="c2")(h)
    h = L.GlobalAveragePooling2D(name="gap")(h)
    return keras.Model(inp, L.Dense(4, name="logits")(h))


def test_normalization_model_export_is_verified(tmp_path):
    data = np.random.default_rng(3).integers(0, 256, (40, 8, 8, 3)).astype(
        "float32")
    qat = _qat(lambda: _normalized_net(data), 8, data)
    ir = _verified(qat, data[16:], str(tmp_path / "norm.json"))
    # quantize_model makes the Rescaling and each Normalization (a
    # per-channel x * scale + offset) an 8-bit 1x1 depthwise conv, which
    # int8 TFLite runs as one integer op too
    for name in ("rescale", "norm", "denorm"):
        assert ir.op(name).op == "depthwise_conv2d", name
    assert ir.op("c1").inputs == ["norm"]


def _folded_net(data, rescale, invert):
    """A Normalization on the float model input (after a Rescaling or
    not), read by a QAT conv's input quantizer: folded."""
    inp = keras.Input((8, 8, 3))
    h = L.Rescaling(1 / 255, name="rescale")(inp) if rescale else inp
    norm = L.Normalization(invert=invert, name="norm")
    norm.adapt(data / 255.0 if rescale else data)
    h = norm(h)
    h = QuantConv2D(8, 3, padding="same", activation="relu", w_bits=4,
                    a_bits=8, input_quantizer="signed", name="c1")(h)
    h = QuantActivation(8, name="c1_aq")(h)
    h = L.GlobalAveragePooling2D(name="gap")(h)
    h = QuantDense(4, w_bits=8, a_bits=8, name="fc")(h)
    return keras.Model(inp, QuantActivation(8, name="out_aq")(h)), norm


@pytest.mark.parametrize("rescale,invert", [(True, False), (False, True)])
def test_normalization_on_the_input_folds_into_the_rescale(
        tmp_path, rescale, invert):
    data = np.random.default_rng(4).integers(0, 256, (48, 8, 8, 3)).astype(
        "float32")
    keras.utils.set_random_seed(0)
    model, norm = _folded_net(data, rescale, invert)
    calibrate(model, data[:32])
    report = export_bitserial(model, str(tmp_path / "f.json"),
                              verify_x=data[32:])
    ir = build_ir_from_keras(model)
    assert ir.ops[0].name == "c1" and ir.ops[0].inputs == ["input"]
    mean = keras.ops.convert_to_numpy(norm.mean).reshape(-1)
    std = np.sqrt(keras.ops.convert_to_numpy(norm.variance).reshape(-1))
    s0 = 1 / 255 if rescale else 1.0
    scale, offset = ir.input_rescale
    if invert:
        np.testing.assert_allclose(scale, s0 * std, rtol=1e-6)
        np.testing.assert_allclose(offset, mean, rtol=1e-6)
    else:
        np.testing.assert_allclose(scale, s0 / std, rtol=1e-6)
        np.testing.assert_allclose(offset, -mean / std, rtol=1e-6)
    assert any("norm: Normalization folded" in n for n in ir.notes)
    # the input codes are the ones the conv's input quantizer computes
    _, t = integer_reference(ir, data[32:], return_all=True)
    normed = keras.ops.convert_to_numpy(keras.Model(
        model.inputs, norm.output)(data[32:]))
    np.testing.assert_array_equal(t["input"],
                                  ir.input_quant.quantize(normed))
    assert report.simulator_exact is True and report.top1_agreement == 1.0
    step = ir.quant(ir.output).scale
    assert report.max_abs_error <= 1e-3 * step, report
    with open(tmp_path / "f.json") as f:
        assert len(json.load(f)["input"]["rescale"]["scale"]) == 3


def test_normalization_over_other_axes_is_refused():
    data = _x((4, 4, 2), n=8).astype("float32")
    inp = keras.Input((4, 4, 2))
    norm = L.Normalization(axis=(1, -1), name="norm_hc")
    norm.adapt(data)
    h = QuantConv2D(3, 1, w_bits=8, a_bits=8, input_quantizer="signed",
                    name="c")(norm(inp))
    model = keras.Model(inp, h)
    calibrate(model, data)
    with pytest.raises(ValueError, match=r"'norm_hc' \(Normalization\).*"
                       r"per channel.*axis=\(1, -1\)"):
        build_ir_from_keras(model)


# ------------------------------------------------------------ descriptor


@pytest.fixture(scope="module")
def mul_ir():
    for seed in range(20):  # a (1, 1, C) gate, second input
        ir = random_ir(seed=seed, mul=True, head="gap")
        if ir.shapes()[ir.op("se_mul").inputs[1]] == (1, 1, 8):
            return ir
    raise AssertionError("no random IR with a (1, 1, C) gate")


def test_descriptor_round_trip(mul_ir, tmp_path):
    path = str(tmp_path / "mul.json")
    desc = write_descriptor(mul_ir, path, hardware="bitfusion")
    loaded, _ = load_descriptor(path)
    assert loaded == desc and loaded["schema_version"] == 4
    layers = {la["name"]: la for la in loaded["layers"]}
    for op in _muls(mul_ir):
        la = layers[op.name]
        assert la["op"] == "mul" and la["engine"] == "host"
        assert la["inputs"] == op.inputs
        assert la["input_quants"] == [mul_ir.quant(n).to_dict()
                                      for n in op.inputs]
        assert la["input_shapes"] == [list(mul_ir.shapes()[n])
                                      for n in op.inputs]
        assert la["requant"] == {"multiplier": op.attrs["multiplier"],
                                 "shift": op.attrs["shift"],
                                 "rounding": "tflite_single_rounding"}
        assert (la["act_min"], la["act_max"]) == (op.act_min, op.act_max)
    assert layers["se_mul"]["input_shapes"][1] == [1, 1, 8]
    x = _x(mul_ir.input_shape, seed=5)
    np.testing.assert_array_equal(simulate_bitserial(path, x),
                                  integer_reference(mul_ir, x))
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft7Validator.check_schema(load_schema())
    jsonschema.validate(desc, load_schema())


def _bad(desc, edit):
    bad = json.loads(json.dumps(desc))
    i = next(i for i, la in enumerate(bad["layers"]) if la["name"] ==
             "se_mul")
    edit(bad, bad["layers"][i])
    with pytest.raises(DescriptorError) as err:
        validate_descriptor(bad)
    return str(err.value)


def test_malformed_mul_descriptor_is_a_clear_error(mul_ir, tmp_path):
    desc = write_descriptor(mul_ir, str(tmp_path / "mul.json"))
    validate_descriptor(desc)

    def drop_quant(d, la):
        la["input_quants"].pop()
    assert "'se_mul'): input_quants has 1 entries, expected 2 (one per " \
        "input)" in _bad(desc, drop_quant)

    def third_input(d, la):
        for key in ("inputs", "input_quants", "input_shapes"):
            la[key].append(la[key][0])
    assert "inputs: allows at most 2 items" in _bad(desc, third_input)

    def wrong_shape(d, la):
        la["output_shape"][0] += 1
    assert "is not the inputs' broadcast shape" in _bad(desc, wrong_shape)

    def row_gate(d, la):
        la["input_shapes"][1] = [4, 1, 8]
    msg = _bad(desc, row_gate)
    assert "(mul): the inputs must have one shape, or one must be a " \
        "per-channel gate" in msg and "(4, 1, 8)" in msg

    def wide(d, la):
        for q in la["input_quants"]:
            q.update(bits=16, signed=False, zero_point=0)
    assert "int32 product of the inputs may overflow" in _bad(desc, wide)

    def no_requant(d, la):
        del la["requant"]["shift"]
    assert "shift" in _bad(desc, no_requant)

    def old_version(d, la):
        d["schema_version"] = 3
    assert "mul needs schema_version >= 4" in _bad(desc, old_version)
    assert SCHEMA_VERSION >= 4
