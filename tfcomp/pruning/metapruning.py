"""MetaPruning's PruningNet: a weight-generating supernet over channel widths.

``PruningNet(model)`` reads the model's prunable channel groups
(:class:`tfcomp.graph.DependencyGraph`). Every Conv2D / DepthwiseConv2D /
Dense layer gets a generator: ``FC(encoding -> 32) -> ReLU -> FC(-> the
full kernel)``, where the encoding is the layer's (input, output) channel
scale; the generated kernel is cropped to the sampled widths (the first
``k`` channels of each group). BatchNormalization layers become
non-affine and use the batch statistics (each width has its own
statistics, recomputed when a width is sampled). Each training batch draws
a random width per group from ``scales`` (the paper's 31 scales 0.1, 0.13,
..., 1.0), so ``model.fit`` trains all widths at once.
``pruningnet.sample(widths)`` returns a plain Keras model at those widths
(``tfcomp.pruning.surgery.prune_channels`` of the original architecture)
with the generated weights, BatchNorm statistics recomputed on ``x``.

Deviations (CPU scale, stated): cropping is done by zeroing the channels
beyond the width (the same outputs as slicing, fixed tensor shapes for
``tf.function``); the generators' last bias starts at the model's trained
kernels (``init_from_model=True``; the paper trains the PruningNet from
scratch: pass False); biases of convolutions / dense layers are shared
parameters cropped like the kernels (not generated). A strided 1x1
convolution runs as a subsample and a stride-1 convolution (the same
outputs; avoids a oneDNN crash in its kernel gradient).

Reference: Liu et al., MetaPruning: Meta Learning for Automatic Neural
Network Channel Pruning, ICCV 2019, arXiv:1903.10258.

Example:
    >>> net = PruningNet(tfcomp.zoo.resnet(depth=20))
    >>> net.compile("adam", keras.losses.SparseCategoricalCrossentropy(
    ...     from_logits=True))
    >>> net.fit(x, y, epochs=10)
    >>> small = net.sample({g: n // 2 for g, n in net.sizes.items()}, x[:512])
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from tfcomp.graph import DependencyGraph
from tfcomp.pruning.batchnorm import recalibrate_batchnorm
from tfcomp.pruning.plan import Plan
from tfcomp.pruning.surgery import rebuild_pruned

__all__ = ["PAPER_SCALES", "PruningNet", "kept_count"]

PAPER_SCALES = tuple(round(0.1 + 0.03 * i, 2) for i in range(31))
_GENERATED = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D,
              keras.layers.Dense)


def kept_count(scale: float, size: int) -> int:
    """Channels a group of ``size`` keeps at ``scale`` (at least 1)."""
    return max(1, int(math.ceil(scale * size - 1e-9)))


def _channel_units(graph, groups, tids):
    """``{tid: (group index or -1, unit)}`` per channel, through
    ``graph.channel_keep`` (removing a group's units with bit b set)."""
    out = {}
    for t in tids:
        c = graph.tensor_channels(t)
        out[t] = (np.full(c, -1, np.int32), np.zeros(c, np.int32))
    for gi, g in enumerate(groups):
        keep = graph.channel_keep({g.id: np.arange(g.size)})
        member = {t: ~keep.tensor(t) for t in tids}
        for t in tids:
            out[t][0][member[t]] = gi
        for b in range(max(1, int(g.size - 1).bit_length())):
            units = np.flatnonzero((np.arange(g.size) >> b) & 1)
            keep = graph.channel_keep({g.id: units})
            for t in tids:
                hit = member[t] & ~keep.tensor(t)
                out[t][1][hit] += 1 << b
    return out


def _pointwise_strided(layer) -> bool:
    """A channels-last 1x1 Conv2D with a stride > 1.

    PruningNet runs it as a subsample then a stride-1 convolution: the
    same outputs for "same" and "valid" padding (a 1x1 kernel pads
    nothing), and TensorFlow's oneDNN kernel for the kernel gradient of a
    strided 1x1 convolution with fewer than 16 input channels corrupts the
    heap on some batch sizes (odd ones: a crash inside ``fit``; oneDNN
    issue uxlfoundation/oneDNN#6035, seen with TF 2.21 on AVX-512).
    """
    return (isinstance(layer, keras.layers.Conv2D)
            and tuple(layer.kernel_size) == (1, 1)
            and max(layer.strides) > 1
            and layer.data_format == "channels_last")


class _Ref:
    """Holds an object out of Keras' layer tracking."""

    def __init__(self, obj):
        self.obj = obj


class PruningNet(keras.Model):
    """The MetaPruning supernet of a functional model (see module doc).

    Args:
        model: a built functional model of Conv2D / DepthwiseConv2D /
            Dense / BatchNormalization and weightless layers.
        scales: width scales drawn per group (paper: 0.1..1.0 step 0.03).
        hidden: generator hidden units (paper: 32).
        init_from_model: start the generators at ``model``'s kernels.
        seed: seeds the random widths.

    Attributes:
        sizes: ``{group id: channels}`` of the prunable groups.

    Example:
        >>> net = PruningNet(tfcomp.zoo.resnet(depth=8))
        >>> net.set_widths({g: 4 for g in net.sizes})  # fixed widths
    """

    def __init__(self, model, scales=PAPER_SCALES, hidden: int = 32,
                 init_from_model: bool = True, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(model, keras.Model):
            raise TypeError("model must be a keras.Model. Received: "
                            f"{type(model).__name__}")
        scales = [float(s) for s in scales]
        if not scales or min(scales) <= 0 or max(scales) > 1:
            raise ValueError("scales must be in (0, 1]. Received: "
                             f"scales={scales}")
        self._base = _Ref(model)  # its weights are not the net's
        self.scales = scales
        self.hidden = int(hidden)
        self.init_from_model = bool(init_from_model)
        self.seed = int(seed)
        self.graph = DependencyGraph(model)
        self.groups = self.graph.prunable_groups
        self.sizes = {g.id: g.size for g in self.groups}
        parsed = self.graph.parsed
        self._nodes = [n for n in parsed.nodes if not n.is_input]
        tids = [t for n in parsed.nodes for t in n.outputs
                if self.graph.has_tensor(t)] + list(parsed.inputs)
        self._units = _channel_units(self.graph, self.groups, tids)
        self._gens, self._gen_layers = {}, []
        for n in self._nodes:
            layer = n.layer
            if isinstance(layer, _GENERATED):
                self._gens[n.path] = self._generator(n.path, layer)
            elif layer.weights and not isinstance(
                    layer, keras.layers.BatchNormalization):
                raise ValueError(
                    f"PruningNet: layer {n.path!r} ({type(layer).__name__})"
                    " has weights but no generator (supported: Conv2D, "
                    "DepthwiseConv2D, Dense, BatchNormalization).")
        self._sizes_t = np.array([g.size for g in self.groups] + [1 << 30],
                                 "float32")
        self._fixed = None
        self._seed_gen = keras.random.SeedGenerator(self.seed)
        self.built = True

    def _generator(self, path, layer):
        kernel = layer.kernel  # DepthwiseConv2D too, in Keras 3
        shape = tuple(int(d) for d in kernel.shape)
        size = int(np.prod(shape))
        init = keras.ops.convert_to_numpy(kernel).ravel() \
            if self.init_from_model else np.zeros(size, "float32")
        std = float(np.std(init)) or math.sqrt(2.0 / max(1, size // shape[-1]))
        fc1 = keras.layers.Dense(self.hidden, activation="relu",
                                 name=f"gen_{path}_fc1".replace("/", "_"))
        fc2 = keras.layers.Dense(
            size, name=f"gen_{path}_fc2".replace("/", "_"),
            kernel_initializer=keras.initializers.RandomNormal(
                0.0, std / math.sqrt(self.hidden)
                * (0.01 if self.init_from_model else 1.0)),
            bias_initializer=keras.initializers.Constant(init))
        fc1.build((None, 2))
        fc2.build((None, self.hidden))
        self._gen_layers += [fc1, fc2]
        bias = None
        if getattr(layer, "use_bias", False):
            bias = self.add_weight(
                name=f"bias_{path}".replace("/", "_"),
                shape=tuple(layer.bias.shape),
                initializer=keras.initializers.Constant(
                    keras.ops.convert_to_numpy(layer.bias)))
        return fc1, fc2, shape, bias

    # -- widths ----------------------------------------------------------
    def set_widths(self, widths: dict | None) -> None:
        """Fix the widths (``{group id: kept channels}``) of later calls;
        None: random widths again."""
        self._fixed = None if widths is None else self._counts(widths)

    def _counts(self, widths: dict) -> np.ndarray:
        unknown = sorted(set(widths) - set(self.sizes))
        if unknown:
            raise ValueError(f"widths names unknown groups {unknown[:5]}; "
                             f"groups: {list(self.sizes)[:8]}...")
        out = []
        for g in self.groups:
            k = int(widths.get(g.id, g.size))
            if not 1 <= k <= g.size:
                raise ValueError(f"widths[{g.id!r}] must be in [1, {g.size}]"
                                 f". Received: {k}")
            out.append(k)
        return np.array(out + [1 << 30], "float32")

    def _random_counts(self):
        n = len(self.groups)
        idx = keras.random.randint((n,), 0, len(self.scales),
                                   seed=self._seed_gen)
        scale = ops.take(ops.convert_to_tensor(self.scales, "float32"), idx)
        counts = ops.maximum(1.0, ops.ceil(scale * self._sizes_t[:n] - 1e-6))
        return ops.concatenate([counts, self._sizes_t[n:]])

    # -- forward ---------------------------------------------------------
    def _mask(self, tid, counts):
        gidx, unit = self._units[tid]
        gidx = np.where(gidx < 0, len(self.groups), gidx)
        return ops.cast(ops.less(unit.astype("float32"),
                                 ops.take(counts, gidx)), "float32")

    def _scale(self, tid, counts):
        gidx = self._units[tid][0]
        g = int(gidx.max()) if gidx.size and gidx.max() >= 0 else -1
        if g < 0:
            return ops.ones(())
        return counts[g] / self._sizes_t[g]

    def generated_kernel(self, path, in_tid, out_tid, counts):
        """The kernel of layer ``path`` at the given counts (cropped by
        zeroing the channels beyond each width)."""
        fc1, fc2, shape, _ = self._gens[path]
        code = ops.reshape(ops.stack([self._scale(in_tid, counts),
                                      self._scale(out_tid, counts)]), (1, 2))
        w = ops.reshape(fc2(fc1(code)), shape)
        m_in, m_out = self._mask(in_tid, counts), self._mask(out_tid, counts)
        if len(shape) == 4 and shape[-1] == 1 and shape[-2] == m_in.shape[0] \
                and isinstance(self.graph.layer(path),
                               keras.layers.DepthwiseConv2D):
            return w * ops.reshape(m_in, (1, 1, -1, 1))
        lead = (1,) * (len(shape) - 2)
        return w * ops.reshape(m_in, lead + (-1, 1)) * ops.reshape(
            m_out, lead + (1, -1))

    def call(self, inputs, training=None):
        counts = (ops.convert_to_tensor(self._fixed) if self._fixed
                  is not None else self._random_counts())
        parsed = self.graph.parsed
        values = {parsed.inputs[0]: inputs}
        for n in self._nodes:
            args = [values[parsed.resolve(t)] for t in n.inputs]
            out_tid = n.outputs[0]
            layer = n.layer
            if n.path in self._gens:
                y = self._apply(n, layer, args[0], counts)
            elif isinstance(layer, keras.layers.BatchNormalization):
                mean, var = ops.moments(args[0], axes=list(range(
                    len(args[0].shape) - 1)))
                y = (args[0] - mean) / ops.sqrt(var + layer.epsilon)
            else:
                y = layer(args if len(args) > 1 else args[0])
            values[parsed.resolve(out_tid)] = y
        return values[parsed.resolve(parsed.outputs[0])]

    def _apply(self, node, layer, x, counts):
        in_tid, out_tid = node.inputs[0], node.outputs[0]
        w = self.generated_kernel(node.path, in_tid, out_tid, counts)
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            y = ops.depthwise_conv(x, w, strides=layer.strides,
                                   padding=layer.padding,
                                   dilation_rate=layer.dilation_rate)
        elif isinstance(layer, keras.layers.Conv2D):
            strides = tuple(layer.strides)
            if _pointwise_strided(layer):
                # the same outputs (a 1x1 kernel pads nothing), and avoids
                # oneDNN's 1x1 strided backward-weights kernel (see
                # _pointwise_strided)
                x = x[:, ::strides[0], ::strides[1], :]
                strides = (1, 1)
            y = ops.conv(x, w, strides=strides, padding=layer.padding,
                         dilation_rate=layer.dilation_rate)
        else:
            y = ops.matmul(x, w)
        bias = self._gens[node.path][3]
        if bias is not None:
            y = y + bias * self._mask(out_tid, counts)
        return layer.activation(y)

    # -- sampling --------------------------------------------------------
    def plan(self, widths: dict) -> Plan:
        """The :class:`~tfcomp.pruning.Plan` keeping the first
        ``widths[g]`` channels of each group."""
        counts = self._counts(widths)
        removed = {g.id: np.arange(int(counts[i]), g.size)
                   for i, g in enumerate(self.groups)}
        return Plan.from_removed(self.graph, removed,
                                 meta={"source": "tfcomp MetaPruning"})

    def sample(self, widths: dict, x=None, batch_size: int = 128,
               steps: int | None = 8) -> keras.Model:
        """A plain, uncompiled Keras model at ``widths`` with the generated
        weights.

        Args:
            widths: ``{group id: kept channels}`` (missing groups: whole).
            x: inputs to recompute the BatchNorm statistics on (None:
                mean 0, variance 1).
            batch_size, steps: for the recomputation.

        Example:
            >>> small = net.sample({"stem_conv": 8}, x_train[:1024])
        """
        counts = ops.convert_to_tensor(self._counts(widths))
        plan = self.plan(widths)
        # every weight is generated below: no compile state carried (per
        # candidate it built an optimizer and warned about its slots)
        small = rebuild_pruned(self._base.obj, plan, graph=self.graph)
        keep = self.graph.channel_keep(plan.resolve(self.graph))
        for n in self._nodes:
            layer = small.get_layer(n.path)
            if n.path in self._gens:
                w = keras.ops.convert_to_numpy(self.generated_kernel(
                    n.path, n.inputs[0], n.outputs[0], counts))
                ki = keep.tensor(n.inputs[0])
                ko = keep.tensor(n.outputs[0])
                dw = isinstance(layer, keras.layers.DepthwiseConv2D)
                w = np.compress(ki, w, axis=-2)
                if not dw:
                    w = np.compress(ko, w, axis=-1)
                arrays = [w]
                bias = self._gens[n.path][3]
                if bias is not None:
                    arrays.append(np.compress(
                        ko, keras.ops.convert_to_numpy(bias)))
                layer.set_weights(arrays)
            elif isinstance(layer, keras.layers.BatchNormalization):
                layer.set_weights([np.ones(v.shape, "float32") if
                                   v.name in ("gamma", "moving_variance")
                                   else np.zeros(v.shape, "float32")
                                   for v in layer.weights])
        if x is not None:
            recalibrate_batchnorm(small, x, batch_size=batch_size,
                                  steps=steps)
        return small
