"""Deprecated: ``gumbel_softmax`` lives in :mod:`tfcomp.layers.gumbel`.

Example:
    >>> from tfcomp.layers.gumbel import gumbel_softmax
"""

import warnings

from tfcomp.layers.gumbel import gumbel_softmax

__all__ = ["gumbel_softmax"]

warnings.warn(
    "tfcomp.quantization.gumbel is deprecated: import gumbel_softmax from "
    "tfcomp.layers.gumbel (or tfcomp.layers).", DeprecationWarning,
    stacklevel=2)
