"""Pending float values and the data-movement layers of the bit-serial
importer (``keras_import``).

A :class:`Pending` is a Keras tensor not yet on an integer grid (a GEMM's
output, a merge, a table...): it lands on the grid of whatever quantizes
it next. The layers that only move values, ``ZeroPadding1D/2D`` (zero
points, real 0), ``UpSampling1D/2D`` with interpolation="nearest" (each
value repeated ``size`` times per axis) and ``Cropping1D/2D`` (values
dropped at the ends), commute with quantization and ReLU: they stay
pending over their input (:func:`move_of`) and become ``pad`` /
``upsample`` / ``crop`` ops on the grid their input lands on
(:func:`emit_move`), same scale and zero point in and out, so the
integer result is the QAT model's codes moved (a ZeroPadding read by a
conv folds into its padding instead). Channels-first layers and bilinear
upsampling (a weighted blend of neighbours, not a copy) are refused,
naming the layer.

Example:
    >>> move_of(keras.layers.UpSampling2D((2, 3)))
    ('upsample', [2, 3, 1])
    >>> move_of(keras.layers.Cropping1D((1, 2)))
    ('crop', [[1, 2], [0, 0]])
"""

from __future__ import annotations

import dataclasses

import keras

from tfcomp.export.bitserial.keras_layers import (
    unsupported_layer_error,
    zero_pads,
)

__all__ = ["MOVES", "Pending", "emit_move", "move_of", "moved_source"]

L = keras.layers
#: Pending kinds that only move values (they keep their input's grid).
MOVES = ("pad", "upsample", "crop")


@dataclasses.dataclass
class Pending:
    """A float value not yet on an integer grid."""

    # "gemm", "add", "concat", "mul", "avg", "input", "lut", or a move:
    # "pad", "upsample", "crop"
    kind: str
    layer: object = None
    x: str | None = None  # IR input (gemm)
    inputs: tuple = ()  # IR inputs (add, concat, mul)
    relu: str = "linear"  # "linear" | "relu" | "relu6"
    keras_tensor: object = None  # a move: the Keras tensor it moves
    # gemm: folded zero padding; pad / crop: [before, after] per axis;
    # upsample: the factor per axis
    pads: tuple = (0, 0, 0, 0)
    out_shape: tuple = ()  # the Keras output shape (no batch)
    rescale: tuple | None = None  # input: folded Rescaling / Normalization
    index: int = 0  # input: which model input


def _channels_last(layer) -> None:
    fmt = layer.get_config().get("data_format") or "channels_last"
    if fmt != "channels_last":
        raise unsupported_layer_error(
            layer, f"with data_format={fmt!r} (the IR is channels-last; "
            "use data_format='channels_last')")


def move_of(layer):
    """``(kind, attrs)`` of a data-movement layer, else None: ``("pad",
    [[before, after], ...])`` for ZeroPadding1D/2D, ``("upsample",
    [factor, ...])`` for UpSampling1D/2D (nearest), ``("crop", [[before,
    after], ...])`` for Cropping1D/2D, one entry per non-batch axis
    (channels last, never moved).

    Raises:
        ValueError: bilinear (or any but nearest) UpSampling2D, or a
            channels-first layer, naming the layer and the reason.

    Example:
        >>> move_of(keras.layers.Cropping2D(((1, 0), (2, 3))))
        ('crop', [[1, 0], [2, 3], [0, 0]])
    """
    cls = type(layer)
    if cls in (L.ZeroPadding1D, L.ZeroPadding2D):
        return "pad", zero_pads(layer)
    if cls not in (L.UpSampling1D, L.UpSampling2D, L.Cropping1D,
                   L.Cropping2D):
        return None
    cfg = layer.get_config()
    if cls is L.UpSampling1D:
        return "upsample", [int(cfg["size"]), 1]
    if cls is L.Cropping1D:
        a, b = cfg["cropping"]
        return "crop", [[int(a), int(b)], [0, 0]]
    _channels_last(layer)
    if cls is L.Cropping2D:
        (t, b), (left, right) = cfg["cropping"]
        return "crop", [[int(t), int(b)], [int(left), int(right)], [0, 0]]
    interp = cfg.get("interpolation", "nearest")
    if interp != "nearest":
        raise unsupported_layer_error(
            layer, f"with interpolation={interp!r} (a weighted blend of "
            "neighbouring values, not a copy: only interpolation='nearest' "
            "is an exact integer upsample)")
    h, w = cfg["size"]
    return "upsample", [int(h), int(w), 1]


def emit_move(imp, st: Pending, src: str) -> str:
    """The IR op of pending move ``st`` over IR tensor ``src`` (its input
    on the grid it landed on; viewed as the Keras input's shape first when
    the IR holds it in another layout) for importer ``imp``; its name.

    Example:
        >>> emit_move(importer, importer.state[id(up)], "c1_aq")
        'up'
    """
    layer, b = st.layer, imp.builder
    shape = tuple(int(d) for d in st.keras_tensor.shape[1:])
    src = imp.view(src, shape, f"{layer.name}_in")
    name = imp.name(layer.name)
    if st.kind == "pad":
        return b.pad(name, src, st.pads)
    if st.kind == "upsample":
        return b.upsample(name, src, st.pads)
    return b.crop(name, src, st.pads)


def moved_source(state: dict, tensor):
    """The importer state (an IR name or a :class:`Pending`) of what the
    moves ending at Keras ``tensor`` move (``state``: id -> state); the
    tensor's own state when it is no move.

    Example:
        >>> moved_source(importer.state, cropped)  # crop of an integer
        'c_aq'
    """
    st = state[id(tensor)]
    while isinstance(st, Pending) and st.kind in MOVES:
        st = state[id(st.keras_tensor)]
    return st
