"""Slimmable Conv1D/3D, SeparableConv1D/2D, ConvXDTranspose and
GroupNormalization: at every width a layer equals the plain Keras layer
holding the sliced weights; the layer contract (.keras round trip)."""

import keras
import numpy as np
import pytest

from tfcomp.layers.slimmable import active_count, width_scope
from tfcomp.layers.slimmable_conv import (
    SlimmableConv1D,
    SlimmableConv1DTranspose,
    SlimmableConv2DTranspose,
    SlimmableConv3D,
    SlimmableConv3DTranspose,
    SlimmableSeparableConv1D,
    SlimmableSeparableConv2D,
)
from tfcomp.layers.slimmable_groups import SLIMMABLE_CLASSES
from tfcomp.layers.slimmable_norm import SlimmableGroupNormalization
from tfcomp.testing import run_layer_test

L = keras.layers


def _np(t):
    return keras.ops.convert_to_numpy(t)


def _x(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


# (slimmable class, kwargs, input shape, slicer of the plain weights)
def _conv(w, n_in, n_out):
    return {"kernel": w["kernel"][..., :n_in, :n_out]}


def _transpose(w, n_in, n_out):
    return {"kernel": w["kernel"][..., :n_out, :n_in]}


def _separable(w, n_in, n_out):
    m = w["depthwise_kernel"].shape[-1]
    return {"depthwise_kernel": w["depthwise_kernel"][..., :n_in, :],
            "pointwise_kernel": w["pointwise_kernel"][..., :n_in * m,
                                                      :n_out]}


CASES = [
    (SlimmableConv1D, {"filters": 8, "kernel_size": 3, "padding": "causal",
                       "dilation_rate": 2, "activation": "relu"},
     (2, 12, 6), _conv),
    (SlimmableConv3D, {"filters": 8, "kernel_size": 3, "padding": "same",
                       "strides": 2}, (2, 6, 6, 6, 4), _conv),
    (SlimmableSeparableConv1D, {"filters": 8, "kernel_size": 3,
                                "depth_multiplier": 2}, (2, 10, 6),
     _separable),
    (SlimmableSeparableConv2D, {"filters": 8, "kernel_size": 3,
                                "padding": "same", "depth_multiplier": 2,
                                "activation": "relu"}, (2, 8, 8, 6),
     _separable),
    (SlimmableConv1DTranspose, {"filters": 8, "kernel_size": 3,
                                "strides": 2, "padding": "same"},
     (2, 6, 6), _transpose),
    (SlimmableConv2DTranspose, {"filters": 8, "kernel_size": 3,
                                "strides": 2, "padding": "same",
                                "activation": "relu"}, (2, 5, 5, 6),
     _transpose),
    (SlimmableConv3DTranspose, {"filters": 4, "kernel_size": 3,
                                "strides": 2, "padding": "valid"},
     (2, 3, 3, 3, 6), _transpose),
]


def _plain_of(cls):
    return next(p for p, s in SLIMMABLE_CLASSES.items() if s is cls)


@pytest.mark.parametrize("cls,kwargs,shape,slicer", CASES,
                         ids=[c[0].__name__ for c in CASES])
def test_at_every_width_equals_plain_layer_with_sliced_kernel(
        cls, kwargs, shape, slicer):
    x = _x(shape)
    layer = cls(**kwargs)
    full = _np(layer(x))
    weights = {v.name: _np(v) for v in layer.weights}
    cin, cout = shape[-1], kwargs["filters"]
    for width in (0.25, 0.5, 1.0):
        layer.set_width(width)
        n_in, n_out = active_count(width, cin), active_count(width, cout)
        ref = _plain_of(cls)(**{**kwargs, "filters": n_out})
        ref.build(shape[:-1] + (n_in,))
        sliced = {**slicer(weights, n_in, n_out),
                  "bias": weights["bias"][:n_out]}
        for v in ref.weights:
            v.assign(sliced[v.name])
        got = _np(layer(x))
        np.testing.assert_allclose(got[..., :n_out],
                                   _np(ref(x[..., :n_in])), atol=1e-5)
        assert np.abs(got[..., n_out:]).max(initial=0) == 0.0
        layer.set_width(1.0)
        with width_scope(width):  # the in-graph width: same masks
            np.testing.assert_allclose(_np(layer(x)), got, atol=1e-6)
    np.testing.assert_allclose(got, full, atol=1e-6)


def test_group_norm_keeps_whole_groups():
    x = _x((2, 5, 5, 8)) * 2 + 1
    gn = SlimmableGroupNormalization(groups=4, epsilon=1e-3)
    gn(x)
    gn.gamma.assign(np.linspace(0.5, 2, 8).astype("float32"))
    gn.beta.assign(np.linspace(-1, 1, 8).astype("float32"))
    full = keras.layers.GroupNormalization(groups=4, epsilon=1e-3)
    full.build(x.shape)
    full.set_weights([_np(gn.gamma), _np(gn.beta)])
    np.testing.assert_allclose(_np(gn(x)), _np(full(x)), atol=1e-5)
    gn.set_width(0.5)  # 2 of 4 groups = channels 0..3
    ref = keras.layers.GroupNormalization(groups=2, epsilon=1e-3)
    ref.build((None, 5, 5, 4))
    ref.set_weights([_np(gn.gamma)[:4], _np(gn.beta)[:4]])
    got = _np(gn(x))
    np.testing.assert_allclose(got[..., :4], _np(ref(x[..., :4])),
                               atol=1e-5)
    assert np.abs(got[..., 4:]).max() == 0.0
    with pytest.raises(ValueError, match="channels on the last axis"):
        SlimmableGroupNormalization(groups=2, axis=1).build((None, 4, 4, 4))


def test_grouped_conv2d_masks_same_positions_in_every_group():
    from tfcomp.layers.slimmable import SlimmableConv2D
    conv = SlimmableConv2D(8, 3, groups=2, padding="same")
    x = _x((1, 6, 6, 4))
    conv(x)
    assert tuple(conv.in_mask.shape) == (2,)  # one group's inputs
    conv.set_width(0.5)
    y = _np(conv(x))
    x2 = x.copy()
    x2[..., 1] += 5.0  # position 1 of group 0: inactive
    x2[..., 3] -= 5.0  # position 1 of group 1: inactive
    np.testing.assert_allclose(_np(conv(x2)), y, atol=1e-6)


@pytest.mark.parametrize("cls,kwargs,shape", [
    (SlimmableConv1D, {"filters": 4, "kernel_size": 3}, (2, 8, 3)),
    (SlimmableConv3D, {"filters": 4, "kernel_size": 2}, (2, 4, 4, 4, 3)),
    (SlimmableSeparableConv1D, {"filters": 4, "kernel_size": 3,
                                "depth_multiplier": 2}, (2, 8, 3)),
    (SlimmableSeparableConv2D, {"filters": 4, "kernel_size": 3},
     (2, 6, 6, 3)),
    (SlimmableConv1DTranspose, {"filters": 4, "kernel_size": 3},
     (2, 8, 3)),
    (SlimmableConv2DTranspose, {"filters": 4, "kernel_size": 3,
                                "strides": 2}, (2, 4, 4, 3)),
    (SlimmableConv3DTranspose, {"filters": 4, "kernel_size": 2},
     (2, 3, 3, 3, 3)),
    (SlimmableGroupNormalization, {"groups": 2}, (2, 4, 4, 6)),
], ids=lambda v: v.__name__ if isinstance(v, type) else "")
def test_layer_contract(cls, kwargs, shape):
    run_layer_test(cls, kwargs, shape)
