"""Tests of ``tfcomp.quantization.sensitivity`` (HAWQ-V2 Hessian traces,
MCT output distortion) and its ``Sensitivity`` result."""

import json

import keras
import numpy as np
import pytest

from tfcomp.quantization.sensitivity import (
    Sensitivity,
    hutchinson_trace,
    quantized_kernel,
    sensitivity,
)
from tfcomp.quantization.ties import residual_ties


def _quadratic(n=40, seed=0, blocks=2):
    """Symmetric matrices with a known trace, off-diagonals included."""
    rng = np.random.default_rng(seed)
    mats = []
    for b in range(blocks):
        off = rng.normal(0, 0.05, (n, n))
        mats.append(np.diag(rng.uniform(0.5, 2.0 + b, n)) + (off + off.T) / 2)
    return mats


def test_hutchinson_matches_known_quadratic_trace():
    mats = _quadratic()
    traces, probes = hutchinson_trace(
        lambda v: [m @ x for m, x in zip(mats, v)], [(40,), (40,)],
        tol=0.01, max_probes=200, seed=1)
    want = np.array([np.trace(m) for m in mats])
    assert probes >= 3
    np.testing.assert_allclose(traces, want, rtol=0.05)


def test_hutchinson_is_seeded_and_exact_for_diagonal():
    a = np.diag([1.0, 2.0, 3.0])
    t, k = hutchinson_trace(lambda v: [a @ v[0]], [(3,)])
    np.testing.assert_allclose(t, [6.0])  # v_i^2 = 1: exact every probe
    mats = _quadratic(seed=3, blocks=1)
    fn = lambda v: [mats[0] @ v[0]]  # noqa: E731
    assert hutchinson_trace(fn, [(40,)], seed=5)[0] == pytest.approx(
        hutchinson_trace(fn, [(40,)], seed=5)[0])


def test_hessian_trace_of_a_linear_least_squares_model():
    """MSE of a bias-free Dense: H = 2/(N m) X^T X (x) I_m, Tr = 2/N sum
    ||x||^2; the model's own predictions are the targets."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype("float32")
    model = keras.Sequential([keras.Input((6,)),
                              keras.layers.Dense(3, use_bias=False,
                                                 name="fc")])
    model.compile(loss="mse")
    s = sensitivity(model, x, bits=[4], tol=0.002, max_probes=400,
                    batch_size=32)
    want = 2.0 / len(x) * float(np.sum(x.astype(np.float64) ** 2))
    assert s.meta["trace"]["fc"] == pytest.approx(want, rel=0.05)
    noise = s.meta["quant_noise"]["fc"][0]
    assert s.value("fc", 4) == pytest.approx(
        s.meta["trace"]["fc"] / 18 * noise)


def test_quantized_kernel_is_the_qat_grid(sequential_cnn):
    import tfcomp
    layer = sequential_cnn.get_layer("conv2")
    qat = tfcomp.quantization.quantize_model(
        sequential_cnn, bits={"conv2": (3, 8)}, first_last_bits=None)
    q_layer = qat.get_layer("conv2")
    want = keras.ops.convert_to_numpy(
        q_layer.weight_quantizer.quantize(q_layer.kernel))
    np.testing.assert_allclose(quantized_kernel(layer, 3), want, atol=1e-6)


@pytest.mark.parametrize("method", ["hessian", "distortion"])
def test_table_shape_order_and_monotone(method, residual_model,
                                        synthetic_data):
    import tfcomp
    s = sensitivity(residual_model, synthetic_data, method=method,
                    bits=[2, 4, 8], max_probes=8)
    assert s.layers == tfcomp.quantization.quantizable_layers(
        residual_model)
    assert s.bits == [2, 4, 8] and s.table.shape == (5, 3)
    assert np.all(s.table >= 0)
    assert np.all(s.table[:, 0] > s.table[:, 2])  # 2 bits worse than 8
    assert "layer" in str(s) and "b1_conv1" in str(s)


def test_hessian_softmax_output_and_no_labels(sequential_cnn,
                                              synthetic_data):
    x, _ = synthetic_data
    s = sensitivity(sequential_cnn, x, bits=4, max_probes=10, seed=3)
    assert s.meta["labels"] == "model predictions"
    again = sensitivity(sequential_cnn, x, bits=4, max_probes=10, seed=3)
    np.testing.assert_allclose(s.table, again.table)


def test_distortion_leaves_weights_unchanged(residual_model, synthetic_data):
    before = [w.copy() for w in residual_model.get_weights()]
    sensitivity(residual_model, synthetic_data[0], method="distortion",
                bits=[2])
    for a, b in zip(before, residual_model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_json_round_trip(tmp_path):
    s = Sensitivity(["a", "b"], [2, 4], [[1.0, 0.5], [0.2, 0.1]],
                    method="distortion", meta={"x": np.float32(1.5)})
    path = s.to_json(str(tmp_path / "s.json"))
    back = Sensitivity.from_json(path)
    assert back.layers == ["a", "b"] and back.bits == [2, 4]
    np.testing.assert_array_equal(back.table, s.table)
    assert back.method == "distortion" and back["a"] == {2: 1.0, 4: 0.5}
    (tmp_path / "bad.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a tfcomp sensitivity file"):
        Sensitivity.from_json(str(tmp_path / "bad.json"))
    doc = s.to_dict()
    doc["table"] = [[1.0, 2.0, 3.0]]
    with pytest.raises(ValueError, match="table has shape"):
        Sensitivity.from_dict(doc)


def test_clear_errors(residual_model, synthetic_data):
    x, y = synthetic_data
    with pytest.raises(ValueError, match="method must be one of.*'fisher'"):
        sensitivity(residual_model, x, method="fisher")
    with pytest.raises(ValueError, match="bits=9"):
        sensitivity(residual_model, x, bits=[4, 9])
    with pytest.raises(ValueError, match="bits must not be empty"):
        sensitivity(residual_model, x, bits=[])
    with pytest.raises(ValueError, match=r"calibration_data.*shape"):
        sensitivity(residual_model, x[:, :8, :8])
    with pytest.raises(ValueError, match=r"class indices in \[0, 10\)"):
        sensitivity(residual_model, (x, y + 5))
    with pytest.raises(ValueError, match="num_samples"):
        sensitivity(residual_model, x, num_samples=0)
    s = Sensitivity(["a"], [4], [[1.0]])
    with pytest.raises(KeyError, match="bits=2"):
        s.value("a", 2)


def test_residual_ties_projection_shortcut():
    L = keras.layers
    inp = keras.Input((8, 8, 3))
    x = L.ReLU()(L.BatchNormalization()(L.Conv2D(4, 3, name="stem")(inp)))
    h = L.Conv2D(8, 3, padding="same", strides=2, name="main1")(x)
    h = L.BatchNormalization(name="main_bn")(h)
    sc = L.BatchNormalization(name="sc_bn")(
        L.Conv2D(8, 1, strides=2, name="proj")(x))
    y = L.ReLU()(L.Add()([h, sc]))
    y2 = L.Add()([y, L.Conv2D(8, 3, padding="same", name="main2")(y)])
    out = L.Dense(2, name="fc")(L.GlobalAveragePooling2D()(y2))
    model = keras.Model(inp, out)
    assert residual_ties(model) == [["main1", "proj"]]


def test_default_loss_matches_the_compiled_one(tiny_models):
    x, y = tiny_models.data(n=16)
    logits = tiny_models.residual()
    base = sensitivity(logits, (x, y), bits=4, max_probes=3)
    logits.compile(loss=keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    compiled = sensitivity(logits, (x, y), bits=4, max_probes=3)
    np.testing.assert_allclose(compiled.table, base.table, rtol=1e-4)
    probs = tiny_models.sequential_cnn()  # softmax outputs detected
    base = sensitivity(probs, (x, y), bits=4, max_probes=3)
    probs.compile(loss="categorical_crossentropy")  # one-hot labels made
    compiled = sensitivity(probs, (x, y), bits=4, max_probes=3)
    np.testing.assert_allclose(compiled.table, base.table, rtol=1e-4)


def test_every_kind_quantize_model_quantizes_is_measured():
    """sensitivity lists the layers quantize_model quantizes (Embedding,
    Conv1D, EinsumDense, Conv2DTranspose too), and allocate_bits prices
    every one of them (the cost model's spec per layer kind)."""
    from tfcomp.hardware import allocate_bits
    from tfcomp.quantization.quantize import quantizable_layers

    L = keras.layers
    keras.utils.set_random_seed(0)
    inp = keras.Input((16,), dtype="int32")
    x = L.Conv1D(8, 3, padding="same")(L.Embedding(20, 8)(inp))
    x = L.EinsumDense("abc,cd->abd", output_shape=(16, 6), bias_axes="d")(x)
    x = L.Conv2DTranspose(4, 3, strides=2, padding="same")(
        L.Reshape((4, 4, 6))(x))
    model = keras.Model(inp, L.Dense(5)(L.GlobalAveragePooling2D()(x)))
    rng = np.random.default_rng(0)
    data = (rng.integers(0, 20, (32, 16)).astype("int32"),
            rng.integers(0, 5, 32))
    s = sensitivity(model, data, method="distortion", bits=[2, 8])
    assert s.layers == quantizable_layers(model)
    assert np.all(s.table[:, 0] >= s.table[:, 1])
    alloc = allocate_bits(model, s, resource="size", budget=0.8,
                          candidates=[2, 8])
    assert set(dict(alloc)) == set(s.layers)
    assert alloc.cost <= 0.8 * (1 + 1e-9)


# --------------------------------------------------------- activations


def test_fake_quant_input_grids():
    from tfcomp.quantization.sensitivity import fake_quant_input

    x = np.linspace(-1.0, 3.0, 41, dtype=np.float32)
    u = keras.ops.convert_to_numpy(fake_quant_input(np.abs(x), 2, 0.0, 3.0))
    assert set(np.round(u, 6)) <= {0.0, 1.0, 2.0, 3.0}  # 2^2 levels on [0,3]
    s = keras.ops.convert_to_numpy(fake_quant_input(x, 3, -1.0, 3.0))
    assert set(np.round(s, 6)) <= {k for k in np.round(
        np.arange(-3, 4) * 1.0, 6)}  # 7 symmetric levels of max|x| / 3


def test_activation_distortion_by_hand_and_weights_unchanged(
        residual_model, synthetic_data):
    from tfcomp.quantization.sensitivity import fake_quant_input

    x = synthetic_data[0][:32]
    w1 = sensitivity(residual_model, x, method="distortion", bits=[2, 4, 8])
    a = sensitivity(residual_model, x, method="distortion", bits=[2, 4, 8],
                    kind="activations")
    w2 = sensitivity(residual_model, x, method="distortion", bits=[2, 4, 8])
    np.testing.assert_array_equal(w1.table, w2.table)  # weights unchanged
    assert a.kind == "activations" and a.layers == w1.layers
    assert "activation bit-width" in str(a)
    assert np.all(a.table[:, 0] > a.table[:, 2])
    # the first layer's input is the model input: quantize it by hand
    lo, hi = a.meta["input_range"][a.layers[0]]
    assert (lo, hi) == pytest.approx((float(x.min()), float(x.max())))
    ref = keras.ops.convert_to_numpy(residual_model(x, training=False))
    for j, b in enumerate(a.bits):
        out = keras.ops.convert_to_numpy(residual_model(
            fake_quant_input(x, b, lo, hi), training=False))
        assert a.table[0, j] == pytest.approx(
            float(np.mean((out.astype(np.float64) - ref) ** 2)), rel=1e-4)
    for layer in residual_model.layers:  # no patched call left behind
        assert "call" not in vars(layer)


def test_activation_kind_errors(residual_model, synthetic_data):
    """Every method measures activations now (the Hessian term:
    test_sensitivity_activations.py); a bad kind still says so."""
    with pytest.raises(ValueError, match="kind must be one of"):
        sensitivity(residual_model, synthetic_data, kind="outputs")
    with pytest.raises(ValueError, match="kind must be one of"):
        sensitivity(residual_model, synthetic_data, method="hessian",
                    kind=None)
