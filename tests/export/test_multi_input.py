"""Multi-input models to TFLite: the file's inputs are fed by the Keras
model's input tensors' names (the signature keeps them: a named Input's
name, an unnamed one's ``keras_tensor_N``; a file may order its inputs
otherwise), post-training int8 calibrates on every input, and the forms of
data model.fit takes are accepted."""

import os

import keras
import numpy as np
import pytest

from tfcomp.export import export_tflite

L = keras.layers


def _two_inputs(named=True):
    """Two inputs of one shape, named against alphabetical order (or
    unnamed, as keras.io's siamese examples write them), used differently:
    a swapped feed changes the outputs."""
    keras.utils.set_random_seed(0)
    second, first = keras.Input((5, 4), name="b_second" if named else None), \
        keras.Input((5, 4), name="a_first" if named else None)
    x = L.Concatenate()([second, L.Dense(4)(first)])
    return keras.Model([second, first], L.Dense(3)(L.Flatten()(x)))


def _data(n=48):
    rng = np.random.default_rng(0)
    return [rng.normal(size=(n, 5, 4)).astype("float32"),
            3 * rng.normal(size=(n, 5, 4)).astype("float32")]


@pytest.mark.parametrize("named", [True, False])
def test_float_file_is_fed_by_input_name(tmp_path, named):
    report = export_tflite(_two_inputs(named),
                           os.path.join(tmp_path, "f.tflite"),
                           verify_data=_data())
    assert report.max_abs_error < 1e-5 and report.num_verified == 48


def test_inputs_of_one_shape_need_the_signature_names(tmp_path):
    from tfcomp.hardware.runtime import make_interpreter, run_interpreter

    model, xs = _two_inputs(named=False), _data()
    path = os.path.join(tmp_path, "f.tflite")
    export_tflite(model, path, verify=False)
    interp, _ = make_interpreter(path)
    with pytest.raises(ValueError, match="keras_tensor.*input_names="):
        run_interpreter(interp, xs, input_names=["input_layer",
                                                 "input_layer_1"])
    y = run_interpreter(interp, xs, input_names=[t.name for t in
                                                 model.inputs])
    np.testing.assert_allclose(y, model.predict(xs, verbose=0), atol=1e-5)


@pytest.mark.parametrize("named", [True, False])
def test_post_training_int8_calibrates_every_input(tmp_path, named):
    import tensorflow as tf

    xs = _data()
    ds = tf.data.Dataset.from_tensor_slices((tuple(xs), np.zeros(48)))
    report = export_tflite(_two_inputs(named),
                           os.path.join(tmp_path, "q.tflite"),
                           "int8", calibration_data=ds.batch(16),
                           verify_data=(xs, np.zeros(48)))
    assert report.float_ops == [] and report.top1_agreement >= 0.9


def test_bad_multi_input_data_and_modes_are_named(tmp_path):
    model, xs = _two_inputs(), _data()
    path = os.path.join(tmp_path, "m.tflite")
    with pytest.raises(ValueError, match="2 inputs.*Received: ndarray"):
        export_tflite(model, path, verify_data=xs[0])
    with pytest.raises(ValueError, match=r"input 1 must have shape"):
        export_tflite(model, path, verify_data=[xs[0], xs[1][:, :3]])
    with pytest.raises(ValueError, match="single-input models"):
        export_tflite(model, path, "int4w", calibration_data=xs)
    assert not os.path.exists(path)


def test_model_built_on_a_dict_of_inputs_takes_its_keys(tmp_path):
    """``keras.Model({"image": a, "meta": b}, ...)``: data is a dict by the
    model's keys (Keras orders model.inputs by sorted key), labels a dict
    by output name; the file is fed and calibrated on the right inputs."""
    from tfcomp._batches import input_names, model_arrays

    keras.utils.set_random_seed(0)
    meta, image = keras.Input((4,), name="meta"), keras.Input((5, 4),
                                                              name="image")
    h = L.Concatenate()([L.Flatten()(image), L.Dense(4)(meta)])
    model = keras.Model({"meta": meta, "image": image},
                        {"score": L.Dense(1, name="score")(h),
                         "cls": L.Dense(3, name="cls")(h)})
    assert input_names(model) == ["image", "meta"]
    rng = np.random.default_rng(0)
    x = {"meta": rng.normal(size=(48, 4)).astype("float32"),
         "image": 3 * rng.normal(size=(48, 5, 4)).astype("float32")}
    y = {"cls": rng.integers(0, 3, 48), "score": rng.normal(size=(48, 1))}
    xs, labels = model_arrays((x, y), model)
    assert [a.shape for a in xs] == [(48, 5, 4), (48, 4)]
    np.testing.assert_array_equal(labels, y["cls"])  # first output by key
    report = export_tflite(model, os.path.join(tmp_path, "f.tflite"),
                           verify_data=x)
    assert report.max_abs_error < 1e-5 and report.num_verified == 48
    report = export_tflite(model, os.path.join(tmp_path, "q.tflite"),
                           "int8", calibration_data=(x, y), verify_data=x)
    assert report.top1_agreement >= 0.9
