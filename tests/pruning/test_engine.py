"""The reconstruction engine: LayerwisePruner / PruningState, the targets of
the reconstruction methods and the result object."""

import pickle
import types

import keras
import numpy as np
import pytest

import tfcomp
from tfcomp.graph import DependencyGraph
from tfcomp.pruning import reconstruction
from tfcomp.pruning.lasso import lasso_prune, resolve_targets
from tfcomp.pruning.reconstruction import LayerwisePruner, PruningState
from tfcomp.pruning.reconstruction.engine import (
    reconstructible_groups,
    reconstruction_targets,
)
from tfcomp.pruning.result import PruneResult


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(2)
    return tfcomp.zoo.resnet(depth=8, width=4, input_shape=(12, 12, 1))


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).random((10, 12, 12, 1)).astype("float32")


def test_reconstruction_is_a_package_of_modules():
    assert isinstance(reconstruction, types.ModuleType)
    for name in ("sampling", "selection", "refit", "engine"):
        assert isinstance(getattr(reconstruction, name), types.ModuleType)
    for name in reconstruction.__all__:
        assert hasattr(reconstruction, name)


def test_pruner_steps_reproduce_lasso_prune_and_reset(model, x):
    graph = DependencyGraph(model)
    todo, skipped = reconstructible_groups(graph)
    assert todo and not skipped
    ref = lasso_prune(model, x, ratio=0.5, selector="l1",
                      samples_per_image=3, verbose=0)
    pruner = LayerwisePruner(model, x, todo, graph=graph,
                             samples_per_image=3, batch_size=64)
    for g in todo:
        report = pruner.step(g, g.size - g.size // 2, "l1")
        assert report["kept"] == g.size - g.size // 2
        for err in report["consumers"].values():
            assert err["error"] <= err["error_zeroed"] + 1e-9
    small, plan = pruner.result({"method": "test"}, {})
    assert plan.removed == ref.plan.removed
    for a, b in zip(small.get_weights(), ref.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert plan.meta["macs_after"] == tfcomp.profile(small).macs
    # the masked working copy computes what the pruned model does
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(pruner.work(x)),
        keras.ops.convert_to_numpy(small(x)), atol=1e-4)
    pruner.reset()
    assert not pruner.removed and not pruner.keeps
    for a, b in zip(pruner.work.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_pruning_state_commit_and_out_mask(model):
    state = PruningState(model)
    g = state.graph.group("s1b1_conv1")
    state.commit(g, [0, 2])
    assert sorted(state.removed["s1b1_conv1"]) == [1, 3]
    mask = state.out_mask("s1b1_conv1", g.size)
    assert mask.tolist() == [True, False, True, False]
    assert state.out_mask("s1b1_conv2", 4) is None
    small = state.pruned_model()
    assert small.get_layer("s1b1_conv1").filters == 2


def test_unsupported_consumers_are_skipped_or_refused():
    inp = keras.Input((8, 3))
    h = keras.layers.Conv1D(6, 3, padding="same", name="a")(inp)
    h = keras.layers.LSTM(4, return_sequences=True, name="up")(h)
    h = keras.layers.Conv1D(5, 3, padding="same", name="b")(h)
    out = keras.layers.Dense(2, name="fc")(keras.layers.Flatten()(h))
    graph = DependencyGraph(keras.Model(inp, out))
    todo, skipped = reconstructible_groups(graph)
    assert "a" in skipped and "LSTM" in skipped["a"]
    assert [g.id for g in todo] == ["up", "b"]
    with pytest.raises(ValueError, match="cannot be reconstructed"):
        reconstruction_targets(graph, {"a": 0.5})
    with pytest.raises(ValueError, match="cannot be reconstructed"):
        reconstructible_groups(graph, groups=["a"])
    found, _ = reconstruction_targets(graph, 0.5, round_to=2,
                                      ignored_layers=["b"])
    assert found.keep == {"up": 2} and found.ratio == 0.5
    with pytest.raises(ValueError, match="no prunable group"):
        reconstructible_groups(graph, ignored_layers=["up", "b"])


def test_deprecated_resolve_targets(model):
    graph = DependencyGraph(model)
    with pytest.warns(DeprecationWarning, match="reconstruction_targets"):
        counts, skipped, ratio = resolve_targets(graph, 0.5)
    assert ratio == 0.5 and not skipped
    assert counts == {g.id: g.size - g.size // 2
                      for g in graph.prunable_groups}


def test_prune_result_is_a_pair_with_a_report():
    result = PruneResult("m", "p", {"groups": {}})
    small, plan = result
    assert (small, plan) == ("m", "p") and len(result) == 2
    assert result.model == "m" and result.plan == "p"
    again = pickle.loads(pickle.dumps(result))
    assert tuple(again) == ("m", "p") and again.report == {"groups": {}}
