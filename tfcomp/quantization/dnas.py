"""DNAS mixed-precision search (Wu et al., arXiv:1812.00090).

1. ``build_supernet(model, candidates)``: every conv / dense layer (except the
   first and last, kept at 8/8 as in HAQ) becomes a mixed layer whose
   candidate ``(w_bits, a_bits)`` ops share one float kernel and are mixed by
   Gumbel-softmax weights ``m ~ GS(theta_layer, tau)``. Given
   ``hardware=``, only its native widths (``distinct_bits()``) are
   searched (``bits="all"``: every candidate, the paper). Per-candidate costs
   come from ``tfcomp.cost`` (``"size"``: params * w_bits / 8 bytes, bias
   included; ``"bops"``: MACs * w_bits * a_bits) or from a callable (e.g. a
   hardware model).
2. ``DNASLoss``: ``CE * beta * (log E[cost])^gamma`` with the expected cost
   ``E[cost] = sum_l sum_i softmax(theta_l)_i cost_l,i`` (plus the fixed
   layers' cost).
3. ``search``: per epoch, train the weights on 80% of the training data and
   theta on the other 20% (alternating), annealing ``tau`` with
   ``TemperatureAnnealing``.
4. ``derive``: the per-layer bits (argmax of theta, or sampled from
   ``P_theta``), optionally lowered greedily until a cost budget is met,
   ready for ``quantize_model(model, bits=...)``.
5. ``select_best``: the paper's last step -- train a few derived / sampled
   architectures briefly (quantization-aware) and keep the one with the
   best held-out accuracy.

Details the paper leaves open (no official code; unverified): the expected
cost uses ``softmax(theta)`` (the exact expectation under ``P_theta``)
rather than the Gumbel sample; ``tau`` starts at 5 and decays by 0.956 per
epoch and theta is trained with Adam(0.01) (FBNet's settings, the same
authors); defaults ``beta=0.2``, ``gamma=0.6`` (FBNet's alpha / beta).
``beta`` multiplies the whole loss, so with an adaptive optimizer (Adam) it
only rescales gradients and the accuracy/cost trade-off is set by ``gamma``;
with SGD a larger ``beta`` moves theta faster towards cheaper candidates.

Reference: Wu et al., Mixed Precision Quantization of ConvNets via
Differentiable Neural Architecture Search, arXiv:1812.00090.

Example:
    >>> sn = dnas.build_supernet(float_model, cost="bops")
    >>> dnas.search(sn, x_train, y_train, epochs=4)
    >>> bits = dnas.derive(sn, budget=target_bops)
    >>> qat = quantize_model(float_model, bits=bits)
"""

from tfcomp.layers.gumbel import gumbel_softmax
from tfcomp.quantization.dnas_search import (
    DNASLoss,
    TemperatureAnnealing,
    search,
    select_best,
)
from tfcomp.quantization.dnas_supernet import (
    DEFAULT_CANDIDATES,
    DNASInfo,
    architecture_cost,
    build_supernet,
    derive,
    expected_bits,
    expected_cost,
    mixed_layers,
    native_candidates,
    sample_architectures,
)

__all__ = ["build_supernet", "DNASLoss", "TemperatureAnnealing", "search",
           "derive", "sample_architectures", "expected_cost",
           "expected_bits", "architecture_cost", "mixed_layers",
           "select_best", "gumbel_softmax", "native_candidates",
           "DEFAULT_CANDIDATES", "DNASInfo"]
