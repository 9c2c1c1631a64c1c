"""The one leaf-layer walker: every layer of a model, nested models
flattened, with its ``outer/inner`` path.

Example:
    >>> from tfcomp.graph.walk import iter_leaf_layers
    >>> [path for path, _ in iter_leaf_layers(model)][:2]
    ['input_layer', 'backbone/conv1']
"""

from __future__ import annotations

__all__ = ["iter_leaf_layers", "leaf_layers"]


def _is_nested_model(layer) -> bool:
    import keras

    return isinstance(layer, keras.Model) and bool(
        getattr(layer, "layers", None))


def iter_leaf_layers(model, prefix: str = ""):
    """Yields ``(path, layer)`` for every leaf layer of ``model``.

    A nested model with layers of its own (functional or Sequential) is
    walked into and its layers get the path ``outer/inner``; a model
    without layers (subclassed) is a leaf.

    Example:
        >>> dict(iter_leaf_layers(model))["backbone/conv1"]
        <Conv2D name=conv1, built=True>
    """
    for layer in model.layers:
        path = f"{prefix}{layer.name}"
        if _is_nested_model(layer):
            yield from iter_leaf_layers(layer, path + "/")
        else:
            yield path, layer


def leaf_layers(model) -> list:
    """Every leaf layer of ``model`` (nested models flattened), in order.

    Example:
        >>> [type(l).__name__ for l in leaf_layers(model)][:2]
        ['InputLayer', 'Conv2D']
    """
    return [layer for _, layer in iter_leaf_layers(model)]
