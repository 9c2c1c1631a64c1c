"""BISMO and Bit Fusion tiling: the one place it is computed.

The analytic models (``BISMO.exec_cycles``, ``BitFusion.compute_cycles``)
and the bit-serial exporter (descriptor programs, simulator) all take their
tiles, cycle counts, fused widths and array defaults from here.

Both work on a layer's grouped GEMM view: ``groups`` independent GEMMs of
``M x K`` activations (lhs) by ``K x N`` weights (rhs); depthwise convs have
one group per channel and N = depth multiplier. Schedules describe *how* a
layer runs (tiles, blocks, instruction stream, loop order) and count the
compute cycles of that program; the time, memory stalls and energy of a
layer come from the ``BISMO`` / ``BitFusion`` models.

BISMO (Umuroglu et al., FPL 2018, arXiv 1806.08862): a ``dm x dk x dn``
array of binary dot-product units. One Exec step multiplies one lhs bit
plane tile (dm x dk) by one rhs bit plane tile (dk x dn), AND + popcount,
shifted by ``i + j`` and negated for one signed MSB plane, so
``exec_cycles = groups * tiles_m * tiles_n * tiles_k * a_bits * w_bits``
(:func:`bismo_exec_cycles`, which ``BISMO.exec_cycles`` calls). Operands are
fetched in blocks that fit the lhs/rhs buffers (``lhs_depth`` /
``rhs_depth`` entries of dk bits per buffer; 1024 as in the paper's
instances); the program is a loop nest (group, m_block, n_block, k_block)
over a body of Fetch / Exec / Result / Sync instructions.

Bit Fusion (Sharma et al., ISCA 2018, arXiv 1712.01507): ``rows`` (input
channels) x ``cols`` (output channels) fusion units, ``perf`` fused PEs per
unit; loop nest (group, oc_tile, m, kernel, ic_tile) with oc tiles of
``cols`` and ic tiles of ``rows * perf`` channels, one cycle per innermost
trip (:func:`bitfusion_compute_cycles`, which ``BitFusion.compute_cycles``
calls). A first layer (one reading the model input) runs in im2col form
in the authors' simulator (``BitFusion.uses_im2col``): one kernel position
and ic tiles over all ``k = kh * kw * IC`` products (``im2col=True``).

Example:
    >>> s = bismo_schedule(1, 64, 144, 16, a_bits=4, w_bits=2,
    ...                    a_signed=False, w_signed=True, dm=2, dk=64, dn=2)
    >>> s["exec_cycles"] == 32 * 3 * 8 * 4 * 2
    True
"""

from __future__ import annotations

__all__ = [
    "BISMO_ARRAY_DEFAULTS", "BISMO_BUFFER_DEFAULTS",
    "BITFUSION_ARRAY_DEFAULTS", "bismo_exec_cycles", "bismo_exec_list",
    "bismo_schedule", "bismo_tiles", "bitfusion_compute_cycles",
    "bitfusion_perf_factor", "bitfusion_schedule", "ceil_div", "fused_bits",
    "split_blocks",
]

# The paper's PYNQ-Z1 BISMO instance (Umuroglu et al., FPL 2018): 8 x 256
# x 8, the M/K/N defaults of the paper-era Makefile and Main.scala
# (github.com/EECS-NTNU/bismo, commit fd69f89, 2018-06); its lhs/rhs
# memories hold 64 * 32 * 1024 / (8 * 256) = 1024 entries. The later
# repository default, 2 x 64 x 2 at 200 MHz, is the Ultra96 (PYNQU96) one.
BISMO_ARRAY_DEFAULTS = {"dm": 8, "dk": 256, "dn": 8}
BISMO_BUFFER_DEFAULTS = {"lhs_depth": 1024, "rhs_depth": 1024}
# Bit Fusion's array in the authors' simulator configurations (both).
BITFUSION_ARRAY_DEFAULTS = {"rows": 16, "cols": 32}


def ceil_div(a, b) -> int:
    """``ceil(a / b)`` for integers.

    Example:
        >>> ceil_div(7, 2)
        4
    """
    return -(-int(a) // int(b))


def bismo_tiles(m, k, n, dm, dk, dn) -> tuple[int, int, int]:
    """``(tiles_m, tiles_k, tiles_n)`` of an ``M x K`` by ``K x N`` GEMM on
    a ``dm x dk x dn`` BISMO array.

    Example:
        >>> bismo_tiles(64, 144, 16, 2, 64, 2)
        (32, 3, 8)
    """
    return ceil_div(m, dm), ceil_div(k, dk), ceil_div(n, dn)


def bismo_exec_cycles(groups, m, k, n, w_bits, a_bits, dm, dk, dn) -> int:
    """Exec-stage cycles: ``groups * tiles_m * tiles_n * tiles_k * a_bits
    * w_bits`` (one bit-plane pair of one tile per cycle).

    Example:
        >>> bismo_exec_cycles(1, 64, 144, 16, 2, 4, 2, 64, 2)
        6144
    """
    tm, tk, tn = bismo_tiles(m, k, n, dm, dk, dn)
    return groups * tm * tn * tk * a_bits * w_bits


def fused_bits(b: int) -> int:
    """Operand width a Bit Fusion fused PE is built for: 2, 4 or 8 bits.

    Example:
        >>> [fused_bits(b) for b in (1, 3, 5)]
        [2, 4, 8]
    """
    return 2 if b <= 2 else 4 if b <= 4 else 8


def bitfusion_perf_factor(w_bits: int, a_bits: int) -> int:
    """Fused PEs per Bit Fusion unit: ``(8 / p(a)) * (8 / p(w))`` with
    ``p = fused_bits``.

    Example:
        >>> bitfusion_perf_factor(3, 4)
        4
    """
    return (8 // fused_bits(a_bits)) * (8 // fused_bits(w_bits))


def bitfusion_compute_cycles(groups, m, kernel_positions, ic, oc, perf,
                             rows, cols) -> int:
    """Array cycles of the loop nest (group, oc_tile, m, kernel, ic_tile):
    ``groups * ceil(oc / cols) * m * kernel_positions * ceil(ic / (rows *
    perf))`` with ``ic`` / ``oc`` the channels per group.

    Example:
        >>> bitfusion_compute_cycles(1, 100, 9, 3, 16, 4, 16, 32)
        900
    """
    return groups * ceil_div(oc, cols) * m * kernel_positions * ceil_div(
        ic, rows * perf)


def split_blocks(total: int, block: int) -> list[tuple[int, int]]:
    """``[(start, size), ...]`` covering ``range(total)`` in blocks.

    Args:
        total: length to cover.
        block: block length.

    Returns:
        ``[(start, size), ...]``.

    Example:
        >>> split_blocks(5, 2)
        [(0, 2), (2, 2), (4, 1)]
    """
    return [(s, min(block, total - s)) for s in range(0, total, block)]


def bismo_exec_list(a_bits, w_bits, a_signed, w_signed) -> list[dict]:
    """One Exec per (rhs weight plane i, lhs activation plane j).

    Each adds ``(-1 if negate) * 2**(i + j) * popcount(lhs_j & rhs_i)``;
    ``negate`` is set when exactly one of the two planes is a signed MSB.

    Args:
        a_bits, w_bits: activation (lhs) and weight (rhs) bits.
        a_signed, w_signed: their signedness.

    Returns:
        ``w_bits * a_bits`` Exec instruction dicts.

    Example:
        >>> [e["negate"] for e in bismo_exec_list(1, 2, False, True)]
        [False, True]
    """
    out = []
    for i in range(w_bits):
        for j in range(a_bits):
            neg = (w_signed and i == w_bits - 1) != (a_signed and
                                                      j == a_bits - 1)
            out.append({"op": "Exec", "stage": "exec", "lhs_plane": j,
                        "rhs_plane": i, "shift": i + j, "negate": neg})
    return out


def bismo_schedule(groups, m, k, n, a_bits, w_bits, a_signed, w_signed,
                   dm=BISMO_ARRAY_DEFAULTS["dm"],
                   dk=BISMO_ARRAY_DEFAULTS["dk"],
                   dn=BISMO_ARRAY_DEFAULTS["dn"],
                   lhs_depth=BISMO_BUFFER_DEFAULTS["lhs_depth"],
                   rhs_depth=BISMO_BUFFER_DEFAULTS["rhs_depth"]) -> dict:
    """Tiling and blocked Fetch/Exec/Result/Sync program for BISMO.

    Args:
        groups, m, k, n: the grouped GEMM view.
        a_bits, w_bits: lhs (activation) and rhs (weight) bits.
        a_signed, w_signed: signedness of the operands.
        dm, dk, dn: array size (dk a multiple of 64, one packed word).
        lhs_depth, rhs_depth: buffer entries (of dk bits) per array row /
            column memory.

    Returns:
        JSON-ready dict: array, buffers, tiles, block, blocks, loop_order,
        body, counts (hardware instructions), traffic_bits, exec_cycles.

    Example:
        >>> bismo_schedule(1, 4, 64, 2, 8, 8, False, True)["tiles"]
        {'m': 2, 'k': 1, 'n': 1}
    """
    dm, dk, dn = int(dm), int(dk), int(dn)
    if min(dm, dk, dn) < 1 or dk % 64:
        raise ValueError("BISMO needs dm, dn >= 1 and dk a multiple of 64 "
                         f"(one packed word). Received: dm={dm}, dk={dk}, "
                         f"dn={dn}")
    tm, tk, tn = bismo_tiles(m, k, n, dm, dk, dn)
    bk = max(1, min(tk, lhs_depth // a_bits, rhs_depth // w_bits))
    bm = max(1, min(tm, lhs_depth // (bk * a_bits)))
    bn = max(1, min(tn, rhs_depth // (bk * w_bits)))
    mb, nb, kb = ceil_div(tm, bm), ceil_div(tn, bn), ceil_div(tk, bk)
    body = [
        {"op": "Sync", "stage": "fetch", "action": "wait",
         "token": "exec_free"},
        {"op": "Fetch", "stage": "fetch", "operand": "lhs",
         "planes": a_bits, "m_tiles": bm, "k_tiles": bk},
        {"op": "Fetch", "stage": "fetch", "operand": "rhs",
         "planes": w_bits, "n_tiles": bn, "k_tiles": bk},
        {"op": "Sync", "stage": "fetch", "action": "signal",
         "token": "fetch_done"},
        {"op": "Sync", "stage": "exec", "action": "wait",
         "token": "fetch_done"},
        *bismo_exec_list(a_bits, w_bits, a_signed, w_signed),
        {"op": "Sync", "stage": "exec", "action": "signal",
         "token": "exec_free"},
        {"op": "Sync", "stage": "exec", "action": "signal",
         "token": "exec_done", "when": "last_k_block"},
        {"op": "Sync", "stage": "result", "action": "wait",
         "token": "exec_done", "when": "last_k_block"},
        {"op": "Result", "stage": "result", "m_tiles": bm, "n_tiles": bn,
         "when": "last_k_block"},
    ]
    return {
        "kind": "bismo",
        "array": {"dm": dm, "dk": dk, "dn": dn},
        "buffers": {"lhs_depth": int(lhs_depth), "rhs_depth": int(rhs_depth)},
        "tiles": {"m": tm, "k": tk, "n": tn},
        "block": {"m_tiles": bm, "k_tiles": bk, "n_tiles": bn},
        "blocks": {"group": groups, "m": mb, "n": nb, "k": kb},
        "loop_order": ["group", "m_block", "n_block", "k_block"],
        "body": body,
        "counts": {
            "Fetch": 2 * groups * mb * nb * kb,
            # one hardware Exec per output tile, plane pair and k block
            "Exec": groups * tm * tn * kb * a_bits * w_bits,
            "Result": groups * tm * tn,
            "Sync": groups * mb * nb * (4 * kb + 2),
        },
        # bits this blocked program moves (lhs re-fetched per n block)
        "traffic_bits": {"lhs": groups * nb * tm * dm * tk * dk * a_bits,
                         "rhs": groups * mb * tn * dn * tk * dk * w_bits,
                         "result": groups * tm * dm * tn * dn * 32},
        "exec_cycles": bismo_exec_cycles(groups, m, k, n, w_bits, a_bits,
                                         dm, dk, dn),
    }


def bitfusion_schedule(groups, m, k, n, kernel_positions, perf,
                       rows=BITFUSION_ARRAY_DEFAULTS["rows"],
                       cols=BITFUSION_ARRAY_DEFAULTS["cols"], a_bits=8,
                       w_bits=8, im2col: bool = False) -> dict:
    """Loop tiling and order for Bit Fusion.

    Args:
        groups, m, k, n: the grouped GEMM view (m = batch * OH * OW).
        kernel_positions: kh * kw (1 for dense); IC = k / kernel_positions.
        perf: fused PEs per fusion unit at these bits
            (:func:`bitfusion_perf_factor`).
        rows, cols: array size (rows span input channels, cols output
            channels, as in the authors' simulator).
        a_bits, w_bits: operand bits (recorded with their fused widths).
        im2col: the im2col form (``BitFusion.uses_im2col``, a first layer):
            one kernel position, ic tiles over all ``k`` products; the
            schedule then holds ``"im2col": True``.

    Returns:
        JSON-ready dict: array, perf_factor, fused_bits, tile_sizes, tiles,
        loop_order, compute_cycles (and ``im2col`` when set).

    Example:
        >>> bitfusion_schedule(1, 100, 27, 16, 9, perf=4)["compute_cycles"]
        900
        >>> bitfusion_schedule(1, 100, 27, 16, 9, perf=4,
        ...                    im2col=True)["compute_cycles"]
        100
    """
    if im2col:
        kernel_positions = 1
    ic = k // kernel_positions
    t_oc, t_ic = ceil_div(n, cols), ceil_div(ic, rows * perf)
    out = {
        "kind": "bitfusion",
        "array": {"rows": int(rows), "cols": int(cols)},
        "perf_factor": int(perf),
        "fused_bits": {"w": fused_bits(w_bits), "a": fused_bits(a_bits)},
        "tile_sizes": {"oc": int(cols), "ic": int(rows * perf)},
        "tiles": {"group": groups, "oc": t_oc, "m": m,
                  "kernel": kernel_positions, "ic": t_ic},
        "loop_order": ["group", "oc_tile", "m", "kernel", "ic_tile"],
        "compute_cycles": bitfusion_compute_cycles(
            groups, m, kernel_positions, ic, n, perf, rows, cols),
    }
    if im2col:
        out["im2col"] = True
    return out
