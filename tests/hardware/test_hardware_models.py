"""BISMO and Bit Fusion analytic models: the METHODS.md faithfulness checks."""

import itertools

import numpy as np
import pytest

import tfcomp
from tfcomp.hardware import BISMO, BitFusion, Cost, LayerSpec

BITS = range(1, 9)


def _layers(seed=0, n=40):
    """Random conv / depthwise / dense shapes (small to large)."""
    rng = np.random.default_rng(seed)
    out = [LayerSpec("big", "conv", 56, 56, 256, 256, kernel=3,
                     padding="same")]
    for i in range(n):
        h = int(rng.integers(1, 40))
        cin = int(rng.integers(1, 400))
        k = int(rng.choice([1, 3, 5]))
        op = ("conv", "depthwise", "dense")[i % 3]
        if op == "conv":
            out.append(LayerSpec(f"c{i}", "conv", h, h, cin,
                                 int(rng.integers(1, 400)), kernel=k,
                                 stride=int(rng.choice([1, 2])),
                                 padding="same"))
        elif op == "depthwise":
            out.append(LayerSpec(f"d{i}", "depthwise", h, h, cin, cin,
                                 kernel=k, groups=cin, padding="same"))
        else:
            out.append(LayerSpec(f"f{i}", "dense", 1, 1, cin * 8,
                                 int(rng.integers(1, 2000))))
    return out


def test_bismo_cycles_scale_exactly_with_w_times_a():
    hw = BISMO()
    for spec in _layers():
        base = hw.exec_cycles(spec, 1, 1)
        assert base > 0
        for w, a in itertools.product(BITS, BITS):
            assert hw.exec_cycles(spec, w, a) == base * w * a
            assert hw.layer_cost(spec, w, a).breakdown["exec"] == base * w * a
    # The ideal overlay (no drain, lhs fetched once) on a compute-bound
    # layer: total cycles scale exactly as well.
    ideal = BISMO(dm=2, dk=64, dn=2, tile_overhead=0, lhs_refetch=False)
    big = _layers()[0]
    c11 = ideal.layer_cost(big, 1, 1).cycles
    for w, a in itertools.product(BITS, BITS):
        assert ideal.layer_cost(big, w, a).cycles == c11 * w * a
    # The default (8x256x8, lhs refetched per N tile) is fetch-bound there:
    # its cycles follow the activation (lhs) bits.
    c = hw.layer_cost(big, 8, 8).breakdown
    assert c["fetch"] > c["exec"] + c["drain"]


def test_bismo_tiling_formula_and_latency():
    hw = BISMO(dm=2, dk=64, dn=2, freq_mhz=200)
    spec = LayerSpec("c", "conv", 8, 8, 16, 10, kernel=3, padding="same")
    # M = 64, K = 144, N = 10 -> tiles 32 * 3 * 5
    assert hw.exec_cycles(spec, 2, 3) == 32 * 3 * 5 * 6
    c = hw.layer_cost(spec, 8, 8)
    assert c.latency_s == pytest.approx(c.cycles / 200e6)
    assert c.energy_j is None
    assert hw.layer_cost(LayerSpec("a", "add", 8, 8, 4, 4), 8, 8).cycles == 0


def test_bitfusion_compute_equal_at_3_and_4_and_across_5_to_8():
    # Compute runs at the fused widths; traffic at the raw widths, so a
    # width costs at most its fused width's cost.
    for config in ("edge", "server"):
        hw = BitFusion(config)
        assert hw.distinct_bits() == (2, 4, 8)
        for spec in _layers(seed=1)[::3]:
            for other in BITS:
                for w, a in ((3, other), (other, 3)):
                    four = (4 if w == 3 else w, 4 if a == 3 else a)
                    assert hw.compute_cycles(spec, w, a) == \
                        hw.compute_cycles(spec, *four)
                    assert hw.layer_cost(spec, w, a).cycles <= \
                        hw.layer_cost(spec, *four).cycles
                ref = hw.layer_cost(spec, 8, other)
                for w in (5, 6, 7):
                    assert hw.compute_cycles(spec, w, other) == \
                        hw.compute_cycles(spec, 8, other)
                    assert hw.layer_cost(spec, w, other).cycles <= \
                        ref.cycles
        big = _layers()[0]
        assert hw.compute_cycles(big, 2, 2) * 16 == hw.compute_cycles(
            big, 8, 8)


def test_bitfusion_compute_formula():
    hw = BitFusion("edge")  # 16 rows x 32 cols
    spec = LayerSpec("c", "conv", 14, 14, 64, 40, kernel=3, padding="same")
    # B * ceil(OC/M) * OH * OW * K^2 * ceil(IC/(N*perf))
    assert hw.compute_cycles(spec, 8, 8) == 2 * 14 * 14 * 9 * 4
    assert hw.compute_cycles(spec, 4, 8) == 2 * 14 * 14 * 9 * 2
    assert hw.compute_cycles(spec, 2, 2) == 2 * 14 * 14 * 9 * 1
    assert BitFusion.perf_factor(2, 2) == 16
    c = hw.layer_cost(spec, 8, 8)
    assert c.cycles >= c.breakdown["compute"]
    assert c.latency_s == pytest.approx(c.cycles / 500e6)


@pytest.mark.parametrize("hw", [BISMO(), BitFusion("edge"),
                                BitFusion("server"),
                                pytest.param(BitFusion(
                                    "edge", out_bits="consumer"),
                                    marks=pytest.mark.slow)],
                         ids=["bismo", "bf-edge", "bf-server",
                              "bf-consumer"])
def test_latency_and_energy_never_rise_as_bits_fall(hw):
    for spec in _layers(seed=2):
        costs = {(w, a): hw.layer_cost(spec, w, a)
                 for w, a in itertools.product(BITS, BITS)}
        for (w, a), c in costs.items():
            for lower in ((w - 1, a), (w, a - 1)):
                if min(lower) < 1:
                    continue
                lo = costs[lower]
                assert lo.latency_s <= c.latency_s
                assert lo.cycles <= c.cycles
                # Bit Fusion's energy follows the fastest tiling's traffic,
                # which may grow as bits fall (documented).
                if c.energy_j is not None and hw.name != "BitFusion":
                    assert lo.energy_j <= c.energy_j


def test_model_cost_sums_layers_and_bits_mapping():
    model = tfcomp.zoo.resnet(depth=8)
    hw = BitFusion("edge")
    total = hw.model_cost(model, bits=(4, 4))
    assert total.latency_s == pytest.approx(
        sum(c.latency_s for c in total.layers.values()))
    assert total.cycles == sum(c.cycles for c in total.layers.values())
    mixed = hw.model_cost(model, bits={"stem_conv": (8, 8)},
                          default_bits=(2, 2))
    assert mixed.bits["stem_conv"] == (8, 8)
    assert mixed.bits["logits"] == (2, 2)
    assert hw.model_cost(model, bits=(2, 2)).latency_s <= total.latency_s \
        <= hw.model_cost(model, bits=(8, 8)).latency_s
    assert (Cost(1, 1.0, None) + Cost(2, 2.0, 3.0)).energy_j is None


def test_bits_and_config_validation():
    spec = LayerSpec("c", "conv", 4, 4, 4, 4)
    with pytest.raises(ValueError, match=r"w_bits in \[1, 8\]"):
        BitFusion().layer_cost(spec, 16, 8)
    with pytest.raises(ValueError, match="a_bits"):
        BISMO().layer_cost(spec, 4, 0)
    with pytest.raises(ValueError, match="config must be one of"):
        BitFusion("cloud")
    with pytest.raises(ValueError, match="Unknown BitFusion parameters"):
        BitFusion(rows=8, colz=4)
    with pytest.raises(ValueError, match="dk must be a positive int"):
        BISMO(dk=0)
    assert BitFusion("edge", rows=8).rows == 8
    with pytest.raises(ValueError, match=r"w_bits in \[1, 8\]"):
        BISMO().layer_cost(spec, 9, 8)
    with pytest.raises(ValueError, match="out_bits must be one of"):
        BitFusion(out_bits="int8")
    with pytest.raises(ValueError, match="tile_overhead"):
        BISMO(tile_overhead=-1)
    assert BISMO().describe()["config"]["dk"] == 256
