"""make_plan and Plan: ratios, rounding, budgets, JSON, replay, errors."""

import json

import keras
import numpy as np
import pytest
from keras import layers as L

import tfcomp
from tfcomp.graph import DependencyGraph
from tfcomp.pruning import Plan, estimate_macs, make_plan, prune_channels


@pytest.fixture(scope="module")
def resnet():
    return tfcomp.zoo.resnet(depth=8)


def test_uniform_ratio_removes_floor_of_size(resnet):
    g = DependencyGraph(resnet)
    plan = make_plan(g, ratio=0.3)
    for grp in g.prunable_groups:
        assert plan.num_removed(grp.id) == int(np.floor(grp.size * 0.3))
    assert plan.meta["importance"] == "l1" and plan.meta["ratio"] == 0.3
    assert plan.kept("stem_conv") == [
        u for u in range(16) if u not in plan.removed["stem_conv"]]
    assert len(make_plan(g, ratio=0.0)) == 0


def test_l1_plan_removes_smallest_filters():
    inp = keras.Input((4, 4, 2))
    x = L.Conv2D(6, 1, use_bias=False, name="c")(inp)
    model = keras.Model(inp, L.Conv2D(2, 1, name="head")(x))
    k = np.ones((1, 1, 2, 6), "float32") * np.array(
        [5, 1, 4, 2, 6, 3], "float32")
    model.get_layer("c").kernel.assign(k)
    plan = make_plan(model, ratio=0.5, importance="l1")
    assert plan.removed["c"] == [1, 3, 5]


def test_round_to_and_never_all_channels(resnet):
    plan = make_plan(resnet, ratio=0.6, round_to=8)
    g = DependencyGraph(resnet)
    for grp in g.prunable_groups:
        kept = grp.size - plan.num_removed(grp.id)
        assert kept % 8 == 0 and kept >= 8
    plan = make_plan(resnet, ratio=0.999)
    for grp in g.prunable_groups:
        assert grp.size - plan.num_removed(grp.id) == 1


def test_per_group_ratio_dict(resnet):
    plan = make_plan(resnet, ratio={"s1b1_conv1": 0.5, "s3b1_conv2": 0.25})
    assert set(plan.removed) == {"s1b1_conv1", "s3b1_conv2"}
    assert plan.num_removed("s1b1_conv1") == 8
    assert plan.num_removed("s3b1_conv2") == 16


@pytest.mark.parametrize("round_to", [1, 8])
def test_target_macs_is_met(resnet, round_to):
    dense = tfcomp.profile(resnet).macs
    plan = make_plan(resnet, target_macs=0.5, round_to=round_to)
    pruned = prune_channels(resnet, plan)
    macs = tfcomp.profile(pruned).macs
    assert macs <= 0.5 * dense
    assert macs == plan.meta["macs_after"] == estimate_macs(resnet, plan)
    if round_to == 1:  # the smallest uniform ratio: close to the budget
        assert macs > 0.45 * dense
    # absolute budgets too
    plan2 = make_plan(resnet, target_macs=int(0.5 * dense),
                      round_to=round_to)
    assert plan2.removed == plan.removed
    # a budget the dense model already meets prunes nothing
    assert len(make_plan(resnet, target_macs=2 * dense)) == 0


def test_target_macs_unreachable(resnet):
    with pytest.raises(ValueError, match="cannot be reached"):
        make_plan(resnet, target_macs=10)


def test_json_round_trip_and_file(resnet, tmp_path):
    plan = make_plan(resnet, ratio=0.4, importance="fpgm")
    text = plan.to_json()
    assert json.loads(text)["format"] == "tfcomp.pruning.plan"
    again = Plan.from_json(text)
    assert again == plan
    path = str(tmp_path / "plan.json")
    plan.save(path)
    assert Plan.load(path) == plan


def _auto_named():
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3)(inp)
    x = L.BatchNormalization()(x)
    x = L.Conv2D(6, 3)(x)
    return keras.Model(inp, L.Dense(2)(L.Flatten()(x)))


def test_replay_on_fresh_copy():
    m1 = tfcomp.zoo.resnet(depth=8)
    plan = Plan.from_json(make_plan(m1, ratio=0.5).to_json())
    m2 = tfcomp.zoo.resnet(depth=8)
    p1, p2 = prune_channels(m1, plan), prune_channels(m2, plan)
    assert [v.shape for v in p1.weights] == [v.shape for v in p2.weights]
    # auto-generated names differ between copies: matched by structure
    a, b = _auto_named(), _auto_named()
    assert a.layers[1].name != b.layers[1].name
    plan = make_plan(a, ratio=0.5)
    pb = prune_channels(b, plan)
    assert pb.layers[1].filters == 4 and pb.layers[3].filters == 3


def test_plan_from_another_architecture_is_refused():
    plan = make_plan(tfcomp.zoo.resnet(depth=8), ratio=0.5)
    with pytest.raises(ValueError, match="another architecture"):
        prune_channels(tfcomp.zoo.vgg_small(), plan)
    plan = make_plan(tfcomp.zoo.resnet(depth=8, width=8), ratio=0.5)
    with pytest.raises(ValueError, match="another architecture"):
        prune_channels(tfcomp.zoo.resnet(depth=8, width=16), plan)


def test_from_keep_and_from_removed(resnet):
    g = DependencyGraph(resnet)
    plan = Plan.from_keep(g, {"s1b1_conv1": [0, 1, 2, 3]})
    assert plan.removed == {"s1b1_conv1": list(range(4, 16))}
    with pytest.raises(ValueError, match="at least one"):
        Plan.from_keep(g, {"s1b1_conv1": []})
    with pytest.raises(ValueError, match="outside"):
        Plan.from_keep(g, {"s1b1_conv1": [16]})
    with pytest.raises(ValueError, match="all 16"):
        Plan.from_removed(g, {"s1b1_conv1": range(16)})
    locked = Plan.from_removed(g, {"logits": [0]})
    with pytest.raises(ValueError, match="cannot be pruned"):
        prune_channels(resnet, locked)


@pytest.mark.parametrize("ratio", [1.0, -0.1, 1.2, float("nan")])
def test_bad_ratio(resnet, ratio):
    with pytest.raises(ValueError, match=r"ratio must be in \[0, 1\)"):
        make_plan(resnet, ratio=ratio)


def test_other_argument_errors(resnet):
    with pytest.raises(ValueError, match="Unknown importance 'l7'"):
        make_plan(resnet, importance="l7")
    with pytest.raises(ValueError, match="round_to"):
        make_plan(resnet, round_to=0)
    with pytest.raises(ValueError, match="No group 'nope'"):
        make_plan(resnet, ratio={"nope": 0.5})
    with pytest.raises(ValueError, match=r"ratio\['stem_conv'\]"):
        make_plan(resnet, ratio={"stem_conv": 1.5})
    with pytest.raises(ValueError, match="cannot be pruned"):
        make_plan(resnet, ratio={"logits": 0.5})
    with pytest.raises(ValueError, match="not both"):
        make_plan(resnet, ratio={"stem_conv": 0.5}, target_macs=0.5)
    with pytest.raises(ValueError, match="scores"):
        make_plan(resnet, importance=lambda g: np.zeros(3))


def test_subclassed_model_error():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = L.Dense(3)

        def call(self, x):
            return self.d(x)

    net = Net()
    net(np.zeros((1, 4), "float32"))
    with pytest.raises(TypeError, match="subclassed"):
        make_plan(net, ratio=0.5)


def _concat_into_residual():
    inp = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(3, 3, padding="same", name="stem")(inp)
    a = keras.layers.Conv2D(3, 1, name="a")(x)
    b = keras.layers.Conv2D(3, 1, name="b")(x)
    cat = keras.layers.Concatenate(name="cat")([a, x, b])
    y = keras.layers.Conv2D(9, 1, name="c2")(cat)
    x = keras.layers.Add(name="add")([cat, y])
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(2, name="out")(x))


def test_a_concatenated_operand_of_a_residual_keeps_a_channel():
    # The Add couples all 9 concatenated channels into one group; a 60% cut
    # of that group could take all 3 channels of "a" without the
    # per-member rule.
    model = _concat_into_residual()
    graph = tfcomp.DependencyGraph(model)
    for seed in range(30):
        plan = make_plan(graph, ratio=0.6, importance="random", seed=seed)
        small = prune_channels(model, plan)
        for name in ("stem", "a", "b", "c2"):
            assert small.get_layer(name).get_config()["filters"] >= 1
    group = next(g for g in graph.groups if g.size == 9)
    a_units = np.unique(next(m for m in group.members
                             if m.layer == "a").units)
    with pytest.raises(ValueError, match="must keep at least one"):
        Plan.from_removed(graph, {group.id: a_units})
    picked = group.pick_removal(np.concatenate(
        [a_units, np.setdiff1d(np.arange(9), a_units)]), 5)
    assert len(picked) == 5 and not set(a_units) <= set(picked)


def test_ignored_layers_are_left_whole(resnet):
    plan = make_plan(resnet, ratio=0.5, ignored_layers=["s1b1_conv1"])
    assert "s1b1_conv1" not in plan.removed and len(plan) > 0
    assert plan.meta["ignored_layers"] == ["s1b1_conv1"]
    plan = make_plan(resnet, target_macs=0.6, round_to=4,
                     ignored_layers="s1b1_conv1")
    assert "s1b1_conv1" not in plan.removed
    assert plan.meta["macs_after"] <= 0.6 * plan.meta["macs_before"]


def test_make_plan_warns_when_nothing_is_prunable():
    import warnings

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = make_plan(model, 0.5)
    assert any("no prunable channel group" in str(w.message) for w in caught)
    assert not plan.removed
