"""GAL: soft masks, FISTA, losses by hand, stripping, save/resume,
MirroredStrategy (METHODS.md checks); user-style models: Sequential,
grouped-convolution and GroupNormalization consumers, keras.io-style
residual blocks (identity / projection shortcut, either operand order,
three-input add)."""

import os

import keras
import numpy as np
import pytest
from _mirrored import run_mirrored

import tfcomp
from tfcomp.layers.soft_mask import FISTA, SoftMask
from tfcomp.pruning.gal import GAL, apply_gal, gal_masks, strip_gal
from tfcomp.testing import run_layer_test


def _residual(classes=4):
    inp = keras.Input((8, 8, 3))
    s = keras.layers.Conv2D(8, 3, padding="same", use_bias=False,
                            name="stem")(inp)
    s = keras.layers.BatchNormalization(name="stem_bn")(s)
    s = keras.layers.ReLU(name="stem_relu")(s)
    a = keras.layers.Conv2D(8, 3, padding="same", name="a")(s)
    a = keras.layers.BatchNormalization(name="a_bn")(a)
    a = keras.layers.ReLU(name="a_relu")(a)
    b = keras.layers.Conv2D(8, 3, padding="same", name="b")(a)
    b = keras.layers.BatchNormalization(name="b_bn")(b)
    x = keras.layers.ReLU(name="out1")(keras.layers.Add(name="add1")([b, s]))
    c = keras.layers.Conv2D(8, 1, name="c")(x)
    x = keras.layers.ReLU(name="out2")(keras.layers.Add(name="add2")([x, c]))
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", name="d")(x)
    x = keras.layers.BatchNormalization(name="d_bn")(x)
    x = keras.layers.ReLU(name="d_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    out = keras.layers.Dense(classes, name="head")(x)
    return keras.Model(inp, out, name="res")


def _x(n=16, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 8, 8, 3)).astype(
        "float32")


def _np(t):
    return keras.ops.convert_to_numpy(t)


def test_soft_mask_layer_contract():
    run_layer_test(SoftMask, {"per_channel": True}, input_shape=(2, 4, 4, 3),
                   expected_output_shape=(2, 4, 4, 3),
                   expected_num_trainable_weights=1)
    run_layer_test(SoftMask, {"units": [0, 1, 0]}, input_shape=(2, 3),
                   expected_output_shape=(2, 3))
    run_layer_test(SoftMask, {"per_channel": False, "initial_value": 0.5},
                   input_shape=(2, 5), expected_output_shape=(2, 5))


def test_fista_step_is_the_closed_form_soft_threshold():
    v = keras.Variable(np.array([1.0, 0.3, 0.05, 0.0, 2.0], "float32"))
    g = np.array([0.5, -1.0, 0.1, -0.2, 0.0], "float32")
    lr, lam = 0.1, 2.0
    opt = FISTA(lr, lam=lam, mask_step=1)
    x0 = _np(v).copy()
    opt.apply([g], [v])
    # first step (alpha = 1, y = x): soft(x - lr g, lr lam), clamped at 0
    z = x0 - lr * g
    closed = np.maximum(np.sign(z) * np.maximum(np.abs(z) - lr * lam, 0), 0)
    np.testing.assert_allclose(_np(v), closed, atol=1e-7)
    # second step: extrapolation with alpha_1 = 1, alpha_2 = (1+sqrt5)/2
    x1 = _np(v).copy()
    opt.apply([g], [v])
    a2 = (1 + np.sqrt(1 + 4 * 1.0)) / 2
    y = x1 + (1.0 - 1.0) / a2 * (x1 - x0)
    np.testing.assert_allclose(_np(v), np.maximum(y - lr * g - lr * lam, 0),
                               atol=1e-7)
    # third step uses (alpha_2 - 1) / alpha_3 * (x2 - x1)
    x2 = _np(v).copy()
    opt.apply([-g], [v])
    a3 = (1 + np.sqrt(1 + 4 * a2 ** 2)) / 2
    y = x2 + (a2 - 1) / a3 * (x2 - x1)
    np.testing.assert_allclose(_np(v), np.maximum(y + lr * g - lr * lam, 0),
                               atol=1e-6)


def test_fista_every_mask_step_and_reset_on_lr_decay():
    v = keras.Variable(np.array([1.0, 1.0], "float32"))
    lr = keras.Variable(0.1)
    opt = FISTA(lambda: lr.value, lam=0.0, mask_step=3)
    g = np.array([1.0, 2.0], "float32")
    seen = []
    for _ in range(6):
        opt.apply([g], [v])
        seen.append(_np(v).copy())
    np.testing.assert_array_equal(seen[0], [1.0, 1.0])  # steps 1, 2 skip
    np.testing.assert_allclose(seen[2], [0.9, 0.8], atol=1e-7)
    np.testing.assert_array_equal(seen[3], seen[2])
    lr.assign(0.01)  # a decay: alpha = 1, no extrapolation
    for _ in range(3):
        opt.apply([g], [v])
    np.testing.assert_allclose(_np(v), seen[5] - 0.01 * g, atol=1e-6)


def test_apply_gal_structures_and_identity():
    model = _residual()
    x = _x()
    blocks = apply_gal(model, "blocks")
    assert sorted(gal_masks(blocks)) == ["gal_mask_add1", "gal_mask_add2"]
    # the branch of add2 is c (one conv), the shortcut x (none)
    add2 = blocks.get_layer("add2")
    assert add2.input[1].name != add2.input[0].name
    channels = apply_gal(model, "channels")
    masks = gal_masks(channels)
    assert all(m.shape == (8,) or m.shape == (16,) for m in masks.values())
    assert {"gal_mask_stem", "gal_mask_a"} <= set(masks)
    for student in (blocks, channels):
        np.testing.assert_array_equal(_np(student(x)), _np(model(x)))


@pytest.mark.parametrize("structures", ["blocks", "channels"])
def test_strip_zero_masks_leaves_logits_unchanged(structures):
    keras.utils.set_random_seed(1)
    model = _residual()
    student = apply_gal(model, structures)
    rng = np.random.default_rng(0)
    for layer in student.layers:
        if isinstance(layer, SoftMask):
            m = rng.uniform(0.2, 1.5, size=layer.mask.shape)
            if structures == "channels":
                m[::2] = 0.0
            elif layer.name == "gal_mask_add1":
                m = 0.0
            layer.mask.assign(np.asarray(m, "float32"))
    x = _x()
    small = strip_gal(student)
    assert not any(isinstance(lyr, SoftMask) for lyr in small.layers)
    np.testing.assert_allclose(_np(small(x)), _np(student(x)), atol=1e-4)
    # the library's one strip verb does the same for GAL students
    same = tfcomp.pruning.strip_pruning(student)
    np.testing.assert_allclose(_np(same(x)), _np(small(x)), atol=1e-6)
    names = {lyr.name for lyr in small.layers}
    if structures == "blocks":
        assert "a" not in names and "b" not in names and "c" in names
    else:
        assert small.get_layer("a").kernel.shape[-1] == 4
        assert small.get_layer("stem").kernel.shape[-1] == 4
    assert small.count_params() < model.count_params()


def _macs(model):
    return tfcomp.profile(model).macs


def _assign_masks(student, zero_every=2, seed=0):
    """Masks in [0.3, 1.5) with every ``zero_every``-th entry zero."""
    rng = np.random.default_rng(seed)
    for layer in student.layers:
        if isinstance(layer, SoftMask):
            m = rng.uniform(0.3, 1.5, size=layer.mask.shape)
            if m.ndim:
                m[::zero_every] = 0.0
            layer.mask.assign(np.asarray(m, "float32"))


def _sequential():
    """keras.io "Simple MNIST convnet" style, keras.Input first."""
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((12, 12, 1)),
        keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dropout(0.5),
        keras.layers.Dense(4)], name="seq")


def test_sequential_model_channels_strip_and_fit():
    model = _sequential()
    x = np.random.default_rng(0).normal(size=(16, 12, 12, 1)).astype(
        "float32")
    student = apply_gal(model, "channels")
    np.testing.assert_array_equal(_np(student(x)), _np(model(x)))
    # Flatten -> Dense: one mask entry per channel (tied over the pixels)
    assert sorted(m.shape for m in gal_masks(student).values()) == [
        (8,), (8,)]
    gal = GAL(student, model, lam=0.01, mask_step=1)
    gal.compile(keras.optimizers.SGD(0.01))
    hist = gal.fit(x, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(hist.history["loss"][0])
    _assign_masks(student)
    small = strip_gal(student)
    np.testing.assert_allclose(_np(small(x)), _np(student(x)), atol=1e-5)
    assert [lyr.kernel.shape[-1] for lyr in small.layers
            if isinstance(lyr, keras.layers.Conv2D)] == [4, 4]
    assert _macs(small) < _macs(model)
    with pytest.raises(ValueError, match="no blocks GAL can mask"):
        apply_gal(model, "blocks")


def _grouped(norm="bn"):
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu",
                            name="c1")(inp)
    # (GroupNormalization groups 4 adjacent channels, a grouped conv ties
    # channel c to c % 4: together all 16 would be one unit)
    groups = 4 if norm == "bn" else 1
    x = keras.layers.Conv2D(16, 3, padding="same", groups=groups,
                            use_bias=False, name="g1")(x)
    if norm == "bn":
        x = keras.layers.BatchNormalization(name="bn")(x)
    else:
        x = keras.layers.GroupNormalization(groups=4, name="gn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(32, 1, groups=groups, activation="relu",
                            name="g2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(4, name="head")(x))


def test_grouped_conv_consumer_masks_fold_and_strip():
    model = _grouped()
    x = _x()
    student = apply_gal(model, "channels")
    np.testing.assert_array_equal(_np(student(x)), _np(model(x)))
    # a grouped consumer (cin / groups = 4) ties channel c to unit c % 4
    mask = student.get_layer("gal_mask_c1")
    assert mask.mask.shape == (4,) and mask.units == (0, 1, 2, 3) * 4
    _assign_masks(student)  # units 0 and 2 of every group go
    small = strip_gal(student)
    np.testing.assert_allclose(_np(small(x)), _np(student(x)), atol=1e-5)
    assert small.get_layer("c1").kernel.shape[-1] == 8
    assert small.get_layer("g1").kernel.shape[-2:] == (2, 8)
    assert small.get_layer("g2").kernel.shape[-2:] == (2, 16)
    assert _macs(small) < _macs(model)


def test_group_norm_channels_share_a_mask_entry():
    model = _grouped("gn")
    x = _x()
    student = apply_gal(model, "channels")
    # GroupNormalization(4) over 16 channels: 4 channels per entry
    assert student.get_layer("gal_mask_g1").mask.shape == (4,)
    _assign_masks(student, zero_every=3)
    small = strip_gal(student)
    np.testing.assert_allclose(_np(small(x)), _np(student(x)), atol=1e-5)
    assert small.get_layer("gn").get_config()["groups"] == 2
    assert _macs(small) < _macs(model)


def test_separable_conv_consumer_mask_folds_into_depthwise():
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu",
                            name="c1")(inp)
    x = keras.layers.SeparableConv2D(8, 3, padding="same", name="sep")(x)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))
    model = keras.Model(inp, keras.layers.Dense(4, name="head")(x))
    student = apply_gal(model, "channels")
    assert {"gal_mask_c1", "gal_mask_sep"} <= set(gal_masks(student))
    _assign_masks(student)
    small = strip_gal(student)
    x = _x()
    np.testing.assert_allclose(_np(small(x)), _np(student(x)), atol=1e-5)
    assert small.get_layer("sep").depthwise_kernel.shape[-2] == 4
    assert _macs(small) < _macs(model)


def _resnet_block(x, filters, project, branch_first, plus=False):
    """keras.io-style: Conv-BN-ReLU-Conv-BN + (projected) shortcut (an
    ``Add`` layer, or ``y + s`` when ``plus``)."""
    s = x
    y = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    y = keras.layers.BatchNormalization()(y)
    y = keras.layers.Activation("relu")(y)
    y = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(y)
    y = keras.layers.BatchNormalization()(y)
    if project:
        s = keras.layers.Conv2D(filters, 1, use_bias=False)(s)
        s = keras.layers.BatchNormalization()(s)
    if plus:
        y = y + s if branch_first else s + y
    else:
        y = keras.layers.Add()([y, s] if branch_first else [s, y])
    return keras.layers.Activation("relu")(y)


def _user_resnet(project=False, branch_first=False, plus=False):
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = _resnet_block(x, 8, False, branch_first, plus)
    x = _resnet_block(x, 16 if project else 8, project, branch_first, plus)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(4)(x))


def _three_input_add():
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    a = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    a = keras.layers.Conv2D(8, 3, padding="same")(a)
    b = keras.layers.Conv2D(8, 1)(x)
    b = keras.layers.BatchNormalization()(keras.layers.Conv2D(8, 3,
                                          padding="same")(b))
    x = keras.layers.add([x, a, b])
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(4)(x))


@pytest.mark.parametrize("build,branches", [
    (lambda: _user_resnet(), [[1], [1]]),
    (lambda: _user_resnet(branch_first=True), [[0], [0]]),
    (lambda: _user_resnet(project=True), [[1], [1]]),
    (lambda: _user_resnet(project=True, branch_first=True), [[0], [0]]),
    (_three_input_add, [[1, 2]]),
    (lambda: _user_resnet(plus=True), [[1], [1]]),
    (lambda: _user_resnet(project=True, branch_first=True, plus=True),
     [[0], [0]]),
], ids=["identity", "branch_first", "projection", "projection_first",
        "add3", "plus", "plus_projection_first"])
def test_user_residual_blocks_strip(build, branches):
    from tfcomp.pruning.gal_sites import block_sites

    model = build()
    sites, _ = block_sites(model)
    assert [[i for i, _ in v] for v in sites.values()] == branches
    x = _x()
    for structures in ("blocks", "channels"):
        student = apply_gal(model, structures)
        np.testing.assert_array_equal(_np(student(x)), _np(model(x)))
        masks = [lyr for lyr in student.layers if isinstance(lyr, SoftMask)]
        if structures == "blocks":
            for i, lyr in enumerate(masks):  # every other branch goes
                lyr.mask.assign(0.0 if i % 2 == 0 else 0.7)
        else:
            _assign_masks(student)
        small = strip_gal(student)
        np.testing.assert_allclose(_np(small(x)), _np(student(x)),
                                   atol=1e-5)
        assert _macs(small) < _macs(model)


def test_gal_fit_on_user_residual_model():
    teacher = _user_resnet(project=True)
    x = _x(16)
    gal = GAL(apply_gal(teacher, "blocks"), teacher, lam=0.6, mask_step=1)
    gal.compile(keras.optimizers.SGD(0.05))
    hist = gal.fit(x, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(hist.history["loss"][-1])
    m = np.array(list(gal_masks(gal.student).values()))
    assert m.shape == (2,) and (m < 1.0).all() and (m >= 0.0).all()
    small = strip_gal(gal.student)
    np.testing.assert_allclose(_np(small(x)), _np(gal.student(x)),
                               atol=1e-5)


def test_soft_mask_units():
    layer = SoftMask(units=[0, 1, 0, 1], name="tied")
    y = layer(np.ones((2, 3, 4), "float32"))
    assert layer.mask.shape == (2,) and y.shape == (2, 3, 4)
    layer.mask.assign(np.array([0.5, 2.0], "float32"))
    np.testing.assert_allclose(_np(layer(np.ones((1, 4), "float32"))),
                               [[0.5, 2.0, 0.5, 2.0]])
    np.testing.assert_allclose(layer.channel_mask(), [0.5, 2.0, 0.5, 2.0])
    same = SoftMask.from_config(layer.get_config())
    assert same.units == (0, 1, 0, 1)
    with pytest.raises(ValueError, match="units must use each"):
        SoftMask(units=[0, 2])
    with pytest.raises(ValueError, match="units needs per_channel"):
        SoftMask(per_channel=False, units=[0])
    with pytest.raises(TypeError, match="units must be a sequence"):
        SoftMask(units=3)
    with pytest.raises(ValueError, match="units has 4 entries"):
        SoftMask(units=[0, 1, 0, 1])(np.ones((1, 3), "float32"))


def _tiny():
    inp = keras.Input((3,))
    return keras.Model(inp, keras.layers.Dense(2, name="fc")(
        SoftMask(name="m")(inp)), name="tiny")


def _softplus(z):
    return np.logaddexp(0.0, z)


def _mlp(d, z):
    for layer in d.layers[1:]:
        w, b = (_np(v) for v in layer.weights)
        z = z @ w + b
        if layer.get_config()["activation"] == "relu":
            z = np.maximum(z, 0)
    return z


def test_losses_equal_hand_computation():
    keras.utils.set_random_seed(3)
    teacher = keras.Model(*(lambda i: (i, keras.layers.Dense(2)(i)))(
        keras.Input((3,))))
    student = _tiny()
    gal = GAL(student, teacher, lam=0.3, mu=2.0, mask_step=1)
    x = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
    t, s = _np(teacher(x)), _np(student(x))
    d = gal.discriminator
    dt, ds = _mlp(d, t), _mlp(d, s)
    d_hand = _softplus(-dt).mean() + _softplus(ds).mean()
    got = {k: float(v) for k, v in gal.losses_on(x).items()}
    assert got["d_loss"] == pytest.approx(d_hand, rel=1e-5)
    assert got["mse"] == pytest.approx(2.0 * ((t - s) ** 2).mean(), rel=1e-5)
    assert got["adv"] == pytest.approx(_softplus(-ds).mean(), rel=1e-5)
    assert got["sparse"] == pytest.approx(0.3 * 3.0, rel=1e-6)
    # one training step: the logged terms are these, D updated first
    gal.compile(keras.optimizers.SGD(0.1))
    hist = gal.fit(x, batch_size=8, epochs=1, verbose=0, shuffle=False)
    assert hist.history["d_loss"][0] == pytest.approx(d_hand, rel=1e-5)
    assert hist.history["mse"][0] == pytest.approx(got["mse"], rel=1e-5)
    adv_new = _softplus(-_mlp(d, s)).mean()  # new D on the old student
    assert hist.history["adv"][0] == pytest.approx(adv_new, rel=1e-5)
    # the mask statistics logged are those of the masks after the step
    m = np.concatenate([np.ravel(v) for v in gal_masks(student).values()])
    assert hist.history["mask_mean"][0] == pytest.approx(m.mean(), rel=1e-5)
    assert hist.history["mask_std"][0] == pytest.approx(m.std(), abs=1e-6)
    assert hist.history["zero_masks"][0] == (m == 0).sum()
    # the user's teacher is left trainable and unchanged (GAL freezes a copy)
    assert teacher.trainable and len(teacher.trainable_weights) == 2
    np.testing.assert_array_equal(_np(teacher(x)), t)


@pytest.mark.slow
def test_larger_lambda_zeroes_more_masks():
    x = _x(32)
    zeros, means = [], []
    for lam in (0.0, 1.0, 20.0):
        keras.utils.set_random_seed(0)
        teacher = _residual()
        student = apply_gal(teacher, "channels")
        rng = np.random.default_rng(0)
        for layer in student.layers:  # spread masks: small ones go first
            if isinstance(layer, SoftMask):
                layer.mask.assign(rng.uniform(0.1, 2.0, layer.mask.shape)
                                  .astype("float32"))
        gal = GAL(student, teacher, lam=lam, mask_step=1)
        gal.compile(keras.optimizers.SGD(0.1))
        gal.fit(x, batch_size=16, epochs=2, verbose=0, shuffle=False)
        zeros.append(sum(int((m == 0).sum())
                         for m in gal_masks(gal.student).values()))
        means.append(np.mean(np.concatenate(
            list(gal_masks(gal.student).values()))))
    assert zeros[0] == 0 and zeros[0] <= zeros[1] <= zeros[2] == 32
    assert 0 < zeros[1] < 32 and means[0] > means[1] > means[2] == 0.0
    assert all(m.min() >= 0 for m in gal_masks(gal.student).values())


def test_errors():
    teacher = _residual()
    student = apply_gal(teacher, "blocks")
    with pytest.raises(ValueError, match="lam must be"):
        GAL(student, teacher, lam=-0.1)
    with pytest.raises(ValueError, match="teacher outputs must match"):
        GAL(student, _residual(classes=5))
    with pytest.raises(ValueError, match="no GAL soft masks"):
        GAL(teacher, teacher)
    with pytest.raises(ValueError, match="mask_step"):
        GAL(student, teacher, mask_step=0)
    with pytest.raises(ValueError, match="structures must be"):
        apply_gal(teacher, "layers")
    with pytest.raises(ValueError, match="no GAL soft masks"):
        strip_gal(teacher)
    with pytest.raises(ValueError, match="lam must be"):
        FISTA(0.1, lam=-1.0)
    gal = GAL(student, teacher)
    assert gal.lam == 0.6  # the paper's ResNet-56 (block masks) value


@pytest.mark.slow
def test_resume_from_keras_save_matches_uninterrupted(tmp_path):
    x = _x(32)
    keras.utils.set_random_seed(0)
    teacher = _residual()
    gal = GAL(apply_gal(teacher, "channels"), teacher, lam=0.05,
              mask_step=3)
    gal.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                metrics=["sparse_categorical_accuracy"])
    y = np.arange(32) % 4
    gal.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    path = os.path.join(tmp_path, "gal.keras")
    gal.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(_np(loaded(x)), _np(gal(x)))
    for a, b in ((gal.optimizer, loaded.optimizer),
                 (gal.mask_optimizer, loaded.mask_optimizer),
                 (gal.d_optimizer, loaded.d_optimizer)):
        assert len(a.variables) == len(b.variables)
        for u, v in zip(a.variables, b.variables):
            np.testing.assert_array_equal(_np(u), _np(v))
    for model in (gal, loaded):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    np.testing.assert_allclose(_np(loaded(x)), _np(gal(x)), atol=1e-5)
    for a, b in zip(gal_masks(gal.student).values(),
                    gal_masks(loaded.student).values()):
        np.testing.assert_allclose(a, b, atol=1e-6)


# run_mirrored puts _mirrored.PRELUDE (json, os, tf, keras, np) first
_MIRRORED = """
    from tfcomp.pruning.gal import GAL, apply_gal, gal_masks, strip_gal
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(32, 8, 8, 3)).astype("float32")

    def net():
        inp = keras.Input((8, 8, 3))
        x = keras.layers.Conv2D(8, 3, padding="same", name="a")(inp)
        x = keras.layers.BatchNormalization(name="a_bn")(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.Conv2D(8, 3, padding="same", name="b")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        return keras.Model(inp, keras.layers.Dense(4, name="fc")(x))

    def run(strategy):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            teacher = net()
            gal = GAL(apply_gal(teacher, "channels"), teacher, lam=1.0,
                      mask_step=1)
            gal.compile(keras.optimizers.SGD(0.1))
        gal.fit(xs, batch_size=16, epochs=2, verbose=0, shuffle=False)
        return gal

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    gal = run(mirrored)
    one = run(tf.distribute.OneDeviceStrategy("/cpu:0"))
    masks = np.concatenate([m.ravel()
                            for m in gal_masks(gal.student).values()])
    masks1 = np.concatenate([m.ravel()
                             for m in gal_masks(one.student).values()])
    first = gal.mask_variables()[0]
    half = np.arange(first.shape[0]) % 2
    first.assign(np.where(half, first.numpy(), 0.0).astype("float32"))
    small = strip_gal(gal.student)
    print(json.dumps({
        "replicas": mirrored.num_replicas_in_sync,
        "mirrored": type(gal.mask_variables()[0].value).__name__,
        "mask_diff": float(np.abs(masks - masks1).max()),
        "moved": float(np.abs(masks1 - 1.0).min()),
        "kept": int(small.get_layer("a").kernel.shape[-1]),
        "err": float(np.abs(keras.ops.convert_to_numpy(small(xs))
                            - keras.ops.convert_to_numpy(gal(xs))).max())}))
"""

@pytest.mark.slow
def test_mirrored_strategy_two_replicas():
    res = run_mirrored(_MIRRORED)
    assert res["replicas"] == 2
    assert res["mirrored"] == "MirroredVariable"
    # the two replicas' gradients are averaged: same masks as one device
    assert res["mask_diff"] < 1e-4 and res["moved"] > 0.05
    assert res["kept"] == 4 and res["err"] < 1e-4


def _bn_chain(classes=4):
    """conv -> BN -> ReLU -> conv -> BN -> ReLU -> GAP -> Dense: the first
    conv's channel mask is read only by a BN-followed conv."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(8, 3, padding="same", name="c1")(inp)
    h = keras.layers.ReLU()(keras.layers.BatchNormalization()(h))
    h = keras.layers.Conv2D(8, 3, padding="same", name="c2")(h)
    h = keras.layers.ReLU()(keras.layers.BatchNormalization()(h))
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inp, keras.layers.Dense(classes)(h))


def test_inference_mask_gradient_sees_a_uniform_mask_scale():
    """The root cause mask_gradient="inference" fixes: on the training
    forward pass BatchNormalization normalises a uniform scale of a mask
    away (its directional derivative along m is ~0); on the inference pass
    it reaches the loss."""
    import tensorflow as tf

    teacher = _bn_chain()
    x = _x()
    tfcomp.pruning.recalibrate_batchnorm(teacher, x)
    student = apply_gal(teacher, "channels")
    gal = GAL(student, teacher, lam=0.0, mask_step=1)
    gal.compile(keras.optimizers.SGD(0.01))
    masks = gal.mask_variables()
    first = next(i for i, lyr in enumerate(gal._mask_layers)
                 if "c1" in lyr.name)
    masks[first].assign(0.5 * np.ones(masks[first].shape, "float32"))
    t = keras.ops.convert_to_numpy(gal.teacher(x, training=False))
    with tf.GradientTape() as tape:
        s = student(x, training=True)
        terms = gal._student_terms(t, s)
        loss = terms["mse"] + terms["adv"]
    g_train = tape.gradient(loss, masks)[first]
    g_inf = gal._inference_mask_grads(x, t, 1.0, masks)[first]
    m = _np(masks[first])
    along_train = abs(float(np.sum(m * _np(g_train))))
    along_inf = abs(float(np.sum(m * _np(g_inf))))
    # scaling the mask back up towards 1 lowers the loss: seen only there
    assert along_inf > 1e-3 and along_inf > 50 * along_train, (
        along_inf, along_train)


def test_mask_gradient_argument():
    teacher = _bn_chain()
    with pytest.raises(ValueError, match="mask_gradient"):
        GAL(apply_gal(teacher), teacher, mask_gradient="eval")
    gal = GAL(apply_gal(teacher), teacher, mask_gradient="training")
    assert gal.get_config()["mask_gradient"] == "training"
    # between FISTA steps the inference pass is skipped: zero gradients
    gal2 = GAL(apply_gal(teacher), teacher, lam=0.0, mask_step=3)
    gal2.compile(keras.optimizers.SGD(0.01))
    x = _x()
    t = keras.ops.convert_to_numpy(gal2.teacher(x, training=False))
    grads = gal2._inference_mask_grads(x, t, 1.0, gal2.mask_variables())
    assert all(np.all(_np(g) == 0) for g in grads)


def test_macs_weighted_l1_weights_and_threshold():
    """lam_weights="macs" (not the paper's): an entry weighs its channel's
    MACs over the mean entry; FISTA's threshold is lr * lam * weight."""
    from tfcomp.graph import DependencyGraph
    from tfcomp.pruning.targets import ChannelMacs

    teacher = _bn_chain()
    student = apply_gal(teacher, "channels")
    gal = GAL(student, teacher, lam=0.5, mask_step=1, lam_weights="macs")
    cost = ChannelMacs(DependencyGraph(teacher))
    per_unit = {g: cost.dense - cost.removed_macs({g: [0]})
                for g in ("c1", "c2")}
    w = {lyr.name: _np(v) for lyr, v in zip(gal._mask_layers,
                                             gal._l1_weights)}
    assert np.isclose(np.mean(np.concatenate(list(w.values()))), 1.0)
    assert np.allclose(w["gal_mask_c1"] / w["gal_mask_c2"],
                       per_unit["c1"] / per_unit["c2"])
    gal.compile(keras.optimizers.SGD(0.1))
    masks = gal.mask_variables()
    gal.mask_optimizer.apply([keras.ops.zeros_like(m) for m in masks], masks)
    for lyr, m in zip(gal._mask_layers, masks):
        want = np.maximum(1.0 - 0.1 * 0.5 * w[lyr.name], 0.0)
        np.testing.assert_allclose(_np(m), want, rtol=1e-6)
    with pytest.raises(ValueError, match="lam_weights"):
        GAL(apply_gal(teacher), teacher, lam_weights="flops")
    with pytest.raises(ValueError, match="block masks"):
        blocks = apply_gal(_residual(), "blocks")
        GAL(blocks, _residual(), lam_weights="macs")


def test_channel_masks_skip_attention_query_key_channels():
    """A mask placed on the consumers after an Attention layer is not a
    removed query / key channel (the channel still adds to the scores):
    GAL skips the group with a reason and masks the others."""
    from tfcomp.pruning.gal_sites import channel_sites

    tokens = keras.Input((6,), dtype="int32")
    emb = keras.layers.Embedding(20, 8, name="emb")(tokens)
    q = keras.layers.Conv1D(8, 1, name="q")(emb)
    v = keras.layers.Conv1D(8, 1, name="v")(emb)
    a = keras.layers.Attention(name="att")([q, v])
    out = keras.layers.Dense(3, name="head")(
        keras.layers.GlobalAveragePooling1D()(a))
    sites, skipped = channel_sites(keras.Model(tokens, out))
    assert "attention scores" in skipped["q"]
    assert "q" in sites  # the embedding group, read by q and v
