"""Wrapping models into masked layers, and ``strip_pruning``: back to
plain Keras.

``apply_magnitude_pruning`` / ``apply_fpgm`` return a clone of a model in
which every supported layer is replaced by its masked twin from
:mod:`tfcomp.layers.masked` (same name, same config, same weights, masks
all ones). ``strip_pruning`` does the reverse for deployment: magnitude
masks become zeros in ordinary layers, FPGM channel masks become physically
removed channels (``tfcomp.pruning.prune_channels``).

Example:
    >>> model = tfcomp.pruning.apply_fpgm(tfcomp.zoo.resnet(depth=8))
    >>> model.compile("sgd", "sparse_categorical_crossentropy")
    >>> model.fit(x, y, epochs=3, callbacks=[tfcomp.pruning.FPGMPruning(0.5)])
    >>> small = tfcomp.pruning.strip_pruning(model)  # fewer channels
"""

from __future__ import annotations

import logging
import warnings

import keras
import numpy as np

from tfcomp._compile import carry_compile
from tfcomp.graph import (
    PASS_THROUGH,
    PRODUCER,
    DependencyGraph,
    check_built_model,
)
from tfcomp.graph.copy import clone_model, copy_weights, live_config
from tfcomp.graph.handlers_recurrent import recurrent_cells
from tfcomp.graph.registry import get_channel_handler
from tfcomp.graph.walk import iter_leaf_layers, leaf_layers
from tfcomp.layers.masked import MaskedLayer, masked_class_for, plain_class_of
from tfcomp.layers.masked_recurrent import (
    MaskedRecurrent,
    channel_mask_problem,
)
from tfcomp.pruning._time_distributed import (
    inner_twin,
    masked_of,
    masked_or_self,
    plain_time_distributed,
    twin_time_distributed,
)

__all__ = [
    "apply_fpgm",
    "apply_magnitude_pruning",
    "has_pruning_state",
    "masked_layers",
    "pruning_target",
    "strip_pruning",
]

logger = logging.getLogger("tfcomp.pruning")

_MASK_KEYS = ("weight_mask", "channel_mask")


def pruning_target(model):
    """The model a pruning callback works on: the ``student`` of a training
    wrapper that exposes one (``tfcomp.distill.Distiller``: ``fit`` hands
    the callbacks the wrapper, whose graph is Python code), else ``model``.

    Example:
        >>> kd = Distiller(apply_fpgm(model), teacher)
        >>> pruning_target(kd) is kd.student
        True
    """
    student = getattr(model, "student", None)
    return student if isinstance(student, keras.Model) else model


def masked_layers(model, kind: str | None = None) -> list:
    """Masked layers of a model (``kind``: None, "weight" or "channel").

    Example:
        >>> [l.name for l in masked_layers(model, "weight")]
    """
    out = []
    for layer in leaf_layers(model):
        layer = masked_of(layer)  # TimeDistributed(masked): the inner one
        if layer is None:
            continue
        if kind == "weight" and not layer.weight_mask:
            continue
        if kind == "channel" and not layer.channel_mask:
            continue
        out.append(layer)
    return out


def has_pruning_state(model) -> bool:
    """Whether the model holds any tfcomp masked layer.

    Example:
        >>> has_pruning_state(tfcomp.zoo.resnet(depth=8))
        False
    """
    return bool(masked_layers(model))


def _check_model(model, name="model"):
    if not isinstance(model, keras.Model):
        raise TypeError(f"{name} must be a keras.Model. Received: "
                        f"{type(model).__name__}")
    check_built_model(model, "tfcomp.pruning", name)


def _twin(layer):
    """The masked class that can take ``layer`` (None: no twin, or one
    that refuses this instance, e.g. a Bidirectional of a custom cell;
    a TimeDistributed: its inner layer's)."""
    if isinstance(layer, keras.layers.TimeDistributed):
        return inner_twin(layer)
    cls = masked_class_for(layer)
    check = getattr(cls, "unsupported", None)
    if check is not None and check(layer) is not None:
        return None
    return cls


def _has_kernel(layer) -> bool:
    """A trainable weight of rank >= 2 (a kernel or an embedding table;
    not PReLU's per-position alpha, which keeps zero channels zero)."""
    if getattr(get_channel_handler(layer), "zero_preserving", False):
        return False
    return any(len(v.shape) >= 2 for v in layer.trainable_weights)


def _refusal(layer) -> str | None:
    """Why the masked twin of ``layer``'s class refuses it (a quantized or
    LoRA Embedding, a Bidirectional of a custom cell), else None."""
    if isinstance(layer, keras.layers.TimeDistributed):
        layer = layer.layer
    check = getattr(masked_class_for(layer), "unsupported", None)
    return None if check is None else check(layer)


def needs_pass_through_mask(member, layer) -> bool:
    """True when ``member`` is a pass-through channel port of ``layer``
    whose per-channel weights would make a soft-pruned (zero) channel
    non-zero, so the layer needs a channel mask of its own (BatchNorm's
    beta). PReLU's alpha and LayerScale's gamma keep a zero channel zero
    (their handler's ``zero_preserving``): no mask needed.

    Example:
        >>> [m.layer for m in group.members if needs_pass_through_mask(
        ...     m, model.get_layer(m.layer))]
        ['bn1']
    """
    if member.role != PASS_THROUGH or member.port not in ("out", "channels") \
            or layer is None:
        return False
    held = {v.name for v in getattr(layer, "weights", [])}
    if not any(spec[0] in held for spec in member.weights):
        return False
    handler = get_channel_handler(layer)
    return not getattr(handler, "zero_preserving", False)


def _group_blockers(model, names) -> list:
    """``(path, layer)`` of plain layers with per-channel weights in a
    prunable channel group: the group cannot be masked without them."""
    try:
        graph = DependencyGraph(model)
    except (TypeError, ValueError) as exc:  # reported by FPGMPruning later
        logger.debug("apply_fpgm: no dependency graph: %s", exc)
        return []
    layers = dict(iter_leaf_layers(model))
    out = {}
    for g in graph.prunable_groups:
        for m in g.members:
            layer = layers.get(m.layer)
            if layer is None or masked_of(layer) is not None or \
                    _twin(layer) is not None or \
                    (names is not None and layer.name not in names):
                continue
            if m.role == PRODUCER or needs_pass_through_mask(m, layer):
                out[m.layer] = layer
    return list(out.items())


def _warn_unwrapped(model, skipped: list, what: str) -> None:
    """One warning naming the layers ``what`` leaves plain."""
    if not skipped:
        return
    def one(path, lyr):
        why = _refusal(lyr)
        return f"{path!r} ({type(lyr).__name__}{': ' + why if why else ''})"

    shown = ", ".join(one(p, lyr) for p, lyr in skipped[:12])
    more = f" and {len(skipped) - 12} more" if len(skipped) > 12 else ""
    msg = (f"{what}: {len(skipped)} layer(s) of model {model.name!r} with "
           f"prunable weights have no masked twin (or one that refuses "
           f"them) and stay plain and "
           f"unpruned: {shown}{more}. Their weights are copied unchanged, "
           "channel groups that need them are left whole, and a "
           "target_macs budget still counts their MACs.")
    logger.warning(msg)
    warnings.warn(msg, UserWarning, stacklevel=4)


def _warn_no_channel_mask(model, blocked: list, what: str) -> None:
    """One warning naming the recurrent layers left without channel mask."""
    if not blocked:
        return
    shown = "; ".join(reason for _, reason in blocked[:6])
    msg = (f"{what}: {len(blocked)} recurrent layer(s) of model "
           f"{model.name!r} get no channel mask and their units stay whole "
           f"(the dependency graph keeps them whole too): {shown}.")
    logger.warning(msg)
    warnings.warn(msg, UserWarning, stacklevel=4)


def _wrap(model, weight_mask: bool, channel_mask: bool, layers=None,
          what: str = "apply_fpgm"):
    _check_model(model)
    names = None if layers is None else set(layers)
    if names is not None:
        known = {lyr.name for lyr in leaf_layers(model)}
        missing = sorted(names - known)
        if missing:
            raise ValueError(f"layers {missing} are not in model "
                             f"{model.name!r}.")
    skipped = [(p, lyr) for p, lyr in iter_leaf_layers(model)
               if (names is None or lyr.name in names)
               and masked_of(lyr) is None
               and _twin(lyr) is None
               and (_has_kernel(lyr) or _refusal(lyr) is not None)]
    blocked = {}  # path -> why no channel mask (activation(0) != 0 ...)
    if channel_mask:
        known = {p for p, _ in skipped}
        skipped += [(p, lyr) for p, lyr in _group_blockers(model, names)
                    if p not in known]
        for p, lyr in iter_leaf_layers(model):
            why = channel_mask_problem(lyr) if (
                names is None or lyr.name in names) and (
                isinstance(lyr, MaskedLayer) or _twin(lyr)) else None
            if why is not None:
                blocked[p] = why

    def clone(layer):
        if not isinstance(layer, keras.layers.Layer) or (
                names is not None and layer.name not in names):
            return None
        if isinstance(layer, keras.layers.TimeDistributed):
            return twin_time_distributed(layer, one)
        return one(layer)

    def one(layer):
        cfg = live_config(layer)
        cm = channel_mask and channel_mask_problem(layer) is None
        if isinstance(layer, MaskedLayer):
            cfg["weight_mask"] = bool(cfg.get("weight_mask")) or (
                weight_mask and layer._has_kernel)
            cfg["channel_mask"] = bool(cfg.get("channel_mask")) or cm
            return layer.__class__.from_config(cfg)
        cls = _twin(layer)
        if cls is None:
            return None
        wm = weight_mask and cls._has_kernel
        if not (wm or cm):
            return None
        return cls.from_config({**cfg, "weight_mask": wm,
                                "channel_mask": cm})

    new = clone_model(model, clone)
    copy_weights(model, new)
    _warn_unwrapped(model, skipped, what)
    _warn_no_channel_mask(model, list(blocked.items()), what)
    return carry_compile(model, new, what=f"the {what} model")


_COPY_DOC = """
    The copy is made in memory (:mod:`tfcomp.graph.copy`): ``Lambda``
    layers keep their Python functions and ``keras.ops`` calls are kept,
    with Keras' ``safe_mode`` left on. Weights are copied per layer path and
    variable order. A compiled ``model`` gives a model compiled the same
    way (:func:`tfcomp._compile.carry_compile`: optimizer class and
    hyper-parameters with its ``iterations`` and slots, loss, metrics), so
    ``fit`` can follow without ``compile``; compile again to change them.
    Layers with a kernel but no masked twin (``MultiHeadAttention`` /
    ``EinsumDense``, subclasses of Keras layers) or one that refuses them
    (a LoRA or Keras-quantized ``Embedding``) stay plain with their weights
    unchanged, and one ``UserWarning`` lists them (with the reason).
"""


def apply_magnitude_pruning(model: keras.Model, layers=None) -> keras.Model:
    """A copy of ``model`` whose kernel layers (Conv1D/2D/3D, their
    transposes, DepthwiseConv1D/2D, SeparableConv1D/2D: both kernels,
    Dense; LSTM / GRU / SimpleRNN / ConvLSTM1D/2D/3D and Bidirectional of
    them: kernel and recurrent kernel; Embedding: its table; these inside
    ``TimeDistributed`` too) carry
    element-wise weight masks (all ones), ready for
    :class:`tfcomp.pruning.MagnitudePruning`.

    Call it before ``compile`` (and inside ``strategy.scope()`` when training
    with a ``tf.distribute`` strategy). Which wrapped layers are actually
    pruned, and how, is chosen by the callback (``ignored_layers``,
    ``pattern``).
    {copy}
    Args:
        model: a built functional or Sequential model.
        layers: optional layer names to wrap (default: all supported).

    Returns:
        The wrapped model (weights copied; the input model is untouched).

    Example:
        >>> model = apply_magnitude_pruning(model)
        >>> model.compile("adam", "sparse_categorical_crossentropy")
        >>> model.fit(x, y, callbacks=[MagnitudePruning(ConstantSparsity(.5))])
    """
    return _wrap(model, weight_mask=True, channel_mask=False, layers=layers,
                 what="apply_magnitude_pruning")


def apply_fpgm(model: keras.Model, layers=None) -> keras.Model:
    """A copy of ``model`` whose prunable layers (Conv1D/2D/3D, grouped
    convs included, their transposes, DepthwiseConv1D/2D, SeparableConv1D/2D
    (pointwise filters), Dense, BatchNormalization, GroupNormalization;
    LSTM / GRU / SimpleRNN / ConvLSTM1D/2D/3D and Bidirectional of them:
    hidden units (a ConvLSTM's filters);
    Embedding: columns of the table (``output_dim``); non-recurrent ones
    inside ``TimeDistributed`` too, which becomes
    ``TimeDistributed(MaskedConv2D)``...) carry per-channel output masks
    (all ones), ready for
    :class:`tfcomp.pruning.FPGMPruning`. A recurrent layer whose
    ``activation(0) != 0`` stays plain (a masked unit would not output 0;
    the dependency graph keeps its units whole too), with a warning.

    Normalisation (and depthwise) layers are masked too, so a pruned
    channel is exactly zero everywhere in its coupled group and removing it
    later does not change the outputs. PReLU and LayerScale need no mask
    (their weights keep a zero channel zero). A channel group that passes
    through another plain layer with per-channel weights (a layer without
    masked twin) is left whole by the callback (named in the warning), and
    its MACs stay in a ``target_macs`` budget.
    {copy}
    Args:
        model: a built functional or Sequential model.
        layers: optional layer names to wrap (default: all supported).

    Returns:
        The wrapped model (weights copied; the input model is untouched).

    Reference: He et al., Filter Pruning via Geometric Median, CVPR 2019,
    arXiv:1811.00250.

    Example:
        >>> model = apply_fpgm(tfcomp.zoo.resnet(depth=20))
    """
    return _wrap(model, weight_mask=False, channel_mask=True, layers=layers,
                 what="apply_fpgm")


apply_magnitude_pruning.__doc__ = apply_magnitude_pruning.__doc__.replace(
    "{copy}", _COPY_DOC)
apply_fpgm.__doc__ = apply_fpgm.__doc__.replace("{copy}", _COPY_DOC)


# ---------------------------------------------------------------------------
# strip_pruning


def _effective_arrays(layer) -> dict:
    """Plain-layer weights that reproduce the masked layer's outputs
    (recurrent layers: set afterwards by :func:`_unwrap`)."""
    out = {}
    if isinstance(layer, MaskedRecurrent):
        return out
    gate = None
    if layer.channel_mask:
        gate = keras.ops.convert_to_numpy(layer.channel_gate())
    for attr in layer._kernel_attrs():
        if layer._multiplier(attr) is not None:
            kernel = getattr(layer, attr)
            out[kernel.name] = keras.ops.convert_to_numpy(
                layer.effective_kernel(attr))
    if gate is not None:
        for var in layer.weights:
            if var.name in ("bias", "gamma", "beta", "moving_mean"):
                out[var.name] = keras.ops.convert_to_numpy(var) * gate
    return out


def _unwrap(model) -> keras.Model:
    """Plain clone with the masks folded into the weights."""

    def clone(layer):
        td = plain_time_distributed(layer, _MASK_KEYS)
        if td is not None:
            return td
        plain = plain_class_of(layer)
        if plain is None:
            return None
        cfg = live_config(layer)
        for key in _MASK_KEYS:
            cfg.pop(key, None)
        return plain.from_config(cfg)

    new = clone_model(model, clone)

    def transform(old):
        old = masked_of(old)
        return _effective_arrays(old) if old is not None else None

    copy_weights(model, new, transform)
    # recurrent cells: several variables of one name (Bidirectional)
    old_layers = dict(iter_leaf_layers(model))
    for path, layer in iter_leaf_layers(new):
        old = old_layers.get(path)
        if not isinstance(old, MaskedRecurrent):
            continue
        for cell, arrays in zip(recurrent_cells(layer),
                                old.effective_cell_weights()):
            for var in cell.weights:
                if var.name in arrays:
                    var.assign(arrays[var.name])
    return new


def _channel_plan(masked_model, plain):
    """A Plan removing every channel that is masked in all the places that
    could make it non-zero (every producer and every weighted
    pass-through layer of its group)."""
    from tfcomp.pruning.plan import Plan

    graph = DependencyGraph(plain)
    layers = {p: masked_or_self(lyr)
              for p, lyr in iter_leaf_layers(masked_model)}
    removed = {}
    for g in graph.prunable_groups:
        dead = np.ones(g.size, bool)
        for m in g.members:
            layer = layers.get(m.layer)
            if m.role == PRODUCER and m.port == "gates" and isinstance(
                    layer, MaskedRecurrent):
                continue  # the unit mask is checked on the "out" member
            if m.role != PRODUCER and not needs_pass_through_mask(m, layer):
                continue
            if not isinstance(layer, MaskedLayer) or not layer.channel_mask:
                dead[:] = False
                break
            mask = keras.ops.convert_to_numpy(layer.channel_mask_var)
            dead[np.unique(m.units[mask[m.indices] != 0])] = False
        if not dead.any():
            continue
        if dead.all():  # never remove a whole group; keep one channel
            dead[np.flatnonzero(dead)[0]] = False
        removed[g.id] = np.flatnonzero(dead)
    meta = {"source": "tfcomp.pruning.strip_pruning"}
    return graph, Plan.from_removed(graph, removed, meta=meta)


def strip_pruning(model: keras.Model) -> keras.Model:
    """Turns training-time pruning state into a plain deployable model.

    * Weight (magnitude) masks are folded into ordinary Keras layers: the
      kernels hold exact zeros (``export_tflite(..., sparsity=True)`` can
      then store them sparsely).
    * Channel (FPGM) masks are folded, then the masked channels are removed
      physically with :func:`tfcomp.pruning.prune_channels`: the result has
      fewer filters and computes the same outputs as the masked model
      (channels masked in every producer of a coupled group are removed;
      the selection in ``channel_mask`` is used even while ``mask_active``
      is 0).

    A model without pruning state is returned unchanged, with a warning.
    ``Lambda`` layers and ``keras.ops`` calls are copied in memory (the
    Lambda functions are reused, nothing is deserialised from bytecode, see
    :mod:`tfcomp.graph.copy`). A compiled ``model`` gives a model compiled
    the same way (:func:`tfcomp._compile.carry_compile`: optimizer with its
    ``iterations``, loss, metrics; optimizer slots of removed channels
    change shape and restart from zero, with a warning).

    Args:
        model: a model prepared with ``apply_magnitude_pruning`` /
            ``apply_fpgm`` (possibly loaded back from ``.keras``).

    Returns:
        A new ``keras.Model`` of plain Keras layers.

    Example:
        >>> small = tfcomp.pruning.strip_pruning(model)
        >>> np.allclose(small(x), model(x), atol=1e-5)
        True
    """
    _check_model(model)
    from tfcomp.layers.soft_mask import has_soft_masks

    if has_soft_masks(model):  # GAL's soft masks: zero structures removed
        from tfcomp.pruning.gal import strip_gal

        return strip_gal(model)
    if not has_pruning_state(model):
        msg = (f"strip_pruning: model {model.name!r} has no tfcomp pruning "
               "state (no masked layers); returning it unchanged.")
        logger.warning(msg)
        warnings.warn(msg, UserWarning, stacklevel=2)
        return model
    plain = _unwrap(model)
    if masked_layers(model, "channel"):
        from tfcomp.pruning.surgery import prune_channels

        graph, plan = _channel_plan(model, plain)
        if plan.removed:
            plain = prune_channels(plain, plan, graph=graph)
            logger.info("strip_pruning: removed %d channels in %d groups "
                        "of %r", plan.num_removed(), len(plan.removed),
                        model.name)
    return carry_compile(model, plain, what="the stripped model")

