"""Hardware cost models and latency lookup tables.

* ``LayerSpec`` / ``extract_specs``: the geometry of a model's costed layers
  (MACs, parameters, BOPs and size from the ``tfcomp.cost`` formulas).
* ``HardwareModel``: ``layer_cost(spec, w_bits, a_bits) -> Cost``,
  ``model_cost(model, bits)`` and ``distinct_bits()`` / ``snap_bits(b)``
  (the widths at which cost changes); analytic ``BISMO`` and ``BitFusion``
  following the authors' overlay / simulator.
* ``schedule``: BISMO and Bit Fusion tiling, cycle counts and array defaults
  (the one copy; the bit-serial exporter uses it too).
* ``LatencyTable``: versioned JSON lookup table (built from a hardware model
  or measured, or HAQ's released ``.npy`` via ``LatencyTable.from_haq``),
  interpolating unseen channel counts.
* ``measure_tflite_table`` / ``export_layer_archive``: measured tables for
  this host, or for a device via ``python -m
  tfcomp.hardware.device_profiler layers.tar out.json``.
* ``runtime``: the TFLite runtime finder (ai-edge-litert, tflite-runtime,
  tf.lite) and interpreter helpers.

Importing this package creates no TFLite interpreter.

Example:
    >>> from tfcomp.hardware import BitFusion, LatencyTable
    >>> table = LatencyTable.build(model, BitFusion("edge"))
    >>> table.model_cost(model, bits=(4, 4)).latency_s
"""

from tfcomp.hardware.allocation import (
    Allocation,
    CostTable,
    FrontPoint,
    allocate_bits,
    policy_cost,
)
from tfcomp.hardware.allocation_report import (
    AllocationTable,
    allocation_table,
    plot_front,
    uniform_points,
)
from tfcomp.hardware.base import (
    RESOURCES,
    Cost,
    HardwareModel,
    ModelCost,
    layer_resource,
    resolve_bits,
    resolve_spec_bits,
)
from tfcomp.hardware.bismo import BISMO, exec_tile_overhead
from tfcomp.hardware.bitfusion import (
    BITFUSION_CONFIGS,
    OUT_BITS_MODES,
    BitFusion,
)
from tfcomp.hardware.latency_table import (
    LatencyTable,
    LatencyTableError,
    channel_variants,
    scaled_channels,
)
from tfcomp.hardware.names import HARDWARE_NAMES, get_hardware
from tfcomp.hardware.precision import (
    PRECISION_BITS,
    PRECISIONS,
    op_precisions,
    quantize_tflite,
)
from tfcomp.hardware.schedule import (
    BISMO_ARRAY_DEFAULTS,
    BISMO_BUFFER_DEFAULTS,
    BITFUSION_ARRAY_DEFAULTS,
    bismo_exec_cycles,
    bismo_exec_list,
    bismo_schedule,
    bismo_tiles,
    bitfusion_compute_cycles,
    bitfusion_perf_factor,
    bitfusion_schedule,
    fused_bits,
    split_blocks,
)
from tfcomp.hardware.spec import LayerSpec, extract_specs
from tfcomp.hardware.tflite_profiler import (
    DEFAULT_FRACTIONS,
    build_layer_model,
    export_layer_archive,
    measure_tflite_table,
    quantize_layer_file,
)

__all__ = [
    "PRECISIONS",
    "PRECISION_BITS",
    "op_precisions",
    "quantize_tflite",
    "quantize_layer_file",
    "BISMO",
    "HARDWARE_NAMES",
    "get_hardware",
    "BISMO_ARRAY_DEFAULTS",
    "BISMO_BUFFER_DEFAULTS",
    "BITFUSION_ARRAY_DEFAULTS",
    "BITFUSION_CONFIGS",
    "Allocation",
    "CostTable",
    "DEFAULT_FRACTIONS",
    "FrontPoint",
    "allocate_bits",
    "policy_cost",
    "AllocationTable",
    "allocation_table",
    "plot_front",
    "uniform_points",
    "RESOURCES",
    "BitFusion",
    "Cost",
    "HardwareModel",
    "LatencyTable",
    "LatencyTableError",
    "LayerSpec",
    "ModelCost",
    "OUT_BITS_MODES",
    "bismo_exec_cycles",
    "bismo_exec_list",
    "bismo_schedule",
    "bismo_tiles",
    "bitfusion_compute_cycles",
    "bitfusion_perf_factor",
    "bitfusion_schedule",
    "build_layer_model",
    "exec_tile_overhead",
    "channel_variants",
    "export_layer_archive",
    "extract_specs",
    "fused_bits",
    "layer_resource",
    "measure_tflite_table",
    "resolve_bits",
    "resolve_spec_bits",
    "scaled_channels",
    "split_blocks",
]
