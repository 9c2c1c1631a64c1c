"""DCP's inner loop: greedy channel addition for one group.

Starting from no channel, the channel whose consumer weights have the
largest gradient norm of ``L = L_M + lam * L_S`` is added, its weights are
warm-started, and a short masked SGD runs on the kept channels' weights
(rolled back when it raises the loss), until the group keeps its count.
``L_M`` is the reconstruction MSE of the consumers' outputs against the
original network, ``L_S`` the stage's classification loss.

The sub-network from the group's consumers to the end of the stage is a
``keras.Model`` over the working copy's own layers, fed with the
activations of the network pruned so far (cut from the dependency graph's
parsed model), so the gradients reach the working copy's kernels.

Reference: Zhuang et al., Discrimination-aware Channel Pruning for Deep
Neural Networks, NeurIPS 2018, arXiv:1810.11809.

Example:
    >>> problem = GreedyGroup(state, group, stage, data, settings)
    >>> problem.select(n_keep=8)["keep"]
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf  # custom gradient loop (no Keras equivalent)

from tfcomp._batches import rows
from tfcomp.pruning.reconstruction.engine import (
    activations,
    consumer_layers,
    consumer_units,
)
from tfcomp.pruning.reconstruction.kernels import (
    dense_shape,
    from_dense,
    kernel_variable,
    to_dense,
)

__all__ = ["GreedyGroup", "GreedySettings", "Stage"]


@dataclasses.dataclass
class GreedySettings:
    """The greedy subproblem's settings (see ``dcp_prune``)."""

    lam: float = 1.0
    batch_size: int = 64
    sgd_steps: int = 10
    grad_batches: int = 2
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4


@dataclasses.dataclass
class Stage:
    """One DCP stage: where its loss is read and how.

    Attributes:
        index: 0-based stage number.
        end: tensor id (in the working copy's parsed model) of the stage's
            end: a stage-end layer's output, or the model output.
        head: the auxiliary classifier (None for the last stage, which uses
            the model's own output).
        loss: ``loss(labels, output)`` of the stage's end (the head's
            output, or the model's): a Keras loss or loss function.
    """

    index: int
    end: str
    head: keras.Model | None = None
    loss: object = None

    @property
    def final(self) -> bool:
        return self.head is None


def cut(parsed, paths, fetches) -> list:
    """Tensor ids feeding the layers from ``paths`` to ``fetches``: the
    inputs of the nodes between them that those nodes do not produce."""
    down = parsed.downstream(paths)
    needed = [n for n in parsed.upstream(fetches) if n.path in down]
    made = {t for n in needed for t in n.outputs}
    feeds = []
    for n in needed:
        for t in n.inputs:
            if t not in made and t not in feeds:
                feeds.append(t)
    return feeds


class GreedyGroup:
    """Greedy channel addition for one group of one stage.

    Args:
        state: the :class:`tfcomp.pruning.reconstruction.PruningState`
            (working copy, removed channels, original model).
        group: the group (of ``state.graph``).
        stage: its :class:`Stage`.
        x, y: calibration images and integer labels.
        eval_idx: the fixed images on which ``L`` is tracked.
        settings: :class:`GreedySettings`.
        rng: numpy Generator drawing the SGD / gradient batches.
    """

    def __init__(self, state, group, stage: Stage, x, y, eval_idx,
                 settings: GreedySettings, rng):
        self.group, self.stage, self.s = group, stage, settings
        self.x, self.y, self.rng = x, y, rng
        parsed, view = state.work_graph.parsed, state.view
        paths = consumer_layers(group)
        layers = [state.layer(p) for p in paths]
        fetches = [parsed.nodes_of(p)[0].outputs[0] for p in paths]
        fetches.append(stage.end)
        feeds = cut(parsed, paths, fetches)
        unique = list(dict.fromkeys(fetches))  # a consumer may end the stage
        self.fetch_index = [unique.index(t) for t in fetches]
        self.sub = view.sub_model(feeds, unique)
        bs = settings.batch_size
        # feeds from the current (pruned so far) network, targets from orig
        self.feed_vals = activations(view.model, [view.tensor(t)
                                                  for t in feeds], x, bs)
        orig = state.original_view
        self.tgt_vals = activations(orig.model, [orig.output_of(p)
                                                 for p in paths], x, bs)
        # weights are handled in the dense view (*k, P, n) of
        # reconstruction.kernels: grouped / transposed kernels map back
        self.layers = layers
        self.kernels = [kernel_variable(lay) for lay in layers]
        self.w_init = self.get_w()
        self.unit_pos = []   # per consumer: (P,) unit ids
        self.row_masks = []  # per consumer: (P,) positions outside the group
        self.col_masks = []  # per consumer: (n,) alive outputs
        for lay, path in zip(layers, paths):
            n_out = dense_shape(lay)[-1]
            u = consumer_units(group, path, lay)
            self.unit_pos.append(u)
            self.row_masks.append((u < 0).astype("float32"))
            om = state.out_mask(path, n_out)
            self.col_masks.append(np.ones(n_out, "float32") if om is None
                                  else om.astype("float32"))
        self.col_t = [tf.constant(c) for c in self.col_masks]
        self.grad_step = tf.function(self._grad_step, reduce_retracing=True)
        self.eval_step = tf.function(self._loss, reduce_retracing=True)
        self.eval_idx = eval_idx
        self.eval_sets = [self._batch(eval_idx[a:a + bs])
                          for a in range(0, len(eval_idx), bs)]

    # -- the loss ----------------------------------------------------------
    def _loss(self, fv, tv, yb):
        outs = self.sub(list(fv), training=False)
        if not isinstance(outs, (list, tuple)):
            outs = [outs]
        outs = [outs[i] for i in self.fetch_index]
        n_t = len(tv)
        lm = 0.0
        for o, t, c in zip(outs[:n_t], tv, self.col_t):
            d = (o - t) * c
            denom = tf.cast(tf.size(d), d.dtype) * (
                tf.reduce_sum(c) / tf.cast(tf.size(c), c.dtype))
            lm = lm + 0.5 * tf.reduce_sum(d * d) / tf.maximum(denom, 1.0)
        if self.s.lam == 0:
            return lm
        end = outs[-1]
        if not self.stage.final:
            end = self.stage.head(end, training=False)
        ls = self.stage.loss(yb, end)
        return lm + self.s.lam * tf.reduce_mean(ls)

    def _grad_step(self, fv, tv, yb):
        with tf.GradientTape() as tape:
            loss = self._loss(fv, tv, yb)
        return loss, tape.gradient(loss, self.kernels)

    def _batch(self, idx):
        return ([tf.constant(v[idx]) for v in self.feed_vals],
                [tf.constant(v[idx]) for v in self.tgt_vals],
                tf.constant(self.y[idx]))

    def eval_loss(self) -> float:
        """``L`` on the fixed evaluation images."""
        tot = 0.0
        for fv, tv, yb in self.eval_sets:
            tot += float(self.eval_step(fv, tv, yb)) * int(yb.shape[0])
        return tot / len(self.eval_idx)

    def _random_batch(self):
        n = rows(self.x)
        bs = self.s.batch_size
        return self._batch(self.rng.choice(n, size=min(bs, n),
                                           replace=False))

    # -- weights -----------------------------------------------------------
    def get_w(self) -> list:
        """The consumers' kernels in the dense view."""
        return [to_dense(lay, keras.ops.convert_to_numpy(kernel_variable(lay)))
                for lay in self.layers]

    def set_w(self, ws) -> None:
        for lay, w in zip(self.layers, ws):
            kernel_variable(lay).assign(from_dense(lay, w))

    def dense_grads(self, grads) -> list:
        """Gradients of the consumers' kernels in the dense view."""
        return [to_dense(lay, keras.ops.convert_to_numpy(g))
                for lay, g in zip(self.layers, grads)]

    def kernel_mask(self, active) -> list:
        """Per consumer: 1 at the weights of ``active`` channels (and of
        positions outside the group), 0 elsewhere and at removed outputs."""
        out = []
        for u, rm, cm, lay in zip(self.unit_pos, self.row_masks,
                                  self.col_masks, self.layers):
            rows = rm.copy()
            rows[np.isin(u, active) & (u >= 0)] = 1.0
            m = rows[:, None] * cm[None, :]
            out.append(np.broadcast_to(m, dense_shape(lay)).astype(
                "float32"))
        return out

    # -- the greedy loop ---------------------------------------------------
    def _next_channel(self, active) -> int:
        """The inactive channel with the largest selection gradient."""
        norms = np.zeros(self.group.size)
        gsum = None
        for _b in range(self.s.grad_batches):
            _, grads = self.grad_step(*self._random_batch())
            gnp = self.dense_grads(grads)
            gsum = gnp if gsum is None else [a + b for a, b in zip(gsum, gnp)]
        for gr, u, cm in zip(gsum, self.unit_pos, self.col_masks):
            g3 = gr.reshape(-1, gr.shape[-2], gr.shape[-1]) * cm
            per_pos = (g3 ** 2).sum(axis=(0, 2))
            np.add.at(norms, u[u >= 0], per_pos[u >= 0])
        norms[active] = -np.inf
        return int(np.argmax(norms))

    def _warm_start(self, k: int, last: float) -> tuple:
        """W_k from the pre-pruning weights, or 0 if that is worse."""
        prev = self.get_w()
        warm = []
        for pw, wi, u, cm in zip(prev, self.w_init, self.unit_pos,
                                 self.col_masks):
            w = pw.reshape(-1, *pw.shape[-2:]).copy()
            rows = u == k
            w[:, rows, :] = wi.reshape(w.shape)[:, rows, :] * cm
            warm.append(w.reshape(pw.shape))
        self.set_w(warm)
        l_warm = self.eval_loss()
        if l_warm > last:
            self.set_w(prev)
            return prev, last
        return warm, l_warm

    def _sgd(self, start, l_start, masks) -> float:
        """Masked SGD (Nesterov) on W_A, rolled back if it raises L."""
        s = self.s
        vel = [np.zeros_like(w) for w in start]
        for _s in range(s.sgd_steps):
            _, grads = self.grad_step(*self._random_batch())
            ws = self.get_w()
            new = []
            for i, (w, gr, m) in enumerate(zip(ws, self.dense_grads(grads),
                                               masks)):
                gr = gr + s.weight_decay * w
                gr = gr * m
                vel[i] = s.momentum * vel[i] + gr
                new.append((w - s.lr * (gr + s.momentum * vel[i])) * m)
            self.set_w(new)
        l_new = self.eval_loss()
        if l_new > l_start:
            self.set_w(start)
            l_new = l_start
        return l_new

    def select(self, n_keep: int) -> dict:
        """Adds ``n_keep`` channels greedily; returns the group's info
        (``keep``, ``order``, ``loss_history``, ``size``, ``kept``)."""
        active: list = []
        masks = self.kernel_mask(active)
        self.set_w([w * m for w, m in zip(self.w_init, masks)])
        history = [self.eval_loss()]
        for _ in range(n_keep):
            k = self._next_channel(active)
            active.append(k)
            masks = self.kernel_mask(active)
            start, l_start = self._warm_start(k, history[-1])
            l_new = self._sgd(start, l_start, masks) if self.s.sgd_steps \
                else l_start
            history.append(float(l_new))
        return {"keep": sorted(active), "order": list(active),
                "loss_history": history, "size": self.group.size,
                "kept": len(active)}
