"""Small functional reference models that tests, benchmarks and the demo compress.

All models are functional Keras models with deterministic layer names, an
``input_shape`` and ``num_classes`` argument, and an optional ``filters``
override ``{layer_name: n}`` that builds the same architecture at other
widths (how a pruned architecture is built directly, e.g. for
"Rethinking"-style training from scratch or as the speed limit of surgery).

The defaults are sized for 28x28 Fashion-MNIST on a CPU: fewer stride-2
stages than the ImageNet originals (CIFAR-style stems), as is usual for
small inputs.

Example:
    >>> model = tfcomp.zoo.resnet(depth=20)            # ResNet-20, 0.27M params
    >>> model = tfcomp.zoo.mobilenet_v2(alpha=0.5)
"""

from __future__ import annotations

import keras
from keras import layers

__all__ = ["resnet", "mobilenet_v1", "mobilenet_v2", "vgg_small", "get"]


def _check_common(input_shape, num_classes):
    if num_classes is None or int(num_classes) < 1:
        raise ValueError(
            f"num_classes must be a positive integer. Received: "
            f"num_classes={num_classes!r}")
    if len(tuple(input_shape)) != 3:
        raise ValueError(
            "input_shape must be (height, width, channels). Received: "
            f"input_shape={input_shape!r}")


def _divisible(v: float, divisor: int = 8, min_value: int | None = None
               ) -> int:
    """Rounds channels to a multiple of ``divisor`` (MobileNet convention)."""
    min_value = min_value or divisor
    new = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new < 0.9 * v:
        new += divisor
    return int(new)


class _Builder:
    """Creates layers with deterministic names and optional width overrides."""

    def __init__(self, filters=None, weight_decay=0.0):
        self.filters = dict(filters or {})
        self.reg = (keras.regularizers.L2(weight_decay)
                    if weight_decay else None)

    def width(self, name, default):
        return int(self.filters.get(name, default))

    def conv(self, x, name, n, k=3, s=1, use_bias=False):
        return layers.Conv2D(
            self.width(name, n), k, strides=s, padding="same",
            use_bias=use_bias, kernel_initializer="he_normal",
            kernel_regularizer=self.reg, name=name)(x)

    def dw(self, x, name, k=3, s=1):
        return layers.DepthwiseConv2D(
            k, strides=s, padding="same", use_bias=False,
            depthwise_initializer="he_normal", name=name)(x)

    @staticmethod
    def bn(x, name):
        return layers.BatchNormalization(
            momentum=0.9, epsilon=1e-5, name=name)(x)

    @staticmethod
    def relu(x, name, max_value=None):
        return layers.ReLU(max_value=max_value, name=name)(x)

    def conv_bn(self, x, names, n, k=3, s=1, max_value=None):
        """Conv2D -> BatchNorm (-> ReLU): ``names`` = (conv, bn[, relu])."""
        x = self.bn(self.conv(x, names[0], n, k=k, s=s), names[1])
        return self.relu(x, names[2], max_value) if len(names) > 2 else x

    def dw_bn_relu(self, x, name, s=1, max_value=6.0):
        """DepthwiseConv2D ``name`` -> ``name_bn`` -> ``name_relu``."""
        x = self.bn(self.dw(x, name, s=s), f"{name}_bn")
        return self.relu(x, f"{name}_relu", max_value)


def _unit(prefix: str, relu: bool = True) -> tuple:
    """Layer names ``(prefix, prefix_bn[, prefix_relu])``."""
    names = (prefix, f"{prefix}_bn", f"{prefix}_relu")
    return names if relu else names[:2]


def _classifier(inputs, x, num_classes: int, name: str) -> keras.Model:
    """Global average pooling, the ``logits`` layer, the model."""
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def resnet(depth: int = 20, width: int = 16, input_shape=(28, 28, 1),
           num_classes: int = 10, filters: dict | None = None,
           weight_decay: float = 0.0, name: str | None = None) -> keras.Model:
    """CIFAR-style ResNet (He et al. 2016): 3 stages of basic blocks.

    depth = 6n + 2 (8, 20, 32, 44, 56, 110). Stages have ``width``,
    ``2*width`` and ``4*width`` channels; the first block of stages 2 and 3
    downsamples and uses a 1x1 projection shortcut (option B).

    Args:
        depth: 6n+2 layers.
        width: channels of the first stage.
        input_shape: (H, W, C).
        num_classes: size of the softmax-free logits layer.
        filters: optional ``{conv_name: n}`` width overrides.
        weight_decay: L2 factor on conv kernels (0 = none).
        name: model name (default ``resnet{depth}``).

    Reference: He et al., Deep Residual Learning, arXiv:1512.03385.

    Example:
        >>> m = resnet(depth=20)
        >>> m.count_params()
    """
    _check_common(input_shape, num_classes)
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(
            f"depth must be 6n+2 with n >= 1 (8, 20, 56, ...). Received: "
            f"depth={depth}")
    if width < 1:
        raise ValueError(f"width must be >= 1. Received: width={width}")
    b = _Builder(filters, weight_decay)
    n = (depth - 2) // 6
    inputs = keras.Input(input_shape, name="input")
    x = b.conv_bn(inputs, ("stem_conv", "stem_bn", "stem_relu"), width)
    for stage in range(3):
        out = width * (2 ** stage)
        for block in range(n):
            p = f"s{stage + 1}b{block + 1}"
            stride = 2 if (stage > 0 and block == 0) else 1
            shortcut = x
            y = b.conv_bn(x, (f"{p}_conv1", f"{p}_bn1", f"{p}_relu1"), out,
                          s=stride)
            y = b.conv_bn(y, (f"{p}_conv2", f"{p}_bn2"), out)
            if stride != 1 or (stage > 0 and block == 0):
                shortcut = b.conv_bn(x, _unit(f"{p}_proj", relu=False), out,
                                     k=1, s=stride)
            x = layers.Add(name=f"{p}_add")([y, shortcut])
            x = b.relu(x, f"{p}_out")
    return _classifier(inputs, x, num_classes, name or f"resnet{depth}")


def mobilenet_v1(alpha: float = 1.0, input_shape=(28, 28, 1),
                 num_classes: int = 10, filters: dict | None = None,
                 name: str | None = None) -> keras.Model:
    """MobileNet-V1-tiny: depthwise-separable blocks, CIFAR-style stem.

    Channels follow the paper's 32-64-128-128-256-256-512x3-1024 sequence at
    width multiplier ``alpha``, with three stride-2 stages instead of five
    (28x28 inputs) and three 512 blocks instead of five (CPU scale).

    Reference: Howard et al., MobileNets, arXiv:1704.04861.

    Example:
        >>> m = mobilenet_v1(alpha=0.5)
    """
    b, inputs, x = _mobilenet_stem(alpha, input_shape, num_classes, filters)
    cfg = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
           (512, 1), (512, 1), (1024, 1)]
    for i, (c, s) in enumerate(cfg, start=1):
        x = b.dw_bn_relu(x, f"b{i}_dw", s=s)
        x = b.conv_bn(x, _unit(f"b{i}_pw"), _divisible(c * alpha), k=1,
                      max_value=6.0)
    return _classifier(inputs, x, num_classes, name or "mobilenet_v1")


def _mobilenet_stem(alpha, input_shape, num_classes, filters):
    """Checks the arguments; ``(builder, inputs, stem output)``."""
    _check_common(input_shape, num_classes)
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0. Received: alpha={alpha}")
    b = _Builder(filters)
    inputs = keras.Input(input_shape, name="input")
    x = b.conv_bn(inputs, ("stem_conv", "stem_bn", "stem_relu"),
                  _divisible(32 * alpha), max_value=6.0)
    return b, inputs, x


def mobilenet_v2(alpha: float = 1.0, input_shape=(28, 28, 1),
                 num_classes: int = 10, filters: dict | None = None,
                 name: str | None = None) -> keras.Model:
    """MobileNet-V2-tiny: inverted residuals with linear bottlenecks.

    The paper's (t, c, n, s) table is kept up to the 96-channel stage
    (expansion 6, ReLU6, residual adds where shapes match), with three
    stride-2 stages for 28x28 inputs and a 640*alpha head instead of 1280
    (CPU scale).

    Reference: Sandler et al., MobileNetV2, arXiv:1801.04381.

    Example:
        >>> m = mobilenet_v2(alpha=0.5)
    """
    b, inputs, x = _mobilenet_stem(alpha, input_shape, num_classes, filters)
    cfg = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 2, 2),
           (6, 96, 1, 1)]
    block = 0
    for t, c, n, s in cfg:
        out = _divisible(c * alpha)
        for i in range(n):
            block += 1
            p = f"b{block}"
            stride = s if i == 0 else 1
            cin = x.shape[-1]
            y = x
            if t != 1:
                y = b.conv_bn(y, _unit(f"{p}_expand"), cin * t, k=1,
                              max_value=6.0)
            y = b.dw_bn_relu(y, f"{p}_dw", s=stride)
            y = b.conv_bn(y, _unit(f"{p}_project", relu=False), out, k=1)
            if stride == 1 and cin == y.shape[-1]:
                y = layers.Add(name=f"{p}_add")([x, y])
            x = y
    x = b.conv_bn(x, ("head_conv", "head_bn", "head_relu"),
                  _divisible(640 * alpha), k=1, max_value=6.0)
    return _classifier(inputs, x, num_classes, name or "mobilenet_v2")


def vgg_small(width: int = 32, input_shape=(28, 28, 1), num_classes: int = 10,
              filters: dict | None = None, name: str | None = None
              ) -> keras.Model:
    """VGG-small: three conv-conv-pool stages, Flatten, Dense.

    Channels ``width``, ``2*width``, ``4*width``; conv-BN-ReLU units; a
    Flatten -> Dense(128) -> Dense(num_classes) head (exercises the
    Flatten->Dense channel expansion in pruning).

    Reference: Simonyan & Zisserman, arXiv:1409.1556 (scaled down).

    Example:
        >>> m = vgg_small()
    """
    _check_common(input_shape, num_classes)
    if width < 1:
        raise ValueError(f"width must be >= 1. Received: width={width}")
    b = _Builder(filters)
    inputs = keras.Input(input_shape, name="input")
    x = inputs
    for stage in range(3):
        c = width * 2 ** stage
        for j in range(2):
            p = f"s{stage + 1}c{j + 1}"
            x = b.conv_bn(x, (f"{p}_conv", f"{p}_bn", f"{p}_relu"), c)
        x = layers.MaxPooling2D(2, name=f"s{stage + 1}_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(b.width("fc1", 128), name="fc1")(x)
    x = layers.ReLU(name="fc1_relu")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name or "vgg_small")


_REGISTRY = {
    "resnet8": lambda **kw: resnet(depth=8, **kw),
    "resnet20": lambda **kw: resnet(depth=20, **kw),
    "resnet56": lambda **kw: resnet(depth=56, **kw),
    "mobilenet_v1": mobilenet_v1,
    "mobilenet_v2": mobilenet_v2,
    "vgg_small": vgg_small,
}


def get(name: str, **kwargs) -> keras.Model:
    """Builds a zoo model by name (``resnet20``, ``mobilenet_v2``, ...).

    Example:
        >>> m = tfcomp.zoo.get("resnet20", num_classes=10)
    """
    if name not in _REGISTRY:
        raise ValueError(
            f"Unknown zoo model {name!r}. Choose from {sorted(_REGISTRY)}.")
    return _REGISTRY[name](**kwargs)
