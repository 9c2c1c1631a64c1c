"""One cost model: size, BOPs and MACs read from ``tfcomp.profile`` equal
those of the hardware path (``LayerSpec``, ``HardwareModel.model_cost``,
a ``LatencyTable``), for the same model and mixed bit policy."""

import keras
import pytest

import tfcomp
from tfcomp import cost
from tfcomp.hardware import (
    BISMO,
    BitFusion,
    LatencyTable,
    extract_specs,
    layer_resource,
)

POLICY = {"conv1": (4, 8), "dw": (2, 4), "pw": (6, 5), "fc": (8, 3)}


def _user_model():
    """Conv2D (no bias) + BN + ReLU, DepthwiseConv2D, 1x1 Conv2D, Dense."""
    x = keras.Input((12, 12, 3))
    y = keras.layers.Conv2D(8, 3, padding="same", use_bias=False,
                            name="conv1")(x)
    y = keras.layers.BatchNormalization(name="bn")(y)
    y = keras.layers.ReLU(name="relu")(y)
    y = keras.layers.DepthwiseConv2D(3, strides=2, padding="same",
                                     depth_multiplier=2, name="dw")(y)
    y = keras.layers.Conv2D(12, 1, name="pw")(y)
    y = keras.layers.GlobalAveragePooling2D(name="gap")(y)
    return keras.Model(x, keras.layers.Dense(10, name="fc")(y))


@pytest.fixture(scope="module")
def setup():
    model = _user_model()
    prof = tfcomp.profile(model, bits=POLICY)
    pairs = sorted(set(POLICY.values()) | {(8, 8)})
    table = LatencyTable.build(model, BISMO(), bits=pairs, progress=False)
    return model, prof, table


def _costed(prof, model):
    return [prof.by_name(s.name) for s in extract_specs(model)]


def test_size_is_the_profiles(setup, tmp_path):
    model, prof, table = setup
    want = sum(r.size_bytes for r in _costed(prof, model))
    assert want == sum(cost.size_bytes(r.params, r.w_bits)
                       for r in prof.layers if r.name in POLICY)
    # bias counted where there is one, none for conv1
    assert prof.by_name("conv1").params == 3 * 3 * 3 * 8
    assert prof.by_name("fc").params == 12 * 10 + 10
    loaded = LatencyTable.load(table.save(str(tmp_path / "t.json")))
    for hw in (table, loaded, BitFusion("edge")):
        got = hw.model_cost(model, bits=POLICY)
        assert got.size_bytes == got.value("size") == want
    for s in extract_specs(model):
        w, a = POLICY.get(s.name, (8, 8))
        assert layer_resource(s, w, a, "size") == (
            prof.by_name(s.name).size_bytes if s.name in POLICY else 0)


def test_bops_are_the_profiles(setup):
    model, prof, table = setup
    assert prof.bops == sum(cost.bops(r.macs, *POLICY[r.name])
                            for r in prof.layers if r.name in POLICY)
    got = table.model_cost(model, bits=POLICY)
    assert got.bops == got.value("bops") == prof.bops
    for s in extract_specs(model):
        if s.name in POLICY:
            assert layer_resource(s, *POLICY[s.name], "bops") == (
                prof.by_name(s.name).bops)


def test_macs_are_the_profiles(setup):
    model, prof, table = setup
    specs = extract_specs(model)
    assert sum(s.macs for s in specs) == prof.macs
    assert table.model_cost(model, bits=POLICY).value("macs") == prof.macs
    for s in specs:
        assert s.macs == prof.by_name(s.name).macs
        assert layer_resource(s, 8, 8, "macs") == s.macs


def test_formulas():
    assert cost.weight_count((3, 3), 16, 32) == 4608
    assert cost.weight_count((3, 3), 8, 16, groups=8) == 144
    assert cost.param_count((), 64, 10) == 650
    assert cost.param_count((), 64, 10, use_bias=False) == 640
    assert cost.layer_macs(14 * 14, (3, 3), 16, 32) == 14 * 14 * 4608
    assert cost.bops(1000, 4, 8) == 32000
    assert cost.size_bytes(650, 4) == 325.0
    assert cost.activation_bytes(1024, 8) == 1024.0
    with pytest.raises(ValueError, match="groups must divide cin"):
        cost.weight_count((3, 3), 6, 8, groups=4)


def test_resource_errors(setup):
    model, _, table = setup
    spec = extract_specs(model)[0]
    with pytest.raises(ValueError, match="resource must be one of"):
        layer_resource(spec, 8, 8, "flops")
    with pytest.raises(ValueError, match="needs a hardware model"):
        layer_resource(spec, 8, 8, "latency")
    with pytest.raises(ValueError, match="no energy"):
        layer_resource(spec, 8, 8, "energy", BISMO())
    assert layer_resource(spec, 8, 8, "latency", table) == (
        table.layer_cost(spec, 8, 8).latency_s)
    with pytest.raises(ValueError, match="resource must be one of"):
        table.model_cost(model, bits=POLICY).value("flops")
