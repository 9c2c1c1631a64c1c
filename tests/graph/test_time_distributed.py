"""``keras.layers.TimeDistributed`` across tfcomp: MACs (T x the inner
layer's), channel groups through TimeDistributed(Conv2D / Dense /
BatchNormalization / DepthwiseConv2D / Flatten), pruning == masking,
hardware specs, FPGM / magnitude masks on the inner layer, a clear
reason where it stays whole (reconstruction) and quantize_model's
folding (tests/quantization/test_quantize_time_distributed.py)."""

import keras
import numpy as np
import pytest
from keras import layers

import tfcomp
from tfcomp.pruning import make_plan, mask_channels, prune_channels
from tfcomp.pruning.targets import ChannelMacs

TD = layers.TimeDistributed
T = 3


def _np(t):
    return keras.ops.convert_to_numpy(t)


def _video(t=T):
    """The keras.io-style video model of the issue, tiny."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((t, 10, 10, 3))
    x = TD(layers.Conv2D(8, 3, activation="relu"), name="c1")(inp)
    x = TD(layers.BatchNormalization(), name="bn")(x)
    x = TD(layers.MaxPooling2D(), name="pool")(x)
    x = TD(layers.DepthwiseConv2D(3, depth_multiplier=2), name="dw")(x)
    x = TD(layers.Conv2D(6, 1, activation="relu"), name="c2")(x)
    x = TD(layers.Flatten(), name="flat")(x)
    x = TD(layers.Dense(5, activation="relu"), name="fc")(x)
    x = layers.GRU(4, name="gru")(x)
    return keras.Model(inp, layers.Dense(3, name="head")(x))


def _randomize(model):
    rng = np.random.default_rng(0)
    for layer in model.layers:
        values = []
        for v, w in zip(layer.weights, layer.get_weights()):
            r = rng.normal(size=w.shape).astype("float32")
            values.append(np.abs(r) + 0.5 if v.name == "moving_variance"
                          else 0.3 * r)
        layer.set_weights(values)
    return model


def _x(n=2, t=T):
    return np.random.default_rng(1).normal(
        size=(n, t, 10, 10, 3)).astype("float32")


def test_profile_counts_t_times_the_inner_layer():
    p = tfcomp.profile(_video())
    assert p.by_name("c1").macs == T * 8 * 8 * (3 * 3 * 3) * 8
    assert p.by_name("dw").macs == T * 2 * 2 * (3 * 3) * 8 * 2
    assert p.by_name("c2").macs == T * 2 * 2 * 16 * 6
    assert p.by_name("fc").macs == T * 24 * 5
    assert p.by_name("bn").macs == 0 and p.by_name("bn").note == ""
    assert p.unknown_layers == []
    # an unknown time axis counts 1, with the usual note
    inp = keras.Input((None, 4))
    m = keras.Model(inp, TD(layers.Dense(2), name="d")(inp))
    rec = tfcomp.profile(m).by_name("d")
    assert rec.macs == 4 * 2 and "counted as 1" in rec.note


def test_groups_pass_through_time_distributed():
    graph = tfcomp.DependencyGraph(_video())
    assert graph.barriers == {}
    c1 = graph.group("c1")
    assert c1.prunable and c1.size == 8
    assert {"bn", "dw"} <= {m.layer for m in c1.members}  # BN, depthwise
    assert graph.group("c2").prunable and graph.group("fc").prunable


def test_pruned_equals_masked_macs_fall_and_saves(tmp_path):
    model = _randomize(_video())
    graph = tfcomp.DependencyGraph(model)
    plan = make_plan(model, ratio=0.5, importance="l1")
    assert {"c1", "c2", "fc"} <= set(plan.removed)
    pruned, masked = prune_channels(model, plan), mask_channels(model, plan)
    x = _x()
    np.testing.assert_allclose(_np(pruned(x, training=False)),
                               _np(masked(x, training=False)), atol=1e-5)
    before, after = tfcomp.profile(model), tfcomp.profile(pruned)
    assert after.macs < before.macs
    assert after.by_name("c1").macs == before.by_name("c1").macs // 2
    assert pruned.get_layer("c1").layer.filters == 4
    # the plan's analytic estimate is the pruned model's profile
    assert ChannelMacs(graph).removed_macs(plan.resolve(graph)) == after.macs
    path = str(tmp_path / "pruned.keras")
    pruned.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(_np(loaded(x)), _np(pruned(x)), atol=1e-6)


class _NoHandler(layers.Layer):
    def call(self, x):
        return x * 2.0

    def compute_output_shape(self, shape):
        return shape


@pytest.mark.parametrize("inner, words", [
    (lambda: layers.LSTM(3, return_sequences=True), "recurrent"),
    (lambda: _NoHandler(), "no channel handler"),
])
def test_unsupported_inner_layer_is_a_barrier(inner, words):
    inp = keras.Input((T, 4, 5))
    x = layers.Dense(6, name="pre")(inp)
    y = TD(inner(), name="td")(x)
    graph = tfcomp.DependencyGraph(keras.Model(inp, y))
    assert words in graph.barriers["td"]
    assert not graph.group("pre").prunable


def test_hardware_specs_fold_time_into_the_batch():
    from tfcomp.hardware import extract_specs

    model = _video()
    specs = {s.name: s for s in extract_specs(model, batch=2)}
    prof = tfcomp.profile(model)
    for name in ("c1", "dw", "c2", "fc"):
        assert specs[name].batch == 2 * T
        assert specs[name].macs == 2 * prof.by_name(name).macs


def test_reconstruction_skips_with_a_reason_quantization_folds():
    from tfcomp.pruning.reconstruction import consumer_kind
    from tfcomp.quantization import quantization_report, quantize_model

    model = _video()
    with pytest.raises(ValueError, match="TimeDistributed\\(Conv2D\\)"):
        consumer_kind(model.get_layer("c2"))
    with pytest.warns(UserWarning, match="'gru'"):  # the GRU alone
        report = quantization_report(quantize_model(model))
    assert {"c1", "dw", "c2", "fc"} <= set(report.quantized)
    assert list(report.skipped) == ["gru"]


def _fit_data(n=4):
    y = np.random.default_rng(2).integers(0, 3, size=(n,))
    return _x(n), y


def _compile(model):
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    return model


def test_fpgm_masks_inside_time_distributed_and_strips(tmp_path):
    from tfcomp.pruning import FPGMPruning, apply_fpgm, strip_pruning

    model = _randomize(_video())
    wrapped = _compile(apply_fpgm(model))
    assert type(wrapped.get_layer("c1").layer).__name__ == "MaskedConv2D"
    assert type(wrapped.get_layer("bn").layer).__name__ == \
        "MaskedBatchNormalization"
    x, y = _fit_data()
    wrapped.fit(x, y, epochs=1, verbose=0, callbacks=[FPGMPruning(0.5)])
    path = str(tmp_path / "fpgm.keras")
    wrapped.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(_np(loaded(x)), _np(wrapped(x)), atol=1e-6)
    small = strip_pruning(wrapped)
    assert type(small.get_layer("c1").layer) is layers.Conv2D
    assert small.get_layer("c1").layer.filters == 4
    np.testing.assert_allclose(_np(small(x, training=False)),
                               _np(wrapped(x, training=False)), atol=1e-5)
    assert tfcomp.profile(small).macs < tfcomp.profile(model).macs


def test_magnitude_masks_inside_time_distributed():
    from tfcomp.pruning import (
        ConstantSparsity,
        MagnitudePruning,
        apply_magnitude_pruning,
        strip_pruning,
    )

    wrapped = _compile(apply_magnitude_pruning(_randomize(_video())))
    x, y = _fit_data()
    cb = MagnitudePruning(ConstantSparsity(0.5, frequency=1),
                          ignored_layers=["c2"])  # the wrapper's name
    wrapped.fit(x, y, epochs=1, verbose=0, callbacks=[cb])
    small = strip_pruning(wrapped)
    assert type(small.get_layer("fc").layer) is layers.Dense
    zeros = {n: float(np.mean(_np(small.get_layer(n).layer.kernel) == 0))
             for n in ("c1", "c2", "fc")}
    assert zeros["c1"] == pytest.approx(0.5, abs=0.05)
    assert zeros["fc"] == pytest.approx(0.5, abs=0.05)
    assert zeros["c2"] == 0.0
    np.testing.assert_allclose(_np(small(x, training=False)),
                               _np(wrapped(x, training=False)), atol=1e-5)
