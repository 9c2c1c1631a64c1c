"""Shared setup of the CLI tests: the files a ``tfcomp`` run reads.

Fixture ``cli_files`` (session-wide; module fixtures can use it) holds:

* ``data(d, shape, n, n_train, classes)``: writes ``d / "data.npz"``
  (``x_train``, ``y_train``, ``x_test``, ``y_test``; inputs uniform in
  [0, 1), seed 0) and returns all of ``(x, y)``;
* ``conv_model(path, shape, filters, classes, seed, c3_strides=1)``: saves
  three ReLU ``Conv2D`` (``c1``-``c3``), global average pooling and a
  ``Dense`` head ``fc`` (four quantizable layers) and returns ``path``.

Example:
    @pytest.fixture(scope="module")
    def tiny(tmp_path_factory, cli_files):
        d = tmp_path_factory.mktemp("q")
        cli_files.data(d, (10, 10, 1), n=40, n_train=32, classes=4)
        cli_files.conv_model(d / "model.keras", (10, 10, 1), (4, 6, 6), 4)
        return d
"""

import types

import keras
import numpy as np
import pytest


def write_data(d, shape, n, n_train, classes):
    """``d / "data.npz"``: the first ``n_train`` samples train, the rest
    test; returns ``(x, y)`` (all ``n``)."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (n,) + tuple(shape)).astype("float32")
    y = rng.integers(0, classes, n).astype("int64")
    np.savez(d / "data.npz", x_train=x[:n_train], y_train=y[:n_train],
             x_test=x[n_train:], y_test=y[n_train:])
    return x, y


def save_conv_model(path, shape, filters, classes, seed=0, c3_strides=1):
    """Saves ``c1``-``c3`` (3x3 ReLU convs, ``filters``), pooling and
    ``fc`` to ``path`` (weights from ``keras.utils.set_random_seed(seed)``)."""
    keras.utils.set_random_seed(seed)
    L = keras.layers
    inp = keras.Input(shape)
    h = L.Conv2D(filters[0], 3, activation="relu", name="c1")(inp)
    h = L.Conv2D(filters[1], 3, activation="relu", name="c2")(h)
    h = L.Conv2D(filters[2], 3, strides=c3_strides, activation="relu",
                 name="c3")(h)
    h = L.GlobalAveragePooling2D()(h)
    keras.Model(inp, L.Dense(classes, name="fc")(h)).save(path)
    return path


@pytest.fixture(scope="session")
def cli_files():
    """``data`` and ``conv_model``, the writers above."""
    return types.SimpleNamespace(data=write_data, conv_model=save_conv_model)
