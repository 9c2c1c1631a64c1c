"""Fixed-point requantization and bit-plane / packed-value packing."""

import numpy as np
import pytest

from tfcomp.export.bitserial import (
    multiply_by_quantized_multiplier,
    pack_bitplanes,
    pack_values,
    quantize_multiplier,
    unpack_bitplanes,
    unpack_values,
)
from tfcomp.export.bitserial.packing import popcount, to_bitplanes


def _tflite_mbqm(x: int, m: int, shift: int) -> int:
    """TFLite single-rounding MultiplyByQuantizedMultiplier on Python ints."""
    total = 31 - shift
    return (x * m + (1 << (total - 1))) >> total


def test_quantize_multiplier_encodes_the_real_value():
    rng = np.random.default_rng(0)
    for r in np.concatenate([10.0 ** rng.uniform(-8, 1, 200), [1.0, .5]]):
        m, s = quantize_multiplier(r)
        assert 2**30 <= m < 2**31
        assert abs(m * 2.0 ** (s - 31) - r) <= r * 2.0**-30
    assert quantize_multiplier(0.0) == (0, 0)
    with pytest.raises(ValueError, match="real_multiplier"):
        quantize_multiplier(-1.0)


def test_multiply_by_quantized_multiplier_matches_tflite_spec():
    rng = np.random.default_rng(1)
    x = rng.integers(-2**24, 2**24, 500)
    for r in (0.0007, 0.013, 0.31, 0.5, 0.999, 1.7, 3.2):
        m, s = quantize_multiplier(r)
        got = multiply_by_quantized_multiplier(x, m, s)
        want = np.array([_tflite_mbqm(int(v), m, s) for v in x])
        np.testing.assert_array_equal(got, want)
        assert np.max(np.abs(got - x * r)) <= 1 + 1e-6 * np.max(np.abs(x))


def test_requantization_rounds_once_half_up():
    from fractions import Fraction
    m, s = quantize_multiplier(0.009941880843218636 / 0.12939979235331217)
    x = np.arange(-300, 300)
    got = multiply_by_quantized_multiplier(x, m, s)
    exact = [Fraction(int(v) * m, 2 ** (31 - s)) for v in x]
    want = [int(np.floor(e + Fraction(1, 2))) for e in exact]
    np.testing.assert_array_equal(got, want)
    assert multiply_by_quantized_multiplier(np.array([58]), m, s)[0] == 4
    with pytest.raises(ValueError, match="shift must lie"):
        multiply_by_quantized_multiplier(np.array([1]), m, 31)


@pytest.mark.parametrize("bits", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("k", [1, 63, 64, 65, 130])
def test_bitplane_round_trip(bits, signed, k):
    rng = np.random.default_rng(bits * 1000 + k)
    lo, hi = (-(1 << (bits - 1)), 1 << (bits - 1)) if signed else (
        0, 1 << bits)
    w = rng.integers(lo, hi, (3, 4, k))
    planes = pack_bitplanes(w, bits, signed)
    assert planes.dtype == np.dtype("<u8")
    assert planes.shape == (bits, 3, 4, -(-k // 64))
    np.testing.assert_array_equal(unpack_bitplanes(planes, k, signed), w)


def test_signed_planes_weight_msb_negatively_and_bit_order():
    w = np.array([[-3, 2, -1, 0]])  # 3-bit two's complement
    p = to_bitplanes(w, 3, True)[:, 0]
    weights = np.array([1, 2, -4])
    np.testing.assert_array_equal(weights @ p.astype(int), w[0])
    # element k is bit k % 64 of word k // 64
    v = np.zeros((1, 70), int)
    v[0, 66] = 1
    packed = pack_bitplanes(v, 1, False)
    assert packed[0, 0, 0] == 0 and packed[0, 0, 1] == 1 << 2


@pytest.mark.parametrize("bits,signed", [(2, True), (3, False), (5, True),
                                         (7, False), (8, True)])
def test_packed_values_round_trip_and_size(bits, signed):
    rng = np.random.default_rng(bits)
    lo, hi = (-(1 << (bits - 1)), 1 << (bits - 1)) if signed else (
        0, 1 << bits)
    v = rng.integers(lo, hi, 101)
    data = pack_values(v, bits, signed)
    assert len(data) == -(-101 * bits // 8)
    np.testing.assert_array_equal(unpack_values(data, 101, bits, signed), v)
    with pytest.raises(ValueError, match="need"):
        unpack_values(data[:-1], 101, bits, signed)


def test_packing_rejects_out_of_range_values():
    with pytest.raises(ValueError, match=r"\[-2, 1\]"):
        pack_bitplanes(np.array([[2]]), 2, True)
    with pytest.raises(ValueError, match=r"\[0, 3\]"):
        pack_values(np.array([-1]), 2, False)
    with pytest.raises(TypeError, match="integers"):
        pack_values(np.array([0.5]), 2, False)


def test_popcount_counts_bits():
    rng = np.random.default_rng(3)
    w = rng.integers(0, 2**63, 50, dtype=np.uint64) * np.uint64(2) + \
        np.uint64(1)
    got = popcount(w)
    np.testing.assert_array_equal(got, [int(v).bit_count() for v in w])
