"""Helpers shared by the ``tfcomp`` verbs: messages, the user-facing error,
loading and saving models / data / policies, fine-tuning, and the argparse
value types.

Nothing here imports Keras or TensorFlow at module level, so building the
parser (``tfcomp --help``) stays instant.

Example:
    >>> from tfcomp.cli._common import CLIError, load_model
    >>> model = load_model("model.keras")
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import zipfile

from tfcomp.cli._errors import CLIError
from tfcomp.cli._labels import (
    evaluate,
    is_targets,
    labels,
    loss_for,
    require_classes,
    score_name,
)

__all__ = [
    "CLIError", "DATA_HELP", "HARDWARE", "set_quiet", "set_open_layers",
    "is_quiet", "info",
    "warn", "verbosity", "check_output", "check_writable", "check_folder",
    "write_text", "load_model", "save_model", "load_data",
    "model_input_names",
    "predict_logits", "evaluate", "score_name", "is_targets",
    "require_classes", "fit", "hardware_model", "read_policy",
    "check_policy_layers", "label_path", "ratio", "fractions", "int_in",
    "positive_int", "nonneg_int", "bits", "bits_list", "positive_float",
]

HARDWARE = ("bitfusion-edge", "bitfusion-server", "bismo")
DATA_HELP = ("fashion-mnist or FILE.npz (x_train, y_train, x_test, y_test; "
             "for a model with several inputs x_train_<input name> and "
             "x_test_<input name> per input; labels: classes per row or per "
             "position, or float targets shaped like the output)")
_STATE = {"quiet": False}


# ------------------------------------------------------------ messages


def set_custom_objects(paths) -> None:
    """Imports each ``--custom-objects`` Python file (or module name) and
    makes its Keras layer / model classes known to :func:`load_model`,
    registered or not (keras.io's ``TransformerBlock`` as a script defines
    it). A missing file or an import error is a ``CLIError`` naming it."""
    import importlib
    import importlib.util
    import inspect

    classes = []
    for spec in paths or ():
        if spec.endswith(".py") or os.sep in spec:
            if not os.path.isfile(spec):
                raise CLIError(f"--custom-objects file not found: {spec!r}")
            name = "custom_objects_" + os.path.splitext(
                os.path.basename(spec))[0]
            found = importlib.util.spec_from_file_location(name, spec)
            module = importlib.util.module_from_spec(found)
            sys.modules[name] = module
            try:
                found.loader.exec_module(module)
            except Exception as e:  # the user's code
                sys.modules.pop(name, None)
                raise CLIError(f"--custom-objects {spec!r} failed to "
                               f"import: {type(e).__name__}: {e}") from e
        else:
            try:
                module = importlib.import_module(spec)
            except Exception as e:
                raise CLIError(f"--custom-objects module {spec!r} failed to "
                               f"import: {type(e).__name__}: {e}") from e
        import keras

        classes += [c for _, c in inspect.getmembers(module, inspect.isclass)
                    if issubclass(c, keras.layers.Layer)
                    and c.__module__ == module.__name__]
    from tfcomp.graph.copy import live_class_objects

    _STATE["custom_objects"] = live_class_objects(classes) or None


def set_open_layers(flag: bool) -> None:
    """``--open-layers``: models are opened once loaded (see
    :func:`load_model`)."""
    _STATE["open_layers"] = bool(flag)


def set_quiet(quiet: bool) -> None:
    """Silences (or restores) progress output for the running command."""
    _STATE["quiet"] = bool(quiet)


def is_quiet() -> bool:
    """Whether ``--quiet`` is in effect."""
    return _STATE["quiet"]


def info(msg: str) -> None:
    """Progress / status line on stderr (silenced by ``--quiet``)."""
    if not _STATE["quiet"]:
        print(msg, file=sys.stderr, flush=True)


def warn(msg: str) -> None:
    """A warning on stderr (shown even with ``--quiet``)."""
    print(f"tfcomp: warning: {msg}", file=sys.stderr, flush=True)


def verbosity() -> int:
    """The ``verbose=`` value for Keras / tfcomp calls (0 when quiet)."""
    return 0 if _STATE["quiet"] else 1


# ------------------------------------------------------------ files


def _existing_ancestor(path: str) -> str:
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    return parent


def check_writable(path: str, what: str = "output") -> None:
    """Raises ``CLIError`` unless a file can be written at ``path``: it is
    not a folder, no existing part of its parent path is a file, and the
    nearest existing folder is writable. Verbs call this for every output
    before any work, so a bad output path leaves nothing on disk."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise CLIError(f"{what} {path!r} is a folder; give a file path")
    parent = _existing_ancestor(path)
    if not os.path.isdir(parent):
        raise CLIError(f"cannot write {what} {path!r}: {parent!r} is a "
                       "file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CLIError(f"cannot write {what} {path!r}: folder {parent!r} "
                       "is not writable")


def check_folder(path: str, what: str) -> None:
    """Raises ``CLIError`` unless ``path`` is, or can be created as, a
    folder (an output or project directory)."""
    path = os.fspath(path)
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise CLIError(f"{what} {path!r} is a file, not a folder")
        return
    parent = _existing_ancestor(path)
    if not os.path.isdir(parent):
        raise CLIError(f"cannot create {what} {path!r}: {parent!r} is a "
                       "file, not a folder")


def check_output(path: str, suffix: str, what: str = "output") -> None:
    """Raises ``CLIError`` unless ``path`` ends in ``suffix`` and can be
    written (:func:`check_writable`)."""
    if not path.endswith(suffix):
        raise CLIError(f"{what} must end in {suffix}. Received: {path!r}")
    check_writable(path, what)


def _check_zip(path: str, what: str, kind: str,
               member: str | None = None) -> None:
    """A ``CLIError`` naming ``path`` unless it is a complete zip archive
    (``.keras`` and ``.npz`` files are zips) holding ``member``."""
    size = os.path.getsize(path)
    if size == 0:
        raise CLIError(f"{what} {path!r} is empty (0 bytes)")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            head = f.read(4)
        if head == b"PK\x03\x04":
            raise CLIError(
                f"{what} {path!r} is truncated: an incomplete {kind} zip "
                f"archive ({size:,} bytes, its end is missing); write it "
                "again")
        raise CLIError(f"{what} {path!r} is not a {kind} file (not a zip "
                       "archive)")
    try:
        with zipfile.ZipFile(path) as z:
            broken = z.testzip()
            names = z.namelist()
    except Exception as e:  # noqa: BLE001 - zlib / zipfile / OS errors
        raise CLIError(f"{what} {path!r} is a corrupt {kind} zip archive: "
                       f"{type(e).__name__}: {e}") from e
    if broken is not None:
        raise CLIError(f"{what} {path!r} is corrupt: its member {broken!r} "
                       "fails the CRC check")
    if member is not None and member not in names:
        raise CLIError(f"{what} {path!r} is a zip archive but not a {kind} "
                       f"file (no {member})")


def write_text(path: str, text: str) -> None:
    """Writes ``text`` atomically and prints ``wrote PATH``."""
    from tfcomp._io import atomic_write_text

    atomic_write_text(path, text)
    print(f"wrote {path}")


#: The first bytes of every HDF5 file (a legacy Keras ``.h5`` model).
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def load_model(path: str):
    """Loads a ``.keras`` file, or a legacy Keras ``.h5`` one (tfcomp's
    layers registered); a missing, empty, truncated or corrupt file is a
    ``CLIError`` naming it. Outputs are always ``.keras`` files."""
    if not os.path.exists(path):
        raise CLIError(f"model file not found: {path!r}")
    if os.path.isdir(path):
        raise CLIError(f"model {path!r} is a folder, not a .keras file "
                       "(a SavedModel folder cannot be loaded as a Keras 3 "
                       "model: load it in its Keras and save a .keras file)")
    if path.endswith((".h5", ".hdf5")):
        with open(path, "rb") as f:
            if f.read(8) != _HDF5_MAGIC:
                raise CLIError(f"model file {path!r} is not an HDF5 file "
                               "(empty, truncated or another format)")
    elif not path.endswith(".keras"):
        raise CLIError("model must be a .keras file (or a legacy .h5). "
                       f"Received: {path!r}")
    else:
        _check_zip(path, "model file", ".keras", member="config.json")
    from tfcomp._saving import load_model as load_keras

    info(f"loading {path}")
    try:  # tfcomp's classes registered; an unknown class names its package
        model = load_keras(path, custom_objects=_STATE.get("custom_objects"))
    except Exception as e:  # unknown layer, bad weights, ...
        hint = (" (it needs your own layer classes: pass the Python file "
                "defining them, tfcomp --custom-objects FILE.py COMMAND ...)"
                if any(w in str(e) for w in ("locate class", "deserializ",
                                             "not registered")) else "")
        raise CLIError(f"cannot load model {path!r}{hint}: "
                       f"{type(e).__name__}: {e}") from e
    if _STATE.get("open_layers"):
        from tfcomp.graph.open_layers import open_layers

        opened = open_layers(model)
        for name, why in opened.kept.items():
            info(f"kept {name} whole: {why}")
        if opened.model is not None:
            info(f"opened {', '.join(opened.names)}")
            model = opened.model
    return model


def save_model(model, path: str) -> None:
    """Saves ``model`` atomically to a ``.keras`` path; prints ``wrote``."""
    from tfcomp._io import atomic_save_keras

    check_output(path, ".keras", "output model")
    atomic_save_keras(model, path)
    print(f"wrote {path}")


def load_data(spec: str | None, required: bool = True, model=None,
              input_names=None):
    """``((x, y), (x_test, y_test))`` from ``fashion-mnist`` or a ``.npz``.

    Labels come back int64; with ``model``, input shapes are checked
    against its inputs. For a model with several inputs the ``.npz`` holds
    ``x_train_<input name>`` / ``x_test_<input name>`` per InputLayer and
    ``x`` / ``x_test`` are lists of arrays (``model.inputs`` order). ``None``
    when ``spec`` is None and not ``required``. Without a model,
    ``input_names`` (several) names the inputs (a descriptor's).

    Example:
        >>> (x, y), (xt, yt) = load_data("two.npz", model=two_input_model)
    """
    from tfcomp import data
    from tfcomp._batches import is_multi

    if spec is None:
        if required:
            raise CLIError("this command needs --data fashion-mnist|FILE.npz")
        return None
    names = model_input_names(model) if is_multi(model) else (
        list(input_names) if model is None and input_names is not None
        and len(input_names) > 1 else None)
    if spec in ("fashion-mnist", "fashion_mnist"):
        if names is not None:
            raise CLIError(
                f"--data {spec} is single-input images, but the model has "
                f"{len(names)} inputs ({', '.join(names)}); give an .npz "
                "with x_train_<input name> and x_test_<input name> per "
                "input, y_train and y_test")
        loader, args = data.load_fashion_mnist, ()
    elif spec.endswith(".npz"):
        if not os.path.isfile(spec):
            raise CLIError(f"data file not found: {spec!r}")
        _check_zip(spec, "data file", ".npz")
        loader, args = data.load_npz, (spec, names)
    else:
        raise CLIError("--data must be 'fashion-mnist' or a path ending in "
                       f".npz. Received: {spec!r}")
    info(f"loading data {spec}")
    try:
        (x, y), (xt, yt) = loader(*args)
    except Exception as e:  # noqa: BLE001 - any unreadable data is input
        raise CLIError(f"cannot read data {spec!r}: {e}") from e
    _check_inputs(spec, model, names, x, y, xt, yt)
    y = labels(y, "y_train", spec, model)
    yt = labels(yt, "y_test", spec, model)
    return (x, y), (xt, yt)


def model_input_names(model) -> list:
    """The InputLayer names of a multi-input ``model`` (the ``.npz`` keys'
    suffixes, ``x_train_<name>``)."""
    from tfcomp._batches import input_names

    names = input_names(model) or [getattr(t, "name", None)
                                   for t in model.inputs]
    if not all(names) or len(set(names)) != len(names):
        raise CLIError(f"model {model.name!r} has {len(model.inputs)} "
                       f"inputs without distinct names ({names}); --data "
                       "needs them to find x_train_<input name>")
    return [str(n) for n in names]


def _check_inputs(spec: str, model, names, x, y, xt, yt) -> None:
    """Inputs and labels of one length per split (> 0 for training),
    finite inputs and, with ``model``, each input's shape against its
    model input (``names``: a multi-input model's, else None)."""
    import numpy as np

    tensors = list(model.inputs) if model is not None else []
    inputs, lengths = [], {}  # (key, array, input index); split: {key: n}
    for split, xs, ys in (("train", x, y), ("test", xt, yt)):
        arrays = [xs] if names is None else list(xs)
        keys = [f"x_{split}"] if names is None else [
            f"x_{split}_{n}" for n in names]
        inputs += [(k, a, i) for i, (k, a) in enumerate(zip(keys, arrays))]
        lengths[split] = {k: len(a) for k, a in zip(keys, arrays)}
        lengths[split][f"y_{split}"] = len(ys)
    if any(len(set(v.values())) != 1 for v in lengths.values()) or (
            lengths["train"]["y_train"] == 0):
        raise CLIError(
            f"data {spec!r}: x/y lengths must match and be > 0. Received: "
            + ", ".join(f"{k} {n}" for v in lengths.values()
                        for k, n in v.items()))
    for key, arr, _ in inputs:
        bad = arr.size - int(np.count_nonzero(np.isfinite(arr)))
        if bad:
            raise CLIError(f"data {spec!r}: {key} holds {bad:,} non-finite"
                           " values (NaN or inf)")
    for key, arr, i in inputs if tensors else ():
        want, got = tuple(tensors[i].shape[1:]), tuple(arr.shape[1:])
        if len(got) != len(want) or any(
                w is not None and w != g for w, g in zip(want, got)):
            what = (f"{key} images have" if names is None else
                    f"{key} has per-sample")
            to = "" if names is None else f" for its input {names[i]!r}"
            raise CLIError(f"data {spec!r}: {what} shape {got} but the "
                           f"model expects {want}{to}")


POLICY_BITS = (*range(1, 9), 16, 32)


def read_policy(path: str) -> dict:
    """``{layer: (w_bits, a_bits)}`` from a JSON policy file; bits are
    integers in [1, 8], 16 or 32 (float)."""
    from tfcomp._io import read_json

    if not os.path.exists(path):
        raise CLIError(f"policy file not found: {path!r}")
    try:
        doc = read_json(path, "policy")
    except ValueError as e:
        raise CLIError(str(e)) from e
    if isinstance(doc, dict) and isinstance(doc.get("policy"), dict):
        doc = doc["policy"]
    if not isinstance(doc, dict) or not doc:
        raise CLIError(f"policy {path!r} must be a non-empty JSON object "
                       "{layer: [w_bits, a_bits]}")
    out = {}
    for name, v in doc.items():
        if isinstance(v, int) and not isinstance(v, bool):
            v = [v, v]
        if (not isinstance(v, list) or len(v) != 2 or not all(
                isinstance(b, int) and not isinstance(b, bool)
                and b in POLICY_BITS for b in v)):
            raise CLIError(f"policy {path!r}: layer {name!r} must map to "
                           "[w_bits, a_bits], each an integer in [1, 8], 16 "
                           f"or 32. Received: {v!r}")
        out[str(name)] = (v[0], v[1])
    return out


def check_policy_layers(policy: dict, model, path: str) -> None:
    """Raises ``CLIError`` naming the policy's layers that are not in
    ``model`` (names as in ``tfcomp profile``: ``outer/inner`` or bare)."""
    from tfcomp.graph.walk import iter_leaf_layers

    names = set()
    for p, layer in iter_leaf_layers(model):
        names.update((p, layer.name))
    unknown = sorted(set(policy) - names)
    if unknown:
        more = f" and {len(unknown) - 8} more" if len(unknown) > 8 else ""
        raise CLIError(f"policy {path!r} names layer(s) that are not in the "
                       f"model: {unknown[:8]}{more}")


def label_path(text: str, flag: str) -> tuple[str, str]:
    """``LABEL=PATH`` (or ``PATH``, labelled by its stem) -> (label, path)."""
    if "=" in text:
        label, path = text.split("=", 1)
    else:
        path = text
        label = os.path.splitext(os.path.basename(path))[0]
    if not label or not path:
        raise CLIError(f"{flag} must be LABEL=PATH. Received: {text!r}")
    return label, path


def hardware_model(spec: str):
    """A HardwareModel from a name or a LatencyTable JSON path
    (``tfcomp.hardware.get_hardware``)."""
    from tfcomp.hardware import get_hardware

    try:
        return get_hardware(spec, "--hardware")
    except FileNotFoundError as e:
        raise CLIError(f"latency table not found: {spec!r}") from e
    except (ValueError, OSError) as e:
        if not spec.endswith(".json"):
            raise CLIError(f"--hardware must be one of {', '.join(HARDWARE)}"
                           f" or a latency table .json. Received: {spec!r}"
                           ) from e
        raise CLIError(f"cannot read latency table {spec!r}: {e}") from e


# ------------------------------------------------------------ models


def predict_logits(model, x):
    """The model's outputs on ``x`` (an array, or a list of arrays for a
    model with several inputs) as a ``(samples, -1)`` numpy array."""
    import numpy as np

    from tfcomp._batches import as_model_input, rows

    return np.asarray(model.predict(as_model_input(model, x), batch_size=256,
                                    verbose=0)).reshape(
        rows(x), -1)


def fit(model, x, y, epochs: int, lr: float, batch_size: int,
        steps: int | None = None) -> None:
    """Fine-tunes with Adam and the Keras progress bar (the loss: ``loss_for``).

    Raises:
        FloatingPointError: training left NaN / inf in the weights (the
            caller has saved nothing yet).
    """
    import keras
    import numpy as np

    from tfcomp._unpinned import unpinned

    loss, metrics = loss_for(model, y)
    model.compile(optimizer=unpinned(keras.optimizers.Adam(lr)), loss=loss,
                  metrics=metrics)
    history = model.fit(x, y, batch_size=batch_size, epochs=epochs,
                        steps_per_epoch=steps, verbose=verbosity())
    bad = [w.path for w in model.weights if not np.all(np.isfinite(
        keras.ops.convert_to_numpy(w)))]
    losses = np.asarray(history.history.get("loss", []), dtype=float)
    if bad or not np.all(np.isfinite(losses)):
        more = f" and {len(bad) - 4} more" if len(bad) > 4 else ""
        what = (f"left NaN or inf in the weights ({', '.join(bad[:4])}"
                f"{more})" if bad else f"diverged (loss {losses.tolist()})")
        raise FloatingPointError(
            f"fine-tuning with --lr {lr:g} {what}; nothing was saved. Try "
            "a smaller --lr.")


# ------------------------------------------------------------ argparse types


def _parse(text: str, convert, expected: str):
    """``convert(text)``; a ``ValueError`` becomes the argparse error
    ``{expected}. Received: '{text}'``."""
    try:
        return convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{expected}. Received: {text!r}") from None


def ratio(text: str) -> float:
    """An argparse type: a number in [0, 1)."""
    v = _parse(text, float, "must be a number in [0, 1)")
    if not 0.0 <= v < 1.0 or math.isnan(v):
        raise argparse.ArgumentTypeError(
            f"must be in [0, 1). Received: {text}")
    return v


def fractions(text: str) -> tuple:
    """An argparse type: comma-separated numbers in (0, 1]."""
    out = _parse(text, lambda t: tuple(float(v) for v in t.split(",")),
                 "must be comma-separated numbers in (0, 1]")
    if not out or any(not 0 < f <= 1 for f in out):
        raise argparse.ArgumentTypeError(
            f"fractions must be in (0, 1]. Received: {text!r}")
    return out


def shape(text: str) -> tuple:
    """An argparse type: comma-separated sizes > 0 (``256,256,3``)."""
    out = _parse(text, lambda t: tuple(int(v) for v in t.split(",")),
                 "must be comma-separated integers (e.g. 256,256,3)")
    if not out or any(d < 1 for d in out):
        raise argparse.ArgumentTypeError(
            f"sizes must be integers >= 1. Received: {text!r}")
    return out


def int_in(lo: int, hi: int | None = None):
    """An argparse type: an integer in [lo, hi] (no upper bound if None)."""
    what = "an integer" if hi is None else f"an integer in [{lo}, {hi}]"

    def parse(text: str) -> int:
        v = _parse(text, int, f"must be {what}")
        if v < lo or (hi is not None and v > hi):
            bound = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
            raise argparse.ArgumentTypeError(
                f"must be {bound}. Received: {v}")
        return v

    return parse


positive_int = int_in(1)
nonneg_int = int_in(0)
bits = int_in(1, 8)


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0 (learning rates, budgets)."""
    v = _parse(text, float, "must be a number > 0")
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(
            f"must be a finite number > 0. Received: {text}")
    return v


def _bit_range(text: str) -> list:
    if "-" in text:
        lo, hi = (int(v) for v in text.split("-"))
        return list(range(lo, hi + 1))
    return [int(v) for v in text.split(",")]


def bits_list(text: str) -> list:
    """An argparse type: ``"2-8"`` or ``"2,4,8"`` -> list of ints in [1, 8]."""
    out = _parse(text, _bit_range, "must look like 2-8 or 2,4,8")
    if not out or any(not 1 <= b <= 8 for b in out):
        raise argparse.ArgumentTypeError(
            f"bits must be in [1, 8]. Received: {text!r}")
    return out
