"""Measured tables: single-layer TFLite timing and the device profiler."""

import json
import os
import subprocess
import sys
import tarfile

import keras
import numpy as np
import pytest

from tfcomp.hardware import (
    LatencyTable,
    build_layer_model,
    device_profiler,
    export_layer_archive,
    extract_specs,
    measure_tflite_table,
)
from tfcomp.hardware.tflite_profiler import layer_to_tflite

FRACTIONS = (0.5, 1.0)


def _model():
    x = keras.Input((8, 8, 3))
    y = keras.layers.Conv2D(8, 3, padding="same", name="c1")(x)
    z = keras.layers.Conv2D(8, 1, name="c2")(y)
    y = keras.layers.Add(name="add")([y, z])
    y = keras.layers.GlobalAveragePooling2D(name="gap")(y)
    return keras.Model(x, keras.layers.Dense(4, name="fc")(y))


def test_build_layer_model_matches_spec():
    for spec in extract_specs(_model()):
        m = build_layer_model(spec)
        assert tuple(m.inputs[0].shape) == (1, spec.in_h, spec.in_w,
                                            spec.cin) or spec.op == "dense"
        out = m.output.shape
        assert out[-1] == spec.cout
        assert len(m.inputs) == spec.n_inputs
    flat = layer_to_tflite(build_layer_model(extract_specs(_model())[0]))
    assert flat[4:8] == b"TFL3"


@pytest.mark.slow
def test_measure_tflite_table(tmp_path):
    model = _model()
    table = measure_tflite_table(model, channel_fractions=FRACTIONS, runs=6,
                                 warmup=1, rounds=2, progress=False)
    assert table.bit_invariant and table.hardware["name"] == "tflite"
    assert table.interpolation == "step"  # CPU latency: staircase in cout
    assert table.hardware["config"]["runtime"] in (
        "ai_edge_litert", "tflite_runtime", "tf.lite")
    assert 0 < table.overhead_s < 1e-2
    # c1: cin fixed (model input) x cout {4, 8}; c2: {4, 8}^2; add, gap:
    # {4, 8}; fc: cin {4, 8} x cout fixed -> 2 + 4 + 2 + 2 + 2
    assert len(table) == 12
    specs = extract_specs(model)
    for s in specs:
        c = table.lookup(s, 4, 4)  # bits are ignored by measured tables
        assert c == table.lookup(s, 32, 32)
        assert c.latency_s >= 0 and c.cycles is None and c.energy_j is None
    total = table.model_cost(model)
    assert total.latency_s == pytest.approx(
        table.overhead_s + sum(c.latency_s for c in total.layers.values()))
    # a narrower model is costed by interpolation within the measured range
    narrow = table.lookup(specs[1].with_channels(cin=6, cout=5))
    assert narrow.latency_s >= 0
    path = table.save(str(tmp_path / "host.json"))
    assert LatencyTable.load(path).to_dict() == table.to_dict()


def test_archive_and_standalone_device_profiler(tmp_path):
    model = _model()
    tar_path = export_layer_archive(model, str(tmp_path / "layers.tar"),
                                    channel_fractions=(1.0,),
                                    progress=False)
    with tarfile.open(tar_path) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("manifest.json"))
    assert "overhead.tflite" in names and len(manifest["layers"]) == 5
    assert all(n in names for n in (e["file"] for e in manifest["layers"]))

    # Run the profiler file on its own, as on a phone: it must not import
    # TensorFlow or Keras.
    out = tmp_path / "out.json"
    script = os.path.abspath(device_profiler.__file__)
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['device_profiler', {tar_path!r}, {str(out)!r}, "
        "'--runs', '4', '--warmup', '1', '--rounds', '2', '--quiet']\n"
        "try:\n"
        f"    runpy.run_path({script!r}, run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "bad = [m for m in ('tensorflow', 'keras', 'tfcomp') "
        "if m in sys.modules]\n"
        "assert not bad, bad\n")
    env = dict(os.environ, PYTHONPATH="")
    proc = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path),
                          env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = LatencyTable.load(str(out))
    assert len(table) == 5 and table.bit_invariant
    assert table.overhead_s > 0 and table.interpolation == "step"
    assert np.isfinite(table.model_cost(model).latency_s)


def test_archive_errors(tmp_path):
    bad = tmp_path / "bad.tar"
    with tarfile.open(bad, "w"):
        pass
    with pytest.raises(ValueError, match="manifest.json"):
        device_profiler.profile_archive(str(bad), runs=1, verbose=False)
    with pytest.raises(ValueError, match="runs must be"):
        device_profiler.time_models([], runs=0)
    with pytest.raises(ValueError, match="no costed layers"):
        measure_tflite_table(keras.Sequential([keras.Input((3,)),
                                               keras.layers.ReLU()]),
                             progress=False)


def test_device_profiler_writer_cleans_after_dead_writers(tmp_path):
    """The standalone writer keeps tfcomp._io's discipline: temporary names
    that name the writer, stale ones of dead writers removed."""
    from tfcomp import _io

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = _io._host_tag()
    stale = tmp_path / f".tmp-out.json-p{dead.pid}h{host}-x1.json"
    live = tmp_path / f".tmp-out.json-p{os.getpid()}h{host}-x2.json"
    other = tmp_path / f".tmp-other.json-p{dead.pid}h{host}-x3.json"
    for p in (stale, live, other):
        p.write_text("partial")
    device_profiler._write_json_atomic(str(tmp_path / "out.json"), {"a": 1})
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["out.json", live.name, other.name])
    assert json.loads((tmp_path / "out.json").read_text()) == {"a": 1}
    # tfcomp._io removes the device profiler's stale temporary files too
    _io.atomic_write_text(str(tmp_path / "other.json"), "{}")
    assert not other.exists()


def test_corrupt_layer_in_archive_is_named(tmp_path):
    path = tmp_path / "layers.tar"
    manifest = {"format": device_profiler.ARCHIVE_FORMAT, "version": 1,
                "overhead_file": "overhead.tflite",
                "layers": [{"file": "layer_0000.tflite", "spec": {}}]}
    import io

    with tarfile.open(path, "w") as tar:
        for name, data in (("manifest.json", json.dumps(manifest).encode()),
                           ("overhead.tflite", b"\x1c\0\0\0TFL3" + b"\0" * 8),
                           ("layer_0000.tflite", b"")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ValueError, match="member 'layer_0000.tflite'"):
        device_profiler.profile_archive(str(path), runs=1, verbose=False)
    path.write_bytes(path.read_bytes()[:700])  # a truncated archive
    with pytest.raises(ValueError, match="layers.tar"):
        device_profiler.profile_archive(str(path), runs=1, verbose=False)


def _dw_model():
    x = keras.Input((8, 8, 8))
    y = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    y = keras.layers.Conv2D(16, 1, name="pw")(y)
    y = keras.layers.GlobalAveragePooling2D(name="gap")(y)
    return keras.Model(x, keras.layers.Dense(4, name="fc")(y))


def test_precision_axis_table_and_archive(tmp_path):
    """Each weighted layer is timed at every precision (its file quantized
    as a LiteRT export is), stored at PRECISION_BITS; the device profiler
    writes the same keys from an archive."""
    pytest.importorskip("ai_edge_quantizer")
    from tfcomp.hardware.precision import (
        PRECISION_BITS,
        op_precisions,
        weight_ops,
    )
    from tfcomp.hardware.tflite_profiler import quantize_layer_file

    model = _dw_model()
    precisions = ("float32", "float16", "int8", "int4w")
    spec = next(s for s in extract_specs(model) if s.name == "pw")
    blob = layer_to_tflite(build_layer_model(spec))
    assert list(op_precisions(quantize_layer_file(blob, "int4w")).values()
                ) == ["int4w"]
    assert weight_ops(quantize_layer_file(blob, "float16"))[0].dtype == \
        "FLOAT16"
    table = measure_tflite_table(model, channel_fractions=(1.0,), runs=2,
                                 warmup=1, rounds=1, progress=False,
                                 precisions=precisions)
    assert not table.bit_invariant
    assert table.meta["precisions"] == list(precisions)
    assert sorted(table.bit_pairs) == sorted(PRECISION_BITS.values())
    for s in extract_specs(model):
        for p in precisions:
            assert table.lookup(s, *PRECISION_BITS[p]).latency_s >= 0
    assert table.model_cost(model).latency_s > 0  # float32 by default
    with pytest.raises(ValueError, match="precisions"):
        measure_tflite_table(model, progress=False, precisions=("int3",))

    path = export_layer_archive(model, str(tmp_path / "layers.tar"),
                                channel_fractions=(1.0,), progress=False,
                                precisions=precisions)
    doc = device_profiler.profile_archive(path, runs=2, warmup=1, rounds=1,
                                          verbose=False)
    device = LatencyTable.from_dict(doc)
    assert not device.bit_invariant
    assert device.bit_pairs == table.bit_pairs
    assert len(device) == len(table)


def test_version_1_archive_still_bit_invariant(tmp_path):
    path = export_layer_archive(_model(), str(tmp_path / "l.tar"),
                                channel_fractions=(1.0,), progress=False)
    with tarfile.open(path) as tar:
        assert json.load(tar.extractfile("manifest.json"))["version"] == 1
    doc = device_profiler.profile_archive(path, runs=1, warmup=0, rounds=1,
                                          verbose=False)
    assert doc["bit_invariant"] and all(
        [c[:2] for c in e["costs"]] == [[32, 32]] for e in doc["entries"])
