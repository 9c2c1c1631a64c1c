"""The short fine-tune a search scores a proposal with: SGD with momentum
0.9 (HAQ's fine-tune) on labelled data for a few batches, sparse
cross-entropy on the model's logits (or probabilities after a softmax).

Used by :class:`tfcomp.tuners.JointHyperModel` (a trial's reward) and by
:mod:`tfcomp.joint.select` (choosing among the allocator's candidates).

Reference: Wang et al., HAQ, arXiv:1811.08886 (short fine-tune, then
validation accuracy).

Example:
    >>> short_finetune(q, x[:1024], y[:1024], steps=16, batch_size=64)
"""

from __future__ import annotations

import keras

__all__ = ["outputs_logits", "short_finetune"]


def outputs_logits(model) -> bool:
    """False when the model ends in a softmax (layer or activation)."""
    last = model.layers[-1]
    act = getattr(last, "activation", None)
    return not (isinstance(last, keras.layers.Softmax)
                or getattr(act, "__name__", "") == "softmax")


def short_finetune(model, x, y, *, steps: int | None = None,
                   epochs: int = 1, batch_size: int = 128,
                   learning_rate: float = 1e-3, seed: int = 0,
                   from_logits: bool | None = None):
    """Compiles ``model`` with SGD(``learning_rate``, momentum 0.9) and a
    fresh optimizer, then fits ``epochs`` epochs of at most ``steps``
    batches (None: the whole data) of ``(x, y)``, data order from
    ``seed``. Returns the model (trained in place)."""
    keras.utils.set_random_seed(int(seed))
    if from_logits is None:
        from_logits = outputs_logits(model)
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=from_logits))
    model.fit(x, y, batch_size=batch_size, epochs=epochs,
              steps_per_epoch=steps, verbose=0)
    return model
