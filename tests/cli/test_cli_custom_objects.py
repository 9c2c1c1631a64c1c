"""``tfcomp --custom-objects FILE.py COMMAND ...``: a model with the user's
own layer classes, written as keras.io writes them (a script, no
registration, no ``get_config``), goes through the command line.

Before, every command failed to load such a ``.keras`` file ("Could not
locate class 'TransformerBlock'") with no way to tell tfcomp where the
class lives.
"""

import importlib.util
import sys

import keras
import numpy as np
import pytest

from tfcomp.cli import main

LAYERS = '''
import keras
L = keras.layers


class TransformerBlock(L.Layer):
    def __init__(self, embed_dim, num_heads, ff_dim):
        super().__init__()
        self.att = L.MultiHeadAttention(num_heads=num_heads,
                                        key_dim=embed_dim)
        self.ffn = keras.Sequential([L.Dense(ff_dim, activation="relu"),
                                     L.Dense(embed_dim)])
        self.norm = L.LayerNormalization(epsilon=1e-6)

    def call(self, inputs):
        out = self.norm(inputs + self.att(inputs, inputs))
        return out + self.ffn(out)
'''


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    d = tmp_path_factory.mktemp("custom")
    (d / "my_layers.py").write_text(LAYERS)
    spec = importlib.util.spec_from_file_location("my_layers",
                                                  d / "my_layers.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["my_layers"] = module
    spec.loader.exec_module(module)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 8))
    x = module.TransformerBlock(8, 2, 8)(inputs)
    x = keras.layers.GlobalAveragePooling1D()(x)
    x = keras.layers.Dense(12, activation="relu", name="hidden")(x)
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    model.save(d / "model.keras")
    del sys.modules["my_layers"]  # a fresh `tfcomp` process has no such
    x = np.random.default_rng(0).normal(size=(4, 6, 8)).astype("float32")
    return d, model, x


def test_prune_with_custom_objects(ws, capsys):
    d, model, x = ws
    out = d / "pruned.keras"
    assert main(["--custom-objects", str(d / "my_layers.py"), "prune",
                 str(d / "model.keras"), str(out), "--ratio", "0.5"]) == 0
    assert main(["--custom-objects", str(d / "my_layers.py"), "profile",
                 str(out)]) == 0
    assert "TransformerBlock" in capsys.readouterr().out


def test_without_custom_objects_the_error_says_how(ws, capsys):
    d, _, _ = ws
    assert main(["profile", str(d / "model.keras")]) == 2
    err = capsys.readouterr().err
    assert "your own layer classes" in err and "--custom-objects FILE.py" in err


@pytest.mark.parametrize("spec, words", [
    ("missing.py", "--custom-objects file not found"),
    ("no_such_module_xyz", "--custom-objects module 'no_such_module_xyz'"),
])
def test_bad_custom_objects_are_named(ws, capsys, spec, words):
    d, _, _ = ws
    assert main(["--custom-objects", spec, "profile",
                 str(d / "model.keras")]) == 2
    assert words in capsys.readouterr().err


def test_open_layers_prunes_inside_the_class(ws, capsys):
    d, model, x = ws
    out = d / "opened_pruned.keras"
    assert main(["--custom-objects", str(d / "my_layers.py"),
                 "--open-layers", "prune", str(d / "model.keras"), str(out),
                 "--ratio", "0.5"]) == 0
    assert "opened transformer_block" in capsys.readouterr().err
    small = keras.saving.load_model(out)  # no custom objects: opened
    names = [lyr.name for lyr in small.layers]
    assert "transformer_block_ffn" in names
    ffn = small.get_layer("transformer_block_ffn")
    assert ffn.layers[0].units < 8  # the block's hidden Dense was pruned
