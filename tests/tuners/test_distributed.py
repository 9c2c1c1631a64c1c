"""Distributed AMC search with keras-tuner's own chief/worker (gRPC) mode.

A chief and two workers on 127.0.0.1 run tests/tuners/dist_search_script.py
as subprocesses (fake metrics, so trials take ~0.3 s; the workers start
searching together). keras-tuner's chief
polls for its exit every 20 s once a worker is told to stop, so the whole
test takes 20-50 s on a loaded 2-core box. The second test SIGKILLs a
worker in the middle of a trial: the oracle's lease hands the trial to the
other worker, and the chief exits.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

pytest.importorskip("grpc")

SCRIPT = os.path.join(os.path.dirname(__file__), "dist_search_script.py")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
MAX_TRIALS = 6
LEASE = 5.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(role, work_dir, port, extra_env=None):
    env = dict(os.environ)
    env.update(extra_env or {})
    env.update({
        "KERASTUNER_TUNER_ID": role, "KERASTUNER_ORACLE_IP": "127.0.0.1",
        "KERASTUNER_ORACLE_PORT": str(port), "KERAS_BACKEND": "tensorflow",
        "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
        "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": ROOT + os.pathsep + env.get("PYTHONPATH", "")})
    # kept open for the process's lifetime; closed by the test
    out = open(os.path.join(work_dir, f"{role}.log"), "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, SCRIPT, str(work_dir), str(MAX_TRIALS)], env=env,
        cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    return proc, out


def _logs(work_dir) -> str:
    text = []
    for role in ("chief", "tuner0", "tuner1"):
        path = os.path.join(work_dir, f"{role}.log")
        if os.path.exists(path):
            with open(path) as f:
                text.append(f"--- {role} ---\n" + f.read()[-3000:])
    return "\n".join(text)


def _wait(proc, deadline, work_dir, role):
    try:
        rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pytest.fail(f"{role} did not finish in time.\n{_logs(work_dir)}")
    assert rc == 0, f"{role} exited with {rc}.\n{_logs(work_dir)}"


@pytest.mark.slow
def test_chief_and_two_workers_finish_the_search(tmp_path):
    work = tmp_path
    port = _free_port()
    started = time.monotonic()
    procs = []
    try:
        procs.append(("chief",) + _start("chief", work, port))
        for role in ("tuner0", "tuner1"):
            procs.append((role,) + _start(role, work, port))
        # Workers: imports + trials (bounded); the chief exits after
        # keras-tuner's own 20 s exit poll at most.
        for role, proc, _ in procs[1:]:
            _wait(proc, started + 90, work, role)
        _wait(procs[0][1], time.monotonic() + 45, work, "chief")
    finally:
        for _, proc, out in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
            out.close()

    ids = [f"{i}" for i in range(MAX_TRIALS)]
    ran = _ran(work)
    for role in ("tuner0", "tuner1"):
        assert (work / f"done_{role}.txt").exists()
    runs = ran["tuner0"] + ran["tuner1"]
    # every trial ran exactly once, on one worker; both workers took part
    assert sorted(runs) == ids, (ran, _logs(work))
    assert ran["tuner0"] and ran["tuner1"], ran
    assert (work / "done_chief.txt").exists()
    _check_project(work, ids)


def _ran(work) -> dict:
    ran = {}
    for role in ("tuner0", "tuner1"):
        path = work / f"ran_{role}.txt"
        ran[role] = path.read_text().split() if path.exists() else []
    return ran


def _check_project(work, ids) -> None:
    """The chief's project: every trial completed and learnt from once."""
    project = work / "chief" / "dist"
    state = json.loads((project / "oracle.json").read_text())
    assert sorted(state["start_order"]) == ids
    assert sorted(state["end_order"]) == ids
    assert state["ongoing_trials"] == {}
    assert state["retry_queue"] == []
    mine = state["tfcomp"]
    assert mine["episode"] == MAX_TRIALS
    assert mine["pending"] == {}
    assert sorted(h[0] for h in mine["history"]) == ids
    assert sorted(h[1] for h in mine["history"]) == list(range(MAX_TRIALS))
    for tid in ids:
        trial = json.loads((project / f"trial_{tid}" / "trial.json")
                           .read_text())
        assert trial["status"] == "COMPLETED"
        assert trial["score"] <= 0
    # the agent checkpoint the chief's oracle.json names is on disk
    assert (project / (mine["agent_file"] + ".json")).exists()
    # the workers hold no oracle state of their own
    for role in ("tuner0", "tuner1"):
        assert not (work / role / "dist" / "oracle.json").exists()


@pytest.mark.slow
def test_worker_killed_mid_trial_loses_no_trial(tmp_path):
    """tuner1 hangs in its first trial (heartbeating), is SIGKILLed and not
    restarted: tuner0 runs that trial after the lease, the chief exits."""
    work = tmp_path
    port = _free_port()
    extra = {"TFCOMP_DIST_LEASE": str(LEASE), "TFCOMP_DIST_HANG": "tuner1"}
    started = time.monotonic()
    procs = []
    try:
        procs.append(("chief",) + _start("chief", work, port, extra))
        for role in ("tuner0", "tuner1"):
            procs.append((role,) + _start(role, work, port, extra))
        victim_proc = procs[2][1]
        marker = work / "hang_tuner1.txt"
        while not (marker.exists() and marker.read_text().strip()):
            if time.monotonic() > started + 120 or \
                    victim_proc.poll() is not None:
                pytest.fail(f"tuner1 did not start a trial.\n{_logs(work)}")
            time.sleep(0.1)
        victim = marker.read_text().split()[0]
        # Alive and heartbeating, tuner1 keeps its trial past the lease
        # (tuner0 meanwhile ends the others and waits).
        time.sleep(LEASE * 1.4)
        assert victim not in _ran(work)["tuner0"], _logs(work)
        assert procs[0][1].poll() is None
        os.kill(victim_proc.pid, signal.SIGKILL)
        victim_proc.wait(timeout=10)
        _wait(procs[1][1], time.monotonic() + 90, work, "tuner0")
        # the chief exits once tuner0 is told to stop (no 20 s poll: by then
        # no trial is ongoing and no worker is left)
        _wait(procs[0][1], time.monotonic() + 45, work, "chief")
    finally:
        for _, proc, out in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
            out.close()

    ids = [f"{i}" for i in range(MAX_TRIALS)]
    ran = _ran(work)
    assert ran["tuner1"] == [victim], ran
    assert sorted(ran["tuner0"]) == ids, (ran, _logs(work))  # victim's too
    assert (work / "done_tuner0.txt").exists()
    assert not (work / "done_tuner1.txt").exists()
    assert (work / "done_chief.txt").exists()
    assert "sent nothing" in (work / "chief.log").read_text()
    _check_project(work, ids)
