"""Issue #19: accelerator costs as the authors' simulator / overlay compute
them, hardware-native bit sets, and HAQ's released latency table.

The hand computations cite their formulas' sources:
* Bit Fusion: github.com/hsharma35/bitfusion, ``bitfusion/src/simulator/
  accelerator.py`` (``get_compute_cycles``), ``bitfusion/src/optimizer/
  optimizer.py`` (``get_stats_fast``), ``bitfusion/src/simulator/
  simulator.py`` (``get_cycles``: im2col when ``op.data.op is None``),
  ``bf_e_conf.ini`` (16 x 32 array, 64/32/16 KB, 192-bit interface).
* BISMO: github.com/EECS-NTNU/bismo, ``bismo_rt_matmul.cpp``
  (``getNumBytesToFetch``), ``hls/FetchInstrGen.cpp`` /
  ``hls/ResultInstrGen.cpp`` / ``hls/ExecInstrGen.cpp``.
"""

import os
import warnings

import keras
import numpy as np
import pytest

from tfcomp.hardware import (
    BISMO,
    BitFusion,
    LatencyTable,
    LatencyTableError,
    LayerSpec,
    exec_tile_overhead,
)

HAQ_NPY = "/work/shared/anchors/haq/qmobilenetv2_imagenet100_batch16_" \
    "latency_table.npy"
needs_haq = pytest.mark.skipif(not os.path.exists(HAQ_NPY),
                               reason="HAQ's released table not present")


def ceil(a, b):
    return -(-a // b)


# -- distinct bits -----------------------------------------------------------

def test_distinct_and_snapped_bits():
    bf = BitFusion("edge")
    assert bf.distinct_bits() == (2, 4, 8)
    assert [bf.snap_bits(b) for b in range(1, 9)] == [2, 2, 4, 4, 8, 8, 8, 8]
    assert BISMO().distinct_bits() == tuple(range(1, 9))
    assert BISMO().snap_bits(5) == 5
    with pytest.raises(ValueError, match="bits=9"):
        bf.snap_bits(9)
    with pytest.raises(ValueError, match="must be an int"):
        bf.snap_bits(4.5)
    spec = LayerSpec("c", "conv", 8, 8, 16, 16, kernel=3, padding="same")
    table = LatencyTable.build([spec], bf, bits=range(2, 9), progress=False)
    assert table.distinct_bits() == (2, 4, 8)
    again = LatencyTable.from_dict(table.to_dict())
    assert again.distinct_bits() == (2, 4, 8)
    assert LatencyTable.build([spec], BISMO(), bits=[2, 4, 8],
                              progress=False).distinct_bits() == (2, 4, 8)


# -- Bit Fusion ----------------------------------------------------------------

N, M, IF = 16, 32, 192          # bf_e_conf.ini: a = 16, c = 32, if_width
HALF = {"wgt": 64 * 1024 * 8 // 2, "act": 32 * 1024 * 8 // 2,
        "out": 16 * 1024 * 8 // 2}


def test_bitfusion_first_layer_im2col_matches_the_simulator():
    # First layer (reads the model input): 8x8x3 -> 16, 3x3, stride 1.
    spec = LayerSpec("stem", "conv", 8, 8, 3, 16, kernel=3, padding="same",
                     fixed_in=True)
    hw = BitFusion("edge")
    assert hw.uses_im2col(spec)
    for bits, perf in ((8, 1), (4, 4)):
        # accelerator.get_compute_cycles, im2col branch:
        #   b*oh*ow * ceil(oc/M) * ceil(kw*kh*ic / (N*perf))
        compute = 1 * 8 * 8 * ceil(16, M) * ceil(9 * 3, N * perf)
        # get_stats_fast, im2col: the whole layer is one tile (all fit half
        # their buffer): weights padded to N*perf along K^2*IC, expanded
        # activations ow*oh*K^2*ic*b*iprec, 32-bit outputs with OC padded
        # to M, read and written (oprec = 32).
        wgt = ceil(9 * 3, N * perf) * N * perf * 16 * bits
        act = 8 * 8 * 9 * 3 * 1 * bits
        out = 8 * 8 * ceil(16, M) * M * 1 * 32
        assert wgt <= HALF["wgt"] and act <= HALF["act"] and (
            out <= HALF["out"])
        # initial reads = every tile, final write = the output tile,
        # nothing in the middle: total = compute + load/store latency.
        latency = ceil(wgt + act + out, IF) + ceil(out, IF)
        c = hw.raw_cost(spec, bits, bits)
        assert c.breakdown["compute"] == compute
        assert c.breakdown["dram_bits"] == wgt + act + 2 * out
        assert c.cycles == compute + latency
        assert c.latency_s == pytest.approx(c.cycles / 500e6)
        assert hw.layer_cost(spec, bits, bits).cycles <= c.cycles
    assert hw.raw_cost(spec, 8, 8).cycles == 128 + 435 + 342
    # Without im2col the array fuses over IC = 3 only: 9x the cycles here.
    plain = BitFusion("edge", im2col_first=False)
    assert plain.compute_cycles(spec, 8, 8) == 8 * 8 * 9 * ceil(3, N)
    assert hw.compute_cycles(spec, 8, 8) == 128


def test_bitfusion_outputs_simulator_and_consumer_modes():
    # A 1x1 conv 4x4x16 -> 40 (not the first layer): OC pads to 64.
    spec = LayerSpec("p", "conv", 4, 4, 16, 40)
    compute = 1 * ceil(40, M) * 4 * 4 * 1 * ceil(16, N)   # = 32
    wgt = ceil(16, N) * N * 40 * 8
    act = 4 * 4 * 16 * 8
    out = 4 * 4 * ceil(40, M) * M * 32                    # padded, 32-bit
    sim = BitFusion("edge").layer_cost(spec, 8, 8)
    assert sim.breakdown["out_bits"] == 32
    assert sim.breakdown["dram_bits"] == wgt + act + 2 * out
    assert sim.cycles == compute + ceil(wgt + act + out, IF) + ceil(out, IF)
    # consumer: written once, unpadded, at the next layer's activation bits
    hw = BitFusion("edge", out_bits="consumer")
    con = hw.layer_cost(spec, 8, 8, out_bits=4)
    assert con.breakdown["dram_bits"] == wgt + act + 4 * 4 * 40 * 4
    assert con.cycles < sim.cycles
    assert hw.layer_cost(spec, 8, 8).breakdown["out_bits"] == 8


def test_bitfusion_traffic_at_raw_widths_and_output_buffer_limit():
    spec = LayerSpec("c", "conv", 28, 28, 64, 64, kernel=3, padding="same")
    hw = BitFusion("edge")
    # 5..7-bit operands compute as 8 but move fewer bits.
    r8, r6 = hw.raw_cost(spec, 8, 8), hw.raw_cost(spec, 6, 6)
    assert hw.compute_cycles(spec, 6, 6) == hw.compute_cycles(spec, 8, 8)
    assert r6.breakdown["dram_bits"] < r8.breakdown["dram_bits"]
    # The chosen output tile (32-bit, OC padded) fits half the output
    # buffer (get_stats_fast skips tilings with writes['out'] > half).
    for obuf_kb, cost in ((16, r8), (1, BitFusion(
            "edge", obuf_kb=1).raw_cost(spec, 8, 8))):
        t = cost.breakdown["tile"]
        assert t["oh"] * t["ow"] * ceil(t["oc"], M) * M * 32 <= (
            obuf_kb * 1024 * 8 // 2)


def test_bitfusion_warns_once_on_depthwise():
    inp = keras.Input((8, 8, 4))
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(inp)
    x = keras.layers.Conv2D(8, 1, name="pw")(x)
    model = keras.Model(inp, x)
    hw = BitFusion("edge")
    with pytest.warns(UserWarning, match="depthwise"):
        hw.model_cost(model, bits=(4, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hw.model_cost(model, bits=(8, 8))
    # consumer mode: each output at the next conv's a_bits (8 at the end)
    con = BitFusion("edge", out_bits="consumer")
    with pytest.warns(UserWarning, match="depthwise"):
        c = con.model_cost(model, bits={"dw": (8, 8), "pw": (8, 2)})
    assert c.layers["dw"].breakdown["out_bits"] == 2
    assert c.layers["pw"].breakdown["out_bits"] == 8


# -- BISMO -------------------------------------------------------------------

def test_bismo_paper_instance_refetch_drain_and_padding():
    hw = BISMO()
    assert (hw.dm, hw.dk, hw.dn, hw.freq_mhz) == (8, 256, 8, 200.0)
    assert hw.peak_binary_ops_per_s == pytest.approx(6.55e12, rel=1e-3)
    assert hw.tile_overhead == exec_tile_overhead(256) == 23
    spec = LayerSpec("c", "conv", 8, 8, 16, 10, kernel=3, padding="same")
    # M = 64, K = 144, N = 10 -> tiles 8 x 1 x 2
    tm, tk, tn = ceil(64, 8), ceil(144, 256), ceil(10, 8)
    w, a = 2, 3
    exec_c = tm * tn * tk * w * a
    drain = tm * tn * 23
    lhs = tm * 8 * tk * 256 * a                # padded activations
    rhs = tk * 256 * tn * 8 * w                # padded weights
    fetch = ceil(lhs * tn + rhs, 64)           # lhs refetched per N tile
    result = ceil(tm * 8 * tn * 8 * 32, 64)    # padded int32 tiles
    c = hw.layer_cost(spec, w, a)
    assert c.breakdown == {"exec": exec_c, "drain": drain, "fetch": fetch,
                           "result": result}
    assert c.cycles == max(exec_c + drain, fetch, result) == 1664
    once = BISMO(lhs_refetch=False).layer_cost(spec, w, a)
    assert once.breakdown["fetch"] == ceil(lhs + rhs, 64)


# -- HAQ's released table ------------------------------------------------------

def _mbv2(size):
    return keras.applications.MobileNetV2(
        weights=None, input_shape=(size, size, 3), alpha=1.0)


def _ratio(table, model, bits):
    full = table.model_cost(model, bits=(8, 8)).latency_s
    return table.model_cost(model, bits=bits).latency_s / full


@needs_haq
def test_from_haq_small_model_and_errors(tmp_path):
    model = _mbv2(32)
    table = LatencyTable.from_haq(HAQ_NPY, model)
    assert table.distinct_bits() == tuple(range(1, 9))
    assert len(table.meta["layers"]) == 53
    raw = np.load(HAQ_NPY)
    # first layer, mapped by position
    first = table.model_cost(model, bits=(8, 8)).layers["Conv1"]
    assert first.cycles == raw[0, 7, 7]
    # a model with other layers: both counts in the message
    small = keras.Sequential([keras.Input((8, 8, 3)),
                              keras.layers.Conv2D(4, 3),
                              keras.layers.Flatten(),
                              keras.layers.Dense(2)])
    with pytest.raises(LatencyTableError, match=r"53 layers.*2 quantiz"):
        LatencyTable.from_haq(HAQ_NPY, small)
    bad = tmp_path / "bad.npy"
    np.save(bad, np.ones((53, 8)))
    with pytest.raises(LatencyTableError, match="shape"):
        LatencyTable.from_haq(str(bad), model)
    with pytest.raises(FileNotFoundError):
        LatencyTable.from_haq(str(tmp_path / "none.npy"), model)


@needs_haq
def test_from_haq_reproduces_uniform_ratios_on_mobilenetv2_224():
    model = _mbv2(224)
    table = LatencyTable.from_haq(HAQ_NPY, model)
    assert _ratio(table, model, (4, 4)) == pytest.approx(0.397, abs=5e-4)
    assert _ratio(table, model, (2, 2)) == pytest.approx(0.178, abs=5e-4)
