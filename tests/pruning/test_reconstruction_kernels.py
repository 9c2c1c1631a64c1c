"""Reconstruction through grouped, transposed, separable and 3-D
convolutions: the dense view of each consumer, its patches, the
block-wise refit, and the whole-model methods (LASSO, AMC, DCP) on models
built from them."""

import keras
import numpy as np
import pytest

import tfcomp
from tfcomp.graph import DependencyGraph
from tfcomp.pruning import dcp_prune, lasso_prune, reconstruct_layer
from tfcomp.pruning.reconstruction import LayerwisePruner
from tfcomp.pruning.reconstruction.engine import (
    consumer_layers,
    consumer_units,
    reconstructible_groups,
)
from tfcomp.pruning.reconstruction.kernels import (
    connections,
    consumer_kind,
    from_dense,
    kernel_variable,
    layer_kernel,
    to_dense,
)
from tfcomp.pruning.reconstruction.refit import least_squares_refit
from tfcomp.pruning.reconstruction.sampling import sample_layer, sample_patches

L = keras.layers

CONSUMERS = [
    ("conv2d_transpose_same", lambda: L.Conv2DTranspose(
        5, 3, strides=2, padding="same"), (3, 7, 7, 6)),
    ("conv2d_transpose_valid", lambda: L.Conv2DTranspose(
        5, 3, strides=2, padding="valid"), (3, 7, 7, 6)),
    ("conv2d_transpose_output_padding", lambda: L.Conv2DTranspose(
        5, (3, 2), strides=(2, 3), padding="same", output_padding=(1, 2)),
     (3, 7, 6, 6)),
    ("conv2d_transpose_dilated", lambda: L.Conv2DTranspose(
        5, 3, padding="same", dilation_rate=2), (3, 7, 7, 6)),
    ("conv1d_transpose", lambda: L.Conv1DTranspose(
        5, 4, strides=2, padding="same"), (3, 9, 6)),
    ("conv3d_transpose", lambda: L.Conv3DTranspose(
        5, 3, strides=2, padding="same"), (2, 3, 4, 4, 6)),
    ("conv3d", lambda: L.Conv3D(5, 3, strides=2, padding="same"),
     (2, 5, 6, 6, 6)),
    ("grouped_conv2d", lambda: L.Conv2D(
        8, 3, strides=2, padding="same", groups=2), (3, 7, 7, 6)),
    ("grouped_conv1d_causal", lambda: L.Conv1D(
        9, 3, padding="causal", groups=3, dilation_rate=2), (3, 9, 6)),
    ("separable_conv2d_dm2", lambda: L.SeparableConv2D(
        5, 3, strides=2, padding="same", depth_multiplier=2), (3, 7, 7, 6)),
    ("separable_conv1d_dilated", lambda: L.SeparableConv1D(
        5, 3, padding="same", dilation_rate=2), (3, 9, 6)),
]


def _np(t):
    return np.asarray(keras.ops.convert_to_numpy(t))


@pytest.mark.parametrize("name,make,shape", CONSUMERS,
                         ids=[c[0] for c in CONSUMERS])
def test_patches_times_dense_kernel_equal_the_layer(name, make, shape):
    layer = make()
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    y = _np(layer(x))
    kernel = _np(kernel_variable(layer))
    np.testing.assert_array_equal(from_dense(layer, to_dense(layer, kernel)),
                                  kernel)
    w, b = layer_kernel(layer)
    patches, (img, pos) = sample_patches(layer, x, samples_per_image=50)
    pred = np.einsum("mkp,kpn->mn", patches, w) + b
    want = y.reshape(y.shape[0], -1, y.shape[-1])[img, pos]
    np.testing.assert_allclose(pred, want, atol=1e-5)


def test_grouped_refit_keeps_the_groups_and_beats_zeroing():
    layer = L.Conv2D(8, 3, padding="same", groups=2)
    x = np.random.default_rng(1).normal(size=(16, 6, 6, 6)).astype("float32")
    layer(x)
    s = sample_layer(layer, x, samples_per_image=20)
    r = reconstruct_layer(layer, samples=s, num_keep=3)
    assert r.error < r.error_zeroed
    assert r.kernel.shape == tuple(layer.kernel.shape)  # the layer's layout
    # the dense view's off-block entries stay zero, so it maps back exactly
    dense, _, _ = least_squares_refit(s, r.keep)
    dense = np.asarray(dense).reshape(-1, 6, 8)
    assert np.all(dense[:, ~connections(layer)] == 0)
    np.testing.assert_array_equal(from_dense(layer, dense), r.kernel)
    layer.kernel.assign(r.kernel)


def test_transposed_reconstruct_layer_assigns_to_the_layer():
    layer = L.Conv2DTranspose(4, 3, strides=2, padding="same")
    x = np.random.default_rng(2).normal(size=(8, 5, 5, 6)).astype("float32")
    layer(x)
    s = sample_layer(layer, x, samples_per_image=30)
    r = reconstruct_layer(layer, s.x, s.y, num_keep=4)
    assert r.kernel.shape == tuple(layer.kernel.shape)
    assert r.error < r.error_zeroed
    layer.kernel.assign(r.kernel)
    removed = np.setdiff1d(np.arange(6), r.keep)
    assert np.all(_np(layer.kernel)[..., removed] == 0)


def test_depthwise_is_still_refused_with_reasons():
    with pytest.raises(ValueError, match="depthwise"):
        consumer_kind(L.DepthwiseConv2D(3))
    assert consumer_kind(L.SeparableConv2D(4, 3)) == "separable"


def test_separable_refit_rows_follow_the_depth_multiplier():
    # channel c's depthwise outputs are pointwise rows c*dm .. c*dm+dm-1
    layer = L.SeparableConv2D(4, 3, padding="same", depth_multiplier=2)
    x = np.random.default_rng(3).normal(size=(8, 6, 6, 5)).astype("float32")
    layer(x)
    s = sample_layer(layer, x, samples_per_image=20,
                     units=np.repeat(np.arange(5), 2))
    r = reconstruct_layer(layer, samples=s, num_keep=3)
    assert r.error < r.error_zeroed
    assert r.kernel.shape == tuple(layer.pointwise_kernel.shape)
    removed = np.setdiff1d(np.arange(5), r.keep)
    rows = np.concatenate([[2 * c, 2 * c + 1] for c in removed])
    assert np.all(r.kernel[..., rows, :] == 0)


def _unet(classes=3):
    """keras.io-style U-Net: Conv2D down, Conv2DTranspose up, skip concat,
    per-pixel logits."""
    inputs = keras.Input((16, 16, 3))
    c1 = L.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    p1 = L.MaxPooling2D()(c1)
    c2 = L.Conv2D(16, 3, padding="same", activation="relu")(p1)
    u1 = L.Conv2DTranspose(8, 3, strides=2, padding="same")(c2)
    m = L.Concatenate()([u1, c1])
    c3 = L.Conv2D(8, 3, padding="same", activation="relu")(m)
    outputs = L.Conv2D(classes, 1)(c3)
    return keras.Model(inputs, outputs, name="unet")


def _resnext():
    """ResNeXt-style block: 1x1 -> grouped 3x3 -> 1x1, residual add."""
    inputs = keras.Input((12, 12, 3))
    x = L.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    h = L.Conv2D(16, 1, activation="relu")(x)
    h = L.Conv2D(16, 3, padding="same", groups=4, activation="relu")(h)
    h = L.Conv2D(16, 1)(h)
    x = L.Activation("relu")(L.Add()([x, h]))
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, L.Dense(4)(x), name="resnext")


def _xception():
    """keras.io's "image classification from scratch" net, small: separable
    convs in residual blocks with strided 1x1 projections, one logit."""
    inputs = keras.Input((16, 16, 3))
    x = L.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inputs)
    prev = x
    for size in (8, 16):
        x = L.SeparableConv2D(size, 3, padding="same")(L.ReLU()(x))
        x = L.BatchNormalization()(x)
        x = L.SeparableConv2D(size, 3, padding="same")(L.ReLU()(x))
        x = L.MaxPooling2D(3, strides=2, padding="same")(x)
        x = L.add([x, L.Conv2D(size, 1, strides=2, padding="same")(prev)])
        prev = x
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, L.Dense(1)(x), name="xception")


@pytest.mark.parametrize("build", [_unet, _resnext, _xception],
                         ids=["unet", "resnext", "xception"])
def test_every_group_is_reconstructed_and_pruned_equals_masked(build):
    keras.utils.set_random_seed(0)
    model = build()
    x = np.random.default_rng(0).normal(
        size=(16,) + tuple(model.inputs[0].shape[1:])).astype("float32")
    graph = DependencyGraph(model)
    todo, skipped = reconstructible_groups(graph)
    assert not skipped, skipped
    pruner = LayerwisePruner(model, x, todo, graph=graph)
    for g in todo:
        for path in consumer_layers(g):
            layer = model.get_layer(path)
            units = consumer_units(g, path, layer)
            if int(getattr(layer, "groups", 1) or 1) > 1:
                # every input channel of every group is one of g's units
                assert (units >= 0).all(), (path, units)
                assert np.bincount(units).tolist() == [layer.groups] * g.size
        report = pruner.step(g, num_keep=max(1, g.size // 2))
        for errors in report["consumers"].values():
            assert errors["error"] <= errors["error_zeroed"] + 1e-6
    small = pruner.pruned_model()
    np.testing.assert_allclose(_np(small(x)), _np(pruner.work(x)),
                               atol=1e-5)
    assert tfcomp.profile(small).macs < tfcomp.profile(model).macs


def test_lasso_amc_and_dcp_prune_a_unet_through_its_transposed_conv():
    keras.utils.set_random_seed(0)
    model = _unet()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 16, 16, 3)).astype("float32")
    y = rng.integers(0, 3, size=(16, 16, 16))
    res = lasso_prune(model, x, ratio=0.5, verbose=0)
    assert not res.report["skipped"], res.report["skipped"]
    up = res.model.get_layer(model.layers[4].name)  # the Conv2DTranspose
    assert up.kernel.shape[-1] < 16  # its input channels were refit
    from tfcomp.tuners.amc import AMCHyperModel
    hm = AMCHyperModel(model, x, (x, y), budget=0.5, round_to=1,
                       max_images=8)
    values, _, _ = hm.space.rollout(lambda s: [0.3])
    small, plan = hm.prune(values)
    assert tfcomp.profile(small).macs <= 0.5 * tfcomp.profile(model).macs
    dcp = dcp_prune(model, (x, y), 0.5, finetune_epochs=0, head_epochs=1,
                    sgd_steps=1, verbose=0)
    assert tfcomp.profile(dcp.model).macs < tfcomp.profile(model).macs


def test_dcp_per_pixel_labels_get_per_pixel_auxiliary_heads():
    """A model without skips has stage ends: their heads predict labels
    per pixel (a resize to the labels' size)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 1))
    h = L.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    h = L.MaxPooling2D()(h)
    h = L.Conv2D(8, 3, padding="same", activation="relu")(h)
    h = L.Conv2DTranspose(8, 3, strides=2, padding="same",
                          activation="relu")(h)
    model = keras.Model(inputs, L.Conv2D(2, 1)(h))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 16, 16, 1)).astype("float32")
    y = rng.integers(0, 2, size=(16, 16, 16))
    res = dcp_prune(model, (x, y), 0.5, num_stages=2, finetune_epochs=0,
                    head_epochs=1, sgd_steps=1, verbose=0)
    assert np.all(np.isfinite(_np(res.model(x))))


def test_amc_costs_a_grouped_consumer_like_the_pruned_model():
    """AMC's per-layer cost model (also the joint search's) counts a
    grouped convolution's removed input channels in every group."""
    from tfcomp.tuners.amc import AMCHyperModel
    keras.utils.set_random_seed(0)
    model = _resnext()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 12, 12, 3)).astype("float32")
    y = rng.integers(0, 4, size=16)
    hm = AMCHyperModel(model, x, (x, y), budget=1.0, round_to=1,
                       max_images=8)
    values, _, _ = hm.space.rollout(lambda s: [0.4])
    small, plan = hm.prune(values)
    counts = np.array([g.size - len(plan.removed.get(g.id, ()))
                       for g in hm.space.steps])
    assert hm.space.cost(counts) == tfcomp.profile(small).macs
    assert hm.space.macs(counts) == tfcomp.profile(small).macs
