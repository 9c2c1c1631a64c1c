"""User-style Keras models for the pipeline tests (issue #17).

Each :class:`Case` is a model written the way a Keras user writes one
(keras.io examples, narrowed so every pipeline step runs in about a second),
or a ``keras.applications`` model at 32x32 (``weights=None``, marked slow).
A case records the coverage-matrix rows (:data:`ROWS`) its layers fall in;
``layer_rows(model)`` derives them from a built model and a test checks that
the two agree.

Example:
    case = CASES["unet"]
    model = case.build()
    x, y = case.data(32)
"""

import dataclasses
from typing import Callable

import keras
import numpy as np
from _keras_io_layers import (
    DepthToSpace,
    OrthogonalRegularizer,
    ResidualBlock,
    StochasticDepth,
    TokenAndPositionEmbedding,
    TransformerBlock,
)

from tfcomp.graph.copy import user_layer_class
from tfcomp.graph.identity import INFERENCE_IDENTITY, keras_layer_classes

L = keras.layers

# Rows of the README coverage matrix, in order.
ROWS = (
    "Conv1D", "Conv2D", "Conv3D", "DepthwiseConv1D / 2D", "SeparableConv1D / 2D",
    "Conv1D / 2D / 3D Transpose", "grouped Conv2D", "Dense",
    "EinsumDense / MultiHeadAttention", "BatchNormalization",
    "LayerNormalization", "GroupNormalization", "Embedding", "pooling",
    "padding", "Rescaling / Normalization",
    "Add / Concatenate / Multiply",
    "Subtract / Maximum / Minimum / Average / Dot",
    "UpSampling / Resizing / Cropping", "Reshape / Flatten",
    "Dropout / noise / augmentation", "nested Model",
    "several inputs", "Lambda / keras.ops",
    "LSTM / GRU / SimpleRNN / ConvLSTM", "TimeDistributed",
    "Attention / AdditiveAttention", "your own Layer subclass",
)


@dataclasses.dataclass(frozen=True)
class Case:
    """One user model: how to build it, its data, its matrix rows.

    Attributes:
        name: short id used in test ids and the coverage JSON.
        build: zero-argument builder (seeded inside).
        rows: the :data:`ROWS` its layers fall in.
        input_shape: input shape without the batch axis.
        input_kind: ``"float"``, ``"pixels"`` (0..255) or ``"tokens"``
            (int32 ids below ``vocab``).
        label_shape: label shape without the batch axis (``()``: one class
            per sample; ``(h, w)``: one per pixel).
        num_classes: number of classes of the softmax output.
        vocab: vocabulary size of token inputs.
        slow: the steps take more than a few seconds (keras.applications).
        side_inputs: shapes of further float inputs (a multi-input model:
            ``data`` gives a list of arrays, as ``model.fit`` takes them).
    """

    name: str
    build: Callable
    rows: tuple
    input_shape: tuple
    input_kind: str = "float"
    label_shape: tuple = ()
    num_classes: int = 10
    vocab: int = 0
    slow: bool = False
    side_inputs: tuple = ()

    def data(self, n: int = 32, seed: int = 0) -> tuple:
        """``(x, y)``: ``n`` synthetic inputs of this case and labels."""
        rng = np.random.default_rng(seed)
        shape = (n, *self.input_shape)
        if self.input_kind == "tokens":
            x = rng.integers(1, self.vocab, shape).astype("int32")
        elif self.input_kind == "pixels":
            x = rng.uniform(0, 255, shape).astype("float32")
        else:
            x = rng.uniform(0, 1, shape).astype("float32")
        y = rng.integers(0, self.num_classes, (n, *self.label_shape))
        if self.side_inputs:
            x = [x] + [rng.uniform(0, 1, (n, *s)).astype("float32")
                       for s in self.side_inputs]
        return x, y.astype("int64")


# ------------------------------------------------------------ user models


def mnist_convnet():
    """keras.io "Simple MNIST convnet" (Sequential), narrow, 16x16."""
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input(shape=(16, 16, 1)),
        L.Conv2D(8, kernel_size=(3, 3), activation="relu"),
        L.MaxPooling2D(pool_size=(2, 2)),
        L.Conv2D(16, kernel_size=(3, 3), activation="relu"),
        L.MaxPooling2D(pool_size=(2, 2)),
        L.Flatten(),
        L.Dropout(0.5),
        L.Dense(10, activation="softmax"),
    ])


def unet():
    """keras.io-style U-Net: Conv2D + BN down, Conv2DTranspose up,
    Concatenate skips, per-pixel softmax."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(16, 16, 3))
    c1 = L.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
    c1 = L.Activation("relu")(L.BatchNormalization()(c1))
    p1 = L.MaxPooling2D(2)(c1)
    c2 = L.Conv2D(16, 3, padding="same", use_bias=False)(p1)
    c2 = L.Activation("relu")(L.BatchNormalization()(c2))
    u1 = L.Conv2DTranspose(8, 3, strides=2, padding="same")(c2)
    u1 = L.Concatenate()([u1, c1])
    c3 = L.Conv2D(8, 3, padding="same", activation="relu")(u1)
    outputs = L.Conv2D(3, 1, activation="softmax")(c3)
    return keras.Model(inputs, outputs, name="unet")


def text_conv1d():
    """keras.io "Text classification from scratch": Embedding, Conv1D,
    GlobalMaxPooling1D, Dense."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(24,), dtype="int32")
    x = L.Embedding(50, 8)(inputs)
    x = L.Dropout(0.5)(x)
    x = L.Conv1D(16, 3, padding="valid", activation="relu", strides=2)(x)
    x = L.Conv1D(16, 3, padding="valid", activation="relu", strides=2)(x)
    x = L.GlobalMaxPooling1D()(x)
    x = L.Dense(16, activation="relu")(x)
    outputs = L.Dense(10, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="text_conv1d")


def audio_conv1d():
    """A float waveform classifier: Conv1D + BN + pooling."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(64, 1))
    x = L.Conv1D(8, 5, padding="same", use_bias=False)(inputs)
    x = L.ReLU()(L.BatchNormalization()(x))
    x = L.MaxPooling1D(2)(x)
    x = L.Conv1D(16, 3, padding="same", activation="relu")(x)
    x = L.GlobalAveragePooling1D()(x)
    outputs = L.Dense(10, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="audio_conv1d")


def xception_mini():
    """keras.io "Image classification from scratch" (a small Xception):
    Rescaling, SeparableConv2D blocks with strided residual adds."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(16, 16, 3))
    x = L.Rescaling(1.0 / 255)(inputs)
    x = L.Conv2D(8, 3, strides=2, padding="same")(x)
    x = L.BatchNormalization()(x)
    x = L.Activation("relu")(x)
    previous = x
    for size in (8, 16):
        x = L.Activation("relu")(x)
        x = L.SeparableConv2D(size, 3, padding="same")(x)
        x = L.BatchNormalization()(x)
        x = L.Activation("relu")(x)
        x = L.SeparableConv2D(size, 3, padding="same")(x)
        x = L.BatchNormalization()(x)
        x = L.MaxPooling2D(3, strides=2, padding="same")(x)
        residual = L.Conv2D(size, 1, strides=2, padding="same")(previous)
        x = L.add([x, residual])
        previous = x
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dropout(0.25)(x)
    outputs = L.Dense(10, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="xception_mini")


def tiny_vit():
    """keras.io-style ViT: patch Conv2D, Reshape, pre-norm transformer
    block (MultiHeadAttention, LayerNormalization, MLP, Add)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(16, 16, 3))
    x = L.Conv2D(16, 4, strides=4)(inputs)  # 4x4 patches
    x = L.Reshape((16, 16))(x)
    h = L.LayerNormalization(epsilon=1e-6)(x)
    h = L.MultiHeadAttention(num_heads=2, key_dim=8, dropout=0.1)(h, h)
    x = L.Add()([h, x])
    h = L.LayerNormalization(epsilon=1e-6)(x)
    h = L.Dense(32, activation="gelu")(h)
    h = L.Dense(16)(h)
    x = L.Add()([h, x])
    x = L.LayerNormalization(epsilon=1e-6)(x)
    x = L.GlobalAveragePooling1D()(x)
    outputs = L.Dense(10, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="tiny_vit")


def grouped_conv():
    """ResNeXt-style grouped convolutions (Conv2D groups=4)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(12, 12, 3))
    x = L.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    x = L.Conv2D(16, 3, padding="same", groups=4, use_bias=False)(x)
    x = L.ReLU()(L.BatchNormalization()(x))
    x = L.Conv2D(32, 1, groups=4, activation="relu")(x)
    x = L.GlobalAveragePooling2D()(x)
    outputs = L.Dense(10, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="grouped_conv")


def conv3d():
    """keras.io "3D image classification from CT scans", tiny volume."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 8, 1))
    x = L.Conv3D(4, 3, activation="relu")(inputs)
    x = L.MaxPooling3D(2)(x)
    x = L.BatchNormalization()(x)
    x = L.Conv3D(8, 3, padding="same", activation="relu")(x)
    x = L.GlobalAveragePooling3D()(x)
    x = L.Dense(16, activation="relu")(x)
    outputs = L.Dense(10, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="conv3d")


def group_norm():
    """Conv2D + GroupNormalization (small-batch training style)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 3))
    x = L.Conv2D(8, 3, padding="same")(inputs)
    x = L.Activation("relu")(L.GroupNormalization(groups=4)(x))
    x = L.Conv2D(16, 3, strides=2, padding="same")(x)
    x = L.Activation("relu")(L.GroupNormalization(groups=4)(x))
    x = L.GlobalAveragePooling2D()(x)
    outputs = L.Dense(10, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="group_norm")


def nested():
    """A functional backbone used as a layer of a functional model, after
    a ZeroPadding2D."""
    keras.utils.set_random_seed(0)
    inner_in = keras.Input((14, 14, 3))
    h = L.Conv2D(8, 3, use_bias=False)(inner_in)
    h = L.ReLU()(L.BatchNormalization()(h))
    h = L.Conv2D(16, 3, strides=2, padding="same", activation="relu")(h)
    backbone = keras.Model(inner_in, h, name="backbone")
    inputs = keras.Input((12, 12, 3))
    x = L.ZeroPadding2D(1)(inputs)
    x = backbone(x)
    x = L.Conv2D(16, 1, activation="relu")(x)
    x = L.GlobalAveragePooling2D()(x)
    outputs = L.Dense(10, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="nested")


def wrapped_classifier():
    """A whole functional classifier used as the last layer of a model
    (its output is the model's), after a Sequential augmentation block
    (keras.io's ``data_augmentation``)."""
    keras.utils.set_random_seed(0)
    inner_in = keras.Input((12, 12, 3))
    h = L.Conv2D(8, 3, padding="same", use_bias=False)(inner_in)
    h = L.ReLU()(L.BatchNormalization()(h))
    h = L.Conv2D(16, 3, strides=2, padding="same", activation="relu")(h)
    h = L.GlobalAveragePooling2D()(h)
    classifier = keras.Model(inner_in, L.Dense(10, activation="softmax")(h),
                             name="classifier")
    augment = keras.Sequential([L.RandomFlip("horizontal"),
                                L.Rescaling(1.0 / 255)], name="augment")
    inputs = keras.Input((12, 12, 3))
    return keras.Model(inputs, classifier(augment(inputs)),
                       name="wrapped_classifier")


def lambda_ops():
    """A Lambda layer and keras.ops calls between layers."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 3))
    x = L.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = L.Conv2D(16, 3, padding="same")(x)
    x = L.Lambda(lambda t: t * 0.5)(x)
    x = keras.ops.relu(x)
    x = L.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = keras.ops.mean(x, axis=(1, 2))
    outputs = L.Dense(10, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="lambda_ops")


def operator_resnet():
    """A residual CNN written with Python operators, as many keras.io
    examples write it: ``x + shortcut``, a hand-written swish
    ``x * ops.sigmoid(x)``, a squeeze-excite ``x * gate`` on an
    ``ops.mean`` squeeze, ``ops.concatenate`` and a constant scale
    ``0.5 * x`` (keras.ops calls, no Add / Multiply / pooling layers)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 3))
    x = L.Conv2D(16, 3, padding="same")(inputs)
    x = x * keras.ops.sigmoid(x)
    for filters in (16, 32):
        shortcut = x if filters == x.shape[-1] else L.Conv2D(filters, 1)(x)
        y = L.Conv2D(filters, 3, padding="same")(x)
        y = L.BatchNormalization()(y)
        y = L.ReLU()(y)
        y = L.Conv2D(filters, 3, padding="same")(y)
        y = L.BatchNormalization()(y)
        x = L.ReLU()(y + shortcut)
    gate = keras.ops.mean(x, axis=(1, 2), keepdims=True)
    gate = L.Conv2D(32, 1, activation="sigmoid")(gate)
    x = 0.5 * (x * gate)
    x = keras.ops.concatenate([x, L.Conv2D(8, 1, activation="relu")(x)],
                              axis=-1)
    x = keras.ops.max(x, axis=(1, 2))
    outputs = L.Dense(10, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="operator_resnet")


def squeeze_excite():
    """A MobileNetV3-style block: depthwise conv, then squeeze-and-excitation
    (GAP, Reshape, two Dense, Multiply)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 3))
    x = L.Conv2D(16, 3, padding="same", use_bias=False)(inputs)
    x = L.ReLU()(L.BatchNormalization()(x))
    x = L.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    x = L.ReLU()(L.BatchNormalization()(x))
    se = L.GlobalAveragePooling2D()(x)
    se = L.Reshape((1, 1, 16))(se)
    se = L.Dense(4, activation="relu")(se)
    se = L.Dense(16, activation="sigmoid")(se)
    x = L.Multiply()([x, se])
    x = L.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
    x = L.GlobalAveragePooling2D()(x)
    outputs = L.Dense(10, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="squeeze_excite")


def mobilenet_mini():
    """A MobileNet-style classifier: a depthwise-separable block
    (MobileNetV1: strided DepthwiseConv2D, 1x1 Conv2D) and an inverted
    residual block (MobileNetV2: 1x1 expand, depthwise, linear 1x1
    project, Add), BN + ReLU6 after each conv; no squeeze-excite."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    x = L.Conv2D(16, 3, strides=2, padding="same", use_bias=False)(inputs)
    x = L.ReLU(6.0)(L.BatchNormalization()(x))
    x = L.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False)(x)
    x = L.ReLU(6.0)(L.BatchNormalization()(x))
    x = L.Conv2D(16, 1, use_bias=False)(x)
    x = L.ReLU(6.0)(L.BatchNormalization()(x))
    h = L.Conv2D(32, 1, use_bias=False)(x)
    h = L.ReLU(6.0)(L.BatchNormalization()(h))
    h = L.DepthwiseConv2D(3, padding="same", use_bias=False)(h)
    h = L.ReLU(6.0)(L.BatchNormalization()(h))
    h = L.Conv2D(16, 1, use_bias=False)(h)
    h = L.BatchNormalization()(h)
    x = L.Add()([x, h])
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dropout(0.2)(x)
    outputs = L.Dense(10, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="mobilenet_mini")


def conv_denoiser():
    """keras.io "Convolutional autoencoder for image denoising": Conv2D +
    MaxPooling2D encoder, strided Conv2DTranspose decoder, a per-pixel head
    (here a 2-class softmax, ink / background, like ``unet``'s, so the
    int8 and bit-serial files can be checked by per-pixel top-1)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(16, 16, 1))
    x = L.Conv2D(8, (3, 3), activation="relu", padding="same")(inputs)
    x = L.MaxPooling2D((2, 2), padding="same")(x)
    x = L.Conv2D(8, (3, 3), activation="relu", padding="same")(x)
    x = L.MaxPooling2D((2, 2), padding="same")(x)
    x = L.Conv2DTranspose(8, (3, 3), strides=2, activation="relu",
                          padding="same")(x)
    x = L.Conv2DTranspose(8, (3, 3), strides=2, activation="relu",
                          padding="same")(x)
    outputs = L.Conv2D(2, (3, 3), activation="softmax", padding="same")(x)
    return keras.Model(inputs, outputs, name="conv_denoiser")


def image_and_metadata():
    """Two inputs (keras.io "The Functional API", models with multiple
    inputs): an image branch (Conv2D + BatchNormalization + pooling) and a
    metadata branch (Dense) joined by a Concatenate; named inputs, so data
    can be given as a list or a dict by name."""
    keras.utils.set_random_seed(0)
    image = keras.Input(shape=(12, 12, 3), name="image")
    metadata = keras.Input(shape=(6,), name="metadata")
    x = L.Conv2D(16, 3, padding="same", activation="relu")(image)
    x = L.BatchNormalization()(x)
    x = L.MaxPooling2D()(x)
    x = L.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = L.GlobalAveragePooling2D()(x)
    m = L.Dense(8, activation="relu")(metadata)
    h = L.Concatenate()([x, m])
    h = L.Dense(16, activation="relu")(h)
    h = L.Dropout(0.2)(h)
    outputs = L.Dense(10, activation="softmax")(h)
    return keras.Model([image, metadata], outputs, name="image_and_metadata")


def bidirectional_lstm():
    """keras.io "Bidirectional LSTM on IMDB": token ids -> Embedding -> two
    stacked Bidirectional LSTMs -> a softmax classifier (10 classes here)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(None,), dtype="int32")
    x = L.Embedding(50, 16)(inputs)
    x = L.Bidirectional(L.LSTM(16, return_sequences=True))(x)
    x = L.Bidirectional(L.LSTM(16))(x)
    outputs = L.Dense(10, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="bidirectional_lstm")


def conv_gru():
    """A sensor / time-series classifier: Conv1D features, a GRU over time
    (all steps), a SimpleRNN summary, a softmax classifier."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(32, 3))
    x = L.Conv1D(16, 3, padding="same", activation="relu")(inputs)
    x = L.MaxPooling1D(2)(x)
    x = L.GRU(16, return_sequences=True)(x)
    x = L.SimpleRNN(12)(x)
    x = L.Dense(16, activation="relu")(x)
    outputs = L.Dense(10, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="conv_gru")


def siamese():
    """keras.io "Image similarity estimation using a Siamese Network": one
    encoder (a nested functional model) applied to both images, the
    squared difference of the embeddings, a classifier."""
    keras.utils.set_random_seed(0)
    enc_in = keras.Input(shape=(12, 12, 1))
    x = L.Conv2D(8, 3, activation="relu")(enc_in)
    x = L.BatchNormalization()(x)
    x = L.MaxPooling2D()(x)
    x = L.Conv2D(16, 3, activation="relu")(x)
    x = L.GlobalAveragePooling2D()(x)
    encoder = keras.Model(enc_in, L.Dense(16)(x), name="encoder")
    a = keras.Input(shape=(12, 12, 1))
    b = keras.Input(shape=(12, 12, 1))
    d = L.Subtract()([encoder(a), encoder(b)])
    d = L.Multiply()([d, d])
    outputs = L.Dense(10, activation="softmax")(d)
    return keras.Model([a, b], outputs, name="siamese")


def video_time_distributed():
    """keras.io-style video classifier: a small CNN applied to every frame
    with ``TimeDistributed``, a GRU over the frames."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(4, 12, 12, 3))
    x = L.TimeDistributed(L.Conv2D(8, 3, activation="relu"))(inputs)
    x = L.TimeDistributed(L.BatchNormalization())(x)
    x = L.TimeDistributed(L.MaxPooling2D())(x)
    x = L.TimeDistributed(L.Conv2D(16, 3, activation="relu"))(x)
    x = L.TimeDistributed(L.GlobalAveragePooling2D())(x)
    x = L.GRU(16)(x)
    outputs = L.Dense(10, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="video_time_distributed")


def next_frame_convlstm():
    """keras.io "Next-frame video prediction with convolutional LSTMs":
    stacked ConvLSTM2D + BatchNormalization over a variable number of
    frames, a Conv3D head (per-pixel classes here instead of the example's
    sigmoid intensities)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(None, 8, 8, 1))
    x = L.ConvLSTM2D(8, (5, 5), padding="same", return_sequences=True,
                     activation="relu")(inputs)
    x = L.BatchNormalization()(x)
    x = L.ConvLSTM2D(8, (3, 3), padding="same", return_sequences=True,
                     activation="relu")(x)
    x = L.BatchNormalization()(x)
    x = L.ConvLSTM2D(8, (1, 1), padding="same", return_sequences=True,
                     activation="relu")(x)
    outputs = L.Conv3D(2, (3, 3, 3), activation="softmax",
                       padding="same")(x)
    return keras.Model(inputs, outputs, name="next_frame_convlstm")


def text_attention():
    """A text classifier with Keras' dot-product and additive attention
    layers (the ``keras.layers.Attention`` docstring's CNN + attention
    example): query and value encodings by Conv1D, both attentions, pooled
    and concatenated."""
    keras.utils.set_random_seed(0)
    tokens = keras.Input(shape=(16,), dtype="int32")
    emb = L.Embedding(50, 16)(tokens)
    query = L.Conv1D(16, 3, padding="same")(emb)
    value = L.Conv1D(16, 3, padding="same")(emb)
    dot = L.Attention()([query, value])
    additive = L.AdditiveAttention()([query, value])
    x = L.Concatenate()([L.GlobalAveragePooling1D()(query),
                         L.GlobalAveragePooling1D()(dot),
                         L.GlobalAveragePooling1D()(additive)])
    outputs = L.Dense(10, activation="softmax")(x)
    return keras.Model(tokens, outputs, name="text_attention")


def wavenet1d():
    """keras.io-style WaveNet / time-series net: causal dilated Conv1D with
    gated tanh * sigmoid units and residual adds, PReLU, a SeparableConv1D,
    a DepthwiseConv1D and a Conv1DTranspose decoder step."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 2))
    x = L.Conv1D(8, 2, padding="causal")(inputs)
    x = L.PReLU(shared_axes=[1])(x)
    for rate in (1, 2, 4):
        t = L.Conv1D(8, 2, dilation_rate=rate, padding="causal",
                     activation="tanh")(x)
        s = L.Conv1D(8, 2, dilation_rate=rate, padding="causal",
                     activation="sigmoid")(x)
        g = L.Conv1D(8, 1)(L.Multiply()([t, s]))
        x = L.Add()([x, g])
    x = L.SeparableConv1D(16, 3, padding="same", activation="relu")(x)
    x = L.DepthwiseConv1D(3, padding="same")(x)
    x = L.UpSampling1D(2)(x)
    x = L.Cropping1D((2, 2))(x)
    x = L.Conv1DTranspose(8, 3, strides=2, padding="same",
                          activation="relu")(x)
    x = L.GlobalMaxPooling1D()(x)
    outputs = L.Dense(10, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="wavenet1d")


def text_transformer():
    """keras.io "Text classification with Transformer", narrowed: the
    user's own layer classes (a Transformer block, token + position
    embeddings) around a pooled Dense head."""
    keras.utils.set_random_seed(0)
    inputs = L.Input(shape=(12,))
    x = TokenAndPositionEmbedding(12, 50, 8)(inputs)
    x = TransformerBlock(8, 2, 8)(x)
    x = L.GlobalAveragePooling1D()(x)
    x = L.Dropout(0.1)(x)
    x = L.Dense(12, activation="relu")(x)
    x = L.Dropout(0.1)(x)
    outputs = L.Dense(10, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="text_transformer")


def mlp_mixer():
    """keras.io "Image classification with modern MLP models" (MLP-Mixer):
    patches, then token mixing (a Dense across the patches between two
    ``Permute((2, 1))``) and channel mixing, each residual and pre-norm."""
    keras.utils.set_random_seed(0)
    inputs = L.Input((16, 16, 3))
    x = L.Rescaling(1 / 255.0)(inputs)
    x = L.Conv2D(16, 4, strides=4)(x)  # 16 patches of 16 channels
    x = L.Reshape((16, 16))(x)
    for _ in range(2):
        h = L.LayerNormalization(epsilon=1e-6)(x)
        h = L.Permute((2, 1))(h)
        h = L.Dense(16, activation="gelu")(h)
        h = L.Dense(16)(h)
        h = L.Permute((2, 1))(h)
        x = L.Add()([x, h])
        h = L.LayerNormalization(epsilon=1e-6)(x)
        h = L.Dense(32, activation="gelu")(h)
        h = L.Dense(16)(h)
        x = L.Add()([x, h])
    x = L.GlobalAveragePooling1D()(x)
    x = L.Dropout(0.2)(x)
    outputs = L.Dense(10, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="mlp_mixer")


def ts_transformer():
    """keras.io "Timeseries classification with a Transformer model":
    pre-norm encoder blocks written with ``+``, a Conv1D(kernel 1)
    feed-forward, and ``GlobalAveragePooling1D(data_format=
    "channels_first")`` (the features of each step pooled)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 1))
    x = inputs
    for _ in range(2):
        h = L.LayerNormalization(epsilon=1e-6)(x)
        h = L.MultiHeadAttention(key_dim=8, num_heads=2, dropout=0.1)(h, h)
        h = L.Dropout(0.1)(h)
        res = h + x
        h = L.LayerNormalization(epsilon=1e-6)(res)
        h = L.Conv1D(filters=4, kernel_size=1, activation="relu")(h)
        h = L.Dropout(0.1)(h)
        h = L.Conv1D(filters=inputs.shape[-1], kernel_size=1)(h)
        x = h + res
    x = L.GlobalAveragePooling1D(data_format="channels_first")(x)
    x = L.Dense(16, activation="relu")(x)
    x = L.Dropout(0.1)(x)
    outputs = L.Dense(10, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="ts_transformer")


def cct():
    """keras.io "Compact Convolutional Transformers": a conv tokenizer
    (Conv2D, ZeroPadding2D, MaxPooling2D), transformer blocks with the
    user's ``StochasticDepth`` layer, and sequence pooling written with
    ``keras.ops`` (softmax over the tokens, a matmul)."""
    keras.utils.set_random_seed(0)
    inputs = L.Input((16, 16, 3))
    x = L.Rescaling(1 / 255.0)(inputs)
    for filters in (8, 16):
        x = L.Conv2D(filters, 3, padding="valid", use_bias=False,
                     activation="relu")(x)
        x = L.ZeroPadding2D(1)(x)
        x = L.MaxPooling2D(3, 2, "same")(x)
    x = L.Reshape((-1, 16))(x)
    for i in range(2):
        x1 = L.LayerNormalization(epsilon=1e-5)(x)
        att = L.MultiHeadAttention(num_heads=2, key_dim=8,
                                   dropout=0.1)(x1, x1)
        att = StochasticDepth(0.1 * i)(att)
        x2 = L.Add()([att, x])
        x3 = L.LayerNormalization(epsilon=1e-5)(x2)
        x3 = L.Dense(16, activation=keras.activations.gelu)(x3)
        x3 = L.Dropout(0.1)(x3)
        x3 = L.Dense(16, activation=keras.activations.gelu)(x3)
        x3 = StochasticDepth(0.1 * i)(x3)
        x = L.Add()([x3, x2])
    rep = L.LayerNormalization(epsilon=1e-5)(x)
    weights = keras.ops.softmax(L.Dense(1)(rep), axis=1)
    pooled = keras.ops.matmul(keras.ops.transpose(weights, axes=(0, 2, 1)),
                              rep)
    pooled = keras.ops.squeeze(pooled, -2)
    outputs = L.Dense(10, activation="softmax")(pooled)
    return keras.Model(inputs, outputs, name="cct")


def block_class_cnn():
    """A CNN whose residual blocks are the user's own ``Layer`` subclass
    (``ResidualBlock``: convs, BN and ``keras.ops`` inside); plain convs
    before it and a Dense head after it."""
    keras.utils.set_random_seed(0)
    inputs = L.Input((16, 16, 3))
    x = L.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = L.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
    x = ResidualBlock(8)(x)
    x = ResidualBlock(8)(x)
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dense(16, activation="relu")(x)
    outputs = L.Dense(10, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="block_class_cnn")


def segmentation_unet():
    """keras.io "Image segmentation with a U-Net-like architecture": an
    Xception-style encoder (SeparableConv2D, strided 1x1 projections added
    back) and a decoder of Conv2DTranspose, UpSampling2D and upsampled 1x1
    projections, a per-pixel softmax."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    x = L.Conv2D(8, 3, strides=2, padding="same")(inputs)
    x = L.BatchNormalization()(x)
    x = L.Activation("relu")(x)
    previous_block_activation = x
    for filters in [16, 32]:
        x = L.Activation("relu")(x)
        x = L.SeparableConv2D(filters, 3, padding="same")(x)
        x = L.BatchNormalization()(x)
        x = L.Activation("relu")(x)
        x = L.SeparableConv2D(filters, 3, padding="same")(x)
        x = L.BatchNormalization()(x)
        x = L.MaxPooling2D(3, strides=2, padding="same")(x)
        residual = L.Conv2D(filters, 1, strides=2, padding="same")(
            previous_block_activation)
        x = L.add([x, residual])
        previous_block_activation = x
    for filters in [32, 16, 8]:
        x = L.Activation("relu")(x)
        x = L.Conv2DTranspose(filters, 3, padding="same")(x)
        x = L.BatchNormalization()(x)
        x = L.Activation("relu")(x)
        x = L.Conv2DTranspose(filters, 3, padding="same")(x)
        x = L.BatchNormalization()(x)
        x = L.UpSampling2D(2)(x)
        residual = L.UpSampling2D(2)(previous_block_activation)
        residual = L.Conv2D(filters, 1, padding="same")(residual)
        x = L.add([x, residual])
        previous_block_activation = x
    outputs = L.Conv2D(3, 3, activation="softmax", padding="same")(x)
    return keras.Model(inputs, outputs, name="segmentation_unet")


def convmixer():
    """keras.io "Image classification with ConvMixer": a patch conv, GELU,
    residual depthwise token mixing, pointwise channel mixing."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    x = L.Rescaling(scale=1.0 / 255)(inputs)
    x = L.Conv2D(16, kernel_size=2, strides=2)(x)
    x = L.BatchNormalization()(L.Activation("gelu")(x))
    for _ in range(2):
        x0 = x
        x = L.DepthwiseConv2D(kernel_size=3, padding="same")(x)
        x = L.Add()([L.BatchNormalization()(L.Activation("gelu")(x)), x0])
        x = L.Conv2D(16, kernel_size=1)(x)
        x = L.BatchNormalization()(L.Activation("gelu")(x))
    x = L.GlobalAvgPool2D()(x)
    outputs = L.Dense(10, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="convmixer")


def _pointnet_conv(x, filters):
    x = L.Conv1D(filters, kernel_size=1, padding="valid")(x)
    return L.Activation("relu")(L.BatchNormalization(momentum=0.0)(x))


def _pointnet_dense(x, filters):
    x = L.Dense(filters)(x)
    return L.Activation("relu")(L.BatchNormalization(momentum=0.0)(x))


def _tnet(inputs, num_features):
    """PointNet's T-net: a learned ``num_features`` x ``num_features``
    transform (Dense -> Reshape), applied with a ``Dot`` layer."""
    bias = keras.initializers.Constant(np.eye(num_features).flatten())
    x = _pointnet_conv(inputs, 8)
    x = L.GlobalMaxPooling1D()(_pointnet_conv(x, 16))
    x = _pointnet_dense(x, 16)
    x = L.Dense(num_features * num_features, kernel_initializer="zeros",
                bias_initializer=bias,
                activity_regularizer=OrthogonalRegularizer(num_features))(x)
    feat_t = L.Reshape((num_features, num_features))(x)
    return L.Dot(axes=(2, 1))([inputs, feat_t])


def pointnet():
    """keras.io "Point cloud classification with PointNet": T-nets (a
    ``Dot`` of the points and a learned transform, an activity
    regularizer of the user's own class), pointwise Conv1D, max pooling."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(32, 3))
    x = _tnet(inputs, 3)
    x = _pointnet_conv(_pointnet_conv(x, 8), 8)
    x = _tnet(x, 8)
    x = _pointnet_conv(_pointnet_conv(x, 8), 16)
    x = _pointnet_dense(L.GlobalMaxPooling1D()(x), 16)
    outputs = L.Dense(10, activation="softmax")(L.Dropout(0.3)(x))
    return keras.Model(inputs, outputs, name="pointnet")


def _deeplab_block(x, filters=8, kernel_size=3, dilation_rate=1):
    x = L.Conv2D(filters, kernel_size, dilation_rate=dilation_rate,
                 padding="same", use_bias=False,
                 kernel_initializer=keras.initializers.HeNormal())(x)
    return keras.ops.nn.relu(L.BatchNormalization()(x))


def deeplab_mini():
    """keras.io "Multiclass semantic segmentation using DeepLabV3+": an
    atrous pyramid (dilated 3x3 convs; rates 2 and 3 at this 4x4 size,
    6 / 12 / 18 there), image pooling upsampled bilinearly, a low-level
    skip, ``keras.ops.nn.relu``; a small conv backbone for ResNet50."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    low = L.MaxPooling2D()(_deeplab_block(inputs))   # 8x8 low level
    x = L.MaxPooling2D()(_deeplab_block(low))        # 4x4
    pool = L.AveragePooling2D(pool_size=(4, 4))(x)
    pool = _deeplab_block(pool, kernel_size=1)
    pool = L.UpSampling2D(size=(4, 4), interpolation="bilinear")(pool)
    branches = [_deeplab_block(x, kernel_size=1)] + [
        _deeplab_block(x, dilation_rate=r) for r in (2, 3)]
    x = _deeplab_block(L.Concatenate()([pool, *branches]), kernel_size=1)
    x = L.UpSampling2D(size=(2, 2), interpolation="bilinear")(x)
    x = L.Concatenate()([x, _deeplab_block(low, filters=4, kernel_size=1)])
    x = L.UpSampling2D(size=(2, 2), interpolation="bilinear")(
        _deeplab_block(x))
    outputs = L.Conv2D(3, kernel_size=1, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="deeplab_mini")


def espcn():
    """keras.io "Image super-resolution using an efficient sub-pixel CNN":
    convs, then the user's weightless ``DepthToSpace`` layer (a per-pixel
    2-class head here, so the files can be checked by top-1)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(8, 8, 1))
    conv_args = {"activation": "relu", "kernel_initializer": "orthogonal",
                 "padding": "same"}
    x = L.Conv2D(16, 5, **conv_args)(inputs)
    x = L.Conv2D(8, 3, **conv_args)(x)
    x = L.Conv2D(8, 3, **conv_args)(x)
    x = L.Conv2D(2 * 2 ** 2, 3, **conv_args)(x)
    outputs = L.Softmax()(DepthToSpace(2)(x))
    return keras.Model(inputs, outputs, name="espcn")


def misc_layers():
    """The long tail of Keras layers a user reaches for: LeakyReLU, ELU,
    hard_silu, Subtract, Maximum, Minimum, Average, ReLU(max_value),
    SpatialDropout2D, Cropping2D, UpSampling2D, Resizing,
    ActivityRegularization, silu."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    a = L.LeakyReLU(negative_slope=0.1)(L.Conv2D(8, 3, padding="same")(inputs))
    b = L.ELU()(L.Conv2D(8, 3, padding="same")(inputs))
    c = L.Conv2D(8, 3, padding="same", activation="hard_silu")(inputs)
    x = L.Maximum()([L.Subtract()([a, b]), c])
    x = L.Average()([L.Minimum()([x, a]), b])
    x = L.SpatialDropout2D(0.1)(L.ReLU(max_value=6.0)(x))
    x = L.Conv2D(8, 3, strides=2, padding="same")(L.Cropping2D(1)(x))
    x = L.Resizing(8, 8)(L.UpSampling2D()(x))
    x = L.Conv2D(8, 1, activation="silu")(L.ActivityRegularization(1e-4)(x))
    outputs = L.Dense(10, activation="softmax")(L.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, outputs, name="misc_layers")


def application(name: str, size: int = 32) -> Callable:
    """A builder of ``keras.applications.<name>`` at ``size`` x ``size``."""

    def build():
        keras.utils.set_random_seed(0)
        return getattr(keras.applications, name)(
            weights=None, input_shape=(size, size, 3), include_top=True,
            classes=10)

    build.__name__ = name
    return build


# ------------------------------------------------------------ the cases

_BASE = ("Conv2D", "Dense", "pooling")
CASES = {c.name: c for c in [
    Case("mnist_convnet", mnist_convnet,
         _BASE + ("Reshape / Flatten", "Dropout / noise / augmentation"), (16, 16, 1)),
    Case("unet", unet,
         ("Conv2D", "Conv1D / 2D / 3D Transpose", "BatchNormalization", "pooling",
          "Add / Concatenate / Multiply"), (16, 16, 3), label_shape=(16, 16),
         num_classes=3),
    Case("text_conv1d", text_conv1d,
         ("Conv1D", "Dense", "Embedding", "pooling",
          "Dropout / noise / augmentation"), (24,),
         input_kind="tokens", vocab=50),
    Case("audio_conv1d", audio_conv1d,
         ("Conv1D", "Dense", "BatchNormalization", "pooling"), (64, 1)),
    Case("xception_mini", xception_mini,
         ("Conv2D", "SeparableConv1D / 2D", "Dense", "BatchNormalization",
          "pooling", "Rescaling / Normalization", "Add / Concatenate / Multiply",
          "Dropout / noise / augmentation"), (16, 16, 3), input_kind="pixels"),
    Case("tiny_vit", tiny_vit,
         ("Conv2D", "Dense", "EinsumDense / MultiHeadAttention",
          "LayerNormalization", "pooling", "Add / Concatenate / Multiply",
          "Reshape / Flatten"), (16, 16, 3)),
    Case("grouped_conv", grouped_conv,
         _BASE + ("grouped Conv2D", "BatchNormalization"), (12, 12, 3)),
    Case("conv3d", conv3d,
         ("Conv3D", "Dense", "BatchNormalization", "pooling"), (8, 8, 8, 1)),
    Case("group_norm", group_norm,
         _BASE + ("GroupNormalization",), (12, 12, 3)),
    Case("nested", nested,
         _BASE + ("BatchNormalization", "padding", "nested Model"),
         (12, 12, 3)),
    Case("wrapped_classifier", wrapped_classifier,
         _BASE + ("BatchNormalization", "Rescaling / Normalization",
                  "nested Model", "Dropout / noise / augmentation"), (12, 12, 3),
         input_kind="pixels"),
    Case("lambda_ops", lambda_ops,
         ("Conv2D", "Dense", "Lambda / keras.ops"), (12, 12, 3)),
    Case("operator_resnet", operator_resnet,
         ("Conv2D", "Dense", "BatchNormalization", "Lambda / keras.ops"),
         (12, 12, 3)),
    Case("squeeze_excite", squeeze_excite,
         _BASE + ("DepthwiseConv1D / 2D", "BatchNormalization",
                  "Add / Concatenate / Multiply", "Reshape / Flatten"),
         (12, 12, 3)),
    Case("mobilenet_mini", mobilenet_mini,
         _BASE + ("DepthwiseConv1D / 2D", "BatchNormalization",
                  "Add / Concatenate / Multiply", "Dropout / noise / augmentation"),
         (16, 16, 3)),
    Case("conv_denoiser", conv_denoiser,
         ("Conv2D", "Conv1D / 2D / 3D Transpose", "pooling"), (16, 16, 1),
         label_shape=(16, 16), num_classes=2),
    Case("image_and_metadata", image_and_metadata,
         _BASE + ("BatchNormalization", "Add / Concatenate / Multiply",
                  "Dropout / noise / augmentation", "several inputs"),
         (12, 12, 3), side_inputs=((6,),)),
    Case("bidirectional_lstm", bidirectional_lstm,
         ("Dense", "Embedding", "LSTM / GRU / SimpleRNN / ConvLSTM"), (24,),
         input_kind="tokens", vocab=50),
    Case("conv_gru", conv_gru,
         ("Conv1D", "Dense", "pooling", "LSTM / GRU / SimpleRNN / ConvLSTM"), (32, 3)),
    Case("siamese", siamese,
         _BASE + ("BatchNormalization", "Add / Concatenate / Multiply",
                  "Subtract / Maximum / Minimum / Average / Dot",
                  "nested Model", "several inputs"),
         (12, 12, 1), side_inputs=((12, 12, 1),)),
    Case("video_time_distributed", video_time_distributed,
         _BASE + ("BatchNormalization", "TimeDistributed",
                  "LSTM / GRU / SimpleRNN / ConvLSTM"), (4, 12, 12, 3)),
    Case("next_frame_convlstm", next_frame_convlstm,
         ("Conv3D", "BatchNormalization",
          "LSTM / GRU / SimpleRNN / ConvLSTM"), (4, 8, 8, 1),
         label_shape=(4, 8, 8), num_classes=2),
    Case("text_attention", text_attention,
         ("Conv1D", "Dense", "Embedding", "pooling",
          "Add / Concatenate / Multiply", "Attention / AdditiveAttention"),
         (16,), input_kind="tokens", vocab=50),
    Case("wavenet1d", wavenet1d,
         ("Conv1D", "DepthwiseConv1D / 2D", "SeparableConv1D / 2D",
          "Conv1D / 2D / 3D Transpose", "Dense", "pooling",
          "Add / Concatenate / Multiply", "UpSampling / Resizing / Cropping"),
         (32, 2)),
    Case("text_transformer", text_transformer,
         ("Dense", "pooling", "Dropout / noise / augmentation",
          "your own Layer subclass"), (12,), input_kind="tokens", vocab=50),
    Case("block_class_cnn", block_class_cnn,
         ("Conv2D", "Dense", "pooling", "your own Layer subclass"),
         (16, 16, 3), input_kind="pixels"),
    Case("segmentation_unet", segmentation_unet,
         ("Add / Concatenate / Multiply", "BatchNormalization",
          "Conv1D / 2D / 3D Transpose", "Conv2D", "SeparableConv1D / 2D",
          "pooling", "UpSampling / Resizing / Cropping"), (16, 16, 3),
         label_shape=(16, 16), num_classes=3),
    Case("mlp_mixer", mlp_mixer,
         ("Add / Concatenate / Multiply", "Conv2D", "Dense",
          "Dropout / noise / augmentation", "LayerNormalization",
          "Rescaling / Normalization", "Reshape / Flatten", "pooling"),
         (16, 16, 3), input_kind="pixels"),
    Case("ts_transformer", ts_transformer,
         ("Conv1D", "Dense", "Dropout / noise / augmentation",
          "EinsumDense / MultiHeadAttention", "Lambda / keras.ops",
          "LayerNormalization", "pooling"), (32, 1)),
    Case("cct", cct,
         ("Add / Concatenate / Multiply", "Conv2D", "Dense",
          "Dropout / noise / augmentation",
          "EinsumDense / MultiHeadAttention", "Lambda / keras.ops",
          "LayerNormalization", "Rescaling / Normalization",
          "Reshape / Flatten", "padding", "pooling",
          "your own Layer subclass"), (16, 16, 3), input_kind="pixels"),
    Case("convmixer", convmixer,
         _BASE + ("DepthwiseConv1D / 2D", "BatchNormalization",
                  "Add / Concatenate / Multiply", "Rescaling / Normalization"),
         (16, 16, 3), input_kind="pixels"),
    Case("pointnet", pointnet,
         ("Conv1D", "Dense", "BatchNormalization", "pooling",
          "Subtract / Maximum / Minimum / Average / Dot", "Reshape / Flatten",
          "Dropout / noise / augmentation"), (32, 3)),
    Case("deeplab_mini", deeplab_mini,
         ("Conv2D", "BatchNormalization", "pooling",
          "Add / Concatenate / Multiply", "UpSampling / Resizing / Cropping",
          "Lambda / keras.ops"), (16, 16, 3), label_shape=(16, 16),
         num_classes=3),
    Case("espcn", espcn, ("Conv2D", "your own Layer subclass"), (8, 8, 1),
         label_shape=(16, 16), num_classes=2),
    Case("misc_layers", misc_layers,
         _BASE + ("Subtract / Maximum / Minimum / Average / Dot",
                  "UpSampling / Resizing / Cropping",
                  "Dropout / noise / augmentation"), (16, 16, 3)),
    Case("MobileNetV3Small", application("MobileNetV3Small"),
         ("Conv2D", "pooling", "DepthwiseConv1D / 2D", "BatchNormalization",
          "padding", "Rescaling / Normalization", "Add / Concatenate / Multiply",
          "Reshape / Flatten", "Lambda / keras.ops", "Dropout / noise / augmentation"),
         (32, 32, 3), input_kind="pixels", slow=True),
    Case("EfficientNetB0", application("EfficientNetB0"),
         _BASE + ("DepthwiseConv1D / 2D", "BatchNormalization", "padding",
                  "Rescaling / Normalization",
                  "Add / Concatenate / Multiply",
                  "Reshape / Flatten", "Dropout / noise / augmentation"),
         (32, 32, 3), input_kind="pixels", slow=True),
    Case("DenseNet121", application("DenseNet121"),
         _BASE + ("BatchNormalization", "padding",
                  "Add / Concatenate / Multiply"),
         (32, 32, 3), slow=True),
    Case("ResNet50V2", application("ResNet50V2"),
         _BASE + ("BatchNormalization", "padding",
                  "Add / Concatenate / Multiply"),
         (32, 32, 3), slow=True),
    Case("ConvNeXtTiny", application("ConvNeXtTiny"),
         _BASE + ("grouped Conv2D", "LayerNormalization", "nested Model",
                  "Rescaling / Normalization", "Lambda / keras.ops"),
         (32, 32, 3), input_kind="pixels", slow=True),
]}


# (model, step) -> (why, matrix rows): the step runs and its checks hold
# but it leaves layers of these rows alone (the matrix says "partly").
_RNN_ROW = ("LSTM / GRU / SimpleRNN / ConvLSTM",)
LIMITED = {
    ("next_frame_convlstm", "int8"): (
        "a QAT model's ConvLSTM2D (float in quantize_model) keeps its "
        "per-step output gate product o * act(c) as a float MUL in the int8 "
        "file", _RNN_ROW),
    ("conv_gru", "slimmable"): (
        "no slimmable recurrent layer: groups of recurrent units or read by "
        "a recurrent layer stay whole", _RNN_ROW),
    ("conv_gru", "int8"): (
        "a QAT model's GRU (float in quantize_model) keeps its per-step "
        "state update h = z*h + (1-z)*hh as a float ADD in the int8 file "
        "(the converter's QAT + calibration path; post-training int8 of the "
        "float model is fully integer)", _RNN_ROW),
    **{(name, "gal_channels"): (
        "GAL's channel masks skip recurrent units (a mask on a unit's "
        "output is not a removed unit)", _RNN_ROW)
       for name in ("conv_gru", "bidirectional_lstm")},
}


# ------------------------------------------------------------ derived rows

_ROW_OF = [  # (classes, row); the first match wins
    ((L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose),
     "Conv1D / 2D / 3D Transpose"),
    ((L.SeparableConv1D, L.SeparableConv2D), "SeparableConv1D / 2D"),
    ((L.DepthwiseConv1D, L.DepthwiseConv2D), "DepthwiseConv1D / 2D"),
    ((L.Conv1D,), "Conv1D"),
    ((L.Conv3D,), "Conv3D"),
    ((L.Dense,), "Dense"),
    ((L.EinsumDense, L.MultiHeadAttention),
     "EinsumDense / MultiHeadAttention"),
    ((L.BatchNormalization,), "BatchNormalization"),
    ((L.LayerNormalization,), "LayerNormalization"),
    ((L.GroupNormalization,), "GroupNormalization"),
    ((L.Embedding,), "Embedding"),
    ((L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D, L.AveragePooling1D,
      L.AveragePooling2D, L.AveragePooling3D, L.GlobalMaxPooling1D,
      L.GlobalMaxPooling2D, L.GlobalMaxPooling3D, L.GlobalAveragePooling1D,
      L.GlobalAveragePooling2D, L.GlobalAveragePooling3D), "pooling"),
    ((L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D), "padding"),
    ((L.Rescaling, L.Normalization), "Rescaling / Normalization"),
    ((L.Add, L.Concatenate, L.Multiply), "Add / Concatenate / Multiply"),
    ((L.Subtract, L.Maximum, L.Minimum, L.Average, L.Dot),
     "Subtract / Maximum / Minimum / Average / Dot"),
    ((L.UpSampling1D, L.UpSampling2D, L.UpSampling3D, L.Resizing,
      L.Cropping1D, L.Cropping2D, L.Cropping3D),
     "UpSampling / Resizing / Cropping"),
    ((L.Reshape, L.Flatten), "Reshape / Flatten"),
    (keras_layer_classes(INFERENCE_IDENTITY), "Dropout / noise / augmentation"),
    ((L.Lambda,), "Lambda / keras.ops"),
    ((L.LSTM, L.GRU, L.SimpleRNN, L.Bidirectional, L.RNN),
     "LSTM / GRU / SimpleRNN / ConvLSTM"),
    ((L.Attention, L.AdditiveAttention), "Attention / AdditiveAttention"),
]


def layer_rows(model) -> set:
    """The :data:`ROWS` the operations of a built model fall in.

    Example:
        >>> sorted(layer_rows(mnist_convnet()))[:2]
        ['Conv2D', 'Dense']
    """
    rows = set()
    if len(getattr(model, "inputs", None) or ()) > 1:
        rows.add("several inputs")
    for op in getattr(model, "operations", None) or model.layers:
        rows |= _op_rows(op)
    return rows


def _op_rows(op) -> set:
    if isinstance(op, keras.Model):
        return {"nested Model"} | layer_rows(op)
    if not isinstance(op, L.Layer):
        return {"Lambda / keras.ops"}  # a keras.ops call
    if isinstance(op, L.TimeDistributed):
        return {"TimeDistributed"} | _op_rows(op.layer)
    if user_layer_class(type(op)):
        return {"your own Layer subclass"}
    if isinstance(op, L.Conv2D):
        return {"grouped Conv2D" if op.groups > 1 else "Conv2D"}
    for classes, row in _ROW_OF:
        if isinstance(op, classes):
            return {row}
    return set()
