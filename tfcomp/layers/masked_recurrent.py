"""Masked twins of the recurrent layers: ``LSTM``, ``GRU``, ``SimpleRNN``,
``ConvLSTM1D/2D/3D`` and ``Bidirectional`` of them (see
:mod:`tfcomp.layers.masked`).

* ``weight_mask=True``: element-wise ``kernel_mask`` and
  ``recurrent_kernel_mask`` (unstructured magnitude pruning of the cell's
  two kernels, as TFMOT's ``prune_low_magnitude`` does for RNN cells).
* ``channel_mask=True``: one ``channel_mask`` entry per hidden unit. Unit
  ``j`` is column ``j`` of every gate block (G = 4 for LSTM, 3 for GRU, 1
  for SimpleRNN) of ``kernel``, ``recurrent_kernel`` and ``bias`` (a
  ConvLSTM's units are its ``filters``: kernels ``(*k, din, 4 * filters)``
  and ``(*k, filters, 4 * filters)``, masked on their last axis): the
  mask, tiled G times, gates those columns, so a masked unit's gates see 0
  and, from the zero initial state, its output is exactly 0 (needs
  ``activation(0) == 0``: tanh, relu; another activation is refused with a
  ``ValueError``). Removing the unit
  (``tfcomp.pruning.prune_channels``) then leaves the outputs unchanged.

The layers keep the Keras cell: after the parent's ``__init__`` the cell
becomes a masked cell whose ``kernel`` / ``recurrent_kernel`` / ``bias``
read as ``variable * mask`` (cuDNN path included); the variables, their
names and the config stay the Keras ones. Masks are variables of the
layer (a ``.keras`` file keeps them) and a projection on the cell's
variables keeps masked entries exactly 0 under any optimizer.
``MaskedBidirectional`` holds the masks of both directions: one kernel
mask per direction and kernel, and ONE channel mask for both (the
dependency graph prunes the same units in both directions); its inner
layers stay plain ``LSTM`` / ``GRU`` / ``SimpleRNN`` / ``ConvLSTM*D`` in
its config.

Reference: Narang et al., Exploring Sparsity in Recurrent Neural Networks,
ICLR 2017, arXiv:1704.05119; Wen et al., Learning Intrinsic Sparse
Structures within Long Short-Term Memory, ICLR 2018, arXiv:1709.05027.

Example:
    >>> lstm = MaskedLSTM(8, weight_mask=True, channel_mask=True)
    >>> y = lstm(np.zeros((2, 7, 3), "float32"))
    >>> [v.name for v in lstm.mask_variables][:2]
    ['kernel_mask', 'recurrent_kernel_mask']
"""

from __future__ import annotations

import contextlib
import functools
import threading

import keras
from keras import ops

from tfcomp.graph.handlers_recurrent import cell_units, zero_at_zero
from tfcomp.layers.masked import (
    MASKED_CLASSES,
    MaskedLayer,
    _Projection,
    plain_class_of,
)

__all__ = [
    "MaskedBidirectional", "MaskedConvLSTM1D", "MaskedConvLSTM2D",
    "MaskedConvLSTM3D", "MaskedGRU", "MaskedLSTM", "MaskedRecurrent",
    "MaskedSimpleRNN", "channel_mask_problem",
]

_L = keras.layers
_CELL_WEIGHTS = ("kernel", "recurrent_kernel", "bias")
_KERNELS = ("kernel", "recurrent_kernel")
_CONV_LSTM_TYPES = (_L.ConvLSTM1D, _L.ConvLSTM2D, _L.ConvLSTM3D)
_RNN_TYPES = (_L.LSTM, _L.GRU, _L.SimpleRNN, *_CONV_LSTM_TYPES)


def _raw(cell, name: str):
    """The cell's variable ``name`` (None if absent / not built)."""
    return getattr(cell, "_raw_" + name, None)


# (id(cell), name) -> masked weight, computed once per layer call (not once
# per time step); thread-local: MirroredStrategy traces replicas in threads
_PER_CALL = threading.local()


@contextlib.contextmanager
def _masked_once(sites):
    """While the layer runs, its cells read weights computed here."""
    store = getattr(_PER_CALL, "store", None)
    if store is None:
        store = _PER_CALL.store = {}
    added = []
    for _, cell in sites:
        for name in _CELL_WEIGHTS:
            key = (id(cell), name)
            if key not in store:
                store[key] = getattr(cell, name)
                added.append(key)
    try:
        yield
    finally:
        for key in added:
            store.pop(key, None)


def _cell_property(name: str):
    def get(self):
        store = getattr(_PER_CALL, "store", None)
        if store and (id(self), name) in store:
            return store[(id(self), name)]
        raw = _raw(self, name)
        fn = getattr(self, "_mask_fn", None)
        mult = fn(name) if raw is not None and fn is not None else None
        if mult is None:
            return raw
        value = ops.convert_to_tensor(raw)
        return value * ops.cast(mult, value.dtype)

    def set_(self, value):
        # the variable is tracked by add_weight already
        object.__setattr__(self, "_raw_" + name, value)

    return property(get, set_, doc=f"``{name} * mask`` (the variable: "
                                   f"``_raw_{name}``).")


class _MaskedCell:
    """Cell mix-in: ``kernel`` / ``recurrent_kernel`` / ``bias`` read as
    variable times the owner's multiplier (``_mask_fn(name)``)."""

    kernel = _cell_property("kernel")
    recurrent_kernel = _cell_property("recurrent_kernel")
    bias = _cell_property("bias")


class _MaskedLSTMCell(_MaskedCell, _L.LSTMCell):
    pass


class _MaskedGRUCell(_MaskedCell, _L.GRUCell):
    pass


class _MaskedSimpleRNNCell(_MaskedCell, _L.SimpleRNNCell):
    pass


# exact Keras cell type -> (masked cell type, gate blocks G)
_CELLS = {_L.LSTMCell: (_MaskedLSTMCell, 4), _L.GRUCell: (_MaskedGRUCell, 3),
          _L.SimpleRNNCell: (_MaskedSimpleRNNCell, 1)}
_CELLS.update({m: (m, g) for m, g in list(_CELLS.values())})


@functools.cache
def _conv_lstm_twin(kind):
    """The masked subclass of Keras' ``ConvLSTMCell`` (``kind``): made on
    first use, as ``keras.layers`` does not export the cell class."""
    name = "_MaskedConvLSTMCell"
    return type(name, (_MaskedCell, kind),
                {"__module__": __name__, "__qualname__": name})


def _masked_cell(cell):
    """``(masked cell type, gate blocks G)`` of a Keras cell (exact type;
    a ConvLSTM cell: 4 gate blocks of ``filters`` columns)."""
    kind = type(cell)
    if kind in _CELLS:
        return _CELLS[kind]
    if kind.__name__ == "_MaskedConvLSTMCell":
        return kind, 4
    if kind.__name__ != "ConvLSTMCell":
        raise TypeError(f"no masked twin of the cell {kind.__name__}")
    return _conv_lstm_twin(kind), 4


def _channel_problem(name: str, sites) -> str | None:
    """Why the units of these ``(prefix, cell)`` sites cannot be masked."""
    for _, cell in sites:
        if not zero_at_zero(cell.activation):
            act = getattr(cell.activation, "__name__", cell.activation)
            return (f"layer {name!r}: channel_mask needs activation(0) == 0 "
                    f"(tanh, relu): a masked unit would output "
                    f"activation(0) != 0. Received: activation={act!r}")
    if len({cell_units(c) for _, c in sites}) != 1:
        return (f"layer {name!r}: channel_mask needs forward and backward "
                "layers with the same units")
    return None


class MaskedRecurrent(MaskedLayer):
    """Mix-in of the masked recurrent layers (see the module docstring).

    Masks are keyed ``prefix + weight name`` (``"kernel"``;
    ``"forward/kernel"`` in a Bidirectional); ``weight_masks()`` pairs the
    cell's variables with them, ``effective_cell_weights()`` gives the
    weights a plain layer needs to compute the same outputs.

    Example:
        >>> isinstance(MaskedGRU(4), MaskedRecurrent)
        True
    """

    _kernel_attr = "kernel"

    def _sites(self) -> list:
        """``[(prefix, cell)]``: the cells this layer masks."""
        return [("", self.cell)]

    def _init_masks(self, weight_mask, channel_mask):
        super()._init_masks(weight_mask, channel_mask)
        gates = {}
        for prefix, cell in self._sites():
            masked, g = _masked_cell(cell)
            # the parent built a plain Keras cell; give it the masked
            # properties (same state, no new variables or config)
            cell.__class__ = masked
            for name in _CELL_WEIGHTS:  # built already (from a config)
                if name in vars(cell):
                    object.__setattr__(cell, "_raw_" + name,
                                       vars(cell).pop(name))
            object.__setattr__(cell, "_mask_fn",
                               functools.partial(self._cell_multiplier,
                                                 prefix))
            gates[prefix] = g
        self._gates = gates
        if channel_mask:
            problem = _channel_problem(self.name, self._sites())
            if problem is not None:
                raise ValueError(f"{type(self).__name__} {problem}. Use "
                                 "weight_mask only, or keep the layer plain.")

    def _cell_multiplier(self, prefix: str, name: str):
        return self._multiplier(prefix + name)

    # -- variables -------------------------------------------------------
    def _build_masks(self, channels: int = 0):
        sites = self._sites()
        if self.weight_mask:
            for prefix, cell in sites:
                for name in _KERNELS:
                    var = _raw(cell, name)
                    self.kernel_masks[prefix + name] = self.add_weight(
                        name=f"{prefix.replace('/', '_')}{name}_mask",
                        shape=tuple(var.shape), initializer="ones",
                        trainable=False, dtype="float32")
            self.kernel_mask = self.kernel_masks[sites[0][0] + "kernel"]
            self.pruning_step = self.add_weight(
                name="pruning_step", shape=(), initializer="zeros",
                trainable=False, dtype="int64")
        if self.channel_mask:
            self.channel_mask_var = self.add_weight(
                name="channel_mask", shape=(cell_units(sites[0][1]),),
                initializer="ones", trainable=False, dtype="float32")
            self.mask_active = self.add_weight(
                name="mask_active", shape=(), initializer="ones",
                trainable=False, dtype="float32")
        for prefix, cell in sites:
            for name in _CELL_WEIGHTS:
                var = _raw(cell, name)
                if var is not None and (self.channel_mask or (
                        self.weight_mask and name in _KERNELS)):
                    var.constraint = _Projection(self, var.constraint,
                                                 prefix + name)

    def _raw_kernel(self):
        return _raw(self._sites()[0][1], "kernel")

    def _kernel_attrs(self) -> tuple:
        return tuple(p + n for p, _ in self._sites() for n in _KERNELS)

    def _site_var(self, key: str):
        prefix, _, name = key.rpartition("/")
        cell = dict(self._sites())[prefix + "/" if prefix else ""]
        return _raw(cell, name)

    def weight_masks(self) -> list:
        """``[(cell variable, its mask)]``: kernel and recurrent_kernel of
        each direction (empty without ``weight_mask``).

        Example: ``[m.name for _, m in lstm.weight_masks()]``
        """
        return [(self._site_var(k), m) for k, m in self.kernel_masks.items()]

    # -- multipliers -----------------------------------------------------
    def _multiplier(self, which: str):
        mult = None
        if which in self.kernel_masks:
            mult = ops.convert_to_tensor(self.kernel_masks[which])
        if self.mask_active is not None:
            prefix = which.rpartition("/")[0]
            gate = ops.tile(self.channel_gate(),
                            [self._gates[prefix + "/" if prefix else ""]])
            mult = gate if mult is None else mult * gate
        return mult

    def effective_kernel(self, attr: str | None = None):
        """The weight the forward pass uses (``variable * masks``);
        ``attr``: ``"kernel"`` (default), ``"recurrent_kernel"``, ``"bias"``
        (``"backward/kernel"`` ... in a Bidirectional)."""
        attr = attr or self._sites()[0][0] + "kernel"
        var = self._site_var(attr)
        mult = self._multiplier(attr)
        if var is None or mult is None:
            return var
        return var * ops.cast(mult, var.dtype)

    def masked_bias(self):
        """The (first direction's) bias the forward pass uses."""
        return self.effective_kernel(self._sites()[0][0] + "bias")

    def effective_cell_weights(self) -> list:
        """``[{weight name: array}]`` per direction: the plain layer's
        weights giving the same outputs (masks folded in).

        Example: ``lstm.effective_cell_weights()[0]["kernel"]``
        """
        out = []
        for prefix, cell in self._sites():
            out.append({name: ops.convert_to_numpy(
                self.effective_kernel(prefix + name))
                for name in _CELL_WEIGHTS if _raw(cell, name) is not None})
        return out


class _MaskedRNN(MaskedRecurrent):
    """LSTM / GRU / SimpleRNN / ConvLSTM: masks built after the cell."""

    def build(self, sequences_shape, initial_state_shape=None):
        super().build(sequences_shape, initial_state_shape)
        self._build_masks()

    def call(self, sequences, initial_state=None, mask=None, training=False):
        with _masked_once(self._sites()):
            return super().call(sequences, initial_state=initial_state,
                                mask=mask, training=training)


def _register(cls):
    return keras.saving.register_keras_serializable(package="tfcomp")(cls)


@_register
class MaskedLSTM(_MaskedRNN, _L.LSTM):
    """``keras.layers.LSTM`` with pruning masks (kernel and recurrent kernel
    masks; a per-unit channel mask over the 4 gate blocks).

    Example:
        >>> lstm = MaskedLSTM(16, return_sequences=True, channel_mask=True)
    """


@_register
class MaskedGRU(_MaskedRNN, _L.GRU):
    """``keras.layers.GRU`` with pruning masks (``reset_after`` biases of
    shape (2, 3 * units) are gated per unit too).

    Example:
        >>> gru = MaskedGRU(16, weight_mask=True)
    """


@_register
class MaskedSimpleRNN(_MaskedRNN, _L.SimpleRNN):
    """``keras.layers.SimpleRNN`` with pruning masks.

    Example:
        >>> rnn = MaskedSimpleRNN(16, channel_mask=True)
    """


@_register
class MaskedConvLSTM1D(_MaskedRNN, _L.ConvLSTM1D):
    """``keras.layers.ConvLSTM1D`` with pruning masks (see
    :class:`MaskedConvLSTM2D`).

    Example:
        >>> conv_lstm = MaskedConvLSTM1D(8, 3, weight_mask=True)
    """


@_register
class MaskedConvLSTM2D(_MaskedRNN, _L.ConvLSTM2D):
    """``keras.layers.ConvLSTM2D`` with pruning masks: element-wise masks on
    the kernel ``(*k, din, 4 * filters)`` and the recurrent kernel ``(*k,
    filters, 4 * filters)``; a per-filter channel mask over the 4 gate
    blocks of their last axis and of the bias.

    Example:
        >>> conv_lstm = MaskedConvLSTM2D(8, 3, padding="same",
        ...                              channel_mask=True)
        >>> y = conv_lstm(np.zeros((2, 5, 8, 8, 1), "float32"))
        >>> conv_lstm.channel_mask_var.shape
        (8,)
    """


@_register
class MaskedConvLSTM3D(_MaskedRNN, _L.ConvLSTM3D):
    """``keras.layers.ConvLSTM3D`` with pruning masks (see
    :class:`MaskedConvLSTM2D`).

    Example:
        >>> conv_lstm = MaskedConvLSTM3D(8, 3, channel_mask=True)
    """


def _inner_problem(layer) -> str | None:
    if (plain_class_of(layer) or type(layer)) in _RNN_TYPES:
        return None
    return (f"Bidirectional of {type(layer).__name__}: only LSTM, GRU and "
            "SimpleRNN (and ConvLSTM1D/2D/3D) have masked twins")


def _plain_inner(layer):
    """An inner layer as its plain Keras class (masks belong to the
    Bidirectional)."""
    if not isinstance(layer, MaskedRecurrent):
        return layer
    if layer.weight_mask or layer.channel_mask:
        raise ValueError(
            f"MaskedBidirectional: inner layer {layer.name!r} carries its "
            "own masks; pass a plain LSTM / GRU / SimpleRNN / ConvLSTM and "
            "put the masks on the Bidirectional, e.g. MaskedBidirectional("
            "LSTM(8), weight_mask=True)")
    cfg = layer.get_config()
    cfg.pop("weight_mask", None)
    cfg.pop("channel_mask", None)
    return plain_class_of(layer).from_config(cfg)


@_register
class MaskedBidirectional(MaskedRecurrent, _L.Bidirectional):
    """``keras.layers.Bidirectional`` of LSTM / GRU / SimpleRNN / ConvLSTM
    with pruning masks: kernel masks per direction (``forward_kernel_mask``, ...) and
    one per-unit ``channel_mask`` shared by both directions.

    Example:
        >>> bi = MaskedBidirectional(keras.layers.LSTM(8), channel_mask=True)
    """

    def __init__(self, layer, *args, backward_layer=None, **kwargs):
        for sub in (layer, backward_layer):
            problem = None if sub is None else _inner_problem(sub)
            if problem is not None:
                raise TypeError(f"MaskedBidirectional: {problem}.")
        if backward_layer is not None:
            backward_layer = _plain_inner(backward_layer)
        super().__init__(_plain_inner(layer), *args,
                         backward_layer=backward_layer, **kwargs)

    @classmethod
    def unsupported(cls, layer) -> str | None:
        """Why a ``Bidirectional`` cannot get this twin (None if it can).

        Example: ``MaskedBidirectional.unsupported(bidirectional_layer)``
        """
        for sub in (layer.forward_layer, layer.backward_layer):
            problem = _inner_problem(sub)
            if problem is not None:
                return problem
        return None

    def _sites(self) -> list:
        return [("forward/", self.forward_layer.cell),
                ("backward/", self.backward_layer.cell)]

    def build(self, sequences_shape, initial_state_shape=None):
        super().build(sequences_shape, initial_state_shape)
        self._build_masks()

    def call(self, sequences, initial_state=None, mask=None, training=None):
        with _masked_once(self._sites()):
            return super().call(sequences, initial_state=initial_state,
                                mask=mask, training=training)


def channel_mask_problem(layer) -> str | None:
    """Why a recurrent layer (plain or masked) cannot carry a per-unit
    channel mask (``activation(0) != 0``, ...), else None (also for
    layers that are not recurrent).

    Example:
        >>> channel_mask_problem(keras.layers.LSTM(4, activation="sigmoid"))
    """
    if isinstance(layer, MaskedRecurrent):
        sites = layer._sites()
    elif type(layer) in _RNN_TYPES:
        sites = [("", layer.cell)]
    elif type(layer) is _L.Bidirectional and \
            MaskedBidirectional.unsupported(layer) is None:
        sites = [("forward/", layer.forward_layer.cell),
                 ("backward/", layer.backward_layer.cell)]
    else:
        return None
    return _channel_problem(layer.name, sites)


MASKED_CLASSES.update({_L.LSTM: MaskedLSTM, _L.GRU: MaskedGRU,
                       _L.SimpleRNN: MaskedSimpleRNN,
                       _L.ConvLSTM1D: MaskedConvLSTM1D,
                       _L.ConvLSTM2D: MaskedConvLSTM2D,
                       _L.ConvLSTM3D: MaskedConvLSTM3D,
                       _L.Bidirectional: MaskedBidirectional})
