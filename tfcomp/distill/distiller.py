"""Knowledge distillation of a (compressed) student from a frozen teacher.

``Distiller(student, teacher)`` is a ``keras.Model`` whose loss is

    (1 - alpha) * CE(y, student) + alpha * T**2 * KL(p_t^T || p_s^T),
    p^T = softmax(z / T),

with the teacher frozen (``training=False``, no gradient, left out of the
trainable weights; its own ``trainable`` flag is not touched). ``z`` are the
logits; a model that ends in a softmax is read as probabilities ``p`` and
``log p`` serves as its logits (``softmax(log p / T)`` is exactly the
softened distribution), detected per batch as
``tfcomp.quantization.sensitivity`` does (rows in [0, 1] summing to 1) or
fixed by ``student_outputs=`` / ``teacher_outputs=``.

The student is trained in place: after ``distiller.fit(...)`` the student
object the user passed holds the trained weights; save, prune further or
export *that* (``distiller.student``). Saving the distiller itself
(``distiller.save("kd.keras")``) keeps student, teacher, optimizer and the
distillation switch, so training resumes after ``keras.saving.load_model``.

Defaults: ``alpha=0.9, temperature=10.0``. Hinton et al. found the best
results with "a considerably lower weight" on the hard-label term than on
the soft one and used T from 1 to 20 (20 for their large MNIST nets, 2.5-4
for very small students); they give no single pair, so the defaults are
those of the keras.io knowledge-distillation example that follows them
(weight 0.1 on the hard loss, T = 10). Releases before this one defaulted
to ``alpha=0.5, temperature=4.0`` (pass them to reproduce old runs). The
student's regularization losses (weight decay, ``add_loss``) are added
unscaled, as ``compile`` adds them; the frozen teacher's are left out.

Reference: Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural
Network", arXiv 1503.02531.

Example:
    >>> kd = Distiller(pruned_student, dense_teacher, alpha=0.9,
    ...                temperature=10.0)
    >>> kd.compile(keras.optimizers.Adam(1e-3), metrics=["accuracy"])
    >>> kd.fit(x_train, y_train, epochs=2)
    >>> kd.student.save("student.keras")
"""

from __future__ import annotations

import keras
from keras import ops

from tfcomp._io import check_fraction, check_number

__all__ = ["Distiller", "kd_loss", "as_logits"]

_OUTPUTS = ("auto", "logits", "probabilities")


def as_logits(out, kind: str = "auto"):
    """Logits of a classifier output: ``log p`` for probabilities.

    ``kind="auto"`` decides per batch: rows in [0, 1] that sum to 1 (within
    1e-3) are probabilities, as ``sensitivity._probabilities`` reads them.

    Example:
        >>> z = as_logits(keras.ops.softmax(keras.ops.ones((2, 3))))
    """
    out = ops.cast(out, "float32")
    if kind == "logits":
        return out
    logp = ops.log(ops.clip(out, 1e-12, 1.0))
    if kind == "probabilities":
        return logp
    is_prob = ops.logical_and(
        ops.logical_and(ops.all(out >= -1e-6), ops.all(out <= 1 + 1e-6)),
        ops.all(ops.abs(ops.sum(out, axis=-1) - 1.0) <= 1e-3))
    return ops.where(is_prob, logp, out)


def kd_loss(teacher_logits, student_logits, temperature: float):
    """Per-sample (per-position for per-pixel outputs) ``T**2 *
    KL(softmax(t / T) || softmax(s / T))`` over the last axis.

    Example:
        >>> kd_loss(keras.ops.ones((2, 3)), keras.ops.zeros((2, 3)), 4.0)
    """
    t = ops.cast(teacher_logits, "float32") / temperature
    s = ops.cast(student_logits, "float32") / temperature
    log_pt = ops.log_softmax(t, axis=-1)
    log_ps = ops.log_softmax(s, axis=-1)
    kl = ops.sum(ops.exp(log_pt) * (log_pt - log_ps), axis=-1)
    return kl * (temperature ** 2)


def _shape(model):
    try:
        return tuple(keras.tree.flatten(model.outputs)[0].shape[1:])
    except (AttributeError, IndexError, TypeError, ValueError):
        return None


def _replicas() -> int:
    import tensorflow as tf  # no public Keras equivalent

    return int(tf.distribute.get_strategy().num_replicas_in_sync)


@keras.saving.register_keras_serializable(package="tfcomp")
class Distiller(keras.Model):
    """A student trained against a frozen teacher's softened outputs.

    Args:
        student: the model to train (pruned, QAT, binary, ...); trained in
            place.
        teacher: the frozen teacher (same output shape). ``None``: a copy
            of the student with distillation off (``kd_scale = 0``), as
            :class:`SnapshotDistillation` uses it.
        alpha: weight of the distillation term, in [0, 1] (default 0.9:
            Hinton et al.'s high weight on the soft targets).
        temperature: softening temperature T > 0 (default 10, keras.io's
            KD example).
        student_outputs, teacher_outputs: "auto", "logits" or
            "probabilities".

    With ``compile(loss=None)`` the hard loss is the cross entropy on the
    student's logits (sparse or one-hot labels, by their shape); a loss
    given to ``compile`` is used instead (it sees the student's raw
    output).

    Example:
        >>> kd = Distiller(student, teacher, alpha=0.7, temperature=4)
        >>> kd.compile("adam", metrics=["accuracy"])
        >>> kd.fit(x, y, epochs=1)
    """

    def __init__(self, student, teacher=None, alpha: float = 0.9,
                 temperature: float = 10.0, student_outputs: str = "auto",
                 teacher_outputs: str = "auto", **kwargs):
        super().__init__(**kwargs)
        if not isinstance(student, keras.Model):
            raise TypeError(f"student must be a keras.Model. Received: "
                            f"student={type(student).__name__}")
        if teacher is not None and not isinstance(teacher, keras.Model):
            raise TypeError(f"teacher must be a keras.Model or None. "
                            f"Received: teacher={type(teacher).__name__}")
        self.alpha = check_fraction(alpha, "alpha", include_high=True)
        self.temperature = check_number(temperature, "temperature", 0,
                                        min_open=True)
        for name, v in (("student_outputs", student_outputs),
                        ("teacher_outputs", teacher_outputs)):
            if v not in _OUTPUTS:
                raise ValueError(f"{name} must be one of {_OUTPUTS}. "
                                 f"Received: {name}={v!r}")
        self.student_outputs = student_outputs
        self.teacher_outputs = teacher_outputs
        on = 1.0
        if teacher is None:
            from tfcomp.graph.copy import clone_model

            teacher = clone_model(student)
            teacher.set_weights(student.get_weights())
            on = 0.0
        s_shape, t_shape = _shape(student), _shape(teacher)
        if s_shape is not None and t_shape is not None and s_shape != t_shape:
            raise ValueError(
                f"the teacher's output shape {t_shape} differs from the "
                f"student's {s_shape}; distillation needs the same classes. "
                f"Received: teacher={teacher.name!r}, "
                f"student={student.name!r}")
        self.student = student
        self.teacher = teacher  # frozen: only the student's weights train
        # 1.0: distill; 0.0: plain training (Snapshot Distillation's first
        # cycle). A variable, so the switch is saved and works in graph.
        self.kd_scale = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(on),
            trainable=False, name="kd_scale")

    @property
    def trainable_weights(self):
        # the teacher is not set trainable=False (that would change the
        # user's model, and its clones); it is left out of training here
        return list(self.student.trainable_weights)

    @property
    def trainable_variables(self):
        return self.trainable_weights

    @property
    def losses(self):
        # the student's regularization only: the frozen teacher's weight
        # decay is a constant here and would only shift the reported loss
        return list(self.student.losses)

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    def _hard_loss(self, y, z, sample_weight):
        z = ops.cast(z, "float32")
        y_rank = len(y.shape)
        if y_rank == len(z.shape) and y.shape[-1] == z.shape[-1] \
                and z.shape[-1] != 1:
            ce = -ops.sum(ops.cast(y, "float32") * ops.log_softmax(z), -1)
        else:  # class indices: per sample, or per position (a U-Net)
            y = ops.cast(y, "int32")
            if y_rank == len(z.shape) and y.shape[-1] == 1:
                y = ops.squeeze(y, -1)
            ce = -ops.take_along_axis(ops.log_softmax(z), y[..., None],
                                      axis=-1)[..., 0]
        return self._reduce(ce, sample_weight)

    @staticmethod
    def _reduce(loss, sample_weight):
        """Mean over the batch (a per-position loss: over its positions
        first), weighted, per replica."""
        n = ops.cast(ops.shape(loss)[0], "float32")
        if sample_weight is not None:
            w = ops.cast(sample_weight, "float32")
            if len(w.shape) > len(loss.shape):
                w = ops.reshape(w, ops.shape(loss))  # (N, 1) weights
            while len(w.shape) < len(loss.shape):
                w = ops.expand_dims(w, -1)
            loss = loss * w
        if len(loss.shape) > 1:
            loss = ops.mean(loss, axis=tuple(range(1, len(loss.shape))))
        return ops.sum(loss) / ops.maximum(n, 1.0) / _replicas()

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                     training=True):
        z_s = as_logits(y_pred, self.student_outputs)
        t_out = self.teacher(x, training=False)
        if tuple(t_out.shape[1:]) != tuple(y_pred.shape[1:]):
            raise ValueError(
                f"the teacher's output shape {tuple(t_out.shape[1:])} "
                f"differs from the student's {tuple(y_pred.shape[1:])}")
        z_t = ops.stop_gradient(as_logits(t_out, self.teacher_outputs))
        reg = ops.sum(ops.stack([ops.cast(ops.sum(v), "float32")
                                 for v in self.losses])) \
            if self.losses else 0.0
        a = self.alpha * ops.cast(self.kd_scale, "float32")
        if getattr(self, "loss", None) is not None:
            # Keras' compute_loss adds ``self.losses`` (the student's):
            # give back the ``a`` share so they count once, unscaled
            hard = ops.cast(super().compute_loss(
                x, y, y_pred, sample_weight, training), "float32")
            reg = a * reg
        else:
            hard = self._hard_loss(y, z_s, sample_weight)
        soft = self._reduce(kd_loss(z_t, z_s, self.temperature),
                            sample_weight)
        return (1.0 - a) * hard + a * soft + reg

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "student": keras.saving.serialize_keras_object(self.student),
            "teacher": keras.saving.serialize_keras_object(self.teacher),
            "alpha": self.alpha, "temperature": self.temperature,
            "student_outputs": self.student_outputs,
            "teacher_outputs": self.teacher_outputs}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        for key in ("student", "teacher"):
            config[key] = keras.saving.deserialize_keras_object(
                config[key], custom_objects=custom_objects)
        return cls(**config)
