"""BISMO: bit-serial matrix multiplication overlay (analytic model).

Reference: Umuroglu, Rasnayake, Själander, "BISMO: A Scalable Bit-Serial
Matrix Multiplication Overlay for Reconfigurable Computing", FPL 2018,
arXiv:1806.08862. Used as a hardware target by HAQ (arXiv:1811.08886).

Example:
    >>> hw = BISMO()
    >>> hw.layer_cost(spec, w_bits=4, a_bits=4).latency_s
"""

from __future__ import annotations

from tfcomp.hardware.base import Cost, HardwareModel
from tfcomp.hardware.schedule import (
    BISMO_ARRAY_DEFAULTS,
    bismo_exec_cycles,
    bismo_tiles,
    ceil_div,
)
from tfcomp.hardware.spec import GEMM_OPS, LayerSpec

__all__ = ["BISMO"]

_D = BISMO_ARRAY_DEFAULTS


class BISMO(HardwareModel):
    """Analytic latency of a layer on BISMO's Dm x Dk x Dn dot-product array.

    A layer is lowered to GEMMs (conv: M = batch*Ho*Wo, K = Cin*kh*kw/groups,
    N = Cout/groups; activations are the M x K left operand at ``a_bits``,
    weights the K x N right operand at ``w_bits``) and tiled onto the array.
    Each Exec instruction multiplies one bit-plane pair of a tile, so

        exec cycles = groups * ceil(M/Dm) * ceil(N/Dn) * ceil(K/Dk)
                      * w_bits * a_bits

    Fetch and Result run concurrently with Exec (decoupled stages with
    token queues), so

        cycles = max(exec, fetch bits / read width, result bits / write width)

    with fetch bits = padded operands at their bit-widths (each operand
    fetched once: an optimistic bound that assumes the on-chip tile buffers
    hold a full row/column block) and result bits = M * N * acc_bits.
    Element-wise and pooling ops run on the host and cost 0 here. BISMO has
    no energy model: ``energy_j`` is None.

    Defaults are the paper's PYNQ-Z1 instance: Dm=2, Dk=64, Dn=2 at 200 MHz,
    64-bit DRAM read and write channels (the platform's AXI port width in the
    official ``BitSerialMatMulParams``), 32-bit accumulators.

    Args:
        dm, dk, dn: array dimensions (rows of LHS, dot-product width in bits,
            columns of RHS).
        freq_mhz: clock.
        read_bits_per_cycle: DRAM read channel width.
        write_bits_per_cycle: DRAM write channel width.
        acc_bits: accumulator (result) width.

    Reference: Umuroglu et al., FPL 2018, arXiv:1806.08862.

    Example:
        >>> spec = LayerSpec("c", "conv", 14, 14, 32, 32, kernel=(3, 3))
        >>> BISMO().exec_cycles(spec, 2, 2) * 4 == \\
        ...     BISMO().exec_cycles(spec, 4, 4)
        True
    """

    name = "BISMO"
    min_bits = 1
    max_bits = 32

    def __init__(self, dm: int = _D["dm"], dk: int = _D["dk"],
                 dn: int = _D["dn"],
                 freq_mhz: float = 200.0, read_bits_per_cycle: int = 64,
                 write_bits_per_cycle: int = 64, acc_bits: int = 32):
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
        self.dm, self.dk, self.dn = dm, dk, dn
        self.freq_mhz = float(freq_mhz)
        self.read_bits_per_cycle = read_bits_per_cycle
        self.write_bits_per_cycle = write_bits_per_cycle
        self.acc_bits = acc_bits

    def get_config(self) -> dict:
        return {"dm": self.dm, "dk": self.dk, "dn": self.dn,
                "freq_mhz": self.freq_mhz,
                "read_bits_per_cycle": self.read_bits_per_cycle,
                "write_bits_per_cycle": self.write_bits_per_cycle,
                "acc_bits": self.acc_bits}

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
            >>> BISMO().layer_cost(spec, 4, 8).cycles
        """
        self.check_bits(w_bits, a_bits, spec)
        if spec.op not in GEMM_OPS:
            return Cost(0, 0.0, None, {"exec": 0, "fetch": 0, "result": 0})
        g, tm, tk, tn, m, n = self._tiles(spec)
        exec_c = self.exec_cycles(spec, w_bits, a_bits)
        lhs_bits = tm * self.dm * tk * self.dk * a_bits
        rhs_bits = tk * self.dk * tn * self.dn * w_bits
        fetch_c = ceil_div(g * (lhs_bits + rhs_bits), self.read_bits_per_cycle)
        result_c = ceil_div(g * m * n * self.acc_bits,
                            self.write_bits_per_cycle)
        cycles = max(exec_c, fetch_c, result_c)
        return Cost(cycles, cycles / (self.freq_mhz * 1e6), None,
                    {"exec": exec_c, "fetch": fetch_c, "result": result_c})

    @property
    def peak_binary_ops_per_s(self) -> float:
        """2 * Dm * Dk * Dn binary ops per cycle at ``freq_mhz``."""
        return 2.0 * self.dm * self.dk * self.dn * self.freq_mhz * 1e6

    def __eq__(self, other):
        return type(other) is type(self) and (
            other.get_config() == self.get_config())

    def __hash__(self):
        return hash(tuple(sorted(self.get_config().items())))

