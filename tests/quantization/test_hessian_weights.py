"""Tests of the weight-trace estimator behind ``sensitivity(...,
method="hessian")``: sample-disjoint probes (the default) against block
traces of a Hessian materialised with ``tf.GradientTape`` jacobians, never
negative for the PSD blocks of a piecewise-linear net (where joint probes
go negative), the per-layer and joint options, the standard-error stopping
rule, seeding, the restored layer calls and the sample -> layer rotation
shared with the activation traces."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcomp.quantization import hessian
from tfcomp.quantization.sensitivity import sensitivity

L = keras.layers


def _cnn(seed=0):
    """conv (BN, ReLU) -> conv (ReLU) -> dense -> dense: small kernels, so
    the Hessian's diagonal blocks can be materialised."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((6, 6, 1))
    h = L.Conv2D(3, 3, use_bias=False, name="c1")(inp)
    h = L.BatchNormalization(name="bn")(h)
    h = L.ReLU()(h)
    h = L.Conv2D(4, 3, activation="relu", name="c2")(h)
    h = L.Flatten()(h)
    h = L.Dense(6, activation="relu", name="d1")(h)
    model = keras.Model(inp, L.Dense(3, name="d2")(h))
    rng = np.random.default_rng(seed)
    bn = model.get_layer("bn")
    bn.moving_mean.assign(rng.normal(0, 0.1, 3).astype("float32"))
    bn.moving_variance.assign(rng.uniform(0.5, 2, 3).astype("float32"))
    x = rng.normal(size=(48, 6, 6, 1)).astype("float32")
    y = rng.integers(0, 3, 48)
    return model, x, y


def _exact_traces(model, x, y, names):
    """``Tr(H_ii)`` of the mean sparse cross-entropy (from logits) per
    layer's kernel, from the jacobian of the gradient."""
    fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    kernels = [model.get_layer(n).kernel for n in names]
    with tf.GradientTape(persistent=True) as outer:
        with tf.GradientTape() as inner:
            loss = tf.reduce_mean(fn(y, model(x, training=False)))
        grads = inner.gradient(loss, kernels)
    out = []
    for k, g in zip(kernels, grads):
        n = int(np.prod(k.shape))
        jac = np.reshape(outer.jacobian(g, k).numpy(), (n, n))
        assert np.linalg.eigvalsh((jac + jac.T) / 2).min() > -1e-5  # PSD
        out.append(float(np.trace(jac)))
    return np.array(out)


NAMES = ["c1", "c2", "d1", "d2"]


def test_default_estimate_matches_the_materialised_hessian():
    model, x, y = _cnn()
    want = _exact_traces(model, x, y, NAMES)
    s = sensitivity(model, (x, y), bits=[4], batch_size=16, rel_se=0.05)
    got = np.array([s.meta["trace"][n] for n in NAMES])
    np.testing.assert_allclose(got, want, rtol=0.1)
    assert np.all(got > 0)
    assert s.meta["probing"] == "disjoint" and s.meta["probes"] <= 100
    assert all(s.meta["trace_se"][n] <= 0.1 * s.meta["trace"][n]
               for n in NAMES)  # rel_se 5% or max_probes: near it
    assert set(s.meta["unconverged"]) == {
        n for n in NAMES if s.meta["trace_se"][n] > 0.05 * s.meta["trace"][n]}
    # joint probes, same budget: cross terms leave > 25% error (d1: 64%)
    joint = sensitivity(model, (x, y), bits=[4], batch_size=16,
                        probing="joint")
    assert max(abs(joint.meta["trace"][n] / w - 1)
               for n, w in zip(NAMES, want)) > 0.25
    # the per-layer estimator (one kernel per product) agrees too
    ref = sensitivity(model, (x, y), bits=[4], batch_size=48,
                      probing="layer", max_probes=40, rel_se=None)
    np.testing.assert_allclose([ref.meta["trace"][n] for n in NAMES], want,
                               rtol=0.1)
    assert not any("call" in vars(model.get_layer(n)) for n in NAMES)


def _coupled(seed=0):
    """A wide, sensitive layer (``big``) feeding a small-trace one: joint
    probes' cross terms ``v_i^T H_ij v_j`` swamp the small trace."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8,))
    h = L.Dense(32, activation="relu", name="big")(inp)
    h = L.Dense(32, activation="relu", name="small")(h)
    model = keras.Model(inp, L.Dense(4, name="out")(h))
    k = model.get_layer("small").kernel
    k.assign(k.numpy() * 0.05)
    big = model.get_layer("big").kernel
    big.assign(big.numpy() * 20.0)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(64, 8)).astype("float32")
    return model, x, rng.integers(0, 4, 64)


def test_disjoint_probes_are_never_negative_where_joint_ones_are():
    model, x, y = _coupled()
    joint_negative = 0
    for seed in range(4):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            s = sensitivity(model, (x, y), bits=[4], max_probes=3,
                            min_probes=3, seed=seed)
        assert all(t > 0 for t in s.meta["trace"].values()), seed
        assert not [w for w in seen if "negative" in str(w.message)]
        j = sensitivity(model, (x, y), bits=[4], max_probes=3, min_probes=3,
                        seed=seed, probing="joint")
        joint_negative += min(j.meta["trace"].values()) < 0
    assert joint_negative >= 1


def test_stopping_rule_reports_unconverged_layers_and_is_seeded():
    model, x, y = _cnn(1)
    few = sensitivity(model, (x, y), bits=[4], max_probes=2, seed=3,
                      rel_se=0.05)
    assert few.meta["probes"] == 2
    assert few.meta["unconverged"]  # 2 probes cannot reach 5%
    again = sensitivity(model, (x, y), bits=[4], max_probes=2, seed=3,
                        rel_se=0.05)
    np.testing.assert_array_equal(few.table, again.table)
    other = sensitivity(model, (x, y), bits=[4], max_probes=2, seed=4)
    assert not np.array_equal(few.table, other.table)
    # the default (rel_se=None): the running-mean rule alone (HAWQ-V2's)
    loose = sensitivity(model, (x, y), bits=[4], tol=0.5)
    assert loose.meta["probes"] == 3 and loose.meta["unconverged"] == []


def test_hutchinson_standard_error():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(30, 30))
    a = a @ a.T
    t, k, se = hessian.hutchinson_trace(lambda v: [a @ v[0]], [(30,)],
                                        rel_se=0.02, max_probes=2000,
                                        stderr=True)
    assert se[0] <= 0.02 * t[0] and 3 < k < 2000
    assert abs(t[0] - np.trace(a)) < 4 * se[0]
    with pytest.raises(ValueError, match="rel_se"):
        hessian.hutchinson_trace(lambda v: v, [(3,)], rel_se=0)


def test_probing_errors_and_restored_calls(monkeypatch):
    model, x, y = _cnn()
    with pytest.raises(ValueError, match="probing must be one of"):
        sensitivity(model, (x, y), bits=[4], probing="diagonal")
    with pytest.raises(ValueError, match="probing='joint'"):
        sensitivity(model, (x, y), bits=[4], kind="activations",
                    probing="joint")

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(hessian, "hutchinson_trace", boom)
    with pytest.raises(RuntimeError, match="boom"):
        sensitivity(model, (x, y), bits=[4])
    assert not any("call" in vars(model.get_layer(n)) for n in NAMES)


@pytest.mark.slow
def test_every_quantized_kind_against_the_materialised_hessian():
    """Embedding (integer inputs), Conv1D, EinsumDense, Conv2DTranspose and
    Dense under sample-disjoint probes: each layer's kernel swapped through
    ``keras.StatelessScope`` on its samples only."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((8,), dtype="int32")
    h = L.Conv1D(4, 3, padding="same", name="conv1d")(
        L.Embedding(10, 4, name="emb")(inp))
    h = L.EinsumDense("abc,cd->abd", output_shape=(8, 3), name="einsum")(h)
    h = L.Conv2DTranspose(2, 3, strides=2, padding="same", name="convt")(
        L.Reshape((2, 4, 3))(h))
    model = keras.Model(inp, L.Dense(3, name="fc")(
        L.GlobalAveragePooling2D()(h)))
    rng = np.random.default_rng(0)
    x = rng.integers(0, 10, (40, 8)).astype("int32")
    y = rng.integers(0, 3, 40)
    names = ["emb", "conv1d", "einsum", "convt", "fc"]
    fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    kernels = [model.get_layer("emb").embeddings] + [
        model.get_layer(n).kernel for n in names[1:]]
    with tf.GradientTape(persistent=True) as outer:
        with tf.GradientTape() as inner:
            loss = tf.reduce_mean(fn(y, model(x, training=False)))
        grads = [tf.convert_to_tensor(g) for g in inner.gradient(loss,
                                                                 kernels)]
    want = []
    for k, g in zip(kernels, grads):
        n = int(np.prod(k.shape))
        want.append(np.trace(np.reshape(outer.jacobian(g, k).numpy(),
                                        (n, n))))
    s = sensitivity(model, (x, y), bits=[4], batch_size=16)
    assert s.layers == names
    got = np.array([s.meta["trace"][n] for n in names])
    se = np.array([s.meta["trace_se"][n] for n in names])
    # low-rank blocks of an untrained toy: slow to converge (1000 probes
    # give 3%), so the check is unbiasedness within the reported error
    assert np.all(np.abs(got - want) <= 4 * se)
    np.testing.assert_allclose(got, want, rtol=0.3)


def test_fewer_samples_than_layers_and_one_sample_batches():
    """3 samples, 4 layers: the layers are probed in groups; batches of one
    sample leave most layers without samples in a batch (empty gathers)."""
    model, x, y = _cnn()
    s = sensitivity(model, (x[:3], y[:3]), bits=[4], batch_size=1,
                    max_probes=4)
    assert all(t > 0 for t in s.meta["trace"].values())
    want = _exact_traces(model, x[:3], y[:3], NAMES)
    full = sensitivity(model, (x[:3], y[:3]), bits=[4], max_probes=400,
                       rel_se=0.02)
    got = np.array([full.meta["trace"][n] for n in NAMES])
    se = np.array([full.meta["trace_se"][n] for n in NAMES])
    assert np.all(np.abs(got - want) <= 4 * se + 1e-9)


def test_rotation_assigns_each_sample_one_layer_and_rotates():
    """The sample -> layer rotation shared by weights and activations: per
    product every sample probes one layer; a group's size in probes sees
    every (sample, layer) pair once; fewer samples than layers -> groups;
    kept blocks are scaled by the group size (whole block, or the layer's
    rows)."""
    cases = {(4, 6): [[0, 1, 2, 3]], (5, 2): [[0, 3], [1, 4], [2]]}
    for (n_layers, n), groups in cases.items():
        for rows in (False, True):
            seen = []

            def product(vs, keep, seen=seen):
                seen.append(keep.copy())
                return [np.ones(v.shape) for v in vs]

            hvp = hessian._rotation(product, n_layers, n, rows=rows)
            outs = [hvp([np.zeros((n, 2))] * n_layers)
                    for _ in range(n_layers)]
            # (probe, group, layer, sample)
            keeps = np.array(seen).reshape(n_layers, len(groups), n_layers, n)
            assert np.all(keeps.sum(axis=2) == 1)  # one layer per sample
            assert not np.array_equal(keeps[0], keeps[1])  # rotates
            for g, members in enumerate(groups):
                others = [i for i in range(n_layers) if i not in members]
                assert not keeps[:, g][:, others].any()
                for p in range(n_layers):  # sample k -> (k + p)-th member
                    for k in range(n):
                        assert keeps[p, g, members[(k + p) % len(members)], k]
                counts = keeps[:len(members), g][:, members].sum(axis=0)
                assert np.all(counts == 1)
                for p, out in enumerate(outs):
                    for i in members:
                        want = np.full((n, 2), float(len(members)))
                        if rows:
                            want[~keeps[p, g, i]] = 0.0
                        np.testing.assert_array_equal(out[i], want)


def test_second_pass_indices_are_the_mask_padded_with_distinct_others():
    keep = np.array([[1, 0, 0, 1, 0], [0, 1, 0, 0, 0], [0, 0, 1, 0, 1]],
                    bool)
    idx = hessian._indices(keep, 2)
    assert [i[:, 0].tolist() for i in idx] == [[0, 3], [1, 0], [2, 4]]
    assert all(i.shape == (2, 1) and i.dtype == np.int32 for i in idx)
    # a short batch: no more than its samples; a full row: all of them
    assert [i[:, 0].tolist() for i in hessian._indices(keep[:, :1], 2)] \
        == [[0], [0], [0]]
    assert hessian._indices(np.ones((1, 4), bool), 2)[0].shape == (4, 1)


def test_separable_and_depthwise_kernels_against_the_materialised_hessian():
    """A SeparableConv2D's two kernels (one layer hooked twice: the inner
    hook runs plain in the outer one's second pass) and a depthwise conv,
    whose second passes see a few gathered samples only."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 6, 2))
    h = L.SeparableConv2D(3, 3, padding="same", activation="relu",
                          name="sep")(inp)
    h = L.DepthwiseConv2D(3, name="dw")(h)
    model = keras.Model(inp, L.Dense(3, name="fc")(L.Flatten()(
        L.ReLU()(h))))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6, 6, 2)).astype("float32")
    y = rng.integers(0, 3, 40)
    sep = model.get_layer("sep")
    kernels = [sep.depthwise_kernel, sep.pointwise_kernel,
               model.get_layer("dw").kernel, model.get_layer("fc").kernel]
    fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape(persistent=True) as outer:
        with tf.GradientTape() as inner:
            loss = tf.reduce_mean(fn(y, model(x, training=False)))
        grads = inner.gradient(loss, kernels)
    want = [np.trace(np.reshape(outer.jacobian(g, k).numpy(),
                                (int(np.prod(k.shape)),) * 2))
            for g, k in zip(grads, kernels)]
    s = sensitivity(model, (x, y), bits=[4], batch_size=16, rel_se=0.05,
                    max_probes=200)
    names = ["sep_depthwise", "sep", "dw", "fc"]
    assert list(s.meta["trace"]) == names
    got = np.array([s.meta["trace"][n] for n in names])
    se = np.array([s.meta["trace_se"][n] for n in names])
    assert np.all(np.abs(got - want) <= 4 * se + 1e-9)
    np.testing.assert_allclose(got, want, rtol=0.2)
