"""Input batches for calibration and probes: the one adapter from a
user's data (arrays, ``(x, y)`` tuples, iterables, ``tf.data``) to NumPy
batches of a model's inputs. Re-exported by :mod:`tfcomp._io`.

Example:
    >>> next(iter_batches(np.zeros((10, 4)), batch_size=4)).shape
    (4, 4)
"""

from __future__ import annotations

import numpy as np

from tfcomp._checks import check_positive_int

__all__ = ["iter_batches", "iter_model_batches"]


def _to_numpy(a) -> np.ndarray:
    if hasattr(a, "numpy") and not isinstance(a, np.ndarray):
        a = a.numpy()
    return np.asarray(a)


def _is_array(data) -> bool:
    return (isinstance(data, np.ndarray)
            or (hasattr(data, "__array__")
                and not isinstance(data, (tuple, list, dict))
                and not hasattr(data, "element_spec")))


def _iterate(data, name: str):
    try:
        return iter(data)
    except TypeError:
        raise TypeError(
            f"{name} must be an array, a tuple (x, y) or an iterable of "
            f"batches. Received: {type(data).__name__}") from None


def _sliced(arrays, batch_size: int, steps, single: bool = False):
    """Batches of ``batch_size`` rows of ``arrays`` (one length), at most
    ``steps``; the array itself with ``single``, else a list."""
    for count, i in enumerate(range(0, len(arrays[0]), batch_size)):
        if steps is not None and count >= steps:
            return
        rows = [a[i:i + batch_size] for a in arrays]
        yield rows[0] if single else rows


def _batches_of(data, steps, name: str):
    """The first ``steps`` batches of an iterable; ValueError when it is
    None or yields none."""
    if data is None:
        raise ValueError(f"{name} is empty. Received: {name}=None")
    count = 0
    for batch in _iterate(data, name):
        if steps is not None and count >= steps:
            return
        yield batch
        count += 1
    if count == 0:
        raise ValueError(f"{name} is empty: the iterable yielded no batch.")


def iter_batches(data, batch_size: int = 64, steps: int | None = None,
                 name: str = "calibration_data"):
    """Yields float32 numpy input batches from an array, an ``(x, y)``
    tuple, or an iterable / ``tf.data.Dataset`` of ``x`` or ``(x, y, ...)``
    batches, without reading more than ``steps`` batches.

    Example:
        >>> next(iter_batches(np.zeros((10, 4)), batch_size=4)).shape
        (4, 4)
    """
    check_positive_int(batch_size, "batch_size")
    if isinstance(data, (tuple, list)) and len(data) >= 1 and hasattr(
            data[0], "shape") and not hasattr(data, "shape"):
        data = data[0]
    if _is_array(data):
        x = np.asarray(_to_numpy(data), dtype=np.float32)
        if x.ndim == 0 or len(x) == 0:
            raise ValueError(
                f"{name} is empty. Received shape {x.shape}")
        yield from _sliced([x], batch_size, steps, single=True)
        return
    for batch in _batches_of(data, steps, name):
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        yield np.asarray(_to_numpy(batch), np.float32)


def iter_model_batches(data, n_inputs: int, batch_size: int = 64,
                       steps: int | None = None,
                       name: str = "calibration_data"):
    """:func:`iter_batches` for a model with ``n_inputs`` inputs: one
    array per batch for one input; for several, a list of float32 arrays
    per batch, from a list of ``n_inputs`` arrays (as ``model.fit`` takes
    them), an ``((x1, x2, ...), y)`` tuple, or an iterable /
    ``tf.data.Dataset`` of such batches.

    Example:
        >>> [b.shape for b in next(iter_model_batches(
        ...     [np.zeros((10, 4)), np.zeros((10, 3))], 2, batch_size=4))]
        [(4, 4), (4, 3)]
    """
    if int(n_inputs) == 1:
        yield from iter_batches(data, batch_size, steps, name)
        return
    check_positive_int(batch_size, "batch_size")

    def inputs(batch):
        if (isinstance(batch, (tuple, list)) and batch
                and isinstance(batch[0], (tuple, list))):
            batch = batch[0]  # ((x1, x2), y)
        if not (isinstance(batch, (tuple, list)) and len(batch) == n_inputs
                and all(hasattr(b, "shape") for b in batch)):
            raise ValueError(
                f"{name}: the model has {n_inputs} inputs, so its data "
                f"must be a list of {n_inputs} arrays (or ((x1, ...), y), "
                "or batches of those). Received: "
                f"{type(batch).__name__}"
                + (f" of {len(batch)}" if isinstance(batch, (tuple, list))
                   else ""))
        return [np.asarray(_to_numpy(b), np.float32) for b in batch]

    if isinstance(data, (tuple, list)) and data and all(
            _is_array(a) or isinstance(a, (tuple, list)) for a in data):
        arrays = inputs(data)
        lengths = {len(a) for a in arrays}
        if len(lengths) != 1 or 0 in lengths:
            raise ValueError(
                f"{name}: the {n_inputs} input arrays must be non-empty and "
                f"of one length. Received lengths "
                f"{[len(a) for a in arrays]}")
        yield from _sliced(arrays, batch_size, steps)
        return
    for batch in _batches_of(data, steps, name):
        yield inputs(batch)
