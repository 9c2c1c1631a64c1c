"""The DNAS supernet: building it, its expected cost and bits, and deriving
per-layer bits from its learned architecture logits (see
:mod:`tfcomp.quantization.dnas`).

Reference: Wu et al., arXiv:1812.00090.

Example:
    >>> from tfcomp.quantization.dnas_supernet import build_supernet, derive
    >>> sn = build_supernet(float_model, cost="bops")
    >>> bits = derive(sn)
"""

from __future__ import annotations

import dataclasses
import itertools

import keras
import numpy as np
from keras import ops

from tfcomp.layers import (
    MIXED_LAYERS,
    MixedQuantConv1D,
    MixedQuantConv2D,
    MixedQuantDense,
    MixedQuantDepthwiseConv2D,
    QuantConv1D,
    QuantConv2D,
    QuantDense,
    QuantDepthwiseConv2D,
)
from tfcomp.layers import quantizers as qz
from tfcomp.quantization._analysis import analyse
from tfcomp.quantization._rebuild import rebuild
from tfcomp.quantization.costs import RESOURCES, BitCosts
from tfcomp.quantization.report import attach_record

__all__ = ["build_supernet", "derive", "sample_architectures",
           "expected_cost", "expected_bits", "architecture_cost",
           "mixed_layers", "native_candidates", "DEFAULT_CANDIDATES",
           "DNASInfo"]

DEFAULT_CANDIDATES = tuple(itertools.product((2, 4, 8), (4, 8)))
_QUANT_CLS = {keras.layers.Conv2D: QuantConv2D,
              keras.layers.DepthwiseConv2D: QuantDepthwiseConv2D,
              keras.layers.Dense: QuantDense,
              keras.layers.Conv1D: QuantConv1D}
_MIXED_CLS = {keras.layers.Conv2D: MixedQuantConv2D,
              keras.layers.DepthwiseConv2D: MixedQuantDepthwiseConv2D,
              keras.layers.Dense: MixedQuantDense,
              keras.layers.Conv1D: MixedQuantConv1D}
#: The Keras layer types a supernet searches (exact class names).
DNAS_KINDS = tuple(cls.__name__ for cls in _MIXED_CLS)


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
            if isinstance(layer, MIXED_LAYERS)]


def _cost_fn(model, cost):
    """``(fn(layer_name, w, a) -> float, kind)`` from a cost spec."""
    if callable(cost):
        return cost, "custom"
    if cost not in RESOURCES:
        raise ValueError(
            "cost must be 'size', 'bops' or a callable (layer_name, w_bits, "
            f"a_bits) -> float. Received: cost={cost!r}")
    return BitCosts(model).cost_fn(cost), cost


def native_candidates(candidates, hardware, bits="native") -> list:
    """``candidates`` on a hardware's native widths.

    With ``bits="native"`` every width is snapped up to the smallest of
    ``hardware.distinct_bits()`` that is >= it (a width in between costs
    what that one costs there, e.g. 5 -> 8 on Bit Fusion) and duplicates
    are dropped; ``bits="all"`` (or ``hardware=None``) keeps them as given.

    Example:
        >>> native_candidates([(3, 4), (5, 8)], BitFusion())
        [(4, 4), (8, 8)]
    """
    if bits not in ("native", "all"):
        raise ValueError(f"bits must be 'native' or 'all'. Received: "
                         f"bits={bits!r}")
    cands = [(int(w), int(a)) for w, a in candidates]
    if hardware is None or bits == "all":
        return cands
    if not callable(getattr(hardware, "distinct_bits", None)):
        raise TypeError("hardware must be None or a hardware model with "
                        "distinct_bits() (BISMO(), BitFusion(), a "
                        f"LatencyTable). Received: hardware={hardware!r}")
    widths = sorted(int(b) for b in hardware.distinct_bits())

    def snap(b):
        up = [v for v in widths if v >= b]
        if not up:
            name = getattr(hardware, "name", hardware)
            raise ValueError(
                f"candidate width {b} is above the widths {widths} that "
                f"hardware={name!r} runs. Received: candidates="
                f"{candidates!r}")
        return up[0]

    out = []
    for w, a in cands:
        pair = (snap(w), snap(a))
        if pair not in out:
            out.append(pair)
    return out


def build_supernet(model: keras.Model, candidates=None,
                   cost="bops", fold_batchnorm: bool = True, skip=(), *,
                   first_last_bits: int | None = 8, temperature: float = 5.0,
                   weight_quantizer="symmetric", input_quantizer=None,
                   seed: int = 0, hardware=None,
                   bits: str = "native") -> keras.Model:
    """Clones a float model into a DNAS supernet of mixed-precision layers.

    Args:
        model: a built functional / Sequential float model (not modified).
        candidates: ``(w_bits, a_bits)`` pairs offered to every searched
            layer (None: ``DEFAULT_CANDIDATES``, w in {2, 4, 8} x a in
            {4, 8}); with ``hardware`` and ``bits="native"`` they are
            snapped up to the hardware's native widths
            (:func:`native_candidates`).
        cost: "bops" (MACs * w * a), "size" (params * w / 8 bytes, as
            ``tfcomp.profile``) or a callable ``(layer_name, w_bits,
            a_bits) -> float`` such as a hardware model's latency.
        fold_batchnorm: fold BN into the preceding conv (as quantize_model).
        skip: layers to leave float.
        first_last_bits: bits of the first / last layer, which are not
            searched (HAQ's convention); None searches them too.
        temperature: initial Gumbel-softmax temperature.
        weight_quantizer: base weight quantizer.
        input_quantizer: base activation quantizer template.
        seed: seed of the Gumbel noise (layer ``i`` uses ``seed + i``).
        hardware: None or a hardware model (``BISMO()``, ``BitFusion()``, a
            ``LatencyTable``) whose ``distinct_bits()`` limit the searched
            widths (a 5-bit candidate on Bit Fusion costs 8-bit's, so it
            becomes 8). Its costs are not used: pass ``cost=`` e.g.
            ``CostTable(model, "latency", hardware).cost``.
        bits: ``"native"`` (default; only with ``hardware``) or ``"all"``
            (every candidate as given, the paper).

    Returns:
        The supernet (a ``keras.Model``) with ``dnas_info`` (``DNASInfo``).

    Reference: Wu et al., arXiv:1812.00090.

    Example:
        >>> sn = build_supernet(tfcomp.zoo.resnet(depth=20), cost="bops")
    """
    cands = [(qz.check_bits(w, "w_bits"), qz.check_bits(a, "a_bits"))
             for w, a in (DEFAULT_CANDIDATES if candidates is None
                          else candidates)]
    cands = native_candidates(cands, hardware, bits)
    analysis = analyse(model, fold_batchnorm, skip, "build_supernet",
                       DNAS_KINDS)
    fn, kind = _cost_fn(model, cost)
    names = analysis.quantized_names()
    fixed = {}
    if first_last_bits is not None and names:
        fl = qz.check_bits(first_last_bits, "first_last_bits")
        fixed = {names[0]: (fl, fl), names[-1]: (fl, fl)}
    searched = [n for n in names if n not in fixed]
    if not searched:
        raise ValueError(
            f"build_supernet: model {model.name!r} has no layer to search: "
            f"a supernet searches {', '.join(DNAS_KINDS)} layers "
            f"(found {names or 'none'}"
            f"{'; the first and last keep first_last_bits' if fixed else ''}"
            f"); kept float: {dict(analysis.report.skipped) or 'nothing'}")
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
    costs = {}

    def make_layer(plan, cfg, signed):
        name = plan.name
        iq = iq_template.copy()
        iq.signed = signed
        cls = type(plan.layer)
        if name in fixed:
            w, a = fixed[name]
            cfg.update(w_bits=w, a_bits=a, weight_quantizer=wq,
                       input_quantizer=qz.serialize(iq))
            return _QUANT_CLS[cls].from_config(cfg)
        cfg.update(candidates=[list(c) for c in cands], weight_quantizer=wq,
                   input_quantizer=qz.serialize(iq), temperature=temperature,
                   seed=int(seed) + searched.index(name))
        costs[name] = [fn(name, w, a) for w, a in cands]
        return _MIXED_CLS[cls].from_config(cfg)

    supernet = rebuild(analysis, make_layer, observers=True,
                       observer_quantizer=iq_template.copy())
    for layer in mixed_layers(supernet):
        layer.set_costs(costs[layer.name])
    attach_record(supernet, report)
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
