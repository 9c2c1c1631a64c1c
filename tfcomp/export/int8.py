"""Full-integer (int8) TFLite conversion of tfcomp's QAT models.

Contract (used by ``tfcomp.export.export_tflite(..., quantization="int8")``;
``tfcomp.quantization.is_qat_model`` tells whether a model is one):

``prepare_for_tflite(model) -> (keras_model, converter_kwargs)``
    Returns a *clone* of the QAT model whose quantizers emit TensorFlow
    FakeQuant ops (``keras.quantizers.fake_quant_with_min_max_vars``) and
    the converter attributes to set. The caller converts the clone with
    ``tf.lite.TFLiteConverter.from_keras_model(clone)``, sets
    ``target_spec.supported_ops = [TFLITE_BUILTINS_INT8]`` (and int8 or
    float32 I/O types as it likes), then ``setattr(converter, k, v)`` for
    every item of ``converter_kwargs`` (``optimizations=[DEFAULT]``,
    ``representative_dataset=None``: the converter's QAT mode takes every
    range from the FakeQuant ops; a representative dataset would re-
    calibrate them). The clone computes the same function as the QAT model
    in inference mode, so the file should be verified against the QAT
    model itself. Call it only for ``quantization="int8"``; other modes
    convert the QAT model as is (its quantizers are ordinary float ops).

How b-bit layers map onto int8 TFLite (TF 2.21's converter only accepts
8-bit FakeQuant; ``num_bits < 8`` fails to legalise):

* weights: the kernel is replaced by its dequantized b-bit values
  ``codes * s`` and fake-quantized per output channel with
  ``narrow_range=True`` on ``[-127 s / m, 127 s / m]``, so the int8 tensor
  stores the b-bit integer codes times ``m``, the largest power of two
  with ``m * max|codes| <= 127`` (:func:`code_multiplier`: 64 at 2 bits, 1
  at 8), with scale ``s / m`` (exact): the
  same values, at most ``2^b - 1`` distinct levels per output channel. The
  multiplier keeps the requantization scale ``s_in * s_w / s_out`` of a
  low-bit layer below XNNPACK's limit of 256 (a 2-bit layer's codes at
  scale ``s`` exceeded it, and the file failed to load in TFLite's default
  CPU delegate, as on phones); the integer arithmetic is unchanged.
  Dense layers are emitted as 1x1 CONV_2D (the converter cannot keep
  per-channel ranges through FULLY_CONNECTED's transpose).
* activations at ``b < 8`` bits: the int8 tensor gets the b-bit scale and
  zero point, and a MINIMUM op clamps at the top of the b-bit range, so
  TFLite rounds and clips exactly like the QAT model.
* every other tensor takes its range from an 8-bit ``QuantActivation``
  inserted by ``quantize_model``.
* a b-bit layer reading an observer's tensor on another grid (a residual
  block's input read at 4 bits) is preceded by an identity 1x1
  DEPTHWISE_CONV_2D (``exact_requantize``), one per consumer, instead of
  the converter's QUANTIZE op, whose low-precision requantization rounds a
  few percent of the codes differently from the QAT model's
  ``Q_b(Q_8(x))`` (a ResNet-8 with a mixed HAQ policy agreed 86.7% top-1
  with its file before, 100% after).
* an observer whose input is another observer's output on another grid
  (``quantize_model`` puts one before a Concatenate input that has other
  readers, on the concatenation's grid) requantizes the same way: two
  FakeQuant ops in a row make the converter drop the second and refuse
  the CONCATENATION's same-scale constraint.

Raises ``ValueError`` for uncalibrated quantizers (never trained or
``calibrate``d), float conv / dense layers, float activations of quantized
layers, and DNAS supernet layers.

Example:
    >>> from tfcomp.export.int8 import convert_int8
    >>> flatbuffer = convert_int8(calibrated_qat_model)
"""

from __future__ import annotations

import contextlib
import io

import keras
import numpy as np
import tensorflow as tf

from tfcomp.export._converter_errors import NO_TFLITE_OPS, run_converter
from tfcomp.export._recurrent import unrolled_for_tflite
from tfcomp.export._upsampling import static_upsampling
from tfcomp.export._volumes import lowerable, volume_twin
from tfcomp.export.runtime import make_interpreter
from tfcomp.graph import iter_leaf_layers, parse_model
from tfcomp.graph.copy import clone_model, refresh_state, user_layer_class
from tfcomp.layers import (
    MIXED_LAYERS,
    QUANT_ACTIVATION_LAYERS,
    QUANT_NORM_LAYERS,
    QUANT_STEP_LAYERS,
    QUANT_WEIGHT_LAYERS,
    QuantActivation,
)
from tfcomp.quantization import (
    channel_shape,
    is_qat_model,
    link_shared_inputs,
    quantization_params,
)
from tfcomp.quantization._analysis import keeps_scale, keras_classes

__all__ = ["prepare_for_tflite", "check_exportable", "code_multiplier",
           "convert_int8", "tflite_weight_levels"]

_FLOAT_KERNELS = ("Conv1D", "Conv2D", "Conv3D", "DepthwiseConv2D", "Dense",
                  "SeparableConv1D", "SeparableConv2D", "DepthwiseConv1D",
                  "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose",
                  "EinsumDense", "Embedding", "MultiHeadAttention",
                  "GroupedQueryAttention")


def _classes(names) -> tuple:
    return keras_classes(tuple(names))


#: Keras layers the TFLite converter cannot lower to int8 builtins.
_NO_INT8_OPS = NO_TFLITE_OPS
#: Normalizations TFLite has no int8 builtin for: the converter decomposes
#: them (MEAN, SQUARED_DIFFERENCE, RSQRT, MUL...) and, with no QAT range for
#: those intermediate tensors, keeps them float in the "int8" file.
#: ``quantize_model`` makes them QuantLayerNormalization /
#: QuantGroupNormalization (ranges for every one of those tensors); a float
#: one left in a QAT model (added by hand, a subclass) is refused.
_FLOAT_NORMS = (keras.layers.LayerNormalization,
                keras.layers.GroupNormalization)


def check_exportable(model) -> None:
    """Raises ``ValueError`` when a QAT model cannot become an int8 file.

    Example:
        >>> check_exportable(qat_model)  # silent when ready
    """
    mixed, floats, float_in, uncal, no_int8 = [], [], [], [], []
    norms = []
    for _, layer in iter_leaf_layers(model):
        if isinstance(layer, _NO_INT8_OPS) and not lowerable(layer):
            no_int8.append(f"{layer.name} ({type(layer).__name__})")
        if isinstance(layer, _FLOAT_NORMS) and not isinstance(
                layer, QUANT_NORM_LAYERS):
            norms.append(f"{layer.name} ({type(layer).__name__})")
        if isinstance(layer, QUANT_STEP_LAYERS):
            if not all(q.calibrated
                       for q in layer.step_quantizers.values()):
                uncal.append(layer.name)
        elif isinstance(layer, MIXED_LAYERS):
            mixed.append(layer.name)
        elif isinstance(layer, QUANT_WEIGHT_LAYERS):
            if layer.w_bits > 8:
                floats.append(layer.name)
            if not getattr(layer, "quantizes_inputs", True):
                continue
            if layer.input_quantizer is None:
                float_in.append(layer.name)
            elif not layer.input_quantizer.calibrated:
                uncal.append(layer.name)
        elif isinstance(layer, _classes(_FLOAT_KERNELS)) or (
                user_layer_class(type(layer)) and layer.weights):
            floats.append(f"{layer.name} ({type(layer).__name__})")
        elif (isinstance(layer, QUANT_ACTIVATION_LAYERS)
              and not layer.quantizer.calibrated):
            uncal.append(layer.name)
    if no_int8:
        raise ValueError(
            f"Layers {no_int8} have no int8 TFLite kernel (TFLite has no "
            "3D pooling builtin, float or int8; a channels_last one with a "
            "static input shape is exported as two 2D poolings); replace "
            "them (e.g. a strided Conv3D, or GlobalAveragePooling3D).")
    if mixed:
        raise ValueError(
            f"Layers {mixed} are DNAS supernet layers; derive bits with "
            "tfcomp.quantization.dnas.derive() and quantize_model them "
            "before int8 export.")
    if uncal:
        raise ValueError(
            "Exporting int8 needs calibrated activation ranges, but these "
            f"layers never saw data: {uncal[:10]}"
            f"{' ...' if len(uncal) > 10 else ''}. Run "
            "tfcomp.quantization.calibrate(model, data) or train the model "
            "first.")
    if floats:
        raise ValueError(
            f"Layers {floats} have float weights (skipped, w_bits=32, or a "
            "layer type quantize_model keeps float: see the warning it "
            "gave); a full-integer int8 file needs every layer with weights "
            "quantized. Quantize them, export with quantization=None / "
            "'dynamic' / 'float16', or export the float model (before "
            "quantize_model) with quantization='int8' and calibration_data "
            "(post-training int8: the converter calibrates those layers "
            "itself; ExportReport.float_ops names any op it leaves float).")
    if float_in:
        raise ValueError(
            f"Layers {float_in} have float inputs (a_bits=32); a "
            "full-integer int8 file needs every activation quantized.")
    if norms:
        raise ValueError(
            f"Layers {norms[:6]}{' ...' if len(norms) > 6 else ''} have no "
            "int8 TFLite builtin: the converter would keep their MEAN / "
            "RSQRT decomposition in float (the QAT model has no ranges for "
            "it), not a full-integer file (quantize_model makes a "
            "Layer / GroupNormalization a QuantLayerNormalization / "
            "QuantGroupNormalization, which has them). "
            "Export with quantization=None / "
            "'dynamic' / 'float16', or replace them (e.g. BatchNormalization)"
            ".")


def _plain_relu(layer) -> bool:
    """A plain ReLU: ``max(x, 0)`` of values on a grid whose zero point is
    an integer stays on that grid (a second ReLU after a conv's own, as
    keras.io's Xception blocks start)."""
    if isinstance(layer, keras.layers.ReLU):
        return (layer.max_value is None and not layer.negative_slope
                and not layer.threshold)
    return type(layer) is keras.layers.Activation and getattr(
        layer.activation, "__name__", "") == "relu"


def _quantizer_behind(parsed, t, through_relu: list | None = None):
    """The activation quantizer node whose output reaches tensor ``t``
    through same-scale layers (max pooling, padding, reshape...), or None.
    With a list ``through_relu``, plain ReLUs are walked through too
    (:func:`_plain_relu`) and the list gets True when one was."""
    prod = parsed.producer(t)
    while prod is not None and (keeps_scale(prod.layer) or (
            through_relu is not None and _plain_relu(prod.layer))):
        if through_relu is not None and _plain_relu(prod.layer):
            through_relu.append(True)
        prod = parsed.producer(prod.inputs[0]) if prod.inputs else None
    if prod is None or not isinstance(prod.layer, QUANT_ACTIVATION_LAYERS):
        return None
    return prod


def _requantized_inputs(model, params) -> dict:
    """``{layer name: (weight code, source grid or None)}`` of the quantized
    layers whose input the int8 file must requantize: the input is an
    activation quantizer's output (possibly through same-scale layers such
    as max pooling, or a plain ReLU on a nonnegative grid, where it is the
    identity: then the source grid, which the ReLU's output takes first) on
    a different grid. Their export path requantizes
    with ``exact_requantize`` (see its docstring); readers of one tensor get
    distinct codes 127, 126, ..."""
    parsed = parse_model(model)
    out, per_tensor, seen = {}, {}, set()
    for node in parsed.nodes:
        layer = node.layer
        if node.path in seen or not isinstance(
                layer, QUANT_WEIGHT_LAYERS) or params.get(
                layer.name, {}).get("input") is None or not node.inputs:
            continue
        seen.add(node.path)
        t = node.inputs[0]
        relu = []
        prod = _quantizer_behind(parsed, t, relu)
        if prod is None:
            continue
        grid = params.get(prod.layer.name, {}).get("output")
        if relu and (grid is None or grid[1] != 0):
            continue  # a signed grid: the ReLU changes values (TFLite's RELU)
        s, z, _ = params[layer.name]["input"]
        if grid is None or not (np.isclose(grid[0], s, rtol=1e-6, atol=0)
                                and grid[1] == z):
            n = per_tensor.get(t, 0)
            per_tensor[t] = n + 1
            # behind a ReLU the tensor has no range of its own in the file
            # (the RELU op would stay float): it gets the source's grid
            out[layer.name] = (127 - n % 127, grid if relu else None)
    return out


def _requantized_observers(model, params) -> dict:
    """``{observer name: weight code}`` of the ``QuantActivation`` layers
    whose input is another activation quantizer's output (through
    same-scale layers) on a different grid: the observers ``quantize_model``
    puts before a Concatenate's inputs. Two FakeQuant ops in a row confuse
    the converter (it drops the second and then refuses the
    concatenation's same-scale constraint), so these requantize with
    ``exact_requantize`` (codes 1, 2, ... per tensor; readers requantized
    by ``_requantized_inputs`` use 127, 126, ...)."""
    parsed = parse_model(model)
    out, per_tensor = {}, {}
    for node in parsed.nodes:
        layer = node.layer
        if not isinstance(layer, QuantActivation) or not node.inputs \
                or layer.name in out:
            continue
        t = node.inputs[0]
        prod = _quantizer_behind(parsed, t)
        if prod is None:
            continue
        grid = params.get(prod.layer.name, {}).get("output")
        mine = params.get(layer.name, {}).get("output")
        if grid is None or mine is None:
            continue
        if not (np.isclose(grid[0], mine[0], rtol=1e-6, atol=0)
                and grid[1] == mine[1]):
            n = per_tensor.get(t, 0)
            per_tensor[t] = n + 1
            out[layer.name] = 1 + n % 126
    return out


def code_multiplier(codes) -> int:
    """The power of two ``m`` a layer's b-bit weight codes are stored times
    in its int8 tensor (scale divided by ``m``, exactly): the largest with
    ``m * max|codes| <= 127``.

    Example:
        >>> code_multiplier(np.array([-1, 0, 1]))     # 2-bit codes
        64
        >>> code_multiplier(np.array([-127, 5]))
        1
    """
    top = int(np.max(np.abs(codes))) if np.size(codes) else 0
    room = max(1, 127 // max(1, top))
    return 1 << (room.bit_length() - 1)


def prepare_for_tflite(model):
    """A FakeQuant clone of a QAT model and the converter kwargs to use.

    Args:
        model: a calibrated / trained QAT model from ``quantize_model``.

    Returns:
        ``(clone, converter_kwargs)``; see the module docstring.

    Raises:
        ValueError: when ``check_exportable`` fails.

    Example:
        >>> clone, kwargs = prepare_for_tflite(qat)
        >>> converter = tf.lite.TFLiteConverter.from_keras_model(clone)
        >>> for k, v in kwargs.items(): setattr(converter, k, v)
    """
    if not is_qat_model(model):
        raise ValueError(
            f"Model {model.name!r} is not a tfcomp quantization-aware model.")
    link_shared_inputs(model)
    check_exportable(model)
    params = quantization_params(model)
    requant = _requantized_inputs(model, params)
    requant_obs = _requantized_observers(model, params)
    # Lambda layers keep their function; nearest upsampling states its
    # shape (a conv after it needs its input channels in int8); 3D pooling
    # becomes two 2D poolings (no 3D pooling builtin)
    clone = clone_model(model, clone_function=lambda layer: (
        static_upsampling(layer) or volume_twin(layer)))
    clone.set_weights(model.get_weights())
    refresh_state(clone)
    for _, layer in iter_leaf_layers(clone):
        if layer.name not in params:
            continue
        p = params[layer.name]
        if isinstance(layer, QUANT_WEIGHT_LAYERS):
            n_out = p["scale"].shape[0]
            scale_b = p["scale"][:int(np.prod(channel_shape(layer)))
                                 ].reshape(channel_shape(layer))
            layer.kernel.assign((p["codes"] * scale_b).astype(np.float32))
            if p["bias"] is not None:  # already on the s_in * s_w grid
                layer.bias.assign(np.asarray(p["bias"], np.float32))
            m = code_multiplier(p["codes"])
            layer._tfcomp_export = {"fq_max": 127.0 * p["scale"] / m,
                                    "input": p["input"], "n_out": n_out,
                                    "requantize": requant.get(
                                        layer.name, (0, None))[0],
                                    "requantize_from": requant.get(
                                        layer.name, (0, None))[1]}
        elif isinstance(layer, QUANT_ACTIVATION_LAYERS):
            layer._tfcomp_export = {
                "output": p["output"],
                "requantize": requant_obs.get(layer.name, 0)}
    for _, layer in iter_leaf_layers(clone):
        if isinstance(layer, QUANT_STEP_LAYERS):
            layer._tfcomp_export = layer.export_grids()
    # The QAT path needs no representative dataset, but TF's converter only
    # knows the graph holds FakeQuant ops after a first check that demands
    # one whenever supported_ops is TFLITE_BUILTINS_INT8 alone: use a
    # default TargetSpec (every op here is int8 anyway; convert_int8 checks).
    kwargs = {"optimizations": [tf.lite.Optimize.DEFAULT],
              "representative_dataset": None,
              "target_spec": tf.lite.TargetSpec()}
    return clone, kwargs


def convert_int8(model, io_type: str = "float32") -> bytes:
    """Converts a QAT model to a full-integer TFLite flatbuffer.

    The same steps ``tfcomp.export.export_tflite(..., "int8")`` takes, for
    callers that want the bytes without writing or verifying a file.

    Args:
        model: a calibrated / trained QAT model.
        io_type: "float32" (QUANTIZE / DEQUANTIZE at the ends) or "int8".

    Returns:
        The ``.tflite`` flatbuffer.

    Example:
        >>> flatbuffer = convert_int8(qat)
    """
    if io_type not in ("float32", "int8"):
        raise ValueError(
            f"io_type must be 'float32' or 'int8'. Received: {io_type!r}")
    # recurrent layers unrolled in a copy (TFLite has no while_loop over
    # tensor lists); float in the file: export_tflite calibrates them
    clone, kwargs = prepare_for_tflite(unrolled_for_tflite(model))
    with contextlib.redirect_stdout(io.StringIO()):
        converter = tf.lite.TFLiteConverter.from_keras_model(clone)
    if io_type == "int8":
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    for key, value in kwargs.items():
        setattr(converter, key, value)
    return run_converter(converter, model, "export_tflite")


def tflite_weight_levels(model) -> dict:
    """Distinct integer levels per output channel of a file's int8 weights.

    Args:
        model: ``.tflite`` path or flatbuffer bytes.

    Returns:
        ``{tensor_name: [levels of channel 0, 1, ...]}`` for every int8
        constant tensor with per-channel quantization.

    Example:
        >>> max(max(v) for v in tflite_weight_levels("m.tflite").values())
    """
    interp, _ = make_interpreter(model)
    out = {}
    for d in interp.get_tensor_details():
        qp = d.get("quantization_parameters", {})
        scales = qp.get("scales", np.zeros(0))
        if d["dtype"] != np.int8 or len(scales) <= 1:
            continue
        try:
            w = interp.get_tensor(d["index"])
        except ValueError:
            continue
        axis = int(qp.get("quantized_dimension", 0))
        w = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
        out[d["name"]] = [int(np.unique(row).size) for row in w]
    return out
