"""MetaPruning's evolutionary search as a keras-tuner Oracle, and
``metaprune``, the whole method.

``MetaPruningOracle`` proposes one candidate per trial: a width scale per
prunable channel group (hyperparameters ``"width/<group id>"``, indices
into ``scales``). Generation 0 is ``population`` random candidates;
every later generation is ``mutations`` mutants (each gene moved to
another scale with probability ``mutation_prob``) and ``crossovers``
crossovers (each gene from one of two different parents) of the
``top_k`` best candidates so far, filled up to ``population`` with
random candidates when draws run short (as the official search does).
A candidate is kept only if its cost lies in ``[lower * budget,
budget]`` and its channel counts were not proposed before; otherwise it
is redrawn. A trial reports ``fitness`` (held-out accuracy of the
PruningNet's weights at those widths, BatchNorm statistics recomputed
per candidate). Defaults: the paper's population 50, 25 mutations
(p = 0.1), 25 crossovers, 20 generations, top-k 10 (official code).

The lower bound follows the official ResNet search script
(``resnet/searching/search.py``: candidates kept only between
``min_FLOPs = 1950`` and ``max_FLOPs = 2050`` MFLOPs, so ``lower`` =
0.95); its MobileNet scripts and the paper state only the upper bound
(``lower=0``). Without it the search undershoots: most random
candidates lie far below the budget (ResNet-20 at a 50% MACs budget:
94% of uniformly drawn candidates pass, median 31% MACs), and a short
search on a noisy fitness does not climb back, so the found network is
compared with baselines at a lower cost. The random candidates draw
their scale indices from ``init_range`` (default: all of them, as the
MobileNet scripts; the ResNet script draws from ``[0.4, 0.8) * 31``,
i.e. ``init_range=(12, 24)``). State
(generation, queue, scores, top-k, the random generator) is JSON in
``oracle.json``, written atomically after each trial: a killed search
resumes with the same next population.

``metaprune(model, train_data, val_data, target_macs=0.5)`` trains the
:class:`tfcomp.pruning.metapruning.PruningNet`, runs the search and
returns the best candidate's :class:`tfcomp.pruning.Plan`; retrain it from
scratch with :func:`tfcomp.pruning.rethinking.scratch_setup` (the paper
trains the found network from scratch).

Reference: Liu et al., MetaPruning, ICCV 2019, arXiv:1903.10258.

Example:
    >>> plan = metaprune(model, (x, y), (xv, yv), target_macs=0.5)
    >>> small = tfcomp.prune_channels(model, plan)
    >>> setup = tfcomp.pruning.scratch_setup(small, base_epochs=20,
    ...                                      dense_macs=model)
"""

from __future__ import annotations

import json
import os

import keras_tuner as kt
import numpy as np
from keras_tuner.engine.trial import TrialStatus

from tfcomp._batches import take
from tfcomp._io import atomic_write_text, check_positive_int
from tfcomp._unpinned import unpinned
from tfcomp.pruning.metapruning import PAPER_SCALES, PruningNet, kept_count
from tfcomp.pruning.targets import ChannelMacs, check_target_macs
from tfcomp.tuners import _common as common

__all__ = ["MetaPruningOracle", "metaprune"]

_KEY = "tfcomp_metapruning"


class MetaPruningOracle(kt.Oracle):
    """Evolutionary search over per-group widths under a budget.

    Args:
        sizes: ``{group id: channels}`` (``PruningNet.sizes``).
        cost: ``{group id: kept channels} -> cost`` (e.g. a
            :class:`tfcomp.pruning.targets.ChannelMacs`, or latencies).
        budget: the largest cost a candidate may have.
        lower: a candidate must cost at least ``lower * budget``
            (official ResNet search: 0.95; 0: only the upper bound).
        scales: width scales (paper: 0.1..1.0 step 0.03).
        population, top_k, mutations, mutation_prob, crossovers,
        generations: the evolution (paper: 50, 10, 25, 0.1, 25, 20).
        init_range: ``(low, high)`` scale indices (high excluded) the
            random candidates draw from (None: all).
        seed: seeds the random choices.
        max_draws: draws per candidate before giving up on a generation.

    Example:
        >>> oracle = MetaPruningOracle(net.sizes, ChannelMacs(graph),
        ...                            budget=0.5 * dense_macs)
    """

    def __init__(self, sizes: dict, cost, budget: float,
                 lower: float = 0.95, scales=PAPER_SCALES,
                 population: int = 50, top_k: int = 10,
                 mutations: int = 25, mutation_prob: float = 0.1,
                 crossovers: int = 25, generations: int = 20,
                 init_range=None, seed: int = 0, max_draws: int = 200,
                 **kwargs):
        common.check_ints(population=(population, 1), top_k=(top_k, 1),
                          mutations=(mutations, 0), crossovers=(crossovers, 0),
                          generations=(generations, 1), seed=(seed, 0),
                          max_draws=(max_draws, 1))
        self.sizes = {str(k): int(v) for k, v in sizes.items()}
        self.groups = list(self.sizes)
        self.scales = [float(s) for s in scales]
        self.cost = cost
        self.budget = float(budget)
        self.lower = common.check_fraction("lower", lower, False)
        self.init_range = _check_range(init_range, len(self.scales))
        order = np.argsort(self.scales)
        smallest = self.cost_of([int(order[0])] * len(self.groups))
        if smallest > self.budget:
            raise ValueError(
                f"budget {self.budget:,.0f} is below what the smallest "
                f"scales reach ({smallest:,.0f} at scale {min(self.scales)}"
                " in every group). Received: budget / target too small")
        largest = self.cost_of([int(order[-1])] * len(self.groups))
        if largest < self.lower * self.budget:
            raise ValueError(
                f"lower * budget = {self.lower * self.budget:,.0f} is above "
                f"what the largest scales reach ({largest:,.0f} at scale "
                f"{max(self.scales)} in every group). Received: lower="
                f"{lower}, budget={budget}")
        self.population, self.top_k = int(population), int(top_k)
        self.mutations, self.crossovers = int(mutations), int(crossovers)
        self.mutation_prob = common.check_fraction("mutation_prob",
                                                   mutation_prob, False)
        self.generations, self.max_draws = int(generations), int(max_draws)
        hp = kt.HyperParameters()
        for g in self.groups:
            hp.Int(f"width/{g}", 0, len(self.scales) - 1)
        budget_trials = population + (generations - 1) * (mutations
                                                          + crossovers)
        super().__init__(objective=kt.Objective("fitness", "max"),
                         max_trials=budget_trials, hyperparameters=hp,
                         allow_new_entries=False, tune_new_entries=False,
                         seed=int(seed) + 1, **kwargs)
        self._rng = np.random.default_rng(int(seed))
        self.generation = -1
        self._queue: list = []
        self._pending: dict = {}
        self._scored: list = []
        self._top: list = []
        self._seen: set = set()
        self.best_history: list = []
        self._display.verbose = 0  # one line per trial is too much here

    # -- candidates ------------------------------------------------------
    def widths(self, genes) -> dict:
        """``{group id: kept channels}`` of a candidate (scale indices)."""
        return {g: kept_count(self.scales[int(i)], self.sizes[g])
                for g, i in zip(self.groups, genes)}

    def cost_of(self, genes) -> float:
        """The cost of a candidate."""
        return float(self.cost(self.widths(genes)))

    def within(self, cost: float) -> bool:
        """Whether a cost lies in ``[lower * budget, budget]``."""
        return self.lower * self.budget <= cost <= self.budget

    def _draw(self, make, count) -> list:
        """``count`` new candidates within ``[lower * budget, budget]``
        (fewer if draws run out); unique by their channel counts."""
        out = []
        for _ in range(count * self.max_draws):
            if len(out) >= count:
                break
            genes = [int(i) for i in make()]
            key = tuple(self.widths(genes).values())
            if key not in self._seen and self.within(self.cost_of(genes)):
                self._seen.add(key)
                out.append(genes)
        return out

    def _random(self, count) -> list:
        lo, hi = self.init_range
        n = len(self.groups)
        return self._draw(lambda: self._rng.integers(lo, hi, n), count)

    def _next_generation(self) -> None:
        self.generation += 1
        n, s = len(self.groups), len(self.scales)
        rng = self._rng
        if self.generation == 0:
            self._queue = self._random(self.population)
            if not self._queue:
                raise ValueError(
                    f"no random candidate costs within [{self.lower} * "
                    f"budget, budget] = [{self.lower * self.budget:,.0f}, "
                    f"{self.budget:,.0f}] in {self.population * self.max_draws}"
                    " draws: lower `lower`, widen `init_range` or raise "
                    f"`max_draws`. Received: lower={self.lower}, "
                    f"init_range={self.init_range}")
            return
        pool = sorted(self._top + self._scored, key=lambda c: -c[1])
        self._top = pool[:self.top_k]
        self._scored = []
        self.best_history.append(self._top[0][1])
        parents = [c[0] for c in self._top]

        def mutate():  # official: a flipped gene moves to another scale
            p = np.asarray(parents[rng.integers(len(parents))])
            flip = rng.random(n) < self.mutation_prob
            return np.where(flip, (p + rng.integers(1, s, n)) % s, p)

        def cross():  # official: two different parents
            i, j = rng.choice(len(parents), 2, replace=len(parents) < 2)
            return np.where(rng.random(n) < 0.5, parents[i], parents[j])

        queue = self._draw(mutate, self.mutations)
        queue += self._draw(cross, self.crossovers)
        self._queue = queue + self._random(self.population - len(queue))

    def populate_space(self, trial_id):
        while not self._queue:
            if self._pending:
                return {"status": TrialStatus.IDLE}
            if self.generation + 1 >= self.generations:
                self._fold_last()
                return {"status": TrialStatus.STOPPED}
            self._next_generation()
            if not self._queue and self.generation + 1 >= self.generations:
                return {"status": TrialStatus.STOPPED}
        genes = self._queue.pop(0)
        self._pending[str(trial_id)] = genes
        return {"status": TrialStatus.RUNNING,
                "values": {f"width/{g}": int(i)
                           for g, i in zip(self.groups, genes)}}

    def _fold_last(self) -> None:
        """Folds the last generation's scores into the top-k (once)."""
        if self._scored:
            pool = sorted(self._top + self._scored, key=lambda c: -c[1])
            self._top = pool[:self.top_k]
            self.best_history.append(self._top[0][1])
            self._scored = []

    @kt.synchronized
    def end_trial(self, trial):
        genes = self._pending.pop(str(trial.trial_id), None)
        if genes is not None and trial.status == TrialStatus.COMPLETED:
            fit = trial.metrics.get_last_value("fitness") if \
                trial.metrics.exists("fitness") else None
            if fit is not None:
                self._scored.append([genes, float(fit)])
        if not self._queue and not self._pending and \
                self.generation + 1 >= self.generations:
            # keras-tuner stops at max_trials before asking populate_space
            self._fold_last()
        return super().end_trial(trial)

    @property
    def best(self):
        """``(widths, fitness)`` of the best candidate so far."""
        pool = sorted(self._top + self._scored, key=lambda c: -c[1])
        return (self.widths(pool[0][0]), pool[0][1]) if pool else (None,
                                                                    None)

    # -- state -----------------------------------------------------------
    def get_state(self):
        state = super().get_state()
        state[_KEY] = {
            "groups": self.groups, "generation": self.generation,
            "queue": self._queue, "pending": self._pending,
            "scored": self._scored, "top": self._top,
            "seen": [list(k) for k in sorted(self._seen)],
            "best_history": self.best_history,
            "rng": self._rng.bit_generator.state}
        return state

    def set_state(self, state):
        mine = state.get(_KEY)
        if not isinstance(mine, dict) or mine["groups"] != self.groups:
            raise ValueError(f"{self._project_dir} holds another search; "
                             "use another project_name or overwrite.")
        super().set_state(state)
        self.generation = int(mine["generation"])
        self._queue = [list(c) for c in mine["queue"]]
        self._pending = dict(mine["pending"])
        self._scored = [list(c) for c in mine["scored"]]
        self._top = [list(c) for c in mine["top"]]
        self._seen = {tuple(k) for k in mine["seen"]}
        self.best_history = list(mine["best_history"])
        self._rng.bit_generator.state = mine["rng"]

    def save(self):
        """Writes ``oracle.json`` atomically."""
        atomic_write_text(os.path.join(self._project_dir, "oracle.json"),
                          json.dumps(self.get_state()))

    def reload(self):
        """Reloads the state; a trial that was running is proposed again."""
        super().reload()
        for trial_id, genes in list(self._pending.items()):
            trial = self.trials.get(trial_id)
            if trial is None or trial.status != TrialStatus.COMPLETED:
                self._pending.pop(trial_id)
                self._queue.insert(0, genes)
                self.trials.pop(trial_id, None)
                if trial_id in self.start_order:
                    self.start_order.remove(trial_id)
        self._retry_queue = []
        self.ongoing_trials = {}


def _check_range(init_range, n):
    """``(low, high)`` scale indices, 0 <= low < high <= n."""
    if init_range is None:
        return 0, n
    try:
        lo, hi = (int(v) for v in init_range)
    except (TypeError, ValueError):
        lo, hi = -1, -1
    if not 0 <= lo < hi <= n:
        raise ValueError(f"init_range must be (low, high) scale indices with "
                         f"0 <= low < high <= {n}. Received: {init_range!r}")
    return lo, hi


def metaprune(model, train_data, val_data, target_macs: float = 0.5,
              scales=PAPER_SCALES, epochs: int = 10, batch_size: int = 128,
              optimizer=None, bn_samples: int = 1024, directory=None,
              project_name: str = "metapruning", overwrite: bool = False,
              seed: int = 0, verbose: int = 1, **oracle_kwargs):
    """MetaPruning end to end: PruningNet training, evolutionary search.

    Args:
        model: the functional model to prune (untouched).
        train_data: ``(x, y)`` for the PruningNet and BN recomputation
            (several inputs: ``([x1, x2], y)``, inputs as ``model.fit``
            takes them).
        val_data: held-out ``(x, y)`` for the fitness.
        target_macs: fraction of the model's MACs (<= 1) or absolute MACs.
        scales: width scales; epochs, batch_size, optimizer: PruningNet
            training (default SGD 0.05, momentum 0.9).
        bn_samples: training images to recompute BN statistics on (all
            of them, per candidate; official: 100 batches of 1000).
        directory, project_name, overwrite: where the oracle state lives
            (None: a temporary directory).
        seed: seeds the PruningNet widths and the search.
        **oracle_kwargs: :class:`MetaPruningOracle` arguments
            (``population``, ``generations``, ``lower`` (default 0.95:
            the found network costs at least 95% of the budget), ...).

    Returns:
        The best candidate's :class:`tfcomp.pruning.Plan` (``meta``:
        widths, fitness, macs, per-generation best fitness).

    Example:
        >>> plan = metaprune(model, (x, y), (xv, yv), target_macs=0.25)
    """
    import tempfile

    import keras

    from tfcomp._finetune import finetune_loss

    common.check_model(model)
    check_positive_int(epochs, "epochs", minimum=0)
    x, y = common.as_xy(train_data, "train_data", model, targets=True)
    xv, yv = common.as_xy(val_data, "val_data", model, targets=True)
    net = PruningNet(model, scales=scales, seed=seed)
    macs = ChannelMacs(net.graph)
    target = check_target_macs(target_macs)
    budget = target * macs.dense if target <= 1 else target
    oracle = MetaPruningOracle(net.sizes, macs, budget, scales=scales,
                               seed=seed, **oracle_kwargs)
    oracle._set_project_dir(directory or tempfile.mkdtemp(), project_name)
    resumed = os.path.exists(os.path.join(oracle._project_dir,
                                          "oracle.json")) and not overwrite
    if epochs:
        net.compile(unpinned(optimizer or keras.optimizers.SGD(
                        0.05, momentum=0.9)),
                    finetune_loss(model, y), jit_compile=False)
        net.fit(x, y, epochs=epochs, batch_size=batch_size,
                verbose=verbose)
    if resumed:
        oracle.reload()
    xb = take(x, bn_samples)
    while True:
        trial = oracle.create_trial("metaprune")
        if trial.status != TrialStatus.RUNNING:
            if trial.status == TrialStatus.STOPPED:
                break
            continue
        genes = [trial.hyperparameters.values[f"width/{g}"]
                 for g in oracle.groups]
        small = net.sample(oracle.widths(genes), xb, batch_size=batch_size,
                           steps=None)
        fit = common.accuracy(small, xv, yv, batch_size=batch_size)
        oracle.update_trial(trial.trial_id, {"fitness": fit})
        trial.status = TrialStatus.COMPLETED
        oracle.end_trial(trial)
    widths, fitness = oracle.best
    plan = net.plan(widths)
    plan.meta.update({"widths": widths, "fitness": fitness,
                      "macs": int(macs(widths)), "dense_macs": macs.dense,
                      "budget": budget, "lower": oracle.lower,
                      "best_history": oracle.best_history})
    return plan
