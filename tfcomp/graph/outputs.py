"""Output names and structure of a rebuilt functional model.

Keras names a functional model's outputs by the layers that produce them,
and a loss dict (``compile(loss={"priority": ...})``) or a target dict must
match those names, or the keys of a dict of outputs. A rebuilt model
(``quantize_model``'s, whose last layers are observers such as
``priority_aq``) keeps the source model's: its outputs packed as the
source's (:func:`output_structure`), its names held by
:class:`NamedOutputsModel`, which a ``.keras`` file keeps.

Example:
    >>> outs = keras.tree.pack_sequence_as(output_structure(model), flat)
    >>> new = keep_output_names(model, keras.Model(inputs, outs))
"""

from __future__ import annotations

import keras

__all__ = ["NamedOutputsModel", "output_structure", "keep_output_names",
           "pack_like_inputs"]


def output_structure(model: keras.Model):
    """The structure of ``model``'s outputs (a dict of named outputs, a
    list, one tensor) with its flat tensors in ``model.outputs`` order:
    what a rebuilt model packs its new outputs as, so
    ``compile(loss={"cls": ..., "box": ...})`` still matches.

    Example:
        >>> keras.tree.pack_sequence_as(output_structure(model), new_flat)
    """
    try:
        structure = model.output
    except (AttributeError, ValueError):
        return model.outputs
    flat = keras.tree.flatten(structure)
    if len(flat) != len(model.outputs) or any(
            a is not b for a, b in zip(flat, model.outputs)):
        return model.outputs
    return structure


def pack_like_inputs(model: keras.Model, flat: list):
    """New input tensors ``flat`` (in ``model.inputs`` order) packed as
    ``model``'s inputs are: a dict by key for a model built on a dict of
    inputs (so the rebuilt model is called, fitted and exported as the
    user's was), a list, or one tensor.

    Example:
        >>> q = keras.Model(pack_like_inputs(model, new_inputs(model)), y)
    """
    try:
        structure = model.input
    except (AttributeError, ValueError):
        structure = model.inputs
    leaves = keras.tree.flatten(structure)
    if len(leaves) != len(model.inputs) or any(
            a is not b for a, b in zip(leaves, model.inputs)):
        structure = list(model.inputs)
    packed = keras.tree.pack_sequence_as(structure, list(flat))
    if isinstance(packed, (list, tuple)) and len(packed) == 1:
        return packed[0]
    return packed


@keras.saving.register_keras_serializable(package="tfcomp")
class NamedOutputsModel(keras.Model):
    """A functional model whose outputs keep the names the model it was
    rebuilt from gave them (Keras names outputs by the layers producing
    them, and a rebuilt model's last layers can differ: ``quantize_model``'s
    output observer ``priority_aq``), also through a ``.keras`` file: the
    ``compile(loss={"priority": ...})`` / ``fit(x, {"priority": y})`` of a
    model with a list of outputs (keras.io's Functional API guide) keeps
    working on the copy.

    Example:
        >>> q = quantize_model(model)   # outputs [priority, department]
        >>> q.output_names
        ['priority', 'department']
    """

    def __init__(self, *args, output_names=None, **kwargs):
        super().__init__(*args, **kwargs)
        if output_names is not None:
            self.output_names = list(output_names)

    def get_config(self):
        config = super().get_config()
        config["output_names"] = list(self.output_names)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        names = config.pop("output_names", None)
        model = super().from_config(config, custom_objects=custom_objects)
        if names is not None:
            model.output_names = list(names)
        return model


def keep_output_names(model, new, user_class: bool = False):
    """``new``, or a :class:`NamedOutputsModel` of the same graph, with the
    output names of ``model`` where its own (its layers') differ
    (``user_class``: ``new`` is of the user's own ``keras.Model`` class,
    which keeps its class and gets the names on this object only).

    Example:
        >>> new = keep_output_names(model, keras.Model(inputs, outputs))
    """
    names = list(getattr(model, "output_names", None) or [])
    mine = list(getattr(new, "output_names", None) or [])
    if len(names) < 2 or len(mine) != len(names) or mine == names \
            or len(set(names)) != len(names):
        return new  # one output: Keras' losses need no name
    if not user_class:  # a plain functional model
        return NamedOutputsModel(new.inputs if len(new.inputs) > 1
                                 else new.inputs[0], new.output,
                                 name=new.name, output_names=names)
    new.output_names = names  # the user's class: this object only
    return new
