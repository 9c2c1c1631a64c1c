"""Integer IR: validation, op semantics and agreement with float math."""

import numpy as np
import pytest

from tfcomp.export.bitserial import (
    IntegerIR,
    IntOp,
    IRBuilder,
    QuantParams,
    integer_reference,
    random_ir,
)


def test_quant_params_ranges_and_validation():
    q = QuantParams(3, True, 0.5, -1)
    assert (q.qmin, q.qmax) == (-4, 3)
    np.testing.assert_array_equal(q.quantize([-10.0, 0.25, 0.75, 10.0]),
                                  [-4, 0, 1, 3])
    assert QuantParams(4, False, 1.0).qmax == 15
    with pytest.raises(ValueError, match="zero_point must lie in"):
        QuantParams(2, False, 1.0, 4)
    with pytest.raises(ValueError, match="scale must be finite"):
        QuantParams(8, True, 0.0)
    with pytest.raises(ValueError, match="bits must be an int"):
        QuantParams(17, True, 1.0)


def test_pooling_counts_only_in_bounds_cells_and_rounds_once():
    qin, qout = QuantParams(8, False, 0.1, 10), QuantParams(6, True, 0.07, -3)
    b = IRBuilder((3, 3, 1), qin)
    b.avg_pool("avg", "input", pool=2, strides=1, padding="same", out=qout)
    b.max_pool("mx", "input", pool=2, strides=2, padding="same")
    b.global_avg_pool("gap", "input")
    ir = b.build(output="avg")
    xq = np.arange(9).reshape(1, 3, 3, 1) * 7 + 3
    _, t = integer_reference(ir, xq, return_all=True)
    real = qin.dequantize(xq)[0, :, :, 0].astype(np.float64)
    for i in range(3):
        for j in range(3):
            win = real[i:i + 2, j:j + 2]  # same padding: bottom/right
            want = np.floor(win.mean() / qout.scale + 0.5) + qout.zero_point
            assert t["avg"][0, i, j, 0] == np.clip(want, -32, 31)
    np.testing.assert_array_equal(t["mx"][0, :, :, 0], [[31, 38], [52, 59]])
    assert t["gap"][0, 0] == 31  # mean code 31 on the input grid


def test_conv_matches_float_convolution_within_one_step():
    rng = np.random.default_rng(0)
    qin = QuantParams(8, True, 1 / 64, 3)
    b = IRBuilder((7, 7, 3), qin)
    w = rng.integers(-7, 8, (3, 3, 3, 5))
    w_scale = rng.uniform(0.01, 0.02, 5)
    bias = rng.integers(-50, 50, 5)
    out = QuantParams(8, True, 0.05, -10)
    b.conv2d("c", "input", w, w_scale, bias, out, w_bits=4, strides=2,
             padding="same")
    ir = b.build()
    x = rng.uniform(-1, 1, (2, 7, 7, 3))
    y = integer_reference(ir, x)
    assert y.shape == (2, 4, 4, 5)
    # float reference on the dequantized input, same padding
    xr = qin.dequantize(qin.quantize(x)).astype(np.float64)
    wr = w * w_scale
    xp = np.pad(xr, ((0, 0), (1, 1), (1, 1), (0, 0)))
    ref = np.zeros((2, 4, 4, 5))
    for i in range(4):
        for j in range(4):
            patch = xp[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3, :]
            ref[:, i, j] = np.tensordot(patch, wr, axes=3)
    ref += bias * qin.scale * w_scale
    want = np.clip(np.round(ref / out.scale) + out.zero_point, -128, 127)
    assert np.max(np.abs(y - want)) <= 1


def test_add_matches_float_sum_within_one_step():
    rng = np.random.default_rng(1)
    qa, qb = QuantParams(6, False, 0.03, 5), QuantParams(8, True, 0.011, -3)
    b = IRBuilder((4, 4, 2), qa)
    b.conv2d("other", "input", np.ones((1, 1, 2, 2), int) * 0, 1.0,
             rng.integers(-100, 100, 2), qb, w_bits=2)
    out = QuantParams(7, True, 0.02, 2)
    b.add("sum", "input", "other", out)
    ir = b.build()
    x = rng.uniform(0, 1.5, (3, 4, 4, 2))
    y, t = integer_reference(ir, x, return_all=True)
    real = qa.dequantize(t["input"]) + qb.dequantize(t["other"])
    want = np.clip(np.round(real / out.scale) + out.zero_point, -64, 63)
    assert np.max(np.abs(y - want)) <= 1


def test_ir_validation_errors_name_the_layer():
    q = QuantParams(4, False, 0.1)
    b = IRBuilder((4,), q)
    with pytest.raises(ValueError, match="layer 'fc'.*outside"):
        b.dense("fc", "input", np.full((4, 2), 9), 0.1, np.zeros(2, int), q,
                w_bits=4)
        b.build()
    b = IRBuilder((4,), q)
    with pytest.raises(ValueError, match="layer 'fc'.*expect 5 inputs"):
        b.dense("fc", "input", np.ones((5, 2), int), 0.1, np.zeros(2, int),
                q, w_bits=4)
    with pytest.raises(ValueError, match="unknown input 'nope'"):
        IRBuilder((4,), q).flatten("f", "nope")
    with pytest.raises(ValueError, match="op must be one of"):
        IntOp("x", "conv3d", ["input"], q)
    bad = IntegerIR((4,), q, [IntOp("c", "clamp", ["input"], q, act_min=5,
                                    act_max=3)])
    with pytest.raises(ValueError, match="act_min"):
        bad.validate()
    big = np.full((70000, 1), 127)
    b2 = IRBuilder((70000,), QuantParams(8, False, 0.1))
    with pytest.raises(ValueError, match="int32 accumulator may overflow"):
        b2.dense("fc", "input", big, 0.1, np.zeros(1, int),
                 QuantParams(8, True, 1.0), w_bits=8)
        b2.build()


def test_reference_input_checks():
    ir = random_ir(seed=0)
    with pytest.raises(ValueError, match="x must have shape"):
        integer_reference(ir, np.zeros((1, 3, 3, 3)))
    with pytest.raises(TypeError, match="float or integer"):
        integer_reference(ir, np.zeros((1,) + ir.input_shape, bool))
    with pytest.raises(TypeError, match="IntegerIR"):
        integer_reference("model", np.zeros((1,) + ir.input_shape))


def test_random_ir_is_deterministic_per_seed():
    a, b = random_ir(seed=9), random_ir(seed=9)
    assert [op.op for op in a.ops] == [op.op for op in b.ops]
    for oa, ob in zip(a.ops, b.ops):
        if oa.is_gemm:
            np.testing.assert_array_equal(oa.weights, ob.weights)
            np.testing.assert_array_equal(oa.multiplier, ob.multiplier)
