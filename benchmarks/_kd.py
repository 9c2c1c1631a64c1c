"""The "+ KD" rows of ``benchmarks/pruning.py`` and ``quantization.py``.

A compressed student fine-tuned through ``tfcomp.distill.Distiller``
(teacher: the benchmark's own trained dense / float checkpoint) beside the
same fine-tune without KD, both from the same seed. ``--rows kd`` runs only
that pair from the cached checkpoint and merges it into the results json;
helpers here: the checkpoint cache, the settings check before a merge, the
compiled Distiller, the record and the markdown lines of a merged run.

Reference: Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural
Network", arXiv 1503.02531.

Example:
    >>> model, source, path = cached_checkpoint("pruning", "resnet20_x",
    ...                                         train, reuse=True)
    >>> kd = distiller(student, model, keras.optimizers.Adam(5e-4))
"""

from __future__ import annotations

import hashlib
import os
import time

import keras
import numpy as np
from _common import log, read_json

from tfcomp._io import atomic_save_keras
from tfcomp._unpinned import unpinned
from tfcomp.distill import Distiller

__all__ = ["KD_ALPHA", "KD_TEMPERATURE", "SETUP", "cached_checkpoint",
           "check_line", "distiller", "fingerprint", "info",
           "results_to_merge", "run_note", "run_record"]

CACHE = os.path.join(os.path.expanduser("~"), ".cache", "tfcomp")
KD_ALPHA, KD_TEMPERATURE = 0.5, 4.0  # the distillation benchmark's best
# setting (it beat alpha 0.9 / T 10, the library's defaults, on both students)
SETUP = ("Both rows: the same starting checkpoint, data, seed, batches, "
         "learning rate and fine-tune epochs of {what}, run one after the "
         "other; KD trains through `Distiller(alpha={alpha}, temperature="
         "{temperature})` (the distillation benchmark's setting) with the "
         "{teacher} as the frozen teacher.")


def cached_checkpoint(bench: str, stem: str, train, reuse: bool):
    """``(model, source, path)``: the model cached at
    ``~/.cache/tfcomp/<bench>/<stem>.keras`` when ``reuse`` and present
    (source "cache"), else ``train()``'s model, then cached (source
    "trained"). ``stem`` must name every setting the training depends on."""
    path = os.path.join(CACHE, bench, f"{stem}.keras")
    if reuse and os.path.exists(path):
        log(f"cached checkpoint {path}")
        return keras.saving.load_model(path), "cache", path
    model = train()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_save_keras(model, path)
    return model, "trained", path


def fingerprint(model) -> str:
    """SHA-256 (16 hex digits) of ``model``'s weights: two checkpoints with
    the same fingerprint are bit-identical."""
    h = hashlib.sha256()
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()[:16]


def info(teacher: str) -> dict:
    """The KD settings a row records."""
    return {"alpha": KD_ALPHA, "temperature": KD_TEMPERATURE,
            "teacher": teacher}


def distiller(student, teacher, optimizer, jit_compile="auto"):
    """``Distiller(student, teacher)`` at alpha 0.5, T 4 (the setting that
    did best in benchmarks/distill_binary_tucker.py), compiled with
    ``optimizer`` and an accuracy metric."""
    kd = Distiller(student, teacher, alpha=KD_ALPHA,
                   temperature=KD_TEMPERATURE)
    kd.compile(unpinned(optimizer), metrics=["accuracy"], jit_compile=jit_compile)
    return kd


def results_to_merge(path: str, section: str, now: dict) -> dict:
    """The results json at ``path`` a ``--rows kd`` run joins; raises when
    it is missing or its ``section`` (the settings) differs from ``now``
    (the keys of ``now`` only)."""
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"--rows kd merges into {path}, which does not exist: run the "
            "whole benchmark (same settings) first")
    old = read_json(path)
    have = old.get(section, {})
    diff = {k: (have.get(k), v) for k, v in now.items() if have.get(k) != v}
    if diff:
        raise ValueError(f"--rows kd needs the settings of {path}; "
                         f"differing (results, this run): {diff}")
    return old


def run_record(command: str, fp: str, source: str, path: str, t_start: float,
               full_run_fingerprint: str | None, **extra) -> dict:
    """What the results json keeps about a ``--rows kd`` run, with whether
    its starting checkpoint (``fp``: its fingerprint, taken before any
    training or timing) is bit-identical to the full run's (``None``: the
    full run recorded no fingerprint)."""
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "command": command, "checkpoint": source, "cache_path": path,
            "fingerprint": fp, "same_checkpoint": None
            if full_run_fingerprint is None else fp == full_run_fingerprint,
            "load_average": list(os.getloadavg()),
            "runtime_s": time.time() - t_start, **extra}


def check_line(kd_acc: float, plain_acc: float, what: str,
               percent: bool = True) -> tuple:
    """``(text, met)`` of the target "KD >= plain" (accuracies in [0, 1],
    shown in percent or as fractions)."""
    d = (kd_acc - plain_acc) * 100
    f = (lambda v: f"{v * 100:.2f}") if percent else (lambda v: f"{v:.4f}")
    return (f"{what} + KD {f(kd_acc)} vs plain {f(plain_acc)} "
            f"({d:+.2f} points)", bool(d >= 0))


def run_note(run: dict, plain: str, checkpoint: str) -> str:
    """The markdown sentence saying the KD pair came from a separate run."""
    how = {"cache": "loaded from the cache", "trained": "retrained with the "
           "same seed and settings"}[run["checkpoint"]]
    same = {True: "bit-identical to the other rows' start (same weight "
                  "fingerprint)",
            False: "not bit-identical to the other rows' start (weight "
                   "fingerprints differ: CPU training is not "
                   "bit-reproducible here)",
            None: "not known to be bit-identical to the other rows' start "
                  "(the full run recorded no fingerprint)"}
    return (f"The two KD-pair rows were measured in a separate run "
            f"(`{run['command']}`, {run['date']}, "
            f"{run['runtime_s'] / 60:.1f} min); the {checkpoint} was {how}, "
            f"{same[run['same_checkpoint']]}. The plain {plain} row was "
            "re-measured beside the KD row in that run, so KD is compared "
            "with that re-measured row, not with the earlier one above; "
            "other rows are untouched.")
