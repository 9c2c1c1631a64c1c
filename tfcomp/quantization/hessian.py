"""HAWQ-V2 Hessian machinery behind :func:`tfcomp.quantization.sensitivity`
(``method="hessian"``): Hutchinson's trace estimator, the loss the Hessian
is taken of, and Hessian-vector products by double backprop with respect
to layer kernels or to layer input activations.

Weights: ``Omega_i(b) = Tr(H_i) / n_i * ||Q_b(W_i) - W_i||^2`` with ``H_i``
the Hessian of the calibration-mean loss with respect to layer ``i``'s
kernel (``n_i`` weights). Probes (``probing=``), each unbiased:

* ``"disjoint"`` (default): in one product each calibration sample
  perturbs one layer's kernel: layer ``i`` runs with kernel ``W_i + t_i``
  on its samples ``S_i`` (``keras.StatelessScope``, a second pass of the
  layer on ``S_i`` alone, scattered back) and ``W_i`` on the others, and
  the products are taken with respect to the zero tensors ``t_i``. The
  cross blocks ``d^2 L / dt_i dt_j`` are then exactly zero (no sample
  sees two ``t``), so ``v_i . (H v)_i * L`` estimates ``Tr(H_i)`` from the
  diagonal block alone; the assignment rotates per probe, one rotation
  for weights and activations (:func:`_rotation`: ``L`` probes see every
  (sample, layer) pair once, so the factor ``L``, not ``N / |S_i|``,
  weighs every sample alike when ``N`` is not a multiple of ``L``). In
  a piecewise-linear network (conv / dense, ReLU(6), inference BatchNorm,
  pooling) the output is locally linear in one layer's kernel, so ``H_i``
  is the Gauss-Newton block ``J^T H_out J``, PSD, and every probe's
  estimate is >= 0: never negative.
* ``"joint"`` (before issue #19): one probe over all kernels;
  ``v_i . (H v)_i`` also holds ``sum_j v_i^T H_ij v_j``, zero mean but of
  variance ``~ 2 ||H_ij||_F^2``: next to a depthwise layer's trace of
  ~1000, an expand layer's ~3 came out negative (clipped to 0, the ILP
  saw free 2-bit weights).
* ``"layer"``: one kernel per product over all samples (``L`` products per
  probe).

Stopping rule: after ``min_probes``, when every layer's running mean moved
by less than ``tol`` in the last probe and its standard error is below
``rel_se`` of it, or at ``max_probes``; layers above ``rel_se`` then are
reported (``meta["unconverged"]``, ``meta["trace_se"]``).

Measured (issue #19; 128 images, batch 64, loaded 2-core host): error of
each layer's trace against a reference (per-layer probes x20 / x12 pooled
with disjoint x116 / x88 at another seed; the two agree within 1.6 SE,
pooled relative SE <= 8% / 13%), median / max over layers, negative
layers, seconds of Hessian-vector products (0.26 s / 0.63 s per joint
probe; a disjoint one costs 1.8x that, measured interleaved on both):

=====================================  ================  ================
estimator                              MobileNetV2-tiny  ResNet-20
                                       (29 layers)       (22 layers)
=====================================  ================  ================
joint, 12 probes                       44%/811%, 5 neg   29%/229%, 1 neg
joint, 40 probes                       21%/432%, 5 neg   21%/157%, 0
joint until SE < 20% (b)               not by 40 (20 l.) not by 40 (19 l.)
disjoint, 12 probes                    25%/107%, 0, 6s   18%/125%, 0, 14s
disjoint, 24 probes                    16%/64%, 0, 11s   16%/80%, 0, 27s
disjoint, 58 / 44 probes               13%/36%, 0, 27s   10%/58%, 0, 50s
per-layer (a), 1 probe (L products)    24%/84%, 0, 7s    27%/229%, 0, 22s
per-layer (a), 6 probes                7%/50%, 0, 42s    12%/47%, 0, 133s
joint 12 + per-layer x2 where negative
or SE > 25% (c; 22 / 20 layers)        14%/108%, 0, 14s  18%/106%, 0, 48s
=====================================  ================  ================

Joint probes stay negative at 40 probes (MobileNetV2's expand layers next
to depthwise traces 100x larger) and their standard error never settles,
so a stopping rule (b) cannot rescue them; per-layer probes (a) and the
blend (c) hold no cross term either but cost ``L`` products per probe and
err more per second (a block's own Hutchinson noise dominates).
Sample-disjoint probes: no negatives at any count and the lowest
worst-case error per second. Weights + activations at 24 probes each
(the CLI's cap) plus the ILP: 47 s / 55 s (MobileNetV2-tiny / ResNet-20)
on that host, no negative trace. MobileNetV2-tiny's weights-only ILP
(BISMO, uniform-4-bit latency) fine-tuned to 77.9% with 24 disjoint
probes (joint, 12 probes: 2-bit expand layers, 9.3%; weights +
activations 77.5%). Session 13 (second passes on ``S_i`` alone; numpy on
kept rows only), 24 probes, old / new interleaved, idle host: weights
29.3 / 16.7 s (ResNet-20), 13.7 / 12.2 s (MobileNetV2-tiny), activations
15.5 / 14.5 s, 11.6 / 10.6 s; traces equal to 5e-7.

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
traces and gave negative estimates); the assignment rotates per probe
as the weights' does (:func:`_rotation`).

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

import functools
import warnings

import keras
import numpy as np

from tfcomp._batches import as_model_input, index_rows
from tfcomp._batches import rows as num_rows
from tfcomp._io import check_number, check_positive_int
from tfcomp.graph.calls import override_calls
from tfcomp.quantization._hessian_loss import (
    _check_loss,
    _loss_fn,
    _probabilities,
    _targets,
)

__all__ = ["hutchinson_trace", "weight_traces", "activation_traces",
           "hessian_table"]


def hutchinson_trace(hvp, shapes, *, tol: float = 0.01,
                     max_probes: int = 100, min_probes: int = 3,
                     seed: int = 0, rel_se: float | None = None,
                     stderr: bool = False) -> tuple:
    """Hutchinson's estimate of the traces of a Hessian's diagonal blocks.

    Each probe draws one Rademacher vector ``v`` (blocks ``v_i``) and adds
    ``v_i . (H v)_i`` to block ``i``'s running mean (an unbiased estimate of
    ``Tr(H_ii)``). The loop stops after ``min_probes`` once every block's
    running mean moved by less than ``tol`` of its magnitude in the last
    probe and (``rel_se`` given) its standard error is below ``rel_se`` of
    it (a block whose mean is below 1e-3 of the largest block's is
    measured against that floor, so a near-zero trace does not stall the
    loop), or after ``max_probes``.

    Args:
        hvp: ``fn(list of arrays v_i) -> list of arrays (H v)_i``.
        shapes: the block shapes.
        tol: relative change of the running mean that counts as settled.
        max_probes, min_probes: probe limits.
        seed: seed of the Rademacher draws.
        rel_se: relative standard error of the mean that counts as settled
            (None: not checked).
        stderr: also return the standard errors.

    Returns:
        ``(traces, probes)``: float64 array of per-block traces and the
        number of probes used; ``(traces, probes, se)`` with ``stderr``
        (``inf`` after one probe).

    Reference: Hutchinson 1990; Yao et al., PyHessian, arXiv:1912.07145.

    Example:
        >>> A = np.diag([1.0, 2.0, 3.0])
        >>> hutchinson_trace(lambda v: [A @ v[0]], [(3,)])[0]
        array([6.])
    """
    tol = check_number(tol, "tol", 0, min_open=True)
    if rel_se is not None:
        rel_se = check_number(rel_se, "rel_se", 0, min_open=True)
    max_probes = check_positive_int(max_probes, "max_probes")
    min_probes = min(check_positive_int(min_probes, "min_probes"),
                     max_probes)
    shapes = [tuple(int(d) for d in s) for s in shapes]
    rng = np.random.default_rng(seed)
    sums, squares = np.zeros(len(shapes)), np.zeros(len(shapes))
    mean, se = None, np.full(len(shapes), np.inf)
    k = 0
    for k in range(1, max_probes + 1):
        v = [rng.integers(0, 2, size=s).astype(np.float32) * 2 - 1
             for s in shapes]  # +-1, the draws of (r * 2 - 1) in int64
        hv = hvp(v)
        e = np.array([float(np.sum(np.asarray(h, np.float64) * vi))
                      for vi, h in zip(v, hv)])
        sums += e
        squares += e * e
        new = sums / k
        if k > 1:
            var = np.maximum(squares - k * new * new, 0.0) / (k - 1)
            se = np.sqrt(var / k)
        if mean is not None and k >= min_probes:
            floor = 1e-3 * float(np.max(np.abs(mean)))
            scale = np.maximum(np.abs(mean), max(floor, 1e-30))
            done = np.abs(new - mean) <= tol * scale
            if rel_se is not None:
                done &= se <= rel_se * scale
            if np.all(done):
                mean = new
                break
        mean = new
    return (mean, k, se) if stderr else (mean, k)


def _batches(n: int, batch_size: int) -> list:
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


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
    """``fn(v, keep=None) -> H v`` of the calibration-mean loss from
    per-batch products of batch-mean losses (weighted by the batch share).
    ``sliced``: the blocks have a sample axis (activations) and each batch
    gets its rows of ``v``; else every batch gets all of ``v`` (weights).
    ``keep`` (an ``(L, N)`` boolean array), if given, goes to ``hvp_batch``
    (its batch columns), or with ``sliced`` keeps block ``i``'s rows
    ``keep[i]`` only."""
    import tensorflow as tf
    n = num_rows(x)
    slices = _batches(n, batch_size)

    def hvp(vs, keep=None):
        total = [np.zeros(v.shape) for v in vs]
        shared = None if sliced else [tf.constant(v) for v in vs]
        for sl in slices:
            part = [tf.constant(v[sl]) for v in vs] if sliced else shared
            masks = () if keep is None or sliced else (keep[:, sl],)
            hv = hvp_batch(index_rows(x, sl), targets[sl], part, *masks)
            w = (sl.stop - sl.start) / n
            for i, (t, h) in enumerate(zip(total, hv)):
                if h is not None and sliced and keep is not None:
                    rows = keep[i, sl]  # the others are dropped anyway
                    t[sl][rows] = np.asarray(h)[rows].astype(np.float64) * w
                elif h is not None:
                    (t[sl] if sliced else t)[...] += np.asarray(
                        h, np.float64) * w
        return total
    return hvp


PROBINGS = ("disjoint", "joint", "layer")


def _rotation(product, n_layers: int, n: int, *, rows: bool):
    """The sample -> layer rotation of sample-disjoint probes (weights and
    activations): ``fn(v) -> H v`` whose ``p``-th call runs one product
    ``product(v, keep) -> H v`` per group of layers, ``keep`` an ``(L, n)``
    boolean array with ``keep[i, k]`` where sample ``k`` probes layer ``i``
    (the ``(k + p) mod len(group)``-th of the group; one layer per sample
    and product), and keeps each group layer's block times the group's
    size (a sample probes a layer once in that many probes): ``L`` probes
    see every (sample, layer) pair once. With fewer samples than layers,
    the layers are split into groups. ``rows``: the blocks have a sample
    axis and layer ``i`` keeps its samples' rows only (activations); else
    its whole block (weights, already restricted by ``product``)."""
    rounds = -(-n_layers // n)
    groups = [np.arange(r, n_layers, rounds) for r in range(rounds)]
    probe = [0]

    def hvp(vs):
        p = probe[0]
        probe[0] += 1
        out = [np.zeros(v.shape) for v in vs]
        for group in groups:
            owner = group[(np.arange(n) + p) % len(group)]
            keep = np.stack([owner == i for i in range(n_layers)])
            hv = product(vs, keep)
            for i in group:
                if rows:
                    out[i][keep[i]] = hv[i][keep[i]] * len(group)
                else:
                    out[i] = hv[i] * len(group)
        return out
    return hvp


def _per_layer(hvp, n_layers: int):
    """``fn(v) -> H v`` probing one layer per product (``L`` products per
    probe): ``v_i . (H v)_i`` then holds ``H_ii`` only, over all samples."""
    def one_at_a_time(vs):
        out = []
        for i in range(n_layers):
            out.append(hvp([v if j == i else np.zeros_like(v)
                            for j, v in enumerate(vs)])[i])
        return out
    return one_at_a_time


def _kernel_hooks(layers, kernels, slot) -> list:
    """``(layer, wrap)`` pairs for :func:`override_calls`: while ``slot``
    holds ``(ts, masks, idx)``, layer ``i``'s output on the samples
    ``masks[i]`` is the one with kernel ``W_i + ts[i]``
    (``keras.StatelessScope``; a second pass on the samples ``idx[i]``
    only: the mask's, padded with others to a fixed length, one trace for
    every probe), elsewhere the one with ``W_i``; in an outer second pass
    an inner hook (SeparableConv2D: two kernels, two hooks on one layer)
    runs plain."""
    tf = _tf("")
    busy = []  # inside a second pass

    def hooked(i, f):
        def call(inputs, *args, **kwargs):
            plain = f(inputs, *args, **kwargs)
            if not slot or busy:
                return plain
            ts, masks, idx = slot[0]
            sub = keras.tree.map_structure(
                lambda a: tf.gather_nd(a, idx[i]), inputs)
            with keras.StatelessScope([(kernels[i], kernels[i].value
                                        + ts[i])]):
                busy.append(i)
                try:
                    moved = f(sub, *args, **kwargs)
                finally:
                    busy.pop()

            def pick(p, q):
                m = tf.reshape(masks[i], [-1] + [1] * (len(p.shape) - 1))
                return tf.where(m, tf.scatter_nd(
                    idx[i], q, tf.shape(p, out_type=idx[i].dtype)), p)
            return keras.tree.map_structure(pick, plain, moved)
        return call

    return [(layer, functools.partial(hooked, i))
            for i, layer in enumerate(layers)]


def _indices(keep, size: int) -> list:
    """Per row of the boolean ``keep`` (``L`` x batch), ``(size, 1)`` int32
    sample indices: the row's samples, then others (distinct)."""
    size = max(min(size, keep.shape[1]), int(keep.sum(axis=1).max()))
    return [np.concatenate([np.flatnonzero(row), np.flatnonzero(~row)])[
        :size, None].astype(np.int32) for row in keep]


def weight_traces(model, kernels, x, targets, fn, batch_size, *, tol,
                  max_probes, min_probes, seed, layers=None,
                  probing="disjoint", rel_se=None) -> tuple:
    """``(traces, probes, se)``: Hutchinson's ``Tr(H_i)`` of the
    calibration-mean loss for each kernel (a variable) in ``kernels``,
    with their standard errors. ``probing``: ``"disjoint"`` (default;
    needs ``layers``, the kernels' layers, per-sample layer assignment),
    ``"joint"`` (one probe over all kernels) or ``"layer"`` (one kernel
    per product); see the module docstring."""
    tf = _tf("")
    if probing not in PROBINGS:
        raise ValueError(f"probing must be one of {PROBINGS}. Received: "
                         f"probing={probing!r}")
    hutch = {"tol": tol, "max_probes": max_probes, "min_probes": min_probes,
             "seed": seed, "rel_se": rel_se, "stderr": True}
    shapes = [tuple(k.shape) for k in kernels]
    if probing != "disjoint" or layers is None:
        @tf.function(reduce_retracing=True, autograph=False)
        def hvp_batch(xb, yb, vs):
            with tf.GradientTape() as outer:
                with tf.GradientTape() as inner:
                    out = model(as_model_input(model, xb), training=False)
                    loss = tf.reduce_mean(fn(yb, out))
                # dense tensors: an Embedding's gradient is IndexedSlices
                grads = [None if g is None else tf.convert_to_tensor(g)
                         for g in inner.gradient(loss, kernels)]
                gv = tf.add_n([tf.reduce_sum(g * v) for g, v in
                               zip(grads, vs) if g is not None])
            return [None if h is None else tf.convert_to_tensor(h)
                    for h in outer.gradient(gv, kernels)]

        hvp = _full_hvp(hvp_batch, x, targets, batch_size, sliced=False)
        if probing == "layer":
            hvp = _per_layer(hvp, len(kernels))
        return hutchinson_trace(hvp, shapes, **hutch)

    slot = []  # (ts, masks, idx) of the batch being traced
    rounds = -(-len(kernels) // num_rows(x))  # size >= samples / layer, batch
    size = -(-min(batch_size, num_rows(x)) // (len(kernels) // rounds))

    @tf.function(reduce_retracing=True, autograph=False)
    def masked_batch(xb, yb, vs, masks, idx):
        ts = [tf.zeros(k.shape, k.dtype) for k in kernels]
        with tf.GradientTape() as outer:
            outer.watch(ts)
            with tf.GradientTape() as inner:
                inner.watch(ts)
                slot.append((ts, masks, idx))
                try:
                    out = model(as_model_input(model, xb), training=False)
                    loss = tf.reduce_mean(fn(yb, out))
                finally:
                    slot.clear()
            grads = [None if g is None else tf.convert_to_tensor(g)
                     for g in inner.gradient(loss, ts)]
            gv = tf.add_n([tf.reduce_sum(g * tf.cast(v, g.dtype))
                           for g, v in zip(grads, vs) if g is not None]
                          or [tf.zeros(())])
        return [None if h is None else tf.convert_to_tensor(h)
                for h in outer.gradient(gv, ts)]

    def product(xb, yb, vs, keep):
        return masked_batch(xb, yb, vs, [tf.constant(k) for k in keep],
                            [tf.constant(i) for i in _indices(keep, size)])

    hvp = _rotation(_full_hvp(product, x, targets, batch_size,
                              sliced=False), len(kernels), num_rows(x), rows=False)
    with override_calls(_kernel_hooks(layers, kernels, slot)):
        return hutchinson_trace(hvp, shapes, **hutch)


def _disjoint(hvp, n_layers: int, n: int, *, keeps: bool = False):
    """Sample-disjoint probes: ``fn(v) -> H v`` restricted so that, in one
    product, each sample's activations are probed at one layer only (the
    others' probe is zeroed there, and the layer's output is kept on its
    own samples, scaled by the group's layer count: a sample is probed at
    a layer once in that many probes, whatever the sample count of each
    probe, so every sample weighs the same). The per-sample loss
    depends on that sample's activations only, so ``v_i . (H v)_i`` then
    holds no cross-layer term ``v_i^T H_ij v_j``, whose noise would swamp
    a small trace next to a large one (adjacent layers' activations are
    strongly coupled); the estimate stays unbiased. The assignment rotates
    with the probe (:func:`_rotation`); ``keeps``: call ``hvp(v, keep)``."""
    return _rotation(
        lambda vs, keep: hvp([v * k.reshape(-1, *([1] * (v.ndim - 1)))
                              for v, k in zip(vs, keep)],
                             *((keep,) if keeps else ())),
        n_layers, n, rows=True)


def activation_traces(model, layers, shapes, x, targets, fn, batch_size, *,
                      tol, max_probes, min_probes, seed,
                      rel_se=None) -> tuple:
    """``(traces, probes, se)``: Hutchinson's ``Tr(H_i)`` of the calibration-
    mean loss with respect to each layer's input activations over all
    samples (``shapes``: one sample's input shape per layer), with
    sample-disjoint probes. Every layer's ``call`` is wrapped meanwhile and
    restored afterwards."""
    tf = _tf(", kind='activations'")
    slot = []  # the d_i of the batch being traced

    def hooked(i, f):
        def call(inputs, *args, **kwargs):
            if slot:
                inputs = inputs + tf.cast(slot[0][i], inputs.dtype)
            return f(inputs, *args, **kwargs)
        return call

    @tf.function(reduce_retracing=True, autograph=False)
    def hvp_batch(xb, yb, vs):
        ds = [tf.zeros_like(v) for v in vs]
        with tf.GradientTape() as outer:
            outer.watch(ds)
            with tf.GradientTape() as inner:
                inner.watch(ds)
                slot.append(ds)
                try:
                    out = model(as_model_input(model, xb), training=False)
                    loss = tf.reduce_mean(fn(yb, out))
                finally:
                    slot.clear()
            grads = inner.gradient(loss, ds)
            gv = tf.add_n([tf.reduce_sum(g * v) for g, v in zip(grads, vs)
                           if g is not None] or [tf.zeros(())])
        return outer.gradient(gv, ds)

    with override_calls([(layer, functools.partial(hooked, i))
                         for i, layer in enumerate(layers)]):
        hvp = _disjoint(_full_hvp(hvp_batch, x, targets, batch_size,
                                  sliced=True), len(layers), num_rows(x),
                        keeps=True)
        return hutchinson_trace(
            hvp, [(num_rows(x), *s) for s in shapes], tol=tol,
            max_probes=max_probes, min_probes=min_probes, seed=seed,
            rel_se=rel_se, stderr=True)


# ------------------------------------------------------------- the table


def hessian_table(model, names, x, y, float_out, noise, sizes, traces_of,
                  loss, meta, *, tol, seed, rel_se=None, operand="weights"):
    """``Omega = max(Tr, 0) / n * noise`` per layer and width; fills
    ``meta`` (traces and their standard errors, probes, loss, labels).
    ``traces_of(targets, fn) -> (traces, probes, se)``; ``sizes``: ``n``
    per layer (weights, or activation elements over all samples)."""
    out2d = float_out.reshape(len(float_out), -1) if float_out.ndim > 2 \
        else float_out
    if len(model.outputs) != 1:
        raise NotImplementedError(
            f"sensitivity(method='hessian') supports single-output models; "
            f"model {model.name!r} has {len(model.outputs)} outputs. Use "
            "method='distortion'.")
    fn, kind = _loss_fn(model, loss, _probabilities(out2d),
                        int(float_out.shape[-1]), y)
    targets = _targets(kind, y, float_out)
    _check_loss(fn, targets, float_out, model.name)
    traces, probes, se = traces_of(targets, fn)
    negative = [n for n, t in zip(names, traces) if t < 0]
    if negative:
        warnings.warn(
            f"sensitivity: negative Hessian trace estimates ({operand}) for "
            f"layers {negative[:5]} (the model is not at a minimum of the "
            "loss, or too few probes); their sensitivity counts as 0.",
            stacklevel=3)
    meta.update(trace={n: float(t) for n, t in zip(names, traces)},
                trace_se={n: float(e) for n, e in zip(names, se)},
                probes=int(probes), tol=tol, seed=seed, rel_se=rel_se,
                unconverged=[n for n, t, e in zip(names, traces, se)
                             if rel_se is not None
                             and not e <= rel_se * abs(t)],
                loss=str(getattr(fn, "name", None) or getattr(
                    fn, "__name__", type(fn).__name__)),
                labels="given" if y is not None else "model predictions")
    n = np.maximum(np.asarray(sizes, np.float64), 1.0)[:, None]
    return np.maximum(traces, 0.0)[:, None] / n * noise
