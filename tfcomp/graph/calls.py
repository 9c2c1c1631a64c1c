"""Temporarily replaced layer calls: the hooks of activation probes and
inference-mode overrides, with every layer's ``call`` restored on exit.

Example:
    >>> def recorder(call):
    ...     def hooked(inputs, *args, **kwargs):
    ...         seen.append(inputs)
    ...         return call(inputs, *args, **kwargs)
    ...     return hooked
    >>> with override_calls({layer: recorder for layer in model.layers}):
    ...     model(x)   # every layer records its input
"""

from __future__ import annotations

import contextlib

__all__ = ["override_calls"]

_ABSENT = object()


@contextlib.contextmanager
def override_calls(wrappers):
    """Inside it, each object of ``wrappers`` (``{layer: wrap}``; a Keras
    layer or any object with a ``call``) runs ``wrap(call)`` as its
    ``call``, where ``call`` is the one in effect on entry: the bound
    method, or an instance attribute set before (by an enclosing
    ``override_calls``, say). ``wrappers`` may also be ``(layer, wrap)``
    pairs: a layer named twice gets both, the second around the first (two
    hooks on one layer). On exit, errors included, every ``call`` is
    back as it was: a previous instance attribute is put back, otherwise
    the instance attribute is deleted and the class's method applies.

    Example:
        >>> def no_training(call):
        ...     return lambda x, training=None: call(x, training=False)
        >>> with override_calls({model.get_layer("drop"): no_training}):
        ...     model(x, training=True)   # the Dropout stays off
        >>> with override_calls([(conv, hook_a), (conv, hook_b)]):
        ...     model(x)   # conv runs hook_b(hook_a(conv.call))
    """
    saved = []
    try:
        pairs = wrappers.items() if isinstance(wrappers, dict) \
            else wrappers
        for obj, wrap in pairs:
            saved.append((obj, vars(obj).get("call", _ABSENT)))
            obj.call = wrap(obj.call)
        yield
    finally:
        for obj, prior in reversed(saved):
            if prior is not _ABSENT:
                obj.call = prior
            elif "call" in vars(obj):
                del obj.call
