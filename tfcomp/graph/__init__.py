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

Example:
    >>> graph = tfcomp.DependencyGraph(tfcomp.zoo.resnet(depth=8))
    >>> graph.summary(prunable_only=True)
"""

from tfcomp.graph.dependency import DependencyGraph, Group, Member
from tfcomp.graph.handlers import (
                                   CONSUMER,
                                   PASS_THROUGH,
                                   PRODUCER,
                                   SOURCE,
                                   ChannelHandler,
                                   NodeContext,
                                   get_channel_handler,
                                   register_channel_handler,
)

__all__ = [
                                   "CONSUMER",
                                   "PASS_THROUGH",
                                   "PRODUCER",
                                   "SOURCE",
                                   "ChannelHandler",
                                   "DependencyGraph",
                                   "Group",
                                   "Member",
                                   "NodeContext",
                                   "get_channel_handler",
                                   "register_channel_handler",
]
