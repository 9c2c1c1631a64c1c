"""T-Net: the convs of a fully convolutional net parametrised by one shared
high-order Tucker tensor, trained end to end; :func:`to_dense` for export.

How it runs (Kossaifi et al., CVPR 2019; no official code, TensorLy-Torch
is the closest library):

1. :func:`tnet` reads the model with the one graph reader
   (:func:`tfcomp.graph.parse_model`) and picks the convs that share the
   tensor: by default the largest set of top-level ``Conv2D`` layers
   (``groups=1``) with one kernel shape ``(kh, kw, Cin, Cout)`` -- the
   middle convs of a fully convolutional net; the stem (image channels)
   and a classifier conv of another shape stay dense. ``layers=`` names
   them explicitly. Strides, padding, dilation, activation and bias stay
   per conv (each keeps its own call); only the kernel is shared.
2. Their kernels are stacked into one ``(L, kh, kw, Cin, Cout)`` tensor --
   a mode for the layer index plus the kernel modes -- and factorised by
   (truncated) HOSVD at ``ranks``. The paper stacks further modes for the
   architecture's structure (hourglasses, blocks); a flat layer mode is the
   general form for any user model.
3. The model is copied with :func:`tfcomp.graph.copy.model_from_config` from
   a rewritten config: one :class:`~tfcomp.layers.tucker.TuckerTensor`
   layer holds the core and factors and outputs the reconstructed tensor;
   each conv becomes a :class:`~tfcomp.layers.tucker.TNetConv2D` that reads
   its slice. Every other layer and weight is copied
   (:func:`tfcomp.graph.copy.copy_weights`), compile state carried
   (:func:`tfcomp._compile.carry_compile`). The result is a plain
   functional model: ``fit`` trains the core and factors end to end,
   ``tf.distribute`` strategies mirror them, ``.keras`` files save and load
   it.

At full rank (``ranks=None``) the T-Net computes the dense net's outputs
to float precision; lower ranks compress (``prod(R) + sum(I * R)``
numbers instead of ``L * kh * kw * Cin * Cout``). Deviation: the paper
trains T-Nets from scratch; :func:`tnet` starts from the given model's
weights (its HOSVD), so a trained model can be compressed and fine-tuned
and an untrained one trained from scratch alike. The paper's Tucker
dropout is not implemented.

Reference: Kossaifi et al., T-Net: Parametrizing Fully Convolutional Nets
with a Single High-Order Tensor, CVPR 2019, arXiv:1904.02698.

Example:
    >>> tn = tfcomp.tensorized.tnet(model, ranks=0.25)
    >>> tn.compile("adam", "sparse_categorical_crossentropy")
    >>> tn.fit(x, y, epochs=2)
    >>> dense = tfcomp.tensorized.to_dense(tn)   # for export_tflite
"""

from __future__ import annotations

import copy as _copy

import keras
import numpy as np

from tfcomp._compile import carry_compile
from tfcomp.graph import parse_model
from tfcomp.graph.copy import (
    clone_model,
    copy_weights,
    functional_view,
    model_from_config,
)
from tfcomp.graph.walk import iter_leaf_layers
from tfcomp.layers.tucker import (
    CONV_MODES,
    TNetConv2D,
    TuckerConv2D,
    TuckerTensor,
    hosvd,
    resolve_ranks,
    tucker_to_tensor,
)

__all__ = ["tnet", "to_dense", "shareable_convs", "TNET_MODES"]

#: Mode names of the shared tensor.
TNET_MODES = ("layers",) + CONV_MODES


def _is_plain_conv(layer) -> bool:
    return type(layer) is keras.layers.Conv2D and layer.groups == 1


def _kernel_shape(layer) -> tuple:
    return tuple(int(s) for s in layer.kernel.shape)


def shareable_convs(model) -> dict:
    """``{kernel shape: [layer names]}`` of the top-level ``Conv2D`` layers
    (``groups=1``) of ``model``, in graph order: the candidates for one
    shared T-Net tensor.

    Example:
        >>> shareable_convs(model)
        {(3, 3, 1, 32): ['stem'], (3, 3, 32, 32): ['c1', 'c2', 'c3']}
    """
    parsed = parse_model(functional_view(model, "tnet / to_dense"))
    out: dict = {}
    for node in parsed.nodes:
        if ("/" in node.path or not _is_plain_conv(node.layer)
                or node.path in sum(out.values(), [])):
            continue
        out.setdefault(_kernel_shape(node.layer), []).append(node.path)
    return out


def _describe(groups: dict) -> str:
    return "; ".join(f"{list(names)} have kernel shape {shape}"
                     for shape, names in groups.items())


def _select(parsed, groups: dict, layers) -> list:
    """The names of the convs that share the tensor (graph order)."""
    if layers is None:
        best = [names for names in groups.values() if len(names) >= 2]
        if not best:
            raise ValueError(
                "tnet needs at least two top-level Conv2D layers (groups=1) "
                "with the same kernel shape to share one Tucker tensor; "
                f"this model has: {_describe(groups) or 'no Conv2D layer'}.")
        return max(best, key=len)
    if isinstance(layers, str) or not isinstance(layers, (list, tuple)):
        raise TypeError("layers must be a list of layer names. Received: "
                        f"layers={layers!r}")
    names = list(dict.fromkeys(layers))
    if len(names) < 1:
        raise ValueError("layers must name at least one Conv2D layer. "
                         f"Received: layers={layers!r}")
    by_shape: dict = {}
    for name in names:
        layer = parsed.layers.get(name)
        if layer is None:
            nested = [p for p in parsed.layers if p.endswith("/" + name)]
            where = (f" (it is inside a nested model as {nested[0]!r}; tnet "
                     "shares top-level convs only)") if nested else ""
            raise ValueError(f"layers: no top-level layer {name!r} in the "
                             f"model{where}.")
        if not _is_plain_conv(layer):
            groups = getattr(layer, "groups", None)
            raise ValueError(
                f"layers: {name!r} is a {type(layer).__name__}"
                f"{f' with groups={groups}' if groups else ''}; T-Net shares "
                "the kernels of keras.layers.Conv2D layers with groups=1 "
                "only.")
        by_shape.setdefault(_kernel_shape(layer), []).append(name)
    if len(by_shape) > 1:
        raise ValueError(
            "These convs cannot share one Tucker tensor, their kernel "
            f"shapes differ: {_describe(by_shape)}. Pass layers of one "
            "shape (call tnet once per shape for several tensors).")
    order = [n.path for n in parsed.nodes]
    return sorted(names, key=order.index)


def _unique(base: str, used: set) -> str:
    name, i = base, 1
    while name in used:
        name = f"{base}_{i}"
        i += 1
    return name


def _entries(ser: dict) -> dict:
    return {e["config"]["name"]: e for e in ser["config"]["layers"]}


def _tensor_ref(name: str, shape, dtype) -> dict:
    return {"class_name": "__keras_tensor__",
            "config": {"shape": list(shape), "dtype": dtype,
                       "keras_history": [name, 0, 0]}}


def _layer_entry(layer, name: str, inbound: list) -> dict:
    entry = keras.saving.serialize_keras_object(layer)
    entry.pop("build_config", None)
    entry["name"] = name
    entry["config"]["name"] = name
    entry["inbound_nodes"] = inbound
    return entry


def tnet(model: keras.Model, ranks=None, layers=None,
         name: str = "tnet_tensor") -> keras.Model:
    """The T-Net form of ``model``: its same-shaped convs share one Tucker
    tensor (see the module docstring).

    Args:
        model: a functional or Sequential model (built; the user's own
            graph, nested models allowed but their convs stay dense).
        ranks: ranks of the ``(layers, kh, kw, Cin, Cout)`` tensor: None
            (full rank: equal outputs), a float in (0, 1] (fraction of the
            stacked kernels' parameter count) or five ints.
        layers: names of the top-level ``Conv2D`` layers to share (one
            kernel shape); default: the largest such set.
        name: the name of the :class:`TuckerTensor` layer.

    Returns:
        A new model (``model`` is untouched), compiled like ``model``.

    Raises:
        ValueError: no two convs share a kernel shape, ``layers`` of
            different shapes (the message lists which layers have which
            shape), grouped / non-Conv2D / nested layers, ranks larger than
            a mode (names the mode, its size and the rank).
        TypeError: subclassed models, a bad ``layers`` / ``ranks`` type.

    Example:
        >>> tn = tnet(model, ranks=(4, 3, 3, 16, 16))
        >>> tn.get_layer("tnet_tensor").param_count
    """
    view = functional_view(model, "tnet / to_dense")
    parsed = parse_model(view)
    groups = shareable_convs(view)
    names = _select(parsed, groups, layers)
    convs = [parsed.layers[n] for n in names]
    stack = np.stack([keras.ops.convert_to_numpy(c.kernel) for c in convs])
    resolved = resolve_ranks(stack.shape, ranks, TNET_MODES)

    ser = _copy.deepcopy(keras.saving.serialize_keras_object(view))
    entries = _entries(ser)
    used = set(entries) | set(parsed.layers)
    tname = _unique(name, used)
    first = min(names, key=lambda n: ser["config"]["layers"].index(
        entries[n]))
    anchor = entries[first]["inbound_nodes"][0]["args"][0]
    dtype_cfg = entries[first]["config"].get("dtype")
    tensor = TuckerTensor(stack.shape, resolved, modes=TNET_MODES,
                          name=tname, dtype=dtype_cfg)
    kref = _tensor_ref(tname, stack.shape, anchor["config"].get(
        "dtype", "float32"))
    for index, conv_name in enumerate(names):
        entry = entries[conv_name]
        cfg = dict(entry["config"])
        for key in ("kernel_initializer", "kernel_regularizer",
                    "kernel_constraint", "groups", "bias_regularizer",
                    "bias_constraint"):
            cfg.pop(key, None)
        slice_conv = TNetConv2D.from_config(dict(cfg, index=index))
        inbound = [dict(node, args=[node["args"][0], kref]
                        + list(node["args"][1:]))
                   for node in entry["inbound_nodes"]]
        entries[conv_name].clear()
        entries[conv_name].update(_layer_entry(slice_conv, conv_name,
                                               inbound))
    pos = ser["config"]["layers"].index(entries[first])
    ser["config"]["layers"].insert(
        pos, _layer_entry(tensor, tname, [{"args": [anchor], "kwargs": {}}]))
    new = model_from_config(ser, view)
    copy_weights(view, new)
    new.get_layer(tname).set_tucker(*hosvd(stack, resolved))
    return carry_compile(model, new, "the T-Net model")


def _tnet_parts(model) -> tuple:
    """``({TuckerTensor name: layer}, {TNetConv2D name: tensor name})``."""
    tensors = {layer.name: layer for layer in model.layers
               if isinstance(layer, TuckerTensor)}
    ser = keras.saving.serialize_keras_object(model)
    slices = {}
    live = {layer.name: layer for layer in model.layers}
    for entry in ser["config"].get("layers", []):
        if not isinstance(live.get(entry["config"]["name"]), TNetConv2D):
            continue
        refs = {n["args"][1]["config"]["keras_history"][0]
                for n in entry["inbound_nodes"]}
        if len(refs) != 1 or not refs <= set(tensors):
            raise ValueError(
                f"to_dense: TNetConv2D {entry['config']['name']!r} reads "
                f"kernels from {sorted(refs)}, not from one TuckerTensor.")
        slices[entry["config"]["name"]] = refs.pop()
    return tensors, slices, ser


def to_dense(model: keras.Model) -> keras.Model:
    """A plain Keras model computing what ``model`` computes: each
    ``TNetConv2D`` (T-Net) and ``TuckerConv2D`` becomes a ``Conv2D`` with
    the reconstructed kernel, ``TuckerTensor`` layers disappear; every other
    layer and weight is copied. Ready for ``tfcomp.export.export_tflite``.

    Args:
        model: a model from :func:`tnet`, or any model with
            ``TuckerConv2D`` layers (nested models included).

    Returns:
        A new model, compiled like ``model`` (optimizer slots of the
        removed factors are dropped).

    Example:
        >>> dense = to_dense(tn)
        >>> tfcomp.export.export_tflite(dense, "tnet.tflite")
    """
    view = functional_view(model, "tnet / to_dense")
    tensors, slices, ser = _tnet_parts(view)
    new = view
    if tensors:
        ser = _copy.deepcopy(ser)
        layers = ser["config"]["layers"]
        ser["config"]["layers"] = [
            e for e in layers if e["config"]["name"] not in tensors]
        entries = _entries(ser)
        for conv_name in slices:
            entry = entries[conv_name]
            conv = keras.layers.Conv2D.from_config(
                view.get_layer(conv_name).conv_config())
            inbound = [dict(n, args=[n["args"][0]] + list(n["args"][2:]))
                       for n in entry["inbound_nodes"]]
            entry.clear()
            entry.update(_layer_entry(conv, conv_name, inbound))
        new = model_from_config(ser, view)
        copy_weights(view, new)
        full = {t: tucker_to_tensor(*layer.tucker_weights())
                for t, layer in tensors.items()}
        for conv_name, t in slices.items():
            index = view.get_layer(conv_name).index
            new.get_layer(conv_name).kernel.assign(
                full[t][index].astype("float32"))

    def dense_conv(layer):
        if not isinstance(layer, TuckerConv2D):
            return None
        cfg = layer.get_config()
        cfg.pop("ranks")
        return keras.layers.Conv2D.from_config(cfg)

    tuckers = any(isinstance(lyr, TuckerConv2D)
                  for _, lyr in iter_leaf_layers(new))
    if tuckers:
        source = new
        new = clone_model(source, dense_conv)
        copy_weights(source, new)
        src = dict(iter_leaf_layers(source))
        for path, layer in iter_leaf_layers(new):
            if isinstance(src.get(path), TuckerConv2D):
                layer.kernel.assign(src[path].dense_kernel())
    if new is view and not tuckers:
        raise ValueError(
            f"to_dense: model {model.name!r} has no T-Net or TuckerConv2D "
            "layer to convert.")
    return carry_compile(model, new, "the dense model")
