"""Table of bad inputs to the ``tfcomp`` command: each exits with status 2
and one line on stderr (``tfcomp VERB: error: ...``) naming the argument
or the file, and leaves nothing on disk.

Each case is ``(id, argv, substring)``. ``{i}`` in ``argv`` is a folder of
shared inputs (a tiny model, data, policies, corrupt files), made once;
``{t}`` is the case's own empty folder, which holds only ``afile`` (a
file), ``folder.keras/`` and ``folder.json/`` (folders) and a search project
whose ``oracle.json`` is truncated. After the case both folders must be as
they were: no output, no temp file.

The cases run in-process through ``tfcomp.cli.main`` (its return value is
the exit status); one argparse error also runs as a real process.
"""

import json
import os
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest

import tfcomp
from tfcomp.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
SHAPE = (12, 12, 1)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_inputs")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (48,) + SHAPE).astype("float32")
    y = rng.integers(0, 10, 48).astype("int64")

    def npz(name, **arrays):
        full = {"x_train": x[:32], "y_train": y[:32], "x_test": x[32:],
                "y_test": y[32:]}
        full.update(arrays)
        np.savez(d / name, **full)

    npz("data.npz")
    raw = (d / "data.npz").read_bytes()
    (d / "trunc.npz").write_bytes(raw[:len(raw) // 2])
    (d / "garbage.npz").write_bytes(b"hello, not an archive")
    npz("nan.npz", x_train=np.where(x[:32] > 0.5, np.nan, x[:32]))
    npz("labels.npz", y_train=y[:32] + 10)
    npz("float_labels.npz", y_train=y[:32] + 0.5)
    np.savez(d / "object.npz", x_train=np.array([None] * 4, dtype=object),
             y_train=y[:4], x_test=x[:4], y_test=y[:4])

    keras.utils.set_random_seed(1)
    model = tfcomp.zoo.resnet(depth=8, width=4, input_shape=SHAPE)
    model.save(d / "model.keras")
    raw = (d / "model.keras").read_bytes()
    (d / "trunc.keras").write_bytes(raw[:len(raw) // 2])
    (d / "empty.keras").write_bytes(b"")
    (d / "text.keras").write_text("not a model")
    with zipfile.ZipFile(d / "noconfig.keras", "w") as z:
        z.writestr("metadata.json", "{}")

    other = keras.Sequential([keras.Input(SHAPE),
                              keras.layers.Conv2D(6, 3, name="cx"),
                              keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(10, name="fx")])
    tfcomp.pruning.make_plan(other, ratio=0.5).save(d / "other_plan.json")
    (d / "trunc_plan.json").write_text('{"format": "tfcomp-')
    conv = [layer.name for layer in model.layers
            if isinstance(layer, keras.layers.Conv2D)][1]
    (d / "unknown_policy.json").write_text(json.dumps(
        {conv: [4, 4], "no_such_layer": [4, 4]}))
    (d / "range_policy.json").write_text(json.dumps({conv: [0, 9]}))
    (d / "empty_policy.json").write_text("{}")
    (d / "trunc_policy.json").write_text('{"' + conv + '": [4,')
    (d / "binary_policy.json").write_bytes(b"\xff\xfe\x00\x01")
    (d / "trunc_results.json").write_text('{"rows": [{"stage": "a"')
    (d / "trunc_desc.json").write_text('{"format": "bitserial", "lay')
    return d


def _prepare(t):
    (t / "afile").write_text("a file\n")
    (t / "folder.keras").mkdir()
    (t / "folder.json").mkdir()
    project = t / "search" / "amc"
    project.mkdir(parents=True)
    (project / "tuner0.json").write_text("{}")
    (project / "oracle.json").write_text('{"ongoing_trials": {"tun')


def _snapshot(*folders):
    out = {}
    for folder in folders:
        for base, dirs, files in os.walk(folder):
            for name in dirs + files:
                path = os.path.join(base, name)
                if os.path.isdir(path):
                    out[path] = "folder"
                else:
                    st = os.stat(path)
                    out[path] = (st.st_size, st.st_mtime_ns)
    return out


P, T, D = "{i}/model.keras", "{t}/out.keras", "{i}/data.npz"
PRUNE = ["prune", P, T, "--ratio", "0.5"]
SEARCH = ["search", "amc", P, T, "--data", D, "--trials", "1",
          "--budget", "0.9", "--round-to", "1", "--val-size", "8",
          "--calibration-size", "8"]

CASES = [
    # models
    ("truncated_keras", ["profile", "{i}/trunc.keras"],
     "trunc.keras' is truncated"),
    ("empty_keras", ["profile", "{i}/empty.keras"], "empty.keras' is empty"),
    ("text_keras", ["profile", "{i}/text.keras"],
     "text.keras' is not a .keras file"),
    ("zip_without_config", ["profile", "{i}/noconfig.keras"],
     "noconfig.keras' is a zip archive but not a .keras file"),
    ("model_is_a_folder", ["profile", "{t}/folder.keras"],
     "folder.keras' is a folder"),
    ("missing_model", ["profile", "{i}/missing.keras"],
     "model file not found"),
    # policies
    ("policy_unknown_layers_profile",
     ["profile", P, "--policy", "{i}/unknown_policy.json"],
     "not in the model: ['no_such_layer']"),
    ("policy_unknown_layers_quantize",
     ["quantize", P, T, "--policy", "{i}/unknown_policy.json"],
     "not in the model: ['no_such_layer']"),
    ("policy_bits_out_of_range",
     ["quantize", P, T, "--policy", "{i}/range_policy.json"],
     "range_policy.json'"),
    ("policy_empty", ["quantize", P, T, "--policy", "{i}/empty_policy.json"],
     "empty_policy.json' must be a non-empty JSON object"),
    ("policy_truncated", ["profile", P, "--policy", "{i}/trunc_policy.json"],
     "trunc_policy.json' is not valid JSON"),
    ("policy_binary", ["profile", P, "--policy", "{i}/binary_policy.json"],
     "binary_policy.json' is not UTF-8"),
    ("policy_is_a_folder", ["profile", P, "--policy", "{t}/folder.json"],
     "folder.json' is a folder"),
    # data
    ("data_truncated_npz", [*PRUNE, "--data", "{i}/trunc.npz"],
     "trunc.npz' is truncated"),
    ("data_not_a_zip", [*PRUNE, "--data", "{i}/garbage.npz"],
     "garbage.npz' is not a .npz file"),
    ("data_object_arrays", [*PRUNE, "--data", "{i}/object.npz"],
     "object.npz'"),
    ("data_nan_images", [*PRUNE, "--data", "{i}/nan.npz",
                         "--finetune-epochs", "1"],
     "x_train holds"),
    ("data_labels_out_of_range", [*PRUNE, "--data", "{i}/labels.npz",
                                  "--finetune-epochs", "1"],
     "y_train labels must be >= 0, < 10"),
    ("data_float_labels", [*PRUNE, "--data", "{i}/float_labels.npz"],
     "y_train must hold integer class labels"),
    ("export_data_truncated_npz",
     ["export", "tflite", P, "{t}/m.tflite", "--data", "{i}/trunc.npz"],
     "trunc.npz' is truncated"),
    # outputs
    ("output_parent_is_a_file", ["prune", P, "{t}/afile/out.keras",
                                 "--ratio", "0.5"],
     "afile' is a file, not a folder"),
    ("output_is_a_folder", ["prune", P, "{t}/folder.keras", "--ratio",
                            "0.5"],
     "folder.keras' is a folder"),
    ("plan_parent_is_a_file", [*PRUNE, "--plan", "{t}/afile/plan.json"],
     "--plan"),
    ("profile_output_is_a_folder", ["profile", P, "--output",
                                    "{t}/folder.json"],
     "--output"),
    ("lut_output_parent_is_a_file",
     ["lut", "build", P, "{t}/afile/t.json", "--hardware", "bismo"],
     "afile' is a file, not a folder"),
    ("tflite_output_parent_is_a_file",
     ["export", "tflite", P, "{t}/afile/m.tflite", "--verify", "0"],
     "afile' is a file, not a folder"),
    ("report_output_is_a_file",
     ["report", "--model", f"m={P}", "--output", "{t}/afile"], "--output"),
    ("search_directory_is_a_file", [*SEARCH[:-8], "--directory",
                                    "{t}/afile"],
     "--directory"),
    # numbers and flags
    ("lr_nan", [*PRUNE, "--data", D, "--finetune-epochs", "1", "--lr",
                "nan"], "argument --lr"),
    ("qat_lr_negative", ["quantize", P, T, "--data", D, "--epochs", "1",
                         "--lr", "-0.001"],
     "argument --lr: must be a finite number > 0"),
    ("target_macs_nan", ["prune", P, T, "--target-macs", "nan"],
     "argument --target-macs"),
    ("target_macs_inf", ["prune", P, T, "--target-macs", "inf"],
     "argument --target-macs"),
    ("seed_negative", [*PRUNE, "--method", "random", "--seed", "-1"],
     "argument --seed"),
    ("budget_nan", [*SEARCH[:6], "--budget", "nan"], "--budget"),
    ("finetune_without_data", [*PRUNE, "--finetune-epochs", "1"],
     "--finetune-epochs needs --data"),
    ("unknown_method", ["prune", P, T, "--method", "zzz", "--ratio", "0.5"],
     "argument --method: invalid choice: 'zzz'"),
    ("unknown_flag", ["profile", P, "--frobnicate"],
     "unrecognized arguments: --frobnicate"),
    ("unknown_verb", ["frobnicate"], "invalid choice: 'frobnicate'"),
    ("missing_verb", [], "required"),
    # other files
    ("plan_truncated", ["prune", P, T, "--apply-plan",
                        "{i}/trunc_plan.json"],
     "trunc_plan.json' is not valid JSON"),
    ("plan_of_another_model", ["prune", P, T, "--apply-plan",
                               "{i}/other_plan.json"],
     "other_plan.json' does not fit model"),
    ("results_truncated", ["report", "{i}/trunc_results.json", "--output",
                           "{t}/rep"],
     "trunc_results.json' is not valid JSON"),
    ("descriptor_truncated", ["simulate", "{i}/trunc_desc.json", "--data",
                              D], "trunc_desc.json'"),
    ("search_oracle_truncated", [*SEARCH, "--directory", "{t}/search"],
     "oracle.json' is not valid JSON"),
]


@pytest.mark.parametrize("argv, needle", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_cli_input_exits_2_with_one_line(inputs, tmp_path, capsys,
                                             argv, needle):
    _prepare(tmp_path)
    before = _snapshot(inputs, tmp_path)
    args = [a.format(i=inputs, t=tmp_path) for a in argv]
    code = main(["--quiet", *args])
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (code, out, err)
    assert len(lines) == 1, err
    verb = " ".join(["tfcomp", *[a for a in args[:2]
                                 if a in ("profile", "prune", "quantize",
                                          "search", "lut", "build",
                                          "export", "tflite", "report",
                                          "simulate")]])
    assert lines[0].startswith(f"{verb}: error: "), lines[0]
    assert needle.format(i=inputs, t=tmp_path) in lines[0], lines[0]
    assert "Traceback" not in err
    assert _snapshot(inputs, tmp_path) == before   # nothing left on disk


def test_case_table_is_large_and_unique():
    assert len(CASES) >= 15
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.slow
def test_diverging_fine_tune_fails_before_saving(inputs, tmp_path, capsys):
    """A finite but absurd --lr is work that fails (exit 1): nothing saved."""
    out = tmp_path / "out.keras"
    code = main(["--quiet", "prune", str(inputs / "model.keras"), str(out),
                 "--ratio", "0.5", "--data", str(inputs / "data.npz"),
                 "--finetune-epochs", "1", "--lr", "1e30",
                 "--batch-size", "4", "--plan", str(tmp_path / "p.json")])
    err = capsys.readouterr().err
    assert code == 1, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "NaN or inf" in lines[0], err
    assert "nothing was saved" in lines[0]
    assert os.listdir(tmp_path) == []


def test_usage_error_in_a_real_process_is_one_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep
               + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", "tfcomp.cli", "prune", "m.keras",
         str(tmp_path / "o.keras"), "--ratio", "1.5"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "tfcomp prune: error: argument --ratio: must be in [0, 1). "
        "Received: 1.5"]
    assert os.listdir(tmp_path) == []
