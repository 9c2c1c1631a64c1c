"""Kill tests of every writer: a SIGKILL at any point of a write leaves the
old or the new artifact, complete, under the final name, and the next write
leaves no temporary file (nor a stale blob) behind.

Writers: ``Plan.save``, ``LatencyTable.save``, ``_io.atomic_write_bytes``
(what ``export_tflite`` writes with), ``write_descriptor`` (the
descriptor + blob pair of ``export_bitserial``) and ``_io.atomic_save_keras``.
The writes run in children of a fork server (``_kill_worker.py``, which
imports TensorFlow once), killed at hook points of the atomic writer
(``tfcomp._io._hook``) and after random delays.
"""

import json
import os
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from tfcomp import _io
from tfcomp.export.bitserial import descriptor_blob_path, load_descriptor
from tfcomp.hardware import LatencyTable
from tfcomp.pruning import Plan

HERE = os.path.dirname(os.path.abspath(__file__))
EXT = {"plan": ".json", "table": ".json", "tflite": ".tflite",
       "descriptor": ".json", "keras": ".keras"}
SIGKILL = 9


class Server:
    def __init__(self, ref_dir):
        env = dict(os.environ, KERAS_BACKEND="tensorflow",
                   TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
        repo = os.path.dirname(os.path.dirname(HERE))
        env["PYTHONPATH"] = repo + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "_kill_worker.py"),
             ref_dir], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True, env=env)
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            self.proc.kill()
            raise RuntimeError(f"kill worker did not start: {line!r}")

    def run(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        assert answer["exit"] != "hung", f"writer hung: {cmd}"
        return answer

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    ref = tmp_path_factory.mktemp("refs")
    s = Server(str(ref))
    s.ref_dir = str(ref)
    yield s
    s.close()


def _load(kind, path):
    """The artifact at ``path`` in a comparable form (loading it fully)."""
    if kind == "plan":
        return Plan.load(path).to_dict()
    if kind == "table":
        return LatencyTable.load(path).to_dict()
    if kind == "tflite":
        with open(path, "rb") as f:
            return f.read()
    if kind == "descriptor":
        desc, blob = load_descriptor(path)
        return json.dumps(desc, sort_keys=True), blob
    model = keras.saving.load_model(path)
    return model.name, [np.asarray(w).tobytes() for w in model.get_weights()]


def _ref(server, kind, v):
    return _load(kind, os.path.join(server.ref_dir, f"{kind}{v}",
                                    "a" + EXT[kind]))


def _litter(directory):
    return sorted(n for n in os.listdir(directory) if n.startswith(".tmp-"))


def _expected_files(kind, path):
    names = {os.path.basename(path)}
    if kind == "descriptor":
        names.add(os.path.basename(descriptor_blob_path(path)))
    return names


def _check_next_write_cleans(server, kind, path):
    assert server.run(kind=kind, path=path, version=1)["exit"] == 0
    directory = os.path.dirname(path)
    assert _litter(directory) == []
    assert set(os.listdir(directory)) == _expected_files(kind, path)
    assert _load(kind, path) == _ref(server, kind, 1)


# (stage, index, version left under the final name)
SINGLE = [("open", 1, 0), ("written", 1, 0), ("replaced", 1, 1)]
CASES = {
    "plan": SINGLE + [("chunk", 1, 0)],
    "table": SINGLE,
    "tflite": SINGLE + [("chunk", 1, 0), ("chunk", 2, 0)],
    "keras": SINGLE,
    # blob: events 1, JSON: events 2 (the JSON lands last)
    "descriptor": [("written", 1, 0), ("replaced", 1, 0), ("open", 2, 0),
                   ("chunk", 1, 0), ("written", 2, 0), ("replaced", 2, 1)],
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_kill_at_every_step_keeps_old_or_new(server, tmp_path, kind):
    for stage, index, left in CASES[kind]:
        directory = tmp_path / f"{stage}{index}"
        directory.mkdir()
        path = str(directory / ("a" + EXT[kind]))
        assert server.run(kind=kind, path=path, version=0)["exit"] == 0
        answer = server.run(kind=kind, path=path, version=1, stage=stage,
                            index=index)
        assert answer["signal"] == SIGKILL, (stage, index, answer)
        assert _load(kind, path) == _ref(server, kind, left), (stage, index)
        if stage in ("written", "chunk"):  # a killed temp file was left
            assert _litter(str(directory)), (stage, index)
        if kind == "descriptor" and (stage, index) in (("replaced", 1),
                                                       ("replaced", 2)):
            # an orphan (new blob, old JSON) or a stale (old) blob is left
            assert len([n for n in os.listdir(directory)
                        if n.endswith(".bin")]) == 2
        _check_next_write_cleans(server, kind, path)


@pytest.mark.parametrize("kind", sorted(CASES))
def test_kill_after_random_delays(server, tmp_path, kind):
    rng = np.random.default_rng(sorted(CASES).index(kind))
    refs = [_ref(server, kind, v) for v in (0, 1)]
    for i, delay in enumerate([0.0, *rng.uniform(0.005, 0.15, 2)]):
        directory = tmp_path / f"d{i}"
        directory.mkdir()
        path = str(directory / ("a" + EXT[kind]))
        assert server.run(kind=kind, path=path, version=0)["exit"] == 0
        answer = server.run(kind=kind, path=path, delay=float(delay))
        assert answer["signal"] == SIGKILL
        assert _load(kind, path) in refs
        _check_next_write_cleans(server, kind, path)


# ------------------------------------------------ which temp files are stale


def _temp(directory, base, owner):
    name = f".tmp-{base}-{owner}-abcd1234.json"
    p = os.path.join(directory, name)
    with open(p, "w") as f:
        f.write("partial")
    return name


def test_only_stale_temps_are_removed(tmp_path):
    host = _io._host_tag()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    d = str(tmp_path)
    mine = _temp(d, "a.json", f"p{os.getpid()}h{host}")
    gone = _temp(d, "a.json", f"p{dead.pid}h{host}")
    other_host = "ffffff" if host != "ffffff" else "eeeeee"
    remote = _temp(d, "a.json", f"p{dead.pid}h{other_host}")
    old_style = os.path.join(d, ".tmp-a.json-x1y2z3w4.json")
    with open(old_style, "w") as f:
        f.write("partial")
    other = _temp(d, "b.json", f"p{dead.pid}h{host}")
    removed = {os.path.basename(p) for p in _io.remove_stale_temps(
        os.path.join(d, "a.json"))}
    # a dead writer's temp goes; this process', another host's and an
    # unowned one (recent) stay, as does another file's
    assert removed == {gone}
    assert {mine, remote, other} <= set(os.listdir(d))
    past = time.time() - _io.STALE_TEMP_SECONDS - 60
    os.utime(old_style, (past, past))
    os.utime(os.path.join(d, remote), (past, past))
    removed = {os.path.basename(p) for p in _io.remove_stale_temps(
        os.path.join(d, "a.json"))}
    assert removed == {remote, os.path.basename(old_style)}
    _io.atomic_write_text(os.path.join(d, "a.json"), "{}")
    assert sorted(os.listdir(d)) == sorted(["a.json", mine, other])


def test_temp_names_are_recognisable(tmp_path):
    seen = []
    old = _io._hook
    _io._hook = lambda stage, path, tmp: seen.append((stage, tmp))
    try:
        _io.atomic_write_text(str(tmp_path / "plan.json"), "{}")
    finally:
        _io._hook = old
    stages = [s for s, _ in seen]
    assert stages == ["open", "chunk", "written", "replaced"]
    tmp = os.path.basename(seen[0][1])
    assert tmp.startswith(f".tmp-plan.json-p{os.getpid()}h{_io._host_tag()}-")
    assert tmp.endswith(".json")
