"""Shape rules of the IR's window, pad and concat ops (no IR objects).

Example:
    >>> conv_output_size(7, 3, 2, *same_padding(7, 3, 2))
    4
"""

from __future__ import annotations

__all__ = ["concat_shape", "conv_output_size", "pad_shape", "same_padding"]


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
