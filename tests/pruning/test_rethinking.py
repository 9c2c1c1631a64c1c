"""Rethinking the value of pruning: Scratch-E / Scratch-B setups."""

import keras
import numpy as np
import pytest

import tfcomp
from tfcomp.pruning.fpgm import FPGMPruning
from tfcomp.pruning.rethinking import (
    LearningRateDrops,
    scratch_epochs,
    scratch_setup,
)
from tfcomp.pruning.wrappers import apply_fpgm, strip_pruning


def test_scratch_b_epoch_formula():
    assert scratch_epochs(10, "B", dense_macs=100, pruned_macs=45) == 22
    assert scratch_epochs(10, "B", dense_macs=100, pruned_macs=50) == 20
    assert scratch_epochs(7, "B", dense_macs=300, pruned_macs=100) == 21
    assert scratch_epochs(10, "B", 100, 30, max_epoch_factor=2) == 20
    assert scratch_epochs(10, "E") == 10
    with pytest.raises(ValueError, match="dense_macs"):
        scratch_epochs(10, "B")
    with pytest.raises(ValueError, match="mode must be"):
        scratch_epochs(10, "C")
    with pytest.raises(ValueError, match="base_epochs"):
        scratch_epochs(0, "E")


def _pruned_pair():
    dense = tfcomp.zoo.resnet(depth=8, width=8)
    masked = apply_fpgm(dense)
    cb = FPGMPruning(ratio=0.5)
    cb.set_model(masked)
    cb.update_masks()
    return dense, masked, strip_pruning(masked)


def test_scratch_model_shares_no_weights_and_keeps_architecture():
    dense, masked, small = _pruned_pair()
    setup = scratch_setup(small, mode="B", base_epochs=4, dense_macs=dense, seed=3)
    fresh = setup.model
    assert setup.macs == tfcomp.profile(small).macs
    assert setup.dense_macs == tfcomp.profile(dense).macs
    assert setup.epochs == int(np.floor(4 * setup.dense_macs / setup.macs))
    assert setup.epochs >= 8
    ids = {id(v) for v in small.weights}
    assert not any(id(v) in ids for v in fresh.weights)
    assert [tuple(v.shape) for v in fresh.weights] == \
        [tuple(v.shape) for v in small.weights]
    for a, b in zip(small.weights, fresh.weights):
        if "kernel" in a.name:
            assert not np.allclose(keras.ops.convert_to_numpy(a),
                                   keras.ops.convert_to_numpy(b))
    # a masked model is stripped first: same compact architecture
    setup_e = scratch_setup(masked, mode="E", base_epochs=4)
    assert setup_e.epochs == 4
    assert [tuple(v.shape) for v in setup_e.model.weights] == \
        [tuple(v.shape) for v in small.weights]


def test_learning_rate_drops_at_half_and_three_quarters():
    drops = LearningRateDrops(8, base_lr=0.1)
    assert drops.drop_epochs == [4, 6]
    lrs = [drops.lr_at(e) for e in range(8)]
    np.testing.assert_allclose(lrs, [0.1] * 4 + [0.01] * 2 + [0.001] * 2)

    inp = keras.Input((3,))
    model = keras.Model(inp, keras.layers.Dense(1)(inp))
    model.compile(keras.optimizers.SGD(0.2), "mse", run_eagerly=True)
    cb = LearningRateDrops(4)
    hist = model.fit(np.ones((4, 3)), np.ones((4, 1)), epochs=4, verbose=0,
                     callbacks=[cb])
    np.testing.assert_allclose(hist.history["learning_rate"],
                               [0.2, 0.2, 0.02, 0.002], rtol=1e-6)
    setup_sched = scratch_setup(model, "E", base_epochs=4).lr_schedule(0.2, 10)
    assert float(setup_sched(25)) == pytest.approx(0.02)


def test_scratch_errors():
    with pytest.raises(TypeError, match="keras.Model"):
        scratch_setup("small.keras")
    model = tfcomp.zoo.resnet(depth=8, width=8)
    with pytest.raises(ValueError, match="mode must be"):
        scratch_setup(model, mode="X")
    with pytest.raises(ValueError, match="dense_macs"):
        scratch_setup(model, mode="B", base_epochs=3, dense_macs=-5)
