"""Carry a model's compile configuration (and optimizer state) to its copy.

Every tfcomp function that returns a new model built from the user's one
(``prune_channels``, ``apply_fpgm``, ``apply_magnitude_pruning``,
``strip_pruning``, ``quantize_model``, ...) calls :func:`carry_compile` so the
copy is compiled like the original: same optimizer (class and
hyper-parameters), loss, metrics and compile options. The optimizer's
``iterations`` (which drives learning-rate schedules) is carried too, and so
is every slot variable (Adam moments, momentum) whose model variable has the
same path and shape in the copy. Slots that cannot be matched (a pruned
kernel has fewer channels) start from zero, with one warning naming how many,
so no optimizer state is ever dropped silently.

Example:
    >>> small = prune_channels(model, plan)          # calls carry_compile
    >>> small.compiled, small.optimizer.iterations   # as the original
"""

from __future__ import annotations

import warnings

import keras

from tfcomp._unpinned import unpinned

__all__ = ["carry_compile"]


def _rel(path: str, model_name: str) -> str:
    """A variable's path inside its model (``'seq/d1/kernel'`` -> ``'d1/kernel'``)."""
    head, _, rest = path.partition("/")
    return rest if head == model_name and rest else path


def _slots_by_variable(opt, model) -> dict:
    """``{(variable path in model, slot suffix): slot variable}``."""
    out = {}
    names = {v.path.replace("/", "_"): _rel(v.path, model.name)
             for v in model.trainable_variables}
    for slot in opt.variables:
        owner = slot.path
        if owner.startswith(opt.name + "/"):
            owner = owner[len(opt.name) + 1:]
        # longest match: 'd1_kernel' must not take 'd1_kernel_2's slots
        hits = [flat for flat in names if owner.startswith(flat + "_")]
        if hits:
            flat = max(hits, key=len)
            out[(names[flat], owner[len(flat) + 1:])] = slot
    return out


def carry_compile(source: keras.Model, target: keras.Model,
                  what: str = "the new model") -> keras.Model:
    """Compile ``target`` as ``source`` is compiled; return ``target``.

    Does nothing when ``source`` is not compiled. When the compile
    configuration cannot be rebuilt (an unserialisable custom loss or
    metric), ``target`` is compiled with ``source``'s own loss and metric
    objects; if that fails too, ``target`` is left uncompiled with a warning
    saying to call ``compile``.

    Args:
        source: the user's model.
        target: the model derived from it (modified in place).
        what: how warnings name ``target``.

    Example:
        >>> carry_compile(model, keras.models.clone_model(model))
    """
    if (not getattr(source, "compiled", False)
            or getattr(source, "optimizer", None) is None):
        return target
    try:
        target.compile_from_config(source.get_compile_config())
    except Exception:  # noqa: BLE001 - custom objects that do not serialise
        try:
            opt = type(source.optimizer).from_config(source.optimizer.get_config())
            target.compile(optimizer=opt, loss=source.loss,
                           metrics=getattr(source, "_compile_metrics", None))
        except Exception as exc:  # noqa: BLE001
            warnings.warn(
                f"tfcomp could not compile {what} like the original model "
                f"({type(exc).__name__}: {exc}); call compile() on it before "
                "fit().", stacklevel=3)
            return target
    if getattr(target, "optimizer", None) is not None:
        unpinned(target.optimizer)  # copies are often made in loops
    _carry_optimizer_state(source, target, what)
    return target


def _carry_optimizer_state(source, target, what):
    old, new = source.optimizer, target.optimizer
    if new is None:
        return
    new.iterations.assign(old.iterations)
    if int(old.iterations.numpy()) == 0 or len(old.variables) <= 2:
        return  # never stepped / never built: nothing else to carry
    old_slots = _slots_by_variable(old, source)
    new.build(target.trainable_variables)
    missed = 0
    for key, v in _slots_by_variable(new, target).items():
        src = old_slots.get(key)
        if src is not None and tuple(src.shape) == tuple(v.shape):
            v.assign(src)
        else:
            missed += 1
    if missed:
        warnings.warn(
            f"{missed} optimizer slot variable(s) of {what} start from zero: "
            "their weights changed shape or name (iterations and every other "
            "slot were carried over).", stacklevel=4)
