"""DependencyGraph's public API for plans and surgery (no private access)."""

import pathlib
import re

import keras
import numpy as np
import pytest
from keras import layers as L

import tfcomp
from tfcomp.graph import (
    ChannelKeep,
    DependencyGraph,
    LayerKeep,
    Port,
    get_channel_handler,
)
from tfcomp.graph.handlers import ConvHandler, DenseHandler, MergeHandler


def _model():
    inp = keras.Input((6, 6, 3), name="x")
    x = L.Conv2D(6, 3, padding="same", name="c1")(inp)
    x = L.BatchNormalization(name="bn")(x)
    y = L.Conv2D(6, 1, name="c2")(x)
    x = L.Add(name="add")([x, y])
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, L.Dense(2, name="fc")(x), name="api")


def test_layer_ports_handler_and_tensors():
    g = DependencyGraph(_model())
    ports = g.layer_ports("c1")
    assert all(isinstance(p, Port) for p in ports)
    assert [(p.name, p.role, p.size) for p in ports] == [
        ("in", "consumer", 3), ("out", "producer", 6)]
    assert ports[1].config_key == "filters" and ports[1].macs
    assert ports[1].weights == (("kernel", -1), ("bias", 0))
    assert all(p.first_call for p in ports)
    assert isinstance(g.handler("c1"), ConvHandler)
    assert isinstance(g.handler("add"), MergeHandler)
    assert g.handler("x") is None
    out = g.parsed.nodes_of("c1")[0].outputs[0]
    assert g.has_tensor(out) and g.tensor_channels(out) == 6
    assert not g.has_tensor("nope:0:0")
    with pytest.raises(ValueError, match="No tensor"):
        g.tensor_channels("nope:0:0")


def test_channel_keep_matches_plan():
    model = _model()
    g = DependencyGraph(model)
    grp = g.group("c1")
    assert grp.producer_layers == ["c1", "c2"]
    assert grp.consumer_layers == ["c2", "fc"]
    keep = g.channel_keep({"c1": [1, 4]})
    assert isinstance(keep, ChannelKeep)
    assert keep.port(g.layer_ports("c1")[1]).tolist() == [
        True, False, True, True, False, True]
    same = g.channel_keep({grp.index: np.array([1, 4])})
    c2_out = g.layer_ports("c2")[1]
    assert (keep.port(c2_out) == same.port(c2_out)).all()
    lk = keep.layer("fc")
    assert isinstance(lk, LayerKeep) and lk.changed
    assert lk.port("in").sum() == 4 and lk.port_role("in") == "consumer"
    assert lk.input(0).sum() == 4 and lk.output(0).all()
    assert not keep.layer("x").changed
    plan = tfcomp.pruning.Plan.from_removed(g, {"c1": [1, 4]})
    small = tfcomp.prune_channels(model, plan, graph=g)
    assert small.get_layer("c1").filters == 4
    assert small.get_layer("fc").kernel.shape == (4, 2)


def test_shared_layer_ports_per_call():
    shared = L.ReLU(name="act")
    inp = keras.Input((4,))
    x = L.Dense(5, name="d1")(inp)
    x = shared(L.Dense(5, name="d2")(shared(x)))
    g = DependencyGraph(keras.Model(inp, L.Dense(2, name="fc")(x)))
    ports = g.layer_ports("act")
    assert [p.node_key for p in ports] == ["act#0", "act#1"]
    assert [p.first_call for p in ports] == [True, False]
    assert len(g.layer_ports("act", first_call_only=True)) == 1
    assert len(g.parsed.nodes_of("act")) == 2


def test_handler_lookup_uses_isinstance_for_subclasses():
    class MyConv(L.Conv2D):
        pass

    class MyDense(L.Dense):
        pass

    assert isinstance(get_channel_handler(MyConv(4, 1)), ConvHandler)
    assert isinstance(get_channel_handler(MyDense(4)), DenseHandler)
    assert get_channel_handler(L.Cropping1D((1, 1))) is not None
    assert get_channel_handler(L.Dot(axes=1)) is None


def test_no_private_graph_access_outside_graph_package():
    root = pathlib.Path(tfcomp.__file__).parent
    private = re.compile(
        r"\._(b|parsed|port_keep|tensor_keep|layer_ports|removed_comps|"
        r"label|group_comps|unit_of_comp|ports_by_path|by_id)\b"
        r"|tfcomp\.graph\._parse")
    bad = []
    for path in root.rglob("*.py"):
        if path.parent.name == "graph":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if private.search(line):
                bad.append(f"{path.relative_to(root)}:{i}: {line.strip()}")
    assert not bad, "\n".join(bad)
