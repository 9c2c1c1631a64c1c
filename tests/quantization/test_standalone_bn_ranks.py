"""A BatchNormalization that follows no conv (after a pooling, an Add or a
ReLU) on features, sequences and volumes: an 8-bit per-channel layer in the
QAT model (DepthwiseConv1D; a diagonal Dense / 1x1x1 Conv3D for features /
a volume), the same function, and integer in the int8 file (it was a float
MUL + ADD)."""

import keras
import numpy as np
import pytest

from tfcomp.export import export_tflite
from tfcomp.quantization import calibrate, quantize_model, strip_quantization

L = keras.layers


def _model(rank):
    if rank == 2:  # an MLP: Dense -> ReLU -> BatchNormalization
        inputs = keras.Input((8,))
        x = L.BatchNormalization()(L.Dense(4, activation="relu")(inputs))
        return keras.Model(inputs, L.Dense(3)(L.Dense(6, "relu")(x)))
    conv, pool, gap = {3: (L.Conv1D, L.MaxPooling1D, L.GlobalAveragePooling1D),
                       5: (L.Conv3D, L.MaxPooling3D,
                           L.GlobalAveragePooling3D)}[rank]
    inputs = keras.Input((16, 2) if rank == 3 else (6, 6, 6, 2))
    x = conv(4, 3, activation="relu")(inputs)
    x = pool(2)(x)
    x = L.BatchNormalization()(x)
    x = conv(6, 3, padding="same", activation="relu")(x)
    return keras.Model(inputs, L.Dense(3)(gap()(x)))


@pytest.mark.parametrize("rank,kind", [(2, "QuantDense"),
                                       (3, "QuantDepthwiseConv1D"),
                                       (5, "QuantConv3D")])
def test_standalone_batchnorm_is_an_integer_conv(rank, kind, tmp_path):
    keras.utils.set_random_seed(0)
    model = _model(rank)
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(48, *model.input_shape[1:])).astype("float32")
    bn = next(la for la in model.layers
              if isinstance(la, L.BatchNormalization))
    bn.set_weights([rng.uniform(0.5, 2, 4), rng.normal(size=4),
                    rng.normal(size=4), rng.uniform(0.5, 2, 4)])
    q = quantize_model(model)
    assert type(q.get_layer(bn.name)).__name__ == kind
    # the same function (float bits: the fold alone)
    f = strip_quantization(quantize_model(model, bits=32,
                                          first_last_bits=None))
    np.testing.assert_allclose(f(x), model(x), atol=1e-4)
    calibrate(q, x)
    q.compile("adam", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    q.fit(x, np.arange(48) % 3, epochs=1, batch_size=16, verbose=0)
    report = export_tflite(q, str(tmp_path / "q.tflite"), "int8",
                           calibration_data=x)
    assert report.float_ops == []
    assert report.top1_agreement >= 0.95
