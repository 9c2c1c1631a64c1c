"""``hardware=`` names the accelerator of ``write_descriptor`` /
``export_bitserial``; the old ``target=`` / dict forms still work with a
DeprecationWarning and write the same files. Tiling comes from
``tfcomp.hardware``."""

import warnings

import pytest

import tfcomp.hardware as hw
from tfcomp.export.bitserial import (
    descriptor_blob_path,
    random_ir,
    write_descriptor,
)
from tfcomp.export.bitserial.hardware_hook import resolve_hardware


@pytest.fixture(scope="module")
def ir():
    return random_ir(seed=3)


def _bytes(path):
    with open(path, "rb") as f:
        a = f.read()
    with open(descriptor_blob_path(path), "rb") as f:
        return a, f.read()


def _write(ir, path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        write_descriptor(ir, path, **kw)
    return _bytes(path)


@pytest.mark.parametrize("kind,config,model", [
    ("bismo", {"dm": 4}, hw.BISMO(dm=4)),
    ("bitfusion", {"config": "server"}, hw.BitFusion("server")),
])
def test_name_config_and_model_write_the_same_files(ir, tmp_path, kind,
                                                    config, model):
    by_name = _write(ir, str(tmp_path / "a.json"), hardware=kind,
                     hardware_config=config)
    by_model = _write(ir, str(tmp_path / "b.json"), hardware=model)
    assert by_name[1] == by_model[1]
    assert by_name[0] == by_model[0].replace(b'"b.', b'"a.')
    with pytest.warns(DeprecationWarning, match="target= is deprecated"):
        write_descriptor(ir, str(tmp_path / "a.json"), target=kind,
                         hardware=config)
    assert _bytes(str(tmp_path / "a.json")) == by_name
    with pytest.warns(DeprecationWarning, match="target= is deprecated"):
        write_descriptor(ir, str(tmp_path / "a.json"), target=kind,
                         hardware=model)
    assert _bytes(str(tmp_path / "a.json")) == by_name


def test_old_dict_form_is_bismo(ir, tmp_path):
    want = _write(ir, str(tmp_path / "a.json"), hardware="bismo",
                  hardware_config={"dn": 4})
    with pytest.warns(DeprecationWarning, match="hardware_config="):
        write_descriptor(ir, str(tmp_path / "a.json"), hardware={"dn": 4})
    assert _bytes(str(tmp_path / "a.json")) == want


def test_bad_hardware_arguments(ir, tmp_path):
    path = str(tmp_path / "m.json")
    with pytest.raises(ValueError, match="hardware must be one of"):
        write_descriptor(ir, path, hardware="tpu")

    class Anonymous:
        name = "mine"

        def layer_cost(self, spec, w_bits, a_bits):
            return hw.BISMO().layer_cost(spec, w_bits, a_bits)

    with pytest.raises(ValueError, match="hardware must be one of"):
        write_descriptor(ir, path, hardware=Anonymous())
    with pytest.raises(ValueError, match="only hold buffer depths"):
        write_descriptor(ir, path, hardware=hw.BISMO(), hardware_config={
            "dm": 4})
    with pytest.raises(ValueError, match="name different accelerators"), \
            pytest.warns(DeprecationWarning):
        write_descriptor(ir, path, hardware="bismo", target="bitfusion")
    with pytest.raises(TypeError, match="layer_cost"):
        write_descriptor(ir, path, hardware=object())

    class Named(Anonymous):
        name = "BitFusion"

    desc = _write(ir, path, hardware=Named())
    assert b'"target": "bitfusion"' in desc[0]


def test_schedule_params_and_tiling_come_from_tfcomp_hardware():
    r = resolve_hardware("bismo", {"lhs_depth": 16})
    assert r.schedule_params == {**hw.BISMO_ARRAY_DEFAULTS,
                                 **hw.BISMO_BUFFER_DEFAULTS,
                                 "lhs_depth": 16}
    assert resolve_hardware("bitfusion").schedule_params == (
        hw.BITFUSION_ARRAY_DEFAULTS)
    spec = hw.LayerSpec("c", "conv", 14, 14, 32, 16, kernel=(3, 3),
                        padding="same")
    g, m, k, n = spec.gemm_shape()
    sched = hw.bismo_schedule(g, m, k, n, 4, 2, False, True)
    assert sched["exec_cycles"] == hw.BISMO().exec_cycles(spec, 2, 4)
    perf = hw.bitfusion_perf_factor(3, 5)
    bf = hw.bitfusion_schedule(g, m, k, n, 9, perf, a_bits=5, w_bits=3)
    assert bf["compute_cycles"] == hw.BitFusion().compute_cycles(spec, 3, 5)
    assert bf["fused_bits"] == {"w": 4, "a": 8}
    import tfcomp.export.bitserial as bs

    assert bs.bismo_schedule is hw.bismo_schedule
