"""Layer specs: the hardware-relevant geometry of one Keras layer.

A ``LayerSpec`` is what a hardware model or a latency table needs to cost a
layer: the operation, input size, channels, kernel, stride, groups and batch.
``extract_specs`` reads them from a built functional or Sequential model,
taking names, output shapes, MACs and the layers' own bit-widths from
``tfcomp.profile`` records and the geometry from each layer's config.

Costed operations (``OPS``): ``conv`` (``Conv2D``, incl. grouped), ``depthwise``
(``DepthwiseConv2D``), ``dense``, ``separable`` (a depthwise plus a 1x1
conv, priced as the sum of its ``parts``), ``embedding`` (a gather: weights,
no MACs), ``add``, ``avgpool``, ``maxpool``, ``global_avgpool``,
``global_maxpool``. Conv1D / Conv3D / Conv2DTranspose / EinsumDense and the
other layers ``quantize_model`` quantizes are mapped onto these
(``tfcomp.hardware.spec_layers`` says how and where it approximates). Batch
normalisation and activations are treated as free (folded or fused by every
deployment target); any other layer type is reported as skipped.

Example:
    >>> specs = extract_specs(tfcomp.zoo.resnet(depth=20))
    >>> specs[0].op, specs[0].cin, specs[0].cout
    ('conv', 1, 16)
"""

from __future__ import annotations

import dataclasses

import keras

from tfcomp import cost
from tfcomp.graph.walk import iter_leaf_layers

__all__ = ["COMPOSITE_OPS", "GEMM_OPS", "OPS", "WEIGHTED_OPS", "LayerSpec",
           "extract_specs"]

OPS = ("conv", "depthwise", "dense", "separable", "embedding", "add",
       "avgpool", "maxpool", "global_avgpool", "global_maxpool")
# One matrix product each (``gemm_shape``).
GEMM_OPS = ("conv", "depthwise", "dense")
# Priced as the sum of their ``parts`` (each a GEMM_OPS spec).
COMPOSITE_OPS = ("separable",)
# Ops with weights (the layers ``quantize_model`` quantizes).
WEIGHTED_OPS = GEMM_OPS + COMPOSITE_OPS + ("embedding",)
# Ops whose output channels equal their input channels.
_TIED_OPS = ("depthwise", "add", "avgpool", "maxpool", "global_avgpool",
             "global_maxpool")
_PADDINGS = ("same", "valid")


def _pair(v, what: str, name: str) -> tuple[int, int]:
    if isinstance(v, int):
        v = (v, v)
    v = tuple(int(x) for x in v)
    if len(v) != 2 or min(v) < 1:
        raise ValueError(
            f"{what} must be a positive int or a pair of them. Received: "
            f"{what}={v!r} (layer {name!r})")
    return v


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """Geometry of one costed layer (NHWC).

    Attributes:
        name: layer name (``outer/inner`` inside nested models).
        op: one of ``OPS``.
        in_h, in_w: input height and width (for ``dense``: the product of
            the input's middle axes, and 1; ``embedding``: the positions
            looked up, and 1).
        cin, cout: input and output channels (``embedding``: the table's
            rows and columns, vocabulary and output dimension).
        kernel, stride, dilation: (h, w) pairs (pool size for pooling).
        groups: convolution groups (``cin`` for depthwise).
        batch: batch size the cost is for.
        padding: ``"same"`` or ``"valid"``.
        n_inputs: number of summed tensors (``add``).
        multiplier: depth multiplier of a ``separable`` op (1 otherwise).
        w_bits, a_bits: the bit-widths the layer carries in its model (32 =
            float); not part of the signature.
        fixed_in, fixed_out: whether cin (cout) is tied to the model's input
            (output) and so cannot be pruned; not part of the signature.
        use_bias: whether the layer has a bias (counted in ``params`` and
            so in ``size_bytes``); not part of the signature.

    MACs, weights, parameters, BOPs and size come from the formulas of
    ``tfcomp.cost``, so they equal ``tfcomp.profile``'s. ``separable``: its
    depthwise part reads ``cin`` channels at the layer's geometry, its
    pointwise part is a 1x1 conv from ``cin * multiplier`` to ``cout``
    (``parts``). ``embedding``: ``in_h`` positions gathered from a
    ``cin`` x ``cout`` table (0 MACs).

    Example:
        >>> s = LayerSpec("c1", "conv", 28, 28, 16, 32, kernel=(3, 3))
        >>> s.macs, s.gemm_shape()
        (3612672, (1, 784, 144, 32))
    """

    name: str
    op: str
    in_h: int
    in_w: int
    cin: int
    cout: int
    kernel: tuple = (1, 1)
    stride: tuple = (1, 1)
    dilation: tuple = (1, 1)
    groups: int = 1
    batch: int = 1
    padding: str = "valid"
    n_inputs: int = 1
    multiplier: int = 1
    w_bits: int = dataclasses.field(default=32, compare=False)
    a_bits: int = dataclasses.field(default=32, compare=False)
    fixed_in: bool = dataclasses.field(default=False, compare=False)
    fixed_out: bool = dataclasses.field(default=False, compare=False)
    use_bias: bool = dataclasses.field(default=False, compare=False)

    def __post_init__(self):
        if self.op not in OPS:
            raise ValueError(
                f"op must be one of {OPS}. Received: op={self.op!r} "
                f"(layer {self.name!r})")
        for field in ("in_h", "in_w", "cin", "cout", "groups", "batch",
                      "n_inputs", "multiplier"):
            v = getattr(self, field)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(
                    f"{field} must be a positive int. Received: {field}={v!r}"
                    f" (layer {self.name!r})")
        for field in ("kernel", "stride", "dilation"):
            object.__setattr__(self, field,
                               _pair(getattr(self, field), field, self.name))
        if self.padding not in _PADDINGS:
            raise ValueError(
                f"padding must be 'same' or 'valid'. Received: "
                f"padding={self.padding!r} (layer {self.name!r})")
        if self.op in _TIED_OPS and self.op != "depthwise" and (
                self.cin != self.cout):
            raise ValueError(
                f"{self.op} keeps its channels, so cin must equal cout. "
                f"Received: cin={self.cin}, cout={self.cout} "
                f"(layer {self.name!r})")
        if self.op == "depthwise" and (
                self.groups != self.cin or self.cout % self.cin):
            raise ValueError(
                "depthwise needs groups == cin and cout a multiple of cin. "
                f"Received: cin={self.cin}, cout={self.cout}, "
                f"groups={self.groups} (layer {self.name!r})")
        if self.multiplier != 1 and self.op != "separable":
            raise ValueError(
                f"multiplier is for op='separable' only. Received: "
                f"multiplier={self.multiplier} (layer {self.name!r}, "
                f"op={self.op!r})")
        if self.op in ("separable", "embedding") and self.groups != 1:
            raise ValueError(
                f"{self.op} takes groups=1. Received: groups={self.groups} "
                f"(layer {self.name!r})")
        if self.op == "conv" and (self.cin % self.groups
                                  or self.cout % self.groups):
            raise ValueError(
                f"groups={self.groups} must divide cin={self.cin} and "
                f"cout={self.cout} (layer {self.name!r})")

    # -- derived geometry ------------------------------------------------
    @property
    def out_hw(self) -> tuple[int, int]:
        """Output (height, width)."""
        if self.op in ("dense", "add", "embedding"):
            return self.in_h, self.in_w
        if self.op.startswith("global_"):
            return 1, 1
        out = []
        for size, k, s, d in zip((self.in_h, self.in_w), self.kernel,
                                 self.stride, self.dilation):
            if self.padding == "same":
                out.append(-(-size // s))
            else:
                out.append(max(0, (size - d * (k - 1) - 1) // s + 1))
        return tuple(out)

    @property
    def depth_multiplier(self) -> int:
        if self.op == "separable":
            return self.multiplier
        return self.cout // self.cin if self.op == "depthwise" else 1

    @property
    def _kernel_size(self) -> tuple:
        return () if self.op in ("dense", "embedding") else tuple(
            self.kernel)

    @property
    def parts(self) -> tuple:
        """The specs a hardware model prices: ``(self,)``, or for a
        ``separable`` op its depthwise conv (``<name>_depthwise``, no bias,
        as ``quantize_model`` splits it) and its 1x1 pointwise conv on the
        depthwise output (``<name>``, with the bias). Both carry the
        layer's bits.

        Example:
            >>> s = LayerSpec("sep", "separable", 8, 8, 4, 16, kernel=(3, 3),
            ...               padding="same", multiplier=2)
            >>> [(p.op, p.cin, p.cout) for p in s.parts]
            [('depthwise', 4, 8), ('conv', 8, 16)]
        """
        if self.op not in COMPOSITE_OPS:
            return (self,)
        mid = self.cin * self.multiplier
        oh, ow = self.out_hw
        flags = {"batch": self.batch, "w_bits": self.w_bits,
                 "a_bits": self.a_bits}
        dw = LayerSpec(
            f"{self.name}_depthwise", "depthwise", self.in_h, self.in_w,
            self.cin, mid, kernel=self.kernel, stride=self.stride,
            dilation=self.dilation, groups=self.cin, padding=self.padding,
            fixed_in=self.fixed_in, **flags)
        pw = LayerSpec(self.name, "conv", oh, ow, mid, self.cout,
                       fixed_out=self.fixed_out, use_bias=self.use_bias,
                       **flags)
        return dw, pw

    @property
    def _positions(self) -> int:
        """Batch times output positions (dense: times the middle axes)."""
        oh, ow = self.out_hw
        return self.batch * oh * ow

    @property
    def macs(self) -> int:
        """Multiply-accumulates (0 for element-wise and pooling ops):
        ``tfcomp.cost.layer_macs``."""
        if self.op in COMPOSITE_OPS:
            return sum(p.macs for p in self.parts)
        if self.op not in GEMM_OPS:
            return 0
        return cost.layer_macs(self._positions, self._kernel_size, self.cin,
                               self.cout, self.groups)

    @property
    def weight_count(self) -> int:
        """Number of kernel weights (no bias): ``tfcomp.cost.weight_count``.
        """
        if self.op in COMPOSITE_OPS:
            return sum(p.weight_count for p in self.parts)
        if self.op not in WEIGHTED_OPS:
            return 0
        return cost.weight_count(self._kernel_size, self.cin, self.cout,
                                 self.groups)

    @property
    def params(self) -> int:
        """Kernel weights plus the bias when ``use_bias``
        (``tfcomp.cost.param_count``; 0 for ops without weights).

        Example:
            >>> LayerSpec("d", "dense", 1, 1, 64, 10, use_bias=True).params
            650
        """
        if self.op in COMPOSITE_OPS:
            return sum(p.params for p in self.parts)
        if self.op not in WEIGHTED_OPS:
            return 0
        return cost.param_count(self._kernel_size, self.cin, self.cout,
                                self.groups, self.use_bias)

    def bops(self, w_bits: int, a_bits: int) -> int:
        """``macs * w_bits * a_bits`` (``tfcomp.cost.bops``).

        Example:
            >>> LayerSpec("d", "dense", 1, 1, 64, 10).bops(4, 8)
            20480
        """
        return cost.bops(self.macs, w_bits, a_bits)

    def size_bytes(self, w_bits: int) -> float:
        """``params * w_bits / 8`` bytes (``tfcomp.cost.size_bytes``).

        Example:
            >>> LayerSpec("d", "dense", 1, 1, 64, 10, use_bias=True
            ...           ).size_bytes(4)
            325.0
        """
        return cost.size_bytes(self.params, w_bits)

    @property
    def input_elems(self) -> int:
        return self.batch * self.in_h * self.in_w * self.cin * self.n_inputs

    @property
    def output_elems(self) -> int:
        oh, ow = self.out_hw
        return self.batch * oh * ow * self.cout

    def gemm_shape(self) -> tuple[int, int, int, int]:
        """(groups, M, K, N) of the layer lowered to matrix products.

        A convolution is ``groups`` GEMMs of M = batch*Ho*Wo output pixels,
        K = (cin/groups)*kh*kw and N = cout/groups; dense is one GEMM with
        M = batch * (middle axes).

        Raises:
            ValueError: for ops that are not GEMMs (a ``separable`` op is
                two: see ``parts``).
        """
        if self.op not in GEMM_OPS:
            raise ValueError(
                f"{self.op} is not a matrix product (layer {self.name!r})")
        if self.op == "dense":
            return 1, self.batch * self.in_h * self.in_w, self.cin, self.cout
        oh, ow = self.out_hw
        kk = self.kernel[0] * self.kernel[1]
        g = self.groups
        return g, self.batch * oh * ow, (self.cin // g) * kk, self.cout // g

    # -- keys --------------------------------------------------------------
    def _shape_key(self) -> str:
        kh, kw = self.kernel
        sh, sw = self.stride
        dh, dw = self.dilation
        return (f"{self.op}|b{self.batch}|{self.in_h}x{self.in_w}|"
                f"k{kh}x{kw}|s{sh}x{sw}|d{dh}x{dw}|{self.padding}|"
                f"n{self.n_inputs}")

    def signature(self) -> str:
        """Key of this exact layer shape (name and bits excluded).

        Example:
            >>> LayerSpec("a", "add", 7, 7, 64, 64, n_inputs=2).signature()
            'add|b1|7x7|k1x1|s1x1|d1x1|valid|n2|c64>64|g1'
        """
        return (f"{self._shape_key()}|c{self.cin}>{self.cout}|"
                f"g{self.groups}{self._mult_key()}")

    def _mult_key(self) -> str:
        return f"|m{self.multiplier}" if self.op == "separable" else ""

    def family(self) -> str:
        """Key shared by the layer at any channel count (for interpolation).

        Depthwise layers keep their depth multiplier; grouped convolutions
        keep their group count.
        """
        if self.op == "depthwise":
            return f"{self._shape_key()}|m{self.depth_multiplier}"
        return f"{self._shape_key()}|g{self.groups}{self._mult_key()}"

    @property
    def tied_channels(self) -> bool:
        """True when cout is determined by cin (depthwise, add, pooling)."""
        return self.op in _TIED_OPS

    def with_channels(self, cin: int | None = None,
                      cout: int | None = None) -> LayerSpec:
        """A copy at other channel counts (as after channel pruning).

        For depthwise, add and pooling only ``cin`` is free: cout (and the
        depthwise groups) follow it.

        Example:
            >>> s.with_channels(cin=8, cout=24).cin
            8
        """
        cin = self.cin if cin is None else int(cin)
        if self.tied_channels:
            if cout is not None and self.op != "depthwise" and cout != cin:
                raise ValueError(
                    f"{self.op} keeps its channels; got cin={cin}, "
                    f"cout={cout} (layer {self.name!r})")
            dm = self.depth_multiplier
            return dataclasses.replace(
                self, cin=cin, cout=cin * dm,
                groups=cin if self.op == "depthwise" else self.groups)
        cout = self.cout if cout is None else int(cout)
        return dataclasses.replace(self, cin=cin, cout=cout)

    def to_dict(self) -> dict:
        """JSON-ready dict of the signature fields (no name, bits, hints;
        ``multiplier`` only for ``separable``)."""
        d = {
            "op": self.op, "in_h": self.in_h, "in_w": self.in_w,
            "cin": self.cin, "cout": self.cout, "kernel": list(self.kernel),
            "stride": list(self.stride), "dilation": list(self.dilation),
            "groups": self.groups, "batch": self.batch,
            "padding": self.padding, "n_inputs": self.n_inputs,
        }
        if self.op == "separable":
            d["multiplier"] = self.multiplier
        return d

    @classmethod
    def from_dict(cls, d: dict, name: str = "") -> LayerSpec:
        """Inverse of ``to_dict``.

        Raises:
            TypeError: if ``d`` is not a dict.
            ValueError: on missing or malformed fields.
        """
        if not isinstance(d, dict):
            raise TypeError(f"a layer spec must be a dict. Received: {d!r}")
        missing = [k for k in ("op", "in_h", "in_w", "cin", "cout")
                   if k not in d]
        if missing:
            raise ValueError(f"layer spec is missing {missing}. Received: "
                             f"{d!r}")
        keys = ("op", "in_h", "in_w", "cin", "cout", "kernel", "stride",
                "dilation", "groups", "batch", "padding", "n_inputs",
                "multiplier")
        unknown = sorted(set(d) - set(keys))
        if unknown:
            raise ValueError(f"layer spec has unknown fields {unknown}. "
                             f"Received: {d!r}")
        kwargs = {k: d[k] for k in keys if k in d}
        for k in ("kernel", "stride", "dilation"):
            if k in kwargs:
                kwargs[k] = tuple(kwargs[k])
        return cls(name=name or d.get("name", ""), **kwargs)


# -- extraction from a Keras model -----------------------------------------

def _shape_of(t) -> tuple:
    return tuple(None if d is None else int(d) for d in t.shape)


def extract_specs(model: keras.Model, batch: int = 1,
                  return_skipped: bool = False):
    """Reads the costed layers of a built model as ``LayerSpec`` records.

    Names, output shapes, MACs and the layers' own ``w_bits``/``a_bits``
    come from ``tfcomp.profile``; kernel, stride, padding and groups from the
    layer config. Nested functional models are recursed into (``outer/inner``
    names, as in the profile); the user's own layer classes are opened as
    ``quantize_model`` opens them (``<layer>_<attribute>`` names). Every
    layer ``quantize_model`` quantizes gets a spec; 1-D / 3-D, transposed,
    separable, einsum and embedding layers are mapped as
    ``tfcomp.hardware.spec_layers`` documents.

    Args:
        model: a built functional or Sequential ``keras.Model``.
        batch: batch size to cost for.
        return_skipped: also return ``[(layer_name, reason)]`` for layers
            that may cost time but have no cost model (e.g. Concatenate).

    Returns:
        ``list[LayerSpec]`` in layer order, or ``(specs, skipped)``.

    Raises:
        TypeError: if ``model`` is not a ``keras.Model``.
        ValueError: if a layer's shapes cannot be read (subclassed models,
            undefined spatial sizes, channels_first).

    Example:
        >>> specs = extract_specs(tfcomp.zoo.mobilenet_v2())
        >>> sum(s.macs for s in specs) == tfcomp.profile(model).macs
        True
    """
    from tfcomp.graph.open_layers import opened_model
    from tfcomp.hardware.spec_layers import layer_has_bias, spec_for_layer

    if not isinstance(model, keras.Model):
        raise TypeError(
            f"extract_specs expects a keras.Model. Received: {type(model)!r}")
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive int. Received: "
                         f"batch={batch!r}")
    # the user's own layer classes opened as quantize_model opens them:
    # their convs / dense layers get specs under the names it quantizes
    model = opened_model(model)
    records = {r.name: r for r in cost.profile(model).layers}
    calls = cost.call_shapes(model)
    rows = cost.batch_rows(model)  # TimeDistributed steps folded by QAT
    layers = list(iter_leaf_layers(model))
    try:
        in_ids = {id(t) for t in keras.tree.flatten(model.inputs)}
        out_ids = {id(t) for t in keras.tree.flatten(model.outputs)}
    except (AttributeError, ValueError):
        in_ids, out_ids = set(), set()
    specs, skipped = [], []
    for name, layer in layers:
        rec = records.get(name)
        try:
            ins = keras.tree.flatten(layer.input)
            outs = keras.tree.flatten(layer.output)
        except (AttributeError, ValueError) as e:
            if isinstance(layer, keras.layers.InputLayer):
                continue
            raise ValueError(
                f"Cannot read the input/output shapes of layer {name!r} "
                f"({type(layer).__name__}); costing needs a built functional "
                f"or Sequential model. ({e})") from e
        in_shapes = [_shape_of(t) for t in ins]
        out_shape = _shape_of(outs[0])
        n_calls = 1
        if name in calls:  # a shared layer: each call runs on the hardware
            if len({repr(c) for c in calls[name]}) > 1:
                raise ValueError(
                    f"Layer {name!r} is called {len(calls[name])} times on "
                    "different shapes; the hardware cost model prices one "
                    "geometry per layer.")
            n_calls = len(calls[name])
        spec, reason = spec_for_layer(layer, name, in_shapes, out_shape,
                                      batch * n_calls * rows.get(name, 1))
        if spec is None:
            if reason.startswith("no cost model") and rec is not None \
                    and rec.macs:
                # a user layer's MACs traced by the profile: not priced here
                reason += (f" ({rec.macs:,} MACs in tfcomp.profile are not "
                           "priced)")
            if reason:
                skipped.append((name, reason))
            continue
        if rec is not None:
            w_bits, a_bits = int(rec.w_bits), int(rec.a_bits)
            # Cross-check the geometry where the profile counts MACs (it
            # reports 0 for layer types it does not know, e.g. wrappers).
            if spec.op in WEIGHTED_OPS and rec.macs and (
                    rec.macs != spec.macs // batch):
                raise ValueError(
                    f"Layer {name!r}: spec MACs {spec.macs // batch} differ "
                    f"from the profile's {rec.macs}; its geometry could not "
                    "be read reliably.")
        else:
            w_bits = a_bits = 32
        spec = dataclasses.replace(
            spec, w_bits=w_bits, a_bits=a_bits,
            use_bias=spec.op in WEIGHTED_OPS and layer_has_bias(layer),
            fixed_in=any(id(t) in in_ids for t in ins),
            fixed_out=any(id(t) in out_ids for t in outs))
        specs.append(spec)
    return (specs, skipped) if return_skipped else specs
