"""Optimizers whose traced train steps can be freed (TensorFlow backend).

On the TensorFlow backend every Keras optimizer sums its gradients across
replicas in ``apply``, also under the default single-replica strategy.
TensorFlow wraps that sum (``ReplicaContext.all_reduce``) in
``tf.custom_gradient``, which in graph mode registers a gradient function in
TensorFlow's process-wide gradient registry; the function closes over the
traced tensors (tensorflow/tensorflow#97697, open in TF 2.21). So every new
``train_function`` (each ``compile`` + ``fit`` of a candidate in a search)
stays in memory until the process ends. Measured here (issue #20), compiling
and fitting a fresh copy 40 times: +16 MB per fit for a float ResNet-8,
+50 MB for its quantization-aware copy; the joint benchmark reached 20.7 GB.

With one replica and no ``tf.distribute`` strategy that sum is the identity,
so :func:`unpinned` makes the optimizer skip it then, and only then: under a
strategy (``MirroredStrategy`` & co.) the optimizer reduces as before. Every
loop in tfcomp that compiles a model per candidate (fine-tunes in the
searches, DCP, BENN, the benchmarks) uses it.

Example:
    >>> model.compile(unpinned(keras.optimizers.SGD(1e-3)), loss)
    >>> model.fit(x, y)      # its train graph is freed with the model
"""

from __future__ import annotations

import keras

__all__ = ["unpinned"]

_HOOK = "_all_reduce_sum_gradients"


def unpinned(optimizer):
    """``optimizer`` (changed in place, returned) without the single-replica
    gradient all-reduce that pins each traced train step in memory.

    A no-op on other backends and on Keras versions without the hook;
    strings (``"adam"``) are resolved with ``keras.optimizers.get`` first.

    Example:
        >>> opt = unpinned(keras.optimizers.Adam(1e-3))
    """
    optimizer = keras.optimizers.get(optimizer)
    reduce = getattr(optimizer, _HOOK, None)
    if reduce is None or getattr(reduce, "_tfcomp_unpinned", False):
        return optimizer
    import tensorflow as tf

    def single_replica_identity(grads_and_vars):
        if (tf.distribute.has_strategy()
                or tf.distribute.get_strategy().num_replicas_in_sync != 1):
            return reduce(grads_and_vars)
        return list(grads_and_vars)

    single_replica_identity._tfcomp_unpinned = True
    setattr(optimizer, _HOOK, single_replica_identity)
    return optimizer
