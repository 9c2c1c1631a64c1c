"""A model built on a dict of inputs, its keys not in sorted order (as
keras.io's structured-data examples build ``{name: keras.Input(...)}``):
Keras calls such a model only with a dict, so every place tfcomp runs the
user's model on its own batches must hand it a dict (``as_model_input``),
and data may come as a dict by input name."""

import os

import keras
import numpy as np

import tfcomp
from tfcomp.hardware import BISMO

L = keras.layers


def _tabular():
    keras.utils.set_random_seed(0)
    inputs = {"meta": keras.Input((4,), name="meta"),
              "image": keras.Input((8, 8, 3), name="image")}
    x = L.Conv2D(8, 3, activation="relu")(inputs["image"])
    x = L.Conv2D(16, 3, activation="relu")(x)
    x = L.GlobalAveragePooling2D()(x)
    h = L.Concatenate()([x, L.Dense(8, activation="relu")(inputs["meta"])])
    return keras.Model(inputs, L.Dense(3, activation="softmax")(h))


def _data(n=64):
    rng = np.random.default_rng(0)
    x = {"meta": rng.normal(size=(n, 4)).astype("float32"),
         "image": rng.uniform(size=(n, 8, 8, 3)).astype("float32")}
    return x, rng.integers(0, 3, n)


def test_sensitivities_and_joint_finetune_take_dict_data():
    model, (x, y) = _tabular(), _data()
    sens = tfcomp.sensitivity(model, (x, y), method="hessian")
    assert len(sens) == 4
    psens = tfcomp.pruning.sensitivity(model, (x, y), ratios=(0.5,),
                                       method="loss", num_samples=32)
    assert psens.groups
    res = tfcomp.compress(model, (x, y), hardware=BISMO(), budget=0.7,
                          num_samples=32, starts=1, check_gap=False,
                          selection="finetune", validation_data=(x, y),
                          finetune_data=(x, y), finetune_steps=1)
    assert res.cost <= 0.7 + 1e-9


def test_slimmable_widths_recalibrate_on_dict_data():
    model, (x, _) = _tabular(), _data()
    slim = tfcomp.to_slimmable(model, widths=(0.5, 1.0))
    assert len(tfcomp.recalibrate_widths(slim, x, batch_size=32)) == 2


def test_tflite_file_runs_on_a_dict_by_input_name(tmp_path):
    from tfcomp.hardware.runtime import make_interpreter, run_interpreter

    model, (x, y) = _tabular(), _data()
    path = os.path.join(tmp_path, "q.tflite")
    report = tfcomp.export_tflite(model, path, "int8",
                                  calibration_data=(x, y), verify_data=x)
    assert report.num_verified == 64
    interp, _ = make_interpreter(path)
    out = run_interpreter(interp, x)
    assert out.shape == (64, 3)
    assert np.mean(out.argmax(-1) == model.predict(x, verbose=0).argmax(
        -1)) >= 0.9


def test_rebuilt_models_keep_the_dict_of_inputs(tmp_path):
    # quantize_model / strip_quantization gave a list of inputs: the copy's
    # .input, its signature and a Sequential-style call differed from the
    # user's model (prune_channels, through clone_model, kept the dict)
    model, (x, _) = _tabular(), _data()
    qat = tfcomp.quantize_model(model)
    assert isinstance(qat.input, dict) and list(qat.input) == list(
        model.input)
    tfcomp.quantization.calibrate(qat, x)
    plain = tfcomp.quantization.strip_quantization(qat)
    assert isinstance(plain.input, dict)
    path = os.path.join(tmp_path, "q.keras")
    qat.save(path)
    again = keras.saving.load_model(path)
    assert isinstance(again.input, dict)
    np.testing.assert_allclose(np.asarray(again(x)), np.asarray(qat(x)),
                               atol=1e-6)
