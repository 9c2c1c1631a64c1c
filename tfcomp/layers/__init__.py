"""tfcomp's custom Keras layers (registered under the "tfcomp" package).

Quantization-aware layers take their Keras counterpart's arguments plus
``w_bits`` / ``a_bits`` and quantizer options; DNAS mixed layers hold several
``(w_bits, a_bits)`` candidates sharing one float kernel.

Example:
    >>> from tfcomp.layers import QuantConv2D
    >>> layer = QuantConv2D(16, 3, padding="same", w_bits=4, a_bits=4)
"""

from tfcomp.layers.quant_activation import QuantActivation, QuantReLU
from tfcomp.layers.quant_conv import QuantConv2D, QuantDepthwiseConv2D
from tfcomp.layers.quant_dense import QuantDense
from tfcomp.layers.quant_mixed import (
    MixedQuantConv2D,
    MixedQuantDense,
    MixedQuantDepthwiseConv2D,
    gumbel_softmax,
)

__all__ = [
    "QuantActivation", "QuantReLU", "QuantConv2D", "QuantDepthwiseConv2D",
    "QuantDense", "MixedQuantConv2D", "MixedQuantDepthwiseConv2D",
    "MixedQuantDense", "gumbel_softmax",
]
