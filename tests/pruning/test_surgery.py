"""prune_channels / mask_channels: equal outputs, smaller models, I/O."""

import os

import keras
import numpy as np
import pytest
from keras import layers as L

import tfcomp
from tfcomp.graph import DependencyGraph
from tfcomp.pruning import Plan, make_plan, mask_channels, prune_channels, weight_masks


def randomize(model, seed=0):
    rng = np.random.default_rng(seed)
    for v in model.weights:
        if v.name in ("gamma", "moving_variance"):
            a = rng.uniform(0.5, 1.5, v.shape)
        elif v.name in ("beta", "moving_mean", "bias"):
            a = rng.normal(0, 0.3, v.shape)
        else:
            continue
        v.assign(a.astype("float32"))
    return model


def np_out(model, x):
    return keras.ops.convert_to_numpy(model(x))


def rel_err(a, b):
    return float(np.abs(a - b).max() / max(1e-6, np.abs(b).max()))


@pytest.mark.parametrize("builder", [
    lambda: tfcomp.zoo.resnet(depth=8),
    lambda: tfcomp.zoo.mobilenet_v2(alpha=0.35),
    lambda: tfcomp.zoo.vgg_small(width=8),
], ids=["resnet8", "mobilenet_v2", "vgg_small"])
def test_zoo_pruned_equals_masked_and_is_smaller(builder):
    model = randomize(builder())
    before = [v.numpy().copy() for v in model.weights]
    plan = make_plan(model, ratio=0.5, importance="l1")
    pruned = prune_channels(model, plan)
    masked = mask_channels(model, plan)
    x = np.random.default_rng(0).uniform(size=(3, 28, 28, 1)).astype(
        "float32")
    assert rel_err(np_out(pruned, x), np_out(masked, x)) < 1e-4
    assert pruned.count_params() < 0.5 * model.count_params()
    assert pruned.output_shape == model.output_shape
    assert pruned.name == model.name
    # the input model is untouched
    for v, b in zip(model.weights, before):
        np.testing.assert_array_equal(v.numpy(), b)
    # no zero channel is left in the pruned convs
    for layer in pruned.layers:
        if isinstance(layer, L.Conv2D):
            k = keras.ops.convert_to_numpy(layer.kernel)
            norms = np.abs(k).reshape(-1, k.shape[-1]).sum(0)
            assert (norms > 0).all(), layer.name


def test_profile_of_pruned_model_reflects_removed_channels():
    inp = keras.Input((6, 6, 2))
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="c1")(inp)
    x = L.BatchNormalization(name="bn")(x)
    x = L.Conv2D(4, 1, name="c2")(x)
    out = L.Dense(3, name="fc")(L.Flatten()(x))
    model = keras.Model(inp, out)
    plan = Plan.from_removed(model, {"c1": [0, 2, 4], "c2": [1]})
    pruned = prune_channels(model, plan)
    p = tfcomp.profile(pruned)
    # hand count: c1 6*6*3*3*2*5, c2 6*6*5*3, fc (6*6*3)*3
    assert p.by_name("c1").macs == 36 * 9 * 2 * 5
    assert p.by_name("c2").macs == 36 * 5 * 3
    assert p.by_name("fc").macs == 108 * 3
    assert p.by_name("c1").params == 9 * 2 * 5
    assert p.by_name("bn").params == 4 * 5
    assert p.by_name("c2").params == 5 * 3 + 3
    assert p.by_name("fc").params == 108 * 3 + 3
    assert pruned.get_layer("c1").filters == 5
    assert pruned.get_layer("c2").filters == 3
    assert pruned.get_layer("fc").kernel.shape == (108, 3)


def test_sliced_weights_are_the_kept_ones():
    model = randomize(tfcomp.zoo.vgg_small(width=4))
    plan = Plan.from_removed(model, {"s1c1_conv": [1, 2]})
    pruned = prune_channels(model, plan)
    k = model.get_layer("s1c1_conv").kernel.numpy()
    np.testing.assert_array_equal(
        pruned.get_layer("s1c1_conv").kernel.numpy(), k[..., [0, 3]])
    k2 = model.get_layer("s1c2_conv").kernel.numpy()
    np.testing.assert_array_equal(
        pruned.get_layer("s1c2_conv").kernel.numpy(), k2[:, :, [0, 3], :])
    g = model.get_layer("s1c1_bn").gamma.numpy()
    np.testing.assert_array_equal(
        pruned.get_layer("s1c1_bn").gamma.numpy(), g[[0, 3]])


def test_mask_zeroes_channel_after_bn_and_consumers():
    model = randomize(tfcomp.zoo.resnet(depth=8))
    plan = Plan.from_removed(model, {"s1b1_conv1": [0, 5]})
    masked = mask_channels(model, plan)
    k = masked.get_layer("s1b1_conv1").kernel.numpy()
    assert np.all(k[..., [0, 5]] == 0) and np.any(k[..., 1] != 0)
    bn = masked.get_layer("s1b1_bn1")
    assert np.all(bn.gamma.numpy()[[0, 5]] == 0)
    assert np.all(bn.beta.numpy()[[0, 5]] == 0)
    assert np.all(masked.get_layer("s1b1_conv2").kernel.numpy()[:, :, [0, 5]]
                  == 0)
    # the BN output of a masked channel is exactly zero
    probe = keras.Model(masked.inputs, masked.get_layer("s1b1_bn1").output)
    x = np.random.default_rng(0).uniform(size=(2, 28, 28, 1)).astype(
        "float32")
    act = keras.ops.convert_to_numpy(probe(x))
    assert np.all(act[..., [0, 5]] == 0) and np.any(act[..., 1] != 0)


def test_mask_inplace_and_weight_masks():
    model = randomize(tfcomp.zoo.resnet(depth=8))
    plan = make_plan(model, ratio=0.25, importance="fpgm")
    masks = weight_masks(model, plan)
    k = masks[("stem_conv", "kernel")]
    assert k.shape == tuple(model.get_layer("stem_conv").kernel.shape)
    assert (k.reshape(-1, 16).sum(0) == 0).sum() == plan.num_removed(
        "stem_conv")
    out = mask_channels(model, plan, inplace=True)
    assert out is model
    for (layer, name), m in masks.items():
        if name == "moving_variance":
            continue
        w = next(v for v in model.get_layer(layer).weights if v.name == name)
        assert np.all(w.numpy()[m == 0] == 0), (layer, name)


def test_pruned_model_saves_and_loads(tmp_path):
    model = randomize(tfcomp.zoo.resnet(depth=8))
    pruned = prune_channels(model, make_plan(model, ratio=0.3))
    path = os.path.join(tmp_path, "pruned.keras")
    pruned.save(path)
    again = keras.saving.load_model(path)
    x = np.random.default_rng(1).uniform(size=(2, 28, 28, 1)).astype(
        "float32")
    np.testing.assert_array_equal(np_out(again, x), np_out(pruned, x))


def test_nested_and_sequential_models():
    inner_in = keras.Input((6, 6, 4))
    y = L.Conv2D(6, 3, padding="same", name="ic")(inner_in)
    y = L.BatchNormalization(name="ibn")(y)
    inner = keras.Model(inner_in, y, name="inner")
    seq = keras.Sequential([keras.Input((6, 6, 6)),
                            L.Conv2D(5, 1, name="sc"), L.ReLU()],
                           name="seq")
    inp = keras.Input((6, 6, 3))
    x = L.Conv2D(4, 1, name="c")(inp)
    x = seq(inner(x))
    out = L.Dense(2, name="head")(L.GlobalAveragePooling2D()(x))
    model = randomize(keras.Model(inp, out))
    plan = make_plan(model, ratio=0.5)
    assert set(plan.removed) == {"c", "inner/ic", "seq/sc"}
    pruned = prune_channels(model, plan)
    assert pruned.get_layer("inner").get_layer("ic").filters == 3
    assert pruned.get_layer("inner").input.shape[-1] == 2
    assert pruned.get_layer("seq").get_layer("sc").filters == 3
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype("float32")
    assert rel_err(np_out(pruned, x), np_out(mask_channels(model, plan),
                                             x)) < 1e-4
    seq_model = randomize(keras.Sequential(
        [keras.Input((6, 6, 3)), L.Conv2D(8, 3, name="a"),
         L.BatchNormalization(), L.ReLU(), L.Flatten(), L.Dense(4)]))
    plan = make_plan(seq_model, ratio=0.5)
    sp = prune_channels(seq_model, plan)
    assert isinstance(sp, keras.Sequential)
    assert sp.get_layer("a").filters == 4
    assert rel_err(np_out(sp, x), np_out(mask_channels(seq_model, plan),
                                         x)) < 1e-4


def test_layer_variety_exact():
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", name="c0")(inp)
    x = L.Conv2D(12, 3, padding="same", groups=4, name="grp")(x)
    x = L.Conv2D(12, 3, padding="same", groups=12, name="dwg")(x)
    x = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same")(x)
    x = L.PReLU()(x)
    x = L.SeparableConv2D(10, 3, depth_multiplier=2, padding="same")(x)
    x = L.Conv2DTranspose(6, 3, strides=2, padding="same", name="tr")(x)
    x = L.GroupNormalization(groups=6)(x)
    x = L.Rescaling(0.5, 0.1)(x)
    x = L.UpSampling2D()(L.Cropping2D(1)(L.ZeroPadding2D()(x)))
    x = L.Conv2D(8, 1, name="c1")(x)
    x = L.Reshape((-1, 8))(x)
    x = L.Dense(7, name="d")(x)
    out = L.Dense(3)(L.Flatten()(x))
    model = randomize(keras.Model(inp, out))
    g = DependencyGraph(model)
    assert g.barriers == {}
    plan = make_plan(g, ratio=0.5, importance="random")
    assert {"c0", "grp", "tr", "c1", "d"} <= set(plan.removed)
    pruned = prune_channels(model, plan, graph=g)
    assert pruned.get_layer("grp").groups == 4
    assert pruned.get_layer("dwg").groups == pruned.get_layer(
        "dwg").filters
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    assert rel_err(np_out(pruned, x), np_out(mask_channels(model, plan),
                                             x)) < 1e-4


def test_layernorm_over_channels_is_a_barrier():
    """Pruning before a LayerNormalization would change its statistics
    (pruned != masked), so its channels are left whole, with the reason."""
    inp = keras.Input((10, 6))
    x = L.Conv1D(8, 3, name="c")(inp)
    x = L.LayerNormalization(name="ln")(x)
    out = L.Dense(2)(L.GlobalMaxPooling1D()(L.Dense(5, name="d")(x)))
    model = randomize(keras.Model(inp, out))
    plan = make_plan(model, ratio=0.5)
    pruned = prune_channels(model, plan)
    assert pruned.get_layer("c").filters == 8
    assert pruned.get_layer("d").units < 5
    with pytest.raises(ValueError, match="LayerNormalization"):
        prune_channels(model, Plan.from_removed(model, {"c": [0, 1]}))


def test_plan_type_error():
    model = tfcomp.zoo.resnet(depth=8)
    with pytest.raises(TypeError, match="Plan"):
        prune_channels(model, {"stem_conv": [0]})
