"""AMC: AutoML for Model Compression as a keras-tuner search.

keras-tuner's split (DESIGN.md, "Tuners"):

* ``AMCHyperModel`` owns the reference model, the search space and the
  evaluation: one keras-tuner ``Float`` hyperparameter per prunable channel
  group (``"preserve/<group id>"``, the preserve ratio in ``[lbound, 1]``),
  ``build(hp)`` prunes the reference model (channel selection by importance
  and least-squares refit on calibration data, reusing
  :func:`tfcomp.pruning.lasso.lasso_prune`) and ``fit(hp, model)`` returns
  the metrics (``reward``, ``accuracy``, ``macs``, ``cost``,
  ``cost_ratio``). Any keras-tuner tuner (``RandomSearch``,
  ``BayesianOptimization``) can search this space.
* ``AMCOracle`` proposes one whole episode per trial: it rolls out the DDPG
  actor group by group (the state of a group depends on the earlier
  actions), clips each action with AMC's budget wall, and learns from the
  trial's reward when the trial ends.
* ``AMCTuner`` runs trials (prune, evaluate, write ``plan.json`` in the
  trial directory); ``get_best_plan()`` returns the best ``Plan``.

The budget wall makes every proposal feasible: the keep count of group
``t`` is at most the largest count for which the model, with the earlier
groups at their chosen counts and every later group at the lower bound,
costs no more than the budget. The same wall projects the values of other
tuners (random search, Bayesian optimisation) in ``build``, so every model
any tuner evaluates meets the target. Costs are exact MACs (``target=
"macs"``) or latencies from a ``LatencyTable`` / ``HardwareModel``
(``target="latency"``), computed from per-layer channel counts without
building the model.

Reference: He et al., AMC: AutoML for Model Compression and Acceleration on
Mobile Devices, ECCV 2018, arXiv:1802.03494.

Example:
    >>> hm = AMCHyperModel(model, x_train[:256], (x_val, y_val), budget=0.5)
    >>> tuner = AMCTuner(hm, max_trials=800, directory="runs")
    >>> tuner.search()
    >>> plan = tuner.get_best_plan()
"""

from __future__ import annotations

import math
import os

import keras
import keras_tuner as kt
import numpy as np

from tfcomp.tuners._common import (
    DDPGOracle,
    DDPGSearchTuner,
    accuracy,
    as_images,
    as_xy,
    atomic_write_text,
    check_fraction,
    minmax_columns,
)

__all__ = ["AMCHyperModel", "AMCOracle", "AMCTuner"]

_TARGETS = ("macs", "latency")
_REWARDS = ("error", "flops")
_PREFIX = "preserve/"


# ---------------------------------------------------------------------------
# the search space (environment)


class _ChannelCost:
    """Model cost as a function of the keep counts of the searched groups.

    Every costed layer (``LayerSpec``) knows which searched groups remove
    its input / output channels and how many kernel positions one channel
    of each group covers; its cost at given channel counts comes from
    ``layer_fn(spec_at_counts)`` (cached).
    """

    def __init__(self, specs, steps, layer_fn, constant: float):
        self.specs = list(specs)
        self.sizes = np.array([g.size for g in steps], dtype=np.int64)
        self.layer_fn = layer_fn
        self.constant = float(constant)
        index = {g.id: j for j, g in enumerate(steps)}
        by_name = {s.name: i for i, s in enumerate(self.specs)}
        self.cin_terms = [[] for _ in self.specs]
        self.cout_terms = [[] for _ in self.specs]
        self.owners = [set() for _ in self.specs]
        for g in steps:
            j = index[g.id]
            seen_tied = set()
            for m in g.members:
                i = by_name.get(m.layer)
                if i is None:
                    continue
                spec = self.specs[i]
                npos = len(m.indices)
                if spec.tied_channels:
                    if m.port not in ("in", "channels") or i in seen_tied:
                        continue
                    seen_tied.add(i)
                    self.cin_terms[i].append((j, npos))
                elif m.role == "consumer" and m.port == "in":
                    self.cin_terms[i].append((j, npos))
                elif m.role == "producer" and m.port == "out":
                    self.cout_terms[i].append((j, npos))
                else:
                    continue
                self.owners[i].add(j)
        self._cache: dict = {}

    def channels(self, i: int, counts) -> tuple[int, int]:
        spec = self.specs[i]

        def removed(terms):
            total = 0
            for j, npos in terms:
                size = int(self.sizes[j])
                total += int(round(npos * (size - int(counts[j])) / size))
            return total

        cin = max(1, spec.cin - removed(self.cin_terms[i]))
        cout = max(1, spec.cout - removed(self.cout_terms[i]))
        return cin, cout

    def layer(self, i: int, counts) -> float:
        cin, cout = self.channels(i, counts)
        key = (i, cin, cout)
        hit = self._cache.get(key)
        if hit is None:
            spec = self.specs[i]
            s = spec.with_channels(cin=cin) if spec.tied_channels else \
                spec.with_channels(cin=cin, cout=cout)
            hit = float(self.layer_fn(s))
            self._cache[key] = hit
        return hit

    def __call__(self, counts, subset=None) -> float:
        idx = range(len(self.specs)) if subset is None else subset
        return self.constant + sum(self.layer(i, counts) for i in idx)


class _AMCSpace:
    """Groups, state embedding, action mapping and budget wall of AMC."""

    state_dim = 10

    def __init__(self, model, target: str, budget: float, hardware, bits,
                 lbound: float, round_to: int):
        from tfcomp.graph import DependencyGraph
        from tfcomp.hardware import extract_specs
        from tfcomp.cost import profile
        from tfcomp.pruning.lasso import resolve_targets

        self.target, self.budget = target, budget
        self.lbound, self.round_to = lbound, round_to
        graph = DependencyGraph(model)
        self.graph = graph
        try:
            counts, skipped, _ = resolve_targets(graph, 0.0, what="AMC")
        except ValueError as e:
            raise ValueError(
                f"AMC: model {model.name!r} has no prunable layers (no "
                "channel group whose producers can be pruned and whose "
                f"consumers can be refit). {e}") from None
        self.skipped = dict(skipped)
        steps, allowed = [], []
        for g in graph.groups:
            if g.id not in counts:
                continue
            options = self._options(g.size)
            if len(options) < 2:
                self.skipped[g.id] = (
                    f"{g.size} channels leave no choice with lbound="
                    f"{lbound} and round_to={round_to}")
                continue
            steps.append(g)
            allowed.append(options)
        if not steps:
            raise ValueError(
                f"AMC: model {model.name!r} has no prunable layers to search"
                f" (lbound={lbound}, round_to={round_to}). Skipped groups: "
                f"{self.skipped}")
        self.steps = steps
        self.allowed = allowed
        self.names = [_PREFIX + g.id for g in steps]
        self.sizes = np.array([g.size for g in steps], dtype=np.int64)
        self.kmin = np.array([a[0] for a in allowed], dtype=np.int64)

        specs = extract_specs(model)
        dense_macs = profile(model).macs
        spec_macs = sum(s.macs for s in specs)
        # Layers without a spec keep their dense MACs (an upper bound).
        self.macs_cost = _ChannelCost(specs, steps, lambda s: s.macs,
                                      max(0, dense_macs - spec_macs))
        if target == "macs":
            self.cost = self.macs_cost
            self.unit = "MACs"
        else:
            w, a = bits

            def layer_fn(s):
                return hardware.layer_cost(s, w, a).latency_s

            self.cost = _ChannelCost(specs, steps, layer_fn,
                                     float(getattr(hardware, "overhead_s",
                                                   0.0)))
            self.unit = "s"
            self._probe_table(hardware, bits)
        self.dense_cost = self.cost(self.sizes)
        self.budget_cost = budget * self.dense_cost
        self.min_cost = self.cost(self.kmin)
        if self.min_cost > self.budget_cost * (1 + 1e-9):
            raise ValueError(
                f"AMC: budget={budget} of the dense {target} cannot be "
                f"reached: with every searched group at the lower bound "
                f"(preserve ratio lbound={lbound}, round_to={round_to}) the "
                f"model still costs {self._fmt(self.min_cost)} = "
                f"{self.min_cost / self.dense_cost:.4f} of the dense "
                f"{self._fmt(self.dense_cost)}. The minimum reachable budget "
                f"is {math.ceil(self.min_cost / self.dense_cost * 1e4) / 1e4}"
                " (lower lbound or round_to to go further).")
        self._static = self._static_features()
        # later-step ownership for the "rest" feature
        self._rest_sets = []
        for j in range(len(steps)):
            self._rest_sets.append(
                [i for i, own in enumerate(self.cost.owners)
                 if own and max(own) > j])

    def _fmt(self, v: float) -> str:
        if self.unit == "MACs":
            return f"{int(round(v)):,} MACs"
        return f"{v * 1e3:.4g} ms"

    def _probe_table(self, hardware, bits) -> None:
        """Costs every layer at the channel extremes: a clear error now
        instead of one in the middle of a search."""
        lo = self.kmin
        hi = self.sizes
        for i, spec in enumerate(self.cost.specs):
            for cin_counts in (lo, hi):
                for cout_counts in (lo, hi):
                    cin, _ = self.cost.channels(i, cin_counts)
                    _, cout = self.cost.channels(i, cout_counts)
                    s = spec.with_channels(cin=cin) if spec.tied_channels \
                        else spec.with_channels(cin=cin, cout=cout)
                    try:
                        hardware.layer_cost(s, *bits)
                    except ValueError as e:
                        raise ValueError(
                            f"AMC target='latency': the hardware table "
                            f"cannot cost layer {spec.name!r} at cin={cin},"
                            f" cout={cout} (bits {tuple(bits)}): {e} Build "
                            "the table from this model with channel "
                            "fractions down to the lower bound "
                            f"lbound={self.lbound}, e.g. measure_tflite_"
                            "table(model, channel_fractions=(0.2, 0.4, 0.6,"
                            " 0.8, 1.0)).") from None

    def _options(self, size: int) -> list:
        lo = max(1, math.ceil(self.lbound * size - 1e-9))
        out = set()
        for x in range(lo, size + 1):
            out.add(self._round(x, size))
        return sorted(out)

    def _round(self, x: int, size: int) -> int:
        r = self.round_to
        return int(min(size, max(1, math.ceil(x / r) * r)))

    def count(self, j: int, ratio: float) -> int:
        """Keep count of step ``j`` at preserve ratio ``ratio``."""
        size = int(self.sizes[j])
        x = max(1, math.ceil(float(ratio) * size - 1e-9))
        return int(max(self.kmin[j], self._round(x, size)))

    def _static_features(self) -> np.ndarray:
        by_name = {s.name: s for s in self.cost.specs}
        rows = []
        for j, g in enumerate(self.steps):
            specs = [by_name[m.layer] for m in g.producers
                     if m.layer in by_name]
            p = specs[0] if specs else None
            params = sum(s.weight_count for s in specs)
            if p is None:
                rows.append([j, 0, 0, g.size, 1, 1, params])
                continue
            rows.append([j, 1.0 if p.op == "dense" else 0.0, p.cin, g.size,
                         p.stride[0], p.kernel[0], params])
        return minmax_columns(rows)

    # -- the wall ------------------------------------------------------
    def max_count(self, j: int, counts) -> int:
        """Largest allowed keep count of step ``j`` meeting the budget with
        steps < j at ``counts`` and steps > j at the lower bound."""
        trial = np.array(counts, dtype=np.int64)
        trial[j + 1:] = self.kmin[j + 1:]
        options = self.allowed[j]
        limit = self.budget_cost * (1 + 1e-9)
        lo, hi = 0, len(options) - 1
        trial[j] = options[hi]
        if self.cost(trial) <= limit:
            return options[hi]
        # options[0] is feasible by induction (checked at construction)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            trial[j] = options[mid]
            if self.cost(trial) <= limit:
                lo = mid
            else:
                hi = mid
        return options[lo]

    def project(self, ratios) -> np.ndarray:
        """Keep counts for ``{name: ratio}`` after the budget wall."""
        counts = self.sizes.copy()
        for j, name in enumerate(self.names):
            r = ratios.get(name, 1.0)
            if r is None:
                r = 1.0
            c = self.count(j, r)
            counts[j] = min(c, self.max_count(j, counts))
        return counts

    def action_to_ratio(self, a: float) -> float:
        return self.lbound + float(a) * (1.0 - self.lbound)

    def ratio_to_action(self, r: float) -> float:
        return float(np.clip((r - self.lbound) / (1.0 - self.lbound), 0, 1))

    # -- the episode -------------------------------------------------------
    def state(self, j: int, counts, prev_action: float) -> np.ndarray:
        cur = self.cost(counts)
        reduced = (self.dense_cost - cur) / self.dense_cost
        rest = self.cost(counts, self._rest_sets[j]) - self.cost.constant
        rest /= self.dense_cost
        return np.concatenate([self._static[j],
                               [reduced, rest, prev_action]]).astype(
                                   np.float32)

    def rollout(self, policy):
        """One AMC episode: ``(values, transitions, info)``.

        Stored actions are the executed (walled, rounded) ones, mapped back
        to [0, 1].
        """
        counts = self.sizes.copy()
        prev = 1.0
        states, actions = [], []
        for j in range(len(self.steps)):
            s = self.state(j, counts, prev)
            a = float(np.asarray(policy(s), np.float64).reshape(-1)[0])
            c = self.count(j, self.action_to_ratio(np.clip(a, 0, 1)))
            c = min(c, self.max_count(j, counts))
            counts[j] = c
            prev = self.ratio_to_action(c / self.sizes[j])
            states.append(s)
            actions.append([prev])
        final = self.state(len(self.steps) - 1, counts, prev)
        n = len(states)
        transitions = [(states[j], actions[j],
                        states[j + 1] if j + 1 < n else final, j == n - 1)
                       for j in range(n)]
        values = {name: float(counts[j] / self.sizes[j])
                  for j, name in enumerate(self.names)}
        cost = self.cost(counts)
        return values, transitions, {"cost": cost,
                                     "cost_ratio": cost / self.dense_cost}


# ---------------------------------------------------------------------------
# per-episode pruning engine


class _Pruner:
    """Channel selection + least-squares refit for many proposals.

    The per-layer step of AMC, built from
    :mod:`tfcomp.pruning.reconstruction` as
    :func:`tfcomp.pruning.lasso.lasso_prune` runs it (groups in topological
    order; consumer inputs from the network pruned so far, targets from the
    original network; coupled consumers share one channel set), but made
    cheap to repeat: the original network's targets and sample locations
    are computed once, and one persistent work model (reset to the original
    weights for every proposal) is masked in place, so a proposal costs one
    forward pass per pruned group plus the least-squares solves. The masked
    model equals the physically pruned one (``mask_channels`` ==
    ``prune_channels``), so it is what the reward evaluates.
    """

    def __init__(self, model, graph, steps, x, selector, samples_per_image,
                 batch_size, seed, ridge=1e-6):
        from tfcomp.graph import DependencyGraph
        from tfcomp.pruning.reconstruction import layer_kernel, sample_patches

        self.model, self.graph, self.steps = model, graph, steps
        self.x = x
        self.selector, self.seed, self.ridge = selector, seed, ridge
        self.batch_size = batch_size
        self.paths = []
        for g in steps:
            seen = []
            for m in g.consumers:
                if m.layer not in seen:
                    seen.append(m.layer)
            self.paths.append(seen)
        consumers = []
        for ps in self.paths:
            for p in ps:
                if p not in consumers:
                    consumers.append(p)
        orig = {p: graph.layer(p) for p in consumers}
        ext = keras.Model(model.inputs[0], [orig[p].input for p in consumers])
        self.locs = {p: [] for p in consumers}
        targets = {p: [] for p in consumers}
        weights = {p: layer_kernel(orig[p]) for p in consumers}
        for a, outs in self._batches(ext):
            for ci, (p, arr) in enumerate(zip(consumers, outs)):
                rs = np.random.SeedSequence([int(seed), ci, a]
                                            ).generate_state(1)
                patches, loc = sample_patches(orig[p], arr,
                                              samples_per_image, int(rs[0]))
                w0, b0 = weights[p]
                y = np.einsum("mkp,kpn->mn", patches, w0, optimize=True)
                if b0 is not None:
                    y = y + b0
                self.locs[p].append(loc)
                targets[p].append(y.astype("float32"))
        self.targets = {p: np.concatenate(v, 0) for p, v in targets.items()}
        self.work = keras.models.clone_model(model)
        self.original_weights = model.get_weights()
        self.work.set_weights(self.original_weights)
        self.work_graph = DependencyGraph(self.work)
        self.extractors = [
            keras.Model(self.work.inputs[0],
                        [self.work.get_layer(p).input for p in ps])
            for ps in self.paths]

    def _batches(self, extractor):
        bs = self.batch_size
        for a in range(0, self.x.shape[0], bs):
            out = extractor(self.x[a:a + bs], training=False)
            if not isinstance(out, (list, tuple)):
                out = [out]
            yield a, [keras.ops.convert_to_numpy(o) for o in out]

    def _units(self, g, path, port_size):
        units = np.full(port_size, -1, dtype=np.int64)
        for m in g.consumers:
            if m.layer == path:
                units[m.indices] = m.units
        return units

    def _out_mask(self, path, removed, size):
        mask = np.ones(size, bool)
        for gid, units in removed.items():
            for m in self.graph.group(gid).producers:
                if m.layer == path:
                    mask[m.positions(units)] = False
        return None if mask.all() else mask

    def run(self, counts) -> dict:
        """Prunes the work model to ``counts`` (masked); returns keeps."""
        from tfcomp.pruning.plan import Plan
        from tfcomp.pruning.reconstruction import (
            LayerSamples,
            layer_kernel,
            least_squares_refit,
            sample_patches,
            select_channels,
        )
        from tfcomp.pruning.surgery import mask_channels

        self.work.set_weights(self.original_weights)
        removed, keeps = {}, {}
        bs = self.batch_size
        for j, g in enumerate(self.steps):
            c = int(counts[j])
            if c >= g.size:
                continue
            paths = self.paths[j]
            layers = [self.work.get_layer(p) for p in paths]
            patches = {p: [] for p in paths}
            for a, outs in self._batches(self.extractors[j]):
                for p, lay, arr in zip(paths, layers, outs):
                    pt, _ = sample_patches(lay, arr,
                                           locations=self.locs[p][a // bs])
                    patches[p].append(pt)
            samples = []
            for p, lay in zip(paths, layers):
                w, b = layer_kernel(lay)
                samples.append(LayerSamples(
                    x=np.concatenate(patches[p], 0), y=self.targets[p],
                    kernel=w, bias=b, units=self._units(g, p, w.shape[1]),
                    layer=p, kernel_shape=tuple(lay.kernel.shape),
                    out_mask=self._out_mask(p, removed, w.shape[2])))
            keep, _ = select_channels(samples, c, self.selector, self.seed)
            for smp, lay in zip(samples, layers):
                kernel, bias, _ = least_squares_refit(smp, keep, self.ridge)
                lay.kernel.assign(kernel.astype("float32"))
                if bias is not None:
                    lay.bias.assign(bias.astype("float32"))
            keeps[g.id] = np.asarray(keep)
            removed[g.id] = np.setdiff1d(np.arange(g.size), keep)
            mask_channels(self.work, Plan.from_removed(self.graph, removed),
                          inplace=True, graph=self.work_graph)
        return keeps


# ---------------------------------------------------------------------------
# HyperModel


def _values(hp) -> dict:
    if isinstance(hp, dict):
        return hp
    return dict(hp.values)

class AMCHyperModel(kt.HyperModel):
    """AMC's search space over a trained model (a keras-tuner HyperModel).

    Hyperparameters: ``"preserve/<group id>"`` (``Float`` in ``[lbound,
    1]``) for every prunable channel group whose consumers can be refit
    (convolutions and dense layers; groups tied to the model's input or
    output, barriers and groups too small to prune under ``round_to`` are
    left whole and listed in ``skipped``). A ratio ``r`` keeps
    ``ceil(r * size)`` channels rounded up to a multiple of ``round_to``
    (capped at the group size); the budget wall then lowers counts so the
    model never exceeds ``budget``.

    ``build(hp)`` returns the pruned model: channels chosen by ``selector``
    on each group's consumers and their kernels refit by least squares on
    ``calibration_data`` (``tfcomp.pruning.lasso.lasso_prune``), no
    fine-tuning. ``fit(hp, model)`` evaluates it on ``validation_data`` and
    returns ``{"reward", "accuracy", "macs", "cost", "cost_ratio"}``.

    Args:
        model: a trained functional / Sequential ``keras.Model`` (one
            input), left untouched.
        calibration_data: images (or ``(x, y)``) for the least-squares refit.
        validation_data: held-out ``(x, y)`` for the reward.
        target: ``"macs"`` (exact multiply-accumulates) or ``"latency"``
            (from ``hardware``).
        budget: the allowed cost as a fraction of the dense model's, in
            (0, 1].
        hardware: for ``target="latency"``: a ``LatencyTable`` (e.g. from
            ``measure_tflite_table``) or any ``HardwareModel``.
        bits: ``(w_bits, a_bits)`` looked up in ``hardware`` (default
            32/32 for bit-invariant measured tables, else 8/8).
        lbound: lowest preserve ratio (paper: 0.2).
        round_to: kept channel counts are multiples of this (official code:
            8), or the whole group.
        selector: channel selection, ``"l1"`` (the official AMC code's
            consumer-side L1 norm), ``"lasso"`` (the paper's LASSO) or
            ``"random"``.
        reward: ``"error"`` (R_err = -error) or ``"flops"`` (R_FLOPs =
            -error * log(MACs)).
        samples_per_image: refit samples per calibration image and layer.
        max_images: calibration images used (the first ones). The official
            code uses 3000; 256 is a CPU-scale default.
        batch_size: images per forward pass.
        seed: seeds the refit's location draws.
        name: HyperModel name.

    Raises:
        ValueError: no prunable layers, an unreachable ``budget`` (the
            message gives the minimum), a table that cannot cost a layer,
            bad arguments.

    Reference: He et al., arXiv:1802.03494.

    Example:
        >>> hm = AMCHyperModel(model, x[:256], (x_val, y_val), budget=0.5)
        >>> tuner = keras_tuner.RandomSearch(
        ...     hm, objective=keras_tuner.Objective("reward", "max"),
        ...     max_trials=20)
    """

    def __init__(self, model: keras.Model, calibration_data,
                 validation_data, *, target: str = "macs",
                 budget: float = 0.5, hardware=None, bits=None,
                 lbound: float = 0.2, round_to: int = 8,
                 selector: str = "l1", reward: str = "error",
                 samples_per_image: int = 10, max_images: int | None = 256,
                 batch_size: int = 256, seed: int = 0, name: str = "amc"):
        super().__init__(name=name)
        if not isinstance(model, keras.Model):
            raise TypeError(f"model must be a keras.Model. Received: "
                            f"{type(model).__name__}")
        if target not in _TARGETS:
            raise ValueError(f"target must be one of {_TARGETS}. Received: "
                             f"target={target!r}")
        if reward not in _REWARDS:
            raise ValueError(f"reward must be one of {_REWARDS}. Received: "
                             f"reward={reward!r}")
        if selector not in ("l1", "lasso", "random"):
            raise ValueError("selector must be 'l1', 'lasso' or 'random'. "
                             f"Received: selector={selector!r}")
        budget = check_fraction("budget", budget)
        lbound = check_fraction("lbound", lbound)
        if lbound >= 1.0:
            raise ValueError(f"lbound must be < 1. Received: lbound={lbound}")
        if isinstance(round_to, bool) or not isinstance(
                round_to, (int, np.integer)) or round_to < 1:
            raise ValueError(f"round_to must be an int >= 1. Received: "
                             f"round_to={round_to!r}")
        for nm, v, lo in (("samples_per_image", samples_per_image, 1),
                          ("batch_size", batch_size, 1), ("seed", seed, 0)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) \
                    or v < lo:
                raise ValueError(f"{nm} must be an int >= {lo}. Received: "
                                 f"{nm}={v!r}")
        if target == "latency":
            from tfcomp.hardware import HardwareModel, LatencyTable
            if not isinstance(hardware, HardwareModel):
                raise ValueError(
                    "target='latency' needs hardware=a LatencyTable (e.g. "
                    "measure_tflite_table(model)) or a HardwareModel. "
                    f"Received: hardware={hardware!r}")
            if bits is None:
                bits = (32, 32) if isinstance(hardware, LatencyTable) and \
                    hardware.bit_invariant else (8, 8)
            bits = tuple(int(b) for b in bits)
        elif hardware is not None:
            raise ValueError("hardware is only used with target='latency'. "
                             f"Received: target={target!r}, hardware="
                             f"{hardware!r}")
        self.model = model
        self.target, self.budget, self.hardware = target, budget, hardware
        self.bits = bits
        self.lbound, self.round_to = lbound, int(round_to)
        self.selector, self.reward = selector, reward
        self.samples_per_image = int(samples_per_image)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        x = as_images(calibration_data, "calibration_data")
        self.calibration_x = x if max_images is None else x[:int(max_images)]
        self.validation_data = as_xy(validation_data, "validation_data")
        self.space = _AMCSpace(model, target, budget, hardware, bits,
                               lbound, self.round_to)
        self._pruner = None

    # -- introspection -----------------------------------------------------
    @property
    def group_ids(self) -> list:
        """Ids of the searched channel groups, in episode order."""
        return [g.id for g in self.space.steps]

    @property
    def skipped(self) -> dict:
        """``{group id: reason}`` of prunable groups left whole."""
        return dict(self.space.skipped)

    @property
    def dense_cost(self) -> float:
        """Cost of the unpruned model (MACs or seconds)."""
        return self.space.dense_cost

    @property
    def min_cost(self) -> float:
        """Cost with every searched group at the lower bound."""
        return self.space.min_cost

    # -- the space ---------------------------------------------------------
    def declare_hyperparameters(self, hp) -> None:
        for name in self.space.names:
            hp.Float(name, self.lbound, 1.0, default=1.0)

    def keep_counts(self, hp) -> dict:
        """``{group id: kept channels}`` after rounding and the budget wall.

        Args:
            hp: ``HyperParameters`` or a ``{name: ratio}`` dict (missing
                names keep their group whole).

        Example:
            >>> hm.keep_counts({"preserve/s1b1_conv1": 0.5})
        """
        counts = self.space.project(_values(hp))
        return {g.id: int(c) for g, c in zip(self.space.steps, counts)}

    def predicted_cost(self, hp) -> float:
        """Cost of the pruned model from the channel counts (no build)."""
        return self.space.cost(self.space.project(_values(hp)))

    def _register(self, hp) -> None:
        if not isinstance(hp, dict):
            for name in self.space.names:
                hp.Float(name, self.lbound, 1.0, default=1.0)

    def _engine(self) -> _Pruner:
        if self._pruner is None:
            self._pruner = _Pruner(
                self.model, self.space.graph, self.space.steps,
                self.calibration_x, self.selector, self.samples_per_image,
                self.batch_size, self.seed)
        return self._pruner

    def _plan(self, keeps: dict, counts: np.ndarray):
        from tfcomp.pruning.plan import Plan

        sizes = self.space.sizes
        cost = self.space.cost(counts)
        meta = {
            "method": "amc", "selector": self.selector,
            "target": self.target, "budget": self.budget,
            "round_to": self.round_to, "lbound": self.lbound,
            "preserve": {gid: float(c / n) for gid, c, n in
                         zip(self.group_ids, counts, sizes)},
            "predicted_cost": float(cost),
            "predicted_cost_ratio": float(cost / self.space.dense_cost),
            "macs_before": int(round(self.space.macs_cost(sizes))),
            "macs_after": int(round(self.space.macs_cost(counts)))}
        return Plan.from_keep(self.space.graph, keeps, meta=meta)

    def evaluate(self, hp, validation_data=None):
        """Prunes (masked, refit) and evaluates a proposal; no model build.

        What ``AMCTuner`` runs per trial: the masked model gives the same
        outputs as the physically pruned one, and MACs / cost come from the
        channel counts (exact).

        Returns:
            ``(metrics, plan)``; metrics as :meth:`fit`.

        Example:
            >>> metrics, plan = hm.evaluate({"preserve/s1b1_conv1": 0.5})
        """
        self._register(hp)
        counts = self.space.project(_values(hp))
        engine = self._engine()
        keeps = engine.run(counts)
        metrics = self._metrics(engine.work, counts, validation_data)
        return metrics, self._plan(keeps, counts)

    def prune(self, hp):
        """``(pruned_model, plan)``: physically smaller, refit, not
        fine-tuned.

        Example:
            >>> small, plan = hm.prune(tuner.get_best_hyperparameters()[0])
        """
        from tfcomp.pruning.surgery import prune_channels

        self._register(hp)
        counts = self.space.project(_values(hp))
        engine = self._engine()
        keeps = engine.run(counts)
        plan = self._plan(keeps, counts)
        return prune_channels(engine.work, plan,
                              graph=engine.work_graph), plan

    def build(self, hp):
        """The pruned (least-squares refit, not fine-tuned) model."""
        return self.prune(hp)[0]

    def _metrics(self, model, counts, validation_data) -> dict:
        x, y = (self.validation_data if validation_data is None
                else as_xy(validation_data, "validation_data"))
        acc = accuracy(model, x, y, self.batch_size)
        macs = float(self.space.macs_cost(counts))
        cost = float(self.space.cost(counts))
        error = 1.0 - acc
        reward = -error if self.reward == "error" else \
            -error * math.log(max(macs, 1.0))
        return {"reward": float(reward), "accuracy": float(acc),
                "macs": macs, "cost": cost,
                "cost_ratio": cost / self.space.dense_cost}

    def fit(self, hp, model, *args, validation_data=None, **kwargs):
        """Evaluates a model ``build(hp)`` returned, without fine-tuning.

        Args:
            hp: the trial's hyperparameters.
            model: the pruned model.
            validation_data: optional ``(x, y)`` replacing the held-out
                split given at construction.
            *args, **kwargs: ignored (keras-tuner passes ``callbacks``).

        Returns:
            ``{"reward", "accuracy", "macs", "cost", "cost_ratio"}``.
        """
        self._register(hp)
        counts = self.space.project(_values(hp))
        return self._metrics(model, counts, validation_data)


# ---------------------------------------------------------------------------
# Oracle and Tuner


class AMCOracle(DDPGOracle):
    """Proposes AMC episodes with a DDPG agent (keras-tuner Oracle).

    One trial is one episode over the hypermodel's channel groups, in
    topological order. State per group (10 features): index, layer type
    (conv 0 / dense 1), c_in, c_out, stride, kernel size, #params
    (min-max normalised over the groups), the cost reduced so far and the
    cost of the layers later groups decide (fractions of the dense cost),
    and the previous action. The action ``a`` in [0, 1] maps to the
    preserve ratio ``lbound + a * (1 - lbound)``; the budget wall clips it.
    When the trial ends, its transitions enter the replay buffer with the
    trial's ``reward`` and, after the warm-up, the agent makes one update
    per transition (as the official code).

    Defaults are the paper's: 800 episodes, 100 warm-up episodes, sigma 0.5
    decaying by 0.95 per episode, replay of 100 transitions per group.
    Tests and benchmarks use far fewer episodes (CPU scale).

    Args:
        hypermodel: an ``AMCHyperModel``.
        max_trials: episodes.
        seed: seeds the agent.
        warmup: random episodes before the actor acts.
        sigma_decay, init_sigma: exploration noise schedule.
        updates_per_episode: None = one update per transition.
        agent_config: further ``DDPG`` arguments (``hidden``, ``batch_size``,
            ``buffer_size``, learning rates, ...).
        **kwargs: ``keras_tuner.Oracle`` arguments (``max_retries_per_trial``
            ...).

    Reference: He et al., arXiv:1802.03494.

    Example:
        >>> oracle = AMCOracle(hm, max_trials=800, seed=0)
        >>> tuner = AMCTuner(hm, oracle=oracle, directory="runs")
    """

    def __init__(self, hypermodel: AMCHyperModel, max_trials: int = 800,
                 seed: int = 0, warmup: int = 100, sigma_decay: float = 0.95,
                 init_sigma: float = 0.5,
                 updates_per_episode: int | None = None,
                 agent_config: dict | None = None, **kwargs):
        if not isinstance(hypermodel, AMCHyperModel):
            raise TypeError("hypermodel must be an AMCHyperModel. Received: "
                            f"{type(hypermodel).__name__}")
        config = {"warmup": warmup, "sigma_decay": sigma_decay,
                  "init_sigma": init_sigma,
                  "buffer_size": 100 * len(hypermodel.space.steps)}
        config.update(agent_config or {})
        super().__init__(hypermodel.space, max_trials=max_trials, seed=seed,
                         agent_config=config,
                         updates_per_episode=updates_per_episode, **kwargs)


class AMCTuner(DDPGSearchTuner):
    """Runs an AMC search (or any keras-tuner oracle over its space).

    Each trial prunes the reference model with the proposed preserve
    ratios (least-squares refit), evaluates it without fine-tuning, writes
    the ``Plan`` to ``<trial dir>/plan.json`` and reports ``reward``,
    ``accuracy``, ``macs``, ``cost`` and ``cost_ratio``.

    Distributed search uses keras-tuner's chief/worker mode: run the same
    script with ``KERASTUNER_TUNER_ID=chief`` (the oracle and its agent live
    there) and with ``KERASTUNER_TUNER_ID=tuner<i>`` on the workers, all
    with ``KERASTUNER_ORACLE_IP`` / ``KERASTUNER_ORACLE_PORT``; each process
    uses its own ``directory`` (the chief's holds ``oracle.json`` and the
    agent). Deviation from the paper's sequential loop: with several
    workers, an episode is proposed while earlier ones are still running,
    so it uses the agent as updated by the episodes finished so far.

    Args:
        hypermodel: an ``AMCHyperModel``.
        oracle: None for an ``AMCOracle``, or any keras-tuner oracle whose
            objective is ``reward`` (e.g. ``RandomSearchOracle``).
        max_trials: episodes (AMCOracle only; default 800).
        seed: seeds the AMCOracle's agent.
        directory, project_name, overwrite, tuner_id: as keras-tuner
            (``overwrite=False`` resumes an existing project).
        **oracle_kwargs: further ``AMCOracle`` arguments.

    Example:
        >>> tuner = AMCTuner(hm, max_trials=50, directory="runs",
        ...                  warmup=10)
        >>> tuner.search(verbose=0)
        >>> plan = tuner.get_best_plan()
    """

    hypermodel_cls = AMCHyperModel
    oracle_cls = AMCOracle
    default_trials = 800

    def run_trial(self, trial, *args, **kwargs):
        metrics, plan = self.hypermodel.evaluate(
            trial.hyperparameters, kwargs.get("validation_data"))
        atomic_write_text(
            os.path.join(self.get_trial_dir(trial.trial_id), "plan.json"),
            plan.to_json(indent=1))
        return metrics

    def load_model(self, trial):
        """The trial's pruned model (rebuilt: deterministic refit)."""
        return self.hypermodel.build(trial.hyperparameters)

    def get_best_plan(self):
        """The ``Plan`` of the best trial (highest reward).

        Read from the trial's ``plan.json``, or recomputed from its values
        when the file is not on this machine.

        Example:
            >>> small = tfcomp.prune_channels(model, tuner.get_best_plan())
        """
        from tfcomp.pruning.plan import Plan

        trials = self.oracle.get_best_trials(1)
        if not trials:
            raise ValueError("No trial has finished yet: run search() first.")
        path = os.path.join(self.get_trial_dir(trials[0].trial_id),
                            "plan.json")
        if os.path.exists(path):
            return Plan.load(path)
        return self.hypermodel.prune(trials[0].hyperparameters)[1]
