"""FPGM: soft filter pruning via the geometric median, as a Keras callback.

How it runs (He et al., CVPR 2019, and their official code):

1. Before the first epoch and at the end of every ``update_every_epochs``
   epochs, for every coupled channel group of the
   :class:`tfcomp.graph.DependencyGraph` (a conv's filters with its BN; all
   the convs feeding one residual sum), the ``floor(N * ratio)`` channels
   chosen by the criterion are selected: ``fpgm`` takes those with the
   smallest summed Euclidean distance to the other filters (nearest the
   geometric median, the most replaceable); ``fpgm_mix`` first takes 10%
   by smallest L2 norm, then the rest by the distance criterion computed
   among the remaining filters (the official code's order); ``l1`` / ``l2``
   take the smallest norms.
2. The selected channels' producer filters and biases are set to zero and
   their ``channel_mask`` entries to 0 in every producer *and* every BN /
   depthwise layer of the group, so the channel is exactly 0 wherever it
   appears (needed for residual sums, and so that :func:`strip_pruning`
   can remove
   it without changing the outputs).
   Recurrent layers (``apply_fpgm`` masks LSTM / GRU / SimpleRNN,
   ConvLSTM1D/2D/3D and Bidirectional of them): a unit's (a ConvLSTM's:
   a filter's) weights are its column in every gate block of both kernels
   plus its recurrent-kernel row (distances added); one mask entry per
   unit zeroes all its gate columns, in both directions of a
   Bidirectional. Embedding (``MaskedEmbedding``): output channel ``j``'s
   filter is the table's column ``embeddings[:, j]`` (``input_dim``
   values).
3. Soft: the selection is recomputed from the current weights at every
   update, with no memory of the previous one, so a channel pruned in one
   epoch can return in a later one.

**Gradient masking and how a channel returns** (``mask_gradients=True``,
the official FPGM code's behaviour). During an epoch the masked layers
multiply their outputs by the mask, so the zeroed filters receive exactly
zero gradient with any optimizer (and the projection installed by the
masked layers keeps them at exactly 0 despite momentum / Adam state). A
zeroed filter therefore cannot regrow *during* the epoch; it comes back
only by being *de-selected* at the next update, when the criterion is
recomputed on the current weights: the filters that trained during the
epoch move, the geometric median moves, and a different set of filters may
become the most replaceable. A de-selected channel restarts from its
zeroed filter, but its BN ``gamma`` / ``beta`` were masked only in the
forward pass (never zeroed), so the next epoch's gradient reaches it
through the BN (whose zero-variance normalisation amplifies it) and it
regrows, as in the official code. As there, regrowth needs a path for the
gradient: with a ReLU after the BN and ``beta <= 0`` the constant output
sits where ReLU's gradient is 0 and the channel stays dead. With
``mask_gradients=False`` (SFP-style) the mask is switched off while an
epoch trains (``mask_active = 0``): zeroed filters get full gradients and
may regrow before the next selection; the mask is switched back on for
validation, at every epoch end and after training, so the model you
evaluate or strip is always the masked one.

Deviation from the paper for CPU scale and coupled graphs: one selection
per coupled group (the paper prunes conv layers independently, which does
not give a consistent compact model with residual sums); distances are
computed on the producers' filters side by side.

Reference: He et al., Filter Pruning via Geometric Median for Deep
Convolutional Neural Networks Acceleration, CVPR 2019, arXiv:1811.00250;
He et al., Soft Filter Pruning, IJCAI 2018, arXiv:1808.06866.

Example:
    >>> model = tfcomp.pruning.apply_fpgm(tfcomp.zoo.resnet(depth=20))
    >>> model.compile(keras.optimizers.SGD(0.01, momentum=0.9),
    ...               "sparse_categorical_crossentropy", metrics=["accuracy"])
    >>> model.fit(x, y, epochs=10,
    ...           callbacks=[tfcomp.pruning.FPGMPruning(ratio=0.4)])
    >>> small = tfcomp.pruning.strip_pruning(model)
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable

import keras
import numpy as np
from scipy.spatial.distance import cdist

from tfcomp._io import check_positive_int
from tfcomp.graph import PRODUCER, DependencyGraph
from tfcomp.graph.walk import iter_leaf_layers
from tfcomp.layers.masked import MaskedLayer
from tfcomp.layers.masked_recurrent import MaskedRecurrent
from tfcomp.pruning import importance as imp
from tfcomp.pruning._time_distributed import masked_or_self
from tfcomp.pruning.targets import (
    ChannelMacs,
    check_ratio,
    check_target_macs,
    ignored_group_ids,
    resolve,
)
from tfcomp.pruning.wrappers import (
    masked_layers,
    needs_pass_through_mask,
    pruning_target,
)

__all__ = ["CRITERIA", "FPGMPruning", "channels_to_remove", "select_channels"]

logger = logging.getLogger("tfcomp.pruning")

CRITERIA = ("fpgm", "fpgm_mix", "l1", "l2", "random")
_BISECTION_STEPS = 20  # FPGM's own search used 20 halvings (kept: same masks)


def _deprecated(old: str, new: str) -> None:
    warnings.warn(f"{old} is deprecated; use {new}.", DeprecationWarning,
                  stacklevel=3)


def _gm_scores_among(group, units: np.ndarray) -> np.ndarray:
    """Summed distances to the other filters, restricted to ``units``,
    added over the group's producers (like ``importance.fpgm``)."""
    total = np.zeros(len(units))
    found = False
    for m in group.producers:
        r = group.member_matrix(m)
        if r is None:
            continue
        mat, covered = r
        sub = units[covered[units]]
        if sub.size == 0:
            continue
        w = mat[sub].astype("float64")
        s = cdist(w, w).sum(axis=1)
        full = np.full(len(units), s.mean())
        full[np.isin(units, sub)] = s
        total += full
        found = True
    if not found:
        raise ValueError(f"Group {group.id!r} has no producer weights.")
    return total


def channels_to_remove(group, n_remove: int, criterion="fpgm",
                       mix_norm_ratio: float = 0.1, seed: int = 0
                       ) -> np.ndarray:
    """Unit indices of ``group`` to remove (mask), by criterion (sorted).

    Args:
        group: a :class:`tfcomp.graph.Group`.
        n_remove: how many units to select.
        criterion: ``fpgm``, ``fpgm_mix``, ``l1``, ``l2``, ``random`` or a
            callable ``group -> scores`` (lowest scores are selected).
        mix_norm_ratio: for ``fpgm_mix``, the fraction of the group's
            channels taken by smallest L2 norm first.
        seed: seed of ``random``.

    Returns:
        Sorted int array of ``n_remove`` units.

    Example:
        >>> channels_to_remove(graph.group("conv1"), 4, "fpgm")
    """
    n_remove = int(n_remove)
    if n_remove <= 0:
        return np.zeros(0, dtype=int)
    if criterion == "fpgm_mix":
        n_norm = min(n_remove, int(math.floor(group.size * mix_norm_ratio
                                              + 1e-9)))
        norm_order = np.argsort(imp.l2(group), kind="stable")
        by_norm = norm_order[:n_norm]
        rest = np.sort(norm_order[n_norm:])
        scores = _gm_scores_among(group, rest)
        by_dist = rest[np.argsort(scores, kind="stable")]
        return group.pick_removal(np.concatenate([by_norm, by_dist]),
                                  n_remove)
    if criterion == "fpgm":
        scores = _gm_scores_among(group, np.arange(group.size))
    elif callable(criterion):
        scores = np.asarray(criterion(group), dtype="float64").ravel()
    else:
        scores = np.asarray(imp.get(criterion, seed=seed)(group),
                            dtype="float64").ravel()
    if scores.shape != (group.size,):
        raise ValueError(
            f"criterion returned {scores.shape} scores for group "
            f"{group.id!r} of size {group.size}.")
    return group.pick_removal(np.argsort(scores, kind="stable"), n_remove)


def select_channels(*args, **kwargs) -> np.ndarray:
    """Deprecated alias of :func:`channels_to_remove` (it returns the
    channels to *remove*, unlike
    ``tfcomp.pruning.reconstruction.select_channels``)."""
    _deprecated("tfcomp.pruning.fpgm.select_channels", "channels_to_remove")
    if "mix_norm_rate" in kwargs:
        kwargs["mix_norm_ratio"] = kwargs.pop("mix_norm_rate")
    return channels_to_remove(*args, **kwargs)


class _GroupInfo:
    """One managed group: which masked layers / positions carry it."""

    def __init__(self, group, outputs, producers):
        self.group = group
        self.outputs = outputs      # [(layer, member)] output-masked
        self.producers = producers  # [(layer, member)] zeroed filters


class FPGMPruning(keras.callbacks.Callback):
    """Keras callback: soft filter pruning per coupled group (FPGM).

    Works on a model prepared with :func:`tfcomp.pruning.apply_fpgm`. All
    state (masks, whether they are active) lives in layer variables, so
    ``ModelCheckpoint`` / ``.keras`` files resume it, and under
    ``tf.distribute.MirroredStrategy`` the masks are mirrored variables
    written between steps.

    Args:
        ratio: fraction P of channels masked in every managed group
            (``floor(N * P)`` each), in [0, 1).
        criterion: ``fpgm`` (default), ``fpgm_mix``, ``l1``, ``l2``,
            ``random`` (a fixed seeded selection, a baseline) or a callable
            ``group -> scores``.
        target_macs: optional MACs budget of the compact model (a fraction
            of the dense MACs if <= 1, else absolute); the ratio is then
            the smallest uniform ratio whose compact model meets it
            (:func:`tfcomp.pruning.targets.resolve`).
        ignored_layers: names of producer layers whose channel groups are
            left whole (a group is skipped when any of its producers is
            named), or group ids.
        update_every_epochs: epochs between re-selections (the official
            code: 1). The last epoch always updates.
        mask_gradients: zero the gradients of masked filters during the
            epoch (official FPGM); False gives SFP-style free regrowth.
        mix_norm_ratio: share of channels chosen by L2 norm in ``fpgm_mix``
            (the paper: 10%).
        seed: seed of ``criterion="random"``.
        verbose: 1 prints a line per update.
        round_to: kept channel counts are multiples of this (capped at the
            group size).
        rate: deprecated name of ``ratio``.
        skip: deprecated name of ``ignored_layers``.
        mix_norm_rate: deprecated name of ``mix_norm_ratio``.

    Attributes:
        history: one record per update: epoch, ratio, masked units per
            group, estimated compact MACs.
        skipped: ``{group_id: reason}`` for groups left whole.
        effective_ratio: the ratio in use (found from ``target_macs``).
        keep: ``{group_id: kept channels}`` of every managed group.

    Raises:
        ValueError: bad arguments; (in ``on_train_begin``) a model without
            channel-masked layers, or nothing prunable.

    Reference: He et al., CVPR 2019, arXiv:1811.00250. Paper defaults (CIFAR,
    200 epochs, lr 0.1 scratch / 0.01 pretrained, wd 5e-4, batch 128) are a
    training recipe, not callback arguments; use fewer epochs on a CPU.

    Example:
        >>> model = tfcomp.pruning.apply_fpgm(model)
        >>> model.compile("sgd", "sparse_categorical_crossentropy")
        >>> model.fit(x, y, epochs=4,
        ...           callbacks=[FPGMPruning(target_macs=0.5)])
    """

    def __init__(self, ratio: float = 0.4,
                 criterion: str | Callable = "fpgm",
                 target_macs: float | None = None, ignored_layers=(),
                 update_every_epochs: int = 1, mask_gradients: bool = True,
                 mix_norm_ratio: float = 0.1, seed: int = 0,
                 verbose: int = 0, round_to: int = 1, *, rate=None,
                 skip=None, mix_norm_rate=None):
        super().__init__()
        name = "ratio"
        if rate is not None:
            _deprecated("FPGMPruning(rate=...)", "ratio=")
            ratio, name = rate, "rate"
        self.ratio = check_ratio(ratio, name)
        if not callable(criterion) and criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {CRITERIA} or a "
                             f"callable. Received: criterion={criterion!r}")
        self.criterion = criterion
        if target_macs is not None:
            check_target_macs(target_macs)  # NaN / inf / a string: error
        self.target_macs = target_macs
        if skip is not None:
            _deprecated("FPGMPruning(skip=...)", "ignored_layers=")
            ignored_layers = skip
        if isinstance(ignored_layers, str):
            ignored_layers = (ignored_layers,)
        self.ignored_layers = tuple(ignored_layers or ())
        self.update_every_epochs = check_positive_int(
            update_every_epochs, "update_every_epochs")
        self.mask_gradients = bool(mask_gradients)
        if mix_norm_rate is not None:
            _deprecated("FPGMPruning(mix_norm_rate=...)", "mix_norm_ratio=")
            mix_norm_ratio = mix_norm_rate
        self.mix_norm_ratio = check_ratio(mix_norm_ratio, "mix_norm_ratio")
        self.seed = check_positive_int(seed, "seed", minimum=0)
        self.verbose = int(verbose) if isinstance(verbose, bool) else \
            check_positive_int(verbose, "verbose", minimum=0)
        self.round_to = check_positive_int(round_to, "round_to")
        self.history: list = []
        self.skipped: dict = {}
        self.keep: dict = {}
        self._groups: list = []
        self._layers: list = []
        self._graph = None
        self._cost = None
        self._in_epoch = False
        self.effective_ratio = self.ratio

    # -- deprecated names ------------------------------------------------
    @property
    def rate(self) -> float:
        """Deprecated: use ``ratio``."""
        _deprecated("FPGMPruning.rate", "ratio")
        return self.ratio

    @property
    def effective_rate(self) -> float:
        """Deprecated: use ``effective_ratio``."""
        _deprecated("FPGMPruning.effective_rate", "effective_ratio")
        return self.effective_ratio

    @property
    def skip(self) -> tuple:
        """Deprecated: use ``ignored_layers``."""
        _deprecated("FPGMPruning.skip", "ignored_layers")
        return self.ignored_layers

    # -- setup -----------------------------------------------------------
    def _setup(self, model) -> None:
        model = pruning_target(model)
        self._layers = masked_layers(model, "channel")
        if not self._layers:
            raise ValueError(
                f"FPGMPruning: model {model.name!r} has no channel-masked "
                "layers. Prepare it first: model = tfcomp.pruning."
                "apply_fpgm(model), then compile and fit.")
        graph = DependencyGraph(model)
        layers = {p: masked_or_self(lyr)  # TimeDistributed: the inner one
                  for p, lyr in iter_leaf_layers(model)}
        self._graph = graph
        self._cost = None
        self._groups = []
        self.skipped = {}
        ignored = ignored_group_ids(graph, self.ignored_layers)
        for g in graph.groups:
            if not g.prunable:
                self.skipped[g.id] = g.reason
                continue
            if g.id in ignored:
                self.skipped[g.id] = "skipped by the user"
                continue
            info, reason = self._group_info(g, layers)
            if info is None:
                self.skipped[g.id] = reason
            else:
                self._groups.append(info)
        if not self._groups:
            reasons = "; ".join(f"{k}: {v}" for k, v in
                                list(self.skipped.items())[:6])
            raise ValueError(
                f"FPGMPruning: nothing prunable in model {model.name!r} "
                f"(no group of coupled channels can be masked). {reasons}")
        for gid, reason in self.skipped.items():
            logger.info("FPGMPruning: group %r left whole: %s", gid, reason)

    @staticmethod
    def _group_info(g, layers):
        outputs, producers = [], []
        for m in g.members:
            layer = layers.get(m.layer)
            if m.role == PRODUCER:
                if not isinstance(layer, MaskedLayer) or \
                        not layer.channel_mask:
                    return None, (f"producer {m.layer!r} has no channel mask"
                                  " (not wrapped by apply_fpgm)")
                if m.port == "gates" and isinstance(layer, MaskedRecurrent):
                    # a unit's gate columns: zeroed with it; its mask is
                    # the "out" member's (one entry per unit)
                    producers.append((layer, m))
                    continue
                if m.port not in ("out", "channels"):
                    return None, f"producer port {m.port!r} not supported"
                outputs.append((layer, m))
                producers.append((layer, m))
            elif needs_pass_through_mask(m, layer):
                if not isinstance(layer, MaskedLayer) or \
                        not layer.channel_mask:
                    return None, (f"{m.layer!r} ({m.layer_type}) has "
                                  "per-channel weights but no channel mask")
                outputs.append((layer, m))
        if not producers:
            return None, "no producer"
        return _GroupInfo(g, outputs, producers), None

    def _resolve_targets(self) -> None:
        """Kept counts of the managed groups (one resolver for all
        methods): ``ratio`` or the smallest uniform ratio meeting
        ``target_macs``, rounded to ``round_to``.

        FPGM keeps its historical 20 bisection steps, so its budgets (and
        published figures) reproduce; the ratio may then sit up to 1e-6
        above the smallest one, removing a channel more in a few groups.
        """
        found = resolve(
            self._graph, self.ratio, target_macs=self.target_macs,
            round_to=self.round_to,
            groups=[info.group.id for info in self._groups],
            bisection_steps=_BISECTION_STEPS)
        self.effective_ratio = found.ratio
        self.keep = found.keep

    # -- masks -----------------------------------------------------------
    def _set_active(self, value: float) -> None:
        for layer in self._layers:
            layer.mask_active.assign(value)

    def _current_masked(self) -> int:
        return int(sum(np.count_nonzero(
            keras.ops.convert_to_numpy(lyr.channel_mask_var) == 0)
            for lyr in self._layers))

    def update_masks(self, epoch: int | None = None) -> dict:
        """Recomputes the selection of every managed group now.

        Returns:
            ``{group_id: masked unit indices}``.

        Example:
            >>> cb = FPGMPruning(0.5); cb.set_model(model)
            >>> cb.update_masks()
        """
        if self._graph is None:
            self._setup(self.model)
            self._resolve_targets()
        masks = {}
        for layer in self._layers:
            masks[id(layer)] = np.ones(
                tuple(layer.channel_mask_var.shape), "float32")
        kernels = {}
        selected = {}
        for info in self._groups:
            g = info.group
            units = channels_to_remove(g, g.size - self.keep[g.id],
                                       self.criterion,
                                       self.mix_norm_ratio, self.seed)
            selected[g.id] = units
            if units.size == 0:
                continue
            for layer, m in info.outputs:
                masks[id(layer)][m.positions(units)] = 0.0
            for layer, m in info.producers:
                pos = m.positions(units)
                for spec in m.weights:
                    name, axis = spec[0], int(spec[1])
                    # every variable of the name (a Bidirectional has two)
                    for var in (v for v in layer.weights if v.name == name):
                        if id(var) not in kernels:
                            kernels[id(var)] = (
                                var, keras.ops.convert_to_numpy(var))
                        arr = kernels[id(var)][1]
                        idx = [slice(None)] * arr.ndim
                        idx[axis] = pos
                        arr[tuple(idx)] = 0.0
        for layer in self._layers:
            layer.channel_mask_var.assign(masks[id(layer)])
        for var, arr in kernels.values():
            var.assign(arr)
        record = {"epoch": epoch, "ratio": self.effective_ratio,
                  "masked": {k: v.tolist() for k, v in selected.items()},
                  "num_masked": int(sum(v.size for v in selected.values()))}
        record["macs"] = self._compact_macs(selected)
        self.history.append(record)
        if self.verbose:
            print(f"FPGMPruning: epoch {epoch}: masked "
                  f"{record['num_masked']} channels in {len(selected)} "
                  f"groups; compact MACs {record['macs']:,}")
        return selected

    def _compact_macs(self, selected) -> int:
        if self._cost is None:
            self._cost = ChannelMacs(self._graph)
        graph = self._graph
        return self._cost.removed_macs(
            {graph.group(k).index: v for k, v in selected.items() if v.size})

    # -- callback hooks --------------------------------------------------
    def on_train_begin(self, logs=None):
        self._setup(self.model)
        self._resolve_targets()
        if self.target_macs is not None:
            logger.info("FPGMPruning: target_macs=%s -> ratio %.4f",
                        self.target_macs, self.effective_ratio)
        if self._current_masked() == 0:
            # fresh start: prune before the first epoch (official code)
            self.update_masks(epoch=-1)
        self._set_active(1.0)

    def on_epoch_begin(self, epoch, logs=None):
        self._in_epoch = True
        if not self.mask_gradients:
            self._set_active(0.0)

    def on_test_begin(self, logs=None):
        if self._in_epoch and not self.mask_gradients:
            self._set_active(1.0)

    def on_test_end(self, logs=None):
        if self._in_epoch and not self.mask_gradients:
            self._set_active(0.0)

    def on_epoch_end(self, epoch, logs=None):
        self._in_epoch = False
        last = self.params.get("epochs") if self.params else None
        if (epoch + 1) % self.update_every_epochs == 0 or (
                last is not None and epoch == last - 1):
            self.update_masks(epoch=epoch)
        self._set_active(1.0)
        if logs is not None and self.history:
            logs["pruned_macs"] = float(self.history[-1]["macs"])

    def on_train_end(self, logs=None):
        self._in_epoch = False
        self._set_active(1.0)
