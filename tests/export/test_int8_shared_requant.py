"""int8 export of a QAT model whose shared 8-bit tensor feeds b-bit layers.

The file must requantize the shared tensor exactly as the QAT forward pass
does (``Q_b(Q_8(x))``): no low-precision int8 -> int8 QUANTIZE op, and one
requantization per consumer grid (the converter must not merge them).
"""

import keras
import numpy as np

from tfcomp.export.int8 import convert_int8
from tfcomp.export.runtime import make_interpreter
from tfcomp.quantization import calibrate, quantize_model


def _residual_model():
    keras.utils.set_random_seed(3)
    inp = keras.Input((10, 10, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inp)
    x = keras.layers.ReLU()(x)
    a = keras.layers.Conv2D(8, 3, padding="same", activation="relu",
                            name="branch_a")(x)
    a = keras.layers.Conv2D(8, 3, padding="same", name="branch_a2")(a)
    b = keras.layers.Conv2D(8, 1, name="proj")(x)
    y = keras.layers.ReLU()(keras.layers.Add()([a, b]))
    y = keras.layers.GlobalAveragePooling2D()(y)
    out = keras.layers.Dense(6, name="head")(y)
    return keras.Model(inp, out)


def _run(flatbuffer, x):
    interp = make_interpreter(flatbuffer)[0]
    inp = interp.get_input_details()[0]
    interp.resize_tensor_input(inp["index"], x.shape)
    interp.allocate_tensors()
    interp.set_tensor(inp["index"], x)
    interp.invoke()
    out = interp.get_output_details()[0]
    ops = [op["op_name"] for op in interp._get_ops_details()]
    return interp.get_tensor(out["index"]), ops


def test_shared_tensor_low_bit_consumers_follow_qat():
    x = np.random.default_rng(0).uniform(size=(256, 10, 10, 1)).astype(
        "float32")
    bits = {"stem": (8, 8), "branch_a": (4, 3), "branch_a2": (4, 4),
            "proj": (3, 2), "head": (8, 8)}
    qat = quantize_model(_residual_model(), bits=bits)
    calibrate(qat, x[:64])
    ref = qat.predict(x, verbose=0)
    out, ops = _run(convert_int8(qat), x)
    # Only the float input's QUANTIZE remains: the shared stem tensor is
    # requantized to the 3- and 2-bit grids by two separate exact ops.
    assert ops.count("QUANTIZE") == 1
    assert ops.count("DEPTHWISE_CONV_2D") == 2
    step = qat.layers[-1].quantizer.numpy_grid()[0]  # logits observer
    agree = float(np.mean(out.argmax(1) == ref.argmax(1)))
    assert agree >= 0.99
    assert np.mean(np.abs(out - ref) <= 1.01 * step + 1e-6) >= 0.99
