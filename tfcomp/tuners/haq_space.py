"""HAQ's search space: the quantizable layers, the state embedding, the
action -> bit-width mapping, the cost of a policy and the backward resource
wall (the environment the DDPG agent acts in; see :mod:`tfcomp.tuners.haq`).

Costs come from the one cost model: size (``params * w_bits / 8`` bytes,
bias included) and BOPs (``MACs * w_bits * a_bits``) from ``tfcomp.cost``
through :class:`tfcomp.quantization.costs.BitCosts`; latency and energy
from a ``HardwareModel`` / ``LatencyTable``.

Reference: Wang et al., HAQ: Hardware-Aware Automated Quantization with
Mixed Precision, CVPR 2019, arXiv:1811.08886.

Example:
    >>> space = HAQSpace(model, None, "bops", budget=0.5, b_min=2, b_max=8)
    >>> values, transitions, info = space.rollout(lambda s: [1.0])
"""

from __future__ import annotations

import math

import numpy as np

from tfcomp.hardware import extract_specs
from tfcomp.quantization import quantizable_layers
from tfcomp.quantization.costs import BitCosts
from tfcomp.tuners._common import minmax_columns

__all__ = ["HAQSpace", "RESOURCES", "action_to_bits"]

RESOURCES = ("latency", "energy", "size", "bops")
_FIXED = (8, 8)


def _layer_cost_fn(model, hardware, resource: str):
    """``fn(spec, w_bits, a_bits) -> float``: the cost of one layer."""
    if resource in ("size", "bops"):
        fn = BitCosts(model).cost_fn(resource)
        return lambda spec, w, a: fn(spec.name, int(w), int(a))
    name = getattr(hardware, "name", hardware)

    def layer_cost(spec, w, a):
        try:
            c = hardware.layer_cost(spec, int(w), int(a))
        except ValueError as e:
            raise ValueError(
                f"HAQ: {name!r} cannot cost layer {spec.name!r} at "
                f"w_bits={w}, a_bits={a}: {e}") from None
        v = c.latency_s if resource == "latency" else c.energy_j
        if v is None:
            raise ValueError(
                f"HAQ: resource='energy' but hardware {name!r} has no "
                f"energy figure for layer {spec.name!r}; use BitFusion or "
                "resource='latency'.")
        return float(v)

    return layer_cost


def action_to_bits(action: float, b_min: int = 2, b_max: int = 8) -> int:
    """HAQ's action -> bit-width mapping.

    ``[0, 1]`` is split into ``b_max - b_min + 1`` equal bins
    (``round(b_min - 0.5 + a * (b_max - b_min + 1))``, the official
    mapping, with ties and the end point resolved into the range), so
    ``a = 0`` gives ``b_min`` and ``a = 1`` gives ``b_max``.

    Example:
        >>> action_to_bits(0.0), action_to_bits(1.0), action_to_bits(0.5)
        (2, 8, 5)
    """
    a = float(np.clip(action, 0.0, 1.0))
    b = math.floor(b_min + a * (b_max - b_min + 1))
    return int(min(b_max, max(b_min, b)))


class HAQSpace:
    """Layers, state embedding, action mapping and resource wall of HAQ.

    An episode covers every quantizable layer, two steps per layer (weight
    bits, then activation bits), as the paper and the official code. The
    first and the last layer are fixed at 8/8 (``fixed``; the first layer's
    input is the 8-bit image): the agent acts on those steps too, but its
    action is overridden (the official ``_keep_first_last_layer``). Bits
    are held as an ``(n_layers, 2)`` array of ``(w_bits, a_bits)``.

    Args:
        model: the float model.
        hardware: a ``HardwareModel`` / ``LatencyTable`` for "latency" /
            "energy" (None for "size" / "bops").
        resource: what the budget limits (see :data:`RESOURCES`).
        budget: allowed cost as a fraction of the 8/8-bit cost.
        b_min, b_max: the searched bit range.

    Example:
        >>> space = HAQSpace(model, BISMO(), "latency", 0.5, 2, 8)
        >>> space.cost(space.wall(np.full((len(space.layers), 2), 8)))
    """

    state_dim = 10

    def __init__(self, model, hardware, resource: str, budget: float,
                 b_min: int, b_max: int):
        self.resource, self.budget = resource, budget
        self.b_min, self.b_max = b_min, b_max
        layers = quantizable_layers(model)
        if not layers:
            raise ValueError(
                f"HAQ: model {model.name!r} has no quantizable layers "
                "(Conv2D, DepthwiseConv2D or Dense); there is nothing to "
                "quantize.")
        if len(layers) < 2:
            raise ValueError(
                f"HAQ: model {model.name!r} has 1 quantizable layer "
                f"{layers}; it is both the first and the last layer, which "
                "stay at 8/8 bits, so there is nothing to search (needs at "
                "least 2).")
        specs, _ = extract_specs(model, return_skipped=True)
        # quantize_model names layers of nested models outer_inner
        by_name = {s.name.replace("/", "_"): s for s in specs}
        by_name.update({s.name: s for s in specs})
        missing = [n for n in layers if n not in by_name]
        if missing:
            raise ValueError(
                f"HAQ: quantizable layers {missing} have no cost spec.")
        n = len(layers)
        self.layers = layers
        self.specs = [by_name[x] for x in layers]
        # free[i, d]: whether bits d (0 weights, 1 activations) of layer i
        # are searched.
        self.free = np.ones((n, 2), dtype=bool)
        self.free[0, :] = False
        self.free[n - 1, :] = False
        self.names = []
        self._slots = []
        for i, x in enumerate(layers):
            for d, key in ((0, "w_bits/"), (1, "a_bits/")):
                if self.free[i, d]:
                    self.names.append(key + x)
                    self._slots.append((i, d))
        chosen = {id(s) for s in self.specs}
        others = [s for s in specs if id(s) not in chosen]

        layer_cost = _layer_cost_fn(model, hardware, resource)

        # table[i, w, a] (bits index directly; NaN where never needed)
        searched = list(range(b_min, b_max + 1))
        self.table = np.full((n, 9, 9), np.nan)
        for i, s in enumerate(self.specs):
            ws = sorted(set(searched) | {8}) if self.free[i, 0] else [8]
            as_ = sorted(set(searched) | {8}) if self.free[i, 1] else [8]
            for w in ws:
                for a in as_:
                    self.table[i, w, a] = layer_cost(s, w, a)
        self.constant = 0.0
        if resource in ("latency", "energy"):
            self.constant += sum(layer_cost(s, *_FIXED) for s in others
                                 if s.op not in ("conv", "depthwise",
                                                 "dense"))
            if resource == "latency":
                self.constant += float(getattr(hardware, "overhead_s", 0.0))
        self.full_cost = self.cost(np.full((n, 2), 8, dtype=np.int64))
        self.budget_cost = budget * self.full_cost
        self.min_policy = np.where(self.free, b_min, 8).astype(np.int64)
        self.min_cost = self.cost(self.min_policy)
        if self.min_cost > self.budget_cost * (1 + 1e-9):
            raise ValueError(
                f"HAQ: budget={budget} of the 8/8-bit {resource} cannot be "
                f"reached: with every searched bit-width at b_min={b_min} "
                "(first and last layer at 8/8) the model "
                f"still costs {self.min_cost:.6g} = "
                f"{self.min_cost / self.full_cost:.4f} of the 8/8 cost "
                f"{self.full_cost:.6g}. The minimum reachable budget is "
                f"{math.ceil(self.min_cost / self.full_cost * 1e4) / 1e4}.")
        self._static = self._static_features(layers)

    def _cost_of(self, i, w, a) -> float:
        v = self.table[i, w, a] if 1 <= w <= 8 and 1 <= a <= 8 else np.nan
        if np.isnan(v):
            raise ValueError(
                f"bits ({w}, {a}) of layer {self.layers[i]!r} outside the "
                f"space ([{self.b_min}, {self.b_max}], fixed layers 8)")
        return float(v)

    def cost(self, policy) -> float:
        """Cost of ``policy`` (array (n_layers, 2) of (w, a))."""
        p = np.asarray(policy, dtype=np.int64).reshape(len(self.layers), 2)
        if p.min() < 1 or p.max() > 8:
            raise ValueError(f"bits must be in [1, 8]. Received {p.tolist()}")
        v = self.table[np.arange(len(self.layers)), p[:, 0], p[:, 1]]
        if np.isnan(v).any():
            i = int(np.flatnonzero(np.isnan(v))[0])
            self._cost_of(i, *p[i])
        return self.constant + float(v.sum())

    def _static_features(self, layers) -> np.ndarray:
        rows = []
        for i, s in enumerate(self.specs):
            rows.append([i, s.cin, s.cout, s.stride[0], s.kernel[0],
                         s.weight_count, s.in_h * s.in_w,
                         1.0 if s.op == "depthwise" else 0.0])
        return minmax_columns(rows)

    # -- the wall ----------------------------------------------------------
    def wall(self, policy) -> np.ndarray:
        """HAQ's backward resource wall.

        While the cost exceeds the budget: walk from the last layer to the
        first; at each layer lower the activation bit-width by one, then
        the weight bit-width by one (never below ``b_min``), stopping as
        soon as the budget is met; repeat (the official
        ``_final_action_wall``). Fixed bits (first and last layer) stay 8.

        Deviation: a step goes down to the next bit-width that *lowers the
        layer's cost* (skipping widths that cost the same), and a width
        that no lower width makes cheaper is left alone. On cost models
        strictly monotone in the bits (BISMO, BOPs, size) this is exactly
        the paper's wall; on Bit Fusion, where 3-bit operands cost as
        4-bit and 5-7 as 8-bit, the paper's wall would lower 4 to 3 (and 8
        to 7, 6, 5) for no saving, losing accuracy for nothing. (For
        ``resource="size"`` activation bits never change the cost, so they
        are never lowered.)
        """
        p = np.array(policy, dtype=np.int64).reshape(-1, 2).copy()
        p[~self.free] = 8
        limit = self.budget_cost * (1 + 1e-9)
        cost = self.cost(p)
        while cost > limit:
            changed = False
            for i in range(len(self.layers) - 1, -1, -1):
                for d in (1, 0):
                    if not self.free[i, d] or p[i, d] <= self.b_min:
                        continue
                    old = self._cost_of(i, *p[i])
                    q = p[i].copy()
                    for b in range(int(p[i, d]) - 1, self.b_min - 1, -1):
                        q[d] = b
                        new = self._cost_of(i, *q)
                        if new < old:
                            p[i] = q
                            cost += new - old
                            changed = True
                            break
                    if cost <= limit:
                        break
                if cost <= limit:
                    break
            if not changed:  # pragma: no cover - excluded at construction
                raise RuntimeError("HAQ wall could not meet the budget.")
        return p

    # -- episode -----------------------------------------------------------
    def values(self, policy) -> dict:
        p = np.asarray(policy).reshape(-1, 2)
        return {name: int(p[i, d])
                for name, (i, d) in zip(self.names, self._slots)}

    def policy_from_values(self, values) -> np.ndarray:
        """Bits array from ``{name: bits}`` (missing: ``b_max``; fixed: 8)."""
        p = np.where(self.free, self.b_max, 8).astype(np.int64)
        for name, (i, d) in zip(self.names, self._slots):
            v = values.get(name)
            if v is not None:
                p[i, d] = int(min(self.b_max, max(self.b_min, int(v))))
        return p

    def rollout(self, policy_fn):
        """One HAQ episode: ``(values, transitions, info)``.

        Stored actions are the actor's (pre-wall) actions, as the official
        code stores them.
        """
        states, actions = [], []
        proposal = np.full((len(self.layers), 2), 8, dtype=np.int64)
        prev = 1.0  # the official code's initial "last action"
        for i in range(len(self.layers)):
            for d in (0, 1):
                s = np.concatenate([self._static[i], [float(d), prev]]
                                   ).astype(np.float32)
                a = float(np.clip(np.asarray(policy_fn(s), np.float64)
                                  .reshape(-1)[0], 0.0, 1.0))
                if self.free[i, d]:
                    proposal[i, d] = action_to_bits(a, self.b_min,
                                                    self.b_max)
                states.append(s)
                actions.append([a])
                prev = a
        final = self.wall(proposal)
        n = len(states)
        transitions = [(states[j], actions[j],
                        states[j + 1] if j + 1 < n else states[j],
                        j == n - 1) for j in range(n)]
        cost = self.cost(final)
        return self.values(final), transitions, {
            "cost": cost, "cost_ratio": cost / self.full_cost,
            "proposed": proposal.tolist()}
