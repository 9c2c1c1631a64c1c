"""Hardware cost models and latency lookup tables.

* ``LayerSpec`` / ``extract_specs``: the geometry of a model's costed layers.
* ``HardwareModel``: ``layer_cost(spec, w_bits, a_bits) -> Cost`` and
  ``model_cost(model, bits)``; analytic ``BISMO`` and ``BitFusion``.
* ``LatencyTable``: versioned JSON lookup table (built from a hardware model
  or measured), interpolating unseen channel counts.
* ``measure_tflite_table`` / ``export_layer_archive``: measured tables for
  this host, or for a device via ``python -m
  tfcomp.hardware.device_profiler layers.tar out.json``.

Importing this package creates no TFLite interpreter.

Example:
    >>> from tfcomp.hardware import BitFusion, LatencyTable
    >>> table = LatencyTable.build(model, BitFusion("edge"))
    >>> table.model_cost(model, bits=(4, 4)).latency_s
"""

from tfcomp.hardware.base import Cost, HardwareModel, ModelCost, resolve_bits
from tfcomp.hardware.bismo import BISMO
from tfcomp.hardware.bitfusion import BITFUSION_CONFIGS, BitFusion
from tfcomp.hardware.latency_table import (
    LatencyTable,
    LatencyTableError,
    channel_variants,
    scaled_channels,
)
from tfcomp.hardware.spec import LayerSpec, extract_specs
from tfcomp.hardware.tflite_profiler import (
    DEFAULT_FRACTIONS,
    build_layer_model,
    export_layer_archive,
    measure_tflite_table,
)

__all__ = [
    "BISMO",
    "BITFUSION_CONFIGS",
    "DEFAULT_FRACTIONS",
    "BitFusion",
    "Cost",
    "HardwareModel",
    "LatencyTable",
    "LatencyTableError",
    "LayerSpec",
    "ModelCost",
    "build_layer_model",
    "channel_variants",
    "export_layer_archive",
    "extract_specs",
    "measure_tflite_table",
    "resolve_bits",
    "scaled_channels",
]
