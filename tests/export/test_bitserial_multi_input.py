"""Bit-serial export of models with several inputs.

Functional models of two inputs (keras.io functional-API style: an image
and a metadata vector joined by Concatenate; two images joined by Add or
Concatenate, one behind a Rescaling) through ``quantize_model``, exported
with the data as ``fit`` takes it: the simulator equals the integer
reference bit for bit and agrees with Keras. The descriptor carries one
entry per input in ``inputs`` (schema version 5, named by the InputLayers);
the simulator takes a list or a dict by name; wrong data is a clear error;
single-input descriptors keep ``input``.
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcomp.export.bitserial import (
    DescriptorError,
    IRBuilder,
    QuantParams,
    build_ir_from_keras,
    export_bitserial,
    integer_reference,
    random_ir,
    simulate_bitserial,
    validate_descriptor,
    write_descriptor,
)
from tfcomp.layers import QuantActivation
from tfcomp.quantization import calibrate, quantize_model

L = keras.layers
N = 24


def _image_meta_model():
    img = keras.Input((16, 16, 3), name="image")
    meta = keras.Input((8,), name="meta")
    x = L.Conv2D(16, 3, padding="same", activation="relu")(img)
    x = L.BatchNormalization()(x)
    x = L.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = L.GlobalAveragePooling2D()(x)
    m = L.Dense(16, activation="relu")(meta)
    h = L.Concatenate()([x, m])
    h = L.Dense(32, activation="relu")(h)
    return keras.Model([img, meta], L.Dense(5)(h))


def _two_images_model(merge):
    a = keras.Input((12, 12, 3), name="left")
    b = keras.Input((12, 12, 3), name="right")
    xa = L.Conv2D(8, 3, padding="same", activation="relu")(a)
    xb = L.Rescaling(1 / 255.0)(b)  # quantize_model: a 1x1 depthwise conv
    xb = L.Conv2D(8, 3, padding="same", activation="relu")(xb)
    h = (L.Add() if merge == "add" else L.Concatenate())([xa, xb])
    h = L.Conv2D(8, 3, strides=2, padding="same", activation="relu")(h)
    h = L.GlobalAveragePooling2D()(h)
    return keras.Model([a, b], L.Dense(4)(h))


def _qat(model, xs):
    q = quantize_model(model)
    calibrate(q, xs)
    return q


@pytest.fixture(scope="module")
def image_meta():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    xs = [rng.uniform(0, 1, (N, 16, 16, 3)).astype("float32"),
          rng.normal(size=(N, 8)).astype("float32")]
    return _qat(_image_meta_model(), xs), xs


def _check_report(r, n=N):
    assert r.simulator_exact is True
    assert r.num_verified == n
    assert r.top1_agreement == 1.0
    assert r.max_abs_error < 1e-3


@pytest.mark.parametrize("hardware", ["bismo", "bitfusion"])
def test_image_meta_exports_and_verifies_exactly(image_meta, tmp_path,
                                                 hardware):
    q, xs = image_meta
    path = str(tmp_path / "net.json")
    r = export_bitserial(q, path, hardware=hardware, calibration_data=xs,
                         verify_x=xs)
    _check_report(r)
    desc = validate_descriptor(path)
    assert desc["schema_version"] == 5 and "input" not in desc
    ir = build_ir_from_keras(q, xs)
    assert [i["name"] for i in desc["inputs"]] == ["image", "meta"]
    assert [i["shape"] for i in desc["inputs"]] == [[16, 16, 3], [8]]
    assert [i["quant"] for i in desc["inputs"]] == [
        i.quant.to_dict() for i in ir.inputs]
    assert desc["inputs"][0]["quant"] != desc["inputs"][1]["quant"]
    readers = {n: la["inputs"] for la in desc["layers"] for n in
               la["inputs"] if n in ("image", "meta")}
    assert set(readers) == {"image", "meta"}


def test_simulator_fed_by_name_equals_fed_by_list(image_meta, tmp_path):
    q, xs = image_meta
    path = str(tmp_path / "net.json")
    ir = build_ir_from_keras(q, xs)
    write_descriptor(ir, path, hardware="bismo")
    by_list = simulate_bitserial(path, xs)
    by_name = simulate_bitserial(path, {"meta": xs[1], "image": xs[0]})
    np.testing.assert_array_equal(by_list, by_name)
    np.testing.assert_array_equal(simulate_bitserial(path, tuple(xs)),
                                  by_list)
    np.testing.assert_array_equal(
        integer_reference(ir, {"image": xs[0], "meta": xs[1]}), by_list)
    assert len(np.unique(by_list)) > 5


@pytest.mark.parametrize("merge", ["add", "concat"])
def test_two_images_merged_export_exactly(tmp_path, merge):
    rng = np.random.default_rng(1)
    xs = [rng.uniform(0, 1, (N, 12, 12, 3)).astype("float32"),
          rng.uniform(0, 255, (N, 12, 12, 3)).astype("float32")]
    q = _qat(_two_images_model(merge), xs)
    path = str(tmp_path / "two.json")
    _check_report(export_bitserial(q, path, calibration_data=xs,
                                   verify_x=xs))
    with open(path, encoding="utf-8") as f:
        ins = json.load(f)["inputs"]
    assert [i["name"] for i in ins] == ["left", "right"]
    assert ins[0]["quant"]["scale"] < 0.01 < ins[1]["quant"]["scale"]


def test_rescaling_folds_into_its_own_input(tmp_path):
    """A Rescaling on one float input (no observer before it) folds into
    that input's ``rescale`` only; the concat of the unquantized conv
    outputs takes grids calibrated on both inputs (a two-input probe)."""
    a = keras.Input((6, 6, 2), name="raw")
    b = keras.Input((6, 6, 2), name="pixels")
    ha = QuantActivation(8, name="qa")(a)
    hb = QuantActivation(8, name="qb")(L.Rescaling(1 / 255.0, -0.5)(b))
    h = L.Concatenate()([L.Conv2D(4, 3, name="ca")(ha),
                         L.Conv2D(4, 3, name="cb")(hb)])
    h = L.Flatten()(QuantActivation(8, name="qh")(h))
    out = QuantActivation(8, name="out")(L.Dense(3, name="fc")(h))
    model = keras.Model([a, b], out)
    rng = np.random.default_rng(2)
    xs = [rng.uniform(-1, 1, (N, 6, 6, 2)).astype("float32"),
          rng.uniform(0, 255, (N, 6, 6, 2)).astype("float32")]
    calibrate(model, xs)
    ir = build_ir_from_keras(model, xs)
    assert [i.rescale for i in ir.inputs] == [None, ((1 / 255.0,), (-0.5,))]
    r = export_bitserial(model, str(tmp_path / "r.json"),
                         calibration_data=xs, verify_x=xs)
    assert r.simulator_exact is True and r.top1_agreement >= 0.9
    with open(tmp_path / "r.json", encoding="utf-8") as f:
        ins = json.load(f)["inputs"]
    assert "rescale" not in ins[0] and ins[1]["rescale"]["offset"] == [-0.5]


def test_fit_style_data_gives_the_same_descriptor(image_meta, tmp_path):
    q, xs = image_meta
    y = np.arange(N) % 5
    ds = tf.data.Dataset.from_tensor_slices((tuple(xs), y)).batch(7)
    paths = [str(tmp_path / f"{k}.json") for k in ("list", "tuple", "ds")]
    for path, data in zip(paths, (xs, (tuple(xs), y), ds)):
        _check_report(export_bitserial(q, path, calibration_data=data,
                                       verify_x=data))
    descs = [validate_descriptor(p) for p in paths]
    for d in descs:
        del d["blob"]["file"]  # named after the descriptor
    assert descs[0] == descs[1] == descs[2]


def test_wrong_number_of_verify_arrays_is_a_clear_error(image_meta,
                                                        tmp_path):
    q, xs = image_meta
    path = tmp_path / "net.json"
    for bad, got in (([xs[0]], "of 1"), (xs + [xs[1]], "of 3")):
        with pytest.raises(ValueError, match="verify_x") as e:
            export_bitserial(q, str(path), verify_x=bad)
        assert "2 inputs" in str(e.value) and got in str(e.value)
    with pytest.raises(ValueError, match=r"verify_x input 1 must have "
                                         r"shape.*Received shape \(24, 7\)"):
        export_bitserial(q, str(path), verify_x=[xs[0], xs[1][:, :7]])
    assert not path.exists()  # checked before anything is written


def test_simulator_wrong_inputs_are_clear_errors(image_meta, tmp_path):
    q, xs = image_meta
    path = str(tmp_path / "net.json")
    write_descriptor(build_ir_from_keras(q, xs), path)
    with pytest.raises(ValueError, match=r"x must be a list of 2 arrays, "
                                         r"one per input \['image', 'meta'\]"
                                         r".*Received: a list of 3"):
        simulate_bitserial(path, xs + [xs[0]])
    with pytest.raises(ValueError, match=r"Received: ndarray of shape"):
        simulate_bitserial(path, xs[0])
    with pytest.raises(ValueError, match=r"Received keys: \['image', 'x'\]"):
        simulate_bitserial(path, {"image": xs[0], "x": xs[1]})
    with pytest.raises(ValueError, match=r"x\['meta'\] must have shape"):
        simulate_bitserial(path, {"image": xs[0], "meta": xs[1][:, :7]})
    with pytest.raises(ValueError, match="one number of samples"):
        simulate_bitserial(path, [xs[0], xs[1][:5]])


# ------------------------------------------------------- IR and descriptor


def _two_input_ir():
    qa, qb = QuantParams(8, False, 1 / 255), QuantParams(6, False, 0.1, 20)
    b = IRBuilder((6,), qa, input_name="a", name="two")
    b.add_input("b", (4,), qb, rescale=(0.5, 1.0))
    ha = b.dense("fa", "a", np.arange(18).reshape(6, 3) % 5 - 2, 0.05,
                 np.zeros(3, int), QuantParams(8, False, 0.02, 10), w_bits=3)
    hb = b.dense("fb", "b", np.arange(12).reshape(4, 3) % 3 - 1, 0.1,
                 np.zeros(3, int), QuantParams(8, False, 0.03, 5), w_bits=2)
    b.concat("cat", [ha, hb], QuantParams(8, False, 0.03, 5))
    return b.build(input_order=["b", "a"])  # the feeding order


def test_ir_inputs_order_and_descriptor_round_trip(tmp_path):
    ir = _two_input_ir()
    assert ir.input_names == ["b", "a"] and ir.input_name == "b"
    assert ir.inputs[0].rescale == ((0.5,), (1.0,))
    rng = np.random.default_rng(0)
    xs = [rng.uniform(-2, 8, (5, 4)), rng.uniform(0, 1, (5, 6))]
    path = str(tmp_path / "two.json")
    desc = write_descriptor(ir, path, hardware="bitfusion")
    assert [i["name"] for i in desc["inputs"]] == ["b", "a"]
    assert desc["inputs"][0]["rescale"] == {"scale": [0.5], "offset": [1.0]}
    want = integer_reference(ir, xs)
    np.testing.assert_array_equal(simulate_bitserial(path, xs), want)
    assert len(np.unique(want)) > 3


def test_multi_input_descriptor_checks(tmp_path):
    desc = write_descriptor(_two_input_ir(), str(tmp_path / "two.json"))
    for mutate, match in (
            (lambda d: d.update(schema_version=4),
             "inputs needs schema_version >= 5"),
            (lambda d: d.update(input=d["inputs"][0]),
             "input: no value is allowed here"),
            (lambda d: d["inputs"][1].update(name="b"),
             "duplicate input name 'b'"),
            (lambda d: d.update(inputs=d["inputs"][:1]),
             "needs at least 2 items")):
        bad = json.loads(json.dumps(desc))
        mutate(bad)
        with pytest.raises(DescriptorError, match=match):
            validate_descriptor(bad)


def test_single_input_descriptors_keep_input(tmp_path):
    ir = random_ir(seed=0)
    assert ir.input_names == ["input"] and ir.extra_inputs == []
    desc = write_descriptor(ir, str(tmp_path / "one.json"))
    assert desc["schema_version"] == 1 and "inputs" not in desc
    assert desc["input"]["name"] == "input"
    x = np.random.default_rng(0).uniform(-1, 1, (2,) + ir.input_shape)
    np.testing.assert_array_equal(
        simulate_bitserial(str(tmp_path / "one.json"), {"input": x}),
        integer_reference(ir, x))
