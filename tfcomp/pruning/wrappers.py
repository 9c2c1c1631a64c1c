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

from tfcomp.graph import PASS_THROUGH, PRODUCER, DependencyGraph
from tfcomp.graph.walk import iter_leaf_layers, leaf_layers
from tfcomp.layers.masked import MaskedLayer, masked_class_for, plain_class_of

__all__ = [
    "apply_fpgm",
    "apply_magnitude_pruning",
    "has_pruning_state",
    "masked_layers",
    "strip_pruning",
]

logger = logging.getLogger("tfcomp.pruning")

_MASK_KEYS = ("weight_mask", "channel_mask")
_WEIGHT_TYPES = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D,
                 keras.layers.Dense)


def masked_layers(model, kind: str | None = None) -> list:
    """Masked layers of a model (``kind``: None, "weight" or "channel").

    Example:
        >>> [l.name for l in masked_layers(model, "weight")]
    """
    out = []
    for layer in leaf_layers(model):
        if not isinstance(layer, MaskedLayer):
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
    if not model.built or not getattr(model, "inputs", None):
        raise ValueError(
            f"{name} {model.name!r} must be a built functional or Sequential "
            "model (subclassed models cannot be cloned layer by layer).")


def _copy_weights(src_model, dst_model, transform=None) -> None:
    """Copies variables by layer path and variable name."""
    src = dict(iter_leaf_layers(src_model))
    for path, layer in iter_leaf_layers(dst_model):
        old = src.get(path)
        if old is None or not old.weights:
            continue
        values = {v.name: v for v in old.weights}
        arrays = (transform(old) if transform is not None else None) or {}
        for v in layer.weights:
            if v.name in arrays:
                v.assign(arrays[v.name])
            elif v.name in values:
                v.assign(values[v.name])


def _wrap(model, weight_mask: bool, channel_mask: bool, layers=None):
    _check_model(model)
    names = None if layers is None else set(layers)
    if names is not None:
        known = {lyr.name for lyr in leaf_layers(model)}
        missing = sorted(names - known)
        if missing:
            raise ValueError(f"layers {missing} are not in model "
                             f"{model.name!r}.")

    def clone(layer):
        cfg = layer.get_config()
        if names is not None and layer.name not in names:
            return layer.__class__.from_config(cfg)
        if isinstance(layer, MaskedLayer):
            cfg["weight_mask"] = bool(cfg.get("weight_mask")) or (
                weight_mask and layer._has_kernel)
            cfg["channel_mask"] = bool(cfg.get("channel_mask")) or \
                channel_mask
            return layer.__class__.from_config(cfg)
        cls = masked_class_for(layer)
        if cls is None:
            return layer.__class__.from_config(cfg)
        wm = weight_mask and isinstance(layer, _WEIGHT_TYPES)
        cm = channel_mask
        if not (wm or cm):
            return layer.__class__.from_config(cfg)
        return cls.from_config({**cfg, "weight_mask": wm,
                                "channel_mask": cm})

    new = keras.models.clone_model(model, clone_function=clone,
                                   recursive=True)
    _copy_weights(model, new)
    return new


def apply_magnitude_pruning(model: keras.Model, layers=None) -> keras.Model:
    """A copy of ``model`` whose Conv2D / DepthwiseConv2D / Dense layers
    carry element-wise weight masks (all ones), ready for
    :class:`tfcomp.pruning.MagnitudePruning`.

    Call it before ``compile`` (and inside ``strategy.scope()`` when training
    with a ``tf.distribute`` strategy). Which wrapped layers are actually
    pruned, and how, is chosen by the callback (``skip``, ``pattern``).

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
    return _wrap(model, weight_mask=True, channel_mask=False, layers=layers)


def apply_fpgm(model: keras.Model, layers=None) -> keras.Model:
    """A copy of ``model`` whose Conv2D / DepthwiseConv2D / Dense /
    BatchNormalization layers carry per-channel output masks (all ones),
    ready for :class:`tfcomp.pruning.FPGMPruning`.

    BatchNormalization (and depthwise) layers are masked too, so a pruned
    channel is exactly zero everywhere in its coupled group and removing it
    later does not change the outputs.

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
    return _wrap(model, weight_mask=False, channel_mask=True, layers=layers)


# ---------------------------------------------------------------------------
# strip_pruning


def _effective_arrays(layer) -> dict:
    """Plain-layer weights that reproduce the masked layer's outputs."""
    out = {}
    gate = None
    if layer.channel_mask:
        gate = keras.ops.convert_to_numpy(layer.channel_gate())
    kernel = layer._raw_kernel()
    if kernel is not None and (layer.weight_mask or gate is not None):
        out[kernel.name] = keras.ops.convert_to_numpy(
            layer.effective_kernel())
    if gate is not None:
        for var in layer.weights:
            if var.name in ("bias", "gamma", "beta", "moving_mean"):
                out[var.name] = keras.ops.convert_to_numpy(var) * gate
    return out


def _unwrap(model) -> keras.Model:
    """Plain clone with the masks folded into the weights."""

    def clone(layer):
        cfg = layer.get_config()
        plain = plain_class_of(layer)
        if plain is None:
            return layer.__class__.from_config(cfg)
        for key in _MASK_KEYS:
            cfg.pop(key, None)
        return plain.from_config(cfg)

    new = keras.models.clone_model(model, clone_function=clone,
                                   recursive=True)

    def transform(old):
        return _effective_arrays(old) if isinstance(old, MaskedLayer) \
            else None

    _copy_weights(model, new, transform)
    return new


def _channel_plan(masked_model, plain):
    """A Plan removing every channel that is masked in all the places that
    could make it non-zero (every producer and every weighted
    pass-through layer of its group)."""
    from tfcomp.pruning.plan import Plan

    graph = DependencyGraph(plain)
    layers = dict(iter_leaf_layers(masked_model))
    removed = {}
    for g in graph.prunable_groups:
        dead = np.ones(g.size, bool)
        for m in g.members:
            layer = layers.get(m.layer)
            if m.role == PRODUCER:
                pass
            elif m.role == PASS_THROUGH and m.port in ("out", "channels"):
                weighted = layer is not None and any(
                    spec[0] in {v.name for v in layer.weights}
                    for spec in m.weights)
                if not weighted:
                    continue
            else:
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

    Args:
        model: a model prepared with ``apply_magnitude_pruning`` /
            ``apply_fpgm`` (possibly loaded back from ``.keras``).

    Returns:
        A new ``keras.Model`` of plain Keras layers (not compiled).

    Example:
        >>> small = tfcomp.pruning.strip_pruning(model)
        >>> np.allclose(small(x), model(x), atol=1e-5)
        True
    """
    _check_model(model)
    if not has_pruning_state(model):
        msg = (f"strip_pruning: model {model.name!r} has no tfcomp pruning "
               "state (no masked layers); returning it unchanged.")
        logger.warning(msg)
        warnings.warn(msg, UserWarning, stacklevel=2)
        return model
    plain = _unwrap(model)
    if not masked_layers(model, "channel"):
        return plain
    from tfcomp.pruning.surgery import prune_channels

    graph, plan = _channel_plan(model, plain)
    if not plan.removed:
        return plain
    small = prune_channels(plain, plan, graph=graph)
    logger.info("strip_pruning: removed %d channels in %d groups of %r",
                plan.num_removed(), len(plan.removed), model.name)
    return small

