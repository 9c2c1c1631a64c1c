"""Reconstruction inside nested models (keras.io's transfer-learning shape:
a functional backbone called as a layer): LASSO, AMC's per-layer step and
DCP prune and refit the backbone's own channels, and the pruned model keeps
its nesting."""

import keras
import numpy as np

import tfcomp
from tfcomp.graph import DependencyGraph
from tfcomp.pruning import dcp_prune, lasso_prune
from tfcomp.pruning.reconstruction import LayerwisePruner
from tfcomp.pruning.reconstruction.engine import reconstructible_groups

L = keras.layers


def _np(t):
    return np.asarray(keras.ops.convert_to_numpy(t))


def _transfer(training=False):
    keras.utils.set_random_seed(0)
    b_in = keras.Input((12, 12, 3))
    h = L.Conv2D(8, 3, padding="same", use_bias=False, name="b_conv1")(b_in)
    h = L.ReLU()(L.BatchNormalization(name="b_bn1")(h))
    r = L.Conv2D(8, 3, padding="same", name="b_conv2")(h)
    h = L.ReLU()(L.Add()([h, r]))
    h = L.Conv2D(16, 3, strides=2, padding="same", activation="relu",
                 name="b_conv3")(h)
    backbone = keras.Model(b_in, h, name="backbone")
    inputs = keras.Input((12, 12, 3))
    x = backbone(inputs, training=training)
    x = L.Conv2D(16, 1, activation="relu", name="neck")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, L.Dense(5, name="head")(x), name="transfer")


def _data(n=32):
    rng = np.random.default_rng(0)
    return (rng.normal(size=(n, 12, 12, 3)).astype("float32"),
            rng.integers(0, 5, size=n))


def test_backbone_groups_are_reconstructed_and_pruned_equals_masked():
    model = _transfer()
    x, _ = _data()
    graph = DependencyGraph(model)
    todo, skipped = reconstructible_groups(graph)
    assert not skipped, skipped
    assert any(g.id.startswith("backbone/") for g in todo)
    pruner = LayerwisePruner(model, x, todo, graph=graph)
    for g in todo:
        report = pruner.step(g, num_keep=max(1, g.size // 2))
        for errors in report["consumers"].values():
            assert errors["error"] <= errors["error_zeroed"] + 1e-6
    small = pruner.pruned_model()
    np.testing.assert_allclose(_np(small(x)), _np(pruner.work(x)),
                               atol=1e-5)
    assert isinstance(small.get_layer("backbone"), keras.Model)
    assert small.get_layer("backbone").get_layer("b_conv3").kernel.shape[
        -2] == 4
    assert tfcomp.profile(small).macs < tfcomp.profile(model).macs


def test_the_user_model_is_left_as_it_was():
    model = _transfer()
    x, _ = _data()
    config, weights = model.get_config(), model.get_weights()
    before = _np(model(x))
    lasso_prune(model, x, ratio=0.5, verbose=0)
    assert model.get_config() == config
    for a, b in zip(model.get_weights(), weights):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(_np(model(x)), before)
    # the reconstruction re-called only its copy's layers
    inner = model.get_layer("backbone").get_layer("b_conv2")
    assert tuple(inner.input.shape) == (None, 12, 12, 8)


def test_lasso_amc_and_dcp_prune_inside_the_backbone():
    model = _transfer()
    x, y = _data()
    res = lasso_prune(model, x, ratio=0.5, verbose=0)
    assert not res.report["skipped"], res.report["skipped"]
    assert any(k.startswith("backbone/") for k in res.plan.removed)
    from tfcomp.tuners.amc import AMCHyperModel
    hm = AMCHyperModel(model, x, (x, y), budget=0.5, round_to=1,
                       max_images=8)
    values, _, _ = hm.space.rollout(lambda s: [0.3])
    small, plan = hm.prune(values)
    assert any(k.startswith("backbone/") for k in plan.removed)
    np.testing.assert_allclose(_np(small(x)), _np(hm._engine().work(x)),
                               atol=1e-5)
    dcp = dcp_prune(model, (x, y), 0.5, num_stages=2, finetune_epochs=1,
                    head_epochs=1, sgd_steps=1, verbose=0)
    assert any(k.startswith("backbone/") for k in dcp.plan.removed)
    assert dcp.report["stage_ends"][0].startswith("backbone/")
    assert isinstance(dcp.model.get_layer("backbone"), keras.Model)
    assert tfcomp.profile(dcp.model).macs < tfcomp.profile(model).macs
    assert np.all(np.isfinite(_np(dcp.model(x))))
