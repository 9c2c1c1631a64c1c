"""quantize_model, BN folding, calibrate, strip_quantization, errors, .keras
round trip."""

import os

import keras
import numpy as np
import pytest

from tfcomp import zoo
from tfcomp.layers import QuantActivation, QuantConv2D, QuantDense
from tfcomp.quantization import (
    calibrate,
    fold_batchnorm_weights,
    quantizable_layers,
    quantization_report,
    quantize_model,
    strip_quantization,
)


def _randomize_bn(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            if layer.scale:
                layer.gamma.assign(rng.uniform(0.5, 1.5, n))
            if layer.center:
                layer.beta.assign(rng.normal(0, 0.2, n))
            layer.moving_mean.assign(rng.normal(0, 0.3, n))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, n))
    return model


@pytest.fixture
def resnet():
    return _randomize_bn(zoo.resnet(depth=8, width=4, input_shape=(12, 12, 1)))


@pytest.fixture
def data():
    return np.random.default_rng(0).uniform(0, 1, (32, 12, 12, 1)).astype(
        "float32")


def _np(t):
    return keras.ops.convert_to_numpy(t)


def test_fold_batchnorm_weights_equals_conv_then_bn():
    inp = keras.Input((6, 6, 3))
    conv = keras.layers.Conv2D(5, 3, use_bias=True, name="c")
    dw = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="d",
                                      padding="same")
    bn1 = keras.layers.BatchNormalization(name="b1", epsilon=1e-3)
    bn2 = keras.layers.BatchNormalization(name="b2", center=False)
    y = bn2(dw(bn1(conv(inp))))
    model = _randomize_bn(keras.Model(inp, y), seed=3)
    x = np.random.default_rng(1).normal(size=(4, 6, 6, 3)).astype("float32")
    k1, b1 = fold_batchnorm_weights(conv, bn1)
    k2, b2 = fold_batchnorm_weights(dw, bn2)
    h = keras.ops.conv(x, k1) + b1
    h = keras.ops.depthwise_conv(h, k2, padding="same") + b2
    np.testing.assert_allclose(_np(h), _np(model(x)), atol=1e-5)


def test_float_bits_reproduce_the_model_exactly(resnet, data):
    # bits=32 keeps every quantizer off: folding, fusing and rebuilding must
    # leave the function unchanged (observers pass through before data).
    q = quantize_model(resnet, bits=32, first_last_bits=None)
    np.testing.assert_allclose(_np(q(data)), _np(resnet(data)), atol=1e-4)
    names = [type(layer).__name__ for layer in q.layers]
    assert "BatchNormalization" not in names
    assert "Conv2D" not in names and "QuantConv2D" in names


def test_uniform_bits_with_8bit_first_and_last(resnet):
    q = quantize_model(resnet, bits=4)
    rep = quantization_report(q)
    names = quantizable_layers(resnet)
    assert list(rep.quantized) == names
    assert rep.quantized[names[0]] == (8, 8)
    assert rep.quantized[names[-1]] == (8, 8)
    assert all(rep.quantized[n] == (4, 4) for n in names[1:-1])
    assert len(rep.folded) == 9 and "stem_conv" in rep.fused
    layer = q.get_layer("s1b1_conv1")
    assert (layer.w_bits, layer.a_bits) == (4, 4)
    assert layer.activation.__name__ == "relu"
    # signedness: the stem sees the raw input, the block after a ReLU
    assert q.get_layer("stem_conv").input_quantizer.signed
    assert not layer.input_quantizer.signed
    assert q.get_layer("logits_aq").quantizer.signed
    # every tensor feeding a non-quantized consumer has an observer
    assert {"stem_conv_aq", "s1b1_conv2_aq", "s1b1_out_aq",
            "logits_aq"} <= set(rep.observers)


def test_dict_bits_and_pairs(resnet):
    q = quantize_model(resnet, bits={"s1b1_conv1": (2, 3)})
    assert quantization_report(q).quantized["s1b1_conv1"] == (2, 3)
    assert quantization_report(q).quantized["s1b1_conv2"] == (8, 8)
    q2 = quantize_model(resnet, bits=(4, 8), first_last_bits=None)
    assert set(quantization_report(q2).quantized.values()) == {(4, 8)}


@pytest.mark.parametrize("bits,match", [
    (9, "bits"), (0, "bits"), ({"nope": (4, 4)}, "not quantizable"),
    ({"s1b1_conv1": (4, 12)}, "a_bits"), ({"s1b1_conv1": 4}, "pair"),
    ((4, 4, 4), "pair"),
])
def test_bad_bits_raise(resnet, bits, match):
    with pytest.raises(ValueError, match=match):
        quantize_model(resnet, bits=bits)


def test_unbuilt_and_subclassed_models_raise():
    seq = keras.Sequential([keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="never built"):
        quantize_model(seq)

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(2)

        def call(self, x):
            return self.d(x)

    sub = Sub()
    sub(np.zeros((1, 3), "float32"))
    with pytest.raises(ValueError, match="subclassed"):
        quantize_model(sub)
    with pytest.raises(TypeError, match="keras.Model"):
        quantize_model("model")


def test_quantizing_a_quantized_model_raises(resnet, data, tmp_path):
    """A QAT (or DNAS) model cannot be quantized again: its new bits would
    be ignored and activation quantizers stacked."""
    from tfcomp._io import BadInputError
    from tfcomp.quantization import dnas

    q = quantize_model(resnet, bits=8)
    calibrate(q, data)
    path = str(tmp_path / "q.keras")
    q.save(path)
    loaded = keras.saving.load_model(path)
    sn = dnas.build_supernet(resnet, candidates=[(2, 4), (8, 8)])
    for model in (q, loaded, sn):
        for call in (lambda m: quantize_model(m, bits=4),
                     lambda m: dnas.build_supernet(m),
                     quantizable_layers):
            with pytest.raises(BadInputError, match="already quantized") \
                    as info:
                call(model)
            msg = str(info.value)
            assert "strip_quantization" in msg and "float model" in msg
            assert repr(model.name) in msg
    # the documented way out: strip, then quantize with the new bits
    q4 = quantize_model(strip_quantization(q), bits=4)
    bits = quantization_report(q4).quantized
    assert 4 in {w for w, _ in bits.values()}
    assert sum(isinstance(layer, QuantActivation) for layer in q4.layers) \
        == sum(isinstance(layer, QuantActivation) for layer in q.layers)


def test_skip_keeps_layer_float_and_reports(resnet):
    q = quantize_model(resnet, bits=8, skip=["s2b1_proj"])
    assert type(q.get_layer("s2b1_proj")).__name__ == "Conv2D"
    assert "skip" in quantization_report(q).skipped["s2b1_proj"]
    with pytest.raises(ValueError, match="does not have"):
        quantize_model(resnet, skip=["ghost"])


def test_sequential_model_with_softmax_head():
    model = keras.Sequential([
        keras.Input((8, 8, 2)),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(3, activation="softmax"),
    ])
    q = quantize_model(model, bits=8)
    types = [type(layer).__name__ for layer in q.layers]
    assert types.count("QuantConv2D") == 1 and types.count("QuantDense") == 1
    # softmax is split off; its logits get an observer, its output none
    assert types[-1] == "Activation" and types[-2] == "QuantActivation"
    x = np.random.default_rng(0).uniform(size=(4, 8, 8, 2)).astype("float32")
    np.testing.assert_allclose(_np(q(x)).sum(-1), 1.0, atol=1e-5)


def test_calibrate_sets_max_and_kl_ranges(resnet, data):
    q = quantize_model(resnet, bits=4)
    ranges = calibrate(q, data, batch_size=16, method="auto")
    stem = q.get_layer("stem_conv")  # 8-bit: max of its input
    assert stem.input_quantizer.calibrated
    lo, hi = ranges["stem_conv/input"]
    assert hi == pytest.approx(float(data.max()), rel=1e-5)
    assert lo == pytest.approx(0.0, abs=1e-6)
    probe = keras.Model(q.inputs, q.get_layer("s1b1_conv1").input)
    act = _np(probe(data))
    lo4, hi4 = ranges["s1b1_conv1/input"]  # 4-bit: KL threshold <= max
    assert 0 < hi4 <= act.max() + 1e-6 and lo4 == 0.0
    capped = calibrate(q, (data, None), max_range=0.05)
    assert max(h for _, h in capped.values()) <= 0.05 + 1e-7
    with pytest.raises(ValueError, match="method"):
        calibrate(q, data, method="mean")


@pytest.mark.slow
def test_training_updates_ranges_and_keras_round_trip(resnet, data, tmp_path):
    q = quantize_model(resnet, bits=4)
    q.compile(keras.optimizers.SGD(0.01), keras.losses.
              SparseCategoricalCrossentropy(from_logits=True))
    q.fit(data, np.arange(32) % 10, batch_size=16, epochs=1, verbose=0)
    assert all(layer.input_quantizer.calibrated for layer in q.layers
               if isinstance(layer, (QuantConv2D, QuantDense)))
    assert all(layer.quantizer.calibrated for layer in q.layers
               if isinstance(layer, QuantActivation))
    path = os.path.join(tmp_path, "qat.keras")
    q.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(_np(loaded(data)), _np(q(data)), atol=1e-6)
    ratio = loaded.get_layer("s1b1_conv1").weight_quantizer.clip_ratio
    assert 0 < float(_np(ratio)) <= 1


def test_strip_bakes_quantized_weights(resnet, data):
    q = quantize_model(resnet, bits=4)
    calibrate(q, data)
    plain = strip_quantization(q)
    types = {type(layer).__name__ for layer in plain.layers}
    assert not any(t.startswith("Quant") for t in types)
    np.testing.assert_array_equal(
        _np(plain.get_layer("s1b1_conv1").kernel),
        q.get_layer("s1b1_conv1").quantized_kernel())
    with pytest.raises(ValueError, match="quantization-aware"):
        strip_quantization(resnet)


def test_kmeans_weight_sharing_option(resnet):
    q = quantize_model(resnet, bits=3, weight_quantizer="kmeans")
    k = q.get_layer("s1b1_conv2").quantized_kernel()
    assert np.unique(k).size <= 8


def test_calibrate_kl_ignores_exact_zeros_of_relu_outputs():
    """A ReLU output is mostly exact zeros, which an unsigned grid holds
    exactly: the KL clip is chosen on the positive values alone (with the
    zeros in the histogram it collapsed towards 0 at 4 bits)."""
    from tfcomp.quantization.quantizers import kl_optimal_threshold

    rng = np.random.default_rng(0)
    inp = keras.Input((64,))
    h = keras.layers.Dense(64, activation="relu", name="d1")(inp)
    out = keras.layers.Dense(3, name="d2")(h)
    model = keras.Model(inp, out)
    # bias pushes 90% of d1's outputs below zero
    w, b = model.get_layer("d1").get_weights()
    model.get_layer("d1").set_weights([w, b - 1.3 * np.abs(w).sum(0) / 8])
    x = rng.standard_exponential((256, 64)).astype("float32")
    q = quantize_model(model, bits={"d1": (8, 8), "d2": (4, 4)})
    ranges = calibrate(q, x, batch_size=64)
    act = _np(keras.Model(q.inputs, q.get_layer("d2").input)(x))
    act = _np(keras.activations.relu(act)) if act.min() < 0 else act
    positive = act[act > 0]
    assert (act == 0).mean() > 0.5
    with_zeros = kl_optimal_threshold(act, 16)
    lo, hi = ranges["d2/input"]
    assert lo == 0.0
    assert hi > 0.25 * positive.max()
    assert hi > 2 * with_zeros, (hi, with_zeros)


def test_quantization_report_is_read_from_the_layers(resnet, tmp_path):
    q = quantize_model(resnet, bits=4, skip=["s2b1_proj"])
    rep = quantization_report(q)
    assert rep.quantized == q.quantization_report.quantized  # deprecated
    assert "skip" in rep.skipped["s2b1_proj"] and len(rep.folded) == 8
    quantization_report(q).quantized.clear()  # a new object each call
    assert quantization_report(q).quantized == rep.quantized
    path = os.path.join(tmp_path, "qat.keras")
    q.save(path)
    loaded = quantization_report(keras.saving.load_model(path))
    assert loaded.quantized == quantization_report(q).quantized
    assert sorted(loaded.observers) == sorted(rep.observers)
    assert loaded.skipped == {"s2b1_proj": "kept float"}
    assert loaded.folded == {} and loaded.fused == {}


def test_deprecated_names_warn_and_still_work(resnet, data):
    import importlib
    import sys

    from tfcomp.quantization import strip
    from tfcomp.quantization.calibration import iterate_batches
    from tfcomp.quantization.quantize import resolve_bits

    q = quantize_model(resnet, bits=4)
    with pytest.warns(DeprecationWarning, match="calibration_data"):
        ranges = calibrate(q, data=data)
    fresh = quantize_model(resnet, bits=4)
    assert ranges == calibrate(fresh, calibration_data=data)
    with pytest.warns(DeprecationWarning, match="strip_quantization"):
        plain = strip(q)
    np.testing.assert_array_equal(_np(plain(data)),
                                  _np(strip_quantization(q)(data)))
    with pytest.warns(DeprecationWarning, match="per_layer_bits"):
        assert resolve_bits(4, ["a", "b", "c"], "a", "c", 8) == {
            "a": (8, 8), "b": (4, 4), "c": (8, 8)}
    with pytest.warns(DeprecationWarning, match="iter_batches"):
        batches = list(iterate_batches(data, batch_size=16))
    assert [len(b) for b in batches] == [16, 16]
    sys.modules.pop("tfcomp.quantization.gumbel", None)
    with pytest.warns(DeprecationWarning, match="tfcomp.layers.gumbel"):
        importlib.import_module("tfcomp.quantization.gumbel")


def test_frozen_base_and_preprocessing_stay_untrained():
    """keras.io transfer learning: a frozen base called with
    ``training=False`` under a new head. The QAT model trains what the
    float model trains: the head only (the base's BatchNorm, quantized as
    a 1x1 depthwise conv, stays frozen; a Rescaling's constants are not
    trained either)."""
    keras.utils.set_random_seed(0)
    base_in = keras.Input((12, 12, 3))
    b = keras.layers.Conv2D(8, 3, activation="relu")(base_in)
    b = keras.layers.BatchNormalization()(b)
    base = keras.Model(base_in, keras.layers.Conv2D(8, 3)(b), name="base")
    base.trainable = False
    inp = keras.Input((12, 12, 3))
    x = base(keras.layers.Rescaling(1 / 255.0)(inp), training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(4, name="head")(x))
    q = quantize_model(model)
    assert sorted(w.path for w in q.trainable_weights) == sorted(
        w.path for w in model.trainable_weights) == ["head/bias",
                                                     "head/kernel"]
