"""MetaPruning's PruningNet: a weight-generating supernet over channel widths.

``PruningNet(model)`` reads the model's prunable channel groups
(:class:`tfcomp.graph.DependencyGraph`). Every convolution (Conv1D / 2D /
3D, grouped, transposed, depthwise; SeparableConv's depthwise and pointwise
kernels) and Dense kernel gets a generator: ``FC(encoding -> 32) -> ReLU ->
FC(-> the flattened kernel)``, where the encoding is the layer's (input,
output) channel scale; the generated kernel is cropped to the sampled
widths (the first ``k`` channels of each group), on the axes the layer's
channel handler names (``graph.layer_ports``), so a transposed kernel
``(..., out, in)`` or a grouped one ``(..., in / groups, out)`` is cropped
like ``prune_channels`` slices it. BatchNormalization layers become
non-affine and use the batch statistics (each width has its own
statistics, recomputed when a width is sampled). Each training batch draws
a random width per group from ``scales`` (the paper's 31 scales 0.1, 0.13,
..., 1.0), so ``model.fit`` trains all widths at once.
``pruningnet.sample(widths)`` returns a plain Keras model at those widths
(``tfcomp.pruning.surgery.prune_channels`` of the original architecture)
with the generated weights, BatchNorm statistics recomputed on ``x``.
Nested functional models and ``keras.ops`` / ``Lambda`` calls run as in
the model (each call with its own arguments). A model with several inputs
takes them as a functional model does: a list (``model.inputs`` order) or
a dict keyed by the input names (``net.input_names``).

Deviations (CPU scale, stated): cropping is done by zeroing the channels
beyond the width (the same outputs as slicing, fixed tensor shapes for
``tf.function``); the generators' last bias starts at the model's trained
kernels (``init_from_model=True``; the paper trains the PruningNet from
scratch: pass False); biases of convolutions / dense layers are shared
parameters cropped like the kernels (not generated). Layers the paper has
no generator for (its networks have only convolutions, BatchNorm and FC):
Embedding, LayerNormalization, GroupNormalization, MultiHeadAttention /
EinsumDense and any other layer with weights are *not generated*: their
weights are ordinary trainable weights of the PruningNet, initialised from
the model, used as they are where their channels are in no sampled group
(the graph's barriers: a LayerNormalization over the channels, an
attention block) and cropped like ``prune_channels`` crops them where they
are (GroupNormalization's gamma / beta). A group one of whose weights
cannot be cropped consistently (a handler naming a weight the layer lacks)
is kept at full width, with the reason in ``net.excluded``. A strided 1x1
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

from tfcomp.graph import DependencyGraph, iter_leaf_layers
from tfcomp.graph.copy import refresh_state
from tfcomp.pruning.batchnorm import recalibrate_batchnorm
from tfcomp.pruning.metapruning_weights import (
    channel_units,
    crop_value,
    make_generator,
    weight_specs,
)
from tfcomp.pruning.plan import Plan
from tfcomp.pruning.surgery import rebuild_pruned
from tfcomp.quantization._graph import read_graph

__all__ = ["PAPER_SCALES", "PruningNet", "kept_count"]

PAPER_SCALES = tuple(round(0.1 + 0.03 * i, 2) for i in range(31))


def kept_count(scale: float, size: int) -> int:
    """Channels a group of ``size`` keeps at ``scale`` (at least 1)."""
    return max(1, int(math.ceil(scale * size - 1e-9)))


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
            and max(layer.strides) > 1 and int(layer.groups) == 1
            and layer.data_format == "channels_last")


class _Values(dict):
    """``{tensor id: tensor}`` that follows nested-model aliases."""

    def __init__(self, parsed):
        super().__init__()
        self.parsed = parsed

    def __missing__(self, tid):
        real = self.parsed.resolve(tid)
        if real == tid:
            raise KeyError(tid)
        return self[real]


class _Ref:
    """Holds an object out of Keras' layer tracking."""

    def __init__(self, obj):
        self.obj = obj


class PruningNet(keras.Model):
    """The MetaPruning supernet of a functional model (see module doc).

    Args:
        model: a built functional or Sequential model (nested models,
            ``keras.ops`` calls and any layer with a channel handler).
        scales: width scales drawn per group (paper: 0.1..1.0 step 0.03).
        hidden: generator hidden units (paper: 32).
        init_from_model: start the generators at ``model``'s kernels.
        seed: seeds the random widths.

    Attributes:
        sizes: ``{group id: channels}`` of the searched groups.
        excluded: ``{group id: reason}`` of prunable groups kept whole.

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
        parsed = self.graph.parsed
        self._nodes = [n for n in parsed.nodes if not n.is_input]
        self._calls = _Ref({n.key: n for n in read_graph(
            model, "PruningNet").nodes})
        self._specs, problems = {}, {}
        for n in self._nodes:
            layer = n.layer
            if n.path in self._specs or isinstance(
                    layer, keras.layers.BatchNormalization) or not getattr(
                    layer, "weights", None):
                continue
            self._specs[n.path], bad = weight_specs(self.graph, n.path, layer)
            problems.update(bad)
        self.excluded = self._exclusions(problems)
        self.groups = [g for g in self.graph.prunable_groups
                       if g.id not in self.excluded]
        self.sizes = {g.id: g.size for g in self.groups}
        if not self.groups:
            raise ValueError(
                f"PruningNet: model {model.name!r} has no prunable channel "
                "group to search (the dependency graph prunes none, or each "
                f"touches a weight no generator covers). Excluded: "
                f"{self.excluded or 'none'}; barriers: "
                f"{dict(list(self.graph.barriers.items())[:5])}.")
        tids = [t for n in parsed.nodes for t in n.outputs
                if self.graph.has_tensor(t)] + list(parsed.inputs)
        ports = [a[1] for specs in self._specs.values() for s in specs
                 for a in s.axes]
        self._units = channel_units(self.graph, self.groups, tids, ports)
        self._gens, self._gen_layers, self._owned = {}, [], {}
        for path, specs in self._specs.items():
            for spec in specs:
                if spec.generated:
                    fc1, fc2, shape = make_generator(
                        path, spec, self.hidden, self.init_from_model)
                    self._gen_layers += [fc1, fc2]
                    self._gens.setdefault(path, {})[spec.name] = (fc1, fc2,
                                                                  shape)
                else:
                    self._owned[(path, spec.index)] = self._copy(path, spec)
        self._sizes_t = np.array([g.size for g in self.groups] + [1 << 30],
                                 "float32")
        self._fixed = None
        self._seed_gen = keras.random.SeedGenerator(self.seed)
        self.built = True

    def _exclusions(self, problems: dict) -> dict:
        """``{group id: reason}`` of the groups touching a port whose
        weights cannot be cropped."""
        out = {}
        whole = self.graph.channel_keep({})
        for port, reason in problems.items():
            for g in self.graph.prunable_groups:
                gone = self.graph.channel_keep({g.id: np.arange(g.size)})
                if (whole.port(port) & ~gone.port(port)).any():
                    out.setdefault(g.id, reason)
        return out

    def _copy(self, path, spec):
        """A weight of the net holding ``spec``'s variable (from the
        model)."""
        v = spec.variable
        w = self.add_weight(
            name=f"{path}_{spec.name}".replace("/", "_"),
            shape=tuple(v.shape), dtype=v.dtype, initializer="zeros",
            trainable=bool(v.trainable))
        w.assign(keras.ops.convert_to_numpy(v))
        return w

    # -- inputs ----------------------------------------------------------
    @property
    def input_names(self) -> list:
        """The model's input names, in ``model.inputs`` order (the keys of
        a dict of inputs).

        Example:
            >>> PruningNet(model).input_names
            ['image', 'meta']
        """
        parsed = self.graph.parsed
        by_tid = {n.outputs[0]: n.path for n in parsed.nodes
                  if n.is_input and n.outputs}
        return [by_tid.get(t, t) for t in parsed.inputs]

    def _bind(self, inputs, name: str = "inputs") -> list:
        """One value per model input (``model.inputs`` order) from what a
        functional model takes: a tensor (one input), a list / tuple, or a
        dict keyed by the input names (or by the keys of the model's dict
        of inputs)."""
        names = self.input_names
        n = len(names)
        if isinstance(inputs, dict):
            if all(k in inputs for k in names):
                return [inputs[k] for k in names]
            try:
                struct = self._base.obj.input
            except (AttributeError, ValueError):
                struct = None
            if isinstance(struct, dict) and all(k in inputs for k in struct):
                return keras.tree.flatten({k: inputs[k] for k in struct})
            got = f"a dict with keys {sorted(map(str, inputs))}"
        elif isinstance(inputs, (list, tuple)):
            if len(inputs) == n:
                return list(inputs)
            got = f"a {type(inputs).__name__} of {len(inputs)}"
        elif n == 1:
            return [inputs]
        else:
            got = f"a {type(inputs).__name__} of shape " \
                  f"{tuple(getattr(inputs, 'shape', ()))}"
        raise ValueError(
            f"{name}: model {self._base.obj.name!r} has {n} input(s) "
            f"{names}; give a list of {n} tensors (model.inputs order) or a "
            f"dict keyed by those names. Received: {name}={got}")

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
        tid = self.graph.parsed.resolve(tid)
        if tid not in self._units:
            return ops.ones(())
        gidx = self._units[tid][0]
        g = int(gidx.max()) if gidx.size and gidx.max() >= 0 else -1
        if g < 0:
            return ops.ones(())
        return counts[g] / self._sizes_t[g]

    def generated_kernel(self, path, in_tid, out_tid, counts,
                         name: str = "kernel"):
        """The variable ``name`` (default the kernel) of layer ``path``
        generated from the channel scales of tensors ``in_tid`` /
        ``out_tid`` at the given counts, cropped by zeroing the channels
        beyond each width."""
        fc1, fc2, shape = self._gens[path][name]
        code = ops.reshape(ops.stack([self._scale(in_tid, counts),
                                      self._scale(out_tid, counts)]), (1, 2))
        spec = next(s for s in self._specs[path] if s.name == name)
        return self._crop(spec, ops.reshape(fc2(fc1(code)), shape), counts)

    def _crop(self, spec, value, counts):
        """``value`` with the positions beyond the widths set to their
        fill (0; 1 for a variance) on every channel axis of ``spec``."""
        for axis, port, fill in spec.axes:
            shape = [1] * len(value.shape)
            shape[axis] = -1
            m = ops.reshape(self._mask(port.key, counts), shape)
            value = value * m + fill * (1.0 - m) if fill else value * m
        return value

    def _weights(self, node, counts) -> list:
        """``[(layer variable, value at the counts)]`` of a layer with
        weights."""
        out = []
        for spec in self._specs[node.path]:
            if spec.generated:
                v = self.generated_kernel(node.path, node.inputs[0],
                                          node.outputs[0], counts, spec.name)
            else:
                v = self._crop(spec, self._owned[(node.path, spec.index)],
                               counts)
            out.append((spec.variable, ops.cast(v, spec.variable.dtype)))
        return out

    def call(self, inputs, training=None):
        counts = (ops.convert_to_tensor(self._fixed) if self._fixed
                  is not None else self._random_counts())
        parsed = self.graph.parsed
        values = _Values(parsed)
        for tid, value in zip(parsed.inputs, self._bind(inputs)):
            values[parsed.resolve(tid)] = value
        for n in self._nodes:
            layer = n.layer
            if isinstance(layer, keras.layers.BatchNormalization):
                x = values[n.inputs[0]]
                mean, var = ops.moments(x, axes=list(range(len(x.shape) - 1)))
                y = (x - mean) / ops.sqrt(var + layer.epsilon)
            elif n.path in self._specs:
                weights = self._weights(n, counts)
                if _pointwise_strided(layer):
                    y = self._pointwise(layer, values[n.inputs[0]],
                                        dict((id(v), w) for v, w in weights))
                else:
                    with keras.StatelessScope(state_mapping=weights):
                        y = self._calls.obj[n.key].call(layer, values)
            else:
                y = self._calls.obj[n.key].call(layer, values)
            for tid, out in zip(n.outputs, keras.tree.flatten(y)):
                values[parsed.resolve(tid)] = out
        return values[parsed.outputs[0]]

    @staticmethod
    def _pointwise(layer, x, weights):
        """A strided 1x1 Conv2D as a subsample and a stride-1 convolution:
        the same outputs (a 1x1 kernel pads nothing), and avoids oneDNN's
        1x1 strided backward-weights kernel (see ``_pointwise_strided``)."""
        sh, sw = tuple(layer.strides)
        y = ops.conv(x[:, ::sh, ::sw, :], weights[id(layer.kernel)],
                     padding=layer.padding, dilation_rate=layer.dilation_rate)
        if layer.use_bias:
            y = y + weights[id(layer.bias)]
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
                mean 0, variance 1), in any form ``model.fit`` takes (for
                several inputs a list of arrays in ``model.inputs`` order,
                ``([x1, x2], y)``, a dict by input name, a ``tf.data``).
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
        leaves = dict(iter_leaf_layers(small))
        done = set()
        for n in self._nodes:
            layer = leaves.get(n.path)  # None for keras.ops calls
            if n.path in done or layer is None:
                continue
            done.add(n.path)
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.set_weights([np.ones(v.shape, "float32") if
                                   v.name in ("gamma", "moving_variance")
                                   else np.zeros(v.shape, "float32")
                                   for v in layer.weights])
            elif n.path in self._specs:
                arrays = [keras.ops.convert_to_numpy(v)
                          for v in layer.weights]
                specs = self._specs[n.path]
                for spec, (_, w) in zip(specs, self._weights(n, counts)):
                    arrays[spec.index] = crop_value(
                        keras.ops.convert_to_numpy(w), spec, keep)
                layer.set_weights(arrays)
                refresh_state(layer)
        if x is not None:  # any form model.fit takes (as_arrays)
            recalibrate_batchnorm(small, x, batch_size=batch_size,
                                  steps=steps)
        return small
