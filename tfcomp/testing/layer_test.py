"""``run_layer_test``: the contract every tfcomp Keras layer must meet."""

from __future__ import annotations

import inspect
import os
import tempfile

import keras
import numpy as np

__all__ = ["run_layer_test"]


# Arguments Keras' own layers leave out of get_config() (unset LoRA,
# activity regularizers serialised by the base layer, ...).
_KERAS_OPTIONAL_ARGS = {"name", "dtype", "activity_regularizer", "lora_rank",
                        "lora_alpha", "lora_enabled", "quantization_config"}


def _init_args(layer_cls) -> list[str]:
    """Names of ``__init__`` arguments (excluding self, *args, **kwargs)."""
    sig = inspect.signature(layer_cls.__init__)
    return [p.name for p in sig.parameters.values()
            if p.name != "self" and p.kind not in (
                inspect.Parameter.VAR_POSITIONAL,
                inspect.Parameter.VAR_KEYWORD)]


def run_layer_test(layer_cls, init_kwargs: dict, input_shape,
                   expected_output_shape=None, input_data=None,
                   expected_output_dtype="float32", train: bool = True,
                   atol: float = 1e-6, seed: int = 0,
                   custom_objects: dict | None = None,
                   allow_missing=()):
    """Builds and exercises a layer; raises ``AssertionError`` on failure.

    Checks, in order:

    1. every ``__init__`` argument appears in ``get_config()``;
    2. output shape (batch included) and dtype;
    3. ``from_config(get_config())`` rebuilds a layer whose config is equal;
    4. a functional model holding the layer saves to ``.keras`` and loads
       back (via the Keras registry) with identical outputs;
    5. one training step with SGD runs and changes at least one trainable
       weight (when the layer has trainable weights and ``train``).

    Args:
        layer_cls: the layer class.
        init_kwargs: keyword arguments for the constructor.
        input_shape: input shape including the batch axis.
        expected_output_shape: expected output shape incl. batch axis.
        input_data: optional input array (random normal otherwise).
        expected_output_dtype: dtype name of the output.
        train: run the training-step check.
        atol: tolerance for the save/load equality.
        seed: seed for the random input.
        custom_objects: passed to ``keras.saving.load_model``.
        allow_missing: ``__init__`` arguments allowed to be absent from the
            config (Keras itself omits a few, e.g. ``lora_rank``).

    Returns:
        The built layer (for further checks).

    Example:
        >>> run_layer_test(keras.layers.Dense, {"units": 3}, (2, 4), (2, 3))
    """
    rng = np.random.default_rng(seed)
    x = (np.asarray(input_data, dtype="float32") if input_data is not None
         else rng.normal(size=input_shape).astype("float32"))

    layer = layer_cls(**init_kwargs)
    config = layer.get_config()
    exempt = _KERAS_OPTIONAL_ARGS | set(allow_missing)
    missing = [a for a in _init_args(layer_cls)
               if a not in config and a not in exempt]
    assert not missing, (
        f"{layer_cls.__name__}.get_config() lacks __init__ arguments "
        f"{missing}")

    y = layer(x)
    y_np = keras.ops.convert_to_numpy(y)
    if expected_output_shape is not None:
        assert tuple(y_np.shape) == tuple(expected_output_shape), (
            f"{layer_cls.__name__}: output shape {y_np.shape} != expected "
            f"{tuple(expected_output_shape)}")
    assert keras.backend.standardize_dtype(y.dtype) == expected_output_dtype, (
        f"{layer_cls.__name__}: output dtype {y.dtype} != "
        f"{expected_output_dtype}")

    clone = layer_cls.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config(), (
        f"{layer_cls.__name__}: from_config(get_config()) changes the "
        "config")

    inputs = keras.Input(tuple(input_shape[1:]), batch_size=None)
    fresh = layer_cls.from_config(layer.get_config())
    model = keras.Model(inputs, fresh(inputs))
    # Copy the first layer's state so the saved model matches it exactly.
    if len(fresh.weights) == len(layer.weights):
        for dst, src in zip(fresh.weights, layer.weights):
            dst.assign(src)
    before = keras.ops.convert_to_numpy(model(x, training=False))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "layer.keras")
        model.save(path)
        loaded = keras.saving.load_model(path, custom_objects=custom_objects)
    after = keras.ops.convert_to_numpy(loaded(x, training=False))
    np.testing.assert_allclose(
        after, before, atol=atol, rtol=0,
        err_msg=f"{layer_cls.__name__}: .keras round trip changes outputs")

    if train and model.trainable_weights:
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        start = [keras.ops.convert_to_numpy(w).copy()
                 for w in model.trainable_weights]
        target = rng.normal(size=before.shape).astype("float32")
        model.train_on_batch(x, target)
        end = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
        assert any(not np.array_equal(a, b) for a, b in zip(start, end)), (
            f"{layer_cls.__name__}: a training step changed no weight")
    return layer
