"""tfcomp: model compression for Keras 3 on TensorFlow.

Structured and unstructured pruning, mixed-precision quantization,
hardware-aware search (AMC, HAQ) and verified TFLite / bit-serial export.

``import tfcomp`` stays light: Keras, TensorFlow, keras-tuner and the
TFLite runtime are only imported by the functions that need them. tfcomp's
Keras classes are registered as soon as Keras is imported (before or after
tfcomp), so ``import keras, tfcomp`` is enough to load any tfcomp
``.keras`` file with ``keras.saving.load_model`` (see ``tfcomp._saving``).

Example:
    >>> import tfcomp
    >>> model = tfcomp.zoo.resnet(depth=20)
    >>> tfcomp.profile(model).summary()
"""

import importlib
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from tfcomp import _saving  # noqa: E402
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
    "load_model": ("tfcomp._saving", "load_model"),
    "sensitivity": ("tfcomp.quantization.sensitivity", "sensitivity"),
    "allocate_bits": ("tfcomp.hardware.allocation", "allocate_bits"),
    "to_slimmable": ("tfcomp.pruning.slimmable", "to_slimmable"),
    "set_width": ("tfcomp.pruning.slimmable", "set_width"),
    "export_width": ("tfcomp.pruning.slimmable", "export_width"),
    "recalibrate_widths": ("tfcomp.pruning.slimmable", "recalibrate_widths"),
    "autoslim": ("tfcomp.pruning.autoslim", "autoslim"),
    "compress": ("tfcomp.joint", "compress"),
    "JointResult": ("tfcomp.joint", "JointResult"),
    "tnet": ("tfcomp.tensorized", "tnet"),
    "Distiller": ("tfcomp.distill", "Distiller"),
    "SnapshotDistillation": ("tfcomp.distill", "SnapshotDistillation"),
    "BENN": ("tfcomp.binary", "BENN"),
    "unpinned": ("tfcomp._unpinned", "unpinned"),
    "with_input_shape": ("tfcomp.graph.static_shape", "with_input_shape"),
}
_SUBMODULES = ("zoo", "data", "graph", "pruning", "quantization", "layers",
               "hardware", "tuners", "export", "testing", "tensorized",
               "distill", "binary", "joint")

__all__ = ["LayerProfile", "ModelProfile", "profile", *_LAZY, *_SUBMODULES]


def __getattr__(name):
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    if name in _SUBMODULES:
        return importlib.import_module(f"tfcomp.{name}")
    raise AttributeError(f"module 'tfcomp' has no attribute {name!r}")


# Last: registers tfcomp's Keras classes now if Keras is imported, else
# when it is (tfcomp is complete by then).
_saving.install()
