"""Bit-serial accelerator export: integer IR, packing, descriptor, simulator.

A quantized network becomes an :class:`IntegerIR` (integer weights, int32
bias, per-channel fixed-point requantization), runs exactly in numpy with
:func:`integer_reference`, is written as a versioned JSON descriptor plus a
packed weight blob for BISMO (bit planes) or Bit Fusion (packed b-bit values)
by :func:`write_descriptor`, and is executed bit-serially from those files
alone by :func:`simulate_bitserial`, which must equal the reference exactly.

References: BISMO (Umuroglu et al., FPL 2018, arXiv 1806.08862); Bit Fusion
(Sharma et al., ISCA 2018, arXiv 1712.01507); integer-only inference
(Jacob et al., CVPR 2018, arXiv 1712.05877).

Example:
    >>> from tfcomp.export.bitserial import (random_ir, integer_reference,
    ...     write_descriptor, simulate_bitserial)
    >>> ir = random_ir(seed=0)
    >>> x = np.random.default_rng(0).uniform(-1, 1, (4,) + ir.input_shape)
    >>> _ = write_descriptor(ir, "/tmp/net.json", hardware="bismo")
    >>> bool((simulate_bitserial("/tmp/net.json", x)
    ...       == integer_reference(ir, x)).all())
    True
"""

from tfcomp.export.bitserial.builder import IRBuilder
from tfcomp.export.bitserial.descriptor import (
    SCHEMA_VERSION,
    descriptor_blob_path,
    load_descriptor,
    load_schema,
    schema_path,
    validate_descriptor,
    write_descriptor,
)
from tfcomp.export.bitserial.errors import (
    BlobIntegrityError,
    DescriptorError,
    SchemaVersionError,
)
from tfcomp.export.bitserial.export import BitSerialReport, export_bitserial
from tfcomp.export.bitserial.fixedpoint import (
    multiply_by_quantized_multiplier,
    quantize_multiplier,
)
from tfcomp.export.bitserial.ir import IntegerIR, IntOp, IRInput, QuantParams
from tfcomp.export.bitserial.keras_import import build_ir_from_keras
from tfcomp.export.bitserial.packing import (
    pack_bitplanes,
    pack_values,
    unpack_bitplanes,
    unpack_values,
)
from tfcomp.export.bitserial.random_ir import random_ir
from tfcomp.export.bitserial.reference import integer_reference
from tfcomp.export.bitserial.simulator import (
    LayerStats,
    SimulationStats,
    simulate_bitserial,
)
from tfcomp.hardware.schedule import bismo_schedule, bitfusion_schedule

__version__ = "0.1.0"

__all__ = [
    "SCHEMA_VERSION",
    "BitSerialReport",
    "BlobIntegrityError",
    "DescriptorError",
    "IRBuilder",
    "IRInput",
    "IntOp",
    "IntegerIR",
    "LayerStats",
    "QuantParams",
    "SchemaVersionError",
    "SimulationStats",
    "bismo_schedule",
    "bitfusion_schedule",
    "build_ir_from_keras",
    "descriptor_blob_path",
    "export_bitserial",
    "integer_reference",
    "load_descriptor",
    "load_schema",
    "multiply_by_quantized_multiplier",
    "pack_bitplanes",
    "pack_values",
    "quantize_multiplier",
    "random_ir",
    "schema_path",
    "simulate_bitserial",
    "unpack_bitplanes",
    "unpack_values",
    "validate_descriptor",
    "write_descriptor",
]
