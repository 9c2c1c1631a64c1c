"""Tiny binary models and data shared by test_benn.py and
test_benn_distributed.py (``tests/binary`` is on ``sys.path``: pytest puts
the directory of a test file outside a package there).

Example:
    from _binary_models import binary_member, xy

    x, y = xy(48)
    m = binary_member()              # compiled: Adam(1e-2), no XLA
"""

import keras
import numpy as np

from tfcomp.binary import binary_net

INPUT_SHAPE = (8, 8, 1)
NUM_CLASSES = 4


def xy(n=64, seed=0):
    """``n`` 8x8x1 images and 4 classes from the signs of two quadrant
    means (learnable by a tiny net)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *INPUT_SHAPE)).astype("float32")
    y = (x[:, :4].mean(axis=(1, 2, 3)) > 0).astype(int) + \
        2 * (x[:, :, :4].mean(axis=(1, 2, 3)) > 0).astype(int)
    return x, y


def binary_member(width=4, compiled=True):
    """``binary_net`` on ``xy``'s images; compiled with Adam(1e-2), logits
    cross entropy and no XLA compile (faster tests) unless ``compiled`` is
    False (BENN then compiles it with its default Adam(1e-3))."""
    m = binary_net(INPUT_SHAPE, NUM_CLASSES, width=width)
    if compiled:
        m.compile(keras.optimizers.Adam(1e-2),
                  keras.losses.SparseCategoricalCrossentropy(True),
                  jit_compile=False)
    return m
