"""Bit Fusion: bit-level dynamically composable accelerator (analytic model).

Reference: Sharma et al., "Bit Fusion: Bit-Level Dynamically Composable
Architecture for Accelerating Deep Neural Networks", ISCA 2018,
arXiv:1712.01507. Used as a hardware target by HAQ (arXiv:1811.08886).
The cycle and traffic formulas follow the authors' simulator
(github.com/hsharma35/bitfusion: ``Accelerator.get_compute_cycles``,
``optimizer.get_stats_fast`` / ``_optimize_for_order``).

Example:
    >>> hw = BitFusion("edge")
    >>> hw.layer_cost(spec, w_bits=4, a_bits=4).energy_j
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np

from tfcomp.hardware.base import (
    Cost,
    HardwareModel,
    as_specs,
    parts_cost,
    resolve_spec_bits,
)
from tfcomp.hardware.schedule import (
    BITFUSION_ARRAY_DEFAULTS,
    bitfusion_compute_cycles,
    bitfusion_perf_factor,
    ceil_div,
    fused_bits,
)
from tfcomp.hardware.spec import COMPOSITE_OPS, GEMM_OPS, LayerSpec

__all__ = ["BITFUSION_CONFIGS", "BITFUSION_ENERGY_PJ", "OUT_BITS_MODES",
           "BitFusion"]

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

ACC_BITS = 32  # the simulator's output precision (oprec = 32)
OUT_BITS_MODES = ("simulator", "consumer")
_WGT, _ACT, _OUT = 0, 1, 2
# Which operand each tiled loop indexes (simulator's ``tile_deps``):
# batch, output width / height, input channels, output channels.
_LOOPS = ("B", "OW", "OH", "IC", "OC")
_DEPS = np.array([[False, True, True],    # B: act, out
                  [False, True, True],    # OW
                  [False, True, True],    # OH
                  [True, True, False],    # IC: wgt, act
                  [True, False, True]])   # OC: wgt, out


def _pow2_sizes(total: int, unit: int = 1) -> list[int]:
    """``min(2**i * unit, total)`` for ``i = 0 .. ceil(log2(total/unit))``:
    the tile sizes ``_optimize_for_order`` tries."""
    n = ceil_div(total, unit)
    return sorted({min((1 << i) * unit, total)
                   for i in range((n - 1).bit_length() + 1)})


class BitFusion(HardwareModel):
    """Cycles, latency and energy of a layer on Bit Fusion, as the authors'
    simulator computes them.

    BitBricks (2x2-bit) fuse in powers of two, so an operand of b bits runs
    at the fused width p(b) in {2, 4, 8} and the array does
    ``perf = (8 // p(a_bits)) * (8 // p(w_bits))`` times more multiply-adds
    per cycle than at 8x8 bits (equal at 3 and 4 bits, and across 5-8 bits:
    ``distinct_bits()`` is (2, 4, 8)). Per tile of (b, oh, ow, ic, oc):

        compute = b * ceil(oc/M) * oh * ow * K^2 * ceil(ic/(N * perf))
        im2col (first layer): b * oh * ow * ceil(oc/M)
                              * ceil(K^2 * ic/(N * perf))

    on an N (rows, input channels) x M (columns, output channels) array.
    Layers that read the model's input (``LayerSpec.fixed_in``) use im2col
    as in the simulator (``Simulator.get_cycles``: ``op.data.op is None``):
    the host expands the input, the array fuses over K^2 * IC and the
    activation traffic is the expanded ``OH * OW * K^2 * IC``.

    Memory follows ``optimizer.get_stats_fast``: tile sizes are powers of
    two (output channels in multiples of M), every loop order is tried and
    the fastest (then the least DRAM traffic) is kept. A tile must fit half
    of its buffer (double buffering), the output tile included. Traffic is
    at the raw bit-widths (a 3-bit operand moves 3 bits, computes as 4);
    weights are padded to a multiple of N * perf along K^2 * IC. Outputs
    (``out_bits``):

    * ``"simulator"`` (default, faithful): 32-bit partial sums with output
      channels padded to a multiple of M, read from and written back to DRAM
      (``oprec = 32``).
    * ``"consumer"``: what the hardware would do: each output is written
      once, unpadded, at the consumer's activation bits (``layer_cost``'s
      ``out_bits``; ``model_cost`` passes the next costed conv / dense
      layer's ``a_bits``, 8 after the last one); partial sums stay on chip.

    Then ``total = compute + max(0, memory - compute) + load/store`` with
    memory cycles = DRAM bits / interface width, load/store = the first
    tiles' loads and the last output tile's store.

    Grouped and depthwise convolutions are an extrapolation: the simulator
    has no groups, so each group runs as its own convolution (IC/groups ->
    OC/groups; depthwise: 1 -> multiplier) and costs add up; a depthwise
    layer then does one MAC per cycle at any width and bits only change its
    traffic. ``model_cost`` warns once per instance when a model has
    depthwise layers.

    Energy (first-order, see ``BITFUSION_ENERGY_PJ``; unverified against the
    paper): MACs * (p_w * p_a / 4) BitBricks * E_bitbrick + every DRAM bit
    * (E_dram + 2 E_sram). Pooling and element-wise ops (and an
    embedding's gather) run on the host: cost 0. A separable conv costs its
    depthwise plus its pointwise part (``LayerSpec.parts``; the depthwise
    output is written at ``a_bits`` in ``"consumer"`` mode).

    Args:
        config: "edge" or "server" (``BITFUSION_CONFIGS``).
        out_bits: ``"simulator"`` or ``"consumer"`` (above).
        im2col_first: use im2col for layers reading the model input.
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

    def __init__(self, config: str = "edge", out_bits: str = "simulator",
                 im2col_first: bool = True, **overrides):
        if config not in BITFUSION_CONFIGS:
            raise ValueError(
                f"config must be one of {sorted(BITFUSION_CONFIGS)}. "
                f"Received: config={config!r}")
        if out_bits not in OUT_BITS_MODES:
            raise ValueError(f"out_bits must be one of {OUT_BITS_MODES}. "
                             f"Received: out_bits={out_bits!r}")
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
        self.out_bits = out_bits
        self.im2col_first = bool(im2col_first)
        self.rows = int(cfg["rows"])
        self.cols = int(cfg["cols"])
        self.freq_mhz = float(cfg["freq_mhz"])
        self.wbuf_kb = cfg["wbuf_kb"]
        self.ibuf_kb = cfg["ibuf_kb"]
        self.obuf_kb = cfg["obuf_kb"]
        self.mem_if_bits = int(cfg["mem_if_bits"])
        self._memo: dict = {}
        self._warned_depthwise = False

    def get_config(self) -> dict:
        return {"config": self.config, "rows": self.rows, "cols": self.cols,
                "freq_mhz": self.freq_mhz, "wbuf_kb": self.wbuf_kb,
                "ibuf_kb": self.ibuf_kb, "obuf_kb": self.obuf_kb,
                "mem_if_bits": self.mem_if_bits, "out_bits": self.out_bits,
                "im2col_first": self.im2col_first}

    def distinct_bits(self) -> tuple[int, ...]:
        """(2, 4, 8): the fused widths; b bits compute as ``snap_bits(b)``.

        Only traffic (raw widths) differs between them.

        Example:
            >>> BitFusion().snap_bits(5)
            8
        """
        return (2, 4, 8)

    @staticmethod
    def perf_factor(w_bits: int, a_bits: int) -> int:
        """Fused PEs per unit: ``tfcomp.hardware.bitfusion_perf_factor``."""
        return bitfusion_perf_factor(w_bits, a_bits)

    def uses_im2col(self, spec: LayerSpec) -> bool:
        """True for a conv reading the model input (when ``im2col_first``).
        """
        return self.im2col_first and spec.op == "conv" and spec.fixed_in

    def _dims(self, spec: LayerSpec):
        """(groups, batch, oh, ow, kh, kw, ic', oc') as the simulator sees
        one group (dense: a 1x1 conv over batch * middle axes)."""
        if spec.op == "dense":
            return (1, spec.batch * spec.in_h * spec.in_w, 1, 1, 1, 1,
                    spec.cin, spec.cout)
        oh, ow = spec.out_hw
        g = spec.groups
        kh, kw = spec.kernel
        return g, spec.batch, oh, ow, kh, kw, spec.cin // g, spec.cout // g

    def compute_cycles(self, spec: LayerSpec, w_bits: int,
                       a_bits: int) -> int:
        """Array cycles of the whole layer untiled, without memory stalls
        (0 for non-GEMM ops); im2col for the first layer.

        Example:
            >>> BitFusion().compute_cycles(spec, 8, 8)
        """
        self.check_bits(w_bits, a_bits, spec)
        if spec.op not in GEMM_OPS:
            return 0
        g, b, oh, ow, kh, kw, ic, oc = self._dims(spec)
        perf = self.perf_factor(w_bits, a_bits)
        if self.uses_im2col(spec):
            return bitfusion_compute_cycles(g, b * oh * ow, 1, kh * kw * ic,
                                            oc, perf, self.rows, self.cols)
        return bitfusion_compute_cycles(g, b * oh * ow, kh * kw, ic, oc,
                                        perf, self.rows, self.cols)

    def _search(self, spec: LayerSpec, w_bits: int, a_bits: int,
                out_bits: int) -> dict:
        """The simulator's tiling / loop-order search for one group."""
        g, batch, oh_t, ow_t, kh, kw, ic_t, oc_t = self._dims(spec)
        im2col = self.uses_im2col(spec)
        n_rows, m_cols = self.rows, self.cols
        perf = self.perf_factor(w_bits, a_bits)
        npf = n_rows * perf
        kk = kh * kw
        sh, sw = (1, 1) if spec.op == "dense" else spec.stride
        dh, dw = (1, 1) if spec.op == "dense" else spec.dilation
        consumer = self.out_bits == "consumer"
        cap = np.array([self.wbuf_kb, self.ibuf_kb, self.obuf_kb],
                       dtype=np.int64) * 1024 * 8 // 2
        oc_sizes = (_pow2_sizes(oc_t) if im2col
                    else _pow2_sizes(oc_t, m_cols))
        grid = np.array(list(itertools.product(
            _pow2_sizes(batch), _pow2_sizes(max(oh_t, ow_t)),
            _pow2_sizes(ic_t), oc_sizes)), dtype=np.int64)
        b, t, ic, oc = grid.T
        oh, ow = np.minimum(t, oh_t), np.minimum(t, ow_t)
        nums = np.stack([-(-batch // b), -(-ow_t // ow), -(-oh_t // oh),
                         -(-ic_t // ic), -(-oc_t // oc)])
        oc_pad = -(-oc // m_cols) * m_cols
        wgt = -(-(kk * ic) // npf) * npf * oc * w_bits
        if im2col:
            act = ow * oh * kk * ic * b * a_bits
        else:
            ih = (kh - 1) * dh + 1 + (oh - 1) * sh
            iw = (kw - 1) * dw + 1 + (ow - 1) * sw
            act = ih * iw * ic * b * a_bits
        acc = ow * oh * oc_pad * b * ACC_BITS
        fits = (wgt <= cap[_WGT]) & (act <= cap[_ACT]) & (acc <= cap[_OUT])
        if not fits.any():  # buffers too small even for 1-wide tiles
            fits = np.zeros_like(fits)
            fits[0] = True
        grid_idx = np.flatnonzero(fits)
        nums = nums[:, grid_idx]
        tiles = np.stack([wgt, act, acc])[:, grid_idx]
        b, oh, ow, ic, oc = (x[grid_idx] for x in (b, oh, ow, ic, oc))
        n_tiles = nums.prod(axis=0)
        if im2col:
            per_tile = b * oh * ow * -(-oc // m_cols) * -(-(kk * ic) // npf)
        else:
            per_tile = b * -(-oc // m_cols) * ow * oh * kk * -(-ic // npf)
        compute = n_tiles * per_tile
        out_elems = batch * oh_t * ow_t * oc_t
        loops = [i for i, n in enumerate(nums) if (n > 1).any()] or [4]
        orders = np.array(list(itertools.permutations(loops)))  # (P, L)
        n_p = len(orders)
        size = np.broadcast_to(tiles, (n_p, *tiles.shape)).copy()
        top = size.copy()  # the largest tile that still fits (promoted)
        promote = np.ones(size.shape, dtype=bool)
        for level in range(orders.shape[1] - 1, -1, -1):
            loop = orders[:, level]
            dep = _DEPS[loop][:, :, None]                 # (P, 3, 1)
            n = nums[loop][:, None, :]                    # (P, 1, T)
            size = size * np.where(~promote | dep, n, 1)
            grow = promote & dep
            ok = size <= cap[None, :, None]
            top = np.where(grow & ok, size, top)
            promote = promote & ~(grow & ~ok)
        if consumer:
            reads = size[:, _WGT] + size[:, _ACT]
            writes = np.full_like(reads, out_elems * out_bits)
            first = top[:, _WGT] + top[:, _ACT]
            last = np.broadcast_to(ow * oh * oc * b * out_bits, reads.shape)
        else:
            reads = size.sum(axis=1)
            writes = size[:, _OUT]
            first = top.sum(axis=1)
            last = top[:, _OUT]
        mif = self.mem_if_bits
        latency = -(-first // mif) - (-last // mif)
        middle = -(-(reads + writes - first - last) // mif)
        total = compute + np.maximum(0, middle - compute) + latency
        dram = reads + writes
        flat = int(np.lexsort((dram.ravel(), total.ravel()))[0])
        p, i = divmod(flat, total.shape[1])
        best = (None, {
            "compute": int(compute[i]), "memory": int(middle[p, i]),
            "load_store": int(latency[p, i]), "dram_bits": int(dram[p, i]),
            "order": [_LOOPS[j] for j in orders[p]],
            "tile": {"b": int(b[i]), "oh": int(oh[i]), "ow": int(ow[i]),
                     "ic": int(ic[i]), "oc": int(oc[i])}})
        out = best[1]
        out["groups"] = g
        return out

    def raw_cost(self, spec: LayerSpec, w_bits: int, a_bits: int,
                 out_bits: int | None = None) -> Cost:
        """The simulator's cost at exactly these widths (no envelope; see
        ``layer_cost``).

        Example:
            >>> BitFusion().raw_cost(spec, 3, 8).breakdown["tile"]
        """
        self.check_bits(w_bits, a_bits, spec)
        if spec.op not in GEMM_OPS:
            return Cost(0, 0.0, 0.0, {"compute": 0, "memory": 0,
                                      "load_store": 0, "dram_bits": 0})
        ob = self._out_bits(a_bits, out_bits)
        key = ("raw", spec.signature(), self.uses_im2col(spec), w_bits,
               a_bits, ob)
        cost = self._memo.get(key)
        if cost is not None:
            return cost
        s = self._search(spec, w_bits, a_bits, ob)
        g = s["groups"]
        cycles = g * (s["compute"] + max(0, s["memory"] - s["compute"])
                      + s["load_store"])
        dram_bits = g * s["dram_bits"]
        pw, pa = fused_bits(w_bits), fused_bits(a_bits)
        e = BITFUSION_ENERGY_PJ
        energy_pj = (spec.macs * (pw * pa / 4) * e["bitbrick"]
                     + dram_bits * (e["dram_bit"] + 2 * e["sram_bit"]))
        breakdown = {**s, "compute": g * s["compute"],
                     "memory": g * s["memory"],
                     "load_store": g * s["load_store"],
                     "dram_bits": dram_bits, "im2col": key[2],
                     "out_bits": ob, "run_bits": (w_bits, a_bits)}
        cost = Cost(cycles, cycles / (self.freq_mhz * 1e6),
                    energy_pj * 1e-12, breakdown)
        self._remember(key, cost)
        return cost

    def _out_bits(self, a_bits, out_bits) -> int:
        if self.out_bits == "simulator":
            return ACC_BITS
        return int(a_bits if out_bits is None else out_bits)

    def _remember(self, key, cost):
        if len(self._memo) < 200_000:
            self._memo[key] = cost

    def layer_cost(self, spec: LayerSpec, w_bits: int, a_bits: int,
                   out_bits: int | None = None) -> Cost:
        """Cycles, latency and energy of one layer.

        The simulator's formulas at raw widths are not monotone: a narrower
        operand lets a tile grow, and the first tile's load is not hidden,
        so 3 bits can cost a few cycles more than 4 (about 0.1%). A narrower
        operand can always run as a wider one, so the cost reported is the
        cheapest (cycles, then energy) of ``raw_cost`` over widths >= the
        requested ones; ``breakdown["run_bits"]`` says which. Latency then
        never rises as bits fall; energy (the first-order model) may.

        Args:
            spec: the layer.
            w_bits, a_bits: operand widths (1-8).
            out_bits: the consumer's activation width in ``"consumer"`` mode
                (default ``a_bits``); ignored in ``"simulator"`` mode.

        Example:
            >>> c = BitFusion("edge").layer_cost(spec, 4, 8)
            >>> c.cycles, c.latency_s, c.energy_j, c.breakdown["tile"]
        """
        self.check_bits(w_bits, a_bits, spec)
        if spec.op in COMPOSITE_OPS:
            return parts_cost(spec, lambda p, last: self.layer_cost(
                p, w_bits, a_bits, out_bits if last else a_bits))
        if spec.op not in GEMM_OPS:
            return self.raw_cost(spec, w_bits, a_bits)
        ob = self._out_bits(a_bits, out_bits)
        key = ("env", spec.signature(), self.uses_im2col(spec), w_bits,
               a_bits, ob)
        cost = self._memo.get(key)
        if cost is not None:
            return cost
        cost = self.raw_cost(spec, w_bits, a_bits, ob)
        for w, a in ((w_bits + 1, a_bits), (w_bits, a_bits + 1)):
            if max(w, a) <= self.max_bits:
                other = self.layer_cost(spec, w, a, ob)
                if (other.cycles, other.energy_j) < (cost.cycles,
                                                     cost.energy_j):
                    cost = other
        self._remember(key, cost)
        return cost

    def model_cost(self, model_or_specs, bits=None, default_bits=(8, 8),
                   batch: int = 1):
        """Sums ``layer_cost`` over a model's layers (see
        ``HardwareModel.model_cost``); warns once when depthwise layers are
        costed (an extrapolation), and in ``"consumer"`` mode writes each
        output at the next conv / dense layer's ``a_bits`` (8 after the
        last).

        Example:
            >>> BitFusion(out_bits="consumer").model_cost(model, (4, 4))
        """
        specs = as_specs(model_or_specs, batch=batch)
        if not self._warned_depthwise and any(
                p.op == "depthwise" for s in specs for p in s.parts):
            self._warned_depthwise = True
            warnings.warn(
                "BitFusion: the model has depthwise layers, which the Bit "
                "Fusion simulator does not model; they are costed as one "
                "convolution per channel (one MAC per cycle at any width), "
                "an extrapolation. Compare mixed precision on a cost model "
                "where bits matter (e.g. BISMO or a LatencyTable).",
                stacklevel=2)
        if self.out_bits == "simulator":
            return super().model_cost(specs, bits, default_bits)
        per = resolve_spec_bits(specs, bits, default_bits)
        gemm = [s.name for s in specs if s.op in GEMM_OPS + COMPOSITE_OPS]
        nxt = {a: per[b][1] for a, b in zip(gemm, gemm[1:])}
        return super().model_cost(
            specs, bits, default_bits,
            layer_cost=lambda s, w, a: self.layer_cost(
                s, w, a, out_bits=nxt.get(s.name, 8)))

    def __eq__(self, other):
        return type(other) is type(self) and (
            other.get_config() == self.get_config())

    def __hash__(self):
        return hash(tuple(sorted(self.get_config().items())))
