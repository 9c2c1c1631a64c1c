"""The short fine-tune a search scores a proposal with: SGD with momentum
0.9 (HAQ's fine-tune) on labelled data for a few batches, sparse
cross-entropy on the model's logits (or probabilities after a softmax);
binary cross-entropy for a one-unit binary output, the model's compiled
loss (else mean squared error) for a regression model's float targets.

Used by :class:`tfcomp.tuners.JointHyperModel` (a trial's reward) and by
:mod:`tfcomp.joint.select` (choosing among the allocator's candidates).

Reference: Wang et al., HAQ, arXiv:1811.08886 (short fine-tune, then
validation accuracy).

Example:
    >>> short_finetune(q, x[:1024], y[:1024], steps=16, batch_size=64)  # doctest: +SKIP
"""

from __future__ import annotations

import keras
import numpy as np

from tfcomp._batches import as_model_input, index_rows, rows
from tfcomp._unpinned import unpinned

__all__ = ["DECAYS", "check_decay", "data_order", "finetune_loss",
           "loss_callable", "outputs_logits", "short_finetune", "task_loss"]


def outputs_logits(model) -> bool:
    """False when the model ends in a softmax (layer or activation)."""
    last = model.layers[-1]
    act = getattr(last, "activation", None)
    return not (isinstance(last, keras.layers.Softmax)
                or getattr(act, "__name__", "") == "softmax")


def _one_unit_per_label(out_shape: tuple, y_shape: tuple) -> bool:
    """Labels shaped like the output (a binary or multi-label output), or
    like it without its last axis of one unit; ``None`` (an open size of
    the output) matches any size."""
    def fits(a, b):
        return len(a) == len(b) and all(
            o is None or int(o) == int(s) for o, s in zip(a, b))

    if fits(out_shape[1:], y_shape[1:]):
        return True
    return out_shape[-1] == 1 and fits(out_shape[1:-1], y_shape[1:])


def finetune_loss(model, y, from_logits: bool | None = None):
    """The loss a short fine-tune of ``model`` on labels ``y`` minimises:
    for float targets (regression) the model's compiled loss, else mean
    squared error; for integer labels with one output unit per label (a
    binary classifier) a binary cross-entropy; else a sparse categorical
    cross-entropy (``from_logits``: None reads the model's last layer).

    Example:
        >>> finetune_loss(model, np.array([0, 3, 1]))
        <SparseCategoricalCrossentropy ...>
    """
    from tfcomp._output_kinds import compiled_loss
    from tfcomp._score import binary_threshold, is_targets

    y = np.asarray(y)
    if is_targets(y):
        loss = compiled_loss(model)  # a config dict or a loss per output:
        return loss if isinstance(loss, (str, keras.losses.Loss)) or (
            callable(loss)) else keras.losses.MeanSquaredError()
    out = keras.tree.flatten(model.outputs)[0]
    if _one_unit_per_label(tuple(out.shape), y.shape):
        return keras.losses.BinaryCrossentropy(
            from_logits=binary_threshold(model) == 0.0)
    if from_logits is None:
        from_logits = outputs_logits(model)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)


def task_loss(model, y, loss=None):
    """The loss a loss-based criterion scores ``model`` on labels ``y``
    with, as a callable ``fn(y, out)``: ``loss`` (a Keras loss, function
    or name), else the model's compiled loss (one loss, not a dict or list
    of them), else :func:`finetune_loss`'s choice (sparse / binary cross
    entropy, squared error for float targets).

    Example:
        >>> task_loss(model, y)(y, model.predict(x))
    """
    from tfcomp._output_kinds import compiled_loss

    if loss is None:
        found = compiled_loss(model)
        if isinstance(found, (str, keras.losses.Loss)) or (
                callable(found) and not isinstance(found, dict)):
            loss = found
    if loss is None:
        loss = finetune_loss(model, y)
    return loss_callable(loss)


def loss_callable(loss):
    """``loss`` (a Keras loss, its name or config, or a function) as a
    callable ``fn(y_true, y_pred)``; a plain function is given labels one
    axis short of a one-unit output that axis, as Keras' ``Loss`` objects
    and ``fit`` do (:func:`_rank_aligned`).

    Example:
        >>> loss_callable("binary_crossentropy")(np.array([1.0]),
        ...                                      np.array([[0.9]]))
    """
    fn = keras.losses.get(loss) if isinstance(loss, (str, dict)) else loss
    if not callable(fn):
        raise ValueError(f"loss must be a Keras loss or callable. Received: "
                         f"loss={loss!r}")
    return fn if isinstance(fn, keras.losses.Loss) else _rank_aligned(fn)


def _rank_aligned(fn):
    """A loss function that, as Keras' ``Loss`` objects and ``fit`` do,
    gives labels one axis short of a one-unit output that axis (a binary
    classifier's ``(N,)`` labels of its ``(N, 1)`` output): Keras' plain
    loss functions (a compiled ``"binary_crossentropy"``) refuse the two
    ranks."""
    def aligned(y_true, y_pred):
        if len(y_true.shape) == len(y_pred.shape) - 1 \
                and y_pred.shape[-1] == 1:
            y_true = keras.ops.expand_dims(y_true, -1)
        return fn(y_true, y_pred)

    aligned.__name__ = getattr(fn, "__name__", "loss")
    return aligned


def data_order(n: int, steps: int | None, batch_size: int, epochs: int,
               seed: int) -> np.ndarray:
    """Sample indices of a short fine-tune: per epoch a permutation of
    ``range(n)`` from ``numpy`` (``seed``), cut to ``steps`` batches (None:
    all). Not ``keras.utils.set_random_seed``: it clears TensorFlow's kernel
    caches, so every later call of a traced function is re-optimised (about
    20 s per HAQ trial on 2 CPU cores, more than the fine-tune).

    Example:
        >>> data_order(10, 1, 4, 2, 0).shape
        (8,)
    """
    rng = np.random.default_rng(int(seed))
    per = n if steps is None else min(n, int(steps) * int(batch_size))
    return np.concatenate([rng.permutation(n)[:per]
                           for _ in range(max(1, int(epochs)))])


DECAYS = ("constant", "cosine")


def check_decay(decay: str) -> str:
    """``decay`` if it is one of :data:`DECAYS`, else a clear error."""
    if decay not in DECAYS:
        raise ValueError(f"decay must be one of {DECAYS}. Received: "
                         f"decay={decay!r}")
    return decay


def short_finetune(model, x, y, *, steps: int | None = None,
                   epochs: int = 1, batch_size: int = 128,
                   learning_rate: float = 1e-3, seed: int = 0,
                   from_logits: bool | None = None,
                   decay: str = "constant"):
    """Compiles ``model`` with SGD(``learning_rate``, momentum 0.9) and a
    fresh optimizer, then fits ``epochs`` epochs of at most ``steps``
    batches (None: the whole data) of ``(x, y)`` in :func:`data_order`
    (``seed``). Returns the model (trained in place).

    ``decay="cosine"`` anneals the rate to 0 over the fine-tune (Loshchilov
    & Hutter, SGDR, arXiv:1608.03983): the last batches then move the
    weights little, so the result depends less on the data order. Measured
    (issue #20, pruned ResNet-20 QAT at 4-6 bits, Fashion-MNIST, 125
    batches of 64, three orders): test-accuracy spread 0.2-1.0 points with
    cosine, 1.3-1.9 at a constant 1e-3. Keep ``learning_rate`` <= 1e-3 for
    QAT models: their BatchNorm is folded into the kernels (as in the int8
    file), so they train without normalisation; at 3e-3 the same fine-tune
    diverged (10% accuracy) while the float model trained at 1e-2."""
    check_decay(decay)
    order = data_order(rows(x), steps, batch_size, epochs, seed)
    rate = learning_rate
    if decay == "cosine":
        total = max(1, -(-len(order) // int(batch_size)))
        rate = keras.optimizers.schedules.CosineDecay(learning_rate, total)
    model.compile(
        optimizer=unpinned(keras.optimizers.SGD(rate, momentum=0.9)),
        loss=finetune_loss(model, y, from_logits))
    x = x if isinstance(x, (list, dict)) else np.asarray(x)
    model.fit(as_model_input(model, index_rows(x, order)),
              np.asarray(y)[order],
              batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
    return model
