"""Layers that should share bit-widths: the quantized layers whose outputs a
residual ``Add`` sums (HAWQ-V3 ties a block's downsample / shortcut conv
to its main path, so the sum is computed on one grid).

Example:
    >>> residual_ties(tfcomp.zoo.resnet(depth=8))[:1]
    [['s2b1_conv2', 's2b1_proj']]
"""

from __future__ import annotations

from tfcomp.quantization._analysis import (
    QUANT_KINDS,
    TRANSPARENT,
    analyse,
    keras_classes,
)

__all__ = ["residual_ties"]

# Single-input layers a residual branch passes through after its conv.
_PASS_THROUGH = TRANSPARENT + ("BatchNormalization", "ReLU", "Activation",
                               "LeakyReLU", "PReLU", "ELU")


def _source(graph, plans, tid):
    """The quantized layer whose output ``tid`` is, through BatchNorm,
    activations and dropout on the branch's own path (every tensor on the
    way has one consumer), or None (an identity shortcut, an ``Add``, the
    model input, ...)."""
    passing = keras_classes(_PASS_THROUGH)
    while len(graph.consumers(tid)) == 1:
        node = graph.producer(tid)
        if node is None:
            return None
        if node.name in plans and node in plans[node.name].nodes:
            return node.name
        if not (isinstance(node.layer, passing) and len(node.inputs) == 1):
            return None
        tid = node.inputs[0]
    return None


def residual_ties(model) -> list:
    """Groups of quantizable layers whose outputs are summed by an ``Add``
    (or ``Subtract`` / ``Average``), each traced back through BatchNorm,
    activations and dropout on the branch's own path (tensors with one
    consumer). Groups that share a layer are merged; an identity shortcut
    ties nothing.

    Args:
        model: the float model.

    Returns:
        A list of groups (lists of layer names in model order), each with at
        least two layers.

    Reference: Yao et al., HAWQ-V3, arXiv:2011.10680 (residual layers tied
    to the main path).

    Example:
        >>> residual_ties(model)
        [['b1_conv2', 'b1_shortcut']]
    """
    analysis = analyse(model, True, (), "residual_ties", QUANT_KINDS)
    graph, plans = analysis.graph, analysis.plans
    order = {n: i for i, n in enumerate(analysis.quantized_names())}
    parent = {}

    def find(a):
        while parent.setdefault(a, a) != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    summing = keras_classes(("Add", "Subtract", "Average"))
    for node in graph.nodes:
        if not isinstance(node.layer, summing):
            continue
        sources = {_source(graph, plans, t) for t in node.inputs} - {None}
        sources = sorted(sources, key=order.get)
        for other in sources[1:]:
            parent[find(other)] = find(sources[0])
    groups = {}
    for name in parent:
        groups.setdefault(find(name), []).append(name)
    out = [sorted(g, key=order.get) for g in groups.values() if len(g) > 1]
    return sorted(out, key=lambda g: order[g[0]])
