"""Low-bit QAT layers in an int8 TFLite file: the file computes what the
QAT model computes, and it loads in XNNPACK, TFLite's default CPU delegate
(the one phones run)."""

import os

import keras
import numpy as np
import tensorflow as tf

from tfcomp.export import export_tflite
from tfcomp.export.int8 import convert_int8
from tfcomp.export.runtime import float_ops, make_interpreter
from tfcomp.quantization import calibrate, quantize_model

L = keras.layers


def _requantization_scales(flatbuffer):
    """``s_in * s_w / s_out`` of every CONV_2D / DEPTHWISE_CONV_2D."""
    it = tf.lite.Interpreter(
        model_content=flatbuffer, experimental_op_resolver_type=(
            tf.lite.experimental.OpResolverType
            .BUILTIN_WITHOUT_DEFAULT_DELEGATES))
    it.allocate_tensors()
    td = it.get_tensor_details()

    def scale(i):
        return td[i]["quantization_parameters"]["scales"]

    return [float(np.max(scale(o["inputs"][0])[0] * scale(o["inputs"][1])
                         / scale(o["outputs"][0])[0]))
            for o in it._get_ops_details()
            if o["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D")]


def _cancelling_2bit():
    """A calibrated QAT model whose 2-bit layer "t" has cancelling weights
    on two equal inputs (channel 0) and one 1000x smaller (channel 1)."""
    inp = keras.Input((4, 4, 1))
    c = L.Conv2D(2, 1, use_bias=False, name="c")(inp)
    model = keras.Model(inp, L.Conv2D(2, 1, use_bias=False, name="t")(c))
    model.get_layer("c").set_weights([np.ones((1, 1, 1, 2), "float32")])
    model.get_layer("t").set_weights([np.array(
        [[[[1.0, 1e-3], [-1.0, 0.0]]]], "float32")])
    x = np.random.default_rng(0).uniform(size=(32, 4, 4, 1)).astype(
        "float32")
    qat = quantize_model(model, bits={"t": (2, 8)})
    calibrate(qat, x)
    return qat, x


def test_two_bit_layer_with_cancelling_weights_loads_in_xnnpack(tmp_path):
    # channel 0 of the 2-bit layer reads two equal inputs with weights +1
    # and -1 (output 0), channel 1 a weight 1000x smaller: its output grid
    # is 1000x finer than one weight code times one input step. Stored as
    # the 2-bit codes (+-1) at scale 1, that is a requantization scale of
    # ~1000, over XNNPACK's 256: the file failed to load ("failed to
    # prepare" the delegate) where the TFLite reference kernels ran it.
    qat, x = _cancelling_2bit()
    assert max(_requantization_scales(convert_int8(qat))) < 256
    report = export_tflite(qat, os.path.join(tmp_path, "t.tflite"),
                           quantization="int8", verify_data=x)
    assert report.max_abs_error <= 1e-5


def test_a_file_xnnpack_cannot_prepare_runs_on_the_reference_kernels(
        monkeypatch):
    # the bare-codes encoding of the model above (code multiplier 1): the
    # interpreter failed on creation ("No TFLite runtime could load")
    import tfcomp.export.int8 as int8

    monkeypatch.setattr(int8, "code_multiplier", lambda codes: 1)
    qat, _ = _cancelling_2bit()
    _, runtime = make_interpreter(convert_int8(qat))
    assert "reference kernels" in runtime


def test_relu_after_a_relu_requantizes_exactly_for_a_low_bit_reader(
        tmp_path):
    # keras.io's Xception blocks start with a ReLU on a tensor a conv's own
    # ReLU made: the 4-bit reader's input was requantized by TFLite's RELU
    # op (other rounding than the QAT model's Q_4(Q_8(x)): errors of ~0.1)
    keras.utils.set_random_seed(1)
    inp = keras.Input((8, 8, 3))
    h = L.Conv2D(8, 3, padding="same", activation="relu", name="c")(inp)
    h = L.Conv2D(8, 3, padding="same", name="t")(L.ReLU()(h))
    model = keras.Model(inp, L.Conv2D(3, 1, name="head")(h))
    x = np.random.default_rng(0).uniform(size=(32, 8, 8, 3)).astype(
        "float32")
    qat = quantize_model(model, bits={"t": (4, 4)})
    calibrate(qat, x)
    path = os.path.join(tmp_path, "r.tflite")
    report = export_tflite(qat, path, quantization="int8", verify_data=x)
    assert report.max_abs_error <= 1e-5
    # the ReLU takes the observer's grid first: no float RELU in the file
    assert float_ops(make_interpreter(path)[0]) == []
