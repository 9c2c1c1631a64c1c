"""Per-layer LiteRT precisions on Fashion-MNIST: float32 / float16 / int8 /
int4w files and allocated mixes, size, accuracy and measured latency.

For each zoo model (``resnet20`` = ResNet-20, ``mobilenet_v2`` =
MobileNetV2-tiny, ``tfcomp.zoo.mobilenet_v2(alpha=0.5)``), trained once in
float (cached under ``~/.cache/tfcomp/phone``), every row is a LiteRT file
written by ``export_tflite(model, path, quantization=policy)`` (verified
against the float Keras model) from the same float model:

* float32 (``quantization=None``), float16 / int8 (every weight layer at
  that precision: float16 weights, int8 dynamic-range weights through
  ai-edge-quantizer), all-int4w (``quantization="int4w"``: int4
  dynamic-range weights; depthwise layers stay int8, ai-edge-quantizer
  0.10 has no int4 depthwise recipe), and int4w with the first and last
  layer int8 (the HAQ / ``quantize_model(bits=4)`` convention);
* mix @ int4w size: ``allocate_bits(model, s, "size", budget=<size of
  int4w with first / last int8>, candidates=PRECISIONS,
  first_last_8bit=False)`` with ``s = sensitivity(model, (x, y), bits=[4,
  8])`` (HAWQ-V2 Hessian traces): the allocator may move bits between
  layers at that size (the every-layer all-int4w file is the smallest
  possible, so only its own policy fits its size);
* mix @ 1/2 int8: the same at half the all-int8 weight size;
* mix @ int8 latency: ``resource="latency"`` with the table measured on
  this host (``measure_tflite_table(model, precisions=PRECISIONS)``),
  budget the all-int8 latency.

Columns: file bytes, top-1 accuracy of the file on the test subset,
top-1 agreement with the float Keras model, latency measured side by side
(``time_tflite``: ai_edge_litert, XNNPACK, 1 thread, batch 1, interleaved
rounds), the latency the measured table predicts, and the layer count per
precision read back from the file. One run, no seeds averaged; CPU scale
(a training subset, few epochs).

Usage (full run, ~15 min on the 2-core host; --quick ~2 min):
    nice -n 10 .venv/bin/python benchmarks/phone.py
    Options: [--models resnet20,mobilenet_v2] [--train 8000] [--test 2000]
    [--epochs 4] [--runs 100] [--rounds 5] [--quick] [--parts resnet20]

Writes ``phone.json`` and ``phone.md`` into ``--out``.

Reference: Dong et al., HAWQ-V2, arXiv:1911.03852; Yao et al., HAWQ-V3,
arXiv:2011.10680; ai-edge-quantizer (google-ai-edge).
"""

from __future__ import annotations

import os
import platform
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
from _common import (
    accuracy,
    compile_model,
    fashion_mnist_subset,
    log,
    parser,
    read_json,
    time_tflite,
    write_results,
)

import tfcomp
from tfcomp.export import export_tflite
from tfcomp.export.litert_quant import layer_precisions
from tfcomp.export.runtime import make_interpreter, run_interpreter
from tfcomp.hardware import measure_tflite_table
from tfcomp.hardware.allocation import allocate_bits, policy_cost
from tfcomp.hardware.precision import PRECISION_BITS, PRECISIONS
from tfcomp.quantization import quantizable_layers
from tfcomp.quantization.sensitivity import sensitivity

NAME = "phone"
CACHE = os.path.expanduser("~/.cache/tfcomp/phone")
MODELS = {"resnet20": lambda: tfcomp.zoo.resnet(depth=20),
          "mobilenet_v2": lambda: tfcomp.zoo.mobilenet_v2(alpha=0.5)}


def _args(argv):
    p = parser(__doc__)
    p.add_argument("--models", default="resnet20,mobilenet_v2")
    p.add_argument("--parts", default=None,
                   help="models to rerun; the others are kept from the json")
    p.add_argument("--train", type=int, default=8000)
    p.add_argument("--test", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: ResNet-20 only, tiny subsets")
    a = p.parse_args(argv)
    if a.quick:
        a.models, a.train, a.test, a.epochs = "resnet20", 1024, 500, 1
        a.runs, a.rounds = 20, 2
    return a


def _trained(name, x, y, args):
    path = os.path.join(CACHE, f"{name}_n{args.train}_e{args.epochs}"
                               f"_s{args.seed}.keras")
    if os.path.exists(path):
        log(f"{name}: cached float model {path}")
        return keras.saving.load_model(path)
    keras.utils.set_random_seed(args.seed)
    model = compile_model(MODELS[name](), keras.optimizers.Adam(1e-3))
    t = time.time()
    model.fit(x, y, batch_size=64, epochs=args.epochs, verbose=0)
    log(f"{name}: trained {args.epochs} epochs", t)
    os.makedirs(CACHE, exist_ok=True)
    model.save(path)
    return model


def _file_eval(path, xt, yt, keras_pred):
    interp, _ = make_interpreter(path, threads=1)
    logits = run_interpreter(interp, xt)
    pred = logits.argmax(-1)
    return float(np.mean(pred == yt)), float(np.mean(pred == keras_pred))


def _policies(model, sens, table, names):
    """{row: (quantization, allocation info)} of one model."""
    first, last = names[0], names[-1]
    haq4 = {n: "int4w" for n in names}
    haq4[first] = haq4[last] = "int8"
    size_haq4 = policy_cost(model, haq4, "size")
    rows = {"float32": (None, None),
            "float16": ({n: "float16" for n in names}, None),
            "int8": ({n: "int8" for n in names}, None),
            "all-int4w": ("int4w", None),
            "int4w, first/last int8": (haq4, None)}
    for label, res, hw, budget in (
            ("mix @ int4w size", "size", None, size_haq4),
            ("mix @ 1/2 int8 size", "size", None, 0.5),
            ("mix @ int8 latency", "latency", table, 1.0)):
        try:
            alloc = allocate_bits(model, sens, res, hw, budget=budget,
                                  candidates=PRECISIONS,
                                  first_last_8bit=False)
        except ValueError as e:
            log(f"{label}: {e}")
            continue
        rows[label] = (dict(alloc), {"budget": float(budget),
                                     "cost": float(alloc.cost),
                                     "sensitivity": float(alloc.sensitivity)})
    return rows


def run_model(name, data, args, workdir) -> dict:
    (x, y), (xt, yt) = data
    t0 = time.time()
    model = _trained(name, x, y, args)
    keras_acc = accuracy(model, xt, yt)
    keras_pred = model.predict(xt, verbose=0).argmax(-1)
    names = quantizable_layers(model)
    n_sens = 64 if args.quick else 256
    sens = sensitivity(model, (x[:n_sens], y[:n_sens]), bits=[4, 8],
                       max_probes=5 if args.quick else 100, seed=args.seed)
    log(f"{name}: sensitivity", t0)
    table = measure_tflite_table(
        model, channel_fractions=(1.0,), runs=args.runs // 2 or 1,
        rounds=args.rounds, progress=False, precisions=PRECISIONS,
        seed=args.seed)
    log(f"{name}: measured precision table", t0)
    rows, paths = [], {}
    for label, (quant, info) in _policies(model, sens, table, names).items():
        path = os.path.join(workdir, f"{name}_{len(paths)}.tflite")
        rep = export_tflite(model, path, quantization=quant,
                            verify_data=xt[:256], min_agreement=0.0)
        acc, agree = _file_eval(path, xt, yt, keras_pred)
        prec = layer_precisions(model, open(path, "rb").read())
        counts = {p: sum(v == p for v in prec.values()) for p in PRECISIONS}
        pol = {n: prec.get(n, "float32") for n in names}
        bits = {n: PRECISION_BITS[p] for n, p in pol.items()}
        rows.append({"row": label, "bytes": rep.size_bytes, "acc": acc,
                     "agreement": agree, "counts": counts,
                     "int8_fallback": sorted(rep.int8_fallback or {}),
                     "predicted_ms": 1e3 * table.model_cost(
                         model, bits).latency_s,
                     "allocation": info, "policy": pol})
        paths[label] = path
        log(f"{name}: {label}: {rep.size_bytes} B, acc {acc:.4f}", t0)
    lat = time_tflite(paths, runs=args.runs, rounds=args.rounds)
    for r in rows:
        r["latency_ms"] = lat[r["row"]].median_ms
    return {"model": name, "keras_acc": keras_acc, "rows": rows,
            "seconds": time.time() - t0}


def _markdown(result) -> str:
    m = result["meta"]
    out = ["# Per-layer LiteRT precisions (Fashion-MNIST)", "",
           f"{m['host']}; ai_edge_litert, XNNPACK, 1 thread, batch 1. "
           f"Train {m['train']} images x {m['epochs']} epochs, test "
           f"{m['test']}; one run. Reproduce: `{m['command']}`", ""]
    for res in result["models"].values():
        out += [f"## {res['model']} (Keras float accuracy "
                f"{res['keras_acc']:.4f})", "",
                "| file | bytes | accuracy | agreement | latency ms | "
                "table ms | f32/f16/i8/i4w layers | int8 fallback |",
                "|---|---:|---:|---:|---:|---:|---|---|"]
        for r in res["rows"]:
            c = r["counts"]
            out.append(
                f"| {r['row']} | {r['bytes']:,} | {r['acc']:.4f} | "
                f"{r['agreement']:.4f} | {r['latency_ms']:.3f} | "
                f"{r['predicted_ms']:.3f} | {c['float32']}/{c['float16']}/"
                f"{c['int8']}/{c['int4w']} | "
                f"{', '.join(r['int8_fallback']) or '-'} |")
        out.append("")
    return "\n".join(out)


def main(argv=None):
    args = _args(argv)
    data = fashion_mnist_subset(args.train, args.test, seed=args.seed)
    json_path = os.path.join(args.out, f"{NAME}.json")
    result = {"models": {}}
    if args.parts and os.path.exists(json_path):
        result = read_json(json_path)
    cmd = "nice -n 10 .venv/bin/python benchmarks/phone.py" + (
        " --quick" if args.quick else "")
    result["meta"] = {"host": f"{platform.machine()} {platform.node()}",
                      "train": args.train, "test": args.test,
                      "epochs": args.epochs, "runs": args.runs,
                      "rounds": args.rounds, "quick": args.quick,
                      "command": cmd}
    todo = (args.parts or args.models).split(",")
    with tempfile.TemporaryDirectory(prefix="tfcomp-phone-") as workdir:
        for name in todo:
            if name not in MODELS:
                raise SystemExit(f"unknown model {name!r}: {list(MODELS)}")
            result["models"][name] = run_model(name, data, args, workdir)
            write_results(args.out, NAME, result, _markdown(result))
    log(f"wrote {json_path}")


if __name__ == "__main__":
    main()
