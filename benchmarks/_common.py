"""Code shared by the benchmark scripts: results files, logging, argument
parsing, Fashion-MNIST subsets, compiling / fine-tuning / evaluating Keras
classifiers, step timers and interleaved TFLite timing.

Every script imports what it needs from here instead of keeping its own
copy; files are written through ``tfcomp._io`` (temp file + rename).

Example:
    >>> from _common import accuracy, fashion_mnist_subset, write_results
    >>> (x, y), (xt, yt) = fashion_mnist_subset(train=2048, test=2000)
    >>> write_results(RESULTS, "pruning", result, markdown)
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

import tfcomp
from tfcomp._io import atomic_write_text
from tfcomp._unpinned import unpinned

__all__ = [
    "RESULTS", "log", "parser", "write_text", "write_json", "read_json",
    "write_results", "fashion_mnist_subset", "compile_model", "accuracy",
    "clone_with_weights", "finetune", "StepTimer", "time_tflite",
]

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                       "results")


# ------------------------------------------------------------ messages, args


def log(msg: str, since: float | None = None) -> None:
    """``[HH:MM:SS] msg`` (or ``[  12.3s] msg``, seconds ``since`` a start),
    flushed at once (benchmarks run for minutes under ``nice``)."""
    stamp = (time.strftime("%H:%M:%S") if since is None
             else f"{time.time() - since:7.1f}s")
    print(f"[{stamp}] {msg}", flush=True)


def parser(doc: str, out: bool = True) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` described by the first line of ``doc``, with
    ``--out`` (the results folder, default ``benchmarks/results``)."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    if out:
        p.add_argument("--out", default=RESULTS,
                       help="folder for the results .json and .md")
    return p


# ------------------------------------------------------------ results files


def write_text(path: str, text: str) -> None:
    """Writes ``text`` atomically (the folder is created)."""
    atomic_write_text(path, text)


def write_json(path: str, obj, indent: int | None = 1, default=None) -> None:
    """Writes ``json.dumps(obj, indent=indent, default=default)``
    atomically."""
    write_text(path, json.dumps(obj, indent=indent, default=default))


def read_json(path: str):
    """The JSON document at ``path`` (e.g. for ``--from-json``)."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_results(out: str, name: str, result, markdown: str,
                  indent: int | None = 1, default=None) -> None:
    """``out/name.json`` and ``out/name.md``, each written atomically."""
    write_json(os.path.join(out, f"{name}.json"), result, indent=indent,
               default=default)
    write_text(os.path.join(out, f"{name}.md"), markdown)


# ------------------------------------------------------------ data


def fashion_mnist_subset(train: int | None = None, test: int | None = None,
                         seed: int = 0):
    """Random subsets of Fashion-MNIST: ``((x, y), (x_test, y_test))``.

    One ``numpy`` generator seeded with ``seed`` permutes the training set,
    then the test set; the first ``train`` / ``test`` indices are kept
    (``None``: all, shuffled).
    """
    (x, y), (xt, yt) = tfcomp.data.load_fashion_mnist()
    rng = np.random.default_rng(seed)
    tr = rng.permutation(len(x))[:train]
    te = rng.permutation(len(xt))[:test]
    return (x[tr], y[tr]), (xt[te], yt[te])


# ------------------------------------------------------------ Keras models


def compile_model(model, optimizer, jit_compile="auto",
                  metrics=("accuracy",)):
    """Compiles a logits classifier (sparse categorical cross-entropy);
    returns ``model``."""
    model.compile(optimizer=unpinned(optimizer),
                  loss=keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True),
                  metrics=list(metrics), jit_compile=jit_compile)
    return model


def accuracy(model, x, y, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)``."""
    logits = model.predict(x, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(logits, -1) == y))


def clone_with_weights(model):
    """A new model of the same architecture holding ``model``'s weights
    (tfcomp's copier: the user's own layer classes written as keras.io
    writes them, no ``**kwargs``, copy too)."""
    from tfcomp.graph.copy import clone_model

    new = clone_model(model)
    new.set_weights(model.get_weights())
    return new


def finetune(model, x, y, epochs: int = 1, seed: int = 0, lr: float = 0.01,
             nesterov: bool = False, jit_compile="auto",
             batch_size: int = 128):
    """The short common fine-tune of pruned models: SGD (momentum 0.9) for
    ``epochs`` over ``(x, y)``, shuffled with ``seed``, then BatchNorm
    statistics re-estimated on ``x`` (a short SGD pass leaves Keras'
    momentum-0.99 moving averages stale). Returns ``model``."""
    from tfcomp.pruning import recalibrate_batchnorm

    keras.utils.set_random_seed(seed)
    compile_model(model, keras.optimizers.SGD(lr, momentum=0.9,
                                              nesterov=nesterov),
                  jit_compile=jit_compile)
    model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=True,
              verbose=0)
    recalibrate_batchnorm(model, x, batch_size=batch_size)
    return model


class StepTimer(keras.callbacks.Callback):
    """Wall time of every epoch (``per="epoch"``) or training batch
    (``per="batch"``); ``steady()`` is the median without the first
    ``skip`` ones (tracing)."""

    def __init__(self, per: str = "epoch", skip: int = 1):
        super().__init__()
        if per not in ("epoch", "batch"):
            raise ValueError(f"per must be 'epoch' or 'batch'. Received: "
                             f"per={per!r}")
        self.per, self.skip = per, skip
        self.times: list = []
        self._t = 0.0

    def _begin(self):
        self._t = time.perf_counter()

    def _end(self):
        self.times.append(time.perf_counter() - self._t)

    def on_epoch_begin(self, epoch, logs=None):
        if self.per == "epoch":
            self._begin()

    def on_epoch_end(self, epoch, logs=None):
        if self.per == "epoch":
            self._end()

    def on_train_batch_begin(self, batch, logs=None):
        if self.per == "batch":
            self._begin()

    def on_train_batch_end(self, batch, logs=None):
        if self.per == "batch":
            self._end()

    def steady(self) -> float:
        """Median time without the first ``skip`` (all if too few)."""
        return float(np.median(self.times[self.skip:] or self.times))


# ------------------------------------------------------------ TFLite timing


def time_tflite(paths: dict, runs: int, rounds: int,
                warmup: int | None = None) -> dict:
    """``{key: LatencyResult}`` of ``.tflite`` files timed side by side in
    interleaved rounds (one interpreter thread, batch 1), so load on a
    shared machine hits every file alike."""
    from tfcomp.export import measure_latencies

    kw = {} if warmup is None else {"warmup": warmup}
    return measure_latencies(paths, runs=runs, rounds=rounds, threads=1,
                             **kw)
