"""LayerSpec geometry and extraction from Keras models."""

import keras
import pytest

import tfcomp
from tfcomp.hardware import LayerSpec, extract_specs, resolve_spec_bits


def _small_model():
    x = keras.Input((12, 12, 3), name="img")
    y = keras.layers.Conv2D(8, 3, padding="same", name="c1")(x)
    y = keras.layers.BatchNormalization(name="bn")(y)
    y = keras.layers.ReLU(name="relu")(y)
    z = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(y)
    y = keras.layers.Add(name="add")([y, z])
    y = keras.layers.Conv2D(16, 3, strides=2, padding="valid", groups=2,
                            name="gconv")(y)
    y = keras.layers.MaxPooling2D(2, name="pool")(y)
    y = keras.layers.Concatenate(name="cat")([y, y])
    y = keras.layers.GlobalAveragePooling2D(name="gap")(y)
    out = keras.layers.Dense(5, name="fc")(y)
    return keras.Model(x, out)


def test_extract_specs_geometry_and_flags():
    specs, skipped = extract_specs(_small_model(), return_skipped=True)
    by = {s.name: s for s in specs}
    assert [s.name for s in specs] == ["c1", "dw", "add", "gconv", "pool",
                                      "gap", "fc"]
    assert skipped == [("cat", "no cost model for Concatenate")]
    c1 = by["c1"]
    assert (c1.op, c1.in_h, c1.cin, c1.cout, c1.kernel) == (
        "conv", 12, 3, 8, (3, 3))
    assert c1.fixed_in and not c1.fixed_out
    assert by["fc"].fixed_out and by["fc"].cin == 32
    assert by["dw"].groups == 8 and by["dw"].op == "depthwise"
    assert by["add"].n_inputs == 2
    g = by["gconv"]
    assert (g.groups, g.stride, g.padding, g.out_hw) == (2, (2, 2), "valid",
                                                         (5, 5))
    assert g.macs == 5 * 5 * 9 * 4 * 16
    assert by["pool"].out_hw == (2, 2)


def test_specs_macs_match_profile_for_zoo_models():
    for model in (tfcomp.zoo.resnet(depth=8), tfcomp.zoo.mobilenet_v2(
            alpha=0.5)):
        specs = extract_specs(model)
        assert sum(s.macs for s in specs) == tfcomp.profile(model).macs


def test_nested_and_sequential_models():
    inner = keras.Sequential([keras.Input((6, 6, 2)),
                              keras.layers.Conv2D(4, 3, name="conv")],
                             name="inner")
    x = keras.Input((6, 6, 2))
    out = keras.layers.Dense(3, name="head")(
        keras.layers.Flatten()(inner(x)))
    specs = extract_specs(keras.Model(x, out))
    assert [s.name for s in specs] == ["inner/conv", "head"]
    assert specs[1].cin == 4 * 4 * 4


def test_batch_and_bits_from_layers():
    model = _small_model()
    specs = extract_specs(model, batch=4)
    assert specs[0].batch == 4
    assert specs[0].macs == 4 * tfcomp.profile(model).by_name("c1").macs
    bits = resolve_spec_bits(specs, {"c1": (4, 6)}, default_bits=(8, 8))
    assert bits["c1"] == (4, 6) and bits["fc"] == (8, 8)
    assert set(resolve_spec_bits(specs, (3, 5)).values()) == {(3, 5)}
    with pytest.raises(ValueError, match="not costed"):
        resolve_spec_bits(specs, {"nope": (4, 4)})
    with pytest.raises(ValueError, match="pair"):
        resolve_spec_bits(specs, {"c1": 4})


def test_resolve_bits_is_a_deprecated_alias():
    import tfcomp.hardware as hw

    specs = extract_specs(_small_model())
    with pytest.warns(DeprecationWarning, match="resolve_spec_bits"):
        old = hw.resolve_bits(specs, {"c1": (4, 6)})
    assert old == resolve_spec_bits(specs, {"c1": (4, 6)})


def test_params_bops_and_size_follow_the_cost_formulas():
    model = _small_model()
    prof = tfcomp.profile(model)
    for s in extract_specs(model):
        rec = prof.by_name(s.name)
        assert s.macs == rec.macs
        if s.op in ("conv", "depthwise", "dense"):
            assert s.use_bias and s.params == rec.params
            assert s.size_bytes(4) == rec.params * 4 / 8
            assert s.bops(3, 5) == rec.macs * 15
        else:
            assert s.params == 0 and s.size_bytes(4) == 0
    d = LayerSpec("d", "dense", 1, 1, 64, 10)
    assert not d.use_bias and d.params == d.weight_count == 640
    assert LayerSpec("d", "dense", 1, 1, 64, 10, use_bias=True).params == 650
    assert d == LayerSpec("d", "dense", 1, 1, 64, 10, use_bias=True)


def test_with_channels_and_keys():
    s = LayerSpec("c", "conv", 14, 14, 16, 32, kernel=3, padding="same")
    t = s.with_channels(cin=8, cout=24)
    assert (t.cin, t.cout, t.name) == (8, 24, "c")
    assert t.family() == s.family() and t.signature() != s.signature()
    dw = LayerSpec("d", "depthwise", 7, 7, 16, 32, kernel=3, groups=16)
    d2 = dw.with_channels(cin=8)
    assert (d2.cin, d2.cout, d2.groups) == (8, 16, 8)
    assert LayerSpec.from_dict(s.to_dict(), name="c") == s
    assert s.gemm_shape() == (1, 196, 144, 32)


@pytest.mark.parametrize("kwargs, match", [
    ({"op": "lstm"}, "op must be one of"),
    ({"cin": 0}, "cin must be a positive int"),
    ({"padding": "full"}, "padding must be"),
    ({"op": "add", "cout": 8}, "cin must equal cout"),
    ({"groups": 3}, "groups=3 must divide"),
])
def test_spec_validation(kwargs, match):
    base = {"name": "x", "op": "conv", "in_h": 4, "in_w": 4, "cin": 4,
            "cout": 4}
    base.update(kwargs)
    with pytest.raises(ValueError, match=match):
        LayerSpec(**base)


def test_subclassed_model_error():
    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(2, 3)

        def call(self, x):
            return self.conv(x)

    m = Sub()
    m(keras.ops.zeros((1, 5, 5, 1)))
    with pytest.raises(ValueError, match="conv"):
        extract_specs(m)
    with pytest.raises(TypeError, match="keras.Model"):
        extract_specs("model")


def _siamese():
    enc_in = keras.Input((8, 8, 1))
    enc = keras.Model(enc_in, keras.layers.Conv2D(4, 3, name="c")(enc_in),
                      name="enc")
    a, b = keras.Input((8, 8, 1)), keras.Input((8, 8, 1))
    return keras.Model([a, b], keras.layers.Add()([enc(a), enc(b)]))


def test_a_layer_called_twice_runs_twice_on_the_hardware():
    """A siamese encoder's layers run once per call: their spec is costed
    at batch x calls, and the MACs equal the profile's (both calls)."""
    model = _siamese()
    spec = {s.name: s for s in extract_specs(model)}["enc/c"]
    assert spec.macs == 2 * 6 * 6 * 9 * 4 == tfcomp.profile(model).macs
    assert spec.batch == 2
