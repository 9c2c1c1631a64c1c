"""ParsedModel / parse_model: the one model reader, as public API."""

import keras
import numpy as np
import pytest
from keras import layers as L

from tfcomp.graph import (
    ParsedModel,
    is_tensor_ref,
    iter_leaf_layers,
    model_kind,
    parse_model,
)


def _shared_nested():
    shared = L.Dense(4, name="shared")
    inner_in = keras.Input((4,))
    inner = keras.Model(inner_in, L.Dense(3, name="ic")(inner_in),
                        name="inner")
    seq = keras.Sequential([keras.Input((3,)), L.Dense(4, name="sd")],
                           name="seq")
    inp = keras.Input((4,), name="x")
    a = shared(inp)
    b = shared(a)
    y = seq(inner(L.Add(name="add")([a, b])))
    return keras.Model(inp, L.Dense(2, name="head")(y), name="m")


def test_nodes_topological_with_layers_and_tensors():
    model = _shared_nested()
    parsed = parse_model(model)
    assert isinstance(parsed, ParsedModel)
    paths = [n.path for n in parsed.nodes]
    assert paths == ["x", "shared", "shared", "add", "inner/ic", "seq/sd",
                     "head"]
    assert parsed.nodes[0].is_input and not parsed.nodes[1].is_input
    assert parsed.nodes[1].layer is model.get_layer("shared")
    produced = set(parsed.inputs)
    for n in parsed.nodes:  # every input produced before it is read
        assert set(n.inputs) <= produced
        produced.update(n.outputs)
    assert parsed.layer("inner/ic") is model.get_layer("inner").get_layer(
        "ic")
    with pytest.raises(ValueError, match="No layer 'nope'"):
        parsed.layer("nope")


def test_shared_layer_gives_one_node_per_call():
    parsed = parse_model(_shared_nested())
    calls = parsed.nodes_of("shared")
    assert [n.key for n in calls] == ["shared#0", "shared#1"]
    assert parsed.shared_layers == ["shared"]
    assert calls[1].inputs == calls[0].outputs
    assert parsed.node("shared#1") is calls[1]


def test_producer_consumers_and_io():
    parsed = parse_model(_shared_nested())
    a = parsed.nodes_of("shared")[0].outputs[0]
    assert parsed.producer(a).key == "shared#0"
    assert [n.key for n in parsed.consumers(a)] == ["shared#1", "add#0"]
    assert parsed.producer(parsed.outputs[0]).path == "head"
    assert [n.path for n in parsed.consumers(parsed.inputs[0])] == ["shared"]
    assert parsed.shapes[parsed.outputs[0]] == (None, 2)
    # nested models: inner tensors are aliased to the outer ones
    ic = parsed.nodes_of("inner/ic")[0]
    assert parsed.producer(ic.inputs[0]).path == "add"
    assert parsed.consumers(ic.outputs[0])[0].path == "seq/sd"


def test_upstream_and_downstream():
    parsed = parse_model(_shared_nested())
    add_out = parsed.nodes_of("add")[0].outputs[0]
    up = parsed.upstream([parsed.outputs[0]], stop=[add_out])
    assert [n.path for n in up] == ["inner/ic", "seq/sd", "head"]
    assert [n.key for n in parsed.upstream([add_out])] == [
        "shared#0", "shared#1", "add#0"]
    assert parsed.downstream(["add"]) == {"add", "inner/ic", "seq/sd",
                                          "head"}


def test_tensor_refs_and_call_config():
    model = _shared_nested()
    parsed = parse_model(model)
    entry = next(e for e in model.get_config()["layers"]
                 if e["name"] == "add")
    ref = entry["inbound_nodes"][0]["args"][0][0]
    assert is_tensor_ref(ref) and not is_tensor_ref({"a": 1})
    assert parsed.tensor_id(ref) == parsed.nodes_of("shared")[0].outputs[0]
    assert parsed.nodes_of("add")[0].call_config == entry["inbound_nodes"][0]


def test_model_kind_and_errors():
    seq = keras.Sequential([keras.Input((3,)), L.Dense(2)])
    assert model_kind(seq) == "sequential"
    assert model_kind(_shared_nested()) == "functional"
    with pytest.raises(TypeError, match="keras.Model"):
        parse_model(3)


def test_sequential_without_input_layer():
    seq = keras.Sequential([L.Dense(3, name="a"), L.Dense(2, name="b")])
    seq.build((None, 5))
    parsed = parse_model(seq)
    assert [n.path for n in parsed.nodes][1:] == ["a", "b"]
    assert parsed.producer(parsed.outputs[0]).path == "b"


def test_leaf_walker_matches_parsed_layers():
    model = _shared_nested()
    parsed = parse_model(model)
    walked = {p for p, _ in iter_leaf_layers(model)}
    # a nested model's InputLayer stands for the outer tensor: no node
    assert walked - set(parsed.nested_inputs) == set(parsed.layers)


def test_keras_tensor_gives_the_models_own_tensors():
    model = _shared_nested()
    parsed = parse_model(model)
    assert parsed.keras_tensor(parsed.inputs[0]) is model.inputs[0]
    first = parsed.nodes_of("shared")[0].outputs[0]
    assert parsed.keras_tensor(first) is model.get_layer("shared").output
    # the nested model's output resolves to an inner tensor id
    seq_out = parsed.nodes_of("seq/sd")[0].outputs[0]
    assert parsed.keras_tensor(seq_out) is model.get_layer("seq").output
    sub = keras.Model(model.inputs, parsed.keras_tensor(first))
    assert sub.output_shape == (None, 4)
    with pytest.raises(ValueError, match="no symbolic tensor"):
        parsed.keras_tensor(parsed.nodes_of("shared")[1].outputs[0])


def test_a_model_output_straight_from_a_nested_functional_model():
    """Keras numbers a nested functional model's calls from 1 in
    ``output_layers`` and from 0 in ``inbound_nodes``: the reader maps
    both to the same tensor (``keras.Model(x, base(prep(x)))``, the
    wrapped-backbone shape, used to crash the dependency graph)."""
    import tfcomp
    from tfcomp.graph.replay import FlatView

    i = keras.Input((8, 8, 3))
    h = L.GlobalAveragePooling2D()(L.Conv2D(4, 3, name="c1")(i))
    base = keras.Model(i, [L.Dense(5, name="logits")(h), h], name="base")
    x = keras.Input((8, 8, 3))
    logits, feats = base(L.Rescaling(0.5)(x))
    model = keras.Model(x, [logits, L.Dense(2, name="aux")(feats)])
    parsed = parse_model(model)
    assert parsed.outputs == ["base/logits:0:0", "aux:0:0"]
    graph = tfcomp.DependencyGraph(model)
    assert graph.group("base/logits").reason == "model output"
    xv = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype(
        "float32")
    for a, b in zip(FlatView(model).model(xv), model(xv)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    assert tfcomp.profile(model).macs > 0
