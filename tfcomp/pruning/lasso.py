"""LASSO channel selection with least-squares reconstruction, whole model.

``lasso_prune`` runs the reconstruction engine
(:class:`tfcomp.pruning.reconstruction.LayerwisePruner`) over a trained
model, group by group in topological order: the inputs of each consumer come
from the network pruned so far, the targets from the original network, and
the producer filters of the removed channels go through the dependency graph
(so a residual stream or a concatenation loses the same channels everywhere).

Reference: He, Zhang & Sun, Channel Pruning for Accelerating Very Deep
Neural Networks, ICCV 2017, arXiv:1707.06168.

Example:
    >>> small, plan = tfcomp.pruning.lasso_prune(model, x_calib, ratio=0.5)
    >>> small.count_params() < model.count_params()
    True
"""

from __future__ import annotations

import warnings

import keras

from tfcomp._batches import rows
from tfcomp._io import as_arrays, check_positive_int
from tfcomp.graph import DependencyGraph
from tfcomp.pruning.reconstruction.engine import (
    LayerwisePruner,
    check_model,
    reconstruction_targets,
)
from tfcomp.pruning.reconstruction.selection import SELECTORS
from tfcomp.pruning.result import finish, legacy_data

__all__ = ["lasso_prune"]


def lasso_prune(model: keras.Model, calibration_data=None,
                ratio: float | dict = 0.5, *,
                target_macs: float | None = None, round_to: int = 1,
                ignored_layers=None, groups=None, selector: str = "lasso",
                samples_per_image: int = 10, max_images: int | None = 500,
                batch_size: int = 64, ridge: float = 1e-6, seed: int = 0,
                verbose: int = 1, return_info: bool | None = None,
                data=None):
    """Channel pruning by LASSO selection and least-squares reconstruction.

    For every pruned group, in topological order:

    1. sample ``samples_per_image`` random output locations per calibration
       image for each consumer of the group (the layers that read its
       channels); gather their input patches ``X`` from the network pruned
       so far and their outputs ``Y`` from the *original* network;
    2. choose ``c' = c - floor(ratio * c)`` channels (``selector``): LASSO
       on the channel contributions with alpha raised then bisected until
       exactly ``c'`` survive (He et al. 2017), or ``"l1"`` / ``"random"``
       for comparison;
    3. refit each consumer's kernel (and bias) by least squares on the kept
       channels; zero the removed producer filters (and their BatchNorm
       parameters) through the dependency graph.

    Coupled groups (a residual stream read by several convolutions, a
    concatenation) need one channel set for all consumers: the LASSO
    minimises the **sum of the consumers' objectives**, each normalised by
    its target energy ``||Y_c||^2`` (every consumer counts by its relative
    error); ``"l1"`` sums the consumers' input-slice L1 norms. Each consumer
    is then refit separately.

    Finally the zeroed channels are removed with
    :func:`tfcomp.pruning.prune_channels`.

    Args:
        model: a trained functional / Sequential ``keras.Model`` with one
            input; layers called once (left untouched).
        calibration_data: calibration images ``(N, *input_shape)``,
            ``(x, y)`` or an iterable / ``tf.data.Dataset`` of batches
            (``data=`` is a deprecated alias).
        ratio: fraction of channels removed per group (in [0, 1)), or
            ``{group_id_or_layer: ratio}`` (only those groups).
        target_macs: a MACs budget (values in (0, 1] are a fraction of the
            dense model's MACs); a uniform ratio over the pruned groups is
            found by :func:`tfcomp.pruning.targets.resolve` and ``ratio`` is
            ignored. Not combinable with a ratio dict.
        round_to: kept channel counts are multiples of this (capped at the
            group size).
        ignored_layers: layers whose channel groups are left whole.
        groups: group ids (or producer layer names) to prune with a float
            ratio / ``target_macs``; default every prunable group whose
            consumers are ``Conv1D`` / ``Conv2D`` / ``Dense``.
        selector: ``"lasso"``, ``"l1"`` (AMC's consumer-side L1 norm) or
            ``"random"``; the least-squares refit is the same for all.
        samples_per_image: random output locations per image and consumer
            (the paper's 10).
        max_images: calibration images used (the first ones). The paper
            samples 5000 images; 500 is the CPU-scale default.
        batch_size: images per forward pass.
        ridge: relative pull of the refit towards the current weights (see
            :func:`tfcomp.pruning.reconstruction.least_squares_refit`).
        seed: seeds the location draws and ``"random"``.
        verbose: 1 shows a progress bar (one step per group), 0 is silent.
        return_info: deprecated; ``True`` returns the old
            ``(model, plan, info)`` triple.

    Returns:
        A :class:`tfcomp.pruning.result.PruneResult`: unpacks as
        ``(pruned_model, plan)``. ``pruned_model`` is a new, physically
        smaller model; ``plan`` (a :class:`tfcomp.pruning.Plan`) records the
        removed channels and, in ``plan.meta``, the method, selector, ratio
        and MACs. ``result.report["groups"][gid]`` holds the kept count,
        the selector details (``alpha``, ``exact``) and per consumer the
        relative reconstruction error after the refit and with plain
        zeroing. Groups left alone (unsupported consumers) are in
        ``result.report["skipped"]``.

    Raises:
        ValueError: empty or mis-shaped data, ratios outside [0, 1) (a
            ratio of 1 would empty a layer), unknown groups, unreachable
            ``target_macs``.
        TypeError: non-model inputs, subclassed models.

    Reference: He, Zhang & Sun, Channel Pruning for Accelerating Very Deep
    Neural Networks, ICCV 2017, arXiv:1707.06168.

    Example:
        >>> small, plan = lasso_prune(model, x_train[:500], ratio=0.5)
        >>> small, plan = lasso_prune(model, x_train[:500],
        ...                           target_macs=0.5, selector="l1")
        >>> lasso_prune(model, x_train[:500]).report["groups"]
    """
    check_model(model)
    if selector not in SELECTORS:
        raise ValueError(f"selector must be 'lasso', 'l1' or 'random'. "
                         f"Received: selector={selector!r}")
    check_positive_int(samples_per_image, "samples_per_image")
    check_positive_int(batch_size, "batch_size")
    calibration_data = legacy_data(calibration_data, data, "lasso_prune")
    graph = DependencyGraph(model)
    x, _ = as_arrays(calibration_data, model, max_images)
    found, skipped = reconstruction_targets(
        graph, ratio, target_macs=target_macs, round_to=round_to,
        ignored_layers=ignored_layers, groups=groups)
    order = [g for g in graph.groups if g.id in found.keep]
    pruner = LayerwisePruner(model, x, order, graph=graph,
                             samples_per_image=samples_per_image,
                             batch_size=batch_size, ridge=ridge, seed=seed)
    info: dict = {"groups": {}, "skipped": dict(skipped)}
    bar = keras.utils.Progbar(len(order), verbose=1 if verbose else 0,
                              stateful_metrics=["rel_err"],
                              unit_name="group")
    for step, g in enumerate(order, start=1):
        ginfo = pruner.step(g, found.keep[g.id], selector)
        info["groups"][g.id] = ginfo
        errs = [c["error"] for c in ginfo["consumers"].values()]
        bar.update(step, values=[("rel_err", sum(errs) / len(errs))])
    meta = {"method": "lasso_prune", "selector": selector,
            "ratio": found.ratio, "round_to": int(round_to),
            "samples_per_image": int(samples_per_image),
            "images": int(rows(x)), "seed": int(seed)}
    small, plan = pruner.result(meta, info)
    return finish(small, plan, info, return_info, "lasso_prune")


# ---------------------------------------------------------------------------
# deprecated names


def calibration_data(data, model, max_images: int | None = None,
                     need_labels: bool = False) -> tuple:
    """Deprecated: use ``tfcomp._io.as_arrays(data, model, max_images,
    need_labels)``."""
    warnings.warn("tfcomp.pruning.lasso.calibration_data is deprecated; use "
                  "tfcomp._io.as_arrays.", DeprecationWarning, stacklevel=2)
    return as_arrays(data, model, max_images, need_labels, name="data")


def resolve_targets(graph: DependencyGraph, ratio, groups=None,
                    target_macs=None, what: str = "lasso_prune") -> tuple:
    """Deprecated: use
    :func:`tfcomp.pruning.reconstruction.engine.reconstruction_targets`.

    Returns ``({group_id: num_keep}, {group_id: skip reason}, ratio)``.
    """
    warnings.warn("tfcomp.pruning.lasso.resolve_targets is deprecated; use "
                  "tfcomp.pruning.reconstruction.engine."
                  "reconstruction_targets.", DeprecationWarning,
                  stacklevel=2)
    found, skipped = reconstruction_targets(
        graph, ratio, target_macs=target_macs, groups=groups, what=what)
    return dict(found.keep), skipped, found.ratio
