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

from tfcomp.graph import DependencyGraph
from tfcomp.pruning.lasso import (
    _check_model,
    _consumer_layers,
    _copy_model,
    _extractor,
    _out_mask,
    _run_batches,
    _units_for,
    calibration_data,
    resolve_targets,
)
from tfcomp.pruning.plan import Plan, estimate_macs
from tfcomp.pruning.surgery import mask_channels, prune_channels

__all__ = ["dcp_prune", "find_stage_ends"]

_AUX_PREFIX = "dcp_aux"


# ---------------------------------------------------------------------------
# functional-graph helpers


def _as_list(t):
    return list(t) if isinstance(t, (list, tuple)) else [t]


class _Topology:
    """Layers of a flat functional model and the tensors between them."""

    def __init__(self, model):
        self.model = model
        self.layers = [lay for lay in model.layers
                       if not isinstance(lay, keras.layers.InputLayer)]
        self.producer: dict = {}
        self.index = {}
        for i, lay in enumerate(self.layers):
            if isinstance(lay, keras.Model):
                raise ValueError(
                    f"dcp_prune does not support nested models (layer "
                    f"{lay.name!r}).")
            try:
                outs = _as_list(lay.output)
                ins = _as_list(lay.input)
            except (AttributeError, ValueError) as e:
                raise ValueError(
                    f"dcp_prune needs every layer called exactly once; "
                    f"layer {lay.name!r}: {e}") from None
            del ins
            for t in outs:
                self.producer[id(t)] = lay
            self.index[lay.name] = i
        self.input_ids = {id(t) for t in model.inputs}

    def inputs_of(self, lay) -> list:
        return _as_list(lay.input)

    def order(self, fetches, feeds) -> list:
        """Layers needed to compute ``fetches`` from ``feeds`` (topo)."""
        feed_ids = {id(t) for t in feeds}
        needed: set = set()
        stack = [t for t in fetches]
        while stack:
            t = stack.pop()
            if id(t) in feed_ids or id(t) in self.input_ids:
                continue
            lay = self.producer.get(id(t))
            if lay is None or lay.name in needed:
                continue
            needed.add(lay.name)
            stack.extend(self.inputs_of(lay))
        return sorted((self.layers[self.index[n]] for n in needed),
                      key=lambda lay: self.index[lay.name])

    def downstream(self, names) -> set:
        """Names of layers reachable from the given layers (inclusive)."""
        out = set(names)
        changed = True
        while changed:  # fixpoint: no reliance on the layer order
            changed = False
            for lay in self.layers:
                if lay.name in out:
                    continue
                for t in self.inputs_of(lay):
                    p = self.producer.get(id(t))
                    if p is not None and p.name in out:
                        out.add(lay.name)
                        changed = True
                        break
        return out

    def cut_set(self, start_names, fetches) -> tuple:
        """Layers from ``start_names`` to ``fetches`` and their feeds."""
        down = self.downstream(start_names)
        # ancestors of the fetches inside `down`
        needed: set = set()
        stack = list(fetches)
        while stack:
            t = stack.pop()
            lay = self.producer.get(id(t))
            if lay is None or lay.name in needed or lay.name not in down:
                continue
            needed.add(lay.name)
            stack.extend(self.inputs_of(lay))
        layers = sorted((self.layers[self.index[n]] for n in needed),
                        key=lambda lay: self.index[lay.name])
        feeds, seen = [], set()
        for lay in layers:
            for t in self.inputs_of(lay):
                p = self.producer.get(id(t))
                if (p is None or p.name not in needed) and id(t) not in seen:
                    seen.add(id(t))
                    feeds.append(t)
        return layers, feeds


def _run(layers, feeds, feed_values, fetches, topo):
    vals = {id(t): v for t, v in zip(feeds, feed_values)}
    for lay in layers:
        ins = lay.input
        if isinstance(ins, (list, tuple)):
            args = [vals[id(t)] for t in ins]
        else:
            args = vals[id(ins)]
        out = lay(args, training=False)
        for t, o in zip(_as_list(lay.output), _as_list(out)):
            vals[id(t)] = o
    return [vals[id(t)] for t in fetches]


def _spatial(t) -> tuple:
    return tuple(t.shape[1:-1])


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
        model: a flat functional model (layers called once).
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
    topo = _Topology(model)
    last_use = {}
    for j, lay in enumerate(topo.layers):
        for t in topo.inputs_of(lay):
            last_use[id(t)] = j
    out_ids = {id(t) for t in model.outputs}
    cuts = []
    for i, lay in enumerate(topo.layers):
        outs = _as_list(lay.output)
        if len(outs) != 1 or id(outs[0]) in out_ids:
            continue
        t = outs[0]
        if id(t) not in last_use or len(t.shape) < 3:
            continue
        crossing = False
        for k in range(i):
            for u in _as_list(topo.layers[k].output):
                if last_use.get(id(u), -1) > i:
                    crossing = True
                    break
            if crossing:
                break
        for u in model.inputs:
            if last_use.get(id(u), -1) > i:
                crossing = True
        if not crossing:
            cuts.append(lay)
    before_down = []
    for a, b in zip(cuts, cuts[1:]):
        sa, sb = _spatial(a.output), _spatial(b.output)
        if None not in sa and None not in sb and math.prod(sb) < \
                math.prod(sa):
            before_down.append(a)
    cands = before_down if len(before_down) >= num_stages - 1 else cuts
    k = int(num_stages) - 1
    if k <= 0 or not cands:
        return []
    if len(cands) <= k:
        return [c.name for c in cands]
    picks = []
    for j in range(k):
        idx = int(round((j + 1) * len(cands) / (k + 1))) - 1
        idx = min(max(idx, 0), len(cands) - 1)
        if cands[idx].name not in picks:
            picks.append(cands[idx].name)
    return picks


def _output_is_probs(model) -> bool:
    lay = model.layers[-1]
    act = getattr(lay, "activation", None)
    name = getattr(act, "__name__", "")
    return isinstance(lay, keras.layers.Softmax) or name == "softmax"


def _make_head(shape, num_classes: int, name: str) -> keras.Model:
    """AvgPool(ReLU(BN(x))) -> Dense (the paper's auxiliary classifier)."""
    inp = keras.Input(shape[1:])
    h = keras.layers.BatchNormalization(name=f"{name}_bn")(inp)
    h = keras.layers.ReLU(name=f"{name}_relu")(h)
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


def dcp_prune(model: keras.Model, data, ratio: float | dict = 0.5, *,
              num_stages: int = 3, lam: float = 1.0,
              finetune_epochs: int = 1, head_epochs: int = 3,
              stage_ends: list | None = None, groups=None,
              target_macs: float | None = None,
              max_images: int | None = 512, batch_size: int = 64,
              sgd_steps: int = 10, grad_batches: int = 2,
              eval_batches: int = 2, lr: float = 0.01,
              momentum: float = 0.9, weight_decay: float = 1e-4,
              seed: int = 0, verbose: int = 1, return_info: bool = False):
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
        model: a trained flat functional ``keras.Model`` (one input, layers
            called once, logits or softmax output); left untouched.
        data: ``(x, y)`` calibration images and integer (or one-hot)
            labels, or an iterable / ``tf.data.Dataset`` of ``(x, y)``.
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
        max_images: calibration images used.
        batch_size: batch size for every pass.
        sgd_steps: SGD steps after each channel addition.
        grad_batches: batches averaged for the selection gradient.
        eval_batches: fixed batches on which ``L`` is tracked.
        lr, momentum, weight_decay: the greedy subproblem's SGD.
        seed: seeds batch order and heads.
        verbose: 1 prints a progress bar per group, 0 is silent.
        return_info: also return per-group details (loss history, stage).

    Returns:
        ``(pruned_model, plan)`` or ``(pruned_model, plan, info)``.

    Raises:
        ValueError: missing labels, empty or mis-shaped data, ratios outside
            [0, 1), unsupported models (nested, shared layers).

    Reference: Zhuang et al., Discrimination-aware Channel Pruning for Deep
    Neural Networks, NeurIPS 2018, arXiv:1810.11809.

    Example:
        >>> small, plan = dcp_prune(model, (x[:512], y[:512]), ratio=0.5,
        ...                         num_stages=3, lam=1.0)
        >>> small.fit(x, y, epochs=1)
    """
    import tensorflow as tf  # custom gradient loop (no Keras equivalent)

    _check_model(model)
    for name, v in (("sgd_steps", sgd_steps), ("grad_batches", grad_batches),
                    ("eval_batches", eval_batches),
                    ("batch_size", batch_size)):
        if isinstance(v, bool) or int(v) < (0 if name == "sgd_steps" else 1):
            raise ValueError(f"{name} must be a positive integer. Received: "
                             f"{name}={v!r}")
    if not (isinstance(lam, (int, float)) and lam >= 0):
        raise ValueError(f"lam must be >= 0. Received: lam={lam!r}")
    for name, v in (("finetune_epochs", finetune_epochs),
                    ("head_epochs", head_epochs)):
        if isinstance(v, bool) or int(v) < 0:
            raise ValueError(f"{name} must be >= 0. Received: {name}={v!r}")
    x, y = calibration_data(data, model, max_images, need_labels=True)
    n_cls = int(model.outputs[0].shape[-1])
    if y.min() < 0 or y.max() >= n_cls:
        raise ValueError(
            f"labels must be class indices in [0, {n_cls}). Received: "
            f"min={y.min()}, max={y.max()}")
    graph = DependencyGraph(model)
    counts, skipped, ratio_used = resolve_targets(
        graph, ratio, groups, target_macs, what="dcp_prune")
    topo0 = _Topology(model)
    if stage_ends is None:
        stage_ends = find_stage_ends(model, num_stages)
    else:
        stage_ends = list(stage_ends)
        for s in stage_ends:
            if s not in topo0.index:
                raise ValueError(f"stage_ends: no layer {s!r} in model "
                                 f"{model.name!r}.")
        stage_ends.sort(key=lambda s: topo0.index[s])
    probs = _output_is_probs(model)
    bs = int(batch_size)
    n = x.shape[0]
    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(int(seed))

    work = _copy_model(model)
    work_graph = DependencyGraph(work)
    topo = _Topology(work)
    order = [g for g in graph.groups if g.id in counts]

    def stage_of(g) -> int:
        last = max(topo.index[p] for p in _consumer_layers(g))
        for i, s in enumerate(stage_ends):
            if last <= topo.index[s]:
                return i
        return len(stage_ends)

    stages = {}
    for g in order:
        stages.setdefault(stage_of(g), []).append(g)

    removed: dict = {}
    keeps: dict = {}
    info: dict = {"groups": {}, "skipped": dict(skipped),
                  "stage_ends": list(stage_ends), "heads": {}}

    def remask():
        if removed:
            mask_channels(work, Plan.from_removed(graph, removed),
                          inplace=True, graph=work_graph)

    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    ce_final = keras.losses.SparseCategoricalCrossentropy(
        from_logits=not probs)
    eval_idx = np.arange(min(n, int(eval_batches) * bs))

    for p in sorted(stages):
        final = p == len(stage_ends)
        head = None
        if not final:
            end_t = work.get_layer(stage_ends[p]).output
            ext = _extractor(work, [end_t])
            feats = np.concatenate([o[0] for _, o in _run_batches(ext, x, bs)])
            head = _make_head((None,) + feats.shape[1:], n_cls,
                              f"{_AUX_PREFIX}{p + 1}")
            if head_epochs:
                head.compile(keras.optimizers.Adam(1e-3), ce,
                             jit_compile=False)
                head.fit(feats, y, batch_size=bs, epochs=int(head_epochs),
                         verbose=0, shuffle=True)
            del feats
            if finetune_epochs:
                joint = keras.Model(work.inputs[0],
                                    [work.outputs[0], head(end_t)])
                joint.compile(
                    keras.optimizers.SGD(lr, momentum=momentum,
                                         nesterov=True),
                    [ce_final, ce], jit_compile=False)
                joint.fit(x, [y, y], batch_size=bs,
                          epochs=int(finetune_epochs), verbose=0,
                          callbacks=[_MaskCallback(remask)])
                remask()
            info["heads"][stage_ends[p]] = head.name
        elif finetune_epochs and p > 0:
            work.compile(keras.optimizers.SGD(lr, momentum=momentum,
                                              nesterov=True), ce_final,
                         jit_compile=False)
            work.fit(x, y, batch_size=bs, epochs=int(finetune_epochs),
                     verbose=0, callbacks=[_MaskCallback(remask)])
            remask()
        end_tensor = (work.outputs[0] if final
                      else work.get_layer(stage_ends[p]).output)
        bar = keras.utils.Progbar(len(stages[p]), verbose=1 if verbose else 0,
                                  stateful_metrics=["loss"],
                                  unit_name="group")
        if verbose:
            print(f"DCP stage {p + 1}/{len(stage_ends) + 1}: "
                  f"{len(stages[p])} group(s)")
        for step, g in enumerate(stages[p], start=1):
            ginfo = _greedy_group(
                tf, g, graph, work, topo, model, x, y, counts[g.id],
                end_tensor, head, final, probs, removed, lam, bs,
                int(sgd_steps), int(grad_batches), eval_idx, lr, momentum,
                weight_decay, rng)
            keep = np.asarray(ginfo.pop("keep"))
            keeps[g.id] = keep
            gone = np.setdiff1d(np.arange(g.size), keep)
            if gone.size:
                removed[g.id] = gone
            remask()
            ginfo["stage"] = p + 1
            info["groups"][g.id] = ginfo
            bar.update(step, values=[("loss", ginfo["loss_history"][-1])])

    meta = {"method": "dcp_prune", "ratio": ratio_used, "lam": float(lam),
            "num_stages": len(stage_ends) + 1,
            "stage_ends": list(stage_ends), "images": int(n),
            "seed": int(seed)}
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


def _greedy_group(tf, g, graph, work, topo, orig, x, y, n_keep, end_tensor,
                  head, final, probs, removed, lam, bs, sgd_steps,
                  grad_batches, eval_idx, lr, momentum, wd, rng) -> dict:
    """Greedy channel addition for one group; returns its info dict."""
    paths = _consumer_layers(g)
    layers = [work.get_layer(p) for p in paths]
    fetches = [lay.output for lay in layers] + [end_tensor]
    sub_layers, feeds = topo.cut_set(paths, fetches)
    # feeds from the current (pruned so far) network, targets from orig
    ext = _extractor(work, feeds)
    feed_vals = [[] for _ in feeds]
    for _, outs in _run_batches(ext, x, bs):
        for i, o in enumerate(outs):
            feed_vals[i].append(o)
    feed_vals = [np.concatenate(v, 0) for v in feed_vals]
    ext0 = _extractor(orig, [orig.get_layer(p).output for p in paths])
    tgt_vals = [[] for _ in paths]
    for _, outs in _run_batches(ext0, x, bs):
        for i, o in enumerate(outs):
            tgt_vals[i].append(o)
    tgt_vals = [np.concatenate(v, 0) for v in tgt_vals]

    kernels = [lay.kernel for lay in layers]
    w_init = [keras.ops.convert_to_numpy(k).copy() for k in kernels]
    unit_pos = []   # per consumer: (P,) unit ids
    row_masks = []  # per consumer: (P,) positions outside the group
    col_masks = []  # per consumer: (n,) alive outputs
    for lay, path in zip(layers, paths):
        P, n_out = lay.kernel.shape[-2], lay.kernel.shape[-1]
        u = _units_for(g, path, P)
        unit_pos.append(u)
        row_masks.append((u < 0).astype("float32"))
        om = _out_mask(graph, path, removed, n_out)
        col_masks.append(np.ones(n_out, "float32") if om is None
                         else om.astype("float32"))
    col_t = [tf.constant(c) for c in col_masks]

    def kernel_mask(active):
        out = []
        for u, rm, cm, k in zip(unit_pos, row_masks, col_masks, kernels):
            rows = rm.copy()
            rows[np.isin(u, active) & (u >= 0)] = 1.0
            m = rows[:, None] * cm[None, :]
            out.append(np.broadcast_to(m, tuple(k.shape)).astype("float32"))
        return out

    n_t = len(paths)

    def loss_fn(fv, tv, yb):
        outs = _run(sub_layers, feeds, fv, fetches, topo)
        lm = 0.0
        for o, t, c in zip(outs[:n_t], tv, col_t):
            d = (o - t) * c
            denom = tf.cast(tf.size(d), d.dtype) * (
                tf.reduce_sum(c) / tf.cast(tf.size(c), c.dtype))
            lm = lm + 0.5 * tf.reduce_sum(d * d) / tf.maximum(denom, 1.0)
        if lam == 0:
            return lm
        end = outs[-1]
        if final:
            ls = keras.losses.sparse_categorical_crossentropy(
                yb, end, from_logits=not probs)
        else:
            ls = keras.losses.sparse_categorical_crossentropy(
                yb, head(end, training=False), from_logits=True)
        return lm + lam * tf.reduce_mean(ls)

    var_list = list(kernels)

    @tf.function(reduce_retracing=True)
    def grad_step(fv, tv, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(fv, tv, yb)
        return loss, tape.gradient(loss, var_list)

    @tf.function(reduce_retracing=True)
    def eval_step(fv, tv, yb):
        return loss_fn(fv, tv, yb)

    n = x.shape[0]

    def batch(idx):
        return ([tf.constant(v[idx]) for v in feed_vals],
                [tf.constant(v[idx]) for v in tgt_vals],
                tf.constant(y[idx]))

    eval_sets = [batch(eval_idx[a:a + bs])
                 for a in range(0, len(eval_idx), bs)]

    def eval_loss():
        tot = 0.0
        for fv, tv, yb in eval_sets:
            tot += float(eval_step(fv, tv, yb)) * int(yb.shape[0])
        return tot / len(eval_idx)

    def random_batch():
        return batch(rng.choice(n, size=min(bs, n), replace=False))

    def get_w():
        return [keras.ops.convert_to_numpy(k).copy() for k in kernels]

    def set_w(ws):
        for k, w in zip(kernels, ws):
            k.assign(w)

    active: list = []
    masks = kernel_mask(active)
    set_w([w * m for w, m in zip(w_init, masks)])
    history = [eval_loss()]
    U = g.size
    for _ in range(n_keep):
        # selection gradient over a few batches
        norms = np.zeros(U)
        gsum = None
        for _b in range(grad_batches):
            _, grads = grad_step(*random_batch())
            gnp = [keras.ops.convert_to_numpy(gr) for gr in grads]
            gsum = gnp if gsum is None else [a + b for a, b in zip(gsum, gnp)]
        for gr, u, cm in zip(gsum, unit_pos, col_masks):
            g3 = gr.reshape(-1, gr.shape[-2], gr.shape[-1]) * cm
            per_pos = (g3 ** 2).sum(axis=(0, 2))
            np.add.at(norms, u[u >= 0], per_pos[u >= 0])
        norms[active] = -np.inf
        k = int(np.argmax(norms))
        active.append(k)
        masks = kernel_mask(active)
        prev = get_w()
        # warm start W_k from the pre-pruning weights, or 0 if that is worse
        warm = []
        for pw, wi, u, cm in zip(prev, w_init, unit_pos, col_masks):
            w = pw.reshape(-1, *pw.shape[-2:]).copy()
            rows = u == k
            w[:, rows, :] = wi.reshape(w.shape)[:, rows, :] * cm
            warm.append(w.reshape(pw.shape))
        set_w(warm)
        l_warm = eval_loss()
        if l_warm > history[-1]:
            set_w(prev)
            start, l_start = prev, history[-1]
        else:
            start, l_start = warm, l_warm
        # masked SGD (Nesterov) on W_A
        if sgd_steps:
            vel = [np.zeros_like(w) for w in start]
            for _s in range(sgd_steps):
                _, grads = grad_step(*random_batch())
                ws = get_w()
                new = []
                for i, (w, gr, m) in enumerate(zip(ws, grads, masks)):
                    gr = keras.ops.convert_to_numpy(gr) + wd * w
                    gr = gr * m
                    vel[i] = momentum * vel[i] + gr
                    new.append((w - lr * (gr + momentum * vel[i])) * m)
                set_w(new)
            l_new = eval_loss()
            if l_new > l_start:
                set_w(start)
                l_new = l_start
        else:
            l_new = l_start
        history.append(float(l_new))
    return {"keep": sorted(active), "order": list(active),
            "loss_history": history, "size": U, "kept": len(active)}

