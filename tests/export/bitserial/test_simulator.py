"""Bit-serial simulator == integer reference, bit-exactly, and its counts."""

import json

import numpy as np
import pytest

from tfcomp.export.bitserial import (
    IRBuilder,
    QuantParams,
    integer_reference,
    random_ir,
    simulate_bitserial,
    write_descriptor,
)

TARGETS = ("bismo", "bitfusion")


def _x(ir, n=3, seed=0):
    return np.random.default_rng(seed).uniform(-1.2, 1.2,
                                               (n,) + ir.input_shape)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("seed", range(8))
def test_simulator_equals_integer_reference_mixed_bits(tmp_path, target,
                                                       seed):
    ir = random_ir(seed=seed, bits=(2, 8))
    x = _x(ir, seed=seed)
    path = str(tmp_path / "net.json")
    write_descriptor(ir, path, hardware=target)
    want = integer_reference(ir, x)
    got = simulate_bitserial(path, x)
    assert got.dtype == np.int64 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    assert len(np.unique(want)) > 3  # not a degenerate, saturated output


def test_random_irs_cover_ops_bits_and_signedness():
    ops, w_signed, a_signed, bits = set(), set(), set(), set()
    for seed in range(8):
        ir = random_ir(seed=seed)
        for op in ir.ops:
            ops.add(op.op)
            if op.is_gemm:
                w_signed.add(op.w_signed)
                a_signed.add(ir.quant(op.inputs[0]).signed)
                bits.update({op.w_bits, ir.quant(op.inputs[0]).bits})
    assert {"conv2d", "depthwise_conv2d", "dense", "add", "max_pool",
            "avg_pool", "global_avg_pool", "flatten", "reshape",
            "clamp", "requantize"} <= ops
    assert w_signed == {True, False} and a_signed == {True, False}
    assert bits == set(range(2, 9))


@pytest.mark.parametrize("bits", [(1, 1), (2, 2), (8, 8)])
@pytest.mark.parametrize("target", TARGETS)
def test_simulator_exact_at_extreme_bits(tmp_path, bits, target):
    ir = random_ir(seed=11, bits=bits, head="flatten")
    x = _x(ir, n=2)
    path = str(tmp_path / "net.json")
    write_descriptor(ir, path, hardware=target)
    np.testing.assert_array_equal(simulate_bitserial(path, x),
                                  integer_reference(ir, x))


def test_bismo_blocking_over_m_n_k_blocks_is_exact(tmp_path):
    ir = random_ir(seed=5, width=12, input_shape=(10, 10, 70))
    x = _x(ir, n=2)
    path = str(tmp_path / "net.json")
    hw = {"dm": 4, "dn": 4, "dk": 64, "lhs_depth": 16, "rhs_depth": 16}
    desc = write_descriptor(ir, path, hardware="bismo", hardware_config=hw)
    blocks = [la["schedule"]["blocks"] for la in desc["layers"]
              if la["engine"] == "array"]
    assert max(b["m"] for b in blocks) > 1
    assert max(b["n"] for b in blocks) > 1
    assert max(b["k"] for b in blocks) > 1
    y, stats = simulate_bitserial(path, x, return_stats=True)
    np.testing.assert_array_equal(y, integer_reference(ir, x))
    for la in desc["layers"]:
        if la["engine"] == "array":
            st = stats.by_name(la["name"])
            assert st.instructions == {
                k: la["schedule"]["counts"][k]
                for k in ("Fetch", "Exec", "Result")}


@pytest.mark.parametrize("target", TARGETS)
def test_counted_cycles_match_hardware_model(tmp_path, target):
    from tfcomp.hardware import BISMO, BitFusion
    ir = random_ir(seed=2)
    path = str(tmp_path / "net.json")
    desc = write_descriptor(ir, path, hardware=target)
    _, stats = simulate_bitserial(path, _x(ir, n=2), return_stats=True)
    assert stats.runs == 2 and stats.batch == 1
    model = BISMO() if target == "bismo" else BitFusion("edge")
    assert desc["hardware"]["cost_source"].endswith(type(model).__name__)
    from tfcomp.export.bitserial.hardware_hook import layer_spec
    shapes = ir.shapes()
    im2col = 0
    for op in ir.ops:
        st = stats.by_name(op.name)
        if not op.is_gemm:
            assert st.engine == "host" and st.compute_cycles == 0
            continue
        spec = layer_spec(op, shapes[op.inputs[0]], shapes[op.name], 1,
                          reads_input=op.inputs[0] == ir.input_name)
        a_bits = ir.quant(op.inputs[0]).bits
        # the executed schedule is the model's, im2col first layer included
        want = (model.exec_cycles(spec, op.w_bits, a_bits)
                if target == "bismo" else
                model.compute_cycles(spec, op.w_bits, a_bits))
        assert st.compute_cycles == want > 0
        cost = model.layer_cost(spec, op.w_bits, a_bits)
        assert st.descriptor_cycles == cost.cycles
        if target == "bitfusion" and model.uses_im2col(spec):
            im2col += 1
    assert stats.compute_cycles == desc["totals"]["compute_cycles"]
    assert target == "bismo" or im2col == 1  # the first conv is im2col


def test_bismo_cycles_scale_with_bit_product(tmp_path):
    rng = np.random.default_rng(0)
    cycles = {}
    for a_bits in (2, 4):
        b = IRBuilder((6, 6, 8), QuantParams(a_bits, False, 0.1))
        for wb in (2, 4, 8):
            b.conv2d(f"w{wb}", "input", rng.integers(-2, 2, (3, 3, 8, 4)),
                     0.01, np.zeros(4, int), QuantParams(4, False, 0.05),
                     w_bits=wb)
        ir = b.build(output="w8")
        path = str(tmp_path / f"a{a_bits}.json")
        write_descriptor(ir, path)
        _, st = simulate_bitserial(path, _x(ir, 1), return_stats=True)
        for la in st.layers:
            cycles[(int(la.name[1:]), a_bits)] = la.compute_cycles
    base = cycles[(2, 2)]
    assert base > 0
    for (w, a), c in cycles.items():
        assert c == base * (w * a) // 4


def test_descriptor_batch_groups_samples_into_runs(tmp_path):
    ir = random_ir(seed=4)
    x = _x(ir, n=4)
    path = str(tmp_path / "b2.json")
    desc = write_descriptor(ir, path, hardware="bismo", batch=2)
    y, stats = simulate_bitserial(path, x, return_stats=True)
    np.testing.assert_array_equal(y, integer_reference(ir, x))
    assert stats.runs == 2
    first = next(la for la in desc["layers"] if la["engine"] == "array")
    assert first["gemm"]["M"] == 2 * np.prod(first["output_shape"][:2])
    with pytest.raises(ValueError, match="multiple of the descriptor's batch"):
        simulate_bitserial(path, x[:3])


def test_simulator_follows_the_exec_program(tmp_path):
    ir = random_ir(seed=1)
    x = _x(ir)
    path = tmp_path / "net.json"
    write_descriptor(ir, str(path), hardware="bismo")
    ref = integer_reference(ir, x)
    desc = json.loads(path.read_text())
    execs = [i for i in desc["layers"][0]["schedule"]["body"]
             if i["op"] == "Exec"]
    execs[-1]["negate"] = not execs[-1]["negate"]  # break the MSB sign
    path.write_text(json.dumps(desc))
    assert not np.array_equal(simulate_bitserial(str(path), x), ref)


def test_integer_and_float_inputs_and_dequantize(tmp_path):
    ir = random_ir(seed=6)
    x = _x(ir)
    xq = ir.input_quant.quantize(x)
    path = str(tmp_path / "net.json")
    write_descriptor(ir, path, hardware="bitfusion")
    y = simulate_bitserial(path, xq)
    np.testing.assert_array_equal(y, integer_reference(ir, x))
    yf = simulate_bitserial(path, x, dequantize=True)
    np.testing.assert_allclose(yf, ir.quant(ir.output).dequantize(y))
    with pytest.raises(ValueError, match="must lie in"):
        simulate_bitserial(path, xq + 1000)
    with pytest.raises(ValueError, match="x must have shape"):
        simulate_bitserial(path, x[:, :-1])


def test_tiny_resnet_runs(tmp_path):
    """A ResNet-8-like net (3x3 convs, projection shortcut) at 8/4 bits."""
    from tfcomp.export.bitserial.random_ir import _RandomNet
    net = _RandomNet(0, (16, 16, 3), (4, 8), 4)
    h = net.gemm("conv2d", "stem", "input", 16)
    for i, (w, s) in enumerate([(16, 1), (32, 2)]):
        r = net.gemm("conv2d", f"b{i}a", h, w, strides=s)
        r = net.gemm("conv2d", f"b{i}b", r, w, relu=False)
        sc = h if s == 1 else net.gemm("conv2d", f"b{i}p", h, w, kernel=1,
                                       strides=s, relu=False)
        h = net.add(f"b{i}add", sc, r)
    h = net.host("global_avg_pool", "gap", h)
    net.gemm("dense", "fc", h, 10, relu=False)
    ir = net.b.build()
    x = _x(ir, n=4)
    for target in TARGETS:
        path = str(tmp_path / f"{target}.json")
        write_descriptor(ir, path, hardware=target)
        np.testing.assert_array_equal(simulate_bitserial(path, x),
                                      integer_reference(ir, x))
