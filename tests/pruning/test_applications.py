"""keras.applications (weights=None, small inputs): graph and pruning.

Every CNN family in keras.applications builds a DependencyGraph; the
families named in the issue prune a random 30% plan with pruned == masked
outputs, and the pruned model's profiled MACs equal the analytic estimate.
"""

import keras
import numpy as np
import pytest

import tfcomp
from tfcomp.graph import DependencyGraph
from tfcomp.pruning import estimate_macs, make_plan, mask_channels, prune_channels

A = keras.applications
slow = pytest.mark.slow

# (constructor, input size); heavy ones are marked slow but still run.
PRUNE = [
    pytest.param("MobileNet", 32, id="MobileNet"),
    pytest.param("MobileNetV2", 32, id="MobileNetV2"),
    pytest.param("MobileNetV3Small", 32, id="MobileNetV3Small"),
    pytest.param("EfficientNetB0", 32, id="EfficientNetB0"),
    pytest.param("VGG16", 32, id="VGG16"),
    pytest.param("ResNet50", 32, id="ResNet50", marks=slow),
    pytest.param("ResNet50V2", 32, id="ResNet50V2", marks=slow),
    pytest.param("DenseNet121", 32, id="DenseNet121", marks=slow),
    pytest.param("Xception", 71, id="Xception", marks=slow),
]
GRAPH_ONLY = [
    pytest.param("ConvNeXtTiny", 32, id="ConvNeXtTiny"),
    pytest.param("EfficientNetV2B0", 32, id="EfficientNetV2B0"),
    pytest.param("InceptionV3", 75, id="InceptionV3", marks=slow),
    pytest.param("InceptionResNetV2", 75, id="InceptionResNetV2",
                 marks=slow),
    pytest.param("NASNetMobile", 32, id="NASNetMobile", marks=slow),
]


def _build(name, size):
    return getattr(A, name)(weights=None, input_shape=(size, size, 3),
                            classes=10, classifier_activation=None)


def _randomize_bn(model, seed=0):
    rng = np.random.default_rng(seed)
    for v in model.weights:
        if v.name in ("gamma", "moving_variance"):
            v.assign(rng.uniform(0.5, 1.5, v.shape).astype(v.dtype))
        elif v.name in ("beta", "moving_mean", "bias"):
            v.assign((0.1 * rng.normal(size=v.shape)).astype(v.dtype))


@pytest.mark.parametrize("name,size", PRUNE)
@pytest.mark.slow
def test_application_prunes_with_pruned_equal_masked(name, size):
    model = _build(name, size)
    _randomize_bn(model)
    graph = DependencyGraph(model)
    assert len(graph.prunable_groups) >= 10, graph.summary(print_fn=None)
    plan = make_plan(graph, ratio=0.3, importance="random", seed=0)
    pruned = prune_channels(model, plan, graph=graph)
    x = np.random.default_rng(0).normal(size=(2, size, size, 3)).astype(
        "float32")
    y_pruned = keras.ops.convert_to_numpy(pruned(x))
    mask_channels(model, plan, inplace=True, graph=graph)
    y_masked = keras.ops.convert_to_numpy(model(x))
    err = np.abs(y_pruned - y_masked).max() / np.abs(y_masked).max()
    assert err < 1e-4
    before = tfcomp.profile(model).macs
    after = tfcomp.profile(pruned).macs
    assert after == estimate_macs(graph, plan)
    assert 0.3 * before < after < 0.75 * before
    assert pruned.count_params() < model.count_params()
    print(f"\n{name}: groups={len(graph.groups)} "
          f"prunable={len(graph.prunable_groups)} MACs {before:,} -> "
          f"{after:,}")


@pytest.mark.parametrize("name,size", GRAPH_ONLY)
@pytest.mark.slow
def test_application_graph_builds(name, size):
    model = _build(name, size)
    graph = DependencyGraph(model)
    assert len(graph.prunable_groups) >= 10
    # every group's members cover sane positions
    for g in graph.groups:
        for m in g.members:
            assert m.indices.max() < m.port_size
            assert m.units.max() < g.size
