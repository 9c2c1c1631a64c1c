"""Per-layer channel selection with least-squares reconstruction.

The building block of reconstruction-based channel pruning (He, Zhang & Sun
2017) that :func:`tfcomp.pruning.lasso_prune` runs layer by layer and that
AMC reuses for its per-layer step:

1. **Sample** a consumer layer's input patches ``X`` and its original
   outputs ``Y`` on calibration data (:func:`sample_patches`,
   :func:`sample_layer`): random output locations per image for
   convolutions (stride, padding and dilation are honoured), one row per
   image (or random positions along extra axes) for ``Dense``.
   ``X`` has shape ``(M, K, P)``: ``M`` samples, ``K`` kernel taps
   (``kh * kw`` for ``Conv2D``, 1 for ``Dense``) and ``P`` input positions
   (channels, or features of a ``Flatten`` -> ``Dense``); ``Y`` is
   ``(M, n)``, the layer's pre-activation output.
2. **Select** input channels (*units*; a unit may own several positions,
   e.g. all the features of one channel after ``Flatten``):
   :func:`select_channels` with ``"lasso"`` (LASSO on the per-channel
   contributions ``Z_i = X_i W_i``, alpha raised then bisected until exactly
   ``num_keep`` channels survive), ``"l1"`` (L1 norm of the consumer's
   input slices, AMC's official criterion) or ``"random"``.
3. **Refit** the kernel (and bias) on the kept channels by least squares
   (:func:`least_squares_refit`).

:func:`reconstruct_layer` does 2 and 3 for one layer and returns a
:class:`LayerReconstruction` (kept channels, refit kernel in the original
shape with zeros at removed inputs, and the sliced kernel).

Depthwise convolutions are not channel consumers: each output channel reads
only its own input channel, so removing an input channel removes that
output channel too. The dependency graph treats them as pass-through and
the pointwise (or dense) layer that reads their output is reconstructed
instead; :func:`sample_layer` and :func:`reconstruct_layer` raise a
``ValueError`` that says so when given one.

Reference: He, Zhang & Sun, Channel Pruning for Accelerating Very Deep
Neural Networks, ICCV 2017, arXiv:1707.06168.

The model-level engine, :class:`LayerwisePruner` (module ``engine``), runs
these steps over the channel groups of a model in topological order (inputs
from the network pruned so far, targets from the original network, removed
producer filters through the dependency graph); ``lasso_prune``, DCP and AMC
use it.

Consumers: ``Conv1D`` / ``Conv2D`` / ``Conv3D`` (grouped too: each block of
outputs is refit on the inputs it reads), their transposed forms (patches
gathered by ``keras.ops.conv_transpose`` on an identity kernel) and
``Dense``, all seen as one ``(K, P, n)`` kernel (module ``kernels``).

Modules: ``kernels`` (the dense view of each consumer), ``sampling`` (step
1), ``selection`` (step 2), ``refit`` (step 3 and :func:`reconstruct_layer`),
``engine`` (the whole-model loop).

Example:
    >>> layer = model.get_layer("s1b1_conv2")
    >>> s = sample_layer(layer, inputs=x_in, samples_per_image=10, seed=0)
    >>> r = reconstruct_layer(layer, s.x, s.y, num_keep=8)
    >>> r.keep, r.kernel.shape, r.error
"""

from tfcomp.pruning.reconstruction.engine import (
    LayerwisePruner,
    PruningState,
)
from tfcomp.pruning.reconstruction.kernels import consumer_kind, layer_kernel
from tfcomp.pruning.reconstruction.refit import (
    LayerReconstruction,
    least_squares_refit,
    reconstruct_layer,
    reconstruction_error,
)
from tfcomp.pruning.reconstruction.sampling import (
    LayerSamples,
    sample_layer,
    sample_patches,
)
from tfcomp.pruning.reconstruction.selection import (
    SELECTORS,
    channel_contributions,
    select_channels,
)

# Steps 1-3 and the whole-model loop, in the order of the docstring.
__all__ = ["LayerSamples", "consumer_kind", "layer_kernel", "sample_patches",
           "sample_layer", "SELECTORS", "channel_contributions",
           "select_channels", "LayerReconstruction", "least_squares_refit",
           "reconstruct_layer", "reconstruction_error", "LayerwisePruner",
           "PruningState"]
