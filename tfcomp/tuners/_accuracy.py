"""The score of a trial's model on held-out data (``tfcomp._score``): top-1
accuracy for class labels (per position for per-pixel labels; the side of
the threshold for a one-unit binary output), ``1 - MSE / Var(y)`` for a
regression model's float targets; a list of arrays, or a model built on a
dict of inputs, for several inputs.

Example:
    >>> accuracy(model, x_val, y_val)
    0.91
"""

from __future__ import annotations

from tfcomp._score import score

__all__ = ["accuracy"]


def accuracy(model, x, y, batch_size: int = 256, traced: bool = False
             ) -> float:
    """:func:`tfcomp._score.score` of ``model`` on ``(x, y)``: eager
    calls, or ``model.predict`` (``traced=True``: a model evaluated again
    and again)."""
    return score(model, x, y, batch_size, traced)
