"""Test-wide settings and shared fixtures.

Settings: quiet TensorFlow, Keras on the TF backend, no GPU, a fixed seed
before every test and a cleared Keras session after it.

Fixtures (tiny user-style models and data, for every test file to reuse):

* ``sequential_cnn``: the keras.io MNIST convnet (Sequential: Conv2D,
  MaxPooling2D, Flatten, Dropout, softmax Dense), narrow;
* ``residual_model``: a functional model with a residual ``Add`` and
  BatchNorm (the coupled-channel case);
* ``separable_model``: depthwise and separable convolutions;
* ``conv1d_model``: Conv1D over sequences;
* ``synthetic_data``: ``(x, y)`` images for these models (fixed seed);
* ``tiny_models``: the builders themselves (``tiny_models.residual(
  input_shape=(12, 12, 1), width=12)``) and ``tiny_models.data(...)``,
  for other shapes and widths.

Example:
    def test_prunes(residual_model, synthetic_data):
        x, y = synthetic_data
        ...

Slow tests carry ``@pytest.mark.slow``; ``make test-fast`` skips them.
Tests of minutes also carry ``@pytest.mark.long``: they are collected
first (``pytest_collection_modifyitems``).
"""

import os
import types

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import gc  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow  # noqa: E402, F401

import tfcomp  # noqa: E402, F401

# TensorFlow's and Keras' module-level objects (~400k) live for the whole
# run: frozen, no gc.collect() but the periodic full one below walks them
# again (keras-tuner collects after every trial; a walk cost 0.2 s at
# start, 2-3 s later in a worker: 30 s for a 6-trial test that takes 0.1 s
# alone)
gc.collect()
gc.freeze()


def pytest_collection_modifyitems(config, items):
    """Long tests first: under ``-n 2`` the README test (~5 min), collected
    near the end, ran alone on one worker while the other sat idle."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


IMAGE_SHAPE = (16, 16, 1)
SEQUENCE_SHAPE = (32, 3)
NUM_CLASSES = 10


_TESTS_PER_GC = 25  # a full gc.collect() costs 1-2 s with TF's heap
_since_gc = [0]


@pytest.fixture(autouse=True)
def _seed_and_clear():
    keras.utils.set_random_seed(0)
    yield
    # clear_session() collects garbage by default: over half of the suite's
    # time was that collection after every test; collect every 25th
    _since_gc[0] += 1
    free = _since_gc[0] >= _TESTS_PER_GC
    if free:
        _since_gc[0] = 0
        gc.unfreeze()  # a full collection, then the survivors frozen again:
    keras.backend.clear_session(free_memory=free)
    if free:  # the collections in between (keras-tuner's after every trial:
        gc.freeze()  # 2-3 s each late in a worker) walk only newer objects


# ------------------------------------------------------------ model builders


def build_sequential_cnn(input_shape=IMAGE_SHAPE, num_classes=NUM_CLASSES,
                         width=8):
    """The keras.io MNIST convnet, ``width`` and ``2 * width`` filters."""
    L = keras.layers
    return keras.Sequential([
        keras.Input(input_shape),
        L.Conv2D(width, 3, activation="relu", name="conv1"),
        L.MaxPooling2D(2, name="pool1"),
        L.Conv2D(2 * width, 3, activation="relu", name="conv2"),
        L.MaxPooling2D(2, name="pool2"),
        L.Flatten(name="flatten"),
        L.Dropout(0.5, name="dropout"),
        L.Dense(num_classes, activation="softmax", name="predictions"),
    ], name="sequential_cnn")


def build_residual(input_shape=IMAGE_SHAPE, num_classes=NUM_CLASSES,
                   width=8):
    """Stem conv-BN-ReLU, one residual block (two convs + ``Add``), a
    strided conv, global average pooling and logits."""
    L = keras.layers
    inp = keras.Input(input_shape, name="input")
    x = L.Conv2D(width, 3, padding="same", use_bias=False, name="stem")(inp)
    x = L.ReLU(name="stem_relu")(L.BatchNormalization(name="stem_bn")(x))
    h = L.Conv2D(width, 3, padding="same", use_bias=False, name="b1_conv1")(x)
    h = L.ReLU(name="b1_relu1")(L.BatchNormalization(name="b1_bn1")(h))
    h = L.Conv2D(width, 3, padding="same", use_bias=False, name="b1_conv2")(h)
    h = L.BatchNormalization(name="b1_bn2")(h)
    x = L.ReLU(name="b1_out")(L.Add(name="b1_add")([x, h]))
    x = L.Conv2D(2 * width, 3, strides=2, padding="same", name="down")(x)
    x = L.ReLU(name="down_relu")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(num_classes, name="logits")(x)
    return keras.Model(inp, out, name="residual")


def build_separable(input_shape=IMAGE_SHAPE, num_classes=NUM_CLASSES,
                    width=8):
    """Conv, depthwise conv (+BN), pointwise conv, separable conv."""
    L = keras.layers
    inp = keras.Input(input_shape, name="input")
    x = L.Conv2D(width, 3, padding="same", activation="relu",
                 name="stem")(inp)
    x = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    x = L.ReLU(name="dw_relu")(L.BatchNormalization(name="dw_bn")(x))
    x = L.Conv2D(2 * width, 1, activation="relu", name="pw")(x)
    x = L.SeparableConv2D(2 * width, 3, padding="same", activation="relu",
                          name="sep")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(num_classes, name="logits")(x)
    return keras.Model(inp, out, name="separable")


def build_conv1d(input_shape=SEQUENCE_SHAPE, num_classes=NUM_CLASSES,
                 width=8):
    """Two Conv1D (+BN, ReLU) over sequences, pooling, logits."""
    L = keras.layers
    inp = keras.Input(input_shape, name="input")
    x = L.Conv1D(width, 3, padding="same", use_bias=False, name="c1")(inp)
    x = L.ReLU(name="c1_relu")(L.BatchNormalization(name="c1_bn")(x))
    x = L.Conv1D(2 * width, 3, padding="same", activation="relu",
                 name="c2")(x)
    x = L.GlobalAveragePooling1D(name="gap")(x)
    out = L.Dense(num_classes, name="logits")(x)
    return keras.Model(inp, out, name="conv1d")


def make_data(input_shape=IMAGE_SHAPE, n=64, num_classes=NUM_CLASSES,
              seed=0):
    """``(x, y)``: float32 inputs uniform in [0, 1), int64 labels."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n, *input_shape)).astype("float32")
    y = rng.integers(0, num_classes, n).astype("int64")
    return x, y


_BUILDERS = types.SimpleNamespace(
    sequential_cnn=build_sequential_cnn, residual=build_residual,
    separable=build_separable, conv1d=build_conv1d, data=make_data,
    IMAGE_SHAPE=IMAGE_SHAPE, SEQUENCE_SHAPE=SEQUENCE_SHAPE)


# ------------------------------------------------------------ fixtures


@pytest.fixture
def tiny_models():
    """The model builders and ``data``, for other shapes and widths."""
    return _BUILDERS


@pytest.fixture
def sequential_cnn():
    """A fresh keras.io-style Sequential CNN on 16x16x1 images."""
    return build_sequential_cnn()


@pytest.fixture
def residual_model():
    """A fresh small residual functional model on 16x16x1 images."""
    return build_residual()


@pytest.fixture
def separable_model():
    """A fresh depthwise / separable model on 16x16x1 images."""
    return build_separable()


@pytest.fixture
def conv1d_model():
    """A fresh Conv1D model on (32, 3) sequences."""
    return build_conv1d()


@pytest.fixture
def synthetic_data():
    """64 images 16x16x1 with labels in [0, 10), seed 0."""
    return make_data()


@pytest.fixture
def synthetic_sequences():
    """64 sequences (32, 3) with labels in [0, 10), seed 0."""
    return make_data(SEQUENCE_SHAPE)
