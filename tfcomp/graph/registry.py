"""The channel-handler registry: which :class:`ChannelHandler` describes a
layer class or a ``keras.ops`` operation.

Example:
    >>> register_channel_handler(MyElementwise, lambda ctx: ctx.pass_through())
    >>> get_channel_handler(MyElementwise())
"""

from __future__ import annotations

from collections.abc import Callable

import keras

from tfcomp.graph.context import ChannelHandler

__all__ = ["get_channel_handler", "ops_name", "register_channel_handler"]


class _FnHandler(ChannelHandler):
    def __init__(self, fn: Callable):
        self.fn = fn

    def connect(self, ctx):
        self.fn(ctx)


_BY_CLASS: dict = {}
_LAYER_NAMES: dict = {}
_OP_NAMES: dict = {}


def _as_handler(handler) -> ChannelHandler:
    if isinstance(handler, type) and issubclass(handler, ChannelHandler):
        return handler()
    if isinstance(handler, ChannelHandler):
        return handler
    if not callable(handler):
        raise TypeError(
            "handler must be a ChannelHandler or a callable connect(ctx)."
            f" Received: handler={handler!r}")
    return _FnHandler(handler)


def register_channel_handler(layer_cls, handler) -> None:
    """Registers how a layer class (or ``keras.ops`` op) couples channels.

    Args:
        layer_cls: a Layer subclass (matched through the MRO, so subclasses
            inherit it), or a class name string (exact match; for
            ``keras.ops`` operations and classes you cannot import).
        handler: a :class:`ChannelHandler` instance or subclass, or a
            function ``connect(ctx: NodeContext) -> None``.

    Example:
        >>> register_channel_handler(
        ...     MyElementwise, lambda ctx: ctx.pass_through())
    """
    handler = _as_handler(handler)
    if isinstance(layer_cls, str):
        _LAYER_NAMES[layer_cls] = handler
        _OP_NAMES[layer_cls] = handler
    elif isinstance(layer_cls, type):
        _BY_CLASS[layer_cls] = handler
    else:
        raise TypeError(
            "layer_cls must be a class or a class name. Received: "
            f"layer_cls={layer_cls!r}")


def _register_op(name: str, handler: ChannelHandler) -> None:
    """Registers a ``keras.ops`` operation class name only (not layers)."""
    _OP_NAMES[name] = _as_handler(handler)


def ops_name(op) -> str | None:
    """The class name of a ``keras.ops`` operation (``"Add"`` for a
    traced ``x + y``), or None for a layer or a non-Keras object.

    Example:
        >>> ops_name(keras.layers.Add()) is None
        True
    """
    if isinstance(op, keras.layers.Layer) or \
            not type(op).__module__.startswith("keras."):
        return None
    return type(op).__name__


def get_channel_handler(op) -> ChannelHandler | None:
    """The handler for a layer / op object, or None (a barrier).

    Classes registered by type are matched through the MRO first (so user
    subclasses inherit their parent's handler); class names second.

    Example:
        >>> get_channel_handler(keras.layers.Conv2D(8, 3))
    """
    for klass in type(op).__mro__:
        if klass in _BY_CLASS:
            return _BY_CLASS[klass]
    name = type(op).__name__
    if isinstance(op, keras.layers.Layer):
        return _LAYER_NAMES.get(name)
    return _OP_NAMES.get(name)
