"""The bit-serial IR's ``concat`` op (TFLite's int8 CONCATENATION).

Random IRs with a concat: simulator == integer reference bit for bit;
U-Net-like and DenseNet-like Keras models through ``quantize_model`` export
verified (copied inputs at 8 bits, requantized ones when the layer reading
the concatenation has fewer bits); the output grid rules of the importer
(the quantizer after it, else the inputs' shared grid, else a calibrated
one; a fused ReLU); the descriptor round trip and its clear errors.
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
from tfcomp.export.bitserial.kernels import concat_op
from tfcomp.layers import QuantActivation, QuantDense
from tfcomp.quantization import calibrate, quantize_model

L = keras.layers


def _x(shape, n=3, seed=0, lo=-1.2, hi=1.2):
    return np.random.default_rng(seed).uniform(lo, hi, (n,) + tuple(shape))


def _concats(ir):
    return [op for op in ir.ops if op.op == "concat"]


# ------------------------------------------------------------ IR and kernel


@pytest.mark.parametrize("target", ["bismo", "bitfusion"])
@pytest.mark.parametrize("seed", range(4))
def test_random_concat_ir_simulator_equals_reference(tmp_path, target, seed):
    ir = random_ir(seed=seed, bits=(2, 8), concat=True)
    assert len(_concats(ir)) == 1
    x = _x(ir.input_shape, seed=seed)
    path = str(tmp_path / "net.json")
    write_descriptor(ir, path, hardware=target)
    want = integer_reference(ir, x)
    np.testing.assert_array_equal(simulate_bitserial(path, x), want)
    assert len(np.unique(want)) > 3


def test_random_irs_cover_concat_forms():
    inputs, copied, clamped = set(), set(), set()
    for seed in range(10):
        ir = random_ir(seed=seed, concat=True)
        op = _concats(ir)[0]
        inputs.add(len(op.inputs))
        copied.update(m is None for m in op.attrs["multipliers"])
        clamped.add(op.act_min > op.out.qmin)
    assert inputs == {2, 3} and copied == {True, False}
    assert clamped == {True, False}
    chosen = [bool(_concats(random_ir(seed=s, concat=None)))
              for s in range(8)]
    assert any(chosen) and not all(chosen)
    assert not _concats(random_ir(seed=0))  # off by default: version 1


def test_concat_copies_on_grid_inputs_and_requantizes_others():
    b = IRBuilder((2, 2, 1), QuantParams(8, True, 0.05))
    out = QuantParams(4, False, 0.1, 3)
    b.requantize("a", "input", out)                      # on the out grid
    b.requantize("c", "input", QuantParams(8, False, 0.02, 100))
    b.concat("cat", ["a", "c", "a"], out)
    ir = b.build()
    assert ir.shapes()["cat"] == (2, 2, 3)
    assert ir.op("cat").attrs["multipliers"][::2] == [None, None]
    x = _x((2, 2, 1), n=16, seed=1, lo=-1.0, hi=1.0)
    y, t = integer_reference(ir, x, return_all=True)
    np.testing.assert_array_equal(y[..., :1], t["a"])
    np.testing.assert_array_equal(y[..., 2:], t["a"])
    real = ir.quant("c").dequantize(t["c"])
    np.testing.assert_array_equal(y[..., 1:2], out.quantize(real))
    # kernel: None copies (clamped), else MBQM onto the output grid
    got = concat_op([np.array([[20]]), np.array([[7]])], [0, 5],
                    [None, 1 << 30], [None, 1], 1, 0, 15)
    np.testing.assert_array_equal(got, [[15, 3]])


def test_concat_ir_errors_name_the_layer():
    b = IRBuilder((4, 4, 2), QuantParams(8, False, 0.1))
    q = b.quant("input")
    with pytest.raises(ValueError, match="'one'.*2 or more inputs"):
        b.concat("one", ["input"], q)
    b.max_pool("mp", "input", 2)
    with pytest.raises(ValueError, match="'bad'.*except the last"):
        b.concat("bad", ["input", "mp"], q)
    with pytest.raises(TypeError, match="list of tensor names"):
        b.concat("str", "input", q)
    b.concat("ok", ["input", "input"], q)
    ir = b.build()
    ir.op("ok").attrs["multipliers"] = [None]
    with pytest.raises(ValueError, match="'ok'.*one per input"):
        ir.validate()
    ir.op("ok").out = QuantParams(8, False, 0.2)
    ir.op("ok").attrs["multipliers"] = [None, None]
    with pytest.raises(ValueError, match="'ok'.*on the output grid"):
        ir.validate()


# ------------------------------------------------------------ Keras models


def _unet():
    inp = keras.Input((8, 8, 2))
    c1 = L.Conv2D(4, 3, padding="same", use_bias=False, name="c1")(inp)
    c1 = L.Activation("relu")(L.BatchNormalization(name="bn1")(c1))
    p1 = L.MaxPooling2D(2, name="pool")(c1)
    c2 = L.Conv2D(8, 3, padding="same", activation="relu", name="c2")(p1)
    u1 = L.Conv2DTranspose(4, 3, strides=2, padding="same", name="up")(c2)
    u1 = L.Concatenate(name="skip")([u1, c1])
    c3 = L.Conv2D(4, 3, padding="same", activation="relu", name="c3")(u1)
    out = L.Conv2D(3, 1, activation="softmax", name="pixels")(c3)
    return keras.Model(inp, out, name="unet_mini")


def _dense_block():
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(6, 3, padding="same", activation="relu", name="stem")(inp)
    a = L.Conv2D(4, 3, padding="same", name="a")(x)
    b = L.Conv2D(4, 1, name="b")(x)
    x = L.Concatenate(name="cat3")([x, a, b])
    x = L.Activation("relu")(L.BatchNormalization(name="bn")(x))
    c = L.Conv2D(4, 3, padding="same", activation="relu", name="c")(x)
    x = L.Concatenate(name="cat2")([x, c])
    x = L.MaxPooling2D(2, name="mp")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(5, activation="softmax", name="logits")(x)
    return keras.Model(inp, out, name="dense_mini")


def _qat(build, bits, shape, seed=0):
    keras.utils.set_random_seed(seed)
    model = build()
    rng = np.random.default_rng(seed)
    for v in model.weights:  # statistics away from the identity
        name = v.path.split("/")[-1]
        if name in ("gamma", "moving_variance"):
            v.assign(rng.uniform(0.5, 1.5, v.shape).astype("float32"))
        elif name in ("beta", "moving_mean", "bias"):
            v.assign((0.1 * rng.normal(size=v.shape)).astype("float32"))
    qat = quantize_model(model, bits=bits)
    x = rng.uniform(-1, 1, (24,) + shape).astype("float32")
    calibrate(qat, x[:16])
    return qat, x[16:]


def _export(qat, x, path, target="bismo"):
    report = export_bitserial(qat, path, hardware=target, verify_x=x)
    assert report.simulator_exact is True, report
    assert report.num_verified == len(x)
    assert report.max_abs_error <= 1e-5, report  # the QAT model's codes
    assert report.top1_agreement >= 0.99, report
    return build_ir_from_keras(qat)


@pytest.mark.parametrize("bits,target", [(8, "bismo"), (4, "bitfusion")])
def test_unet_export_is_verified(tmp_path, bits, target):
    qat, x = _qat(_unet, bits, (8, 8, 2))
    ir = _export(qat, x, str(tmp_path / "unet.json"), target)
    (cat,) = _concats(ir)
    assert cat.name == "skip" and ir.shapes()["skip"] == (8, 8, 8)
    assert ir.op("c3").inputs == ["skip"]
    assert cat.out == ir.quant("skip")
    # 8 bits: quantize_model puts both inputs on c3's input grid (copies);
    # 4 bits: c3 reads 4-bit codes, the 8-bit inputs are requantized
    copied = [m is None for m in cat.attrs["multipliers"]]
    assert copied == ([True, True] if bits == 8 else [False, False])
    assert cat.out.bits == bits


def test_dense_block_export_is_verified(tmp_path):
    qat, x = _qat(_dense_block, 4, (8, 8, 3))
    ir = _export(qat, x, str(tmp_path / "dense.json"))
    cats = {op.name: op for op in _concats(ir)}
    assert len(cats["cat3"].inputs) == 3 and len(cats["cat2"].inputs) == 2
    assert ir.shapes()["cat3"][-1] == 14 and ir.shapes()["cat2"][-1] == 18
    assert ir.op("bn").op == "depthwise_conv2d"  # BN before a conv
    with open(tmp_path / "dense.json") as f:
        assert json.load(f)["schema_version"] == 3


def _two_grid_model(after):
    """Two observers of the quantized input on different grids (4 and 6
    bits), concatenated; then ``after``: "relu_quant" (ReLU +
    QuantActivation) or "pool" (max pool, no quantizer)."""
    inp = keras.Input((4, 4, 2))
    q = QuantActivation(8, name="qin")(inp)
    a = QuantActivation(4, name="qa")(q)
    b = QuantActivation(6, name="qb")(q)
    c = L.Concatenate(axis=3, name="cat")([a, b])
    if after == "relu_quant":
        c = QuantActivation(6, name="post")(L.ReLU(name="relu")(c))
    else:
        c = L.MaxPooling2D(2, name="mp")(c)
    out = QuantDense(3, w_bits=8, a_bits=8, name="fc")(L.Flatten()(c))
    return keras.Model(inp, out)


def test_concat_grid_follows_the_quantizer_after_it_with_fused_relu():
    model = _two_grid_model("relu_quant")
    x = _x((4, 4, 2), n=32, seed=2, lo=-1.0, hi=1.0).astype("float32")
    calibrate(model, x)
    ir = build_ir_from_keras(model, x)  # x: a grid for the float logits
    cat = ir.op("cat")
    post = model.get_layer("post")
    assert cat.out.bits == 6 and cat.act_min == cat.out.zero_point  # ReLU
    assert all(m is not None for m in cat.attrs["multipliers"])
    _, t = integer_reference(ir, x, return_all=True)
    got = cat.out.dequantize(t["cat"])
    want = keras.ops.convert_to_numpy(keras.Model(
        model.inputs, post.output)(x, training=False))
    err = np.abs(got - want)
    assert np.mean(err <= 1e-6) >= 0.99 and err.max() <= cat.out.scale * 1.01


def test_concat_without_a_quantizer_shares_or_calibrates_a_grid(tmp_path):
    model = _two_grid_model("pool")
    x = _x((4, 4, 2), n=32, seed=3, lo=-1.0, hi=1.0).astype("float32")
    calibrate(model, x)
    ir = build_ir_from_keras(model, x)  # inputs differ: calibrated, 8 bits
    cat = ir.op("cat")
    assert cat.out.bits == 8 and cat.out != ir.quant(cat.inputs[0])
    assert all(m is not None for m in cat.attrs["multipliers"])
    report = export_bitserial(model, str(tmp_path / "g.json"),
                              calibration_data=x, verify_x=x[:8])
    assert report.simulator_exact is True
    # inputs on one grid: the concatenation keeps it, every input copied
    inp = keras.Input((4, 4, 2))
    a = QuantActivation(5, name="qa")(inp)
    c = L.Concatenate(name="cat")([a, L.MaxPooling2D(1, name="id")(a)])
    c = L.MaxPooling2D(2, name="mp")(c)
    shared = keras.Model(inp, QuantDense(3, name="fc")(L.Flatten()(c)))
    calibrate(shared, x)
    ir = build_ir_from_keras(shared, x)
    cat = ir.op("cat")
    assert cat.out == ir.quant(cat.inputs[0]) == ir.quant(cat.inputs[1])
    assert cat.attrs["multipliers"] == [None, None]


def test_concatenate_on_another_axis_is_a_clear_error():
    inp = keras.Input((4, 4, 2))
    a = QuantActivation(8, name="qa")(inp)
    c = L.Concatenate(axis=1, name="cat_h")([a, a])
    model = keras.Model(inp, QuantDense(3, name="fc")(L.Flatten()(c)))
    x = _x((4, 4, 2), n=8).astype("float32")
    calibrate(model, x)
    with pytest.raises(ValueError,
                       match=r"'cat_h' \(Concatenate\).*axis=1"):
        build_ir_from_keras(model)


# ------------------------------------------------------------ descriptor


@pytest.fixture(scope="module")
def concat_ir():
    for seed in range(20):  # a 3-input concat with a copied input
        ir = random_ir(seed=seed, concat=True, head="gap")
        op = _concats(ir)[0]
        if len(op.inputs) == 3 and None in op.attrs["multipliers"]:
            return ir
    raise AssertionError("no random IR with a 3-input concat")


def test_descriptor_round_trip(concat_ir, tmp_path):
    path = str(tmp_path / "cat.json")
    desc = write_descriptor(concat_ir, path)
    loaded, _ = load_descriptor(path)
    assert loaded == desc and loaded["schema_version"] == 3
    (la,) = [la for la in loaded["layers"] if la["op"] == "concat"]
    op = concat_ir.op(la["name"])
    assert la["inputs"] == op.inputs and la["engine"] == "host"
    assert la["input_quants"] == [concat_ir.quant(n).to_dict()
                                  for n in op.inputs]
    assert la["requant"]["input_multipliers"] == op.attrs["multipliers"]
    assert la["requant"]["input_shifts"] == op.attrs["shifts"]
    assert la["output_shape"] == list(concat_ir.shapes()[op.name])
    x = _x(concat_ir.input_shape, seed=5)
    np.testing.assert_array_equal(simulate_bitserial(path, x),
                                  integer_reference(concat_ir, x))
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft7Validator.check_schema(load_schema())
    jsonschema.validate(desc, load_schema())


def _bad(desc, edit):
    bad = json.loads(json.dumps(desc))
    i = next(i for i, la in enumerate(bad["layers"]) if la["op"] == "concat")
    edit(bad, bad["layers"][i])
    with pytest.raises(DescriptorError) as err:
        validate_descriptor(bad)
    return str(err.value)


def test_malformed_concat_descriptor_is_a_clear_error(concat_ir, tmp_path):
    desc = write_descriptor(concat_ir, str(tmp_path / "cat.json"))
    validate_descriptor(desc)
    copied = desc["layers"][[la["op"] for la in desc["layers"]].index(
        "concat")]["requant"]["input_multipliers"].index(None)

    def drop_quant(d, la):
        la["input_quants"].pop()
    assert "input_quants has 2 entries, expected 3 (one per input)" in \
        _bad(desc, drop_quant)

    def short_requant(d, la):
        la["requant"]["input_shifts"].pop()
    assert "input_multipliers / input_shifts have 3 / 2 entries" in \
        _bad(desc, short_requant)

    def off_grid_copy(d, la):
        la["input_quants"][copied]["scale"] *= 2
    msg = _bad(desc, off_grid_copy)
    assert f"input {copied} is copied (null requant)" in msg
    assert f"input_quants[{copied}] is" in msg  # != its producer's

    def half_null(d, la):
        la["requant"]["input_shifts"][copied] = 0
    assert "both be null (a copy) or both integers" in _bad(desc, half_null)

    def wrong_shape(d, la):
        la["output_shape"][-1] += 1
    assert "is not the concatenation of the inputs" in \
        _bad(desc, wrong_shape)

    def one_input(d, la):
        del la["inputs"][1:], la["input_quants"][1:], la["input_shapes"][1:]
    assert "inputs: needs at least 2 items" in _bad(desc, one_input)

    def old_version(d, la):
        d["schema_version"] = 2
    assert "concat needs schema_version >= 3" in _bad(desc, old_version)
    assert SCHEMA_VERSION >= 3
