"""Several outputs of a distilled model: which teacher output teaches which
student output, the labels, sample weights and loss weights of each.

A model with deep supervision or an auxiliary head returns a list of
outputs (``keras.Model(inp, [main, aux])``) or a dict of named ones
(``keras.Model(inp, {"main": ..., "aux": ...})``). Its outputs are read in
``keras.tree.flatten`` order (a dict's keys sorted, as Keras orders
``output_names``) and named by the dict's keys, else by
``model.output_names``. Teacher and student outputs pair up as Keras pairs
outputs with labels: two lists by position, two dicts by key, a list and a
dict by the list model's output names. Labels and per-output sample
weights come in the structures ``model.fit`` takes (a list in output order
or a dict by output name).

Example:
    >>> keys = output_keys(student.output, student)
    >>> pairs = pair_outputs(s_out, t_out, keys, output_keys(t_out, teacher))
"""

from __future__ import annotations

import numbers

import keras

__all__ = ["is_multi", "output_keys", "static_outputs", "pair_outputs",
           "per_output", "resolve_loss_weights", "describe"]


def is_multi(out) -> bool:
    """Whether ``out`` is a structure of outputs (a list or dict, even of
    one tensor) rather than one tensor."""
    return isinstance(out, (list, tuple, dict))


def static_outputs(model):
    """``model``'s symbolic outputs as its call returns them (one tensor,
    a list or a dict), or ``None`` for a model not built yet."""
    from tfcomp.graph.outputs import output_structure

    try:
        out = output_structure(model)
        flat = keras.tree.flatten(out)
    except (AttributeError, ValueError, TypeError):
        return None
    if not flat:
        return None
    if isinstance(out, (list, tuple)) and len(out) == 1:
        return out[0]  # a functional model returns its one output bare
    return out


def output_keys(out, model=None) -> list[str]:
    """The name of each flat output of ``out``: a dict's keys (sorted, the
    flatten order), else ``model.output_names`` where they fit, else
    ``output_1, output_2, ...``."""
    if isinstance(out, dict):
        return [str(k) for k in sorted(out)]
    n = len(keras.tree.flatten(out))
    names = list(getattr(model, "output_names", None) or [])
    if len(names) == n and len(set(names)) == n:
        return [str(k) for k in names]
    return [f"output_{i + 1}" for i in range(n)]


def _shape(t):
    try:
        return tuple(t.shape[1:])
    except (AttributeError, TypeError):
        return None


def describe(out, keys) -> str:
    """``out``'s structure with the shape of each output, e.g.
    ``{'aux': (10,), 'main': (10,)}`` or ``[main (10,), aux (10,)]``."""
    if not is_multi(out):
        return f"one output {_shape(out)}"
    flat = keras.tree.flatten(out)
    parts = [(k, _shape(t)) for k, t in zip(keys, flat)]
    if isinstance(out, dict):
        return "{" + ", ".join(f"{k!r}: {s}" for k, s in parts) + "}"
    return "[" + ", ".join(f"{k} {s}" for k, s in parts) + "]"


def pair_outputs(s_out, t_out, s_keys, t_keys, s_name="", t_name=""):
    """``[(name, i_student, i_teacher)]``: the flat index of the teacher
    output that teaches each student output (two lists: by position; two
    dicts, or a list and a dict: by name); a clear ``ValueError`` naming
    both structures when they differ, or an output's shape does."""
    s_flat, t_flat = keras.tree.flatten(s_out), keras.tree.flatten(t_out)
    who = f"Received: teacher={t_name!r}, student={s_name!r}"
    pairs = None
    if is_multi(s_out) and is_multi(t_out):
        if not isinstance(s_out, dict) and not isinstance(t_out, dict):
            if len(s_flat) == len(t_flat):
                pairs = [(k, i, i) for i, k in enumerate(s_keys)]
        elif sorted(s_keys) == sorted(t_keys):
            pairs = [(k, i, t_keys.index(k)) for i, k in enumerate(s_keys)]
    if pairs is None:
        raise ValueError(
            f"the teacher's outputs {describe(t_out, t_keys)} do not match "
            f"the student's {describe(s_out, s_keys)}: each student output "
            "is distilled from the teacher output at the same position (a "
            "dict of outputs: of the same name), so both need the same "
            f"outputs. {who}")
    for k, i, j in pairs:
        a, b = _shape(s_flat[i]), _shape(t_flat[j])
        if a is not None and b is not None and a != b:
            raise ValueError(
                f"the teacher's output {k!r} has output shape {b}, the "
                f"student's {a}; distillation needs the same classes. "
                f"Teacher outputs {describe(t_out, t_keys)}, student "
                f"outputs {describe(s_out, s_keys)}. {who}")
    return pairs


def per_output(values, keys, what: str, shared_ok: bool) -> list:
    """``values`` (labels or sample weights, as ``fit`` takes them) split
    per output in ``keys`` order: a dict by output name (a missing name:
    ``None``), a list / tuple in output order, or (``shared_ok``: sample
    weights) one array for every output."""
    n = len(keys)
    if values is None:
        return [None] * n
    if isinstance(values, dict):
        extra = sorted(str(k) for k in values if str(k) not in keys)
        if extra:
            raise ValueError(f"{what} names outputs {extra} the student "
                             f"does not have; its outputs are {keys}")
        by_name = {str(k): v for k, v in values.items()}
        return [by_name.get(k) for k in keys]
    if isinstance(values, (list, tuple)):
        if len(values) != n:
            raise ValueError(f"{what} holds {len(values)} entries for the "
                             f"student's {n} outputs {keys}; pass one per "
                             "output (a list in that order, or a dict by "
                             "name)")
        return list(values)
    if shared_ok:
        return [values] * n
    raise ValueError(f"the student has {n} outputs {keys}: pass {what} as "
                     "a list in that order or a dict by output name, as "
                     "model.fit takes them")


def resolve_loss_weights(loss_weights, student, keys) -> list[float]:
    """One weight per student output: ``loss_weights`` (a list in output
    order, a dict by output name: missing names weigh 1, or one number for
    a single output); ``None``: the student's compiled ``loss_weights``
    where it has them, else 1 each."""
    if loss_weights is None and getattr(student, "compiled", False):
        try:
            loss_weights = student.get_compile_config().get("loss_weights")
        except (AttributeError, TypeError, ValueError):
            loss_weights = None
    n = len(keys)
    if loss_weights is None:
        return [1.0] * n
    if isinstance(loss_weights, numbers.Real) and n == 1:
        loss_weights = [loss_weights]
    if isinstance(loss_weights, dict):
        extra = sorted(str(k) for k in loss_weights if str(k) not in keys)
        if extra:
            raise ValueError(f"loss_weights names outputs {extra} the "
                             f"student does not have; its outputs are "
                             f"{keys}. Received: loss_weights={loss_weights}")
        by_name = {str(k): v for k, v in loss_weights.items()}
        loss_weights = [by_name.get(k, 1.0) for k in keys]
    if not isinstance(loss_weights, (list, tuple)) or len(loss_weights) != n:
        raise ValueError(f"loss_weights needs one number per student output "
                         f"{keys} (a list in that order or a dict by name). "
                         f"Received: loss_weights={loss_weights!r}")
    out = []
    for w in loss_weights:
        if isinstance(w, bool) or not isinstance(w, numbers.Real) or w < 0:
            raise ValueError(f"loss_weights must be numbers >= 0. "
                             f"Received: loss_weights={loss_weights!r}")
        out.append(float(w))
    return out
