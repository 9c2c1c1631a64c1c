"""Shape rules of the IR's window, pad, concat and mul ops (no IR objects).

Example:
    >>> conv_output_size(7, 3, 2, *same_padding(7, 3, 2))
    4
"""

from __future__ import annotations

__all__ = ["concat_shape", "conv_output_size", "mul_shape", "pad_shape",
           "same_padding"]


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
