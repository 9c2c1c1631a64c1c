"""One TFLite runtime finder and timing loop (``device_profiler``), used by
``tfcomp.hardware.runtime``, ``tfcomp.export`` and the measured tables."""

import numpy as np
import pytest

import tfcomp.export.runtime as export_runtime
from tfcomp.export import measure_latency
from tfcomp.hardware import LayerSpec, build_layer_model, runtime
from tfcomp.hardware import device_profiler as dp
from tfcomp.hardware.tflite_profiler import layer_to_tflite


@pytest.fixture(scope="module")
def flatbuffer():
    spec = LayerSpec("c", "conv", 6, 6, 3, 4, kernel=(3, 3), padding="same")
    return layer_to_tflite(build_layer_model(spec))


def test_one_finder():
    assert export_runtime.make_interpreter is runtime.make_interpreter
    assert runtime.interpreter_classes is dp.interpreter_classes
    names = [n for n, _ in dp.interpreter_classes()]
    assert names[-1] == "tf.lite" and len(set(names)) == len(names)
    order = ["ai_edge_litert", "tflite_runtime", "tf.lite"]
    assert names == [n for n in order if n in names]
    assert "tf.lite" not in [n for n, _ in dp.interpreter_classes(
        tf_fallback=False)]
    assert runtime.interpreter_class(tf_fallback=True)[0] == names[0]


def test_timing_loop(flatbuffer):
    seconds, name = runtime.time_invokes(flatbuffer, runs=7, warmup=1)
    assert seconds.shape == (7,) and (seconds > 0).all()
    assert name in ("ai_edge_litert", "tflite_runtime", "tf.lite")
    samples = dp.time_samples([flatbuffer, flatbuffer], runs=4, warmup=0,
                              rounds=2, interpreter_cls=runtime.
                              interpreter_class(tf_fallback=True)[1])
    assert [s.shape for s in samples] == [(4,), (4,)]
    r = measure_latency(flatbuffer, runs=5, warmup=1)
    assert r.runs == 5 and r.median_ms > 0 and r.runtime == name


def test_make_interpreter_errors(flatbuffer):
    with pytest.raises(ValueError, match="threads must be an int >= 1"):
        runtime.make_interpreter(flatbuffer, threads=0)
    with pytest.raises(runtime.TFLiteModelError, match="not a TFLite file"):
        runtime.make_interpreter(b"not a flatbuffer")
    interp, _ = runtime.make_interpreter(flatbuffer)
    y = runtime.run_interpreter(interp, np.zeros((3, 6, 6, 3), np.float32))
    assert y.shape == (3, 6, 6, 4)
