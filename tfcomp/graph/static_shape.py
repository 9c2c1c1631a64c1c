"""A model's copy with its open input sizes fixed: a fully convolutional
net read as ``keras.Input((None, None, 3))`` has no MACs until an image
size is chosen, and a recurrent model is unrolled for a number of steps.
Both rewrite the top-level InputLayers' batch shapes in the serialized
model (:func:`set_input_shapes`) and rebuild it with the same weights.

Example:
    >>> fixed = with_input_shape(unet, (256, 256, 3))
    >>> tfcomp.profile(fixed).macs
"""

from __future__ import annotations

import numbers

import keras

from tfcomp.graph.copy import copy_weights, model_from_config

__all__ = ["set_input_shapes", "with_input_shape"]


def set_input_shapes(serialized: dict, fill) -> None:
    """Replaces every top-level InputLayer's batch shape ``s`` (and a
    Sequential model's build shape) of a serialized model by
    ``fill(s, i)``, ``i`` the input's position (flat shapes only: a
    missing or nested one is left alone); in place.

    Example:
        >>> set_input_shapes(ser, lambda s, i: [s[0], 80, *s[2:]])
    """
    def apply(shape, i):  # only a flat shape (not None, not nested)
        flat = isinstance(shape, (list, tuple)) and len(shape) > 1 and \
            not any(isinstance(d, (list, tuple, dict)) for d in shape)
        return fill(shape, i) if flat else shape

    config = serialized.get("config") or {}
    index = 0
    for entry in config.get("layers") or []:
        if isinstance(entry, dict) and entry.get("class_name") == "InputLayer":
            cfg = entry.get("config") or {}
            for key in ("batch_shape", "batch_input_shape"):
                if key in cfg:
                    cfg[key] = apply(cfg[key], index)
            index += 1
    if "build_input_shape" in config:
        config["build_input_shape"] = apply(config["build_input_shape"], 0)
    build = serialized.get("build_config")
    if isinstance(build, dict) and "input_shape" in build:
        build["input_shape"] = apply(build["input_shape"], 0)


def _checked_shapes(model, input_shape) -> list:
    """``input_shape`` as one list of sizes per model input, or a
    ValueError naming it."""
    shapes = (list(input_shape) if len(model.inputs) > 1 else
              [input_shape])
    bad = len(shapes) != len(model.inputs)
    out = []
    for shape, tensor in zip(shapes, model.inputs):
        want = tuple(tensor.shape[1:])
        if not isinstance(shape, (list, tuple)) or len(shape) != len(want) \
                or not all(isinstance(d, numbers.Integral) and not
                           isinstance(d, bool) and d > 0 for d in shape) \
                or any(w is not None and w != d for w, d in zip(want, shape)):
            bad = True
            break
        out.append([int(d) for d in shape])
    if bad:
        wanted = [tuple(t.shape[1:]) for t in model.inputs]
        raise ValueError(
            f"input_shape must give every size of model {model.name!r}'s "
            f"input{'s' if len(wanted) > 1 else ''} without the batch axis "
            f"(positive integers, equal to the sizes it fixes): "
            f"{wanted[0] if len(wanted) == 1 else wanted}. Received: "
            f"input_shape={input_shape!r}")
    return out


def with_input_shape(model: keras.Model, input_shape) -> keras.Model:
    """A copy of ``model`` whose inputs have the static ``input_shape``
    (one tuple without the batch axis; a list of them for several inputs)
    and the same weights; ``model`` itself when nothing is open.

    Raises:
        ValueError: ``input_shape`` of another rank, non-positive sizes, or
            a size the model fixes otherwise (naming the model's shape).

    Example:
        >>> with_input_shape(fcn, (64, 64, 3)).input_shape
        (None, 64, 64, 3)
    """
    shapes = _checked_shapes(model, input_shape)
    if all(None not in tuple(t.shape[1:]) for t in model.inputs):
        return model
    serialized = keras.saving.serialize_keras_object(model)
    set_input_shapes(serialized, lambda s, i: [s[0], *shapes[i]]
                     if i < len(shapes) else s)
    fixed = model_from_config(serialized, model)
    copy_weights(model, fixed)
    return fixed
