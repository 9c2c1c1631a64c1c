"""Gumbel-softmax sampling (used by the DNAS mixed layers).

Example:
    >>> from tfcomp.layers.gumbel import gumbel_softmax
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["gumbel_softmax"]


def gumbel_softmax(logits, temperature=1.0, seed=None, hard: bool = False):
    """Samples Gumbel-softmax weights ``softmax((logits + g) / tau)``.

    ``g = -log(-log(u))``, ``u ~ U(0, 1)``. With ``hard=True`` the result is
    the one-hot argmax (forward) with the soft sample's gradient
    (straight-through); argmax samples are distributed as
    ``softmax(logits)``.

    Args:
        logits: tensor ``(..., K)``.
        temperature: ``tau > 0`` (scalar or tensor).
        seed: int or ``keras.random.SeedGenerator``.
        hard: return straight-through one-hot samples.

    Returns:
        Tensor of the same shape as ``logits``.

    Reference: Jang et al., arXiv:1611.01144; Maddison et al.,
    arXiv:1611.00712.

    Example:
        >>> m = gumbel_softmax(np.zeros((1000, 3), "float32"), 1.0, seed=0,
        ...                    hard=True)
    """
    logits = ops.convert_to_tensor(logits, "float32")
    u = keras.random.uniform(ops.shape(logits), minval=1e-10, maxval=1.0,
                             seed=seed)
    g = -ops.log(-ops.log(u))
    soft = ops.softmax((logits + g) / temperature, axis=-1)
    if not hard:
        return soft
    hard_y = ops.one_hot(ops.argmax(soft, axis=-1), ops.shape(logits)[-1],
                         dtype=soft.dtype)
    return soft + ops.stop_gradient(hard_y - soft)
