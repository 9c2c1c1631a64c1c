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


# -- user-style models: other convolutions, nested models, keras.ops calls,
#    layers without a generator (Embedding, LayerNormalization, GroupNorm)

L = keras.layers


def _conv1d():
    inputs = keras.Input((16, 2))
    x = L.Conv1D(8, 3, padding="same", use_bias=False)(inputs)
    x = L.ReLU()(L.BatchNormalization()(x))
    x = L.Conv1D(8, 3, strides=2, activation="relu")(x)
    x = L.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, L.Dense(4)(x))


def _separable():
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = L.SeparableConv2D(8, 3, padding="same", depth_multiplier=2)(x)
    x = L.ReLU()(L.BatchNormalization()(x))
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, L.Dense(4)(x))


def _transpose():
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, strides=2, padding="same")(inputs)
    x = L.Activation("relu")(L.GroupNormalization(groups=4)(x))
    x = L.Conv2DTranspose(8, 3, strides=2, padding="same",
                          activation="relu")(x)
    x = L.Conv2D(4, 1)(x)
    return keras.Model(inputs, L.GlobalAveragePooling2D()(x))


def _nested():
    inner = keras.Input((8, 8, 3))
    h = L.Conv2D(8, 3, padding="same", use_bias=False)(inner)
    h = L.ReLU()(L.BatchNormalization()(h))
    backbone = keras.Model(inner, L.Conv2D(8, 3, activation="relu")(h),
                           name="backbone")
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 1, activation="relu")(backbone(inputs))
    return keras.Model(inputs, L.Dense(4)(L.GlobalAveragePooling2D()(x)))


def _ops():
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same")(inputs)
    x = keras.ops.relu(x)
    x = keras.ops.multiply(x, 2.0)  # a constant argument
    x = L.Conv2D(8, 3, padding="same")(x)
    x = L.Lambda(lambda t: t * 0.5)(x)  # a graph barrier
    x = L.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.ops.mean(x, axis=(1, 2))
    return keras.Model(inputs, L.Dense(4)(x))


def _embedding():
    inputs = keras.Input((12,), dtype="int32")
    x = L.Embedding(20, 8)(inputs)
    x = L.Conv1D(8, 3, activation="relu")(x)
    x = L.LayerNormalization()(x)  # over the channels: a graph barrier
    x = L.Dense(16, activation="relu")(x)
    x = L.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, L.Dense(4)(x))


def _data(model, n=8):
    rng = np.random.default_rng(0)
    shape = (n, *model.inputs[0].shape[1:])
    if model.inputs[0].dtype == "int32":
        return rng.integers(1, 20, shape).astype("int32")
    return rng.normal(size=shape).astype("float32")


@pytest.mark.parametrize("build", [_conv1d, _separable, _transpose, _nested,
                                   _ops, _embedding],
                         ids=lambda f: f.__name__[1:])
def test_user_models_generate_sample_and_train(build):
    keras.utils.set_random_seed(0)
    model = build()
    net = PruningNet(model, seed=0)
    assert net.sizes and not net.excluded
    base = {id(v) for v in model.weights}
    assert not base & {id(v) for v in net.weights}  # the net's own weights
    x = _data(model)
    net.set_widths(dict(net.sizes))
    ref = keras.ops.convert_to_numpy(model(x, training=True))
    got = keras.ops.convert_to_numpy(net(x))
    assert np.abs(ref - got).max() < 0.2 * np.abs(ref).max()
    widths = {g: max(1, n // 2) for g, n in net.sizes.items()}
    counts = keras.ops.convert_to_tensor(net._counts(widths))
    leaves = dict(tfcomp.graph.iter_leaf_layers(model))
    for node in net._nodes:
        for name in net._gens.get(node.path, {}):
            w = net.generated_kernel(node.path, node.inputs[0],
                                     node.outputs[0], counts, name)
            var = next(v for v in leaves[node.path].weights
                       if v.name == name)
            assert tuple(w.shape) == tuple(var.shape)
    small = net.sample(widths, x)
    assert tfcomp.profile(small).macs < tfcomp.profile(model).macs
    net.set_widths(widths)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(small(x, training=True)),
        keras.ops.convert_to_numpy(net(x)), atol=1e-4)
    net.set_widths(None)
    net.compile(keras.optimizers.Adam(1e-3),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    hist = net.fit(x, np.arange(len(x)) % 4, epochs=1, batch_size=4,
                   verbose=0)
    assert np.isfinite(hist.history["loss"]).all()


def test_layers_without_generator_are_owned_weights_cropped_on_sample():
    keras.utils.set_random_seed(0)
    model = _transpose()
    net = PruningNet(model)
    gn = next(layer for layer in model.layers
              if isinstance(layer, L.GroupNormalization))
    owned = [v for v in net.trainable_weights if gn.name in v.path]
    assert sorted(tuple(v.shape) for v in owned) == [(8,), (8,)]
    conv = model.layers[1].name
    assert net.sizes[conv] == 4  # GroupNorm: 2-channel units
    small = net.sample({conv: 2}, _data(model))
    small_gn = small.get_layer(gn.name)
    assert small_gn.gamma.shape == (4,) and small_gn.groups == 2
    # generated transposed kernel (3, 3, out, in): in is the cropped axis
    tconv = next(layer for layer in small.layers
                 if isinstance(layer, L.Conv2DTranspose))
    assert tuple(tconv.kernel.shape) == (3, 3, 8, 4)
    model = _embedding()
    net = PruningNet(model)
    emb = [v for v in net.trainable_weights if "embedding" in v.path]
    assert [tuple(v.shape) for v in emb] == [(20, 8)]


@keras.saving.register_keras_serializable(package="test_metapruning")
class _Gain(L.Layer):
    def build(self, shape):
        self.scale = self.add_weight(shape=(shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.scale


def test_a_group_whose_weights_cannot_be_cropped_is_kept_whole():
    from tfcomp.graph import PASS_THROUGH, register_channel_handler

    def connect(ctx):  # names a weight the layer does not have
        p = ctx.port("channels", ctx.in_channels(), PASS_THROUGH,
                     [("gain", 0)])
        ctx.link_input(0, p)
        ctx.link_output(0, p)

    register_channel_handler(_Gain, connect)
    inputs = keras.Input((8, 8, 3))
    x = _Gain()(L.Conv2D(8, 3, name="c1")(inputs))
    x = L.Conv2D(8, 3, name="c2")(x)
    model = keras.Model(inputs, L.Dense(4)(L.GlobalAveragePooling2D()(x)))
    net = PruningNet(model)
    assert "c1" in net.excluded and "gain" in net.excluded["c1"]
    assert "c1" not in net.sizes and "c2" in net.sizes
    small = net.sample({"c2": 4}, _data(model))
    assert small.get_layer("c1").kernel.shape[-1] == 8
