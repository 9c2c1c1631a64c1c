"""HAWQ-V2 Hessian machinery behind :func:`tfcomp.quantization.sensitivity`
(``method="hessian"``): Hutchinson's trace estimator, the loss the Hessian
is taken of, and Hessian-vector products by double backprop with respect
to layer kernels or to layer input activations.

Weights: ``Omega_i(b) = Tr(H_i) / n_i * ||Q_b(W_i) - W_i||^2`` with ``H_i``
the Hessian of the calibration-mean loss with respect to layer ``i``'s
kernel (``n_i`` weights).

Activations (HAWQ-V2's extension to mixed-precision activations applies
the same metric to a layer's input activations ``A_i``): ``H_i`` is the
Hessian of the calibration-mean loss with respect to ``A_i`` stacked over
all ``N`` calibration samples. In
inference mode a sample's loss depends on its own activations only, so
``H_i`` is block diagonal and ``Tr(H_i)`` is the mean over samples of the
per-sample traces; ``n_i`` counts the elements of all ``N`` samples and
``||Q_b(A_i) - A_i||^2`` sums over the same elements, so ``Omega_i(b)`` is,
like the weight term, the (twice second-order) increase of the mean loss,
and the two tables add. The gradient of the loss with respect to an
activation is not zero at a trained model (it is for weights); as in
HAWQ-V2 the first-order term is dropped (zero-mean rounding noise).
Deviation: no official code for the activation term was released (the
HAWQ repository ships HAWQ-V3's ILP with precomputed weight
sensitivities; PyHessian computes weight traces only), so this follows
the paper's formula; ``Q_b`` is the unsigned / symmetric grid over the
calibration range of :func:`tfcomp.quantization.sensitivity.
fake_quant_input`, not HAWQ's learned-range quantizer.

Probes for activations are sample-disjoint (:func:`_disjoint`): one
Hessian-vector product probes each sample's activations at one layer only,
so a layer's estimate holds no cross-layer term (with joint probes, as for
weights, the coupling of adjacent layers' activations swamped small
traces and gave negative estimates); the assignment rotates per probe.

The Hessian-vector product with respect to an intermediate tensor: every
measured layer's ``call`` is wrapped for the duration (restored on error
too) so that its input becomes ``input + d_i``, with ``d_i`` a zero tensor
both tapes watch; derivatives with respect to ``d_i`` are those with
respect to the activation.

Reference: Dong et al., HAWQ-V2, arXiv:1911.03852; Hutchinson 1990; Yao et
al., PyHessian, arXiv:1912.07145.

Example:
    >>> A = np.diag([1.0, 2.0, 3.0])
    >>> hutchinson_trace(lambda v: [A @ v[0]], [(3,)])[0]
    array([6.])
"""

from __future__ import annotations

import warnings

import keras
import numpy as np

from tfcomp._io import check_number, check_positive_int

__all__ = ["hutchinson_trace", "weight_traces", "activation_traces",
           "hessian_table"]


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


def _batches(n: int, batch_size: int) -> list:
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


# ------------------------------------------------------------- the loss


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


def _tf(what: str):
    if keras.backend.backend() != "tensorflow":
        raise NotImplementedError(
            f"sensitivity(method='hessian'{what}) needs the TensorFlow "
            "backend (double backprop with tf.GradientTape). Received: "
            f"backend {keras.backend.backend()!r}; use method='distortion'.")
    import tensorflow as tf
    return tf


# ------------------------------------------------------------- H v


def _full_hvp(hvp_batch, x, targets, batch_size, sliced: bool):
    """``fn(v) -> H v`` of the calibration-mean loss from per-batch
    products of batch-mean losses (weighted by the batch share). ``sliced``:
    the blocks have a sample axis (activations) and each batch gets its
    rows of ``v``; else every batch gets all of ``v`` (weights)."""
    import tensorflow as tf
    n = len(x)
    slices = _batches(n, batch_size)

    def hvp(vs):
        total = [np.zeros(v.shape) for v in vs]
        shared = None if sliced else [tf.constant(v) for v in vs]
        for sl in slices:
            part = [tf.constant(v[sl]) for v in vs] if sliced else shared
            hv = hvp_batch(x[sl], targets[sl], part)
            w = (sl.stop - sl.start) / n
            for t, h in zip(total, hv):
                if h is not None:
                    if sliced:
                        t[sl] += np.asarray(h, np.float64) * w
                    else:
                        t += np.asarray(h, np.float64) * w
        return total
    return hvp


def weight_traces(model, kernels, x, targets, fn, batch_size, *, tol,
                  max_probes, min_probes, seed) -> tuple:
    """``(traces, probes)``: Hutchinson's ``Tr(H_i)`` of the calibration-
    mean loss for each kernel (a variable) in ``kernels``."""
    tf = _tf("")

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

    hvp = _full_hvp(hvp_batch, x, targets, batch_size, sliced=False)
    return hutchinson_trace(hvp, [tuple(k.shape) for k in kernels], tol=tol,
                            max_probes=max_probes, min_probes=min_probes,
                            seed=seed)


def _disjoint(hvp, n_layers: int, n: int):
    """Sample-disjoint probes: ``fn(v) -> H v`` restricted so that, in one
    product, each sample's activations are probed at one layer only (the
    others' probe is zeroed there, and the layer's output is kept on its
    own samples, scaled by ``n / its sample count``). The per-sample loss
    depends on that sample's activations only, so ``v_i . (H v)_i`` then
    holds no cross-layer term ``v_i^T H_ij v_j``, whose noise would swamp
    a small trace next to a large one (adjacent layers' activations are
    strongly coupled); the estimate stays unbiased. The assignment rotates
    with the probe (sample ``k`` -> layer ``(k + p) mod L``), so ``L``
    probes see every (sample, layer) pair once; with fewer samples than
    layers, the layers are split into groups, one product each."""
    rounds = -(-n_layers // n)
    groups = [np.arange(r, n_layers, rounds) for r in range(rounds)]
    probe = [0]

    def masked(vs):
        p = probe[0]
        probe[0] += 1
        out = [np.zeros(v.shape) for v in vs]
        for group in groups:
            owner = group[(np.arange(n) + p) % len(group)]
            keep = [owner == i for i in range(len(vs))]
            hv = hvp([v * k.reshape(-1, *([1] * (v.ndim - 1)))
                      for v, k in zip(vs, keep)])
            for i in group:
                out[i][keep[i]] = hv[i][keep[i]] * (n / keep[i].sum())
        return out
    return masked


def activation_traces(model, layers, shapes, x, targets, fn, batch_size, *,
                      tol, max_probes, min_probes, seed) -> tuple:
    """``(traces, probes)``: Hutchinson's ``Tr(H_i)`` of the calibration-
    mean loss with respect to each layer's input activations over all
    samples (``shapes``: one sample's input shape per layer), with
    sample-disjoint probes. Every layer's ``call`` is wrapped meanwhile and
    restored afterwards."""
    tf = _tf(", kind='activations'")
    slot = []  # the d_i of the batch being traced
    originals = [lay.call for lay in layers]

    def hooked(i, f):
        def call(inputs, *args, **kwargs):
            if slot:
                inputs = inputs + tf.cast(slot[0][i], inputs.dtype)
            return f(inputs, *args, **kwargs)
        return call

    @tf.function(reduce_retracing=True)
    def hvp_batch(xb, yb, vs):
        ds = [tf.zeros_like(v) for v in vs]
        with tf.GradientTape() as outer:
            outer.watch(ds)
            with tf.GradientTape() as inner:
                inner.watch(ds)
                slot.append(ds)
                try:
                    loss = tf.reduce_mean(fn(yb, model(xb, training=False)))
                finally:
                    slot.clear()
            grads = inner.gradient(loss, ds)
            gv = tf.add_n([tf.reduce_sum(g * v) for g, v in zip(grads, vs)
                           if g is not None] or [tf.zeros(())])
        return outer.gradient(gv, ds)

    try:
        for i, layer in enumerate(layers):
            layer.call = hooked(i, originals[i])
        hvp = _disjoint(_full_hvp(hvp_batch, x, targets, batch_size,
                                  sliced=True), len(layers), len(x))
        return hutchinson_trace(
            hvp, [(len(x), *s) for s in shapes], tol=tol,
            max_probes=max_probes, min_probes=min_probes, seed=seed)
    finally:
        for layer in layers:
            if "call" in vars(layer):
                del layer.call


# ------------------------------------------------------------- the table


def hessian_table(model, names, x, y, float_out, noise, sizes, traces_of,
                  loss, meta, *, tol, seed, operand="weights"):
    """``Omega = max(Tr, 0) / n * noise`` per layer and width; fills
    ``meta`` (traces, probes, loss, labels). ``traces_of(targets, fn) ->
    (traces, probes)``; ``sizes``: ``n`` per layer (weights, or activation
    elements over all samples)."""
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
    traces, probes = traces_of(targets, fn)
    negative = [n for n, t in zip(names, traces) if t < 0]
    if negative:
        warnings.warn(
            f"sensitivity: negative Hessian trace estimates ({operand}) for "
            f"layers {negative[:5]} (the model is not at a minimum of the "
            "loss, or too few probes); their sensitivity counts as 0.",
            stacklevel=3)
    meta.update(trace={n: float(t) for n, t in zip(names, traces)},
                probes=int(probes), tol=tol, seed=seed,
                loss=str(getattr(fn, "name", None) or getattr(
                    fn, "__name__", type(fn).__name__)),
                labels="given" if y is not None else "model predictions")
    n = np.maximum(np.asarray(sizes, np.float64), 1.0)[:, None]
    return np.maximum(traces, 0.0)[:, None] / n * noise
