"""Standalone on-device profiler: times single-layer TFLite models.

This module imports only the standard library, numpy and a TFLite runtime
(``ai_edge_litert``, else ``tflite_runtime``), so it runs on a phone or a
Raspberry Pi without Keras or TensorFlow. Copy this one file to the device
with the archive written by ``tfcomp.hardware.export_layer_archive`` and
run::

    python device_profiler.py layers.tar out.json [--runs 50] [--threads 1]

(or ``python -m tfcomp.hardware.device_profiler ...`` where tfcomp is
installed). ``out.json`` is a latency table that
``tfcomp.hardware.LatencyTable.load`` reads on the host.

Because it must run alone, this file is tfcomp's one TFLite runtime finder
(:func:`interpreter_classes`) and timing loop (:func:`time_interpreters`):
``tfcomp.hardware.runtime`` (and through it ``tfcomp.export``) and the
measured latency tables import them from here, so no second copy exists.
For the same reason it keeps a small atomic JSON writer of its own instead
of ``tfcomp._io``, with the same discipline (a temporary name that names its
writer, synced before the rename, the folder synced after it, stale
temporary files of dead writers removed by the next write), and it is where
a ``.tflite`` file is checked before any runtime reads it
(:func:`read_tflite`): a truncated or corrupt file is a ``ValueError``
naming it, never a crashed interpreter.

Every layer's time is the median over ``runs`` invocations, taken in
``rounds`` interleaved passes over all models so slow drifts of the device
(thermal throttling, background load) spread evenly. The median time of a
trivial one-op model (``overhead.tflite``) is the fixed per-invoke overhead:
it is subtracted from every layer and stored once as ``overhead_s``.

Example:
    >>> table_doc = profile_archive("layers.tar", runs=50)
    >>> table_doc["overhead_s"]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import re
import socket
import struct
import sys
import tarfile
import tempfile
import time

import numpy as np

__all__ = [
    "ARCHIVE_FORMAT",
    "FORMAT",
    "TFLiteModelError",
    "VERSION",
    "feed_random",
    "interpreter_class",
    "interpreter_classes",
    "main",
    "new_interpreter",
    "profile_archive",
    "read_tflite",
    "time_interpreters",
    "time_models",
    "time_samples",
]

FORMAT = "tfcomp.latency_table"
VERSION = 1
ARCHIVE_FORMAT = "tfcomp.layer_archive"
# 2: layer entries may carry "bits" (a precision archive, see
# tfcomp.hardware.tflite_profiler); version 1 archives are read as before.
ARCHIVE_VERSION = 2
MANIFEST = "manifest.json"


def interpreter_classes(tf_fallback: bool = True):
    """Yields ``(runtime_name, Interpreter class)`` of every installed TFLite
    runtime, best first: ``ai_edge_litert``, ``tflite_runtime``, then
    ``tf.lite`` (only with ``tf_fallback`` and TensorFlow installed).

    Example:
        >>> [name for name, _ in interpreter_classes()]
        ['ai_edge_litert', 'tf.lite']
    """
    try:
        from ai_edge_litert.interpreter import Interpreter
        yield "ai_edge_litert", Interpreter
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter
        yield "tflite_runtime", Interpreter
    except (ImportError, AttributeError):
        pass
    if tf_fallback:
        try:
            import tensorflow as tf
        except ImportError:
            return
        yield "tf.lite", tf.lite.Interpreter


def interpreter_class(tf_fallback: bool = False):
    """``(runtime_name, Interpreter class)`` of the best installed runtime:
    ai_edge_litert, tflite_runtime (then tf.lite with ``tf_fallback``).

    Raises:
        ImportError: when no runtime is installed.

    Example:
        >>> interpreter_class()[0]
        'ai_edge_litert'
    """
    for found in interpreter_classes(tf_fallback):
        return found
    raise ImportError(
        "No TFLite runtime found: install ai-edge-litert (pip install "
        "ai-edge-litert) or tflite-runtime.")


# ------------------------------------------------------ checking a .tflite

TFLITE_IDENTIFIER = b"TFL3"


class TFLiteModelError(ValueError):
    """A ``.tflite`` file (or buffer) is empty, truncated or corrupt.

    Example:
        >>> issubclass(TFLiteModelError, ValueError)
        True
    """


def _tflite_problem(buf: bytes) -> str | None:
    """Why ``buf`` cannot be a TFLite flatbuffer, or None.

    Checks the header (size, ``TFL3`` identifier, root offset) and that
    every subgraph and weight buffer (inline, or stored after the
    flatbuffer) lies inside the bytes, where a truncated file fails; the
    runtime's own verifier checks the rest.
    """
    if len(buf) < 8:
        return f"{len(buf)} bytes, too short for a TFLite model"
    if bytes(buf[4:8]) != TFLITE_IDENTIFIER:
        return (f"no TFLite identifier (bytes 4..8 are {bytes(buf[4:8])!r}, "
                f"expected {TFLITE_IDENTIFIER!r})")

    def get(fmt, pos):
        if pos < 0 or pos + struct.calcsize(fmt) > len(buf):
            raise IndexError(pos)
        return struct.unpack_from(fmt, buf, pos)[0]

    def field(table, index):  # position of a table's field, None if absent
        vtable = table - get("<i", table)
        if 4 + 2 * index + 2 > get("<H", vtable):
            return None
        off = get("<H", vtable + 4 + 2 * index)
        return table + off if off else None

    def vector(pos, elem=4):  # (first element, length), bounds-checked
        start = pos + get("<I", pos)
        n = get("<I", start)
        if n:
            get("B", start + 4 + n * elem - 1)  # its last byte is inside
        return start + 4, n

    def tables(pos):  # the tables of a vector of tables
        start, n = vector(pos) if pos is not None else (0, 0)
        return [start + 4 * i + get("<I", start + 4 * i) for i in range(n)]

    try:
        root = get("<I", 0)
        subgraphs = tables(field(root, 2))
        if not subgraphs:
            return "no subgraph"
        for table in subgraphs:
            field(table, 0)  # its vtable is inside
        for i, table in enumerate(tables(field(root, 4))):  # buffers
            data, off, size = (field(table, k) for k in (0, 1, 2))
            if data is not None:
                vector(data, 1)
            if off is not None and size is not None:
                end = get("<Q", off) + get("<Q", size)
                if get("<Q", off) > 1 and end > len(buf):
                    return (f"weight buffer {i} ends at byte {end}, beyond "
                            f"its {len(buf)} bytes")
    except (IndexError, struct.error):
        return "an offset points beyond the end of the file"
    return None


def read_tflite(model, name: str | None = None) -> bytes:
    """The bytes of a ``.tflite`` file (or flatbuffer bytes), checked.

    Every interpreter in tfcomp is made from these checked bytes
    (``model_content``), so a runtime's own flatbuffer verifier runs too: a
    runtime given a path (``model_path``) maps the file unverified and a
    corrupt one can crash the process.

    Args:
        model: a path, or the flatbuffer's bytes.
        name: how errors name the model (default: the path, or "(bytes)").

    Raises:
        FileNotFoundError: the file does not exist.
        TFLiteModelError: (a ``ValueError``) empty, truncated or not a
            TFLite flatbuffer; the message names the file.
        TypeError: neither a path nor bytes.

    Example:
        >>> len(read_tflite("model.tflite")) > 8
        True
    """
    if isinstance(model, (bytes, bytearray, memoryview)):
        buf = bytes(model)
        label = name or "(bytes)"
    elif isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        label = name or repr(path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"TFLite file not found: {path!r}")
        if os.path.isdir(path):
            raise ValueError(f"TFLite model {label} is a folder, not a "
                             ".tflite file.")
        with open(path, "rb") as f:
            buf = f.read()
    else:
        raise TypeError("model must be a .tflite path or its bytes. "
                        f"Received: {type(model).__name__}")
    problem = _tflite_problem(buf)
    if problem:
        raise TFLiteModelError(f"TFLite model {label} is truncated or not a "
                               f"TFLite file: {problem}.")
    return buf


def _is_invalid_model_error(error: Exception) -> bool:
    text = str(error).lower()
    return ("flatbuffer" in text or "schema version" in text
            or "no subgraph" in text)


def new_interpreter(cls, model, threads: int = 1, name: str | None = None):
    """An allocated ``cls`` interpreter of a checked ``.tflite`` (path or
    bytes), made from its bytes so the runtime verifies them.

    Raises:
        FileNotFoundError, TFLiteModelError: see :func:`read_tflite`; also
            a ``TFLiteModelError`` naming the model when the runtime's
            verifier rejects it.

    Example:
        >>> interp = new_interpreter(interpreter_class()[1], "m.tflite")
    """
    buf = read_tflite(model, name)
    try:
        it = cls(model_content=buf, num_threads=threads)
    except ValueError as e:
        if _is_invalid_model_error(e):
            label = name or (repr(os.fspath(model)) if isinstance(
                model, (str, os.PathLike)) else "(bytes)")
            raise TFLiteModelError(f"TFLite model {label} is corrupt: the "
                                   f"runtime rejected it ({e}).") from None
        raise
    it.allocate_tensors()
    return it


def feed_random(interp, rng) -> None:
    """Sets every input of ``interp`` to random values of its dtype (the
    full integer range, or uniform [0, 1) floats) drawn from ``rng``.

    Example:
        >>> feed_random(interp, np.random.default_rng(0))
    """
    for d in interp.get_input_details():
        dtype = np.dtype(d["dtype"])
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            x = rng.integers(info.min, info.max, size=d["shape"],
                             endpoint=True).astype(dtype)
        else:
            x = rng.uniform(0.0, 1.0, size=d["shape"]).astype(dtype)
        interp.set_tensor(d["index"], x)


def time_models(models, runs: int = 50, warmup: int = 5, threads: int = 1,
                rounds: int = 5, seed: int = 0, interpreter_cls=None,
                progress=None) -> list[float]:
    """Median ``invoke()`` seconds of each TFLite model.

    Same arguments as ``time_samples``.

    Example:
        >>> time_models([open("a.tflite", "rb").read()], runs=20)
    """
    return [float(np.median(s)) for s in time_samples(
        models, runs=runs, warmup=warmup, threads=threads, rounds=rounds,
        seed=seed, interpreter_cls=interpreter_cls, progress=progress)]


def time_samples(models, runs: int = 50, warmup: int = 5, threads: int = 1,
                 rounds: int = 5, seed: int = 0, interpreter_cls=None,
                 progress=None) -> list:
    """Every timed ``invoke()`` (seconds) of each TFLite model.

    Args:
        models: list of flatbuffers (bytes) or paths.
        runs: timed invocations per model, split over ``rounds``.
        warmup: untimed invocations per model first.
        threads: interpreter threads.
        rounds: interleaved passes over all models.
        seed: seed of the random inputs.
        interpreter_cls: an Interpreter class (default: ``interpreter_class``).
        progress: optional ``callable(done, total)``.

    Returns:
        One ``np.ndarray`` of seconds per model, in order.

    Example:
        >>> time_samples([open("a.tflite", "rb").read()], runs=20)[0].min()
    """
    for name, v, lo in (("runs", runs, 1), ("warmup", warmup, 0),
                        ("threads", threads, 1), ("rounds", rounds, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{name} must be an int >= {lo}. Received: "
                             f"{name}={v!r}")
    if interpreter_cls is None:
        interpreter_cls = interpreter_class()[1]
    rng = np.random.default_rng(seed)
    interps = []
    for i, m in enumerate(models):
        label = None if isinstance(m, (str, os.PathLike)) else f"models[{i}]"
        it = new_interpreter(interpreter_cls, m, threads, name=label)
        feed_random(it, rng)
        interps.append(it)
    return time_interpreters(interps, runs=runs, warmup=warmup,
                             rounds=rounds, progress=progress)


def time_interpreters(interps, runs: int = 50, warmup: int = 5,
                      rounds: int = 5, progress=None) -> list:
    """The timing loop: every timed ``invoke()`` (seconds) of each
    allocated, fed interpreter.

    Each interpreter is invoked ``warmup`` times untimed, then ``rounds``
    interleaved passes time ``ceil(runs / rounds)`` invocations of each.

    Args:
        interps: allocated interpreters with their inputs set.
        runs, warmup, rounds, progress: as in :func:`time_samples`.

    Returns:
        One ``np.ndarray`` of seconds per interpreter, in order.

    Example:
        >>> time_interpreters([interp], runs=20, rounds=1)[0].size
        20
    """
    for it in interps:
        for _ in range(warmup):
            it.invoke()
    per_round = max(1, -(-runs // rounds))
    samples = [[] for _ in interps]
    total = rounds * len(interps)
    perf = time.perf_counter
    for r in range(rounds):
        for i, it in enumerate(interps):
            invoke = it.invoke
            s = samples[i]
            for _ in range(per_round):
                t0 = perf()
                invoke()
                s.append(perf() - t0)
            if progress is not None:
                progress(r * len(interps) + i + 1, total)
    return [np.asarray(s) for s in samples]


def _read_archive(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"layer archive not found: {path!r}")
    try:
        return _read_archive_members(path)
    except (tarfile.TarError, EOFError, OSError, KeyError,
            json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path!r} is not a readable layer archive (a tar "
                         f"file, truncated or corrupt?): {e}") from None


def _read_archive_members(path):
    with tarfile.open(path, "r") as tar:
        try:
            manifest = json.load(tar.extractfile(MANIFEST))
        except (KeyError, TypeError):
            raise ValueError(f"{path} has no {MANIFEST}; write it with "
                             "tfcomp.hardware.export_layer_archive.") from None
        if not isinstance(manifest, dict) or manifest.get(
                "format") != ARCHIVE_FORMAT:
            fmt = manifest.get("format") if isinstance(manifest, dict) \
                else None
            raise ValueError(f"{path} is not a tfcomp layer archive "
                             f"(format={fmt!r}).")
        if int(manifest.get("version", 0)) > ARCHIVE_VERSION:
            raise ValueError(
                f"{path} was written by a newer tfcomp (archive version "
                f"{manifest.get('version')}); this profiler reads up to "
                f"{ARCHIVE_VERSION}.")
        names = [e["file"] for e in manifest["layers"]]
        blobs = {}
        for n in names + [manifest["overhead_file"]]:
            member = tar.extractfile(n)
            if member is None:
                raise ValueError(f"{path}: missing member {n!r}")
            blobs[n] = read_tflite(member.read(),
                                   name=f"{path!r} member {n!r}")
        extra = [m.name for m in tar.getmembers()
                 if m.name.endswith(".tflite") and m.name not in blobs]
        if extra:
            raise ValueError(f"{path}: .tflite files not in the manifest: "
                             f"{extra[:5]}")
    return manifest, blobs


STATISTICS = {"median": np.median, "min": np.min}


def profile_archive(path: str, runs: int = 50, warmup: int = 5,
                    threads: int = 1, rounds: int = 5, seed: int = 0,
                    statistic: str = "median", verbose: bool = True) -> dict:
    """Times every model of a layer archive; returns a table document.

    ``statistic`` ("median" or "min") summarises each model's timings; "min"
    is the less load-sensitive choice on a busy device.

    Example:
        >>> doc = profile_archive("layers.tar")
        >>> len(doc["entries"])
    """
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {sorted(STATISTICS)}. "
                         f"Received: statistic={statistic!r}")
    manifest, blobs = _read_archive(path)
    runtime, cls = interpreter_class()
    files = [e["file"] for e in manifest["layers"]]
    order = [manifest["overhead_file"]] + files

    def report(done, total):
        if verbose and (done == total or done % 25 == 0):
            sys.stderr.write(f"\rtimed {done}/{total}")
            sys.stderr.flush()

    samples = time_samples([blobs[n] for n in order], runs=runs,
                           warmup=warmup, threads=threads, rounds=rounds,
                           seed=seed, interpreter_cls=cls, progress=report)
    times = [float(STATISTICS[statistic](s)) for s in samples]
    if verbose:
        sys.stderr.write("\n")
    overhead = times[0]
    pairs = [list(b) for b in manifest.get("precision_bits") or ()]
    by_spec = {}
    for e, t in zip(manifest["layers"], times[1:]):
        key = json.dumps(e["spec"], sort_keys=True)
        entry = by_spec.setdefault(key, {"spec": e["spec"], "costs": []})
        bits = [e["bits"]] if e.get("bits") else (pairs or [[32, 32]])
        entry["costs"] += [[int(w), int(a), max(0.0, t - overhead), None,
                            None] for w, a in bits]
    entries = list(by_spec.values())
    return {
        "format": FORMAT, "version": VERSION,
        "hardware": {"name": "tflite", "config": {
            "runtime": runtime, "threads": threads,
            "machine": platform.machine(), "node": platform.node(),
            "system": platform.system()}},
        "bit_invariant": not pairs, "overhead_s": overhead,
        # CPU latency is a staircase in the output channels
        # (tfcomp.hardware.latency_table): step interpolation.
        "interpolation": "step",
        "meta": {"source": "measured", "runs": runs, "warmup": warmup,
                 "rounds": rounds, "statistic": statistic,
                 "archive": os.path.basename(str(path)),
                 "channel_fractions": manifest.get("channel_fractions"),
                 "channel_multiple": manifest.get("channel_multiple"),
                 "model": manifest.get("model"),
                 **({"precisions": manifest["precisions"]}
                    if manifest.get("precisions") else {})},
        "entries": entries,
    }


def _stale(entry: str, stem: str) -> bool:
    """Whether ``entry`` is a temporary file of ``stem`` whose writer, a
    process of this host, is dead."""
    host = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]
    owner = re.match(re.escape(stem) + rf"p(\d+)h{host}-", entry)
    if owner is None or os.name == "nt":  # os.kill(pid, 0) signals there
        return False
    try:
        os.kill(int(owner.group(1)), 0)
    except ProcessLookupError:
        return True
    except OSError:
        pass
    return False


def _write_json_atomic(path: str, doc: dict) -> None:
    # Not tfcomp._io (this file runs on devices without tfcomp), with the
    # same discipline: a temporary ``.tmp-<name>-p<pid>h<host>-...`` beside
    # the file, synced, renamed, the folder synced; temporary files that
    # dead writers (on this host) of the same file left are removed first.
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    stem = f".tmp-{os.path.basename(path)[:100]}-"
    for entry in os.listdir(directory):
        if _stale(entry, stem):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, entry))
    host = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]
    fd, tmp = tempfile.mkstemp(dir=directory,
                               suffix=os.path.splitext(path)[1],
                               prefix=f"{stem}p{os.getpid()}h{host}-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if os.name != "nt":
        fd = os.open(directory, os.O_RDONLY)
        with contextlib.suppress(OSError):
            os.fsync(fd)
        os.close(fd)


def main(argv=None) -> int:
    """Command line: ``device_profiler layers.tar out.json [options]``."""
    p = argparse.ArgumentParser(
        prog="device_profiler",
        description="Time the single-layer TFLite models of a tfcomp layer "
                    "archive and write a latency table (JSON).")
    p.add_argument("archive", help="layers.tar from export_layer_archive")
    p.add_argument("out", help="output latency table (.json)")
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--statistic", choices=sorted(STATISTICS),
                   default="median")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    doc = profile_archive(args.archive, runs=args.runs, warmup=args.warmup,
                          threads=args.threads, rounds=args.rounds,
                          seed=args.seed, statistic=args.statistic,
                          verbose=not args.quiet)
    _write_json_atomic(args.out, doc)
    if not args.quiet:
        print(f"wrote {len(doc['entries'])} layer timings to {args.out} "
              f"({doc['hardware']['config']['runtime']}, overhead "
              f"{doc['overhead_s'] * 1e6:.1f} us)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
