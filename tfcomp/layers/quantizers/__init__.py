"""Linear and k-means quantizers with straight-through gradients.

The quantizers live next to the layers that own their state
(``tfcomp.layers``); ``tfcomp.quantization.quantizers`` re-exports them.

A quantizer is a small serialisable object (``get_config`` / ``from_config``)
that holds *configuration only*. Its state (clip ratios, activation ranges,
centroids, "has seen data" flags) lives in variables of the layer that owns
it: ``build(layer, ...)`` creates them with ``layer.add_weight`` so that
checkpoints and ``.keras`` files carry everything. ``__call__`` uses
``keras.ops`` only.

Weight quantizers (symmetric, as HAQ uses them):

* ``SymmetricQuantizer``: scale ``s = c / (2^(b-1) - 1)`` per output channel,
  integer codes in ``[-(2^(b-1)-1), 2^(b-1)-1]`` (so at most ``2^b - 1``
  levels); ``c = max|w|`` for ``b >= 5``, a KL-optimal clip for ``b <= 4``.
  ``b = 1`` is the binary special case ``sign(w) * mean|w|`` (two levels).
* ``KMeansQuantizer``: ``2^b`` shared values per layer (Deep Compression
  weight sharing), for model-size objectives.

Activation quantizers:

* ``ActivationQuantizer(signed=False)``: unsigned ``[0, c]`` after a ReLU,
  ``s = c / (2^b - 1)``; ``c`` tracked as an exponential moving average of
  the batch maximum (``range_mode="ema"``) or learned by gradient descent
  (``range_mode="learned"``, PACT-style).
* ``ActivationQuantizer(signed=True)``: an affine ``[lo, hi]`` range (with
  ``lo <= 0 <= hi``) and an integer zero point, for inputs that may be
  negative (residual sums, the network input).

All quantizers use straight-through estimators: the forward pass rounds, the
backward pass treats rounding as the identity (clipped to the range for
activations).

Reference: Wang et al., HAQ: Hardware-Aware Automated Quantization,
arXiv:1811.08886 (linear quantizers, KL clip); Han et al., Deep Compression,
arXiv:1510.00149 (k-means weight sharing); Choi et al., PACT,
arXiv:1805.06085 (learned activation clip).

Example:
    >>> from tfcomp.layers import quantizers
    >>> q = quantizers.get("symmetric")
    >>> quantizers.serialize(q)["class_name"]
    'SymmetricQuantizer'
"""

from tfcomp.layers.quantizers.activation import ActivationQuantizer
from tfcomp.layers.quantizers.base import (
    FLOAT_BITS,
    Quantizer,
    WeightQuantizer,
    check_bits,
)
from tfcomp.layers.quantizers.clipping import (
    kl_optimal_threshold,
    kl_threshold_from_histogram,
    kmeans_1d,
)
from tfcomp.layers.quantizers.registry import ALIASES, deserialize, get, serialize
from tfcomp.layers.quantizers.weight import KMeansQuantizer, SymmetricQuantizer

__all__ = [
    "FLOAT_BITS", "Quantizer", "WeightQuantizer", "SymmetricQuantizer",
    "KMeansQuantizer", "ActivationQuantizer", "get", "serialize",
    "deserialize", "check_bits", "kl_optimal_threshold",
    "kl_threshold_from_histogram", "kmeans_1d",
    "ALIASES",
]
