"""keras.ops reductions and ops.concatenate in a functional graph:
``ops.mean(x, axis=(1, 2))`` is a hand-written global pooling (channels
pass through and are pruned across it); a reduction over the channel axis
mixes channels (a barrier); ``ops.concatenate`` places its inputs' channels
at offsets like the Concatenate layer."""

import keras
from test_coverage_plan import check_prunes

from tfcomp.graph import DependencyGraph

L = keras.layers


def _net(channel_mean=False):
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", name="c1")(inp)
    x = x * keras.ops.sigmoid(x)
    gate = keras.ops.mean(x, axis=(1, 2), keepdims=True)
    x = x * L.Conv2D(8, 1, activation="sigmoid", name="gate")(gate)
    x = keras.ops.concatenate([x, L.Conv2D(4, 1, name="c2")(x)], axis=-1)
    if channel_mean:
        x = x * keras.ops.mean(x, axis=-1, keepdims=True)
    x = keras.ops.max(x, axis=(1, 2))
    return keras.Model(inp, L.Dense(3, name="fc")(x))


def test_spatial_reductions_and_concatenate_prune():
    graph, _, pruned = check_prunes(_net())
    assert not graph.barriers, graph.barriers
    # c1's channels reach the mean, the gate, the concatenate and the max
    assert pruned.get_layer("c1").filters < 8


def test_a_mean_over_channels_is_a_barrier():
    graph = DependencyGraph(_net(channel_mean=True))
    assert any("reduces the channel" in why
               for why in graph.barriers.values()), graph.barriers
