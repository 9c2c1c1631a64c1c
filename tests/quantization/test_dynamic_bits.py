"""make_bits_dynamic: one traced QAT model computes what quantize_model
builds for each policy."""

import keras
import numpy as np
import pytest

from tfcomp import zoo
from tfcomp.quantization import (
    calibrate,
    make_bits_dynamic,
    quantizable_layers,
    quantize_model,
)


@pytest.fixture(scope="module")
def float_model():
    keras.utils.set_random_seed(0)
    return zoo.resnet(depth=8, width=4, input_shape=(12, 12, 1))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (64, 12, 12, 1)).astype("float32")
    return x, rng.integers(0, 10, 64)


def _policy(model, seed):
    rng = np.random.default_rng(seed)
    names = quantizable_layers(model)
    pol = {n: (int(rng.integers(2, 9)), int(rng.integers(2, 9)))
           for n in names}
    pol[names[0]] = pol[names[-1]] = (8, 8)
    # one block input at 8 bits: its quantizer shares the observer's grid
    pol[names[1]] = (pol[names[1]][0], 8)
    return pol


@pytest.mark.slow
def test_dynamic_model_matches_quantize_model_per_policy(float_model, data):
    x, _ = data
    qat = quantize_model(float_model, bits=6)
    dyn = make_bits_dynamic(qat)
    initial = qat.get_weights()
    predict = keras.ops.convert_to_numpy
    for seed in range(3):
        policy = _policy(float_model, seed)
        qat.set_weights(initial)
        dyn.set_policy(policy)
        calibrate(qat, x)
        ref = quantize_model(float_model, bits=policy)
        calibrate(ref, x)
        assert dyn.policy() == policy
        got, want = predict(qat(x)), predict(ref(x))
        scale = np.abs(want).max()
        # same grids: differences only where float rounding flips a code
        assert np.mean(np.abs(got - want) <= 1e-4 * scale) > 0.98
        assert np.mean(got.argmax(-1) == want.argmax(-1)) >= 0.95


@pytest.mark.slow
def test_training_reuses_one_traced_graph(float_model, data):
    x, y = data
    qat = quantize_model(float_model, bits=8)
    dyn = make_bits_dynamic(qat)
    qat.compile(optimizer=keras.optimizers.SGD(1e-3), loss=keras.losses
                .SparseCategoricalCrossentropy(from_logits=True))
    initial = qat.get_weights()
    fns = []
    for seed in range(2):
        qat.set_weights(initial)
        dyn.set_policy(_policy(float_model, seed))
        calibrate(qat, x)
        qat.fit(x, y, batch_size=32, epochs=1, verbose=0)
        fns.append(qat.train_function)
    assert fns[0] is fns[1]
    # the traced graph follows the bits: 2-bit weights give a coarse grid
    name = quantizable_layers(float_model)[2]
    layer = qat.get_layer(name)
    dyn.set_policy({name: (2, 8)})
    layer.refresh_weight_quantizer()
    codes = np.unique(np.round(keras.ops.convert_to_numpy(
        layer.weight_quantizer(layer.kernel)) / keras.ops.convert_to_numpy(
        layer.weight_quantizer.channel_scale(layer.kernel))))
    assert set(codes.tolist()) <= {-1.0, 0.0, 1.0}


def test_bad_policies_and_models_raise(float_model):
    qat = quantize_model(float_model, bits=8)
    dyn = make_bits_dynamic(qat)
    with pytest.raises(ValueError, match="no dynamic bit-widths"):
        dyn.set_policy({"nope": (4, 4)})
    name = dyn.layers[1]
    with pytest.raises(ValueError, match=r"\[2, 8\]"):
        dyn.set_policy({name: (1, 4)})
    with pytest.raises(ValueError, match="pair"):
        dyn.set_policy({name: 4})
    with pytest.raises(ValueError, match="no quantized"):
        make_bits_dynamic(float_model)
    with pytest.raises(TypeError, match="codebook"):
        make_bits_dynamic(quantize_model(float_model, bits=4,
                                         weight_quantizer="kmeans"))
