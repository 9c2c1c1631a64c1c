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

__all__ = ["as_model_input", "index_rows", "input_names", "is_multi", "iter_batches",
           "iter_model_batches", "model_arrays", "rows", "sliced", "take"]


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
                       name: str = "calibration_data", names=None):
    """:func:`iter_batches` for a model with ``n_inputs`` inputs: one
    array per batch for one input; for several, a list of float32 arrays
    per batch, from a list of ``n_inputs`` arrays (as ``model.fit`` takes
    them), an ``((x1, x2, ...), y)`` tuple, or an iterable /
    ``tf.data.Dataset`` of such batches; with the InputLayer ``names``, a
    dict keyed by them too.

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
        return _split(batch, n_inputs, names, name)[0]

    if isinstance(data, dict) or (isinstance(data, (tuple, list)) and data and all(
            _is_array(a) or isinstance(a, (tuple, list, dict)) for a in data)):
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


# ---------------------------------------------------------------------------
# several inputs: a list of arrays, one per model input


def is_multi(model) -> bool:
    """Whether ``model`` has several inputs."""
    return len(getattr(model, "inputs", None) or ()) > 1


def rows(x) -> int:
    """Samples in ``x`` (an array, or a list / dict of arrays, one per
    input)."""
    if isinstance(x, dict):
        return len(next(iter(x.values())))
    return len(x[0]) if isinstance(x, list) else len(x)


def index_rows(x, index):
    """``x[index]`` of an array, or of each array of a list or dict
    (``index`` a slice or an index array over the samples).

    Example:
        >>> index_rows([np.arange(4), np.arange(4) * 2], slice(1, 3))
        [array([1, 2]), array([2, 4])]
    """
    if isinstance(x, list):
        return [a[index] for a in x]
    if isinstance(x, dict):  # by input name
        return {k: a[index] for k, a in x.items()}
    return x[index]


def take(x, n: int):
    """The first ``n`` samples of ``x``."""
    return sliced(x, 0, n)


def sliced(x, start: int, stop: int):
    """Samples ``start:stop`` of ``x`` (an array or a list of arrays).

    Example:
        >>> [a.shape for a in sliced([np.zeros((8, 2)), np.zeros((8, 3))],
        ...                          0, 4)]
        [(4, 2), (4, 3)]
    """
    return index_rows(x, slice(start, stop))


def _split(batch, n_inputs: int, names, name: str) -> tuple:
    """``(inputs, labels or None)`` of one multi-input batch: ``[x1, x2]``,
    ``((x1, x2), y[, w])`` or a dict keyed by the InputLayer ``names``
    (alone or as the first element)."""
    labels = None
    if isinstance(batch, (tuple, list)) and batch and isinstance(
            batch[0], (tuple, list, dict)):
        labels = batch[1] if len(batch) > 1 else None
        batch = batch[0]
    if isinstance(batch, dict):
        missing = [k for k in (names or []) if k not in batch]
        if names is None or missing or len(batch) != n_inputs:
            raise ValueError(
                f"{name}: a dict of inputs must hold exactly the model's "
                f"input names {names}. Received keys {sorted(batch)}")
        batch = [batch[k] for k in names]
    if not (isinstance(batch, (tuple, list)) and len(batch) == n_inputs
            and all(hasattr(b, "shape") for b in batch)):
        raise ValueError(
            f"{name}: the model has {n_inputs} inputs, so its data must be "
            f"a list of {n_inputs} arrays (or ((x1, ...), y), or batches of "
            "those). Received: " + type(batch).__name__
            + (f" of {len(batch)}" if isinstance(batch, (tuple, list))
               else ""))
    arrays = [np.asarray(_to_numpy(b), np.float32) for b in batch]
    if isinstance(labels, (tuple, list)) and labels:
        labels = labels[0]  # several outputs: the first output's labels
    elif isinstance(labels, dict) and labels:  # Keras flattens by sorted key
        labels = labels[sorted(labels)[0]]
    return arrays, (None if labels is None else _to_numpy(labels))


def input_names(model) -> list | None:
    """The InputLayer names of a functional model, in ``model.inputs``
    order (the keys of a dict of inputs ``model.fit`` takes), or None. A
    model built on a dict of inputs takes that dict's keys (Keras orders
    ``model.inputs`` by sorted key).

    Example:
        >>> input_names(keras.Model({"image": a, "meta": b}, out))
        ['image', 'meta']
    """
    try:
        refs = model.get_config()["input_layers"]
    except (KeyError, TypeError, AttributeError, NotImplementedError):
        return None
    if isinstance(refs, dict):
        return sorted(refs)
    if (isinstance(refs, (list, tuple)) and len(refs) == 3
            and isinstance(refs[0], str) and isinstance(refs[1], int)):
        return [refs[0]]  # one input, not wrapped in a list
    try:
        return [entry[0] for entry in refs]
    except (TypeError, IndexError):
        return None


def as_model_input(model, x):
    """``x`` (an array, or a list of arrays in ``model.inputs`` order) in
    the structure ``model`` is called with: a dict by input name for a
    model built on a dict of inputs (Keras refuses a list there unless the
    dict's keys are in sorted order), else ``x`` itself.

    Example:
        >>> model.predict(as_model_input(model, [image, meta]))
    """
    if not isinstance(x, (list, tuple)):
        return x
    try:
        struct = model.input
    except (AttributeError, ValueError, TypeError):
        return x
    # model.inputs flattens the dict by sorted key (as input_names says)
    return dict(zip(sorted(struct), x)) if isinstance(struct, dict) else x


def signature_input_names(model) -> list | None:
    """The names a TFLite (or SavedModel) signature gives a model's inputs,
    in ``model.inputs`` order: the input tensors' own names. An unnamed
    ``keras.Input`` is ``keras_tensor_N`` there, not its InputLayer's
    ``input_layer_N``; a named one is its name.

    Example:
        >>> signature_input_names(keras.Model([a, b], out))
        ['keras_tensor', 'keras_tensor_1']
    """
    try:
        names = [t.name for t in model.inputs]
    except (AttributeError, TypeError, ValueError):
        return None
    return names if all(names) and len(set(names)) == len(names) else None


def model_arrays(data, model, max_items: int | None = None,
                 name: str = "calibration_data") -> tuple:
    """``(inputs, labels or None)`` of a multi-input ``model``'s data, in
    the forms ``model.fit`` takes (``[x1, x2]``, ``([x1, x2], y)``, a dict
    by input name, or an iterable / ``tf.data`` of such batches): one
    float32 array per input (``model.inputs`` order), each checked against
    its input's shape, finite and non-empty; at most ``max_items`` rows.

    Example:
        >>> xs, y = model_arrays(([img, meta], labels), model)
    """
    n, names = len(model.inputs), input_names(model)
    if data is None:
        raise ValueError(f"{name} is empty: give inputs. Received: "
                         f"{name}=None")
    if isinstance(data, dict) or (isinstance(data, (tuple, list)) and data
                                  and all(_is_array(a) or isinstance(
                                      a, (tuple, list, dict))
                                      for a in data)):
        batches = [data]
    else:
        batches = _iterate(data, name)
    parts, labels, count = [[] for _ in range(n)], [], 0
    for batch in batches:
        arrays, y = _split(batch, n, names, name)
        if len({len(a) for a in arrays}) != 1:
            raise ValueError(
                f"{name}: the {n} input arrays must be of one length. "
                f"Received lengths {[len(a) for a in arrays]}")
        for part, a in zip(parts, arrays):
            part.append(a)
        labels.append(y)
        count += len(arrays[0])
        if max_items is not None and count >= max_items:
            break
    if not count:
        raise ValueError(f"{name} is empty: no inputs.")
    stop = count if max_items is None else int(max_items)
    xs = [np.concatenate(p, 0)[:stop] for p in parts]
    for i, (a, tensor) in enumerate(zip(xs, model.inputs)):
        want = tuple(tensor.shape[1:])
        if len(a.shape[1:]) != len(want) or any(
                w is not None and w != s for w, s in zip(want, a.shape[1:])):
            raise ValueError(
                f"{name} input {i} must have shape {('N',) + want} to fit "
                f"model {model.name!r}. Received shape {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} input {i} holds NaN or infinite "
                             "values.")
    y = None if any(v is None for v in labels) else np.concatenate(
        labels, 0)[:stop]
    return xs, y
