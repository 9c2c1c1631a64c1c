"""Channel importance criteria: callables ``group -> scores``.

A criterion maps a :class:`tfcomp.graph.Group` to one score per unit
(channel); plans remove the lowest-scoring units. Scores are aggregated over
the coupled members of the group: every producer (all branches of a
residual sum, a conv and its projection shortcut) adds its own per-unit
score. Members that touch only some units (a producer feeding part of a
concatenation) add their mean score to the units they do not touch.

Built-ins (``get(name)``): ``l1``, ``l2``, ``fpgm``, ``bn_scale``,
``random``, ``taylor``. Add your own with :func:`register`.

Example:
    >>> crit = tfcomp.pruning.importance.get("fpgm")
    >>> scores = crit(graph.group("stem_conv"))
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import keras
import numpy as np
from scipy.spatial.distance import cdist

from tfcomp._batches import index_rows, rows
from tfcomp._finetune import task_loss
from tfcomp._io import as_arrays, check_positive_int
from tfcomp._output_kinds import compiled_loss
from tfcomp.graph import PASS_THROUGH, PRODUCER

__all__ = [
    "Taylor",
    "available",
    "bn_scale",
    "fpgm",
    "get",
    "l1",
    "l2",
    "random",
    "register",
]


def _aggregate(group, per_member: Callable, roles, variables=None,
               include_bias=False, weights=None) -> np.ndarray:
    total = np.zeros(group.size, dtype="float64")
    found = False
    for m in group.members:
        if m.role not in roles:
            continue
        r = group.member_matrix(m, variables, include_bias, weights)
        if r is None:
            continue
        mat, covered = r
        if not covered.any():
            continue
        s = np.asarray(per_member(mat[covered].astype("float64")),
                       dtype="float64")
        full = np.full(group.size, s.mean())
        full[covered] = s
        total += full
        found = True
    if not found:
        raise ValueError(
            f"Group {group.id!r} has no {'/'.join(roles)} weights to score.")
    return total


def l1(group, roles=(PRODUCER,)) -> np.ndarray:
    """L1 norm of each channel's filters, summed over coupled producers.

    Reference: Li et al., Pruning Filters for Efficient ConvNets,
    arXiv:1608.08710.

    Example:
        >>> l1(graph.group("conv1"))
    """
    return _aggregate(group, lambda w: np.abs(w).sum(axis=1), roles)


def l2(group, roles=(PRODUCER,)) -> np.ndarray:
    """L2 norm of each channel's filters, summed over coupled producers.

    Example:
        >>> l2(graph.group("conv1"))
    """
    return _aggregate(group, lambda w: np.sqrt((w * w).sum(axis=1)), roles)


def _gm_scores(w: np.ndarray) -> np.ndarray:
    return cdist(w, w, metric="euclidean").sum(axis=1)


def fpgm(group, roles=(PRODUCER,)) -> np.ndarray:
    """Sum of distances to the other filters (geometric-median criterion).

    ``g(j) = sum_j' ||F_j - F_j'||_2`` per producer; the filters with the
    smallest ``g`` are nearest the geometric median, i.e. most replaceable,
    and are removed first.

    Reference: He et al., Filter Pruning via Geometric Median, CVPR 2019,
    arXiv:1811.00250.

    Example:
        >>> fpgm(graph.group("conv1"))
    """
    return _aggregate(group, _gm_scores, roles)


def bn_scale(group) -> np.ndarray:
    """|gamma| of the BatchNorm layers in the group (network slimming).

    Falls back to :func:`l1` for groups without a BatchNorm.

    Reference: Liu et al., Learning Efficient Convolutional Networks through
    Network Slimming, arXiv:1708.06519.

    Example:
        >>> bn_scale(graph.group("conv1"))
    """
    bn = [m for m in group.members if m.role == PASS_THROUGH
          and any(w[0] == "gamma" for w in m.weights)
          and isinstance(group.graph.layer(m.layer),
                         keras.layers.BatchNormalization)]
    if not bn:
        return l1(group)
    return _aggregate(group, lambda w: np.abs(w).sum(axis=1),
                      (PASS_THROUGH,), variables=("gamma",))


def random(group, seed: int = 0) -> np.ndarray:
    """Uniform random scores (a baseline), seeded per group.

    Example:
        >>> random(graph.group("conv1"), seed=3)
    """
    rng = np.random.default_rng([int(seed), int(group.index)])
    return rng.random(group.size)


class Taylor:
    """First-order Taylor importance ``(sum_{w in unit} g * w)^2``.

    The squared first-order estimate of the loss change when a unit's
    weights (all coupled producers, biases included) are removed, averaged
    over mini-batches. Gradients are computed once per model and cached.

    Reference: Molchanov et al., Importance Estimation for Neural Network
    Pruning, CVPR 2019, arXiv:1906.10771. (Deviation: weights of the
    producer convs instead of BN gates; a few batches, CPU scale.)

    Args:
        data: ``(x, y)`` arrays (``x`` a list of arrays for a model with
            several inputs), inputs alone, or a ``tf.data.Dataset`` /
            iterable of such batches (``tfcomp._io.as_arrays``; the first
            ``max_batches * batch_size`` samples). ``y`` integer labels
            use the compiled loss, else sparse categorical cross-entropy
            (on logits, or a softmax's probabilities), binary cross entropy
            for a one-unit classifier, MSE for float targets.
        loss: optional ``loss(y_true, y_pred)`` overriding the above.
        batch_size: samples per gradient batch.
        max_batches: number of batches used.

    Example:
        >>> crit = Taylor((x[:256], y[:256]))
        >>> crit(graph.group("conv1"))
    """

    def __init__(self, data, loss=None, batch_size: int = 32,
                 max_batches: int = 8):
        if data is None:
            raise ValueError(
                "importance='taylor' needs data=(x, y). Received: data=None")
        self.data = data  # read per model by tfcomp._io.as_arrays
        self.y = data[1] if isinstance(data, (tuple, list)) and len(
            data) == 2 else None
        self.loss = loss
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.max_batches = check_positive_int(max_batches, "max_batches")
        self._cache: dict = {}

    def _loss_fn(self, model):
        if self.y is None and self.loss is None and compiled_loss(
                model) is None:
            return lambda y, p: keras.ops.mean(keras.ops.square(p))
        return task_loss(model, self.y, self.loss)

    def _products(self, graph) -> list:
        key = id(graph)
        if key in self._cache:
            return self._cache[key]
        import tensorflow as tf  # no public Keras API for gradients

        model = graph.model
        x, self.y = as_arrays(self.data, model=model, max_items=(
            self.max_batches * self.batch_size), name="data", targets=True)
        loss_fn = self._loss_fn(model)
        keys, variables = [], []
        for path, layer in graph.layers.items():
            for v in getattr(layer, "trainable_weights", []):
                keys.append((path, v.name))
                variables.append(v)
        n = rows(x)
        out = []
        for b in range(min(self.max_batches,
                           max(1, -(-n // self.batch_size)))):
            sl = slice(b * self.batch_size, (b + 1) * self.batch_size)
            xb = index_rows(x, sl)
            if rows(xb) == 0:
                break
            yb = None if self.y is None else np.asarray(self.y)[sl]
            with tf.GradientTape() as tape:
                pred = model(xb, training=False)
                loss = loss_fn(yb, pred)
            grads = tape.gradient(loss, variables)
            prods = {}
            for k, v, g in zip(keys, variables, grads):
                w = keras.ops.convert_to_numpy(v)
                prods[k] = (np.zeros_like(w) if g is None
                            else w * np.asarray(g))
            out.append(prods)
        self._cache = {key: out}
        return out

    def __call__(self, group) -> np.ndarray:
        batches = self._products(group.graph)
        total = np.zeros(group.size)
        for prods in batches:
            c = _aggregate(group, lambda w: w.sum(axis=1), (PRODUCER,),
                           include_bias=True, weights=prods)
            total += c * c
        return total / max(1, len(batches))


_REGISTRY: dict = {
    "l1": lambda **kw: l1,
    "l2": lambda **kw: l2,
    "fpgm": lambda **kw: fpgm,
    "bn_scale": lambda **kw: bn_scale,
    "random": lambda seed=0, **kw: functools.partial(random, seed=seed),
    "taylor": lambda data=None, **kw: Taylor(data),
}


def available() -> list:
    """Names accepted by :func:`get`."""
    return sorted(_REGISTRY)


def register(name: str, factory: Callable) -> None:
    """Adds a criterion: ``factory(seed=..., data=...) -> fn(group)``.

    Example:
        >>> register("lasso", lambda data=None, **kw: LassoImportance(data))
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string. Received: "
                         f"name={name!r}")
    if not callable(factory):
        raise TypeError(f"factory must be callable. Received: {factory!r}")
    _REGISTRY[name] = factory


def get(name, seed: int = 0, data=None) -> Callable:
    """Returns the criterion ``fn(group) -> scores`` for a name or callable.

    Args:
        name: ``l1``, ``l2``, ``fpgm``, ``bn_scale``, ``random``, ``taylor``
            (or a registered name), or a callable returned as is.
        seed: seed for ``random``.
        data: ``(x, y)`` for ``taylor``.

    Example:
        >>> get("random", seed=1)(group)
    """
    if callable(name):
        return name
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(
            f"Unknown importance {name!r}. Choose from {available()} or pass "
            "a callable group -> scores.")
    return _REGISTRY[name](seed=seed, data=data)
