"""Choosing a HAQ search's answer: the best reward, a warm start kept
unless beaten by more than the reward's noise, and re-scoring the best
trials over several fine-tune data orders.

A trial's reward is one short fine-tune scored on a few hundred held-out
images, so the best of many trials is biased upwards (the winner's curse).
With a warm start (e.g. :func:`tfcomp.hardware.allocate_bits`' exact
allocation) a neighbour that wins by one image replaces it: on
MobileNetV2-tiny (BISMO, issue #19's benchmark) the search's best trial
scored 1 of 600 validation images above the start and 0.23 points below it
on the test set. :func:`best_policy` keeps the start unless a trial's
reward exceeds it by ``margin`` (default two standard errors of the
start's validation accuracy, in reward units). Neither rule is in the HAQ
paper (which has no warm start); both are stated deviations.

Reference: Wang et al., HAQ, arXiv:1811.08886 (reward 0.1 x accuracy
change after a short fine-tune).

Example:
    >>> policy = best_policy(tuner)              # start kept within noise
    >>> ranked = rescore(tuner, top_k=5, seeds=(0, 1, 2))
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["best_policy", "noise_margin", "rescore"]

# HAQ's reward is 0.1 x (accuracy change in %): 10 reward units per 1.0
# of accuracy
_REWARD_PER_ACCURACY = 10.0


def noise_margin(accuracy: float, n: int, k: float = 2.0) -> float:
    """``k`` binomial standard errors of an accuracy measured on ``n``
    images, in HAQ reward units.

    Example:
        >>> round(noise_margin(0.79, 600), 3)
        0.333
    """
    if n < 1:
        return 0.0
    p = min(max(float(accuracy), 0.0), 1.0)
    return k * _REWARD_PER_ACCURACY * math.sqrt(p * (1 - p) / n)


def best_policy(tuner, margin="auto") -> dict:
    """``{layer: (w_bits, a_bits)}``: the best-reward trial's policy, or,
    when the oracle has a warm start (``oracle.warm_policy``) and no trial
    beats the start's reward by more than ``margin``, the start's.

    Args:
        tuner: a finished (or partly run) ``HAQTuner``.
        margin: reward units; ``"auto"``: :func:`noise_margin` of the
            start's validation accuracy on the hypermodel's validation
            images; 0: plain best reward (the paper's rule).

    Example:
        >>> best_policy(tuner, margin=0)   # the best reward, as HAQ
    """
    if not (margin == "auto" or (isinstance(margin, (int, float))
                                 and not isinstance(margin, bool)
                                 and margin >= 0)):
        raise ValueError("margin must be 'auto' or a number >= 0. "
                         f"Received: margin={margin!r}")
    trials = tuner.oracle.get_best_trials(1)
    if not trials:
        raise ValueError("No trial has finished yet: run search() first.")
    hm = tuner.hypermodel
    best = hm.policy(trials[0].hyperparameters)
    start = getattr(tuner.oracle, "warm_policy", None)
    if start is None or best == start:
        return best
    done = [t for t in tuner.oracle.trials.values()
            if t.score is not None and hm.policy(t.hyperparameters) == start]
    if not done:  # the start has not been evaluated (a resumed oddity)
        return best
    ref = max(done, key=lambda t: t.score)
    if margin == "auto":
        acc = ref.metrics.get_last_value("accuracy")
        n = len(hm.validation_data[0])
        margin = 0.0 if acc is None else noise_margin(acc, n)
    return best if trials[0].score > ref.score + margin else dict(start)


def rescore(tuner, top_k: int = 5, seeds=(0, 1, 2)) -> list:
    """Re-evaluates the best trials over several fine-tune data orders.

    A trial's reward is one short fine-tune, which moves by about a point
    between data orders at low bit-widths. This rebuilds each of the
    ``top_k`` best trials' policies once per seed (a fresh
    ``quantized_model`` and the trial's fine-tune with that data order) and
    ranks them by mean accuracy. It costs ``top_k * len(seeds)`` trials at
    most (trials with the same policy are evaluated once) and leaves the
    oracle unchanged.

    Returns:
        Dicts, best mean first: ``trial_id``, ``policy``,
        ``search_accuracy`` (the trial's own score), ``accuracy`` (mean),
        ``accuracies`` (per seed) and ``reward`` (mean).

    Example:
        >>> best = rescore(tuner, top_k=5)[0]["policy"]
    """
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) \
            or top_k < 1:
        raise ValueError(f"top_k must be an int >= 1. Received: "
                         f"top_k={top_k!r}")
    given = seeds
    seeds = [] if isinstance(seeds, (str, bytes)) else list(seeds)
    if not seeds or any(isinstance(v, bool) or not isinstance(
            v, (int, np.integer)) or v < 0 for v in seeds):
        raise ValueError(f"seeds must be a non-empty list of ints >= 0. "
                         f"Received: seeds={given!r}")
    trials = tuner.oracle.get_best_trials(int(top_k))
    if not trials:
        raise ValueError("No trial has finished yet: run search() first.")
    hm = tuner.hypermodel
    out, done = [], {}
    for trial in trials:
        hp = trial.hyperparameters
        policy = hm.policy(hp)
        key = tuple(sorted(policy.items()))
        if key not in done:  # a converged search repeats its policy
            done[key] = [hm.fit(hp, hm.quantized_model(hp), seed=int(v))
                         for v in seeds]
        runs = done[key]
        accs = [r["accuracy"] for r in runs]
        out.append({
            "trial_id": trial.trial_id, "policy": policy,
            "search_accuracy": trial.metrics.get_last_value("accuracy"),
            "accuracy": float(np.mean(accs)), "accuracies": accs,
            "reward": float(np.mean([r["reward"] for r in runs]))})
    out.sort(key=lambda r: -r["accuracy"])
    return out
