"""Sparsity schedules for magnitude pruning: when to update masks, how sparse.

A schedule is a small, JSON-serialisable object. Calling it with a training
step returns ``(should_prune, sparsity)``: whether the masks are recomputed
at this step and the fraction of weights (per layer) that must then be zero.
The semantics follow the TF Model Optimization Toolkit's schedules, so its
schedule objects (``tfmot.sparsity.keras.PolynomialDecay`` ...) are accepted
as well (duck-typed; TFMOT itself is never imported here).

Example:
    >>> s = PolynomialDecay(0.0, 0.8, begin_step=0, end_step=1000,
    ...                     frequency=100)
    >>> should_prune, sparsity = s(500)     # (True, 0.7)
    >>> PolynomialDecay.from_config(s.get_config()) == s
    True
"""

from __future__ import annotations

import keras
import numpy as np

from tfcomp.pruning.targets import check_ratio

__all__ = [
    "ConstantSparsity",
    "PolynomialDecay",
    "PruningSchedule",
    "get_schedule",
]


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer. Received: "
                        f"{name}={value!r}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be >= {minimum}. Received: "
                         f"{name}={value}")
    return int(value)


class PruningSchedule:
    """Base class: ``schedule(step) -> (should_prune, sparsity)``.

    Subclasses implement :meth:`sparsity` and set ``begin_step``,
    ``end_step`` (-1: never ends) and ``frequency``. Masks are updated at
    ``begin_step``, every ``frequency`` steps after it, and at ``end_step``
    (so the final sparsity is always reached; TFMOT only updates on the
    frequency grid).

    Example:
        >>> class Step(PruningSchedule):
        ...     def sparsity(self, step):
        ...         return 0.5 if step >= 100 else 0.0
    """

    begin_step: int = 0
    end_step: int = -1
    frequency: int = 100

    def sparsity(self, step: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def should_prune(self, step: int) -> bool:
        """Whether masks are recomputed at ``step``."""
        step = int(step)
        if step < self.begin_step:
            return False
        if self.end_step >= 0 and step > self.end_step:
            return False
        if step == self.end_step:
            return True
        return (step - self.begin_step) % self.frequency == 0

    def end_sparsity(self) -> float:
        """The sparsity the schedule ends at."""
        end = self.end_step if self.end_step >= 0 else self.begin_step
        return self.sparsity(end)

    def __call__(self, step: int):
        return self.should_prune(step), float(self.sparsity(step))

    def get_config(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and \
            self.get_config() == other.get_config()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@keras.saving.register_keras_serializable(package="tfcomp")
class ConstantSparsity(PruningSchedule):
    """Constant target sparsity, applied every ``frequency`` steps.

    Args:
        target_sparsity: fraction of each layer's weights that are zero, in
            [0, 1).
        begin_step: first step at which masks are computed.
        end_step: last step at which masks are recomputed (-1: no end).
        frequency: steps between mask updates.

    Example:
        >>> ConstantSparsity(0.5, begin_step=100, frequency=50)(150)
        (True, 0.5)
    """

    def __init__(self, target_sparsity: float, begin_step: int = 0,
                 end_step: int = -1, frequency: int = 100):
        self.target_sparsity = check_ratio(target_sparsity,
                                               "target_sparsity")
        self.begin_step = _check_int(begin_step, "begin_step", 0)
        self.end_step = _check_int(end_step, "end_step", -1)
        if 0 <= self.end_step < self.begin_step:
            raise ValueError(
                "end_step must be -1 or >= begin_step. Received: "
                f"begin_step={begin_step}, end_step={end_step}")
        self.frequency = _check_int(frequency, "frequency", 1)

    def sparsity(self, step: int) -> float:
        return self.target_sparsity

    def end_sparsity(self) -> float:
        return self.target_sparsity

    def get_config(self) -> dict:
        return {"target_sparsity": self.target_sparsity,
                "begin_step": self.begin_step, "end_step": self.end_step,
                "frequency": self.frequency}


@keras.saving.register_keras_serializable(package="tfcomp")
class PolynomialDecay(PruningSchedule):
    """Sparsity rising from ``initial`` to ``final`` along a polynomial.

    ``s(t) = s_f + (s_i - s_f) * (1 - p)^power`` with
    ``p = clip((t - begin_step) / (end_step - begin_step), 0, 1)`` (Zhu &
    Gupta's gradual pruning, the schedule Han et al.'s magnitude pruning is
    usually run with; TFMOT's default ``power=3``).

    Args:
        initial_sparsity: sparsity at ``begin_step``, in [0, 1).
        final_sparsity: sparsity from ``end_step`` on, in [0, 1).
        begin_step: first mask update.
        end_step: step at which ``final_sparsity`` is reached (> begin).
        power: exponent of the decay.
        frequency: steps between mask updates.

    Reference: Zhu & Gupta, To prune, or not to prune, arXiv:1710.01878;
    Han et al., Deep Compression, arXiv:1510.00149.

    Example:
        >>> s = PolynomialDecay(0.0, 0.8, begin_step=0, end_step=1000)
        >>> round(s.sparsity(500), 3)
        0.7
    """

    def __init__(self, initial_sparsity: float, final_sparsity: float,
                 begin_step: int, end_step: int, power: float = 3,
                 frequency: int = 100):
        self.initial_sparsity = check_ratio(initial_sparsity,
                                                "initial_sparsity")
        self.final_sparsity = check_ratio(final_sparsity,
                                               "final_sparsity")
        self.begin_step = _check_int(begin_step, "begin_step", 0)
        self.end_step = _check_int(end_step, "end_step", 0)
        if self.end_step <= self.begin_step:
            raise ValueError(
                "end_step must be > begin_step. Received: "
                f"begin_step={begin_step}, end_step={end_step}")
        if isinstance(power, bool) or not isinstance(
                power, (int, float, np.integer, np.floating)) or power <= 0:
            raise ValueError(f"power must be a number > 0. Received: "
                             f"power={power!r}")
        self.power = float(power)
        self.frequency = _check_int(frequency, "frequency", 1)

    def sparsity(self, step: int) -> float:
        span = self.end_step - self.begin_step
        p = min(1.0, max(0.0, (int(step) - self.begin_step) / span))
        return (self.final_sparsity + (self.initial_sparsity
                                        - self.final_sparsity)
                * (1.0 - p) ** self.power)

    def end_sparsity(self) -> float:
        return self.final_sparsity

    def get_config(self) -> dict:
        return {"initial_sparsity": self.initial_sparsity,
                "final_sparsity": self.final_sparsity,
                "begin_step": self.begin_step, "end_step": self.end_step,
                "power": self.power, "frequency": self.frequency}


class _ForeignSchedule(PruningSchedule):
    """Adapter for a TFMOT-style schedule: ``obj(step) -> (bool, float)``
    tensors. The foreign object decides both when and how much."""

    def __init__(self, obj):
        self.obj = obj
        cfg = {}
        try:
            cfg = dict(obj.get_config())
            cfg = cfg.get("config", cfg)
        except (AttributeError, TypeError, ValueError, NotImplementedError):
            cfg = {}  # metadata is optional
        self.begin_step = int(cfg.get("begin_step", 0))
        self.end_step = int(cfg.get("end_step", -1))
        self.frequency = int(cfg.get("frequency", 1))
        self._cfg = cfg

    def __call__(self, step: int):
        should, sparsity = self.obj(np.int64(step))
        return bool(np.asarray(should)), float(np.asarray(sparsity))

    def should_prune(self, step: int) -> bool:
        return self(step)[0]

    def sparsity(self, step: int) -> float:
        return self(step)[1]

    def end_sparsity(self) -> float:
        for key in ("final_sparsity", "target_sparsity"):
            if key in self._cfg:
                return float(self._cfg[key])
        return self.sparsity(max(self.end_step, self.begin_step))

    def get_config(self) -> dict:
        return {"foreign": type(self.obj).__name__, **self._cfg}


def get_schedule(schedule) -> PruningSchedule:
    """Returns a :class:`PruningSchedule` for a schedule-like value.

    Accepts tfcomp schedules, their ``get_config()`` dicts (with a
    ``"class_name"`` of ``ConstantSparsity`` / ``PolynomialDecay`` or the
    keys of one), a float (constant sparsity from step 0, updated every 100
    steps), and TFMOT ``PruningSchedule`` objects (anything callable as
    ``obj(step) -> (should_prune, sparsity)``).

    Example:
        >>> get_schedule(0.5)
        ConstantSparsity(target_sparsity=0.5, begin_step=0, end_step=-1, frequency=100)
    """
    if isinstance(schedule, PruningSchedule):
        return schedule
    if isinstance(schedule, (float, int, np.floating, np.integer)) and \
            not isinstance(schedule, bool):
        return ConstantSparsity(float(schedule))
    if isinstance(schedule, dict):
        name = schedule.get("class_name")
        cfg = schedule.get("config", schedule)
        cfg = {k: v for k, v in cfg.items() if k != "class_name"}
        if name in (None, "ConstantSparsity") and "target_sparsity" in cfg:
            return ConstantSparsity(**cfg)
        if name in (None, "PolynomialDecay") and "final_sparsity" in cfg:
            return PolynomialDecay(**cfg)
        raise ValueError(f"Unknown schedule config. Received: {schedule!r}")
    if callable(schedule):
        return _ForeignSchedule(schedule)
    raise TypeError(
        "schedule must be a tfcomp.pruning.PruningSchedule (ConstantSparsity,"
        " PolynomialDecay), a config dict, a float or a TFMOT schedule. "
        f"Received: schedule={schedule!r}")
