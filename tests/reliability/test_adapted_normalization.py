"""An adapted ``keras.layers.Normalization`` survives every model copy.

Its mean and variance are tensors made from its variables when it is built
or loaded (``finalize_state``); a copy whose variables are assigned must
refresh them (``tfcomp.graph.copy.refresh_state``), or it normalises with
mean 0 / variance 1 (outputs 160x off, measured).
"""

import keras
import numpy as np

import tfcomp
from tfcomp.graph.copy import clone_model, copy_weights
from tfcomp.pruning import (
    PruningNet,
    apply_gal,
    make_plan,
    mask_channels,
    prune_channels,
    set_width,
    strip_pruning,
    to_slimmable,
)

L = keras.layers


def _model_and_data():
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).uniform(0, 255, (16, 12, 12, 3)).astype(
        "float32")
    norm = L.Normalization()
    norm.adapt(x)
    inputs = keras.Input((12, 12, 3))
    h = L.Conv2D(8, 3, activation="relu")(norm(inputs))
    h = L.Conv2D(8, 3, activation="relu")(h)
    outputs = L.Dense(4)(L.GlobalAveragePooling2D()(h))
    return keras.Model(inputs, outputs), x


def _rel(a, b):
    a, b = keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b)
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_copies_keep_the_adapted_statistics():
    model, x = _model_and_data()
    ref = model(x)
    twin = clone_model(model)
    copy_weights(model, twin)
    assert _rel(twin(x), ref) < 1e-5
    plan = make_plan(model, ratio=0.5)
    assert _rel(prune_channels(model, plan)(x), mask_channels(model, plan)(x)
                ) < 1e-5
    assert _rel(prune_channels(model, make_plan(model, ratio=0.0))(x),
                ref) < 1e-5
    slim = to_slimmable(model, widths=(0.5, 1.0))
    set_width(slim, 1.0)
    assert _rel(slim(x), ref) < 1e-5
    student = apply_gal(model)
    assert _rel(student(x), ref) < 1e-5
    assert _rel(strip_pruning(student)(x), ref) < 1e-5
    q = tfcomp.quantization.quantize_model(model)
    tfcomp.quantization.calibrate(q, x)
    assert _rel(q(x), ref) < 0.05  # 8-bit rounding only


def test_pruningnet_sample_keeps_the_adapted_statistics():
    model, x = _model_and_data()
    net = PruningNet(model)
    widths = dict(net.sizes)
    small = net.sample(widths, x, steps=1)
    net.set_widths(widths)
    assert _rel(small(x), net(x)) < 1e-4
