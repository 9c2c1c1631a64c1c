"""Models built under a mixed precision policy (Keras' advice: the output
layer in float32): the layers quantize_model adds for a layer (its
observers, its split-off activation) compute in that layer's policy;
pruned copies keep the policies; the least-squares reconstruction reads
bf16 activations."""

import keras
import numpy as np

import tfcomp
from tfcomp.quantization import calibrate, quantize_model

L = keras.layers


def _bf16_net():
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        keras.utils.set_random_seed(0)
        inp = keras.Input((8, 8, 3))
        h = L.Conv2D(8, 3, padding="same", activation="relu")(inp)
        h = L.GlobalAveragePooling2D()(h)
        out = L.Dense(5, activation="softmax", dtype="float32",
                      name="head")(h)
        return keras.Model(inp, out)
    finally:
        keras.config.set_dtype_policy("float32")


def test_float32_head_stays_float32_after_quantize_model():
    model = _bf16_net()
    keras.config.set_dtype_policy("mixed_bfloat16")  # as a user's script
    try:
        qat = quantize_model(model)
    finally:
        keras.config.set_dtype_policy("float32")
    x = np.random.default_rng(0).uniform(size=(16, 8, 8, 3)).astype(
        "float32")
    calibrate(qat, x)
    policies = {layer.name: layer.dtype_policy.compute_dtype
                for layer in qat.layers}
    head = [n for n in policies if n.startswith("head")]
    assert len(head) >= 2, policies  # the Dense, its observer, activation
    assert all(policies[n] == "float32" for n in head), policies
    assert policies["conv2d"] == "bfloat16"
    y = keras.ops.convert_to_numpy(qat(x))
    assert y.dtype == np.float32
    # a bf16 softmax holds 8 bits: its near-uniform scores tied exactly
    assert len(np.unique(y)) > y.shape[0]


def test_pruned_copy_keeps_the_policies():
    model = _bf16_net()
    plan = tfcomp.pruning.make_plan(model, target_macs=0.6)
    small = tfcomp.pruning.prune_channels(model, plan)
    assert small.get_layer("head").dtype_policy.name == "float32"
    assert small.layers[1].dtype_policy.name == "mixed_bfloat16"


def test_lasso_reconstruction_reads_bf16_activations():
    # numpy does not count bfloat16 a number: the sampler refused them
    model = _bf16_net()
    x = np.random.default_rng(0).uniform(size=(32, 8, 8, 3)).astype(
        "float32")
    res = tfcomp.pruning.lasso_prune(model, x, target_macs=0.6)
    assert tfcomp.profile(res.model).macs <= 0.6 * tfcomp.profile(model).macs
    y = keras.ops.convert_to_numpy(res.model(x[:4]))
    assert np.all(np.isfinite(y))
