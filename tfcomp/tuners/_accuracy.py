"""Top-1 accuracy of a model on held-out data, as the searches score
their trials (per position for per-pixel labels; a list of arrays, or a
model built on a dict of inputs, for several inputs).

Example:
    >>> accuracy(model, x_val, y_val)
    0.91
"""

from __future__ import annotations

import keras
import numpy as np

from tfcomp._batches import as_model_input, rows, sliced

__all__ = ["accuracy"]


def accuracy(model, x, y, batch_size: int = 256, traced: bool = False
             ) -> float:
    """Top-1 accuracy of ``model`` (per position for per-pixel labels) on
    ``x`` (a list of arrays for several inputs): eager calls, or
    ``model.predict`` (``traced=True``: a model evaluated again and again)."""
    if traced:
        out = model.predict(as_model_input(model, x), batch_size=batch_size,
                            verbose=0)
        if isinstance(out, (list, tuple)):
            out = out[0]
        return float(np.mean(np.asarray(out).argmax(-1) == y))
    correct = 0
    for a in range(0, rows(x), batch_size):
        xb = as_model_input(model, sliced(x, a, a + batch_size))
        out = model(xb, training=False)
        if isinstance(out, (list, tuple)):
            out = out[0]
        pred = np.asarray(keras.ops.convert_to_numpy(out)).argmax(-1)
        correct += int((pred == y[a:a + batch_size]).sum())
    return correct / max(1, np.size(y))  # per position for per-pixel labels
