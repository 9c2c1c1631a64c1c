"""Shared input/output helpers: atomic writes, the calibration-data adapter
and argument checks. Every module that writes a file or takes data uses
these; none writes its own copy.

Atomic writes go to a temporary file in the destination's folder, are
flushed and synced, then ``os.replace``-d onto the final name, so a killed
process never leaves a truncated file under that name.

Example:
    >>> from tfcomp._io import atomic_write_json, as_arrays
    >>> atomic_write_json("plan.json", {"groups": {}})
    >>> x, y = as_arrays((x_train, y_train), model=model, max_items=512)
"""

from __future__ import annotations

import contextlib
import json
import numbers
import os
import shutil
import tempfile
from typing import Any

import numpy as np

__all__ = [
    "atomic_path", "atomic_write_bytes", "atomic_write_text",
    "atomic_write_json", "atomic_save_keras", "as_arrays", "iter_batches",
    "check_fraction", "check_positive_int", "read_json",
]


# ------------------------------------------------------------ atomic writes


@contextlib.contextmanager
def atomic_path(path: str, suffix: str | None = None):
    """Yields a temporary path beside ``path``; renames it onto ``path`` when
    the block ends without an exception, removes it otherwise.

    The temporary name keeps ``path``'s extension (``suffix`` overrides it)
    because some writers check it (``model.save`` wants ``.keras``). A
    directory written at the temporary path is moved as a whole.

    Example:
        >>> with atomic_path("model.keras") as tmp:
        ...     model.save(tmp)
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(directory, exist_ok=True)
    base = os.path.basename(path)
    ext = suffix if suffix is not None else os.path.splitext(base)[1]
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".tmp-{base}-",
                               suffix=ext)
    os.close(fd)
    os.unlink(tmp)  # the writer creates it (some refuse an existing file)
    try:
        yield tmp
        if not os.path.exists(tmp):
            raise FileNotFoundError(
                f"the writer of {path!r} created no file at {tmp!r}")
        if os.path.isdir(tmp) and os.path.isdir(path):
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically (temp file + ``os.replace``).

    Example:
        >>> atomic_write_bytes("model.tflite", flatbuffer)
    """
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: str, text: str) -> None:
    """Writes ``text`` (UTF-8) to ``path`` atomically.

    Example:
        >>> atomic_write_text("results.md", "# Results\\n")
    """
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str, obj: Any, indent: int | None = 2,
                      sort_keys: bool = False) -> None:
    """Writes ``obj`` as JSON to ``path`` atomically. The object is encoded
    before anything is written, so an unencodable object leaves the old
    file as it was.

    Example:
        >>> atomic_write_json("plan.json", plan.to_dict())
    """
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys)
    atomic_write_text(path, text + "\n")


def atomic_save_keras(model, path: str) -> None:
    """``model.save(path)`` through a temporary ``.keras`` file.

    Raises:
        ValueError: ``path`` does not end in ``.keras``.

    Example:
        >>> atomic_save_keras(small, "pruned.keras")
    """
    path = os.fspath(path)
    if not path.endswith(".keras"):
        raise ValueError(
            f"path must end in .keras. Received: path={path!r}")
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)


# ------------------------------------------------------ calibration data


def _to_numpy(a) -> np.ndarray:
    if hasattr(a, "numpy") and not isinstance(a, np.ndarray):
        a = a.numpy()
    return np.asarray(a)


def _is_array(data) -> bool:
    return (isinstance(data, np.ndarray)
            or (hasattr(data, "__array__")
                and not isinstance(data, (tuple, list, dict))
                and not hasattr(data, "element_spec")))


def as_arrays(data, model=None, max_items: int | None = None,
              need_labels: bool = False, name: str = "calibration_data"
              ) -> tuple:
    """Inputs (and labels) as numpy arrays from any of the forms Keras'
    ``fit`` takes: an array, an ``(x, y)`` pair of arrays, or an iterable /
    ``tf.data.Dataset`` of batches (arrays or ``(x, y, ...)`` tuples).

    Args:
        data: the data, in one of the forms above.
        model: when given, the inputs must fit its first input's shape.
        max_items: keep at most this many samples (the first ones); an
            iterable is not read further once it has yielded that many.
        need_labels: labels are required.
        name: the argument's name, for error messages.

    Returns:
        ``(x, y)``: float32 inputs; ``y`` None when there are no labels,
        else int64 class indices (one-hot labels are converted).

    Raises:
        ValueError: empty data, inputs that do not fit the model, labels
            missing or of the wrong length, non-finite inputs.
        TypeError: data of an unsupported type or dtype.

    Example:
        >>> x, y = as_arrays(train_ds.take(4), model=model, need_labels=True)
    """
    if max_items is not None and (isinstance(max_items, bool)
                                  or not isinstance(max_items, numbers.Integral)
                                  or int(max_items) < 1):
        raise ValueError(f"max_items must be an integer >= 1. Received: "
                         f"max_items={max_items!r}")
    if data is None:
        raise ValueError(f"{name} is empty: give inputs. Received: "
                         f"{name}=None")
    x = y = None
    if _is_array(data):
        x = _to_numpy(data)
    elif isinstance(data, (tuple, list)) and len(data) == 2 and all(
            hasattr(d, "shape") for d in data):
        x, y = _to_numpy(data[0]), _to_numpy(data[1])
    elif isinstance(data, (tuple, list)) and len(data) == 0:
        raise ValueError(f"{name} is empty: give inputs. Received: "
                         f"{name}=()")
    else:
        xs, ys, count = [], [], 0
        try:
            iterator = iter(data)
        except TypeError:
            raise TypeError(
                f"{name} must be an array, a tuple (x, y) or an iterable of "
                f"batches. Received: {type(data).__name__}") from None
        for batch in iterator:
            if isinstance(batch, dict):
                raise TypeError(
                    f"{name} batches must be arrays or (x, y) tuples. "
                    f"Received a dict with keys {sorted(batch)[:5]}")
            if isinstance(batch, (tuple, list)):
                bx = _to_numpy(batch[0])
                by = _to_numpy(batch[1]) if len(batch) > 1 else None
            else:
                bx, by = _to_numpy(batch), None
            xs.append(bx)
            ys.append(by)
            count += bx.shape[0] if bx.ndim else 0
            if max_items is not None and count >= max_items:
                break
        if not xs:
            raise ValueError(f"{name} is empty: the iterable yielded no "
                             "batch.")
        shapes = {a.shape[1:] for a in xs}
        if len(shapes) != 1:
            raise ValueError(f"{name} batches have different input shapes: "
                             f"{sorted(shapes)}")
        x = np.concatenate(xs, axis=0)
        y = None if any(b is None for b in ys) else np.concatenate(ys, 0)
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"{name} is empty: no inputs. Received: "
                         f"{name}.shape={x.shape}")
    if not np.issubdtype(x.dtype, np.number):
        raise TypeError(f"{name} must be numeric. Received: dtype={x.dtype}")
    if model is not None:
        want = tuple(model.inputs[0].shape[1:])
        if len(x.shape[1:]) != len(want) or any(
                w is not None and w != s for w, s in zip(want, x.shape[1:])):
            raise ValueError(
                f"{name} inputs must have shape {('N',) + want} to fit model "
                f"{model.name!r}. Received: {name}.shape={x.shape}")
    if max_items is not None:
        x = x[:int(max_items)]
        if y is not None:
            y = y[:int(max_items)]
    x = x.astype("float32", copy=False)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} holds NaN or infinite values.")
    if y is not None:
        if y.shape[0] < x.shape[0]:
            raise ValueError(
                f"{name} labels must have one entry per input ({x.shape[0]})."
                f" Received: labels.shape={y.shape}")
        y = y[:x.shape[0]]
        if y.ndim == 2 and y.shape[1] > 1:
            y = y.argmax(axis=1)
        y = y.reshape(y.shape[0], -1)[:, 0] if y.ndim > 1 else y
        y = y.astype("int64")
    if need_labels and y is None:
        raise ValueError(
            f"{name} must hold labels: give (x, y) or batches of (x, y).")
    return x, y


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
        for count, i in enumerate(range(0, len(x), batch_size)):
            if steps is not None and count >= steps:
                return
            yield x[i:i + batch_size]
        return
    if data is None:
        raise ValueError(f"{name} is empty. Received: {name}=None")
    try:
        iterator = iter(data)
    except TypeError:
        raise TypeError(
            f"{name} must be an array, a tuple (x, y) or an iterable of "
            f"batches. Received: {type(data).__name__}") from None
    count = 0
    for batch in iterator:
        if steps is not None and count >= steps:
            return
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        yield np.asarray(_to_numpy(batch), np.float32)
        count += 1
    if count == 0:
        raise ValueError(f"{name} is empty: the iterable yielded no batch.")


# ------------------------------------------------------- argument checks


def check_fraction(value, name: str, low: float = 0.0, high: float = 1.0,
                   include_low: bool = True, include_high: bool = False
                   ) -> float:
    """``value`` as a float inside the interval, or a ``ValueError`` naming
    the argument and the value received.

    Example:
        >>> check_fraction(0.5, "ratio")
        0.5
    """
    ok_type = isinstance(value, numbers.Real) and not isinstance(value, bool)
    v = float(value) if ok_type else float("nan")
    ok = ok_type and np.isfinite(v) and (
        (v >= low if include_low else v > low)
        and (v <= high if include_high else v < high))
    if not ok:
        lo = "[" if include_low else "("
        hi = "]" if include_high else ")"
        raise ValueError(f"{name} must be a number in {lo}{low:g}, "
                         f"{high:g}{hi}. Received: {name}={value!r}")
    return v


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    """``value`` as an int ``>= minimum``, or a ``ValueError`` naming it.

    Example:
        >>> check_positive_int(8, "round_to")
        8
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) \
            or int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}. "
                         f"Received: {name}={value!r}")
    return int(value)


# ------------------------------------------------------------- reading


def read_json(path, what: str = "file"):
    """The JSON document in ``path``.

    Raises:
        FileNotFoundError: ``path`` does not exist (the message names
            ``what``).
        ValueError: the file is not valid JSON.

    Example:
        >>> read_json("results.json", "results file")["rows"]
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path!r}")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} {path!r} is not valid JSON: {e}") from e
