"""Per-layer quantization sensitivity: HAWQ-V2 Hessian traces or MCT-style
output distortion, for every quantizable layer and weight bit-width.

* ``method="hessian"`` (HAWQ-V2): ``Omega_i(b) = Tr(H_i) / n_i *
  ||Q_b(W_i) - W_i||^2``, where ``H_i`` is the Hessian of the loss with
  respect to layer ``i``'s kernel (``n_i`` weights) and ``Q_b`` the weight
  quantizer QAT uses at ``b`` bits. ``Tr(H_i)`` is estimated with
  Hutchinson's method: ``E[v^T H v]`` over Rademacher probes ``v``, one
  probe for all layers at once (``v_i^T (H v)_i`` estimates the trace of
  the diagonal block ``H_i``), Hessian-vector products by double backprop
  (``tf.GradientTape``, TensorFlow backend), stopping when every layer's
  running mean moves by less than ``tol`` (1%).
* ``method="distortion"`` (Sony MCT): the mean squared difference between
  the float model's outputs and the outputs with only that layer's weights
  quantized to ``b`` bits, on the calibration inputs.

``kind="activations"`` (``method="distortion"`` only) measures the same
output distortion with only one layer's *input activations* quantized to
``b`` bits (a uniform grid over the calibration range: unsigned on
``[0, max]`` for non-negative inputs, else symmetric on ``max |x|``;
QAT's calibration may clip tighter at low bits). The Hessian term for
activations (HAWQ-V2's, with Hessians with respect to intermediate tensors)
is not implemented; :func:`tfcomp.hardware.allocate_bits` uses weight
sensitivity and ties activation bits to a rule.

``Q_b`` is ``quantize_model``'s weight quantizer (symmetric per output
channel, max clip at b >= 5 and KL clip at b <= 4) applied to the layer's
own kernel. Per-channel symmetric quantization commutes with the per-channel
scale of BatchNorm folding, so the grid equals the one QAT uses on the
folded kernel.

Reference: Dong et al., HAWQ-V2, arXiv:1911.03852; Yao et al., HAWQ-V3,
arXiv:2011.10680; Sony Model Compression Toolkit (MCT) mixed precision.

Example:
    >>> s = sensitivity(model, (x[:256], y[:256]), method="hessian")
    >>> print(s)
    >>> s.to_json("sensitivity.json")
"""

from __future__ import annotations

import time
import warnings

import keras
import numpy as np

from tfcomp._io import as_arrays, check_number, check_positive_int
from tfcomp.layers import quantizers as qz
from tfcomp.quantization._analysis import QUANT_KINDS, analyse
from tfcomp.quantization.quantize import _QUANT_CLASSES
from tfcomp.quantization.sensitivity_result import Sensitivity

__all__ = ["METHODS", "KINDS", "DEFAULT_BITS", "Sensitivity", "sensitivity",
           "hutchinson_trace", "quantized_kernel"]

METHODS = ("hessian", "distortion")
KINDS = ("weights", "activations")
DEFAULT_BITS = (2, 3, 4, 5, 6, 7, 8)


def _weight(layer):
    """The variable QAT quantizes: the kernel, or an Embedding's table."""
    if isinstance(layer, keras.layers.Embedding):
        return layer.embeddings
    if isinstance(layer, keras.layers.SeparableConv2D):
        raise NotImplementedError(
            f"sensitivity does not measure SeparableConv2D yet (QAT splits "
            f"it into a depthwise and a 1x1 conv). Received: layer "
            f"{layer.name!r}")
    return layer.kernel


def _reduce_axes(layer) -> tuple:
    """The axes the per-channel weight scale reduces over, from the QAT
    class ``quantize_model`` builds for ``layer`` (one table, so every
    quantized kind is covered)."""
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
                     kernel=None) -> np.ndarray:
    """``Q_b(W)``: the kernel (an Embedding's table) of any layer kind
    ``quantize_model`` quantizes, on the grid it trains at ``bits`` weight
    bits.

    Args:
        layer: the float layer.
        bits: weight bit-width in [1, 8].
        weight_quantizer: quantizer alias / dict / instance (as
            ``quantize_model``'s).
        kernel: the kernel value (default: the layer's).

    Returns:
        The fake-quantized kernel (numpy float32).

    Example:
        >>> q4 = quantized_kernel(model.get_layer("conv1"), 4)
    """
    axes = _reduce_axes(layer)
    w = np.asarray(keras.ops.convert_to_numpy(
        _weight(layer) if kernel is None else kernel), np.float32)
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


# ------------------------------------------------------------- Hutchinson


def hutchinson_trace(hvp, shapes, *, tol: float = 0.01,
                     max_probes: int = 100, min_probes: int = 3,
                     seed: int = 0) -> tuple:
    """Hutchinson's estimate of the traces of a Hessian's diagonal blocks.

    Each probe draws one Rademacher vector ``v`` (blocks ``v_i``) and adds
    ``v_i . (H v)_i`` to block ``i``'s running mean (an unbiased estimate of
    ``Tr(H_ii)``). The loop stops after ``min_probes`` once every block's
    running mean moved by less than ``tol`` of its magnitude in the last
    probe (a block whose mean is below 1e-3 of the largest block's is
    measured against that floor, so a near-zero trace does not stall the
    loop), or after ``max_probes``.

    Args:
        hvp: ``fn(list of arrays v_i) -> list of arrays (H v)_i``.
        shapes: the block shapes.
        tol: relative change of the running mean that counts as settled.
        max_probes, min_probes: probe limits.
        seed: seed of the Rademacher draws.

    Returns:
        ``(traces, probes)``: float64 array of per-block traces and the
        number of probes used.

    Reference: Hutchinson 1990; Yao et al., PyHessian, arXiv:1912.07145.

    Example:
        >>> A = np.diag([1.0, 2.0, 3.0])
        >>> hutchinson_trace(lambda v: [A @ v[0]], [(3,)])[0]
        array([6.])
    """
    tol = check_number(tol, "tol", 0, min_open=True)
    max_probes = check_positive_int(max_probes, "max_probes")
    min_probes = min(check_positive_int(min_probes, "min_probes"),
                     max_probes)
    shapes = [tuple(int(d) for d in s) for s in shapes]
    rng = np.random.default_rng(seed)
    sums = np.zeros(len(shapes))
    mean = None
    k = 0
    for k in range(1, max_probes + 1):
        v = [(rng.integers(0, 2, size=s) * 2 - 1).astype(np.float32)
             for s in shapes]
        hv = hvp(v)
        sums += [float(np.sum(np.asarray(h, np.float64) * vi))
                 for vi, h in zip(v, hv)]
        new = sums / k
        if mean is not None and k >= min_probes:
            floor = 1e-3 * float(np.max(np.abs(mean)))
            scale = np.maximum(np.abs(mean), max(floor, 1e-30))
            if np.all(np.abs(new - mean) <= tol * scale):
                mean = new
                break
        mean = new
    return mean, k


def _probabilities(out: np.ndarray) -> bool:
    """Outputs that look like softmax probabilities (rows sum to 1)."""
    if out.ndim < 2 or out.shape[-1] < 2:
        return False
    return bool(np.all(out >= -1e-6) and np.all(out <= 1 + 1e-6) and np.allclose(
        out.sum(axis=-1), 1.0, atol=1e-3))


def _loss_fn(model, loss, probs: bool):
    """``(fn(y, p) -> per-sample or scalar loss, kind)``; kind "sparse",
    "onehot" (categorical cross-entropy) or "raw"."""
    if loss is None:
        loss = getattr(model, "loss", None)
    if loss is None:
        return (keras.losses.SparseCategoricalCrossentropy(
            from_logits=not probs), "sparse")
    if isinstance(loss, (dict, list, tuple)):
        raise NotImplementedError(
            "sensitivity needs one loss for a single-output model. Received: "
            f"loss={loss!r}; pass loss=<one loss> instead.")
    fn = keras.losses.get(loss) if isinstance(loss, str) else loss
    if not callable(fn):
        raise ValueError(f"loss must be a Keras loss or callable. Received: "
                         f"loss={loss!r}")
    name = str(getattr(fn, "name", None) or getattr(fn, "__name__", "")
               or type(fn).__name__).lower()
    if "sparse_categorical" in name or "sparsecategorical" in name:
        return fn, "sparse"
    if "categorical_crossentropy" in name or "categoricalcrossentropy" in name:
        return fn, "onehot"
    return fn, "raw"


def _targets(kind: str, y, out: np.ndarray):
    """Loss targets: labels as the loss wants them, or the float model's own
    predictions when there are no labels."""
    if y is None:
        if kind == "raw":
            return out.astype(np.float32)
        y = out.reshape(out.shape[0], -1).argmax(axis=-1)
    if kind in ("sparse", "onehot"):
        n = int(out.shape[-1])
        if y.min() < 0 or y.max() >= n:
            raise ValueError(
                f"calibration_data labels must be class indices in [0, {n}) "
                f"for a model with {n} outputs. Received: labels in "
                f"[{y.min()}, {y.max()}]")
    if kind == "onehot":
        return np.eye(out.shape[-1], dtype=np.float32)[y]
    if kind == "raw":
        return y.astype(np.float32)
    return y


def _batches(n: int, batch_size: int) -> list:
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


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
    for sl in _batches(len(x), batch_size):
        parts = [np.asarray(keras.ops.convert_to_numpy(t), np.float64)
                 for t in keras.tree.flatten(forward(x[sl]))]
        outs.append(parts[0] if len(parts) == 1 else np.concatenate(
            [p.reshape(len(p), -1) for p in parts], axis=1))
    return np.concatenate(outs, axis=0)


def _hessian_traces(model, kernels, x, targets, fn, batch_size, tol,
                    max_probes, min_probes, seed) -> tuple:
    if keras.backend.backend() != "tensorflow":
        raise NotImplementedError(
            "sensitivity(method='hessian') needs the TensorFlow backend "
            "(double backprop with tf.GradientTape). Received: backend "
            f"{keras.backend.backend()!r}; use method='distortion'.")
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def hvp_batch(xb, yb, vs):
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                loss = tf.reduce_mean(fn(yb, model(xb, training=False)))
            # dense tensors: an Embedding's gradient is IndexedSlices
            grads = [None if g is None else tf.convert_to_tensor(g)
                     for g in inner.gradient(loss, kernels)]
            gv = tf.add_n([tf.reduce_sum(g * v) for g, v in zip(grads, vs)
                           if g is not None])
        return [None if h is None else tf.convert_to_tensor(h)
                for h in outer.gradient(gv, kernels)]

    n = len(x)
    slices = _batches(n, batch_size)

    def hvp(vs):
        vs = [tf.constant(v) for v in vs]
        total = None
        for sl in slices:
            hv = hvp_batch(x[sl], targets[sl], vs)
            w = (sl.stop - sl.start) / n
            part = [np.asarray(h, np.float64) * w if h is not None else
                    np.zeros(v.shape) for h, v in zip(hv, vs)]
            total = part if total is None else [a + b for a, b in
                                                zip(total, part)]
        return total

    shapes = [tuple(k.shape) for k in kernels]
    return hutchinson_trace(hvp, shapes, tol=tol, max_probes=max_probes,
                            min_probes=min_probes, seed=seed)


def _check_loss(fn, targets, out, name: str) -> None:
    try:
        value = keras.ops.convert_to_numpy(keras.ops.mean(fn(
            targets[:2], keras.ops.convert_to_tensor(out[:2], "float32"))))
    except Exception as e:  # noqa: BLE001 - re-raised with context
        raise ValueError(
            f"The loss cannot be computed on model {name!r}'s outputs "
            f"(shape {out.shape[1:]}) and the labels / targets (shape "
            f"{np.shape(targets)[1:]}): {type(e).__name__}: {e}. Pass "
            "loss=... or labels that fit it.") from None
    if not np.isfinite(value):
        raise ValueError(f"The loss of model {name!r} on the calibration "
                         "data is not finite.")


# ------------------------------------------------------------- the verb


def sensitivity(model, calibration_data, method: str = "hessian", bits=None,
                *, num_samples: int = 256, batch_size: int = 64,
                loss=None, weight_quantizer="symmetric", tol: float = 0.01,
                max_probes: int = 100, min_probes: int = 3,
                seed: int = 0, kind: str = "weights") -> Sensitivity:
    """Per quantizable layer and weight bit-width, the expected loss increase
    when only that layer's weights are quantized.

    Args:
        model: a built float functional / Sequential model (single input);
            the layers are those ``quantize_model`` quantizes.
        calibration_data: inputs, ``(x, y)`` or a ``tf.data`` dataset /
            iterable of batches (``tfcomp._io.as_arrays``). Without labels
            the float model's own predictions are the targets (its argmax
            for cross-entropy).
        method: ``"hessian"`` (HAWQ-V2) or ``"distortion"`` (MCT, output
            MSE); see the module docstring.
        bits: weight bit-widths (default 2..8), an int or a list.
        num_samples: calibration samples used (the first ones).
        batch_size: batch size of the forward / Hessian-vector passes.
        loss: the loss for ``"hessian"``; default the model's compiled
            loss, else sparse categorical cross-entropy (from logits unless
            the outputs are probabilities).
        weight_quantizer: the weight quantizer (``quantize_model``'s).
        tol, max_probes, min_probes: Hutchinson's stopping rule (running
            mean of every layer's trace moves by < ``tol``).
        seed: seed of the Rademacher probes.
        kind: ``"weights"`` (default) or ``"activations"`` (each layer's
            input activations quantized instead; ``method="distortion"``
            only; the table's bits are then activation bits).

    Returns:
        A :class:`Sensitivity` (``.layers``, ``.bits``, ``.table``;
        ``meta["trace"]`` holds the Hessian traces). Negative trace
        estimates (a model away from a minimum) count as 0, with a warning.

    Raises:
        ValueError: an unknown method, bits outside [1, 8], data that does
            not fit the model's input, a model without quantizable layers.
        NotImplementedError: multi-input models; ``"hessian"`` on a
            backend other than TensorFlow.

    Reference: Dong et al., HAWQ-V2, arXiv:1911.03852 (Hessian trace by
    Hutchinson); Sony MCT (output distortion).

    Example:
        >>> s = sensitivity(model, (x_val[:256], y_val[:256]))
        >>> s.value("conv1", 4)
    """
    method = _check_method(method)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}. Received: "
                         f"kind={kind!r}")
    if kind == "activations" and method != "distortion":
        raise NotImplementedError(
            "sensitivity(kind='activations') is measured with "
            f"method='distortion' only. Received: method={method!r}")
    bits = _check_bits(bits)
    num_samples = check_positive_int(num_samples, "num_samples")
    batch_size = check_positive_int(batch_size, "batch_size")
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model. Received: "
                        f"{type(model).__name__}")
    if len(getattr(model, "inputs", None) or []) != 1:
        raise NotImplementedError(
            f"sensitivity supports single-input models; model "
            f"{model.name!r} has {len(model.inputs or [])} inputs.")
    analysis = analyse(model, True, (), "sensitivity", QUANT_KINDS)
    plans = analysis.plans
    names = analysis.quantized_names()
    if not names:
        raise ValueError(f"model {model.name!r} has no quantizable layers "
                         "(see quantize_model).")
    x, y = as_arrays(calibration_data, model=model, max_items=num_samples,
                     name="calibration_data")
    start = time.perf_counter()
    layers = [plans[n].layer for n in names]
    float_out = _predict(model, x, batch_size)
    if kind == "activations":
        table, ranges = _activation_table(model, layers, x, float_out, bits,
                                          batch_size)
        meta = {"num_samples": int(len(x)), "batch_size": batch_size,
                "input_range": {n: list(r) for n, r in zip(names, ranges)},
                "seconds": time.perf_counter() - start}
        return Sensitivity(names, bits, table, method=method,
                           kind="activations", meta=meta)
    noise = np.zeros((len(names), len(bits)))
    qkernels = {}
    for i, layer in enumerate(layers):
        w = np.asarray(keras.ops.convert_to_numpy(_weight(layer)), np.float64)
        for j, b in enumerate(bits):
            q = quantized_kernel(layer, b, weight_quantizer)
            qkernels[i, j] = q
            noise[i, j] = float(np.sum((q - w) ** 2))
    meta = {"num_samples": int(len(x)), "batch_size": batch_size,
            "weight_quantizer": qz.serialize(qz.get(
                weight_quantizer or "symmetric")),
            "n_weights": {n: int(np.prod(_weight(lay).shape))
                          for n, lay in zip(names, layers)},
            "quant_noise": {n: noise[i].tolist()
                            for i, n in enumerate(names)}}
    if method == "hessian":
        table = _hessian_table(model, names, layers, x, y, float_out, noise,
                               loss, batch_size, tol, max_probes, min_probes,
                               seed, meta)
    else:
        table = _distortion_table(model, layers, x, float_out, qkernels,
                                  bits, batch_size)
    meta["seconds"] = time.perf_counter() - start
    return Sensitivity(names, bits, table, method=method, kind="weights",
                       meta=meta)


def _hessian_table(model, names, layers, x, y, float_out, noise, loss,
                   batch_size, tol, max_probes, min_probes, seed, meta):
    out2d = float_out.reshape(len(float_out), -1) if float_out.ndim > 2 \
        else float_out
    if len(model.outputs) != 1:
        raise NotImplementedError(
            f"sensitivity(method='hessian') supports single-output models; "
            f"model {model.name!r} has {len(model.outputs)} outputs. Use "
            "method='distortion'.")
    fn, kind = _loss_fn(model, loss, _probabilities(out2d))
    targets = _targets(kind, y, float_out)
    _check_loss(fn, targets, float_out, model.name)
    kernels = [_weight(lay) for lay in layers]
    traces, probes = _hessian_traces(model, kernels, x, targets, fn,
                                     batch_size, tol, max_probes,
                                     min_probes, seed)
    negative = [n for n, t in zip(names, traces) if t < 0]
    if negative:
        warnings.warn(
            f"sensitivity: negative Hessian trace estimates for layers "
            f"{negative[:5]} (the model is not at a minimum of the loss, or "
            "too few probes); their sensitivity counts as 0.", stacklevel=3)
    n_w = np.array([meta["n_weights"][n] for n in names], np.float64)
    meta.update(trace={n: float(t) for n, t in zip(names, traces)},
                probes=int(probes), tol=tol, seed=seed,
                loss=str(getattr(fn, "name", None) or getattr(
                    fn, "__name__", type(fn).__name__)),
                labels="given" if y is not None else "model predictions")
    return np.maximum(traces, 0.0)[:, None] / n_w[:, None] * noise


def _distortion_table(model, layers, x, float_out, qkernels, bits,
                      batch_size):
    table = np.zeros((len(layers), len(bits)))
    forward = _forward(model)
    for i, layer in enumerate(layers):
        original = keras.ops.convert_to_numpy(_weight(layer))
        try:
            for j in range(len(bits)):
                _weight(layer).assign(qkernels[i, j].astype(original.dtype))
                out = _predict(model, x, batch_size, forward)
                table[i, j] = float(np.mean((out - float_out) ** 2))
        finally:
            _weight(layer).assign(original)
    return table


def input_grid(bits: int, lo: float, hi: float) -> tuple:
    """``(scale, qmin, qmax)`` of :func:`fake_quant_input`'s grid."""
    if lo >= 0:
        return max(hi, 1e-12) / (2 ** bits - 1), 0, 2 ** bits - 1
    levels = max(2 ** (bits - 1) - 1, 1)
    return max(abs(lo), abs(hi), 1e-12) / levels, -levels, levels


def fake_quant_input(x, bits: int, lo: float, hi: float):
    """``x`` on a ``bits``-bit grid over the calibration range: unsigned on
    ``[0, hi]`` when ``lo >= 0``, else symmetric on ``max(|lo|, |hi|)``."""
    scale, qmin, qmax = input_grid(bits, lo, hi)
    ops = keras.ops
    return ops.clip(ops.round(x / scale), qmin, qmax) * scale


def _input_ranges(model, layers, x, batch_size) -> list:
    probe = keras.Model(model.inputs, [lay.input for lay in layers])
    lo = np.full(len(layers), np.inf)
    hi = np.full(len(layers), -np.inf)
    for sl in _batches(len(x), batch_size):
        outs = probe(x[sl], training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        for i, t in enumerate(outs):
            t = keras.ops.convert_to_numpy(t)
            lo[i], hi[i] = min(lo[i], t.min()), max(hi[i], t.max())
    return list(zip(lo.tolist(), hi.tolist()))


def _activation_table(model, layers, x, float_out, bits, batch_size):
    """Every layer's input passes through a switchable fake quantizer whose
    grid lives in variables, so one compiled forward serves every (layer,
    width) pair: the layer under test is switched on, the others pass
    their input through unchanged."""
    ranges = _input_ranges(model, layers, x, batch_size)
    table = np.zeros((len(layers), len(bits)))
    grid = keras.Variable(np.zeros((len(layers), 4), np.float32),
                          trainable=False, name="input_grid")
    originals = [lay.call for lay in layers]

    def hooked(i, f):
        def call(inputs, *args, **kwargs):
            ops = keras.ops
            on, scale, qmin, qmax = (ops.cast(grid[i, k], inputs.dtype)
                                     for k in range(4))
            q = ops.clip(ops.round(inputs / scale), qmin, qmax) * scale
            return f(ops.where(on > 0, q, inputs), *args, **kwargs)
        return call

    try:
        for i, layer in enumerate(layers):
            layer.call = hooked(i, originals[i])
        forward = _forward(model)
        for i in range(len(layers)):
            for j, b in enumerate(bits):
                rows = np.zeros((len(layers), 4), np.float32)
                rows[:, 1] = 1.0
                rows[i] = (1.0, *input_grid(b, *ranges[i]))
                grid.assign(rows)
                out = _predict(model, x, batch_size, forward)
                table[i, j] = float(np.mean((out - float_out) ** 2))
    finally:
        for layer in layers:
            if "call" in vars(layer):
                del layer.call
    return table, ranges
