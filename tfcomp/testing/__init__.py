"""Test helpers for tfcomp and for users writing their own layers.

``keras.src.testing`` is private, so tfcomp ships its own
``run_layer_test`` with the checks every tfcomp layer must pass, as Keras'
own harness runs them: config round trip, output shape and dtype, weight
counts, a symbolic call, ``.keras`` save / load, a training step and a
``mixed_float16`` call.

Example:
    >>> from tfcomp.testing import run_layer_test
    >>> run_layer_test(keras.layers.Dense, {"units": 3}, input_shape=(2, 4),
    ...                expected_output_shape=(2, 3),
    ...                expected_num_trainable_weights=2)
"""

from tfcomp.testing.layer_test import run_layer_test

__all__ = ["run_layer_test"]
