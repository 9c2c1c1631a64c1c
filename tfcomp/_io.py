"""Shared input/output helpers: atomic writes, the calibration-data adapter,
reading files, and the argument checks of :mod:`tfcomp._checks`
(re-exported). Every module that writes a file or takes data uses these;
none writes its own copy.

Atomic writes go to a temporary file in the destination's folder named
after its writer (``.tmp-<name>-p<pid>h<host>-...``), are flushed and synced,
then ``os.replace``-d onto the final name (the folder synced after), so a
killed process never leaves a truncated file under that name; the next
write of that name removes what a killed writer left
(:func:`remove_stale_temps`).

Example:
    >>> from tfcomp._io import atomic_write_json, as_arrays
    >>> atomic_write_json("plan.json", {"groups": {}})
    >>> x, y = as_arrays((x_train, y_train), model=model, max_items=512)
"""

from __future__ import annotations

import contextlib
import functools
import json
import numbers
import os
import re
import shutil
import tempfile
import time
from typing import Any

import numpy as np

from tfcomp._batches import (  # re-exported (__all__)
    _is_array,
    _iterate,
    _to_numpy,
    is_multi,
    iter_batches,
    iter_model_batches,
    model_arrays,
    rows,
)
from tfcomp._checks import (  # re-exported (__all__)
    check_fraction,
    check_number,
    check_positive_int,
)
from tfcomp._class_labels import class_labels, labels_for

__all__ = [
    "BadInputError",
    "STALE_TEMP_SECONDS", "ParentNotADirectoryError", "atomic_path",
    "atomic_write_bytes", "atomic_write_text", "atomic_write_json",
    "atomic_save_keras", "remove_stale_temps", "make_dirs", "as_arrays",
    "class_labels",
    "iter_batches", "iter_model_batches", "check_fraction", "check_number",
    "check_positive_int",
    "read_json", "read_text",
]


# ------------------------------------------------------------ atomic writes

#: Temporary files of writers that may still be running (another host, a
#: live process, or a name without an owner) are removed by the next write to
#: the same final path only once they are older than this many seconds.
STALE_TEMP_SECONDS = 3600.0

# Test hook: ``callable(stage, path, tmp)`` called at "open" (temporary name
# reserved, nothing written), "chunk" (after each chunk of
# ``atomic_write_bytes``), "written" (temporary file complete and synced) and
# "replaced" (renamed onto the final name, before the folder is synced).
# The kill tests stop a writer there.
_hook = None

_TMP_PREFIX = ".tmp-"
_CHUNK = 1 << 20


class BadInputError(ValueError):
    """Base of tfcomp's errors about a bad file or argument given by the
    user (a corrupt file, a wrong shape...): the CLI maps them to exit
    code 2, as it does its own argument errors.

    Example:
        >>> issubclass(BadInputError, ValueError)
        True
    """


class ParentNotADirectoryError(NotADirectoryError, BadInputError):
    """A file's parent path is a file: an ``OSError`` and a ``ValueError``.

    Example:
        >>> issubclass(ParentNotADirectoryError, ValueError)
        True
    """


def _fire(stage: str, path: str, tmp: str) -> None:
    if _hook is not None:
        _hook(stage, path, tmp)


@functools.lru_cache(maxsize=1)
def _host_tag() -> str:
    import hashlib
    import socket

    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]


def _temp_stem(base: str) -> str:
    """``.tmp-<name>-`` (the name cut to 100 characters)."""
    return f"{_TMP_PREFIX}{base[:100]}-"


def _is_stale_temp(entry: str, full: str, stem: str) -> bool:
    owner = re.match(r"p(\d+)h([0-9a-f]{6})-", entry[len(stem):])
    if owner and owner.group(2) == _host_tag() and os.name != "nt":
        pid = int(owner.group(1))  # (os.kill(pid, 0) signals on Windows)
        if pid == os.getpid():
            return False  # this process: another thread may be writing
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True  # its writer is dead
        except OSError:
            pass  # alive, another user's
    try:
        return time.time() - os.lstat(full).st_mtime > STALE_TEMP_SECONDS
    except OSError:
        return False


def remove_stale_temps(path: str) -> list:
    """Removes the temporary files that killed writers of ``path`` left.

    A temporary file of ``path`` is ``.tmp-<name>-p<pid>h<host>-<random>``
    beside it. It is stale when its writer (``pid`` on this host) is no
    longer running; one of another host, of a live ``pid`` (which may have
    been reused) or without an owner (older tfcomp) once it is older than
    :data:`STALE_TEMP_SECONDS`. A concurrent writer's file is left alone.
    Every atomic write of ``path`` calls this first.

    Returns:
        The removed paths.

    Example:
        >>> remove_stale_temps("plan.json")
        []
    """
    directory = os.path.dirname(os.path.abspath(os.fspath(path)))
    stem = _temp_stem(os.path.basename(os.fspath(path)))
    try:
        entries = os.listdir(directory)
    except OSError:
        return []
    removed = []
    for entry in entries:
        full = os.path.join(directory, entry)
        if entry.startswith(stem) and _is_stale_temp(entry, full, stem):
            _remove(full)  # failures (another writer, permissions) ignored
            if not os.path.lexists(full):
                removed.append(full)
    return removed


def make_dirs(directory, what: str | None = None) -> str:
    """Creates ``directory`` (and its parents) when missing.

    Raises:
        ParentNotADirectoryError: ``directory`` or one of its parents is a
            file (the message names it and ``what`` is being written).

    Example:
        >>> make_dirs("report/plots")
        'report/plots'
    """
    directory = os.fspath(directory) or "."
    what = what if what is not None else repr(directory)
    probe = directory
    while probe and not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if probe and os.path.exists(probe) and not os.path.isdir(probe):
        raise ParentNotADirectoryError(
            f"cannot write {what}: {probe!r} is a file, not a folder.")
    os.makedirs(directory, exist_ok=True)
    return directory


def _fsync_path(p: str) -> None:
    """fsync a file or a folder where the platform supports it."""
    if os.name == "nt" and os.path.isdir(p):
        return
    with contextlib.suppress(OSError):  # e.g. no folder fsync
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove(p: str) -> None:
    if os.path.isdir(p) and not os.path.islink(p):
        shutil.rmtree(p, ignore_errors=True)
    elif os.path.lexists(p):
        with contextlib.suppress(OSError):
            os.unlink(p)


@contextlib.contextmanager
def _atomic(path, suffix: str | None, sync_file: bool):
    path = os.fspath(path)
    base = os.path.basename(path)
    if not base:
        raise ValueError(f"path must name a file. Received: path={path!r}")
    directory = os.path.dirname(os.path.abspath(path)) or "."
    make_dirs(os.path.dirname(path) or ".", repr(path))
    remove_stale_temps(path)
    ext = suffix if suffix is not None else os.path.splitext(base)[1]
    fd, tmp = tempfile.mkstemp(
        dir=directory, suffix=ext,
        prefix=f"{_temp_stem(base)}p{os.getpid()}h{_host_tag()}-")
    os.close(fd)
    os.unlink(tmp)  # the writer creates it (some refuse an existing file)
    try:
        _fire("open", path, tmp)
        yield tmp
        if not os.path.lexists(tmp):
            raise FileNotFoundError(
                f"the writer of {path!r} created no file at {tmp!r}")
        tmp_is_dir = os.path.isdir(tmp)
        if sync_file and not tmp_is_dir:
            _fsync_path(tmp)
        _fire("written", path, tmp)
        if os.path.isdir(path) and not os.path.islink(path):
            if not tmp_is_dir:
                raise IsADirectoryError(
                    f"cannot write {path!r}: it is a folder.")
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    _fire("replaced", path, tmp)
    _fsync_path(directory)


@contextlib.contextmanager
def atomic_path(path: str, suffix: str | None = None):
    """Yields a temporary path beside ``path``; renames it onto ``path`` when
    the block ends without an exception, removes it otherwise.

    The temporary name is ``.tmp-<name>-p<pid>h<host>-<random><ext>``: it
    keeps ``path``'s extension (``suffix`` overrides it) because some
    writers check it (``model.save`` wants ``.keras``), and names its
    writer, so the next write of ``path`` removes what a killed writer left
    (:func:`remove_stale_temps`). The file is synced before the rename and
    the folder after it. A directory written at the temporary path is moved
    as a whole.

    Raises:
        ParentNotADirectoryError: a parent of ``path`` is a file.
        IsADirectoryError: ``path`` is a folder and a file was written.

    Example:
        >>> with atomic_path("model.keras") as tmp:
        ...     model.save(tmp)
    """
    with _atomic(path, suffix, sync_file=True) as tmp:
        yield tmp


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically (temp file + ``os.replace``).

    Example:
        >>> atomic_write_bytes("model.tflite", flatbuffer)
    """
    view = memoryview(data).cast("B")
    with _atomic(path, None, sync_file=False) as tmp:
        with open(tmp, "wb") as f:
            for start in range(0, max(len(view), 1), _CHUNK):
                f.write(view[start:start + _CHUNK])
                _fire("chunk", os.fspath(path), tmp)
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


def as_arrays(data, model=None, max_items: int | None = None,
              need_labels: bool = False, name: str = "calibration_data",
              targets: bool = False) -> tuple:
    """Inputs (and labels) as numpy arrays from any of the forms Keras'
    ``fit`` takes: an array, an ``(x, y)`` pair of arrays, or an iterable /
    ``tf.data.Dataset`` of batches (arrays or ``(x, y, ...)`` tuples).

    Args:
        data: the data, in one of the forms above.
        model: when given, the inputs must fit its input's shape; for a
            model with several inputs, ``x`` is a list of arrays (one per
            input, ``model.inputs`` order) from a list of arrays,
            ``([x1, x2], y)``, a dict by input name or batches of those
            (:func:`tfcomp._batches.model_arrays`). For a model with
            several outputs, ``(x, [y1, y2])`` gives ``y1``: the verbs
            score the first output.
        max_items: keep at most this many samples (the first ones); an
            iterable is not read further once it has yielded that many.
        need_labels: labels are required.
        name: the argument's name, for error messages.
        targets: float targets of the model's output shape (regression)
            come back as float32, for a loss; else labels are class
            indices and non-integer floats are an error (where labels are
            needed) or ignored.

    Returns:
        ``(x, y)``: float32 inputs; ``y`` None when there are no labels,
        else int64 class indices, per sample or, for a model whose output
        keeps positions (per-pixel classes), per position (one-hot labels
        are converted).

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
    if model is not None and is_multi(model):
        x, y = model_arrays(data, model, max_items, name)
        return x, labels_for(y, rows(x), model, need_labels, name, targets)
    x = y = None
    if _is_array(data):
        x = _to_numpy(data)
    elif isinstance(data, (tuple, list)) and len(data) == 2 and all(
            hasattr(d, "shape") for d in data):
        x, y = _to_numpy(data[0]), _to_numpy(data[1])
    elif (isinstance(data, (tuple, list)) and len(data) == 2
          and hasattr(data[0], "shape")
          and _first_output_labels(data[1], model) is not None):
        # (x, [y1, y2, ...]) or (x, {name: y}) of a model with several
        # outputs: the verbs score its first output, so its labels
        x = _to_numpy(data[0])
        y = _to_numpy(_first_output_labels(data[1], model))
    elif isinstance(data, (tuple, list)) and len(data) == 0:
        raise ValueError(f"{name} is empty: give inputs. Received: "
                         f"{name}=()")
    else:
        xs, ys, count = [], [], 0
        for batch in _iterate(data, name):
            if isinstance(batch, dict):
                raise TypeError(
                    f"{name} batches must be arrays or (x, y) tuples. "
                    f"Received a dict with keys {sorted(batch)[:5]}")
            if isinstance(batch, (tuple, list)):
                bx = _to_numpy(batch[0])
                first = _first_output_labels(batch[1], model) if len(
                    batch) > 1 else None
                by = None if len(batch) < 2 else _to_numpy(
                    batch[1] if first is None else first)
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
    return x, labels_for(y, x.shape[0], model, need_labels, name, targets)


def _first_output_labels(y, model):
    """The first output's labels of a several-output model's ``y`` (a list,
    or a dict by output name as ``fit`` takes them), else None."""
    if isinstance(y, (tuple, list)) and y and all(
            hasattr(v, "shape") for v in y):
        return y[0]
    if isinstance(y, dict) and y and all(hasattr(v, "shape")
                                         for v in y.values()):
        names = list(getattr(model, "output_names", None) or [])
        first = next((n for n in names if n in y), sorted(y)[0])
        return y[first]
    return None


# ------------------------------------------------------------- reading


def read_text(path, what: str = "file") -> str:
    """The UTF-8 text of ``path``.

    Raises:
        FileNotFoundError: ``path`` does not exist (the message names
            ``what`` and the path).
        ValueError: ``path`` is a folder, or not UTF-8 text.

    Example:
        >>> read_text("results.md", "report")[:9]
        '# Results'
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what} not found: {path!r}")
    if os.path.isdir(path):
        raise ValueError(f"{what} {path!r} is a folder, not a file.")
    with open(path, "rb") as f:
        data = f.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{what} {path!r} is not UTF-8 text (byte "
                         f"{e.start}: {data[e.start:e.start + 1]!r}); is it "
                         "the right file?") from None


def read_json(path, what: str = "file"):
    """The JSON document in ``path``.

    Raises:
        FileNotFoundError: ``path`` does not exist (the message names
            ``what``).
        ValueError: the file is empty, not UTF-8 or not valid JSON (the
            message names the path).

    Example:
        >>> read_json("results.json", "results file")["rows"]
    """
    path = os.fspath(path)
    text = read_text(path, what)
    if not text.strip():
        raise ValueError(f"{what} {path!r} is empty.")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} {path!r} is not valid JSON: corrupt JSON "
                         f"at line {e.lineno}, column {e.colno} ({e.msg}); "
                         "it may be truncated.") from None
