"""A layer that returns a fixed tensor: the symbolic source of a constant
in a functional graph.

When ``quantize_model`` opens a user's layer class (keras.io's
``TokenAndPositionEmbedding`` and ViT ``PatchEncoder`` look their position
embeddings up on ``ops.arange(...)``), an inner layer called on a constant
would run once, eagerly, and its result would be frozen into the graph. The
constant is instead this layer's output, fed by the block's input (read
for its place in the graph only), so the inner layer is a node whose
weights train; the TFLite converter folds the constant away.

Example:
    >>> from tfcomp.layers import Constant  # or tfcomp.graph.constant
    >>> positions = Constant(np.arange(12))(x)   # shape (12,), any x
"""

from __future__ import annotations

import keras
import numpy as np

__all__ = ["Constant"]


@keras.saving.register_keras_serializable(package="tfcomp")
class Constant(keras.layers.Layer):
    """Returns ``value`` (no batch axis added) whatever its input.

    Args:
        value: the tensor (array-like; kept in the config as a nested list).
        value_dtype: its dtype (default: the array's).
        **kwargs: ``keras.layers.Layer`` arguments (name, ...).

    Example:
        >>> Constant([0, 1, 2], value_dtype="int32")(keras.Input((4,))).shape
        (3,)
    """

    def __init__(self, value, value_dtype: str | None = None, **kwargs):
        super().__init__(**kwargs)
        array = np.asarray(value)
        self.value_dtype = str(value_dtype or array.dtype)
        self.value = array.astype(self.value_dtype)

    def call(self, inputs):
        return keras.ops.convert_to_tensor(self.value, self.value_dtype)

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(self.value.shape, self.value_dtype)

    def tfcomp_macs(self, in_shapes, out_shapes) -> int:
        """No multiply-accumulates (``tfcomp.profile``)."""
        return 0

    def get_config(self) -> dict:
        return {**super().get_config(), "value": self.value.tolist(),
                "value_dtype": self.value_dtype}
