"""Snapshot Distillation: teacher-student optimization in one generation.

Training is split into ``cycles`` cycles of a cyclic cosine learning rate
(each cycle restarts at ``max_lr`` and anneals to ``min_lr``). The first
cycle trains plainly; the last snapshot of every cycle becomes the frozen
teacher of the whole next cycle, whose loss is the distillation loss of
:class:`~tfcomp.distill.Distiller` with softened (temperature ``T``)
teacher targets.

The callback drives a :class:`Distiller` built with ``teacher=None`` (the
teacher is then a copy of the student with distillation switched off): at
every cycle end it copies the student's weights into the teacher and turns
the distillation term on. Time is read from ``optimizer.iterations``, and
the teacher, the switch and the optimizer live in the distiller's
variables, so a run resumed from a ``.keras`` / ``ModelCheckpoint`` save
continues the same cycle with the same teacher.

Deviations: the paper's own settings (CIFAR-100 / ImageNet, hundreds of
epochs) are not reproduced at CPU scale; the cycle count, temperature and
weight are arguments (defaults: 3 cycles; T and alpha are the Distiller's,
whose defaults, alpha 0.9 and T 10, are Hinton et al.'s for a converged
external teacher: pass them explicitly, e.g. alpha 0.5, T 2 as our
benchmark does). We take the plain last snapshot as teacher; the paper's
extra teacher-selection heuristics (it discusses choosing cycles so the
teacher differs enough from the student) are not implemented. No official
code exists.

When it helps: the paper presents SD against over-fitting. Its teacher is
the end of a cosine cycle, which must be well trained (it fits its
training data) while its softened targets still carry secondary
information. With the loss above, cycles 2.. also scale the hard-label
gradient by ``1 - alpha``, i.e. lower the step on the labels. Where the
network under-fits (short cycles: a snapshot that is wrong on a fifth of
its own training images), that costs accuracy: on Fashion-MNIST (ResNet-8,
6000 images, 3 cycles of 2 epochs, a validation split) SD (alpha 0.5, T 2)
ended 3.2 points below the same cycles without it, and a control with the
same ``1 - alpha`` label weight and no teacher term lost 2.8 points, so
the loss comes from the lower label step, not from a wrong teacher. See
``benchmarks/results/distill_binary_tucker.md`` for the long-cycle regime.

Reference: Yang, Xie, Su, Yuille, "Snapshot Distillation: Teacher-Student
Optimization in One Generation", CVPR 2019, arXiv 1812.00123.

Example:
    >>> kd = Distiller(model, teacher=None, alpha=0.5, temperature=2.0)
    >>> kd.compile(keras.optimizers.SGD(0.05, momentum=0.9),
    ...            metrics=["accuracy"])
    >>> kd.fit(x, y, epochs=9, callbacks=[SnapshotDistillation(cycles=3)])
"""

from __future__ import annotations

import math

import keras

from tfcomp._io import check_number, check_positive_int

__all__ = ["SnapshotDistillation", "cosine_cycle_lr"]


def cosine_cycle_lr(step: int, cycle_steps: int, max_lr: float,
                    min_lr: float = 0.0) -> float:
    """The learning rate at ``step`` of a cyclic cosine schedule.

    Example:
        >>> cosine_cycle_lr(0, 10, 0.1), cosine_cycle_lr(5, 10, 0.1)
        (0.1, 0.05)
    """
    pos = (step % cycle_steps) / cycle_steps
    return min_lr + 0.5 * (max_lr - min_lr) * (1.0 + math.cos(math.pi * pos))


class SnapshotDistillation(keras.callbacks.Callback):
    """Cyclic cosine LR; each cycle's last snapshot teaches the next cycle.

    Args:
        cycles: number of cycles (>= 1; 1 is plain cosine training).
        max_lr: the learning rate at each cycle start (default: the
            optimizer's learning rate when training starts).
        min_lr: the learning rate at each cycle end.
        total_steps: training steps of the whole run (default: ``epochs *
            steps`` of ``fit``).

    Attributes:
        boundaries: the steps at which the teacher was replaced (this run).

    Example:
        >>> sd = SnapshotDistillation(cycles=3)
        >>> Distiller(student).fit(x, y, epochs=6, callbacks=[sd])
    """

    def __init__(self, cycles: int = 3, max_lr: float | None = None,
                 min_lr: float = 0.0, total_steps: int | None = None):
        super().__init__()
        self.cycles = check_positive_int(cycles, "cycles")
        self.max_lr = None if max_lr is None else check_number(
            max_lr, "max_lr", 0, min_open=True)
        self.min_lr = check_number(min_lr, "min_lr", 0)
        self.total_steps = None if total_steps is None else \
            check_positive_int(total_steps, "total_steps")
        self.boundaries: list[int] = []
        self.cycle_steps = None

    def on_train_begin(self, logs=None):
        from tfcomp.distill.distiller import Distiller

        if not isinstance(self.model, Distiller):
            raise TypeError(
                "SnapshotDistillation drives a tfcomp.distill.Distiller "
                "(Distiller(student, teacher=None)). Received: model of "
                f"type {type(self.model).__name__}")
        opt = self.model.optimizer
        if isinstance(getattr(opt, "_learning_rate", None),
                      keras.optimizers.schedules.LearningRateSchedule):
            raise ValueError("SnapshotDistillation sets the learning rate "
                             "itself; compile with a float learning rate, "
                             "not a LearningRateSchedule")
        if self.max_lr is None:
            self.max_lr = float(keras.ops.convert_to_numpy(
                opt.learning_rate))
        total = self.total_steps
        if total is None:
            epochs, steps = self.params.get("epochs"), self.params.get(
                "steps")
            if not steps:
                raise ValueError("SnapshotDistillation needs the number of "
                                 "steps; pass total_steps= (fit on a "
                                 "dataset of unknown length)")
            total = int(epochs) * int(steps)
        self.total_steps = total
        self.cycle_steps = max(1, math.ceil(total / self.cycles))
        self.boundaries = []

    def _step(self) -> int:
        return int(keras.ops.convert_to_numpy(
            self.model.optimizer.iterations))

    def on_train_batch_begin(self, batch, logs=None):
        lr = cosine_cycle_lr(self._step(), self.cycle_steps, self.max_lr,
                             self.min_lr)
        self.model.optimizer.learning_rate = lr

    def on_train_batch_end(self, batch, logs=None):
        t = self._step()  # steps done
        if t % self.cycle_steps == 0 and t < self.total_steps:
            self.snapshot()
            self.boundaries.append(t)

    def snapshot(self) -> None:
        """Copies the student into the frozen teacher; distillation on."""
        kd = self.model
        tw, sw = kd.teacher.weights, kd.student.weights
        if len(tw) != len(sw) or any(a.shape != b.shape
                                     for a, b in zip(tw, sw)):
            raise ValueError("the teacher does not mirror the student; "
                             "build the Distiller with teacher=None")
        for tv, sv in zip(tw, sw):
            tv.assign(sv)
        kd.kd_scale.assign(1.0)
