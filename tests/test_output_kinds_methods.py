"""Binary and regression models through the methods whose losses assumed a
multi-class softmax: slimmable in-place distillation (a softmax over one
unit is 1: the smaller widths learned nothing), AutoSlim, DCP, MetaPruning,
DNAS, the pruning-loss sensitivity and Taylor importance. Each picks its
loss from the labels and the model (``tfcomp._finetune``), one rule for
all."""

import keras
import numpy as np
import pytest

import tfcomp
from tfcomp._finetune import task_loss
from tfcomp.pruning import dcp_prune, set_width, to_slimmable
from tfcomp.pruning.autoslim import autoslim


def _images(n=192, seed=0):
    return np.random.default_rng(seed).normal(
        size=(n, 8, 8, 3)).astype("float32")


def _binary_labels(x):
    return (x[..., 0].mean((1, 2)) > 0).astype("int32")


def _targets(x):
    return (np.stack([x[..., 0].mean((1, 2)), x[..., 1].mean((1, 2))], -1)
            * 8).astype("float32")


def _net(units, activation=None, bn=True, width=8):
    """A small keras.io-style CNN ending in ``units`` outputs."""
    inp = keras.Input((8, 8, 3))
    h = inp
    for i in range(2):
        h = keras.layers.Conv2D(width, 3, padding="same", use_bias=not bn,
                                name=f"conv{i}")(h)
        if bn:
            h = keras.layers.BatchNormalization(name=f"bn{i}")(h)
        h = keras.layers.ReLU()(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    out = keras.layers.Dense(units, activation=activation, name="head")(h)
    return keras.Model(inp, out)


def test_slimmable_binary_logit_smallest_width_learns():
    keras.utils.set_random_seed(0)
    x = _images(384)
    y = _binary_labels(x)
    model = _net(1, bn=False, width=16)
    model.compile(keras.optimizers.Adam(3e-3),
                  keras.losses.BinaryCrossentropy(from_logits=True))
    slim = to_slimmable(model, widths=(0.25, 1.0))
    assert slim.distill_kind == "binary" and slim.from_logits
    slim.fit(x, y, epochs=12, batch_size=32, verbose=0)
    accs = []
    for w in (1.0, 0.25):
        set_width(slim, w)
        accs.append(float(np.mean(
            (slim.predict(x, verbose=0)[:, 0] > 0) == y)))
    # softmax in-place distillation left width 0.25 at chance
    assert accs[0] > 0.8 and accs[1] > 0.75, accs


def test_slimmable_kinds_read_from_model_and_kept_by_keras_file(tmp_path):
    sig = _net(1, "sigmoid")
    slim = to_slimmable(sig, widths=(0.5, 1.0))
    assert slim.distill_kind == "binary" and not slim.from_logits
    reg = _net(2)
    reg.compile("adam", "mse")
    slim = to_slimmable(reg, widths=(0.5, 1.0))
    assert slim.distill_kind == "regression"
    path = str(tmp_path / "slim.keras")
    slim.save(path)
    back = keras.saving.load_model(path)
    assert back.distill_kind == "regression"
    assert to_slimmable(_net(4), widths=(0.5, 1.0)).distill_kind == \
        "classification"
    with pytest.raises(ValueError, match="distill_kind"):
        to_slimmable(_net(4), widths=(0.5, 1.0), distill_kind="ranking")
    with pytest.raises(ValueError, match="one output unit"):
        to_slimmable(_net(1), widths=(0.5, 1.0),
                     distill_kind="classification")


def test_slimmable_regression_trains_every_width():
    keras.utils.set_random_seed(0)
    x = _images(256)
    y = _targets(x)
    model = _net(2)
    model.compile("adam", "mse")
    slim = to_slimmable(model, widths=(0.5, 1.0))
    hist = slim.fit(x, y, epochs=2, batch_size=32, verbose=0)
    assert np.all(np.isfinite(hist.history["loss"]))


def test_autoslim_takes_targets_and_binary_labels():
    x = _images(128)
    for model, y in ((_net(2), _targets(x)), (_net(1), _binary_labels(x))):
        res = autoslim(model, (x, y), target_macs=(0.5,), step=0.25,
                       batches=2, batch_size=32)
        assert res.architectures[0.5]["macs"] <= 0.5 * res.dense_macs


@pytest.mark.parametrize("units,activation,labels", [
    (1, None, "binary"), (1, "sigmoid", "binary"), (2, None, "targets")])
def test_dcp_prunes_binary_and_regression_models(units, activation, labels):
    x = _images(128)
    y = _binary_labels(x) if labels == "binary" else _targets(x)
    model = _net(units, activation)
    small, plan = dcp_prune(model, (x, y), target_macs=0.6, sgd_steps=1,
                            head_epochs=1, finetune_epochs=0,
                            batch_size=32, eval_batches=1, grad_batches=1,
                            verbose=0)
    assert tfcomp.profile(small).macs <= 0.6 * tfcomp.profile(model).macs
    assert small.output_shape == model.output_shape


def test_dnas_search_reports_its_losses_and_takes_binary_labels():
    from tfcomp.quantization import dnas

    x = _images(96)
    for units, y in ((4, np.arange(96) % 4), (1, _binary_labels(x))):
        inp = keras.Input((8, 8, 3))
        h = keras.layers.Conv2D(4, 3, activation="relu")(inp)
        h = keras.layers.Conv2D(4, 3, activation="relu")(h)
        h = keras.layers.Flatten()(h)
        sn = dnas.build_supernet(keras.Model(inp, keras.layers.Dense(units)(h)))
        hist = dnas.search(sn, x, y, epochs=1, batch_size=32, verbose=0)
        first = hist["epochs"][0]
        assert first["weight_loss"] > 0 and first["theta_loss"] > 0


def test_metaprune_binary_and_softmax_models():
    from tfcomp.tuners.metapruning import metaprune

    x = _images(96)
    y = _binary_labels(x)
    for model in (_net(1), _net(2, "softmax")):
        plan = metaprune(model, (x, y), (x[:32], y[:32]), target_macs=0.6,
                         epochs=1, batch_size=32, bn_samples=32, verbose=0,
                         population=4, generations=1, lower=0.3)
        assert 0.0 <= plan.meta["fitness"] <= 1.0


def test_loss_criteria_read_the_labels_of_an_uncompiled_model():
    from tfcomp.pruning.importance import Taylor
    from tfcomp.pruning.prune_sensitivity import sensitivity

    x = _images(64)
    y = _binary_labels(x)
    binary = _net(1)
    binary.compile("adam", keras.losses.BinaryCrossentropy(from_logits=True))
    binary.fit(x, y, epochs=3, verbose=0)
    binary.compile()  # no loss, as a pruned copy
    loss = task_loss(binary, y)
    assert isinstance(loss, keras.losses.BinaryCrossentropy)
    soft = _net(3, "softmax")
    fn = Taylor((x, y))._loss_fn(soft)
    assert fn.get_config()["from_logits"] is False
    s = sensitivity(binary, (x, y), ratios=(0.5,), method="loss",
                    batch_size=32, num_samples=64)
    assert np.max(s.table) > 0  # sparse CE over one unit: all zeros


def test_hessian_sensitivity_of_a_one_unit_model_is_not_zero():
    from tfcomp.quantization.sensitivity import sensitivity

    x = _images(64)
    binary = _net(1, bn=False)
    for data in (x, (x, _binary_labels(x))):  # own outputs, or 0 / 1 labels
        s = sensitivity(binary, data, method="hessian", bits=(4,),
                        num_samples=32)
        # sparse CE over one unit (the old default) has a Hessian of 0
        assert max(s.value(n, 4) for n in s.layers) > 0


def test_binary_masks_shaped_like_a_sigmoid_output():
    """keras.io-style binary segmentation: (N, H, W, 1) 0/1 masks for a
    one-unit sigmoid head (refused as 'do not match the output' before)."""
    from tfcomp._class_labels import class_labels
    from tfcomp.tuners import HAQHyperModel

    x = _images(64)
    masks = (x[..., :1] > 0).astype("int32")
    inp = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(h)
    model = keras.Model(inp, keras.layers.Conv2D(1, 1, activation="sigmoid")(h))
    assert class_labels(masks, model, "y").shape == (64, 8, 8)
    assert class_labels(masks.astype("float32"), model, "y").shape == (
        64, 8, 8)
    small, _ = dcp_prune(model, (x, masks), target_macs=0.6, sgd_steps=1,
                         head_epochs=1, finetune_epochs=0, batch_size=32,
                         eval_batches=1, grad_batches=1, verbose=0)
    assert small.output_shape == model.output_shape
    hm = HAQHyperModel(model, (x, masks), (x, masks), resource="bops",
                       budget=0.5, finetune_steps=1, batch_size=32)
    values = {n: 4 for n in hm.hyperparameter_names}
    acc = hm.fit(values, hm.build(values))["accuracy"]
    assert 0.0 <= acc <= 1.0  # per-pixel: the side of 0.5


def test_multi_label_tags_of_a_sigmoid_head():
    """Multi-label tagging (a K-unit sigmoid, 0/1 per tag): the labels stay
    one per unit (a row with one tag is not read as a one-hot class), the
    methods train them with a binary cross-entropy."""
    from tfcomp._class_labels import class_labels

    x = _images(64)
    tags = np.stack([x[..., c].mean((1, 2)) > 0 for c in range(3)],
                    -1).astype("int32")
    tags[0] = [0, 1, 0]  # one tag only: still multi-label, not a class
    model = _net(3, "sigmoid")
    got = class_labels(tags, model, "y")
    assert got.shape == (64, 3) and got[0].tolist() == [0, 1, 0]
    np.testing.assert_array_equal(
        class_labels(np.eye(3)[[0, 2]], _net(3, "softmax"), "y"), [0, 2])
    assert isinstance(task_loss(model, got), keras.losses.BinaryCrossentropy)
    small, _ = dcp_prune(model, (x, tags.astype("float32")), target_macs=0.6,
                         sgd_steps=1, head_epochs=1, finetune_epochs=0,
                         batch_size=32, eval_batches=1, grad_batches=1,
                         verbose=0)
    assert small.output_shape == model.output_shape


def test_loss_sensitivities_of_a_model_compiled_with_a_loss_function():
    """keras.io's binary classifier, compiled with the string
    ``"binary_crossentropy"`` (a plain function, not a ``Loss``) and
    labelled ``(N,)`` for its ``(N, 1)`` output: ``fit`` aligns the ranks,
    the loss criteria must too (they raised 'must have the same rank')."""
    from tfcomp.pruning.prune_sensitivity import sensitivity as prune_sens
    from tfcomp.quantization.sensitivity import sensitivity as quant_sens

    x = _images(64)
    y = _binary_labels(x)
    model = _net(1, "sigmoid", bn=False)
    model.compile(keras.optimizers.Adam(1e-2), "binary_crossentropy")
    model.fit(x, y, epochs=8, verbose=0)
    fn = task_loss(model, y)
    out = model.predict(x, verbose=0)
    want = keras.losses.BinaryCrossentropy()(y[:, None], out)
    np.testing.assert_allclose(float(np.mean(fn(y, out))), float(want),
                               rtol=1e-5)
    s = prune_sens(model, (x, y), ratios=(0.5,), method="loss",
                   batch_size=32, num_samples=64)
    assert np.all(np.isfinite(s.table)) and np.max(s.table) > 0
    q = quant_sens(model, (x, y), method="hessian", bits=(4,),
                   num_samples=32)
    assert max(q.value(n, 4) for n in q.layers) > 0
    res = autoslim(model, (x, y), target_macs=(0.5,), step=0.25, batches=2,
                   batch_size=32, loss="binary_crossentropy")
    assert res.architectures[0.5]["macs"] <= 0.5 * res.dense_macs
