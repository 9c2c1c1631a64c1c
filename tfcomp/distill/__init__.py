"""Knowledge distillation for compressed students; Snapshot Distillation.

Example:
    >>> from tfcomp.distill import Distiller, SnapshotDistillation
    >>> kd = Distiller(student, teacher, alpha=0.5, temperature=4.0)
    >>> kd.compile("adam", metrics=["accuracy"])
    >>> kd.fit(x, y, epochs=2)
"""

from tfcomp.distill.distiller import Distiller, as_logits, kd_loss
from tfcomp.distill.snapshot import SnapshotDistillation, cosine_cycle_lr

__all__ = ["Distiller", "SnapshotDistillation", "as_logits",
           "cosine_cycle_lr", "kd_loss"]
