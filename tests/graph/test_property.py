"""Property tests over random small graphs (hypothesis).

Random models mix convs, depthwise convs (with depth multipliers), BN,
residual adds, concatenations, squeeze-excitation multiplies, separable
convs, pooling and Flatten/GAP heads. For a random plan:

* pruned(x) == masked(x) (1e-4 relative);
* the pruned model has exactly the weight shapes, params and MACs of the
  same architecture built directly at the kept widths (hand count), and the
  analytic ``estimate_macs`` equals ``tfcomp.profile``;
* the pruned model survives a ``.keras`` round trip unchanged.
"""

import os
import tempfile

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from keras import layers as L

import tfcomp
from tfcomp.pruning import estimate_macs, make_plan, mask_channels, prune_channels

OPS = ["conv", "dw", "res", "concat", "se", "sep", "pool"]


@st.composite
def specs(draw):
    n = draw(st.integers(1, 4))
    ops = draw(st.lists(st.sampled_from(OPS), min_size=n, max_size=n))
    widths = draw(st.lists(st.sampled_from([3, 4, 6, 8]), min_size=2 * n + 1,
                           max_size=2 * n + 1))
    return {
        "ops": ops, "widths": widths,
        "dm": draw(st.sampled_from([1, 2])),
        "head": draw(st.sampled_from(["gap", "flatten"])),
        "ratio": draw(st.sampled_from([0.2, 0.4, 0.6])),
        "seed": draw(st.integers(0, 1000)),
    }


def build(spec, filters=None):
    f = dict(filters or {})

    def w(name, default):
        return f.get(name, default)

    widths = iter(spec["widths"])
    inp = keras.Input((8, 8, 3), name="in")
    x = L.Conv2D(w("stem", next(widths)), 3, padding="same", name="stem")(inp)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.ReLU(name="stem_relu")(x)
    size = 8
    for i, op in enumerate(spec["ops"]):
        p = f"b{i}"
        c = x.shape[-1]
        if op == "conv":
            x = L.Conv2D(w(f"{p}_c", next(widths)), 3, padding="same",
                         name=f"{p}_c")(x)
            x = L.BatchNormalization(name=f"{p}_bn")(x)
            x = L.ReLU(name=f"{p}_r")(x)
        elif op == "dw":
            x = L.DepthwiseConv2D(3, depth_multiplier=spec["dm"],
                                  padding="same", name=f"{p}_dw")(x)
            x = L.BatchNormalization(name=f"{p}_bn")(x)
            x = L.ReLU(name=f"{p}_r")(x)
        elif op == "res":
            y = L.Conv2D(w(f"{p}_c1", next(widths)), 3, padding="same",
                         name=f"{p}_c1")(x)
            y = L.BatchNormalization(name=f"{p}_bn1")(y)
            y = L.ReLU(name=f"{p}_r")(y)
            y = L.Conv2D(w(f"{p}_c2", c), 1, name=f"{p}_c2")(y)
            y = L.BatchNormalization(name=f"{p}_bn2")(y)
            x = L.Add(name=f"{p}_add")([x, y])
        elif op == "concat":
            a = L.Conv2D(w(f"{p}_a", next(widths)), 1, name=f"{p}_a")(x)
            b = L.Conv2D(w(f"{p}_b", next(widths)), 3, padding="same",
                         name=f"{p}_b")(x)
            x = L.Concatenate(name=f"{p}_cat")([a, x, b])
        elif op == "se":
            s = L.GlobalAveragePooling2D(keepdims=True, name=f"{p}_sq")(x)
            s = L.Conv2D(w(f"{p}_r", max(2, c // 2)), 1, activation="relu",
                         name=f"{p}_r")(s)
            s = L.Conv2D(w(f"{p}_e", c), 1, activation="sigmoid",
                         name=f"{p}_e")(s)
            x = L.Multiply(name=f"{p}_mul")([x, s])
        elif op == "sep":
            x = L.SeparableConv2D(w(f"{p}_s", next(widths)), 3,
                                  depth_multiplier=spec["dm"],
                                  padding="same", name=f"{p}_s")(x)
        elif op == "pool" and size > 2:
            x = L.MaxPooling2D(2, name=f"{p}_pool")(x)
            size //= 2
    if spec["head"] == "gap":
        x = L.GlobalAveragePooling2D(name="gap")(x)
    else:
        x = L.Flatten(name="flat")(x)
    out = L.Dense(5, name="logits")(x)
    return keras.Model(inp, out, name="rand")


def randomize(model, seed):
    rng = np.random.default_rng(seed)
    for v in model.weights:
        if v.name in ("gamma", "moving_variance"):
            a = rng.uniform(0.5, 1.5, v.shape)
        else:
            a = rng.normal(0, 0.5, v.shape)
        v.assign(a.astype("float32"))


def widths_of(model):
    out = {}
    for layer in model.layers:
        cfg = layer.get_config()
        for key in ("filters", "units"):
            if key in cfg:
                out[layer.name] = cfg[key]
    return out


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(specs())
@pytest.mark.slow
def test_random_graphs_prune_equals_mask(spec):
    model = build(spec)
    randomize(model, spec["seed"])
    plan = make_plan(model, ratio=spec["ratio"], importance="random",
                     seed=spec["seed"])
    pruned = prune_channels(model, plan)
    masked = mask_channels(model, plan)
    x = np.random.default_rng(spec["seed"]).normal(
        size=(2, 8, 8, 3)).astype("float32")
    yp = keras.ops.convert_to_numpy(pruned(x))
    ym = keras.ops.convert_to_numpy(masked(x))
    scale = max(1e-6, float(np.abs(ym).max()))
    assert np.abs(yp - ym).max() / scale < 1e-4

    # Hand count: the architecture built directly at the kept widths.
    direct = build(spec, filters=widths_of(pruned))
    for layer in pruned.layers:
        got = [tuple(v.shape) for v in layer.weights]
        want = [tuple(v.shape) for v in direct.get_layer(layer.name).weights]
        assert got == want, layer.name
    prof = tfcomp.profile(pruned)
    assert prof.macs == tfcomp.profile(direct).macs
    assert prof.params == direct.count_params() == pruned.count_params()
    assert estimate_macs(model, plan) == prof.macs
    if plan.num_removed():
        assert prof.macs < tfcomp.profile(model).macs

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "p.keras")
        pruned.save(path)
        again = keras.saving.load_model(path)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(again(x)), yp)
