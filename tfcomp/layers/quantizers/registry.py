"""Quantizer aliases and (de)serialisation: ``get``, ``serialize``,
``deserialize``.

Example:
    >>> from tfcomp.layers.quantizers.registry import get, serialize
    >>> serialize(get("symmetric"))["class_name"]
    'SymmetricQuantizer'
"""

from __future__ import annotations

from tfcomp.layers.quantizers.activation import ActivationQuantizer
from tfcomp.layers.quantizers.base import Quantizer
from tfcomp.layers.quantizers.weight import KMeansQuantizer, SymmetricQuantizer

__all__ = ["ALIASES", "get", "serialize", "deserialize"]

_CLASSES = {c.__name__: c for c in (SymmetricQuantizer, KMeansQuantizer,
                                    ActivationQuantizer)}

ALIASES = {
    "symmetric": (SymmetricQuantizer, {}),
    "symmetric_max": (SymmetricQuantizer, {"clip": "max"}),
    "symmetric_kl": (SymmetricQuantizer, {"clip": "kl"}),
    "per_tensor": (SymmetricQuantizer, {"per_channel": False}),
    "kmeans": (KMeansQuantizer, {}),
    "unsigned": (ActivationQuantizer, {"signed": False}),
    "signed": (ActivationQuantizer, {"signed": True}),
    "pact": (ActivationQuantizer, {"signed": False, "range_mode": "learned"}),
}


def serialize(quantizer) -> dict | None:
    """Serialises a quantizer to ``{"class_name", "config"}`` (None -> None).

    Example:
        >>> serialize(SymmetricQuantizer(4))
        {'class_name': 'SymmetricQuantizer', 'config': {...}}
    """
    if quantizer is None:
        return None
    if not isinstance(quantizer, Quantizer):
        raise TypeError(
            "serialize() expects a tfcomp Quantizer. Received: "
            f"{type(quantizer)!r}")
    return {"class_name": type(quantizer).__name__,
            "config": quantizer.get_config()}


def deserialize(config) -> Quantizer | None:
    """Inverse of ``serialize``.

    Example:
        >>> deserialize({"class_name": "KMeansQuantizer",
        ...              "config": {"bits": 4}}).bits
        4
    """
    if config is None:
        return None
    if not isinstance(config, dict) or "class_name" not in config:
        raise ValueError(
            "A serialised quantizer is a dict with 'class_name' and 'config'."
            f" Received: {config!r}")
    name = config["class_name"]
    if name not in _CLASSES:
        raise ValueError(
            f"Unknown quantizer class {name!r}. Known: {sorted(_CLASSES)}")
    return _CLASSES[name].from_config(dict(config.get("config", {})))


def get(identifier) -> Quantizer | None:
    """Resolves a quantizer from an alias, a serialised dict or an instance.

    Aliases: ``"symmetric"`` (clip auto), ``"symmetric_max"``,
    ``"symmetric_kl"``, ``"per_tensor"``, ``"kmeans"`` (weights);
    ``"unsigned"``, ``"signed"``, ``"pact"`` (activations). Instances are
    copied (a quantizer's state belongs to one layer).

    Example:
        >>> get("kmeans")
        KMeansQuantizer(bits=4, iters=30, seed=0)
    """
    if identifier is None:
        return None
    if isinstance(identifier, Quantizer):
        return identifier.copy()
    if isinstance(identifier, str):
        if identifier not in ALIASES:
            raise ValueError(
                f"Unknown quantizer alias {identifier!r}. Known aliases: "
                f"{sorted(ALIASES)}")
        cls, kwargs = ALIASES[identifier]
        return cls(**kwargs)
    if isinstance(identifier, dict):
        return deserialize(identifier)
    raise TypeError(
        "A quantizer must be None, an alias string, a serialised dict or a "
        f"Quantizer instance. Received: {identifier!r}")
