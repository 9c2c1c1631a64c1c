"""DNAS training: the cost-aware loss, temperature annealing, the
alternating weight / architecture search and the final selection (see
:mod:`tfcomp.quantization.dnas`).

Reference: Wu et al., arXiv:1812.00090.

Example:
    >>> from tfcomp.quantization.dnas_search import search
    >>> hist = search(sn, x_train, y_train, epochs=4)
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from tfcomp._batches import index_rows, is_multi, model_arrays, rows
from tfcomp._finetune import data_order, finetune_loss, outputs_logits
from tfcomp._score import score
from tfcomp._unpinned import unpinned
from tfcomp.quantization.dnas_supernet import (
    _info,
    expected_bits,
    expected_cost,
    mixed_layers,
)
from tfcomp.quantization.dynamic_bits import PolicyModels

__all__ = ["DNASLoss", "TemperatureAnnealing", "search", "select_best"]


class DNASLoss(keras.losses.Loss):
    """``CE * beta * (log E[cost])^gamma`` for a DNAS supernet.

    Args:
        supernet: the model from ``build_supernet``.
        beta: multiplier of the cost factor.
        gamma: exponent of the cost factor (the accuracy / cost trade-off).
        from_logits: whether the model outputs logits (of the default
            sparse cross entropy).
        task_loss: the loss in place of CE (a Keras loss or loss function:
            a binary cross entropy, a regression's squared error; not in
            the paper, which classifies); None: sparse cross entropy.
        name: loss name.

    Reference: Wu et al., arXiv:1812.00090, eq. for ``C(Cost(a))``.

    Example:
        >>> sn.compile("adam", loss=DNASLoss(sn, beta=0.2, gamma=0.6))
    """

    def __init__(self, supernet, beta: float = 0.2, gamma: float = 0.6,
                 from_logits: bool = True, task_loss=None,
                 name: str = "dnas_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        _info(supernet)
        if not float(beta) > 0:
            raise ValueError(f"beta must be > 0. Received: beta={beta}")
        if not float(gamma) >= 0:
            raise ValueError(f"gamma must be >= 0. Received: gamma={gamma}")
        self.supernet = supernet
        self.beta = float(beta)
        self.gamma = float(gamma)
        self.from_logits = bool(from_logits)
        self.task_loss = keras.losses.get(task_loss) if isinstance(
            task_loss, (str, dict)) else task_loss

    def cost_factor(self):
        c = ops.maximum(expected_cost(self.supernet), math.e)
        return self.beta * ops.power(ops.log(c), self.gamma)

    def call(self, y_true, y_pred):
        task = self.task_loss
        if task is None:
            ce = keras.losses.sparse_categorical_crossentropy(
                y_true, y_pred, from_logits=self.from_logits)
        else:  # a Loss object's call is per sample, as a loss function's
            ce = (task.call if isinstance(task, keras.losses.Loss)
                  else task)(y_true, y_pred)
        return ce * self.cost_factor()

    def get_config(self):
        return {"name": self.name, "beta": self.beta, "gamma": self.gamma,
                "from_logits": self.from_logits,
                "task_loss": None if self.task_loss is None
                else keras.losses.serialize(self.task_loss)}


class TemperatureAnnealing(keras.callbacks.Callback):
    """Sets ``tau = max(initial * decay^epoch, minimum)`` on every mixed layer
    at the start of each epoch.

    Args:
        initial: temperature at epoch 0 (FBNet: 5.0).
        decay: per-epoch factor (FBNet: 0.956).
        minimum: floor.

    Example:
        >>> sn.fit(x, y, callbacks=[TemperatureAnnealing(5.0, 0.956)])
    """

    def __init__(self, initial: float = 5.0, decay: float = 0.956,
                 minimum: float = 0.05):
        super().__init__()
        if not float(initial) > 0:
            raise ValueError(f"initial must be > 0. Received: initial="
                             f"{initial}")
        if not 0 < float(decay) <= 1:
            raise ValueError(f"decay must be in (0, 1]. Received: decay="
                             f"{decay}")
        self.initial = float(initial)
        self.decay = float(decay)
        self.minimum = float(minimum)
        self.history = []

    def set_model(self, model):
        super().set_model(model)
        if not mixed_layers(model):
            raise ValueError(
                f"TemperatureAnnealing needs a DNAS supernet; model "
                f"{model.name!r} has no mixed layers.")

    def temperature(self, epoch: int) -> float:
        return max(self.initial * self.decay ** int(epoch), self.minimum)

    def on_epoch_begin(self, epoch, logs=None):
        tau = self.temperature(epoch)
        for layer in mixed_layers(self.model):
            layer.temperature.assign(tau)
        self.history.append((int(epoch), tau))

    def get_config(self):
        return {"initial": self.initial, "decay": self.decay,
                "minimum": self.minimum}


class _Variables:
    """A variable list Keras does not track (a phase's own variables)."""

    def __init__(self, variables):
        self.list = list(variables)


class _PhaseTrainer(keras.Model):
    """One DNAS phase: trains ``variables`` of ``net`` only. Each phase is
    compiled once, so its train step is traced once for the whole search
    (compiling the supernet per epoch and phase traced it 2x``epochs``
    times: most of a short search's time, and a pinned graph each)."""

    def __init__(self, net, variables, **kwargs):
        super().__init__(**kwargs)
        self.net = net
        self._phase = _Variables(variables)
        # the epoch's mean loss: compute_loss alone leaves fit's "loss" 0
        self.phase_loss = keras.metrics.Mean(name="loss")

    def call(self, x, training=None):
        return self.net(x, training=training)

    def train_step(self, data):
        import tensorflow as tf  # GradientTape: TensorFlow backend

        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        variables = self._phase.list
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(x=x, y=y, y_pred=y_pred,
                                     sample_weight=sample_weight)
        self.optimizer.apply(tape.gradient(loss, variables), variables)
        self.phase_loss.update_state(loss)
        logs = self.compute_metrics(x, y, y_pred, sample_weight)
        return {**logs, "loss": self.phase_loss.result()}


class _OnNet(keras.callbacks.Callback):
    """Forwards fit's events to ``callback`` with the supernet as its
    model (fit runs on a :class:`_PhaseTrainer` around it)."""

    def __init__(self, callback, net):
        super().__init__()
        self.callback = callback
        callback.set_model(net)

    def on_train_begin(self, logs=None):
        self.callback.on_train_begin(logs)

    def on_train_end(self, logs=None):
        self.callback.on_train_end(logs)

    def on_epoch_begin(self, epoch, logs=None):
        self.callback.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self.callback.on_epoch_end(epoch, logs)


def search(supernet: keras.Model, x, y, epochs: int = 4,
           batch_size: int = 64, beta: float = 0.2, gamma: float = 0.6,
           weight_optimizer=None, theta_optimizer=None,
           weight_fraction: float = 0.8, annealing=None, seed: int = 0,
           verbose: int = 1) -> dict:
    """Alternating DNAS search: weights on 80% of the data, theta on 20%.

    Each epoch runs one pass of weight updates (theta frozen) on the weight
    split, then one pass of theta updates (weights frozen) on the theta
    split, both with ``DNASLoss``. The temperature follows ``annealing``
    (its callbacks see the supernet as their model). Each phase is compiled
    once and its train step traced once for the whole search.

    Args:
        supernet: from ``build_supernet``.
        x, y: training inputs and integer labels (arrays); or 0 / 1 labels
            of a one-unit binary classifier, or float targets of a
            regression model (the loss is then ``finetune_loss``'s: binary
            cross entropy, the compiled loss or squared error).
        epochs: search epochs.
        batch_size: batch size of both phases.
        beta, gamma: ``DNASLoss`` coefficients.
        weight_optimizer: optimizer of the weights (default Adam(1e-3)).
        theta_optimizer: optimizer of theta (default Adam(0.01), FBNet).
        weight_fraction: share of the data for weight updates (paper: 0.8).
        annealing: a ``TemperatureAnnealing`` (default 5.0 * 0.956^epoch).
        seed: seed of the data split.
        verbose: Keras verbosity of the two ``fit`` calls per epoch.

    Returns:
        ``{"epochs": [{"epoch", "temperature", "weight_loss",
        "theta_loss", "expected_cost", "expected_w_bits",
        "expected_a_bits"}]}``.

    Reference: Wu et al., arXiv:1812.00090.

    Example:
        >>> hist = search(sn, x_train, y_train, epochs=4)
    """
    _info(supernet)
    if not 0 < float(weight_fraction) < 1:
        raise ValueError(
            "weight_fraction must be in (0, 1). Received: "
            f"weight_fraction={weight_fraction}")
    if int(epochs) < 1:
        raise ValueError(f"epochs must be >= 1. Received: epochs={epochs}")
    x = _model_inputs(supernet, x)
    y = np.asarray(y)
    if rows(x) != len(y):
        raise ValueError(
            f"x and y lengths differ: {rows(x)} != {len(y)}")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(rows(x))
    cut = int(round(rows(x) * float(weight_fraction)))
    if cut < 1 or cut >= rows(x):
        raise ValueError(
            f"Too few samples ({rows(x)}) to split {weight_fraction:.0%} / "
            f"{1 - weight_fraction:.0%}.")
    xw, yw = index_rows(x, perm[:cut]), y[perm[:cut]]
    xt, yt = index_rows(x, perm[cut:]), y[perm[cut:]]
    opt_w = weight_optimizer or keras.optimizers.Adam(1e-3)
    opt_t = theta_optimizer or keras.optimizers.Adam(0.01)
    annealing = annealing or TemperatureAnnealing()
    thetas = [layer.theta for layer in mixed_layers(supernet)]
    theta_ids = {id(v) for v in thetas}
    weight_vars = [v for v in supernet.trainable_variables
                   if id(v) not in theta_ids]
    task = finetune_loss(supernet, y)  # sparse CE unless y says otherwise
    loss = DNASLoss(supernet, beta=beta, gamma=gamma,
                    from_logits=outputs_logits(supernet),
                    task_loss=None if isinstance(
                        task, keras.losses.SparseCategoricalCrossentropy)
                    else task)
    phases = []
    for variables, opt in ((weight_vars, opt_w), (thetas, opt_t)):
        trainer = _PhaseTrainer(supernet, variables,
                                name=f"{supernet.name}_dnas_phase")
        trainer.compile(optimizer=opt, loss=loss, jit_compile=False)
        if not opt.built:  # slots made inside the first trace: traced twice
            opt.build(variables)
        phases.append(trainer)
    annealing_events = [_OnNet(annealing, supernet)]
    history = []
    for epoch in range(int(epochs)):
        hw = phases[0].fit(xw, yw, batch_size=batch_size, epochs=epoch + 1,
                           initial_epoch=epoch, callbacks=annealing_events,
                           verbose=verbose)
        ht = phases[1].fit(xt, yt, batch_size=batch_size, epochs=epoch + 1,
                           initial_epoch=epoch, verbose=verbose)
        eb = expected_bits(supernet)
        history.append({
            "epoch": epoch,
            "temperature": annealing.temperature(epoch),
            "weight_loss": float(hw.history["loss"][-1]),
            "theta_loss": float(ht.history["loss"][-1]),
            "expected_cost": float(keras.ops.convert_to_numpy(
                expected_cost(supernet))),
            "expected_w_bits": eb["w_bits"],
            "expected_a_bits": eb["a_bits"],
        })
    return {"epochs": history}


def select_best(model: keras.Model, architectures, x, y, validation_data,
                epochs: int = 1, batch_size: int = 64,
                learning_rate: float = 5e-4, from_logits: bool | None = None,
                seed: int = 0, verbose: int = 0):
    """Trains each architecture briefly and keeps the most accurate one.

    DNAS samples a few architectures from ``P_theta``, trains them and keeps
    the best; this does that with a short quantization-aware fine-tune of
    the float ``model`` per architecture (``quantize_model`` + Adam), scored
    by top-1 accuracy on ``validation_data`` (use held-out *training*
    images, not the test set). Duplicate architectures are trained once.

    Args:
        model: the float model the supernet was built from.
        architectures: ``{layer: (w_bits, a_bits)}`` dicts (``derive`` /
            ``sample_architectures``).
        x, y: training arrays of the short fine-tune.
        validation_data: ``(x_val, y_val)`` arrays.
        epochs: fine-tune epochs per architecture (paper: full training;
            one epoch at CPU scale).
        batch_size, learning_rate: of the fine-tune.
        from_logits: whether the model outputs logits; None reads its
            last layer (a softmax: probabilities).
        seed: every architecture is trained from the same seed, on the
            same data order. One QAT model serves them all (its bits
            made dynamic, its initial weights and optimizer state restored
            per architecture): its training graph is traced once (about 4x
            faster per architecture on a small CPU model, where tracing a
            new QAT graph costs more than a short fine-tune).
        verbose: Keras verbosity of ``fit``.

    Returns:
        ``(best_bits, scores)``: the winning architecture and a list of
        ``{"bits", "val_accuracy"}`` in input order.

    Reference: Wu et al., arXiv:1812.00090 (sample, train, keep the best).

    Example:
        >>> archs = [derive(sn, budget=b)] + [
        ...     derive(sn, "sample", seed=s, budget=b) for s in range(4)]
        >>> bits, scores = select_best(float_model, archs, x, y, (xv, yv))
    """
    archs = [dict(a) for a in architectures]
    if not archs:
        raise ValueError("architectures must be a non-empty list of "
                         "{layer: (w_bits, a_bits)} dicts. Received: "
                         f"{architectures!r}")
    if int(epochs) < 1:
        raise ValueError(f"epochs must be >= 1. Received: epochs={epochs}")
    xv, yv = _model_inputs(model, validation_data[0]), np.asarray(
        validation_data[1])
    x = _model_inputs(model, x)

    def compile_fn(q):
        q.compile(optimizer=unpinned(keras.optimizers.Adam(
                      float(learning_rate))),
                  loss=finetune_loss(q, y, from_logits), jit_compile=False)

    keras.utils.set_random_seed(int(seed))
    models = PolicyModels(model, compile_fn)
    seen, scores = {}, []
    for bits in archs:
        key = tuple(sorted((k, tuple(v)) for k, v in bits.items()))
        if key not in seen:
            q = models.model_for(bits)
            order = data_order(rows(x), None, int(batch_size), int(epochs),
                               seed)  # the same order for every candidate
            q.fit(index_rows(x, order), np.asarray(y)[order],
                  batch_size=int(batch_size), epochs=1, shuffle=False,
                  verbose=verbose)
            seen[key] = score(q, xv, yv, batch_size=500)  # per pixel too
        scores.append({"bits": bits, "val_accuracy": seen[key]})
    best = max(range(len(scores)), key=lambda i: scores[i]["val_accuracy"])
    return archs[best], scores


def _model_inputs(model, x):
    """``x`` as ``model`` takes it: an array, or for a model with several
    inputs a list of arrays in ``model.inputs`` order (from a list, a
    tuple or a dict by input name, as ``model.fit`` takes them)."""
    if is_multi(model):
        return model_arrays(x, model, name="x")[0]
    return np.asarray(x)
