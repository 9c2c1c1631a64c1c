"""Unstructured / block magnitude pruning during ``model.fit``.

``MagnitudePruning`` is a Keras callback that, on the steps its schedule
names, recomputes each layer's ``kernel_mask`` so that the smallest-|w|
weights (or blocks of weights) are zero, and zeroes them in the kernel. The
masks live in the layers (see :mod:`tfcomp.layers.masked`): the forward pass
multiplies the kernel by the mask, so masked weights get zero gradient and,
through the installed projection, stay exactly 0 after every optimizer
step. The callback itself only advances the step counter and rewrites masks
on update steps. Recurrent layers (LSTM / GRU / SimpleRNN, ConvLSTM1D/2D/3D,
Bidirectional) prune their kernel and recurrent kernel, each to the
sparsity (as TFMOT prunes RNN cells).

CADNN-style runtime-aware sparsity: ``pattern="xnnpack"`` prunes only the
1x1 stride-1 convolutions, in blocks of 4 output channels x 1 input channel,
the shape XNNPACK's sparse (NCHW SpMM) kernels use; export with
``tfcomp.export.export_tflite(model, path, sparsity=True)``. XNNPACK only
switches to sparse inference for a subgraph that starts with a 3x3 stride-2
conv on 3 input channels, ends in a spatial mean, contains only 1x1 convs,
3x3/5x5 depthwise convs and element-wise ops, and whose 1x1 convs are at
least 2/3 zeros.

Example:
    >>> model = tfcomp.pruning.apply_magnitude_pruning(model)
    >>> model.compile("adam", "sparse_categorical_crossentropy")
    >>> cb = MagnitudePruning(PolynomialDecay(0.0, 0.8, 0, 2000,
    ...                                       frequency=100))
    >>> model.fit(x, y, epochs=5, callbacks=[cb])
    >>> deploy = tfcomp.pruning.strip_pruning(model)

Reference: Han et al., Learning both Weights and Connections for Efficient
Neural Networks / Deep Compression, arXiv:1506.02626, arXiv:1510.00149;
Niu et al., CADNN, arXiv:1905.00571; Elsen et al., Fast Sparse ConvNets,
arXiv:1911.09723 (XNNPACK's sparse kernels); Narang et al., Exploring
Sparsity in Recurrent Neural Networks, ICLR 2017, arXiv:1704.05119.
"""

from __future__ import annotations

import logging
import warnings

import keras
import numpy as np

from tfcomp.layers.masked import (
    MaskedConv1DTranspose,
    MaskedConv2D,
    MaskedConv2DTranspose,
    MaskedConv3DTranspose,
    MaskedDepthwiseConv1D,
    MaskedDepthwiseConv2D,
)
from tfcomp.pruning._time_distributed import wrapper_names
from tfcomp.pruning.schedules import PolynomialDecay, get_schedule
from tfcomp.pruning.targets import check_ratio
from tfcomp.pruning.wrappers import masked_layers, pruning_target

__all__ = [
    "PATTERNS",
    "XNNPACK_MIN_SPARSITY",
    "MagnitudePruning",
    "magnitude_mask",
]

logger = logging.getLogger("tfcomp.pruning")

PATTERNS = (None, "xnnpack")
XNNPACK_MIN_SPARSITY = 2.0 / 3.0
XNNPACK_BLOCK = (1, 4)
_TRANSPOSED = (MaskedConv1DTranspose, MaskedConv2DTranspose,
               MaskedConv3DTranspose)


def _as_2d(kernel: np.ndarray, depthwise: bool) -> np.ndarray:
    """Kernel as (rows, output channels): conv (kh*kw*cin, cout), dense
    (din, units), depthwise (kh*kw, cin*multiplier)."""
    if depthwise:
        return kernel.reshape(-1, kernel.shape[-2] * kernel.shape[-1])
    return kernel.reshape(-1, kernel.shape[-1])


def magnitude_mask(kernel, sparsity: float, block_size=(1, 1),
                   pooling: str = "avg", depthwise: bool = False
                   ) -> np.ndarray:
    """0/1 mask zeroing the ``round(sparsity * n_blocks)`` smallest blocks.

    The kernel is viewed as a 2-D matrix (rows: kernel positions x input
    channels, columns: output channels) and tiled into ``block_size``
    blocks from the top-left corner (edge blocks may be partial). Blocks
    are scored by the mean (``avg``) or max |w| and the lowest-scoring ones
    are masked; ties are broken by position, so already-zero weights go
    first.

    Args:
        kernel: the weight array.
        sparsity: fraction of blocks to zero, in [0, 1).
        block_size: ``(rows, cols)`` of a block; ``(1, 1)`` is unstructured.
        pooling: ``avg`` or ``max``.
        depthwise: whether ``kernel`` is a depthwise kernel.

    Returns:
        A float32 mask of ``kernel``'s shape.

    Example:
        >>> m = magnitude_mask(np.arange(8.).reshape(2, 4), 0.5)
        >>> int(m.sum())
        4
    """
    w = np.abs(np.asarray(kernel, dtype="float64"))
    w2 = _as_2d(w, depthwise)
    rows, cols = w2.shape
    br, bc = (int(b) for b in block_size)
    nr, nc = -(-rows // br), -(-cols // bc)
    pad = np.zeros((nr * br, nc * bc))
    pad[:rows, :cols] = w2
    blocks = pad.reshape(nr, br, nc, bc)
    if pooling == "max":
        score = blocks.max(axis=(1, 3))
    else:
        count = np.zeros((nr * br, nc * bc))
        count[:rows, :cols] = 1.0
        score = blocks.sum(axis=(1, 3)) / count.reshape(
            nr, br, nc, bc).sum(axis=(1, 3))
    n_blocks = nr * nc
    k = int(round(float(sparsity) * n_blocks))
    keep = np.ones(n_blocks, dtype="float32")
    if k > 0:
        keep[np.argsort(score.ravel(), kind="stable")[:k]] = 0.0
    full = np.repeat(np.repeat(keep.reshape(nr, nc), br, axis=0), bc,
                     axis=1)[:rows, :cols]
    return full.reshape(np.shape(kernel)).astype("float32")


def _is_depthwise(layer, kernel_var) -> bool:
    """Whether ``kernel_var`` is laid out (*k, cin, multiplier)."""
    if isinstance(layer, (MaskedDepthwiseConv1D, MaskedDepthwiseConv2D)):
        return True
    return kernel_var.name == "depthwise_kernel"


def _xnnpack_eligible(layer) -> bool:
    return (type(layer) is MaskedConv2D
            and tuple(layer.kernel_size) == (1, 1)
            and tuple(layer.strides) == (1, 1)
            and tuple(layer.dilation_rate) == (1, 1)
            and int(getattr(layer, "groups", 1) or 1) == 1)


def _check_block(block_size):
    if (not isinstance(block_size, (tuple, list)) or len(block_size) != 2
            or any(isinstance(b, bool) or not isinstance(b, (int, np.integer))
                   or b < 1 for b in block_size)):
        raise ValueError(
            "block_size must be a pair of positive integers (rows, "
            f"output channels). Received: block_size={block_size!r}")
    return (int(block_size[0]), int(block_size[1]))


class MagnitudePruning(keras.callbacks.Callback):
    """Keras callback: magnitude pruning on a sparsity schedule.

    Works on a model prepared with
    :func:`tfcomp.pruning.apply_magnitude_pruning`. Every step the schedule
    names (``schedule(step) -> (True, s)``), each selected layer's mask is
    recomputed from the current |kernel| so that a fraction ``s`` of its
    weights (of its blocks, with ``block_size``) is zero, and the kernel is
    multiplied by the mask. Between updates masked weights stay exactly 0.
    Separable convolutions prune both kernels (each to the sparsity);
    blocks of a transposed convolution run along its filters (kernel axis
    -2).

    The step counter is the number of training batches seen under pruning;
    it is stored in each layer's ``pruning_step`` variable, so a checkpoint
    (``.keras``, ``save_weights``, ``ModelCheckpoint``) resumes the schedule
    where it stopped. ``steps_per_execution > 1`` is supported: a window of
    steps is updated at its start with the sparsity of the first update step
    inside it.

    Args:
        schedule: a :class:`PolynomialDecay`, :class:`ConstantSparsity`,
            a float (constant sparsity) or a TFMOT schedule object. Default:
            ``PolynomialDecay(0.0, 0.8, begin_step=0, end_step=1000,
            frequency=100)``.
        block_size: ``(rows, output channels)`` block pruned as a unit
            (default ``(1, 1)``: unstructured; ``(1, 4)`` when
            ``pattern="xnnpack"``).
        ignored_layers: layer names or layer classes left dense.
        pattern: None (every masked layer) or ``"xnnpack"`` (only 1x1
            stride-1 convolutions, the ones XNNPACK's sparse inference runs).
        block_pooling: ``"avg"`` or ``"max"`` |w| per block.
        verbose: 1 prints every mask update.
        skip: deprecated name of ``ignored_layers``.

    Attributes:
        history: one record per update: step, target sparsity, per-layer
            achieved sparsity.

    Raises:
        ValueError: (in ``on_train_begin``) if the model has no weight-masked
            layers or every one is skipped.

    Reference: Han et al., arXiv:1506.02626; Zhu & Gupta, arXiv:1710.01878
    (the polynomial schedule); CADNN arXiv:1905.00571 for ``pattern``.

    Example:
        >>> cb = MagnitudePruning(ConstantSparsity(0.8, frequency=50),
        ...                       pattern="xnnpack")
        >>> model.fit(x, y, epochs=2, callbacks=[cb])
    """

    def __init__(self, schedule=None, block_size=None, ignored_layers=(),
                 pattern: str | None = None, block_pooling: str = "avg",
                 verbose: int = 0, *, skip=None):
        super().__init__()
        if schedule is None:
            schedule = PolynomialDecay(0.0, 0.8, begin_step=0, end_step=1000,
                                       frequency=100)
        self.schedule = get_schedule(schedule)
        if pattern not in PATTERNS:
            raise ValueError(f"pattern must be one of {PATTERNS}. Received: "
                             f"pattern={pattern!r}")
        self.pattern = pattern
        if block_size is None:
            block_size = XNNPACK_BLOCK if pattern == "xnnpack" else (1, 1)
        self.block_size = _check_block(block_size)
        if block_pooling not in ("avg", "max"):
            raise ValueError("block_pooling must be 'avg' or 'max'. "
                             f"Received: block_pooling={block_pooling!r}")
        self.block_pooling = block_pooling
        if skip is not None:
            warnings.warn("MagnitudePruning(skip=...) is deprecated; use "
                          "ignored_layers=.", DeprecationWarning, stacklevel=2)
            ignored_layers = skip
        if isinstance(ignored_layers, (str, type)):
            ignored_layers = (ignored_layers,)
        self.ignored_layers = tuple(ignored_layers or ())
        for s in self.ignored_layers:
            if not isinstance(s, (str, type)):
                raise TypeError(
                    "ignored_layers must hold layer names or layer classes. "
                    f"Received: {s!r}")
        self.verbose = int(verbose)
        self.history: list = []
        self._layers: list = []
        self._step = 0
        self._epoch_start = 0

    @property
    def skip(self) -> tuple:
        """Deprecated: use ``ignored_layers``."""
        warnings.warn("MagnitudePruning.skip is deprecated; use "
                      "ignored_layers.", DeprecationWarning, stacklevel=2)
        return self.ignored_layers

    # -- selection -------------------------------------------------------
    def _skipped(self, layer, wrapper=None) -> bool:
        for s in self.ignored_layers:
            if isinstance(s, str) and s in (layer.name, wrapper):
                return True
            if isinstance(s, type) and isinstance(layer, s):
                return True
        return False

    def _select(self, model) -> list:
        model = pruning_target(model)
        candidates = masked_layers(model, "weight")
        if not candidates:
            raise ValueError(
                f"MagnitudePruning: model {model.name!r} has no weight-masked "
                "layers. Prepare it first: model = tfcomp.pruning."
                "apply_magnitude_pruning(model), then compile and fit.")
        wrappers = wrapper_names(model)  # TimeDistributed names
        chosen = [lyr for lyr in candidates
                  if not self._skipped(lyr, wrappers.get(id(lyr)))]
        if self.pattern == "xnnpack":
            chosen = [lyr for lyr in chosen if _xnnpack_eligible(lyr)]
        if not chosen:
            raise ValueError(
                f"MagnitudePruning: nothing to prune in model {model.name!r}:"
                f" all {len(candidates)} weight-masked layers are skipped "
                f"(ignored_layers={self.ignored_layers!r}, "
                f"pattern={self.pattern!r}).")
        return chosen

    # -- state -----------------------------------------------------------
    def _read_step(self) -> int:
        steps = [int(keras.ops.convert_to_numpy(lyr.pruning_step))
                 for lyr in self._layers]
        return max(steps) if steps else 0

    def _write_step(self, layers=None) -> None:
        for layer in (self._layers if layers is None else layers):
            layer.pruning_step.assign(self._step)

    def _steps_per_execution(self) -> int:
        spe = getattr(self.model, "steps_per_execution", 1)
        try:
            return max(1, int(spe))
        except (TypeError, ValueError):
            return 1

    # -- masks -----------------------------------------------------------
    def update_masks(self, sparsity: float, step: int | None = None) -> dict:
        """Recomputes every selected layer's mask at ``sparsity`` now.

        Usable outside ``fit`` after ``set_model(model)`` (e.g. one-shot
        pruning before fine-tuning).

        Returns:
            ``{layer_name: achieved sparsity}``.

        Example:
            >>> cb = MagnitudePruning(); cb.set_model(model)
            >>> cb.update_masks(0.5)
        """
        if not self._layers:
            self._layers = self._select(self.model)
        sparsity = check_ratio(float(sparsity), "sparsity")
        achieved = {}
        for layer in self._layers:
            zeros = total = 0
            for kernel_var, mask_var in layer.weight_masks():
                mask_old = keras.ops.convert_to_numpy(mask_var)
                w = keras.ops.convert_to_numpy(kernel_var) * mask_old
                # transposed convs hold their filters on axis -2
                swap = isinstance(layer, _TRANSPOSED)
                mask = magnitude_mask(
                    np.swapaxes(w, -1, -2) if swap else w, sparsity,
                    self.block_size, self.block_pooling,
                    depthwise=_is_depthwise(layer, kernel_var))
                mask = np.swapaxes(mask, -1, -2) if swap else mask
                mask_var.assign(mask)
                kernel_var.assign((w * mask).astype(w.dtype))
                zeros += int(mask.size - np.count_nonzero(mask))
                total += int(mask.size)
            achieved[layer.name] = zeros / total if total else 0.0
        record = {"step": int(self._step if step is None else step),
                  "sparsity": sparsity, "layers": achieved}
        self.history.append(record)
        self._write_step()
        if self.verbose:
            print(f"MagnitudePruning: step {record['step']}: sparsity "
                  f"{sparsity:.3f} in {len(achieved)} layers")
        logger.debug("MagnitudePruning update %s", record)
        return achieved

    def sparsity(self) -> float:
        """Overall fraction of masked weights in the selected layers.

        Example:
            >>> cb.sparsity()
        """
        zeros = total = 0
        for layer in self._layers:
            for _, mask_var in layer.weight_masks():
                m = keras.ops.convert_to_numpy(mask_var)
                zeros += int(m.size - np.count_nonzero(m))
                total += int(m.size)
        return zeros / total if total else 0.0

    # -- callback hooks --------------------------------------------------
    def on_train_begin(self, logs=None):
        self._layers = self._select(self.model)
        self._step = self._read_step()
        if self.pattern == "xnnpack":
            final = self.schedule.end_sparsity()
            if final < XNNPACK_MIN_SPARSITY:
                warnings.warn(
                    f"pattern='xnnpack': final sparsity {final:.2f} is below "
                    "2/3; XNNPACK uses its sparse kernels only when at least "
                    "2/3 of the 1x1 conv weights are zero.", stacklevel=2)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = self._step

    def on_train_batch_begin(self, batch, logs=None):
        start = self._epoch_start + int(batch)
        for step in range(start, start + self._steps_per_execution()):
            should, sparsity = self.schedule(step)
            if should:
                self.update_masks(sparsity, step=step)
                break

    def on_train_batch_end(self, batch, logs=None):
        self._step = self._epoch_start + int(batch) + 1
        if self._layers:
            # one scalar write per step keeps checkpoints exact
            self._layers[0].pruning_step.assign(self._step)

    def on_epoch_end(self, epoch, logs=None):
        self._write_step()
        if logs is not None:
            logs["sparsity"] = self.sparsity()

    def on_train_end(self, logs=None):
        self._write_step()
