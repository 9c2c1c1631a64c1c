"""GAL: structured pruning by generative adversarial learning of soft masks.

``apply_gal(model, structures)`` copies the model with
:class:`tfcomp.layers.soft_mask.SoftMask` layers (>= 0, init 1):
``"channels"``, a vector per prunable channel group of the
:class:`tfcomp.graph.DependencyGraph` where its consumers read it (a zero
entry makes the channel unused everywhere; channels removable only
together, as a grouped convolution's ``c % (cin / groups)`` or a
GroupNormalization group, share an entry); ``"blocks"``, a scalar per
residual branch (of each ``Add``, every operand with more weighted layers
since the common ancestors than the shallowest one, the shortcut, which is
kept). Placement rules and skip reasons: :mod:`tfcomp.pruning.gal_sites`;
a Sequential model is read through
:func:`tfcomp.graph.copy.functional_view`. ``GAL(student,
teacher, lam, mu=1, mask_step=200)`` is a ``keras.Model`` whose
``train_step`` steps the discriminator (MLP on logits, classes -> 128 ->
256 -> 128 -> 1) on ``BCE(D(f_t), 1) + BCE(D(f_s), 0)``, then the student's
weights (the compiled optimizer) on ``mu * MSE(f_t, f_s) + BCE(D(f_s), 1)
+ lam * ||m||_1``, and every ``mask_step`` batches the masks by
:class:`~tfcomp.layers.soft_mask.FISTA` (extrapolation with ``alpha_{k+1} =
(1 + sqrt(1 + 4 alpha_k^2)) / 2``, gradient step, soft-threshold by ``lr *
lam``, clamp >= 0, reset at each LR decay). ``strip_gal``
(:mod:`tfcomp.pruning.gal_strip`) removes zero-mask branches (the ``Add``
becomes its shortcut) and channels
(:func:`tfcomp.pruning.surgery.prune_channels`) and folds the other masks:
the logits do not change.

Faithfulness notes (paper vs official code ShaohuiLin/GAL): the mask
gradient is that of the smooth terms only and the L1 term enters through
the proximal step (the paper); the official code also adds the L1
subgradient ``lam * sign(m)`` to the gradient, counting it twice
(``l1_in_gradient=True`` reproduces that). The discriminator ends in one
logit scored with BCE-from-logits: no sigmoid inside (the issue notes an
official version that applies a sigmoid inside and again in
BCE-with-logits; the stored ``discriminator.py`` is a purely linear
10 -> 128 -> 256 -> 128 stack); we put ReLUs between the layers (the
paper's MLP). The official discriminator loss adds a third term
``BCE(D(f_s), 1)``; we use the paper's two. The FISTA gradient is taken at
the current masks (as the official code); the official LR-decay reset
(``epoch % lr_decay_step == 0 and i == 1``) never coincides with a mask step
(``i % mask_step == 0``), so we reset on any learning-rate change instead.
``mask_step`` counts global batches (the official code counts within an
epoch). Masks start at 1 as in the paper (one official ResNet version
samples N(0, 1)). TensorFlow backend only (``tf.GradientTape``). Paper:
SGD lr 1e-2, momentum 0.9, wd 2e-4, x0.1 every 30 of 100 epochs; lam 0.6
(ResNet-56 blocks), 1e-2 (DenseNet / GoogLeNet), 1e-3 (VGG channels).

The masks' gradient comes from an inference-mode forward pass
(``mask_gradient="inference"``, the default; a deviation: the official
code differentiates the training forward pass, ``"training"``). Why
(measured, ``benchmarks/learned_pruning.py``): a mask read only by layers
followed by BatchNormalization in training mode is scale-invariant (a
uniform scale of a group's masks, or any scale of a depthwise consumer's
channel, is normalised away by the batch statistics), and the student
starts equal to the teacher, where the MSE term's gradient is zero; so on
the training forward pass the L1 pull shrinks every channel mask together
and which ones reach zero first is decided by small differences
(Fashion-MNIST MobileNetV2-tiny, 64 batches, mask step 1, lam 0.18: the
masks' mean fell 1.0 -> 0.56 -> 0.08 while their std stayed 0.005 ->
0.03, then 65 % of the entries hit zero within the last few steps). With
the moving statistics a mask's scale reaches the logits, so the MSE and
adversarial terms hold up the channels that matter while the L1 pull
zeroes the others: ResNet-20, 64 batches, lam 0.2: std 0.46 at mean 0.31
(0.005 before); after the same 2-epoch fine-tune the stripped student beat
L1-norm pruning at equal MACs (lam 0.22, 49 % of the MACs, 3 seeds: 80.9
vs 79.5 %) where the training-mode gradient had lost by 11 points. The
extra forward pass runs only on the batches where FISTA steps. Block masks
sit before an ``Add`` whose shortcut is not scaled: they spread either
way.

The paper's L1 term weighs every mask entry alike, so on MobileNetV2-tiny
it kept every channel of the residual streams (read by many layers) and cut
the expansions: GAL lost to L1 at 48 % of the MACs (74.9 vs 78.1 %, 3
seeds). ``lam_weights="macs"`` (not in the paper) weighs each entry by the
MACs its channels cost, so a given ``lam`` removes expensive channels
first (results: ``benchmarks/results/learned_pruning.md``).

Reference: Lin et al., Towards Optimal Structured CNN Pruning via
Generative Adversarial Learning, CVPR 2019, arXiv:1903.09291.

Example:
    >>> student = tfcomp.pruning.apply_gal(teacher, structures="blocks")
    >>> gal = tfcomp.pruning.GAL(student, teacher, lam=0.6)
    >>> gal.compile(keras.optimizers.SGD(0.01, momentum=0.9))
    >>> gal.fit(x, epochs=100)
    >>> small = tfcomp.pruning.strip_gal(student)
"""

from __future__ import annotations

import logging

import keras
import numpy as np
from keras import ops

from tfcomp._io import check_number, check_positive_int
from tfcomp._unpinned import unpinned
from tfcomp.graph import DependencyGraph
from tfcomp.graph.copy import clone_model, copy_weights, functional_view
from tfcomp.graph.walk import iter_leaf_layers
from tfcomp.layers.soft_mask import FISTA, SoftMask, gal_masks, has_soft_masks
from tfcomp.pruning.gal_sites import (
    add_operands,
    block_sites,
    channel_sites,
    mask_name,
    with_operands,
)
from tfcomp.pruning.gal_strip import _rebuild, strip_gal
from tfcomp.pruning.targets import ChannelMacs
from tfcomp.pruning.wrappers import _check_model

__all__ = ["FISTA", "GAL", "STRUCTURES", "apply_gal", "gal_masks",
           "has_soft_masks", "strip_gal"]

logger = logging.getLogger("tfcomp.pruning")

STRUCTURES = ("channels", "blocks")
MASK_GRADIENTS = ("inference", "training")
PAPER_LAMBDA = {"blocks": 0.6, "channels": 1e-3}


def apply_gal(model: keras.Model, structures: str = "channels"
              ) -> keras.Model:
    """A copy of ``model`` with GAL's soft masks (all 1) inserted.

    Where masks go and why a group / ``Add`` is left unmasked:
    :mod:`tfcomp.pruning.gal_sites`.

    Args:
        model: a built functional or Sequential model (the teacher; a
            Sequential model needs its input shape, e.g. ``keras.Input``
            first, and gives a functional student).
        structures: ``"channels"`` (a mask per unit of every prunable
            channel group, at its consumers' inputs; grouped-convolution,
            GroupNormalization and ``Flatten -> Dense`` consumers share an
            entry between the channels removed together) or ``"blocks"``
            (a scalar per residual branch, before its ``Add``).

    Returns:
        The student (weights copied; ``model`` untouched; groups / adds
        that cannot be masked are logged).

    Raises:
        ValueError: ``structures`` unknown, or nothing can be masked (the
            message gives each group's / ``Add``'s reason).

    Example:
        >>> student = apply_gal(tfcomp.zoo.resnet(depth=20), "blocks")
        >>> len(gal_masks(student))
        9
    """
    _check_model(model)
    if structures not in STRUCTURES:
        raise ValueError(f"structures must be one of {STRUCTURES}. "
                         f"Received: structures={structures!r}")
    model = functional_view(model, "apply_gal")
    masks = {}
    if structures == "channels":
        sites, skipped = channel_sites(model)
    else:
        sites, skipped = block_sites(model)
    if not sites:
        what = skipped or ("no residual sum: neither a keras.layers.Add "
                           "nor an `x + y` of two tensors"
                           if structures == "blocks"
                           else "no prunable channel group")
        raise ValueError(f"apply_gal: model {model.name!r} has no "
                         f"{structures} GAL can mask ({what}).")

    def mask_layer(name, **kw):
        if name not in masks:
            masks[name] = SoftMask(name=name, **kw)
        return masks[name]

    def call(path, layer, args, kwargs):
        if path in sites and structures == "channels":
            name, units = sites[path]
            args = (mask_layer(name, units=units)(args[0]),) + args[1:]
        elif path in sites:
            ops_ = add_operands(layer, args)
            for idx, name in sites[path]:
                ops_[idx] = mask_layer(name, per_channel=False)(ops_[idx])
            args = with_operands(layer, args, ops_)
        return layer(*args, **kwargs)

    student = _rebuild(model, call)
    copy_weights(model, student)
    if skipped:
        logger.info("apply_gal: left unmasked in %r: %s", model.name, skipped)
    return student


# ---------------------------------------------------------------------------
# the adversarial training model


def _l1_weights(teacher, masks, lam_weights):
    """Per mask variable, its entries' weights in the L1 term (None: all 1):
    ``"macs"``: the MACs one entry's channels cost in ``teacher`` (a unit of
    its channel group, times the units sharing the entry), over the mean
    entry."""
    if lam_weights is None:
        return None
    if lam_weights != "macs":
        raise ValueError("lam_weights must be None or 'macs'. Received: "
                         f"lam_weights={lam_weights!r}")
    if any(not lyr.per_channel for lyr in masks):
        raise ValueError("lam_weights='macs' weighs channel masks; the "
                         "student has block masks (structures='blocks').")
    graph = DependencyGraph(functional_view(teacher, "GAL"))
    cost = ChannelMacs(graph)
    groups = {mask_name(g.id): g for g in graph.prunable_groups}
    out = []
    for lyr in masks:
        g = groups[lyr.name]
        unit = max(cost.dense - cost.removed_macs({g.id: [0]}), 1)
        # units: the entry of each input channel (None: one per channel)
        layout = (np.arange(g.size) if lyr.units is None
                  else np.asarray(lyr.units))
        out.append(unit * np.bincount(layout).astype("float32") * g.size
                   / len(layout))
    mean = float(np.mean(np.concatenate(out)))
    return [w / mean for w in out]


def make_discriminator(num_classes: int) -> keras.Model:
    """GAL's discriminator: classes -> 128 -> 256 -> 128 -> 1 (ReLU
    between, one logit, no sigmoid; weights N(0, 0.01)). Example:
    ``make_discriminator(10).output.shape == (None, 1)``."""
    init = keras.initializers.RandomNormal(0.0, 0.01)
    inp = x = keras.Input((int(num_classes),), name="gal_d_input")
    for i, n in enumerate((128, 256, 128, 1), start=1):
        x = keras.layers.Dense(n, activation="relu" if i < 4 else None,
                               kernel_initializer=init,
                               name=f"gal_d_dense{i}")(x)
    return keras.Model(inp, x, name="gal_discriminator")


def _bce(label: float, logits):
    """Mean binary cross-entropy of logits against a constant label."""
    logits = ops.cast(logits, "float32")
    return ops.mean(keras.losses.binary_crossentropy(
        ops.full(ops.shape(logits), label, "float32"), logits,
        from_logits=True))


def _rows(logits):
    """``(batch, ..., classes)`` logits as ``(-1, classes)`` rows: a
    per-pixel output (segmentation, denoising) is scored position by
    position by the discriminator."""
    if len(logits.shape) <= 2:
        return logits
    return ops.reshape(logits, (-1, logits.shape[-1]))


def _num_replicas() -> int:
    import tensorflow as tf  # tf.distribute: no Keras equivalent

    return int(tf.distribute.get_strategy().num_replicas_in_sync)


def _single_output(model, name):
    _check_model(model, name)
    if len(model.outputs) != 1:
        raise ValueError(f"{name} must have one output (the logits). "
                         f"Received: {len(model.outputs)} outputs")
    return model.outputs[0].shape


@keras.saving.register_keras_serializable(package="tfcomp")
class GAL(keras.Model):
    """Adversarial soft-mask training of a student against its teacher.

    ``fit(x)`` (labels optional; used only by compiled metrics) runs, per
    batch, a discriminator step, a student step (the compiled optimizer on
    the student's weights) and, every ``mask_step`` batches, a
    :class:`FISTA` step on the masks (learning rate: the student
    optimizer's current one). Logs: ``loss`` (the student objective),
    ``d_loss``, ``mse`` (``mu * MSE``), ``adv``, ``sparse``
    (``lam * ||m||_1``), ``zero_masks`` (mask entries at 0),
    ``mask_mean`` / ``mask_std`` (over all mask entries: a std near 0
    while the mean falls means the masks shrink together, see the module
    docstring). Outputs with spatial axes (``(batch, h, w, classes)``
    segmentation maps) are scored by the discriminator per position. Saves and
    loads as ``.keras`` (optimizers and FISTA state included); works
    under ``tf.distribute`` strategies (build it in ``strategy.scope()``).

    Args:
        student: the model from :func:`apply_gal` (trained in place).
        teacher: the baseline (same output size); GAL keeps a frozen
            copy, the model passed in is left as it is.
        lam: L1 weight of the masks (None: the paper's 0.6 for block
            masks, 1e-3 for channel masks).
        mu: MSE weight (paper: 1). mask_step: batches between FISTA
            steps (official: 200).
        l1_in_gradient: also add ``lam * sign(m)`` to the mask gradient
            (the official code; the paper's proximal step alone: False).
        lam_weights: None (the paper: every mask entry weighs 1 in
            ``lam * ||m||_1``) or ``"macs"`` (not in the paper): a channel
            entry weighs the MACs its channels cost, relative to the mean
            entry, so ``lam`` prunes expensive channels first (channel
            masks only).
        mask_gradient: ``"inference"`` (default): the masks' gradient is
            taken on a second forward pass of the student in inference
            mode (BatchNormalization with its moving statistics), on the
            batches where FISTA steps; ``"training"``: on the training
            forward pass, as the official code (batch statistics normalise
            a mask's scale away there; see the module docstring).
        discriminator: optional model ``logits -> one logit``.

    Reference: Lin et al., CVPR 2019, arXiv:1903.09291.

    Example:
        >>> gal = GAL(apply_gal(teacher, "blocks"), teacher)
        >>> gal.compile(keras.optimizers.SGD(0.01, momentum=0.9))
        >>> gal.fit(x, batch_size=128, epochs=100)
    """

    def __init__(self, student, teacher, lam: float | None = None,
                 mu: float = 1.0, mask_step: int = 200,
                 l1_in_gradient: bool = False, discriminator=None,
                 mask_gradient: str = "inference", lam_weights=None,
                 **kwargs):
        super().__init__(**kwargs)
        s_shape = _single_output(student, "student")
        t_shape = _single_output(teacher, "teacher")
        if tuple(s_shape[1:]) != tuple(t_shape[1:]):
            raise ValueError(
                "teacher outputs must match the student's. Received: "
                f"teacher output shape {tuple(t_shape)}, student output "
                f"shape {tuple(s_shape)}")
        masks = [lyr for _, lyr in iter_leaf_layers(student)
                 if isinstance(lyr, SoftMask)]
        if not masks:
            raise ValueError(f"student {student.name!r} has no GAL soft "
                             "masks; make it with apply_gal(model).")
        if lam is None:
            blocks = all(not lyr.per_channel for lyr in masks)
            lam = PAPER_LAMBDA["blocks" if blocks else "channels"]
        self.lam = check_number(lam, "lam", minimum=0.0)
        self.mu = check_number(mu, "mu", minimum=0.0)
        self.mask_step = check_positive_int(mask_step, "mask_step")
        if not isinstance(l1_in_gradient, bool):
            raise TypeError("l1_in_gradient must be a bool. Received: "
                            f"l1_in_gradient={l1_in_gradient!r}")
        self.l1_in_gradient = l1_in_gradient
        if mask_gradient not in MASK_GRADIENTS:
            raise ValueError(
                f"mask_gradient must be one of {MASK_GRADIENTS}. Received: "
                f"mask_gradient={mask_gradient!r}")
        self.mask_gradient = mask_gradient
        self.lam_weights = lam_weights
        self._l1_weights = _l1_weights(teacher, masks, lam_weights)
        self.student = student
        # a frozen copy: freezing the user's model in place would leave it
        # untrainable afterwards (a later fine-tune of it, or of a model
        # pruned from it, silently did nothing)
        self.teacher = clone_model(teacher)
        copy_weights(teacher, self.teacher)
        self.teacher.trainable = False
        self.discriminator = discriminator or make_discriminator(
            int(s_shape[-1]))
        self._mask_layers = masks
        self._trackers = {n: keras.metrics.Mean(name=n) for n in (
            "loss", "d_loss", "mse", "adv", "sparse")}
        self.d_optimizer = None
        self.mask_optimizer = None
        self.built = True

    # -- variables -------------------------------------------------------
    def mask_variables(self) -> list:
        """The soft-mask variables (updated by FISTA only)."""
        return [lyr.mask for lyr in self._mask_layers]

    def student_variables(self) -> list:
        """The student's trainable weights without the masks."""
        ids = {id(v) for v in self.mask_variables()}
        return [v for v in self.student.trainable_variables
                if id(v) not in ids]

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    # -- compile / save --------------------------------------------------
    def compile(self, optimizer="sgd", d_optimizer=None, metrics=None,
                **kwargs):
        """Student optimizer, discriminator optimizer (default: a copy of
        ``optimizer``'s config, as the official code), metrics on ``(y,
        student logits)``. Example: ``gal.compile(SGD(0.01), metrics=[
        "sparse_categorical_accuracy"])``."""
        super().compile(optimizer=optimizer, metrics=metrics, **kwargs)
        opt = self.optimizer
        if d_optimizer is None:
            d_optimizer = opt.__class__.from_config(opt.get_config())
        self.d_optimizer = keras.optimizers.get(d_optimizer)
        self.mask_optimizer = FISTA(lambda: opt.learning_rate, lam=self.lam,
                                    mask_step=self.mask_step)
        self.mask_optimizer.l1_weights = self._l1_weights
        ser = keras.saving.serialize_keras_object
        self._gal_compile = {"optimizer": ser(opt),
                             "d_optimizer": ser(self.d_optimizer),
                             "metrics": ser(metrics)}
        for o in (opt, self.d_optimizer, self.mask_optimizer):
            unpinned(o)  # GAL is often run per lambda in one process
        self.optimizer.build(self.student_variables())
        self.d_optimizer.build(self.discriminator.trainable_variables)
        self.mask_optimizer.build(self.mask_variables())

    def get_compile_config(self):
        return getattr(self, "_gal_compile", None)

    def compile_from_config(self, config):
        de = keras.saving.deserialize_keras_object
        self.compile(optimizer=de(config["optimizer"]),
                     d_optimizer=de(config["d_optimizer"]),
                     metrics=de(config["metrics"]))

    def get_config(self):
        ser = keras.saving.serialize_keras_object
        return {"name": self.name, "student": ser(self.student),
                "teacher": ser(self.teacher),
                "discriminator": ser(self.discriminator), "lam": self.lam,
                "mu": self.mu, "mask_step": self.mask_step,
                "l1_in_gradient": self.l1_in_gradient,
                "mask_gradient": self.mask_gradient,
                "lam_weights": self.lam_weights}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("student", "teacher", "discriminator"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)

    # -- training --------------------------------------------------------
    @property
    def metrics(self):
        base = [m for m in super().metrics if m.name != "loss"]
        return list(self._trackers.values()) + base

    def losses_on(self, x):
        """``{"d_loss", "mse", "adv", "sparse", "loss"}`` on a batch, no
        update (inference mode). Example: ``gal.losses_on(x[:8])``."""
        t = ops.cast(self.teacher(x, training=False), "float32")
        s = ops.cast(self.student(x, training=False), "float32")
        return self._student_terms(t, s, with_d=True)

    def _student_terms(self, t, s, with_d=False):
        t, s = _rows(t), _rows(s)
        mse = self.mu * ops.mean(ops.square(t - s))
        adv = _bce(1.0, self.discriminator(s))
        weights = self._l1_weights or [1.0] * len(self.mask_variables())
        sparse = self.lam * sum(ops.sum(w * ops.abs(m)) for m, w in
                                zip(self.mask_variables(), weights))
        out = {"mse": mse, "adv": adv, "sparse": sparse,
               "loss": mse + adv + sparse}
        if with_d:
            out["d_loss"] = _bce(1.0, self.discriminator(t)) + _bce(
                0.0, self.discriminator(s))
        return out

    def _d_step(self, t, s, scale):
        import tensorflow as tf  # GradientTape: TensorFlow backend

        d = self.discriminator
        t, s = _rows(t), _rows(s)
        with tf.GradientTape() as tape:
            loss = _bce(1.0, d(t, training=True)) + _bce(
                0.0, d(ops.stop_gradient(s), training=True))
            scaled = loss * scale
        grads = tape.gradient(scaled, d.trainable_variables)
        self.d_optimizer.apply(grads, d.trainable_variables)
        return loss

    def train_step(self, data):
        import tensorflow as tf  # GradientTape: TensorFlow backend

        if self.mask_optimizer is None:
            raise ValueError("GAL: call compile() before fit().")
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        scale = 1.0 / _num_replicas()
        t = ops.stop_gradient(ops.cast(self.teacher(x, training=False),
                                       "float32"))
        weights, masks = self.student_variables(), self.mask_variables()
        with tf.GradientTape() as tape:
            s_raw = self.student(x, training=True)
            s = ops.cast(s_raw, "float32")
        d_loss = self._d_step(t, s, scale)  # then the student sees new D
        with tape:
            terms = self._student_terms(t, s)
            smooth = terms["mse"] + terms["adv"]
            if self.l1_in_gradient:
                smooth = smooth + terms["sparse"]
            if self.student.losses:
                smooth = smooth + ops.sum(self.student.losses)
            smooth = smooth * scale
        if self.mask_gradient == "training":
            grads = tape.gradient(smooth, weights + masks)
            grads, mask_grads = grads[:len(weights)], grads[len(weights):]
        else:
            grads = tape.gradient(smooth, weights)
            mask_grads = self._inference_mask_grads(x, t, scale, masks)
        self.optimizer.apply(grads, weights)
        self.mask_optimizer.apply(mask_grads, masks)
        return self._logs(dict(terms, d_loss=d_loss), x, y, s_raw,
                          sample_weight)

    def _inference_mask_grads(self, x, t, scale, masks):
        """The smooth terms' gradient w.r.t. the masks on an inference-mode
        forward pass, on FISTA's steps only (zeros in between)."""
        import tensorflow as tf  # GradientTape: TensorFlow backend

        def grads():
            with tf.GradientTape() as tape:
                s = ops.cast(self.student(x, training=False), "float32")
                terms = self._student_terms(t, s)
                smooth = terms["mse"] + terms["adv"]
                if self.l1_in_gradient:
                    smooth = smooth + terms["sparse"]
                smooth = smooth * scale
            out = tape.gradient(smooth, masks)
            return [ops.zeros_like(m) if g is None else g
                    for g, m in zip(out, masks)]

        if self.mask_step == 1:
            return grads()
        step = ops.cast(self.mask_optimizer.iterations, "int64") + 1
        return tf.cond(ops.equal(ops.mod(step, self.mask_step), 0), grads,
                       lambda: [ops.zeros_like(m) for m in masks])

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        t = ops.cast(self.teacher(x, training=False), "float32")
        s_raw = self.student(x, training=False)
        terms = self._student_terms(t, ops.cast(s_raw, "float32"), True)
        return self._logs(terms, x, y, s_raw, sample_weight)

    def _logs(self, terms, x, y, s, sample_weight):
        for name, tracker in self._trackers.items():
            tracker.update_state(terms[name])
        if y is not None:
            self.compute_metrics(x, y, s, sample_weight)
        logs = {}
        for m in self.metrics:
            r = m.result()
            logs.update(r if isinstance(r, dict) else {m.name: r})
        flat = ops.concatenate([ops.reshape(ops.cast(m, "float32"), (-1,))
                                for m in self.mask_variables()])
        logs["zero_masks"] = ops.sum(ops.cast(ops.equal(flat, 0.0),
                                              "float32"))
        logs["mask_mean"] = ops.mean(flat)
        logs["mask_std"] = ops.std(flat)
        return logs
