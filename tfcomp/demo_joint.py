"""The demo's joint stage (``make demo``, :func:`tfcomp.demo.stage_joint`):
kept channels and bits chosen together (:func:`tfcomp.joint.compress`) on
the baseline, at the cost the prune -> HAQ chain (FPGM, or AMC with
``DEMO_SEARCH=1``) reached, then the chain's final fine-tune, so the two
answers can be compared at equal cost.

Budget: the chain's Bit Fusion (edge) 8/8-relative latency,
``latency(pruned, HAQ policy) / latency(baseline, 8/8)``. Fine-tune: the
chain's final stage (QAT, ``DEMO_QAT_EPOCHS`` epochs of Adam 1e-4, batch
128); the joint model gets no float fine-tune (its pruned model is only
refit by least squares), while the chain's pruned model had
``DEMO_PRUNE_EPOCHS`` epochs of training (FPGM soft pruning / AMC's
fine-tune), so the comparison favours the chain. Activations take the
weights' width (a = w; HAQ picks them apart). Artifacts (atomic):
``joint.json`` (plan, bits, costs, the solver's gap), ``joint_plan.json``
(``tfcomp prune --apply-plan``), ``joint_policy.json`` (``tfcomp quantize
--policy``) and ``joint_bitfusion.json`` (descriptor, simulator checked
on 64 images).

Example:
    >>> params = joint_params(ctx, budget=0.83)
    >>> qat, info = build_joint(ctx, params)
"""

from __future__ import annotations

import json
import math
import os

__all__ = ["build_joint", "joint_params", "verdict", "write_artifacts"]

#: Calibration images for the sensitivities and the least-squares refit.
SAMPLES = 256


def joint_params(ctx, budget: float) -> dict:
    """The stage's cache key: everything :func:`build_joint` depends on."""
    return {"method": "joint", "hardware": "bitfusion-edge",
            "resource": "latency", "budget": math.floor(float(budget) * 1e6) / 1e6,
            "budget_is": "the prune -> HAQ chain's fraction of the dense "
                         "8/8 latency", "samples": SAMPLES, "a_bits": "same",
            "qat_epochs": ctx.qat_epochs, "lr": 1e-4,
            "pruned_by": "amc" if ctx.search else "fpgm"}


def build_joint(ctx, params: dict) -> tuple:
    """``(QAT model, info)``: compress, quantize, calibrate, QAT fine-tune.

    ``info`` holds the JSON-able :class:`~tfcomp.joint.JointResult` and the
    descriptor check; raises ValueError when the budget is unreachable.
    """
    import keras

    from tfcomp.demo_common import qat_finetune
    from tfcomp.export.bitserial import export_bitserial
    from tfcomp.hardware import BitFusion
    from tfcomp.joint import compress

    n = SAMPLES
    print(f"[joint] channels + bits together on Bit Fusion (edge), budget "
          f"{params['budget']:.1%} of the dense 8/8 latency (the prune -> HAQ"
          f" chain's cost); sensitivities on {n} training images")
    res = compress(ctx.models["baseline"], (ctx.x_train[:n],
                                            ctx.y_train[:n]),
                   hardware=BitFusion("edge"), resource="latency",
                   budget=params["budget"], num_samples=n, seed=ctx.seed)
    print(res.summary())
    keras.utils.set_random_seed(ctx.seed)
    qat = qat_finetune(ctx, res.model, res.bits, params["lr"],
                       params["qat_epochs"],
                       f"[joint] QAT fine-tune (the chain's final stage), "
                       f"{params['qat_epochs']} epoch(s)")
    rep = export_bitserial(qat, os.path.join(ctx.out, "joint_bitfusion.json"),
                           hardware="bitfusion",
                           calibration_data=ctx.x_train[:256],
                           verify_x=ctx.x_test[:64])
    print(f"[joint] Bit Fusion descriptor: {rep.size_bytes:,} B, "
          f"{rep.latency_s * 1e3:.4f} ms, simulator == integer reference: "
          f"{rep.simulator_exact}, top-1 agreement {rep.top1_agreement:.4f}")
    return qat, {"result": res.to_dict(), "descriptor": {
        "path": os.path.basename(rep.path), "bytes": rep.size_bytes,
        "latency_ms": rep.latency_s * 1e3,
        "simulator_exact": rep.simulator_exact,
        "top1_agreement": rep.top1_agreement}}


def write_artifacts(out: str, info: dict) -> list:
    """Writes the joint plan / policy / report next to the demo's other
    artifacts (atomically); returns the paths."""
    from tfcomp._io import atomic_write_json

    res = info["result"]
    files = {"joint.json": res, "joint_plan.json": res["plan"],
             "joint_policy.json": res["bits"]}
    paths = []
    for name, obj in files.items():
        path = os.path.join(out, name)
        atomic_write_json(path, json.loads(json.dumps(obj, default=str)))
        paths.append(path)
    return paths


def verdict(chain: dict, joint: dict, chain_name: str = "FPGM -> HAQ"
            ) -> tuple:
    """``(winner, sentence)`` comparing two ``{"accuracy", "accel_ms",
    "cost"}`` dicts (the joint point costs no more than the chain's): the
    more accurate wins; a tie (|delta| < 0.1 point) goes to the cheaper.
    ``winner`` is ``"joint"`` or ``chain_name``.

    Example:
        >>> verdict({"accuracy": .87, "accel_ms": .08, "cost": .83},
        ...         {"accuracy": .88, "accel_ms": .078, "cost": .82})[0]
        'joint'
    """
    delta = joint["accuracy"] - chain["accuracy"]
    if abs(delta) < 1e-3:
        winner = "joint" if joint["accel_ms"] < chain["accel_ms"] else \
            chain_name
        why = "equal accuracy (within 0.1 point), lower latency"
    else:
        winner = "joint" if delta > 0 else chain_name
        why = f"{abs(delta) * 100:.2f} points more accurate"
    text = (f"At {chain['cost']:.1%} of the dense 8/8 Bit Fusion (edge) "
            f"latency: {chain_name} {chain['accuracy']:.4f} top-1 "
            f"({chain['accel_ms']:.4f} ms), joint {joint['accuracy']:.4f} "
            f"({joint['accel_ms']:.4f} ms, {joint['cost']:.1%}): {winner} is "
            f"better ({why}).")
    return winner, text
