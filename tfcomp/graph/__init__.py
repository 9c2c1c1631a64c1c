"""Channel dependency graph of Keras functional / Sequential models.

``DependencyGraph(model)`` reads the model's own layer graph (no tracing) and
splits its channels into :class:`Group` s that must be pruned together: a
conv's filters with its BatchNorm, the next conv's input channels, every
branch of a residual ``Add``, the offsets inside a ``Concatenate``, the
``Flatten`` -> ``Dense`` expansion, depthwise pass-through (with
``depth_multiplier``), squeeze-excitation multiplies. Layers without a
channel handler are barriers (``graph.barriers[layer] = reason``); model
inputs and outputs are never pruned.

How other methods use the graph (FPGM, LASSO/DCP, AMC, AutoSlim, ...):

* **List prunable groups with producers and consumers**::

      graph = tfcomp.DependencyGraph(model)
      for g in graph.prunable_groups:
          g.id, g.size                       # stable id, number of channels
          [m.layer for m in g.producers]     # layers whose filters these are
          [m.layer for m in g.consumers]     # layers that read them
          [m.layer for m in g.pass_through]  # BN, depthwise, Add, Concat...
      graph.producer_group("conv1")          # the group of conv1's filters

  Each :class:`Member` gives ``layer``, ``role``, ``port``, ``weights``
  (``(variable, axis)``), ``indices`` (positions on that axis) and
  ``units`` (which group channel each position carries);
  ``member.positions(units)`` maps group channels to kernel positions.

* **Per-group weight matrix for importance**::

      W = g.weight_matrix()                   # (g.size, F): producer filters
      X = g.weight_matrix(("consumer",))       # next layers' input slices
      W, covered = g.member_matrix(member)     # one member only
      g.weight_matrix(weights={(layer, "kernel"): grad})   # e.g. gradients

* **Apply per-group keep indices**::

      plan = tfcomp.pruning.Plan.from_keep(graph, {g.id: keep_idx, ...})
      small = tfcomp.prune_channels(model, plan)       # physically smaller
      soft = tfcomp.pruning.mask_channels(model, plan)  # zeroed, same shape
      tfcomp.pruning.mask_channels(model, plan, inplace=True)  # FPGM epochs
      masks = tfcomp.pruning.weight_masks(model, plan)  # {(layer, var): 0/1}

* **Extend**: ``register_channel_handler(MyLayer, handler)`` (see
  :mod:`tfcomp.graph.handlers`).

* **Kept channels of a removal** (what ``prune_channels`` / ``estimate_macs``
  use; no private attribute needed)::

      keep = graph.channel_keep(plan.resolve(graph))  # or {group_id: units}
      for p in graph.layer_ports("conv1"):            # Port: name, role,
          keep.port(p)                                # size, weights...
      keep.tensor(tid)                                # bool mask per channel
      keep.layer("conv1").port("out").sum()           # LayerKeep
      graph.handler("conv1")                          # its ChannelHandler
      graph.parsed                                    # the ParsedModel

* **Read a model's graph** (the one model reader; quantization, DCP and the
  graph itself use it)::

      parsed = tfcomp.graph.parse_model(model)
      for node in parsed.nodes:            # topological; one per call
          node.path, node.layer            # "outer/inner" for nested models
          node.inputs, node.outputs        # tensor ids "layer:call:index"
      parsed.producer(tid), parsed.consumers(tid), parsed.shapes[tid]
      parsed.inputs, parsed.outputs        # model input / output tensor ids
      parsed.nodes_of(path), parsed.shared_layers, parsed.layer(path)
      parsed.upstream(tids, stop=feeds), parsed.downstream(paths)

  Nested functional / Sequential models (called once) are flattened; a
  shared layer gives one node per call; subclassed models raise TypeError.
  ``tfcomp.graph.replay.FlatView(model)`` calls the model's own layers once
  more with nested models inlined: ``view.input_of("backbone/conv1")`` is a
  tensor reachable from the model's input (for activations and sub-models).
  ``iter_leaf_layers(model)`` walks leaf layers without reading the graph.

* **Your own layer classes** are one layer (a barrier) to the channel
  graph; ``open_user_layers(model)`` returns the model with them opened
  into the Keras layers their ``call`` uses (``tfcomp.graph.open_layers``),
  so pruning reaches inside them.

Example:
    >>> graph = tfcomp.DependencyGraph(tfcomp.zoo.resnet(depth=8))
    >>> graph.summary(prunable_only=True)
"""

from tfcomp.graph._parse import check_built_model, model_kind, parse_model
from tfcomp.graph.builder import Port
from tfcomp.graph.context import (
    CONSUMER,
    PASS_THROUGH,
    PRODUCER,
    ROLES,
    SOURCE,
    ChannelHandler,
    NodeContext,
)
from tfcomp.graph.dependency import DependencyGraph  # registers the handlers
from tfcomp.graph.group import Group, Member
from tfcomp.graph.keep import ChannelKeep, LayerKeep
from tfcomp.graph.open_layers import open_user_layers
from tfcomp.graph.parsed import Node, ParsedModel, is_tensor_ref
from tfcomp.graph.registry import (
    get_channel_handler,
    ops_name,
    register_channel_handler,
)
from tfcomp.graph.walk import iter_leaf_layers, leaf_layers

__all__ = [
    # roles of a group member
    "CONSUMER", "PASS_THROUGH", "PRODUCER", "ROLES", "SOURCE",
    # channel groups
    "ChannelKeep", "DependencyGraph", "Group", "LayerKeep", "Member", "Port",
    # extending the graph
    "ChannelHandler", "NodeContext", "get_channel_handler",
    "ops_name", "register_channel_handler",
    # reading a model
    "Node", "ParsedModel", "is_tensor_ref", "iter_leaf_layers",
    "check_built_model", "leaf_layers", "model_kind", "parse_model",
    # your own layer classes opened into the layers they call
    "open_user_layers",
]
