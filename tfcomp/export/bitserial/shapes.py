"""Shape rules of the IR's window, pad, upsample, crop, concat and mul ops
(no IR objects).

Example:
    >>> conv_output_size(7, 3, 2, *same_padding(7, 3, 2))
    4
"""

from __future__ import annotations

import numbers

__all__ = ["MOVE_SHAPES", "concat_shape", "conv_output_size", "crop_shape",
           "mul_shape", "pad_shape", "same_padding", "upsample_shape"]


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF ``padding="same"``: (before, after) for one spatial axis.

    Args:
        size: input length.
        kernel: window length.
        stride: step.

    Returns:
        ``(before, after)`` padding.

    Example:
        >>> same_padding(7, 3, 2)
        (1, 1)
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def conv_output_size(size: int, kernel: int, stride: int, before: int,
                     after: int) -> int:
    """Output length of a window op with explicit padding.

    Args:
        size: input length.
        kernel: window length.
        stride: step.
        before, after: padding.

    Returns:
        The output length.

    Example:
        >>> conv_output_size(7, 3, 2, 1, 1)
        4
    """
    return (size + before + after - kernel) // stride + 1


def pad_shape(shape, attrs: dict, name: str = "pad") -> tuple:
    """Output shape of a ``pad`` op (validates its attrs).

    Args:
        shape: input shape without batch.
        attrs: ``{"pads": [[before, after], ...], "interior": [...]}``.
        name: the op's name, for errors.

    Example:
        >>> pad_shape((3, 4), {"pads": [[1, 1], [0, 0]], "interior": [1, 0]})
        (7, 4)
    """
    pads = [tuple(int(v) for v in p) for p in attrs.get("pads", ())]
    interior = [int(v) for v in attrs.get("interior", [0] * len(shape))]
    if len(pads) != len(shape) or len(interior) != len(shape) or any(
            len(p) != 2 or min(p) < 0 for p in pads) or min(
            interior, default=0) < 0:
        raise ValueError(f"layer {name!r}: pad needs [before, after] >= 0 "
                         f"and an interior >= 0 per axis of {tuple(shape)}."
                         f" Received: pads={attrs.get('pads')}, "
                         f"interior={attrs.get('interior')}")
    return tuple(int(d + (d - 1) * i + a + b) for d, i, (a, b) in
                 zip(shape, interior, pads))


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def upsample_shape(shape, attrs: dict, name: str = "upsample") -> tuple:
    """Output shape of an ``upsample`` op (validates its attrs): each value
    repeated ``attrs["factors"][a]`` (an int >= 1) times along non-batch
    axis ``a`` (nearest-neighbour upsampling).

    Example:
        >>> upsample_shape((3, 4, 2), {"factors": [2, 3, 1]})
        (6, 12, 2)
    """
    f = attrs.get("factors")
    if not isinstance(f, (list, tuple)) or len(f) != len(shape) or not all(
            _is_int(v) and v >= 1 for v in f):
        raise ValueError(f"layer {name!r}: upsample needs an int factor >= 1"
                         f" per axis of {tuple(shape)}. Received: "
                         f"factors={f!r}")
    return tuple(int(d) * int(v) for d, v in zip(shape, f))


def crop_shape(shape, attrs: dict, name: str = "crop") -> tuple:
    """Output shape of a ``crop`` op (validates its attrs): ``attrs["crops"]
    [a] = [before, after]`` (ints >= 0) values dropped at the ends of
    non-batch axis ``a``, at least one value left.

    Example:
        >>> crop_shape((8, 6, 2), {"crops": [[1, 2], [0, 3], [0, 0]]})
        (5, 3, 2)
    """
    c = attrs.get("crops")
    ok = isinstance(c, (list, tuple)) and len(c) == len(shape) and all(
        isinstance(p, (list, tuple)) and len(p) == 2 and all(
            _is_int(v) and v >= 0 for v in p) for p in c)
    out = tuple(int(d) - int(p[0]) - int(p[1]) for d, p in zip(shape, c)) \
        if ok else ()
    if not ok or min(out, default=1) < 1:
        raise ValueError(f"layer {name!r}: crop needs [before, after] ints "
                         f">= 0 per axis of {tuple(shape)}, leaving >= 1 "
                         f"value per axis. Received: crops={c!r}")
    return out


def concat_shape(shapes, name: str = "concat") -> tuple:
    """Output shape of a ``concat`` op: N >= 2 ``shapes`` (without batch)
    equal but for the last axis, whose sizes add up.

    Example:
        >>> concat_shape([(4, 4, 8), (4, 4, 3)])
        (4, 4, 11)
    """
    shapes = [tuple(int(d) for d in s) for s in shapes]
    if len(shapes) < 2:
        raise ValueError(f"layer {name!r} (concat) takes 2 or more inputs. "
                         f"Received: {len(shapes)}")
    if any(len(s) < 1 or s[:-1] != shapes[0][:-1] for s in shapes):
        raise ValueError(f"layer {name!r}: concat inputs must have one "
                         "shape except the last (channel) axis. Received: "
                         f"{shapes}")
    return shapes[0][:-1] + (sum(s[-1] for s in shapes),)


def mul_shape(shapes, name: str = "mul", what: str = "mul") -> tuple:
    """Output shape of a ``mul`` op of two ``shapes`` (without batch): one
    shape, or the squeeze-excite broadcast: ``x`` of shape ``(..., C)``
    times a gate ``(C,)``, ``(1, C)``, ``(1, 1, C)``... of at most ``x``'s
    rank, every axis but the last 1 (a lower rank gets leading 1s, as
    Keras' ``Multiply`` expands axis 1); either input may be the gate.

    Example:
        >>> mul_shape([(4, 4, 8), (1, 1, 8)])
        (4, 4, 8)
    """
    shapes = [tuple(int(d) for d in s) for s in shapes]
    if len(shapes) != 2:
        raise ValueError(f"layer {name!r} ({what}) takes 2 inputs. "
                         f"Received: {len(shapes)}")
    a, b = shapes
    if a == b:
        return a
    big, small = (a, b) if (len(a), _size(a)) >= (len(b), _size(b)) \
        else (b, a)
    if not small or len(small) > len(big) or small[-1] != big[-1] or any(
            d != 1 for d in small[:-1]):
        raise ValueError(
            f"layer {name!r} ({what}): the inputs must have one shape, or "
            "one must be a per-channel gate ((C,), (1, C), (1, 1, C)) of "
            f"the other's last axis (squeeze-excite). Received shapes {a} "
            f"and {b} (without batch)")
    return big


def _size(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


#: The data-movement ops that keep their input's grid -> their shape rule.
MOVE_SHAPES = {"pad": pad_shape, "upsample": upsample_shape,
               "crop": crop_shape}
