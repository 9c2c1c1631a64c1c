"""``sensitivity`` on SeparableConv2D layers, which ``quantize_model``
quantizes as a depthwise conv ``<name>_depthwise`` and a 1x1 conv
``<name>`` at the layer's bits: both methods and kinds on a tiny
Xception-style net, the per-part grids against QAT's, the distortion of
both kernels / both activation tensors by hand, the Hessian row as the sum
of its parts, ``allocate_bits`` on ``combined_sensitivity`` and the
``tfcomp quantize --auto`` path."""

import json

import keras
import numpy as np
import pytest

import tfcomp
from tfcomp.quantization.sensitivity import (
    combined_sensitivity,
    fake_quant_input,
    quantized_kernel,
    sensitivity,
)

L = keras.layers
BITS = [2, 4, 8]
LAYERS = ["stem", "sep1", "sep2", "fc"]


def _xception_tiny(seed=0):
    """stem conv, two separable convs (BN after the first, depth
    multiplier 2 in the second), a residual add, pooling, dense head."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 3))
    h = L.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inp)
    r = h
    h = L.SeparableConv2D(8, 3, padding="same", name="sep1")(h)
    h = L.BatchNormalization(name="bn1")(h)
    h = L.ReLU(name="relu1")(h)
    h = L.SeparableConv2D(8, 3, padding="same", depth_multiplier=2,
                          activation="relu", name="sep2")(h)
    h = L.Add(name="add")([h, r])
    h = L.GlobalAveragePooling2D(name="gap")(h)
    return keras.Model(inp, L.Dense(4, name="fc")(h))


@pytest.fixture(scope="module")
def xnet():
    model = _xception_tiny()
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (32, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 4, 32)
    return model, x, y


def _restored(model):
    return all("call" not in vars(lay) for lay in model.layers)


@pytest.mark.parametrize("kind", ["weights", "activations"])
@pytest.mark.parametrize("method", ["distortion", "hessian"])
def test_both_methods_and_kinds(xnet, method, kind):
    model, x, y = xnet
    s = sensitivity(model, (x, y), method, bits=BITS, kind=kind,
                    batch_size=32, max_probes=8)
    assert s.layers == LAYERS and s.bits == BITS
    assert np.all(np.isfinite(s.table)) and np.all(s.table >= 0)
    assert np.all(s.table[:, 0] > s.table[:, -1]), s.table  # 2 > 8 bits
    assert s.meta["parts"] == {"sep1": ["sep1_depthwise", "sep1"],
                               "sep2": ["sep2_depthwise", "sep2"]}
    assert _restored(model)
    if method == "hessian":  # a row is the sum of its parts' terms
        n = s.meta["n_weights" if kind == "weights" else "n_activations"]
        t, noise = s.meta["trace"], s.meta["quant_noise"]
        for name in ("sep1", "sep2"):
            assert t[f"{name}_depthwise"] > 0 and t[name] > 0
            want = sum(t[p] / n[p] * np.asarray(noise[p])
                       for p in s.meta["parts"][name])
            np.testing.assert_allclose(s.table[LAYERS.index(name)], want,
                                       rtol=1e-9)
    if kind == "weights":
        assert s.meta["n_weights"]["sep2_depthwise"] == 3 * 3 * 8 * 2
        assert s.meta["n_weights"]["sep2"] == 16 * 8


def test_part_grids_are_qat_grids(xnet):
    """Both halves at the layer's weight bits, each on its QAT grid."""
    model = xnet[0]
    layer = model.get_layer("sep2")
    qat = tfcomp.quantization.quantize_model(
        model, bits={"sep2": (3, 8)}, first_last_bits=None)
    for part, name in (("depthwise", "sep2_depthwise"),
                       ("pointwise", "sep2")):
        q_layer = qat.get_layer(name)
        assert q_layer.w_bits == 3
        want = keras.ops.convert_to_numpy(
            q_layer.weight_quantizer.quantize(q_layer.kernel))
        np.testing.assert_allclose(
            quantized_kernel(layer, 3, part=part), want, atol=1e-6)
    with pytest.raises(ValueError, match="part"):
        quantized_kernel(layer, 3)
    with pytest.raises(ValueError, match="part"):
        quantized_kernel(model.get_layer("stem"), 3, part="depthwise")


def _sep_head(seed=1):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((6, 6, 3))
    h = L.SeparableConv2D(5, 3, depth_multiplier=2, activation="relu",
                          name="sep")(inp)
    h = L.GlobalAveragePooling2D()(h)
    return keras.Model(inp, L.Dense(3, name="fc")(h))


def test_distortion_by_hand():
    """Weights: both kernels quantized; activations: the layer's input and
    the depthwise output quantized, each on its calibration range."""
    model = _sep_head()
    x = np.random.default_rng(2).normal(size=(16, 6, 6, 3)).astype("float32")
    sep, fc = model.get_layer("sep"), model.get_layer("fc")
    dk, pk, bias = sep.get_weights()
    ops = keras.ops

    def head(mid, pk):
        h = ops.relu(ops.conv(mid, pk) + bias)
        w, b = fc.get_weights()
        return ops.convert_to_numpy(ops.mean(h, axis=(1, 2)) @ w + b)

    def mse(out):
        return float(np.mean((out.astype(np.float64) - ref) ** 2))

    ref = head(ops.depthwise_conv(x, dk), pk).astype(np.float64)
    w = sensitivity(model, x, "distortion", bits=[2, 3])
    a = sensitivity(model, x, "distortion", bits=[2, 3],
                    kind="activations")
    for j, b in enumerate([2, 3]):
        qd = quantized_kernel(sep, b, part="depthwise")
        qp = quantized_kernel(sep, b, part="pointwise")
        got = mse(head(ops.depthwise_conv(x, qd), qp))
        assert w.table[0, j] == pytest.approx(got, rel=1e-4)
        q_in = fake_quant_input(x, b, *a.meta["input_range"]["sep_depthwise"])
        mid = fake_quant_input(ops.depthwise_conv(q_in, dk), b,
                               *a.meta["input_range"]["sep"])
        assert a.table[0, j] == pytest.approx(mse(head(mid, pk)), rel=1e-4)
    assert _restored(model)


def test_allocate_bits_meets_budget(xnet):
    from tfcomp.hardware import BISMO, allocate_bits, policy_cost

    model, x, y = xnet
    s = combined_sensitivity(model, (x, y), bits=BITS, batch_size=32,
                             max_probes=6)
    assert s.layers == LAYERS and np.all(np.isfinite(s.table))
    alloc = allocate_bits(model, s, "latency", BISMO(), budget=0.6)
    assert set(alloc) == set(LAYERS)
    assert alloc.cost <= 0.6 + 1e-9
    assert policy_cost(model, dict(alloc), "latency", BISMO()) == \
        pytest.approx(alloc.cost)


def test_cli_quantize_auto(tmp_path, capsys):
    """The CLI's default method and resource: Hessian (weights +
    inputs), latency (here on BISMO)."""
    from tfcomp.cli import _common as common
    from tfcomp.cli import main

    model = _xception_tiny()
    model.save(tmp_path / "model.keras")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (40, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 4, 40).astype("int64")
    np.savez(tmp_path / "data.npz", x_train=x[:32], y_train=y[:32],
             x_test=x[32:], y_test=y[32:])
    code = main(["--quiet", "quantize", str(tmp_path / "model.keras"),
                 str(tmp_path / "q.keras"), "--auto", "--hardware", "bismo",
                 "--budget", "0.6",
                 "--candidate-bits", "2,4,8", "--data",
                 str(tmp_path / "data.npz"), "--sensitivity-samples", "16",
                 "--calibration-size", "16",
                 "--plan", str(tmp_path / "plan.json")])
    out, err = capsys.readouterr()
    assert code == 0, err
    policy = {k: tuple(v) for k, v in json.loads(
        (tmp_path / "plan.json").read_text()).items()}
    assert set(policy) == set(LAYERS)
    assert set(policy["sep1"]) | set(policy["sep2"]) <= {2, 4, 8}
    assert tfcomp.hardware.policy_cost(
        model, policy, "latency",
        common.hardware_model("bismo")) <= 0.6 + 1e-9
    assert (tmp_path / "q.keras").exists()
