"""The whole-model reconstruction engine: channel groups pruned one after the
other, in topological order, on a working copy of the model.

:class:`PruningState` is the working copy and what has been removed so far
(groups masked in place through the dependency graph, so the masked model
computes what the physically smaller one will). :class:`LayerwisePruner`
adds the reconstruction loop of He, Zhang & Sun (2017) on top of it: for a
group, sample its consumers' input patches from the network pruned so far
and their targets from the original network (locations drawn once), choose
the channels to keep (:func:`~tfcomp.pruning.reconstruction.select_channels`),
refit every consumer by least squares and mask the removed channels.
``lasso_prune`` runs it once, AMC once per proposal (``reset()`` between
them), DCP uses the working copy and its own greedy selection.

Reference: He, Zhang & Sun, arXiv:1707.06168.

Example:
    >>> pruner = LayerwisePruner(model, x_calib, graph.prunable_groups)
    >>> for g in pruner.groups:
    ...     pruner.step(g, num_keep=g.size // 2, selector="lasso")
    >>> small = pruner.pruned_model(pruner.plan())
"""

from __future__ import annotations

import keras
import numpy as np

from tfcomp._batches import rows, sliced
from tfcomp.graph import DependencyGraph
from tfcomp.graph.copy import clone_model, copy_weights, refresh_state
from tfcomp.graph.replay import FlatView
from tfcomp.pruning import targets as tg
from tfcomp.pruning.plan import Plan, estimate_macs
from tfcomp.pruning.reconstruction.kernels import (
    connections,
    consumer_kind,
    dense_shape,
    expand_rows,
    from_dense,
    kernel_rows,
    kernel_variable,
    layer_kernel,
)
from tfcomp.pruning.reconstruction.refit import (
    least_squares_refit,
    reconstruction_error,
)
from tfcomp.pruning.reconstruction.sampling import LayerSamples, sample_patches
from tfcomp.pruning.reconstruction.selection import select_channels
from tfcomp.pruning.surgery import mask_channels, prune_channels

__all__ = ["LayerwisePruner", "PruningState", "activations", "check_model",
           "consumer_layers", "input_extractor", "consumer_support", "consumer_units",
           "iter_activations",
           "layer_units", "reconstructible_groups", "reconstruction_targets"]


# ---------------------------------------------------------------------------
# helpers on models and groups


def check_model(model) -> None:
    """A ``keras.Model`` (one input or several), or a TypeError.

    Example:
        >>> check_model(tfcomp.zoo.resnet(depth=8))
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"model must be a keras.Model. Received: {type(model).__name__}")


def input_extractor(model, tensors) -> keras.Model:
    """A ``keras.Model`` from ``model``'s inputs (one, or all of them) to
    the symbolic ``tensors``.

    Example:
        >>> ext = input_extractor(model, [model.get_layer("conv2").input])
    """
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, list(tensors))


def consumer_layers(group) -> list:
    """Paths of the layers reading a group's channels, first-seen order.

    Example:
        >>> consumer_layers(graph.group("stem_conv"))
        ['s1b1_conv1', ...]
    """
    out = []
    for m in group.consumers:
        if m.layer not in out:
            out.append(m.layer)
    return out


def consumer_support(graph, group) -> str | None:
    """None when every consumer of ``group`` can be reconstructed, else why
    not (no consumer, unsupported layer, shared layer). Consumers inside
    nested models are reconstructed through :attr:`PruningState.view`.

    Example:
        >>> consumer_support(graph, graph.group("conv1")) is None
        True
    """
    if not group.consumers:
        return "the group has no consumer layer"
    for m in group.consumers:
        try:
            consumer_kind(graph.layer(m.layer))
        except ValueError as e:
            return str(e)
        if m.node is not None and not m.node.endswith("#0"):
            return f"consumer {m.layer!r} is called more than once"
    return None


def layer_units(group, path: str, port_size: int) -> np.ndarray:
    """``(port_size,)`` group channel of each input position of consumer
    ``path`` (``-1``: a position outside the group).

    Example:
        >>> layer_units(g, "fc1", 32)
    """
    units = np.full(port_size, -1, dtype=np.int64)
    for m in group.consumers:
        if m.layer == path:
            units[m.indices] = m.units
    return units


def consumer_units(group, path: str, layer) -> np.ndarray:
    """:func:`layer_units` of consumer ``path`` (the built ``layer``) over
    all of its input channels: a grouped convolution's kernel rows repeated
    over its groups (:func:`~.kernels.expand_rows`).

    Example:
        >>> consumer_units(g, "conv2", model.get_layer("conv2"))
    """
    return expand_rows(layer, layer_units(group, path, kernel_rows(layer)))


def iter_activations(extractor, x, batch_size: int):
    """Yields ``(start, [arrays])``: the outputs of ``extractor`` (a
    ``keras.Model``) on ``x[start:start + batch_size]`` (``x`` a list of
    arrays for several inputs), batch after batch.

    Example:
        >>> ext = input_extractor(model, [layer.input])
        >>> for a, (h,) in iter_activations(ext, x, 64):
        ...     pass
    """
    for a in range(0, rows(x), batch_size):
        out = extractor(sliced(x, a, a + batch_size), training=False)
        if not isinstance(out, (list, tuple)):
            out = [out]
        # a mixed-precision model's bf16 / float16 activations: the least
        # squares solve in float32 (numpy does not count bf16 a number)
        yield a, [_float32(keras.ops.convert_to_numpy(o)) for o in out]


def _float32(a: np.ndarray) -> np.ndarray:
    """``a`` as float32 when it is a narrower float (bfloat16, float16)."""
    kind = keras.backend.standardize_dtype(a.dtype)
    return a.astype("float32") if kind in ("bfloat16", "float16") else a


def activations(model, tensors, x, batch_size: int) -> list:
    """The values of the symbolic ``tensors`` of ``model`` on all of ``x``.

    Example:
        >>> (feats,) = activations(model, [model.get_layer("r2").output], x,
        ...                        64)
    """
    parts = None
    for _, outs in iter_activations(input_extractor(model, tensors), x,
                                    batch_size):
        parts = [[] for _ in outs] if parts is None else parts
        for i, o in enumerate(outs):
            parts[i].append(o)
    return [np.concatenate(p, 0) for p in parts]


# ---------------------------------------------------------------------------
# the working copy


class PruningState:
    """A working copy of ``model`` and the channels removed from it so far.

    Removed channels are masked in place (``mask_channels``), so the copy
    computes what ``prune_channels`` of it will. Group ids and unit indices
    refer to ``graph`` (the original model's graph).

    Args:
        model: the original model (left untouched).
        graph: ``DependencyGraph(model)`` to reuse.

    Attributes:
        work: the working copy; ``work_graph`` its graph.
        removed: ``{group id: removed unit indices}``.
        keeps: ``{group id: kept unit indices}`` of the groups done.

    Example:
        >>> state = PruningState(model)
        >>> state.commit(graph.group("conv1"), keep=[0, 2, 3])
        >>> small = state.pruned_model(state.plan())
    """

    def __init__(self, model, graph: DependencyGraph | None = None):
        self.model = model
        self.graph = graph if graph is not None else DependencyGraph(model)
        # tfcomp's copier: Lambda layers keep their functions (Keras'
        # clone_model refuses to rebuild them), weights matched by name
        self.work = clone_model(model)
        copy_weights(model, self.work)
        self._original_weights = self.work.get_weights()
        self.work_graph = DependencyGraph(self.work)
        self.removed: dict = {}
        self.keeps: dict = {}
        self._view = None
        self._original_view = None

    @property
    def view(self) -> FlatView:
        """The working copy's :class:`~tfcomp.graph.replay.FlatView`: its
        own layers with nested models inlined, so every consumer's input
        and output are tensors of one functional model (built on first
        use)."""
        if self._view is None:
            self._view = FlatView(self.work, self.work_graph.parsed)
        return self._view

    @property
    def original_view(self) -> FlatView:
        """A :class:`~tfcomp.graph.replay.FlatView` of a copy of the
        original model (its outputs are the reconstruction targets; the
        user's model itself is never re-called). Built on first use."""
        if self._original_view is None:
            ref = clone_model(self.model)
            copy_weights(self.model, ref)
            self._original_view = FlatView(ref)
        return self._original_view

    def layer(self, path: str):
        """The working copy's layer at ``path`` (``outer/inner`` inside
        nested models)."""
        return self.work_graph.layer(path)

    def reset(self) -> None:
        """Back to the original weights, nothing removed."""
        self.work.set_weights(self._original_weights)
        refresh_state(self.work)
        self.removed, self.keeps = {}, {}

    def out_mask(self, path: str, size: int):
        """``(size,)`` bool, False at output filters of ``path`` already
        removed; None when none is."""
        mask = np.ones(size, bool)
        for gid, units in self.removed.items():
            for m in self.graph.group(gid).producers:
                if m.layer == path:
                    mask[m.positions(units)] = False
        return None if mask.all() else mask

    def remask(self) -> None:
        """Zeroes every removed channel again (after training steps)."""
        if self.removed:
            mask_channels(self.work, Plan.from_removed(self.graph,
                                                       self.removed),
                          inplace=True, graph=self.work_graph)

    def commit(self, group, keep, remask: bool = False) -> None:
        """Records ``keep`` as the group's kept units and masks the rest
        (every removed channel again with ``remask=True``, even when this
        group keeps all of its channels)."""
        keep = np.asarray(keep)
        self.keeps[group.id] = keep
        gone = np.setdiff1d(np.arange(group.size), keep)
        if gone.size:
            self.removed[group.id] = gone
        if gone.size or remask:
            self.remask()

    def plan(self, meta: dict | None = None) -> Plan:
        """The :class:`~tfcomp.pruning.Plan` of the groups done so far."""
        return Plan.from_keep(self.graph, self.keeps, meta=meta)

    def pruned_model(self, plan: Plan | None = None):
        """The working copy with the removed channels cut out."""
        return prune_channels(self.work, self.plan() if plan is None
                              else plan, graph=self.work_graph)

    def result(self, meta: dict, report: dict) -> tuple:
        """``(pruned_model, plan)`` at the end of a method: the plan with
        ``meta`` plus the MACs before / after (also put in ``report``)."""
        plan = self.plan(meta)
        meta["macs_before"] = int(estimate_macs(self.graph))
        meta["macs_after"] = int(estimate_macs(self.graph, plan))
        plan.meta = meta
        report["macs_before"] = meta["macs_before"]
        report["macs_after"] = meta["macs_after"]
        return self.pruned_model(plan), plan


# ---------------------------------------------------------------------------
# the reconstruction loop


class LayerwisePruner(PruningState):
    """Selection and least-squares refit, group by group (He et al. 2017).

    At construction the consumers of ``groups`` are sampled once on the
    original network: ``samples_per_image`` output locations per image and
    consumer (seeded by ``seed``, the consumer's index and the batch) and
    their original pre-activation outputs (the targets). :meth:`step` then
    gathers the same locations' input patches from the working copy, so
    earlier pruning is taken into account.

    Args:
        model: the trained original model (left untouched).
        x: float32 calibration inputs ``(N, *input_shape)`` (a list of
            them, one per input, for a model with several inputs).
        groups: the groups to prune, in topological order (groups of
            ``graph``; their consumers must be reconstructible, see
            :func:`consumer_support`).
        graph: ``DependencyGraph(model)`` to reuse.
        samples_per_image: output locations per image and consumer.
        batch_size: images per forward pass.
        ridge: see :func:`~tfcomp.pruning.reconstruction.least_squares_refit`.
        seed: seeds the location draws and ``"random"`` selection.

    Reference: He, Zhang & Sun, arXiv:1707.06168.

    Example:
        >>> pruner = LayerwisePruner(model, x, [graph.group("conv1")])
        >>> report = pruner.step(graph.group("conv1"), num_keep=8)
        >>> report["consumers"]["conv2"]["error"]
    """

    def __init__(self, model, x, groups, graph: DependencyGraph | None = None,
                 samples_per_image: int = 10, batch_size: int = 64,
                 ridge: float = 1e-6, seed: int = 0):
        graph = graph if graph is not None else DependencyGraph(model)
        self.groups = list(groups)
        self.x = x
        self.samples_per_image = int(samples_per_image)
        self.batch_size = int(batch_size)
        self.ridge, self.seed = ridge, int(seed)
        self.paths = {g.id: consumer_layers(g) for g in self.groups}
        consumers = []
        for g in self.groups:
            for p in self.paths[g.id]:
                if p not in consumers:
                    consumers.append(p)
        super().__init__(model, graph)
        self._extractors: dict = {}
        self._sample_targets(consumers)

    def _sample_targets(self, consumers) -> None:
        """Locations and original outputs of every consumer, drawn once
        (on the working copy before anything is removed: the original)."""
        orig = {p: self.layer(p) for p in consumers}
        weights = {p: layer_kernel(orig[p]) for p in consumers}
        self.locations = {p: [] for p in consumers}
        targets = {p: [] for p in consumers}
        view = self.view
        ext = input_extractor(view, [view.input_of(p) for p in consumers])
        for a, outs in iter_activations(ext, self.x, self.batch_size):
            for ci, (p, arr) in enumerate(zip(consumers, outs)):
                rs = np.random.SeedSequence([self.seed, ci, a]
                                            ).generate_state(1)
                patches, loc = sample_patches(orig[p], arr,
                                              self.samples_per_image,
                                              int(rs[0]))
                w0, b0 = weights[p]
                y = np.einsum("mkp,kpn->mn", patches, w0, optimize=True)
                if b0 is not None:
                    y = y + b0
                self.locations[p].append(loc)
                targets[p].append(y.astype("float32"))
        self.targets = {p: np.concatenate(v, 0) for p, v in targets.items()}

    def samples(self, group) -> list:
        """One :class:`LayerSamples` per consumer of ``group``: patches from
        the working copy at the drawn locations, targets from the original.
        """
        paths = self.paths[group.id]
        layers = [self.layer(p) for p in paths]
        ext = self._extractors.get(group.id)
        if ext is None:
            view = self.view
            ext = input_extractor(view, [view.input_of(p) for p in paths])
            self._extractors[group.id] = ext
        patches: dict = {p: [] for p in paths}
        for a, outs in iter_activations(ext, self.x, self.batch_size):
            bi = a // self.batch_size
            for p, lay, arr in zip(paths, layers, outs):
                pt, _ = sample_patches(lay, arr,
                                       locations=self.locations[p][bi])
                patches[p].append(pt)
        out = []
        for p, lay in zip(paths, layers):
            w, b = layer_kernel(lay)
            out.append(LayerSamples(
                x=np.concatenate(patches[p], 0), y=self.targets[p],
                kernel=w, bias=b, units=consumer_units(group, p, lay),
                layer=p, kernel_shape=dense_shape(lay),
                out_mask=self.out_mask(p, w.shape[2]),
                connect=connections(lay)))
        return out

    def refit(self, samples: list, keep, report: bool = True):
        """Least-squares refit of every consumer on ``keep``, assigned to the
        working copy. Returns ``{layer: {"error", "error_zeroed"}}`` (the
        relative errors after the refit and with plain zeroing) when
        ``report``, else None."""
        errors = {} if report else None
        for s in samples:
            kernel, bias, pos = least_squares_refit(s, keep, self.ridge)
            if report:
                zeroed = np.zeros_like(s.kernel)
                zeroed[:, pos, :] = s.kernel[:, pos, :]
                errors[s.layer] = {
                    "error": reconstruction_error(s.x, s.y, kernel, bias,
                                                  s.out_mask),
                    "error_zeroed": reconstruction_error(
                        s.x, s.y, zeroed, s.bias, s.out_mask)}
            lay = self.layer(s.layer)
            kernel_variable(lay).assign(from_dense(lay, kernel))
            if bias is not None:
                lay.bias.assign(bias.astype("float32"))
        return errors

    def step(self, group, num_keep: int, selector="lasso",
             report: bool = True, samples: list | None = None):
        """Samples, selects ``num_keep`` channels, refits and masks one group.

        Args:
            group: the next group (in topological order).
            num_keep: channels to keep.
            selector: ``"lasso"``, ``"l1"``, ``"random"`` or scores.
            report: compute the per-consumer errors (costs two passes over
                the samples).
            samples: :meth:`samples` of ``group`` taken in the working
                copy's present state (e.g. after each :meth:`reset`, once
                for several keep counts); None samples now.

        Returns:
            With ``report``, ``{"size", "kept", "consumers", "alpha",
            "exact", "bisect_iterations"}`` (the LASSO's keys when it ran);
            else the kept unit indices.
        """
        if samples is None:
            samples = self.samples(group)
        keep, info = select_channels(samples, num_keep, selector, self.seed)
        errors = self.refit(samples, keep, report)
        self.commit(group, keep)
        if not report:
            return np.asarray(keep)
        return {"size": group.size, "kept": int(len(keep)),
                "consumers": errors,
                **{k: v for k, v in info.items()
                   if k in ("alpha", "exact", "bisect_iterations")}}


# ---------------------------------------------------------------------------
# targets of the reconstruction methods


def reconstruction_targets(graph, ratio, *, target_macs=None,
                           round_to: int = 1, ignored_layers=None,
                           groups=None, what: str = "lasso_prune") -> tuple:
    """Kept channel counts for a reconstruction method: the groups whose
    consumers can be refit, through :func:`tfcomp.pruning.targets.resolve`.

    A float ``ratio`` / ``target_macs`` applies to the prunable groups
    (or ``groups``) whose consumers are convolutions (grouped, transposed,
    1-3D) or ``Dense`` called once (:func:`~.kernels.consumer_kind`); the
    others are skipped with the reason. Groups named in a ratio dict or in
    ``groups`` must be reconstructible.

    Returns:
        ``(targets, skipped)``: a :class:`tfcomp.pruning.targets.Targets`
        (``.keep``: ``{group id: kept count}``, ``.ratio``: the ratio used)
        and ``{group id: reason}``.

    Raises:
        ValueError: no reconstructible group, a named group that cannot be
            pruned or refit, and the resolver's errors.

    Example:
        >>> t, skipped = reconstruction_targets(graph, 0.5, round_to=8)
        >>> t.keep
    """
    if isinstance(ratio, dict):
        if not ratio:
            raise ValueError(f"{what}: ratio dict is empty.")
        if target_macs is None and groups is None:
            for key in ratio:
                g = tg.group_for_key(graph, key)
                why = (f"it cannot be pruned: {g.reason}" if not g.prunable
                       else consumer_support(graph, g))
                if why is not None:
                    raise ValueError(f"Group {g.id!r} (from ratio key "
                                     f"{key!r}) cannot be reconstructed: "
                                     f"{why}.")
        return tg.resolve(graph, ratio, target_macs=target_macs,
                          round_to=round_to, ignored_layers=ignored_layers,
                          groups=groups), {}
    candidates = reconstructible_groups(graph, groups, ignored_layers, what)
    found = tg.resolve(graph, ratio, target_macs=target_macs,
                       round_to=round_to,
                       groups=[g.id for g in candidates[0]])
    return found, candidates[1]


def reconstructible_groups(graph, groups=None, ignored_layers=None,
                           what: str = "lasso_prune") -> tuple:
    """``(groups, skipped)``: the prunable groups (or ``groups``) whose
    consumers can be refit, in topological order, and ``{group id: reason}``
    for the others (``ignored_layers`` leave groups out silently).

    Example:
        >>> todo, skipped = reconstructible_groups(graph)
    """
    ignored = tg.ignored_group_ids(graph, ignored_layers)
    if groups is None:
        candidates = [g for g in graph.prunable_groups if g.id not in ignored]
    else:
        candidates = []
        for key in [groups] if isinstance(groups, str) else groups:
            g = tg.group_for_key(graph, key)
            if not g.prunable:
                raise ValueError(f"Group {g.id!r} cannot be pruned: "
                                 f"{g.reason}.")
            if g not in candidates and g.id not in ignored:
                candidates.append(g)
    todo, skipped = [], {}
    for g in candidates:
        why = consumer_support(graph, g)
        if why is None:
            todo.append(g)
        elif groups is not None:
            raise ValueError(f"Group {g.id!r} cannot be reconstructed: "
                             f"{why}.")
        else:
            skipped[g.id] = why
    if not todo:
        raise ValueError(
            f"{what}: model {graph.model.name!r} has no prunable group whose"
            f" consumers can be reconstructed. Skipped: {skipped}")
    return todo, skipped
