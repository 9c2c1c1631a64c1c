"""BISMO: bit-serial matrix multiplication overlay (analytic model).

Reference: Umuroglu, Rasnayake, Själander, "BISMO: A Scalable Bit-Serial
Matrix Multiplication Overlay for Reconfigurable Computing", FPL 2018,
arXiv:1806.08862. Used as a hardware target by HAQ (arXiv:1811.08886).

Example:
    >>> hw = BISMO()
    >>> hw.layer_cost(spec, w_bits=4, a_bits=4).latency_s
"""

from __future__ import annotations

from tfcomp.hardware.base import Cost, HardwareModel, parts_cost
from tfcomp.hardware.schedule import (
    BISMO_ARRAY_DEFAULTS,
    bismo_exec_cycles,
    bismo_tiles,
    ceil_div,
)
from tfcomp.hardware.spec import COMPOSITE_OPS, GEMM_OPS, LayerSpec

__all__ = ["BISMO", "exec_tile_overhead"]

_D = BISMO_ARRAY_DEFAULTS


def exec_tile_overhead(dk: int) -> int:
    """Bit-independent cycles each result tile costs the Exec stage: the
    pipeline drain before its result is written, plus its Sync handshakes.

    From the overlay's Chisel sources (github.com/EECS-NTNU/bismo,
    ``ExecStage`` / ``DotProductArray`` / ``DotProductUnit`` /
    ``PopCountUnit``): BRAM read 3 (in + out register + 1), array
    interconnect 1, dot-product unit 6, popcount 2 + log2(compressors) with
    ``ceil(dk / 36)`` compressors rounded up to a power of two; plus 4 Sync
    instructions per tile (``ExecInstrGen``) at 2 controller cycles each
    (get command, send / receive). 23 cycles at dk = 256.

    Example:
        >>> exec_tile_overhead(256), exec_tile_overhead(64)
        (23, 21)
    """
    compressors = 1 << max(0, (ceil_div(dk, 36) - 1).bit_length())
    popcount = 2 + (compressors - 1).bit_length()
    return 3 + 1 + 6 + popcount + 4 * 2


class BISMO(HardwareModel):
    """Analytic latency of a layer on BISMO's Dm x Dk x Dn dot-product array.

    A layer is lowered to GEMMs (conv: M = batch*Ho*Wo, K = Cin*kh*kw/groups,
    N = Cout/groups; activations are the M x K left operand at ``a_bits``,
    weights the K x N right operand at ``w_bits``) and tiled onto the array.
    Each Exec instruction multiplies one bit-plane pair of a result tile
    over all of K, so

        exec cycles = groups * ceil(M/Dm) * ceil(N/Dn) * ceil(K/Dk)
                      * w_bits * a_bits

    (``exec_cycles``, exactly w * a). What the real overlay adds
    (github.com/EECS-NTNU/bismo, runtime ``MatrixMultiply`` and the HLS
    instruction generators):

    * the left operand is refetched for every N tile
      (``getNumBytesToFetch`` = rhs bytes + lhs bytes * tiles_n;
      ``FetchInstrGen``: for each n, fetch rhs stripe n, then every lhs
      stripe m), so fetch bits = padded rhs * w_bits + padded lhs *
      a_bits * ceil(N/Dn);
    * each result tile waits for the pipeline to drain and syncs:
      ``tile_overhead`` bit-independent cycles per (m, n) tile
      (``exec_tile_overhead``);
    * results are int32 tiles padded to Dm x Dn: result bits =
      ceil(M/Dm)*Dm * ceil(N/Dn)*Dn * acc_bits.

    Fetch and Result run concurrently with Exec (decoupled stages with
    token queues), so

        cycles = max(exec + drain, fetch bits / read width,
                     result bits / write width)

    per group, summed. With 8 x 256 x 8 and 64-bit DRAM ports most conv
    layers are fetch-bound (the lhs refetch), so their cost follows a_bits
    more than w_bits; 2 x 64 x 2 is closer to compute-bound. Element-wise
    and pooling ops (and an embedding's gather) run on the host and cost
    0 here; a separable conv costs its depthwise plus its pointwise part
    (``LayerSpec.parts``). BISMO has no energy
    model: ``energy_j`` is None. The runtime accepts at most 8-bit operands
    (``max_bits = 8``).

    Defaults are the paper's PYNQ-Z1 instance, Dm=8, Dk=256, Dn=8 (the
    paper-era Makefile's M/K/N and ``Main.scala``; see
    ``BISMO_ARRAY_DEFAULTS``), at 200 MHz: 2 * 8 * 256 * 8 * 200e6 = 6.55
    binary TOPS, the paper's reported 6.5 TOPS peak; 64-bit DRAM read and
    write channels (the platform's AXI port), 32-bit accumulators. The
    repository's later default, 2 x 64 x 2 at 200 MHz, is its Ultra96
    instance: ``BISMO(dm=2, dk=64, dn=2)``.

    Args:
        dm, dk, dn: array dimensions (rows of LHS, dot-product width in bits,
            columns of RHS).
        freq_mhz: clock.
        read_bits_per_cycle: DRAM read channel width.
        write_bits_per_cycle: DRAM write channel width.
        acc_bits: accumulator (result) width.
        tile_overhead: cycles per result tile; None: ``exec_tile_overhead
            (dk)``; 0 for the ideal w * a model.
        lhs_refetch: refetch the lhs per N tile (as the runtime does);
            False for the optimistic fetch-once bound.

    Reference: Umuroglu et al., FPL 2018, arXiv:1806.08862.

    Example:
        >>> spec = LayerSpec("c", "conv", 14, 14, 32, 32, kernel=(3, 3))
        >>> BISMO().exec_cycles(spec, 2, 2) * 4 == \\
        ...     BISMO().exec_cycles(spec, 4, 4)
        True
    """

    name = "BISMO"
    min_bits = 1
    max_bits = 8

    def __init__(self, dm: int = _D["dm"], dk: int = _D["dk"],
                 dn: int = _D["dn"],
                 freq_mhz: float = 200.0, read_bits_per_cycle: int = 64,
                 write_bits_per_cycle: int = 64, acc_bits: int = 32,
                 tile_overhead: int | None = None, lhs_refetch: bool = True):
        for k, v in (("dm", dm), ("dk", dk), ("dn", dn),
                     ("read_bits_per_cycle", read_bits_per_cycle),
                     ("write_bits_per_cycle", write_bits_per_cycle),
                     ("acc_bits", acc_bits)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{k} must be a positive int. Received: "
                                 f"{k}={v!r}")
        if not freq_mhz > 0:
            raise ValueError(f"freq_mhz must be > 0. Received: "
                             f"freq_mhz={freq_mhz!r}")
        if tile_overhead is None:
            tile_overhead = exec_tile_overhead(dk)
        if isinstance(tile_overhead, bool) or not isinstance(
                tile_overhead, int) or tile_overhead < 0:
            raise ValueError("tile_overhead must be an int >= 0 or None. "
                             f"Received: tile_overhead={tile_overhead!r}")
        self.dm, self.dk, self.dn = dm, dk, dn
        self.freq_mhz = float(freq_mhz)
        self.read_bits_per_cycle = read_bits_per_cycle
        self.write_bits_per_cycle = write_bits_per_cycle
        self.acc_bits = acc_bits
        self.tile_overhead = tile_overhead
        self.lhs_refetch = bool(lhs_refetch)

    def get_config(self) -> dict:
        return {"dm": self.dm, "dk": self.dk, "dn": self.dn,
                "freq_mhz": self.freq_mhz,
                "read_bits_per_cycle": self.read_bits_per_cycle,
                "write_bits_per_cycle": self.write_bits_per_cycle,
                "acc_bits": self.acc_bits,
                "tile_overhead": self.tile_overhead,
                "lhs_refetch": self.lhs_refetch}

    def _tiles(self, spec: LayerSpec):
        g, m, k, n = spec.gemm_shape()
        return (g, *bismo_tiles(m, k, n, self.dm, self.dk, self.dn), m, n)

    def exec_cycles(self, spec: LayerSpec, w_bits: int, a_bits: int) -> int:
        """Exec-stage cycles: tiles * w_bits * a_bits (0 for non-GEMM ops).

        Example:
            >>> BISMO().exec_cycles(spec, 8, 8)
        """
        self.check_bits(w_bits, a_bits, spec)
        if spec.op not in GEMM_OPS:
            return 0
        g, m, k, n = spec.gemm_shape()
        return bismo_exec_cycles(g, m, k, n, w_bits, a_bits, self.dm,
                                 self.dk, self.dn)

    def layer_cost(self, spec: LayerSpec, w_bits: int, a_bits: int) -> Cost:
        """Cycles and latency of one layer (energy None).

        Example:
            >>> BISMO().layer_cost(spec, 4, 8).breakdown
        """
        self.check_bits(w_bits, a_bits, spec)
        if spec.op in COMPOSITE_OPS:
            return parts_cost(spec, lambda p, last: self.layer_cost(
                p, w_bits, a_bits))
        if spec.op not in GEMM_OPS:
            return Cost(0, 0.0, None, {"exec": 0, "drain": 0, "fetch": 0,
                                       "result": 0})
        g, tm, tk, tn, _, _ = self._tiles(spec)
        exec_c = self.exec_cycles(spec, w_bits, a_bits)
        drain = g * tm * tn * self.tile_overhead
        lhs_bits = tm * self.dm * tk * self.dk * a_bits
        rhs_bits = tk * self.dk * tn * self.dn * w_bits
        refetch = tn if self.lhs_refetch else 1
        fetch_c = ceil_div(g * (lhs_bits * refetch + rhs_bits),
                           self.read_bits_per_cycle)
        result_c = ceil_div(g * tm * self.dm * tn * self.dn * self.acc_bits,
                            self.write_bits_per_cycle)
        cycles = max(exec_c + drain, fetch_c, result_c)
        return Cost(cycles, cycles / (self.freq_mhz * 1e6), None,
                    {"exec": exec_c, "drain": drain, "fetch": fetch_c,
                     "result": result_c})

    @property
    def peak_binary_ops_per_s(self) -> float:
        """2 * Dm * Dk * Dn binary ops per cycle at ``freq_mhz``."""
        return 2.0 * self.dm * self.dk * self.dn * self.freq_mhz * 1e6

    def __eq__(self, other):
        return type(other) is type(self) and (
            other.get_config() == self.get_config())

    def __hash__(self):
        return hash(tuple(sorted(self.get_config().items())))

