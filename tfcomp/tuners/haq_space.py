"""HAQ's search space: the quantizable layers, the state embedding, the
action -> bit-width mapping, the cost of a policy and the backward resource
wall (the environment the DDPG agent acts in; see :mod:`tfcomp.tuners.haq`).

Costs come from the one pricing :func:`tfcomp.hardware.allocate_bits` uses,
:class:`tfcomp.hardware.CostTable`: size (``params * w_bits / 8`` bytes,
bias included) and BOPs (``MACs * w_bits * a_bits``) from ``tfcomp.cost``,
latency and energy from a ``HardwareModel`` / ``LatencyTable``.

Hardware-native widths: by default (``bits="native"``) the space holds only
the widths at which the hardware's cost changes (``hardware.distinct_bits()``
within ``[b_min, b_max]``, e.g. 2, 4, 8 on Bit Fusion); an action that maps
to another width is snapped up to the next native one (5 -> 8 on Bit
Fusion), as the datapath would run it. ``bits="all"`` searches every width
(the paper); without hardware (size, BOPs) every width is native.

Reference: Wang et al., HAQ: Hardware-Aware Automated Quantization with
Mixed Precision, CVPR 2019, arXiv:1811.08886.

Example:
    >>> space = HAQSpace(model, None, "bops", budget=0.5, b_min=2, b_max=8)
    >>> values, transitions, info = space.rollout(lambda s: [1.0])
"""

from __future__ import annotations

import math

import numpy as np

from tfcomp.hardware import CostTable
from tfcomp.tuners._common import minmax_columns

__all__ = ["HAQSpace", "RESOURCES", "action_to_bits", "bits_to_action",
           "searched_widths"]

RESOURCES = ("latency", "energy", "size", "bops")
_FIXED = (8, 8)


def searched_widths(hardware, b_min: int, b_max: int, bits="native"
                    ) -> tuple[int, ...]:
    """The bit-widths HAQ searches.

    Args:
        hardware: a ``HardwareModel`` / ``LatencyTable`` or None.
        b_min, b_max: the bit range.
        bits: ``"native"`` (``hardware.distinct_bits()`` within the range;
            every width without hardware), ``"all"`` (every width in the
            range) or a list of widths (kept within the range).

    Raises:
        ValueError: an unknown ``bits`` or no width left in the range.

    Example:
        >>> searched_widths(BitFusion(), 2, 8)
        (2, 4, 8)
    """
    every = tuple(range(b_min, b_max + 1))
    if isinstance(bits, str):
        if bits not in ("native", "all"):
            raise ValueError("bits must be 'native', 'all' or a list of "
                             f"bit-widths. Received: bits={bits!r}")
        if bits == "all" or hardware is None:
            return every
        given = hardware.distinct_bits()
    else:
        try:
            given = [int(b) for b in bits]
        except (TypeError, ValueError):
            raise ValueError("bits must be 'native', 'all' or a list of "
                             f"bit-widths. Received: bits={bits!r}") from None
    out = tuple(sorted({int(b) for b in given if b_min <= b <= b_max}))
    if not out:
        name = getattr(hardware, "name", hardware)
        raise ValueError(
            f"HAQ: no bit-width of {sorted(set(given))} (bits={bits!r}, "
            f"hardware {name!r}) lies in [b_min, b_max] = [{b_min}, {b_max}]."
            " Widen the range or pass bits='all'.")
    return out


def bits_to_action(bits: int, b_min: int = 2, b_max: int = 8) -> float:
    """The action at the centre of ``bits``' bin (:func:`action_to_bits`'
    inverse; clipped to [0, 1]).

    Example:
        >>> action_to_bits(bits_to_action(4)) == 4
        True
    """
    a = (int(bits) - b_min + 0.5) / (b_max - b_min + 1)
    return float(min(1.0, max(0.0, a)))


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
    are held as an ``(n_layers, 2)`` array of ``(w_bits, a_bits)``; the
    searched ones take the values of :attr:`widths` (see the module
    docstring: hardware-native widths).

    Args:
        model: the float model.
        hardware: a ``HardwareModel`` / ``LatencyTable`` for "latency" /
            "energy" (None for "size" / "bops").
        resource: what the budget limits (see :data:`RESOURCES`).
        budget: allowed cost as a fraction of the 8/8-bit cost.
        b_min, b_max: the searched bit range.
        bits: ``"native"`` (default), ``"all"`` or a list of widths
            (:func:`searched_widths`).

    Attributes:
        widths: the searched bit-widths, ascending.
        costs: the :class:`tfcomp.hardware.CostTable` pricing every policy.

    Example:
        >>> space = HAQSpace(model, BISMO(), "latency", 0.5, 2, 8)
        >>> space.cost(space.wall(np.full((len(space.layers), 2), 8)))
    """

    state_dim = 10

    def __init__(self, model, hardware, resource: str, budget: float,
                 b_min: int, b_max: int, bits="native"):
        self.resource, self.budget = resource, budget
        self.b_min, self.b_max = b_min, b_max
        self.widths = searched_widths(hardware, b_min, b_max, bits)
        try:
            self.costs = CostTable(model, resource, hardware)
        except ValueError as e:
            raise ValueError(f"HAQ: {e}") from None
        layers = self.costs.layers
        if len(layers) < 2:
            raise ValueError(
                f"HAQ: model {model.name!r} has 1 quantizable layer "
                f"{layers}; it is both the first and the last layer, which "
                "stay at 8/8 bits, so there is nothing to search (needs at "
                "least 2).")
        n = len(layers)
        self.layers = layers
        self.specs = [self.costs.specs[x] for x in layers]
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
        # table[i, w, a]: a cache of self.costs (bits index directly; NaN
        # where not priced yet), filled for the searched widths up front.
        self.table = np.full((n, 9, 9), np.nan)
        grid = sorted(set(self.widths) | {8})
        for i in range(n):
            ws = grid if self.free[i, 0] else [8]
            as_ = grid if self.free[i, 1] else [8]
            for w in ws:
                for a in as_:
                    self._cost_of(i, w, a)
        self.constant = self.costs.constant
        self.full_cost = self.cost(np.full((n, 2), 8, dtype=np.int64))
        self.budget_cost = budget * self.full_cost
        self.min_policy = np.where(self.free, self.widths[0], 8
                                   ).astype(np.int64)
        self.min_cost = self.cost(self.min_policy)
        if self.min_cost > self.budget_cost * (1 + 1e-9):
            raise ValueError(
                f"HAQ: budget={budget} of the 8/8-bit {resource} cannot be "
                f"reached: with every searched bit-width at "
                f"{self.widths[0]} (the smallest of {list(self.widths)}; "
                "first and last layer at 8/8) the model "
                f"still costs {self.min_cost:.6g} = "
                f"{self.min_cost / self.full_cost:.4f} of the 8/8 cost "
                f"{self.full_cost:.6g}. The minimum reachable budget is "
                f"{math.ceil(self.min_cost / self.full_cost * 1e4) / 1e4}.")
        self._static = self._static_features(layers)

    def _cost_of(self, i, w, a) -> float:
        """Cost of layer ``i`` at ``(w, a)``: searched layers take any
        width in ``[b_min, b_max]`` or 8, fixed ones only 8."""
        w, a = int(w), int(a)
        ok = [(self.b_min <= b <= self.b_max or b == 8) if self.free[i, d]
              else b == 8 for d, b in ((0, w), (1, a))]
        if not all(ok):
            raise ValueError(
                f"bits ({w}, {a}) of layer {self.layers[i]!r} outside the "
                f"space ([{self.b_min}, {self.b_max}], fixed layers 8)")
        v = self.table[i, w, a]
        if np.isnan(v):
            try:
                v = self.costs.cost(self.layers[i], w, a)
            except ValueError as e:
                raise ValueError(
                    f"HAQ: {e} (HAQ searches widths {list(self.widths)}; "
                    "set b_min / b_max or bits=)") from None
            self.table[i, w, a] = v
        return float(v)

    def cost(self, policy) -> float:
        """Cost of ``policy`` (array (n_layers, 2) of (w, a))."""
        p = np.asarray(policy, dtype=np.int64).reshape(len(self.layers), 2)
        if p.min() < 1 or p.max() > 8:
            raise ValueError(f"bits must be in [1, 8]. Received {p.tolist()}")
        v = self.table[np.arange(len(self.layers)), p[:, 0], p[:, 1]]
        for i in np.flatnonzero(np.isnan(v)):
            v[i] = self._cost_of(i, *p[i])
        return self.constant + float(v.sum())

    def snap(self, bits: int) -> int:
        """The smallest searched width >= ``bits`` (the largest if none).

        Example:
            >>> HAQSpace(model, BitFusion(), "latency", 0.9, 2, 8).snap(5)
            8
        """
        for b in self.widths:
            if b >= bits:
                return b
        return self.widths[-1]

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

        Deviations: a step goes down to the next *searched* width
        (:attr:`widths`) that *lowers the layer's cost* (skipping widths
        that cost the same), and a width that no lower width makes cheaper
        is left alone. With every width searched, on cost models strictly
        monotone in the bits (BISMO, BOPs, size) this is exactly the
        paper's wall; on Bit Fusion, where 3-bit operands compute as 4-bit
        and 5-7 as 8-bit, the paper's wall would lower 4 to 3 (and 8 to 7,
        6, 5) for (almost) no saving, losing accuracy for nothing. (For
        ``resource="size"`` activation bits never change the cost, so they
        are never lowered.)
        """
        p = np.array(policy, dtype=np.int64).reshape(-1, 2).copy()
        p[~self.free] = 8
        limit = self.budget_cost * (1 + 1e-9)
        cost = self.cost(p)
        lowest = self.widths[0]
        while cost > limit:
            changed = False
            for i in range(len(self.layers) - 1, -1, -1):
                for d in (1, 0):
                    if not self.free[i, d] or p[i, d] <= lowest:
                        continue
                    old = self._cost_of(i, *p[i])
                    q = p[i].copy()
                    for b in reversed(self.widths):
                        if b >= p[i, d]:
                            continue
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
        """Bits array from ``{name: bits}`` (missing: ``b_max``; fixed: 8),
        clipped to ``[b_min, b_max]`` and snapped up to a searched width."""
        p = np.where(self.free, self.snap(self.b_max), 8).astype(np.int64)
        for name, (i, d) in zip(self.names, self._slots):
            v = values.get(name)
            if v is not None:
                p[i, d] = self.snap(min(self.b_max, max(self.b_min,
                                                        int(v))))
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
                    proposal[i, d] = self.snap(action_to_bits(
                        a, self.b_min, self.b_max))
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

    # -- warm start --------------------------------------------------------
    def policy_array(self, policy: dict) -> np.ndarray:
        """``{layer: (w, a)}`` as a bits array on the searched widths
        (missing layers 8/8; fixed layers 8/8; others clipped to
        ``[b_min, b_max]`` and snapped up), walled.

        Raises:
            ValueError: names that are not quantizable layers, or values
                that are not ``(w_bits, a_bits)`` integer pairs.
        """
        if not isinstance(policy, dict):
            raise ValueError("warm_start must be a {layer: (w_bits, a_bits)}"
                             " dict (e.g. from tfcomp.allocate_bits). "
                             f"Received: {type(policy).__name__}")
        unknown = sorted(set(policy) - set(self.layers))
        if unknown:
            raise ValueError(f"warm_start names layers that are not "
                             f"quantizable: {unknown[:8]}. Quantizable "
                             f"layers: {self.layers[:8]}...")
        values = {}
        for n, pair in policy.items():
            ok = isinstance(pair, (tuple, list)) and len(pair) == 2 and all(
                isinstance(b, (int, np.integer)) and not isinstance(b, bool)
                for b in pair)
            if not ok:
                raise ValueError(f"warm_start[{n!r}] must be a (w_bits, "
                                 f"a_bits) pair of ints. Received: {pair!r}")
            values["w_bits/" + n], values["a_bits/" + n] = pair
        values.update({k: 8 for k in self.names if k not in values})
        return self.wall(self.policy_from_values(values))

    def neighbours(self, policy, count: int, seed: int = 0) -> list:
        """Up to ``count`` distinct walled policies that move one searched
        bit-width of ``policy`` (a bits array) one searched width up or
        down, in a seeded random order.

        Example:
            >>> space.neighbours(space.policy_array(alloc), 4)
        """
        base = np.asarray(policy, dtype=np.int64)
        seen = {base.tobytes()}
        out = []
        for i, d in self._slots:
            k = self.widths.index(int(base[i, d])) if int(
                base[i, d]) in self.widths else None
            for step in (-1, 1):
                if k is None or not 0 <= k + step < len(self.widths):
                    continue
                q = base.copy()
                q[i, d] = self.widths[k + step]
                q = self.wall(q)
                if q.tobytes() not in seen:
                    seen.add(q.tobytes())
                    out.append(q)
        order = np.random.default_rng(seed).permutation(len(out))
        return [out[j] for j in order[:max(0, int(count))]]

    def actions(self, policy) -> list:
        """One action per episode step that makes :meth:`rollout` propose
        ``policy`` (the centre of each width's bin; 8 on fixed steps)."""
        p = np.asarray(policy, dtype=np.int64).reshape(-1, 2)
        return [bits_to_action(p[i, d] if self.free[i, d] else 8,
                               self.b_min, self.b_max)
                for i in range(len(self.layers)) for d in (0, 1)]
