"""Soft pruning through layers whose per-channel weights keep a zero
channel zero (PReLU's alpha): no channel mask needed, the group is pruned.

A user model with ``PReLU`` after its convs (older keras.io / GAN-style
CNNs) was left whole by FPGM before: the group held a weighted layer with
no masked twin.
"""

import warnings

import keras
import numpy as np
import pytest

import tfcomp
from tfcomp.pruning import (
    FPGMPruning,
    PruningNet,
    apply_fpgm,
    apply_magnitude_pruning,
    make_plan,
    prune_channels,
    strip_pruning,
)

L = keras.layers


def prelu_cnn(shared_axes=(1, 2)):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 3))
    x = L.Conv2D(8, 3, padding="same")(inputs)
    x = L.PReLU(shared_axes=list(shared_axes) if shared_axes else None)(x)
    x = L.Conv2D(16, 3, strides=2, padding="same")(x)
    x = L.PReLU(shared_axes=[1, 2])(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, L.Dense(4)(x))


@pytest.mark.parametrize("shared_axes", [(1, 2), None])
def test_fpgm_prunes_through_prelu(shared_axes):
    model = prelu_cnn(shared_axes)
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(16, 12, 12, 3)).astype("float32")
    y = rng.integers(0, 4, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "stay plain" warning
        soft = apply_fpgm(model)
    soft.compile("adam", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    cb = FPGMPruning(ratio=0.5)
    soft.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[cb])
    assert len(cb.keep) == 2, cb.skipped  # both conv groups managed
    small = strip_pruning(soft)
    np.testing.assert_allclose(small.predict(x, verbose=0),
                               soft.predict(x, verbose=0), atol=1e-5)
    plan_macs = tfcomp.profile(prune_channels(
        model, make_plan(model, ratio=0.5))).macs
    assert tfcomp.profile(small).macs == plan_macs


def test_magnitude_pruning_names_no_prelu():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        apply_magnitude_pruning(prelu_cnn())


def test_pruning_net_without_prunable_group_is_clear():
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3)(inputs)
    x = L.UnitNormalization()(x)  # no channel handler: a barrier
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(4)(x), name="barred")
    with pytest.raises(ValueError, match="'barred' has no prunable channel"):
        PruningNet(model)
