"""Fork server of ``test_kill_writers.py``: writes tfcomp artifacts in forked
children that are SIGKILLed at chosen points.

Run as ``python _kill_worker.py REF_DIR``. It imports tfcomp once, writes
the reference artifacts (versions 0 and 1 of every kind, never killed) into
``REF_DIR``, prints ``ready`` and then reads one JSON command per line:

* ``{"kind", "path", "version", "stage", "index"}``: a child writes that
  version of the artifact and SIGKILLs itself the ``index``-th time the
  atomic writer reaches ``stage`` (``tfcomp._io._hook``: "open", "chunk",
  "written", "replaced"); without ``stage`` the write is not killed.
* ``{"kind", "path", "delay"}``: a child writes versions 1, 0, 1, ... in a
  loop and this process SIGKILLs it after ``delay`` seconds.

It answers each command with ``{"signal": n or 0, "exit": code}``. Forking
keeps the kill tests cheap: TensorFlow and Keras are imported once.
"""

import json
import os
import signal
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tfcomp import _io  # noqa: E402
from tfcomp.export.bitserial import random_ir, write_descriptor  # noqa: E402
from tfcomp.hardware import Cost, LatencyTable, LayerSpec  # noqa: E402
from tfcomp.pruning import Plan  # noqa: E402

KINDS = ("plan", "table", "tflite", "descriptor", "keras")
EXT = {"plan": ".json", "table": ".json", "tflite": ".tflite",
       "descriptor": ".json", "keras": ".keras"}


def _plan(v):
    return Plan(removed={"c1": [0, 3]} if v else {"c1": [1]},
                sizes={"c1": 8, "c2": 16}, order=["c1", "c2"],
                model_name=f"net{v}", fingerprint="0123456789abcdef",
                meta={"version": v})


def _table(v):
    t = LatencyTable(hardware={"name": f"hw{v}", "config": {}},
                     meta={"version": v})
    for c in (4, 8, 16):
        t.add(LayerSpec("c", "conv", 8, 8, 3, c, kernel=(3, 3)), 8, 8,
              Cost(100 * c + v, 1e-6 * c + v * 1e-7, None))
    return t


def _tflite(v):
    # 2.5 MiB: three chunks of atomic_write_bytes, so "chunk" kills mid-file
    rng = np.random.default_rng(v)
    body = rng.integers(0, 256, (5 << 19) - 8, dtype=np.uint8).tobytes()
    return b"\x1c\x00\x00\x00TFL3" + body


IRS = {v: random_ir(seed=v, head="flatten") for v in (0, 1)}


def _model(v):
    keras.utils.set_random_seed(v)
    x = keras.Input((6,))
    h = keras.layers.Dense(8 + 4 * v, activation="relu", name="d1")(x)
    return keras.Model(x, keras.layers.Dense(3, name="d2")(h),
                       name=f"net{v}")


MODELS = {v: _model(v) for v in (0, 1)}
TFLITE = {v: _tflite(v) for v in (0, 1)}


def write(kind, path, v):
    if kind == "plan":
        _plan(v).save(path)
    elif kind == "table":
        _table(v).save(path)
    elif kind == "tflite":
        _io.atomic_write_bytes(path, TFLITE[v])  # as export_tflite does
    elif kind == "descriptor":
        write_descriptor(IRS[v], path, hardware="bismo" if v else "bitfusion")
    elif kind == "keras":
        _io.atomic_save_keras(MODELS[v], path)
    else:
        raise ValueError(kind)


def _kill_at(stage, index):
    seen = [0]

    def hook(at, path, tmp):
        if at == stage:
            seen[0] += 1
            if seen[0] == index:
                os.kill(os.getpid(), signal.SIGKILL)

    _io._hook = hook


def _wait(pid, limit=60.0):
    end = time.time() + limit
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.time() > end:  # a hung child: report it, never block
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return -1
        time.sleep(0.002)


def serve(ref_dir):
    for kind in KINDS:
        for v in (0, 1):
            sub = os.path.join(ref_dir, f"{kind}{v}")
            os.makedirs(sub, exist_ok=True)
            write(kind, os.path.join(sub, "a" + EXT[kind]), v)
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        pid = os.fork()
        if pid == 0:  # the writer
            try:
                if "delay" in cmd:
                    v = 1
                    while True:
                        write(cmd["kind"], cmd["path"], v)
                        v = 1 - v
                if cmd.get("stage"):
                    _kill_at(cmd["stage"], cmd["index"])
                write(cmd["kind"], cmd["path"], cmd["version"])
            except BaseException as e:  # noqa: BLE001
                sys.stderr.write(f"writer failed: {e!r}\n")
                os._exit(3)
            os._exit(0)
        if "delay" in cmd:
            time.sleep(cmd["delay"])
            os.kill(pid, signal.SIGKILL)
        status = _wait(pid)
        if status == -1:
            answer = {"signal": 0, "exit": "hung"}
        elif os.WIFSIGNALED(status):
            answer = {"signal": os.WTERMSIG(status), "exit": None}
        else:
            answer = {"signal": 0, "exit": os.WEXITSTATUS(status)}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    serve(sys.argv[1])
