"""Channel handler of recurrent layers: ``LSTM``, ``GRU``, ``SimpleRNN``
(also as ``keras.layers.RNN`` of their cells), ``ConvLSTM1D/2D/3D`` and
``Bidirectional`` of them.

A recurrent layer reads its input's channels through the rows of its
``kernel`` (``(din, G * units)``, G = 4 gates for LSTM, 3 for GRU, 1 for
SimpleRNN): a consumer, like Dense. Its hidden units are its output
channels: unit ``j`` is column ``j`` of every gate block of ``kernel``,
``recurrent_kernel`` and ``bias`` and row ``j`` of ``recurrent_kernel``.
A ``ConvLSTM`` is the same with convolution kernels ``(*k, din, 4 * filters)``
and ``(*k, filters, 4 * filters)``: its filters are its units (axes -2 /
-1 of both kernels).
Removing a unit equals zeroing those weights (its gates' pre-activations
are 0, so with ``activation(0) == 0`` (tanh, relu) its cell / hidden state
stays 0 from the zero initial state), so units are pruned like a Dense
layer's, the structured LSTM pruning of Wen et al. A ``Bidirectional``
layer prunes the same units in both directions (its two sub-layers share
the weight names); its ``concat`` output holds each unit twice.

Units stay whole (outputs are new, locked channels; the input is still a
consumer) when the layer is stateful, is given initial states, returns a
``Bidirectional`` state, or its activation is not 0 at 0.

Reference: Wen et al., Learning Intrinsic Sparse Structures within Long
Short-Term Memory, ICLR 2018 (removing LSTM hidden units with every weight
that touches them).

Example:
    >>> graph = tfcomp.DependencyGraph(model)     # ... -> LSTM(16) -> Dense
    >>> graph.group("lstm").size
    16
"""

from __future__ import annotations

import keras
import numpy as np

from tfcomp.graph.context import CONSUMER, PRODUCER, ChannelHandler

__all__ = ["RecurrentHandler", "cell_units", "recurrent_cells",
           "zero_at_zero"]

_CELL_WEIGHTS = ("kernel", "recurrent_kernel", "bias")


def _is_conv_cell(cell) -> bool:
    # keras.layers exports no ConvLSTMCell: matched by class name
    return any(k.__name__ == "ConvLSTMCell" for k in type(cell).__mro__)


def recurrent_cells(layer) -> list:
    """The LSTM / GRU / SimpleRNN / ConvLSTM cells of a recurrent layer (two
    for a ``Bidirectional``), or ``[]`` for another cell type.

    Example:
        >>> [type(c).__name__ for c in recurrent_cells(L.LSTM(4))]
        ['LSTMCell']
    """
    L = keras.layers
    known = (L.LSTMCell, L.GRUCell, L.SimpleRNNCell)
    if isinstance(layer, L.Bidirectional):
        subs = [layer.forward_layer, layer.backward_layer]
    else:
        subs = [layer]
    cells = [getattr(s, "cell", None) for s in subs]
    return cells if all(isinstance(c, known) or _is_conv_cell(c)
                        for c in cells) else []


def cell_units(cell) -> int:
    """Hidden units of a recurrent cell (a ConvLSTM cell's ``filters``).

    Example:
        >>> cell_units(recurrent_cells(L.ConvLSTM2D(8, 3))[0])
        8
    """
    return int(cell.filters if _is_conv_cell(cell) else cell.units)


def zero_at_zero(activation) -> bool:
    """Whether ``activation(0) == 0`` (tanh, relu: a unit whose gates see
    0 outputs 0, so removing it equals zeroing its weights).

    Example:
        >>> zero_at_zero(keras.activations.tanh)
        True
    """
    try:
        value = keras.ops.convert_to_numpy(
            activation(keras.ops.zeros((1,), "float32")))
    except Exception:  # noqa: BLE001 - an activation we cannot evaluate
        return False
    return bool(np.all(value == 0))


def _units_fixed(ctx, cells) -> str | None:
    """Why the hidden units cannot be pruned here, or None."""
    layer = ctx.layer
    subs = ([layer.forward_layer, layer.backward_layer]
            if isinstance(layer, keras.layers.Bidirectional) else [layer])
    if any(getattr(s, "stateful", False) for s in subs):
        return "stateful recurrent layer"
    if ctx.num_inputs > 1:
        return "initial states given as inputs"
    if len({cell_units(c) for c in cells}) != 1:
        return "forward and backward layers of different sizes"
    if isinstance(layer, keras.layers.Bidirectional) and (
            getattr(layer, "return_state", False) or ctx.num_outputs > (
                2 if layer.merge_mode is None else 1)):
        return "Bidirectional returning states"
    if not all(zero_at_zero(c.activation) for c in cells):
        return "activation(0) != 0: a removed unit would not output 0"
    return None


class RecurrentHandler(ChannelHandler):
    """LSTM / GRU / SimpleRNN / ConvLSTM / Bidirectional: input channels are kernel
    rows (a consumer); hidden units are pruned with every gate's column
    (ports ``out`` = units, ``gates`` = G * units columns)."""

    def connect(self, ctx):
        layer = ctx.layer
        cells = recurrent_cells(layer)
        if not cells:
            return ctx.barrier(f"{type(layer).__name__} of an unknown cell")
        if any(getattr(c, "data_format", None) == "channels_first"
               for c in cells):
            return ctx.barrier("channels_first data format")
        pin = ctx.port("in", ctx.in_channels(), CONSUMER, [("kernel", -2)],
                       macs=True)
        ctx.link_input(0, pin)
        reason = _units_fixed(ctx, cells)
        if reason is not None:
            for j in range(ctx.num_outputs):
                ctx.source(j, f"produced by {ctx.path}: {reason}")
            return None
        units = cell_units(cells[0])
        gates = int(cells[0].kernel.shape[-1]) // units
        # LSTM / GRU / SimpleRNN keep "units" in their config, ConvLSTM
        # "filters"; RNN(cell) and Bidirectional in nested ones
        # (update_config)
        L = keras.layers
        key = ("units" if isinstance(layer, (L.LSTM, L.GRU, L.SimpleRNN))
               else "filters" if isinstance(
                   layer, (L.ConvLSTM1D, L.ConvLSTM2D, L.ConvLSTM3D))
               else None)
        pout = ctx.port("out", units, PRODUCER, [("recurrent_kernel", -2)],
                        config_key=key, macs=True)
        pgates = ctx.port("gates", gates * units, PRODUCER,
                          [("kernel", -1), ("recurrent_kernel", -1),
                           ("bias", -1)], shared=True)
        ctx.tie(pgates, pout, np.arange(gates * units) % units)
        for j in range(ctx.num_outputs):
            size = ctx.out_channels(j)
            ctx.link_output(j, pout, np.arange(size) % units)
        return None

    def update_config(self, config, keep):
        # a Bidirectional's layers, an RNN's cell (an RNN of a Bidirectional)
        subs = [config.get(k) for k in ("layer", "backward_layer", "cell")]
        subs += [s["config"].get("cell") for s in subs[:2]
                 if isinstance(s, dict) and "config" in s]
        for sub in subs:
            if isinstance(sub, dict) and "config" in sub:
                sub.pop("build_config", None)  # built for the old input
                for key in ("units", "filters"):
                    if keep.has_port("out") and key in sub["config"]:
                        sub["config"][key] = int(keep.port("out").sum())
        return super().update_config(config, keep)

    def macs_scale(self, fractions, layer):
        cells = recurrent_cells(layer)
        if not cells:
            return None
        din = int(cells[0].kernel.shape[-2])
        units = cell_units(cells[0])
        f_in, f_out = fractions.get("in", 1.0), fractions.get("out", 1.0)
        return (din * f_in + units * f_out) * f_out / (din + units)
