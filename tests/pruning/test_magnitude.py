"""Magnitude pruning callback: schedule-exact sparsity, zeros after every
step, block / XNNPACK patterns, .keras save/load mid-training, errors."""

import os

import keras
import numpy as np
import pytest

from tfcomp.layers.masked import MaskedConv2D, MaskedDense
from tfcomp.pruning.magnitude import MagnitudePruning, magnitude_mask
from tfcomp.pruning.schedules import ConstantSparsity, PolynomialDecay
from tfcomp.pruning.wrappers import apply_magnitude_pruning, masked_layers


def _tiny(pointwise=False):
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="c1")(inp)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU()(x)
    if pointwise:
        x = keras.layers.Conv2D(16, 1, name="pw")(x)
        x = keras.layers.ReLU()(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(4, name="head")(x)
    return keras.Model(inp, out, name="tiny")


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 8, 8, 3)).astype("float32"),
            rng.integers(0, 4, n))


def _compile(model, opt=None):
    model.compile(opt or keras.optimizers.Adam(1e-2),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


class _Recorder(keras.callbacks.Callback):
    """Checks masks and kernels after every training step."""

    def __init__(self, pruner):
        super().__init__()
        self.pruner = pruner
        self.records = []

    def on_train_batch_end(self, batch, logs=None):
        step = self.pruner._step - 1  # the step that just ran
        for layer in self.pruner._layers:
            mask = keras.ops.convert_to_numpy(layer.kernel_mask)
            raw = keras.ops.convert_to_numpy(layer.kernel)
            self.records.append((step, layer.name, int(mask.size),
                                 int(mask.size - np.count_nonzero(mask)),
                                 float(np.abs(raw[mask == 0]).max(initial=0))))


def test_magnitude_mask_exact_count_and_order():
    w = np.array([[0.5, -0.1, 0.3], [-0.2, 0.05, 0.9]])
    m = magnitude_mask(w, 0.5)  # round(3) smallest: 0.05, 0.1, 0.2
    np.testing.assert_array_equal(m, [[1, 0, 1], [0, 0, 1]])
    assert magnitude_mask(w, 0.0).min() == 1.0


def test_magnitude_mask_blocks_of_output_channels():
    rng = np.random.default_rng(1)
    k = rng.normal(size=(1, 1, 6, 8))  # 1x1 conv: (cin, cout) = (6, 8)
    m = magnitude_mask(k, 0.5, block_size=(1, 4))
    m2 = m.reshape(6, 8)
    # every (input channel, 4 consecutive output channels) block is uniform
    blocks = m2.reshape(6, 2, 4)
    assert np.all(blocks.min(axis=2) == blocks.max(axis=2))
    assert int((blocks[:, :, 0] == 0).sum()) == 6  # round(0.5 * 12)


@pytest.mark.parametrize("opt", ["adam", "sgd_momentum"])
def test_sparsity_follows_schedule_and_masked_weights_stay_zero(opt):
    model = _compile(apply_magnitude_pruning(_tiny()),
                     keras.optimizers.Adam(1e-2) if opt == "adam" else
                     keras.optimizers.SGD(0.1, momentum=0.9))
    sched = PolynomialDecay(0.0, 0.75, begin_step=0, end_step=12,
                            frequency=3)
    pruner = MagnitudePruning(sched)
    rec = _Recorder(pruner)
    x, y = _data()
    model.fit(x, y, epochs=2, batch_size=8, verbose=0,
              callbacks=[pruner, rec])
    assert pruner._step == 16
    update_steps = sorted({r["step"] for r in pruner.history})
    assert update_steps == [0, 3, 6, 9, 12]
    last_target = {}
    for step, name, size, zeros, max_masked in rec.records:
        if sched.should_prune(step):
            last_target[name] = sched.sparsity(step)
            # sparsity per layer equals the schedule value at the update
            assert zeros == int(round(sched.sparsity(step) * size)), \
                (step, name)
        assert zeros == int(round(last_target[name] * size))
        assert max_masked == 0.0  # masked weights exactly 0 after the step
    final = {n: z / s for _, n, s, z, _ in rec.records[-3:]}
    assert all(v == pytest.approx(0.75, abs=0.02) for v in final.values())


def test_skip_is_a_deprecated_alias_of_ignored_layers():
    with pytest.warns(DeprecationWarning, match="ignored_layers"):
        cb = MagnitudePruning(0.5, skip=("c1",))
    assert cb.ignored_layers == ("c1",)
    with pytest.warns(DeprecationWarning, match="ignored_layers"):
        assert cb.skip == ("c1",)


def test_skip_and_xnnpack_pattern_select_layers():
    model = apply_magnitude_pruning(_tiny(pointwise=True))
    cb = MagnitudePruning(ConstantSparsity(0.8, frequency=1),
                          pattern="xnnpack")
    assert cb.block_size == (1, 4)
    cb.set_model(model)
    cb.update_masks(0.8)
    assert [lyr.name for lyr in cb._layers] == ["pw"]
    pw = keras.ops.convert_to_numpy(model.get_layer("pw").kernel)
    assert np.mean(pw == 0) == pytest.approx(0.8, abs=0.02)
    blocks = (pw.reshape(8, 4, 4) != 0)
    assert np.all(blocks.all(axis=2) | ~blocks.any(axis=2))
    untouched = keras.ops.convert_to_numpy(model.get_layer("c1").kernel)
    assert np.count_nonzero(untouched) == untouched.size

    cb2 = MagnitudePruning(0.5, ignored_layers=("c1", MaskedDense))
    cb2.set_model(model)
    cb2.update_masks(0.5)
    assert sorted(lyr.name for lyr in cb2._layers) == ["dw", "pw"]


def test_xnnpack_warns_below_two_thirds():
    model = _compile(apply_magnitude_pruning(_tiny(pointwise=True)))
    x, y = _data(16)
    with pytest.warns(UserWarning, match="2/3"):
        model.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[
            MagnitudePruning(ConstantSparsity(0.5), pattern="xnnpack")])


@pytest.mark.slow
def test_save_load_mid_training_resumes_schedule(tmp_path):
    model = _compile(apply_magnitude_pruning(_tiny()))
    sched = PolynomialDecay(0.0, 0.6, begin_step=0, end_step=16,
                            frequency=4)
    x, y = _data()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0,  # steps 0..7
              callbacks=[MagnitudePruning(sched)])
    path = os.path.join(tmp_path, "mid.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    for a, b in zip(masked_layers(model), masked_layers(loaded)):
        assert type(b) is type(a)
        for va, vb in zip(a.mask_variables, b.mask_variables):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(va),
                                          keras.ops.convert_to_numpy(vb))
    np.testing.assert_allclose(loaded.predict(x, verbose=0),
                               model.predict(x, verbose=0), atol=1e-5)
    resumed = MagnitudePruning(sched)
    loaded.fit(x, y, epochs=2, batch_size=8, verbose=0,
               callbacks=[resumed])
    assert [r["step"] for r in resumed.history] == [8, 12, 16]
    c1 = keras.ops.convert_to_numpy(loaded.get_layer("c1").kernel_mask)
    assert 1 - c1.mean() == pytest.approx(0.6, abs=0.01)


def test_masked_conv_layer_contract():
    from tfcomp.testing import run_layer_test

    run_layer_test(MaskedConv2D, {"filters": 4, "kernel_size": 3,
                                  "padding": "same", "weight_mask": True},
                   input_shape=(2, 6, 6, 3),
                   expected_output_shape=(2, 6, 6, 4))


def test_errors():
    x, y = _data(16)
    plain = _compile(_tiny())
    with pytest.raises(ValueError, match="apply_magnitude_pruning"):
        plain.fit(x, y, epochs=1, verbose=0, callbacks=[MagnitudePruning()])
    model = _compile(apply_magnitude_pruning(_tiny()))
    with pytest.raises(ValueError, match="nothing to prune"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[
            MagnitudePruning(ignored_layers=(MaskedConv2D, "dw", "head"))])
    with pytest.raises(ValueError, match="block_size"):
        MagnitudePruning(block_size=(0, 4))
    with pytest.raises(ValueError, match="pattern"):
        MagnitudePruning(pattern="cudnn")
    with pytest.raises(ValueError, match="sparsity must be in"):
        cb = MagnitudePruning()
        cb.set_model(model)
        cb.update_masks(1.0)
