"""Pruning wrappers, surgery and copies on every layer a Keras user brings.

keras.io-style user models (written inline, tiny): a Conv1D sequence net, an
Xception-style SeparableConv2D net, a U-Net with Conv2DTranspose, a Conv3D
net, a grouped-conv net, a tiny ViT (MultiHeadAttention, LayerNormalization,
Dense MLP) and models with ``Lambda`` layers / ``keras.ops`` calls. Each goes
through ``apply_fpgm`` / ``apply_magnitude_pruning`` + fit + ``strip_pruning``
(equal outputs), and the returned models keep the user's compile state.
"""

import os
import warnings

import keras
import numpy as np
import pytest

import tfcomp
from tfcomp.graph.copy import clone_layer, clone_model, copy_weights
from tfcomp.layers import masked as M
from tfcomp.pruning import make_plan, mask_channels, prune_channels
from tfcomp.pruning.fpgm import FPGMPruning
from tfcomp.pruning.magnitude import MagnitudePruning
from tfcomp.pruning.rethinking import scratch_setup
from tfcomp.pruning.wrappers import (
    apply_fpgm,
    apply_magnitude_pruning,
    masked_layers,
    strip_pruning,
)

L = keras.layers


# ------------------------------------------------------------ user models


def conv1d_net():
    """keras.io timeseries-classification style (causal + same Conv1D)."""
    inp = keras.Input((32, 3))
    x = L.Conv1D(8, 3, padding="causal", name="c1")(inp)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU()(x)
    x = L.Conv1D(16, 3, padding="same", activation="relu", name="c2")(x)
    x = L.Conv1D(8, 1, name="c3")(x)
    x = L.GlobalAveragePooling1D()(x)
    return keras.Model(inp, L.Dense(3, activation="softmax")(x))


def separable_net():
    """Xception-style entry flow: separable convs and a residual 1x1."""
    inp = keras.Input((16, 16, 3))
    x = L.Conv2D(8, 3, strides=2, padding="same", name="stem")(inp)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.Activation("relu")(x)
    res = L.Conv2D(16, 1, name="res")(x)
    x = L.SeparableConv2D(16, 3, padding="same", name="sep1")(x)
    x = L.BatchNormalization(name="sep1_bn")(x)
    x = L.Activation("relu")(x)
    x = L.SeparableConv2D(16, 3, padding="same", name="sep2")(x)
    x = L.BatchNormalization(name="sep2_bn")(x)
    x = L.Add()([x, res])
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(4, activation="softmax")(x))


def unet():
    """keras.io oxford-pets U-Net, two levels."""
    inp = keras.Input((16, 16, 3))
    c1 = L.Conv2D(8, 3, padding="same", activation="relu", name="d1")(inp)
    x = L.MaxPooling2D()(c1)
    x = L.Conv2D(16, 3, padding="same", activation="relu", name="d2")(x)
    x = L.BatchNormalization(name="d2_bn")(x)
    x = L.Conv2DTranspose(8, 2, strides=2, padding="same", name="up")(x)
    x = L.BatchNormalization(name="up_bn")(x)
    x = L.Concatenate()([x, c1])
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="u1")(x)
    return keras.Model(inp, L.Conv2D(2, 1, activation="softmax")(x))


def conv3d_net():
    """keras.io 3D CT-scan classification, tiny."""
    inp = keras.Input((8, 8, 8, 1))
    x = L.Conv3D(8, 3, padding="same", activation="relu", name="c1")(inp)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.Conv3D(8, 3, padding="same", activation="relu", name="c2")(x)
    x = L.GlobalAveragePooling3D()(x)
    return keras.Model(inp, L.Dense(2, activation="softmax")(x))


def grouped_net():
    """ResNeXt-style block: a grouped 3x3 conv between 1x1 convs."""
    inp = keras.Input((16, 16, 3))
    x = L.Conv2D(16, 3, padding="same", name="c1")(inp)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU()(x)
    x = L.Conv2D(16, 3, padding="same", groups=4, name="g")(x)
    x = L.BatchNormalization(name="g_bn")(x)
    x = L.ReLU()(x)
    x = L.Conv2D(8, 1, activation="relu", name="c2")(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(3, activation="softmax")(x))


def tiny_vit():
    """keras.io ViT, one transformer block on 4x4 patches of 16x16."""
    inp = keras.Input((16, 16, 3))
    x = L.Conv2D(16, 4, strides=4, name="patches")(inp)
    x = L.Reshape((16, 16))(x)
    h = L.LayerNormalization(epsilon=1e-6, name="ln1")(x)
    h = L.MultiHeadAttention(num_heads=2, key_dim=8, name="mha")(h, h)
    x = L.Add()([x, h])
    h = L.LayerNormalization(epsilon=1e-6, name="ln2")(x)
    h = L.Dense(32, activation="gelu", name="mlp1")(h)
    h = L.Dense(16, name="mlp2")(h)
    x = L.Add()([x, h])
    x = L.GlobalAveragePooling1D()(x)
    return keras.Model(inp, L.Dense(3, activation="softmax", name="head")(x))


def lambda_sequential():
    return keras.Sequential([
        keras.Input((16, 16, 3)),
        L.Conv2D(8, 3, padding="same", activation="relu", name="c1"),
        L.Lambda(lambda t: t * 2.0, name="double"),
        L.Conv2D(8, 3, activation="relu", name="c2"),
        L.GlobalAveragePooling2D(),
        L.Dense(4, name="out"),
    ], name="lambda_seq")


def lambda_functional():
    inp = keras.Input((16, 16, 3))
    x = L.Conv2D(8, 3, padding="same", name="c1")(inp)
    x = L.BatchNormalization(name="bn1")(x)
    x = keras.ops.relu(x) * 0.5                    # keras.ops calls
    x = L.Lambda(lambda t: keras.ops.tanh(t) * 2.0, name="lam")(x)
    x = L.Conv2D(8, 3, activation="relu", name="c2")(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(4, name="out")(x))


def every_1d_layer():
    inp = keras.Input((16, 4))
    x = L.Conv1D(8, 3, padding="same", name="c")(inp)
    x = L.DepthwiseConv1D(3, padding="same", depth_multiplier=2, name="dw")(x)
    x = L.BatchNormalization(name="bn")(x)
    x = L.SeparableConv1D(8, 3, padding="same", activation="sigmoid",
                          name="sep")(x)
    x = L.Conv1DTranspose(8, 2, strides=2, name="up")(x)
    x = L.GlobalAveragePooling1D()(x)
    return keras.Model(inp, L.Dense(2)(x))


def every_3d_layer():
    inp = keras.Input((4, 4, 4, 2))
    x = L.Conv3D(8, 3, padding="same", name="c")(inp)
    x = L.Conv3DTranspose(8, 2, strides=2, activation="sigmoid",
                          name="up")(x)
    x = L.Conv3D(4, 1, name="c2")(x)
    x = L.GlobalAveragePooling3D()(x)
    return keras.Model(inp, L.Dense(2)(x))


def depthwise_as_grouped():
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", name="c")(inp)
    x = L.Conv2D(16, 3, padding="same", groups=8, name="dwg")(x)
    x = L.BatchNormalization(name="bn")(x)
    x = L.Conv2D(8, 1, name="c2")(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(2)(x))


def _data(model, n=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *model.input_shape[1:])).astype("float32")
    out = model.output_shape
    y = rng.integers(0, out[-1], size=(n, *out[1:-1]))
    return x, y


def _perturb_bn(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in tfcomp.graph.leaf_layers(model):
        if isinstance(layer, L.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, c).astype("float32"))
            layer.beta.assign(rng.normal(0, 0.3, c).astype("float32"))
            layer.moving_mean.assign(rng.normal(0, 0.3, c).astype("float32"))
            layer.moving_variance.assign(
                rng.uniform(0.5, 2, c).astype("float32"))


def _close(a, b, rtol=1e-4):
    a, b = np.asarray(a), np.asarray(b)
    scale = max(1.0, float(np.abs(b).max()))
    np.testing.assert_allclose(a, b, atol=rtol * scale)


# ------------------------------------------------------------ wrapping


PRUNED_TYPES = {
    conv1d_net: {"c1": M.MaskedConv1D, "c2": M.MaskedConv1D},
    separable_net: {"sep1": M.MaskedSeparableConv2D,
                    "sep2": M.MaskedSeparableConv2D},
    unet: {"up": M.MaskedConv2DTranspose, "d2": M.MaskedConv2D},
    conv3d_net: {"c1": M.MaskedConv3D},
    grouped_net: {"g": M.MaskedConv2D},
}


@pytest.mark.parametrize("builder", [
    b if b is not grouped_net else pytest.param(b, marks=pytest.mark.slow)
    for b in PRUNED_TYPES], ids=lambda b: b.__name__)  # grouped: XLA conv
def test_fpgm_fit_then_strip_equals_masked_model(builder):
    model = builder()
    _perturb_bn(model)
    x, y = _data(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is left plain here
        soft = apply_fpgm(model)
    for name, cls in PRUNED_TYPES[builder].items():
        assert type(soft.get_layer(name)) is cls
    soft.compile("adam", "sparse_categorical_crossentropy",
                 run_eagerly=True)
    cb = FPGMPruning(ratio=0.5)
    soft.fit(x, y, epochs=1, batch_size=4, verbose=0, callbacks=[cb])
    assert not cb.skipped or all("input" in r or "output" in r
                                 for r in cb.skipped.values()), cb.skipped
    small = strip_pruning(soft)
    assert not masked_layers(small)
    _close(small(x, training=False), soft(x, training=False))
    assert small.count_params() < model.count_params()
    assert tfcomp.profile(small).macs == cb.history[-1]["macs"]
    for name in PRUNED_TYPES[builder]:
        assert small.get_layer(name).filters < model.get_layer(name).filters


@pytest.mark.parametrize("builder", [every_1d_layer, every_3d_layer,
                                     depthwise_as_grouped],
                         ids=lambda b: b.__name__)
def test_every_prunable_type_is_wrapped_and_strips_exactly(builder):
    model = builder()
    _perturb_bn(model)
    x, _ = _data(model, n=2)
    soft = apply_fpgm(model)
    for layer in tfcomp.graph.leaf_layers(model):
        if M.masked_class_for(layer) is not None:
            assert type(soft.get_layer(layer.name)) is \
                M.masked_class_for(layer)
    cb = FPGMPruning(ratio=0.5)
    cb.set_model(soft)
    cb.update_masks()
    small = strip_pruning(soft)
    _close(small(x), soft(x))
    assert small.count_params() < 0.7 * model.count_params()
    mag = apply_magnitude_pruning(model)
    cb = MagnitudePruning(0.5)
    cb.set_model(mag)
    cb.update_masks(0.5)
    assert cb.sparsity() == pytest.approx(0.5, abs=0.02)
    _close(strip_pruning(mag)(x), mag(x))


def test_grouped_conv_masks_whole_coupled_channels():
    model = grouped_net()
    soft = apply_fpgm(model)
    cb = FPGMPruning(ratio=0.5)
    cb.set_model(soft)
    cb.update_masks()
    mask = keras.ops.convert_to_numpy(soft.get_layer("g").channel_mask_var)
    # filter j of every group of 4 is kept or removed together
    per_group = mask.reshape(4, 4)
    assert (per_group == per_group[0]).all()
    assert mask.sum() == 8
    small = strip_pruning(soft)
    assert small.get_layer("g").filters == 8
    assert small.get_layer("g").groups == 4
    x, _ = _data(model)
    _close(small(x), soft(x))


@pytest.mark.parametrize("builder", [separable_net, unet, conv1d_net],
                         ids=lambda b: b.__name__)
def test_magnitude_masks_every_kernel_and_strip_keeps_zeros(builder):
    model = builder()
    soft = apply_magnitude_pruning(model)
    kernels = [lyr for lyr in tfcomp.graph.leaf_layers(model)
               if any(len(v.shape) >= 2 for v in lyr.trainable_weights)]
    assert len(masked_layers(soft, "weight")) == len(kernels)
    cb = MagnitudePruning(0.5)
    cb.set_model(soft)
    cb.update_masks(0.5)
    assert cb.sparsity() == pytest.approx(0.5, abs=0.02)
    plain = strip_pruning(soft)
    x, _ = _data(model)
    _close(plain(x), soft(x))
    if builder is separable_net:
        sep = soft.get_layer("sep1")
        assert [m.name for _, m in sep.weight_masks()] == [
            "depthwise_kernel_mask", "pointwise_kernel_mask"]
        for attr in ("depthwise_kernel", "pointwise_kernel"):
            k = keras.ops.convert_to_numpy(getattr(plain.get_layer("sep1"),
                                                   attr))
            assert np.mean(k == 0) == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize("cls,kwargs,shape", [
    (M.MaskedConv1D, {"filters": 4, "kernel_size": 3, "padding": "causal"},
     (2, 8, 3)),
    (M.MaskedConv3D, {"filters": 4, "kernel_size": 3}, (2, 5, 5, 5, 2)),
    (M.MaskedConv2DTranspose, {"filters": 4, "kernel_size": 2,
                               "strides": 2}, (2, 4, 4, 3)),
    (M.MaskedSeparableConv2D, {"filters": 4, "kernel_size": 3,
                               "padding": "same"}, (2, 6, 6, 3)),
    (M.MaskedDepthwiseConv1D, {"kernel_size": 3}, (2, 8, 3)),
    (M.MaskedGroupNormalization, {"groups": 2}, (2, 4, 4, 4)),
])
def test_new_masked_layers_meet_the_layer_contract(cls, kwargs, shape):
    from tfcomp.testing import run_layer_test

    masks = {"weight_mask": cls._has_kernel, "channel_mask": True}
    run_layer_test(cls, {**kwargs, **masks}, input_shape=shape)


def test_masked_layers_equal_their_plain_parent_and_gate_channels():
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype("float32")
    for plain in (L.Conv2D(6, 3, groups=3, activation="sigmoid"),
                  L.Conv2DTranspose(4, 3, strides=2),
                  L.SeparableConv2D(4, 3, depth_multiplier=2)):
        y = plain(x)
        cls = M.masked_class_for(plain)
        masked = cls.from_config({**plain.get_config(), "channel_mask": True,
                                  "weight_mask": True})
        masked.build(x.shape)
        for v, w in zip(masked.weights, plain.weights):
            v.assign(w)
        _close(masked(x), y)
        gate = np.ones(masked.channel_mask_var.shape, "float32")
        gate[1] = 0.0
        masked.channel_mask_var.assign(gate)
        out = keras.ops.convert_to_numpy(masked(x))
        assert np.all(out[..., 1] == 0.0)
        _close(out[..., 0], y[..., 0])


def test_fpgm_models_save_and_load(tmp_path):
    model = apply_fpgm(separable_net())
    cb = FPGMPruning(ratio=0.5)
    cb.set_model(model)
    cb.update_masks()
    path = os.path.join(tmp_path, "sep.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.get_layer("sep1")) is M.MaskedSeparableConv2D
    x, _ = _data(model)
    _close(loaded(x), model(x))
    _close(strip_pruning(loaded)(x), model(x))


# ------------------------------------------------------------ attention


def test_tiny_vit_fpgm_and_magnitude_keep_attention_weights_exactly():
    model = tiny_vit()
    with pytest.warns(UserWarning, match=r"'mha' \(MultiHeadAttention\)"):
        soft = apply_fpgm(model)
    old = model.get_layer("mha").weights
    new = soft.get_layer("mha").weights
    assert [v.path for v in old] == [v.path for v in new]
    for a, b in zip(old, new):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert type(soft.get_layer("mlp1")) is M.MaskedDense
    x, y = _data(model)
    np.testing.assert_allclose(soft(x), model(x), atol=1e-6)
    soft.compile("adam", "sparse_categorical_crossentropy",
                 run_eagerly=True)
    cb = FPGMPruning(ratio=0.5)
    soft.fit(x, y, epochs=1, batch_size=4, verbose=0, callbacks=[cb])
    small = strip_pruning(soft)
    _close(small(x), soft(x))
    assert small.get_layer("mlp1").units == 16
    with pytest.warns(UserWarning, match="MultiHeadAttention"):
        mag = apply_magnitude_pruning(model)
    np.testing.assert_allclose(mag(x), model(x), atol=1e-6)


def test_vit_macs_target_counts_unwrapped_layers():
    model = tiny_vit()
    with pytest.warns(UserWarning):
        soft = apply_fpgm(model)
    dense = tfcomp.profile(model).macs
    cb = FPGMPruning(target_macs=0.9)
    cb.set_model(soft)
    cb.update_masks()
    small = strip_pruning(soft)
    assert tfcomp.profile(small).macs == cb.history[-1]["macs"]
    assert tfcomp.profile(small).macs <= 0.9 * dense
    # the MLP alone cannot reach a small budget: a clear error, not "met"
    cb = FPGMPruning(target_macs=0.2)
    cb.set_model(soft)
    with pytest.raises(ValueError, match="cannot be reached"):
        cb.update_masks()


def test_groupnorm_prunes_whole_groups_exactly():
    inp = keras.Input((16, 16, 3))
    x = L.Conv2D(8, 3, padding="same", name="c1")(inp)
    x = L.GroupNormalization(groups=4, name="gn")(x)
    x = L.ReLU()(x)
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="c2")(x)
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, L.Dense(3, name="out")(x))
    rng = np.random.default_rng(0)
    model.get_layer("gn").beta.assign(rng.normal(size=8).astype("float32"))
    soft = apply_fpgm(model)
    assert type(soft.get_layer("gn")) is M.MaskedGroupNormalization
    cb = FPGMPruning(ratio=0.5)
    cb.set_model(soft)
    cb.update_masks()
    mask = keras.ops.convert_to_numpy(soft.get_layer("gn").channel_mask_var)
    assert (mask.reshape(4, 2) == mask.reshape(4, 2)[:, :1]).all()
    small = strip_pruning(soft)
    assert small.get_layer("c1").filters == 4
    assert small.get_layer("gn").groups == 2
    x, _ = _data(model)
    _close(small(x), soft(x))


def test_layer_without_twin_leaves_its_group_whole_with_a_warning():
    inp = keras.Input((16, 16, 3))
    x = L.Conv2D(8, 3, padding="same", name="c1")(inp)
    # a Normalization between convs: its mean would make a zero channel
    # non-zero, and it has no masked twin (PReLU needs none: it keeps a
    # zero channel zero, tests/pruning/test_zero_preserving.py)
    norm = L.Normalization(axis=-1, name="norm")
    x = norm(x)
    norm.adapt(np.random.default_rng(0).uniform(size=(4, 16, 16, 8)))
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="c2")(x)
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, L.Dense(3, name="out")(x))
    with pytest.warns(UserWarning, match=r"'norm' \(Normalization\)"):
        soft = apply_fpgm(model)
    cb = FPGMPruning(ratio=0.5)
    cb.set_model(soft)
    cb.update_masks()
    assert any("norm" in reason for reason in cb.skipped.values())
    small = strip_pruning(soft)
    assert small.get_layer("c1").filters == 8
    assert small.get_layer("c2").filters == 4
    x, _ = _data(model)
    _close(small(x), soft(x))


# ------------------------------------------------------------ Lambda


@pytest.mark.parametrize("builder", [lambda_sequential, lambda_functional],
                         ids=lambda b: b.__name__)
def test_lambda_models_prune_wrap_and_strip(builder):
    model = builder()
    _perturb_bn(model)
    x, y = _data(model)
    ref = model(x)
    plan = make_plan(model, ratio=0.5)
    small = prune_channels(model, plan)
    assert small.get_layer("c1").filters == 8  # feeds the Lambda: kept
    assert small.get_layer("c2").filters == 4
    _close(small(x), mask_channels(model, plan)(x))
    soft = apply_fpgm(model)
    np.testing.assert_allclose(soft(x), ref, atol=1e-6)
    lam = [lyr for lyr in model.layers if isinstance(lyr, L.Lambda)][0]
    assert soft.get_layer(lam.name).function is lam.function
    soft.compile("adam", "sparse_categorical_crossentropy",
                 run_eagerly=True)
    soft.fit(x, y, epochs=1, batch_size=4, verbose=0,
             callbacks=[FPGMPruning(ratio=0.5)])
    stripped = strip_pruning(soft)
    _close(stripped(x), soft(x))
    mag = apply_magnitude_pruning(model)
    np.testing.assert_allclose(mag(x), ref, atol=1e-6)
    setup = scratch_setup(small, mode="E", base_epochs=1)
    assert setup.model.get_layer(lam.name).function is lam.function


def test_copy_module_clones_lambdas_and_copies_by_order():
    model = lambda_functional()
    twin = clone_model(model)
    assert copy_weights(model, twin) == len(model.weights)
    x, _ = _data(model)
    np.testing.assert_allclose(twin(x), model(x), atol=1e-6)
    lam = clone_layer(model.get_layer("lam"))
    assert lam.function is model.get_layer("lam").function
    a, b = tiny_vit(), tiny_vit()
    copy_weights(a, b)
    np.testing.assert_array_equal(a(x), b(x))
    bad = keras.Sequential([keras.Input((16, 16, 3)),
                            L.Conv2D(4, 3, name="c1")])
    with pytest.raises(ValueError, match="'c1'.*shape"):
        copy_weights(model, bad)


# ------------------------------------------------------------ compile state


def _compiled_trained(builder=conv1d_net, steps=4):
    model = builder()
    model.compile(keras.optimizers.Adam(2e-3),
                  "sparse_categorical_crossentropy", metrics=["accuracy"],
                  run_eagerly=True)  # tiny models: eager beats tracing
    x, y = _data(model, n=4 * steps)
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    return model, x, y


def test_apply_fpgm_keeps_compile_state_and_fits_without_compile():
    model, x, y = _compiled_trained()
    soft = apply_fpgm(model)
    assert soft.compiled
    assert int(soft.optimizer.iterations) == int(model.optimizer.iterations)
    assert soft.optimizer.get_config()["learning_rate"] == pytest.approx(2e-3)
    assert soft.get_compile_config()["loss"] == "sparse_categorical_crossentropy"
    soft.fit(x, y, epochs=1, batch_size=4, verbose=0,
             callbacks=[FPGMPruning(ratio=0.5)])
    assert int(soft.optimizer.iterations) == 2 * int(model.optimizer.iterations)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        small = strip_pruning(soft)
    assert small.compiled
    assert int(small.optimizer.iterations) == int(soft.optimizer.iterations)
    assert any("start from zero" in str(w.message) for w in caught)
    small.fit(x, y, epochs=1, batch_size=4, verbose=0)
    mag = apply_magnitude_pruning(model)
    assert mag.compiled and int(mag.optimizer.iterations) == 4


def test_prune_channels_of_a_compiled_model_is_compiled():
    model, x, y = _compiled_trained(lambda_functional)
    small = prune_channels(model, make_plan(model, ratio=0.5))
    assert small.compiled
    assert int(small.optimizer.iterations) == 4
    assert "accuracy" in str(small.get_compile_config()["metrics"])
    small.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert int(small.optimizer.iterations) == 8
    setup = scratch_setup(small, mode="E", base_epochs=1)
    assert setup.model.compiled
    assert int(setup.model.optimizer.iterations) == 0
    setup.model.fit(x, y, epochs=1, batch_size=4, verbose=0)
