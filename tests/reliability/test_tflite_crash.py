"""A truncated or corrupt ``.tflite`` never kills Python.

``tf.lite.Interpreter(model_path=...)`` maps a file unverified and a
corrupt one crashes the process (SIGSEGV); the old runtime finder handed
such a file to it after ai-edge-litert had rejected it. Every case runs in
a subprocess, which must exit normally and print a clear error naming the
file for each.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tfcomp.hardware import LayerSpec, build_layer_model
from tfcomp.hardware.tflite_profiler import layer_to_tflite

CHILD = textwrap.dedent('''
    import json, sys
    import keras
    import tensorflow as tf
    from tfcomp.export import measure_latency
    from tfcomp.hardware import device_profiler as dp
    from tfcomp.hardware.runtime import make_interpreter
    from tfcomp.report import collect_results

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    calls = {
        "measure_latency": lambda p: measure_latency(p, runs=2, warmup=0),
        "make_interpreter": lambda p: make_interpreter(p),
        # the runtime tfcomp falls back to when ai-edge-litert is missing
        "tf.lite": lambda p: dp.time_samples(
            [p], runs=1, warmup=0, rounds=1,
            interpreter_cls=tf.lite.Interpreter),
        "report": lambda p: collect_results({"m": model}, tflite={"m": p},
                                            runs=2),
    }
    for path in sys.argv[1:]:
        for name, call in calls.items():
            try:
                call(path)
                out = {"error": None}
            except Exception as e:
                out = {"error": type(e).__name__, "message": str(e),
                       "value_error": isinstance(e, ValueError),
                       "not_found": isinstance(e, FileNotFoundError)}
            out.update(path=path, call=name)
            print(json.dumps(out), flush=True)
''')


@pytest.fixture(scope="module")
def flatbuffer():
    spec = LayerSpec("c", "conv", 6, 6, 3, 4, kernel=(3, 3), padding="same")
    return layer_to_tflite(build_layer_model(spec))


def _variants(good: bytes) -> dict:
    flipped = bytes(b ^ 0x5A if i % 7 == 3 else b for i, b in
                    enumerate(good))  # crashed tf.lite via model_path
    return {
        "empty.tflite": b"",
        "header.tflite": good[:8],
        "cut_100.tflite": good[:100],
        "cut_half.tflite": good[:len(good) // 2],
        "cut_end.tflite": good[:-9],
        "flipped.tflite": flipped,
        "zeros.tflite": bytes(len(good)),
        "text.tflite": b"this is not a model\n" * 20,
    }


def test_corrupt_tflite_files_raise_instead_of_crashing(tmp_path, flatbuffer):
    files = []
    for name, data in _variants(flatbuffer).items():
        (tmp_path / name).write_bytes(data)
        files.append(str(tmp_path / name))
    missing = str(tmp_path / "missing.tflite")
    good = str(tmp_path / "good.tflite")
    (tmp_path / "good.tflite").write_bytes(flatbuffer)
    repo = os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    env = dict(os.environ, KERAS_BACKEND="tensorflow",
               TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=repo + os.pathsep + os.environ.get("PYTHONPATH",
                                                             ""))
    proc = subprocess.run([sys.executable, "-c", CHILD, *files, missing,
                           good], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    results = [json.loads(line) for line in proc.stdout.splitlines()
               if line.startswith("{")]
    assert len(results) == 4 * (len(files) + 2)
    for r in results:
        where = f"{r['call']} on {os.path.basename(r['path'])}"
        if r["path"] == good:
            assert r["error"] is None, (where, r)
        elif r["path"] == missing:
            assert r["not_found"], (where, r)
            assert "missing.tflite" in r["message"], (where, r)
        else:
            assert r["value_error"], (where, r)
            assert os.path.basename(r["path"]) in r["message"], (where, r)
            assert ("truncated" in r["message"]
                    or "corrupt" in r["message"]), (where, r)
