"""LASSO channel selection with least-squares reconstruction, whole model.

``lasso_prune`` runs the per-layer step of :mod:`tfcomp.pruning.reconstruction`
over a trained model, group by group in topological order: the inputs of
each consumer come from the network pruned so far, the targets from the
original network, and the producer filters of the removed channels go
through the dependency graph (so a residual stream or a concatenation loses
the same channels everywhere).

Reference: He, Zhang & Sun, Channel Pruning for Accelerating Very Deep
Neural Networks, ICCV 2017, arXiv:1707.06168.

Example:
    >>> small, plan = tfcomp.pruning.lasso_prune(model, x_calib, ratio=0.5)
    >>> small.count_params() < model.count_params()
    True
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np

from tfcomp.graph import DependencyGraph
from tfcomp.pruning.plan import Plan, estimate_macs
from tfcomp.pruning.reconstruction import (
    LayerSamples,
    _layer_kind,
    layer_kernel,
    least_squares_refit,
    reconstruction_error,
    sample_patches,
    select_channels,
)
from tfcomp.pruning.surgery import mask_channels, prune_channels

__all__ = ["lasso_prune"]


# ---------------------------------------------------------------------------
# shared helpers (also used by tfcomp.pruning.dcp)


def _check_model(model) -> None:
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"model must be a keras.Model. Received: {type(model).__name__}")
    if len(model.inputs) != 1:
        raise ValueError(
            f"model {model.name!r} must have exactly one input. Received: "
            f"{len(model.inputs)} inputs")


def calibration_data(data, model, max_images: int | None = None,
                     need_labels: bool = False) -> tuple:
    """Calibration images (and labels) as numpy arrays, checked.

    Args:
        data: an array ``(N, *input_shape)``; a tuple ``(x, y)``; or an
            iterable / ``tf.data.Dataset`` of batches (arrays or ``(x, y)``).
        model: the model the images are for (its input shape is checked).
        max_images: keep at most this many images (the first ones).
        need_labels: labels are required (DCP).

    Returns:
        ``(x, y)``; ``y`` is None when there are no labels, else int64
        class indices (one-hot labels are converted).

    Raises:
        ValueError: empty data, shapes that do not fit the model, labels
            missing or of the wrong length.
    """
    if max_images is not None and (isinstance(max_images, bool)
                                   or int(max_images) < 1):
        raise ValueError(f"max_images must be >= 1. Received: "
                         f"max_images={max_images!r}")
    x = y = None
    if data is None:
        raise ValueError("data is empty: give calibration images. Received: "
                         "data=None")
    if isinstance(data, np.ndarray) or hasattr(data, "__array__") and \
            not isinstance(data, (tuple, list, dict)) and \
            not hasattr(data, "element_spec"):
        x = np.asarray(data)
    elif isinstance(data, (tuple, list)) and len(data) == 2 and all(
            hasattr(d, "shape") for d in data):
        x, y = np.asarray(data[0]), np.asarray(data[1])
    elif isinstance(data, (tuple, list)) and len(data) == 0:
        raise ValueError("data is empty: give calibration images. Received: "
                         "data=()")
    else:
        xs, ys = [], []
        count = 0
        try:
            iterator = iter(data)
        except TypeError:
            raise TypeError(
                "data must be an array, a tuple (x, y) or an iterable of "
                f"batches. Received: {type(data).__name__}") from None
        for batch in iterator:
            if isinstance(batch, (tuple, list)):
                bx = np.asarray(batch[0])
                by = np.asarray(batch[1]) if len(batch) > 1 else None
            else:
                bx, by = np.asarray(batch), None
            xs.append(bx)
            ys.append(by)
            count += bx.shape[0] if bx.ndim else 0
            if max_images is not None and count >= max_images:
                break
        if not xs:
            raise ValueError("data is empty: the iterable yielded no batch.")
        shapes = {a.shape[1:] for a in xs}
        if len(shapes) != 1:
            raise ValueError(
                f"data batches have different image shapes: {sorted(shapes)}")
        x = np.concatenate(xs, axis=0)
        y = None if any(b is None for b in ys) else np.concatenate(ys, 0)
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"data is empty: no calibration images. Received: "
                         f"data.shape={x.shape}")
    if not np.issubdtype(x.dtype, np.number):
        raise TypeError(f"data must be numeric. Received: dtype={x.dtype}")
    want = tuple(model.inputs[0].shape[1:])
    if len(x.shape[1:]) != len(want) or any(
            w is not None and w != s for w, s in zip(want, x.shape[1:])):
        raise ValueError(
            f"data images must have shape {('N',) + want} to fit model "
            f"{model.name!r}. Received: data.shape={x.shape}")
    if max_images is not None:
        x = x[:int(max_images)]
        if y is not None:
            y = y[:int(max_images)]
    x = x.astype("float32", copy=False)
    if y is not None:
        if y.shape[0] < x.shape[0]:
            raise ValueError(
                f"data labels must have one entry per image ({x.shape[0]}). "
                f"Received: labels.shape={y.shape}")
        y = y[:x.shape[0]]
        if y.ndim == 2 and y.shape[1] > 1:
            y = y.argmax(axis=1)
        y = y.reshape(y.shape[0], -1)[:, 0] if y.ndim > 1 else y
        y = y.astype("int64")
    if need_labels and y is None:
        raise ValueError(
            "data must hold labels: give (x, y) or batches of (x, y).")
    return x, y


def _group_for_key(graph: DependencyGraph, key: str):
    if key in graph:
        return graph.group(key)
    try:
        graph.layer(key)
    except ValueError:
        known = [g.id for g in graph.prunable_groups][:12]
        raise ValueError(
            f"ratio key {key!r} is neither a group id nor a layer of model "
            f"{graph.model.name!r}. Prunable groups include {known}.") from None
    g = graph.producer_group(key)
    if g is None:
        raise ValueError(f"Layer {key!r} produces no channel group.")
    return g


def _check_ratio(r, name: str) -> float:
    if isinstance(r, bool) or not isinstance(
            r, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a float in [0, 1). Received: "
                        f"{name}={r!r}")
    r = float(r)
    if math.isnan(r) or not 0.0 <= r < 1.0:
        hint = (" (a ratio of 1 or more would remove every channel and "
                "empty the layer)") if r >= 1.0 else ""
        raise ValueError(f"{name} must be in [0, 1){hint}. Received: "
                         f"{name}={r}")
    return r


def _n_keep(size: int, ratio: float) -> int:
    """c - floor(ratio * c), at least 1."""
    return max(1, size - int(math.floor(size * ratio + 1e-9)))


def _consumer_support(graph, group) -> str | None:
    """None when every consumer of the group can be reconstructed."""
    if not group.consumers:
        return "the group has no consumer layer"
    for m in group.consumers:
        if "/" in m.layer:
            return (f"consumer {m.layer!r} is inside a nested model "
                    "(not supported by reconstruction)")
        try:
            _layer_kind(graph.layer(m.layer))
        except ValueError as e:
            return str(e)
        if m.node is not None and not m.node.endswith("#0"):
            return f"consumer {m.layer!r} is called more than once"
    return None


def resolve_targets(graph: DependencyGraph, ratio, groups=None,
                    target_macs=None, what: str = "lasso_prune") -> tuple:
    """``({group_id: num_keep}, {group_id: skip reason}, ratio_used)``.

    Shared by ``lasso_prune`` and ``dcp_prune``.
    """
    skipped: dict = {}
    if isinstance(ratio, dict):
        if target_macs is not None:
            raise ValueError(
                f"{what}: give either target_macs or a per-group ratio dict,"
                f" not both. Received: ratio=dict, "
                f"target_macs={target_macs!r}")
        if groups is not None:
            raise ValueError(f"{what}: groups cannot be combined with a "
                             "ratio dict (its keys are the groups).")
        if not ratio:
            raise ValueError(f"{what}: ratio dict is empty.")
        ratios = {}
        for key, r in ratio.items():
            g = _group_for_key(graph, key)
            r = _check_ratio(r, f"ratio[{key!r}]")
            if not g.prunable:
                raise ValueError(
                    f"Group {g.id!r} (from ratio key {key!r}) cannot be "
                    f"pruned: {g.reason}.")
            why = _consumer_support(graph, g)
            if why is not None:
                raise ValueError(
                    f"Group {g.id!r} (from ratio key {key!r}) cannot be "
                    f"reconstructed: {why}.")
            ratios[g.id] = r
        counts = {gid: _n_keep(graph.group(gid).size, r)
                  for gid, r in ratios.items()}
        return counts, skipped, dict(ratios)
    if groups is None:
        candidates = list(graph.prunable_groups)
    else:
        if isinstance(groups, str):
            groups = [groups]
        candidates = []
        for key in groups:
            g = _group_for_key(graph, key)
            if not g.prunable:
                raise ValueError(f"Group {g.id!r} cannot be pruned: "
                                 f"{g.reason}.")
            if g not in candidates:
                candidates.append(g)
    targets = []
    for g in candidates:
        why = _consumer_support(graph, g)
        if why is None:
            targets.append(g)
        elif groups is not None:
            raise ValueError(f"Group {g.id!r} cannot be reconstructed: "
                             f"{why}.")
        else:
            skipped[g.id] = why
    if not targets:
        raise ValueError(
            f"{what}: model {graph.model.name!r} has no prunable group whose"
            f" consumers can be reconstructed. Skipped: {skipped}")
    if target_macs is None:
        r = _check_ratio(ratio, "ratio")
        return {g.id: _n_keep(g.size, r) for g in targets}, skipped, r
    # uniform ratio meeting a MACs budget (bisection on the analytic count)
    budget = float(target_macs)
    if not budget > 0:
        raise ValueError(f"target_macs must be > 0. Received: "
                         f"target_macs={target_macs!r}")
    dense = estimate_macs(graph)
    if budget <= 1.0:
        budget *= dense

    def macs_at(r):
        removed = {g.id: g.pick_removal(np.arange(g.size),
                                        g.size - _n_keep(g.size, r))
                   for g in targets}
        return estimate_macs(graph, Plan.from_removed(graph, removed))

    if dense <= budget:
        r_used = 0.0
    else:
        hi = 1.0 - 1e-9
        if macs_at(hi) > budget:
            raise ValueError(
                f"target_macs={target_macs!r} cannot be reached: keeping one"
                f" channel per pruned group still costs {macs_at(hi):,} "
                f"MACs (dense: {dense:,}).")
        lo = 0.0
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            if macs_at(mid) <= budget:
                hi = mid
            else:
                lo = mid
        r_used = hi
    return ({g.id: _n_keep(g.size, r_used) for g in targets}, skipped,
            float(r_used))


def _consumer_layers(group) -> list:
    out = []
    for m in group.consumers:
        if m.layer not in out:
            out.append(m.layer)
    return out


def _units_for(group, path: str, port_size: int) -> np.ndarray:
    units = np.full(port_size, -1, dtype=np.int64)
    for m in group.consumers:
        if m.layer == path:
            units[m.indices] = m.units
    return units


def _out_mask(graph, path: str, removed: dict, size: int):
    """False at output filters of ``path`` already removed (None if all)."""
    mask = np.ones(size, bool)
    for gid, units in removed.items():
        g = graph.group(gid)
        for m in g.producers:
            if m.layer == path:
                mask[m.positions(units)] = False
    return None if mask.all() else mask


def _extractor(model, tensors):
    return keras.Model(model.inputs[0], list(tensors))


def _run_batches(extractor, x, batch_size):
    for a in range(0, x.shape[0], batch_size):
        out = extractor(x[a:a + batch_size], training=False)
        if not isinstance(out, (list, tuple)):
            out = [out]
        yield a, [keras.ops.convert_to_numpy(o) for o in out]


def _copy_model(model):
    work = keras.models.clone_model(model)
    work.set_weights(model.get_weights())
    return work


# ---------------------------------------------------------------------------


def lasso_prune(model: keras.Model, data, ratio: float | dict = 0.5, *,
                target_macs: float | None = None, groups=None,
                selector: str = "lasso", samples_per_image: int = 10,
                max_images: int | None = 500, batch_size: int = 64,
                ridge: float = 1e-6, seed: int = 0, verbose: int = 1,
                return_info: bool = False):
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
        data: calibration images ``(N, *input_shape)``, ``(x, y)`` or an
            iterable / ``tf.data.Dataset`` of batches.
        ratio: fraction of channels removed per group (in [0, 1)), or
            ``{group_id_or_layer: ratio}`` (only those groups).
        target_macs: a MACs budget (values in (0, 1] are a fraction of the
            dense model's MACs); a uniform ratio over the pruned groups is
            found by bisection on :func:`tfcomp.pruning.estimate_macs` and
            ``ratio`` is ignored. Not combinable with a ratio dict.
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
        return_info: also return a dict with per-group details.

    Returns:
        ``(pruned_model, plan)``, or ``(pruned_model, plan, info)`` with
        ``return_info``. ``pruned_model`` is a new, physically smaller
        model; ``plan`` (a :class:`tfcomp.pruning.Plan`) records the removed
        channels and, in ``plan.meta``, the method, selector, ratio and
        MACs. ``info["groups"][gid]`` holds the kept count, the selector
        details (``alpha``, ``exact``) and per consumer the relative
        reconstruction error after the refit and with plain zeroing.
        Groups left alone (unsupported consumers) are in
        ``info["skipped"]``.

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
    """
    _check_model(model)
    if selector not in ("lasso", "l1", "random"):
        raise ValueError(f"selector must be 'lasso', 'l1' or 'random'. "
                         f"Received: selector={selector!r}")
    if isinstance(samples_per_image, bool) or int(samples_per_image) < 1:
        raise ValueError(f"samples_per_image must be >= 1. Received: "
                         f"samples_per_image={samples_per_image!r}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1. Received: "
                         f"batch_size={batch_size!r}")
    graph = DependencyGraph(model)
    x, _ = calibration_data(data, model, max_images)
    counts, skipped, ratio_used = resolve_targets(graph, ratio, groups,
                                                  target_macs)
    order = [g for g in graph.groups if g.id in counts]
    consumers = []
    for g in order:
        for path in _consumer_layers(g):
            if path not in consumers:
                consumers.append(path)

    # targets Y from the original network, locations drawn once
    orig_layers = {p: graph.layer(p) for p in consumers}
    locs: dict = {p: [] for p in consumers}
    targets: dict = {p: [] for p in consumers}
    ext = _extractor(model, [orig_layers[p].input for p in consumers])
    base_w = {p: layer_kernel(orig_layers[p]) for p in consumers}
    for a, outs in _run_batches(ext, x, int(batch_size)):
        for ci, (p, arr) in enumerate(zip(consumers, outs)):
            rs = np.random.SeedSequence([int(seed), ci, a]).generate_state(1)
            patches, loc = sample_patches(orig_layers[p], arr,
                                          samples_per_image, int(rs[0]))
            w0, b0 = base_w[p]
            y = np.einsum("mkp,kpn->mn", patches, w0, optimize=True)
            if b0 is not None:
                y = y + b0
            locs[p].append(loc)
            targets[p].append(y.astype("float32"))
    targets = {p: np.concatenate(v, 0) for p, v in targets.items()}

    work = _copy_model(model)
    work_graph = DependencyGraph(work)
    removed: dict = {}
    keeps: dict = {}
    info: dict = {"groups": {}, "skipped": dict(skipped)}
    bar = keras.utils.Progbar(len(order), verbose=1 if verbose else 0,
                              stateful_metrics=["rel_err"],
                              unit_name="group")
    for step, g in enumerate(order, start=1):
        paths = _consumer_layers(g)
        layers = [work.get_layer(p) for p in paths]
        ext = _extractor(work, [lay.input for lay in layers])
        patches: dict = {p: [] for p in paths}
        for a, outs in _run_batches(ext, x, int(batch_size)):
            bi = a // int(batch_size)
            for p, lay, arr in zip(paths, layers, outs):
                pt, _ = sample_patches(lay, arr, locations=locs[p][bi])
                patches[p].append(pt)
        samples = []
        for p, lay in zip(paths, layers):
            w, b = layer_kernel(lay)
            samples.append(LayerSamples(
                x=np.concatenate(patches[p], 0), y=targets[p], kernel=w,
                bias=b, units=_units_for(g, p, w.shape[1]), layer=p,
                kernel_shape=tuple(lay.kernel.shape),
                out_mask=_out_mask(graph, p, removed, w.shape[2])))
        keep, sel_info = select_channels(samples, counts[g.id], selector,
                                         seed)
        ginfo: dict[str, Any] = {
            "size": g.size, "kept": int(len(keep)),
            "consumers": {}, **{k: v for k, v in sel_info.items()
                                if k in ("alpha", "exact",
                                         "bisect_iterations")}}
        errs = []
        for s, lay in zip(samples, layers):
            kernel, bias, pos = least_squares_refit(s, keep, ridge)
            zeroed = np.zeros_like(s.kernel)
            zeroed[:, pos, :] = s.kernel[:, pos, :]
            e0 = reconstruction_error(s.x, s.y, zeroed, s.bias, s.out_mask)
            e1 = reconstruction_error(s.x, s.y, kernel, bias, s.out_mask)
            lay.kernel.assign(kernel.astype("float32"))
            if bias is not None:
                lay.bias.assign(bias.astype("float32"))
            ginfo["consumers"][s.layer] = {"error": e1, "error_zeroed": e0}
            errs.append(e1)
        keeps[g.id] = keep
        gone = np.setdiff1d(np.arange(g.size), keep)
        if gone.size:
            removed[g.id] = gone
            mask_channels(work, Plan.from_removed(graph, removed),
                          inplace=True, graph=work_graph)
        info["groups"][g.id] = ginfo
        bar.update(step, values=[("rel_err", float(np.mean(errs)))])

    meta = {"method": "lasso_prune", "selector": selector,
            "ratio": ratio_used, "samples_per_image": int(samples_per_image),
            "images": int(x.shape[0]), "seed": int(seed)}
    plan = Plan.from_keep(graph, keeps, meta=meta)
    meta["macs_before"] = int(estimate_macs(graph))
    meta["macs_after"] = int(estimate_macs(graph, plan))
    plan.meta = meta
    pruned = prune_channels(work, plan, graph=work_graph)
    info["macs_before"], info["macs_after"] = (meta["macs_before"],
                                               meta["macs_after"])
    if return_info:
        return pruned, plan, info
    return pruned, plan
