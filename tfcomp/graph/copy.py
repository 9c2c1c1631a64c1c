"""In-memory copies of a user's Keras model: no file, no unsafe
deserialization.

Keras rebuilds a layer from its config (``from_config``). For a ``Lambda``
layer that means re-creating its Python function from marshalled bytecode,
which Keras refuses unless ``safe_mode=False`` (and the re-created function
loses its module's globals, so ``lambda t: keras.ops.relu(t)`` would fail
later with a ``NameError``). The model tfcomp copies is the user's own
in-memory object, so nothing has to come back from bytes: the copies made
here hand every rebuilt ``Lambda`` layer the *same* function objects as the
original (closure and globals included) through a custom-object scope, and
keep Keras' ``safe_mode`` on for everything else. ``keras.ops`` calls in a
functional model are copied as Keras copies them.

* :func:`clone_layer`: a new layer of the same class and config.
* :func:`clone_model`: ``keras.models.clone_model(..., recursive=True)``
  with :func:`clone_layer` as the default (or your ``clone_function``).
* :func:`copy_weights`: values from one model to a structurally equal one,
  leaf layer by leaf layer (``outer/inner`` paths), variable by name and
  order (four ``kernel`` variables inside a ``MultiHeadAttention`` go to
  the four in the copy).
* :func:`model_from_config`: ``keras.saving.deserialize_keras_object`` of a
  (possibly rewritten) ``serialize_keras_object(model)``, with the
  ``Lambda`` functions taken from ``model``.
* :func:`rebuild_layer`: ``cls.from_config(config)``, or, for a user's
  layer whose ``__init__`` takes no ``**kwargs`` (keras.io's
  ``TransformerBlock``: Keras' default ``from_config`` then fails on
  ``name`` / ``trainable`` / ``dtype``), the constructor with the
  arguments it names, then those three set on the new layer. Copies of a
  model also find its unregistered layer classes (defined in a script or
  notebook) from the live model, as the ``Lambda`` functions above.
* :func:`refresh_state`: after a layer's variables were assigned, layers
  caching tensors derived from them (an adapted ``Normalization``'s mean
  and variance) recompute those, as Keras' loader does; every copy here
  calls it.
* :func:`model_like`: a new functional model of the user's own
  ``keras.Model`` subclass when the model was one (its ``train_step``).
* :func:`functional_view`: a functional model over a Sequential model's
  own layers (for the rewrites ``clone_model(call_function=...)`` and
  ``model.input`` need), or the model itself.

Example:
    >>> from tfcomp.graph.copy import clone_model, copy_weights
    >>> twin = clone_model(model)          # Lambda layers included
    >>> copy_weights(model, twin)
    >>> ser = keras.saving.serialize_keras_object(model)
    >>> same = model_from_config(ser, model)
"""

from __future__ import annotations

import inspect
import re
import warnings

import keras

from tfcomp.graph.outputs import NamedOutputsModel, keep_output_names
from tfcomp.graph.walk import iter_leaf_layers

__all__ = ["clone_layer", "clone_model", "copy_weights", "functional_view",
           "float32_copy", "live_class_objects", "live_config",
           "model_from_config", "model_like",
           "rebuild_layer", "refresh_state", "user_layer_class"]

# Keras' base layer arguments that a user's ``__init__`` may not accept.
_BASE_ARGS = ("name", "trainable", "dtype")

# Lambda config key -> the Lambda attribute holding the in-memory object.
_FUNCTION_ATTRS = {"function": "function", "output_shape": "_output_shape",
                   "mask": "mask"}


def _is_function_config(value) -> bool:
    return isinstance(value, dict) and value.get("class_name") in (
        "__lambda__", "function")


def _point_at_live(config: dict, key: str, fn, objects: dict) -> None:
    """``config[key]`` refers to ``fn``, registered in ``objects`` under a
    unique name."""
    name = f"tfcomp_copy>{key}_{id(fn)}"
    objects[name] = fn
    config[key] = {"module": None, "class_name": "function",
                   "config": name, "registered_name": name}


def _use_live_functions(layer, config: dict, objects: dict) -> None:
    """Points a Lambda config's functions at ``layer``'s own objects."""
    for key, attr in _FUNCTION_ATTRS.items():
        fn = getattr(layer, attr, None)
        if _is_function_config(config.get(key)) and callable(fn):
            _point_at_live(config, key, fn, objects)


# Config keys holding an activation function (a user's own function or
# lambda serialises as a dict Keras cannot read back under safe_mode).
_ACTIVATION_KEYS = ("activation", "recurrent_activation")


def live_config(layer, config: dict | None = None) -> dict:
    """``layer.get_config()`` (or ``config``) with a user's own activation
    function (a named function or a lambda: ``activation=my_act``) as the
    live callable instead of its serialised form, which Keras cannot read
    back (an unregistered function, or bytecode under ``safe_mode``).
    Keras layers accept a callable activation in their constructor.

    Example:
        >>> cfg = live_config(conv)     # cfg["activation"] is my_act
        >>> twin = type(conv).from_config(cfg)
    """
    config = layer.get_config() if config is None else dict(config)
    for key in _ACTIVATION_KEYS:
        fn = getattr(layer, key, None)
        if isinstance(config.get(key), dict) and callable(fn):
            config[key] = fn
    return config


def _use_live_activations(layer, config: dict, objects: dict) -> None:
    """Points a serialised user activation function of ``config`` at
    ``layer``'s own function (registered in ``objects``)."""
    for key in _ACTIVATION_KEYS:
        fn = getattr(layer, key, None)
        if isinstance(config.get(key), dict) and callable(fn):
            _point_at_live(config, key, fn, objects)


def clone_layer(layer, config: dict | None = None):
    """A new, unbuilt layer of ``layer``'s class from ``config`` (default:
    ``layer.get_config()``).

    A ``Lambda`` layer gets ``layer``'s own function objects instead of a
    bytecode round trip, so Python lambdas copy under ``safe_mode``.

    Args:
        layer: a Keras layer (or a ``keras.ops`` operation of a graph).
        config: optional (modified) config of ``layer``.

    Returns:
        The new layer.

    Example:
        >>> twin = clone_layer(keras.layers.Lambda(lambda t: t * 2.0))
    """
    config = live_config(layer, config)
    if user_layer_class(type(layer)):  # Keras' auto-config omits the name
        config.setdefault("name", layer.name)
    _adapted_vocabulary(layer, config)
    if not isinstance(layer, keras.layers.Lambda):
        return rebuild_layer(layer.__class__, config)
    objects = {}
    _use_live_functions(layer, config, objects)
    with keras.saving.custom_object_scope(objects):
        return layer.__class__.from_config(config)


def _adapted_vocabulary(layer, config: dict) -> None:
    """An adapted ``IntegerLookup`` / ``StringLookup`` / ``TextVectorization``
    keeps its vocabulary outside its config (Keras saves it as an asset):
    the copy gets it in its config, or it would start empty."""
    if not hasattr(layer, "get_vocabulary") or config.get(
            "vocabulary") is not None:
        return
    try:
        vocabulary = layer.get_vocabulary(include_special_tokens=False)
    except (TypeError, ValueError, RuntimeError):
        return
    if len(vocabulary):
        config["vocabulary"] = list(vocabulary)
        idf = getattr(layer, "idf_weights", None)
        if idf is not None and config.get("output_mode") == "tf_idf":
            config["idf_weights"] = keras.ops.convert_to_numpy(idf)[
                -len(vocabulary):]


def user_layer_class(cls) -> bool:
    """A layer class of the user's own (not Keras', not tfcomp's).

    Example:
        >>> user_layer_class(keras.layers.Dense)
        False
    """
    module = getattr(cls, "__module__", "") or ""
    return module.split(".")[0] not in ("keras", "tfcomp", "tf_keras")


def rebuild_layer(cls, config: dict):
    """``cls.from_config(config)``; for a user's layer class whose
    ``__init__`` rejects Keras' base arguments (no ``**kwargs``), the
    constructor with the arguments it names, then ``name`` / ``trainable``
    / ``dtype`` set on the new layer.

    Raises:
        TypeError: naming the class and the config keys its ``__init__``
            does not take (beyond those three), with the fix.

    Example:
        >>> twin = rebuild_layer(type(block), block.get_config())
    """
    try:
        return cls.from_config(config)
    except TypeError as exc:
        if not user_layer_class(cls) or not isinstance(config, dict):
            raise
        error = exc
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        raise error
    unknown = sorted(k for k in config if k not in params
                     and k not in _BASE_ARGS)
    if unknown:
        raise TypeError(
            f"Cannot rebuild layer {config.get('name')!r} of class "
            f"{cls.__name__} from its config: its __init__ takes no "
            f"{unknown} (nor **kwargs). Give the class a get_config() that "
            "returns exactly its constructor arguments and accept **kwargs "
            "(passed to super().__init__), as Keras' guide 'Making new "
            "layers and models via subclassing' shows; keras.saving needs "
            f"the same to load the model. ({error})") from error
    layer = cls(**{k: v for k, v in config.items() if k in params})
    if config.get("name"):
        layer.name = config["name"]
    if "trainable" in config:
        layer.trainable = bool(config["trainable"])
    dtype = config.get("dtype")
    if dtype is not None and "dtype" not in params:
        policy = keras.saving.deserialize_keras_object(dtype) if \
            isinstance(dtype, dict) else keras.DTypePolicy(dtype)
        layer.dtype_policy = policy
    return layer


class _LiveClass:
    """Stands for a user's layer class during a copy: Keras finds it by its
    registered name even when it was never registered, and builds it with
    :func:`rebuild_layer`."""

    def __init__(self, cls):
        self.cls = cls

    def from_config(self, config):
        if not issubclass(self.cls, keras.Model):
            return rebuild_layer(self.cls, config)
        try:
            return self.cls.from_config(config)
        except TypeError as exc:  # a constructor beyond (inputs, outputs)
            warnings.warn(
                f"The new model is a plain keras.Model, not a "
                f"{self.cls.__name__}: its from_config failed ({exc}). Its "
                "own train_step / test_step are not carried over.",
                UserWarning, stacklevel=2)
            return keras.Model.from_config(config)


def live_class_objects(classes) -> dict:
    """``custom_objects`` for ``keras.saving.load_model`` /
    ``deserialize_keras_object`` that build the user's ``classes`` with
    :func:`rebuild_layer` (unregistered ones too), keyed as a ``.keras``
    file names them.

    Example:
        >>> keras.saving.load_model("m.keras", custom_objects=
        ...     live_class_objects([TransformerBlock]))
    """
    # the registered name is the class name for an unregistered class
    return {keras.saving.get_registered_name(cls): _LiveClass(cls)
            for cls in classes}


def _live_classes(source: keras.Model) -> dict:
    """``{registered name: _LiveClass}`` of the user's own layer and model
    classes of ``source`` (itself, leaf layers and nested models)."""
    classes = {type(source)}  # keras.io's CustomModel(inputs, outputs)
    stack = [source]
    while stack:
        model = stack.pop()
        for layer in getattr(model, "layers", []):
            if isinstance(layer, keras.Model):
                stack.append(layer)
            classes.add(type(layer))
    return live_class_objects(c for c in classes if user_layer_class(c))


def refresh_state(layer) -> None:
    """Lets ``layer`` recompute what it caches from its variables after they
    were assigned: an adapted ``keras.layers.Normalization`` keeps its mean
    and variance as tensors made from its variables (``finalize_state``,
    which Keras' loader calls after loading and ``set_weights`` does not):
    without it a copy normalises with the values it was built with.
    Nested models: every leaf layer.

    Example:
        >>> twin.get_layer("norm").set_weights(norm.get_weights())
        >>> refresh_state(twin.get_layer("norm"))
    """
    if isinstance(layer, keras.Model):
        for _, leaf in iter_leaf_layers(layer):
            refresh_state(leaf)
        return
    finalize = getattr(layer, "finalize_state", None)
    if callable(finalize) and layer.built:
        finalize()


def functional_view(model, what: str = "this step") -> keras.Model:
    """``model`` itself, or for a Sequential model a functional model over
    the same layer objects (same names, same weights).

    Args:
        model: a ``keras.Model``.
        what: the caller, named in the error.

    Raises:
        TypeError: not a ``keras.Model``.
        ValueError: a Sequential model without an input shape.

    Example:
        >>> view = functional_view(keras.Sequential([keras.Input((4,)),
        ...                                          keras.layers.Dense(2)]))
        >>> view.layers[-1].name == "dense"
        True
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model. Received: "
                        f"{type(model).__name__}")
    if isinstance(model, keras.Sequential):
        if not model.built or not model.inputs:
            raise ValueError(
                f"Sequential model {model.name!r} has no input shape yet; "
                f"build it (keras.Input first) before {what}.")
        return keras.Model(model.inputs, model.outputs, name=model.name)
    return model


def model_like(model: keras.Model, inputs, outputs,
               name: str | None = None) -> keras.Model:
    """A functional model of ``inputs`` -> ``outputs`` named like ``model``
    and, when ``model`` is an instance of the user's own ``keras.Model``
    subclass built functionally (keras.io's ``CustomModel(inputs, outputs)``
    with its own ``train_step``), of that class, so ``fit`` keeps running
    the user's step. A class whose constructor does not take
    ``(inputs, outputs, name)`` gives a plain ``keras.Model`` and a warning.

    Example:
        >>> q = model_like(model, new_inputs, new_outputs)
        >>> type(q) is type(model)
        True
    """
    cls = type(model)
    name = model.name if name is None else name
    new = None
    if user_layer_class(cls) and not isinstance(model, keras.Sequential):
        try:
            new = cls(inputs=inputs, outputs=outputs, name=name)
        except TypeError as exc:
            warnings.warn(
                f"The new model is a plain keras.Model, not a "
                f"{cls.__name__}: {cls.__name__}(inputs=..., outputs=..., "
                f"name=...) failed ({exc}). Its own train_step / test_step "
                "are not carried over.", UserWarning, stacklevel=3)
    if new is None:
        new = keras.Model(inputs, outputs, name=name)
    return keep_output_names(model, new,
                             user_class=user_layer_class(type(new)))


def _reduced_precision(layer) -> bool:
    policy = getattr(layer, "dtype_policy", None)
    return str(getattr(policy, "compute_dtype", "float32")) in (
        "float16", "bfloat16")


def float32_copy(model: keras.Model) -> keras.Model:
    """``model`` itself when every layer computes in float32; else a copy
    whose layers compute in float32 (a model built under a
    ``mixed_float16`` / ``mixed_bfloat16`` policy, as GPU training sets it:
    its variables are float32 already, so the weights copy unchanged).
    The TFLite converter cannot convert reduced-precision compute.

    Example:
        >>> tflite_ready = float32_copy(mixed_model)
    """
    if not any(_reduced_precision(lyr) for _, lyr in iter_leaf_layers(model)):
        return model

    def clone(layer):
        if not _reduced_precision(layer):
            return None
        return clone_layer(layer, {**layer.get_config(), "dtype": "float32"})

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")  # sublayers built in __init__
    try:
        new = clone_model(model, clone)
    finally:
        keras.config.set_dtype_policy(previous)
    copy_weights(model, new)
    return new


def clone_model(model: keras.Model, clone_function=None) -> keras.Model:
    """``keras.models.clone_model(model, recursive=True)`` that copies
    ``Lambda`` layers and ``keras.ops`` calls (weights are not copied; see
    :func:`copy_weights`).

    Args:
        model: a functional or Sequential model.
        clone_function: optional ``layer -> new layer``; returning None
            falls back to :func:`clone_layer`.

    Returns:
        The new model.

    Example:
        >>> twin = clone_model(model, lambda l: None)
    """

    def clone(layer):
        new = clone_function(layer) if clone_function is not None else None
        return clone_layer(layer) if new is None else new

    new = keras.models.clone_model(model, clone_function=clone,
                                   recursive=True)
    if isinstance(model, NamedOutputsModel) and isinstance(
            new, NamedOutputsModel):  # Keras' clone names them by layer
        new.output_names = list(model.output_names)
    return new


# Keras names a variable created without a name "variable_<n>", n from a
# process-wide counter, so the same variable is called differently in a
# copy (ConvNeXt's LayerScale gamma: "variable_18" in the model,
# "variable_54" in its clone): such names match as "variable", by order.
_AUTO_NAME = re.compile(r"^variable(_\d+)?$")


def _keyed(variables) -> dict:
    """``{(name, k): variable}``: the k-th variable called ``name``
    (auto-generated ``variable_<n>`` names count as ``variable``)."""
    seen, out = {}, {}
    for v in variables:
        name = "variable" if _AUTO_NAME.match(v.name) else v.name
        k = seen.get(name, 0)
        seen[name] = k + 1
        out[(name, k)] = v
    return out


def copy_weights(source: keras.Model, target: keras.Model,
                 transform=None) -> int:
    """Copies variable values from ``source`` into ``target``.

    Leaf layers are matched by path (``outer/inner``), variables inside a
    layer by name and order of appearance, so layers with several
    variables of one name (``MultiHeadAttention``) and wrapped layers
    with extra variables (masks) copy correctly; unnamed variables
    (Keras' ``variable_<n>``, e.g. ConvNeXt's ``LayerScale``) match by
    order. Variables without a match are left as they are.

    Args:
        source: the model to read.
        target: the model to write (same layer paths).
        transform: optional ``source_layer -> {variable name: array}``
            giving replacement values (names unique in the layer).

    Returns:
        The number of variables copied.

    Raises:
        ValueError: a matched variable has another shape.

    Example:
        >>> copy_weights(model, clone_model(model))
    """
    src = dict(iter_leaf_layers(source))
    copied = 0
    for path, layer in iter_leaf_layers(target):
        old = src.get(path)
        if old is None or not old.weights:
            continue
        arrays = (transform(old) if transform is not None else None) or {}
        values = _keyed(old.weights)
        for key, var in _keyed(layer.weights).items():
            if key not in values:
                continue
            value = arrays.get(values[key].name, values[key]) \
                if key[1] == 0 else values[key]
            if tuple(value.shape) != tuple(var.shape):
                raise ValueError(
                    f"copy_weights: variable {key[0]!r} of layer {path!r} "
                    f"({type(layer).__name__}) has shape {tuple(var.shape)}"
                    f" in the copy but {tuple(value.shape)} in the source.")
            var.assign(value)
            copied += 1
        refresh_state(layer)
    return copied


def _live_functions(cfg: dict, prefix: str, layers: dict, by_name: dict,
                    objects: dict) -> None:
    for entry in cfg.get("layers") or []:
        sub = entry.get("config") if isinstance(entry, dict) else None
        if not isinstance(sub, dict):
            continue
        path = prefix + str(entry.get("name") or sub.get("name"))
        if entry.get("class_name") == "Lambda":
            layer = layers.get(path)
            if not isinstance(layer, keras.layers.Lambda):
                layer = by_name.get(sub.get("name"))
            if layer is not None:
                _use_live_functions(layer, sub, objects)
        elif "layers" in sub:
            _live_functions(sub, path + "/", layers, by_name, objects)
        elif path in layers:
            _use_live_activations(layers[path], sub, objects)


def model_from_config(serialized: dict, source: keras.Model) -> keras.Model:
    """Deserialises ``serialized`` (``serialize_keras_object(source)``,
    possibly rewritten) with ``source``'s own ``Lambda`` functions.

    ``serialized`` is modified in place (pass a copy to keep it).

    Args:
        serialized: the serialised model dict.
        source: the in-memory model it was made from.

    Returns:
        The new model (weights freshly initialised).

    Example:
        >>> ser = copy.deepcopy(keras.saving.serialize_keras_object(model))
        >>> twin = model_from_config(ser, model)
    """
    layers = dict(iter_leaf_layers(source))
    lambdas = [lyr for lyr in layers.values()
               if isinstance(lyr, keras.layers.Lambda)]
    objects = _live_classes(source)
    names = [lyr.name for lyr in lambdas]
    by_name = {lyr.name: lyr for lyr in lambdas
               if names.count(lyr.name) == 1}
    _live_functions(serialized.get("config") or {}, "", layers, by_name,
                    objects)
    if objects:
        _name_user_layers(serialized.get("config") or {}, objects)
    with keras.saving.custom_object_scope(objects):
        return keras.saving.deserialize_keras_object(serialized)


def _name_user_layers(cfg: dict, objects: dict) -> None:
    """Keras keeps a layer's name beside its config; a user's layer class
    built by :func:`rebuild_layer` gets it inside, so the copy keeps the
    original names (layer paths)."""
    for entry in cfg.get("layers") or []:
        sub = entry.get("config") if isinstance(entry, dict) else None
        if not isinstance(sub, dict):
            continue
        if isinstance(objects.get(entry.get("registered_name")),
                      _LiveClass) and entry.get("name"):
            sub.setdefault("name", entry["name"])
        elif "layers" in sub:
            _name_user_layers(sub, objects)
