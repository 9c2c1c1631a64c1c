"""MetaPruning's PruningNet: generated weight shapes, sampling, training."""

import keras
import numpy as np
import pytest

import tfcomp
from tfcomp.pruning.metapruning import PAPER_SCALES, PruningNet, kept_count


def _model():
    return tfcomp.zoo.resnet(depth=8, width=8, input_shape=(8, 8, 3),
                             num_classes=4)


def _x(n=32):
    return np.random.default_rng(0).normal(size=(n, 8, 8, 3)).astype(
        "float32")


def test_paper_scales():
    assert len(PAPER_SCALES) == 31
    assert PAPER_SCALES[0] == 0.1 and PAPER_SCALES[-1] == 1.0
    assert kept_count(0.1, 8) == 1 and kept_count(1.0, 8) == 8


def test_generated_weight_shapes_random_encodings_and_sampled_widths():
    keras.utils.set_random_seed(0)
    model = _model()
    net = PruningNet(model, seed=0)
    rng = np.random.default_rng(0)
    x = _x()
    for _ in range(3):
        widths = {g: kept_count(PAPER_SCALES[rng.integers(31)], n)
                  for g, n in net.sizes.items()}
        counts = net._counts(widths)
        for node in net._nodes:
            if node.path not in net._gens:
                continue
            w = keras.ops.convert_to_numpy(net.generated_kernel(
                node.path, node.inputs[0], node.outputs[0],
                keras.ops.convert_to_tensor(counts)))
            layer = model.get_layer(node.path)
            full = (layer.depthwise_kernel if hasattr(
                layer, "depthwise_kernel") else layer.kernel).shape
            assert w.shape == tuple(full)
            # cropped: channels beyond the widths are exactly zero
            live = np.abs(w).reshape(-1, w.shape[-2], w.shape[-1]).max(0)
            assert np.count_nonzero(live.any(1)) <= w.shape[-2]
        small = net.sample(widths, x)
        for gid, k in widths.items():
            assert small.get_layer(gid).kernel.shape[-1] == k
        net.set_widths(widths)
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(small(x, training=True)),
            keras.ops.convert_to_numpy(net(x)), atol=1e-4)
    net.set_widths(None)


@pytest.mark.slow
def test_starts_at_the_model_and_trains_with_random_widths():
    keras.utils.set_random_seed(0)
    model = _model()
    net = PruningNet(model)
    x = _x(64)
    y = np.arange(64) % 4
    net.set_widths(dict(net.sizes))
    ref = keras.ops.convert_to_numpy(model(x, training=True))
    got = keras.ops.convert_to_numpy(net(x))
    assert np.abs(ref - got).max() < 0.2 * np.abs(ref).max()
    net.set_widths(None)
    a = keras.ops.convert_to_numpy(net(x))
    b = keras.ops.convert_to_numpy(net(x))
    assert np.abs(a - b).max() > 0  # a new random encoding per call
    net.compile(keras.optimizers.Adam(1e-2),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [keras.ops.convert_to_numpy(v).copy()
              for v in net.trainable_variables]
    hist = net.fit(x, y, epochs=1, batch_size=32, verbose=0)
    assert np.isfinite(hist.history["loss"]).all()
    moved = [np.abs(keras.ops.convert_to_numpy(v) - b).max() > 0
             for v, b in zip(net.trainable_variables, before)]
    assert all(moved)


def test_errors():
    model = _model()
    with pytest.raises(ValueError, match="scales"):
        PruningNet(model, scales=[0.0, 1.0])
    net = PruningNet(model)
    with pytest.raises(ValueError, match="unknown groups"):
        net.sample({"nope": 1})
    with pytest.raises(ValueError, match=r"widths\['stem_conv'\]"):
        net.sample({"stem_conv": 99})
    with pytest.raises(TypeError, match="keras.Model"):
        PruningNet("model")


def test_trains_a_thin_strided_1x1_conv_with_an_odd_batch():
    # regression: oneDNN's kernel gradient of a stride-2 1x1 convolution
    # with < 16 input channels corrupted the heap on odd batch sizes (a
    # crash inside fit); PruningNet subsamples, then convolves at stride 1
    keras.utils.set_random_seed(0)
    model = tfcomp.zoo.resnet(depth=8, width=8, input_shape=(16, 16, 3),
                              num_classes=4)
    assert model.get_layer("s2b1_proj").kernel.shape[:3] == (1, 1, 8)
    net = PruningNet(model)
    x = np.random.default_rng(0).normal(size=(77, 16, 16, 3)).astype(
        "float32")
    net.compile(keras.optimizers.SGD(0.01),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                jit_compile=False)
    hist = net.fit(x, np.arange(77) % 4, batch_size=77, epochs=2, verbose=0)
    assert np.isfinite(hist.history["loss"]).all()
    widths = {g: max(1, n // 2) for g, n in net.sizes.items()}
    small = net.sample(widths, x)
    net.set_widths(widths)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(small(x, training=True)),
        keras.ops.convert_to_numpy(net(x)), atol=1e-4)


def test_depthwise_model_builds_and_samples():
    """MobileNetV2-style inverted residuals (DepthwiseConv2D's weight is
    ``kernel`` in Keras 3): the sampled plain model equals the net."""
    keras.utils.set_random_seed(0)
    model = tfcomp.zoo.mobilenet_v2(alpha=0.25, input_shape=(8, 8, 3),
                                    num_classes=4)
    net = PruningNet(model, seed=0)
    rng = np.random.default_rng(1)
    widths = {g: kept_count(PAPER_SCALES[rng.integers(31)], n)
              for g, n in net.sizes.items()}
    x = _x(8)
    small = net.sample(widths, x)
    net.set_widths(widths)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(small(x, training=True)),
        keras.ops.convert_to_numpy(net(x)), atol=1e-4)
    net.set_widths(None)
    assert small.count_params() < model.count_params()
