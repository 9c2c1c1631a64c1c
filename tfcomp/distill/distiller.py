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

A model with several outputs (a list or dict: deep supervision, an
auxiliary head) is distilled output by output, each output's loss
weighted by ``loss_weights`` (default: the student's compiled ones): see
:class:`Distiller`.

Not every head is a multi-class classifier. Each output has a kind
(``kinds=``, inferred by default): ``"classification"`` (the losses
above), ``"binary"`` (a one-unit or multi-label logit / sigmoid head:
binary cross entropy to the labels, ``T**2 * BCE(sigmoid(t / T),
sigmoid(s / T))`` to the teacher, the binary form of Hinton's KD) or
``"regression"`` (a box, a reconstruction, a score: mean squared error to
the targets and to the teacher's output, no temperature). A softmax over a
one-unit head is 1, so without kinds such a head trained nothing.

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
from tfcomp.distill._kinds import (
    as_logits,
    binary_hard_loss,
    check_kinds,
    is_sigmoid,
    kd_loss,
    read_output,
    regression_hard_loss,
    resolve_kinds,
    soft_loss,
)
from tfcomp.distill._outputs import (
    is_multi,
    output_keys,
    pair_outputs,
    per_output,
    resolve_loss_weights,
    static_outputs,
)

__all__ = ["Distiller", "kd_loss", "as_logits"]

_OUTPUTS = ("auto", "logits", "probabilities")


def _shape(model):
    try:
        return tuple(keras.tree.flatten(model.outputs)[0].shape[1:])
    except (AttributeError, IndexError, TypeError, ValueError):
        return None


def _plain(weights):
    """``loss_weights`` for a config: plain lists / dicts of floats."""
    if isinstance(weights, dict):
        return {str(k): float(v) for k, v in weights.items()}
    if isinstance(weights, (list, tuple)):
        return [float(w) for w in weights]
    return None if weights is None else float(weights)


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
            "probabilities" (for every output of a multi-output model;
            "auto" decides per output).
        loss_weights: the weight of each output's loss, as ``compile``
            takes them: a list in output order or a dict by output name
            (missing names weigh 1). ``None`` (default): the student's
            compiled ``loss_weights`` where it was compiled with some
            (a pruned copy keeps its source's compile), else 1 each. A
            model with one bare output is not weighted unless given one.
        kinds: what each output is: ``"classification"``, ``"binary"``,
            ``"regression"`` or ``"auto"`` (default), one for every output,
            a list in output order or a dict by output name (missing names:
            "auto"). "auto" takes the kind from the loss the output is
            compiled with (this Distiller's ``compile(loss=...)``, the
            student's, else the teacher's): MSE, MAE, Huber, LogCosh, MSLE, MAPE
            -> regression; (focal) binary cross entropy -> binary; the
            categorical ones -> classification; without one, a sigmoid
            output is binary, a one-unit output regression (a one-unit
            *logit* of a binary classifier needs ``kinds="binary"`` or a
            compiled binary cross entropy), any other classification. The
            resolved kinds are in ``distiller.kinds`` and its config.

    The losses of each kind, per output (``s``, ``t``: the student's and
    teacher's outputs, ``y`` the labels):

    * ``"classification"``: hard ``CE(y, softmax(s))`` (sparse or one-hot
      labels), soft ``T**2 * KL(softmax(t / T) || softmax(s / T))``
      (Hinton et al.); a softmax output is read as ``log p``.
    * ``"binary"``: hard ``BCE(y, sigmoid(s))`` (0/1 labels shaped like the
      output), soft ``T**2 * BCE(sigmoid(t / T), sigmoid(s / T))`` per unit,
      averaged over the units: Hinton's KD for sigmoid units (a logit ``z``
      is the two-class softmax over ``(z, 0)``; the BCE is that KL plus the
      teacher's entropy, a constant). A sigmoid output is read as
      probabilities, logit ``log p - log(1 - p)`` (``student_outputs`` /
      ``teacher_outputs``: "auto" reads the output's activation).
    * ``"regression"``: hard ``mean((s - y)**2)``, soft ``mean((s -
      t)**2)``: plain L2 imitation of the teacher's outputs. This is not
      the teacher-bounded regression loss of Chen et al. 2017 ("Learning
      Efficient Object Detection Models with Knowledge Distillation"),
      which uses the teacher only as a bound: it adds ``|s - y|**2`` where
      ``|s - y|**2 + m > |t - y|**2`` (the student not better than the
      teacher by a margin ``m``) and nothing elsewhere. The temperature
      does not apply.

    With ``compile(loss=None)`` the hard loss is the one of each output's
    kind (above); a loss given to ``compile`` is used instead (it sees the
    student's raw output) and the kind sets only the soft loss.

    Several outputs (deep supervision, an auxiliary head; a list or a dict
    of outputs): student output i is distilled from teacher output i (two
    dicts, or a dict and a list: the output of the same name), each with
    the loss above per output (per position for a per-pixel output), and
    the loss is ``sum_i loss_weights[i] * ((1 - a) * hard_i + a * soft_i)``
    plus the student's regularization. Labels (and per-output sample
    weights) come as ``model.fit`` takes them: a list in output order or a
    dict by output name; an output without a label (missing from the dict,
    or ``None``) is only distilled. A compiled loss (``compile(loss=[...],
    loss_weights=[...])``) replaces the hard parts, weighted as Keras
    weighs them; the soft parts keep ``loss_weights``. Logs: ``loss`` and,
    without a compiled loss, ``<output>_loss``, each output's loss before
    its weight (a compiled loss logs Keras' own per-output hard loss).
    Teacher and student need the same outputs: a ``ValueError`` names
    both structures otherwise.

    Example:
        >>> kd = Distiller(student, teacher, alpha=0.7, temperature=4)
        >>> kd.compile("adam", metrics=["accuracy"])
        >>> kd.fit(x, y, epochs=1)

    Example (an auxiliary head, keras.io's deep-supervision form):
        >>> model = keras.Model(inp, [main, aux])     # or {"main":, "aux":}
        >>> model.compile("adam", [sce, sce], loss_weights=[1.0, 0.3])
        >>> student = tfcomp.pruning.prune_channels(
        ...     model, tfcomp.pruning.make_plan(model, target_macs=0.6))
        >>> kd = Distiller(student, model)    # loss_weights [1.0, 0.3]
        >>> kd.compile("adam", metrics={"main": "accuracy"})
        >>> kd.fit(x, [y, y], epochs=1)       # logs main_loss, aux_loss

    Example (a classifier with a box head, and a binary logit):
        >>> model = keras.Model(inp, {"cls": logits, "box": Dense(4)(h),
        ...                           "real": Dense(1)(h)})
        >>> kd = Distiller(student, model, kinds={"box": "regression",
        ...                                       "real": "binary"})
        >>> kd.kinds      # sorted names: box, cls, real
        ['regression', 'classification', 'binary']
        >>> kd.compile("adam")
        >>> kd.fit(x, {"cls": y, "box": boxes, "real": is_real}, epochs=1)
    """

    def __init__(self, student, teacher=None, alpha: float = 0.9,
                 temperature: float = 10.0, student_outputs: str = "auto",
                 teacher_outputs: str = "auto", loss_weights=None,
                 kinds="auto", **kwargs):
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
        s_out, t_out = static_outputs(student), static_outputs(teacher)
        multi = is_multi(s_out) or is_multi(t_out)
        s_shape, t_shape = _shape(student), _shape(teacher)
        if multi and s_out is not None and t_out is not None:
            pair_outputs(s_out, t_out, output_keys(s_out, student),
                         output_keys(t_out, teacher), student.name,
                         teacher.name)
        elif s_shape is not None and t_shape is not None \
                and s_shape != t_shape:
            raise ValueError(
                f"the teacher's output shape {t_shape} differs from the "
                f"student's {s_shape}; distillation needs the same classes. "
                f"Received: teacher={teacher.name!r}, "
                f"student={student.name!r}")
        self.student = student
        self.teacher = teacher  # frozen: only the student's weights train
        # several outputs (a list or dict): one weight and one logged part
        # per output; one bare output: a weight only where one is given
        # (a model not built yet: outputs known at the first call, its
        # loss_weights resolved then)
        self._keys = output_keys(s_out, student) \
            if is_multi(s_out) else None
        self.loss_weights = loss_weights
        if self._keys is not None:
            self.loss_weights = resolve_loss_weights(loss_weights, student,
                                                     self._keys)
            self.output_names = list(self._keys)  # compile(loss=[...])
            if len(self._keys) > 1:  # as Keras logs a compiled loss
                self._part_trackers = [keras.metrics.Mean(name=f"{k}_loss")
                                       for k in self._keys]
        elif loss_weights is not None and s_out is not None:
            self.loss_weights = resolve_loss_weights(loss_weights, student,
                                                     ["output"])
        # each output's kind (a model not built yet: at the first call)
        check_kinds(kinds)
        self._kinds_asked = kinds
        self._kinds = None
        s_flat = keras.tree.flatten(s_out) if s_out is not None else None
        self._resolve_kinds(s_flat)
        # a sigmoid output: binary probabilities, read as logits
        self._sigmoid = (
            [is_sigmoid(student, t) for t in s_flat or []],
            [is_sigmoid(teacher, t) for t in
             (keras.tree.flatten(t_out) if t_out is not None else [])])
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

    @property
    def metrics(self):
        ms = super().metrics
        parts = getattr(self, "_part_trackers", None)
        if parts and getattr(self, "loss", None) is not None:
            # a compiled loss logs its own "<output>_loss" (the hard part)
            ms = [m for m in ms if all(m is not p for p in parts)]
        return ms

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    @property
    def kinds(self):
        """The kind of each output (a list in output order; one bare
        output: a string), or the ``kinds`` asked for until the student's
        outputs are known."""
        if self._current_kinds() is None:
            asked = self._kinds_asked
            return dict(asked) if isinstance(asked, dict) else \
                list(asked) if isinstance(asked, (list, tuple)) else asked
        return list(self._kinds) if self._kinds_multi else self._kinds[0]

    def _resolve_kinds(self, flat, keys=None):
        """Each output's kind from ``kinds`` (``"auto"``: this Distiller's
        compiled loss, the student's, its activation, its width); ``flat``
        the student's outputs (None: not known yet), named ``keys``."""
        if flat is None:
            return None
        self._kinds_multi = keys is not None or self._keys is not None
        keys = keys or self._keys or ["output"]
        own = getattr(self, "loss", None)
        self._kinds = tuple(resolve_kinds(
            self._kinds_asked, self.student, keys, flat,
            [own] if own is not None else [],
            teacher=getattr(self, "teacher", None)))
        self._kinds_loss = id(own)
        return self._kinds

    def _current_kinds(self, flat=None, keys=None):
        """The kinds, resolved again after ``compile(loss=...)`` (an
        "auto" output reads the loss it is compiled with)."""
        if self._kinds is None or \
                self._kinds_loss != id(getattr(self, "loss", None)):
            if flat is None:
                s_out = static_outputs(self.student)
                flat = None if s_out is None else keras.tree.flatten(s_out)
            self._resolve_kinds(flat, keys)
        return self._kinds

    def _form(self, teacher: bool, i: int) -> str:
        """How a binary output is read ("logits" / "probabilities"): by
        ``student_outputs`` / ``teacher_outputs``, "auto": a sigmoid."""
        mode = self.teacher_outputs if teacher else self.student_outputs
        if mode != "auto":
            return mode
        flags = self._sigmoid[1 if teacher else 0]
        sig = bool(flags[i]) if i < len(flags) else False
        return "probabilities" if sig else "logits"

    def _part(self, kind, i, j, y, s_out, t_out, sample_weight):
        """``(hard, soft)`` of student output ``i`` (teacher output ``j``),
        each reduced over the batch; ``hard`` is None without labels."""
        if kind == "binary":
            s_form = self._form(False, i)
            t_form = self._form(True, j)
        else:
            s_form, t_form = self.student_outputs, self.teacher_outputs
        z_s = read_output(kind, s_out, s_form)
        z_t = ops.stop_gradient(read_output(kind, t_out, t_form))
        soft = soft_loss(kind, z_t, z_s, self.temperature)
        hard = {"regression": regression_hard_loss,
                "binary": binary_hard_loss}.get(kind, _cross_entropy)
        soft = self._reduce(soft, sample_weight)
        if y is None:
            return None, soft
        return self._reduce(hard(y, z_s), sample_weight), soft

    def _hard_loss(self, y, z, sample_weight):
        return self._reduce(_cross_entropy(y, z), sample_weight)

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

    def _reg(self):
        return ops.sum(ops.stack([ops.cast(ops.sum(v), "float32")
                                  for v in self.losses])) \
            if self.losses else 0.0

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                     training=True):
        if is_multi(y_pred):
            return self._multi_loss(x, y, y_pred, sample_weight, training)
        t_out = self.teacher(x, training=False)
        if is_multi(t_out):  # raises: one student output, several teachers'
            pair_outputs(y_pred, t_out, ["output"],
                         output_keys(t_out, self.teacher),
                         self.student.name, self.teacher.name)
        if tuple(t_out.shape[1:]) != tuple(y_pred.shape[1:]):
            raise ValueError(
                f"the teacher's output shape {tuple(t_out.shape[1:])} "
                f"differs from the student's {tuple(y_pred.shape[1:])}")
        kind = self._current_kinds([y_pred])[0]
        reg = self._reg()
        a = self.alpha * ops.cast(self.kd_scale, "float32")
        if getattr(self, "loss", None) is not None:
            # Keras' compute_loss adds ``self.losses`` (the student's):
            # give back the ``a`` share so they count once, unscaled
            hard = ops.cast(super().compute_loss(
                x, y, y_pred, sample_weight, training), "float32")
            reg = a * reg
            _, soft = self._part(kind, 0, 0, None, y_pred, t_out,
                                 sample_weight)
        else:
            hard, soft = self._part(kind, 0, 0, y, y_pred, t_out,
                                    sample_weight)
            hard = 0.0 if hard is None else hard
        if self.loss_weights is not None:  # given for the one output
            w = resolve_loss_weights(self.loss_weights, self.student,
                                     ["output"])[0]
            return w * ((1.0 - a) * hard + a * soft) + reg
        return (1.0 - a) * hard + a * soft + reg

    def _multi_loss(self, x, y, y_pred, sample_weight, training):
        """Every student output distilled from its teacher output, each
        output's ``(1 - a) * hard + a * soft`` weighted by ``loss_weights``
        (a compiled loss: the hard part is Keras', weighted as compiled)."""
        t_out = self.teacher(x, training=False)
        keys = self._keys or output_keys(y_pred, self.student)
        pairs = pair_outputs(y_pred, t_out, keys,
                             output_keys(t_out, self.teacher),
                             self.student.name, self.teacher.name)
        weights = resolve_loss_weights(self.loss_weights, self.student, keys)
        s_flat, t_flat = keras.tree.flatten(y_pred), keras.tree.flatten(t_out)
        kinds = self._current_kinds(s_flat, keys)
        reg = self._reg()
        a = self.alpha * ops.cast(self.kd_scale, "float32")
        compiled = getattr(self, "loss", None) is not None
        sws = per_output(sample_weight, keys, "sample_weight", True)
        if compiled:  # Keras' loss adds the student's losses: see above
            total = (1.0 - a) * ops.cast(super().compute_loss(
                x, y, y_pred, sample_weight, training), "float32")
            reg = a * reg
            ys = [None] * len(keys)
        else:
            ys = per_output(y, keys, "y", False)
            total = 0.0
        trackers = getattr(self, "_part_trackers", None)
        for (_, i, j), w in zip(pairs, weights):
            hard, soft = self._part(kinds[i], i, j, ys[i], s_flat[i],
                                    t_flat[j], sws[i])
            part = a * soft
            if hard is not None:  # no label: soft only
                part = part + (1.0 - a) * hard
            if trackers and not compiled:
                trackers[i].update_state(
                    part * _replicas(), sample_weight=ops.shape(s_flat[i])[0])
            total = total + w * part
        return total + reg

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "student": keras.saving.serialize_keras_object(self.student),
            "teacher": keras.saving.serialize_keras_object(self.teacher),
            "alpha": self.alpha, "temperature": self.temperature,
            "student_outputs": self.student_outputs,
            "teacher_outputs": self.teacher_outputs,
            "loss_weights": _plain(self.loss_weights),
            "kinds": self.kinds}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        for key in ("student", "teacher"):
            config[key] = keras.saving.deserialize_keras_object(
                config[key], custom_objects=custom_objects)
        return cls(**config)


def _cross_entropy(y, z):
    """Per sample (per position) cross entropy of sparse or one-hot labels
    (one-hot: shaped like the logits ``z``)."""
    z = ops.cast(z, "float32")
    y_rank = len(y.shape)
    if y_rank == len(z.shape) and y.shape[-1] == z.shape[-1] \
            and z.shape[-1] != 1:
        return -ops.sum(ops.cast(y, "float32") * ops.log_softmax(z), -1)
    y = ops.cast(y, "int32")  # class indices: per sample, or per position
    if y_rank == len(z.shape) and y.shape[-1] == 1:
        y = ops.squeeze(y, -1)
    return -ops.take_along_axis(ops.log_softmax(z), y[..., None],
                                axis=-1)[..., 0]
