"""Per-layer quantization sensitivity: HAWQ-V2 Hessian traces or MCT-style
output distortion, for every quantizable layer and weight bit-width.

* ``method="hessian"`` (HAWQ-V2): ``Omega_i(b) = Tr(H_i) / n_i *
  ||Q_b(W_i) - W_i||^2``, where ``H_i`` is the Hessian of the loss with
  respect to layer ``i``'s kernel (``n_i`` weights) and ``Q_b`` the weight
  quantizer QAT uses at ``b`` bits. ``Tr(H_i)`` is estimated with
  Hutchinson's method: ``E[v_i^T (H v)_i]`` over Rademacher probes ``v``,
  Hessian-vector products by double backprop (``tf.GradientTape``,
  TensorFlow backend). Probes are sample-disjoint by default (each
  calibration sample probes one layer's kernel per product, so no
  cross-layer term enters and a piecewise-linear net's estimates are
  never negative; :mod:`tfcomp.quantization.hessian` has the options and
  their measured errors), stopping when every layer's running mean moves
  by less than ``tol`` (1%) and its standard error is below ``rel_se``
  (5%), or at ``max_probes``.
* ``method="distortion"`` (Sony MCT): the mean squared difference between
  the float model's outputs and the outputs with only that layer's weights
  quantized to ``b`` bits, on the calibration inputs.

``kind="activations"`` measures each layer's *input activations* instead
(the table's bits are then activation bits), quantized on a uniform grid
over the calibration range (:func:`fake_quant_input`: unsigned on ``[0,
max]`` for non-negative inputs, else symmetric on ``max |x|``; QAT's
calibration may clip tighter at low bits): with ``"distortion"`` the output
MSE with only that layer's input quantized; with ``"hessian"`` HAWQ-V2's
activation term ``Tr(H_i) / n_i * ||Q_b(A_i) - A_i||^2``, ``H_i`` the
Hessian of the loss with respect to the layer's input over all calibration
samples (:mod:`tfcomp.quantization.hessian`), on the weight table's scale:
with ``a = w`` the two tables add per layer and width (pass the sum, a
``kind="weights"`` table, to :func:`tfcomp.hardware.allocate_bits`:
:func:`combined_sensitivity`).

A ``SeparableConv2D`` (``SeparableConv1D``), which ``quantize_model``
quantizes as a depthwise conv ``<name>_depthwise`` and a 1x1 conv
``<name>`` at the layer's bits, is one row: its weights' sensitivity
quantizes both kernels (``"distortion"``) or sums the two kernels'
terms ``Tr(H_k) / n_k * ||Q_b(W_k) - W_k||^2`` (``"hessian"``); its
activations' quantizes, or sums the terms of, the layer's input and the
depthwise output the 1x1 conv reads. ``meta`` keys the traces and noise by part name
(``meta["parts"]``: ``{layer: [parts]}``).

For weights, ``Q_b`` is ``quantize_model``'s weight quantizer (symmetric
per output channel, max clip at b >= 5 and KL clip at b <= 4) applied to
the layer's own kernel. Per-channel symmetric quantization commutes with
the per-channel scale of BatchNorm folding, so the grid equals the one QAT
uses on the folded kernel.

Reference: Dong et al., HAWQ-V2, arXiv:1911.03852; Yao et al., HAWQ-V3,
arXiv:2011.10680; Sony Model Compression Toolkit (MCT) mixed precision.

Example:
    >>> s = sensitivity(model, (x[:256], y[:256]), method="hessian")
    >>> a = sensitivity(model, (x[:256], y[:256]), kind="activations")
    >>> both = combined_sensitivity(model, (x[:256], y[:256]))  # s + a
    >>> print(s)
    >>> s.to_json("sensitivity.json")
"""

from __future__ import annotations

import time

import keras
import numpy as np

from tfcomp._batches import as_model_input, index_rows
from tfcomp._batches import rows as num_rows
from tfcomp._io import as_arrays, check_positive_int
from tfcomp.layers import quantizers as qz
from tfcomp.quantization._analysis import QUANT_KINDS, analyse
from tfcomp.quantization._separable import is_separable, part_kinds
from tfcomp.quantization.hessian import (  # noqa: F401 - public re-exports
    PROBINGS,
    _batches,
    _probabilities,
    activation_traces,
    hessian_table,
    hutchinson_trace,
    weight_traces,
)
from tfcomp.quantization.quantize import _QUANT_CLASSES
from tfcomp.quantization.sensitivity_activations import (  # noqa: F401
    activation_table,
    activation_terms,
    fake_quant_input,
    input_grid,
    input_ranges,
    operands,
    parts_meta,
    rows_sum,
    split_separable,
)
from tfcomp.quantization.sensitivity_result import Sensitivity

__all__ = ["METHODS", "KINDS", "DEFAULT_BITS", "Sensitivity", "sensitivity",
           "combined_sensitivity", "hutchinson_trace", "quantized_kernel"]

METHODS = ("hessian", "distortion")
KINDS = ("weights", "activations")
DEFAULT_BITS = (2, 3, 4, 5, 6, 7, 8)


_SEPARABLE_PARTS = {"depthwise": ("depthwise_kernel", 0),
                    "pointwise": ("pointwise_kernel", 1)}


def _check_part(layer, part):
    """``part`` if it fits ``layer`` (one of ``_SEPARABLE_PARTS`` for a
    SeparableConv1D / 2D, else None)."""
    if is_separable(layer):
        if part not in _SEPARABLE_PARTS:
            raise ValueError(
                f"part must be 'depthwise' or 'pointwise' for "
                f"{type(layer).__name__} layer {layer.name!r} (quantize_model"
                " quantizes both kernels at the layer's bits). Received: "
                f"part={part!r}")
    elif part is not None:
        raise ValueError("part is for SeparableConv1D / SeparableConv2D "
                         f"layers only. Received: part={part!r} (layer "
                         f"{layer.name!r}, {type(layer).__name__})")
    return part


def _weight(layer, part=None):
    """The variable QAT quantizes: the kernel, an Embedding's table, or a
    separable conv's ``part`` ("depthwise" / "pointwise") kernel."""
    if _check_part(layer, part) is not None:
        return getattr(layer, _SEPARABLE_PARTS[part][0])
    if isinstance(layer, keras.layers.Embedding):
        return layer.embeddings
    return layer.kernel


def _reduce_axes(layer, part=None) -> tuple:
    """The axes the per-channel weight scale reduces over, from the QAT
    class ``quantize_model`` builds for ``layer`` (one table, so every
    quantized kind is covered; a separable conv's parts: its depthwise
    and 1x1 conv halves)."""
    if _check_part(layer, part) is not None:
        kind = part_kinds(layer)[_SEPARABLE_PARTS[part][1]]
        return _QUANT_CLASSES[kind]._kernel_reduce_axes
    quant_cls = _QUANT_CLASSES.get(type(layer).__name__)
    if quant_cls is None:
        for cls in type(layer).__mro__:  # QAT layers, subclasses
            quant_cls = _QUANT_CLASSES.get(cls.__name__)
            if quant_cls is not None:
                break
    if quant_cls is None:
        raise TypeError(
            "quantized_kernel needs a layer quantize_model quantizes ("
            f"{', '.join(sorted(_QUANT_CLASSES))}). Received: layer "
            f"{layer.name!r} ({type(layer).__name__})")
    if quant_cls.__name__ == "QuantEinsumDense":  # axes depend on equation
        return quant_cls.from_config(layer.get_config())._kernel_reduce_axes
    return quant_cls._kernel_reduce_axes


# ------------------------------------------------------------- checks


def _check_bits(bits) -> list:
    if bits is None:
        return list(DEFAULT_BITS)
    if isinstance(bits, (int, np.integer)) and not isinstance(bits, bool):
        bits = [bits]
    try:
        items = list(bits)
    except TypeError:
        raise ValueError("bits must be None, an int or a list of ints in "
                         f"[1, 8]. Received: bits={bits!r}") from None
    if not items:
        raise ValueError(f"bits must not be empty. Received: bits={bits!r}")
    return sorted({qz.check_bits(b, "bits", allow_float=False)
                   for b in items})


def _check_method(method) -> str:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}. Received: "
                         f"method={method!r}")
    return method


# ------------------------------------------------------------- quantizer


def quantized_kernel(layer, bits: int, weight_quantizer="symmetric",
                     kernel=None, part=None) -> np.ndarray:
    """``Q_b(W)``: the kernel (an Embedding's table) of any layer kind
    ``quantize_model`` quantizes, on the grid it trains at ``bits`` weight
    bits (a SeparableConv2D: the ``part`` kernel, "depthwise" or
    "pointwise"; both are quantized at the layer's bits).

    Args:
        layer: the float layer.
        bits: weight bit-width in [1, 8].
        weight_quantizer: quantizer alias / dict / instance (as
            ``quantize_model``'s).
        kernel: the kernel value (default: the layer's).
        part: for a SeparableConv2D / 1D, "depthwise" or "pointwise" (its
            halves' kernels, per-channel as ``quantize_model``'s
            DepthwiseConv2D and 1x1 Conv2D); None otherwise.

    Returns:
        The fake-quantized kernel (numpy float32).

    Example:
        >>> q4 = quantized_kernel(model.get_layer("conv1"), 4)
        >>> dw4 = quantized_kernel(model.get_layer("sep"), 4,
        ...                        part="depthwise")
    """
    axes = _reduce_axes(layer, part)
    w = np.asarray(keras.ops.convert_to_numpy(
        _weight(layer, part) if kernel is None else kernel), np.float32)
    q = qz.get(weight_quantizer or "symmetric")
    if not isinstance(q, qz.WeightQuantizer):
        raise TypeError("weight_quantizer must be a weight quantizer. "
                        f"Received: {q!r}")
    q = q.with_bits(qz.check_bits(bits, "bits", allow_float=False))
    holder = keras.layers.Layer(name=f"{layer.name}_sensitivity_q")
    q.build(holder, w.shape, axes, "kernel")  # state on a throwaway layer
    q.refresh(w)
    return np.asarray(keras.ops.convert_to_numpy(q.quantize(
        keras.ops.convert_to_tensor(w))), np.float32)


# ------------------------------------------------------------- forward


def _forward(model):
    """The model's inference call, compiled once (a ``tf.function`` on
    TensorFlow: variables are read at every call, so assigning a kernel
    between calls needs no retrace), eager elsewhere."""
    if keras.backend.backend() != "tensorflow":
        return lambda t: model(t, training=False)
    import tensorflow as tf
    return tf.function(lambda t: model(t, training=False),
                       reduce_retracing=True)


def _predict(model, x, batch_size: int, forward=None) -> np.ndarray:
    """The model's outputs on ``x`` (several outputs: flattened, side by
    side), float64; ``forward`` (:func:`_forward`) replaces the eager
    call."""
    forward = forward or (lambda t: model(t, training=False))
    outs = []
    for sl in _batches(num_rows(x), batch_size):
        parts = [np.asarray(keras.ops.convert_to_numpy(t), np.float64)
                 for t in keras.tree.flatten(forward(as_model_input(
                     model, index_rows(x, sl))))]
        outs.append(parts[0] if len(parts) == 1 else np.concatenate(
            [p.reshape(len(p), -1) for p in parts], axis=1))
    return np.concatenate(outs, axis=0)


# ------------------------------------------------------------- the verb


def sensitivity(model, calibration_data, method: str = "hessian", bits=None,
                *, num_samples: int = 256, batch_size: int = 64,
                loss=None, weight_quantizer="symmetric", tol: float = 0.01,
                max_probes: int = 100, min_probes: int = 3,
                seed: int = 0, kind: str = "weights",
                probing: str = "disjoint",
                rel_se: float | None = None) -> Sensitivity:
    """Per quantizable layer and weight (or activation) bit-width, the
    expected loss increase when only that layer's weights (input
    activations) are quantized.

    Args:
        model: a built float functional / Sequential model (single input);
            the layers are those ``quantize_model`` quantizes.
        calibration_data: inputs, ``(x, y)`` or a ``tf.data`` dataset /
            iterable of batches (``tfcomp._io.as_arrays``). Without labels
            the float model's own predictions are the targets (its argmax
            for cross-entropy).
        method: ``"hessian"`` (HAWQ-V2) or ``"distortion"`` (MCT, output
            MSE); see the module docstring.
        bits: bit-widths (default 2..8), an int or a list.
        num_samples: calibration samples used (the first ones).
        batch_size: batch size of the forward / Hessian-vector passes.
        loss: the loss for ``"hessian"``; default the model's compiled
            loss, else sparse categorical cross-entropy (from logits unless
            the outputs are probabilities).
        weight_quantizer: the weight quantizer (``quantize_model``'s).
        tol, max_probes, min_probes: Hutchinson's stopping rule (running
            mean of every layer's trace moves by < ``tol``; HAWQ-V2 /
            PyHessian use ``tol=1e-3``, 100 probes: the looser default
            here is a CPU-scale deviation).
        rel_se: also require its standard error below ``rel_se`` of it
            (default None: not checked, the paper's rule; with disjoint
            probes a relative SE of 5% needs several hundred probes on
            layers whose per-probe estimates vary by ~100%, so a small
            value mostly runs to ``max_probes``); layers above it at the
            end are listed in ``meta["unconverged"]``.
        seed: seed of the Rademacher probes.
        probing: ``"disjoint"`` (default), ``"joint"`` (one probe over all
            layers, the estimator before issue #19) or ``"layer"`` (one
            layer per product); weights only (activations: disjoint).
        kind: ``"weights"`` (default) or ``"activations"`` (each layer's
            input activations quantized instead, on the grid of
            :func:`fake_quant_input`; the table's bits are then activation
            bits; with ``"hessian"`` on the weight table's scale, so the
            two add; layers with integer inputs, an Embedding's, count 0
            and are listed in ``meta["not_measured"]``).

    Returns:
        A :class:`Sensitivity` (``.layers``, ``.bits``, ``.table``;
        ``meta["trace"]`` holds the Hessian traces, ``meta["trace_se"]``
        their standard errors, ``meta["quant_noise"]``
        the squared quantization error per width, ``meta["n_weights"]`` or
        ``meta["n_activations"]`` the element counts; a SeparableConv2D's
        per part, ``meta["parts"]`` naming them). Negative trace
        estimates (a model away from a minimum) count as 0, with a warning.

    Raises:
        ValueError: an unknown method, bits outside [1, 8], data that does
            not fit the model's input, a model without quantizable layers.
        NotImplementedError: ``"hessian"`` on a
            backend other than TensorFlow.

    Reference: Dong et al., HAWQ-V2, arXiv:1911.03852 (Hessian trace by
    Hutchinson, for weights and activations); Sony MCT (output
    distortion).

    Example:
        >>> s = sensitivity(model, (x_val[:256], y_val[:256]))
        >>> s.value("conv1", 4)
        >>> a = sensitivity(model, (x_val[:256], y_val[:256]),
        ...                 kind="activations")
    """
    method = _check_method(method)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}. Received: "
                         f"kind={kind!r}")
    if probing not in PROBINGS or (kind == "activations"
                                   and probing != "disjoint"):
        allowed = PROBINGS if kind == "weights" else ("disjoint",)
        raise ValueError(f"probing must be one of {allowed} for kind="
                         f"{kind!r}. Received: probing={probing!r}")
    bits = _check_bits(bits)
    num_samples = check_positive_int(num_samples, "num_samples")
    batch_size = check_positive_int(batch_size, "batch_size")
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model. Received: "
                        f"{type(model).__name__}")
    analysis = analyse(model, True, (), "sensitivity", QUANT_KINDS,
                       fold_time=True)
    # layers inside TimeDistributed are measured in the rewrite that
    # quantize_model plans (the same function, time folded into the batch)
    model = analysis.graph.model
    plans = analysis.plans
    names = analysis.quantized_names()
    if not names:
        raise ValueError(f"model {model.name!r} has no quantizable layers "
                         "(see quantize_model).")
    x, y = as_arrays(calibration_data, model=model, max_items=num_samples,
                     name="calibration_data", targets=True)
    start = time.perf_counter()
    layers = [plans[n].layer for n in names]
    float_out = _predict(model, x, batch_size)
    hutch = {"tol": tol, "max_probes": max_probes, "min_probes": min_probes,
             "seed": seed, "rel_se": rel_se}
    meta = {"num_samples": int(num_rows(x)), "batch_size": batch_size}
    ops = operands(names, layers)
    parts = parts_meta(ops)
    if parts:
        meta["parts"] = parts
    if kind == "activations":
        with split_separable(ops) as ops:
            ranges, shapes, floating = input_ranges(model, ops, x,
                                                    batch_size)
            meta["input_range"] = {o.name: list(r)
                                   for o, r in zip(ops, ranges)}
            if method == "distortion":
                table = activation_table(
                    model, ops, len(names), x, float_out, bits, batch_size,
                    ranges, _forward, _predict)
            else:
                noise, sizes, traces_of = activation_terms(
                    model, ops, x, bits, batch_size, ranges, shapes,
                    floating, meta, hutch)
                table = rows_sum(hessian_table(
                    model, [o.name for o in ops], x, y, float_out, noise,
                    sizes, traces_of, loss, meta, tol=tol, seed=seed,
                    rel_se=rel_se, operand="activations"), ops, len(names))
        meta["seconds"] = time.perf_counter() - start
        return Sensitivity(names, bits, table, method=method,
                           kind="activations", meta=meta)
    noise = np.zeros((len(ops), len(bits)))
    qkernels = {}
    for i, o in enumerate(ops):
        w = np.asarray(keras.ops.convert_to_numpy(_weight(o.layer, o.part)),
                       np.float64)
        for j, b in enumerate(bits):
            q = quantized_kernel(o.layer, b, weight_quantizer, part=o.part)
            qkernels[i, j] = q
            noise[i, j] = float(np.sum((q - w) ** 2))
    meta.update(
        probing=probing,
        weight_quantizer=qz.serialize(qz.get(weight_quantizer or "symmetric")),
        n_weights={o.name: int(np.prod(_weight(o.layer, o.part).shape))
                   for o in ops},
        quant_noise={o.name: noise[i].tolist() for i, o in enumerate(ops)})
    if method == "hessian":
        kernels = [_weight(o.layer, o.part) for o in ops]
        table = rows_sum(hessian_table(
            model, [o.name for o in ops], x, y, float_out, noise,
            [meta["n_weights"][o.name] for o in ops],
            lambda targets, fn: weight_traces(
                model, kernels, x, targets, fn, batch_size,
                layers=[o.layer for o in ops], probing=probing, **hutch),
            loss, meta, tol=tol, seed=seed, rel_se=rel_se), ops, len(names))
    else:
        table = _distortion_table(model, ops, len(names), x, float_out,
                                  qkernels, bits, batch_size)
    meta["seconds"] = time.perf_counter() - start
    return Sensitivity(names, bits, table, method=method, kind="weights",
                       meta=meta)


def combined_sensitivity(model, calibration_data, method: str = "hessian",
                         bits=None, **kwargs) -> Sensitivity:
    """Weights' plus input activations' sensitivity, summed per layer and
    width: the table :func:`tfcomp.hardware.allocate_bits` should get when
    activation bits follow weight bits (``a = w``), since a width then
    quantizes both (the weights' table alone gave 2-bit activations to
    layers with cheap weights). ``kwargs`` go to both :func:`sensitivity`
    calls (``probing`` to the weights' only). ``meta``: ``operands``
    ``"w + a"``, the two tables (``weights``, ``activations``), their
    ``meta`` (``weights_meta``, ``activations_meta``) and the total
    ``seconds``.

    Example:
        >>> s = combined_sensitivity(model, (x[:128], y[:128]), bits=[2, 4, 8])
        >>> alloc = allocate_bits(model, s, "latency", BISMO(), budget=0.5)
    """
    if "kind" in kwargs:
        raise TypeError("combined_sensitivity measures both kinds; do not "
                        f"pass kind. Received: kind={kwargs['kind']!r}")
    w = sensitivity(model, calibration_data, method, bits, **kwargs)
    kwargs.pop("probing", None)
    a = sensitivity(model, calibration_data, method, bits,
                    kind="activations", **kwargs)
    return Sensitivity(w.layers, w.bits, w.table + a.table, method=method,
                       meta={"operands": "w + a",
                             "weights": w.table.tolist(),
                             "activations": a.table.tolist(),
                             "weights_meta": w.meta,
                             "activations_meta": a.meta,
                             "seconds": w.meta["seconds"]
                             + a.meta["seconds"]})


def _distortion_table(model, ops, n_rows, x, float_out, qkernels, bits,
                      batch_size):
    """Output MSE per layer and width with only that layer's kernels (both
    of a SeparableConv2D) quantized."""
    table = np.zeros((n_rows, len(bits)))
    forward = _forward(model)
    for r in range(n_rows):
        mine = [i for i, o in enumerate(ops) if o.row == r]
        variables = [_weight(ops[i].layer, ops[i].part) for i in mine]
        originals = [keras.ops.convert_to_numpy(v) for v in variables]
        try:
            for j in range(len(bits)):
                for i, v, orig in zip(mine, variables, originals):
                    v.assign(qkernels[i, j].astype(orig.dtype))
                out = _predict(model, x, batch_size, forward)
                table[r, j] = float(np.mean((out - float_out) ** 2))
        finally:
            for v, orig in zip(variables, originals):
                v.assign(orig)
    return table
