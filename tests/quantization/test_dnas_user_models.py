"""DNAS on users' models, not only the zoo's Conv2D nets: a Conv1D text /
time-series model is searched (``MixedQuantConv1D``), a model with two
inputs takes its data as ``model.fit`` does, per-pixel labels are scored
per pixel, and a model with nothing to search is a clear error."""

import keras
import numpy as np
import pytest

from tfcomp.layers import MixedQuantConv1D
from tfcomp.quantization import dnas, quantize_model

L = keras.layers


def _text_conv1d():
    """keras.io's text classification from scratch, tiny."""
    keras.utils.set_random_seed(0)
    tokens = keras.Input((16,), dtype="int32")
    h = L.Embedding(50, 8)(tokens)
    h = L.Conv1D(8, 3, padding="valid", activation="relu")(h)
    h = L.Conv1D(8, 3, padding="causal", dilation_rate=2,
                 activation="relu")(h)
    h = L.GlobalMaxPooling1D()(h)
    h = L.Dense(8, activation="relu")(h)
    return keras.Model(tokens, L.Dense(3)(h))


def test_conv1d_model_is_searched_and_derived():
    model = _text_conv1d()
    x = np.random.default_rng(0).integers(0, 50, (40, 16))
    y = np.random.default_rng(1).integers(0, 3, 40)
    sn = dnas.build_supernet(model)
    assert [type(layer) for layer in sn.layers].count(MixedQuantConv1D) == 1
    hist = dnas.search(sn, x, y, epochs=1, batch_size=16)
    assert np.isfinite(hist["epochs"][0]["theta_loss"])
    bits = dnas.derive(sn)
    q = quantize_model(model, bits=bits)
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(q(x[:4]))))


def test_two_inputs_search_and_select_like_fit():
    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 1), name="image")
    meta = keras.Input((4,), name="meta")
    h = L.Conv2D(4, 3, activation="relu")(image)
    h = L.Conv2D(4, 3, activation="relu")(h)
    h = L.Concatenate()([L.GlobalAveragePooling2D()(h), meta])
    h = L.Dense(8, activation="relu")(h)
    model = keras.Model([image, meta], L.Dense(3)(h))
    rng = np.random.default_rng(0)
    xs = [rng.uniform(size=(24, 8, 8, 1)).astype("float32"),
          rng.uniform(size=(24, 4)).astype("float32")]
    y = rng.integers(0, 3, 24)
    sn = dnas.build_supernet(model)
    dnas.search(sn, {"meta": xs[1], "image": xs[0]}, y, epochs=1,
                batch_size=16)
    archs = [dnas.derive(sn)]
    best, [score] = dnas.select_best(model, archs, xs, y, (xs, y))
    assert best == archs[0] and 0 <= score["val_accuracy"] <= 1


def test_per_pixel_labels_score_per_pixel():
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    h = L.Conv2D(4, 3, padding="same", activation="relu")(inp)
    h = L.Conv2D(4, 3, padding="same", activation="relu")(h)
    model = keras.Model(inp, L.Conv2D(3, 1)(h))
    x = np.random.default_rng(0).uniform(size=(24, 8, 8, 1)).astype(
        "float32")
    y = np.clip((x[..., 0] * 3).astype("int64"), 0, 2)
    sn = dnas.build_supernet(model, first_last_bits=None)
    archs = [dnas.derive(sn)]
    _, [score] = dnas.select_best(model, archs, x, y, (x, y))
    assert 0 <= score["val_accuracy"] <= 1  # before: summed over pixels


def test_nothing_to_search_is_named():
    keras.utils.set_random_seed(0)
    tokens = keras.Input((6,), dtype="int32")
    h = L.LSTM(4)(L.Embedding(20, 4)(tokens))
    model = keras.Model(tokens, L.Dense(2)(h))
    with pytest.raises(ValueError, match="no layer to search.*Conv1D.*"
                                         "lstm"):
        dnas.build_supernet(model)
