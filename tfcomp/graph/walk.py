"""The one leaf-layer walker: every layer of a model, nested models
flattened, with its ``outer/inner`` path; and the one walk of the layers a
layer holds in its attributes (:func:`held_layers`: a user's own layer
class, which has no graph).

Example:
    >>> from tfcomp.graph.walk import iter_leaf_layers
    >>> [path for path, _ in iter_leaf_layers(model)][:2]
    ['input_layer', 'backbone/conv1']
"""

from __future__ import annotations

__all__ = ["held_layers", "iter_leaf_layers", "leaf_layers"]


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


def held_layers(owner, max_depth: int = 8, dicts: bool = True) -> list:
    """``[(name, layer)]`` of the layers ``owner`` holds in its public
    attributes (names without a leading underscore), in assignment order:
    a layer is named by its attribute, one inside lists / tuples / dicts
    (at any depth up to ``max_depth``; ``dicts=False``: lists and tuples
    only) by the attribute and its indices or keys (``blocks_0``,
    ``heads_query``). The cost trace and the layer opener read a user's
    layer class through it.

    Example:
        >>> [name for name, _ in held_layers(transformer_block)]
        ['att', 'ffn', 'layernorm1', 'layernorm2', 'dropout1', 'dropout2']
    """
    import keras

    def walk(name, value, depth):
        if isinstance(value, keras.layers.Layer):
            yield name, value
        elif depth < max_depth and isinstance(
                value, (list, tuple, dict) if dicts else (list, tuple)):
            items = value.items() if isinstance(value, dict) \
                else enumerate(value)
            for key, item in items:
                yield from walk(f"{name}_{key}", item, depth + 1)

    return [pair for attr, value in vars(owner).items()
            if not attr.startswith("_") for pair in walk(attr, value, 0)]
