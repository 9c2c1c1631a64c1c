"""HAQ's released latency lookup tables, read onto a Keras model.

HAQ (Wang et al., CVPR 2019, github.com/mit-han-lab/haq) released one
latency table, ``qmobilenetv2_imagenet100_batch16_latency_table.npy``: an
int64 array of shape (53, 8, 8), ``table[i, w_bits - 1, a_bits - 1]`` the
latency of the i-th quantized layer of MobileNetV2 (alpha 1.0, 224x224,
batch 16) on the authors' bit-serial simulator. Layers are the
``nn.Conv2d`` / ``nn.Linear`` modules in module order: the first conv, then
each inverted-residual block's expand 1x1 (absent in the first block),
depthwise 3x3 and project 1x1, the last 1x1 conv and the classifier,
which is the order of keras.applications MobileNetV2's Conv2D /
DepthwiseConv2D / Dense layers.

``read_haq_table`` checks the file and pairs its rows with the model's
costed conv / dense layers; ``LatencyTable.from_haq`` builds the table.

Example:
    >>> values, specs, _ = read_haq_table("haq.npy", model)
    >>> len(specs) == values.shape[0]
    True
"""

from __future__ import annotations

import os

import numpy as np

from tfcomp._io import BadInputError
from tfcomp.hardware.base import as_specs
from tfcomp.hardware.spec import GEMM_OPS

__all__ = ["read_haq_table"]


def read_haq_table(npy_path, model, batch: int = 1):
    """The table's values and the model's matching layer specs.

    Args:
        npy_path: a ``.npy`` file of shape (layers, max_bits, max_bits).
        model: a built ``keras.Model`` (or ``LayerSpec`` records) with the
            same conv / dense layers in the same order.
        batch: batch size of the specs (the entries' signatures).

    Returns:
        ``(values, specs, others)``: a float64 array (layers, B, B), the
        model's conv / depthwise / dense ``LayerSpec`` list in order, and
        its other costed layers (add, pooling: not in HAQ's tables).

    Raises:
        FileNotFoundError: ``npy_path`` does not exist.
        BadInputError: not a 3-D square, finite, non-negative table, or a
            layer count that differs from the model's (says both).

    Example:
        >>> values, specs, _ = read_haq_table(path, MobileNetV2())
    """
    path = os.fspath(npy_path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"HAQ latency table not found: {path!r}")
    try:
        values = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise BadInputError(
            f"{path!r} is not a readable .npy latency table ({e}).") from None
    if values.ndim != 3 or values.shape[1] != values.shape[2] or (
            values.shape[1] < 1) or values.dtype.kind not in "iuf":
        raise BadInputError(
            f"{path!r} is not in HAQ's table format [layer, w_bits - 1, "
            f"a_bits - 1] (a numeric array of shape (layers, B, B)). "
            f"Received: shape {values.shape}, dtype {values.dtype}")
    values = values.astype(np.float64)
    if not np.isfinite(values).all() or (values < 0).any():
        raise BadInputError(f"{path!r} holds negative or non-finite "
                            "latencies.")
    every = as_specs(model, batch=batch)
    specs = [s for s in every if s.op in GEMM_OPS]
    if len(specs) != values.shape[0]:
        name = getattr(model, "name", "the model")
        raise BadInputError(
            f"The HAQ table {os.path.basename(path)!r} has "
            f"{values.shape[0]} layers but model {name!r} has {len(specs)} "
            "quantizable layers (Conv2D / DepthwiseConv2D / Dense, in "
            "order); they must match one to one. Received: "
            f"{values.shape[0]} table layers, {len(specs)} model layers "
            f"({[s.name for s in specs[:3]]}...).")
    return values, specs, [s for s in every if s.op not in GEMM_OPS]
