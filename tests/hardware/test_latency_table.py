"""LatencyTable: build, lookup/interpolation, save/load and its errors."""

import json
import os

import keras
import pytest

import tfcomp
from tfcomp.hardware import (
    BISMO,
    BitFusion,
    Cost,
    HardwareModel,
    LatencyTable,
    LatencyTableError,
    LayerSpec,
    extract_specs,
)
from tfcomp.hardware.latency_table import VERSION


class Bilinear(HardwareModel):
    """Cost a + b*cin + c*cout + d*cin*cout: bilinear interpolation of it
    is exact, so lookups can be checked against the formula."""

    name = "bilinear"

    def layer_cost(self, spec, w_bits, a_bits):
        if spec.tied_channels:  # linear in the one free channel count
            lat = (1e-6 + 2e-7 * spec.cin) * w_bits * a_bits
            return Cost(int(lat * 1e9), lat, lat * 2)
        lat = (1e-6 + 2e-7 * spec.cin + 3e-7 * spec.cout
               + 5e-9 * spec.cin * spec.cout) * w_bits * a_bits
        return Cost(int(lat * 1e9), lat, lat * 2)


def _model():
    x = keras.Input((10, 10, 3))
    y = keras.layers.Conv2D(16, 3, padding="same", name="c1")(x)
    y = keras.layers.Conv2D(32, 3, padding="same", name="c2")(y)
    y = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(y)
    y = keras.layers.GlobalAveragePooling2D(name="gap")(y)
    return keras.Model(x, keras.layers.Dense(4, name="fc")(y))


def test_build_matches_hardware_model_exactly():
    model = tfcomp.zoo.resnet(depth=8)
    hw = BitFusion("edge")
    table = LatencyTable.build(model, hw, bits=range(2, 9), progress=False)
    assert table.bit_pairs == [(w, a) for w in range(2, 9)
                               for a in range(2, 9)]
    for bits in ((2, 2), (4, 8), (8, 8)):
        assert table.model_cost(model, bits).latency_s == pytest.approx(
            hw.model_cost(model, bits).latency_s, rel=1e-12)
    spec = extract_specs(model)[3]
    assert table.lookup(spec, 5, 3) == hw.layer_cost(spec, 5, 3)
    assert table.hardware == hw.describe()


def test_save_load_round_trip(tmp_path):
    model = _model()
    table = LatencyTable.build(model, BISMO(), bits=[(4, 4), (8, 8)],
                               channel_fractions=(0.5, 1.0), progress=False)
    path = table.save(str(tmp_path / "t.json"))
    assert sorted(os.listdir(tmp_path)) == ["t.json"]  # no temp file left
    loaded = LatencyTable.load(path)
    assert len(loaded) == len(table) > 0
    assert loaded.to_dict() == table.to_dict()
    for spec in extract_specs(model):
        for bits in ((4, 4), (8, 8)):
            assert loaded.lookup(spec, *bits) == table.lookup(spec, *bits)
    assert loaded.model_cost(model, (4, 4)).latency_s == \
        table.model_cost(model, (4, 4)).latency_s


def test_corrupt_file_error(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"format": "tfcomp.latency_table", "vers')
    with pytest.raises(LatencyTableError, match="corrupt JSON"):
        LatencyTable.load(str(path))
    path.write_text("[1, 2]")
    with pytest.raises(LatencyTableError, match="top level"):
        LatencyTable.load(str(path))
    with pytest.raises(FileNotFoundError):
        LatencyTable.load(str(tmp_path / "missing.json"))


def _doc():
    t = LatencyTable.build(_model(), BISMO(), bits=[(8, 8)], progress=False)
    return t.to_dict()


def test_newer_version_error(tmp_path):
    doc = _doc()
    doc["version"] = VERSION + 1
    path = tmp_path / "new.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(LatencyTableError, match="newer tfcomp"):
        LatencyTable.load(str(path))


@pytest.mark.parametrize("mutate, match", [
    (lambda d: d.update(format="other"), "format must be"),
    (lambda d: d.update(version="1"), "version must be"),
    (lambda d: d.update(entries={}), "'entries' must be a list"),
    (lambda d: d["entries"][0].pop("costs"), r"entries\[0\] must have"),
    (lambda d: d["entries"][0]["spec"].update(op="lstm"),
     r"entries\[0\].spec"),
    (lambda d: d["entries"][1]["costs"][0].__setitem__(2, "fast"),
     r"entries\[1\].costs\[0\]"),
    (lambda d: d["entries"][0]["costs"][0].__setitem__(2, -1.0),
     "finite and >= 0"),
    (lambda d: d.update(overhead_s=-1), "overhead_s"),
])
def test_schema_errors_name_the_field(mutate, match):
    doc = _doc()
    mutate(doc)
    with pytest.raises(LatencyTableError, match=match):
        LatencyTable.from_dict(doc)


def test_interpolation_over_unseen_channels():
    model = _model()
    hw = Bilinear()
    table = LatencyTable.build(model, hw, bits=[(4, 4)],
                               channel_fractions=(0.25, 0.5, 1.0),
                               progress=False)
    c2 = next(s for s in extract_specs(model) if s.name == "c2")
    for cin, cout in ((10, 20), (5, 9), (16, 31), (13, 32)):
        q = c2.with_channels(cin=cin, cout=cout)
        assert (q, 4, 4) not in table  # not measured: interpolated
        got = table.lookup(q, 4, 4)
        want = hw.layer_cost(q, 4, 4)
        assert got.latency_s == pytest.approx(want.latency_s, rel=1e-9)
        assert got.energy_j == pytest.approx(want.energy_j, rel=1e-9)
    # depthwise / pooling: channels tied, linear in cin
    dw = next(s for s in extract_specs(model) if s.name == "dw")
    q = dw.with_channels(cin=20)
    assert table.lookup(q, 4, 4).latency_s == pytest.approx(
        hw.layer_cost(q, 4, 4).latency_s, rel=1e-9)
    # a pruned model is costed through interpolation
    pruned = keras.Model(*_pruned_io(12, 20))
    assert table.model_cost(pruned, (4, 4)).latency_s == pytest.approx(
        hw.model_cost(pruned, (4, 4)).latency_s, rel=1e-9)


def _pruned_io(c1, c2):
    x = keras.Input((10, 10, 3))
    y = keras.layers.Conv2D(c1, 3, padding="same", name="c1")(x)
    y = keras.layers.Conv2D(c2, 3, padding="same", name="c2")(y)
    y = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(y)
    y = keras.layers.GlobalAveragePooling2D(name="gap")(y)
    return x, keras.layers.Dense(4, name="fc")(y)


def test_lookup_errors_are_clear():
    model = _model()
    table = LatencyTable.build(model, Bilinear(), bits=[(8, 8)],
                               channel_fractions=(0.5, 1.0), progress=False)
    c2 = next(s for s in extract_specs(model) if s.name == "c2")
    with pytest.raises(LatencyTableError, match="Cannot interpolate.*'c2'"):
        table.lookup(c2.with_channels(cin=4, cout=32), 8, 8)  # below range
    with pytest.raises(LatencyTableError, match="Cannot interpolate"):
        table.lookup(c2.with_channels(cin=16, cout=64), 8, 8)  # above
    with pytest.raises(LatencyTableError, match="at w_bits=4"):
        table.lookup(c2, 4, 8)
    other = LayerSpec("new", "conv", 3, 3, 8, 8, kernel=5)
    with pytest.raises(LatencyTableError, match="no same-shaped layer"):
        table.lookup(other, 8, 8)
    with pytest.raises(ValueError, match="channel_fractions"):
        LatencyTable.build(model, Bilinear(), channel_fractions=(0.0, 1.0),
                           progress=False)
    with pytest.raises(ValueError, match=r"w_bits in \[1, 8\]"):
        LatencyTable.build(model, BitFusion(), bits=[(16, 8)],
                           progress=False)


def test_interpolation_mixes_points_from_several_layers():
    # Two layers of one family contribute different grids ({8, 16}^2 and
    # {16, 32}^2); queries use rectangles of existing points from either.
    hw = Bilinear()
    a = LayerSpec("a", "conv", 8, 8, 16, 16, kernel=3, padding="same")
    b = LayerSpec("b", "conv", 8, 8, 32, 32, kernel=3, padding="same")
    table = LatencyTable.build([a, b], hw, bits=[(8, 8)],
                               channel_fractions=(0.5, 1.0), progress=False)
    assert len(table) == 7
    for cin, cout in ((12, 10), (20, 24), (16, 20)):
        q = a.with_channels(cin=cin, cout=cout)
        assert table.lookup(q, 8, 8).latency_s == pytest.approx(
            hw.layer_cost(q, 8, 8).latency_s, rel=1e-9)
    with pytest.raises(LatencyTableError, match="Cannot interpolate"):
        table.lookup(a.with_channels(cin=12, cout=24), 8, 8)  # no rectangle


class Staircase(HardwareModel):
    """Cost linear in cin and a staircase in cout (tiles of 16 outputs),
    as XNNPACK's GEMM kernels behave on a CPU."""

    name = "staircase"

    def layer_cost(self, spec, w_bits, a_bits):
        tiles = -(-spec.cout // 16)
        lat = 1e-6 * tiles * (2 + spec.cin)
        return Cost(None, lat, None)


def test_step_interpolation_follows_the_output_channel_staircase():
    hw = Staircase()
    spec = LayerSpec("c", "conv", 8, 8, 64, 64, kernel=3, padding="same")
    # measured at multiples of 16 in cout (tile boundaries), 4 cin points
    table = LatencyTable.build([spec], hw, bits=[(8, 8)],
                               channel_fractions=(0.25, 0.5, 0.75, 1.0),
                               progress=False)
    assert table.interpolation == "linear"
    q = spec.with_channels(cin=40, cout=20)  # cout 20 costs 2 tiles
    want = hw.layer_cost(q, 8, 8).latency_s
    assert want == pytest.approx(1e-6 * 2 * 42)
    linear = table.lookup(q, 8, 8).latency_s
    table.interpolation = "step"  # clears the lookup cache
    step = table.lookup(q, 8, 8).latency_s
    assert step == pytest.approx(want, rel=1e-12)
    assert linear == pytest.approx(1e-6 * 1.25 * 42, rel=1e-12)
    for cin, cout in ((16, 16), (24, 33), (56, 47), (17, 64)):
        q = spec.with_channels(cin=cin, cout=cout)
        assert table.lookup(q, 8, 8).latency_s == pytest.approx(
            hw.layer_cost(q, 8, 8).latency_s, rel=1e-12)
    with pytest.raises(LatencyTableError, match="Cannot interpolate"):
        table.lookup(spec.with_channels(cin=8, cout=16), 8, 8)  # cin < 16


def test_interpolation_mode_round_trips_and_is_validated(tmp_path):
    spec = LayerSpec("c", "conv", 8, 8, 16, 16, kernel=3, padding="same")
    table = LatencyTable.build([spec], Staircase(), bits=[(8, 8)],
                               channel_fractions=(0.5, 1.0), progress=False)
    table.interpolation = "step"
    path = table.save(str(tmp_path / "t.json"))
    assert LatencyTable.load(path).interpolation == "step"
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    del doc["interpolation"]  # files written before the field: linear
    assert LatencyTable.from_dict(doc).interpolation == "linear"
    doc["interpolation"] = "cubic"
    with pytest.raises(LatencyTableError, match="interpolation"):
        LatencyTable.from_dict(doc)
    with pytest.raises(ValueError, match="interpolation=.cubic."):
        LatencyTable(interpolation="cubic")
