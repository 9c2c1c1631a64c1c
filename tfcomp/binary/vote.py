"""``EnsembleVote``: the vote of K classifiers as one Keras layer.

Example:
    >>> vote = EnsembleVote(weights=[1.0, 1.0, 0.5], vote="hard")
    >>> y = vote([m(x) for m in members])
"""

from __future__ import annotations

import keras
from keras import ops

from tfcomp.distill.distiller import as_logits

__all__ = ["EnsembleVote"]


def _first_max(out):
    """One-hot of ``argmax`` (ties to the lowest class) without ``argmax``,
    whose Keras TF form (a ``-0.0`` fix with ``BitwiseAnd``) TFLite lacks."""
    is_max = ops.cast(out >= ops.max(out, axis=-1, keepdims=True), "float32")
    return is_max * ops.cast(ops.cumsum(is_max, axis=-1) == 1.0, "float32")


@keras.saving.register_keras_serializable(package="tfcomp")
class EnsembleVote(keras.layers.Layer):
    """Weighted hard or soft vote over member outputs ``(batch, classes)``.

    ``hard``: ``sum_k w_k * onehot(argmax(o_k)) / sum_k w_k`` (vote shares;
    argmax gives the winner, ties to the lowest class). ``soft``:
    ``sum_k w_k * softmax(z_k) / sum_k w_k`` with ``z_k`` the member's
    logits (``log p`` for probability outputs, see ``as_logits``).

    Args:
        weights: one vote weight per member (>= 0, not all 0): 1 for
            bagging, SAMME's ``alpha_m`` for boosting.
        vote: "hard" or "soft".
        outputs: how members' outputs are read: "auto", "logits" or
            "probabilities".

    Example:
        >>> EnsembleVote([1, 1, 1], "soft")([a, b, c])
    """

    def __init__(self, weights, vote: str = "hard", outputs: str = "auto",
                 **kwargs):
        super().__init__(**kwargs)
        if vote not in ("hard", "soft"):
            raise ValueError(f"vote must be 'hard' or 'soft'. Received: "
                             f"vote={vote!r}")
        if outputs not in ("auto", "logits", "probabilities"):
            raise ValueError(f"outputs must be 'auto', 'logits' or "
                             f"'probabilities'. Received: outputs={outputs!r}")
        weights = [float(w) for w in weights]
        if not weights or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"weights must be >= 0 and not all 0. "
                             f"Received: weights={weights!r}")
        self.member_weights = weights
        self.vote = vote
        self.outputs = outputs

    def call(self, inputs):
        inputs = list(inputs) if isinstance(inputs, (list, tuple)) else \
            [inputs]
        if len(inputs) != len(self.member_weights):
            raise ValueError(f"EnsembleVote has {len(self.member_weights)} "
                             f"weights but received {len(inputs)} inputs")
        total = sum(self.member_weights)
        acc = None
        for w, out in zip(self.member_weights, inputs):
            out = ops.cast(out, "float32")
            if self.vote == "hard":
                part = _first_max(out)
            else:
                part = ops.softmax(as_logits(out, self.outputs), axis=-1)
            part = part * (w / total)
            acc = part if acc is None else acc + part
        return acc

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self) -> dict:
        return {**super().get_config(), "weights": self.member_weights,
                "vote": self.vote, "outputs": self.outputs}
