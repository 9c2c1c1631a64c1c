"""Bit-plane (BISMO) and packed b-bit (Bit Fusion) integer packing.

Bit planes: a ``(rows, K)`` integer matrix at ``bits`` bits becomes
``bits`` binary matrices ``P_i`` (LSB first) with
``v = sum_i P_i * 2**i`` for unsigned values and
``v = sum_{i<b-1} P_i * 2**i - P_{b-1} * 2**(b-1)`` for signed values (two's
complement: the MSB plane weighs ``-2**(b-1)``). Each plane row is packed
along K into little-endian uint64 words: element ``k`` is bit ``k % 64`` of
word ``k // 64``; K is zero-padded to a multiple of 64.

Packed values: the low ``bits`` bits of each value (two's complement when
signed), concatenated LSB first in row-major order into a little-endian bit
stream, zero-padded to a whole byte.

Example:
    >>> w = np.array([[-2, 1, 0, -1]])
    >>> planes = pack_bitplanes(w, bits=2, signed=True)
    >>> planes.shape
    (2, 1, 1)
    >>> unpack_bitplanes(planes, k=4, signed=True)
    array([[-2,  1,  0, -1]])
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "pack_bitplanes",
    "pack_values",
    "popcount",
    "to_bitplanes",
    "unpack_bitplanes",
    "unpack_values",
    "value_range",
    "words_for",
]

WORD_BITS = 64


def value_range(bits: int, signed: bool) -> tuple[int, int]:
    """Inclusive integer range of a ``bits``-bit value.

    Args:
        bits: value width.
        signed: two's complement.

    Returns:
        ``(lo, hi)``.

    Example:
        >>> value_range(3, True), value_range(3, False)
        ((-4, 3), (0, 7))
    """
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _check(values, bits, signed, what="values"):
    if not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 16:
        raise ValueError(f"bits must be an int in [1, 16]. Received: "
                         f"bits={bits!r}")
    v = np.asarray(values)
    if not np.issubdtype(v.dtype, np.integer):
        raise TypeError(f"{what} must be integers. Received: dtype={v.dtype}")
    lo, hi = value_range(bits, signed)
    if v.size and (v.min() < lo or v.max() > hi):
        raise ValueError(f"{what} must lie in [{lo}, {hi}] for bits={bits}, "
                         f"signed={signed}. Received: [{v.min()}, {v.max()}]")
    return v.astype(np.int64)


def words_for(k: int) -> int:
    """Number of uint64 words that hold ``k`` bits.

    Example:
        >>> words_for(65)
        2
    """
    return -(-int(k) // WORD_BITS)


def to_bitplanes(values, bits: int, signed: bool) -> np.ndarray:
    """Unpacked planes: ``(bits,) + values.shape`` of 0/1 uint8 (LSB first).

    Args:
        values: integers within the ``bits`` / ``signed`` range.
        bits: value width.
        signed: two's complement (the MSB plane is the sign plane).

    Returns:
        0/1 uint8 planes.

    Example:
        >>> to_bitplanes(np.array([-1, 1]), 2, True)
        array([[1, 1],
               [1, 0]], dtype=uint8)
    """
    v = _check(values, bits, signed) & ((1 << bits) - 1)
    shifts = np.arange(bits, dtype=np.int64).reshape((bits,) + (1,) * v.ndim)
    return ((v[None] >> shifts) & 1).astype(np.uint8)


def _pack_last_axis(bits01: np.ndarray) -> np.ndarray:
    """Packs 0/1 along the last axis into little-endian uint64 words."""
    k = bits01.shape[-1]
    pad = words_for(k) * WORD_BITS - k
    if pad:
        bits01 = np.concatenate(
            [bits01, np.zeros(bits01.shape[:-1] + (pad,), np.uint8)], -1)
    packed = np.packbits(bits01, axis=-1, bitorder="little")
    return np.ascontiguousarray(packed).view("<u8")


def pack_bitplanes(matrix, bits: int, signed: bool) -> np.ndarray:
    """Bit-plane packs integers along their last axis (K).

    Args:
        matrix: integers of shape ``(..., K)``; rows are e.g. output
            channels (weights) or GEMM rows (activations).
        bits: value width in bits.
        signed: two's complement values (MSB plane weighs ``-2**(bits-1)``).

    Returns:
        uint64 array ``(bits, ..., ceil(K / 64))``.

    Example:
        >>> pack_bitplanes(np.array([[3, 0, 1]]), 2, False)[:, 0, 0]
        array([5, 1], dtype=uint64)
    """
    return _pack_last_axis(to_bitplanes(matrix, bits, signed))


def unpack_bitplanes(planes, k: int, signed: bool) -> np.ndarray:
    """Inverse of :func:`pack_bitplanes`: int64 ``(..., k)``.

    Args:
        planes: ``(bits, ..., words)`` uint64 planes.
        k: number of values per row (K before word padding).
        signed: two's complement values.

    Returns:
        int64 values.

    Example:
        >>> p = pack_bitplanes(np.array([[5, -3]]), 4, True)
        >>> unpack_bitplanes(p, 2, True)
        array([[ 5, -3]])
    """
    planes = np.ascontiguousarray(np.asarray(planes, dtype="<u8"))
    bits = planes.shape[0]
    as_bytes = planes.view(np.uint8)
    bits01 = np.unpackbits(as_bytes, axis=-1, bitorder="little")[..., :k]
    weights = np.array([1 << i for i in range(bits)], np.int64)
    if signed:
        weights[-1] = -weights[-1]
    return np.tensordot(weights, bits01.astype(np.int64), axes=(0, 0))


def pack_values(values, bits: int, signed: bool) -> bytes:
    """Packs integers as a little-endian stream of ``bits``-bit fields.

    Args:
        values: integers (any shape; packed in row-major order).
        bits: field width.
        signed: two's complement fields.

    Returns:
        ``ceil(values.size * bits / 8)`` bytes.

    Example:
        >>> pack_values(np.array([1, 2, 3]), 2, False).hex()
        '39'
    """
    planes = to_bitplanes(np.ravel(values), bits, signed)  # (bits, n)
    stream = planes.T.reshape(-1)  # value-major, LSB first
    return np.packbits(stream, bitorder="little").tobytes()


def unpack_values(data, count: int, bits: int, signed: bool) -> np.ndarray:
    """Inverse of :func:`pack_values`: int64 array of ``count`` values.

    Args:
        data: the packed bytes.
        count: number of values.
        bits: field width.
        signed: two's complement fields.

    Returns:
        int64 values.

    Example:
        >>> unpack_values(bytes.fromhex("39"), 3, 2, False)
        array([1, 2, 3])
    """
    buf = np.frombuffer(bytes(data), np.uint8)
    need = -(-count * bits // 8)
    if buf.size < need:
        raise ValueError(f"data holds {buf.size} bytes; {count} values of "
                         f"{bits} bits need {need}")
    stream = np.unpackbits(buf[:need], bitorder="little")[:count * bits]
    fields = stream.reshape(count, bits).astype(np.int64)
    weights = np.array([1 << i for i in range(bits)], np.int64)
    if signed:
        weights[-1] = -weights[-1]
    return fields @ weights


if hasattr(np, "bitwise_count"):
    def popcount(words: np.ndarray) -> np.ndarray:
        """Set bits per element of a uint64 array (as uint8).

        Example:
            >>> popcount(np.array([7, 2**63], np.uint64))
            array([3, 1], dtype=uint8)
        """
        return np.bitwise_count(words)
else:  # numpy < 2.0
    _LUT = np.array([i.bit_count() for i in range(256)], np.uint8)

    def popcount(words: np.ndarray) -> np.ndarray:
        """Set bits per element of a uint64 array (as uint8).

        Example:
            >>> popcount(np.array([7, 2**63], np.uint64))
            array([3, 1], dtype=uint8)
        """
        w = np.ascontiguousarray(words, dtype="<u8")
        return _LUT[w.view(np.uint8)].reshape(w.shape + (8,)).sum(
            -1, dtype=np.uint8)
