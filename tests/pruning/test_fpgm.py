"""FPGM soft filter pruning: METHODS.md faithfulness checks, coupled groups,
channels returning, gradient masking, save/resume, MirroredStrategy."""

import os

import keras
import numpy as np
import pytest
from _mirrored import run_mirrored

import tfcomp
from tfcomp.pruning.fpgm import FPGMPruning, channels_to_remove
from tfcomp.pruning.wrappers import apply_fpgm, strip_pruning


def _residual():
    inp = keras.Input((8, 8, 3))
    s = keras.layers.Conv2D(8, 3, padding="same", use_bias=False,
                            name="stem")(inp)
    s = keras.layers.BatchNormalization(name="stem_bn")(s)
    s = keras.layers.ReLU()(s)
    a = keras.layers.Conv2D(8, 3, padding="same", use_bias=False,
                            name="a")(s)
    a = keras.layers.BatchNormalization(name="a_bn")(a)
    a = keras.layers.ReLU()(a)
    b = keras.layers.Conv2D(8, 3, padding="same", use_bias=False,
                            name="b")(a)
    b = keras.layers.BatchNormalization(name="b_bn")(b)
    x = keras.layers.ReLU()(keras.layers.Add()([b, s]))
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", name="c")(x)
    x = keras.layers.BatchNormalization(name="c_bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(4, name="head")(x)
    return keras.Model(inp, out, name="res")


def _data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 8, 8, 3)).astype("float32"),
            rng.integers(0, 4, n))


def _compile(model, opt=None):
    model.compile(opt or keras.optimizers.Adam(1e-2),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _mask(model, name):
    return keras.ops.convert_to_numpy(model.get_layer(name).channel_mask_var)


def _filters_zero(model, name):
    k = keras.ops.convert_to_numpy(model.get_layer(name).kernel)
    return np.abs(k.reshape(-1, k.shape[-1])).max(axis=0) == 0


def _planted_model():
    """A 1x1 conv whose 8 filters are: 4 spread around a centroid m with
    large norm, 2 planted at m (large norm, most replaceable) and 2 tiny."""
    inp = keras.Input((4, 4, 4))
    x = keras.layers.Conv2D(8, 1, use_bias=False, name="pl")(inp)
    x = keras.layers.BatchNormalization(name="pl_bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(3, name="head")(x))
    m = np.array([10.0, 0, 0, 0])
    d1, d2 = np.array([0, 3.0, 0, 0]), np.array([0, 0, 3.0, 0])
    e = np.array([0, 0, 0, 0.01])
    filters = [m + d1, m - d1, m + d2, m - d2,       # 0-3 spread
               m + e, m - e,                         # 4-5 planted
               10 * e, -10 * e]                      # 6-7 tiny norm
    kernel = np.stack(filters, axis=1).reshape(1, 1, 4, 8)
    model.get_layer("pl").kernel.assign(kernel.astype("float32"))
    return model


@pytest.mark.parametrize("criterion, expected", [
    ("fpgm", [4, 5]), ("l2", [6, 7]), ("l1", [6, 7])])
def test_planted_centroid_filters(criterion, expected):
    model = apply_fpgm(_planted_model())
    cb = FPGMPruning(ratio=0.25, criterion=criterion)
    cb.set_model(model)
    selected = cb.update_masks()
    assert selected["pl"].tolist() == expected
    assert np.flatnonzero(_mask(model, "pl") == 0).tolist() == expected
    assert np.flatnonzero(_filters_zero(model, "pl")).tolist() == expected
    # the BN of the group is masked with the same channels
    assert np.flatnonzero(_mask(model, "pl_bn") == 0).tolist() == expected


def test_fpgm_mix_takes_norm_share_then_geometric_median():
    model = apply_fpgm(_planted_model())
    cb = FPGMPruning(ratio=0.25, criterion="fpgm_mix", mix_norm_ratio=0.125)
    cb.set_model(model)
    chosen = set(cb.update_masks()["pl"].tolist())
    # 1 of 8 by smallest L2 norm (a tiny filter), 1 by distance (planted)
    assert len(chosen & {6, 7}) == 1 and len(chosen & {4, 5}) == 1


def test_select_channels_matches_importance_fpgm():
    graph = tfcomp.DependencyGraph(_planted_model())
    g = graph.group("pl")
    scores = tfcomp.pruning.importance.fpgm(g)
    ours = channels_to_remove(g, 3, "fpgm")
    np.testing.assert_array_equal(ours, np.sort(np.argsort(scores)[:3]))


class _RawZeroEveryStep(keras.callbacks.Callback):
    """Largest |w| of masked filters after every step."""

    def __init__(self):
        super().__init__()
        self.max_abs = []
        self.active = []

    def on_train_batch_end(self, batch, logs=None):
        m = self.model
        worst = 0.0
        for n in ("stem", "a", "b", "c"):
            k = keras.ops.convert_to_numpy(m.get_layer(n).kernel)
            dead = _mask(m, n) == 0
            worst = max(worst, float(np.abs(k[..., dead]).max(initial=0)))
        self.max_abs.append(worst)
        self.active.append(float(keras.ops.convert_to_numpy(
            m.get_layer("a").mask_active)))


class _EpochCheck(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.rows = []

    def on_epoch_end(self, epoch, logs=None):
        m = self.model
        self.rows.append({
            "stem": _mask(m, "stem"), "b": _mask(m, "b"),
            "stem_bn": _mask(m, "stem_bn"), "b_bn": _mask(m, "b_bn"),
            "a": _mask(m, "a"), "c": _mask(m, "c"),
            "zero": {n: _filters_zero(m, n) for n in ("stem", "a", "b", "c")},
        })


@pytest.mark.slow
def test_floor_np_zero_filters_per_group_after_each_epoch(tmp_path):
    # SGD with momentum: stale momentum must not move masked filters
    model = _compile(apply_fpgm(_residual()),
                     keras.optimizers.SGD(0.1, momentum=0.9))
    cb = FPGMPruning(ratio=0.3)
    check = _EpochCheck()
    rec = _RawZeroEveryStep()
    x, y = _data()
    model.fit(x, y, epochs=3, batch_size=16, verbose=0,
              callbacks=[cb, check, rec])
    assert len(rec.max_abs) == 6 and max(rec.max_abs) == 0.0
    assert set(rec.active) == {1.0}
    assert sorted(i.group.id for i in cb._groups) == ["a", "c", "stem"]
    assert [r["epoch"] for r in cb.history] == [-1, 0, 1, 2]
    for row in check.rows:
        # stem and b feed one residual sum: one coupled group of 8
        for name in ("stem", "b", "stem_bn", "b_bn"):
            np.testing.assert_array_equal(row[name], row["stem"])
        assert int((row["stem"] == 0).sum()) == 2   # floor(8 * 0.3)
        assert int((row["a"] == 0).sum()) == 2
        assert int((row["c"] == 0).sum()) == 4      # floor(16 * 0.3)
        for n in ("stem", "a", "b", "c"):
            np.testing.assert_array_equal(row["zero"][n], row[n] == 0)

    # .keras mid-training: masks and outputs survive, resume does not
    # re-prune at train begin and keeps updating per epoch.
    path = os.path.join(tmp_path, "fpgm.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    for n in ("stem", "a", "b", "c", "stem_bn", "c_bn"):
        np.testing.assert_array_equal(_mask(loaded, n), _mask(model, n))
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-5)
    resumed = FPGMPruning(ratio=0.3)
    loaded.fit(x, y, epochs=4, initial_epoch=3, batch_size=16, verbose=0,
               callbacks=[resumed])
    assert [r["epoch"] for r in resumed.history] == [3]
    assert int((_mask(loaded, "c") == 0).sum()) == 4


@pytest.mark.slow
def test_without_gradient_masking_filters_regrow_within_the_epoch():
    model = apply_fpgm(_residual())
    for layer in model.layers:  # ReLU'(0) = 0: regrowth needs beta > 0
        if hasattr(layer, "beta"):
            layer.beta.assign(np.full(layer.beta.shape, 0.5, "float32"))
    model = _compile(model)
    rec = _RawZeroEveryStep()
    check = _EpochCheck()
    x, y = _data()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0,
              callbacks=[FPGMPruning(ratio=0.5, mask_gradients=False), rec,
                         check])
    assert set(rec.active) == {0.0}      # mask off while training
    assert max(rec.max_abs) > 0.0        # zeroed filters got gradients
    for row in check.rows:               # ... but re-zeroed at epoch end
        assert int((row["a"] == 0).sum()) == 4
        np.testing.assert_array_equal(row["zero"]["a"], row["a"] == 0)
    assert float(keras.ops.convert_to_numpy(
        model.get_layer("a").mask_active)) == 1.0


class _MakeOutlier(keras.callbacks.Callback):
    """Before FPGM's epoch-0 update, turns one masked filter of ``a`` into
    an outlier far from the geometric median."""

    def __init__(self):
        super().__init__()
        self.revived = None

    def on_epoch_end(self, epoch, logs=None):
        if epoch != 0:
            return
        layer = self.model.get_layer("a")
        j = int(np.flatnonzero(_mask(self.model, "a") == 0)[0])
        k = keras.ops.convert_to_numpy(layer.kernel)
        k[..., j] = 50.0
        layer.kernel.assign(k)
        self.revived = j


@pytest.mark.slow
def test_a_channel_can_return():
    model = _compile(apply_fpgm(_residual()))
    cb = FPGMPruning(ratio=0.25)
    outlier = _MakeOutlier()
    check = _EpochCheck()
    x, y = _data()
    model.fit(x, y, epochs=2, batch_size=16, verbose=0,
              callbacks=[outlier, cb, check])
    j = outlier.revived
    assert j in cb.history[0]["masked"]["a"]        # masked before epoch 0
    assert j not in cb.history[1]["masked"]["a"]    # back after epoch 0
    assert check.rows[0]["a"][j] == 1.0
    assert len(cb.history[1]["masked"]["a"]) == 2   # still floor(8 * .25)
    assert not check.rows[1]["zero"]["a"][j]        # trained while back


def test_target_macs_budget_met_and_strip_matches():
    model = apply_fpgm(_residual())
    dense = tfcomp.profile(model).macs
    cb = FPGMPruning(target_macs=0.5, criterion="l1")
    cb.set_model(model)
    cb.on_train_begin()  # what fit does first: choose the rate, mask
    x, _ = _data()
    assert 0 < cb.effective_ratio < 1
    assert cb.history[-1]["macs"] <= 0.5 * dense
    small = strip_pruning(model)
    assert tfcomp.profile(small).macs == cb.history[-1]["macs"]
    np.testing.assert_allclose(small(x), model(x), atol=1e-4)


def test_errors():
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError,
                           match=r"ratio must be in \[0, 1\)\. Received"):
            FPGMPruning(ratio=bad)
    with pytest.raises(ValueError, match="criterion"):
        FPGMPruning(criterion="taylor2")
    with pytest.raises(ValueError, match="update_every_epochs"):
        FPGMPruning(update_every_epochs=0)
    x, y = _data(16)
    plain = _compile(_residual())
    with pytest.raises(ValueError, match="apply_fpgm"):
        plain.fit(x, y, epochs=1, verbose=0, callbacks=[FPGMPruning()])
    inp = keras.Input((6,))
    linear = _compile(apply_fpgm(
        keras.Model(inp, keras.layers.Dense(4)(inp))))
    with pytest.raises(ValueError, match="nothing prunable"):
        linear.fit(np.zeros((8, 6)), np.zeros(8), epochs=1, verbose=0,
                   callbacks=[FPGMPruning()])
    model = _compile(apply_fpgm(_residual()))
    with pytest.raises(ValueError, match="nothing prunable"):
        model.fit(x, y, epochs=1, verbose=0,
                  callbacks=[FPGMPruning(ignored_layers=("stem", "a", "c"))])


@pytest.mark.parametrize("round_to", [4, 8])
def test_round_to_kept_counts_are_multiples(round_to):
    model = apply_fpgm(tfcomp.zoo.resnet(depth=8))
    dense = tfcomp.profile(model).macs
    for kwargs in ({"ratio": 0.6}, {"target_macs": 0.5}):
        cb = FPGMPruning(round_to=round_to, criterion="l1", **kwargs)
        cb.set_model(model)
        cb.on_train_begin()
        masked = cb.update_masks(epoch=0)
        for info in cb._groups:
            g = info.group
            kept = g.size - len(masked[g.id])
            assert kept == cb.keep[g.id]
            assert kept % round_to == 0 or kept == g.size
        if "target_macs" in kwargs:
            assert cb.history[-1]["macs"] <= 0.5 * dense
    with pytest.raises(ValueError, match="round_to"):
        FPGMPruning(round_to=0)


def test_deprecated_names_warn():
    with pytest.warns(DeprecationWarning, match="ratio="):
        cb = FPGMPruning(rate=0.3)
    assert cb.ratio == 0.3
    with pytest.warns(DeprecationWarning, match="effective_ratio"):
        assert cb.effective_rate == 0.3
    with pytest.warns(DeprecationWarning, match="ratio"):
        assert cb.rate == 0.3
    with pytest.warns(DeprecationWarning, match="ignored_layers"):
        cb = FPGMPruning(skip=("stem",))
    assert cb.ignored_layers == ("stem",)
    with pytest.warns(DeprecationWarning, match="ignored_layers"):
        assert cb.skip == ("stem",)
    with pytest.warns(DeprecationWarning, match="mix_norm_ratio="):
        cb = FPGMPruning(mix_norm_rate=0.2)
    assert cb.mix_norm_ratio == 0.2
    with pytest.warns(DeprecationWarning), \
            pytest.raises(ValueError, match=r"rate must be in \[0, 1\)"):
        FPGMPruning(rate=1.0)
    from tfcomp.graph import DependencyGraph
    from tfcomp.pruning.fpgm import select_channels

    g = DependencyGraph(_residual()).group("stem")
    with pytest.warns(DeprecationWarning, match="channels_to_remove"):
        old = select_channels(g, 3, "l1")
    np.testing.assert_array_equal(old, channels_to_remove(g, 3, "l1"))


# run_mirrored puts _mirrored.PRELUDE (json, os, tf, keras, np) first
_MIRRORED = """
    from tfcomp.pruning import fpgm
    from tfcomp.pruning.wrappers import apply_fpgm, strip_pruning
    keras.utils.set_random_seed(0)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        inp = keras.Input((8, 8, 3))
        x = keras.layers.Conv2D(8, 3, padding="same", name="a")(inp)
        x = keras.layers.BatchNormalization(name="a_bn")(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        model = apply_fpgm(keras.Model(inp, keras.layers.Dense(4)(x)))
        model.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                      keras.losses.SparseCategoricalCrossentropy(
                          from_logits=True))
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(32, 8, 8, 3)).astype("float32")
    ys = rng.integers(0, 4, 32)
    cb = fpgm.FPGMPruning(ratio=0.5)
    model.fit(xs, ys, epochs=1, batch_size=8, verbose=0, callbacks=[cb])
    layer = model.get_layer("a")
    k = keras.ops.convert_to_numpy(layer.kernel)
    mask = keras.ops.convert_to_numpy(layer.channel_mask_var)
    small = strip_pruning(model)
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "mirrored": type(layer.channel_mask_var.value).__name__,
        "masked": int((mask == 0).sum()),
        "dead_max": float(np.abs(k[..., mask == 0]).max()),
        "small_filters": int(small.get_layer("a").kernel.shape[-1]),
        "err": float(np.abs(keras.ops.convert_to_numpy(small(xs))
                            - keras.ops.convert_to_numpy(model(xs))).max())}))
"""

@pytest.mark.slow
def test_mirrored_strategy_two_replicas():
    res = run_mirrored(_MIRRORED)
    assert res["replicas"] == 2
    assert res["mirrored"] == "MirroredVariable"
    assert res["masked"] == 4 and res["dead_max"] == 0.0
    assert res["small_filters"] == 4 and res["err"] < 1e-4


def test_unbuilt_and_subclassed_models_name_the_cause():
    """An unbuilt Sequential is 'never built' (not 'subclassed')."""
    unbuilt = keras.Sequential([keras.layers.Conv2D(4, 3),
                                keras.layers.Flatten(),
                                keras.layers.Dense(2)])
    for wrap in (apply_fpgm, strip_pruning):
        with pytest.raises(ValueError, match="'sequential.*' was never built"):
            wrap(unbuilt)

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(2)

        def call(self, x):
            return self.d(x)

    sub = Sub()
    sub(np.ones((1, 3), "float32"))
    with pytest.raises(ValueError, match=r"is subclassed \(class Sub\)"):
        apply_fpgm(sub)
