"""strip_pruning(): masked training-time models -> plain deployable Keras models."""

import os
import warnings

import keras
import numpy as np
import pytest

import tfcomp
from tfcomp.layers.masked import MaskedLayer
from tfcomp.pruning.fpgm import FPGMPruning
from tfcomp.pruning.magnitude import MagnitudePruning
from tfcomp.pruning.wrappers import (
    apply_fpgm,
    apply_magnitude_pruning,
    has_pruning_state,
    strip_pruning,
)


def _x(n=8, shape=(28, 28, 1), seed=0):
    return np.random.default_rng(seed).normal(size=(n, *shape)).astype(
        "float32")


def _perturb_bn(model, seed=0):
    """Non-trivial BN statistics so equality checks mean something."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, c).astype("float32"))
            layer.beta.assign(rng.normal(0, 0.3, c).astype("float32"))
            layer.moving_mean.assign(rng.normal(0, 0.3, c).astype("float32"))
            layer.moving_variance.assign(
                rng.uniform(0.5, 2, c).astype("float32"))


def test_strip_fpgm_resnet_equals_masked_model():
    model = apply_fpgm(tfcomp.zoo.resnet(depth=8, width=8))
    _perturb_bn(model)
    cb = FPGMPruning(ratio=0.5)
    cb.set_model(model)
    cb.update_masks()
    x = _x()
    small = strip_pruning(model)
    assert not has_pruning_state(small)
    assert not any(isinstance(lyr, MaskedLayer) for lyr in small.layers)
    np.testing.assert_allclose(small(x), model(x), atol=1e-5)
    np.testing.assert_allclose(small(x, training=False),
                               model(x, training=False), atol=1e-5)
    assert small.get_layer("s3b1_conv1").kernel.shape[-1] == 16
    assert small.count_params() < 0.5 * model.count_params()
    assert tfcomp.profile(small).macs == cb.history[-1]["macs"]


def test_strip_after_keras_round_trip(tmp_path):
    model = apply_fpgm(tfcomp.zoo.resnet(depth=8, width=8))
    _perturb_bn(model, 1)
    cb = FPGMPruning(ratio=0.25, criterion="l2")
    cb.set_model(model)
    cb.update_masks()
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = _x(seed=1)
    np.testing.assert_allclose(strip_pruning(loaded)(x), model(x), atol=1e-5)


def test_strip_magnitude_gives_plain_layers_with_zeros():
    base = tfcomp.zoo.resnet(depth=8, width=8)
    model = apply_magnitude_pruning(base)
    cb = MagnitudePruning(0.7)
    cb.set_model(model)
    cb.update_masks(0.7)
    plain = strip_pruning(model)
    x = _x()
    np.testing.assert_allclose(plain(x), model(x), atol=1e-5)
    for name in ("stem_conv", "s2b1_conv2", "logits"):
        layer = plain.get_layer(name)
        assert type(layer) is type(base.get_layer(name))
        k = keras.ops.convert_to_numpy(layer.kernel)
        mask = keras.ops.convert_to_numpy(model.get_layer(name).kernel_mask)
        np.testing.assert_array_equal(k == 0, mask == 0)
        assert np.mean(k == 0) == pytest.approx(0.7, abs=0.01)
    assert plain.count_params() == base.count_params()


def test_strip_without_pruning_state_returns_model_with_note(caplog):
    model = tfcomp.zoo.resnet(depth=8, width=8)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out = strip_pruning(model)
    assert out is model
    assert any("no tfcomp pruning state" in str(m.message) for m in w)


def test_strip_rejects_non_models():
    with pytest.raises(TypeError, match="keras.Model"):
        strip_pruning("model.keras")
