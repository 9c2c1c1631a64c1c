import subprocess
import sys


def test_import_tfcomp_is_light():
    code = (
        "import sys, tfcomp\n"
        "bad = [m for m in ('keras_tuner', 'ai_edge_litert', "
        "'tflite_runtime') if m in sys.modules]\n"
        "print(','.join(bad))\n"
        "assert callable(tfcomp.profile)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"imported eagerly: {out.stdout}"


def test_public_names_resolve():
    import tfcomp
    assert tfcomp.zoo.resnet is not None
    assert tfcomp.export_tflite is not None
    assert "profile" in tfcomp.__all__


def test_import_tfcomp_does_not_load_tensorflow():
    # ``tfcomp --help`` must be instant: Keras / TF load on first real use.
    code = ("import sys, tfcomp, tfcomp.cli\n"
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False False"


def test_pruning_modules_are_modules_not_functions():
    # no function of tfcomp.pruning shadows a module of the same name
    import importlib
    import pathlib
    import types

    import tfcomp.pruning

    root = pathlib.Path(tfcomp.pruning.__file__).parent
    names = sorted(p.stem for p in root.glob("*.py") if p.stem != "__init__")
    names += sorted(p.parent.name for p in root.glob("*/__init__.py"))
    assert "targets" in names and "wrappers" in names
    for name in names:
        mod = importlib.import_module(f"tfcomp.pruning.{name}")
        assert isinstance(mod, types.ModuleType), name
        assert isinstance(getattr(tfcomp.pruning, name), types.ModuleType), \
            name


def test_pruning_deprecated_aliases_warn():
    import pytest

    import tfcomp.pruning as tp

    with pytest.warns(DeprecationWarning, match="strip_pruning"):
        assert tp.strip is tp.strip_pruning
    with pytest.warns(DeprecationWarning, match="scratch_setup"):
        assert tp.scratch is tp.scratch_setup
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        tp.nope  # noqa: B018
