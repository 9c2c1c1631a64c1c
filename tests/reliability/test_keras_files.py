"""``.keras`` files of every kind of tfcomp model load in a fresh process
after only ``import keras, tfcomp`` (no ``import tfcomp.layers``), and
compute what the saved model computed; ``import tfcomp`` still loads
neither Keras nor TensorFlow.

Keras 3 finds a custom class by its ``registered_name`` in the table that
``register_keras_serializable`` fills when the class is defined (it imports
the recorded ``module`` only for Keras' own packages), so tfcomp registers
its classes as soon as Keras is imported (``tfcomp._saving``).
"""

import json
import os
import re
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import tfcomp
from tfcomp import _saving
from tfcomp.layers import (
    BinaryConv2D,
    BinaryDense,
    Constant,
    QuantAdditiveAttention,
    QuantAttention,
    QuantAverage,
    QuantELU,
    QuantHardSigmoid,
    QuantReLU,
    QuantSELU,
    TuckerConv2D,
)
from tfcomp.pruning import (
    ConstantSparsity,
    PolynomialDecay,
    apply_fpgm,
    apply_gal,
    apply_magnitude_pruning,
    to_slimmable,
)
from tfcomp.quantization import calibrate, make_bits_dynamic, quantize_model
from tfcomp.quantization.dnas import build_supernet
from tfcomp.tensorized import tnet

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
PACKAGE = os.path.join(REPO, "tfcomp")

# Loads every .keras file of a folder after the imports given as argv[1]
# ("keras,tfcomp" or "tfcomp,keras") and prints one JSON line per file,
# then the registered tfcomp names and the deserialised schedules.
LOADER = textwrap.dedent('''
    import glob, importlib, json, os, sys
    for name in sys.argv[1].split(","):
        importlib.import_module(name)
    import keras
    import numpy as np
    folder = sys.argv[2]
    x = np.load(os.path.join(folder, "x.npy"))
    for path in sorted(glob.glob(os.path.join(folder, "*.keras"))):
        out = {"file": os.path.basename(path)}
        try:
            model = keras.saving.load_model(path)
            y = keras.ops.convert_to_numpy(model(x, training=False))
            out["max_diff"] = float(np.abs(
                y - np.load(path[:-len(".keras")] + ".npy")).max())
            from tfcomp.graph import iter_leaf_layers
            out["classes"] = sorted(
                type(layer).__name__ for _, layer in iter_leaf_layers(model)
                if type(layer).__module__.startswith("tfcomp."))
        except Exception as e:
            out["error"] = f"{type(e).__name__}: {e}"[:3000]
        print(json.dumps(out), flush=True)
    with open(os.path.join(folder, "schedules.json")) as f:
        schedules = json.load(f)
    print(json.dumps({"schedules": [
        keras.saving.deserialize_keras_object(s).get_config()
        for s in schedules]}))
    print(json.dumps({"registered": sorted(
        k for k in keras.saving.get_custom_objects()
        if k.startswith("tfcomp>"))}))
''')


def _env():
    return dict(os.environ, KERAS_BACKEND="tensorflow",
                TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
                PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH",
                                                              ""))


def _run(code, *args, timeout=300):
    proc = subprocess.run([sys.executable, "-W", "error::RuntimeWarning",
                           "-c", code, *args], capture_output=True,
                          text=True, timeout=timeout, env=_env())
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-3000:])
    return [json.loads(line) for line in proc.stdout.splitlines()
            if line.startswith("{")]


def _decorated_classes() -> dict:
    """``{module: [class names]}`` of every class that tfcomp's source
    registers with ``register_keras_serializable(package="tfcomp")``."""
    found = {}
    pattern = re.compile(
        r'register_keras_serializable\(package="tfcomp"\)\s*\n'
        r'(?:@[^\n]*\n)*class (\w+)')
    for root, _, files in os.walk(PACKAGE):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(root, name)
            with open(path, encoding="utf-8") as f:
                classes = pattern.findall(f.read())
            if classes:
                rel = os.path.relpath(path[:-3], REPO).replace(os.sep, ".")
                found[rel.removesuffix(".__init__")] = classes
    return found


def _base():
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same")(inp)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(6, activation="relu")(x)
    return keras.Model(inp, keras.layers.Dense(5)(x))


def _supernet_base():
    """``_base`` with a Conv1D over the feature map's rows: every layer
    type a DNAS supernet searches."""
    keras.utils.set_random_seed(0)
    L = keras.layers
    inp = keras.Input((8, 8, 3))
    x = L.ReLU()(L.BatchNormalization()(L.Conv2D(8, 3, padding="same")(inp)))
    x = L.DepthwiseConv2D(3, padding="same")(x)
    x = L.Conv1D(8, 3, padding="same")(L.Reshape((64, 8))(x))
    x = L.Dense(6, activation="relu")(L.GlobalAveragePooling1D()(x))
    return keras.Model(inp, L.Dense(5)(x))


def _wide_base():
    """Every layer type the wrappers and quantize_model handle, in one
    model with the single (8, 8, 3) input (1D / 3D views by Reshape)."""
    keras.utils.set_random_seed(0)
    L = keras.layers
    inp = keras.Input((8, 8, 3))
    a = L.Conv2D(8, 3, padding="same", groups=1)(inp)
    a = L.BatchNormalization()(a)
    a = L.DepthwiseConv2D(3, padding="same")(a)
    a = L.Conv2D(8, 3, padding="same", groups=2)(a)
    a = L.SeparableConv2D(8, 3, padding="same")(a)
    a = L.Conv2DTranspose(4, 3, strides=2, padding="same")(a)
    a = L.GroupNormalization(groups=2)(a)
    a = L.GlobalAveragePooling2D()(a)
    b = L.Reshape((64, 3))(inp)
    b = L.Conv1D(6, 3, padding="causal")(b)
    b = L.SeparableConv1D(6, 3, padding="same")(b)
    b = L.DepthwiseConv1D(3, padding="same")(b)
    b = L.Conv1DTranspose(4, 3, padding="same")(b)
    b = L.LayerNormalization()(b)
    b = L.Add()([b, L.MultiHeadAttention(2, 2)(b, b)])
    b = L.GlobalAveragePooling1D()(b)
    c = L.Reshape((4, 4, 4, 3))(inp)
    c = L.Conv3D(4, 2, padding="same")(c)
    c = L.Conv3DTranspose(4, 2, padding="same")(c)
    c = L.GlobalAveragePooling3D()(c)
    d = L.Embedding(10, 4)(L.Reshape((192,))(inp))  # ids: int(x) = 0
    d = L.GlobalAveragePooling1D()(d)
    e = L.Reshape((16, 12))(inp)  # recurrent layers (their masked twins)
    e = L.LSTM(4, return_sequences=True)(e)
    e = L.GRU(4, return_sequences=True)(e)
    e = L.Bidirectional(L.LSTM(3, return_sequences=True))(e)
    e = L.SimpleRNN(3)(e)
    f = L.ConvLSTM1D(3, 2, padding="same")(L.Reshape((4, 16, 3))(inp))
    f = L.GlobalAveragePooling1D()(f)
    g = L.Reshape((4, 4, 4, 3))(inp)  # ConvLSTM2D, then 3D on (2, 2, 4)
    g = L.ConvLSTM2D(3, 2, padding="same", return_sequences=True)(g)
    g = L.ConvLSTM3D(3, 2, padding="same")(L.Reshape((4, 2, 2, 4, 3))(g))
    g = L.GlobalAveragePooling3D()(g)
    x = L.Concatenate()([a, b, c, d, e, f, g])
    x = L.EinsumDense("ab,bc->ac", output_shape=12)(x)
    x = L.Dense(6, activation="relu")(x)
    return keras.Model(inp, L.Dense(5)(x))


def _layers_model():
    """The layers no model kind above uses on its own."""
    inp = keras.Input((8, 8, 3))
    x = QuantReLU(max_value=6.0, a_bits=4, name="qrelu")(inp)
    x = TuckerConv2D(4, 3, ranks=(2, 2, 2, 3), padding="same")(x)
    x = BinaryConv2D(4, 3, padding="same")(x)
    x = QuantAverage()([QuantHardSigmoid()(x), QuantSELU()(x),
                        QuantELU(alpha=0.5)(x)])
    x = keras.layers.GlobalAveragePooling2D()(x)
    s = keras.layers.Reshape((64, 3))(inp)  # Keras' attention layers
    s = QuantAttention(use_scale=True, score_mode="concat")([s, s])
    s = QuantAdditiveAttention()([s, s])
    x = keras.layers.Concatenate()(
        [x, keras.layers.GlobalAveragePooling1D()(s)])
    offset = Constant(np.linspace(0, 1, 5), value_dtype="float32")(inp)
    return keras.Model(inp, keras.ops.add(BinaryDense(5)(x), offset))


def _slim_base():
    """Conv + BN + depthwise + dense: every slimmable layer class."""
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same")(inp)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(8, activation="relu")(x)
    return keras.Model(inp, keras.layers.Dense(5)(x))


def _slim_wide():
    """Every slimmable twin: convs of each rank, grouped, separable,
    transposed, depthwise, BN and GroupNormalization (no EinsumDense: the
    dependency graph does not prune through it)."""
    keras.utils.set_random_seed(0)
    L = keras.layers
    inp = keras.Input((8, 8, 3))
    a = L.Conv2D(8, 3, padding="same")(inp)
    a = L.BatchNormalization()(a)
    a = L.DepthwiseConv2D(3, padding="same")(a)
    a = L.Conv2D(8, 3, padding="same", groups=2)(a)
    a = L.SeparableConv2D(8, 3, padding="same")(a)
    a = L.GroupNormalization(groups=2)(a)  # not next to the grouped conv
    a = L.Conv2DTranspose(4, 3, strides=2, padding="same")(a)
    a = L.GlobalAveragePooling2D()(a)
    b = L.Reshape((64, 3))(inp)
    b = L.Conv1D(6, 3, padding="causal")(b)
    b = L.SeparableConv1D(6, 3, padding="same")(b)
    b = L.Conv1DTranspose(4, 3, padding="same")(b)
    b = L.GlobalAveragePooling1D()(b)
    c = L.Reshape((4, 4, 4, 3))(inp)
    c = L.Conv3D(4, 2, padding="same")(c)
    c = L.Conv3DTranspose(4, 2, padding="same")(c)
    c = L.GlobalAveragePooling3D()(c)
    x = L.Dense(6, activation="relu")(L.Concatenate()([a, b, c]))
    return keras.Model(inp, L.Dense(5)(x))


def _kinds(x):
    qat = quantize_model(_wide_base(), bits=4)
    calibrate(qat, x)
    dynamic = make_bits_dynamic(quantize_model(_base(), bits=4))
    calibrate(dynamic.model, x)
    dynamic.set_policy({name: (2, 4) for name in list(dynamic.layers)[1:2]})
    supernet = build_supernet(_supernet_base(), candidates=[(2, 4), (8, 8)],
                              first_last_bits=None)
    calibrate(supernet, x)
    fpgm = apply_fpgm(_wide_base())
    magnitude = apply_magnitude_pruning(_wide_base())
    for model in (fpgm, magnitude):  # non-trivial masks
        for layer in model.layers:
            for var in getattr(layer, "weights", []):
                if "mask" in var.path:
                    value = np.ones(var.shape, "float32")
                    value.reshape(-1)[::3] = 0.0
                    var.assign(value)
    layers = _layers_model()
    calibrate(layers, x)
    inp = keras.Input((8, 8, 3))
    t = keras.layers.Conv2D(4, 3, padding="same")(inp)
    for _ in range(2):
        t = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(t)
    t = keras.layers.GlobalAveragePooling2D()(t)
    tnet_model = tnet(keras.Model(inp, keras.layers.Dense(5)(t)), ranks=0.5)
    slim = to_slimmable(_slim_wide(), widths=(0.5, 1.0))
    gal = apply_gal(_slim_base(), "channels")
    return {"tnet": tnet_model, "slimmable": slim, "gal": gal, "fpgm": fpgm,
            "magnitude": magnitude, "qat": qat,
            "dynamic_bits": dynamic.model, "dnas_supernet": supernet,
            "layers": layers}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keras_files")
    x = np.random.default_rng(0).uniform(0, 1, (8, 8, 8, 3)).astype(
        "float32")
    np.save(folder / "x.npy", x)
    for name, model in _kinds(x).items():
        model.save(folder / f"{name}.keras")
        np.save(folder / f"{name}.npy",
                keras.ops.convert_to_numpy(model(x, training=False)))
    schedules = [ConstantSparsity(0.5, begin_step=2, frequency=3),
                 PolynomialDecay(0.1, 0.8, begin_step=0, end_step=10)]
    with open(folder / "schedules.json", "w") as f:
        json.dump([keras.saving.serialize_keras_object(s)
                   for s in schedules], f)
    return folder, [s.get_config() for s in schedules]


@pytest.mark.slow
@pytest.mark.parametrize("order", ["keras,tfcomp", "tfcomp,keras"])
def test_every_kind_loads_after_import_keras_tfcomp(saved, order):
    folder, schedules = saved
    results = _run(LOADER, order, str(folder))
    files = [r for r in results if "file" in r]
    assert [r["file"] for r in files] == [
        "dnas_supernet.keras", "dynamic_bits.keras", "fpgm.keras",
        "gal.keras", "layers.keras", "magnitude.keras", "qat.keras",
        "slimmable.keras", "tnet.keras"]
    for r in files:
        assert "error" not in r, r
        assert r["max_diff"] <= 1e-5, r
    # every tfcomp layer class is in some file (a new layer joins _kinds)
    loaded = {c for r in files for c in r["classes"]}
    registered = {name.split(">")[1]
                  for name in next(r for r in results
                                   if "registered" in r)["registered"]}
    layer_classes = {name for name in registered
                     if isinstance(getattr(tfcomp.layers, name, None), type)
                     and issubclass(getattr(tfcomp.layers, name),
                                    keras.layers.Layer)}
    assert layer_classes and layer_classes <= loaded, layer_classes - loaded
    assert next(r for r in results if "schedules" in r)["schedules"] == \
        schedules


@pytest.mark.slow
def test_every_registered_class_is_known_after_import_keras_tfcomp():
    decorated = _decorated_classes()
    assert "tfcomp.layers.quant_conv" in decorated
    modules = sorted(decorated)
    code = textwrap.dedent(f'''
        import json, sys
        import keras, tfcomp
        print(json.dumps({{
            "missing_modules": [m for m in {modules!r}
                                if m not in sys.modules],
            "registered": sorted(k for k in keras.saving.get_custom_objects()
                                 if k.startswith("tfcomp>"))}}))
    ''')
    [result] = _run(code)
    assert result["missing_modules"] == [], (
        "add these modules to tfcomp._saving.REGISTERING_MODULES",
        result["missing_modules"])
    want = {f"tfcomp>{c}" for classes in decorated.values() for c in classes}
    assert want <= set(result["registered"])


@pytest.mark.slow
def test_registration_when_a_tfcomp_module_imports_keras():
    # ``import tfcomp.layers`` first: Keras is imported half-way through
    # it; registration waits until tfcomp.layers is complete (no warning,
    # no half-imported package), and includes the pruning schedules.
    code = textwrap.dedent('''
        import json, sys
        import tfcomp.layers
        import keras
        print(json.dumps({"names": sorted(
            k for k in keras.saving.get_custom_objects()
            if k.startswith("tfcomp>"))}))
    ''')
    [result] = _run(code)
    assert "tfcomp>ConstantSparsity" in result["names"]
    assert "tfcomp>QuantConv2D" in result["names"]


def test_import_tfcomp_stays_light():
    code = ("import json, sys, tfcomp\n"
            "print(json.dumps({'loaded': [m for m in ('keras', "
            "'tensorflow') if m in sys.modules]}))\n")
    [result] = _run(code, timeout=120)
    assert result["loaded"] == []


@pytest.mark.slow
def test_unknown_class_error_names_the_package(tmp_path):
    """``tfcomp.load_model`` of a file with a class nobody registered in
    this process names the class, its module and the package to import."""
    pkg = tmp_path / "g18_userpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "layers.py").write_text(textwrap.dedent('''
        import keras

        @keras.saving.register_keras_serializable(package="g18_userpkg")
        class Twice(keras.layers.Layer):
            def call(self, x):
                return 2.0 * x
    '''))
    path = str(tmp_path / "user.keras")
    save = textwrap.dedent(f'''
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import keras
        from g18_userpkg.layers import Twice
        inp = keras.Input((3,))
        keras.Model(inp, Twice()(inp)).save({path!r})
    ''')
    _run(save)
    load = textwrap.dedent(f'''
        import json
        import keras, tfcomp
        try:
            tfcomp.load_model({path!r})
            out = {{"error": None}}
        except ValueError as e:
            out = {{"error": str(e)}}
        print(json.dumps(out))
    ''')
    [result] = _run(load)
    msg = result["error"]
    assert msg and "user.keras" in msg, msg
    assert "g18_userpkg>Twice" in msg and "import g18_userpkg" in msg, msg


def test_load_model_loads_tfcomp_files(tmp_path):
    model = quantize_model(_base(), bits=4)
    x = np.random.default_rng(1).uniform(0, 1, (4, 8, 8, 3)).astype(
        "float32")
    calibrate(model, x)
    path = str(tmp_path / "q.keras")
    model.save(path)
    assert _saving.unregistered_classes(path) == []
    loaded = tfcomp.load_model(path)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x, training=False)),
        keras.ops.convert_to_numpy(model(x, training=False)), atol=1e-6)
    with pytest.raises(FileNotFoundError, match="missing.keras"):
        tfcomp.load_model(str(tmp_path / "missing.keras"))
    assert not [e for e in os.listdir(tmp_path) if e.startswith(".tmp-")]


def test_saved_models_list_no_unregistered_class(saved):
    folder, _ = saved
    for name in os.listdir(folder):
        if name.endswith(".keras"):
            assert _saving.unregistered_classes(folder / name) == [], name
