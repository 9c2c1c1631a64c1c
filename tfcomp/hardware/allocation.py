"""Exact mixed-precision bit allocation: minimise summed sensitivity under a
hardware budget with an integer program (HAWQ-V3 / MCT style).

One binary ``x[layer, choice]`` per quantizable layer and candidate
``(w_bits, a_bits)``; one choice per layer; ``sum cost * x <= budget``;
tied layers take equal choices (``x[i, k] == x[j, k]``); objective ``sum
sensitivity * x``. Solved exactly by ``scipy.optimize.milp`` (HiGHS).

Costs come from the one cost model, priced as HAQ prices a policy: size
and BOPs from the ``tfcomp.cost`` formulas, latency and energy from the
``HardwareModel`` / ``LatencyTable``'s ``layer_cost``
(:func:`tfcomp.hardware.layer_resource`). A budget is a fraction of the
cost with every quantizable layer at 8/8 bits; for latency and energy the
model's other costed layers (adds, pooling) count at 8/8 and a table's
``overhead_s`` is added, as in ``HAQSpace``.

Precision axis (LiteRT files, :mod:`tfcomp.hardware.precision`): with
``candidates=("float32", "float16", "int8", "int4w")`` (any of them) each
layer chooses a precision of a per-layer LiteRT file instead of a bit
pair; the result maps layers to precision names (``export_tflite(model,
path, quantization=dict(allocation))`` writes that file). Costs are priced
at each precision's ``PRECISION_BITS`` pair (int4w = (4, 32): size 4 bits
a weight; latency from a table measured with ``measure_tflite_table(...,
precisions=...)``), budgets are fractions of the all-int8 cost, "first /
last 8-bit" keeps them int8, the sensitivity of int8 / int4w is the
table's at 8 / 4 bits and float32 / float16 count 0 (float16 rounding,
2^-11 relative, is far below int8's unless measured at 16 bits), and
depthwise layers cannot take int4w (ai-edge-quantizer has no int4
depthwise recipe: they would stay int8).

Reference: Yao et al., HAWQ-V3, arXiv:2011.10680; Dong et al., HAWQ-V2,
arXiv:1911.03852; Wang et al., HAQ, arXiv:1811.08886 (first / last layer
at 8 bits, budget as a fraction of the 8-bit cost).

Example:
    >>> s = tfcomp.quantization.sensitivity.sensitivity(model, (x, y))
    >>> policy = allocate_bits(model, s, "latency", BISMO(), budget=0.4)
    >>> qat = tfcomp.quantize_model(model, bits=policy)
"""

from __future__ import annotations

import math
from collections import namedtuple

import numpy as np

from tfcomp._io import check_number, check_positive_int
from tfcomp.hardware.base import layer_resource
from tfcomp.hardware.names import get_hardware
from tfcomp.hardware.precision import (
    PRECISION_BITS,
    PRECISIONS,
    bits_precision,
)
from tfcomp.hardware.spec import extract_specs
from tfcomp.quantization._analysis import QUANT_KINDS
from tfcomp.quantization.quantize import quantizable_layers
from tfcomp.quantization.sensitivity_result import Sensitivity
from tfcomp.quantization.ties import residual_ties

__all__ = ["RESOURCES", "Allocation", "FrontPoint", "CostTable",
           "allocate_bits", "policy_cost"]

RESOURCES = ("latency", "energy", "size", "bops")
_FIXED = (8, 8)
_NO_INT4_SPECS = ("depthwise",)  # precision.NO_INT4_OPS as LayerSpec ops
_TOL = 1e-9

FrontPoint = namedtuple("FrontPoint", "budget cost sensitivity policy")
FrontPoint.__doc__ = """One point of the Pareto front: the budget asked
(fraction of the 8/8 cost), the policy's cost (same unit), its summed
sensitivity and the policy ``{layer: (w_bits, a_bits)}``."""


def _check_resource(resource, hardware) -> str:
    if resource not in RESOURCES:
        raise ValueError(f"resource must be one of {RESOURCES}. Received: "
                         f"resource={resource!r}")
    if resource in ("latency", "energy") and hardware is None:
        raise ValueError(f"resource={resource!r} needs a hardware model "
                         "(e.g. BISMO(), BitFusion('edge') or a "
                         "LatencyTable). Received: hardware=None")
    return resource


class CostTable:
    """Per-layer cost of a model's quantizable layers at any bit pair.

    Args:
        model: the float model.
        resource: ``"latency"``, ``"energy"``, ``"size"`` or ``"bops"``.
        hardware: a ``HardwareModel`` / ``LatencyTable`` (latency, energy),
            or its name (``"bismo"``, ``"bitfusion"``, a table ``.json``).
        precision: price LiteRT precisions (the reference is all-int8,
            ``PRECISION_BITS["int8"]``, instead of 8/8).

    Attributes:
        layers: quantizable layer names (``quantize_model``'s).
        constant: cost that no bit choice changes (latency / energy of the
            other costed layers at 8/8, plus ``overhead_s``).
        full_cost: the cost with every quantizable layer at 8/8.

    Example:
        >>> t = CostTable(model, "size")
        >>> t.ratio(4)  # uniform 4-bit (first / last at 8) vs all 8/8
    """

    def __init__(self, model, resource: str, hardware=None,
                 precision: bool = False):
        hardware = get_hardware(hardware)
        self.resource = _check_resource(resource, hardware)
        self.precision = bool(precision)
        self.fixed = PRECISION_BITS["int8"] if precision else _FIXED
        self.hardware = hardware
        self.layers = quantizable_layers(model)
        if not self.layers:
            kinds = ", ".join(k for k in QUANT_KINDS
                              if k != "BatchNormalization")
            raise ValueError(f"model {model.name!r} has no quantizable layers "
                             f"({kinds}).")
        specs, _ = extract_specs(model, return_skipped=True)
        by_name = {s.name.replace("/", "_"): s for s in specs}
        by_name.update({s.name: s for s in specs})
        missing = [n for n in self.layers if n not in by_name]
        if missing:
            raise ValueError(f"quantizable layers {missing} have no cost "
                             "spec (tfcomp.hardware.extract_specs).")
        self.specs = {n: by_name[n] for n in self.layers}
        self._cache = {}
        chosen = {id(s) for s in self.specs.values()}
        if resource == "energy" and hardware.layer_cost(
                self.specs[self.layers[0]], *self.fixed).energy_j is None:
            raise ValueError(
                f"resource='energy' needs a hardware model with energy "
                f"figures (e.g. BitFusion). Received: hardware="
                f"{getattr(hardware, 'name', hardware)!r}, which has none; "
                "use resource='latency'.")
        self.constant = 0.0
        if resource in ("latency", "energy"):
            self.constant = sum(
                self._price(s, *self.fixed) for s in specs
                if id(s) not in chosen
                and s.op not in ("conv", "depthwise", "dense"))
            if resource == "latency":
                self.constant += float(getattr(hardware, "overhead_s", 0.0))
        self.full_cost = self.constant + sum(
            self.cost(n, *self.fixed) for n in self.layers)

    def _price(self, spec, w, a) -> float:
        try:
            return layer_resource(spec, int(w), int(a), self.resource,
                                  self.hardware)
        except ValueError as e:
            name = getattr(self.hardware, "name", self.hardware)
            raise ValueError(
                f"{self.resource} of layer {spec.name!r} at w_bits={w}, "
                f"a_bits={a} cannot be priced by {name!r}: {e} Give "
                "candidates= that the hardware supports.") from None

    def cost(self, layer: str, w_bits: int, a_bits: int) -> float:
        """One quantizable layer's cost at ``(w_bits, a_bits)``."""
        key = (layer, int(w_bits), int(a_bits))
        if key not in self._cache:
            self._cache[key] = self._price(self.specs[layer], w_bits, a_bits)
        return self._cache[key]

    def allows(self, layer: str, w_bits: int, a_bits: int) -> bool:
        """Whether ``layer`` can take the pair (precision tables: no int4w
        depthwise layer)."""
        return not (self.precision and (w_bits, a_bits) == PRECISION_BITS[
            "int4w"] and self.specs[layer].op in _NO_INT4_SPECS)

    def _pair(self, value) -> tuple:
        return PRECISION_BITS[value] if isinstance(value, str) \
            else tuple(value)

    def total(self, policy: dict) -> float:
        """Cost of ``{layer: (w, a)}`` or ``{layer: precision}`` (layers
        not listed at 8/8, or int8). A pair a layer cannot take (an int4w
        depthwise layer) is priced as int8, which the exporter writes
        instead (``ExportReport.int8_fallback``)."""
        total = self.constant
        for n in self.layers:
            pair = self._pair(policy.get(n, self.fixed))
            total += self.cost(n, *(pair if self.allows(n, *pair)
                                    else self.fixed))
        return total

    def ratio(self, bits, first_last_8bit: bool = True) -> float:
        """Cost of a policy as a fraction of :attr:`full_cost`. ``bits``:
        ``{layer: (w, a)}``, a ``(w, a)`` pair or one int (w = a); uniform
        bits keep the first and last layer at 8/8 when
        ``first_last_8bit``."""
        if not isinstance(bits, dict):
            pair = tuple(bits) if isinstance(bits, (tuple, list)) \
                else PRECISION_BITS[bits] if isinstance(bits, str) \
                else (bits, bits)
            bits = {n: pair if self.allows(n, *pair) else self.fixed
                    for n in self.layers}
            if first_last_8bit:
                bits[self.layers[0]] = bits[self.layers[-1]] = self.fixed
        return self.total(bits) / self.full_cost


def policy_cost(model, bits, resource: str = "latency", hardware=None,
                first_last_8bit: bool = True) -> float:
    """A policy's cost as a fraction of the 8/8 cost, priced as
    :func:`allocate_bits` prices it (so ``budget=policy_cost(model, 4,
    ...)`` is "at uniform 4-bit's cost"). A precision name (``"int4w"``)
    or a ``{layer: precision}`` dict is priced against the all-int8 cost
    (depthwise layers stay int8 under a uniform "int4w").

    Example:
        >>> budget = policy_cost(model, 4, "latency", BISMO())
        >>> policy_cost(model, "int4w", "size", first_last_8bit=False)
    """
    values = bits.values() if isinstance(bits, dict) else [bits]
    precision = any(isinstance(v, str) for v in values)
    return CostTable(model, resource, hardware, precision).ratio(
        bits, first_last_8bit)


class Allocation(dict):
    """``{layer: (w_bits, a_bits)}`` found by :func:`allocate_bits`, with
    what it cost.

    Attributes:
        resource, budget: what was limited and the budget (fraction).
        cost: the policy's cost as a fraction of the 8/8 cost.
        full_cost: the absolute 8/8 cost (seconds, joules, BOPs, bytes).
        sensitivity: summed sensitivity of the policy.
        min_budget: the cheapest reachable cost (fraction).
        front: ``[FrontPoint]`` when ``return_front=True``, else None.

    Example:
        >>> alloc = allocate_bits(model, s, "size", budget=0.5)
        >>> dict(alloc), alloc.cost
    """

    resource = None
    budget = cost = full_cost = sensitivity = min_budget = None
    front = None


# ------------------------------------------------------------- problem


def _precision_candidates(items, sens: Sensitivity) -> list:
    """Precision names as their ``PRECISION_BITS`` pairs (int8 / int4w
    need the sensitivity at 8 / 4 bits)."""
    pairs = []
    for c in items:
        if not isinstance(c, str) or c not in PRECISIONS:
            raise ValueError(f"candidates must all be precisions "
                             f"{PRECISIONS} or all bit-widths. Received "
                             f"item: {c!r}")
        w = PRECISION_BITS[c][0]
        if w <= 8 and w not in sens.bits:
            raise ValueError(
                f"candidate {c!r} needs the sensitivity at w_bits={w}, but "
                f"the sensitivity table has bits {sens.bits}. Measure it "
                "with sensitivity(..., bits=...).")
        if PRECISION_BITS[c] not in pairs:
            pairs.append(PRECISION_BITS[c])
    return pairs


def _is_precision(candidates) -> bool:
    if isinstance(candidates, str):
        return True
    return candidates is not None and isinstance(candidates, (list, tuple)) \
        and any(isinstance(c, str) for c in candidates)


def _candidates(candidates, a_bits, sens: Sensitivity) -> list:
    if isinstance(candidates, str):
        candidates = [candidates]
    if _is_precision(candidates):
        pairs = _precision_candidates(list(candidates), sens)
        if not pairs:
            raise ValueError("candidates must not be empty.")
        return pairs
    if a_bits != "same":
        a_bits = check_positive_int(a_bits, "a_bits")
    rule = (lambda w: w) if a_bits == "same" else (lambda w: a_bits)
    if candidates is None:
        candidates = list(sens.bits)
    try:
        items = list(candidates)
    except TypeError:
        raise ValueError("candidates must be None, a list of weight "
                         "bit-widths or of (w_bits, a_bits) pairs. "
                         f"Received: candidates={candidates!r}") from None
    pairs = []
    for c in items:
        if isinstance(c, (tuple, list)) and len(c) == 2:
            pair = (c[0], c[1])
        elif isinstance(c, (int, np.integer)) and not isinstance(c, bool):
            pair = (int(c), rule(int(c)))
        else:
            raise ValueError("candidates must hold weight bit-widths or "
                             f"(w_bits, a_bits) pairs. Received item: {c!r}")
        for v, what in zip(pair, ("w_bits", "a_bits")):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) \
                    or not 1 <= int(v) <= 8:
                raise ValueError(f"candidates {what} must be integers in "
                                 f"[1, 8]. Received: {c!r}")
        pair = (int(pair[0]), int(pair[1]))
        if pair[0] not in sens.bits:
            raise ValueError(
                f"candidate {pair} needs the sensitivity at w_bits="
                f"{pair[0]}, but the sensitivity table has bits "
                f"{sens.bits}. Measure it with sensitivity(..., bits=...).")
        if pair not in pairs:
            pairs.append(pair)
    if not pairs:
        raise ValueError("candidates must not be empty.")
    return pairs


def _tie_groups(model, tie, layers) -> list:
    if tie is None:
        return []
    if tie == "residual":
        return residual_ties(model)
    if isinstance(tie, str):
        raise ValueError("tie must be None, 'residual' or a list of groups "
                         f"of layer names. Received: tie={tie!r}")
    groups = [list(g) for g in tie]
    unknown = sorted({n for g in groups for n in g} - set(layers))
    if unknown:
        raise ValueError(f"tie names layers that are not quantizable: "
                         f"{unknown}. Quantizable layers: {layers}")
    return [g for g in groups if len(g) > 1]


def _check_sensitivity(sens, layers, model) -> None:
    if not isinstance(sens, Sensitivity):
        raise TypeError("sensitivity must be a Sensitivity (from "
                        "tfcomp.quantization.sensitivity or "
                        "Sensitivity.from_json). Received: "
                        f"{type(sens).__name__}")
    if sens.kind != "weights":
        raise ValueError(
            f"sensitivity.kind must be 'weights' (the table is indexed by "
            f"weight bits); received {sens.kind!r}. To count activations, "
            "add their table to the weights' (same layers and bits) and "
            "pass a Sensitivity(kind='weights').")
    if set(sens.layers) != set(layers):
        missing = [n for n in layers if n not in sens.layers]
        extra = [n for n in sens.layers if n not in layers]
        raise ValueError(
            f"sensitivity does not match model {model.name!r}: layers "
            f"missing from it {missing[:8]}, layers the model does not have "
            f"{extra[:8]}. Measure the sensitivity on this model.")


class _Problem:
    """Layers x choices: costs, sensitivities, allowed choices, ties."""

    def __init__(self, table, sens, pairs, fixed, groups):
        self.table = table
        self.layers = table.layers
        ref = table.fixed
        self.choices = list(pairs) + ([ref] if ref not in pairs else [])
        n, k = len(self.layers), len(self.choices)
        # a tie group holding a fixed layer is fixed as a whole
        fixed = set(fixed)
        for g in groups:
            if fixed & set(g):
                fixed |= set(g)
        self.fixed = fixed
        self.allowed = np.zeros((n, k), bool)
        self.cost = np.zeros((n, k))
        self.sens = np.zeros((n, k))
        for i, name in enumerate(self.layers):
            for j, (w, a) in enumerate(self.choices):
                ok = (w, a) == ref if name in fixed else (
                    (w, a) in pairs and table.allows(name, w, a))
                self.allowed[i, j] = ok
                if ok:
                    self.cost[i, j] = table.cost(name, w, a)
                    self.sens[i, j] = sens.value(name, w) \
                        if w in sens.bits else 0.0
        index = {x: i for i, x in enumerate(self.layers)}
        self.ties = [[index[x] for x in g] for g in groups]

    def min_cost(self) -> float:
        """Cheapest reachable cost (tie groups choose together)."""
        groups = _merge(self.ties)
        seen = set().union(*groups) if groups else set()
        total = self.table.constant
        for members in groups:
            idx = sorted(members)
            ok = np.all(self.allowed[idx], axis=0)
            if not ok.any():
                raise ValueError(
                    f"tied layers {[self.layers[i] for i in idx]} have no "
                    "candidate (w_bits, a_bits) in common.")
            total += float(np.min(np.where(ok, self.cost[idx].sum(axis=0),
                                           np.inf)))
        for i in range(len(self.layers)):
            if i not in seen:
                total += float(np.min(self.cost[i][self.allowed[i]]))
        return total

    def solve(self, limit: float) -> np.ndarray:
        """Choice index per layer minimising sensitivity, cost <= limit."""
        from scipy.optimize import Bounds, LinearConstraint, milp
        n, k = self.cost.shape
        scale_s = float(np.max(np.abs(self.sens))) or 1.0
        full = self.table.full_cost
        c = (self.sens / scale_s).ravel()
        one = np.zeros((n, n * k))
        for i in range(n):
            one[i, i * k:(i + 1) * k] = 1.0
        rows = [LinearConstraint(one, 1.0, 1.0)]
        tie_rows = []
        for g in self.ties:
            for i in g[1:]:
                for j in range(k):
                    r = np.zeros(n * k)
                    r[g[0] * k + j], r[i * k + j] = 1.0, -1.0
                    tie_rows.append(r)
        if tie_rows:
            rows.append(LinearConstraint(np.array(tie_rows), 0.0, 0.0))
        cost_row = (self.cost / full).ravel()
        rhs = (limit - self.table.constant) / full
        for _ in range(5):
            res = milp(c, integrality=np.ones(n * k),
                       bounds=Bounds(0, self.allowed.ravel().astype(float)),
                       constraints=rows + [LinearConstraint(
                           cost_row[None, :], -np.inf, rhs)],
                       options={"mip_rel_gap": 0.0})
            if res.x is None:
                raise RuntimeError(f"The integer program failed: "
                                   f"{res.message}")
            pick = np.round(res.x).reshape(n, k).argmax(axis=1)
            over = self.cost[np.arange(n), pick].sum() + \
                self.table.constant - limit
            if over <= 0:
                return pick
            rhs -= over / full + 1e-12  # HiGHS' feasibility tolerance
        raise RuntimeError("The integer program could not meet the budget "
                           "within the solver's tolerance.")

    def policy(self, pick) -> dict:
        if self.table.precision:
            return {x: bits_precision(*self.choices[j])
                    for x, j in zip(self.layers, pick)}
        return {x: self.choices[j] for x, j in zip(self.layers, pick)}

    def summary(self, pick) -> tuple:
        rows = np.arange(len(self.layers))
        cost = float(self.cost[rows, pick].sum()) + self.table.constant
        return cost, float(self.sens[rows, pick].sum())


def _merge(sets: list) -> list:
    """Unions of overlapping sets."""
    out = []
    for s in sets:
        s = set(s)
        keep = []
        for t in out:
            if t & s:
                s |= t
            else:
                keep.append(t)
        out = keep + [s]
    return out


# ------------------------------------------------------------- the verb


def allocate_bits(model, sensitivity: Sensitivity, resource: str = "latency",
                  hardware=None, budget: float = 0.5, candidates=None,
                  first_last_8bit: bool = True, tie=None,
                  return_front: bool = False, *, a_bits="same",
                  front_points: int = 20) -> Allocation:
    """Per-layer ``(w_bits, a_bits)`` minimising summed sensitivity under a
    cost budget, solved exactly as an integer program (``scipy`` HiGHS).

    Activation bits: the table is indexed by weight bits, so ``a_bits``
    follows a rule: ``"same"`` (a = w, the default; uniform b-bit is then a
    candidate policy) or a fixed int; or give explicit ``(w, a)`` pairs in
    ``candidates`` (the cheapest ``a`` then wins for a given ``w``: the
    table has no activation axis). With a = w, sum an activation table in
    (``sensitivity(..., kind="activations")``, same method, layers and
    bits: HAWQ-V2's Hessian terms share a scale) so that a width also pays
    for its activations: ``Sensitivity(w.layers, w.bits, w.table +
    a.table)``.

    Args:
        model: the float model the sensitivity was measured on.
        sensitivity: a :class:`~tfcomp.quantization.Sensitivity`.
        resource: ``"latency"``, ``"energy"`` (need ``hardware``),
            ``"size"`` or ``"bops"``.
        hardware: a ``HardwareModel`` (``BISMO()``, ``BitFusion()``) or a
            ``LatencyTable``.
        budget: allowed cost as a fraction of the all-8/8 cost.
        candidates: None (the sensitivity's bits), weight bit-widths,
            ``(w_bits, a_bits)`` pairs, or LiteRT precisions (some of
            ``("float32", "float16", "int8", "int4w")``: the result maps
            layers to precision names; see the module docstring).
        first_last_8bit: keep the first and last quantizable layers at 8/8
            (HAQ's rule); a tie group holding one of them stays at 8/8 too.
        tie: None, ``"residual"`` (layers whose outputs an ``Add`` sums
            share bits, :func:`~tfcomp.quantization.residual_ties`) or a
            list of groups of layer names.
        return_front: also solve over ``front_points`` budgets from the
            cheapest reachable cost to 1.0 and store the Pareto front in
            ``.front``.
        a_bits: the activation rule for weight-only candidates.
        front_points: number of budgets on the front.

    Returns:
        An :class:`Allocation`: ``{layer: (w_bits, a_bits)}`` for every
        quantizable layer (pass it to ``quantize_model(model, bits=...)``),
        with ``.cost``, ``.sensitivity``, ``.min_budget``, ``.front``.

    Raises:
        ValueError: an unknown resource, latency / energy without hardware,
            a budget below the cheapest reachable cost (the message gives
            it), a sensitivity measured on other layers, candidates outside
            [1, 8] or not in the sensitivity's bits.

    Reference: Yao et al., HAWQ-V3, arXiv:2011.10680.

    Example:
        >>> s = sensitivity(model, (x, y))
        >>> bits = allocate_bits(model, s, "size",
        ...                      budget=policy_cost(model, 4, "size"))
        >>> qat = quantize_model(model, bits=dict(bits))
    """
    hardware = get_hardware(hardware)
    _check_resource(resource, hardware)
    budget = check_number(budget, "budget", 0, min_open=True,
                          hint="a fraction of the all-8/8 cost")
    front_points = check_positive_int(front_points, "front_points", 2)
    table = CostTable(model, resource, hardware,
                      precision=_is_precision(candidates))
    layers = table.layers
    _check_sensitivity(sensitivity, layers, model)
    pairs = _candidates(candidates, a_bits, sensitivity)
    fixed = [layers[0], layers[-1]] if first_last_8bit else []
    problem = _Problem(table, sensitivity, pairs, fixed,
                       _tie_groups(model, tie, layers))
    full = table.full_cost
    min_cost = problem.min_cost()
    min_ratio = min_cost / full
    if budget * full < min_cost * (1 - _TOL):
        raise ValueError(
            f"budget={budget} of the all-8/8 {resource} cannot be reached: "
            f"the cheapest policy (every layer at its cheapest candidate"
            f"{', first / last at 8/8' if first_last_8bit else ''}) costs "
            f"{min_ratio:.4f} of it. The minimum budget is "
            f"{math.ceil(min_ratio * 1e4) / 1e4}.")
    pick = problem.solve(max(budget * full, min_cost) * (1 + _TOL))
    out = Allocation(problem.policy(pick))
    cost, total = problem.summary(pick)
    out.resource, out.budget, out.full_cost = resource, budget, full
    out.cost, out.sensitivity, out.min_budget = cost / full, total, min_ratio
    if return_front:
        out.front = _front(problem, min_cost, front_points)
    return out


def _front(problem, min_cost, points) -> list:
    full = problem.table.full_cost
    most = float(np.sum(np.max(np.where(problem.allowed, problem.cost,
                                        -np.inf), axis=1)))
    top = max(1.0, (most + problem.table.constant) / full)
    front, seen = [], set()
    for b in np.linspace(min_cost / full, top, points):
        pick = problem.solve(max(b * full, min_cost) * (1 + _TOL))
        key = tuple(pick)
        if key in seen:
            continue
        seen.add(key)
        cost, total = problem.summary(pick)
        front.append(FrontPoint(float(b), cost / full, total,
                                problem.policy(pick)))
    return front
