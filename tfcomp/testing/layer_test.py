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
                   allow_missing=(),
                   expected_num_trainable_weights: int | None = None,
                   expected_num_non_trainable_weights: int | None = None,
                   symbolic: bool = True, mixed_precision: bool = True):
    """Builds and exercises a layer; raises ``AssertionError`` on failure.

    Checks, in order (as Keras' own layer-test harness does):

    1. every ``__init__`` argument appears in ``get_config()``;
    2. output shape (batch included) and dtype of an eager call;
    3. the numbers of trainable / non-trainable weights, when expected
       counts are given;
    4. a symbolic call (``keras.Input`` -> layer) gives the eager output's
       shape and dtype (``symbolic``);
    5. ``from_config(get_config())`` rebuilds a layer whose config is equal;
    6. a functional model holding the layer saves to ``.keras`` and loads
       back (via the Keras registry) with identical outputs;
    7. one training step with SGD runs and changes at least one trainable
       weight (when the layer has trainable weights and ``train``);
    8. under the global policy ``"mixed_float16"`` a fresh layer runs, its
       floating outputs are float16 and its floating weights float32
       (``mixed_precision``); the previous global policy is restored
       afterwards, also when the check fails.

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
        expected_num_trainable_weights: expected
            ``len(layer.trainable_weights)`` after the first call.
        expected_num_non_trainable_weights: expected
            ``len(layer.non_trainable_weights)`` after the first call.
        symbolic: run the symbolic-call check.
        mixed_precision: run the ``mixed_float16`` check.

    Returns:
        The built layer (for further checks).

    Example:
        >>> run_layer_test(keras.layers.Dense, {"units": 3}, (2, 4), (2, 3),
        ...                expected_num_trainable_weights=2)
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
    _check_weight_counts(layer, expected_num_trainable_weights,
                         expected_num_non_trainable_weights)
    if symbolic:
        _check_symbolic_call(layer_cls, init_kwargs, input_shape, y_np.shape,
                             expected_output_dtype)

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
    if mixed_precision:
        _check_mixed_precision(layer_cls, init_kwargs, x)
    return layer


def _is_float(dtype) -> bool:
    return keras.backend.standardize_dtype(dtype).startswith(
        ("float", "bfloat"))


def _check_weight_counts(layer, trainable, non_trainable) -> None:
    name = type(layer).__name__
    if trainable is not None:
        got = len(layer.trainable_weights)
        assert got == trainable, (
            f"{name}: {got} trainable weights, expected {trainable} "
            f"({[w.path for w in layer.trainable_weights]})")
    if non_trainable is not None:
        got = len(layer.non_trainable_weights)
        assert got == non_trainable, (
            f"{name}: {got} non-trainable weights, expected {non_trainable} "
            f"({[w.path for w in layer.non_trainable_weights]})")


def _check_symbolic_call(layer_cls, init_kwargs, input_shape, eager_shape,
                         expected_dtype) -> None:
    """``keras.Input`` -> a fresh layer: shape and dtype as the eager call."""
    name = layer_cls.__name__
    sym = keras.Input(tuple(input_shape[1:]), batch_size=input_shape[0])
    out = layer_cls(**init_kwargs)(sym)
    shape = tuple(out.shape)
    assert len(shape) == len(eager_shape) and all(
        s is None or s == e for s, e in zip(shape, eager_shape)), (
        f"{name}: symbolic output shape {shape} != eager output shape "
        f"{tuple(eager_shape)}")
    got = keras.backend.standardize_dtype(out.dtype)
    assert got == expected_dtype, (
        f"{name}: symbolic output dtype {got} != {expected_dtype}")


def _check_mixed_precision(layer_cls, init_kwargs, x) -> None:
    """A fresh layer under the global ``mixed_float16`` policy: float16
    floating outputs, float32 floating weights; the policy is restored."""
    name = layer_cls.__name__
    previous = keras.mixed_precision.global_policy()
    try:
        keras.mixed_precision.set_global_policy("mixed_float16")
        layer = layer_cls(**init_kwargs)
        outputs = layer(x)
        for out in keras.tree.flatten(outputs):
            if _is_float(out.dtype):
                got = keras.backend.standardize_dtype(out.dtype)
                assert got == "float16", (
                    f"{name}: under mixed_float16 an output is {got}, "
                    "expected float16")
                assert np.all(np.isfinite(keras.ops.convert_to_numpy(
                    keras.ops.cast(out, "float32")))), (
                    f"{name}: under mixed_float16 the output is not finite")
        for w in layer.weights:
            if _is_float(w.dtype):
                got = keras.backend.standardize_dtype(w.dtype)
                assert got == "float32", (
                    f"{name}: under mixed_float16 weight {w.path} is {got}, "
                    "expected float32")
    finally:
        keras.mixed_precision.set_global_policy(previous)
