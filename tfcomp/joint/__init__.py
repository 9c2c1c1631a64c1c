"""Joint pruning + quantization to one hardware budget.

:func:`compress` chooses kept channels per group and ``(w_bits, a_bits)``
per layer together, minimising summed pruning + quantization sensitivity
under a budget on one cost model (:mod:`tfcomp.joint.allocator`).

Example:
    >>> from tfcomp.joint import compress
    >>> res = compress(model, (x[:256], y[:256]), hardware=BISMO(),
    ...                budget=0.25)
    >>> qat = tfcomp.quantize_model(res.model, bits=res.bits)
"""

from tfcomp.joint.allocator import (
    apply_keep,
    compress,
    joint_problem,
    measure_quant_sensitivity,
)
from tfcomp.joint.ilp import JointProblem
from tfcomp.joint.result import JointResult

__all__ = ["JointProblem", "JointResult", "apply_keep", "compress",
           "joint_problem", "measure_quant_sensitivity"]
