"""DNAS mixed precision (Wu et al., arXiv:1812.00090): Gumbel-softmax, the
mixed layers, the supernet cost / loss, search, annealing and derivation."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from tfcomp.cost import profile
from tfcomp.layers import (
    MixedQuantConv1D,
    MixedQuantConv2D,
    MixedQuantDense,
    MixedQuantDepthwiseConv2D,
    QuantConv1D,
    QuantConv2D,
    QuantDense,
    QuantDepthwiseConv2D,
)
from tfcomp.layers.gumbel import gumbel_softmax
from tfcomp.quantization import dnas, quantize_model


def _np(t):
    return keras.ops.convert_to_numpy(t)


def _softmax(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# ---------------------------------------------------------------------------
# Gumbel-softmax
# ---------------------------------------------------------------------------

LOGITS = np.array([1.0, 0.0, -1.0, 0.5], np.float32)


def test_gumbel_hard_sample_frequencies_match_softmax():
    n = 20000
    p = _softmax(LOGITS)
    z = np.tile(LOGITS, (n, 1))
    for tau in (1.0, 0.3, 5.0):
        y = _np(gumbel_softmax(z, tau, seed=7, hard=True))
        # forward values are one-hot
        np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-6)
        assert np.all(np.isclose(y, 0.0, atol=1e-6)
                      | np.isclose(y, 1.0, atol=1e-6))
        counts = np.bincount(y.argmax(-1), minlength=4)
        # argmax(logits + g) ~ softmax(logits), whatever the temperature
        assert np.max(np.abs(counts / n - p)) < 0.015, tau
        assert stats.chisquare(counts, n * p).pvalue > 1e-3, tau


def test_gumbel_soft_samples_temperature_seed_and_gradient():
    z = np.tile(LOGITS, (2000, 1))
    y = _np(gumbel_softmax(z, 1.0, seed=3))
    assert y.shape == (2000, 4)
    assert np.all(y >= 0) and np.all(y <= 1)
    np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-5)
    assert y.max(-1).mean() < 0.9  # genuinely soft at tau = 1
    # seeded
    np.testing.assert_array_equal(y, _np(gumbel_softmax(z, 1.0, seed=3)))
    assert not np.allclose(y, _np(gumbel_softmax(z, 1.0, seed=4)))
    # tau -> 0: near one-hot, at the hard sample's argmax
    soft = _np(gumbel_softmax(z, 0.01, seed=5))
    hard = _np(gumbel_softmax(z, 0.01, seed=5, hard=True))
    assert np.median(soft.max(-1)) > 0.999
    assert np.mean(soft.max(-1) > 0.99) > 0.95
    np.testing.assert_array_equal(soft.argmax(-1), hard.argmax(-1))
    # tau large: close to uniform
    warm = _np(gumbel_softmax(z, 100.0, seed=5))
    assert np.max(np.abs(warm - 0.25)) < 0.05
    # hard=True passes the soft sample's gradient (straight-through)
    logits = tf.Variable(np.tile(LOGITS, (4, 1)))
    w = np.arange(4, dtype=np.float32)
    with tf.GradientTape() as tape:
        loss = keras.ops.sum(gumbel_softmax(logits, 1.0, seed=2,
                                            hard=True) * w)
    g = _np(tape.gradient(loss, logits))
    assert np.all(np.isfinite(g)) and np.abs(g).sum() > 1e-3


def test_layer_mixing_weights_sample_softmax_theta():
    layer = MixedQuantDense(3, candidates=[(2, 4), (4, 4), (8, 8)],
                            temperature=1.0, seed=11)
    layer.build((None, 5))
    theta = np.array([0.8, -0.4, 0.1], np.float32)
    layer.theta.assign(theta)
    n = 300
    draws = np.stack([_np(layer.mixing_weights(training=True))
                      for _ in range(n)])  # a fresh draw per call
    np.testing.assert_allclose(draws.sum(-1), 1.0, atol=1e-5)
    counts = np.bincount(draws.argmax(-1), minlength=3)
    p = _softmax(theta)
    assert np.max(np.abs(counts / n - p)) < 0.09
    assert stats.chisquare(counts, n * p).pvalue > 1e-3
    # inference: the one-hot argmax of theta
    np.testing.assert_array_equal(_np(layer.mixing_weights(False)),
                                  [1.0, 0.0, 0.0])
    np.testing.assert_allclose(_np(layer.probabilities()), p, rtol=1e-5)


# ---------------------------------------------------------------------------
# Mixed layers: one shared kernel; candidate i == standalone Quant layer
# ---------------------------------------------------------------------------

CANDS = [(2, 4), (4, 8), (8, 4), (8, 8)]

LAYER_PAIRS = {
    "conv": (MixedQuantConv2D, QuantConv2D,
             {"filters": 5, "kernel_size": 3, "padding": "same"},
             (2, 7, 7, 3)),
    "depthwise": (MixedQuantDepthwiseConv2D, QuantDepthwiseConv2D,
                  {"kernel_size": 3, "depth_multiplier": 2}, (2, 7, 7, 3)),
    "dense": (MixedQuantDense, QuantDense, {"units": 6}, (4, 9)),
    "conv1d": (MixedQuantConv1D, QuantConv1D,
               {"filters": 5, "kernel_size": 3, "padding": "causal",
                "dilation_rate": 2}, (2, 9, 3)),
}


def _mixed_and_refs(kind, seed=0, bias=None):
    mixed_cls, quant_cls, kw, shape = LAYER_PAIRS[kind]
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, shape).astype("float32")
    mixed = mixed_cls(**kw, candidates=CANDS, seed=1)
    mixed.build(shape)
    mixed.kernel.assign(rng.normal(0, 0.5, mixed.kernel.shape))
    if bias is not None:
        mixed.bias.assign(bias(rng, mixed.bias.shape))
    mixed.refresh_weight_quantizer()
    for q in mixed.input_quantizers.values():
        q.set_range(0.0, 0.9)
    refs = []
    for w, a in CANDS:
        ref = quant_cls(**kw, w_bits=w, a_bits=a)
        ref.build(shape)
        refs.append(ref)
    _sync_refs(mixed, refs)
    return mixed, refs, x


def _sync_refs(mixed, refs):
    for ref in refs:
        ref.kernel.assign(mixed.kernel)
        ref.bias.assign(mixed.bias)
        ref.refresh_weight_quantizer()
        ref.input_quantizer.set_range(0.0, 0.9)


def _candidate_out(mixed, i, x):
    theta = np.full(len(mixed.candidates), -5.0, np.float32)
    theta[i] = 5.0
    mixed.theta.assign(theta)
    return _np(mixed(x, training=False))


def test_candidates_share_one_kernel_and_equal_standalone_layers():
    for kind in sorted(LAYER_PAIRS):
        mixed, refs, x = _mixed_and_refs(kind)
        # one float kernel variable; trainables are kernel, bias, theta
        kshape = tuple(mixed.kernel.shape)
        assert [v for v in mixed.weights
                if tuple(v.shape) == kshape] == [mixed.kernel], kind
        names = sorted(v.path.split("/")[-1]
                       for v in mixed.trainable_weights)
        assert names == ["bias", "kernel", "theta"], kind
        # candidate i == QuantX(w_bits, a_bits) with the same kernel
        before = []
        for i, ref in enumerate(refs):
            out = _candidate_out(mixed, i, x)
            np.testing.assert_allclose(out, _np(ref(x)), atol=1e-5,
                                       err_msg=f"{kind} {CANDS[i]}")
            before.append(out)
        for i in range(len(before)):  # genuinely different ops
            for j in range(i + 1, len(before)):
                assert np.max(np.abs(before[i] - before[j])) > 1e-3, (
                    kind, CANDS[i], CANDS[j])
        # changing the one kernel changes every candidate op
        mixed.kernel.assign(_np(mixed.kernel) * -1.7 + 0.05)
        mixed.refresh_weight_quantizer()
        _sync_refs(mixed, refs)
        for i, ref in enumerate(refs):
            after = _candidate_out(mixed, i, x)
            assert np.max(np.abs(after - before[i])) > 1e-2, (kind,
                                                              CANDS[i])
            np.testing.assert_allclose(after, _np(ref(x)), atol=1e-5,
                                       err_msg=f"{kind} {CANDS[i]}")


def test_training_output_is_gumbel_mixture_of_candidates():
    for kind in ("conv", "dense"):
        mixed, refs, x = _mixed_and_refs(kind)
        hi = float(x.max())  # the EMA update with x leaves this range
        for q in mixed.input_quantizers.values():
            q.set_range(0.0, hi)
        for ref in refs:
            ref.input_quantizer.set_range(0.0, hi)
        mixed.theta.assign([0.3, -0.2, 0.5, 0.0])
        state = _np(mixed.seed_generator.state)
        m = _np(mixed.mixing_weights(training=True))
        mixed.seed_generator.state.assign(state)  # same Gumbel noise
        y = _np(mixed(x, training=True))
        expected = sum(m[i] * _np(ref(x)) for i, ref in enumerate(refs))
        assert np.all(m > 0.01), kind  # a real mixture
        np.testing.assert_allclose(y, expected, atol=1e-4, err_msg=kind)


def test_candidate_equals_standalone_with_nonzero_bias():
    mixed, refs, x = _mixed_and_refs(
        "dense", bias=lambda rng, s: rng.normal(0, 0.3, s))
    for i, ref in enumerate(refs):
        np.testing.assert_allclose(_candidate_out(mixed, i, x), _np(ref(x)),
                                   atol=1e-6, err_msg=f"candidate {CANDS[i]}")


# ---------------------------------------------------------------------------
# Supernet cost and loss
# ---------------------------------------------------------------------------

SN_CANDS = [(2, 4), (4, 4), (8, 8)]
# Hand-counted params (kernel + bias) and MACs of _conv_model's layers.
PARAMS = {"c1": 9 * 1 * 4 + 4, "c2": 9 * 4 * 6 + 6, "d1": 96 * 8 + 8,
          "d2": 8 * 5 + 5, "out": 5 * 3 + 3}
MACS = {"c1": 6 * 6 * 9 * 1 * 4, "c2": 4 * 4 * 9 * 4 * 6, "d1": 96 * 8,
        "d2": 8 * 5, "out": 5 * 3}


def _conv_model():
    keras.utils.set_random_seed(3)
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, activation="relu", name="c1")(inp)
    h = keras.layers.Conv2D(6, 3, activation="relu", name="c2")(h)
    h = keras.layers.Flatten(name="flat")(h)
    h = keras.layers.Dense(8, activation="relu", name="d1")(h)
    h = keras.layers.Dense(5, activation="relu", name="d2")(h)
    out = keras.layers.Dense(3, name="out")(h)
    return keras.Model(inp, out)


def _set_thetas(sn, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for layer in dnas.mixed_layers(sn):
        t = rng.normal(0, 1.0, len(layer.candidates)).astype("float32")
        layer.theta.assign(t)
        out[layer.name] = t
    return out


@pytest.fixture(scope="module")
def conv_sn():
    """A float model and its "bops" supernet (c2, d1, d2 searched); tests
    set the thetas they need."""
    model = _conv_model()
    return model, dnas.build_supernet(model, candidates=SN_CANDS,
                                      cost="bops")


def test_expected_cost_by_hand():
    prof = profile(_conv_model())
    for name, params in PARAMS.items():
        assert prof.by_name(name).params == params, name
        assert prof.by_name(name).macs == MACS[name], name
    w = np.array([p[0] for p in SN_CANDS], float)
    a = np.array([p[1] for p in SN_CANDS], float)
    for cost in ("size", "bops"):
        sn = dnas.build_supernet(_conv_model(), candidates=SN_CANDS,
                                 cost=cost, skip=("d2",))
        info = sn.dnas_info
        assert info.cost == cost
        assert info.searched == ["c2", "d1"]
        assert info.fixed_bits == {"c1": (8, 8), "out": (8, 8)}
        thetas = _set_thetas(sn)

        def c(name, wb, ab, cost=cost):
            # size in bytes, as tfcomp.profile's weight_bytes
            return PARAMS[name] * wb / 8 if cost == "size" else (
                MACS[name] * wb * ab)

        # first / last at 8/8, the skipped d2 at float (32/32)
        fixed = c("c1", 8, 8) + c("out", 8, 8) + c("d2", 32, 32)
        assert info.fixed_cost == pytest.approx(fixed)
        expected = fixed
        for name in ("c2", "d1"):
            layer = sn.get_layer(name)
            costs = np.array([c(name, wb, ab) for wb, ab in SN_CANDS])
            np.testing.assert_allclose(_np(layer.costs), costs)
            e_layer = float(_softmax(thetas[name]) @ costs)
            assert float(_np(layer.expected_cost())) == pytest.approx(
                e_layer, rel=1e-5)
            expected += e_layer
        assert float(_np(dnas.expected_cost(sn))) == pytest.approx(
            expected, rel=1e-5), cost
        eb = dnas.expected_bits(sn)
        per = {n: (_softmax(thetas[n]) @ w, _softmax(thetas[n]) @ a)
               for n in ("c2", "d1")}
        assert eb["w_bits"] == pytest.approx(np.mean([v[0] for v in
                                                      per.values()]))
        assert eb["a_bits"] == pytest.approx(np.mean([v[1] for v in
                                                      per.values()]))
        for n, pair in per.items():
            assert eb["layers"][n] == pytest.approx(pair)

    def table(name, wb, ab):  # a custom (e.g. hardware) cost model
        return 100.0 * len(name) + wb + 0.5 * ab

    sn = dnas.build_supernet(_conv_model(), candidates=SN_CANDS, cost=table)
    assert sn.dnas_info.cost == "custom"
    thetas = _set_thetas(sn, seed=4)
    expected = table("c1", 8, 8) + table("out", 8, 8)
    for name in ("c2", "d1", "d2"):
        costs = np.array([table(name, wb, ab) for wb, ab in SN_CANDS])
        expected += float(_softmax(thetas[name]) @ costs)
    assert float(_np(dnas.expected_cost(sn))) == pytest.approx(expected,
                                                               rel=1e-5)
    with pytest.raises(ValueError, match="cost"):
        dnas.build_supernet(_conv_model(), cost="latency")


def test_dnas_loss_value_by_hand(conv_sn):
    _, sn = conv_sn
    thetas = _set_thetas(sn, seed=1)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (6, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, 6)
    z = _np(sn(x, training=False)).astype(np.float64)
    ce = np.mean(np.log(np.exp(z).sum(-1)) - z[np.arange(6), y])
    e_cost = MACS["c1"] * 64 + MACS["out"] * 64
    for name in ("c2", "d1", "d2"):
        costs = np.array([MACS[name] * w * a for w, a in SN_CANDS])
        e_cost += float(_softmax(thetas[name]) @ costs)
    for beta, gamma in [(0.2, 0.6), (1.5, 1.0), (0.7, 0.0)]:
        loss = dnas.DNASLoss(sn, beta=beta, gamma=gamma)
        want = ce * beta * math.log(e_cost) ** gamma
        assert float(_np(loss(y, z))) == pytest.approx(want, rel=1e-5)
        assert float(_np(loss.cost_factor())) == pytest.approx(
            beta * math.log(e_cost) ** gamma, rel=1e-5)
    with pytest.raises(ValueError, match="beta"):
        dnas.DNASLoss(sn, beta=0.0)
    with pytest.raises(ValueError, match="gamma"):
        dnas.DNASLoss(sn, gamma=-1.0)
    with pytest.raises(ValueError, match="supernet"):
        dnas.DNASLoss(_conv_model())


def test_dnas_loss_theta_gradient_scales_with_beta_and_favours_cheap(
        conv_sn):
    """beta multiplies the whole gradient (so Adam, which is invariant to a
    gradient scale, ignores it; SGD steps grow with it), and the cost
    factor's gradient pushes theta from expensive to cheap candidates."""
    _, sn = conv_sn
    _set_thetas(sn, seed=2)
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (8, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, 8)
    layers = dnas.mixed_layers(sn)
    thetas = [layer.theta for layer in layers]
    states = [_np(layer.seed_generator.state) for layer in layers]

    def same_noise():
        for layer, s in zip(layers, states):
            layer.seed_generator.state.assign(s)

    same_noise()
    sn(x, training=True)  # EMA ranges: this batch, this Gumbel noise

    def grads(beta):
        same_noise()
        loss = dnas.DNASLoss(sn, beta=beta, gamma=0.6)
        with tf.GradientTape() as tape:
            value = loss(y, sn(x, training=True))
        return [_np(g) for g in tape.gradient(value, thetas)]

    g1, g10 = grads(0.1), grads(1.0)
    for a, b in zip(g1, g10):
        assert np.abs(a).sum() > 0
        np.testing.assert_allclose(b, 10.0 * a, rtol=1e-3, atol=1e-9)
    loss = dnas.DNASLoss(sn, beta=1.0, gamma=0.6)
    with tf.GradientTape() as tape:
        factor = loss.cost_factor()
    for layer, g in zip(layers, tape.gradient(factor, thetas)):
        c = _np(layer.costs)
        e = float(_softmax(_np(layer.theta)) @ c)
        np.testing.assert_array_equal(np.sign(_np(g)), np.sign(c - e))


# ---------------------------------------------------------------------------
# Temperature annealing
# ---------------------------------------------------------------------------

def test_temperature_annealing_per_epoch(conv_sn):
    _, sn = conv_sn
    ann = dnas.TemperatureAnnealing(initial=2.0, decay=0.5, minimum=0.3)
    ann.set_model(sn)
    seen = []
    for epoch in range(4):
        ann.on_epoch_begin(epoch)
        seen.append(sorted({float(_np(layer.temperature))
                            for layer in dnas.mixed_layers(sn)}))
    # one tau for every layer, floored at minimum (float32 variables)
    assert seen == [[2.0], [1.0], [0.5], [pytest.approx(0.3)]]
    assert ann.history == [(0, 2.0), (1, 1.0), (2, 0.5), (3, 0.3)]
    default = dnas.TemperatureAnnealing()
    assert default.temperature(0) == 5.0
    assert default.temperature(3) == pytest.approx(5.0 * 0.956 ** 3)
    assert default.temperature(10 ** 4) == 0.05
    assert default.get_config() == {"initial": 5.0, "decay": 0.956,
                                    "minimum": 0.05}
    with pytest.raises(ValueError, match="supernet"):
        dnas.TemperatureAnnealing().set_model(_conv_model())
    with pytest.raises(ValueError, match="decay"):
        dnas.TemperatureAnnealing(decay=1.5)


# ---------------------------------------------------------------------------
# Search (one module-level run per beta; the results feed several tests)
# ---------------------------------------------------------------------------

N_SEARCH, BATCH = 100, 10
BETA_SMALL, BETA_LARGE = 0.05, 5.0


def _dense_model():
    keras.utils.set_random_seed(1)
    inp = keras.Input((6,))
    h = keras.layers.Dense(8, activation="relu", name="d0")(inp)
    h = keras.layers.Dense(8, activation="relu", name="d1")(h)
    h = keras.layers.Dense(8, activation="relu", name="d2")(h)
    out = keras.layers.Dense(3, name="out")(h)
    return keras.Model(inp, out)


def _snapshot(model):
    return {v.path: _np(v).copy() for v in model.weights}


class _RecordingAnnealing(dnas.TemperatureAnnealing):
    """Records every variable at the start / end of the weight phase (the
    only fit the annealing callback is attached to) and the layers' tau."""

    def on_train_begin(self, logs=None):
        self.begin = _snapshot(self.model)

    def on_epoch_end(self, epoch, logs=None):
        self.tau_in_fit = {float(_np(layer.temperature))
                           for layer in dnas.mixed_layers(self.model)}

    def on_train_end(self, logs=None):
        self.end = _snapshot(self.model)


def _run_search(beta):
    model = _dense_model()
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (N_SEARCH, 6)).astype("float32")
    y = rng.integers(0, 3, N_SEARCH)
    keras.utils.set_random_seed(0)
    sn = dnas.build_supernet(model, candidates=SN_CANDS, cost="bops")
    start = {"bits": dnas.expected_bits(sn),
             "cost": float(_np(dnas.expected_cost(sn)))}
    ann = _RecordingAnnealing(initial=2.0, decay=0.5)
    opt_w = keras.optimizers.Adam(1e-2)
    opt_t = keras.optimizers.SGD(1.0)
    hist = dnas.search(sn, x, y, epochs=1, batch_size=BATCH, beta=beta,
                       gamma=0.6, weight_optimizer=opt_w,
                       theta_optimizer=opt_t, annealing=ann, seed=0,
                       verbose=0)
    mixed = [layer.name for layer in dnas.mixed_layers(sn)]
    theta_paths = [p for p in ann.begin if p.endswith("/theta")]
    return {
        "start": start, "hist": hist, "begin": ann.begin, "end": ann.end,
        "final": _snapshot(sn), "tau_in_fit": ann.tau_in_fit,
        "theta_paths": theta_paths, "mixed": mixed,
        "kernel_paths": [p for p in ann.begin if p.endswith("/kernel")],
        "iters": (int(_np(opt_w.iterations)), int(_np(opt_t.iterations))),
        "trainable": all(v.trainable for v in sn.weights
                         if v.path.endswith(("/kernel", "/bias", "/theta"))),
        "bits": dnas.expected_bits(sn),
        "cost": float(_np(dnas.expected_cost(sn))),
        "derived": dnas.derive(sn),
    }


@pytest.fixture(scope="module")
def searched():
    return {beta: _run_search(beta) for beta in (BETA_SMALL, BETA_LARGE)}


@pytest.mark.slow
def test_search_alternates_weight_and_theta_phases(searched):
    r = searched[BETA_LARGE]
    assert r["mixed"] == ["d1", "d2"]
    # weight phase: theta frozen, kernels trained
    for p in r["theta_paths"]:
        np.testing.assert_array_equal(r["begin"][p], r["end"][p])
    assert any(not np.array_equal(r["begin"][p], r["end"][p])
               for p in r["kernel_paths"])
    # theta phase: every kernel / bias frozen, theta trained
    for p in r["end"]:
        if p.endswith(("/kernel", "/bias")):
            np.testing.assert_array_equal(r["end"][p], r["final"][p],
                                          err_msg=p)
    for p in r["theta_paths"]:
        assert not np.array_equal(r["end"][p], r["final"][p]), p
    # 80 / 20 split of the data between the two phases
    n_w = round(0.8 * N_SEARCH)
    assert r["iters"] == (math.ceil(n_w / BATCH),
                          math.ceil((N_SEARCH - n_w) / BATCH))
    assert r["trainable"]  # everything trainable again afterwards
    # annealing ran inside the weight-phase fit and is logged
    assert r["tau_in_fit"] == {2.0}
    (epoch,) = r["hist"]["epochs"]
    assert epoch["epoch"] == 0 and epoch["temperature"] == 2.0
    assert epoch["expected_cost"] == pytest.approx(r["cost"], rel=1e-5)
    assert epoch["expected_w_bits"] == pytest.approx(r["bits"]["w_bits"])


def test_larger_beta_lowers_expected_bits_with_sgd(searched):
    """With an SGD theta optimizer the theta step is proportional to beta
    (the module doc: with Adam beta only rescales gradients)."""
    small, large = searched[BETA_SMALL], searched[BETA_LARGE]
    assert small["start"]["bits"]["w_bits"] == pytest.approx(14 / 3)
    assert large["bits"]["w_bits"] < small["bits"]["w_bits"] - 0.2
    assert large["bits"]["a_bits"] < small["bits"]["a_bits"] - 0.1
    assert large["cost"] < small["cost"] * 0.97
    assert large["cost"] < large["start"]["cost"]
    moved = {}
    for key, r in searched.items():
        moved[key] = sum(np.abs(r["final"][p] - r["end"][p]).sum()
                         for p in r["theta_paths"])
    assert moved[BETA_LARGE] > 20 * moved[BETA_SMALL] > 0
    # the cheapest candidate gains the most probability in every layer
    for p in large["theta_paths"]:
        assert int(np.argmax(large["final"][p])) == 0  # (2, 4)
    assert set(large["derived"].values()) >= {(2, 4)}


def test_search_validates_arguments(conv_sn):
    _, sn = conv_sn
    x = np.zeros((10, 8, 8, 1), "float32")
    y = np.zeros(10, "int64")
    with pytest.raises(ValueError, match="weight_fraction"):
        dnas.search(sn, x, y, weight_fraction=1.0)
    with pytest.raises(ValueError, match="epochs"):
        dnas.search(sn, x, y, epochs=0)
    with pytest.raises(ValueError, match="lengths"):
        dnas.search(sn, x, y[:5])
    with pytest.raises(ValueError, match="supernet"):
        dnas.search(conv_sn[0], x, y)


# ---------------------------------------------------------------------------
# Deriving architectures
# ---------------------------------------------------------------------------

def test_derive_argmax_feeds_quantize_model(conv_sn):
    model, sn = conv_sn
    thetas = _set_thetas(sn, seed=5)
    bits = dnas.derive(sn)
    assert list(bits) == ["c1", "c2", "d1", "d2", "out"]
    assert bits["c1"] == bits["out"] == (8, 8)
    for name, t in thetas.items():
        assert bits[name] == SN_CANDS[int(np.argmax(t))]
        assert sn.get_layer(name).best_candidate() == bits[name]
    qat = quantize_model(model, bits=bits)
    for name, (w, a) in bits.items():
        layer = qat.get_layer(name)
        assert (layer.w_bits, layer.a_bits) == (w, a), name
    # the supernet in inference mode is the derived architecture
    prof = profile(sn)
    for name, pair in bits.items():
        assert (prof.by_name(name).w_bits, prof.by_name(name).a_bits) == pair
    assert dnas.architecture_cost(sn, bits) == pytest.approx(
        sum(MACS[n] * w * a for n, (w, a) in bits.items()))
    with pytest.raises(ValueError, match="mode"):
        dnas.derive(sn, mode="best")


def test_derive_budget_is_met(conv_sn):
    _, sn = conv_sn
    for layer in dnas.mixed_layers(sn):  # argmax = the most expensive
        layer.theta.assign([0.0, 0.5, 1.0])
    free = dnas.derive(sn)
    cost_free = dnas.architecture_cost(sn, free)
    cheapest = {**free, **{n: (2, 4) for n in ("c2", "d1", "d2")}}
    cost_min = dnas.architecture_cost(sn, cheapest)
    assert cost_min < cost_free
    for frac in (0.9, 0.5, 0.2, 0.0):
        budget = cost_min + frac * (cost_free - cost_min)
        bits = dnas.derive(sn, budget=budget)
        assert dnas.architecture_cost(sn, bits) <= budget * (1 + 1e-9)
        assert bits["c1"] == bits["out"] == (8, 8)
    assert dnas.derive(sn, budget=cost_free * 1.01) == free
    with pytest.raises(ValueError, match="budget"):
        dnas.derive(sn, budget=cost_min * 0.99)


def test_sample_architectures_follow_p_theta_and_are_seedable(conv_sn):
    _, sn = conv_sn
    thetas = {"c2": np.array([1.0, 0.0, -1.0], np.float32),
              "d1": np.array([-0.5, 0.5, 0.2], np.float32),
              "d2": np.array([0.0, 0.0, 0.0], np.float32)}
    for name, t in thetas.items():
        sn.get_layer(name).theta.assign(t)
    n = 300
    archs = dnas.sample_architectures(sn, n, seed=0)
    assert len(archs) == n
    assert archs == dnas.sample_architectures(sn, n, seed=0)
    assert archs[:20] != dnas.sample_architectures(sn, 20, seed=1)
    assert dnas.derive(sn, "sample", seed=3) == dnas.derive(sn, "sample",
                                                             seed=3)
    for name, t in thetas.items():
        counts = np.bincount([SN_CANDS.index(a[name]) for a in archs],
                             minlength=3)
        p = _softmax(t)
        assert np.max(np.abs(counts / n - p)) < 0.09, name
        assert stats.chisquare(counts, n * p).pvalue > 1e-3, name
    assert {a["c1"] for a in archs} == {(8, 8)}


@pytest.mark.slow
def test_select_best_trains_each_architecture_once_and_keeps_the_best(
        monkeypatch):
    """The paper's last step: train the sampled architectures, keep the
    most accurate. A 1-bit architecture cannot fit the task that its 8-bit
    sibling fits; duplicates are trained once; scores keep input order."""
    # select_best's QAT models come from dynamic_bits.PolicyModels
    from tfcomp.quantization import dynamic_bits as search_module

    model = _dense_model()
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (300, 6)).astype("float32")
    y = (x[:, 0] > 0.5).astype("int64") + (x[:, 1] > 0.5)
    model.compile(keras.optimizers.Adam(0.03),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=30, batch_size=30, verbose=0)
    names = ["d0", "d1", "d2", "out"]
    good = {n: (8, 8) for n in names}
    bad = {**good, "d1": (1, 1), "d2": (1, 1)}
    calls = []
    real = search_module.quantize_model
    monkeypatch.setattr(search_module, "quantize_model",
                        lambda m, bits, **kw: calls.append(bits) or
                        real(m, bits=bits, **kw))
    best, scores = dnas.select_best(model, [bad, good, dict(bad)], x, y,
                                    (x, y), epochs=2, batch_size=30)
    assert best == good
    assert [s["bits"] for s in scores] == [bad, good, bad]
    assert scores[0]["val_accuracy"] == scores[2]["val_accuracy"]
    assert scores[1]["val_accuracy"] > scores[0]["val_accuracy"]
    assert scores[1]["val_accuracy"] > 0.8
    assert len(calls) == 2
    with pytest.raises(ValueError, match="architectures"):
        dnas.select_best(model, [], x, y, (x, y))
    with pytest.raises(ValueError, match="epochs"):
        dnas.select_best(model, [good], x, y, (x, y), epochs=0)


@pytest.mark.parametrize("cost", ["size", "bops"])
def test_supernet_costs_are_the_profiles(cost):
    """DNAS's size / BOPs of an architecture equal tfcomp.profile(model,
    bits=...)'s: the one cost model (size in bytes, bias included)."""
    model = _conv_model()
    sn = dnas.build_supernet(model, candidates=SN_CANDS, cost=cost)
    for seed in range(3):
        _set_thetas(sn, seed)
        bits = dnas.derive(sn, mode="sample", seed=seed)
        prof = profile(model, bits=bits)
        records = [prof.by_name(n) for n in bits]
        want = (sum(r.size_bytes for r in records) if cost == "size"
                else sum(r.bops for r in records))
        assert dnas.architecture_cost(sn, bits) == pytest.approx(
            want, rel=1e-12)
