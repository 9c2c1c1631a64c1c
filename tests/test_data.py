import gzip
import os
import struct

import numpy as np
import pytest

from tfcomp import data


def _write_idx(path, arr):
    header = struct.pack(">HBB", 0, 8, arr.ndim) + struct.pack(
        ">" + "I" * arr.ndim, *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def _fake_dataset(tmp_path, n=5):
    rng = np.random.default_rng(0)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz",
               rng.integers(0, 256, (n, 28, 28)))
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz",
               rng.integers(0, 10, (n,)))
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz",
               rng.integers(0, 256, (3, 28, 28)))
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz",
               rng.integers(0, 10, (3,)))


def test_load_from_path(tmp_path):
    _fake_dataset(tmp_path)
    (x, y), (xt, yt) = data.load_fashion_mnist(str(tmp_path))
    assert x.shape == (5, 28, 28, 1) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert y.dtype == np.int64 and xt.shape == (3, 28, 28, 1)


def test_load_from_env(tmp_path, monkeypatch):
    _fake_dataset(tmp_path)
    monkeypatch.setenv("TFCOMP_DATA", str(tmp_path))
    (x, _), _ = data.load_fashion_mnist()
    assert len(x) == 5


def test_missing_files_name_the_debian_package(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        data.load_fashion_mnist(str(tmp_path))


def test_corrupt_file_is_reported(tmp_path):
    _fake_dataset(tmp_path)
    with gzip.open(tmp_path / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(b"\x01\x02\x03\x04garbage")
    with pytest.raises(ValueError, match="IDX"):
        data.load_fashion_mnist(str(tmp_path))


def test_load_by_name_and_npz(tmp_path):
    path = str(tmp_path / "d.npz")
    np.savez(path, x_train=np.zeros((2, 4, 4, 1)), y_train=np.zeros(2),
             x_test=np.zeros((1, 4, 4, 1)), y_test=np.zeros(1))
    (x, _), (xt, _) = data.load(path)
    assert x.dtype == np.float32 and xt.shape == (1, 4, 4, 1)
    with pytest.raises(ValueError, match="Received"):
        data.load("imagenet")


@pytest.mark.skipif(not os.path.exists(data.FASHION_MNIST_DIR),
                    reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist():
    (x, y), (xt, yt) = data.load_fashion_mnist()
    assert x.shape == (60000, 28, 28, 1) and xt.shape == (10000, 28, 28, 1)
    assert set(np.unique(y)) == set(range(10))


def test_corrupt_npz_is_a_clear_error(tmp_path):
    import pytest

    from tfcomp._io import BadInputError
    from tfcomp.data import load_npz

    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(BadInputError, match="bad.npz"):
        load_npz(str(bad))
