"""``calibrate``: set activation ranges of a QAT model from data.

Post-training calibration as HAQ describes it: for each activation
quantizer, ``c = max`` of the observed values for ``b >= 5`` and the
KL-optimal threshold for ``b < 5`` (optionally capped, e.g. at 6 for ReLU6
networks). Weight quantizers' KL clip ratios are refreshed at the same time.
A shared layer's input quantizer covers the inputs of all its calls.

Example:
    >>> from tfcomp.quantization import calibrate
    >>> ranges = calibrate(qat_model, calibration_data=x_train[:512])
"""

from __future__ import annotations

import warnings

import keras
import numpy as np

from tfcomp._batches import input_names
from tfcomp._io import iter_batches, iter_model_batches
from tfcomp.graph import iter_leaf_layers
from tfcomp.layers import QUANT_STEP_LAYERS, QuantActivation, QuantReLU
from tfcomp.layers import quantizers as qz
from tfcomp.quantization._graph import read_graph
from tfcomp.quantization.quantize import link_shared_inputs

__all__ = ["calibrate", "activation_quantizers", "iterate_batches"]

_BINS = 1024


def activation_quantizers(model) -> list:
    """``[(layer, quantizer, kind)]`` for every activation quantizer of a
    model; ``kind`` is "input" (quantizes ``layer.input``), "relu"
    (``QuantReLU``: quantizes ``relu(layer.input)``) or "step" (an
    intermediate of a ``QuantLayerNormalization`` /
    ``QuantMultiHeadAttention``...: its ``step_values``).

    Example:
        >>> [l.name for l, q, k in activation_quantizers(qat)][:2]
    """
    out = []
    for _, layer in iter_leaf_layers(model):
        if isinstance(layer, QuantReLU):
            out.append((layer, layer.quantizer, "relu"))
        elif isinstance(layer, QuantActivation):
            out.append((layer, layer.quantizer, "input"))
        elif isinstance(layer, QUANT_STEP_LAYERS):
            out.extend((layer, q, "step")
                       for q in layer.step_quantizers.values())
        elif hasattr(layer, "activation_quantizers"):
            for q in layer.activation_quantizers():
                out.append((layer, q, "input"))
        elif getattr(layer, "input_quantizer", None) is not None:
            out.append((layer, layer.input_quantizer, "input"))
    return out


def iterate_batches(data, batch_size: int = 64, steps: int | None = None):
    """Deprecated alias of :func:`tfcomp._io.iter_batches` (the one
    calibration-data adapter).

    Example:
        >>> next(iter_batches(np.zeros((10, 4)), batch_size=4)).shape
        (4, 4)
    """
    warnings.warn(
        "tfcomp.quantization.calibration.iterate_batches is deprecated; use "
        "tfcomp._io.iter_batches.", DeprecationWarning, stacklevel=2)
    return iter_batches(data, batch_size, steps)


def calibrate(model: keras.Model, calibration_data=None,
              batch_size: int = 64, steps: int | None = None,
              method: str = "auto", max_range: float | None = None,
              refresh_weights: bool = True, *, data=None) -> dict:
    """Sets every activation quantizer's range from data (in place).

    Quantizers that have not seen data pass their input through, so one
    pass over ``calibration_data`` sees float activations of the
    (weight-quantized) model. Two passes are made: ranges, then histograms
    for KL.

    Args:
        model: a QAT model (``quantize_model`` / ``dnas.build_supernet``).
        calibration_data: inputs: an array, an ``(x, y)`` tuple, or an
            iterable / ``tf.data.Dataset`` of batches.
        batch_size: batch size for arrays.
        steps: maximum number of batches per pass (None = all).
        method: "auto" (max for b >= 5, KL for b < 5), "max" or "kl".
            The KL histogram of an unsigned quantizer leaves out exact
            zeros (most of a ReLU output), which its grid represents
            exactly; with them a 4-bit clip collapsed towards 0.
        max_range: optional cap on ``c`` (HAQ uses 6 for ReLU6 networks).
        refresh_weights: also refresh weight quantizers' KL clip ratios.
        data: deprecated name of ``calibration_data``.

    Returns:
        ``{"layer/quantizer": (lo, hi)}`` of the ranges set.

    Raises:
        ValueError: unknown ``method``, empty data, or a model without
            activation quantizers.

    Reference: Wang et al., HAQ, arXiv:1811.08886 (KL for b < 5).

    Example:
        >>> ranges = calibrate(qat_model, calibration_data=x_train[:512])
    """
    if data is not None:
        warnings.warn("calibrate(data=...) is deprecated; use "
                      "calibration_data=...", DeprecationWarning,
                      stacklevel=2)
        if calibration_data is None:
            calibration_data = data
    if method not in ("auto", "max", "kl"):
        raise ValueError(
            "method must be 'auto', 'max' or 'kl'. Received: "
            f"method={method!r}")
    graph = read_graph(model, "calibrate")
    link_shared_inputs(model)
    targets = activation_quantizers(model)
    if not targets:
        raise ValueError(
            f"Model {model.name!r} has no activation quantizers to "
            "calibrate (quantize it with quantize_model first).")
    calls = {id(layer): nodes for _, layer, nodes in graph.layers()}
    tensors, index = [], {}
    for layer, _, kind in targets:
        for node in calls[id(layer)]:
            for t in node.inputs if kind == "step" else node.inputs[:1]:
                if t not in index:
                    index[t] = len(tensors)
                    tensors.append(t)

    def outputs(batch):
        # Eager calls: calibration sees a few batches, and tracing a probe
        # (a graph full of quantizer ops) costs more than running it.
        return [keras.ops.convert_to_numpy(y)
                for y in graph.evaluate(batch, tensors)]

    def values(layer, q, kind, ys, steps_cache):
        """The quantizer's inputs, one array per call of the layer
        (``steps_cache``: a normalization's ``step_values`` per call, this
        batch's, computed once for all its step quantizers)."""
        out = []
        for node in calls[id(layer)]:
            v = ys[index[node.inputs[0]]]
            if kind == "step":  # the call's arguments, replayed
                if id(node) not in steps_cache:
                    steps_cache[id(node)] = node.call(
                        layer.step_values,
                        {t: ys[index[t]] for t in node.inputs})
                v = steps_cache[id(node)][q._prefix]
            elif kind == "relu":
                v = keras.ops.convert_to_numpy(keras.activations.relu(
                    v, negative_slope=layer.negative_slope,
                    max_value=layer.max_value, threshold=layer.threshold))
            out.append(np.asarray(v))
        return out

    def batches():
        return iter_model_batches(calibration_data, len(graph.inputs),
                                  batch_size, steps,
                                  names=input_names(model))

    lo = [np.inf] * len(targets)
    hi = [-np.inf] * len(targets)
    seen = False
    for batch in batches():
        seen = True
        ys, steps_cache = outputs(batch), {}
        for j, (layer, q, kind) in enumerate(targets):
            for v in values(layer, q, kind, ys, steps_cache):
                lo[j] = min(lo[j], float(v.min()))
                hi[j] = max(hi[j], float(v.max()))
    if not seen:
        raise ValueError("calibrate received no data batches.")

    def wants_kl(q):
        return method == "kl" or (method == "auto" and q.bits < 5)

    kl_targets = [j for j, (_, q, _) in enumerate(targets) if wants_kl(q)]
    hists = {}
    if kl_targets:
        for batch in batches():
            ys, steps_cache = outputs(batch), {}
            for j in kl_targets:
                layer, q, kind = targets[j]
                top = max(abs(lo[j]) if q.signed else 0.0, hi[j], 1e-12)
                for v in values(layer, q, kind, ys, steps_cache):
                    # exact zeros (most of a ReLU output) are represented
                    # exactly on an unsigned grid: they must not pull the
                    # clip
                    mag = np.abs(v) if q.signed else v[v > 0]
                    h, edges = np.histogram(mag, bins=_BINS,
                                            range=(0.0, top))
                    if j in hists:
                        hists[j][0] += h
                    else:
                        hists[j] = [h, edges]
    result = {}
    for j, (layer, q, _) in enumerate(targets):
        low = min(lo[j], 0.0) if q.signed else 0.0
        high = max(hi[j], 0.0)
        if j in hists:
            levels = 2 ** (q.bits - 1) if q.signed else 2 ** q.bits
            t = qz.kl_threshold_from_histogram(hists[j][0], hists[j][1],
                                                 levels)
            high = min(high, t)
            if q.signed:
                low = max(low, -t)
        if max_range is not None:
            high = min(high, float(max_range))
            if q.signed:
                low = max(low, -float(max_range))
        if high - low <= 0:
            high = low + 1e-6
        q.set_range(low, high)
        result[f"{layer.name}/{q._prefix}"] = (float(low), float(high))
    if refresh_weights:
        for _, layer in iter_leaf_layers(model):
            if hasattr(layer, "refresh_weight_quantizer"):
                layer.refresh_weight_quantizer()
    return result
