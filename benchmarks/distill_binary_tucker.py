"""Distillation, binary ensembles and T-Net on Fashion-MNIST (one run).

Parts (``--parts``; the results json is rewritten after each part):

* ``kd``: a dense teacher (``tfcomp.zoo.resnet(depth=8)``, trained ``E``
  epochs, cached under ``~/.cache/tfcomp/distill_binary_tucker``) and two
  compressed students, each fine-tuned ``F`` epochs from the same starting
  weights: plainly (cross entropy) and with ``tfcomp.distill.Distiller``
  at the literature's setting (alpha 0.9 on the soft term, T 10: Hinton et
  al.'s high soft weight, keras.io's KD example) and at the first run's
  alpha 0.5, T 4; both fixed before the run, never chosen on the test
  split. Each row is run with ``seeds`` fine-tune seeds (data order), the
  same seeds for every method. Students: FPGM at 50% of the teacher's MACs
  (``apply_fpgm`` + ``FPGMPruning(target_macs=0.5)`` for one epoch, then
  ``strip_pruning``) and 4-bit QAT (``quantize_model(..., bits=4)``,
  first / last layer 8 bits). Same optimizer (Adam), learning rate,
  batches and BatchNorm re-estimation for all rows. The teacher's
  accuracy and mean max-probability on the fine-tune data are reported
  (how soft its targets are). Target: KD >= plain.
* ``snapshot``: a fresh ResNet-8 trained ``S`` epochs in 3 cosine cycles
  with ``SnapshotDistillation`` (alpha 0.5, T 2) vs the same cycles with
  the distillation weight 0 (same code, LR schedule and epochs), 3 seeds.
  Short cycles: the snapshots under-fit (see the md for why SD loses).
* ``snapshot_diag`` (not in the default parts; about 10 min): why SD
  loses with short cycles, on a validation split of the training data:
  SD vs no distillation vs a control with SD's ``1 - alpha`` label weight
  and no teacher term.
* ``snapshot_long``: the same on ``long_train`` images for
  ``long_epochs`` epochs (cycles of 16 epochs, 80 steps; 60% of the
  image passes of ``snapshot``, for CPU time): long cycles whose last
  snapshot fits its training data, the paper's regime (a well-trained
  teacher, a network that over-fits).
* ``benn``: ``tfcomp.binary.binary_net`` members (binary weights and
  activations), K = 5 trained per mode; the ensembles of the first 1, 3, 5
  members (bagging: independent bootstrap members; boosting: SAMME with
  shrinkage 0.2, weighted resampling and each member warm-started from
  the previous one, the official code's BoostD "seq" defaults; SAMME after
  1, 3, 5 rounds) with hard and soft votes. Member 0 of the bagging
  ensemble is exported as a BISMO descriptor (verified in the simulator)
  and the 5-member bagging ensemble as an int8 TFLite file. Target:
  accuracy rises with members.
* ``tnet``: ``benchmarks/_tnet.py``'s ``run_part`` (T-Net vs dense vs
  channel pruning at equal parameters; skipped with a note when absent).

Deviations (CPU scale): training subsets and a few epochs; small networks;
the numbers compare methods under one budget, not the papers' numbers.

Reproduce:
    python benchmarks/distill_binary_tucker.py --quick        # < 3 min
    nice python benchmarks/distill_binary_tucker.py           # full run

Writes ``distill_binary_tucker.{json,md}`` into ``--out``.

References: Hinton et al. arXiv 1503.02531; Yang et al. (Snapshot
Distillation) arXiv 1812.00123; Zhu et al. (BENN) arXiv 1806.07550;
Kossaifi et al. (T-Net) arXiv 1904.02698.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
from _common import (
    accuracy,
    clone_with_weights,
    compile_model,
    fashion_mnist_subset,
    log,
    parser,
    read_json,
    write_results,
)
from _distill_binary_tucker_report import kd_markdown, stats

import tfcomp
from tfcomp._unpinned import unpinned
from tfcomp.binary import BENN, binary_net
from tfcomp.distill import Distiller, SnapshotDistillation
from tfcomp.pruning import recalibrate_batchnorm
from tfcomp.pruning.fpgm import FPGMPruning
from tfcomp.pruning.wrappers import apply_fpgm, strip_pruning
from tfcomp.quantization import quantize_model

NAME = "distill_binary_tucker"
CACHE = os.path.join(os.path.expanduser("~"), ".cache", "tfcomp", NAME)
PARTS = ("kd", "snapshot", "snapshot_diag", "snapshot_long", "benn",
         "tnet")
DEFAULT_PARTS = ("kd", "snapshot", "snapshot_long", "benn", "tnet")
# train, test, teacher epochs E, fine-tune F, snapshot epochs S, long-cycle
# snapshot images / epochs, BENN member epochs, BENN width, seeds
SETTINGS = {"quick": dict(train=512, test=500, epochs=1, finetune=1,
                          snapshot=3, long_train=128, long_epochs=6,
                          member_epochs=1, width=8, seeds=1),
            "full": dict(train=8000, test=5000, epochs=20, finetune=2,
                         snapshot=6, long_train=600, long_epochs=48,
                         member_epochs=3, width=16, seeds=3)}
BATCH = 128


def _teacher(x, y, epochs, quick):
    """The dense teacher, trained to convergence at this scale: Adam with
    the learning rate decayed to 0 by a cosine (a constant 2e-3 left it
    below its own students: a low-LR fine-tune alone gained 3 points, so
    a distilled student learned from a worse model than itself). Full
    mode trains 20 epochs (fits 99% of its training images); at 6 epochs it
    fit 89% and KD lost to the plain fine-tune of the FPGM student."""
    path = os.path.join(CACHE, f"teacher_r8_n{len(x)}_e{epochs}_cos.keras")
    if os.path.exists(path):
        return keras.saving.load_model(path), 0.0
    t0 = time.time()
    keras.utils.set_random_seed(0)
    steps = epochs * -(-len(x) // BATCH)
    model = compile_model(tfcomp.zoo.resnet(depth=8), keras.optimizers.Adam(
        keras.optimizers.schedules.CosineDecay(2e-3, steps)))
    model.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0)
    os.makedirs(CACHE, exist_ok=True)
    tfcomp._io.atomic_save_keras(model, path)
    return model, time.time() - t0


# KD hyper-parameters of the "+ KD" rows, fixed before any run (never chosen
# on the test split): the literature's (Hinton et al. put a much higher
# weight on the soft term than on the hard labels; keras.io's KD example,
# which follows them, uses 0.1 on the hard loss and T = 10), and the
# previous run's setting (alpha 0.5, T 4), kept as a second row.
KD_SETTINGS = (("KD", 0.9, 10.0), ("KD (alpha 0.5, T 4)", 0.5, 4.0))


def _fine_tune(student, teacher, x, y, epochs, kd=None, seed=0):
    """Plain (``kd=None``) or KD (``kd=(alpha, T)``) fine-tune of
    ``student`` in place; ``seed`` fixes the data order."""
    keras.utils.set_random_seed(seed)
    opt = keras.optimizers.Adam(5e-4)
    if kd:
        model = Distiller(student, teacher, alpha=kd[0], temperature=kd[1])
        model.compile(unpinned(opt))
    else:
        model = compile_model(student, opt)
    t0 = time.time()
    model.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=True,
              verbose=0)
    recalibrate_batchnorm(student, x, batch_size=BATCH)
    return time.time() - t0


def _soft_targets(teacher, x, y, temperatures):
    """How soft the teacher's targets are on the fine-tune data: its
    training accuracy and mean max-probability at T = 1 and each T."""
    z = teacher.predict(x, batch_size=256, verbose=0).astype("float64")
    out = {"train_accuracy": float(np.mean(z.argmax(-1) == y))}
    for t in sorted({1.0, *temperatures}):
        e = np.exp(z / t - (z / t).max(-1, keepdims=True))
        out[f"mean_max_prob_T{t:g}"] = float(
            (e.max(-1) / e.sum(-1)).mean())
    return out


def part_kd(x, y, xt, yt, cfg, quick):
    teacher, t_s = _teacher(x, y, cfg["epochs"], quick)
    t_acc = accuracy(teacher, xt, yt)
    t_macs = tfcomp.profile(teacher).macs
    soft = _soft_targets(teacher, x, y, [t for _, _, t in KD_SETTINGS])
    log(f"kd: teacher acc {t_acc:.4f}; soft targets {soft}")
    # FPGM student (50% MACs)
    keras.utils.set_random_seed(0)
    masked = compile_model(apply_fpgm(clone_with_weights(teacher)),
                           keras.optimizers.Adam(5e-4))
    masked.fit(x, y, batch_size=BATCH, epochs=1, verbose=0,
               callbacks=[FPGMPruning(target_macs=0.5)])
    fpgm = strip_pruning(masked)
    qat = quantize_model(clone_with_weights(teacher), bits=4)
    rows = [{"student": "teacher (dense)", "method": "-", "seed": None,
             "accuracy": t_acc, "macs_ratio": 1.0, "seconds": t_s}]
    # the dense teacher given the students' plain fine-tune: the reference
    # that says whether the teacher was converged (it should not gain)
    dense = clone_with_weights(teacher)
    secs = _fine_tune(dense, teacher, x, y, cfg["finetune"])
    ref = {"student": "teacher + same fine-tune", "method": "plain",
           "seed": 0, "accuracy_before": t_acc,
           "accuracy": accuracy(dense, xt, yt), "macs_ratio": 1.0,
           "seconds": secs}
    log(f"kd: teacher + plain fine-tune {ref['accuracy']:.4f}")
    methods = [("plain", None)] + [(m, (a, t)) for m, a, t in KD_SETTINGS]
    for name, student in (("FPGM 50% MACs", fpgm), ("QAT 4-bit", qat)):
        start = accuracy(student, xt, yt)
        ratio = tfcomp.profile(student).macs / t_macs
        for seed in range(cfg["seeds"]):
            for method, kd in methods:
                if name.startswith("FPGM"):
                    s = clone_with_weights(student)
                else:
                    s = quantize_model(clone_with_weights(teacher), bits=4)
                    s.set_weights(student.get_weights())
                secs = _fine_tune(s, teacher, x, y, cfg["finetune"], kd,
                                  seed=seed)
                rows.append({"student": name, "method": method,
                             "seed": seed, "alpha": kd and kd[0],
                             "temperature": kd and kd[1],
                             "accuracy_before": start,
                             "accuracy": accuracy(s, xt, yt),
                             "macs_ratio": ratio, "seconds": secs})
                log(f"kd: {name} seed {seed} {method}: "
                    f"{rows[-1]['accuracy']:.4f}")
    return {"rows": rows + [ref], "soft_targets": soft,
            "markdown": kd_markdown(rows, ref, soft, t_acc, t_s, cfg,
                                    KD_SETTINGS)}


class _CycleProbe(keras.callbacks.Callback):
    """At each cycle end (the snapshot that teaches the next cycle): the
    student's accuracy on (a subset of) its own training data and its mean
    max-probability at T = 1 and at the distillation T."""

    def __init__(self, sd, x, y, temperature):
        super().__init__()
        self.sd, self.x, self.y, self.t = sd, x[:2000], y[:2000], temperature
        self.rows = []

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations)
        if step % self.sd.cycle_steps:
            return
        z = self.model.student.predict(self.x, batch_size=256, verbose=0)
        z = z.astype("float64")
        row = {"step": step,
               "train_accuracy": float(np.mean(z.argmax(-1) == self.y))}
        for t in (1.0, self.t):
            e = np.exp(z / t - (z / t).max(-1, keepdims=True))
            row[f"mean_max_prob_T{t:g}"] = float(
                (e.max(-1) / e.sum(-1)).mean())
        self.rows.append(row)


def _snapshot_runs(x, y, xt, yt, epochs, seeds, alpha=0.5, temperature=2.0):
    rows = []
    for seed in range(seeds):
        for sd_on in (True, False):
            keras.utils.set_random_seed(seed)
            kd = Distiller(tfcomp.zoo.resnet(depth=8), teacher=None,
                           alpha=alpha if sd_on else 0.0,
                           temperature=temperature)
            kd.compile(unpinned(keras.optimizers.SGD(0.05, momentum=0.9)))
            cb = SnapshotDistillation(cycles=3)
            probe = _CycleProbe(cb, x, y, temperature)
            t0 = time.time()
            kd.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0,
                   callbacks=[cb, probe])
            rows.append({"seed": seed, "method": "Snapshot Distillation"
                         if sd_on else "same cycles, no distillation",
                         "accuracy": accuracy(kd.student, xt, yt),
                         "teacher_swaps": cb.boundaries,
                         "cycle_ends": probe.rows,
                         "seconds": time.time() - t0})
            log(f"snapshot: n={len(x)} seed {seed} {rows[-1]['method']}: "
                f"{rows[-1]['accuracy']:.4f}; cycle ends {probe.rows}")
    md = [f"ResNet-8, {len(x)} training images, {epochs} epochs in 3 cosine "
          f"cycles of {epochs // 3} epochs (SGD 0.05, momentum 0.9, "
          f"batch {BATCH}); Snapshot Distillation alpha {alpha}, T "
          f"{temperature:g}; the baseline is the same code with alpha 0. "
          "\"teacher\" columns: the snapshot at the end of cycles 1 and 2 "
          "(the teachers of cycles 2 and 3) on up to 2000 of its training "
          "images, mean over seeds.", "",
          "| method | seeds | mean acc | std | per seed | teacher train acc "
          "(end cycle 1, 2) | teacher max-prob T 1 | s / run |",
          "|---|---|---|---|---|---|---|---|"]
    for m in ("Snapshot Distillation", "same cycles, no distillation"):
        sel = [r for r in rows if r["method"] == m]
        ends = [[c for c in r["cycle_ends"]][:2] for r in sel]
        tr = np.mean([[c["train_accuracy"] for c in e] for e in ends], 0)
        mp = np.mean([[c["mean_max_prob_T1"] for c in e] for e in ends], 0)
        md.append(f"| {m} | {len(sel)} | "
                  f"{stats([r['accuracy'] for r in sel])} | "
                  + ", ".join(f"{v:.3f}" for v in tr) + " | "
                  + ", ".join(f"{v:.3f}" for v in mp) + " | "
                  f"{np.mean([r['seconds'] for r in sel]):.0f} |")
    acc = {m: [r["accuracy"] for r in rows if r["method"] == m]
           for m in ("Snapshot Distillation", "same cycles, no distillation")}
    diff = np.subtract(*acc.values())
    md += ["", f"* SD - no distillation = {diff.mean() * 100:+.2f} points "
           "(paired seeds: " + ", ".join(f"{d * 100:+.2f}" for d in diff)
           + ")"]
    return {"rows": rows, "markdown": "\n".join(md)}


def part_snapshot(x, y, xt, yt, cfg, quick):
    """Short cycles: the first run's regime (the snapshots underfit)."""
    return _snapshot_runs(x, y, xt, yt, cfg["snapshot"], cfg["seeds"])


def part_snapshot_long(x, y, xt, yt, cfg, quick):
    """Long cycles on a small training set, so each cycle's last snapshot
    fits its training data (the paper's regime: a well-trained teacher)."""
    n = cfg["long_train"]
    return _snapshot_runs(x[:n], y[:n], xt, yt, cfg["long_epochs"],
                          cfg["seeds"])


class LabelWeightControl(Distiller):
    """Control for ``snapshot_diag``: SD's ``(1 - alpha)`` weight on the
    labels in cycles 2.., without the teacher term."""

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                     training=True):
        a = self.alpha * keras.ops.cast(self.kd_scale, "float32")
        return (1.0 - a) * self._hard_loss(y, y_pred, sample_weight)


def part_snapshot_diag(x, y, xt, yt, cfg, quick):
    """Why SD loses with short cycles, on a validation split of the
    TRAINING data (the test split is not used): train on x[:6000] (quick:
    384), validate on the next 2000 (quick: 128); seed 0, the ``snapshot``
    settings; SD vs no distillation vs the label-weight-only control."""
    n, m = (384, 128) if quick else (6000, 2000)
    xv, yv = x[n:n + m], y[n:n + m]
    rows = []
    for name, cls, alpha in (("no distillation", Distiller, 0.0),
                             ("SD (alpha 0.5, T 2)", Distiller, 0.5),
                             ("control: label weight 1 - alpha in cycles "
                              "2-3, no teacher term", LabelWeightControl,
                              0.5)):
        keras.utils.set_random_seed(0)
        kd = cls(tfcomp.zoo.resnet(depth=8), teacher=None, alpha=alpha,
                 temperature=2.0)
        kd.compile(unpinned(keras.optimizers.SGD(0.05, momentum=0.9)))
        cb = SnapshotDistillation(cycles=3)
        probe = _CycleProbe(cb, x[:n], y[:n], 2.0)
        kd.fit(x[:n], y[:n], batch_size=BATCH, epochs=cfg["snapshot"],
               verbose=0, callbacks=[cb, probe])
        rows.append({"method": name, "val_accuracy": accuracy(
            kd.student, xv, yv), "cycle_ends": probe.rows})
        log(f"snapshot_diag: {name}: {rows[-1]}")
    md = [f"Validation split of the training data ({n} train / {m} val "
          f"images), seed 0, {cfg['snapshot']} epochs in 3 cycles; cycle "
          "ends: accuracy on the training images, mean max-probability.",
          "", "| run | val acc | cycle ends: train acc | max-prob T 1 |",
          "|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['method']} | {r['val_accuracy']:.4f} | "
                  + ", ".join(f"{c['train_accuracy']:.3f}"
                              for c in r["cycle_ends"]) + " | "
                  + ", ".join(f"{c['mean_max_prob_T1']:.3f}"
                              for c in r["cycle_ends"]) + " |")
    return {"rows": rows, "markdown": "\n".join(md)}


def part_benn(x, y, xt, yt, cfg, quick):
    rows, notes = [], []

    def build():
        m = binary_net(x.shape[1:], 10, width=cfg["width"])
        m.compile(unpinned(keras.optimizers.Adam(2e-3)),
                  keras.losses.SparseCategoricalCrossentropy(True),
                  metrics=["accuracy"])
        return m

    exports = {}
    for mode in ("bagging", "boosting"):
        t0 = time.time()
        benn = BENN(build, members=5, mode=mode, seed=0).fit(
            x, y, epochs=cfg["member_epochs"], batch_size=BATCH)
        secs = time.time() - t0
        notes += [f"{mode}: {n}" for n in benn.notes]
        for k in (1, 3, 5):
            sub = BENN(build, members=k, mode=mode)
            sub.members_ = benn.members_[:k]
            sub.member_weights_ = benn.member_weights_[:k]
            if sum(sub.member_weights_) <= 0:
                sub.member_weights_ = [1.0] * k
            for vote in ("hard", "soft"):
                acc = accuracy(sub.ensemble(vote), xt, yt)
                rows.append({"mode": mode, "members": k, "vote": vote,
                             "accuracy": acc, "train_seconds_all_5": secs})
            log(f"benn: {mode} K={k}: hard {rows[-2]['accuracy']:.4f} "
                f"soft {rows[-1]['accuracy']:.4f}")
        if mode == "bagging":
            work = tempfile.mkdtemp(prefix="tfcomp-benn-")
            one = BENN(build, members=1, mode=mode)
            one.members_, one.member_weights_ = benn.members_[:1], [1.0]
            rep = one.export_bitserial(work, x[:64], verify_x=xt[:64])[0]
            exports["bismo_member0"] = {
                "simulator_exact": rep.simulator_exact,
                "top1_agreement": rep.top1_agreement,
                "blob_bytes": rep.blob_bytes, "cycles": rep.cycles,
                "notes": rep.notes}
            tfl = benn.export_tflite(os.path.join(work, "benn.tflite"),
                                     x[:256], verify_data=xt[:256],
                                     min_agreement=0.0)
            exports["tflite_int8_5_members"] = {
                "bytes": os.path.getsize(os.path.join(work, "benn.tflite")),
                "top1_agreement": getattr(tfl, "top1_agreement", None)}
    md = ["| mode | members | hard vote | soft vote |", "|---|---|---|---|"]
    for mode in ("bagging", "boosting"):
        for k in (1, 3, 5):
            h, s = (r["accuracy"] for r in rows
                    if r["mode"] == mode and r["members"] == k)
            md.append(f"| {mode} | {k} | {h:.4f} | {s:.4f} |")
    b = exports.get("bismo_member0", {})
    t = exports.get("tflite_int8_5_members", {})
    md += ["", f"* BISMO descriptor of bagging member 0: simulator == integer "
           f"reference: {b.get('simulator_exact')}, top-1 agreement with "
           f"Keras {b.get('top1_agreement')}, {b.get('blob_bytes')} weight "
           f"bytes, {b.get('cycles')} cycles.",
           f"* int8 TFLite of the 5-member bagging ensemble: "
           f"{t.get('bytes')} bytes, top-1 agreement {t.get('top1_agreement')}."]
    for mode in ("bagging", "boosting"):
        hard = [r["accuracy"] for r in rows if r["mode"] == mode
                and r["vote"] == "hard"]
        md.append(f"* {mode}: accuracy rises with members (hard vote): "
                  f"{'met' if hard[0] <= hard[1] <= hard[2] else 'not met'}")
    md += [f"* {n}" for n in notes]
    return {"rows": rows, "exports": exports, "markdown": "\n".join(md)}


def part_tnet(x, y, xt, yt, cfg, quick):
    here = os.path.dirname(os.path.abspath(__file__))
    if not os.path.exists(os.path.join(here, "_tnet.py")):
        return {"rows": [], "markdown": "skipped: benchmarks/_tnet.py is "
                "not present"}
    sys.path.insert(0, here)
    import _tnet

    res = _tnet.run_part((x, y, xt, yt), quick)
    return {"rows": res.get("rows", []), "markdown": res["markdown"],
            "settings": res.get("settings")}


# Findings written from the full run's numbers (shown in full mode only).
NOTES = {
    "kd": (
        "Checked in the library (tests/distill/test_distiller.py): the loss "
        "is (1 - alpha) CE + alpha T^2 KL(teacher_T || student_T) by hand, "
        "the teacher runs in inference mode (its BatchNorm statistics do "
        "not move), the student's BatchNorm trains. Root cause of the "
        "earlier FPGM loss (KD -0.76 / -0.32 points below plain in every "
        "seed): the teacher was not converged. Trained 6 epochs it fit "
        "only 89% of its own training images (test 85.4%) and was 3.2 "
        "points above the plain-fine-tuned half-MACs student, so its soft "
        "targets were wrong on 11% of the images the student fine-tunes "
        "on. Trained 20 epochs (this run: 99.4% of its training images, "
        "test 86.9%; the same fine-tune no longer improves it), KD >= "
        "plain holds for both students at both settings: FPGM +0.02 "
        "(alpha 0.9, T 10; within noise, 2 of 3 seeds) and +0.23 points "
        "(alpha 0.5, T 4; every seed), 4-bit QAT +0.65 and +0.72. Takeaway "
        "for users, as in Beyer et al. (CVPR 2022, 'a good teacher is "
        "patient and consistent'): distil from a converged teacher."),
    "snapshot": (
        "Checked in the library (tests/distill/test_snapshot.py): the "
        "teacher is a separate copy of the student's weights taken after "
        "the last step of each cycle (its outputs equal the student's, "
        "BatchNorm statistics included, at the boundary, and stay fixed "
        "through the next cycle), it runs in inference mode, the LR "
        "restarts at each cycle, and the baseline is the same code with "
        "alpha 0. No bug: the loss comes from the regime, see below."),
    "snapshot_diag": (
        "Reading: in these short cycles the network under-fits (training "
        "accuracy = validation accuracy, 0.84 at the end) and each teacher "
        "is wrong on 20-25% of its own training images (max-probability "
        "0.65-0.76, far from one-hot). SD's loss (1 - alpha) CE + alpha "
        "T^2 KL halves the step on the labels in cycles 2-3 (alpha 0.5), "
        "and the teacher term adds little: the control with the same "
        "label weight and no teacher loses about as much (-2.75 points) "
        "as SD (-3.15). With long cycles, where the later snapshots reach "
        "0.95 and 1.00 training accuracy (the paper's well-trained teacher), "
        "the gap shrinks to -1.0 point (one seed), and SD acts as the "
        "regularizer the paper describes (training accuracy 0.94 instead "
        "of 1.00) without, at this scale, a better validation accuracy. "
        "The paper's gains are on CIFAR-100 / ImageNet over hundreds of "
        "epochs, where over-fitting is the problem SD addresses."),
    "snapshot_long": (
        "Long cycles: the plain snapshots fit their training images (0.97 "
        "at the end of cycle 2, 1.00 at the end; test 0.75), so the "
        "network over-fits, which is SD's regime. SD holds the training "
        "accuracy down (0.90 at the end of cycle 2), the regularization "
        "the paper describes. The gap to no distillation shrinks from "
        "-2.41 (short cycles) to -0.87 points, but SD is still below in "
        "all 3 seeds at this scale. Its first teacher (the end of cycle 1) "
        "fits only 82% of its training images: with equal cycles the "
        "first teacher is the least trained, and the paper's "
        "well-trained-teacher condition holds only later."),
}


def render(result: dict) -> str:
    titles = {"kd": "Knowledge distillation of compressed students",
              "snapshot": "Snapshot Distillation (3 short cycles)",
              "snapshot_diag": "Why Snapshot Distillation loses with short "
                               "cycles (validation split)",
              "snapshot_long": "Snapshot Distillation (3 long cycles)",
              "benn": "BENN: binary ensembles",
              "tnet": "T-Net"}
    out = [f"# {NAME}", "", f"Mode: {result['mode']}; settings "
           f"{result['settings']}; total {result['seconds']:.0f} s.", "",
           "Reproduce: `python benchmarks/distill_binary_tucker.py"
           f"{' --quick' if result['mode'] == 'quick' else ''}`", ""]
    for p in PARTS:
        if p in result["parts"]:
            part = result["parts"][p]
            out += [f"## {titles[p]}", "",
                    f"({part.get('seconds', 0):.0f} s)", "",
                    part["markdown"], ""]
            if result["mode"] == "full" and p in NOTES:
                out += [NOTES[p], ""]
    return "\n".join(out)


def main(argv=None) -> dict:
    p = parser(__doc__)
    p.add_argument("--quick", action="store_true", help="smoke run")
    p.add_argument("--parts", nargs="+", choices=PARTS,
                   default=list(DEFAULT_PARTS))
    args = p.parse_args(argv)
    mode = "quick" if args.quick else "full"
    cfg = SETTINGS[mode]
    name = NAME + ("_quick" if args.quick else "")
    path = os.path.join(args.out, f"{name}.json")
    result = {"mode": mode, "settings": cfg, "parts": {}, "seconds": 0.0}
    if os.path.exists(path):  # rerun of some parts keeps the others
        old = read_json(path)
        if old.get("mode") == mode:
            result["parts"] = old.get("parts", {})
    t_all = time.time()
    (x, y), (xt, yt) = fashion_mnist_subset(seed=0)
    funcs = {"kd": part_kd, "snapshot": part_snapshot,
             "snapshot_diag": part_snapshot_diag,
             "snapshot_long": part_snapshot_long, "benn": part_benn,
             "tnet": part_tnet}
    for part in args.parts:
        t0 = time.time()
        log(f"part {part}")
        if part == "tnet":
            res = funcs[part](x, y, xt, yt, cfg, args.quick)
        else:
            res = funcs[part](x[:cfg["train"]], y[:cfg["train"]],
                              xt[:cfg["test"]], yt[:cfg["test"]], cfg,
                              args.quick)
        res["seconds"] = time.time() - t0
        result["parts"][part] = res
        result["seconds"] = time.time() - t_all
        write_results(args.out, name, result, render(result),
                      default=lambda o: o.tolist() if hasattr(o, "tolist")
                      else str(o))
        log(f"part {part} done in {res['seconds']:.0f} s")
    return result


if __name__ == "__main__":
    main()
