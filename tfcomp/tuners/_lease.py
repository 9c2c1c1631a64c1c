"""Leases: keras-tuner oracles that reclaim the trials of dead workers.

Not public API. In keras-tuner's chief/worker mode a worker killed in the
middle of a trial keeps it forever: the trial stays in the chief's
``ongoing_trials``, the worker's id in ``tuner_ids``, and the chief, which
exits only when both are empty, never does; the trial's result is lost.

``LeasedOracle`` (the base of tfcomp's AMC / HAQ oracles) gives every worker
a lease of ``lease_timeout`` seconds, renewed by each of its calls
(``create_trial``; ``update_trial`` / ``get_trial`` of the trial it holds).
tfcomp's tuners renew it during a long trial with a :class:`Heartbeat`
(``get_trial`` every ``lease_timeout / 4`` s), so only a worker that stopped
reporting (killed, hung, cut off) loses its lease. When any worker asks for
a trial, every other worker whose lease ran out is dropped: its trial goes to
keras-tuner's retry queue and is handed, with the same values, to the next
worker that asks. A restarted worker with the same id whose lease has not
run out gets its own trial back (keras-tuner's resume).

So that a reclaimed trial always finds a worker, a worker that asks when
no trial is left is told to wait (``IDLE``; tfcomp's tuners then pause
briefly) while a trial is still running elsewhere or another worker has not
yet asked to stop; it is told to stop once every trial has ended and every
other worker has either asked to stop too or lost its lease. The chief then
exits as keras-tuner's does.

A trial whose first worker comes back after its lease ran out may be
reported twice: the first report counts, the later one is ignored.

``lease_timeout=None`` turns all of this off (keras-tuner's behaviour).
"""

from __future__ import annotations

import glob
import json
import os
import threading
import time
import warnings

import keras_tuner as kt
from keras_tuner.engine.trial import Trial, TrialStatus

from tfcomp._io import BadInputError, atomic_write_text, check_number, read_json

__all__ = ["Heartbeat", "LeasedOracle", "paced_create_trial"]

DEFAULT_LEASE_TIMEOUT = 600.0

# Monotonic clock of the leases (tests replace it).
_clock = time.monotonic


def check_lease_timeout(value):
    """``None`` or a finite number of seconds > 0.

    Example:
        >>> check_lease_timeout(600)
        600.0
    """
    if value is None:
        return None
    return check_number(value, "lease_timeout", 0, min_open=True,
                        hint="seconds a worker may go without reporting "
                        "before its trial is reclaimed, or None")


class LeasedOracle(kt.Oracle):
    """A keras-tuner Oracle whose workers hold their trials on a lease.

    See the module docstring. Besides the leases it writes ``trial.json``
    atomically and, on resume, names a truncated or corrupt state file.

    Args:
        lease_timeout: seconds a worker may go without any call to the
            oracle before its trial is handed to another worker (default
            600; None: never). tfcomp's tuners send a heartbeat every
            ``lease_timeout / 4`` s during a trial, so a long trial keeps
            its lease; only a dead or hung worker loses it.
        **kwargs: ``keras_tuner.Oracle`` arguments.
    """

    def __init__(self, *args, lease_timeout: float | None =
                 DEFAULT_LEASE_TIMEOUT, **kwargs):
        self.lease_timeout = check_lease_timeout(lease_timeout)
        super().__init__(*args, **kwargs)
        self._seen: dict = {}         # tuner_id -> last call (clock)
        self._stopping: set = set()   # asked for a trial after the last one

    # -- leases ------------------------------------------------------------
    def _touch_trial(self, trial_id) -> None:
        """Renews the lease of the worker holding ``trial_id``."""
        now = _clock()
        for tuner_id, trial in self.ongoing_trials.items():
            if trial.trial_id == trial_id:
                self._seen[tuner_id] = now

    def _reclaim(self, keep: str) -> None:
        """Drops every worker but ``keep`` whose lease ran out; their
        trials go to the retry queue."""
        if self.lease_timeout is None:
            return
        now = _clock()
        reclaimed = False
        for tuner_id in sorted(set(self.tuner_ids) | set(self.ongoing_trials)):
            silent = now - self._seen.setdefault(tuner_id, now)
            if tuner_id == keep or silent <= self.lease_timeout:
                continue
            self.tuner_ids.discard(tuner_id)
            self._stopping.discard(tuner_id)
            self._seen.pop(tuner_id, None)
            trial = self.ongoing_trials.pop(tuner_id, None)
            if trial is None:
                continue
            self._retry_queue.append(trial.trial_id)
            reclaimed = True
            warnings.warn(
                f"Worker {tuner_id!r} sent nothing for {silent:.0f} s "
                f"(lease_timeout={self.lease_timeout:g}): its trial "
                f"{trial.trial_id} goes to the next worker that asks.",
                RuntimeWarning, stacklevel=2)
        if reclaimed:
            self.save()

    def _search_over_for(self, tuner_id) -> bool:
        return (tuner_id not in self.ongoing_trials and not self._retry_queue
                and bool(self.max_trials)
                and len(self.trials) >= self.max_trials)

    @kt.synchronized
    def create_trial(self, tuner_id):
        """keras-tuner's ``create_trial``, after reclaiming the trials of
        workers whose lease ran out; ``IDLE`` while the end of the search
        waits for other workers (module docstring)."""
        self._seen[tuner_id] = _clock()
        self._reclaim(keep=tuner_id)
        if self.lease_timeout is not None and self._search_over_for(tuner_id):
            self._stopping.add(tuner_id)
            others = set(self.tuner_ids) - {tuner_id} - self._stopping
            if self.ongoing_trials or others:
                self.tuner_ids.add(tuner_id)
                return Trial(self.get_space(), trial_id="idle",
                             status=TrialStatus.IDLE)
        trial = super().create_trial(tuner_id)
        if trial.status == TrialStatus.STOPPED:
            self._stopping.discard(tuner_id)
            self._seen.pop(tuner_id, None)
        elif trial.status == TrialStatus.RUNNING:
            self._stopping.discard(tuner_id)
        return trial

    @kt.synchronized
    def update_trial(self, trial_id, metrics, step=0):
        """keras-tuner's ``update_trial`` (renews the lease); a late report
        of a trial that already ended is ignored."""
        self._touch_trial(trial_id)
        if trial_id in self.end_order:
            return self.trials[trial_id]
        return super().update_trial(trial_id, metrics, step=step)

    @kt.synchronized
    def get_trial(self, trial_id):
        """The trial (renews the lease of the worker holding it: the
        heartbeat)."""
        self._touch_trial(trial_id)
        return super().get_trial(trial_id)

    @kt.synchronized
    def end_trial(self, trial):
        """keras-tuner's ``end_trial``. Returns False (and changes nothing)
        for a second report of a trial that already ended: a reclaimed
        trial whose first worker came back; the first report counts."""
        trial_id = trial.trial_id
        if trial_id in self.end_order:
            return False
        if trial_id in self._retry_queue:
            # reclaimed, and its first worker reports before anyone re-ran it
            self._retry_queue.remove(trial_id)
        super().end_trial(trial)
        return True

    # -- files -------------------------------------------------------------
    def _save_trial(self, trial):
        path = os.path.join(self._get_trial_dir(trial.trial_id), "trial.json")
        atomic_write_text(path, json.dumps(trial.get_state()))

    def _check_state_files(self) -> None:
        """A clear error naming a truncated or corrupt ``oracle.json`` or
        ``trial.json`` of the project being resumed."""
        project = self._project_dir
        paths = [os.path.join(project, "oracle.json")] + sorted(
            glob.glob(os.path.join(project, "trial_*", "trial.json")))
        for path in paths:
            if os.path.exists(path):
                check_state_file(path, "keras-tuner state file")

    def reload(self):
        self._check_state_files()
        super().reload()
        self._seen.clear()
        self._stopping.clear()


def check_state_file(path: str, what: str) -> dict:
    """The JSON object in a search's state file, or a ``BadInputError``
    naming the file (truncated, corrupt, not an object).

    Example:
        >>> check_state_file("runs/amc/oracle.json", "oracle state")
    """
    hint = ("Cannot resume the search from it: pass overwrite=True (CLI: "
            "--overwrite) or use another project / --directory.")
    try:
        state = read_json(path, what)
    except ValueError as e:
        raise BadInputError(f"{e} {hint}") from None
    if not isinstance(state, dict):
        raise BadInputError(f"{what} {path!r} holds a JSON "
                            f"{type(state).__name__}, not an object. {hint}")
    return state


class Heartbeat:
    """Calls ``beat()`` every ``interval`` seconds on a daemon thread until
    :meth:`stop` (a worker renewing its lease during a trial). A failing
    beat ends the heartbeat quietly; the trial's own calls report errors.

    Example:
        >>> hb = Heartbeat(lambda: oracle.get_trial(trial_id), 150.0)
        >>> hb.stop()
    """

    def __init__(self, beat, interval: float):
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(beat, float(interval)), daemon=True,
            name="tfcomp-lease-heartbeat")
        self._thread.start()

    def _run(self, beat, interval):
        while not self._stop.wait(interval):
            try:
                beat()
            except Exception:  # noqa: BLE001 - the chief is gone or busy
                return

    def stop(self) -> None:
        """Stops the beats (does not wait for one in flight)."""
        self._stop.set()


def paced_create_trial(create_trial, pause: float):
    """``create_trial`` that sleeps ``pause`` s after an ``IDLE`` answer
    (keras-tuner's worker loop asks again at once).

    Example:
        >>> oracle.create_trial = paced_create_trial(oracle.create_trial, 0.5)
    """

    def create(tuner_id):
        trial = create_trial(tuner_id)
        if trial.status == TrialStatus.IDLE:
            time.sleep(pause)
        return trial

    return create
