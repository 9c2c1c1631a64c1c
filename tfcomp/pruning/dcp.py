"""DCP: discrimination-aware channel pruning.

``dcp_prune`` splits the network into stages, attaches an auxiliary
classifier to the end of every stage but the last (the last stage uses the
model's own classifier), and prunes the groups of each stage by greedy
channel *addition*: starting from no channel, it repeatedly adds the
channel whose weights have the largest gradient (Frobenius norm) of

    L = L_M + lam * L_S,

``L_M`` being the reconstruction MSE of the consumers' outputs against the
original network and ``L_S`` the stage's auxiliary cross-entropy, and after
each addition runs a short masked SGD on the kept channels' weights. The
returned model contains no auxiliary head.

Reference: Zhuang et al., Discrimination-aware Channel Pruning for Deep
Neural Networks, NeurIPS 2018, arXiv:1810.11809.

Example:
    >>> small, plan = tfcomp.pruning.dcp_prune(model, (x, y), ratio=0.5)
"""

from __future__ import annotations

import math

import keras
import numpy as np

from tfcomp._batches import rows
from tfcomp._finetune import finetune_loss, loss_callable
from tfcomp._io import as_arrays, check_positive_int
from tfcomp._score import is_targets
from tfcomp._unpinned import unpinned
from tfcomp.graph import DependencyGraph
from tfcomp.pruning.dcp_greedy import GreedyGroup, GreedySettings, Stage
from tfcomp.pruning.reconstruction.engine import (
    PruningState,
    activations,
    check_model,
    consumer_layers,
    reconstruction_targets,
)
from tfcomp.pruning.result import finish, legacy_data

__all__ = ["dcp_prune", "find_stage_ends"]

_AUX_PREFIX = "dcp_aux"


def _flat_graph(model, graph: DependencyGraph | None = None):
    """The model's graph (nested models read through); shared layers are
    refused."""
    graph = graph if graph is not None else DependencyGraph(model)
    parsed = graph.parsed
    if parsed.shared_layers:
        raise ValueError(f"dcp_prune needs every layer called exactly once; "
                         f"layer {parsed.shared_layers[0]!r} is called "
                         f"{len(parsed.nodes_of(parsed.shared_layers[0]))} "
                         "times.")
    return graph


def find_stage_ends(model: keras.Model, num_stages: int = 3) -> list:
    """Layer names whose outputs end the first ``num_stages - 1`` stages.

    Candidates are the *cut* tensors of the graph (every path from the input
    to the output goes through them, e.g. the output of a residual block)
    that have spatial axes and come right before a downsampling; when there
    are fewer of those than needed, any spatial cut tensor is used. The
    chosen candidates split the candidate list evenly. The last stage ends
    at the model output (its own classifier), so ``num_stages=1`` gives
    ``[]``.

    Args:
        model: a functional model (layers called once; nested models are
            read through, so a stage may end inside one).
        num_stages: number of stages ``P`` (the paper's 3 for ResNet, 2
            for VGG).

    Returns:
        Up to ``num_stages - 1`` layer names, in order.

    Example:
        >>> find_stage_ends(tfcomp.zoo.resnet(depth=20), 3)
        ['s1b3_out', 's2b3_out']
    """
    if isinstance(num_stages, bool) or int(num_stages) < 1:
        raise ValueError(f"num_stages must be >= 1. Received: "
                         f"num_stages={num_stages!r}")
    parsed = _flat_graph(model).parsed
    nodes = [n for n in parsed.nodes if n.inputs]  # no InputLayer
    last_use = {}
    for j, n in enumerate(nodes):
        for t in n.inputs:
            last_use[t] = j
    outputs = set(parsed.outputs)
    cuts = []
    for i, n in enumerate(nodes):
        if len(n.outputs) != 1 or n.outputs[0] in outputs:
            continue
        t = n.outputs[0]
        if t not in last_use or len(parsed.shapes[t]) < 3:
            continue
        crossing = any(last_use.get(u, -1) > i
                       for m in nodes[:i] for u in m.outputs)
        crossing = crossing or any(last_use.get(u, -1) > i
                                   for u in parsed.inputs)
        if not crossing:
            cuts.append(n)
    before_down = []
    for a, b in zip(cuts, cuts[1:]):
        sa = parsed.shapes[a.outputs[0]][1:-1]
        sb = parsed.shapes[b.outputs[0]][1:-1]
        if None not in sa and None not in sb and math.prod(sb) < \
                math.prod(sa):
            before_down.append(a)
    cands = before_down if len(before_down) >= num_stages - 1 else cuts
    k = int(num_stages) - 1
    if k <= 0 or not cands:
        return []
    if len(cands) <= k:
        return [c.path for c in cands]
    picks = []
    for j in range(k):
        idx = int(round((j + 1) * len(cands) / (k + 1))) - 1
        idx = min(max(idx, 0), len(cands) - 1)
        if cands[idx].path not in picks:
            picks.append(cands[idx].path)
    return picks


def _kind(model, y) -> str:
    """What ``y`` asks of ``model``'s output, read as ``finetune_loss``
    reads it: "regression" for float targets, "binary" for one 0 / 1 label
    per output unit, else "classification"."""
    loss = finetune_loss(model, y)
    if is_targets(y):
        return "regression"
    return "binary" if isinstance(
        loss, keras.losses.BinaryCrossentropy) else "classification"


# the auxiliary heads' losses (a head outputs logits, or a regression's
# values): not in the paper, which classifies
_HEAD_LOSSES = {
    "classification": lambda: keras.losses.SparseCategoricalCrossentropy(
        from_logits=True),
    "binary": lambda: keras.losses.BinaryCrossentropy(from_logits=True),
    "regression": keras.losses.MeanSquaredError,
}


def _make_head(shape, num_classes: int, name: str,
               label_shape: tuple = ()) -> keras.Model:
    """AvgPool(ReLU(BN(x))) -> Dense (the paper's auxiliary classifier).

    With per-position labels (``label_shape``: their spatial size, e.g. a
    segmentation mask) the head stays per position instead (not in the
    paper, which classifies images): ReLU(BN(x)) -> 1x1 convolution ->
    bilinear resize (2-D) / upsampling (1-D) to the labels' size.
    """
    inp = keras.Input(shape[1:])
    h = keras.layers.BatchNormalization(name=f"{name}_bn")(inp)
    h = keras.layers.ReLU(name=f"{name}_relu")(h)
    spatial = tuple(int(d) for d in shape[1:-1])
    if label_shape:
        label_shape = tuple(int(d) for d in label_shape)
        if len(spatial) == 2 and len(label_shape) == 2:
            h = keras.layers.Conv2D(num_classes, 1, name=f"{name}_fc")(h)
            out = keras.layers.Resizing(*label_shape,
                                        name=f"{name}_resize")(h)
        elif (len(spatial) == 1 and len(label_shape) == 1
              and label_shape[0] % spatial[0] == 0):
            h = keras.layers.Conv1D(num_classes, 1, name=f"{name}_fc")(h)
            out = keras.layers.UpSampling1D(label_shape[0] // spatial[0],
                                            name=f"{name}_up")(h)
        else:
            raise ValueError(
                f"dcp_prune: per-position labels of shape {label_shape} "
                f"cannot be predicted from stage features of shape "
                f"{spatial} by an auxiliary head (2-D maps, or 1-D "
                "sequences whose length divides the labels'). Pass "
                "num_stages=1 (the final loss only) or stage_ends.")
        return keras.Model(inp, out, name=name)
    if len(shape) == 4:
        h = keras.layers.GlobalAveragePooling2D(name=f"{name}_pool")(h)
    elif len(shape) == 3:
        h = keras.layers.GlobalAveragePooling1D(name=f"{name}_pool")(h)
    out = keras.layers.Dense(num_classes, name=f"{name}_fc")(h)
    return keras.Model(inp, out, name=name)


class _MaskCallback(keras.callbacks.Callback):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def on_train_batch_end(self, batch, logs=None):
        self.fn()


# ---------------------------------------------------------------------------


def dcp_prune(model: keras.Model, calibration_data=None,
              ratio: float | dict = 0.5, *, num_stages: int = 3,
              lam: float = 1.0, finetune_epochs: int = 1,
              head_epochs: int = 3, stage_ends: list | None = None,
              groups=None, target_macs: float | None = None,
              round_to: int = 1, ignored_layers=None,
              max_images: int | None = 512, batch_size: int = 64,
              sgd_steps: int = 10, grad_batches: int = 2,
              eval_batches: int = 2, lr: float = 0.01,
              momentum: float = 0.9, weight_decay: float = 1e-4,
              seed: int = 0, verbose: int = 1,
              return_info: bool | None = None, data=None):
    """Discrimination-aware channel pruning (Zhuang et al. 2018).

    1. Stages: the network is cut into ``num_stages`` stages
       (:func:`find_stage_ends`, or ``stage_ends``); an auxiliary head
       ``AvgPool(ReLU(BN(.))) -> Dense`` is attached to the end of every
       stage but the last, which uses the model's own classifier.
    2. Per stage ``p``: the head is trained on the current network's stage
       features (``head_epochs``), then, if ``finetune_epochs > 0``, the
       network and head are fine-tuned together with ``L_S^p + L_final``
       (removed channels stay zero).
    3. Per group of stage ``p`` (a group belongs to the stage of its last
       consumer): ``L = L_M + lam * L_S^p`` with ``L_M`` = 0.5 x mean
       squared error of the consumers' outputs against the original
       network, ``L_S^p`` the head's cross-entropy. Greedy addition from
       ``A = {}``: gradient ``G = dL/dW`` of the consumers' kernels, add
       ``k = argmax_{j not in A} ||G_j||_F`` (summed over consumers for
       coupled groups), warm-start ``W_k`` from the pre-pruning weights
       (or 0, whichever gives the lower loss), then ``sgd_steps`` steps of
       SGD (``lr`` 0.01, Nesterov momentum 0.9, weight decay 1e-4) on
       ``W_A`` with all other channels held at 0. Stop at
       ``|A| = c - floor(ratio * c)``.
    4. The removed channels are cut out with
       :func:`tfcomp.pruning.prune_channels`; the heads are not part of the
       returned model. Fine-tune it afterwards (the paper's final step).

    Deviations for CPU scale (documented, on purpose): the per-stage
    fine-tuning runs ``finetune_epochs`` (default 1) epochs on the
    calibration data instead of full training; heads are trained with Adam
    (lr 1e-3) on frozen features; the subproblem after each addition is
    ``sgd_steps`` SGD steps instead of a full optimisation, and the loss
    gradient is taken over ``grad_batches`` batches; to keep the loss
    monotone, an SGD pass that raises the loss on the fixed evaluation
    batches (``eval_batches``) is rolled back, so ``L`` never increases
    across greedy steps (``info`` records the history).

    Args:
        model: a trained functional ``keras.Model`` (one input, layers
            called once, logits or softmax output; nested functional /
            Sequential models are read through, and stage ends may lie
            inside them); left untouched.
        calibration_data: ``(x, y)`` calibration images and integer (or
            one-hot) labels, or an iterable / ``tf.data.Dataset`` of
            ``(x, y)`` (``data=`` is a deprecated alias).
        ratio: fraction of channels removed per group (in [0, 1)), or
            ``{group_id_or_layer: ratio}``.
        num_stages: ``P`` (paper: 3 for ResNet, 2 for VGG).
        lam: weight of the auxiliary loss (paper: 1); 0 gives
            reconstruction-only greedy selection.
        finetune_epochs: per-stage fine-tuning epochs (0 = none).
        head_epochs: epochs to fit each auxiliary head.
        stage_ends: explicit layer names ending stages 1..P-1.
        groups: group ids to prune with a float ratio (default all
            prunable groups with Conv/Dense consumers).
        target_macs: a MACs budget (fraction if <= 1); a uniform ratio is
            found as in :func:`tfcomp.pruning.lasso_prune`.
        round_to: kept channel counts are multiples of this (capped at the
            group size).
        ignored_layers: layers whose channel groups are left whole.
        max_images: calibration images used.
        batch_size: batch size for every pass.
        sgd_steps: SGD steps after each channel addition.
        grad_batches: batches averaged for the selection gradient.
        eval_batches: fixed batches on which ``L`` is tracked.
        lr, momentum, weight_decay: the greedy subproblem's SGD.
        seed: seeds batch order and heads.
        verbose: 1 prints a progress bar per group, 0 is silent.
        return_info: deprecated; ``True`` returns the old
            ``(model, plan, info)`` triple.

    Returns:
        A :class:`tfcomp.pruning.result.PruneResult`: unpacks as
        ``(pruned_model, plan)``; ``result.report`` holds per-group details
        (loss history, stage, greedy order), the stage ends and heads.

    Raises:
        ValueError: missing labels, empty or mis-shaped data, ratios outside
            [0, 1), unsupported models (shared layers).

    Reference: Zhuang et al., Discrimination-aware Channel Pruning for Deep
    Neural Networks, NeurIPS 2018, arXiv:1810.11809.

    Example:
        >>> small, plan = dcp_prune(model, (x[:512], y[:512]), ratio=0.5,
        ...                         num_stages=3, lam=1.0)
        >>> small.fit(x, y, epochs=1)
    """
    check_model(model)
    check_positive_int(sgd_steps, "sgd_steps", minimum=0)
    for name, v in (("grad_batches", grad_batches),
                    ("eval_batches", eval_batches),
                    ("batch_size", batch_size)):
        check_positive_int(v, name)
    if not (isinstance(lam, (int, float)) and lam >= 0):
        raise ValueError(f"lam must be >= 0. Received: lam={lam!r}")
    check_positive_int(finetune_epochs, "finetune_epochs", minimum=0)
    check_positive_int(head_epochs, "head_epochs", minimum=0)
    calibration_data = legacy_data(calibration_data, data, "dcp_prune")
    x, y = as_arrays(calibration_data, model, max_images, need_labels=True,
                     targets=True)
    n_cls = int(model.outputs[0].shape[-1])
    if _kind(model, y) == "classification" and (y.min() < 0
                                                or y.max() >= n_cls):
        raise ValueError(
            f"labels must be class indices in [0, {n_cls}). Received: "
            f"min={y.min()}, max={y.max()}")
    graph = DependencyGraph(model)
    found, skipped = reconstruction_targets(
        graph, ratio, target_macs=target_macs, round_to=round_to,
        ignored_layers=ignored_layers, groups=groups, what="dcp_prune")
    order = {n.path: i for i, n in enumerate(_flat_graph(model, graph)
                                             .parsed.nodes)}
    if stage_ends is None:
        stage_ends = find_stage_ends(model, num_stages)
    else:
        stage_ends = list(stage_ends)
        for s in stage_ends:
            if s not in order:
                raise ValueError(f"stage_ends: no layer {s!r} in model "
                                 f"{model.name!r}.")
        stage_ends.sort(key=lambda s: order[s])
    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(int(seed))
    state = PruningState(model, graph)
    run = _DCPRun(state, x, y, stage_ends, rng, GreedySettings(
        lam=lam, batch_size=int(batch_size), sgd_steps=int(sgd_steps),
        grad_batches=int(grad_batches), lr=lr, momentum=momentum,
        weight_decay=weight_decay), int(eval_batches))
    stages: dict = {}
    for g in graph.groups:
        if g.id in found.keep:
            last = max(order[p] for p in consumer_layers(g))
            p = next((i for i, s in enumerate(stage_ends)
                      if last <= order[s]), len(stage_ends))
            stages.setdefault(p, []).append(g)
    info: dict = {"groups": {}, "skipped": dict(skipped),
                  "stage_ends": list(stage_ends), "heads": {}}
    for p in sorted(stages):
        stage = run.prepare_stage(p, head_epochs, finetune_epochs)
        if stage.head is not None:
            info["heads"][stage_ends[p]] = stage.head.name
        bar = keras.utils.Progbar(len(stages[p]), verbose=1 if verbose else 0,
                                  stateful_metrics=["loss"],
                                  unit_name="group")
        if verbose:
            print(f"DCP stage {p + 1}/{len(stage_ends) + 1}: "
                  f"{len(stages[p])} group(s)")
        for step, g in enumerate(stages[p], start=1):
            ginfo = GreedyGroup(state, g, stage, x, y, run.eval_idx,
                                run.settings, rng).select(found.keep[g.id])
            state.commit(g, ginfo.pop("keep"), remask=True)
            ginfo["stage"] = p + 1
            info["groups"][g.id] = ginfo
            bar.update(step, values=[("loss", ginfo["loss_history"][-1])])
    meta = {"method": "dcp_prune", "ratio": found.ratio, "lam": float(lam),
            "round_to": int(round_to), "num_stages": len(stage_ends) + 1,
            "stage_ends": list(stage_ends), "images": int(rows(x)),
            "seed": int(seed)}
    small, plan = state.result(meta, info)
    return finish(small, plan, info, return_info, "dcp_prune")


class _DCPRun:
    """What the stages of one ``dcp_prune`` call share: the working copy,
    the data, the stage ends and the settings; builds each stage's loss
    (auxiliary head, per-stage fine-tuning)."""

    def __init__(self, state, x, y, stage_ends, rng,
                 settings: GreedySettings, eval_batches: int):
        self.state, self.x, self.y = state, x, y
        self.stage_ends, self.rng, self.settings = stage_ends, rng, settings
        self.n_cls = int(state.model.outputs[0].shape[-1])
        bs = settings.batch_size
        self.eval_idx = np.arange(min(rows(x), eval_batches * bs))
        self.ce = _HEAD_LOSSES[_kind(state.model, y)]()  # heads give logits
        self.ce_final = loss_callable(finetune_loss(state.model, y))

    def _sgd(self):
        s = self.settings
        return unpinned(keras.optimizers.SGD(s.lr, momentum=s.momentum,
                                             nesterov=True))

    def _fit(self, model, targets, losses, epochs: int) -> None:
        """Fine-tunes ``model`` with removed channels held at zero."""
        model.compile(self._sgd(), losses, jit_compile=False)
        model.fit(self.x, targets, batch_size=self.settings.batch_size,
                  epochs=int(epochs), verbose=0,
                  callbacks=[_MaskCallback(self.state.remask)])
        self.state.remask()

    def prepare_stage(self, p: int, head_epochs: int,
                      finetune_epochs: int) -> Stage:
        """Trains stage ``p``'s head (and fine-tunes); returns its Stage."""
        bs = self.settings.batch_size
        parsed = self.state.work_graph.parsed
        if p == len(self.stage_ends):
            if finetune_epochs and p > 0:
                # the view (same layers): the working copy stays uncompiled,
                # so the pruned model carries no DCP optimizer
                self._fit(self.state.view.model, self.y, self.ce_final,
                          finetune_epochs)
            return Stage(p, parsed.outputs[0], None, self.ce_final)
        view = self.state.view
        end_t = view.output_of(self.stage_ends[p])
        (feats,) = activations(view.model, [end_t], self.x, bs)
        head = _make_head((None,) + feats.shape[1:], self.n_cls,
                          f"{_AUX_PREFIX}{p + 1}",
                          self.y.shape[1:len(view.outputs[0].shape) - 1])
        if head_epochs:
            head.compile(keras.optimizers.Adam(1e-3), self.ce,
                         jit_compile=False)
            head.fit(feats, self.y, batch_size=bs, epochs=int(head_epochs),
                     verbose=0, shuffle=True)
        del feats
        if finetune_epochs:
            inputs = view.inputs[0] if len(view.inputs) == 1 \
                else view.inputs
            joint = keras.Model(inputs, [view.outputs[0], head(end_t)])
            self._fit(joint, [self.y, self.y], [self.ce_final, self.ce],
                      finetune_epochs)
        end = parsed.nodes_of(self.stage_ends[p])[0].outputs[0]
        return Stage(p, end, head, self.ce)
