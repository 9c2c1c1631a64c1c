"""tfcomp: model compression for Keras 3 on TensorFlow.

Structured and unstructured pruning, mixed-precision quantization,
hardware-aware search (AMC, HAQ) and verified TFLite / bit-serial export.

``import tfcomp`` stays light: keras-tuner and the TFLite runtime are only
imported by the functions that need them.

Example:
    >>> import tfcomp
    >>> model = tfcomp.zoo.resnet(depth=20)
    >>> tfcomp.profile(model).summary()
"""

import importlib
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from tfcomp.cost import LayerProfile, ModelProfile, profile  # noqa: E402

__version__ = "0.1.0"

# Public verbs resolved lazily (module, attribute), so importing tfcomp does
# not pull in every subpackage.
_LAZY = {
    "DependencyGraph": ("tfcomp.graph", "DependencyGraph"),
    "prune_channels": ("tfcomp.pruning", "prune_channels"),
    "mask_channels": ("tfcomp.pruning", "mask_channels"),
    "make_plan": ("tfcomp.pruning", "make_plan"),
    "Plan": ("tfcomp.pruning", "Plan"),
    "quantize_model": ("tfcomp.quantization", "quantize_model"),
    "export_tflite": ("tfcomp.export", "export_tflite"),
    "measure_latency": ("tfcomp.export", "measure_latency"),
}
_SUBMODULES = ("zoo", "data", "graph", "pruning", "quantization", "layers",
               "hardware", "tuners", "export", "testing")

__all__ = ["LayerProfile", "ModelProfile", "profile", *_LAZY, *_SUBMODULES]


def __getattr__(name):
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    if name in _SUBMODULES:
        return importlib.import_module(f"tfcomp.{name}")
    raise AttributeError(f"module 'tfcomp' has no attribute {name!r}")
