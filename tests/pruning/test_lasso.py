"""lasso_prune: whole-model LASSO / L1 / random selection + LS refit."""

import keras
import numpy as np
import pytest

import tfcomp
from tfcomp.graph import DependencyGraph
from tfcomp.pruning.lasso import calibration_data, lasso_prune
from tfcomp.pruning.plan import Plan, estimate_macs
from tfcomp.pruning.result import PruneResult


def _randomize_bn(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([
                rng.uniform(0.5, 1.5, c).astype("float32"),
                rng.normal(0, 0.1, c).astype("float32"),
                rng.normal(0, 0.2, c).astype("float32"),
                rng.uniform(0.5, 2.0, c).astype("float32")])
    return model


def _tiny_resnet():
    m = tfcomp.zoo.resnet(depth=8, width=4, input_shape=(12, 12, 1))
    return _randomize_bn(m)


def _planted_model(seed=0):
    """conv1 (1x1) makes 4 triples (a, b, a + b) and 4 independent channels;
    conv2 reads them with one large kernel per triple (3, 3, 2.5 scale) and
    small kernels for the independent ones. No nonlinearity in between, so
    the 4 sums can stand for the triples exactly."""
    rng = np.random.default_rng(seed)
    inp = keras.Input((8, 8, 12), name="input")
    h = keras.layers.Conv2D(16, 1, use_bias=False, name="conv1")(inp)
    o = keras.layers.Conv2D(6, 3, padding="same", use_bias=False,
                            name="conv2")(h)
    o = keras.layers.ReLU(name="relu")(o)
    o = keras.layers.GlobalAveragePooling2D(name="gap")(o)
    out = keras.layers.Dense(3, name="logits")(o)
    model = keras.Model(inp, out)
    k1 = np.zeros((1, 1, 12, 16), "float32")
    k2 = np.zeros((3, 3, 16, 6), "float32")
    for t in range(4):
        a, b = 2 * t, 2 * t + 1
        k1[0, 0, a, 3 * t] = 1.0
        k1[0, 0, b, 3 * t + 1] = 1.0
        k1[0, 0, [a, b], 3 * t + 2] = 1.0
        u = rng.normal(size=(3, 3, 6))
        for j, s in enumerate((3.0, 3.0, 2.5)):
            k2[:, :, 3 * t + j, :] = s * u
    for t in range(4):
        k1[0, 0, 8 + t, 12 + t] = 1.0
        k2[:, :, 12 + t, :] = 0.3 * rng.normal(size=(3, 3, 6))
    model.get_layer("conv1").kernel.assign(k1)
    model.get_layer("conv2").kernel.assign(k2)
    kind = np.array(["a", "b", "sum"] * 4 + ["ind"] * 4)
    x = rng.normal(size=(40, 8, 8, 12)).astype("float32")
    return model, x, kind


def test_planted_model_lasso_beats_l1_beats_random():
    model, x, kind = _planted_model()
    ref = keras.ops.convert_to_numpy(model(x))
    res = {}
    for sel in ("lasso", "l1"):
        result = lasso_prune(model, x, {"conv1": 0.5}, selector=sel,
                             verbose=0)
        small, plan = result
        res[sel] = (result.report["groups"]["conv1"]["consumers"]["conv2"]
                    ["error"])
        assert small.get_layer("conv1").filters == 8
        assert small.get_layer("conv2").kernel.shape == (3, 3, 8, 6)
        if sel == "lasso":
            kept = kind[plan.kept("conv1")]
            out = keras.ops.convert_to_numpy(small(x))
    rand = np.mean([lasso_prune(model, x, {"conv1": 0.5}, selector="random",
                                seed=s, verbose=0).report
                    ["groups"]["conv1"]["consumers"]["conv2"]["error"]
                    for s in range(4)])
    assert res["lasso"] < res["l1"] < rand
    assert res["lasso"] < 1e-3
    assert (kept == "sum").sum() == 4
    # the reconstruction is (nearly) exact, so the logits survive pruning
    np.testing.assert_allclose(out, ref, atol=1e-2 * np.abs(ref).max())


def test_coupled_residual_groups_stay_consistent():
    model = _tiny_resnet()
    x = np.random.default_rng(0).random((24, 12, 12, 1)).astype("float32")
    result = lasso_prune(model, x, ratio=0.5, samples_per_image=4, verbose=0)
    (small, plan), info = result, result.report
    graph = DependencyGraph(model)
    for g in graph.prunable_groups:
        want = g.size - g.size // 2
        assert len(plan.kept(g.id)) == want
        for m in g.producers:  # every branch of a residual sum agrees
            assert small.get_layer(m.layer).filters == want
    assert small.get_layer("s2b1_proj").filters == \
        small.get_layer("s2b1_conv2").filters
    assert small(x).shape == (24, 10)
    assert tfcomp.profile(small).macs == plan.meta["macs_after"] == \
        estimate_macs(graph, plan) < plan.meta["macs_before"]
    # the coupled stem group was selected jointly for all its consumers
    cons = info["groups"]["stem_conv"]["consumers"]
    assert {"s1b1_conv1", "s2b1_conv1", "s2b1_proj"} <= set(cons)
    for c in cons.values():
        assert c["error"] <= c["error_zeroed"] + 1e-9


def test_ratio_zero_reproduces_model_and_seed_is_deterministic():
    model = _tiny_resnet()
    x = np.random.default_rng(1).random((16, 12, 12, 1)).astype("float32")
    small, plan = lasso_prune(model, x, ratio=0.0, samples_per_image=6,
                              verbose=0)
    assert plan.num_removed() == 0
    ref = keras.ops.convert_to_numpy(model(x))
    out = keras.ops.convert_to_numpy(small(x))
    np.testing.assert_allclose(out, ref, atol=1e-3 * np.abs(ref).max())
    a = lasso_prune(model, x, {"s1b1_conv1": 0.5}, selector="random",
                    seed=3, verbose=0)[1]
    b = lasso_prune(model, x, {"s1b1_conv1": 0.5}, selector="random",
                    seed=3, verbose=0)[1]
    assert a.removed == b.removed


def test_target_macs_and_progress(capsys):
    model = _tiny_resnet()
    x = np.random.default_rng(2).random((12, 12, 12, 1)).astype("float32")
    dense = tfcomp.profile(model).macs
    small, plan = lasso_prune(model, x, target_macs=0.6, selector="l1",
                              samples_per_image=3, verbose=1)
    assert tfcomp.profile(small).macs <= 0.6 * dense
    assert 0 < plan.meta["ratio"] < 1
    assert "group" in capsys.readouterr().out


def test_flatten_dense_consumer():
    model = _randomize_bn(tfcomp.zoo.vgg_small(width=4,
                                               input_shape=(16, 16, 1)))
    x = np.random.default_rng(3).random((20, 16, 16, 1)).astype("float32")
    result = lasso_prune(model, x, {"s3c2_conv": 0.5}, verbose=0)
    small, info = result.model, result.report
    # 2x2 spatial positions x 8 kept channels feed fc1
    assert small.get_layer("fc1").kernel.shape == (32, 128)
    assert info["groups"]["s3c2_conv"]["exact"]
    assert small(x).shape == (20, 10)


def test_errors():
    model = _tiny_resnet()
    x = np.zeros((4, 12, 12, 1), "float32")
    with pytest.raises(ValueError, match="empty"):
        lasso_prune(model, np.zeros((0, 12, 12, 1)), verbose=0)
    with pytest.raises(ValueError, match="empty"):
        lasso_prune(model, None, verbose=0)
    with pytest.raises(ValueError, match=r"shape \('N', 12, 12, 1\)"):
        lasso_prune(model, np.zeros((4, 10, 10, 1)), verbose=0)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\)"):
        lasso_prune(model, x, ratio=1.0, verbose=0)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\)"):
        lasso_prune(model, x, {"s1b1_conv1": 1.0}, verbose=0)
    with pytest.raises(ValueError, match="ratio"):
        lasso_prune(model, x, ratio=-0.1, verbose=0)
    with pytest.raises(ValueError, match="nope"):
        lasso_prune(model, x, {"nope": 0.5}, verbose=0)
    with pytest.raises(ValueError, match="not both"):
        lasso_prune(model, x, {"s1b1_conv1": 0.5}, target_macs=0.5,
                    verbose=0)
    with pytest.raises(ValueError, match="selector"):
        lasso_prune(model, x, selector="fpgm", verbose=0)
    with pytest.raises(TypeError):
        lasso_prune("model", x, verbose=0)


def test_calibration_data_forms():
    model = _tiny_resnet()
    x = np.random.default_rng(4).random((10, 12, 12, 1)).astype("float32")
    y = np.arange(10) % 3
    with pytest.warns(DeprecationWarning, match="as_arrays"):
        a, la = calibration_data((x, keras.utils.to_categorical(y, 10)),
                                 model)
    assert a.shape == (10, 12, 12, 1) and list(la) == list(y)
    batches = [(x[:4], y[:4]), (x[4:], y[4:])]
    b, lb = calibration_data(batches, model, max_images=6)
    assert b.shape == (6, 12, 12, 1) and list(lb) == list(y[:6])
    with pytest.raises(ValueError, match="labels"):
        calibration_data(x, model, need_labels=True)
    with pytest.raises(ValueError, match="one entry per"):
        calibration_data((x, y[:3]), model)
    assert isinstance(Plan, type)


def test_round_to_ignored_layers_and_result_shape():
    model = _tiny_resnet()
    x = np.random.default_rng(5).random((12, 12, 12, 1)).astype("float32")
    graph = DependencyGraph(model)
    result = lasso_prune(model, x, ratio=0.6, round_to=3, selector="l1",
                         samples_per_image=2, verbose=0,
                         ignored_layers=["s1b1_conv1"])
    assert isinstance(result, PruneResult) and len(result) == 2
    small, plan = result
    assert result.model is small and result.plan is plan
    assert "s1b1_conv1" not in result.report["groups"]
    assert plan.kept("s1b1_conv1") == list(range(graph.group(
        "s1b1_conv1").size))
    for gid in result.report["groups"]:
        size = graph.group(gid).size
        kept = len(plan.kept(gid))
        assert kept % 3 == 0 or kept == size
        assert kept < size
    assert plan.meta["round_to"] == 3


def test_deprecated_keywords():
    model = _tiny_resnet()
    x = np.random.default_rng(6).random((6, 12, 12, 1)).astype("float32")
    kw = dict(selector="l1", samples_per_image=1, verbose=0)
    ref = lasso_prune(model, calibration_data=x, ratio={"s1b1_conv1": 0.5},
                      **kw)
    with pytest.warns(DeprecationWarning, match="data="):
        old = lasso_prune(model, data=x, ratio={"s1b1_conv1": 0.5}, **kw)
    assert old.plan.removed == ref.plan.removed
    with pytest.warns(DeprecationWarning, match="return_info"):
        triple = lasso_prune(model, x, {"s1b1_conv1": 0.5},
                             return_info=True, **kw)
    assert len(triple) == 3 and triple[2]["groups"].keys() == \
        ref.report["groups"].keys()
    with pytest.raises(ValueError, match="not both"):
        lasso_prune(model, x, data=x, **kw)
