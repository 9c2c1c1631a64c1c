"""What each output of a distilled model is, and its losses per kind.

A student output is one of three kinds, each with its own hard loss (to the
labels) and soft loss (to the teacher's output):

* ``"classification"``: multi-class logits (or a softmax, read as
  ``log p``). Hard: cross entropy of the labels; soft: Hinton's
  ``T**2 * KL(softmax(t / T) || softmax(s / T))``.
* ``"binary"``: one-unit or multi-label logits (or a sigmoid, read as
  probabilities: logit ``log p - log(1 - p)``). Hard: binary cross entropy
  of the 0/1 labels; soft: ``T**2 * BCE(sigmoid(t / T), sigmoid(s / T))``
  per unit (:func:`binary_kd_loss`).
* ``"regression"``: real values (a box, a reconstruction, a score). Hard:
  squared error to the targets; soft: squared error to the teacher's
  output (:func:`regression_kd_loss`); the temperature does not apply.

``"auto"`` infers the kind of an output (:func:`infer_kind`) from the loss
it was compiled with, else its activation, else its width.

Reference: Hinton et al., arXiv:1503.02531 (softened-softmax KD; the
binary form is its two-class case on ``(z, 0)``); the regression soft loss
is plain L2 to the teacher's output, not Chen et al. 2017's
teacher-bounded regression loss (NeurIPS, "Learning efficient object
detection models with knowledge distillation").

Example:
    >>> kinds = resolve_kinds("auto", student, ["output"], [student.output])
"""

from __future__ import annotations

from keras import ops

from tfcomp._output_kinds import compiled_loss, is_sigmoid, loss_kind

__all__ = ["KINDS", "resolve_kinds", "infer_kind", "loss_kind",
           "is_sigmoid", "as_logits", "kd_loss", "binary_logits",
           "binary_kd_loss", "regression_kd_loss", "read_output",
           "soft_loss", "check_kind", "single_output_kind",
           "binary_hard_loss", "regression_hard_loss"]

KINDS = ("classification", "binary", "regression")
_CHOICES = ("auto",) + KINDS

def _loss_for(loss, keys, i):
    """Output ``i``'s share of a compiled loss: a list by position, a dict
    by output name, one loss for every output."""
    if isinstance(loss, (list, tuple)):
        return loss[i] if len(loss) == len(keys) else None
    if isinstance(loss, dict) and not ("class_name" in loss
                                       and "config" in loss):
        if len(keys) == 1 and len(loss) == 1:
            return next(iter(loss.values()))
        return loss.get(keys[i])
    return loss


def infer_kind(loss, tensor, sigmoid: bool) -> tuple[str, str]:
    """``(kind, why)`` of one output: its compiled loss's kind where it
    has one, else ``"binary"`` for a sigmoid output, else
    ``"regression"`` for a one-unit output, else ``"classification"``."""
    kind = loss_kind(loss)
    if kind is not None:
        return kind, f"compiled loss {loss!r}"
    if sigmoid:
        return "binary", "sigmoid output"
    try:
        units = tensor.shape[-1]
    except (AttributeError, IndexError, TypeError):
        units = None
    if units == 1:
        return "regression", "one-unit output without a sigmoid"
    return "classification", "several units"


def _check(kinds, keys):
    bad = f"Received: kinds={kinds!r}"
    msg = (f"kinds must be one of {_CHOICES}, a list of them (one per "
           f"output, in order) or a dict by output name. {bad}")
    if isinstance(kinds, str):
        if kinds not in _CHOICES:
            raise ValueError(msg)
        return [kinds] * len(keys)
    if isinstance(kinds, dict):
        if any(v not in _CHOICES for v in kinds.values()):
            raise ValueError(msg)
        extra = sorted(str(k) for k in kinds if str(k) not in keys)
        if keys and extra:
            raise ValueError(f"kinds names outputs {extra} the student does "
                             f"not have; its outputs are {keys}. {bad}")
        by_name = {str(k): v for k, v in kinds.items()}
        return [by_name.get(k, "auto") for k in keys]
    if isinstance(kinds, (list, tuple)):
        if any(not isinstance(v, str) or v not in _CHOICES for v in kinds):
            raise ValueError(msg)
        if keys and len(kinds) != len(keys):
            raise ValueError(f"kinds needs one entry per student output "
                             f"{keys} (a list in that order or a dict by "
                             f"name). {bad}")
        return list(kinds)
    raise ValueError(msg)


def check_kinds(kinds) -> None:
    """A ``ValueError`` naming ``kinds`` when it is not a kind, a list or a
    dict of kinds (the outputs are checked when known)."""
    _check(kinds, [])


def check_kind(kind, name: str = "kind") -> str:
    """``kind`` when it is one of :data:`KINDS`, else a ``ValueError``
    naming ``name`` and the value."""
    if kind not in KINDS:
        raise ValueError(f"{name} must be one of {KINDS}. Received: "
                         f"{name}={kind!r}")
    return kind


def single_output_kind(model, kind: str = "auto", source=None,
                       name: str = "kind") -> str:
    """The kind of a single-output ``model``'s output: ``kind``, or for
    "auto" :func:`infer_kind` from the compiled loss of ``source`` (the
    model it was copied from) or of ``model``. A ``ValueError`` naming
    ``name`` for a bad value or a classification of one unit.

    Example:
        >>> single_output_kind(binary_classifier)
        'binary'
    """
    out = model.outputs[0]
    if kind == "auto":
        loss = compiled_loss(source) if source is not None else None
        kind, _ = infer_kind(loss if loss is not None else compiled_loss(
            model), out, is_sigmoid(model, out))
    else:
        check_kind(kind, name)
    if kind == "classification" and out.shape[-1] == 1:
        _refuse_one_unit(f"{model.name!r} has one output unit", name, kind)
    return kind


def _refuse_one_unit(what: str, name: str, received) -> None:
    """The ValueError of a classification asked of a one-unit output."""
    raise ValueError(
        f"{what}: a softmax over one unit is constant, so a classification "
        "loss (cross entropy, KD) is 0 and nothing is learned. Pass "
        f"{name}='binary' (a logit or sigmoid) or {name}='regression'. "
        f"Received: {name}={received!r}")


def resolve_kinds(kinds, student, keys, flat, losses=(),
                  teacher=None) -> list[str]:
    """The kind of each of ``student``'s outputs ``flat`` (named ``keys``):
    ``kinds`` (one for all, a list in output order or a dict by name;
    ``"auto"`` or a missing name: :func:`infer_kind` from the first of
    ``losses`` that has one for the output, then ``student``'s compiled
    loss, then ``teacher``'s (a pruned copy of a binary classifier is not
    compiled, its teacher is), its activation and width). A ``ValueError``
    for a bad value, and
    for ``"classification"`` on a one-unit output (a softmax over one unit
    is 1: nothing would be learned)."""
    asked = _check(kinds, keys)
    sources = list(losses) + [compiled_loss(student)] + (
        [] if teacher is None else [compiled_loss(teacher)])
    out = []
    for i, (key, kind, t) in enumerate(zip(keys, asked, flat)):
        if kind == "auto":
            loss = next((lo for lo in (_loss_for(s, keys, i)
                                       for s in sources)
                         if loss_kind(lo) is not None), None)
            kind, _ = infer_kind(loss, t, is_sigmoid(student, t))
        units = getattr(t, "shape", (None,))[-1]
        if kind == "classification" and units == 1:
            _refuse_one_unit(f"the student's output {key!r} has one unit",
                             "kinds", kinds)
        out.append(kind)
    return out


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


def read_output(kind: str, out, form: str = "auto"):
    """What the soft loss of a ``kind`` output compares: logits of a
    classification output (:func:`as_logits`; ``form`` "auto", "logits"
    or "probabilities"), logits of a binary one (``form``
    "probabilities": a sigmoid's output, else logits), the float32 values
    of a regression one.

    Example:
        >>> read_output("binary", keras.ops.ones((2, 1)) * 0.5,
        ...             "probabilities")  # logit 0
    """
    if kind == "regression":
        return ops.cast(out, "float32")
    if kind == "binary":
        return binary_logits(out, form == "probabilities")
    return as_logits(out, form)


def soft_loss(kind: str, teacher_z, student_z, temperature: float = 1.0):
    """Per sample (per position) soft loss of one ``kind`` output, given
    :func:`read_output`'s values (the teacher's detached by the caller):
    :func:`kd_loss`, :func:`binary_kd_loss` or :func:`regression_kd_loss`.
    At ``temperature`` 1 a classification soft loss is the cross entropy
    to the teacher's softmax less its entropy (the same gradients):
    slimmable networks' in-place distillation.

    Example:
        >>> soft_loss("regression", keras.ops.ones((2, 4)),
        ...           keras.ops.zeros((2, 4)))
    """
    if kind == "regression":
        return regression_kd_loss(teacher_z, student_z)
    if kind == "binary":
        return binary_kd_loss(teacher_z, student_z, temperature)
    return kd_loss(teacher_z, student_z, temperature)


def binary_logits(out, probabilities: bool):
    """Logits of a binary / multi-label output: ``log p - log(1 - p)`` for
    probabilities (a sigmoid output), else ``out`` itself."""
    out = ops.cast(out, "float32")
    if not probabilities:
        return out
    p = ops.clip(out, 1e-7, 1.0 - 1e-7)
    return ops.log(p) - ops.log(1.0 - p)


def _bce(p, z):
    """Per element ``-p log sigmoid(z) - (1 - p) log(1 - sigmoid(z))``,
    stable: ``softplus(z) - p * z``."""
    return ops.softplus(z) - p * z


def binary_kd_loss(teacher_logits, student_logits, temperature: float):
    """Per sample (per position) ``T**2 * BCE(sigmoid(t / T), sigmoid(s /
    T))``, averaged over the units: Hinton's KD for sigmoid units. A logit
    ``z`` is the two-class softmax over ``(z, 0)``, so this is Hinton et
    al.'s ``T**2 * KL`` on that pair of classes per unit, plus the
    teacher's entropy (a constant: the same gradients).

    Example:
        >>> binary_kd_loss(keras.ops.ones((2, 1)), keras.ops.zeros((2, 1)),
        ...                4.0)
    """
    t = ops.cast(teacher_logits, "float32") / temperature
    s = ops.cast(student_logits, "float32") / temperature
    return ops.mean(_bce(ops.sigmoid(t), s), axis=-1) * temperature ** 2


def regression_kd_loss(teacher_out, student_out):
    """Per sample (per position) mean squared error between the teacher's
    and the student's outputs (no temperature).

    Example:
        >>> regression_kd_loss(keras.ops.ones((2, 4)), keras.ops.zeros((2, 4)))
    """
    d = ops.cast(student_out, "float32") - ops.cast(teacher_out, "float32")
    return ops.mean(ops.square(d), axis=-1)


def _like(y, z):
    y = ops.cast(y, "float32")
    if len(y.shape) == len(z.shape) - 1 and z.shape[-1] == 1:
        y = ops.expand_dims(y, -1)  # (N,) labels of a (N, 1) head
    return y


def binary_hard_loss(y, z):
    """Per sample (per position) binary cross entropy of the 0/1 labels
    ``y`` (shaped like the output, or without its last axis of 1) given
    the logits ``z``, averaged over the units."""
    z = ops.cast(z, "float32")
    return ops.mean(_bce(_like(y, z), z), axis=-1)


def regression_hard_loss(y, out):
    """Per sample (per position) mean squared error to the targets."""
    out = ops.cast(out, "float32")
    return ops.mean(ops.square(out - _like(y, out)), axis=-1)
