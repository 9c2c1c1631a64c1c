"""The on-device TFLite runtime: ai-edge-litert, else tflite-runtime, else TF.

The runtime finder and the timing loop are those of
``tfcomp.hardware.device_profiler`` (the file that runs alone on a device);
this module adds what tfcomp needs on the host: an interpreter that falls
back to the next runtime when one cannot run a model (an op it lacks),
batched inference with input quantization, and timing of one model.
``tfcomp.export.runtime`` re-exports it.

A model is checked (:func:`read_tflite`) and handed to every runtime as
verified bytes, never as a path the runtime maps unverified; a truncated or
corrupt file is a ``ValueError`` naming it, and a model the first runtime
rejects as corrupt is not retried with the next (``tf.lite`` crashes the
process on such files).

Example:
    >>> interp, name = make_interpreter("model.tflite", threads=1)
    >>> name
    'ai_edge_litert'
"""

from __future__ import annotations

import os

import numpy as np

from tfcomp.hardware.device_profiler import (
    TFLiteModelError,
    feed_random,
    interpreter_class,
    interpreter_classes,
    new_interpreter,
    read_tflite,
    time_interpreters,
    time_samples,
)

__all__ = ["TFLiteModelError", "dequantize_output", "feed_random", "interpreter_class",
           "interpreter_classes", "make_interpreter", "new_interpreter",
           "quantize_input", "read_tflite", "run_interpreter",
           "input_details_in_order", "output_details_in_order",
           "time_interpreters", "time_invokes", "time_samples"]


def make_interpreter(model, threads: int = 1):
    """Creates an allocated interpreter from a path or flatbuffer bytes.

    Args:
        model: path to a ``.tflite`` file, or its bytes.
        threads: number of CPU threads for the interpreter.

    Returns:
        ``(interpreter, runtime_name)``; a graph the runtime's default
        XNNPACK delegate fails to prepare runs on the reference kernels,
        and the name says so.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a truncated or corrupt model (naming the file), or bad
            ``threads``.
        RuntimeError: no installed runtime can run the model.

    Example:
        >>> interp, runtime = make_interpreter("m.tflite")
    """
    if isinstance(threads, bool) or not isinstance(threads, int) \
            or threads < 1:
        raise ValueError(f"threads must be an int >= 1. Received: "
                         f"threads={threads!r}")
    label = (repr(os.fspath(model)) if isinstance(model, (str, os.PathLike))
             else "(bytes)")
    buf = read_tflite(model, label)
    errors = []
    for name, cls in interpreter_classes():
        try:
            interp = new_interpreter(cls, buf, threads, name=label)
            if _default_delegate_fails(interp):
                return _without_default_delegates(cls, buf, threads), \
                    f"{name} (reference kernels: XNNPACK failed to prepare)"
            return interp, name
        except TFLiteModelError:
            raise  # never hand a rejected model to the next runtime
        except (ValueError, RuntimeError) as e:  # e.g. an op it lacks
            if "XNNPACK" in str(e):  # failed to prepare on creation
                try:
                    return _without_default_delegates(cls, buf, threads), \
                        f"{name} (reference kernels: XNNPACK failed to " \
                        "prepare)"
                except (ValueError, RuntimeError):
                    pass
            errors.append(f"{name}: {e}")
    if not errors:
        raise RuntimeError("No TFLite runtime is installed: install "
                           "ai-edge-litert, tflite-runtime or tensorflow.")
    raise RuntimeError(f"No TFLite runtime could load {label}: "
                       + "; ".join(errors))


def _default_delegate_fails(interp) -> bool:
    """Whether the runtime's default XNNPACK delegate fails to prepare the
    graph once the inputs are resized, as ``run_interpreter`` resizes them
    (one invoke on zeros; seen on a post-training int8 LSTM behind a
    Masking layer)."""
    details = interp.get_input_details()
    try:
        for d in details:
            sig = d.get("shape_signature", d["shape"])
            interp.resize_tensor_input(d["index"], [
                2 if i == 0 and int(s) == -1 else int(v)
                for i, (s, v) in enumerate(zip(sig, d["shape"]))])
        interp.allocate_tensors()
        for d in interp.get_input_details():
            interp.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
        interp.invoke()  # XNNPACK builds its runtime here
        for d in details:
            interp.resize_tensor_input(d["index"], list(d["shape"]))
        interp.allocate_tensors()
    except RuntimeError as e:  # anything else surfaces on the real run
        return "XNNPACK" in str(e) or "Delegate" in str(e)
    return False


def _without_default_delegates(cls, buf: bytes, threads: int):
    """An allocated ``cls`` interpreter on the builtin reference kernels
    (no default delegate), as a TFLite app runs a graph XNNPACK rejects."""
    import sys

    resolver = sys.modules[cls.__module__].OpResolverType
    interp = cls(model_content=buf, num_threads=threads,
                 experimental_op_resolver_type=(
                     resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
    interp.allocate_tensors()
    return interp


def time_invokes(model, runs: int = 50, warmup: int = 5, threads: int = 1,
                 seed: int = 0) -> tuple:
    """Times ``invoke()`` of one TFLite model on random inputs.

    Args:
        model: a ``.tflite`` path or its bytes.
        runs: timed invocations.
        warmup: untimed invocations first.
        threads: interpreter threads.
        seed: seed of the random inputs.

    Returns:
        ``(seconds, runtime_name)``: an array of ``runs`` timings.

    Example:
        >>> seconds, runtime = time_invokes("m.tflite", runs=20)
    """
    interp, runtime = make_interpreter(model, threads=threads)
    feed_random(interp, np.random.default_rng(seed))
    return time_interpreters([interp], runs=runs, warmup=warmup,
                             rounds=1)[0], runtime


def quantize_input(x: np.ndarray, detail: dict) -> np.ndarray:
    """Casts/quantizes an array to an input tensor's dtype. An integer
    input with scale 0 is not quantized (token ids of an Embedding
    model): its values are cast, not divided by the scale.

    Example:
        >>> quantize_input(x, interp.get_input_details()[0])
    """
    dtype = detail["dtype"]
    if np.issubdtype(dtype, np.integer):
        scale, zero = detail["quantization"]
        if not scale:
            return np.asarray(x).astype(dtype)
        info = np.iinfo(dtype)
        q = np.round(x / scale + zero)
        return np.clip(q, info.min, info.max).astype(dtype)
    return x.astype(dtype)


def dequantize_output(y: np.ndarray, detail: dict) -> np.ndarray:
    """Converts an output tensor back to float32."""
    if np.issubdtype(detail["dtype"], np.integer):
        scale, zero = detail["quantization"]
        return (y.astype(np.float32) - zero) * scale
    return y.astype(np.float32)


def input_details_in_order(interp, names=None, shapes=None) -> list:
    """The interpreter's input details in the Keras model's input order:
    by the serving signature's input names (``names``: the model's input
    tensors' names, ``tfcomp._batches.signature_input_names``), else by
    ``shapes`` when each is unique, else (no ``shapes``) the file's order;
    a ``ValueError`` when inputs of one shape cannot be told apart.

    Example:
        >>> input_details_in_order(interp, ["tokens", "memory"])
    """
    details = interp.get_input_details()
    if len(details) == 1:
        return details
    by_index = {d["index"]: d for d in details}
    if names is not None:
        try:
            runner = interp.get_signature_runner()
            sig = runner.get_input_details()
            if set(sig) == set(names):
                return [by_index[sig[n]["index"]] for n in names]
        except (ValueError, KeyError, AttributeError):
            pass
    if shapes is not None:
        keyed = [tuple(int(v) for v in d["shape"][1:]) for d in details]
        want = [tuple(int(v) if v is not None else -1 for v in s)
                for s in shapes]
        if len(set(keyed)) == len(keyed) and all(w in keyed for w in want):
            return [details[keyed.index(w)] for w in want]
        if len(set(keyed)) != len(keyed):
            raise ValueError(
                f"run_interpreter: the file's {len(details)} inputs share "
                f"shapes {sorted(set(keyed))}, so the arrays' order cannot "
                "be told from their shapes; pass input_names= the file's "
                f"signature input names in the Keras model's order (here "
                f"{_signature_inputs(interp)}). Received: input_names={names!r}")
    return details


def _signature_inputs(interp) -> list:
    try:
        return sorted(interp.get_signature_runner().get_input_details())
    except (ValueError, KeyError, AttributeError):
        return []


def output_details_in_order(interp) -> list:
    """The interpreter's output details in the Keras model's output order:
    the serving signature's ``output_0``, ``output_1``, ... (the file's
    own order of output tensors can differ), its keys in sorted order for a
    model with a dict of outputs (as ``keras.tree.flatten`` orders them).

    Example:
        >>> [d["shape"] for d in output_details_in_order(interp)]
    """
    details = interp.get_output_details()
    if len(details) == 1:
        return details
    by_index = {d["index"]: d for d in details}
    try:
        sig = interp.get_signature_runner().get_output_details()
    except (ValueError, KeyError, AttributeError):
        return details
    names = [f"output_{i}" for i in range(len(details))]
    if set(sig) != set(names):
        # a model with a dict of outputs: the signature keeps its keys, and
        # Keras flattens a dict in sorted key order
        names = sorted(sig)
    if len(names) != len(details):
        return details
    return [by_index[sig[n]["index"]] for n in names]


def _feed_shape(detail, chunk) -> list:
    """The input shape that feeds ``chunk``: its batch, and its sizes on
    the axes the file left dynamic (a Keras ``None``: a variable sequence
    length, shape signature -1); the file's sizes elsewhere."""
    sig = detail.get("shape_signature", detail["shape"])
    if len(sig) != chunk.ndim:
        raise ValueError(
            f"run_interpreter: input {detail.get('name')!r} has shape "
            f"{list(sig)} (-1: any size); received an array of shape "
            f"{chunk.shape}")
    return [len(chunk)] + [int(c) if int(s) == -1 else int(f) for c, s, f
                           in zip(chunk.shape[1:], sig[1:],
                                  detail["shape"][1:])]


def run_interpreter(interp, x, batch_size: int = 64, input_names=None,
                    all_outputs: bool = False):
    """Runs an interpreter over ``x`` in batches: an array for a
    single-input file, a dict of arrays by the file's signature input
    names, or a list of arrays (one per input, in the Keras
    model's order; ``input_names``: the file's signature names for them,
    the model's input tensors' names: ``signature_input_names(model)``,
    needed when two inputs have one shape). Returns the first output (the
    Keras model's first), or with ``all_outputs`` a list of every output
    in the model's order.
    A file with a fixed batch size (``keras.Input(batch_size=B)``) is run
    ``B`` rows at a time, the last chunk padded.

    Example:
        >>> y = run_interpreter(interp, x_test[:100])
        >>> y = run_interpreter(interp, [tokens, memory], input_names=[
        ...     "tokens", "memory"])
        >>> scores, box = run_interpreter(interp, x, all_outputs=True)
    """
    if isinstance(x, dict):  # by signature name (a model's input names)
        input_names, x = list(x), list(x.values())
    xs = list(x) if isinstance(x, (list, tuple)) else [x]
    ins = input_details_in_order(interp, input_names,
                                 [a.shape[1:] for a in xs])
    if len(ins) != len(xs):
        raise ValueError(
            f"run_interpreter: the file has {len(ins)} inputs; received "
            f"{len(xs)} arrays")
    fixed = _fixed_batch(ins)
    if fixed is not None:  # keras.Input(batch_size=B): B rows per invoke
        batch_size = fixed
    outs, current, n = [], None, len(xs[0])
    for start in range(0, n, batch_size):
        chunks = [a[start:start + batch_size] for a in xs]
        if fixed is not None and len(chunks[0]) < fixed:  # pad the tail
            chunks = [np.concatenate([c, np.repeat(c[-1:], fixed - len(c),
                                                   0)]) for c in chunks]
        shapes = [_feed_shape(inp, chunk) for inp, chunk in zip(ins, chunks)]
        if current != shapes:
            for inp, shape in zip(ins, shapes):
                interp.resize_tensor_input(inp["index"], shape)
            interp.allocate_tensors()
            current = shapes
            out_details = output_details_in_order(interp)
            if not all_outputs:
                out_details = out_details[:1]
        for inp, chunk in zip(ins, chunks):
            interp.set_tensor(inp["index"], quantize_input(chunk, inp))
        interp.invoke()
        outs.append([dequantize_output(interp.get_tensor(d["index"]), d)
                     for d in out_details])
    ys = [np.concatenate(parts, axis=0)[:n] for parts in zip(*outs)]
    return ys if all_outputs else ys[0]


def _fixed_batch(details) -> int | None:
    """The batch size a file fixes (a ``keras.Input(batch_size=B)``: shape
    signature B, not -1), or None."""
    sizes = {int(d.get("shape_signature", d["shape"])[0]) for d in details
             if len(d.get("shape_signature", d["shape"]))}
    fixed = [b for b in sizes if b > 0]
    return fixed[0] if len(fixed) == 1 and len(sizes) == 1 else None
