"""Descriptor writing, schema validation, blob layout and integrity errors."""

import json
import os

import keras
import numpy as np
import pytest

from tfcomp.export.bitserial import (
    SCHEMA_VERSION,
    BlobIntegrityError,
    DescriptorError,
    SchemaVersionError,
    integer_reference,
    load_descriptor,
    load_schema,
    random_ir,
    simulate_bitserial,
    unpack_bitplanes,
    unpack_values,
    validate_descriptor,
    write_descriptor,
)
from tfcomp.export.bitserial.descriptor import (
    blob_path_for,
    descriptor_blob_path,
    weight_rows,
)
from tfcomp.export.bitserial.validator import schema_errors


@pytest.fixture(scope="module")
def ir():
    return random_ir(seed=7, head="flatten")


def _write(ir, tmp_path, target="bismo", **kw):
    path = str(tmp_path / "model.json")
    desc = write_descriptor(ir, path, hardware=target, **kw)
    return path, desc


def _blob(tmp_path):
    """The blob ``model.json`` names (content-addressed)."""
    import pathlib

    return pathlib.Path(descriptor_blob_path(str(tmp_path / "model.json")))


@pytest.mark.parametrize("target", ["bismo", "bitfusion"])
def test_descriptor_validates_and_records_layers(ir, tmp_path, target):
    path, desc = _write(ir, tmp_path, target)
    blob = _blob(tmp_path)
    assert blob.exists() and blob.name == "model.%s.bin" % desc["blob"][
        "sha256"][:16] == desc["blob"]["file"]
    assert str(blob) == blob_path_for(path, desc["blob"]["sha256"])
    got = validate_descriptor(path)
    with open(path) as f:
        assert got == json.load(f) == desc
    assert got["schema_version"] == 1 and got["target"] == target
    assert schema_errors(got, load_schema()) == []
    assert [la["name"] for la in got["layers"]] == [op.name for op in ir.ops]
    for op, la in zip(ir.ops, got["layers"]):
        assert la["op"] == op.op
        if not op.is_gemm:
            continue
        g = la["gemm"]
        assert g["groups"] * g["N"] == op.out_channels == len(la["bias"])
        assert la["weights"]["bits"] == op.w_bits
        assert la["lhs"]["bits"] == ir.quant(op.inputs[0]).bits
        assert la["requant"]["multiplier"] == [int(m) for m in op.multiplier]
        assert la["schedule"]["kind"] == target
        assert la["cost"]["cycles"] >= la["cost"]["compute_cycles"] > 0
        assert la["cost"]["latency_s"] > 0
    assert (got["totals"]["energy_j"] is None) == (target == "bismo")


def test_bismo_program_has_all_instruction_kinds(ir, tmp_path):
    _, desc = _write(ir, tmp_path)
    la = next(la for la in desc["layers"] if la["op"] == "conv2d")
    body = la["schedule"]["body"]
    kinds = {i["op"] for i in body}
    assert kinds == {"Fetch", "Exec", "Result", "Sync"}
    execs = [i for i in body if i["op"] == "Exec"]
    assert len(execs) == la["lhs"]["bits"] * la["weights"]["bits"]
    assert sorted({e["shift"] for e in execs}) == list(
        range(la["lhs"]["bits"] + la["weights"]["bits"] - 1))


@pytest.mark.parametrize("target", ["bismo", "bitfusion"])
def test_blob_holds_packed_weights_at_recorded_offsets(ir, tmp_path, target):
    _, desc = _write(ir, tmp_path, target)
    blob = _blob(tmp_path).read_bytes()
    assert len(blob) == desc["blob"]["nbytes"]
    for op, la in zip(ir.ops, desc["layers"]):
        if not op.is_gemm:
            continue
        w = la["weights"]
        data = blob[w["offset"]:w["offset"] + w["nbytes"]]
        assert w["offset"] % desc["blob"]["alignment"] == 0
        if target == "bismo":
            planes = np.frombuffer(data, "<u8").reshape(w["bits"], w["rows"],
                                                        -1)
            got = unpack_bitplanes(planes, w["k"], w["signed"])
        else:
            got = unpack_values(data, w["rows"] * w["k"], w["bits"],
                                w["signed"]).reshape(w["rows"], w["k"])
        np.testing.assert_array_equal(got, weight_rows(op))


def test_truncated_blob_is_a_clear_error(ir, tmp_path):
    path, _ = _write(ir, tmp_path)
    blob = _blob(tmp_path)
    blob.write_bytes(blob.read_bytes()[:-5])
    with pytest.raises(BlobIntegrityError, match="truncated"):
        validate_descriptor(path)
    with pytest.raises(BlobIntegrityError, match="truncated"):
        simulate_bitserial(path, np.zeros((1,) + ir.input_shape))


def test_corrupt_blob_is_a_clear_error(ir, tmp_path):
    path, _ = _write(ir, tmp_path)
    blob = _blob(tmp_path)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x10
    blob.write_bytes(bytes(data))
    with pytest.raises(BlobIntegrityError, match="corrupt: sha256"):
        simulate_bitserial(path, np.zeros((1,) + ir.input_shape))


def test_missing_blob_is_a_clear_error(ir, tmp_path):
    path, _ = _write(ir, tmp_path)
    os.remove(str(_blob(tmp_path)))
    with pytest.raises(BlobIntegrityError, match="cannot read the weight"):
        validate_descriptor(path)


def test_newer_schema_version_is_a_clear_error(ir, tmp_path):
    path, desc = _write(ir, tmp_path)
    desc["schema_version"] = SCHEMA_VERSION + 1
    with open(path, "w") as f:
        json.dump(desc, f)
    with pytest.raises(SchemaVersionError,
                       match=f"schema_version {SCHEMA_VERSION + 1}, newer "
                       f"than the {SCHEMA_VERSION}"):
        simulate_bitserial(path, np.zeros((1,) + ir.input_shape))
    assert issubclass(SchemaVersionError, ValueError)


def test_corrupt_json_is_a_clear_error(ir, tmp_path):
    path, _ = _write(ir, tmp_path)
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text[: len(text) // 2])
    with pytest.raises(DescriptorError, match="not valid JSON"):
        validate_descriptor(path)
    with open(path, "w") as f:
        f.write("[1, 2]")
    with pytest.raises(DescriptorError, match="JSON object"):
        validate_descriptor(path)
    with open(path, "w") as f:
        json.dump({"format": "something-else"}, f)
    with pytest.raises(DescriptorError, match="not a tfcomp bit-serial"):
        validate_descriptor(path)


def test_schema_violations_name_the_field(ir, tmp_path):
    _, desc = _write(ir, tmp_path)
    bad = json.loads(json.dumps(desc))
    bad["layers"][0]["op"] = "conv3d"
    del bad["layers"][1]["requant"]
    bad["blob"]["sha256"] = "xyz"
    with pytest.raises(DescriptorError) as err:
        validate_descriptor(bad)
    msg = str(err.value)
    assert "$.layers[0].op: 'conv3d' is not one of" in msg
    assert "$.layers[1]: missing required property 'requant'" in msg
    assert "$.blob.sha256" in msg
    bad = json.loads(json.dumps(desc))
    bad["layers"][0]["bias"] = bad["layers"][0]["bias"][:-1]
    with pytest.raises(DescriptorError, match="bias has"):
        validate_descriptor(bad)
    bad = json.loads(json.dumps(desc))
    bad["layers"][0]["weights"]["offset"] = desc["blob"]["nbytes"]
    with pytest.raises(DescriptorError, match="beyond the blob"):
        validate_descriptor(bad)


def test_schema_is_valid_json_schema_when_jsonschema_exists(ir, tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    _, desc = _write(ir, tmp_path)
    jsonschema.Draft7Validator.check_schema(load_schema())
    jsonschema.validate(desc, load_schema())


def test_writes_are_atomic_and_overwrite(ir, tmp_path):
    _write(ir, tmp_path, "bismo")
    path, _ = _write(ir, tmp_path, "bitfusion")
    assert sorted(os.listdir(tmp_path)) == [_blob(tmp_path).name,
                                            "model.json"]
    assert validate_descriptor(path)["target"] == "bitfusion"
    x = np.random.default_rng(0).uniform(-1, 1, (2,) + ir.input_shape)
    np.testing.assert_array_equal(simulate_bitserial(path, x),
                                  integer_reference(ir, x))


def test_bad_arguments(ir, tmp_path):
    with pytest.raises(ValueError, match="hardware must be one of"):
        _write(ir, tmp_path, "tpu")
    with pytest.raises(TypeError, match="ir must be an IntegerIR"):
        write_descriptor({"ops": []}, str(tmp_path / "m.json"))
    with pytest.raises(ValueError, match="batch must be"):
        _write(ir, tmp_path, batch=0)
    with pytest.raises(ValueError, match="dk a multiple of 64"):
        _write(ir, tmp_path, hardware_config={"dk": 32})
    wide = random_ir(seed=0, bits=(8, 8))
    wide.ops[0].w_bits = 9  # Bit Fusion fuses at most 8 bits
    with pytest.raises(ValueError, match="w_bits"):
        _write(wide, tmp_path, "bitfusion")
    with pytest.raises(DescriptorError, match="cannot read descriptor"):
        validate_descriptor(str(tmp_path / "nope.json"))


def test_descriptor_of_the_previous_version_loads_and_is_replaced(ir,
                                                                  tmp_path):
    """Before content-addressed blobs: ``model.json`` + ``model.bin``."""
    path, desc = _write(ir, tmp_path, "bismo")
    os.replace(str(_blob(tmp_path)), str(tmp_path / "model.bin"))
    desc["blob"]["file"] = "model.bin"
    with open(path, "w") as f:
        json.dump(desc, f)
    assert blob_path_for(path) == str(tmp_path / "model.bin")
    loaded, blob = load_descriptor(path)
    assert loaded == desc and len(blob) == desc["blob"]["nbytes"]
    x = np.random.default_rng(0).uniform(-1, 1, (2,) + ir.input_shape)
    np.testing.assert_array_equal(simulate_bitserial(path, x),
                                  integer_reference(ir, x))
    _write(ir, tmp_path, "bitfusion")  # the old blob goes with its JSON
    assert sorted(os.listdir(tmp_path)) == [_blob(tmp_path).name,
                                            "model.json"]


def test_pair_is_replaced_blob_first_json_last(ir, tmp_path, monkeypatch):
    from tfcomp import _io

    path, old = _write(ir, tmp_path, "bismo")
    order = []
    monkeypatch.setattr(_io, "_hook", lambda stage, p, tmp: order.append(
        (stage, os.path.basename(p))) if stage == "replaced" else None)
    _, new = _write(ir, tmp_path, "bitfusion")
    assert [name for _, name in order] == [new["blob"]["file"], "model.json"]
    assert new["blob"]["file"] != old["blob"]["file"] or new["blob"][
        "sha256"] == old["blob"]["sha256"]


def test_reader_follows_a_pair_replaced_while_it_reads(tmp_path, monkeypatch):
    """A reader that read the old JSON and finds its blob removed by a
    writer reads the new pair."""
    import tfcomp.export.bitserial.descriptor as d

    old_ir, new_ir = random_ir(seed=1), random_ir(seed=2)
    path = str(tmp_path / "model.json")
    write_descriptor(old_ir, path)
    real = d._read_blob
    calls = []

    def racing(desc, p):
        if not calls:
            write_descriptor(new_ir, path)  # replaces the pair meanwhile
        calls.append(desc["name"])
        return real(desc, p)

    monkeypatch.setattr(d, "_read_blob", racing)
    desc, blob = load_descriptor(path)
    assert len(calls) == 2 and desc == validate_descriptor(path)
    x = np.random.default_rng(0).uniform(-1, 1, (2,) + new_ir.input_shape)
    monkeypatch.setattr(d, "_read_blob", real)
    np.testing.assert_array_equal(simulate_bitserial(path, x),
                                  integer_reference(new_ir, x))


def test_nan_inputs_name_the_input(ir, tmp_path):
    path, _ = _write(ir, tmp_path)
    x = np.zeros((2,) + ir.input_shape)
    x.flat[-1] = np.nan
    with pytest.raises(ValueError, match="x holds 1 NaN or infinite"):
        simulate_bitserial(path, x)
    x.flat[-1] = -np.inf
    with pytest.raises(ValueError, match="x holds 1 NaN or infinite"):
        integer_reference(ir, x)


def test_models_the_descriptor_cannot_map_are_refused_by_name():
    from tfcomp.export.bitserial import build_ir_from_keras
    from tfcomp.quantization import calibrate, quantize_model

    enc_in = keras.Input((6, 6, 1))
    enc = keras.Model(enc_in, keras.layers.Conv2D(2, 3, name="c")(enc_in),
                      name="enc")
    a, b = keras.Input((6, 6, 1)), keras.Input((6, 6, 1))
    q = quantize_model(keras.Model([a, b], keras.layers.Add()(
        [enc(a), enc(b)])))
    x = [np.random.default_rng(0).random((4, 6, 6, 1), np.float32)] * 2
    calibrate(q, x)
    with pytest.raises(ValueError, match="called more than once"):
        build_ir_from_keras(q, x)
    seq = keras.Input((None, 3))
    q = quantize_model(keras.Model(seq, keras.layers.Conv1D(2, 1)(seq)))
    calibrate(q, np.ones((2, 5, 3), np.float32))
    with pytest.raises(ValueError, match="needs every size but the batch"):
        build_ir_from_keras(q, np.ones((2, 5, 3), np.float32))
