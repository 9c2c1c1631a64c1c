"""Importance criteria: hand values, the FPGM check, registry."""

import keras
import numpy as np
import pytest
from keras import layers as L

import tfcomp
from tfcomp.graph import DependencyGraph
from tfcomp.pruning import importance, make_plan


def _one_conv(kernel, bn_gamma=None):
    inp = keras.Input((4, 4, kernel.shape[2]))
    x = L.Conv2D(kernel.shape[-1], kernel.shape[0], use_bias=False,
                 name="c")(inp)
    if bn_gamma is not None:
        x = L.BatchNormalization(name="bn")(x)
    model = keras.Model(inp, L.Conv2D(2, 1, name="head")(x))
    model.get_layer("c").kernel.assign(kernel.astype("float32"))
    if bn_gamma is not None:
        model.get_layer("bn").gamma.assign(np.asarray(bn_gamma, "float32"))
    return DependencyGraph(model)


def test_l1_l2_hand_values():
    k = np.zeros((1, 1, 2, 3))
    k[0, 0, :, 0] = [3, -4]
    k[0, 0, :, 1] = [1, 0]
    k[0, 0, :, 2] = [-2, 2]
    grp = _one_conv(k).group("c")
    np.testing.assert_allclose(importance.l1(grp), [7, 1, 4])
    np.testing.assert_allclose(importance.l2(grp), [5, 1, np.sqrt(8)])


def test_aggregated_over_coupled_producers():
    model = tfcomp.zoo.resnet(depth=8)
    grp = DependencyGraph(model).group("s2b1_conv2")
    total = importance.l1(grp)
    parts = 0
    for name in ("s2b1_conv2", "s2b1_proj"):
        k = model.get_layer(name).kernel.numpy()
        parts = parts + np.abs(k).reshape(-1, k.shape[-1]).sum(0)
    np.testing.assert_allclose(total, parts, rtol=1e-5)
    with_consumers = importance.l1(grp, roles=("producer", "consumer"))
    assert np.all(with_consumers > total)


def test_fpgm_picks_filters_near_geometric_median_l2_picks_small():
    # 8 outliers c +- 4 e_k and 2 planted filters at the centroid c with a
    # large norm: GM removes the planted ones, L2 the c - 4 e_k ones.
    d = 8
    c = 3.0 * np.ones(d)
    filters = []
    for k in range(4):
        e = np.zeros(d)
        e[k] = 4.0
        filters += [c + e, c - e]
    rng = np.random.default_rng(0)
    filters += [c + 0.01 * rng.normal(size=d), c + 0.01 * rng.normal(size=d)]
    kernel = np.stack(filters, axis=-1).reshape(1, 1, d, 10)
    grp = _one_conv(kernel).group("c")
    gm = make_plan(grp.graph, ratio=0.2, importance="fpgm")
    l2 = make_plan(grp.graph, ratio=0.2, importance="l2")
    assert gm.removed["c"] == [8, 9]
    assert set(l2.removed["c"]) <= {1, 3, 5, 7}
    assert np.linalg.norm(filters[8]) > np.linalg.norm(filters[1])


def test_bn_scale_uses_gamma_and_falls_back_to_l1():
    k = np.ones((1, 1, 2, 4))
    grp = _one_conv(k, bn_gamma=[0.5, -2.0, 0.1, 1.0]).group("c")
    np.testing.assert_allclose(importance.bn_scale(grp), [0.5, 2, 0.1, 1])
    plain = _one_conv(k * np.array([1, 2, 3, 4])).group("c")
    np.testing.assert_allclose(importance.bn_scale(plain),
                               importance.l1(plain))


def test_random_is_seeded():
    g = DependencyGraph(tfcomp.zoo.resnet(depth=8))
    a, b = g.group("stem_conv"), g.group("s1b1_conv1")
    r = importance.random
    np.testing.assert_array_equal(r(a, seed=1), r(a, seed=1))
    assert not np.array_equal(r(a, seed=1), r(a, seed=2))
    assert not np.array_equal(r(a, seed=1), r(b, seed=1))
    p1 = make_plan(g, ratio=0.5, importance="random", seed=3)
    p2 = make_plan(g, ratio=0.5, importance="random", seed=3)
    assert p1.removed == p2.removed


def test_taylor_scores_dead_filter_zero():
    inp = keras.Input((6,))
    x = L.Dense(4, activation="relu", name="d")(inp)
    model = keras.Model(inp, L.Dense(3, name="head")(x))
    k = model.get_layer("d").kernel.numpy()
    k[:, 2] = 0.0
    model.get_layer("d").kernel.assign(k)
    rng = np.random.default_rng(0)
    data = (rng.normal(size=(64, 6)).astype("float32"),
            rng.integers(0, 3, 64))
    crit = importance.get("taylor", data=data)
    scores = crit(DependencyGraph(model).group("d"))
    assert scores.shape == (4,) and scores[2] == 0 and np.all(
        np.delete(scores, 2) > 0)
    plan = make_plan(model, ratio=0.25, importance="taylor", data=data)
    assert plan.removed["d"] == [2]
    with pytest.raises(ValueError, match="needs data"):
        make_plan(model, ratio=0.25, importance="taylor")
    # a tf.data pipeline of (x, y, sample_weight) batches, as fit takes
    # (a TypeError 'len() of unsized object' before)
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(
        (*data, np.ones(64, "float32"))).batch(16)
    got = importance.get("taylor", data=ds)(DependencyGraph(model).group("d"))
    np.testing.assert_allclose(got, scores, rtol=1e-4, atol=1e-12)


def test_callable_and_registry():
    g = DependencyGraph(tfcomp.zoo.resnet(depth=8))
    plan = make_plan(g, ratio=0.25, importance=lambda grp: -np.arange(
        grp.size, dtype=float))
    assert plan.removed["stem_conv"] == [12, 13, 14, 15]
    assert {"l1", "l2", "fpgm", "bn_scale", "random", "taylor"} <= set(
        importance.available())
    importance.register("reverse_index",
                        lambda **kw: lambda grp: -np.arange(grp.size))
    assert make_plan(g, ratio=0.25, importance="reverse_index").removed == \
        plan.removed
    with pytest.raises(ValueError, match="Unknown importance"):
        importance.get("nope")
    with pytest.raises(TypeError):
        importance.register("x", 3)
