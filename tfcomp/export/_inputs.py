"""A model's inputs for export: one array for a single-input model, a list
of arrays (one per input, in ``model.inputs`` order) for several, read,
checked against each input and cast to its dtype; the few operations the
export path needs on either form.

Example:
    >>> x = model_inputs([tokens, memory], model, 256, "verify_data")
    >>> rows(x), [a.shape for a in take(x, 4)]
"""

from __future__ import annotations

import keras
import numpy as np

from tfcomp._batches import iter_model_batches

__all__ = ["cast_to_input", "input_dtype", "input_names", "is_multi", "model_inputs",
           "random_inputs", "rows", "sliced", "take"]


def is_multi(model) -> bool:
    """Whether ``model`` has several inputs."""
    return len(model.inputs) > 1


def input_dtype(tensor) -> np.dtype:
    """The numpy dtype of one model input (float32 when unknown)."""
    try:
        return np.dtype(keras.backend.standardize_dtype(tensor.dtype))
    except (AttributeError, TypeError, ValueError):
        return np.dtype("float32")


def cast_to_input(x, tensor):
    """``x`` cast to one model input's dtype (integer ids stay integers,
    rounded)."""
    dtype = input_dtype(tensor)
    if np.issubdtype(dtype, np.integer):
        return np.round(x).astype(dtype)
    return x


def input_names(model) -> list | None:
    """The InputLayer names of a functional model, in ``model.inputs``
    order (the names a TFLite file's signature keeps), or None."""
    try:
        return [entry[0] for entry in model.get_config()["input_layers"]]
    except (KeyError, TypeError, IndexError, NotImplementedError):
        return None


def model_inputs(data, model, limit: int, name: str) -> list:
    """The first ``limit`` samples of ``data`` for a multi-input ``model``:
    a list of arrays, each checked against its input's shape (finite,
    non-empty) and cast to its dtype.

    Example:
        >>> xs = model_inputs([x1, x2], model, 256, "verify_data")
    """
    n = len(model.inputs)
    parts, count = [[] for _ in range(n)], 0
    for batch in iter_model_batches(data, n, 1024, name=name):
        for part, b in zip(parts, batch):
            part.append(b)
        count += len(batch[0])
        if count >= limit:
            break
    arrays = [np.concatenate(part)[:limit] for part in parts]
    for i, (a, tensor) in enumerate(zip(arrays, model.inputs)):
        want = tuple(tensor.shape[1:])
        if len(a.shape[1:]) != len(want) or any(
                w is not None and w != s for w, s in zip(want, a.shape[1:])):
            raise ValueError(
                f"{name} input {i} must have shape {('N',) + want} to fit "
                f"model {model.name!r}. Received shape {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} input {i} holds NaN or infinite "
                             "values.")
    return [cast_to_input(a, t) for a, t in zip(arrays, model.inputs)]


def random_inputs(model, n: int, rng) -> list:
    """Uniform [0, 1) inputs for every input of a multi-input float
    model; ValueError naming the integer inputs (ids need a range)."""
    ints = [t.name for t in model.inputs
            if np.issubdtype(input_dtype(t), np.integer)]
    if ints:
        raise ValueError(
            f"export_tflite: inputs {ints} of model {model.name!r} are "
            "integer, so valid random inputs are unknown: pass verify_data "
            "(or calibration_data) or verify=False.")
    return [rng.uniform(0, 1, size=[n, *t.shape[1:]]).astype(np.float32)
            for t in model.inputs]


def rows(x) -> int:
    """Samples in ``x`` (an array or a list of arrays)."""
    return len(x[0]) if isinstance(x, list) else len(x)


def take(x, n: int):
    """The first ``n`` samples of ``x``."""
    return sliced(x, 0, n)


def sliced(x, start: int, stop: int):
    """Samples ``start:stop`` of ``x``."""
    if isinstance(x, list):
        return [a[start:stop] for a in x]
    return x[start:stop]
