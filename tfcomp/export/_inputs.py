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

from tfcomp._batches import (  # re-exported (__all__)
    input_names,
    is_multi,
    model_arrays,
    rows,
    signature_input_names,
    sliced,
    take,
)
from tfcomp._io import as_arrays

__all__ = ["cast_to_input", "check_numeric_inputs", "input_dtype",
           "input_names", "is_multi", "model_data", "model_inputs", "random_inputs",
           "rows", "signature_input_names", "sliced", "take"]


def input_dtype(tensor) -> np.dtype:
    """The numpy dtype of one model input (float32 when unknown)."""
    try:
        return np.dtype(keras.backend.standardize_dtype(tensor.dtype))
    except (AttributeError, TypeError, ValueError):
        return np.dtype("float32")


def cast_to_input(x, tensor):
    """``x`` cast to one model input's dtype as Keras casts it when the
    model is called (an integer input truncates: 254.9 -> 254 for a uint8
    image, as ``tf.cast`` does), so a file and the Keras model it is checked
    against read the same values."""
    dtype = input_dtype(tensor)
    if np.issubdtype(dtype, np.integer):
        return np.asarray(x).astype(dtype)
    return x


def model_inputs(data, model, limit: int | None, name: str) -> list:
    """The first ``limit`` samples (None: all) of ``data`` for a
    multi-input ``model``:
    a list of arrays (:func:`tfcomp._batches.model_arrays`), each cast to
    its input's dtype.

    Example:
        >>> xs = model_inputs([x1, x2], model, 256, "verify_data")
    """
    arrays, _ = model_arrays(data, model, limit, name)
    return [cast_to_input(a, t) for a, t in zip(arrays, model.inputs)]


def model_data(data, model, name: str = "calibration_data",
               limit: int | None = None):
    """``data`` (as ``fit`` takes it) as ``model``'s inputs (cast to their
    dtypes): one array, or a list in ``model.inputs`` order; the first
    ``limit`` samples (None: all); ValueError naming ``name`` when it does
    not fit.

    Example:
        >>> xs = model_data(([img, meta], y), model, "verify_x")
    """
    if is_multi(model):  # cast to each input's dtype
        return model_inputs(data, model, limit, name)
    x = as_arrays(data, model=model, max_items=limit, name=name)[0]
    return cast_to_input(x, model.inputs[0])  # uint8 pixels: as Keras does


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
    return [rng.uniform(0, 1, size=random_shape(t, n)).astype(np.float32)
            for t in model.inputs]


#: The size random verification inputs get on a dynamic axis (a Keras
#: ``None`` sequence length or image size).
RANDOM_DYNAMIC_SIZE = 32


def random_shape(tensor, n: int, length: int | None = None) -> list:
    """``[n, *shape]`` of random inputs for a model input: its dynamic
    sizes (None) as ``length`` (an unrolled RNN's) on the first axis, else
    :data:`RANDOM_DYNAMIC_SIZE`.

    Example:
        >>> random_shape(keras.Input((None, 4)), 8)
        [8, 32, 4]
    """
    dims = list(tensor.shape[1:])
    if dims and dims[0] is None and length is not None:
        dims[0] = length
    return [n] + [RANDOM_DYNAMIC_SIZE if d is None else int(d)
                  for d in dims]


def check_numeric_inputs(model, verb: str) -> None:
    """A ``ValueError`` naming a string input (a ``TextVectorization`` /
    ``StringLookup`` inside the model): TFLite builtins have no string ops,
    the converter would fail with an MLIR error.

    Example:
        >>> check_numeric_inputs(model, "export_tflite")
    """
    for t in keras.tree.flatten(model.inputs):
        name = getattr(t, "name", "input")
        if "string" in str(getattr(t, "dtype", "")):
            raise ValueError(
                f"{verb}: input {name!r} of model {model.name!r} is a string "
                "tensor (text preprocessing such as TextVectorization inside "
                "the model): TFLite builtins have no string ops. Export the "
                "model from the first layer after the preprocessing, e.g. "
                "keras.Model(vectorizer.output, model.output), and run the "
                "preprocessing on the host.")
