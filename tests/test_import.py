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
