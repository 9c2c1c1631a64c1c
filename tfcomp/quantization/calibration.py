"""``calibrate``: set activation ranges of a QAT model from data.

Post-training calibration as HAQ describes it: for each activation
quantizer, ``c = max`` of the observed values for ``b >= 5`` and the
KL-optimal threshold for ``b < 5`` (optionally capped, e.g. at 6 for ReLU6
networks). Weight quantizers' KL clip ratios are refreshed at the same time.
"""

from __future__ import annotations

import keras
import numpy as np

from tfcomp.quantization import quantizers as qz
from tfcomp.quantization._graph import read_graph

__all__ = ["calibrate", "activation_quantizers", "iterate_batches"]

_BINS = 1024


def activation_quantizers(model) -> list:
    """``[(layer, quantizer, kind)]`` for every activation quantizer of a
    model; ``kind`` is "input" (quantizes ``layer.input``) or "relu"
    (``QuantReLU``: quantizes ``relu(layer.input)``).

    Example:
        >>> [l.name for l, q, k in activation_quantizers(qat)][:2]
    """
    out = []
    for layer in model.layers:
        cls = type(layer).__name__
        if cls == "QuantReLU":
            out.append((layer, layer.quantizer, "relu"))
        elif cls == "QuantActivation":
            out.append((layer, layer.quantizer, "input"))
        elif hasattr(layer, "activation_quantizers"):
            for q in layer.activation_quantizers():
                out.append((layer, q, "input"))
        elif getattr(layer, "input_quantizer", None) is not None:
            out.append((layer, layer.input_quantizer, "input"))
    return out


def iterate_batches(data, batch_size: int = 64, steps: int | None = None):
    """Yields numpy input batches from an array, an ``(x, y)`` tuple, or an
    iterable / ``tf.data.Dataset`` of ``x`` or ``(x, y, ...)`` batches.

    Example:
        >>> next(iterate_batches(np.zeros((10, 4)), batch_size=4)).shape
        (4, 4)
    """
    if isinstance(data, (tuple, list)) and len(data) >= 1 and hasattr(
            data[0], "shape") and not hasattr(data, "shape"):
        data = data[0]
    if hasattr(data, "shape") and hasattr(data, "__getitem__"):
        x = np.asarray(data, dtype=np.float32)
        if x.ndim == 0 or len(x) == 0:
            raise ValueError(
                f"calibration data is empty. Received shape {x.shape}")
        n = len(x)
        count = 0
        for i in range(0, n, batch_size):
            if steps is not None and count >= steps:
                return
            yield x[i:i + batch_size]
            count += 1
        return
    count = 0
    for batch in data:
        if steps is not None and count >= steps:
            return
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        yield np.asarray(keras.ops.convert_to_numpy(batch), np.float32)
        count += 1


def calibrate(model: keras.Model, data, batch_size: int = 64,
              steps: int | None = None, method: str = "auto",
              max_range: float | None = None,
              refresh_weights: bool = True) -> dict:
    """Sets every activation quantizer's range from data (in place).

    Quantizers that have not seen data pass their input through, so one
    pass over ``data`` sees float activations of the (weight-quantized)
    model. Two passes are made: ranges, then histograms for KL.

    Args:
        model: a QAT model (``quantize_model`` / ``dnas.build_supernet``).
        data: inputs: an array, an ``(x, y)`` tuple, or an iterable /
            ``tf.data.Dataset`` of batches.
        batch_size: batch size for arrays.
        steps: maximum number of batches per pass (None = all).
        method: "auto" (max for b >= 5, KL for b < 5), "max" or "kl".
            The KL histogram of an unsigned quantizer leaves out exact
            zeros (most of a ReLU output), which its grid represents
            exactly; with them a 4-bit clip collapsed towards 0.
        max_range: optional cap on ``c`` (HAQ uses 6 for ReLU6 networks).
        refresh_weights: also refresh weight quantizers' KL clip ratios.

    Returns:
        ``{"layer/quantizer": (lo, hi)}`` of the ranges set.

    Raises:
        ValueError: unknown ``method``, empty data, or a model without
            activation quantizers.

    Reference: Wang et al., HAQ, arXiv:1811.08886 (KL for b < 5).

    Example:
        >>> ranges = calibrate(qat_model, x_train[:512])
    """
    if method not in ("auto", "max", "kl"):
        raise ValueError(
            "method must be 'auto', 'max' or 'kl'. Received: "
            f"method={method!r}")
    read_graph(model, "calibrate")
    from tfcomp.quantization.quantize import link_shared_inputs

    link_shared_inputs(model)
    targets = activation_quantizers(model)
    if not targets:
        raise ValueError(
            f"Model {model.name!r} has no activation quantizers to "
            "calibrate (quantize it with quantize_model first).")
    tensors, index = [], {}
    for layer, _, _ in targets:
        t = layer.input
        if id(t) not in index:
            index[id(t)] = len(tensors)
            tensors.append(t)
    probe = keras.Model(model.inputs, tensors)

    def outputs(batch):
        # Eager calls: calibration sees a few batches, and tracing the probe
        # (a graph full of quantizer ops) costs more than running it.
        ys = probe(batch, training=False)
        ys = ys if isinstance(ys, (list, tuple)) else [ys]
        return [keras.ops.convert_to_numpy(y) for y in ys]

    def values(layer, kind, ys):
        v = ys[index[id(layer.input)]]
        if kind == "relu":
            v = keras.ops.convert_to_numpy(keras.activations.relu(
                v, negative_slope=layer.negative_slope,
                max_value=layer.max_value, threshold=layer.threshold))
        return np.asarray(v)

    lo = [np.inf] * len(targets)
    hi = [-np.inf] * len(targets)
    seen = False
    for batch in iterate_batches(data, batch_size, steps):
        seen = True
        ys = outputs(batch)
        for j, (layer, _, kind) in enumerate(targets):
            v = values(layer, kind, ys)
            lo[j] = min(lo[j], float(v.min()))
            hi[j] = max(hi[j], float(v.max()))
    if not seen:
        raise ValueError("calibrate received no data batches.")

    def wants_kl(q):
        return method == "kl" or (method == "auto" and q.bits < 5)

    kl_targets = [j for j, (_, q, _) in enumerate(targets) if wants_kl(q)]
    hists = {}
    if kl_targets:
        for batch in iterate_batches(data, batch_size, steps):
            ys = outputs(batch)
            for j in kl_targets:
                layer, q, kind = targets[j]
                v = values(layer, kind, ys)
                top = max(abs(lo[j]) if q.signed else 0.0, hi[j], 1e-12)
                # exact zeros (most of a ReLU output) are represented
                # exactly on an unsigned grid: they must not pull the clip
                mag = np.abs(v) if q.signed else v[v > 0]
                h, edges = np.histogram(mag, bins=_BINS, range=(0.0, top))
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
        for layer in model.layers:
            if hasattr(layer, "refresh_weight_quantizer"):
                layer.refresh_weight_quantizer()
    return result
