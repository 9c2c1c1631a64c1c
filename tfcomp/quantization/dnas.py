"""DNAS mixed-precision search (Wu et al., arXiv:1812.00090).

1. ``build_supernet(model, candidates)``: every conv / dense layer (except the
   first and last, kept at 8/8 as in HAQ) becomes a mixed layer whose
   candidate ``(w_bits, a_bits)`` ops share one float kernel and are mixed by
   Gumbel-softmax weights ``m ~ GS(theta_layer, tau)``. Per-candidate costs
   come from ``tfcomp.profile`` (``"size"``: params * w_bits; ``"bops"``:
   MACs * w_bits * a_bits) or from a callable (e.g. a hardware model).
2. ``DNASLoss``: ``CE * beta * (log E[cost])^gamma`` with the expected cost
   ``E[cost] = sum_l sum_i softmax(theta_l)_i cost_l,i`` (plus the fixed
   layers' cost).
3. ``search``: per epoch, train the weights on 80% of the training data and
   theta on the other 20% (alternating), annealing ``tau`` with
   ``TemperatureAnnealing``.
4. ``derive``: the per-layer bits (argmax of theta, or sampled from
   ``P_theta``), optionally lowered greedily until a cost budget is met,
   ready for ``quantize_model(model, bits=...)``.
5. ``select_best``: the paper's last step -- train a few derived / sampled
   architectures briefly (quantization-aware) and keep the one with the
   best held-out accuracy.

Details the paper leaves open (no official code; unverified): the expected
cost uses ``softmax(theta)`` (the exact expectation under ``P_theta``)
rather than the Gumbel sample; ``tau`` starts at 5 and decays by 0.956 per
epoch and theta is trained with Adam(0.01) (FBNet's settings, the same
authors); defaults ``beta=0.2``, ``gamma=0.6`` (FBNet's alpha / beta).
``beta`` multiplies the whole loss, so with an adaptive optimizer (Adam) it
only rescales gradients and the accuracy/cost trade-off is set by ``gamma``;
with SGD a larger ``beta`` moves theta faster towards cheaper candidates.

Reference: Wu et al., Mixed Precision Quantization of ConvNets via
Differentiable Neural Architecture Search, arXiv:1812.00090.

Example:
    >>> sn = dnas.build_supernet(float_model, cost="bops")
    >>> dnas.search(sn, x_train, y_train, epochs=4)
    >>> bits = dnas.derive(sn, budget=target_bops)
    >>> qat = quantize_model(float_model, bits=bits)
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import keras
import numpy as np
from keras import ops

from tfcomp.quantization import quantizers as qz
from tfcomp.quantization.gumbel import gumbel_softmax
from tfcomp.quantization.quantize import _analyse, _cls, _rebuild

__all__ = ["build_supernet", "DNASLoss", "TemperatureAnnealing", "search",
           "derive", "sample_architectures", "expected_cost",
           "expected_bits", "architecture_cost", "mixed_layers",
           "select_best",
           "gumbel_softmax", "DEFAULT_CANDIDATES", "DNASInfo"]

DEFAULT_CANDIDATES = tuple(itertools.product((2, 4, 8), (4, 8)))


@dataclasses.dataclass
class DNASInfo:
    """Search-side facts attached to a supernet as ``supernet.dnas_info``.

    Attributes:
        cost: "size", "bops" or "custom".
        fixed_cost: cost of the layers not searched (first / last / float).
        fixed_bits: ``{layer: (w_bits, a_bits)}`` of the fixed layers.
        searched: names of the mixed layers, in order.
        report: the ``QuantizationReport`` of the build.
    """

    cost: str
    fixed_cost: float
    fixed_bits: dict
    searched: list
    report: object = None


def mixed_layers(model) -> list:
    """The DNAS mixed layers of a model, in order.

    Example:
        >>> [l.name for l in mixed_layers(sn)][:2]
    """
    return [layer for layer in model.layers
            if _cls(layer).startswith("MixedQuant")]


def _cost_fn(model, cost):
    """``(fn(layer_name, w, a) -> float, kind)`` from a cost spec."""
    if callable(cost):
        return cost, "custom"
    if cost not in ("size", "bops"):
        raise ValueError(
            "cost must be 'size', 'bops' or a callable (layer_name, w_bits, "
            f"a_bits) -> float. Received: cost={cost!r}")
    from tfcomp.cost import profile

    prof = profile(model)
    records = {r.name: r for r in prof.layers}

    def fn(name, w, a):
        r = records[name]
        if cost == "size":
            return float(r.params) * w
        return float(r.macs) * w * a

    return fn, cost


def build_supernet(model: keras.Model, candidates=DEFAULT_CANDIDATES,
                   cost="bops", fold_batchnorm: bool = True, skip=(), *,
                   first_last_bits: int | None = 8, temperature: float = 5.0,
                   weight_quantizer="symmetric", input_quantizer=None,
                   seed: int = 0) -> keras.Model:
    """Clones a float model into a DNAS supernet of mixed-precision layers.

    Args:
        model: a built functional / Sequential float model (not modified).
        candidates: ``(w_bits, a_bits)`` pairs offered to every searched
            layer (default: w in {2, 4, 8} x a in {4, 8}).
        cost: "bops" (MACs * w * a), "size" (params * w) or a callable
            ``(layer_name, w_bits, a_bits) -> float`` such as a hardware
            model's latency.
        fold_batchnorm: fold BN into the preceding conv (as quantize_model).
        skip: layers to leave float.
        first_last_bits: bits of the first / last layer, which are not
            searched (HAQ's convention); None searches them too.
        temperature: initial Gumbel-softmax temperature.
        weight_quantizer: base weight quantizer.
        input_quantizer: base activation quantizer template.
        seed: seed of the Gumbel noise (layer ``i`` uses ``seed + i``).

    Returns:
        The supernet (a ``keras.Model``) with ``dnas_info`` (``DNASInfo``).

    Reference: Wu et al., arXiv:1812.00090.

    Example:
        >>> sn = build_supernet(tfcomp.zoo.resnet(depth=20), cost="bops")
    """
    from tfcomp import layers as ql

    cands = [(qz.check_bits(w, "w_bits"), qz.check_bits(a, "a_bits"))
             for w, a in candidates]
    analysis = _analyse(model, fold_batchnorm, skip, "build_supernet")
    fn, kind = _cost_fn(model, cost)
    names = [n.name for n in analysis.graph.nodes if n.name in analysis.plans]
    fixed = {}
    if first_last_bits is not None and names:
        fl = qz.check_bits(first_last_bits, "first_last_bits")
        fixed = {names[0]: (fl, fl), names[-1]: (fl, fl)}
    searched = [n for n in names if n not in fixed]
    report = analysis.report
    for name in names:
        report.quantized[name] = fixed.get(name, max(cands))
    fixed_cost = sum(fn(n, w, a) for n, (w, a) in fixed.items())
    for name in report.skipped:
        try:
            fixed_cost += fn(name, qz.FLOAT_BITS, qz.FLOAT_BITS)
        except KeyError:
            pass
    wq = qz.serialize(qz.get(weight_quantizer or "symmetric"))
    iq_template = qz.get(input_quantizer or "unsigned")
    quant_cls = {"Conv2D": ql.QuantConv2D,
                 "DepthwiseConv2D": ql.QuantDepthwiseConv2D,
                 "Dense": ql.QuantDense}
    mixed_cls = {"Conv2D": ql.MixedQuantConv2D,
                 "DepthwiseConv2D": ql.MixedQuantDepthwiseConv2D,
                 "Dense": ql.MixedQuantDense}
    costs = {}

    def make_layer(plan, cfg, signed):
        name = plan.node.name
        iq = iq_template.copy()
        iq.signed = signed
        cls = _cls(plan.node.layer)
        if name in fixed:
            w, a = fixed[name]
            cfg.update(w_bits=w, a_bits=a, weight_quantizer=wq,
                       input_quantizer=qz.serialize(iq))
            return quant_cls[cls].from_config(cfg)
        cfg.update(candidates=[list(c) for c in cands], weight_quantizer=wq,
                   input_quantizer=qz.serialize(iq), temperature=temperature,
                   seed=int(seed) + searched.index(name))
        costs[name] = [fn(name, w, a) for w, a in cands]
        return mixed_cls[cls].from_config(cfg)

    supernet = _rebuild(analysis, make_layer, observers=True,
                        observer_quantizer=iq_template.copy())
    for layer in mixed_layers(supernet):
        layer.set_costs(costs[layer.name])
    supernet.dnas_info = DNASInfo(cost=kind, fixed_cost=float(fixed_cost),
                                  fixed_bits=dict(fixed), searched=searched,
                                  report=report)
    return supernet


def _info(supernet) -> DNASInfo:
    info = getattr(supernet, "dnas_info", None)
    if info is None or not mixed_layers(supernet):
        raise ValueError(
            f"Model {getattr(supernet, 'name', supernet)!r} is not a DNAS "
            "supernet (build it with tfcomp.quantization.dnas."
            "build_supernet).")
    return info


def expected_cost(supernet):
    """Differentiable ``E[cost]`` of the supernet under ``P_theta``.

    Example:
        >>> float(expected_cost(sn))
    """
    info = _info(supernet)
    total = ops.convert_to_tensor(info.fixed_cost, "float32")
    for layer in mixed_layers(supernet):
        total = total + layer.expected_cost()
    return total


def expected_bits(supernet) -> dict:
    """Mean expected weight / activation bits over the searched layers.

    Returns:
        ``{"w_bits": float, "a_bits": float, "layers": {name: (E[w], E[a])}}``.

    Example:
        >>> expected_bits(sn)["w_bits"]
    """
    per = {}
    for layer in mixed_layers(supernet):
        p = keras.ops.convert_to_numpy(layer.probabilities())
        w = np.array([c[0] for c in layer.candidates], np.float64)
        a = np.array([c[1] for c in layer.candidates], np.float64)
        per[layer.name] = (float(p @ w), float(p @ a))
    if not per:
        return {"w_bits": float("nan"), "a_bits": float("nan"), "layers": {}}
    return {"w_bits": float(np.mean([v[0] for v in per.values()])),
            "a_bits": float(np.mean([v[1] for v in per.values()])),
            "layers": per}


class DNASLoss(keras.losses.Loss):
    """``CE * beta * (log E[cost])^gamma`` for a DNAS supernet.

    Args:
        supernet: the model from ``build_supernet``.
        beta: multiplier of the cost factor.
        gamma: exponent of the cost factor (the accuracy / cost trade-off).
        from_logits: whether the model outputs logits.
        name: loss name.

    Reference: Wu et al., arXiv:1812.00090, eq. for ``C(Cost(a))``.

    Example:
        >>> sn.compile("adam", loss=DNASLoss(sn, beta=0.2, gamma=0.6))
    """

    def __init__(self, supernet, beta: float = 0.2, gamma: float = 0.6,
                 from_logits: bool = True, name: str = "dnas_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        _info(supernet)
        if not float(beta) > 0:
            raise ValueError(f"beta must be > 0. Received: beta={beta}")
        if not float(gamma) >= 0:
            raise ValueError(f"gamma must be >= 0. Received: gamma={gamma}")
        self.supernet = supernet
        self.beta = float(beta)
        self.gamma = float(gamma)
        self.from_logits = bool(from_logits)

    def cost_factor(self):
        c = ops.maximum(expected_cost(self.supernet), math.e)
        return self.beta * ops.power(ops.log(c), self.gamma)

    def call(self, y_true, y_pred):
        ce = keras.losses.sparse_categorical_crossentropy(
            y_true, y_pred, from_logits=self.from_logits)
        return ce * self.cost_factor()

    def get_config(self):
        return {"name": self.name, "beta": self.beta, "gamma": self.gamma,
                "from_logits": self.from_logits}


class TemperatureAnnealing(keras.callbacks.Callback):
    """Sets ``tau = max(initial * decay^epoch, minimum)`` on every mixed layer
    at the start of each epoch.

    Args:
        initial: temperature at epoch 0 (FBNet: 5.0).
        decay: per-epoch factor (FBNet: 0.956).
        minimum: floor.

    Example:
        >>> sn.fit(x, y, callbacks=[TemperatureAnnealing(5.0, 0.956)])
    """

    def __init__(self, initial: float = 5.0, decay: float = 0.956,
                 minimum: float = 0.05):
        super().__init__()
        if not float(initial) > 0:
            raise ValueError(f"initial must be > 0. Received: initial="
                             f"{initial}")
        if not 0 < float(decay) <= 1:
            raise ValueError(f"decay must be in (0, 1]. Received: decay="
                             f"{decay}")
        self.initial = float(initial)
        self.decay = float(decay)
        self.minimum = float(minimum)
        self.history = []

    def set_model(self, model):
        super().set_model(model)
        if not mixed_layers(model):
            raise ValueError(
                f"TemperatureAnnealing needs a DNAS supernet; model "
                f"{model.name!r} has no mixed layers.")

    def temperature(self, epoch: int) -> float:
        return max(self.initial * self.decay ** int(epoch), self.minimum)

    def on_epoch_begin(self, epoch, logs=None):
        tau = self.temperature(epoch)
        for layer in mixed_layers(self.model):
            layer.temperature.assign(tau)
        self.history.append((int(epoch), tau))

    def get_config(self):
        return {"initial": self.initial, "decay": self.decay,
                "minimum": self.minimum}


def _set_phase(supernet, theta_phase: bool, weight_vars: list) -> None:
    for layer in mixed_layers(supernet):
        layer.theta.trainable = theta_phase
    for v in weight_vars:
        v.trainable = not theta_phase


def search(supernet: keras.Model, x, y, epochs: int = 4,
           batch_size: int = 64, beta: float = 0.2, gamma: float = 0.6,
           weight_optimizer=None, theta_optimizer=None,
           weight_fraction: float = 0.8, annealing=None, seed: int = 0,
           verbose: int = 1) -> dict:
    """Alternating DNAS search: weights on 80% of the data, theta on 20%.

    Each epoch runs one pass of weight updates (theta frozen) on the weight
    split, then one pass of theta updates (weights frozen) on the theta
    split, both with ``DNASLoss``. The temperature follows ``annealing``.

    Args:
        supernet: from ``build_supernet``.
        x, y: training inputs and integer labels (arrays).
        epochs: search epochs.
        batch_size: batch size of both phases.
        beta, gamma: ``DNASLoss`` coefficients.
        weight_optimizer: optimizer of the weights (default Adam(1e-3)).
        theta_optimizer: optimizer of theta (default Adam(0.01), FBNet).
        weight_fraction: share of the data for weight updates (paper: 0.8).
        annealing: a ``TemperatureAnnealing`` (default 5.0 * 0.956^epoch).
        seed: seed of the data split.
        verbose: Keras verbosity of the two ``fit`` calls per epoch.

    Returns:
        ``{"epochs": [{"epoch", "temperature", "weight_loss",
        "theta_loss", "expected_cost", "expected_w_bits",
        "expected_a_bits"}]}``.

    Reference: Wu et al., arXiv:1812.00090.

    Example:
        >>> hist = search(sn, x_train, y_train, epochs=4)
    """
    _info(supernet)
    if not 0 < float(weight_fraction) < 1:
        raise ValueError(
            "weight_fraction must be in (0, 1). Received: "
            f"weight_fraction={weight_fraction}")
    if int(epochs) < 1:
        raise ValueError(f"epochs must be >= 1. Received: epochs={epochs}")
    x = np.asarray(x)
    y = np.asarray(y)
    if len(x) != len(y):
        raise ValueError(
            f"x and y lengths differ: {len(x)} != {len(y)}")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(x))
    cut = int(round(len(x) * float(weight_fraction)))
    if cut < 1 or cut >= len(x):
        raise ValueError(
            f"Too few samples ({len(x)}) to split {weight_fraction:.0%} / "
            f"{1 - weight_fraction:.0%}.")
    xw, yw = x[perm[:cut]], y[perm[:cut]]
    xt, yt = x[perm[cut:]], y[perm[cut:]]
    opt_w = weight_optimizer or keras.optimizers.Adam(1e-3)
    opt_t = theta_optimizer or keras.optimizers.Adam(0.01)
    annealing = annealing or TemperatureAnnealing()
    theta_ids = {id(layer.theta) for layer in mixed_layers(supernet)}
    weight_vars = [v for v in supernet.trainable_variables
                   if id(v) not in theta_ids]
    loss = DNASLoss(supernet, beta=beta, gamma=gamma)
    history = []
    try:
        for epoch in range(int(epochs)):
            _set_phase(supernet, False, weight_vars)
            supernet.compile(optimizer=opt_w, loss=loss, jit_compile=False)
            hw = supernet.fit(xw, yw, batch_size=batch_size,
                              epochs=epoch + 1, initial_epoch=epoch,
                              callbacks=[annealing], verbose=verbose)
            _set_phase(supernet, True, weight_vars)
            supernet.compile(optimizer=opt_t, loss=loss, jit_compile=False)
            ht = supernet.fit(xt, yt, batch_size=batch_size,
                              epochs=epoch + 1, initial_epoch=epoch,
                              verbose=verbose)
            eb = expected_bits(supernet)
            history.append({
                "epoch": epoch,
                "temperature": annealing.temperature(epoch),
                "weight_loss": float(hw.history["loss"][-1]),
                "theta_loss": float(ht.history["loss"][-1]),
                "expected_cost": float(keras.ops.convert_to_numpy(
                    expected_cost(supernet))),
                "expected_w_bits": eb["w_bits"],
                "expected_a_bits": eb["a_bits"],
            })
    finally:
        for v in weight_vars:
            v.trainable = True
        for layer in mixed_layers(supernet):
            layer.theta.trainable = True
    return {"epochs": history}


def architecture_cost(supernet, bits: dict) -> float:
    """Cost of an assignment ``{layer: (w_bits, a_bits)}`` under the
    supernet's cost model (fixed layers included).

    Example:
        >>> architecture_cost(sn, derive(sn))
    """
    info = _info(supernet)
    total = float(info.fixed_cost)
    for layer in mixed_layers(supernet):
        pair = tuple(bits[layer.name])
        if pair not in layer.candidates:
            raise ValueError(
                f"{pair} is not a candidate of layer {layer.name!r}: "
                f"{layer.candidates}")
        costs = keras.ops.convert_to_numpy(layer.costs)
        total += float(costs[layer.candidates.index(pair)])
    return total


def derive(supernet, mode: str = "argmax", seed: int = 0,
           budget: float | None = None) -> dict:
    """Per-layer bits from the learned theta, ready for ``quantize_model``.

    Args:
        supernet: a searched supernet.
        mode: "argmax" (most likely candidate per layer) or "sample" (one
            draw from ``P_theta``).
        seed: seed for ``mode="sample"``.
        budget: optional cost ceiling (same unit as the supernet's cost);
            while above it, the layer change that loses the least
            log-probability per unit of cost saved is applied.

    Returns:
        ``{layer_name: (w_bits, a_bits)}`` for every quantized layer
        (searched and fixed).

    Raises:
        ValueError: unknown mode, or a budget below the cheapest
            architecture.

    Example:
        >>> bits = derive(sn, budget=uniform4_bops)
        >>> qat = quantize_model(float_model, bits=bits)
    """
    info = _info(supernet)
    if mode not in ("argmax", "sample"):
        raise ValueError(
            f"mode must be 'argmax' or 'sample'. Received: mode={mode!r}")
    rng = np.random.default_rng(seed)
    layers = mixed_layers(supernet)
    choice, logp, costs = {}, {}, {}
    for layer in layers:
        theta = keras.ops.convert_to_numpy(layer.theta).astype(np.float64)
        lp = theta - theta.max()
        lp = lp - np.log(np.exp(lp).sum())
        logp[layer.name] = lp
        costs[layer.name] = keras.ops.convert_to_numpy(layer.costs)
        if mode == "argmax":
            choice[layer.name] = int(np.argmax(theta))
        else:
            choice[layer.name] = int(rng.choice(len(lp), p=np.exp(lp)))
    if budget is not None:
        def total():
            return info.fixed_cost + sum(
                float(costs[n][i]) for n, i in choice.items())

        while total() > float(budget) * (1 + 1e-9):
            best = None
            for name, i in choice.items():
                for j in range(len(costs[name])):
                    saved = costs[name][i] - costs[name][j]
                    if saved <= 0:
                        continue
                    loss = (logp[name][i] - logp[name][j]) / saved
                    if best is None or loss < best[0]:
                        best = (loss, name, j)
            if best is None:
                raise ValueError(
                    f"budget={budget:.4g} is below the cheapest architecture "
                    f"of the supernet ({total():.4g}).")
            choice[best[1]] = best[2]
    out = dict(info.fixed_bits)
    for layer in layers:
        out[layer.name] = tuple(layer.candidates[choice[layer.name]])
    order = list(info.report.quantized) if info.report else list(out)
    return {name: out[name] for name in order if name in out}


def sample_architectures(supernet, n: int, seed: int = 0) -> list:
    """``n`` architectures drawn from ``P_theta`` (the paper trains a few and
    keeps the best).

    Example:
        >>> archs = sample_architectures(sn, 5)
    """
    rng = np.random.default_rng(seed)
    return [derive(supernet, mode="sample",
                   seed=int(rng.integers(0, 2 ** 31 - 1)))
            for _ in range(int(n))]


def select_best(model: keras.Model, architectures, x, y, validation_data,
                epochs: int = 1, batch_size: int = 64,
                learning_rate: float = 5e-4, from_logits: bool = True,
                seed: int = 0, verbose: int = 0):
    """Trains each architecture briefly and keeps the most accurate one.

    DNAS samples a few architectures from ``P_theta``, trains them and keeps
    the best; this does that with a short quantization-aware fine-tune of
    the float ``model`` per architecture (``quantize_model`` + Adam), scored
    by top-1 accuracy on ``validation_data`` (use held-out *training*
    images, not the test set). Duplicate architectures are trained once.

    Args:
        model: the float model the supernet was built from.
        architectures: ``{layer: (w_bits, a_bits)}`` dicts (``derive`` /
            ``sample_architectures``).
        x, y: training arrays of the short fine-tune.
        validation_data: ``(x_val, y_val)`` arrays.
        epochs: fine-tune epochs per architecture (paper: full training;
            one epoch at CPU scale).
        batch_size, learning_rate: of the fine-tune.
        from_logits: whether the model outputs logits.
        seed: every architecture is trained from the same seed.
        verbose: Keras verbosity of ``fit``.

    Returns:
        ``(best_bits, scores)``: the winning architecture and a list of
        ``{"bits", "val_accuracy"}`` in input order.

    Reference: Wu et al., arXiv:1812.00090 (sample, train, keep the best).

    Example:
        >>> archs = [derive(sn, budget=b)] + [
        ...     derive(sn, "sample", seed=s, budget=b) for s in range(4)]
        >>> bits, scores = select_best(float_model, archs, x, y, (xv, yv))
    """
    from tfcomp.quantization.quantize import quantize_model

    archs = [dict(a) for a in architectures]
    if not archs:
        raise ValueError("architectures must be a non-empty list of "
                         "{layer: (w_bits, a_bits)} dicts. Received: "
                         f"{architectures!r}")
    if int(epochs) < 1:
        raise ValueError(f"epochs must be >= 1. Received: epochs={epochs}")
    xv, yv = (np.asarray(v) for v in validation_data)
    seen, scores = {}, []
    for bits in archs:
        key = tuple(sorted((k, tuple(v)) for k, v in bits.items()))
        if key not in seen:
            keras.utils.set_random_seed(int(seed))
            q = quantize_model(model, bits=bits)
            q.compile(optimizer=keras.optimizers.Adam(float(learning_rate)),
                      loss=keras.losses.SparseCategoricalCrossentropy(
                          from_logits=from_logits), jit_compile=False)
            q.fit(np.asarray(x), np.asarray(y), batch_size=int(batch_size),
                  epochs=int(epochs), shuffle=True, verbose=verbose)
            correct = 0
            for a in range(0, len(xv), 500):
                out = keras.ops.convert_to_numpy(q(xv[a:a + 500],
                                                   training=False))
                correct += int((out.argmax(-1) == yv[a:a + 500]).sum())
            seen[key] = correct / max(1, len(xv))
        scores.append({"bits": bits, "val_accuracy": seen[key]})
    best = max(range(len(scores)), key=lambda i: scores[i]["val_accuracy"])
    return archs[best], scores
