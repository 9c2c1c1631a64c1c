"""Bit-serial reference simulator: runs a descriptor + blob in numpy.

It reads nothing but the descriptor JSON and its weight blob. Every GEMM is
computed bit-serially: activations are split into bit planes (two's
complement for signed tensors, MSB plane weighted ``-2**(b-1)``; 1-bit
signed weights are signs ``2b - 1``, corrected by the activation row
sums), packed into uint64 words along K, and for each weight plane ``i`` and activation
plane ``j`` the simulator adds ``(+-)2**(i+j) * popcount(A_j & W_i)`` into an
integer accumulator. Zero points are handled with the usual correction
terms (``- a_zp * colsum(W) - w_zp * rowsum(A) + K * a_zp * w_zp``), the row
and column sums themselves computed by popcount over the planes. Then bias
and per-channel fixed-point requantization, as the integer reference does.

BISMO descriptors are executed as their program says: the loop nest over
(group, m block, n block, k block), the Exec list (planes, shift, negate) of
the body; the simulator counts the Exec tile-steps (cycles), Fetch, Exec and
Result instructions it runs. Bit Fusion descriptors are executed per output
channel tile and the compute cycles counted from the loop nest trip counts.

Example:
    >>> write_descriptor(ir, "m.json", hardware="bismo")
    >>> y, stats = simulate_bitserial("m.json", x, return_stats=True)
    >>> stats.by_name("conv1").compute_cycles
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tfcomp.export.bitserial import kernels, packing
from tfcomp.export.bitserial.descriptor import load_descriptor
from tfcomp.export.bitserial.descriptor_inputs import descriptor_inputs
from tfcomp.export.bitserial.ir import QuantParams, find_named
from tfcomp.export.bitserial.reference import prepare_inputs
from tfcomp.hardware import bismo_exec_list, split_blocks

__all__ = ["LayerStats", "SimulationStats", "simulate_bitserial"]

_MAX_ELEMS = 1 << 22  # elements per vectorised AND + popcount


@dataclasses.dataclass
class LayerStats:
    """What the simulator counted for one layer (per program run).

    Attributes:
        name: layer name.
        op: op type.
        engine: "array" (GEMM on the accelerator) or "host".
        compute_cycles: BISMO Exec tile-steps / Bit Fusion compute cycles
            counted while executing one run of ``batch`` samples.
        descriptor_cycles: the layer's total cycles in the descriptor's cost
            (the hardware model's number when one was used).
        instructions: executed hardware instructions by type (BISMO).

    Example:
        >>> _, st = simulate_bitserial("m.json", x, return_stats=True)
        >>> st.layers[0].compute_cycles
    """

    name: str
    op: str
    engine: str
    compute_cycles: int = 0
    descriptor_cycles: int | None = None
    instructions: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class SimulationStats:
    """Per-layer counts of one :func:`simulate_bitserial` call.

    Attributes:
        target: "bismo" or "bitfusion".
        batch: samples per program run (the descriptor's ``batch``).
        runs: program runs executed (input batch / ``batch``).
        layers: one :class:`LayerStats` per layer.

    Example:
        >>> _, st = simulate_bitserial("m.json", x, return_stats=True)
        >>> st.compute_cycles, st.by_name("conv1").instructions
    """

    target: str
    batch: int
    runs: int
    layers: list

    @property
    def compute_cycles(self) -> int:
        """Counted compute cycles of one run, summed over layers."""
        return sum(la.compute_cycles for la in self.layers)

    def by_name(self, name: str) -> LayerStats:
        """The stats of layer ``name``."""
        return find_named(self.layers, name, "layer")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _pairs(a_bits, w_bits, a_signed, w_signed, execs=None):
    execs = execs or bismo_exec_list(a_bits, w_bits, a_signed, w_signed)
    jj = np.array([e["lhs_plane"] for e in execs], np.int64)
    ii = np.array([e["rhs_plane"] for e in execs], np.int64)
    coef = np.array([(-1 if e["negate"] else 1) * (1 << e["shift"])
                     for e in execs], np.int64)
    return jj, ii, coef


def _plane_weights(bits, signed):
    c = np.array([1 << i for i in range(bits)], np.int64)
    if signed:
        c[-1] = -c[-1]
    return c


def _rowsum(ap, lhs) -> np.ndarray:
    """Row sums of the activation codes by popcount: (G, R, M)."""
    ac = _plane_weights(lhs["bits"], lhs["signed"])
    return np.tensordot(ac, packing.popcount(ap).sum(-1, dtype=np.int64),
                        axes=(0, 0))


def _popcount_dot(ap, wp, jj, ii, coef) -> np.ndarray:
    """sum_p coef[p] * popcount(ap[jj[p]] & wp[ii[p]]) over the K words.

    ap: (A_planes, G, R, m, kw) uint64; wp: (W_planes, G, n, kw) uint64.
    Returns (G, R, m, n) int64.
    """
    _, g, r, m, kw = ap.shape
    n = wp.shape[2]
    out = np.zeros((g, r, m, n), np.int64)
    per_pair = max(1, g * r * m * n * kw)
    step = max(1, _MAX_ELEMS // per_pair)
    for s in range(0, len(coef), step):
        a = ap[jj[s:s + step]][:, :, :, :, None, :]
        w = wp[ii[s:s + step]][:, :, None, None, :, :]
        pc = packing.popcount(a & w).sum(-1, dtype=np.int64)
        out += np.tensordot(coef[s:s + step], pc, axes=(0, 0))
    return out


def _m_chunk(g, r, n, kw, pairs):
    return max(1, _MAX_ELEMS // max(1, g * r * n * kw * min(pairs, 16)))


def _run_bismo(ap, wp, sched, execs, stats):
    """Executes the BISMO loop nest; returns raw sum(a*w) (G, R, M, N)."""
    _, g, r, m, kw = ap.shape
    n = wp.shape[2]
    dm, dk, dn = (sched["array"][k] for k in ("dm", "dk", "dn"))
    blk = sched["block"]
    rows, cols = blk["m_tiles"] * dm, blk["n_tiles"] * dn
    kwords = blk["k_tiles"] * dk // packing.WORD_BITS
    jj, ii, coef = _pairs(0, 0, False, False, execs)
    k_elems = sched["_k"]
    acc = np.zeros((g, r, m, n), np.int64)
    cnt = {"Fetch": 0, "Exec": 0, "Result": 0}
    cycles = 0
    for m0, mr in split_blocks(m, rows):
        tm = -(-mr // dm)
        for n0, nr in split_blocks(n, cols):
            tn = -(-nr // dn)
            k_blocks = split_blocks(kw, kwords)
            for k0, kr in k_blocks:
                a = ap[:, :, :, m0:m0 + mr, k0:k0 + kr]
                w = wp[:, :, n0:n0 + nr, k0:k0 + kr]
                cnt["Fetch"] += 2 * g
                tk = -(-(min(k_elems, (k0 + kr) * 64) - k0 * 64) // dk)
                step = _m_chunk(g, r, nr, kr, len(coef))
                for c0, cr in split_blocks(mr, step):
                    acc[:, :, m0 + c0:m0 + c0 + cr, n0:n0 + nr] += \
                        _popcount_dot(a[:, :, :, c0:c0 + cr], w, jj, ii, coef)
                cycles += g * len(execs) * tm * tn * tk
                cnt["Exec"] += g * len(execs) * tm * tn
            cnt["Result"] += g * tm * tn
    stats.compute_cycles = cycles
    stats.instructions = cnt
    return acc


def _run_bitfusion(ap, wp, sched, jj, ii, coef, stats):
    """Executes per output-channel tile; returns raw sum(a*w)."""
    _, g, r, m, kw = ap.shape
    n = wp.shape[2]
    acc = np.zeros((g, r, m, n), np.int64)
    t = sched["tiles"]
    cycles = 0
    for n0, nr in split_blocks(n, sched["tile_sizes"]["oc"]):
        step = _m_chunk(g, r, nr, kw, len(coef))
        for m0, mr in split_blocks(m, step):
            acc[:, :, m0:m0 + mr, n0:n0 + nr] = _popcount_dot(
                ap[:, :, :, m0:m0 + mr], wp[:, :, n0:n0 + nr], jj, ii, coef)
        cycles += g * m * t["kernel"] * t["ic"]
    stats.compute_cycles = cycles
    return acc


def _weights_planes(layer, blob):
    w = layer["weights"]
    g, n = layer["gemm"]["groups"], layer["gemm"]["N"]
    off, nbytes = w["offset"], w["nbytes"]
    if w["packing"] == "bitplanes_u64":
        words = np.frombuffer(blob, "<u8", count=nbytes // 8, offset=off)
        return words.reshape(w["bits"], g, n, -1)
    vals = packing.unpack_values(blob[off:off + nbytes], w["rows"] * w["k"],
                                 w["bits"], w["signed"])
    return packing.pack_bitplanes(vals.reshape(g, n, w["k"]), w["bits"],
                                  w["signed"])


def _gemm_layer(layer, x, blob, target, batch, stats):
    lhs, w, gm = layer["lhs"], layer["weights"], layer["gemm"]
    at = layer.get("attrs", {})
    kernel, strides, pads = at.get("kernel"), at.get("strides"), \
        at.get("pads")
    a = kernels.lhs_matrix(layer["op"], x, kernel, strides, pads,
                           lhs["zero_point"], at.get("groups", 1))
    # (G, B*Mps, K)
    g, m_all, k = a.shape
    runs = x.shape[0] // batch
    if m_all != runs * gm["M"] or k != gm["K"]:
        raise ValueError(f"layer {layer['name']!r}: GEMM view {m_all}x{k} "
                         f"does not match the descriptor's {runs} x "
                         f"M={gm['M']}, K={gm['K']}")
    a = a.reshape(g, runs, m_all // runs, k)
    ap = packing.pack_bitplanes(a, lhs["bits"], lhs["signed"])
    wp = _weights_planes(layer, blob)
    sched = layer["schedule"]
    if target == "bismo":
        execs = [ins for ins in sched["body"] if ins["op"] == "Exec"]
        acc = _run_bismo(ap, wp, dict(sched, _k=k), execs, stats)
    else:
        jj, ii, coef = _pairs(lhs["bits"], w["bits"], lhs["signed"],
                              w["signed"])
        acc = _run_bitfusion(ap, wp, sched, jj, ii, coef, stats)
    az = int(lhs["zero_point"])
    wz = np.asarray(w["zero_point"], np.int64).reshape(g, 1, 1, -1)
    sign_w = bool(at.get("sign_weights"))
    if sign_w:  # w = 2b - 1: the Execs (b a negated MSB) gave -sum(a * b)
        acc = -2 * acc - _rowsum(ap, lhs)[..., None]
    if az:
        pc = packing.popcount(wp).sum(-1, dtype=np.int64)
        colsum = 2 * pc[0] - k if sign_w else np.tensordot(
            _plane_weights(w["bits"], w["signed"]), pc, axes=(0, 0))
        acc -= az * colsum[:, None, None, :] - k * az * wz  # (G, N)
    if np.any(wz):
        acc -= wz * _rowsum(ap, lhs)[..., None]
    acc = acc.reshape(g, m_all, -1)
    out = kernels.gemm_output(acc, layer["op"], x.shape, kernel, strides,
                              pads) + np.asarray(layer["bias"], np.int64)
    rq = layer["requant"]
    return kernels.requantize(out, rq["multiplier"], rq["shift"],
                              layer["out_quant"]["zero_point"],
                              layer["act_min"], layer["act_max"])


def _host_layer(layer, ins):
    op, x = layer["op"], ins[0]
    if op == "add":
        rq = layer["requant"]
        za, zb = (q["zero_point"] for q in layer["input_quants"])
        return kernels.add_op(ins[0], ins[1], za, zb, rq["left_shift"],
                              rq["input_multipliers"], rq["input_shifts"],
                              rq["output_multiplier"], rq["output_shift"],
                              layer["out_quant"]["zero_point"],
                              layer["act_min"], layer["act_max"])
    if op == "concat":
        rq = layer["requant"]
        return kernels.concat_op(
            ins, [q["zero_point"] for q in layer["input_quants"]],
            rq["input_multipliers"], rq["input_shifts"],
            layer["out_quant"]["zero_point"], layer["act_min"],
            layer["act_max"])
    if op == "mul":
        rq = layer["requant"]
        za, zb = (q["zero_point"] for q in layer["input_quants"])
        return kernels.mul_op(ins[0], ins[1], za, zb, rq["multiplier"],
                              rq["shift"], layer["out_quant"]["zero_point"],
                              layer["act_min"], layer["act_max"])
    if op == "requantize":
        rq = layer["requant"]
        return kernels.requantize_op(x, layer["input_quants"][0]["zero_point"],
                                     rq["multiplier"], rq["shift"],
                                     layer["out_quant"]["zero_point"],
                                     layer["act_min"], layer["act_max"])
    if op == "max_pool":
        at = layer["attrs"]
        return kernels.pool_op(op, x, at["pool"], at["strides"], at["pads"])
    if op in ("avg_pool", "global_avg_pool"):
        at = layer.get("attrs", {})
        table = layer["requant"]["count_multipliers"]
        zin, zout = layer["input_quants"][0]["zero_point"], \
            layer["out_quant"]["zero_point"]
        if op == "avg_pool":
            return kernels.pool_op(op, x, at["pool"], at["strides"],
                                   at["pads"], zin, table, zout,
                                   layer["act_min"], layer["act_max"])
        return kernels.global_avg_pool_op(x, zin, table, zout,
                                          layer["act_min"], layer["act_max"])
    if op == "lut":
        q = layer["input_quants"][0]
        qmin = -(1 << (q["bits"] - 1)) if q["signed"] else 0
        return kernels.lut_op(x, layer["attrs"]["table"], qmin)
    if op == "pad":
        at = layer["attrs"]
        return kernels.pad_op(x, at["pads"], at.get("interior"),
                              layer["out_quant"]["zero_point"])
    if op == "upsample":
        return kernels.upsample_op(x, layer["attrs"]["factors"])
    if op == "crop":
        return kernels.crop_op(x, layer["attrs"]["crops"])
    if op == "flatten":
        return x.reshape(x.shape[0], -1)
    if op == "reshape":
        return x.reshape((x.shape[0],) + tuple(layer["attrs"]["shape"]))
    return np.clip(x, layer["act_min"], layer["act_max"])


def simulate_bitserial(path: str, x, return_stats: bool = False,
                       dequantize: bool = False):
    """Executes a bit-serial descriptor on ``x``, reading only its files.

    Args:
        path: descriptor JSON (its blob beside it).
        x: ``(B,) + input shape``; floats are quantized with the descriptor's
            input quantization, integers used as they are. ``B`` must be a
            multiple of the descriptor's ``batch``. A descriptor of several
            ``inputs`` takes a list of such arrays in their order, or a
            dict by input name.
        return_stats: also return a :class:`SimulationStats`.
        dequantize: return real values instead of output integers.

    Returns:
        The int64 output tensor (or float32 when ``dequantize``), plus the
        stats when ``return_stats``.

    Raises:
        DescriptorError / SchemaVersionError / BlobIntegrityError: see
            :func:`load_descriptor`.

    Example:
        >>> y = simulate_bitserial("m.json", x)
        >>> bool((y == integer_reference(ir, x)).all())
        True
        >>> y2 = simulate_bitserial("two.json", {"image": img, "meta": meta})
    """
    desc, blob = load_descriptor(path)
    specs = descriptor_inputs(desc)
    tensors = prepare_inputs(x, specs)
    quants = {i.name: i.quant for i in specs}
    samples = len(tensors[specs[0].name])
    batch = desc["batch"]
    if samples % batch:
        raise ValueError(f"x must hold a multiple of the descriptor's batch "
                         f"({batch}) samples. Received: {samples}")
    all_stats = []
    for layer in desc["layers"]:
        st = LayerStats(layer["name"], layer["op"], layer["engine"],
                        descriptor_cycles=layer["cost"]["cycles"])
        ins = [tensors[n] for n in layer["inputs"]]
        if layer["engine"] == "array":
            y = _gemm_layer(layer, ins[0], blob, desc["target"], batch, st)
        else:
            y = _host_layer(layer, ins)
        tensors[layer["name"]] = y
        quants[layer["name"]] = QuantParams.from_dict(layer["out_quant"])
        all_stats.append(st)
    out = tensors[desc["output"]]
    if dequantize:
        out = quants[desc["output"]].dequantize(out)
    if return_stats:
        return out, SimulationStats(desc["target"], batch,
                                    samples // batch, all_stats)
    return out
