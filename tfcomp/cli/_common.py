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
import json
import math
import os
import sys

__all__ = [
    "CLIError", "DATA_HELP", "HARDWARE", "set_quiet", "is_quiet", "info",
    "warn", "verbosity", "check_output", "write_text", "load_model",
    "save_model", "load_data", "predict_logits", "evaluate", "fit",
    "hardware_model", "read_policy", "label_path", "ratio", "fractions",
    "int_in", "positive_int", "nonneg_int", "bits", "bits_list",
]

HARDWARE = ("bitfusion-edge", "bitfusion-server", "bismo")
DATA_HELP = "fashion-mnist or FILE.npz (x_train, y_train, x_test, y_test)"
_STATE = {"quiet": False}


class CLIError(Exception):
    """An error reported to the user as one line (exit code 2)."""


# ------------------------------------------------------------ messages


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


def check_output(path: str, suffix: str, what: str = "output") -> None:
    """Raises ``CLIError`` unless ``path`` ends in ``suffix``."""
    if not path.endswith(suffix):
        raise CLIError(f"{what} must end in {suffix}. Received: {path!r}")


def write_text(path: str, text: str) -> None:
    """Writes ``text`` atomically and prints ``wrote PATH``."""
    from tfcomp._io import atomic_write_text

    atomic_write_text(path, text)
    print(f"wrote {path}")


def load_model(path: str):
    """Loads a ``.keras`` file (tfcomp's layers registered)."""
    if not os.path.isfile(path):
        raise CLIError(f"model file not found: {path!r}")
    if not path.endswith(".keras"):
        raise CLIError(f"model must be a .keras file. Received: {path!r}")
    import keras

    import tfcomp.layers  # noqa: F401  (registers tfcomp's layers)

    info(f"loading {path}")
    try:
        return keras.saving.load_model(path)
    except Exception as e:  # corrupt zip, unknown layer, ...
        raise CLIError(f"cannot load model {path!r}: "
                       f"{type(e).__name__}: {e}") from e


def save_model(model, path: str) -> None:
    """Saves ``model`` atomically to a ``.keras`` path; prints ``wrote``."""
    from tfcomp._io import atomic_save_keras

    check_output(path, ".keras", "output model")
    atomic_save_keras(model, path)
    print(f"wrote {path}")


def load_data(spec: str | None, required: bool = True, model=None):
    """``((x, y), (x_test, y_test))`` from ``fashion-mnist`` or a ``.npz``.

    Labels come back int64; with ``model``, image shapes are checked
    against its input. ``None`` when ``spec`` is None and not ``required``.
    """
    from tfcomp import data

    if spec is None:
        if required:
            raise CLIError("this command needs --data fashion-mnist|FILE.npz")
        return None
    if spec in ("fashion-mnist", "fashion_mnist"):
        loader, args = data.load_fashion_mnist, ()
    elif spec.endswith(".npz"):
        if not os.path.isfile(spec):
            raise CLIError(f"data file not found: {spec!r}")
        loader, args = data.load_npz, (spec,)
    else:
        raise CLIError("--data must be 'fashion-mnist' or a path ending in "
                       f".npz. Received: {spec!r}")
    info(f"loading data {spec}")
    try:
        (x, y), (xt, yt) = loader(*args)
    except (FileNotFoundError, ValueError, OSError) as e:
        raise CLIError(str(e)) from e
    import numpy as np

    y, yt = np.asarray(y).astype("int64"), np.asarray(yt).astype("int64")
    if len(x) != len(y) or len(xt) != len(yt) or len(x) == 0:
        raise CLIError(
            f"data {spec!r}: x/y lengths must match and be > 0. Received: "
            f"x_train {len(x)}, y_train {len(y)}, x_test {len(xt)}, "
            f"y_test {len(yt)}")
    if model is not None:
        want = tuple(model.inputs[0].shape[1:])
        for name, arr in (("x_train", x), ("x_test", xt)):
            got = tuple(arr.shape[1:])
            if len(got) != len(want) or any(
                    w is not None and w != g for w, g in zip(want, got)):
                raise CLIError(
                    f"data {spec!r}: {name} images have shape {got} but "
                    f"the model expects {want}")
    return (x, y), (xt, yt)


def read_policy(path: str) -> dict:
    """``{layer: (w_bits, a_bits)}`` from a JSON policy file."""
    if not os.path.isfile(path):
        raise CLIError(f"policy file not found: {path!r}")
    try:
        with open(path) as f:
            doc = json.load(f)
    except json.JSONDecodeError as e:
        raise CLIError(f"policy {path!r} is not valid JSON: {e}") from e
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
                isinstance(b, int) and not isinstance(b, bool) for b in v)):
            raise CLIError(f"policy {path!r}: layer {name!r} must map to "
                           f"[w_bits, a_bits]. Received: {v!r}")
        out[str(name)] = (v[0], v[1])
    return out


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
    """A HardwareModel from a name or a LatencyTable JSON path."""
    from tfcomp import hardware

    if spec == "bismo":
        return hardware.BISMO()
    if spec in ("bitfusion", "bitfusion-edge"):
        return hardware.BitFusion("edge")
    if spec == "bitfusion-server":
        return hardware.BitFusion("server")
    if spec.endswith(".json"):
        if not os.path.isfile(spec):
            raise CLIError(f"latency table not found: {spec!r}")
        try:
            return hardware.LatencyTable.load(spec)
        except (ValueError, OSError) as e:
            raise CLIError(f"cannot read latency table {spec!r}: {e}") from e
    raise CLIError(f"--hardware must be one of {', '.join(HARDWARE)} or a "
                   f"latency table .json. Received: {spec!r}")


# ------------------------------------------------------------ models


def predict_logits(model, x):
    """The model's outputs on ``x`` as a ``(len(x), -1)`` numpy array."""
    import numpy as np

    return np.asarray(model.predict(x, batch_size=256, verbose=0)).reshape(
        len(x), -1)


def evaluate(model, x, y) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)``."""
    import numpy as np

    return float(np.mean(predict_logits(model, x).argmax(-1) == y))


def _from_logits(model) -> bool:
    act = getattr(model.layers[-1], "activation", None)
    return getattr(act, "__name__", "") != "softmax"


def fit(model, x, y, epochs: int, lr: float, batch_size: int,
        steps: int | None = None) -> None:
    """Fine-tunes with Adam and the Keras progress bar."""
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=_from_logits(model)),
        metrics=["accuracy"])
    model.fit(x, y, batch_size=batch_size, epochs=epochs,
              steps_per_epoch=steps, verbose=verbosity())


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
