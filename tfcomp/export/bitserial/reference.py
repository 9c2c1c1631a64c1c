"""Pure-numpy integer reference executor of an :class:`IntegerIR`.

GEMMs are ordinary integer matrix products (computed in float64, which is
exact because :meth:`IntegerIR.validate` bounds every accumulator by
2**31 - 1 < 2**53), followed by fixed-point requantization.

Example:
    >>> ir = random_ir(seed=0)
    >>> x = np.random.default_rng(0).uniform(-1, 1, (2,) + ir.input_shape)
    >>> integer_reference(ir, x).shape
    (2, 10)
"""

from __future__ import annotations

import numpy as np

from tfcomp.export.bitserial import kernels
from tfcomp.export.bitserial.ir import (
    IntegerIR,
    IntOp,
    QuantParams,
    groups_of,
)

__all__ = ["gemm_accumulator", "integer_reference", "prepare_input",
           "prepare_inputs"]


def prepare_input(x, quant: QuantParams, shape, name: str = "x",
                  rescale=None) -> np.ndarray:
    """Float input -> quantized int64; integer input -> range-checked.

    Args:
        x: ``(B,) + shape`` array; floats are quantized with ``quant``.
        quant: the input tensor's quantization.
        shape: input shape without batch.
        name: the argument's name, for error messages.
        rescale: ``(scale, offset)`` applied to float inputs in float32
            before quantizing (a folded Keras ``Rescaling``); integer
            inputs are codes already and are not rescaled.

    Returns:
        int64 array.

    Raises:
        ValueError: wrong shape, NaN / infinite floats, integers outside
            the input's range.
        TypeError: neither floats nor integers.

    Example:
        >>> prepare_input(np.array([[0.5]]), QuantParams(4, False, 0.1), (1,))
        array([[5]])
    """
    x = np.asarray(x)
    if x.ndim == 0 or x.shape[1:] != tuple(shape):
        raise ValueError(f"{name} must have shape (batch,) + {tuple(shape)}."
                         f" Received: {name}.shape={x.shape}")
    if np.issubdtype(x.dtype, np.floating):
        bad = ~np.isfinite(x)
        if bad.any():
            raise ValueError(
                f"{name} holds {int(bad.sum())} NaN or infinite value(s) "
                f"(first at index {tuple(int(i) for i in np.argwhere(bad)[0])}"
                "); the accelerator's inputs must be finite.")
        if rescale is not None:  # float32, as keras.layers.Rescaling
            scale, offset = (np.asarray(v, np.float32) for v in rescale)
            x = x.astype(np.float32) * scale + offset
        return quant.quantize(x)
    if not np.issubdtype(x.dtype, np.integer):
        raise TypeError(f"{name} must be a float or integer array. Received:"
                        f" dtype={x.dtype}")
    if x.size and (x.min() < quant.qmin or x.max() > quant.qmax):
        raise ValueError(f"integer {name} must lie in [{quant.qmin}, "
                         f"{quant.qmax}]. Received: [{x.min()}, {x.max()}]")
    return x.astype(np.int64)


def prepare_inputs(x, inputs, name: str = "x") -> dict:
    """Every input of a network, prepared (:func:`prepare_input`), by name.

    Args:
        x: one array for a network of one input; for several, a list or
            tuple of arrays in ``inputs`` order, or a dict by input name
            (also accepted for one input).
        inputs: the network's inputs (objects with ``name``, ``shape``,
            ``quant`` and ``rescale``: :class:`IRInput`).
        name: the argument's name, for error messages.

    Returns:
        ``{input name: int64 array}``, one number of samples.

    Raises:
        ValueError: not one array per input, wrong shapes, ranges or
            numbers of samples.

    Example:
        >>> xq = prepare_inputs({"image": img, "meta": meta}, ir.inputs)
    """
    names = [i.name for i in inputs]
    if len(inputs) == 1 and not isinstance(x, dict):
        arrays, labels = [x], [name]
    elif isinstance(x, dict):
        if sorted(x) != sorted(names):
            raise ValueError(f"{name} must hold exactly the inputs {names} "
                             f"by name. Received keys: {sorted(x)}")
        arrays, labels = [x[n] for n in names], [f"{name}[{n!r}]"
                                                 for n in names]
    elif isinstance(x, (list, tuple)) and len(x) == len(inputs):
        arrays, labels = list(x), [f"{name}[{i}]" for i in range(len(x))]
    else:
        got = f"a {type(x).__name__} of {len(x)}" if isinstance(
            x, (list, tuple)) else f"{type(x).__name__} of shape " \
            f"{np.shape(x)}"
        raise ValueError(f"{name} must be a list of {len(inputs)} arrays, "
                         f"one per input {names} in that order, or a dict "
                         f"by input name. Received: {got}")
    out = {i.name: prepare_input(a, i.quant, i.shape, label, i.rescale)
           for i, a, label in zip(inputs, arrays, labels)}
    counts = {n: len(a) for n, a in out.items()}
    if len(set(counts.values())) > 1:
        raise ValueError(f"{name}: every input must hold one number of "
                         f"samples. Received: {counts}")
    return out


def _weight_matrix(op: IntOp) -> np.ndarray:
    """(G, K, Nper) weight view minus the weight zero point."""
    w = np.asarray(op.weights, np.int64)
    if op.op == "depthwise_conv2d":
        kh, kw, c, m = w.shape
        zp = np.asarray(op.w_zero_point, np.int64).reshape(c, m)
        return w.reshape(kh * kw, c, m).transpose(1, 0, 2) - zp[:, None, :]
    k, n, g = int(np.prod(w.shape[:-1])), w.shape[-1], groups_of(op)
    w = w.reshape(k, n) - np.asarray(op.w_zero_point, np.int64)
    return w.reshape(k, g, n // g).transpose(1, 0, 2)


def gemm_accumulator(op: IntOp, x, a_quant: QuantParams) -> np.ndarray:
    """The int32 accumulators of a GEMM op (bias included), channels last.

    Args:
        op: a conv2d / depthwise_conv2d / dense ``IntOp``.
        x: its integer input.
        a_quant: the input's quantization (zero point used for padding).

    Returns:
        int64 accumulators shaped like the op's output.

    Example:
        >>> op = ir.ops[0]
        >>> acc = gemm_accumulator(op, xq, ir.input_quant)
    """
    a = kernels.lhs_matrix(op.op, x, op.attrs.get("kernel"),
                           op.attrs.get("strides"), op.attrs.get("pads"),
                           a_quant.zero_point, groups_of(op))
    a = a.astype(np.float64) - a_quant.zero_point
    acc = np.matmul(a, _weight_matrix(op).astype(np.float64))
    acc = np.rint(acc).astype(np.int64)
    out = kernels.gemm_output(acc, op.op, x.shape, op.attrs.get("kernel"),
                              op.attrs.get("strides"), op.attrs.get("pads"))
    return out + np.asarray(op.bias, np.int64)


def run_op(op: IntOp, ins: list, quants: list) -> np.ndarray:
    """Executes one op on integer inputs."""
    if op.is_gemm:
        acc = gemm_accumulator(op, ins[0], quants[0])
        return kernels.requantize(acc, op.multiplier, op.shift,
                                  op.out.zero_point, op.act_min, op.act_max)
    x = ins[0]
    if op.op == "add":
        a = op.attrs
        return kernels.add_op(ins[0], ins[1], quants[0].zero_point,
                              quants[1].zero_point, a["left_shift"],
                              a["multipliers"], a["shifts"],
                              a["output_multiplier"], a["output_shift"],
                              op.out.zero_point, op.act_min, op.act_max)
    if op.op == "concat":
        a = op.attrs
        return kernels.concat_op(ins, [q.zero_point for q in quants],
                                 a["multipliers"], a["shifts"],
                                 op.out.zero_point, op.act_min, op.act_max)
    if op.op == "mul":
        return kernels.mul_op(ins[0], ins[1], quants[0].zero_point,
                              quants[1].zero_point, op.attrs["multiplier"],
                              op.attrs["shift"], op.out.zero_point,
                              op.act_min, op.act_max)
    if op.op == "requantize":
        return kernels.requantize_op(x, quants[0].zero_point,
                                     op.attrs["multiplier"],
                                     op.attrs["shift"], op.out.zero_point,
                                     op.act_min, op.act_max)
    if op.op in ("max_pool", "avg_pool"):
        return kernels.pool_op(op.op, x, op.attrs["pool"],
                               op.attrs["strides"], op.attrs["pads"],
                               quants[0].zero_point,
                               op.attrs.get("count_requant"),
                               op.out.zero_point, op.act_min, op.act_max)
    if op.op == "global_avg_pool":
        return kernels.global_avg_pool_op(
            x, quants[0].zero_point, op.attrs["count_requant"],
            op.out.zero_point, op.act_min, op.act_max)
    if op.op == "lut":
        return kernels.lut_op(x, op.attrs["table"], quants[0].qmin)
    if op.op == "pad":
        return kernels.pad_op(x, op.attrs["pads"], op.attrs.get("interior"),
                              quants[0].zero_point)
    if op.op == "upsample":
        return kernels.upsample_op(x, op.attrs["factors"])
    if op.op == "crop":
        return kernels.crop_op(x, op.attrs["crops"])
    if op.op == "flatten":
        return x.reshape(x.shape[0], -1)
    if op.op == "reshape":
        return x.reshape((x.shape[0],) + tuple(op.attrs["shape"]))
    return np.clip(x, op.act_min, op.act_max)  # clamp


def integer_reference(ir: IntegerIR, x, return_all: bool = False):
    """Runs the IR with ordinary integer arithmetic.

    Args:
        ir: the integer network.
        x: ``(B,) + ir.input_shape``; floats are quantized with
            ``ir.input_quant``, integers are used as they are. A network of
            several inputs takes a list of arrays (``ir.inputs`` order) or
            a dict by input name (see :func:`prepare_inputs`).
        return_all: also return every intermediate tensor.

    Returns:
        The int64 output tensor, or ``(output, {name: tensor})`` when
        ``return_all``.

    Example:
        >>> y = integer_reference(ir, x)
        >>> ir.quant(ir.output).dequantize(y)   # real values
    """
    if not isinstance(ir, IntegerIR):
        raise TypeError(f"ir must be an IntegerIR. Received: "
                        f"{type(ir).__name__}")
    ir.validate()
    tensors = prepare_inputs(x, ir.inputs)
    for op in ir.ops:
        tensors[op.name] = run_op(op, [tensors[n] for n in op.inputs],
                                  [ir.quant(n) for n in op.inputs])
    out = tensors[ir.output]
    return (out, tensors) if return_all else out
