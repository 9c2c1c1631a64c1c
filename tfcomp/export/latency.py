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


def _fix_dynamic_shapes(interp, input_shapes, where: str) -> None:
    """Resizes the inputs of a file with dynamic sizes (a Keras ``None``
    sequence length: shape signature -1) to ``input_shapes``; a dynamic
    size without one is an error (the file's placeholder size, 1, would be
    timed silently)."""
    details = interp.get_input_details()
    sigs = [[int(v) for v in d.get("shape_signature", d["shape"])]
            for d in details]
    if input_shapes is None:
        dynamic = [(d["name"], sig) for d, sig in zip(details, sigs)
                   if -1 in sig[1:]]
        if dynamic:
            raise ValueError(
                f"{where}: input {dynamic[0][0]!r} has a dynamic size (shape "
                f"signature {dynamic[0][1]}, -1: any): pass input_shapes="
                f"[(1, ...)] with the sizes to time, one shape per input")
        return
    shapes = [tuple(int(v) for v in s) for s in input_shapes]
    if len(shapes) != len(details) or any(
            len(s) != len(sig) or any(f not in (-1, v) for f, v in
                                      zip(sig[1:], s[1:]))
            for s, sig in zip(shapes, sigs)):
        raise ValueError(
            f"{where}: input_shapes must give one shape per input, of the "
            f"file's sizes where they are fixed (-1: any): {sigs}. "
            f"Received: input_shapes={input_shapes!r}")
    for d, shape in zip(details, shapes):
        interp.resize_tensor_input(d["index"], list(shape))
    interp.allocate_tensors()


def measure_latency(tflite_path, runs: int = 50, warmup: int = 5,
                    threads: int = 1, seed: int = 0,
                    input_shapes=None) -> LatencyResult:
    """Times ``invoke()`` of a TFLite model on random inputs (integer id
    inputs get valid ids: see ``tfcomp.export.runtime.feed_inputs``).

    Args:
        tflite_path: path to the file, or its bytes.
        runs: timed invocations.
        warmup: untimed invocations first.
        threads: interpreter threads.
        seed: seed of the random inputs.
        input_shapes: one shape per input (batch included), required when
            the file has dynamic sizes (a model with a ``None`` sequence
            length): the sizes to time it at.

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
    _fix_dynamic_shapes(interp, input_shapes, "measure_latency")
    feed_inputs(interp, np.random.default_rng(seed))
    seconds = time_interpreters([interp], runs=runs, warmup=warmup,
                                rounds=1)[0]
    times = seconds * 1e3
    return LatencyResult(
        median_ms=float(np.median(times)), min_ms=float(times.min()),
        p90_ms=float(np.percentile(times, 90)), runs=runs, threads=threads,
        runtime=runtime)


def measure_latencies(paths: dict, runs: int = 50, warmup: int = 5,
                      threads: int = 1, rounds: int = 3,
                      input_shapes=None) -> dict:
    """Measures several files side by side, interleaved over ``rounds``.

    Interleaving keeps slow drifts of a shared machine from favouring one
    file; each file's result is the median over all its timed runs
    (``input_shapes``: as in :func:`measure_latency`, for every file).

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
                                threads=threads, input_shapes=input_shapes)
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
