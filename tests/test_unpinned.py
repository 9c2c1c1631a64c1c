"""tfcomp.unpinned: traced train steps are freed; training is unchanged."""

import gc

import keras
import numpy as np
from _mirrored import run_mirrored

import tfcomp
from tfcomp._finetune import short_finetune
from tfcomp.quantization import calibrate, quantize_model


def _cnn(seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inp, keras.layers.Dense(3)(h))


def _func_graphs() -> int:
    gc.collect()
    return sum(type(o).__name__ == "FuncGraph" for o in gc.get_objects())


def _data(n=32):
    rng = np.random.default_rng(0)
    return (rng.uniform(0, 1, (n, 8, 8, 1)).astype("float32"),
            rng.integers(0, 3, n))


def test_fine_tunes_in_a_loop_free_their_train_graphs():
    # the search loops' pattern: a fresh QAT copy compiled and fitted per
    # candidate; before the fix every loop kept one train graph (~50 MB on
    # a ResNet-8) alive until the process ended
    x, y = _data()
    base = _cnn()

    def candidate():
        q = quantize_model(base, bits={})
        calibrate(q, x[:16])
        short_finetune(q, x, y, steps=2, batch_size=16)

    candidate()
    before = _func_graphs()
    for _ in range(3):
        candidate()
    assert _func_graphs() <= before


def test_training_is_unchanged_on_one_replica():
    x, y = _data()
    out = []
    for wrap in (False, True):
        m = _cnn(seed=3)
        opt = keras.optimizers.SGD(0.1, momentum=0.9)
        m.compile(tfcomp.unpinned(opt) if wrap else opt,
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        m.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
        out.append([w.numpy() for w in m.weights])
    for a, b in zip(*out):
        np.testing.assert_array_equal(a, b)


def test_strings_resolve_and_wrapping_twice_is_a_no_op():
    opt = tfcomp.unpinned("adam")
    assert isinstance(opt, keras.optimizers.Adam)
    hook = opt._all_reduce_sum_gradients
    assert tfcomp.unpinned(opt) is opt
    assert opt._all_reduce_sum_gradients is hook


def test_mirrored_strategy_still_sums_gradients_across_replicas():
    res = run_mirrored("""
        import tfcomp
        rng = np.random.default_rng(0)
        x = rng.normal(size=(16, 4)).astype("float32")
        y = rng.normal(size=(16, 1)).astype("float32")
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        out = []
        for wrap in (False, True):
            with strategy.scope():
                keras.utils.set_random_seed(0)
                m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
                opt = keras.optimizers.SGD(0.1)
                m.compile(tfcomp.unpinned(opt) if wrap else opt, "mse")
            m.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
            out.append(m.layers[0].kernel.numpy().ravel().tolist())
        print(json.dumps({"plain": out[0], "unpinned": out[1]}))
    """)
    np.testing.assert_allclose(res["plain"], res["unpinned"], rtol=1e-6)
