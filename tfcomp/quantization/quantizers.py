"""The quantizers, re-exported from :mod:`tfcomp.layers.quantizers`.

They live next to the layers that hold their state; this module keeps the
``tfcomp.quantization.quantizers`` import path.

Example:
    >>> from tfcomp.quantization import quantizers
    >>> quantizers.serialize(quantizers.get("symmetric"))["class_name"]
    'SymmetricQuantizer'
"""

from tfcomp.layers.quantizers import *  # noqa: F403 - the same public names
from tfcomp.layers.quantizers import __all__  # noqa: F401
