"""DependencyGraph: groups, members, index mappings, barriers, errors."""

import keras
import numpy as np
import pytest
from keras import layers as L

import tfcomp
from tfcomp.graph import ChannelHandler, DependencyGraph, register_channel_handler


def _members(group, role=None):
    return {(m.layer, m.port) for m in group.members
            if role is None or m.role == role}


def _chain():
    inp = keras.Input((8, 8, 3), name="x")
    x = L.Conv2D(6, 3, padding="same", name="c1")(inp)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU(name="r1")(x)
    x = L.Conv2D(5, 3, padding="same", name="c2")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(4, name="fc")(x)
    return keras.Model(inp, out, name="chain")


def test_chain_groups_and_roles():
    g = DependencyGraph(_chain())
    assert [grp.id for grp in g.groups] == ["x", "c1", "c2", "fc"]
    c1 = g.group("c1")
    assert c1.size == 6 and c1.prunable and c1.reason is None
    assert _members(c1, "producer") == {("c1", "out")}
    assert _members(c1, "consumer") == {("c2", "in")}
    assert ("bn1", "channels") in _members(c1, "pass-through")
    c2 = g.group("c2")
    assert _members(c2, "consumer") == {("fc", "in")}
    # model input and output are never pruned
    assert not g.group("x").prunable and "model input" in g.group("x").reason
    assert not g.group("fc").prunable and "model output" in g.group(
        "fc").reason
    assert [grp.id for grp in g.prunable_groups] == ["c1", "c2"]
    assert g.producer_group("c2") is c2
    assert {grp.id for grp in g.groups_of("c2")} == {"c1", "c2"}


def test_residual_add_couples_all_branches():
    model = tfcomp.zoo.resnet(depth=8)
    g = DependencyGraph(model)
    stem = g.group("stem_conv")
    assert _members(stem, "producer") == {("stem_conv", "out"),
                                          ("s1b1_conv2", "out")}
    assert {m.layer for m in stem.consumers} == {
        "s1b1_conv1", "s2b1_conv1", "s2b1_proj"}
    s2 = g.group("s2b1_conv2")
    assert {m.layer for m in s2.producers} == {"s2b1_conv2", "s2b1_proj"}
    assert s2.size == 32
    assert len(g.prunable_groups) == 6
    assert g.barriers == {}


def test_concat_offsets():
    inp = keras.Input((6, 6, 3))
    a = L.Conv2D(4, 1, name="a")(inp)
    b = L.Conv2D(5, 1, name="b")(inp)
    x = L.Concatenate(name="cat")([a, b])
    out = L.Conv2D(2, 1, name="head")(x)
    g = DependencyGraph(keras.Model(inp, out))
    head_a = next(m for m in g.group("a").members if m.layer == "head")
    head_b = next(m for m in g.group("b").members if m.layer == "head")
    assert head_a.indices.tolist() == [0, 1, 2, 3]
    assert head_b.indices.tolist() == [4, 5, 6, 7, 8]
    assert head_b.units.tolist() == [0, 1, 2, 3, 4]
    assert head_b.positions([1, 3]).tolist() == [5, 7]
    assert head_a.port_size == 9 and not head_a.covers_all


def test_flatten_dense_expansion():
    inp = keras.Input((3, 2, 1))
    x = L.Conv2D(4, 1, name="c")(inp)
    x = L.Flatten(name="flat")(x)
    out = L.Dense(2, name="fc")(x)
    g = DependencyGraph(keras.Model(inp, out))
    fc = next(m for m in g.group("c").members if m.layer == "fc")
    # feature s*C + c carries channel c for 6 spatial positions
    assert fc.positions([1]).tolist() == [1, 5, 9, 13, 17, 21]
    W = g.group("c").member_matrix(fc)[0]
    assert W.shape == (4, 6 * 2)


def test_depthwise_multiplier_pass_through():
    inp = keras.Input((6, 6, 3))
    x = L.Conv2D(4, 1, name="c")(inp)
    x = L.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(x)
    out = L.Conv2D(2, 1, name="pw")(x)
    g = DependencyGraph(keras.Model(inp, out))
    grp = g.group("c")
    assert grp.size == 4
    dw_out = [m for m in grp.members if m.layer == "dw" and m.port == "out"]
    pw = next(m for m in grp.members if m.layer == "pw")
    assert dw_out[0].role == "pass-through"
    assert pw.positions([2]).tolist() == [4, 5]
    assert pw.port_size == 8


def test_squeeze_excitation_multiply():
    inp = keras.Input((6, 6, 3))
    x = L.Conv2D(8, 1, name="c")(inp)
    s = L.GlobalAveragePooling2D(keepdims=True, name="sq")(x)
    s = L.Conv2D(2, 1, activation="relu", name="se_r")(s)
    s = L.Conv2D(8, 1, activation="sigmoid", name="se_e")(s)
    x = L.Multiply(name="mul")([x, s])
    gate = L.Conv2D(1, 1, name="gate1")(x)
    x = L.Multiply(name="bcast")([x, gate])
    out = L.Conv2D(2, 1, name="head")(x)
    g = DependencyGraph(keras.Model(inp, out))
    c = g.group("c")
    assert {m.layer for m in c.producers} == {"c", "se_e"}
    assert {m.layer for m in c.consumers} == {"se_r", "head", "gate1"}
    assert g.group("se_r").size == 2 and g.group("se_r").prunable
    assert "broadcast" in g.group("gate1").reason


def test_grouped_conv_ties_positions():
    inp = keras.Input((6, 6, 3))
    x = L.Conv2D(8, 1, name="c")(inp)
    x = L.Conv2D(6, 3, groups=2, name="g")(x)
    out = L.Conv2D(2, 1, name="head")(x)
    g = DependencyGraph(keras.Model(inp, out))
    # input channel i and i+4 sit at the same in-group kernel position
    assert g.group("c").size == 4
    assert g.group("g").size == 3
    gm = next(m for m in g.group("g").members if m.layer == "g")
    assert gm.positions([0]).tolist() == [0, 3]


def test_barrier_reports_reason_and_locks_neighbours():
    inp = keras.Input((6, 6, 3))
    x = L.Conv2D(4, 1, name="c")(inp)
    x = L.Permute((3, 1, 2), name="perm")(x)   # channels first
    x = L.Permute((2, 3, 1), name="back")(x)
    x = L.Conv2D(5, 1, name="d")(x)
    out = L.Conv2D(2, 1, name="head")(x)
    g = DependencyGraph(keras.Model(inp, out))
    assert "Permute" in g.barriers["perm"]
    assert not g.group("c").prunable
    assert "perm" in g.group("c").reason
    assert not g.group("perm").prunable
    assert g.group("d").prunable


def test_nested_functional_and_sequential_are_flattened():
    inner_in = keras.Input((6, 6, 4))
    y = L.Conv2D(5, 1, name="ic")(inner_in)
    inner = keras.Model(inner_in, y, name="inner")
    seq = keras.Sequential([keras.Input((6, 6, 5)),
                            L.Conv2D(3, 1, name="sc")], name="seq")
    inp = keras.Input((6, 6, 3))
    x = L.Conv2D(4, 1, name="c")(inp)
    x = seq(inner(x))
    out = L.Conv2D(2, 1, name="head")(x)
    g = DependencyGraph(keras.Model(inp, out))
    assert [m.layer for m in g.group("c").consumers] == ["inner/ic"]
    assert g.group("inner/ic").prunable
    assert [m.layer for m in g.group("seq/sc").consumers] == ["head"]
    assert g.layer("seq/sc").filters == 3


def test_sequential_model():
    model = keras.Sequential([keras.Input((5,)), L.Dense(6, name="d1"),
                              L.ReLU(), L.Dense(3, name="d2")])
    g = DependencyGraph(model)
    assert [grp.id for grp in g.prunable_groups] == ["d1"]
    assert _members(g.group("d1"), "consumer") == {("d2", "in")}


def test_dense_on_rank3_and_reshape():
    inp = keras.Input((4, 6))
    x = L.Dense(8, name="d1")(inp)
    x = L.Reshape((2, 2, 8), name="rs")(x)
    x = L.Conv2D(3, 1, name="c")(x)
    x = L.Reshape((12,), name="flat")(x)
    out = L.Dense(2, name="head")(x)
    g = DependencyGraph(keras.Model(inp, out))
    assert g.group("d1").prunable and g.group("c").prunable
    head = next(m for m in g.group("c").members if m.layer == "head")
    assert head.positions([0]).tolist() == [0, 3, 6, 9]


def test_softmax_activation_is_barrier():
    inp = keras.Input((5,))
    x = L.Dense(4, name="d")(inp)
    x = L.Activation("softmax", name="sm")(x)
    out = L.Dense(2, name="head")(x)
    g = DependencyGraph(keras.Model(inp, out))
    assert "sm" in g.barriers and not g.group("d").prunable


def test_keras_ops_in_graph():
    inp = keras.Input((6, 6, 3))
    x = L.Conv2D(4, 1, name="c")(inp)
    x = keras.ops.relu(x + 3.0) * (1.0 / 6.0)
    out = L.Conv2D(2, 1, name="head")(x)
    g = DependencyGraph(keras.Model(inp, out))
    assert g.group("c").prunable and g.barriers == {}
    assert _members(g.group("c"), "consumer") == {("head", "in")}


def test_weight_matrix_rows_are_filters():
    model = _chain()
    g = DependencyGraph(model)
    k = keras.ops.convert_to_numpy(model.get_layer("c1").kernel)
    W = g.group("c1").weight_matrix()
    assert W.shape == (6, 3 * 3 * 3)
    np.testing.assert_allclose(W[2], k[..., 2].ravel())
    Wc = g.group("c1").weight_matrix(("consumer",))
    k2 = keras.ops.convert_to_numpy(model.get_layer("c2").kernel)
    np.testing.assert_allclose(Wc[4], k2[:, :, 4, :].ravel())
    fake = {("c1", "kernel"): np.ones_like(k)}
    assert g.group("c1").weight_matrix(weights=fake).sum() == 6 * 27


def test_subclassed_model_raises():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = L.Dense(3)

        def call(self, x):
            return self.d(x)

    net = Net()
    net(np.zeros((1, 4), "float32"))
    with pytest.raises(TypeError, match="subclassed"):
        DependencyGraph(net)
    with pytest.raises(TypeError, match="keras.Model"):
        DependencyGraph("not a model")


def test_unknown_group_id_error():
    g = DependencyGraph(_chain())
    with pytest.raises(ValueError, match="No group 'nope'"):
        g.group("nope")


def test_summary_and_to_dict():
    g = DependencyGraph(_chain())
    text = g.summary(print_fn=None)
    assert "4 groups, 2 prunable" in text
    d = g.to_dict()
    assert d["groups"][1]["id"] == "c1" and d["groups"][1]["size"] == 6


@keras.saving.register_keras_serializable(package="tfcomp_test")
class ChannelScale(L.Layer):
    def build(self, shape):
        self.scale = self.add_weight(shape=(shape[-1],), name="scale",
                                     initializer="ones")

    def call(self, x):
        return x * self.scale


class _ScaleHandler(ChannelHandler):
    def connect(self, ctx):
        p = ctx.port("channels", ctx.in_channels(), "pass-through",
                     weights=[("scale", 0)])
        ctx.link_input(0, p)
        ctx.link_output(0, p)


def test_register_channel_handler_for_custom_layer():
    def build():
        inp = keras.Input((6, 6, 3))
        x = L.Conv2D(4, 1, name="c")(inp)
        x = ChannelScale(name="scale")(x)
        return keras.Model(inp, L.Conv2D(2, 1, name="head")(x))

    assert "scale" in DependencyGraph(build()).barriers
    register_channel_handler(ChannelScale, _ScaleHandler())
    g = DependencyGraph(build())
    assert g.barriers == {} and g.group("c").prunable
    assert ("scale", "channels") in _members(g.group("c"), "pass-through")
    with pytest.raises(TypeError, match="handler"):
        register_channel_handler(ChannelScale, 3)


def test_permute_keeping_channels_last_passes_and_repeat_vector_passes():
    inp = keras.Input((6, 5, 3))
    h = L.Conv2D(8, 3, padding="same", name="c")(inp)
    h = L.Permute((2, 1, 3), name="swap_hw")(h)   # channels stay last
    v = L.RepeatVector(4, name="rep")(L.GlobalAveragePooling2D()(h))
    out = L.Conv1D(2, 1, name="head")(v)
    moved = L.Permute((3, 1, 2), name="to_cf")(h)
    graph = tfcomp.DependencyGraph(keras.Model(inp, [out, moved]))
    assert graph.group("c").size == 8
    assert "moves the channel axis" in graph.group("c").reason
    model = keras.Model(inp, out)
    assert DependencyGraph(model).group("c").prunable
    from tfcomp.pruning import make_plan, mask_channels, prune_channels
    plan = make_plan(model, ratio=0.5)
    x = np.random.default_rng(0).random((2, 6, 5, 3), dtype=np.float32)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(prune_channels(model, plan)(x)),
        keras.ops.convert_to_numpy(mask_channels(model, plan)(x)),
        atol=1e-5)


def test_dot_counts_a_batched_matmul():
    a, b = keras.Input((5, 4)), keras.Input((6, 4))
    d = L.Dot(axes=(2, 2), name="dot")([a, b])   # (5, 6), 4 summed
    rows = {r.name: r.macs for r in tfcomp.profile(
        keras.Model([a, b], d)).layers}
    assert rows["dot"] == 5 * 6 * 4
