"""Bit Fusion's schedule has the im2col form the cost model uses for a first
layer (``BitFusion.uses_im2col``), so the bit-serial simulator, which runs
the schedule, counts the model's compute cycles."""

import itertools

import pytest

from tfcomp.hardware import BitFusion, LayerSpec, bitfusion_schedule


def _spec(first, cin=3, cout=40, k=3, stride=1, groups=1, batch=2):
    return LayerSpec(name="c", op="conv", in_h=9, in_w=7, cin=cin, cout=cout,
                     kernel=(k, k), stride=(stride, stride), groups=groups,
                     batch=batch, padding="same", fixed_in=first)


def _schedule(hw, spec, w, a):
    oh, ow = spec.out_hw
    g = spec.groups
    kk = spec.kernel[0] * spec.kernel[1]
    return bitfusion_schedule(
        g, spec.batch * oh * ow, kk * spec.cin // g, spec.cout // g, kk,
        hw.perf_factor(w, a), hw.rows, hw.cols, a, w,
        im2col=hw.uses_im2col(spec))


@pytest.mark.parametrize("first", [True, False])
def test_schedule_cycles_are_the_models(first):
    hw = BitFusion("edge")
    for (w, a), (cin, k, stride, groups) in itertools.product(
            [(2, 2), (4, 8), (8, 8), (3, 5)],
            [(3, 3, 1, 1), (1, 7, 2, 1), (16, 3, 1, 1), (64, 1, 1, 1),
             (8, 3, 1, 2)]):
        spec = _spec(first, cin=cin, k=k, stride=stride, groups=groups)
        sched = _schedule(hw, spec, w, a)
        assert sched["compute_cycles"] == hw.compute_cycles(spec, w, a)
        # the simulator's count: per oc tile, groups * m * kernel * ic tiles
        t = sched["tiles"]
        assert t["oc"] * t["group"] * t["m"] * t["kernel"] * t["ic"] == \
            sched["compute_cycles"]
        assert sched.get("im2col", False) == hw.uses_im2col(spec)
        if hw.uses_im2col(spec):
            assert t["kernel"] == 1


def test_im2col_first_layer_by_hand():
    """3x3 conv over an RGB image, 16 output channels, 8x8 output, 8/8
    bits on the 16x32 edge array: plain = 64 * 9 * ceil(3 / 16) = 576
    cycles; im2col = 64 * ceil(27 / 16) = 128."""
    hw = BitFusion("edge")
    spec = LayerSpec(name="c", op="conv", in_h=8, in_w=8, cin=3, cout=16,
                     kernel=(3, 3), padding="same", fixed_in=True)
    plain = bitfusion_schedule(1, 64, 27, 16, 9, perf=1)
    im2col = bitfusion_schedule(1, 64, 27, 16, 9, perf=1, im2col=True)
    assert plain["compute_cycles"] == 576 and "im2col" not in plain
    assert im2col["compute_cycles"] == 128 == hw.compute_cycles(spec, 8, 8)
    assert im2col["im2col"] is True
    assert im2col["tiles"] == {"group": 1, "oc": 1, "m": 64, "kernel": 1,
                               "ic": 2}
    # without im2col_first the model and the plain schedule agree
    assert BitFusion("edge", im2col_first=False).compute_cycles(
        spec, 8, 8) == 576


def test_exporter_hook_asks_the_model():
    from tfcomp.export.bitserial import random_ir
    from tfcomp.export.bitserial.hardware_hook import (
        resolve_hardware,
        uses_im2col,
    )
    ir = random_ir(seed=2)
    shapes = ir.shapes()
    first = next(op for op in ir.ops if op.is_gemm)
    assert first.op == "conv2d" and first.inputs[0] == ir.input_name
    args = (first, shapes[first.inputs[0]], shapes[first.name], 1)
    assert uses_im2col(resolve_hardware("bitfusion"), *args, True)
    assert not uses_im2col(resolve_hardware("bitfusion"), *args, False)
    assert not uses_im2col(resolve_hardware("bismo"), *args, True)
    assert not uses_im2col(resolve_hardware(
        "bitfusion", {"im2col_first": False}), *args, True)
