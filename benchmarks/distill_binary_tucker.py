"""Distillation, binary ensembles and T-Net on Fashion-MNIST (one run).

Parts (``--parts``; the results json is rewritten after each part):

* ``kd``: a dense teacher (``tfcomp.zoo.resnet(depth=8)``, trained ``E``
  epochs, cached under ``~/.cache/tfcomp/distill_binary_tucker``) and two
  compressed students, each fine-tuned ``F`` epochs twice from the same
  starting weights: plainly (cross entropy) and with
  ``tfcomp.distill.Distiller`` (alpha 0.5, T 4). Students: FPGM at 50% of
  the teacher's MACs (``apply_fpgm`` + ``FPGMPruning(target_macs=0.5)`` for
  one epoch, then ``strip_pruning``) and 4-bit QAT (``quantize_model(...,
  bits=4)``, first / last layer 8 bits). Same optimizer (Adam), learning
  rate, batches and BatchNorm re-estimation for both rows. Target: KD >=
  plain.
* ``snapshot``: a fresh ResNet-8 trained ``S`` epochs in 3 cosine cycles
  with ``SnapshotDistillation`` (alpha 0.5, T 2) vs the same cycles with
  the distillation weight 0 (same LR schedule, same epochs), 3 seeds.
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

import tfcomp
from tfcomp.binary import BENN, binary_net
from tfcomp.distill import Distiller, SnapshotDistillation
from tfcomp.pruning import recalibrate_batchnorm
from tfcomp.pruning.fpgm import FPGMPruning
from tfcomp.pruning.wrappers import apply_fpgm, strip_pruning
from tfcomp.quantization import quantize_model

NAME = "distill_binary_tucker"
CACHE = os.path.join(os.path.expanduser("~"), ".cache", "tfcomp", NAME)
PARTS = ("kd", "snapshot", "benn", "tnet")
# train, test, teacher epochs E, fine-tune F, snapshot epochs S, BENN
# member epochs, BENN width
SETTINGS = {"quick": dict(train=512, test=500, epochs=1, finetune=1,
                          snapshot=3, member_epochs=1, width=8, seeds=1),
            "full": dict(train=8000, test=5000, epochs=6, finetune=2,
                         snapshot=6, member_epochs=3, width=16, seeds=3)}
BATCH = 128


def _teacher(x, y, epochs, quick):
    """The dense teacher, trained to convergence at this scale: Adam with
    the learning rate decayed to 0 by a cosine (a constant 2e-3 left it
    below its own students: a low-LR fine-tune alone gained 3 points, so
    a distilled student learned from a worse model than itself)."""
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


def _fine_tune(student, teacher, x, y, epochs, kd: bool, seed=0):
    """Plain or KD fine-tune of ``student`` in place (same settings)."""
    keras.utils.set_random_seed(seed)
    opt = keras.optimizers.Adam(5e-4)
    if kd:
        model = Distiller(student, teacher, alpha=0.5, temperature=4.0)
        model.compile(opt)
    else:
        model = compile_model(student, opt)
    t0 = time.time()
    model.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=True,
              verbose=0)
    recalibrate_batchnorm(student, x, batch_size=BATCH)
    return time.time() - t0


def part_kd(x, y, xt, yt, cfg, quick):
    teacher, t_s = _teacher(x, y, cfg["epochs"], quick)
    t_acc = accuracy(teacher, xt, yt)
    t_macs = tfcomp.profile(teacher).macs
    log(f"kd: teacher acc {t_acc:.4f}")
    # FPGM student (50% MACs)
    keras.utils.set_random_seed(0)
    masked = compile_model(apply_fpgm(clone_with_weights(teacher)),
                           keras.optimizers.Adam(5e-4))
    masked.fit(x, y, batch_size=BATCH, epochs=1, verbose=0,
               callbacks=[FPGMPruning(target_macs=0.5)])
    fpgm = strip_pruning(masked)
    qat = quantize_model(clone_with_weights(teacher), bits=4)
    rows = [{"student": "teacher (dense)", "method": "-",
             "accuracy": t_acc, "macs_ratio": 1.0, "seconds": t_s}]
    # the dense teacher given the students' plain fine-tune: the reference
    # that says whether the teacher was converged (it should not gain)
    dense = clone_with_weights(teacher)
    secs = _fine_tune(dense, teacher, x, y, cfg["finetune"], False)
    ref = {"student": "teacher + same fine-tune", "method": "plain",
           "accuracy_before": t_acc, "accuracy": accuracy(dense, xt, yt),
           "macs_ratio": 1.0, "seconds": secs}
    log(f"kd: teacher + plain fine-tune {ref['accuracy']:.4f}")
    for name, student in (("FPGM 50% MACs", fpgm), ("QAT 4-bit", qat)):
        start = accuracy(student, xt, yt)
        ratio = tfcomp.profile(student).macs / t_macs
        for kd in (False, True):
            s = clone_with_weights(student) if name.startswith("FPGM") \
                else quantize_model(clone_with_weights(teacher), bits=4)
            if not name.startswith("FPGM"):
                s.set_weights(student.get_weights())
            secs = _fine_tune(s, teacher, x, y, cfg["finetune"], kd)
            rows.append({"student": name, "method": "KD" if kd else "plain",
                         "accuracy_before": start,
                         "accuracy": accuracy(s, xt, yt),
                         "macs_ratio": ratio, "seconds": secs})
            log(f"kd: {name} {rows[-1]['method']}: "
                f"{rows[-1]['accuracy']:.4f}")
    md = ["| student | fine-tune | MACs vs teacher | acc before | "
          "acc after | s |", "|---|---|---|---|---|---|"]
    for r in rows + [ref]:
        md.append(f"| {r['student']} | {r['method']} | "
                  f"{r['macs_ratio']:.2f} | "
                  f"{r.get('accuracy_before', float('nan')):.4f} | "
                  f"{r['accuracy']:.4f} | {r['seconds']:.0f} |")
    wins = [(a["student"], b["accuracy"] - a["accuracy"])
            for a, b in zip(rows[1::2], rows[2::2])]
    md.append("")
    md += [f"* {s}: KD - plain = {d * 100:+.2f} points "
           f"({'met' if d >= 0 else 'not met'}: KD >= plain)"
           for s, d in wins]
    return {"rows": rows + [ref], "markdown": "\n".join(md)}


def part_snapshot(x, y, xt, yt, cfg, quick):
    rows = []
    for seed in range(cfg["seeds"]):
        for sd_on in (True, False):
            keras.utils.set_random_seed(seed)
            kd = Distiller(tfcomp.zoo.resnet(depth=8), teacher=None,
                           alpha=0.5 if sd_on else 0.0, temperature=2.0)
            kd.compile(keras.optimizers.SGD(0.05, momentum=0.9))
            cb = SnapshotDistillation(cycles=3)
            t0 = time.time()
            kd.fit(x, y, batch_size=BATCH, epochs=cfg["snapshot"],
                   verbose=0, callbacks=[cb])
            rows.append({"seed": seed, "method": "Snapshot Distillation"
                         if sd_on else "same cycles, no distillation",
                         "accuracy": accuracy(kd.student, xt, yt),
                         "teacher_swaps": cb.boundaries,
                         "seconds": time.time() - t0})
            log(f"snapshot: seed {seed} {rows[-1]['method']}: "
                f"{rows[-1]['accuracy']:.4f}")
    md = ["| method | seeds | mean acc | std | per seed |", "|---|---|---|---|---|"]
    for m in ("Snapshot Distillation", "same cycles, no distillation"):
        a = [r["accuracy"] for r in rows if r["method"] == m]
        md.append(f"| {m} | {len(a)} | {np.mean(a):.4f} | {np.std(a):.4f} | "
                  + ", ".join(f"{v:.4f}" for v in a) + " |")
    return {"rows": rows, "markdown": "\n".join(md)}


def part_benn(x, y, xt, yt, cfg, quick):
    rows, notes = [], []

    def build():
        m = binary_net(x.shape[1:], 10, width=cfg["width"])
        m.compile(keras.optimizers.Adam(2e-3),
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


def render(result: dict) -> str:
    titles = {"kd": "Knowledge distillation of compressed students",
              "snapshot": "Snapshot Distillation (3 cycles)",
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
    return "\n".join(out)


def main(argv=None) -> dict:
    p = parser(__doc__)
    p.add_argument("--quick", action="store_true", help="smoke run")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
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
    funcs = {"kd": part_kd, "snapshot": part_snapshot, "benn": part_benn,
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
