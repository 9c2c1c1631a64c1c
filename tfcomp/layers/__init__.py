"""tfcomp's custom Keras layers (registered under the "tfcomp" package).

Quantization-aware layers take their Keras counterpart's arguments plus
``w_bits`` / ``a_bits`` and quantizer options; DNAS mixed layers hold several
``(w_bits, a_bits)`` candidates sharing one float kernel; masked layers carry
pruning masks. The quantizers (:mod:`tfcomp.layers.quantizers`) live here,
next to the layers that hold their state.

Example:
    >>> from tfcomp.layers import QuantConv2D
    >>> layer = QuantConv2D(16, 3, padding="same", w_bits=4, a_bits=4)
"""

from tfcomp.graph.constant import Constant
from tfcomp.layers import quantizers
from tfcomp.layers.binary import BinaryConv2D, BinaryDense
from tfcomp.layers.gumbel import gumbel_softmax
from tfcomp.layers.masked import (
    MASKED_CLASSES,
    MaskedBatchNormalization,
    MaskedConv1D,
    MaskedConv1DTranspose,
    MaskedConv2D,
    MaskedConv2DTranspose,
    MaskedConv3D,
    MaskedConv3DTranspose,
    MaskedDense,
    MaskedDepthwiseConv1D,
    MaskedDepthwiseConv2D,
    MaskedGroupNormalization,
    MaskedLayer,
    MaskedSeparableConv1D,
    MaskedSeparableConv2D,
    masked_class_for,
    plain_class_of,
)
from tfcomp.layers.masked_embedding import MaskedEmbedding
from tfcomp.layers.masked_recurrent import (
    MaskedBidirectional,
    MaskedConvLSTM1D,
    MaskedConvLSTM2D,
    MaskedConvLSTM3D,
    MaskedGRU,
    MaskedLSTM,
    MaskedRecurrent,
    MaskedSimpleRNN,
)
from tfcomp.layers.quant_1d import QuantConv1DTranspose, QuantDepthwiseConv1D
from tfcomp.layers.quant_activation import QuantActivation, QuantReLU
from tfcomp.layers.quant_attention import QuantMultiHeadAttention
from tfcomp.layers.quant_base import QuantMixin
from tfcomp.layers.quant_conv import QuantConv2D, QuantDepthwiseConv2D
from tfcomp.layers.quant_dense import QuantDense
from tfcomp.layers.quant_einsum import QuantEinsumDense, QuantEmbedding
from tfcomp.layers.quant_elementwise import (
    QUANT_ELEMENTWISE_LAYERS,
    QUANT_STEP_ACTIVATIONS,
    QuantAverage,
    QuantELU,
    QuantHardSigmoid,
    QuantSELU,
    quant_activation_class,
)
from tfcomp.layers.quant_keras_attention import (
    KERAS_ATTENTION_OF,
    QuantAdditiveAttention,
    QuantAttention,
)
from tfcomp.layers.quant_mixed import (
    MixedMixin,
    MixedQuantConv1D,
    MixedQuantConv2D,
    MixedQuantDense,
    MixedQuantDepthwiseConv2D,
)
from tfcomp.layers.quant_nd import (
    QuantConv1D,
    QuantConv2DTranspose,
    QuantConv3D,
    QuantConv3DTranspose,
)
from tfcomp.layers.quant_norm import (
    QUANT_NORM_OF,
    QuantGroupNormalization,
    QuantLayerNormalization,
)
from tfcomp.layers.slimmable import (
    SlimmableConv2D,
    SlimmableDense,
    SlimmableDepthwiseConv2D,
    SwitchableBatchNormalization,
)
from tfcomp.layers.slimmable_conv import (
    SlimmableConv1D,
    SlimmableConv1DTranspose,
    SlimmableConv2DTranspose,
    SlimmableConv3D,
    SlimmableConv3DTranspose,
    SlimmableSeparableConv1D,
    SlimmableSeparableConv2D,
)
from tfcomp.layers.slimmable_norm import SlimmableGroupNormalization
from tfcomp.layers.soft_mask import FISTA, SoftMask
from tfcomp.layers.tucker import TNetConv2D, TuckerConv2D, TuckerTensor

#: Quantization-aware layers with a kernel (one bit-width pair each).
QUANT_WEIGHT_LAYERS = (QuantConv2D, QuantDepthwiseConv2D, QuantDense,
                       QuantConv1D, QuantConv3D, QuantConv2DTranspose,
                       QuantDepthwiseConv1D, QuantConv1DTranspose,
                       QuantConv3DTranspose, QuantEinsumDense, QuantEmbedding)
#: Activation quantizer layers.
QUANT_ACTIVATION_LAYERS = (QuantActivation, QuantReLU)
#: DNAS supernet layers (several candidate bit-width pairs).
MIXED_LAYERS = (MixedQuantConv2D, MixedQuantDepthwiseConv2D, MixedQuantDense,
                MixedQuantConv1D)
#: Normalizations with 8-bit quantizers inside (their int8 TFLite form).
QUANT_NORM_LAYERS = tuple(QUANT_NORM_OF.values())
#: Keras' Attention / AdditiveAttention made quantization-aware.
QUANT_KERAS_ATTENTION_LAYERS = (QuantAttention, QuantAdditiveAttention)
#: Layers with 8-bit quantizers on intermediate tensors (``step_values``,
#: ``export_grids``, ``load_float_weights``): normalizations, attention,
#: the element-wise layers of quant_elementwise (Average, hard_sigmoid...).
QUANT_STEP_LAYERS = (QUANT_NORM_LAYERS + (QuantMultiHeadAttention,)
                     + QUANT_KERAS_ATTENTION_LAYERS
                     + QUANT_ELEMENTWISE_LAYERS)
#: Every tfcomp quantization layer.
QUANT_LAYERS = (QUANT_WEIGHT_LAYERS + QUANT_ACTIVATION_LAYERS + MIXED_LAYERS
                + QUANT_STEP_LAYERS)

__all__ = [
    "Constant", "QuantActivation", "QuantReLU", "QuantConv2D",
    "QuantDepthwiseConv2D",
    "QuantDense", "QuantConv1D", "QuantConv3D", "QuantConv2DTranspose",
    "QuantDepthwiseConv1D", "QuantConv1DTranspose", "QuantConv3DTranspose",
    "QuantEinsumDense", "QuantEmbedding", "QuantMixin", "MixedMixin",
    "MixedQuantConv2D",
    "MixedQuantDepthwiseConv2D", "MixedQuantDense", "MixedQuantConv1D",
    "gumbel_softmax",
    "MaskedLayer", "MaskedConv1D", "MaskedConv2D", "MaskedConv3D",
    "MaskedConv1DTranspose", "MaskedConv2DTranspose", "MaskedConv3DTranspose",
    "MaskedDepthwiseConv1D", "MaskedDepthwiseConv2D", "MaskedSeparableConv1D",
    "MaskedSeparableConv2D", "MaskedDense", "MaskedBatchNormalization",
    "MaskedGroupNormalization", "MaskedLSTM", "MaskedGRU",
    "MaskedSimpleRNN", "MaskedBidirectional", "MaskedRecurrent",
    "MaskedConvLSTM1D", "MaskedConvLSTM2D", "MaskedConvLSTM3D",
    "MaskedEmbedding",
    "MASKED_CLASSES", "masked_class_for",
    "plain_class_of", "quantizers", "QUANT_WEIGHT_LAYERS",
    "QUANT_ACTIVATION_LAYERS", "MIXED_LAYERS", "QUANT_LAYERS",
    "QUANT_NORM_LAYERS", "QUANT_NORM_OF", "QuantLayerNormalization",
    "QuantGroupNormalization", "QuantMultiHeadAttention",
    "QuantAttention", "QuantAdditiveAttention", "KERAS_ATTENTION_OF",
    "QUANT_KERAS_ATTENTION_LAYERS",
    "QUANT_STEP_LAYERS", "QUANT_ELEMENTWISE_LAYERS", "QUANT_STEP_ACTIVATIONS",
    "QuantAverage",
    "QuantELU", "QuantHardSigmoid", "QuantSELU", "quant_activation_class",
    "TuckerConv2D", "TuckerTensor", "TNetConv2D", "SoftMask", "FISTA",
    "SlimmableConv2D", "SlimmableDense", "SlimmableDepthwiseConv2D",
    "SwitchableBatchNormalization", "SlimmableConv1D", "SlimmableConv3D",
    "SlimmableConv1DTranspose", "SlimmableConv2DTranspose",
    "SlimmableConv3DTranspose", "SlimmableSeparableConv1D",
    "SlimmableSeparableConv2D", "SlimmableGroupNormalization",
    "BinaryConv2D", "BinaryDense",
]
