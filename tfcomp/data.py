"""Dataset loaders that read local files only (no downloads at run time).

Fashion-MNIST comes from Debian's package ``dataset-fashion-mnist``
(``apt-get install dataset-fashion-mnist``), which installs the original
IDX files under ``/usr/share/datasets/fashion-mnist/``.

Example:
    >>> (x, y), (x_test, y_test) = tfcomp.data.load_fashion_mnist()
    >>> x.shape, x.dtype
    ((60000, 28, 28, 1), dtype('float32'))
"""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np

__all__ = ["load_fashion_mnist", "load_npz", "FASHION_MNIST_DIR",
           "FASHION_MNIST_CLASSES"]

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
    "Sneaker", "Bag", "Ankle boot",
)
_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def _find(directory: str, stem: str) -> str | None:
    for name in (stem + ".gz", stem):
        p = os.path.join(directory, name)
        if os.path.isfile(p):
            return p
    return None


def _read_idx(path: str) -> np.ndarray:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4:
        raise ValueError(f"IDX file {path!r} is truncated ({len(data)} B).")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(
            f"{path!r} is not an unsigned-byte IDX file "
            f"(magic {data[:4].hex()}).")
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(
            f"IDX file {path!r} holds {body.size} values, header says "
            f"{dims}.")
    return body.reshape(dims)


def load_fashion_mnist(path: str | None = None):
    """Loads Fashion-MNIST from local IDX files.

    Looks in ``path`` if given, else ``$TFCOMP_DATA``, else the Debian
    location ``/usr/share/datasets/fashion-mnist``.

    Args:
        path: directory holding the four IDX files (``.gz`` or plain).

    Returns:
        ``((x_train, y_train), (x_test, y_test))``: images float32 in
        [0, 1] with shape ``(N, 28, 28, 1)``, labels int64.

    Raises:
        FileNotFoundError: naming the directory searched and the Debian
            package that provides the files.

    Example:
        >>> (x, y), (xt, yt) = load_fashion_mnist()
    """
    directory = path or os.environ.get("TFCOMP_DATA") or FASHION_MNIST_DIR
    found = {k: _find(directory, stem) for k, stem in _FILES.items()}
    missing = [_FILES[k] for k, v in found.items() if v is None]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST files not found in {directory!r} (missing: "
            f"{', '.join(missing)}). Install them with "
            "`apt-get install dataset-fashion-mnist` (Debian package; files go "
            f"to {FASHION_MNIST_DIR}), or pass path=... / set TFCOMP_DATA to "
            "a directory holding the IDX files.")
    arrays = {k: _read_idx(v) for k, v in found.items()}
    def images(a):
        return (a.astype(np.float32) / 255.0)[..., None]
    return ((images(arrays["x_train"]), arrays["y_train"].astype(np.int64)),
            (images(arrays["x_test"]), arrays["y_test"].astype(np.int64)))


def load_npz(path: str, input_names=None):
    """Loads ``((x_train, y_train), (x_test, y_test))`` from an ``.npz`` file.

    The file must hold arrays named ``x_train``, ``y_train``, ``x_test`` and
    ``y_test``; images are returned as float32. For a model with several
    inputs, pass their InputLayer ``input_names``: the file then holds one
    ``x_train_<name>`` and one ``x_test_<name>`` per name (plus ``y_train``,
    ``y_test``), and ``x_train`` / ``x_test`` come back as lists of float32
    arrays in the order of ``input_names``.

    Raises:
        BadInputError: a missing array (named, with what the file holds) or
            an unreadable file.

    Example:
        >>> (x, y), (xt, yt) = load_npz("my_data.npz")
        >>> (xs, y), _ = load_npz("two.npz", input_names=["image", "meta"])
        >>> [a.shape for a in xs]  # x_train_image, x_train_meta
        [(100, 12, 12, 3), (100, 6)]
    """
    from tfcomp._io import BadInputError

    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such .npz file: {path!r}")
    names = None if input_names is None else [str(n) for n in input_names]
    if names is None:
        keys = {"x_train": ["x_train"], "x_test": ["x_test"]}
    else:
        keys = {split: [f"{split}_{n}" for n in names]
                for split in ("x_train", "x_test")}
    wanted = [*keys["x_train"], "y_train", *keys["x_test"], "y_test"]
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in wanted if k not in f.files]
            if missing:
                per_input = "" if names is None else (
                    " (a model with inputs " + ", ".join(names)
                    + " needs one x_train_<input name> and one "
                    "x_test_<input name> array per input)")
                raise BadInputError(
                    f"{path!r} lacks arrays {missing}{per_input}; it holds "
                    f"{f.files}.")
            xs = {s: [f[k].astype(np.float32) for k in ks]
                  for s, ks in keys.items()}
            if names is None:
                xs = {s: v[0] for s, v in xs.items()}
            return ((xs["x_train"], f["y_train"]),
                    (xs["x_test"], f["y_test"]))
    except BadInputError:
        raise
    except Exception as e:  # BadZipFile, truncated member, object arrays
        raise BadInputError(
            f"{path!r} is not a readable .npz file of arrays: "
            f"{type(e).__name__}: {e}") from e


def load(name_or_path: str):
    """Loads a dataset by name (``"fashion-mnist"``) or from an ``.npz`` path.

    Example:
        >>> (x, y), (xt, yt) = tfcomp.data.load("fashion-mnist")
    """
    if name_or_path in ("fashion-mnist", "fashion_mnist", "fmnist"):
        return load_fashion_mnist()
    if name_or_path.endswith(".npz"):
        return load_npz(name_or_path)
    raise ValueError(
        "data must be 'fashion-mnist' or a path to an .npz file. "
        f"Received: {name_or_path!r}")
