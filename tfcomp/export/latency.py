"""Latency of a ``.tflite`` file measured in the on-device runtime.

Example:
    >>> r = measure_latency("m.tflite", runs=50)
    >>> r.median_ms, r.runtime
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tfcomp._io import check_positive_int
from tfcomp.export.runtime import feed_inputs, make_interpreter
from tfcomp.hardware.runtime import time_interpreters

__all__ = ["LatencyResult", "measure_latency", "measure_latencies"]


@dataclasses.dataclass
class LatencyResult:
    """Timing of single-input inferences (batch as stored in the file).

    Attributes:
        median_ms, min_ms, p90_ms: statistics over ``runs`` invocations.
        runs, threads: how it was measured.
        runtime: ``ai_edge_litert``, ``tflite_runtime`` or ``tf.lite``.
    """

    median_ms: float
    min_ms: float
    p90_ms: float
    runs: int
    threads: int
    runtime: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def measure_latency(tflite_path, runs: int = 50, warmup: int = 5,
                    threads: int = 1, seed: int = 0) -> LatencyResult:
    """Times ``invoke()`` of a TFLite model on random inputs (integer id
    inputs get valid ids: see ``tfcomp.export.runtime.feed_inputs``).

    Args:
        tflite_path: path to the file, or its bytes.
        runs: timed invocations.
        warmup: untimed invocations first.
        threads: interpreter threads.
        seed: seed of the random inputs.

    Returns:
        A ``LatencyResult`` naming the runtime used.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a truncated or corrupt file (``TFLiteModelError``,
            naming it; the process never crashes on one), or bad counts.

    Example:
        >>> measure_latency("m.tflite").median_ms
    """
    runs = check_positive_int(runs, "runs")
    warmup = check_positive_int(warmup, "warmup", minimum=0)
    threads = check_positive_int(threads, "threads")
    interp, runtime = make_interpreter(tflite_path, threads=threads)
    feed_inputs(interp, np.random.default_rng(seed))
    seconds = time_interpreters([interp], runs=runs, warmup=warmup,
                                rounds=1)[0]
    times = seconds * 1e3
    return LatencyResult(
        median_ms=float(np.median(times)), min_ms=float(times.min()),
        p90_ms=float(np.percentile(times, 90)), runs=runs, threads=threads,
        runtime=runtime)


def measure_latencies(paths: dict, runs: int = 50, warmup: int = 5,
                      threads: int = 1, rounds: int = 3) -> dict:
    """Measures several files side by side, interleaved over ``rounds``.

    Interleaving keeps slow drifts of a shared machine from favouring one
    file; each file's result is the median over all its timed runs.

    Example:
        >>> measure_latencies({"dense": "a.tflite", "pruned": "b.tflite"})
    """
    runs = check_positive_int(runs, "runs")
    rounds = check_positive_int(rounds, "rounds")
    per_round = max(1, runs // rounds)
    samples: dict = {k: [] for k in paths}
    last: dict = {}
    for _ in range(rounds):
        for key, path in paths.items():
            r = measure_latency(path, runs=per_round, warmup=warmup,
                                threads=threads)
            samples[key].append(r.median_ms)
            last[key] = r
    return {
        key: dataclasses.replace(
            last[key], median_ms=float(np.median(samples[key])),
            min_ms=float(np.min(samples[key])),
            p90_ms=float(np.percentile(samples[key], 90)),
            runs=per_round * rounds)
        for key in paths
    }
