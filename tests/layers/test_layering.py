"""tfcomp.layers sits below quantization / pruning: it imports neither, and
it exports every layer (quantization-aware, DNAS mixed and masked)."""

import ast
import pathlib

import tfcomp.layers as L

_ROOT = pathlib.Path(L.__file__).parent
_ABOVE = ("tfcomp.quantization", "tfcomp.pruning", "tfcomp.export",
          "tfcomp.hardware", "tfcomp.tuners", "tfcomp.cli")


def _imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def test_layers_do_not_import_packages_above_them():
    bad = {str(p.relative_to(_ROOT)): m for p in _ROOT.rglob("*.py")
           for m in _imports(p) if m.startswith(_ABOVE)}
    assert not bad, bad


def test_layers_export_masked_quant_and_mixed_layers():
    for name in ("MaskedConv2D", "MaskedDense", "MaskedDepthwiseConv2D",
                 "MaskedBatchNormalization", "MaskedLayer", "QuantConv2D",
                 "QuantDense", "MixedQuantConv2D", "gumbel_softmax"):
        assert name in L.__all__ and hasattr(L, name), name
    assert L.quantizers.get("kmeans").bits == 4
    # the old import path re-exports the same classes
    from tfcomp.quantization import quantizers as old

    assert old.SymmetricQuantizer is L.quantizers.SymmetricQuantizer
