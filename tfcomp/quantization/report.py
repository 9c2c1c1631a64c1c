"""What quantization did to a model, as a returned object.

``quantization_report(qat_model)`` reads the quantized layers, their bits
and the inserted activation quantizers from the model's own layers, so it
also works on a model loaded from ``.keras`` (which keeps no Python
attributes). The folded BatchNorms, fused ReLUs and the reasons layers were
skipped are known only to the ``quantize_model`` call that built the model:
they are filled in for that model object and empty after a save / load.

Example:
    >>> from tfcomp.quantization import quantization_report
    >>> print(quantization_report(qat).summary())
"""

from __future__ import annotations

import dataclasses

import keras

from tfcomp.graph import iter_leaf_layers
from tfcomp.layers import (
    MIXED_LAYERS,
    QUANT_KERAS_ATTENTION_LAYERS,
    QUANT_NORM_LAYERS,
    QUANT_WEIGHT_LAYERS,
    QuantActivation,
    QuantMultiHeadAttention,
)

__all__ = ["QuantizationReport", "quantization_report"]

# The in-memory record quantize_model keeps on the model it returns (the
# deprecated ``model.quantization_report`` attribute is the same object).
_RECORD_ATTR = "quantization_report"


@dataclasses.dataclass
class QuantizationReport:
    """What ``quantize_model`` (or ``dnas.build_supernet``) did.

    Attributes:
        quantized: ``{layer: (w_bits, a_bits)}`` of the quantized layers.
        folded: ``{layer: batchnorm}`` folded pairs.
        fused: ``{layer: relu layer}`` fused activations.
        observers: names of inserted ``QuantActivation`` layers.
        skipped: ``{layer: reason}`` for layers with weights left float.
        normalizations: names of the Layer / GroupNormalizations made
            ``QuantLayerNormalization`` / ``QuantGroupNormalization``
            (8-bit quantizers inside).
        attention: names of the MultiHeadAttentions made
            ``QuantMultiHeadAttention`` (8-bit weights and intermediates)
            and of the Attention / AdditiveAttentions made
            ``QuantAttention`` / ``QuantAdditiveAttention``.
        opened: the user's own layer classes opened into the Keras layers
            their ``call`` uses, which were then quantized like the
            model's other layers (``tfcomp.graph.open_layers``).

    Example:
        >>> print(quantization_report(qmodel).summary())
    """

    quantized: dict = dataclasses.field(default_factory=dict)
    folded: dict = dataclasses.field(default_factory=dict)
    fused: dict = dataclasses.field(default_factory=dict)
    observers: list = dataclasses.field(default_factory=list)
    skipped: dict = dataclasses.field(default_factory=dict)
    normalizations: list = dataclasses.field(default_factory=list)
    attention: list = dataclasses.field(default_factory=list)
    opened: list = dataclasses.field(default_factory=list)

    def summary(self) -> str:
        """A readable multi-line summary.

        Example:
            >>> print(report.summary())
        """
        lines = [f"quantized {len(self.quantized)} layers, folded "
                 f"{len(self.folded)} BatchNorms, fused {len(self.fused)} "
                 f"ReLUs, inserted {len(self.observers)} activation "
                 "quantizers"
                 + (f", quantized {len(self.normalizations)} "
                    "normalizations" if self.normalizations else "")
                 + (f", quantized {len(self.attention)} attention layers"
                    if self.attention else "")]
        if self.opened:
            lines.append("  opened your layers into the layers they call: "
                         + ", ".join(self.opened))
        for name, (w, a) in self.quantized.items():
            lines.append(f"  {name}: w{w}/a{a}")
        for name, why in self.skipped.items():
            lines.append(f"  skipped {name}: {why}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON-ready dict (bit pairs as lists).

        Example:
            >>> json.dumps(report.to_dict())
        """
        d = dataclasses.asdict(self)
        d["quantized"] = {k: list(v) for k, v in self.quantized.items()}
        return d


def _float_kernels() -> tuple:
    L = keras.layers
    return (L.Conv1D, L.Conv2D, L.Conv3D, L.DepthwiseConv1D,
            L.DepthwiseConv2D, L.Dense, L.SeparableConv1D, L.SeparableConv2D,
            L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose,
            L.EinsumDense)


def quantization_report(model) -> QuantizationReport:
    """The :class:`QuantizationReport` of a quantization-aware model.

    ``quantized`` (current bits, so a ``make_bits_dynamic`` policy shows),
    ``observers`` and the float conv / dense layers are read from the
    model's layers; ``folded``, ``fused``, ``opened`` and the skip reasons
    come from
    the ``quantize_model`` / ``build_supernet`` call that built this model
    object (empty for a loaded model).

    Args:
        model: a model from ``quantize_model`` / ``dnas.build_supernet``, or
            one loaded from ``.keras``.

    Returns:
        A new ``QuantizationReport`` (changing it changes nothing else).

    Example:
        >>> quantization_report(keras.saving.load_model("qat.keras")).quantized
        {'stem_conv': (8, 8), ...}
    """
    if not isinstance(model, keras.Model):
        raise TypeError("quantization_report expects a keras.Model. "
                        f"Received: {type(model).__name__}")
    record = getattr(model, _RECORD_ATTR, None)
    found = QuantizationReport()
    float_kernels = _float_kernels()
    for _, layer in iter_leaf_layers(model):
        if isinstance(layer, QUANT_WEIGHT_LAYERS + MIXED_LAYERS):
            found.quantized[layer.name] = (int(layer.w_bits),
                                           int(layer.a_bits))
        elif isinstance(layer, QuantActivation):
            found.observers.append(layer.name)
        elif isinstance(layer, QUANT_NORM_LAYERS):
            found.normalizations.append(layer.name)
        elif isinstance(layer, (QuantMultiHeadAttention,
                                *QUANT_KERAS_ATTENTION_LAYERS)):
            found.attention.append(layer.name)
        elif isinstance(layer, float_kernels):
            found.skipped[layer.name] = "kept float"
    if not isinstance(record, QuantizationReport):
        return found
    order = [n for n in record.quantized if n in found.quantized]
    order += [n for n in found.quantized if n not in record.quantized]
    observers = [n for n in record.observers if n in found.observers]
    observers += [n for n in found.observers if n not in record.observers]
    skipped = {n: record.skipped.get(n, why)
               for n, why in found.skipped.items()}
    skipped.update({n: why for n, why in record.skipped.items()
                    if n not in skipped})
    return QuantizationReport(
        quantized={n: found.quantized[n] for n in order},
        folded=dict(record.folded), fused=dict(record.fused),
        observers=observers, skipped=skipped,
        normalizations=found.normalizations, attention=found.attention,
        opened=list(record.opened))


def attach_record(model, report: QuantizationReport) -> None:
    """Keeps ``report`` on the model for :func:`quantization_report` (and
    the deprecated ``model.quantization_report`` attribute)."""
    setattr(model, _RECORD_ATTR, report)
