"""Every layer quantize_model quantizes has a cost spec: Conv1D, Conv3D,
Conv2DTranspose, SeparableConv2D, EinsumDense, Embedding (spec_layers)."""

import dataclasses

import keras
import numpy as np
import pytest

import tfcomp
from tfcomp.hardware import (
    BISMO,
    BitFusion,
    CostTable,
    LatencyTable,
    LayerSpec,
    allocate_bits,
    extract_specs,
)
from tfcomp.hardware.spec import WEIGHTED_OPS
from tfcomp.quantization import quantizable_layers, quantize_model
from tfcomp.quantization.sensitivity_result import Sensitivity

L = keras.layers
BITS = (2, 3, 4, 5, 6, 7, 8)
PRICED = (("latency", BISMO()), ("latency", BitFusion("edge")),
          ("size", None), ("bops", None))


def _head(h, pool):
    return L.Dense(3, name="fc")(pool(name="gap")(h))


def conv1d_text():
    x = keras.Input((16,), dtype="int32", name="tokens")
    h = L.Embedding(50, 8, name="emb")(x)
    h = L.Conv1D(12, 3, padding="same", activation="relu", name="c1")(h)
    h = L.Conv1D(12, 3, strides=2, dilation_rate=1, padding="causal",
                 name="c2")(h)
    h = L.Conv1D(16, 2, dilation_rate=2, padding="valid", name="c3")(h)
    return keras.Model(x, _head(h, L.GlobalAveragePooling1D))


def conv3d_net():
    x = keras.Input((4, 6, 6, 2))
    h = L.Conv3D(4, 3, strides=(1, 2, 2), padding="same", name="c1")(x)
    h = L.Conv3D(6, (2, 3, 3), padding="valid", name="c2")(h)
    return keras.Model(x, L.Dense(3, name="fc")(L.Flatten()(h)))


def unet():
    x = keras.Input((8, 8, 3))
    d = L.Conv2D(8, 3, strides=2, padding="same", activation="relu",
                 name="down")(x)
    u = L.Conv2DTranspose(4, 3, strides=2, padding="same", name="up")(d)
    h = L.Concatenate(name="skip")([u, x])
    return keras.Model(x, L.Conv2D(2, 1, name="out")(h))


def xception():
    x = keras.Input((8, 8, 3))
    h = L.Conv2D(8, 3, padding="same", name="stem")(x)
    h = L.SeparableConv2D(16, 3, padding="same", depth_multiplier=2,
                          name="sep1")(h)
    h = L.BatchNormalization(name="bn")(h)
    h = L.ReLU()(h)
    h = L.SeparableConv2D(16, 3, strides=2, padding="valid", name="sep2")(h)
    return keras.Model(x, _head(h, L.GlobalAveragePooling2D))


def einsum_net():
    x = keras.Input((5, 8))
    h = L.EinsumDense("abc,cd->abd", (5, 12), bias_axes="d", name="e1")(x)
    h = L.EinsumDense("abc,cde->abde", (5, 2, 6), bias_axes="de",
                      name="e2")(h)
    h = L.EinsumDense("abcd,cde->abe", (5, 8), name="e3")(h)
    return keras.Model(x, _head(h, L.GlobalAveragePooling1D))


def tiny_vit():
    x = keras.Input((8, 8, 3))
    h = L.Conv2D(16, 4, strides=4, name="patch")(x)
    h = L.Reshape((4, 16))(h)
    pos = L.Embedding(4, 16, name="pos")(keras.ops.arange(4)[None])
    h = L.Add(name="add_pos")([h, pos])
    a = L.MultiHeadAttention(2, 8, name="mha")(h, h)
    h = L.LayerNormalization(name="ln")(L.Add(name="res1")([h, a]))
    m = L.Dense(32, activation="gelu", name="mlp1")(h)
    m = L.EinsumDense("abc,cd->abd", (4, 16), bias_axes="d", name="mlp2")(m)
    h = L.Add(name="res2")([h, m])
    return keras.Model(x, _head(h, L.GlobalAveragePooling1D))


MODELS = {f.__name__: f for f in (conv1d_text, conv3d_net, unet, xception,
                                  einsum_net, tiny_vit)}


def _check_table(model):
    specs = {s.name: s for s in extract_specs(model)}
    names = quantizable_layers(model)
    assert set(names) <= set(specs)
    for resource, hw in PRICED:
        t = CostTable(model, resource, hw)
        assert t.layers == names and t.full_cost > 0
        for n in names:
            s, c8, c2 = specs[n], t.cost(n, 8, 8), t.cost(n, 2, 2)
            assert c2 <= c8 + 1e-15
            if resource == "size":
                assert c8 == s.params > 0
            elif resource == "bops":
                assert c8 == s.macs * 64
            elif s.op == "embedding":
                assert c8 == 0.0  # a gather: no compute on the array
            else:
                assert c8 > 0


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_quantizable_layer_is_costed(name):
    model = MODELS[name]()
    _check_table(model)
    specs, skipped = extract_specs(model, return_skipped=True)
    prof = tfcomp.profile(model)
    unspecced = {n for n, _ in skipped}
    expect = sum(r.macs for r in prof.layers if r.name not in unspecced)
    assert sum(s.macs for s in specs) == expect
    if name != "tiny_vit":
        assert sum(s.macs for s in specs) == prof.macs


def test_conv1d_spec_equals_conv2d_with_1xk_kernels():
    def net(two_d):
        shape = (1, 20, 6) if two_d else (20, 6)
        x = keras.Input(shape)
        h = x
        for i, (f, k, s, d, p) in enumerate([(8, 3, 1, 1, "same"),
                                             (8, 5, 2, 1, "valid"),
                                             (12, 3, 1, 2, "same"),
                                             (4, 1, 1, 1, "valid")]):
            if two_d:
                h = L.Conv2D(f, (1, k), strides=(1, s), dilation_rate=(1, d),
                             padding=p, name=f"c{i}")(h)
            else:
                h = L.Conv1D(f, k, strides=s, dilation_rate=d, padding=p,
                             name=f"c{i}")(h)
        return keras.Model(x, h)

    one, two = net(False), net(True)
    s1, s2 = extract_specs(one), extract_specs(two)
    assert len(s1) == 4 and s1 == s2
    assert [s.fixed_in for s in s1] == [s.fixed_in for s in s2]
    for resource, hw in PRICED:
        t1, t2 = CostTable(one, resource, hw), CostTable(two, resource, hw)
        for n in t1.layers:
            for w, a in ((8, 8), (4, 6), (2, 2)):
                assert t1.cost(n, w, a) == t2.cost(n, w, a)
    assert s1[1].out_hw == (1, 8) and s1[2].kernel == (1, 3)


def test_causal_conv1d_counts_as_same():
    x = keras.Input((9, 4))
    m = keras.Model(x, L.Conv1D(4, 3, strides=2, padding="causal")(x))
    (s,) = extract_specs(m)
    assert s.padding == "same" and s.out_hw == (1, 5)


def test_separable_costs_depthwise_plus_pointwise():
    def net(split, stride):
        x = keras.Input((9, 9, 6))
        h = L.Conv2D(6, 1, name="pre")(x)
        if split:
            h = L.DepthwiseConv2D(3, strides=stride, depth_multiplier=2,
                                  use_bias=False, name="sep_depthwise")(h)
            h = L.Conv2D(16, 1, name="sep")(h)
        else:
            h = L.SeparableConv2D(16, 3, strides=stride, depth_multiplier=2,
                                  name="sep")(h)
        return keras.Model(x, L.Dense(3, name="fc")(h))

    for stride in (1, 2):
        whole, split = net(False, stride), net(True, stride)
        (sep,) = [s for s in extract_specs(whole) if s.name == "sep"]
        assert sep.op == "separable" and sep.multiplier == 2
        parts = {s.name: s for s in extract_specs(split)}
        assert [dataclasses.replace(p, w_bits=32, a_bits=32)
                for p in sep.parts] == [parts["sep_depthwise"], parts["sep"]]
        for resource, hw in PRICED + (("energy", BitFusion("edge")),):
            tw = CostTable(whole, resource, hw)
            ts = CostTable(split, resource, hw)
            for w, a in ((8, 8), (4, 4), (2, 6)):
                got = tw.cost("sep", w, a)
                want = ts.cost("sep_depthwise", w, a) + ts.cost("sep", w, a)
                assert got == pytest.approx(want, rel=1e-12)
        # whole-model totals agree too, in BitFusion's consumer mode
        for hw in (BISMO(), BitFusion("edge", out_bits="consumer")):
            a = hw.model_cost(whole, (4, 4))
            b = hw.model_cost(split, (4, 4))
            assert a.latency_s == pytest.approx(b.latency_s, rel=1e-12)
            assert (a.macs, a.bops, a.size_bytes) == (b.macs, b.bops,
                                                      b.size_bytes)


def test_conv_transpose_macs_follow_the_formula():
    model = unet()
    up = {s.name: s for s in extract_specs(model)}["up"]
    h_in, w_in, k, cin, cout = 4, 4, 3, 8, 4
    assert up.op == "conv" and up.macs == h_in * w_in * k * k * cin * cout
    assert up.macs == tfcomp.profile(model).layer_macs("up")
    assert up.params == k * k * cin * cout + cout
    assert up.gemm_shape() == (1, h_in * w_in, k * k * cin, cout)


def test_conv3d_folds_depth_into_height():
    specs = {s.name: s for s in extract_specs(conv3d_net())}
    c1, c2 = specs["c1"], specs["c2"]
    # c1: 4x6x6x2 -> 4x3x3x4 (3x3x3, stride (1, 2, 2), same)
    assert c1.gemm_shape() == (1, 4 * 3 * 3, 27 * 2, 4)
    # c2: 4x3x3x4 -> 3x1x1x6 (2x3x3, valid)
    assert c2.out_hw == (3, 1) and c2.gemm_shape() == (1, 3, 18 * 4, 6)
    assert c2.params == 18 * 4 * 6 + 6


def test_einsum_dense_gemm_shapes():
    specs = {s.name: s for s in extract_specs(einsum_net())}
    e1, e2, e3 = specs["e1"], specs["e2"], specs["e3"]
    assert e1.gemm_shape() == (1, 5, 8, 12) and e1.use_bias
    assert e2.gemm_shape() == (1, 5, 12, 12) and e2.params == 12 * 12 + 12
    assert e3.gemm_shape() == (1, 5, 12, 8) and not e3.use_bias


def test_grouped_einsum_is_a_grouped_conv():
    x = keras.Input((5, 8))
    m = keras.Model(x, L.EinsumDense("abc,bcd->abd", (5, 3), name="g")(x))
    (s,) = extract_specs(m)
    assert (s.op, s.groups) == ("conv", 5)
    assert s.gemm_shape() == (5, 1, 8, 3)
    assert s.macs == tfcomp.profile(m).macs and s.weight_count == 5 * 8 * 3


def test_embedding_is_a_gather_with_weights():
    x = keras.Input((None,), dtype="int32")  # variable length is fine
    m = keras.Model(x, L.Embedding(100, 6, name="emb")(x))
    (s,) = extract_specs(m)
    assert (s.op, s.macs, s.params, s.bops(4, 4)) == ("embedding", 0, 600, 0)
    assert s.size_bytes(4) == 300.0
    assert BISMO().layer_cost(s, 4, 4).latency_s == 0.0
    assert BitFusion().layer_cost(s, 4, 4).latency_s == 0.0


def test_attention_stays_skipped_with_a_reason():
    model = tiny_vit()
    _, skipped = extract_specs(model, return_skipped=True)
    assert "fixed 8-bit" in dict(skipped)["mha"]
    # MultiHeadAttention (and its projections) are not in the bit policy
    assert not [n for n in quantizable_layers(model) if "mha" in n]


def test_quantized_models_keep_their_specs():
    for build in (conv1d_text, xception):
        model = build()
        qat = quantize_model(model, bits=4, first_last_bits=None)
        float_specs = extract_specs(model)
        q_specs = extract_specs(qat)
        assert sum(s.macs for s in q_specs) == sum(
            s.macs for s in float_specs)
        by = {s.name: s for s in q_specs}
        for s in float_specs:
            for part in s.parts:  # a SeparableConv2D is split in the QAT
                if s.op in WEIGHTED_OPS:
                    assert by[part.name].w_bits == 4, part.name


def test_separable_spec_round_trips_and_keys():
    s = LayerSpec("sep", "separable", 8, 8, 4, 16, kernel=3, padding="same",
                  multiplier=2)
    assert s.to_dict()["multiplier"] == 2
    assert LayerSpec.from_dict(s.to_dict(), name="sep") == s
    assert s.signature().endswith("|m2")
    assert s.with_channels(cin=2, cout=8).parts[1].cin == 4
    assert "multiplier" not in LayerSpec("c", "conv", 8, 8, 4, 4).to_dict()
    with pytest.raises(ValueError, match="multiplier"):
        LayerSpec("c", "conv", 8, 8, 4, 4, multiplier=2)


def test_latency_table_prices_separable_like_its_hardware():
    model = xception()
    table = LatencyTable.build(model, BISMO(), bits=(4, 8), progress=False)
    for s in extract_specs(model):
        assert table.layer_cost(s, 4, 4).latency_s == pytest.approx(
            BISMO().layer_cost(s, 4, 4).latency_s)


def _sensitivity(model):
    names = quantizable_layers(model)
    rng = np.random.default_rng(0)
    base = rng.uniform(0.5, 2.0, (len(names), 1))
    table = base * 2.0 ** -np.asarray(BITS, float)[None]
    return Sensitivity(names, BITS, table)


@pytest.mark.parametrize("build", [conv1d_text, tiny_vit])
def test_allocate_bits_meets_a_latency_budget(build):
    model = build()
    alloc = allocate_bits(model, _sensitivity(model), "latency", BISMO(),
                          budget=0.5)
    assert set(alloc) == set(quantizable_layers(model))
    assert alloc.cost <= 0.5 + 1e-9
    ratio = CostTable(model, "latency", BISMO()).ratio(dict(alloc))
    assert ratio == pytest.approx(alloc.cost) and ratio <= 0.5 + 1e-9
    assert min(w for w, _ in alloc.values()) < 8
