"""Recurrent layers made convertible to TFLite builtins by unrolling.

Keras 3's TF-backend RNN (``LSTM``, ``GRU``, ``SimpleRNN``, ``RNN``, also
inside ``Bidirectional`` or a nested model) is a ``tf.while_loop`` over a
TensorArray, which the TFLite converter cannot lower ("failed to legalize
operation 'tf.TensorListReserve'"). The same layers with ``unroll=True``
become plain FULLY_CONNECTED / ADD / MUL / LOGISTIC / TANH ops, float and
full-integer int8. Unrolling needs a static sequence length: a model read
with ``keras.Input(shape=(None, ...))`` gets one from ``sequence_length``
(its Input rebuilt with that length, the model's axis 1).

:func:`unrolled_for_tflite` returns the model itself when nothing needs
unrolling, else a copy rebuilt from its config with every recurrent layer
unrolled and the same weights; the model passed in is never modified.

Example:
    >>> lite_ready = unrolled_for_tflite(model, sequence_length=80)
    >>> [l.unroll for l in lite_ready.layers if hasattr(l, "unroll")]
"""

from __future__ import annotations

import warnings

import keras
import numpy as np

from tfcomp._checks import check_positive_int
from tfcomp.graph import parse_model
from tfcomp.graph.copy import model_from_config, refresh_state
from tfcomp.graph.static_shape import set_input_shapes

__all__ = ["recurrent_layers", "unbounded_recurrent", "needs_length",
           "data_length", "fit_length", "check_unrollable",
           "unrolled_for_tflite", "unroll_with_data", "export_length",
           "qat_kwargs"]


def _children(layer) -> list:
    """The layers a wrapper / nested model holds: a nested model's layers,
    ``Bidirectional``'s two directions, a ``Wrapper``'s ``layer``."""
    if isinstance(layer, keras.Model):
        return list(layer.layers)
    if isinstance(layer, keras.layers.Bidirectional):
        return [layer.forward_layer, layer.backward_layer]
    inner = getattr(layer, "layer", None)
    return [inner] if isinstance(inner, keras.layers.Layer) else []


def recurrent_layers(model, prefix: str = "") -> list:
    """``[(path, layer)]`` of every ``keras.layers.RNN`` (LSTM, GRU,
    SimpleRNN, ConvLSTM...) in ``model``: nested models and wrappers
    (``Bidirectional``, ``TimeDistributed``) searched, paths ``outer/inner``.

    Example:
        >>> [p for p, _ in recurrent_layers(model)]
        ['bidirectional/forward_lstm', 'bidirectional/backward_lstm']
    """
    out = []
    for layer in _children(model):
        path = f"{prefix}{layer.name}"
        if isinstance(layer, keras.layers.RNN):
            out.append((path, layer))
        else:
            out.extend(recurrent_layers(layer, path + "/"))
    return out


def _to_unroll(model) -> list:
    return [(p, lyr) for p, lyr in recurrent_layers(model)
            if not getattr(lyr, "unroll", False)]


def _holds_rnn(layer) -> bool:
    return isinstance(layer, keras.layers.RNN) or bool(
        not isinstance(layer, keras.Model) and recurrent_layers(layer))


def unbounded_recurrent(model) -> list:
    """Paths of the (unrolled or not) recurrent layers, or wrappers holding
    one, whose input has no static time axis (axis 1 is None) in the
    model's graph; ``[]`` for a model whose graph cannot be read.

    Example:
        >>> inp = keras.Input((None,), dtype="int32")
        >>> x = keras.layers.Embedding(100, 8)(inp)
        >>> unbounded_recurrent(keras.Model(inp, keras.layers.LSTM(4)(x)))
        ['lstm']
    """
    try:
        parsed = parse_model(model)
    except (TypeError, ValueError):
        return []
    out = []
    for node in parsed.nodes:
        if node.inputs and node.path not in out and _holds_rnn(node.layer):
            shape = parsed.shapes.get(node.inputs[0]) or ()
            if len(shape) > 1 and shape[1] is None:
                out.append(node.path)
    return out


def _open_inputs(model) -> list:
    """Indices of the model inputs whose axis 1 is None."""
    return [i for i, t in enumerate(getattr(model, "inputs", None) or [])
            if len(t.shape) > 1 and t.shape[1] is None]


def needs_length(model) -> bool:
    """Whether unrolling ``model`` needs a sequence length: it has a
    recurrent layer to unroll whose time axis is None, and an input whose
    axis 1 is None (the length it is rebuilt with).

    Example:
        >>> needs_length(imdb_model)  # keras.Input(shape=(None,))
        True
    """
    return bool(_to_unroll(model) and _open_inputs(model)
                and unbounded_recurrent(model))


def data_length(x, model) -> int | None:
    """The time length (axis 1) of data for ``model``'s inputs whose axis 1
    is None (an array, or a list of them for a multi-input model); None
    when the model needs no length or there is no data.

    Example:
        >>> data_length(x_train, imdb_model)
        80
    """
    if x is None or not needs_length(model):
        return None
    xs = x if isinstance(x, (list, tuple)) else [x]
    lengths = [np.shape(xs[i])[1] for i in _open_inputs(model)
               if i < len(xs) and np.ndim(xs[i]) > 1]
    return int(lengths[0]) if lengths else None


def fit_length(x, model, length: int | None, name: str = "verify_data"):
    """``x`` cut to ``length`` steps on the axis 1 of ``model``'s inputs
    whose axis 1 is None (``x`` itself when the model needs no length or
    ``length`` is None); ValueError naming ``name`` for shorter data.

    Example:
        >>> fit_length(x_test, imdb_model, 80).shape[1]
        80
    """
    if x is None or length is None or not needs_length(model):
        return x
    xs = list(x) if isinstance(x, (list, tuple)) else [x]
    for i in _open_inputs(model):
        if i < len(xs) and np.ndim(xs[i]) > 1:
            if np.shape(xs[i])[1] < length:
                raise ValueError(
                    f"{name} has sequences of {np.shape(xs[i])[1]} steps, "
                    f"fewer than the sequence_length={length} the TFLite "
                    f"file of model {model.name!r} is unrolled for. Pass "
                    "sequences at least that long or a smaller "
                    "sequence_length.")
            xs[i] = xs[i][:, :length]
    return xs if isinstance(x, (list, tuple)) else xs[0]


def _length(value) -> int | None:
    """``sequence_length`` checked: None or an int >= 1."""
    return None if value is None else check_positive_int(
        value, "sequence_length")


def _length_error(model, path: str, why: str) -> ValueError:
    return ValueError(
        f"Layer {path!r} of model {model.name!r} reads sequences of unknown "
        "length (time axis None), and TFLite needs a static sequence length "
        f"to unroll it (its while_loop has no TFLite builtin): {why} Or "
        "rebuild the model with keras.Input(shape=(T, ...)) and copy the "
        "weights (new.set_weights(model.get_weights())).")


def check_unrollable(model, length: int | None = None) -> None:
    """Raises the ValueError :func:`unrolled_for_tflite` would: a stateful
    recurrent layer, or a time axis that is None with ``length`` None.

    Example:
        >>> check_unrollable(imdb_model, 80)  # silent when it can unroll
    """
    for path, layer in _to_unroll(model):
        if getattr(layer, "stateful", False):
            raise ValueError(
                f"Layer {path!r} ({type(layer).__name__}) of model "
                f"{model.name!r} is stateful (stateful=True): its state "
                "carries over between batches, which a TFLite file cannot "
                "keep. Rebuild it with stateful=False, copy the weights "
                "(new.set_weights(model.get_weights())) and export that.")
    unbounded = unbounded_recurrent(model)
    if not _open_inputs(model):
        # (a nested model's own None axis is fed a static one)
        top = [p for p in unbounded if "/" not in p]
        if top:
            raise _length_error(model, top[0], "the model's input has a "
                                "static axis 1, so sequence_length cannot "
                                "set it.")
        return
    if unbounded and length is None:
        raise _length_error(
            model, unbounded[0], "pass sequence_length=T (or calibration / "
            "verification data of T steps) to export it for T steps.")


def _set_length(shape, length: int):
    if isinstance(shape, (list, tuple)) and len(shape) > 1 \
            and shape[1] is None and not isinstance(shape[0], (list, dict)):
        shape = list(shape)
        shape[1] = length
    return shape


def _fix_input_length(serialized: dict, length: int) -> None:
    """Sets axis 1 of the top-level InputLayers (and a Sequential model's
    build shape) to ``length`` where it is None."""
    set_input_shapes(serialized, lambda shape, _: _set_length(shape, length))


def _nested_models(model, prefix: str = "") -> list:
    """``[(path, nested model)]`` of every functional / Sequential model
    inside ``model`` (any depth)."""
    out = []
    for layer in getattr(model, "layers", None) or []:
        if isinstance(layer, keras.Model) and layer.layers:
            path = f"{prefix}{layer.name}"
            out += [(path, layer)] + _nested_models(layer, path + "/")
    return out


def _nested_lengths(copy) -> dict:
    """``{path: length}`` of the nested models in ``copy`` that hold a
    recurrent layer and read one input with axis 1 None, fed a tensor of
    static ``length`` steps in ``copy``'s graph. Keras traces a nested
    model on its own input shape when the converter saves the model, so
    those inputs must get the length too."""
    nested = [(p, m) for p, m in _nested_models(copy)
              if len(m.inputs) == 1 and _open_inputs(m) and recurrent_layers(m)]
    if not nested:
        return {}
    parsed = parse_model(copy)
    out = {}
    for path, _ in nested:
        inner = path + "/"
        fed = {t for n in parsed.nodes if n.path.startswith(inner)
               for t in n.inputs if not t.startswith(inner)}
        lengths = {(parsed.shapes.get(t) or (None, None))[1] for t in fed}
        if len(lengths) == 1 and None not in lengths:
            out[path] = int(lengths.pop())
    return out


def _fix_nested_lengths(serialized: dict, lengths: dict, prefix="") -> None:
    for entry in (serialized.get("config") or {}).get("layers") or []:
        cfg = entry.get("config") if isinstance(entry, dict) else None
        if isinstance(cfg, dict) and "layers" in cfg:
            path = prefix + str(cfg.get("name") or entry.get("name"))
            if path in lengths:
                _fix_input_length(entry, lengths[path])
            _fix_nested_lengths(entry, lengths, path + "/")


def _rebuild(model, length, nested: dict):
    """The unrolled copy of ``model`` from its config: inputs of axis 1
    None set to ``length``, nested models' to ``nested[path]``."""
    serialized = keras.saving.serialize_keras_object(model)
    _unroll_configs(serialized)
    if length is not None and needs_length(model):
        _fix_input_length(serialized, length)
    _fix_nested_lengths(serialized, nested)
    return model_from_config(serialized, model)


def _unroll_configs(obj) -> None:
    """Sets ``unroll=True`` in every recurrent layer config inside ``obj``
    (a serialized model; ``Bidirectional``'s ``layer`` / ``backward_layer``
    and nested models included)."""
    if isinstance(obj, dict):
        if "unroll" in obj and "return_sequences" in obj:
            obj["unroll"] = True
        for value in obj.values():
            _unroll_configs(value)
    elif isinstance(obj, list):
        for value in obj:
            _unroll_configs(value)


def unrolled_for_tflite(model: keras.Model,
                        sequence_length: int | None = None) -> keras.Model:
    """``model`` with every recurrent layer unrolled (``unroll=True``), for
    the TFLite converter; ``model`` itself when none needs it.

    The copy is rebuilt from ``model``'s config (tfcomp's layers are
    registered serializables; ``Lambda`` layers keep their function) with
    ``model``'s weights; ``model`` is left as it is.

    Args:
        model: a built functional or Sequential Keras model.
        sequence_length: the number of time steps to unroll for when the
            recurrent layers' time axis is None (the model's input rebuilt
            as ``keras.Input(shape=(sequence_length, ...))``); ignored when
            the time axis is static.

    Returns:
        ``model``, or the unrolled copy (same names, same weights).

    Raises:
        ValueError: a stateful recurrent layer, a time axis that is None
            with no ``sequence_length`` (or not the input's axis 1), or a
            model that does not rebuild from its config (each names the
            layer or model).

    Example:
        >>> inp = keras.Input((None,), dtype="int32")
        >>> x = keras.layers.Embedding(100, 8)(inp)
        >>> m = keras.Model(inp, keras.layers.LSTM(4)(x))
        >>> unrolled_for_tflite(m, 12).inputs[0].shape
        (None, 12)
    """
    todo = _to_unroll(model)
    if not todo:
        return model
    sequence_length = _length(sequence_length)
    check_unrollable(model, sequence_length)
    try:
        copy = _rebuild(model, sequence_length, {})
        nested = _nested_lengths(copy)
        if nested:  # a second copy, its nested models' inputs static too
            copy = _rebuild(model, sequence_length, nested)
    except Exception as e:  # any rebuild failure: say why
        raise ValueError(
            f"Model {model.name!r} has recurrent layers "
            f"{[p for p, _ in todo][:4]} to unroll for TFLite, which needs "
            "the model to rebuild from its config (keras.Model.from_config)"
            f"; that failed: {type(e).__name__}: {e}. Register custom "
            "layers (@keras.saving.register_keras_serializable) with a "
            "complete get_config, or build the model with unroll=True on "
            "its recurrent layers.") from e
    left = [p for p, _ in _to_unroll(copy)]
    weights = model.get_weights()
    if left or len(copy.weights) != len(weights):
        raise ValueError(
            f"Model {model.name!r} did not rebuild from its config as an "
            f"unrolled copy (recurrent layers still not unrolled: {left}; "
            f"{len(copy.weights)} weights instead of {len(weights)}); a "
            "custom layer's get_config may drop 'unroll'. Build the model "
            "with unroll=True on its recurrent layers.")
    copy.set_weights(weights)
    refresh_state(copy)
    still = unbounded_recurrent(copy)
    if still:
        raise _length_error(model, still[0], "its length does not follow "
                            "from the model input's axis 1 (a time axis "
                            "elsewhere, or a nested model with several "
                            "inputs).")
    return copy


def unroll_with_data(model, sequence_length, data, read):
    """``(model, data)`` for the converter: :func:`unrolled_for_tflite` of
    ``model`` for ``sequence_length``, else for the time length of
    ``data`` (read as ``read(data, model)`` when the model needs a
    length), and the data cut to that length.

    Example:
        >>> m, x = unroll_with_data(model, None, x_cal, read_arrays)
    """
    sequence_length = _length(sequence_length)
    if not _to_unroll(model):
        return model, data
    if data is not None and needs_length(model):
        data = read(data, model)
        sequence_length = sequence_length or data_length(data, model)
        data = fit_length(data, model, sequence_length, "calibration_data")
    return unrolled_for_tflite(model, sequence_length), data


def export_length(model, sequence_length, x_cal, verify_data, read):
    """``(length, x)`` for ``export_tflite``: the steps to unroll for
    (``sequence_length``, else ``x_cal``'s, else ``verify_data``'s, read
    once with ``read`` into ``x``; ``x`` None otherwise). With no length
    and no data the error :func:`unrolled_for_tflite` would raise comes
    before any random verification input is made.

    Example:
        >>> length, x = export_length(model, None, x_cal, None, read)
    """
    length = _length(sequence_length) or data_length(x_cal, model)
    if length is None and needs_length(model):
        if verify_data is not None:
            x = read(verify_data)
            return data_length(x, model), x
        if x_cal is None:
            check_unrollable(model, None)
    return length, None


def qat_kwargs(model, kwargs: dict, data) -> tuple:
    """``(model, kwargs)`` of ``prepare_for_tflite`` for a QAT model's
    "int8" file, without its ``representative_dataset=None`` and
    ``target_spec`` when the model has recurrent layers and ``data`` is
    given, so the caller's calibration applies: ``quantize_model`` keeps
    recurrent layers float (no QAT counterpart), and with only FakeQuant
    ranges they would stay float ops (QUANTIZE / DEQUANTIZE around them).
    The converter keeps every FakeQuant range, so the quantized layers keep
    their trained grids and int8 weight codes.

    Example:
        >>> clone, kw = qat_kwargs(*prepare_for_tflite(qat), x_cal)
    """
    recurrent = recurrent_layers(model)
    if recurrent and data is None:
        warnings.warn(
            f"the QAT model's recurrent layer(s) {[p for p, _ in recurrent]} "
            "have no quantized form and stay float ops in this 'int8' file "
            "(listed in report.float_ops); pass calibration_data (a few "
            "hundred training inputs) to calibrate them to int8 too.",
            stacklevel=4)
    if data is None or not recurrent:
        return model, kwargs
    return model, {k: v for k, v in kwargs.items()
                   if k not in ("representative_dataset", "target_spec")}
