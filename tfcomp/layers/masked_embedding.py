"""Masked twin of ``keras.layers.Embedding`` (see :mod:`tfcomp.layers.masked`).

* ``weight_mask=True``: an element-wise ``embeddings_mask`` (vocab, dim)
  and a ``pruning_step`` counter (unstructured / block magnitude pruning of
  the table; ``kernel_mask`` is this mask).
* ``channel_mask=True``: one ``channel_mask`` entry per output column
  (``output_dim``) and ``mask_active``: column ``j`` of the table,
  ``embeddings[:, j]`` (``input_dim`` values), is FPGM's filter of output
  channel ``j`` (the dependency graph's ``("embeddings", -1)`` weight).

The lookup returns rows of ``embeddings * masks``: it gathers the rows of
the table and of ``embeddings_mask`` and scales by the channel gate, so
the gradient of ``embeddings`` stays sparse (``IndexedSlices``, as for a
plain Embedding) and masked entries get exactly zero gradient; a
projection on the variable keeps them exactly 0 under any optimizer.
``mask_zero``, inputs of any length and float ids (cast to int32, as
Keras does) behave as in ``Embedding``. ``strip_pruning`` folds the masks
into a plain ``Embedding`` and removes the masked columns (smaller
``output_dim``, equal outputs).

LoRA (``lora_rank``, ``enable_lora``) and Keras' own quantization
(``quantize``, an ``int8`` / ``int4`` dtype policy) are refused: the table
they use is not one prunable variable. ``apply_fpgm`` /
``apply_magnitude_pruning`` leave such an Embedding plain and say why
(:meth:`MaskedEmbedding.unsupported`).

Example:
    >>> emb = MaskedEmbedding(100, 8, weight_mask=True, channel_mask=True)
    >>> y = emb(np.zeros((2, 5), "int32"))
    >>> [v.name for v in emb.mask_variables]
    ['embeddings_mask', 'pruning_step', 'channel_mask', 'mask_active']
"""

from __future__ import annotations

import keras
from keras import ops

from tfcomp.graph.handlers_weighted import embedding_unsupported
from tfcomp.layers.masked import MASKED_CLASSES, MaskedLayer, _SavesMasks

__all__ = ["MaskedEmbedding", "embedding_problem"]


def embedding_problem(layer) -> str | None:
    """Why an Embedding cannot get a masked twin, else None: the dependency
    graph's reason (:func:`tfcomp.graph.handlers_weighted.
    embedding_unsupported`).

    Example:
        >>> embedding_problem(keras.layers.Embedding(10, 4))  # None
    """
    return embedding_unsupported(layer)


@keras.saving.register_keras_serializable(package="tfcomp")
class MaskedEmbedding(_SavesMasks, MaskedLayer, keras.layers.Embedding):
    """``keras.layers.Embedding`` with pruning masks: an element-wise
    ``embeddings_mask`` and a per-column ``channel_mask`` (see the module
    docstring).

    Args:
        *args, **kwargs: ``keras.layers.Embedding``'s (``lora_rank`` and
            quantized dtype policies are refused).
        weight_mask: add ``embeddings_mask`` (magnitude pruning).
        channel_mask: add ``channel_mask`` over ``output_dim`` (FPGM).

    Raises:
        ValueError: LoRA or a quantized dtype policy.

    Example:
        >>> emb = MaskedEmbedding(50, 16, mask_zero=True, channel_mask=True)
        >>> emb.build()
        >>> emb.channel_mask_var.shape
        (16,)
    """

    _kernel_attr = "embeddings"

    def __init__(self, *args, weight_mask: bool = False,
                 channel_mask: bool = False, **kwargs):
        # Embedding(weights=...) builds inside its __init__: build after
        # the mask switches are known instead
        weights = kwargs.pop("weights", None)
        if kwargs.get("lora_rank"):
            raise ValueError(
                "MaskedEmbedding does not support LoRA (the pruned table "
                "would not be one variable). Received: lora_rank="
                f"{kwargs['lora_rank']!r}")
        super().__init__(*args, weight_mask=weight_mask,
                         channel_mask=channel_mask, **kwargs)
        problem = embedding_problem(self)
        if problem is not None:
            raise ValueError(f"MaskedEmbedding {self.name!r}: {problem} "
                             "cannot be masked; keep the layer plain.")
        if weights is not None:
            self.build()
            if isinstance(weights, (list, tuple)) and len(weights) == 1:
                weights = weights[0]
            self._embeddings.assign(weights)

    @classmethod
    def unsupported(cls, layer) -> str | None:
        """Why an ``Embedding`` cannot get this twin (None if it can).

        Example: ``MaskedEmbedding.unsupported(lora_embedding)``
        """
        return embedding_problem(layer)

    def build(self, input_shape=None):
        if self.built:
            return
        super().build(input_shape)
        self._build_masks(self.output_dim)

    def call(self, inputs):
        if keras.backend.standardize_dtype(inputs.dtype) not in ("int32",
                                                                 "int64"):
            inputs = ops.cast(inputs, "int32")
        outputs = ops.take(self.embeddings, inputs, axis=0)
        if self.kernel_mask is not None:
            rows = ops.take(self.kernel_mask, inputs, axis=0)
            outputs = outputs * ops.cast(rows, outputs.dtype)
        gate = self.channel_gate()
        if gate is not None:
            outputs = outputs * ops.cast(gate, outputs.dtype)
        return ops.cast(outputs, self.compute_dtype)

    def enable_lora(self, *args, **kwargs):
        raise ValueError(
            f"MaskedEmbedding {self.name!r} does not support LoRA: strip "
            "the pruning first (tfcomp.pruning.strip_pruning).")

    def quantize(self, *args, **kwargs):
        raise NotImplementedError(
            f"MaskedEmbedding {self.name!r} cannot be quantized by Keras: "
            "strip the pruning first (tfcomp.pruning.strip_pruning), then "
            "quantize the plain Embedding.")


MASKED_CLASSES[keras.layers.Embedding] = MaskedEmbedding
