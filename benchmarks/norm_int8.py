"""int8 TFLite files of models with Layer / GroupNormalization and
attention on Fashion-MNIST: post-training int8 of the float model vs the
QAT model's file (``QuantLayerNormalization`` / ``QuantGroupNormalization``
/ ``QuantMultiHeadAttention``).

Three keras.io-style models, trained once in float here (``--epochs``):

* ``convnext_mini``: a 2x2 patchify stem + LayerNormalization, two
  ConvNeXt blocks (7x7 depthwise conv, LayerNormalization, Dense 4C with
  GELU, Dense C, residual), global pooling, LayerNormalization, Dense;
* ``groupnorm_cnn``: three Conv2D + GroupNormalization(4) + swish stages
  (two strided), global pooling, Dense;
* ``vit_mini``: 4x4 patches (49 tokens of 32) + learned positions, two
  pre-norm transformer blocks (LayerNormalization, MultiHeadAttention with
  4 heads, residual; LayerNormalization, Dense 64 GELU, Dense 32,
  residual), LayerNormalization, token pooling, Dense;
* ``vit_classes``: the same ViT written with the user's own layer classes
  as keras.io writes them (``Patches``, ``PatchEncoder`` with its
  position lookup on ``ops.arange``, a ``TransformerBlock`` class; flattened
  patches projected by a Dense instead of a 4x4 conv), which
  ``quantize_model`` opens into the layers they call.

Rows, all on the same test subset: the float Keras model; its float32
file; post-training int8 (``export_tflite(float_model, "int8",
calibration_data=...)``: the converter calibrates its own decomposition
of the normalizations); the QAT model (``quantize_model`` at 8 bits,
``calibrate``, ``--qat-epochs`` of fine-tuning at lr 1e-4) and its int8
file, and the float model fine-tuned the same epochs at the same rate (the
same training budget as the QAT row). Columns: test accuracy, top-1
agreement of each file with the Keras model it was converted from (on
256 test images), the ops the file still computes in float
(``ExportReport.float_ops``), file bytes and latency measured side by side
(ai_edge_litert, XNNPACK, 1 thread, batch 1, interleaved rounds). One run,
no seeds averaged; CPU scale.

Usage (~9 min on the 2-core host; --quick ~2 min):
    nice -n 10 .venv/bin/python benchmarks/norm_int8.py
    Options: [--train 10000] [--test 2000] [--epochs 3] [--qat-epochs 1]
    [--runs 200] [--rounds 5] [--quick] [--models a,b --merge]

Writes ``norm_int8.json`` and ``norm_int8.md`` into ``--out``.

Reference: Jacob et al., arXiv:1712.05877 (QAT, integer inference).
"""

from __future__ import annotations

import os
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
    time_tflite,
    write_results,
)

from tfcomp.export import export_tflite
from tfcomp.export.runtime import make_interpreter, run_interpreter
from tfcomp.quantization import calibrate, quantize_model

NAME = "norm_int8"
L = keras.layers


def convnext_mini(shape=(28, 28, 1), width=32, classes=10):
    inp = keras.Input(shape)
    x = L.Conv2D(width, 2, strides=2, name="stem")(inp)
    x = L.LayerNormalization(epsilon=1e-6, name="stem_ln")(x)
    for i in range(2):
        h = L.DepthwiseConv2D(7, padding="same", name=f"b{i}_dw")(x)
        h = L.LayerNormalization(epsilon=1e-6, name=f"b{i}_ln")(h)
        h = L.Dense(4 * width, activation="gelu", name=f"b{i}_pw1")(h)
        h = L.Dense(width, name=f"b{i}_pw2")(h)
        x = L.Add(name=f"b{i}_add")([x, h])
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.LayerNormalization(epsilon=1e-6, name="head_ln")(x)
    return keras.Model(inp, L.Dense(classes, name="logits")(x),
                       name="convnext_mini")


def groupnorm_cnn(shape=(28, 28, 1), classes=10):
    inp = keras.Input(shape)
    x = inp
    for i, (filters, stride) in enumerate(((16, 1), (32, 2), (32, 2))):
        x = L.Conv2D(filters, 3, strides=stride, padding="same",
                     name=f"conv{i}")(x)
        x = L.GroupNormalization(groups=4, name=f"gn{i}")(x)
        x = L.Activation("swish", name=f"act{i}")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, L.Dense(classes, name="logits")(x),
                       name="groupnorm_cnn")


def vit_mini(shape=(28, 28, 1), dim=32, heads=4, classes=10):
    inp = keras.Input(shape)
    x = L.Conv2D(dim, 4, strides=4, name="patchify")(inp)
    tokens = (shape[0] // 4) * (shape[1] // 4)
    x = L.Reshape((tokens, dim), name="tokens")(x)
    pos = L.Embedding(tokens, dim, name="pos")(keras.ops.arange(tokens)[None])
    x = L.Add(name="add_pos")([x, pos])
    for i in range(2):
        h = L.LayerNormalization(epsilon=1e-6, name=f"b{i}_ln1")(x)
        h = L.MultiHeadAttention(heads, dim // heads, name=f"b{i}_mha")(h, h)
        x = L.Add(name=f"b{i}_add1")([x, h])
        h = L.LayerNormalization(epsilon=1e-6, name=f"b{i}_ln2")(x)
        h = L.Dense(2 * dim, activation="gelu", name=f"b{i}_mlp1")(h)
        h = L.Dense(dim, name=f"b{i}_mlp2")(h)
        x = L.Add(name=f"b{i}_add2")([x, h])
    x = L.LayerNormalization(epsilon=1e-6, name="head_ln")(x)
    x = L.GlobalAveragePooling1D(name="gap")(x)
    return keras.Model(inp, L.Dense(classes, name="logits")(x),
                       name="vit_mini")


class Patches(L.Layer):
    """keras.io "Image classification with Vision Transformer"'s patch
    layer, as written there (no weights: it stays one layer)."""

    def __init__(self, patch_size):
        super().__init__()
        self.patch_size = patch_size

    def call(self, images):
        shape = keras.ops.shape(images)
        patches = keras.ops.image.extract_patches(images, size=self.patch_size)
        return keras.ops.reshape(patches, (
            shape[0], (shape[1] // self.patch_size)
            * (shape[2] // self.patch_size),
            self.patch_size * self.patch_size * shape[3]))


class PatchEncoder(L.Layer):
    """keras.io's ViT patch encoder, as written there: a Dense projection
    plus a position embedding looked up on ``ops.arange``."""

    def __init__(self, num_patches, projection_dim):
        super().__init__()
        self.num_patches = num_patches
        self.projection = L.Dense(units=projection_dim)
        self.position_embedding = L.Embedding(input_dim=num_patches,
                                              output_dim=projection_dim)

    def call(self, patch):
        positions = keras.ops.expand_dims(
            keras.ops.arange(start=0, stop=self.num_patches, step=1), axis=0)
        return self.projection(patch) + self.position_embedding(positions)


class TransformerBlock(L.Layer):
    """A pre-norm transformer block written as a layer class (as keras.io
    writes its Transformer blocks): vit_mini's block."""

    def __init__(self, dim, heads):
        super().__init__()
        self.ln1 = L.LayerNormalization(epsilon=1e-6)
        self.mha = L.MultiHeadAttention(heads, dim // heads)
        self.ln2 = L.LayerNormalization(epsilon=1e-6)
        self.mlp1 = L.Dense(2 * dim, activation="gelu")
        self.mlp2 = L.Dense(dim)

    def call(self, x):
        h = self.ln1(x)
        x = x + self.mha(h, h)
        return x + self.mlp2(self.mlp1(self.ln2(x)))


def vit_classes(shape=(28, 28, 1), dim=32, heads=4, classes=10):
    """vit_mini written with the user's own layer classes (keras.io's
    ``Patches`` / ``PatchEncoder`` and a ``TransformerBlock``):
    ``quantize_model`` opens them (before, their weights stayed float and
    the QAT int8 export was refused)."""
    inp = keras.Input(shape)
    x = Patches(4)(inp)
    x = PatchEncoder((shape[0] // 4) * (shape[1] // 4), dim)(x)
    for _ in range(2):
        x = TransformerBlock(dim, heads)(x)
    x = L.LayerNormalization(epsilon=1e-6, name="head_ln")(x)
    x = L.GlobalAveragePooling1D(name="gap")(x)
    return keras.Model(inp, L.Dense(classes, name="logits")(x),
                       name="vit_classes")


MODELS = {"convnext_mini": convnext_mini, "groupnorm_cnn": groupnorm_cnn,
          "vit_mini": vit_mini, "vit_classes": vit_classes}


def _file_accuracy(path, x, y) -> float:
    interp = make_interpreter(path)[0]
    return float(np.mean(run_interpreter(interp, x).argmax(-1) == y))


def run_model(name, data, args, folder) -> dict:
    (x, y), (xt, yt) = data
    keras.utils.set_random_seed(0)
    model = compile_model(MODELS[name](), keras.optimizers.Adam(1e-3))
    t0 = time.time()
    model.fit(x, y, epochs=args.epochs, batch_size=64, verbose=0)
    log(f"{name}: float trained", t0)
    rows = {"float Keras": {"accuracy": accuracy(model, xt, yt)}}
    paths = {}

    def file_row(label, source, quantization, **kw):
        path = os.path.join(folder, f"{name}_{len(paths)}.tflite")
        report = export_tflite(source, path, quantization=quantization,
                               verify_data=xt[:256], min_agreement=0.0,
                               **kw)
        paths[label] = path
        rows[label] = {"accuracy": _file_accuracy(path, xt, yt),
                       "float_ops": report.float_ops,
                       "bytes": report.size_bytes,
                       "top1_vs_keras": report.top1_agreement}

    file_row("float32 file", model, None)
    file_row("post-training int8 file", model, "int8",
             calibration_data=x[:512])
    qat = quantize_model(model, bits=8)
    calibrate(qat, x[:512])
    longer = clone_with_weights(model)
    for net in (qat, longer):  # the QAT epochs, and the same in float
        compile_model(net, keras.optimizers.Adam(1e-4))
        keras.utils.set_random_seed(1)
        net.fit(x, y, epochs=args.qat_epochs, batch_size=64, verbose=0)
    log(f"{name}: QAT fine-tuned", t0)
    rows["float Keras + the QAT epochs"] = {
        "accuracy": accuracy(longer, xt, yt)}
    rows["QAT Keras (8/8)"] = {"accuracy": accuracy(qat, xt, yt)}
    file_row("QAT int8 file", qat, "int8")
    lat = time_tflite(paths, runs=args.runs, rounds=args.rounds)
    for label, res in lat.items():
        rows[label]["latency_ms"] = float(res.median_ms)
    return rows


def markdown(result) -> str:
    lines = [f"# {NAME}: int8 TFLite of normalization and attention "
             "models",
             "", result["command"], "",
             "| model | row | test acc | agreement with its Keras model | "
             "float ops in the file | bytes | latency ms |",
             "|---|---|---|---|---|---|---|"]
    for name, rows in result["models"].items():
        for label, r in rows.items():
            ops = r.get("float_ops")
            ops = "–" if ops is None else (
                "none" if not ops else ", ".join(sorted(
                    f"{o}x{ops.count(o)}" for o in set(ops))))
            lat = r.get("latency_ms")
            agree = r.get("top1_vs_keras")
            agree = "–" if agree is None else f"{agree:.3f}"
            lines.append(
                f"| {name} | {label} | {r['accuracy']:.4f} | {agree} | {ops} | "
                f"{r.get('bytes', '–')} | "
                f"{'–' if lat is None else f'{lat:.3f}'} |")
    lines += ["", "Latency: ai_edge_litert, XNNPACK, 1 thread, batch 1, "
              "files timed side by side (median of interleaved rounds). "
              f"Train subset {result['train']}, test subset "
              f"{result['test']}, {result['epochs']} float epochs, "
              f"{result['qat_epochs']} QAT epoch(s); one run."]
    return "\n".join(lines) + "\n"


def main():
    p = parser(__doc__)
    p.add_argument("--train", type=int, default=10000)
    p.add_argument("--test", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--qat-epochs", type=int, default=1)
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--models", default=",".join(MODELS),
                   help="comma-separated subset of " + ", ".join(MODELS))
    p.add_argument("--merge", action="store_true",
                   help="keep the other models' rows of the results json "
                        "in --out (rerun some models only)")
    args = p.parse_args()
    if args.quick:
        args.train, args.test, args.epochs, args.runs = 2000, 500, 1, 50
    data = fashion_mnist_subset(args.train, args.test)
    result = {"command": "`.venv/bin/python benchmarks/norm_int8.py"
              + (" --quick" if args.quick else "") + "`",
              "train": args.train, "test": args.test, "epochs": args.epochs,
              "qat_epochs": args.qat_epochs, "models": {}}
    previous = os.path.join(args.out, f"{NAME}.json")
    if args.merge and os.path.exists(previous):
        kept = read_json(previous)
        if (kept["train"], kept["test"], kept["epochs"]) != (
                args.train, args.test, args.epochs):
            raise SystemExit("--merge: the results json was measured with "
                             "other --train / --test / --epochs")
        result["models"] = kept["models"]
        result["merged"] = sorted(set(kept.get("merged", []))
                                  | set(args.models.split(",")))
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models.split(","):
            if name not in MODELS:
                raise SystemExit(f"--models: unknown model {name!r} "
                                 f"(known: {', '.join(MODELS)})")
            result["models"][name] = run_model(name, data, args, folder)
    write_results(args.out, NAME, result, markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
