"""The target resolver: ratios, budgets, round_to, ignored layers, cost."""

import keras
import numpy as np
import pytest
from keras import layers as L

import tfcomp
from tfcomp.graph import DependencyGraph
from tfcomp.pruning import (
    Plan,
    estimate_macs,
    make_plan,
    mask_channels,
    prune_channels,
)
from tfcomp.pruning.targets import (
    ChannelMacs,
    channel_macs,
    check_ratio,
    n_keep,
    resolve,
    resolve_keep_counts,
    unit_round_to,
)


@pytest.fixture(scope="module")
def graph():
    return DependencyGraph(tfcomp.zoo.resnet(depth=8))


def test_check_ratio():
    assert check_ratio(0.25) == 0.25 and check_ratio(np.float32(0)) == 0.0
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"ratio must be in \[0, 1\)"):
            check_ratio(bad)
    with pytest.raises(ValueError, match=r"r\['a'\] must be"):
        check_ratio(2, "r['a']")
    for bad in ("0.5", None, True):
        with pytest.raises(TypeError, match="ratio must be a float"):
            check_ratio(bad)


@pytest.mark.parametrize("size,ratio,round_to,expected", [
    (64, 0.3, 1, 45), (64, 0.3, 8, 48), (10, 0.999, 1, 1), (10, 0.999, 4, 4),
    (6, 0.5, 8, 6), (16, 0.0, 8, 16), (30, 0.5, 8, 16), (3, 0.7, 1, 1),
])
def test_n_keep(size, ratio, round_to, expected):
    assert n_keep(size, ratio, round_to) == expected


def test_uniform_ratio_and_round_to(graph):
    keep = resolve_keep_counts(graph, 0.3)
    assert set(keep) == {g.id for g in graph.prunable_groups}
    for g in graph.prunable_groups:
        assert keep[g.id] == g.size - int(np.floor(g.size * 0.3))
    keep = resolve_keep_counts(graph, 0.6, round_to=8)
    for g in graph.prunable_groups:
        assert keep[g.id] % 8 == 0 and keep[g.id] >= 8


@pytest.mark.parametrize("round_to", [1, 4, 8])
def test_budget_met_with_round_to(graph, round_to):
    dense = tfcomp.profile(graph.model).macs
    t = resolve(graph, target_macs=0.5, round_to=round_to)
    assert all(v % round_to == 0 or v == graph.group(k).size
               for k, v in t.keep.items())
    assert t.macs <= 0.5 * dense and t.target_macs == int(0.5 * dense)
    assert t.dense_macs == dense and 0 < t.ratio < 1
    assert channel_macs(graph, t.keep) == t.macs
    # the smallest uniform ratio: a slightly smaller one misses the budget
    lower = resolve(graph, t.ratio - 1e-6, round_to=round_to).keep
    assert channel_macs(graph, lower) > 0.5 * dense
    # absolute budgets give the same counts
    assert resolve_keep_counts(graph, target_macs=int(0.5 * dense),
                               round_to=round_to) == t.keep


def test_budget_already_met_and_unreachable(graph):
    dense = tfcomp.profile(graph.model).macs
    keep = resolve_keep_counts(graph, target_macs=2 * dense)
    assert all(keep[g.id] == g.size for g in graph.prunable_groups)
    with pytest.raises(ValueError, match="cannot be reached"):
        resolve_keep_counts(graph, target_macs=10)
    with pytest.raises(ValueError, match="target_macs must be a finite number > 0"):
        resolve_keep_counts(graph, target_macs=0)


def test_channel_macs_is_the_pruned_models_profile(graph):
    keep = resolve_keep_counts(graph, 0.4, round_to=4)
    cost = ChannelMacs(graph)
    assert cost({}) == cost.dense == tfcomp.profile(graph.model).macs
    removed = {gid: graph.group(gid).pick_removal(
        np.arange(graph.group(gid).size), graph.group(gid).size - k)
        for gid, k in keep.items()}
    small = prune_channels(graph.model, Plan.from_removed(graph, removed))
    assert channel_macs(graph, keep) == tfcomp.profile(small).macs
    with pytest.raises(ValueError, match=r"keep_counts\['stem_conv'\]"):
        channel_macs(graph, {"stem_conv": 0})


def test_ratio_dict_keys_are_groups_or_layers(graph):
    keep = resolve_keep_counts(graph, {"s1b1_conv1": 0.5, "s2b1_conv1": 0.25},
                               round_to=2)
    assert keep == {"s1b1_conv1": 8, "s2b1_conv1": 24}
    t = resolve(graph, {"s1b1_conv1": 0.5})
    assert t.ratio == {"s1b1_conv1": 0.5} and t.macs is None
    with pytest.raises(ValueError, match="No group 'nope'"):
        resolve_keep_counts(graph, {"nope": 0.5})
    with pytest.raises(ValueError, match="cannot be pruned"):
        resolve_keep_counts(graph, {"logits": 0.5})
    assert resolve_keep_counts(graph, {"logits": 0.0}) == {"logits": 10}
    with pytest.raises(ValueError, match="not both"):
        resolve_keep_counts(graph, {"s1b1_conv1": 0.5}, target_macs=0.5)
    with pytest.raises(ValueError, match="groups cannot be combined"):
        resolve_keep_counts(graph, {"s1b1_conv1": 0.5}, groups=["stem_conv"])


def test_ignored_layers_and_groups(graph):
    keep = resolve_keep_counts(graph, 0.5, ignored_layers=["s1b1_conv1"])
    assert "s1b1_conv1" not in keep and len(keep) == len(
        graph.prunable_groups) - 1
    # a group is ignored when any of its producers is named
    res = graph.producer_group("stem_conv")
    keep = resolve_keep_counts(graph, 0.5, ignored_layers="stem_conv")
    assert res.id not in keep
    keep = resolve_keep_counts(graph, 0.5, groups=["s1b1_conv1", "s2b1_conv1"])
    assert set(keep) == {"s1b1_conv1", "s2b1_conv1"}
    t = resolve(graph, target_macs=0.9, groups=["s2b1_conv1"])
    assert set(t.keep) == {"s2b1_conv1"} and t.macs <= t.target_macs
    with pytest.raises(ValueError, match="ignored_layers"):
        resolve_keep_counts(graph, {"s1b1_conv1": 0.5},
                            ignored_layers=["s1b1_conv1"])
    with pytest.raises(ValueError, match="cannot be pruned"):
        resolve_keep_counts(graph, 0.5, groups=["logits"])


def test_argument_errors(graph):
    with pytest.raises(ValueError, match="round_to must be an integer >= 1"):
        resolve_keep_counts(graph, 0.5, round_to=0)
    with pytest.raises(ValueError, match="Give ratio or target_macs"):
        resolve_keep_counts(graph)
    with pytest.raises(ValueError, match=r"ratio must be in \[0, 1\)"):
        resolve_keep_counts(graph, 1.0)


# ------------------------------------------ grouped convs and whole-model MACs


def _grouped(groups=4, width=32):
    inp = keras.Input((6, 6, 8))
    x = L.Conv2D(width, 3, padding="same", name="c1")(inp)
    x = L.Conv2D(width, 3, padding="same", groups=groups, name="gconv")(x)
    x = L.Conv2D(8, 1, name="c3")(L.BatchNormalization()(x))
    out = L.Dense(2)(L.GlobalAveragePooling2D()(x))
    return keras.Model(inp, out, name="grouped")


@pytest.mark.parametrize("ratio,round_to,filters", [
    (0.5, 8, 16),    # was 32 (multiples of 8 per conv group): nothing pruned
    (0.75, 4, 8),    # was 16 (4 per conv group)
    (0.75, 1, 8),    # round_to=1: unchanged
    (0.5, 3, 24),    # lcm(3, 4) = 12: 16 -> 24
])
def test_round_to_counts_a_grouped_convs_total_channels(ratio, round_to,
                                                         filters):
    model = _grouped()
    graph = DependencyGraph(model)
    g = graph.group("gconv")
    assert g.size == 8 and g.unit_width == 4
    assert unit_round_to(g, 8) == 2 and unit_round_to(g, 6) == 3
    plan = make_plan(graph, ratio=ratio, round_to=round_to)
    small = prune_channels(model, plan, graph=graph)
    for name in ("c1", "gconv"):  # gconv's input and output sides
        assert small.get_layer(name).filters == filters
        assert filters % round_to == 0 and filters % 4 == 0
    assert small.get_layer("gconv").groups == 4
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 8)).astype("float32")
    y_small = np.asarray(small(x))
    y_mask = np.asarray(mask_channels(model, plan, graph=graph)(x))
    assert np.abs(y_small - y_mask).max() <= 1e-5 * np.abs(y_mask).max()


def _vit():
    inp = keras.Input((16, 16, 3))
    x = L.Reshape((16, 16))(L.Conv2D(16, 4, strides=4, name="patch")(inp))
    h = L.LayerNormalization(name="ln1")(x)
    x = L.Add()([x, L.MultiHeadAttention(2, 8, name="mha")(h, h)])
    h = L.Dense(32, activation="gelu", name="mlp1")(
        L.LayerNormalization(name="ln2")(x))
    x = L.Add()([x, L.Dense(16, name="mlp2")(h)])
    out = L.Dense(10, name="head")(L.GlobalAveragePooling1D()(x))
    return keras.Model(inp, out, name="vit")


def test_budget_is_a_fraction_of_the_whole_model_with_attention():
    model = _vit()
    graph = DependencyGraph(model)
    dense = tfcomp.profile(model).macs
    assert ChannelMacs(graph).dense == dense == 53408  # attention included
    # only the MLP can shrink: 0.5 is out of reach and the error says the
    # minimum and which layers hold it
    with pytest.raises(ValueError, match="cannot be reached") as e:
        make_plan(graph, target_macs=0.5)
    msg = str(e.value)
    floor = dense - 2 * 16 * 31 * 16  # mlp1 / mlp2 keep one hidden unit
    assert f"{floor:,} MACs, {floor / dense:.3f} of the dense" in msg
    assert "'mha' (MultiHeadAttention, 24,576 MACs" in msg
    assert "LayerNormalization normalises over all channels" in msg
    # a reachable budget is met against the whole model
    plan = make_plan(graph, target_macs=0.9)
    after = prune_channels(model, plan, graph=graph)
    assert plan.meta["macs_before"] == dense
    assert tfcomp.profile(after).macs == plan.meta["macs_after"] == \
        estimate_macs(graph, plan) <= 0.9 * dense
