"""The TFMOT peers of the benchmarks, run in a subprocess.

TFMOT (``tensorflow-model-optimization``, the ``[tfmot]`` extra) only wraps
Keras 2 (``tf_keras``) models, so its rows run in a separate process with
``TF_USE_LEGACY_KERAS=1``: this file, ``python _tfmot.py MODE SPEC.json``,
with ``MODE`` ``prune`` (``prune_low_magnitude``, benchmarks/pruning.py) or
``qat`` (``quantize_model``, benchmarks/quantization.py). Both rebuild zoo
ResNet-20 in ``tf_keras`` with the same layer names and load the Keras 3
checkpoint's weights saved by :func:`save_weights`.

This module imports neither Keras 3 nor tfcomp, so the worker process only
loads ``tf_keras``.

Example:
    >>> ok, why = available()
    >>> save_weights(model, "w.npz")
    >>> res = run("prune", {"weights": "w.npz", ...}, workdir)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np

__all__ = ["available", "run", "save_weights", "interleaved_step_times",
           "resnet20"]


def available() -> tuple[bool, str]:
    """``(True, "")`` when TFMOT and tf_keras import under legacy Keras,
    else ``(False, the last line of the import error)``."""
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
    r = subprocess.run(
        [sys.executable, "-c",
         "import tensorflow_model_optimization, tf_keras"],
        env=env, capture_output=True, text=True, timeout=300)
    if r.returncode == 0:
        return True, ""
    return False, (r.stderr.strip().splitlines() or ["unknown error"])[-1]


def save_weights(model, path: str) -> str:
    """Saves every layer's weights as ``{"layer/i": array}`` (``.npz``)."""
    arrays = {f"{layer.name}/{i}": w for layer in model.layers
              for i, w in enumerate(layer.get_weights())}
    np.savez(path, **arrays)
    return path


def run(mode: str, spec: dict, workdir: str, timeout: int = 3600) -> dict:
    """Runs the ``mode`` worker on ``spec`` in a legacy-Keras subprocess.

    ``spec["result"]`` (default ``workdir/tfmot_MODE_result.json``) is
    where the worker writes its JSON result, returned here.

    Raises:
        RuntimeError: the subprocess failed (with its stderr's tail).
    """
    spec = dict(spec)
    spec.setdefault("result", os.path.join(workdir,
                                           f"tfmot_{mode}_result.json"))
    spec_path = os.path.join(workdir, f"tfmot_{mode}_spec.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), mode, spec_path],
        env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError((proc.stderr or proc.stdout)[-1500:])
    with open(spec["result"]) as f:
        return json.load(f)


def interleaved_step_times(models: dict, xb, yb, rounds: int = 6,
                           steps: int = 8) -> dict:
    """Median ``train_on_batch`` time per model, the models alternating in
    ``rounds`` rounds of ``steps`` steps (load drift hits all alike).

    Works for Keras 3 and tf_keras models that are already compiled; their
    weights change (time them after evaluating them)."""
    for m in models.values():
        m.train_on_batch(xb, yb)  # trace outside the timed steps
    times = {k: [] for k in models}
    names = list(models)
    for r in range(rounds):
        for k in (names if r % 2 == 0 else names[::-1]):
            for _ in range(steps):
                t = time.perf_counter()
                models[k].train_on_batch(xb, yb)
                times[k].append(time.perf_counter() - t)
    return {k: float(np.median(v)) for k, v in times.items()}


def resnet20(K):
    """Zoo ResNet-20 (28x28x1, 10 logits) built with the Keras module ``K``
    (``tf_keras`` in the worker), layer names as ``tfcomp.zoo.resnet``."""
    L = K.layers

    def conv(t, name, n, s=1, k=3):
        return L.Conv2D(n, k, strides=s, padding="same", use_bias=False,
                        name=name)(t)

    def bn(t, name):
        return L.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name)(t)

    inp = K.Input((28, 28, 1), name="input")
    t = L.ReLU(name="stem_relu")(bn(conv(inp, "stem_conv", 16), "stem_bn"))
    for stage in range(3):
        out = 16 * 2 ** stage
        for block in range(3):
            p = f"s{stage + 1}b{block + 1}"
            s = 2 if stage > 0 and block == 0 else 1
            h = L.ReLU(name=f"{p}_relu1")(bn(conv(t, f"{p}_conv1", out, s),
                                             f"{p}_bn1"))
            h = bn(conv(h, f"{p}_conv2", out), f"{p}_bn2")
            sc = t
            if stage > 0 and block == 0:
                sc = bn(conv(t, f"{p}_proj", out, s, k=1), f"{p}_proj_bn")
            t = L.ReLU(name=f"{p}_out")(L.Add(name=f"{p}_add")([h, sc]))
    t = L.GlobalAveragePooling2D(name="gap")(t)
    return K.Model(inp, L.Dense(10, name="logits")(t))


def _load_weights(model, path: str) -> None:
    data = np.load(path)
    for layer in model.layers:
        ws = [data[f"{layer.name}/{i}"] for i in range(len(layer.weights))]
        if ws:
            layer.set_weights(ws)


def _prune_worker(spec: dict) -> None:
    """``prune_low_magnitude`` to ``spec["sparsity"]`` during a fine-tune;
    writes accuracy, epoch times, float32 TFLite size and params."""
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras as K

    data = np.load(spec["data"])
    x, y, xt, yt = data["x"], data["y"], data["xt"], data["yt"]
    model = resnet20(K)
    _load_weights(model, spec["weights"])
    steps = int(np.ceil(len(x) / spec["batch"])) * spec["finetune"]
    sched = tfmot.sparsity.keras.PolynomialDecay(
        0.0, spec["sparsity"], 0, max(1, int(0.6 * steps)),
        frequency=max(1, steps // 8))
    pruned = tfmot.sparsity.keras.prune_low_magnitude(
        model, pruning_schedule=sched)
    pruned.compile(K.optimizers.Adam(spec["lr"]),
                   K.losses.SparseCategoricalCrossentropy(from_logits=True),
                   metrics=["accuracy"])
    times = []

    class EpochTimes(K.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.t)

    pruned.fit(x, y, batch_size=spec["batch"], epochs=spec["finetune"],
               verbose=0, callbacks=[tfmot.sparsity.keras.UpdatePruningStep(),
                                     EpochTimes()])
    final = tfmot.sparsity.keras.strip_pruning(pruned)
    final.compile(metrics=["accuracy"],
                  loss=K.losses.SparseCategoricalCrossentropy(
                      from_logits=True))
    acc = float(final.evaluate(xt, yt, verbose=0, batch_size=256)[1])
    flat = tf.lite.TFLiteConverter.from_keras_model(final).convert()
    with open(spec["tflite"], "wb") as f:
        f.write(flat)
    with open(spec["result"], "w") as f:
        json.dump({"accuracy": acc, "epoch_times": times,
                   "fp32_bytes": len(flat),
                   "params": int(final.count_params())}, f)


def _qat_worker(spec: dict) -> None:
    """``quantize_model`` (default 8-bit scheme), the same fine-tune as
    tfcomp's QAT rows, full-integer conversion; writes the test logits
    (``spec["logits"]``) and the float / QAT step times, timed side by
    side after the evaluation."""
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras as K

    data = np.load(spec["data"])
    x, y, xt = data["x"], data["y"], data["xt"]
    K.utils.set_random_seed(spec["seed"])
    loss = K.losses.SparseCategoricalCrossentropy(from_logits=True)
    # The same tf_keras model in float: TFMOT's own step-time baseline.
    fl = resnet20(K)
    _load_weights(fl, spec["weights"])
    fl.compile(K.optimizers.Adam(spec["lr"]), loss)
    model = resnet20(K)
    _load_weights(model, spec["weights"])
    q = tfmot.quantization.keras.quantize_model(model)
    q.compile(K.optimizers.Adam(spec["lr"]), loss, metrics=["accuracy"])
    q.fit(x, y, batch_size=spec["batch"], epochs=spec["epochs"], verbose=0,
          shuffle=True)
    logits = q.predict(xt, batch_size=256, verbose=0)
    converter = tf.lite.TFLiteConverter.from_keras_model(q)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    # QAT mode: ranges from TFMOT's FakeQuant ops (no representative data);
    # restricting supported_ops to INT8 would demand a dataset.
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    flat = converter.convert()
    with open(spec["tflite"], "wb") as f:
        f.write(flat)
    np.save(spec["logits"], logits)
    st = interleaved_step_times({"float": fl, "qat": q},
                                x[:spec["batch"]], y[:spec["batch"]])
    with open(spec["result"], "w") as f:
        json.dump({"float_step_s": st["float"], "qat_step_s": st["qat"],
                   "steps_per_epoch": int(np.ceil(len(x) / spec["batch"])),
                   "tfmot_version": tfmot.__version__}, f)


_WORKERS = {"prune": _prune_worker, "qat": _qat_worker}

if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in _WORKERS:
        sys.exit(f"usage: python _tfmot.py {{{','.join(_WORKERS)}}} "
                 "SPEC.json")
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    with open(sys.argv[2]) as f:
        _WORKERS[sys.argv[1]](json.load(f))
