"""Bit Fusion: bit-level dynamically composable accelerator (analytic model).

Reference: Sharma et al., "Bit Fusion: Bit-Level Dynamically Composable
Architecture for Accelerating Deep Neural Networks", ISCA 2018,
arXiv:1712.01507. Used as a hardware target by HAQ (arXiv:1811.08886).

Example:
    >>> hw = BitFusion("edge")
    >>> hw.layer_cost(spec, w_bits=4, a_bits=4).energy_j
"""

from __future__ import annotations

from tfcomp.hardware.base import Cost, HardwareModel
from tfcomp.hardware.schedule import (
    BITFUSION_ARRAY_DEFAULTS,
    bitfusion_compute_cycles,
    bitfusion_perf_factor,
    ceil_div,
    fused_bits,
)
from tfcomp.hardware.spec import GEMM_OPS, LayerSpec

__all__ = ["BITFUSION_CONFIGS", "BITFUSION_ENERGY_PJ", "BitFusion"]

# Array and memory parameters from the authors' simulator configuration files
# (github.com/hsharma35/bitfusion, bf_e_conf.ini / bf_s_conf.ini):
# a = 16 rows (input channels, N), c = 32 columns (output channels, M),
# high/low precision 8/2 bits.
# "edge" matches the paper's evaluated design (16x32 Fusion Units, 500 MHz,
# 64/32/16 KB weight/input/output buffers, 192-bit memory interface).
# "server" is the authors' server configuration file (980 MHz, 128 KB per
# buffer, 4096-bit interface); the paper's scaled-up GPU comparison point
# could not be checked against the paper text here (unverified).
BITFUSION_CONFIGS = {
    "edge": {**BITFUSION_ARRAY_DEFAULTS, "freq_mhz": 500.0,
             "wbuf_kb": 64, "ibuf_kb": 32, "obuf_kb": 16,
             "mem_if_bits": 192},
    "server": {**BITFUSION_ARRAY_DEFAULTS, "freq_mhz": 980.0,
               "wbuf_kb": 128, "ibuf_kb": 128, "obuf_kb": 128,
               "mem_if_bits": 4096},
}

# First-order 45 nm energy numbers (Horowitz, "Computing's energy problem",
# ISSCC 2014; the process node of the Bit Fusion paper). NOT the paper's own
# synthesis / CACTI figures, which could not be verified here:
#   bitbrick: one 2x2-bit multiply-add = (8-bit mult 0.2 pJ + 8-bit add
#             0.03 pJ) / 16 BitBricks of an 8x8 fused unit  (derived)
#   sram_bit: 8 KB SRAM, 64-bit access 10 pJ -> 0.156 pJ/bit
#   dram_bit: DRAM 64-bit access ~1.3 nJ -> 20 pJ/bit
BITFUSION_ENERGY_PJ = {"bitbrick": 0.23 / 16, "sram_bit": 10.0 / 64,
                       "dram_bit": 1300.0 / 64}

_OUT_BITS = 32  # the simulator writes 32-bit outputs (oprec = 32)


class BitFusion(HardwareModel):
    """Analytic cycles, latency and energy of a layer on Bit Fusion.

    BitBricks (2x2-bit) fuse in powers of two, so an operand of b bits runs
    at the fused width p(b) in {2, 4, 8} and the array does

        perf = (8 / p(a_bits)) * (8 / p(w_bits))

    times more multiply-adds per cycle than at 8x8 bits (equal at 3 and 4
    bits, and across 5-8 bits). Following the authors' simulator:

        compute = groups * B * ceil(OC'/M) * OH * OW * K^2
                  * ceil(IC'/(N * perf))

    on an N (rows, input channels) x M (columns, output channels) array, with
    IC' = IC/groups and OC' = OC/groups (depthwise runs one channel per
    group: bits then only reduce memory traffic). Dense layers are 1x1
    convolutions over their batch.

    Memory (simplified from the simulator's tiling search, documented
    approximation): operands are stored at their fused widths, outputs at 32
    bits; buffers are double-buffered (half usable). If the weights fit in
    half the weight buffer or the inputs in half the input buffer, every
    operand crosses DRAM once; otherwise the cheaper of re-reading inputs
    per weight tile or weights per input tile is taken. The first tiles'
    loads and the last output tile's store are not overlapped:

        total = compute + max(0, memory - compute) + load/store latency

    with memory cycles = DRAM bits / interface width.

    Energy (first-order, see ``BITFUSION_ENERGY_PJ``; unverified against the
    paper): MACs * (p_w * p_a / 4) BitBricks * E_bitbrick + every DRAM bit
    * E_dram + every DRAM bit written to and read from its buffer once
    * E_sram. Pooling and element-wise ops run on the host: cost 0.

    Args:
        config: "edge" or "server" (``BITFUSION_CONFIGS``).
        **overrides: any config field (rows, cols, freq_mhz, wbuf_kb,
            ibuf_kb, obuf_kb, mem_if_bits).

    Reference: Sharma et al., ISCA 2018, arXiv:1712.01507.

    Example:
        >>> hw = BitFusion("edge")
        >>> hw.compute_cycles(spec, 3, 3) == hw.compute_cycles(spec, 4, 4)
        True
    """

    name = "BitFusion"
    min_bits = 1
    max_bits = 8

    def __init__(self, config: str = "edge", **overrides):
        if config not in BITFUSION_CONFIGS:
            raise ValueError(
                f"config must be one of {sorted(BITFUSION_CONFIGS)}. "
                f"Received: config={config!r}")
        cfg = dict(BITFUSION_CONFIGS[config])
        unknown = sorted(set(overrides) - set(cfg))
        if unknown:
            raise ValueError(f"Unknown BitFusion parameters {unknown}. "
                             f"Known: {sorted(cfg)}")
        cfg.update(overrides)
        for k, v in cfg.items():
            if not (isinstance(v, (int, float)) and not isinstance(v, bool)
                    and v > 0):
                raise ValueError(f"{k} must be > 0. Received: {k}={v!r}")
        self.config = config
        self.rows = int(cfg["rows"])
        self.cols = int(cfg["cols"])
        self.freq_mhz = float(cfg["freq_mhz"])
        self.wbuf_kb = cfg["wbuf_kb"]
        self.ibuf_kb = cfg["ibuf_kb"]
        self.obuf_kb = cfg["obuf_kb"]
        self.mem_if_bits = int(cfg["mem_if_bits"])

    def get_config(self) -> dict:
        return {"config": self.config, "rows": self.rows, "cols": self.cols,
                "freq_mhz": self.freq_mhz, "wbuf_kb": self.wbuf_kb,
                "ibuf_kb": self.ibuf_kb, "obuf_kb": self.obuf_kb,
                "mem_if_bits": self.mem_if_bits}

    @staticmethod
    def perf_factor(w_bits: int, a_bits: int) -> int:
        """Fused PEs per unit: ``tfcomp.hardware.bitfusion_perf_factor``."""
        return bitfusion_perf_factor(w_bits, a_bits)

    def _dims(self, spec: LayerSpec):
        """(groups, batch*, oh, ow, k^2, ic', oc') as the simulator sees it."""
        if spec.op == "dense":
            return 1, spec.batch * spec.in_h * spec.in_w, 1, 1, 1, \
                spec.cin, spec.cout
        oh, ow = spec.out_hw
        g = spec.groups
        kk = spec.kernel[0] * spec.kernel[1]
        return g, spec.batch, oh, ow, kk, spec.cin // g, spec.cout // g

    def compute_cycles(self, spec: LayerSpec, w_bits: int,
                       a_bits: int) -> int:
        """Array cycles without memory stalls (0 for non-GEMM ops).

        Example:
            >>> BitFusion().compute_cycles(spec, 8, 8)
        """
        self.check_bits(w_bits, a_bits, spec)
        if spec.op not in GEMM_OPS:
            return 0
        g, b, oh, ow, kk, ic, oc = self._dims(spec)
        perf = self.perf_factor(w_bits, a_bits)
        return bitfusion_compute_cycles(g, b * oh * ow, kk, ic, oc, perf,
                                        self.rows, self.cols)

    def _memory(self, spec: LayerSpec, pw: int, pa: int):
        """(dram bits, load/store latency cycles, middle memory cycles)."""
        if_bits = self.mem_if_bits
        w_total = spec.weight_count * pw
        a_total = spec.batch * spec.in_h * spec.in_w * spec.cin * pa
        o_total = spec.output_elems * _OUT_BITS
        w_cap = self.wbuf_kb * 1024 * 8 / 2
        a_cap = self.ibuf_kb * 1024 * 8 / 2
        o_cap = self.obuf_kb * 1024 * 8 / 2
        if w_total <= w_cap or a_total <= a_cap:
            reads = w_total + a_total
        else:
            n_w = ceil_div(w_total, w_cap)
            n_a = ceil_div(a_total, a_cap)
            reads = min(w_total + a_total * n_w, a_total + w_total * n_a)
        first = min(w_total, w_cap) + min(a_total, a_cap)
        last = min(o_total, o_cap)
        middle = max(0, reads + o_total - first - last)
        latency = ceil_div(first, if_bits) + ceil_div(last, if_bits)
        return reads + o_total, latency, ceil_div(middle, if_bits)

    def layer_cost(self, spec: LayerSpec, w_bits: int, a_bits: int) -> Cost:
        """Cycles, latency and energy of one layer.

        Example:
            >>> c = BitFusion("edge").layer_cost(spec, 4, 8)
            >>> c.cycles, c.latency_s, c.energy_j
        """
        self.check_bits(w_bits, a_bits, spec)
        if spec.op not in GEMM_OPS:
            return Cost(0, 0.0, 0.0, {"compute": 0, "memory": 0,
                                      "load_store": 0})
        pw, pa = fused_bits(w_bits), fused_bits(a_bits)
        compute = self.compute_cycles(spec, w_bits, a_bits)
        dram_bits, load_store, memory = self._memory(spec, pw, pa)
        cycles = compute + max(0, memory - compute) + load_store
        e = BITFUSION_ENERGY_PJ
        energy_pj = (spec.macs * (pw * pa / 4) * e["bitbrick"]
                     + dram_bits * (e["dram_bit"] + 2 * e["sram_bit"]))
        return Cost(cycles, cycles / (self.freq_mhz * 1e6), energy_pj * 1e-12,
                    {"compute": compute, "memory": memory,
                     "load_store": load_store, "dram_bits": dram_bits})

    def __eq__(self, other):
        return type(other) is type(self) and (
            other.get_config() == self.get_config())

    def __hash__(self):
        return hash(tuple(sorted(self.get_config().items())))
