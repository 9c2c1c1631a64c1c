"""Binary layers (``tfcomp.layers.binary``) in the integer IR.

A ``BinaryConv2D`` / ``BinaryDense`` is a GEMM whose weight codes are the
kernel's signs (``{-1, +1}``: 1-bit sign weights, ``attrs.sign_weights``
in the descriptor, one bit plane on BISMO) with the per-channel scale
``alpha = mean |w|``. With ``binary_activations`` its input is
``sign(x)`` (``+1`` at 0): a ``lut`` op maps every code of the input grid to
:data:`SIGN_GRID`, a 2-bit unsigned grid with scale 1 and zero point 1 on
which ``-1, 0, +1`` are the codes ``0, 1, 2`` (0 is needed for the zero
padding Keras adds after the sign).

Example:
    >>> from tfcomp.export.bitserial.keras_binary import sign_table
    >>> sign_table(QuantParams(8, False, 0.1, 128))[0, 127:130]
    array([0, 2, 2])
"""

from __future__ import annotations

import numpy as np

from tfcomp.export.bitserial.ir import QuantParams
from tfcomp.layers.binary import BinaryConv2D, BinaryDense

__all__ = ["BINARY_GEMM", "SIGN_GRID", "round_bias", "sign_input",
           "sign_table"]

BINARY_GEMM = {BinaryConv2D: "conv2d", BinaryDense: "dense"}
SIGN_GRID = QuantParams(2, False, 1.0, 1)


def sign_table(q_in: QuantParams) -> np.ndarray:
    """``(1, 2**bits)`` codes of ``sign(dequantize(q))`` on SIGN_GRID."""
    codes = np.arange(q_in.qmin, q_in.qmax + 1)
    real = q_in.dequantize(codes)
    return np.where(real >= 0, 2, 0).astype(np.int64)[None, :]


def round_bias(layer, r: np.ndarray) -> np.ndarray:
    """The int32 bias ``r`` (in accumulator steps) of ``layer``: rounded,
    or floored for a binary layer with binary inputs.

    Such a layer's accumulator ``acc`` is an integer (in steps ``alpha``),
    and a folded BatchNormalization leaves a real ``r``; the next binary
    layer reads ``sign(acc + r)``, and ``acc + floor(r) >= 0`` exactly when
    ``acc + r >= 0``, so flooring keeps every sign (rounding would flip
    those with ``acc + r`` in ``[-0.5, 0)``).
    """
    if isinstance(layer, tuple(BINARY_GEMM)) and getattr(
            layer, "binary_activations", False):
        return np.floor(r)
    return np.round(r)


def sign_input(importer, x: str, layer) -> str:
    """``x`` (an IR tensor) binarized for ``layer`` by a ``lut`` op."""
    b = importer.builder
    q = b.quant(x)
    if q == SIGN_GRID:
        return x
    if q.bits > 12:
        raise ValueError(f"layer {layer.name!r}: its input has {q.bits} "
                         "bits; the sign table needs <= 12")
    return b.lut(importer.name(f"{layer.name}_sign"), x, sign_table(q),
                 SIGN_GRID)
