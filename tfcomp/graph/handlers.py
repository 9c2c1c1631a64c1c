"""Channel handlers: what each layer type does to the channels it touches.

A handler describes one call of a layer to the :class:`DependencyGraph`
through a :class:`NodeContext`:

* **ports** are the layer's channel axes that carry weights (or that must be
  reported): a ``Conv2D`` has an ``in`` port (kernel axis -2, a *consumer*)
  and an ``out`` port (kernel axis -1 and the bias, a *producer*); a
  ``BatchNormalization`` has one ``channels`` port (*pass-through*) holding
  gamma, beta and the moving statistics.
* **links** say which tensor channel meets which port position
  (``link_input`` / ``link_output``) and which positions are the same
  channel (``tie``: a depthwise conv's output ``c*m + j`` is its input
  ``c``; a grouped conv's filters at the same in-group position are pruned
  together).
* **locks / barriers** keep channels untouched and say why.

The graph merges every linked position into coupled channels, and every
producer's positions into one :class:`Group`.

At surgery time the graph slices each port's weights (``weights`` specs:
``(variable_name, axis[, mask_fill])``) and calls the handler's
``update_config`` so the rebuilt layer has the new width
(``config_key``: ``filters`` / ``units``, or custom code).

Register handlers for your own layers with :func:`register_channel_handler`.
This module holds the registrations of the built-in handlers; the interface
is in :mod:`tfcomp.graph.context`, the registry in
:mod:`tfcomp.graph.registry`, the handlers in
:mod:`tfcomp.graph.handlers_weighted` (convolutions, Dense, Embedding,
normalisations), :mod:`tfcomp.graph.handlers_attention` (Attention,
AdditiveAttention) and :mod:`tfcomp.graph.handlers_structural`
(element-wise, merges, reshapes).

Example:
    >>> class Scale(tfcomp.graph.ChannelHandler):
    ...     def connect(self, ctx):
    ...         p = ctx.port("channels", ctx.in_channels(), "pass-through",
    ...                      weights=[("scale", 0)])
    ...         ctx.link_input(0, p)
    ...         ctx.link_output(0, p)
    >>> tfcomp.graph.register_channel_handler(MyScaleLayer, Scale())
"""

from __future__ import annotations

import keras

from tfcomp.graph import context, handlers_structural, handlers_weighted
from tfcomp.graph.handlers_attention import AttentionHandler
from tfcomp.graph.handlers_recurrent import RecurrentHandler
from tfcomp.graph.handlers_structural import (
    ActivationHandler,
    ConcatHandler,
    ElementwiseHandler,
    FlattenHandler,
    MergeHandler,
    OpElementwiseHandler,
    PermuteHandler,
    ReduceOpHandler,
    RescalingHandler,
    ReshapeHandler,
    SoftmaxHandler,
)
from tfcomp.graph.handlers_weighted import (
    BatchNormHandler,
    ConvHandler,
    ConvTransposeHandler,
    DenseHandler,
    DepthwiseHandler,
    EmbeddingHandler,
    InputHandler,
    LayerNormHandler,
    NormalizationHandler,
    PReLUHandler,
    ScaleLayerHandler,
    SeparableHandler,
)
from tfcomp.graph.handlers_wrapped import TimeDistributedHandler
from tfcomp.graph.identity import INFERENCE_IDENTITY
from tfcomp.graph.registry import (
    _register_op,
    get_channel_handler,
    register_channel_handler,
)

__all__ = [
    *handlers_weighted.__all__, *handlers_structural.__all__,
    "RecurrentHandler", "TimeDistributedHandler", "AttentionHandler",
    "get_channel_handler", "register_channel_handler",
]


def __getattr__(name):
    # The handler interface (roles, NodeContext, ChannelHandler) lives in
    # tfcomp.graph.context; this old import path keeps working.
    if name in context.__all__:
        return getattr(context, name)
    raise AttributeError(
        f"module 'tfcomp.graph.handlers' has no attribute {name!r}")


def _register_builtins() -> None:
    L = keras.layers
    table = [
        ((L.Conv1D, L.Conv2D, L.Conv3D), ConvHandler),
        ((L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose),
         ConvTransposeHandler),
        ((L.DepthwiseConv1D, L.DepthwiseConv2D), DepthwiseHandler),
        ((L.SeparableConv1D, L.SeparableConv2D), SeparableHandler),
        ((L.Dense,), DenseHandler),
        ((L.BatchNormalization,), BatchNormHandler),
        ((L.LayerNormalization, L.GroupNormalization), LayerNormHandler),
        ((L.InputLayer,), InputHandler),
        ((L.Activation,), ActivationHandler),
        ((L.Softmax,), SoftmaxHandler),
        ((L.PReLU,), PReLUHandler),
        ((L.Concatenate,), ConcatHandler),
        ((L.Flatten,), FlattenHandler),
        ((L.Reshape,), ReshapeHandler),
        ((L.Permute,), PermuteHandler),
        ((L.Rescaling,), RescalingHandler),
        ((L.Normalization,), NormalizationHandler),
        ((L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum),
         MergeHandler),
        ((L.RNN, L.Bidirectional), RecurrentHandler),
        ((L.Embedding,), EmbeddingHandler),
        ((L.Attention, L.AdditiveAttention), AttentionHandler),
        ((L.TimeDistributed,), TimeDistributedHandler),
    ]
    for classes, handler_cls in table:
        handler = handler_cls()
        for cls in classes:
            register_channel_handler(cls, handler)
    elementwise = ElementwiseHandler()
    for name in _ELEMENTWISE:
        if hasattr(L, name):
            register_channel_handler(getattr(L, name), elementwise)
    # Layers of keras.applications that keras.layers does not export.
    register_channel_handler("LayerScale", ScaleLayerHandler())
    register_channel_handler("StochasticDepth", ElementwiseHandler())
    register_channel_handler("CustomScaleLayer", MergeHandler())
    # keras.ops operations (by class name: their classes are not public).
    op_handler = OpElementwiseHandler()
    for name in _OPS:
        _register_op(name, op_handler)
    reduce_handler = ReduceOpHandler()
    for name in _REDUCE_OPS:
        _register_op(name, reduce_handler)
    _register_op("Concatenate", ConcatHandler())


_ELEMENTWISE = [
    *INFERENCE_IDENTITY, "ReLU", "LeakyReLU", "ELU", "Masking",
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D",
    "AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
    "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
    "GlobalAveragePooling1D", "GlobalAveragePooling2D",
    "GlobalAveragePooling3D", "ZeroPadding1D", "ZeroPadding2D",
    "ZeroPadding3D", "Cropping1D", "Cropping2D", "Cropping3D",
    "UpSampling1D", "UpSampling2D", "UpSampling3D", "Resizing",
    "CenterCrop", "RepeatVector",
]
_OPS = [
    "Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Maximum",
    "Minimum", "Power", "Relu", "Relu6", "Sigmoid", "HardSigmoid",
    "Silu", "Swish", "HardSilu", "HardSwish", "Gelu", "Tanh", "Elu",
    "Selu", "Softplus", "Softsign", "LeakyRelu", "Exp", "Log",
    "Absolute", "Abs", "Square", "Sqrt", "Negative", "Cast", "Clip",
    "Log1p", "Expm1", "Erf", "Sign", "Round", "Floor", "Ceil",
    "Reciprocal", "Mish", "Celu", "SoftShrink", "HardShrink",
    "HardTanh", "ThresholdedRelu",
]
#: keras.ops reductions: channel pass-through unless they reduce the last axis.
_REDUCE_OPS = ["Mean", "Sum", "Max", "Min", "Amax", "Amin", "Prod", "Var",
               "Std", "Logsumexp"]
_register_builtins()
