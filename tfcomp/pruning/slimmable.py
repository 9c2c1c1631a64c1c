"""Slimmable networks: one model trained at many widths, exported at any.

* :func:`to_slimmable` turns a functional / Sequential model into a
  :class:`SlimmableModel`: every channel group of the dependency graph
  whose layers are ``Conv1D/2D/3D`` (grouped too), ``Conv1D/2D/3D
  Transpose``, ``SeparableConv1D/2D``, ``DepthwiseConv2D``, ``Dense``,
  ``BatchNormalization`` and ``GroupNormalization`` (whole normalisation
  groups; all ``channels_last``) becomes switchable (coupled layers of
  residual adds, concatenations, depthwise and grouped convs switch
  together); the model input and the classifier outputs never shrink;
  every ``BatchNormalization`` becomes a
  :class:`~tfcomp.layers.slimmable.SwitchableBatchNormalization`. Groups
  touching any other layer (``LayerNormalization``, channels_first
  convs...) keep their full width (``model.skipped_groups`` gives each
  one's reason), as do the channels of layers the dependency graph treats
  as barriers (``MultiHeadAttention``); a model with no slimmable group
  raises a ValueError listing them.
* ``model.fit`` trains with the sandwich rule: per batch the max width
  (labels), the min width and ``num_random`` random widths (in-place
  distillation from the max width's detached soft output), all losses
  summed on one tape (the gradients of all widths accumulate) and one
  optimizer step. The reported ``loss`` is that sum.
* :func:`set_width` switches the deployed width (a float, or per-group kept
  channels for AutoSlim's architectures); :func:`recalibrate_widths`
  recomputes each width's BN statistics (cumulative average);
  :func:`export_width` gives the plain Keras model of one width (through
  ``prune_channels``), equal to the slimmable model at that width.

Inactive channels are zero-masked, not sliced (:mod:`tfcomp.layers.
slimmable`): static shapes; the masked model costs full-width MACs, the
exported one its width's. Deviations from the papers: the
sandwich widths of an S-Net with more than ``2 + num_random`` switches are
drawn among its switches; random widths come from a stateless generator
keyed by the optimizer step (same widths on every replica, reproducible on
resume). The S-Net paper trains every switch on labels; in-place
distillation (US-Nets) is the default here (``inplace_distillation=False``
gives the S-Net form). Measured on short schedules (ResNet-20 and
MobileNetV2-tiny, 8192 Fashion-MNIST images, 3 epochs;
``benchmarks/slimmable.py``), in-place
distillation lost to labels at every width, the max width included (a
likely cause, not measured: the max width's early outputs are poor
targets): use labels when training for a few epochs. Widths are
``floor(w * C)`` channels rounded up to the group's ``round_to`` step.

Reference: Yu et al., Slimmable Neural Networks, ICLR 2019,
arXiv:1812.08928.
Reference: Yu & Huang, Universally Slimmable Networks and Improved Training
Techniques, ICCV 2019, arXiv:1903.05134.

Example:
    >>> slim = tfcomp.pruning.to_slimmable(model, widths=(0.25, 0.5, 1.0))
    >>> slim.compile("adam", keras.losses.SparseCategoricalCrossentropy(
    ...     from_logits=True))
    >>> slim.fit(x, y, epochs=5)
    >>> recalibrate_widths(slim, x[:1024])
    >>> small = export_width(slim, 0.5)      # a plain keras.Model
"""

from __future__ import annotations

from collections import defaultdict

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tfcomp._batches import as_model_input, rows, sliced
from tfcomp._compile import carry_compile
from tfcomp._finetune import outputs_logits
from tfcomp._io import as_arrays, check_positive_int
from tfcomp.distill._kinds import (
    check_kind,
    is_sigmoid,
    read_output,
    single_output_kind,
    soft_loss,
)
from tfcomp.graph import DependencyGraph
from tfcomp.graph.copy import clone_model, copy_weights, functional_view, live_config
from tfcomp.graph.walk import iter_leaf_layers
from tfcomp.layers.slimmable import (
    SwitchableBatchNormalization,
    _check_width,
    active_count,
    check_widths,
    width_scope,
)
from tfcomp.layers.slimmable_groups import (
    SLIMMABLE_CLASSES,
    SLIMMABLE_TYPES,
    group_segments,
)
from tfcomp.pruning.batchnorm import recalibrate_batchnorm, statistics_mode
from tfcomp.pruning.slim_plain import full_width_plain
from tfcomp.pruning.targets import ignored_group_ids, unit_round_to

__all__ = ["DEFAULT_WIDTHS", "SlimmableModel", "check_widths",
           "export_width", "group_counts", "recalibrate_widths",
           "set_width", "to_slimmable"]

DEFAULT_WIDTHS = (0.25, 0.5, 0.75, 1.0)
_OPTIONS = ("widths", "universal", "inplace_distillation", "from_logits",
            "num_random", "seed", "shared_bn", "distill_kind")


@keras.saving.register_keras_serializable(package="tfcomp")
class SlimmableModel(keras.Model):
    """A functional model of slimmable layers trained with the sandwich rule.

    Built by :func:`to_slimmable`; saves and loads as ``.keras`` (after
    ``import tfcomp.pruning``), its options in the config under
    ``"slimmable"``.

    Attributes:
        widths: the width switches (sorted); for a universal model the
            widths whose BN statistics have their own slot (plus one free
            slot for any other width).
        universal: any width in ``[min(widths), max(widths)]``.
        inplace_distillation: widths below the max learn from the max
            width's detached soft output (else from the labels).
        from_logits: the output is logits; False for a softmax's or a
            sigmoid's probabilities.
        distill_kind: the output's kind for in-place distillation
            (``tfcomp.distill``'s kinds): "classification" (soft labels),
            "binary" (a logit or sigmoid per unit), "regression" (L2 to
            the max width's output).
        num_random: random widths per step besides max and min.
        seed: seed of the random widths.

    Example:
        >>> to_slimmable(model).widths
        (0.25, 0.5, 0.75, 1.0)
    """

    def __init__(self, inputs, outputs, name=None, **kwargs):
        opts = {k: kwargs.pop(k) for k in _OPTIONS if k in kwargs}
        super().__init__(inputs=inputs, outputs=outputs, name=name,
                         **kwargs)
        self._set_options(**opts)
        self._sandwich = False

    def _set_options(self, widths=DEFAULT_WIDTHS, universal=False,
                     inplace_distillation=True, from_logits=True,
                     num_random=2, seed=0, shared_bn=False,
                     distill_kind="classification"):
        self.widths = check_widths(widths)
        self.shared_bn = bool(shared_bn)
        self.universal = bool(universal)
        self.inplace_distillation = bool(inplace_distillation)
        self.from_logits = bool(from_logits)
        self.num_random = check_positive_int(num_random, "num_random", 0)
        self.seed = int(seed)
        self.distill_kind = check_kind(distill_kind, "distill_kind")

    @property
    def num_switches(self) -> int:
        """BN slots: one per width (+1 free slot when universal)."""
        if self.shared_bn:
            return 1
        return len(self.widths) + (1 if self.universal else 0)

    def switch_of(self, width: float) -> int:
        """The BN slot of ``width``.

        Raises:
            ValueError: an S-Net width it was not trained at, or a universal
                width outside ``[min, max]``.
        """
        w = _check_width(width)
        for i, v in enumerate(self.widths):
            if abs(v - w) < 1e-6:
                return 0 if self.shared_bn else i
        if not self.universal:
            raise ValueError(
                f"width {w} is not one this slimmable network was trained "
                f"at. Received: width={w}; trained widths: "
                f"{list(self.widths)} (use universal=True for any width).")
        if not self.widths[0] - 1e-6 <= w <= self.widths[-1] + 1e-6:
            raise ValueError(
                f"width must be in [{self.widths[0]}, {self.widths[-1]}] "
                f"for this universally slimmable network. Received: "
                f"width={w}")
        return 0 if self.shared_bn else len(self.widths)

    def get_config(self):
        config = super().get_config()
        config["slimmable"] = {
            "widths": list(self.widths), "universal": self.universal,
            "inplace_distillation": self.inplace_distillation,
            "from_logits": self.from_logits, "num_random": self.num_random,
            "seed": self.seed, "shared_bn": self.shared_bn,
            "distill_kind": self.distill_kind}
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        opts = config.pop("slimmable", {})
        model = super().from_config(config, custom_objects=custom_objects)
        model._set_options(**opts)
        return model

    # -- sandwich rule -------------------------------------------------------
    def train_step(self, data):
        top = self.widths[-1]
        self._sandwich = True
        try:
            with width_scope(top, switch=self.switch_of(top)):
                return super().train_step(data)
        finally:
            self._sandwich = False

    def _sampled_widths(self) -> list:
        """(width, BN slot) of every width of the step but the max."""
        if self.shared_bn:
            return [(w, 0) for w, _ in self._sampled_switches()]
        return self._sampled_switches()

    def _sampled_switches(self) -> list:
        ws, k = self.widths, len(self.widths)
        it = ops.cast(self.optimizer.iterations, "int32")
        seed = tf.stack([tf.constant(self.seed, "int32"), it])
        if self.universal:
            out = [(ws[0], 0)] if k > 1 else []
            for j in range(self.num_random):
                u = tf.random.stateless_uniform((), seed + [0, 7919 * (j + 1)])
                out.append((ws[0] + (ws[-1] - ws[0]) * u, k))
            return out
        if k <= 2 + self.num_random:
            return [(w, i) for i, w in reversed(list(enumerate(ws[:-1])))]
        out = []
        table = ops.convert_to_tensor(np.asarray(ws, "float32"))
        for j in range(self.num_random):
            idx = tf.random.stateless_uniform(
                (), seed + [0, 7919 * (j + 1)], minval=1, maxval=k - 1,
                dtype="int32")
            out.append((ops.take(table, idx), idx))
        return out + [(ws[0], 0)]

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                     training=True):
        loss = super().compute_loss(x, y, y_pred, sample_weight,
                                    training=training)
        if not (training and self._sandwich):
            return loss
        teacher, kind = None, self.distill_kind
        form = "logits" if self.from_logits else "probabilities"
        if self.inplace_distillation and not isinstance(y_pred, (list,
                                                                 tuple,
                                                                 dict)):
            teacher = ops.stop_gradient(read_output(kind, y_pred, form))
        for width, switch in self._sampled_widths():
            with width_scope(width, switch=switch):
                out = self(x, training=True)
            if teacher is not None:
                loss = loss + ops.mean(soft_loss(
                    kind, teacher, read_output(kind, out, form)))
            else:
                loss = loss + super().compute_loss(
                    x, y, out, sample_weight, training=training)
        return loss


# ---------------------------------------------------------------------------
# conversion


def _get(model, path):
    obj = model
    for part in path.split("/"):
        obj = obj.get_layer(part)
    return obj


def _slim_layer(layer, keys, switches, universal):
    if type(layer) is keras.layers.BatchNormalization:
        return SwitchableBatchNormalization(
            num_switches=switches, shared_affine=universal,
            momentum=layer.momentum, epsilon=layer.epsilon,
            center=layer.center, scale=layer.scale,
            segments=keys.get("segments", []), name=layer.name,
            dtype=layer.dtype_policy)
    cls = SLIMMABLE_CLASSES[type(layer)]
    cfg = live_config(layer)
    for port in cls._PORTS:
        cfg[port[0]] = keys.get(port[0], [])
    return cls.from_config(cfg)


def _bn_rows(k, universal):
    """``copy_weights`` transform: a BN's vectors as ``(k, C)`` rows (gamma
    and beta stay ``(C,)`` in a universal model)."""
    shared = ("gamma", "beta") if universal else ()

    def transform(old):
        if type(old) is not keras.layers.BatchNormalization:
            return None
        return {v.name: np.tile(keras.ops.convert_to_numpy(v)[None], (k, 1))
                for v in old.weights if v.name not in shared}

    return transform


def to_slimmable(model: keras.Model, widths=DEFAULT_WIDTHS,
                 universal: bool = False, *, round_to: int = 1,
                 ignored_layers=None, inplace_distillation: bool = True,
                 from_logits: bool | None = None, num_random: int = 2,
                 seed: int = 0, shared_bn: bool = False,
                 distill_kind: str = "auto") -> SlimmableModel:
    """A slimmable copy of ``model`` (weights copied, ``model`` untouched).

    Args:
        model: a functional or Sequential model the dependency graph reads.
        widths: width switches in (0, 1] (S-Net), or for ``universal`` the
            widths whose BN statistics get their own slot (any width in
            ``[min, max]`` runs).
        universal: universally slimmable (US-Nets): shared BN gamma / beta,
            random widths in the sandwich rule, any width at inference.
        round_to: kept channels of each group are multiples of it.
        ignored_layers: layers whose groups keep their full width.
        inplace_distillation: smaller widths learn from the max width.
        from_logits: whether the output is logits; None: False when the
            last layer ends in a softmax or a sigmoid, else True.
        num_random: random widths per step besides max and min (2).
        seed: seed of the random widths.
        shared_bn: one BN for every width (the paper's ablation: the
            smallest widths collapse); default private BN per switch.
        distill_kind: how smaller widths match the max width's output
            (in-place distillation): "auto" reads the compiled loss, else
            the activation and width (a one-unit logit or sigmoid is
            "binary", not a softmax over one unit, which learns nothing);
            or "classification", "binary", "regression".

    Returns:
        A :class:`SlimmableModel` at the max width, compiled like
        ``model`` when ``model`` is compiled.

    Raises:
        ValueError: widths outside (0, 1]; a model with nothing slimmable
            (the message names each group's blocking layer and why); a
            Sequential model without an input shape.
        TypeError: a subclassed model.

    Example:
        >>> slim = to_slimmable(tfcomp.zoo.resnet(depth=8))
        >>> set_width(slim, 0.5)
    """
    widths = check_widths(widths)
    round_to = check_positive_int(round_to, "round_to")
    if isinstance(model, SlimmableModel):
        raise ValueError(f"Model {model.name!r} is already slimmable.")
    view = functional_view(model, "to_slimmable")
    graph = DependencyGraph(view)
    ignored = ignored_group_ids(graph, ignored_layers)
    segs = defaultdict(lambda: defaultdict(list))
    skipped = {}
    for g in graph.prunable_groups:
        if g.id in ignored:
            continue
        found, why = group_segments(graph, g, unit_round_to(g, round_to))
        if why:
            skipped[g.id] = why
            continue
        for path, key, seg in found:
            segs[path][key].append(seg)
    if not segs:
        raise ValueError(
            f"Model {model.name!r} has nothing slimmable: no prunable channel "
            "group made of Conv1D/2D/3D, Conv*DTranspose, SeparableConv1D/2D"
            ", DepthwiseConv2D, Dense, BatchNormalization and "
            f"GroupNormalization layers. Skipped groups: {skipped or 'none'}"
            f"; barriers: {dict(list(graph.barriers.items())[:5])}.")
    k = 1 if shared_bn else len(widths) + (1 if universal else 0)
    path_of = {id(layer): p for p, layer in graph.layers.items()}

    def clone(layer):
        path = path_of.get(id(layer))
        if path is None:
            return None
        if type(layer) is keras.layers.BatchNormalization or path in segs:
            return _slim_layer(layer, segs.get(path, {}), k, universal)
        return None

    base = clone_model(view, clone_function=clone)
    copy_weights(view, base, transform=_bn_rows(k, universal))
    out = base.outputs[0]
    if from_logits is None:
        from_logits = outputs_logits(base) and not is_sigmoid(base, out)
    kind = "classification"  # several outputs: the labels teach (no KD)
    if len(base.outputs) == 1:
        try:
            kind = single_output_kind(base, distill_kind, model,
                                      "distill_kind")
        except ValueError:  # a softmax over one unit: only KD needs a kind
            if inplace_distillation or distill_kind != "auto":
                raise
    slim = SlimmableModel(base.input, base.output, name=model.name,
                          widths=widths, universal=universal,
                          inplace_distillation=inplace_distillation,
                          from_logits=from_logits, num_random=num_random,
                          seed=seed, shared_bn=shared_bn,
                          distill_kind=kind)
    slim.skipped_groups = skipped
    set_width(slim, widths[-1])
    return carry_compile(model, slim, what="the slimmable model")


# ---------------------------------------------------------------------------
# width switching


def _check_slim(model):
    if not isinstance(model, SlimmableModel):
        raise TypeError("model must be a SlimmableModel (from "
                        "tfcomp.pruning.to_slimmable). Received: "
                        f"{type(model).__name__}")


def _slim_layers(model):
    return [(p, layer) for p, layer in iter_leaf_layers(model)
            if isinstance(layer, SLIMMABLE_TYPES)]


def _groups(model) -> dict:
    """``{group id: (size, step)}`` of the model's slimmable groups."""
    out = {}
    for _, layer in _slim_layers(model):
        for seg_attr, _ in layer._PORTS:
            for s in getattr(layer, seg_attr) or []:
                out[s["group"]] = (s["size"], s["step"])
    return out


def group_counts(model: SlimmableModel, width) -> dict:
    """``{group id: kept channels}`` of a float width or a per-group dict
    (counts, or fractions in (0, 1]; missing groups stay whole).

    Example:
        >>> group_counts(slim, 0.5)["conv1"]
        8
    """
    _check_slim(model)
    groups = _groups(model)
    if not isinstance(width, dict):
        w = _check_width(width)
        return {g: active_count(w, s, t) for g, (s, t) in groups.items()}
    out = {g: s for g, (s, t) in groups.items()}
    for g, v in width.items():
        if g not in groups:
            raise ValueError(f"No slimmable group {g!r} in {model.name!r}. "
                             f"Groups: {sorted(groups)}")
        size, step = groups[g]
        if isinstance(v, (float, np.floating)):
            n = active_count(_check_width(v), size, step)
        elif isinstance(v, (int, np.integer)) and not isinstance(v, bool):
            n = int(v)
        else:
            raise TypeError(f"width[{g!r}] must be a channel count or a "
                            f"fraction. Received: width[{g!r}]={v!r}")
        if not 1 <= n <= size:
            raise ValueError(f"width[{g!r}] must keep 1..{size} channels. "
                             f"Received: width[{g!r}]={v!r}")
        out[g] = n
    return out


def set_width(model: SlimmableModel, width) -> None:
    """Switches the deployed width of a slimmable model.

    Args:
        model: a :class:`SlimmableModel`.
        width: a float (an S-Net's trained width; any width in
            ``[min, max]`` for a universal model) or ``{group id: kept
            channels or fraction}`` (AutoSlim's architectures; BN uses the
            free slot of a universal model, the max width's slot of an
            S-Net: recalibrate it with :func:`recalibrate_widths`).

    Raises:
        ValueError: a width outside (0, 1], a width an S-Net was not trained
            at, an unknown group.

    Example:
        >>> set_width(slim, 0.25); slim.predict(x)
    """
    _check_slim(model)
    if isinstance(width, dict):
        counts = group_counts(model, width)
        switch = model.num_switches - 1
    else:
        switch = model.switch_of(width)
        counts = group_counts(model, width)
    for _, layer in _slim_layers(model):
        layer.set_width(counts)
        if isinstance(layer, SwitchableBatchNormalization):
            layer.set_switch(switch)
    model.current_width = width


def recalibrate_widths(model: SlimmableModel, x, widths=None,
                       batch_size: int = 128, steps: int | None = None
                       ) -> list:
    """Recomputes each width's BN statistics: the cumulative average of the
    batch statistics over ``x`` (the official code's BN calibration).

    Args:
        model: a :class:`SlimmableModel`.
        x: inputs: an array, ``(x, y)``, batches, or a list of arrays
            for several inputs (``tfcomp._io.as_arrays``).
        widths: widths (floats or per-group dicts) to calibrate; default
            ``model.widths``.
        batch_size: images per forward pass.
        steps: at most this many batches per width.

    Returns:
        The widths calibrated. The model is left at the width it had.

    Example:
        >>> recalibrate_widths(slim, x_train[:2048])
    """
    _check_slim(model)
    batch_size = check_positive_int(batch_size, "batch_size")
    x, _ = as_arrays(x, model=model, name="x")
    widths = list(model.widths if widths is None else widths)
    previous = getattr(model, "current_width", model.widths[-1])
    bns = [layer for _, layer in _slim_layers(model)
           if isinstance(layer, SwitchableBatchNormalization)]
    starts = list(range(0, rows(x), batch_size))[:steps]
    momentum = [bn.momentum for bn in bns]
    try:
        for w in widths:
            set_width(model, w)
            with statistics_mode(model):  # BN in training mode, no dropout
                for i, a in enumerate(starts):
                    for bn in bns:
                        bn.momentum = i / (i + 1.0)
                    model(as_model_input(model, sliced(x, a, a + batch_size)),
                          training=True)
    finally:
        for bn, m in zip(bns, momentum):
            bn.momentum = m
        set_width(model, previous)
    return widths


# ---------------------------------------------------------------------------
# export


def export_width(model: SlimmableModel, width, calibration_data=None,
                 batch_size: int = 128) -> keras.Model:
    """The plain Keras model (no tfcomp layers) of one width.

    Built by :func:`tfcomp.pruning.prune_channels` from the full-width plain
    copy (the width's BN slot), so it equals the slimmable model at that
    width and has that width's MACs.

    Args:
        model: a :class:`SlimmableModel`.
        width: a float width or ``{group id: kept channels}``.
        calibration_data: optional inputs; when given, the exported model's
            BN statistics are recalibrated on them
            (:func:`tfcomp.pruning.recalibrate_batchnorm`): use it for
            per-group architectures.
        batch_size: batch size of that recalibration.

    Returns:
        A ``keras.Model``, compiled like ``model`` when it is.

    Example:
        >>> small = export_width(slim, 0.5)
        >>> tfcomp.export_tflite(small, "w050.tflite")
    """
    from tfcomp.pruning.plan import Plan
    from tfcomp.pruning.surgery import prune_channels

    _check_slim(model)
    previous = getattr(model, "current_width", model.widths[-1])
    try:
        set_width(model, width)
        counts = group_counts(model, width)
        plain = full_width_plain(model)
    finally:
        set_width(model, previous)
    graph = DependencyGraph(plain)
    sizes = _groups(model)
    keep = {g: np.arange(n) for g, n in counts.items() if n < sizes[g][0]}
    small = prune_channels(plain, Plan.from_keep(graph, keep), graph) \
        if keep else plain
    if calibration_data is not None:
        x, _ = as_arrays(calibration_data, model=small)
        recalibrate_batchnorm(small, x, batch_size=batch_size)
    return carry_compile(model, small, what="the exported width")
