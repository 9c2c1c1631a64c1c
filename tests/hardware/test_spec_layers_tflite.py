"""Measured TFLite tables on the layers ``extract_specs`` maps beyond
Conv2D / depthwise / Dense: a SeparableConv2D net (one ``"separable"``
spec, timed as one SeparableConv2D file) and an Embedding + Conv1D text
net (an ``"embedding"`` gather, a 1 x k ``"conv"``), float and at every
LiteRT precision."""

import math

import keras
import pytest

from tfcomp.hardware import (
    build_layer_model,
    extract_specs,
    measure_tflite_table,
)
from tfcomp.hardware.precision import PRECISION_BITS, op_precisions
from tfcomp.hardware.tflite_profiler import (
    layer_to_tflite,
    quantize_layer_file,
)
from tfcomp.quantization.quantize import quantizable_layers

L = keras.layers
FAST = {"channel_fractions": (1.0,), "runs": 3, "warmup": 1, "rounds": 1,
        "statistic": "min", "progress": False}


def _separable_net():
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 8))
    h = L.SeparableConv2D(32, 3, padding="same", depth_multiplier=2,
                          activation="relu", name="sep")(inp)
    h = L.GlobalAveragePooling2D(name="gap")(h)
    return keras.Model(inp, L.Dense(10, name="fc")(h))


def _text_net():
    keras.utils.set_random_seed(0)
    inp = keras.Input((128,), dtype="int32")
    h = L.Embedding(500, 64, name="emb")(inp)
    h = L.Conv1D(32, 3, padding="same", activation="relu", name="conv")(h)
    h = L.GlobalAveragePooling1D(name="gap")(h)
    return keras.Model(inp, L.Dense(4, name="fc")(h))


def _covered(model, table, pairs):
    """Every quantizable layer has a finite entry at every pair; the
    layers under test (timed at 2-20x the ~0.6 us invoke overhead) a
    positive one (the dense heads' ~0.05 us and an embedding lookup's can
    round to 0 after the overhead is subtracted: the embedding did on a
    loaded host)."""
    specs = {s.name: s for s in extract_specs(model)}
    names = quantizable_layers(model)
    assert names and set(names) <= set(specs)
    for name in names:
        for w, a in pairs:
            t = table.lookup(specs[name], w, a).latency_s
            assert math.isfinite(t) and t >= 0, (name, w, a, t)
            if specs[name].op not in ("dense", "embedding"):
                assert t > 0, (name, w, a, t)
    assert table.model_cost(model).latency_s > table.overhead_s > 0


def test_build_layer_model_separable_and_embedding():
    sep = next(s for s in extract_specs(_separable_net()) if s.op ==
               "separable")
    m = build_layer_model(sep)
    assert isinstance(m.layers[-1], L.SeparableConv2D)
    assert tuple(m.output.shape) == (1, 16, 16, 32)
    assert m.layers[-1].depth_multiplier == 2
    emb = next(s for s in extract_specs(_text_net()) if s.op == "embedding")
    m = build_layer_model(emb)
    assert m.inputs[0].dtype == "int32"
    assert tuple(m.output.shape) == (1, 128, 64)
    assert layer_to_tflite(m)[4:8] == b"TFL3"


@pytest.mark.parametrize("net", [_separable_net, _text_net])
def test_float_table_covers_every_quantizable_layer(net):
    model = net()
    table = measure_tflite_table(model, **FAST)
    assert table.bit_invariant
    _covered(model, table, [(32, 32)])


def test_precision_tables():
    """Separable: int8 depthwise and int4 pointwise under int4w (no int4
    depthwise recipe); an embedding's GATHER is timed float at every
    pair."""
    pytest.importorskip("ai_edge_quantizer")
    sep = next(s for s in extract_specs(_separable_net()) if s.op ==
               "separable")
    blob = layer_to_tflite(build_layer_model(sep))
    assert sorted(op_precisions(quantize_layer_file(blob, "int4w")
                                ).values()) == ["int4w", "int8"]
    assert set(op_precisions(quantize_layer_file(blob, "float16")
                             ).values()) == {"float16"}
    pairs = list(PRECISION_BITS.values())
    for net in (_separable_net, _text_net):
        model = net()
        table = measure_tflite_table(model, precisions=tuple(PRECISION_BITS),
                                     **FAST)
        assert sorted(table.bit_pairs) == sorted(pairs)
        _covered(model, table, pairs)


def test_archive_runs_on_the_device_profiler(tmp_path):
    """The archive's embedding file runs with the device profiler's random
    int32 indices (wrapped into the table inside the file)."""
    from tfcomp.hardware import (
        LatencyTable,
        device_profiler,
        export_layer_archive,
    )

    model = _text_net()
    path = export_layer_archive(model, str(tmp_path / "layers.tar"),
                                channel_fractions=(1.0,), progress=False)
    doc = device_profiler.profile_archive(path, runs=2, warmup=1, rounds=1,
                                          verbose=False)
    table = LatencyTable.from_dict(doc)
    _covered(model, table, [(32, 32)])
