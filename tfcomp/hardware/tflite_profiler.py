"""Measured latency tables: time single-layer TFLite models on this host.

For every costed layer of a model, and every channel count a pruning search
may visit (``channel_fractions`` of its channels), a one-layer Keras model is
built, converted with ``tf.lite`` (float32) and timed in the on-device
runtime (``ai_edge_litert``, else ``tflite_runtime``, else ``tf.lite``).
The same models can be written to a tar archive and timed on a phone with
``tfcomp.hardware.device_profiler``.

What a measured table predicts: the latency of a whole model as the sum of its
layers' single-layer latencies (each minus the runtime's fixed invoke overhead,
timed on a trivial one-op model in the same rounds) plus that overhead once. On
the 2-core x86 development host the corrected sum of the dense zoo ResNet-20's
layers came within 2 % of the whole model and MobileNet-V2's within 1.5 % (no
cache or fusion correction was needed at these sizes;
``benchmarks/latency_table.py`` checks pruned models). Unmeasured channel
counts are interpolated with the table's ``"step"`` rule (CPU latency is a
staircase in the output channels), so measure the counts a search visits: with
``channel_multiple=8`` (AMC's ``round_to``) and fractions on multiples of 1/8
every count a ResNet-20 search visits is measured exactly. Convolutions are
measured with a bias and no activation, which is what BatchNormalization
folding and activation fusion leave at deployment; layers without a cost model
(e.g. Concatenate, ZeroPadding2D) are not counted (``extract_specs(...,
return_skipped=True)`` lists them).

Precision axis: with ``precisions=("float32", "float16", "int8", "int4w")``
each conv / depthwise / dense / separable model is also quantized as a
LiteRT file is (:mod:`tfcomp.hardware.precision`, ai-edge-quantizer:
float16 weights, int8 / int4 dynamic-range weights) and timed; the table
stores each at its ``PRECISION_BITS`` pair (float32 (32, 32), float16 (16,
32), int8 (8, 32), int4w (4, 32)) and is not bit-invariant, so
``allocate_bits(..., candidates=PRECISIONS)`` sees what each precision costs
on this host (on the x86 host int4w is slower than int8: XNNPACK has no int4
convolution).
Ops without weight ops (adds, pooling, an embedding's GATHER) run in
float in every such file and are stored once per pair. Depthwise layers
have no int4 recipe: their int4w entry is the int8 file's time (a
separable layer's file, DEPTHWISE_CONV_2D + 1x1 CONV_2D, has an int8
depthwise and an int4 pointwise part under int4w).

Layers that are not NHWC convolutions: a ``separable`` spec is timed as one
``SeparableConv2D`` (both parts in one file); an ``embedding`` spec as an
``Embedding`` gathering ``in_h * in_w`` int32 indices, wrapped into the
table by a ``FLOOR_MOD`` first (the profilers feed random indices from the
whole int32 range, which GATHER rejects), one element-wise op over the
positions next to the gather's ``positions x cout`` copies.

Example:
    >>> table = measure_tflite_table(model, channel_fractions=(0.5, 1.0))
    >>> table.model_cost(pruned_model).latency_s
"""

from __future__ import annotations

import contextlib
import io
import json
import tarfile

import keras

from tfcomp._io import atomic_path
from tfcomp.hardware import device_profiler as _dp
from tfcomp.hardware.base import Cost, as_specs
from tfcomp.hardware.latency_table import (
    INTERPOLATIONS,
    LatencyTable,
    channel_variants,
    unique_signatures,
)
from tfcomp.hardware.precision import (
    PRECISION_BITS,
    check_precision,
    quantize_tflite,
    require_quantizer,
    weight_ops,
)
from tfcomp.hardware.spec import LayerSpec

__all__ = [
    "DEFAULT_FRACTIONS",
    "build_layer_model",
    "export_layer_archive",
    "layer_to_tflite",
    "measure_tflite_table",
    "quantize_layer_file",
]

# Covers AMC's preserve-ratio lower bound of 0.2 (arXiv:1802.03494).
DEFAULT_FRACTIONS = (0.2, 0.4, 0.6, 0.8, 1.0)


def build_layer_model(spec: LayerSpec, seed: int = 0) -> keras.Model:
    """A one-layer float Keras model with the spec's geometry (fixed batch).

    Example:
        >>> m = build_layer_model(LayerSpec("c", "conv", 8, 8, 4, 8))
        >>> m.output.shape
        (1, 8, 8, 8)
    """
    init = keras.initializers.RandomNormal(stddev=0.05, seed=seed)
    b = spec.batch
    if spec.op == "embedding":
        # The profilers feed the full int32 range: wrap the indices into
        # the table (one FLOOR_MOD over the positions) so GATHER runs.
        x = keras.Input((spec.in_h * spec.in_w,), batch_size=b,
                        dtype="int32")
        emb = keras.layers.Embedding(spec.cin, spec.cout,
                                     embeddings_initializer=init)
        return keras.Model(x, emb(keras.ops.mod(x, spec.cin)))
    if spec.op == "dense":
        shape = (spec.cin,) if spec.in_h * spec.in_w == 1 else (
            spec.in_h * spec.in_w, spec.cin)
        x = keras.Input(shape, batch_size=b)
        return keras.Model(x, keras.layers.Dense(
            spec.cout, kernel_initializer=init)(x))
    x = keras.Input((spec.in_h, spec.in_w, spec.cin), batch_size=b)
    if spec.op == "conv":
        y = keras.layers.Conv2D(
            spec.cout, spec.kernel, strides=spec.stride, padding=spec.padding,
            dilation_rate=spec.dilation, groups=spec.groups,
            kernel_initializer=init)(x)
    elif spec.op == "depthwise":
        y = keras.layers.DepthwiseConv2D(
            spec.kernel, strides=spec.stride, padding=spec.padding,
            depth_multiplier=spec.depth_multiplier,
            dilation_rate=spec.dilation, depthwise_initializer=init)(x)
    elif spec.op == "separable":
        y = keras.layers.SeparableConv2D(
            spec.cout, spec.kernel, strides=spec.stride, padding=spec.padding,
            depth_multiplier=spec.multiplier, dilation_rate=spec.dilation,
            depthwise_initializer=init, pointwise_initializer=init)(x)
    elif spec.op == "add":
        xs = [x] + [keras.Input((spec.in_h, spec.in_w, spec.cin),
                                batch_size=b)
                    for _ in range(spec.n_inputs - 1)]
        return keras.Model(xs, keras.layers.Add()(xs))
    elif spec.op in ("avgpool", "maxpool"):
        cls = (keras.layers.AveragePooling2D if spec.op == "avgpool"
               else keras.layers.MaxPooling2D)
        y = cls(spec.kernel, strides=spec.stride, padding=spec.padding)(x)
    elif spec.op == "global_avgpool":
        y = keras.layers.GlobalAveragePooling2D()(x)
    elif spec.op == "global_maxpool":
        y = keras.layers.GlobalMaxPooling2D()(x)
    else:  # LayerSpec validates op; kept for new ops added there
        raise ValueError(f"No measurement model for op={spec.op!r}")
    return keras.Model(x, y)


def layer_to_tflite(model: keras.Model) -> bytes:
    """Converts a Keras model to a float32 TFLite flatbuffer.

    Weights are frozen and BatchNormalization folded, as in deployment.
    (``tfcomp.export`` converts whole models with verification; the hardware
    layer sits below export in the package's dependency order, so it keeps
    this minimal converter.)

    Example:
        >>> flatbuffer = layer_to_tflite(build_layer_model(spec))
    """
    import tensorflow as tf

    # The converter prints the exported signature to stdout; keep it quiet.
    with contextlib.redirect_stdout(io.StringIO()):
        return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def _overhead_model() -> keras.Model:
    x = keras.Input((1,), batch_size=1)
    return keras.Model(x, keras.layers.ReLU()(x))


def _variants(model_or_specs, channel_fractions, channel_multiple, batch):
    specs = as_specs(model_or_specs, batch)
    if not specs:
        raise ValueError("The model has no costed layers (conv, depthwise, "
                         "dense, separable, embedding, add, pooling) to "
                         "measure.")
    return unique_signatures(
        v for s in specs
        for v in channel_variants(s, channel_fractions, channel_multiple))


# Ops whose file has weight ops (precision variants); an embedding's
# GATHER is not one (WEIGHT_OPS), so it is timed float at every pair.
_WEIGHTED = ("conv", "depthwise", "dense", "separable")


def _check_precisions(precisions):
    """None, or the precisions as a tuple (checked, the extra present)."""
    if precisions is None:
        return None
    if isinstance(precisions, str):
        precisions = (precisions,)
    out = tuple(dict.fromkeys(
        check_precision(p, "precisions") for p in precisions))
    if not out:
        raise ValueError("precisions must not be empty. Received: "
                         "precisions=()")
    if any(p != "float32" for p in out):
        require_quantizer()
    return out


def quantize_layer_file(flatbuffer: bytes, precision: str) -> bytes:
    """A single-layer float file with its weight op(s) at ``precision``.

    Example:
        >>> int4 = quantize_layer_file(layer_to_tflite(m), "int4w")
    """
    return quantize_tflite(flatbuffer, {w.index: precision
                                        for w in weight_ops(flatbuffer)})


def _convert_all(variants, seed, progress, what, precisions=None):
    """The overhead model's file, then one file per variant (and per
    precision of a weighted variant), with ``[(variant, bits | None)]``
    saying what each file after the first is."""
    bar = keras.utils.Progbar(len(variants) + 1, unit_name="model") \
        if progress else None
    if bar is not None:
        print(f"Converting {len(variants)} single-layer models ({what})")
    blobs, keys = [layer_to_tflite(_overhead_model())], []
    for i, v in enumerate(variants):
        blob = layer_to_tflite(build_layer_model(v, seed=seed))
        if precisions is None or v.op not in _WEIGHTED:
            blobs.append(blob)
            keys.append((v, None))
        else:
            for p in precisions:
                blobs.append(blob if p == "float32"
                             else quantize_layer_file(blob, p))
                keys.append((v, PRECISION_BITS[p]))
        if bar is not None:
            bar.update(i + 2)
    return blobs, keys


def _add_entries(table, keys, layer_times, overhead, precisions) -> None:
    pairs = [PRECISION_BITS[p] for p in precisions] if precisions \
        else [(32, 32)]
    for (v, bits), t in zip(keys, layer_times):
        cost = Cost(None, max(0.0, t - overhead), None)
        for w, a in ([bits] if bits is not None else pairs):
            table.add(v, w, a, cost)


def measure_tflite_table(model, channel_fractions=DEFAULT_FRACTIONS,
                         channel_multiple: int | None = None,
                         runs: int = 50, warmup: int = 5, threads: int = 1,
                         rounds: int = 5, batch: int = 1,
                         statistic: str = "median",
                         reference_models: dict | None = None,
                         interpolation: str = "step",
                         progress: bool = True,
                         seed: int = 0,
                         precisions=None) -> LatencyTable:
    """Builds a latency table for this host by timing single-layer models.

    Args:
        model: a built ``keras.Model`` (or ``LayerSpec`` records).
        channel_fractions: fractions in (0, 1] of each layer's channels to
            measure (every (cin, cout) combination; channels tied to the
            model's input or output are kept). Lookups interpolate between
            them and raise outside them, so include the search's lower bound.
        channel_multiple: round measured channel counts to this multiple,
            as a search that keeps multiples of it (AMC's ``round_to``)
            visits them; None for plain rounding. Measured CPU latency is a
            staircase in the channel count (SIMD widths), so measuring the
            counts a search visits beats interpolating to them.
        runs: timed invocations per layer model.
        warmup: untimed invocations first.
        threads: interpreter threads (1 = the usual mobile setting).
        rounds: interleaved passes over all models (drift robustness).
        batch: batch size.
        statistic: "median" (default) or "min" of each model's timings;
            "min" is less sensitive to other load on the machine.
        reference_models: optional ``{name: keras.Model}`` timed as whole
            models in the same interleaved rounds as the layer models, so a
            shared machine's load drift affects both alike; their times are
            stored in ``table.meta["reference_latency_s"]`` (to check the
            table against, e.g. ``table.model_cost(model)``).
        progress: show ``keras.utils.Progbar`` bars.
        seed: seed of the layer weights and the random inputs.
        precisions: None (float32 only, a bit-invariant table), or some of
            ``("float32", "float16", "int8", "int4w")``: each weighted
            layer is timed at each, stored at its ``PRECISION_BITS`` pair
            (needs ``tfcomp[litert]``; see the module docstring).

    Returns:
        A ``LatencyTable`` whose ``overhead_s`` is the measured
        per-invoke overhead: bit-invariant (float32 TFLite) without
        ``precisions``, else keyed by precision (``meta["precisions"]``).

    Example:
        >>> table = measure_tflite_table(tfcomp.zoo.resnet(depth=20))
        >>> table.save("resnet20_host.json")
    """
    if statistic not in _dp.STATISTICS:
        raise ValueError(f"statistic must be one of {sorted(_dp.STATISTICS)}"
                         f". Received: statistic={statistic!r}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}. "
                         f"Received: interpolation={interpolation!r}")
    precisions = _check_precisions(precisions)
    variants = _variants(model, channel_fractions, channel_multiple, batch)
    blobs, keys = _convert_all(variants, seed, progress, "measure",
                               precisions)
    refs = dict(reference_models or {})
    for name, ref in refs.items():
        if not isinstance(ref, keras.Model):
            raise TypeError(f"reference_models[{name!r}] must be a "
                            f"keras.Model. Received: {type(ref)!r}")
    blobs += [layer_to_tflite(ref) for ref in refs.values()]
    runtime, cls = _dp.interpreter_class(tf_fallback=True)
    bar = keras.utils.Progbar(rounds * len(blobs), unit_name="model") \
        if progress else None
    if bar is not None:
        print(f"Timing with {runtime} ({threads} thread(s), {runs} runs)")
    samples = _dp.time_samples(
        blobs, runs=runs, warmup=warmup, threads=threads, rounds=rounds,
        seed=seed, interpreter_cls=cls,
        progress=(lambda d, t: bar.update(d)) if bar is not None else None)
    times = [float(_dp.STATISTICS[statistic](s)) for s in samples]
    overhead = times[0]
    layer_times = times[1:1 + len(keys)]
    ref_times = dict(zip(refs, times[1 + len(keys):]))
    import platform
    table = LatencyTable(
        hardware={"name": "tflite", "config": {
            "runtime": runtime, "threads": threads,
            "machine": platform.machine(), "node": platform.node(),
            "system": platform.system()}},
        bit_invariant=precisions is None, overhead_s=overhead,
        interpolation=interpolation,
        meta={"source": "measured", "runs": runs, "warmup": warmup,
              "rounds": rounds, "statistic": statistic,
              "channel_fractions": sorted(float(f)
                                          for f in channel_fractions),
              "channel_multiple": channel_multiple,
              "model": getattr(model, "name", None),
              "reference_latency_s": ref_times,
              **({"precisions": list(precisions)} if precisions else {})})
    _add_entries(table, keys, layer_times, overhead, precisions)
    return table


def export_layer_archive(model, path: str,
                         channel_fractions=DEFAULT_FRACTIONS,
                         channel_multiple: int | None = None, batch: int = 1,
                         progress: bool = True, seed: int = 0,
                         precisions=None) -> str:
    """Writes the single-layer TFLite models of ``model`` to a tar archive.

    The archive holds ``manifest.json`` (each file's ``LayerSpec``),
    ``overhead.tflite`` and ``layer_NNNN.tflite``; time it on a device with
    ``python device_profiler.py layers.tar out.json`` and load ``out.json``
    with ``LatencyTable.load``. Written atomically.

    Args:
        model: a built ``keras.Model`` (or ``LayerSpec`` records).
        path: the ``.tar`` file to write.
        channel_fractions, channel_multiple, batch, seed, precisions: as
            in ``measure_tflite_table`` (with precisions, each layer file
            has its ``"bits"`` in the manifest and the device profiler
            writes a table keyed by precision).
        progress: show a progress bar.

    Returns:
        ``path``.

    Example:
        >>> export_layer_archive(model, "layers.tar")
    """
    precisions = _check_precisions(precisions)
    variants = _variants(model, channel_fractions, channel_multiple, batch)
    blobs, keys = _convert_all(variants, seed, progress, "archive",
                               precisions)
    files = {"overhead.tflite": blobs[0]}
    layers = []
    for i, ((v, bits), blob) in enumerate(zip(keys, blobs[1:])):
        name = f"layer_{i:04d}.tflite"
        files[name] = blob
        layers.append({"file": name, "spec": v.to_dict(),
                       **({"bits": list(bits)} if bits else {})})
    manifest = {"format": _dp.ARCHIVE_FORMAT,
                "version": 1 if precisions is None else 2,
                "model": getattr(model, "name", None),
                "channel_fractions": sorted(float(f)
                                            for f in channel_fractions),
                "channel_multiple": channel_multiple,
                "overhead_file": "overhead.tflite", "layers": layers}
    if precisions:
        manifest["precisions"] = list(precisions)
        manifest["precision_bits"] = [list(PRECISION_BITS[p])
                                      for p in precisions]
    with atomic_path(str(path)) as tmp:
        with tarfile.open(tmp, "w") as tar:
            items = [(_dp.MANIFEST, json.dumps(manifest, indent=1).encode())]
            items += list(files.items())
            for name, data in items:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return str(path)
