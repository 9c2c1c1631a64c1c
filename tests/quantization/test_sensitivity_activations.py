"""Tests of HAWQ-V2's activation term, ``sensitivity(..., method="hessian",
kind="activations")``: Hutchinson's trace of the Hessian with respect to a
layer's input against a quadratic computed by hand, the table against the
formula, a planted sensitive input, integer inputs, the restored layer
calls, errors, JSON round trip and the weights + activations sum in
``allocate_bits``."""

import keras
import numpy as np
import pytest

from tfcomp.quantization import hessian
from tfcomp.quantization.sensitivity import (
    Sensitivity,
    fake_quant_input,
    sensitivity,
)

L = keras.layers


def _linear_mse(seed=0):
    """x (6) -> fc1 (5, linear) -> fc2 (3, linear), MSE loss: the loss is a
    quadratic of fc2's input h with Hessian ``2 / (N m) W2 W2^T`` per
    sample (m = 3 outputs), so over all N samples ``Tr = 2/m ||W2||^2``;
    with respect to fc1's input x, ``Tr = 2/m ||W1 W2||^2``."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((6,))
    h = L.Dense(5, use_bias=False, name="fc1")(inp)
    model = keras.Model(inp, L.Dense(3, use_bias=False, name="fc2")(h))
    model.compile(loss="mse")
    x = np.random.default_rng(seed).normal(size=(128, 6)).astype("float32")
    return model, x


def test_activation_trace_matches_the_quadratic_by_hand():
    model, x = _linear_mse()
    s = sensitivity(model, x, bits=[2, 4, 8], kind="activations",
                    batch_size=48, tol=0.002, max_probes=400)
    w1, w2 = (np.asarray(w, np.float64) for w in model.get_weights())
    want = {"fc1": 2 / 3 * np.sum((w1 @ w2) ** 2),
            "fc2": 2 / 3 * np.sum(w2 ** 2)}
    for name in ("fc1", "fc2"):
        assert s.meta["trace"][name] == pytest.approx(want[name], rel=0.05)
    assert s.kind == "activations" and s.method == "hessian"
    assert s.meta["n_activations"] == {"fc1": 128 * 6, "fc2": 128 * 5}
    # Omega = Tr / n_a * ||Q_b(h) - h||^2 summed over every sample
    h = (x.astype(np.float64) @ w1).astype("float32")
    lo, hi = s.meta["input_range"]["fc2"]
    assert (lo, hi) == pytest.approx((h.min(), h.max()), rel=1e-5)
    for b in s.bits:
        q = keras.ops.convert_to_numpy(fake_quant_input(h, b, lo, hi))
        noise = float(np.sum((q.astype(np.float64) - h) ** 2))
        assert s.value("fc2", b) == pytest.approx(
            s.meta["trace"]["fc2"] / h.size * noise, rel=1e-4)
    assert np.all(np.diff(s.table, axis=1) < 0)  # more bits, less loss
    for layer in model.layers:  # no patched call left behind
        assert "call" not in vars(layer)


def test_hutchinson_over_batches_is_seeded():
    model, x = _linear_mse(seed=1)
    a = sensitivity(model, x, bits=4, kind="activations", batch_size=32,
                    max_probes=6, seed=3)
    b = sensitivity(model, x, bits=4, kind="activations", batch_size=32,
                    max_probes=6, seed=3)
    np.testing.assert_allclose(a.table, b.table)
    one = sensitivity(model, x, bits=4, kind="activations", batch_size=128,
                      max_probes=6, seed=3)  # same probes in one batch
    np.testing.assert_allclose(one.table, a.table, rtol=1e-4)


def test_sample_disjoint_probes_drop_cross_layer_terms():
    """Per sample H = [[D1, C], [C^T, D2]] (two layers, strong coupling C),
    block diagonal over samples: probing each sample at one layer only
    gives the diagonal blocks' traces exactly (Rademacher v^2 = 1); joint
    probes carry v1^T C v2 noise that swamps the small block."""
    n = 6
    d1, d2 = np.diag([1.0, 2.0, 3.0]), np.diag([0.01, 0.02, 0.03])
    c = np.full((3, 3), 5.0)

    def hvp(vs):
        v1, v2 = vs
        return [v1 @ d1 + v2 @ c.T, v1 @ c + v2 @ d2]

    shapes = [(n, 3), (n, 3)]
    t, k = hessian.hutchinson_trace(hessian._disjoint(hvp, 2, n), shapes,
                                    max_probes=4, min_probes=4)
    np.testing.assert_allclose(t, [n * 6.0, n * 0.06])
    joint, _ = hessian.hutchinson_trace(hvp, shapes, max_probes=4,
                                        min_probes=4)
    assert abs(joint[1] - n * 0.06) > 1.0
    # fewer samples than layers: the layers are probed in groups
    t3, _ = hessian.hutchinson_trace(
        hessian._disjoint(lambda vs: [v * 2.0 for v in vs], 3, 2),
        [(2, 4)] * 3, max_probes=3)
    np.testing.assert_allclose(t3, [16.0] * 3)


def test_piecewise_linear_model_traces_are_never_negative(residual_model,
                                                          synthetic_data):
    """ReLU / BN / conv: the Hessian w.r.t. an activation is PSD (Gauss-
    Newton), and a sample-disjoint probe never mixes layers, so even 3
    probes give no negative estimate (joint probes did, for b1_conv1)."""
    import warnings

    x, y = synthetic_data
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        s = sensitivity(residual_model, (x[:32], y[:32]), bits=[4],
                        kind="activations", max_probes=3, batch_size=16)
    assert not [w for w in seen if "negative" in str(w.message)]
    assert all(t > 0 for t in s.meta["trace"].values())
    few = sensitivity(residual_model, (x[:3], y[:3]), bits=[4],
                      kind="activations", max_probes=3)  # 3 samples, 5 layers
    assert all(t > 0 for t in few.meta["trace"].values())


def _planted(scale=10.0):
    """Two heads read the same activation h: ``big``'s kernel is ``scale``
    times ``small``'s, so the same rounding of h costs ``scale^2`` times
    more through ``big``; the other inputs are ordinary."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((12,))
    h = L.Dense(16, activation="relu", name="pre")(inp)
    h = L.Dense(16, activation="relu", name="mid")(h)
    big = L.Dense(10, use_bias=False, name="big")(h)
    small = L.Dense(10, use_bias=False, name="small")(h)
    model = keras.Model(inp, L.Add()([big, small]))
    k = model.get_layer("small").kernel.numpy()
    model.get_layer("big").kernel.assign(scale * k)
    x = np.random.default_rng(0).normal(size=(96, 12)).astype("float32")
    return model, x


def test_planted_sensitive_input_beats_its_sibling():
    model, x = _planted()
    s = sensitivity(model, x, bits=[2, 4], kind="activations",
                    max_probes=200, tol=0.003, batch_size=32)
    t = s.meta["trace"]
    # same activation, same noise: the ratio is the kernels' scale^2 (the
    # Hessians are exactly 100x apart; the rest is Hutchinson's noise)
    assert s.meta["quant_noise"]["big"] == s.meta["quant_noise"]["small"]
    assert t["big"] / t["small"] == pytest.approx(100.0, rel=0.15)
    for b in s.bits:
        assert s.value("big", b) > 50 * s.value("small", b)
    # the output distortion ranks them the same way
    d = sensitivity(model, x, method="distortion", bits=[2, 4],
                    kind="activations")
    assert np.all(d.table[d.layers.index("big")]
                  > 50 * d.table[d.layers.index("small")])


def test_weights_plus_activations_in_allocate_bits():
    """The two Hessian tables share a scale and add; the sum is a
    kind="weights" table allocate_bits takes."""
    from tfcomp.hardware import allocate_bits

    model, x = _planted()
    w = sensitivity(model, x, bits=[2, 8], max_probes=10)
    a = sensitivity(model, x, bits=[2, 8], kind="activations", max_probes=10)
    assert a.layers == w.layers and a.bits == w.bits
    both = Sensitivity(w.layers, w.bits, w.table + a.table)
    alloc = allocate_bits(model, both, "size", budget=0.6,
                          first_last_8bit=False)
    assert alloc["big"] == (8, 8)  # its input is the expensive one
    with pytest.raises(ValueError, match="kind must be 'weights'"):
        allocate_bits(model, a, "size", budget=0.6)


def test_integer_inputs_count_zero():
    keras.utils.set_random_seed(0)
    inp = keras.Input((8,), dtype="int32")
    h = L.GlobalAveragePooling1D()(L.Embedding(20, 6, name="emb")(inp))
    model = keras.Model(inp, L.Dense(4, name="fc")(h))
    rng = np.random.default_rng(0)
    data = (rng.integers(0, 20, (32, 8)).astype("int32"),
            rng.integers(0, 4, 32))
    s = sensitivity(model, data, bits=[2, 4], kind="activations",
                    max_probes=4)
    assert s.meta["not_measured"] == ["emb"]
    np.testing.assert_array_equal(s.table[s.layers.index("emb")], 0.0)
    assert np.all(s.table[s.layers.index("fc")] > 0)


def test_layer_calls_restored_after_an_error(monkeypatch):
    model, x = _linear_mse()

    def boom(*args, **kwargs):
        raise RuntimeError("probe failed")

    monkeypatch.setattr(hessian, "hutchinson_trace", boom)
    with pytest.raises(RuntimeError, match="probe failed"):
        sensitivity(model, x, bits=4, kind="activations")
    for layer in model.layers:
        assert "call" not in vars(layer)
    monkeypatch.undo()
    assert sensitivity(model, x, bits=4, kind="activations",
                       max_probes=3).table.shape == (2, 1)


def test_residual_cnn_table_and_json_round_trip(residual_model,
                                                synthetic_data, tmp_path):
    x, y = synthetic_data
    s = sensitivity(residual_model, (x[:32], y[:32]), bits=[2, 4, 8],
                    kind="activations", max_probes=5, batch_size=16)
    w = sensitivity(residual_model, (x[:32], y[:32]), bits=[2, 4, 8],
                    max_probes=5, batch_size=16)
    assert s.layers == w.layers and s.table.shape == (5, 3)
    assert np.all(s.table >= 0) and np.all(s.table[:, 0] > s.table[:, 2])
    assert "activation bit-width" in str(s)
    back = Sensitivity.from_json(s.to_json(str(tmp_path / "a.json")))
    assert (back.kind, back.method) == ("activations", "hessian")
    np.testing.assert_array_equal(back.table, s.table)
    assert back.meta["trace"] == pytest.approx(s.meta["trace"])
    assert back.meta["n_activations"] == s.meta["n_activations"]
    assert back.meta["input_range"] == {k: list(v) for k, v in
                                        s.meta["input_range"].items()}


def test_clear_errors_for_kind_and_method(residual_model, synthetic_data):
    x = synthetic_data[0][:16]
    with pytest.raises(ValueError, match=r"kind must be one of .*'outputs'"):
        sensitivity(residual_model, x, kind="outputs")
    with pytest.raises(ValueError, match="method must be one of.*'fisher'"):
        sensitivity(residual_model, x, method="fisher", kind="activations")
    with pytest.raises(ValueError, match="max_probes"):
        sensitivity(residual_model, x, kind="activations", max_probes=0)
