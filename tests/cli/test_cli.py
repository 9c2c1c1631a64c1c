"""End-to-end tests of the ``tfcomp`` command line on a tiny ResNet-8.

Most verbs run in-process through ``tfcomp.cli.main([...])`` (its return
value is the exit code); two runs go through ``python -m tfcomp.cli`` to
check the real process exit status.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import tfcomp
from tfcomp.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHAPE = (12, 12, 1)


@pytest.fixture(scope="module")
def ws(tmp_path_factory, cli_files):
    """An untrained ResNet-8 (width 4) and a synthetic .npz."""
    d = tmp_path_factory.mktemp("cli")
    x, y = cli_files.data(d, SHAPE, n=96, n_train=64, classes=10)
    np.savez(d / "bad.npz", x_train=x[:8], y_train=y[:8])
    np.savez(d / "wrong_shape.npz", x_train=x[:8, :10, :10],
             y_train=y[:8], x_test=x[:8, :10, :10], y_test=y[:8])
    keras.utils.set_random_seed(1)
    model = tfcomp.zoo.resnet(depth=8, width=4, input_shape=SHAPE)
    model.save(d / "model.keras")
    inp = keras.Input(SHAPE)
    h = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inp)
    h = keras.layers.GlobalAveragePooling2D()(h)
    small = keras.Model(inp, keras.layers.Dense(10, name="fc")(h))
    small.save(d / "small.keras")  # for the (slow to trace) QAT fine-tune
    (d / "broken.keras").write_bytes(b"not a zip file")
    return d, tfcomp.profile(model).macs


def run(args, capsys):
    """``main(args)`` -> (exit code, stdout, stderr)."""
    code = main(["--quiet", *[str(a) for a in args]])
    out, err = capsys.readouterr()
    return code, out, err


def load(path):
    import tfcomp.layers  # noqa: F401

    return keras.saving.load_model(path)


# ------------------------------------------------------------------ help


@pytest.mark.parametrize("verb", [
    [], ["profile"], ["prune"], ["quantize"], ["search"], ["lut"],
    ["lut", "build"], ["export"], ["export", "tflite"],
    ["export", "bitserial"], ["simulate"], ["report"]])
def test_help_for_every_verb(verb, capsys):
    assert main([*verb, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: tfcomp" + "".join(" " + v for v in verb))
    assert "--help" in out


def test_vocabulary_flags_keep_their_old_names():
    from tfcomp.cli import build_parser

    parse = build_parser().parse_args
    for flag in ("--resource", "--cost"):
        args = parse(["search", "haq", "m.keras", "o.keras", flag, "size"])
        assert args.cost == "size"
    for flag in ("--hardware", "--target"):
        args = parse(["export", "bitserial", "m.keras", "o.json", flag,
                      "bitfusion"])
        assert args.hardware == "bitfusion"


def test_missing_verb_is_a_usage_error(capsys):
    assert main([]) == 2
    assert "required" in capsys.readouterr().err


# ------------------------------------------------------------------ profile


def test_profile_table_json_and_file(ws, capsys):
    d, macs = ws
    code, out, _ = run(["profile", d / "model.keras"], capsys)
    assert code == 0
    assert f"Total MACs:   {macs:,}" in out
    code, out, _ = run(["profile", d / "model.keras", "--json",
                        "--output", d / "profile.json"], capsys)
    assert code == 0
    doc = json.loads(out[:out.rindex("}") + 1])
    assert doc == json.loads((d / "profile.json").read_text())
    assert json.dumps(doc).count('"stem_conv"') >= 1


# ------------------------------------------------------------------ prune


@pytest.mark.slow
def test_prune_ratio_plan_and_replay(ws, capsys):
    d, macs = ws
    code, out, _ = run(["prune", d / "model.keras", d / "l1.keras",
                        "--method", "l1", "--ratio", "0.5",
                        "--plan", d / "l1_plan.json", "--data",
                        d / "data.npz"], capsys)
    assert code == 0, out
    pruned = load(d / "l1.keras")
    after = tfcomp.profile(pruned).macs
    assert after < 0.5 * macs
    assert f"MACs {macs:,} -> {after:,}" in out
    assert "test accuracy:" in out
    plan = tfcomp.pruning.Plan.load(str(d / "l1_plan.json"))
    assert len(plan) > 0
    # replaying the plan gives the same model
    code, _, _ = run(["prune", d / "model.keras", d / "replay.keras",
                      "--apply-plan", d / "l1_plan.json"], capsys)
    assert code == 0
    replay = load(d / "replay.keras")
    x = np.random.default_rng(1).uniform(0, 1, (4,) + SHAPE).astype("f4")
    np.testing.assert_allclose(replay.predict(x, verbose=0),
                               pruned.predict(x, verbose=0), atol=1e-5)


@pytest.mark.parametrize("method", ["l2", "fpgm", "random"])
def test_prune_target_macs(ws, method, capsys):
    d, macs = ws
    out_path = d / f"{method}.keras"
    code, _, err = run(["prune", d / "model.keras", out_path, "--method",
                        method, "--target-macs", "0.6", "--seed", "3"],
                       capsys)
    assert code == 0, err
    assert tfcomp.profile(load(out_path)).macs <= 0.6 * macs


@pytest.mark.parametrize("method", ["lasso", "dcp"])
@pytest.mark.slow
def test_prune_reconstruction_methods(ws, method, capsys):
    d, macs = ws
    out_path = d / f"{method}.keras"
    extra = (["--dcp-stage-epochs", "0", "--dcp-head-epochs", "1",
              "--dcp-stages", "2"] if method == "dcp" else [])
    code, _, err = run(["prune", d / "model.keras", out_path, "--method",
                        method, "--ratio", "0.5", "--data", d / "data.npz",
                        "--calibration-size", "32", *extra], capsys)
    assert code == 0, err
    small = load(out_path)
    assert tfcomp.profile(small).macs < 0.75 * macs
    assert small.output_shape == (None, 10)


@pytest.mark.parametrize("method", ["l1", "l2", "fpgm", "bn_scale",
                                    "random", "taylor", "lasso", "dcp"])
def test_prune_round_to_applies_to_every_method(ws, tiny_models, method,
                                                capsys):
    """``--round-to 4``: every kept channel count is a multiple of 4."""
    d, _ = ws
    src = d / "residual12.keras"
    if not src.exists():
        tiny_models.residual(input_shape=SHAPE, width=12).save(src)
    out_path = d / f"round_{method}.keras"
    extra = (["--dcp-stage-epochs", "0", "--dcp-head-epochs", "1",
              "--dcp-stages", "1"] if method == "dcp" else [])
    code, _, err = run(["prune", src, out_path, "--method", method,
                        "--ratio", "0.5", "--round-to", "4", "--data",
                        d / "data.npz", "--calibration-size", "32", *extra],
                       capsys)
    assert code == 0, err
    convs = {layer.name: layer.filters for layer in load(out_path).layers
             if isinstance(layer, keras.layers.Conv2D)}
    # 12 channels at ratio 0.5 keep 6 without rounding, 8 with it
    assert convs and all(n % 4 == 0 for n in convs.values()), convs
    assert min(convs.values()) == 8, convs


@pytest.mark.parametrize("args, code, message", [
    (["prune", "{d}/missing.keras", "{d}/o.keras", "--ratio", "0.5"], 2,
     "model file not found"),
    (["prune", "{d}/model.keras", "{d}/o.keras", "--ratio", "1.5"], 2,
     "argument --ratio: must be in [0, 1). Received: 1.5"),
    (["prune", "{d}/model.keras", "{d}/o.keras", "--ratio", "abc"], 2,
     "argument --ratio: must be a number"),
    (["prune", "{d}/model.keras", "{d}/o.keras", "--method", "magic",
      "--ratio", "0.5"], 2, "invalid choice: 'magic'"),
    (["prune", "{d}/model.keras", "{d}/o.keras"], 2,
     "exactly one of --ratio, --target-macs or --apply-plan"),
    (["prune", "{d}/model.keras", "{d}/o.keras", "--ratio", "0.5",
      "--target-macs", "0.5"], 2, "exactly one of"),
    (["prune", "{d}/model.keras", "{d}/o.h5", "--ratio", "0.5"], 2,
     "output model must end in .keras"),
    (["prune", "{d}/model.keras", "{d}/o.keras", "--method", "lasso",
      "--ratio", "0.5"], 2, "needs --data"),
    (["prune", "{d}/model.keras", "{d}/o.keras", "--ratio", "0.5",
      "--data", "{d}/nope.npz"], 2, "data file not found"),
    (["prune", "{d}/model.keras", "{d}/o.keras", "--ratio", "0.5",
      "--data", "mnist"], 2, "--data must be 'fashion-mnist' or"),
    (["prune", "{d}/model.keras", "{d}/o.keras", "--ratio", "0.5",
      "--data", "{d}/bad.npz"], 2, "lacks arrays"),
    (["prune", "{d}/model.keras", "{d}/o.keras", "--ratio", "0.5",
      "--data", "{d}/wrong_shape.npz"], 2, "the model expects (12, 12, 1)"),
    (["prune", "{d}/broken.keras", "{d}/o.keras", "--ratio", "0.5"], 2,
     "is not a .keras file (not a zip archive)"),
    (["prune", "{d}/model.keras", "{d}/o.keras", "--target-macs", "10"], 1,
     "cannot be reached"),
    (["quantize", "{d}/model.keras", "{d}/o.keras", "--bits", "9"], 2,
     "argument --bits: must be in [1, 8]"),
    (["quantize", "{d}/model.keras", "{d}/o.keras", "--policy",
      "{d}/missing.json"], 2, "policy file not found"),
    (["quantize", "{d}/model.keras", "{d}/o.keras", "--epochs", "1"], 2,
     "needs --data"),
    (["export", "bitserial", "{d}/model.keras", "{d}/o.json"], 2,
     "needs a quantized model"),
    (["export", "tflite", "{d}/model.keras", "{d}/o.tflite",
      "--quantization", "int8"], 2, "needs --data"),
    (["export", "tflite", "{d}/model.keras", "{d}/o.tflite",
      "--quantization", "int16x8"], 2, "int16x8 of a float model needs "
     "--data"),
    (["simulate", "{d}/missing.json", "--data", "{d}/data.npz"], 2,
     "descriptor not found"),
    (["lut", "build", "{d}/model.keras", "{d}/t.json", "--bits", "0-9"], 2,
     "bits must be in [1, 8]"),
    (["search", "amc", "{d}/model.keras", "{d}/o.keras", "--data",
      "{d}/data.npz", "--budget", "1.5"], 2, "--budget must be in (0, 1]"),
    (["report", "--output", "{d}/r"], 2, "give a results .json"),
    (["report", "{d}/missing.json"], 2, "results file not found"),
])
def test_bad_input_exits_non_zero_with_one_line(ws, args, code, message,
                                                capsys):
    d, _ = ws
    got, out, err = run([a.format(d=d) for a in args], capsys)
    assert got == code, (out, err)
    assert message in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("tfcomp ") and "error:" in last
    assert "Traceback" not in err
    assert not (d / "o.keras").exists()


# ------------------------------------------------------------------ quantize


@pytest.mark.slow
def test_quantize_uniform_and_policy(ws, capsys):
    d, _ = ws
    code, out, err = run(["quantize", d / "model.keras", d / "q4.keras",
                          "--bits", "4", "--data", d / "data.npz",
                          "--calibration-size", "32"], capsys)
    assert code == 0, err
    assert "test accuracy: float" in out and "quantized" in out
    q4 = load(d / "q4.keras")
    bits = {r.name: (r.w_bits, r.a_bits) for r in tfcomp.profile(q4).layers
            if r.w_bits < 32}
    assert bits["stem_conv"] == (8, 8) and bits["logits"] == (8, 8)
    assert bits["s1b1_conv1"] == (4, 4)

    # QAT fine-tune (on a two-layer model: tracing QAT training is slow)
    code, out, err = run(["quantize", d / "small.keras", d / "qs.keras",
                          "--bits", "4", "--data", d / "data.npz",
                          "--epochs", "1", "--steps-per-epoch", "2",
                          "--batch-size", "16", "--calibration-size", "32"],
                         capsys)
    assert code == 0, err
    qs = load(d / "qs.keras")
    assert tfcomp.quantization.is_qat_model(qs)
    assert qs.optimizer is not None and int(qs.optimizer.iterations) == 2

    policy = {"s1b1_conv1": [3, 5], "s2b1_conv2": [6, 4]}
    (d / "policy.json").write_text(json.dumps(policy))
    code, _, err = run(["quantize", d / "model.keras", d / "qp.keras",
                        "--policy", d / "policy.json"], capsys)
    assert code == 0, err
    assert "warning: no --data: activation ranges are not calibrated" in err
    prof = tfcomp.profile(load(d / "qp.keras"))
    assert (prof.by_name("s1b1_conv1").w_bits,
            prof.by_name("s1b1_conv1").a_bits) == (3, 5)
    assert (prof.by_name("s2b1_conv2").w_bits,
            prof.by_name("s2b1_conv2").a_bits) == (6, 4)
    assert prof.by_name("stem_conv").w_bits == 8

    (d / "bad_policy.json").write_text(json.dumps({"nope": [4, 4]}))
    code, _, err = run(["quantize", d / "model.keras", d / "o.keras",
                        "--policy", d / "bad_policy.json"], capsys)
    assert code != 0 and "nope" in err
    (d / "bad_policy2.json").write_text(json.dumps({"stem_conv": "x"}))
    code, _, err = run(["quantize", d / "model.keras", d / "o.keras",
                        "--policy", d / "bad_policy2.json"], capsys)
    assert code == 2 and "[w_bits, a_bits]" in err


def _auto_model(d, cli_files):
    """Four quantizable layers (two searched), saved once (in the test, so
    the CLI run sees the random state the build leaves)."""
    path = d / "auto.keras"
    if not path.exists():
        cli_files.conv_model(path, SHAPE, (4, 8, 8), 10, seed=2,
                             c3_strides=2)
    return path


@pytest.mark.slow
def test_quantize_auto_allocates_under_the_budget(ws, cli_files, capsys):
    from tfcomp.hardware import BISMO, policy_cost
    d, _ = ws
    src = _auto_model(d, cli_files)
    model = load(src)
    budget = round(policy_cost(model, 4, "latency", BISMO()), 4)
    code, out, err = run(["quantize", src, d / "qa.keras", "--auto",
                          "--resource", "latency", "--hardware", "bismo",
                          "--budget", budget, "--data", d / "data.npz",
                          "--method", "distortion", "--sensitivity-samples",
                          "16", "--calibration-size", "16", "--plan",
                          d / "auto_policy.json"], capsys)
    assert code == 0, err
    # the policy table: every quantizable layer with bits, sensitivity, cost
    lines = out.splitlines()
    assert lines[0].split() == ["layer", "w", "a", "sensitivity", "cost", "%"]
    table = {ln.split()[0]: ln.split()[1:] for ln in lines[1:5]}
    assert set(table) == {"c1", "c2", "c3", "fc"}
    assert table["c1"][:2] == ["8", "8"] and table["fc"][:2] == ["8", "8"]
    assert f"(budget {budget}" in out
    policy = {k: tuple(v) for k, v in json.loads(
        (d / "auto_policy.json").read_text()).items()}
    assert policy == {k: (int(v[0]), int(v[1])) for k, v in table.items()}
    assert policy_cost(model, policy, "latency", BISMO()) <= budget + 1e-9
    # the QAT model (written atomically) holds that policy, calibrated
    qat = load(d / "qa.keras")
    assert tfcomp.quantization.quantization_report(qat).quantized == policy
    assert "test accuracy: float" in out
    # size: every width in 2-8 is a candidate; --candidate-bits narrows it
    code, out, err = run(["quantize", src, d / "qa.keras", "--auto",
                          "--resource", "size", "--budget", "0.5",
                          "--candidate-bits", "2,4,8", "--data",
                          d / "data.npz", "--method", "distortion",
                          "--sensitivity-samples", "16"], capsys)
    assert code == 0, err
    bits = {r.name: r.w_bits for r in tfcomp.profile(load(
        d / "qa.keras")).layers if r.w_bits < 32}
    assert set(bits.values()) <= {2, 4, 8}


def test_quantize_auto_bad_input(ws, cli_files, capsys):
    d, _ = ws
    src = _auto_model(d, cli_files)
    cases = [
        (["--auto"], "needs --data"),
        (["--budget", "0.4"], "--budget applies only with --auto"),
        (["--resource", "size", "--method", "hessian"],
         "--resource, --method apply only with --auto"),
        (["--auto", "--bits", "4", "--data", d / "data.npz"],
         "not several"),
        (["--auto", "--budget", "1.5", "--data", d / "data.npz"],
         "--budget must be in (0, 1]"),
        (["--auto", "--hardware", "tpu", "--data", d / "data.npz"],
         "--hardware must be one of"),
        # fails fast, before the sensitivity is measured
        (["--auto", "--hardware", "bismo", "--budget", "0.05", "--data",
          d / "data.npz"], "cannot be reached with widths [2, 3, 4, 5, 6, "
         "7, 8]: the cheapest policy costs at least"),
    ]
    for extra, message in cases:
        code, out, err = run(["quantize", src, d / "o.keras", *extra],
                             capsys)
        assert code == 2, (extra, err)
        assert message in err, (extra, err)
        assert "Traceback" not in err
        assert not (d / "o.keras").exists()


# ------------------------------------------------------------------ export


@pytest.mark.slow
def test_export_tflite_float_and_int8(ws, capsys):
    d, _ = ws
    code, out, err = run(["export", "tflite", d / "model.keras",
                          d / "model.tflite", "--data", d / "data.npz",
                          "--verify", "16", "--latency", "--runs", "3"],
                         capsys)
    assert code == 0, err
    rep = json.loads(out[:out.rindex("}") + 1])
    assert os.path.getsize(d / "model.tflite") == rep["size_bytes"] > 0
    assert rep["max_abs_error"] < 1e-4
    assert rep["num_verified"] == 16
    assert rep["latency_median_ms"] > 0
    for mode in ("int8", "int16x8"):
        code, out, err = run(["export", "tflite", d / "model.keras",
                              d / f"{mode}.tflite", "--quantization", mode,
                              "--data", d / "data.npz", "--verify", "16"],
                             capsys)
        assert code == 0, err
        rep = json.loads(out[:out.rindex("}") + 1])
        assert rep["quantization"] == mode and rep["float_ops"] == []
        assert rep["size_bytes"] < os.path.getsize(d / "model.tflite")


@pytest.mark.slow
def test_export_bitserial_then_simulate(ws, capsys):
    d, _ = ws
    if not (d / "q4.keras").exists():
        assert main(["-q", "quantize", str(d / "model.keras"),
                     str(d / "q4.keras"), "--bits", "4", "--data",
                     str(d / "data.npz")]) == 0
        capsys.readouterr()  # drop quantize's output
    code, out, err = run(["export", "bitserial", d / "q4.keras",
                          d / "q4.json", "--target", "bismo", "--data",
                          d / "data.npz", "--verify", "8"], capsys)
    assert code == 0, err
    rep = json.loads(out[:out.rindex("}") + 1])
    assert rep["simulator_exact"] is True
    assert rep["num_verified"] == 8
    assert os.path.isfile(rep["blob_path"])
    code, out, err = run(["simulate", d / "q4.json", "--data",
                          d / "data.npz", "--num", "16", "--model",
                          d / "q4.keras", "--json"], capsys)
    assert code == 0, err
    res = json.loads(out.strip().splitlines()[-1])
    assert res["images"] == 16
    assert 0.0 <= res["top1_accuracy"] <= 1.0
    assert res["top1_agreement"] >= 0.75
    assert res["compute_cycles"] > 0
    assert "top-1 agreement with" in out


# ------------------------------------------------------------------ lut


@pytest.mark.slow
def test_lut_build_analytic_and_measured(ws, capsys):
    from tfcomp.hardware import LatencyTable

    d, _ = ws
    code, _, err = run(["lut", "build", d / "model.keras",
                        d / "bismo.json", "--hardware", "bismo",
                        "--bits", "2,4,8"], capsys)
    assert code == 0, err
    table = LatencyTable.load(str(d / "bismo.json"))
    assert table.bit_pairs == [(w, a) for w in (2, 4, 8) for a in (2, 4, 8)]
    model = load(d / "model.keras")
    assert table.model_cost(model, bits=(2, 2)).latency_s < \
        table.model_cost(model, bits=(8, 8)).latency_s
    code, _, err = run(["lut", "build", d / "model.keras",
                        d / "bitfusion.json", "--hardware", "bitfusion-edge",
                        "--bits", "2-8", "--channel-fractions",
                        "0.2,0.4,0.6,0.8,1.0"], capsys)
    assert code == 0, err
    assert len(LatencyTable.load(str(d / "bitfusion.json"))) > 49
    code, _, err = run(["lut", "build", d / "model.keras", d / "host.json",
                        "--hardware", "tflite", "--channel-fractions", "1.0",
                        "--runs", "2", "--warmup", "1", "--rounds", "1"],
                       capsys)
    assert code == 0, err
    host = LatencyTable.load(str(d / "host.json"))
    assert host.bit_invariant and host.model_cost(model).latency_s > 0


# ------------------------------------------------------------------ search


@pytest.mark.slow
def test_search_amc_and_haq(ws, capsys):
    d, macs = ws
    code, out, err = run(["search", "amc", d / "model.keras",
                          d / "amc.keras", "--data", d / "data.npz",
                          "--trials", "2", "--budget", "0.6",
                          "--round-to", "1", "--calibration-size", "16",
                          "--val-size", "16", "--directory", d / "runs",
                          "--plan", d / "amc_plan.json"], capsys)
    assert code == 0, err
    assert tfcomp.profile(load(d / "amc.keras")).macs <= 0.6 * macs
    plan = tfcomp.pruning.Plan.load(str(d / "amc_plan.json"))
    assert plan.meta["method"] == "amc"
    assert "best trial:" in out
    assert os.path.isdir(d / "runs" / "amc")

    code, out, err = run(["search", "haq", d / "model.keras",
                          d / "haq.keras", "--data", d / "data.npz",
                          "--trials", "2", "--budget", "0.5", "--cost",
                          "bops", "--finetune-epochs", "0",
                          "--calibration-size", "16", "--val-size", "16",
                          "--directory", d / "runs",
                          "--plan", d / "haq_policy.json"], capsys)
    assert code == 0, err
    policy = json.loads((d / "haq_policy.json").read_text())
    prof = tfcomp.profile(load(d / "haq.keras"))
    for name, (w, a) in policy.items():
        assert (prof.by_name(name).w_bits, prof.by_name(name).a_bits) == (
            w, a)
    full = sum(r.macs * 64 for r in prof.layers if r.name in policy)
    assert sum(r.bops for r in prof.layers if r.name in policy) <= full
    # a search policy feeds `quantize --policy`
    code, _, err = run(["quantize", d / "model.keras", d / "from_haq.keras",
                        "--policy", d / "haq_policy.json"], capsys)
    assert code == 0, err


# ------------------------------------------------------------------ report


def test_report_from_results_json(ws, capsys):
    d, _ = ws
    results = {"rows": [
        {"stage": "dense", "accuracy": 0.9, "macs": 4e7, "latency_ms": 1.0},
        {"stage": "pruned", "accuracy": 0.88, "macs": 2e7,
         "latency_ms": 0.6}],
        "channels": {"c1": [4, 8]}, "bits": {"c1": [4, 6]}}
    (d / "results.json").write_text(json.dumps(results))
    code, _, err = run(["report", d / "results.json", "--output",
                        d / "rep1"], capsys)
    assert code == 0, err
    text = (d / "rep1" / "report.md").read_text()
    for png in ("acc_vs_macs.png", "acc_vs_latency.png", "channels.png",
                "bits.png"):
        assert png in text and (d / "rep1" / png).stat().st_size > 1000
    (d / "bad_results.json").write_text("{not json")
    code, _, err = run(["report", d / "bad_results.json"], capsys)
    assert code == 2 and "not valid JSON" in err  # bad input


@pytest.mark.slow
def test_report_from_models(ws, capsys):
    d, _ = ws
    for name, args in (("l1.keras", ["prune", d / "model.keras",
                                     d / "l1.keras", "--ratio", "0.5"]),
                       ("q4.keras", ["quantize", d / "model.keras",
                                     d / "q4.keras", "--bits", "4"]),
                       ("bismo.json", ["lut", "build", d / "model.keras",
                                       d / "bismo.json", "--hardware",
                                       "bismo", "--bits", "2,4,8"]),
                       ("model.tflite", ["export", "tflite",
                                         d / "model.keras",
                                         d / "model.tflite"])):
        if not (d / name).exists():
            assert run(args, capsys)[0] == 0
    code, _, err = run([
        "report", "--model", f"dense={d / 'model.keras'}",
        "--model", f"pruned={d / 'l1.keras'}",
        "--model", f"w4a4={d / 'q4.keras'}",
        "--tflite", f"dense={d / 'model.tflite'}",
        "--lut", d / "bismo.json", "--data", d / "data.npz",
        "--runs", "2", "--output", d / "rep2"], capsys)
    assert code == 0, err
    text = (d / "rep2" / "report.md").read_text()
    assert "| pruned |" in text and "| w4a4 |" in text
    for png in ("acc_vs_macs.png", "acc_vs_latency.png", "acc_vs_accel.png",
                "channels.png", "bits.png", "hardware_table.png"):
        assert png in text, png
        assert (d / "rep2" / png).stat().st_size > 1000


# ------------------------------------------------------------------ process


def _start(*args):
    env = dict(os.environ, KERAS_BACKEND="tensorflow",
               TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen(
        [sys.executable, "-m", "tfcomp.cli", *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.slow
def test_real_exit_codes(ws):
    d, macs = ws
    # both processes at once: each pays the TensorFlow import
    bad = _start("prune", d / "model.keras", d / "o.keras", "--ratio", "1.5")
    good = _start("profile", d / "model.keras")
    _, err_bad = bad.communicate(timeout=180)
    out_good, err_good = good.communicate(timeout=180)
    assert bad.returncode == 2
    assert "argument --ratio: must be in [0, 1). Received: 1.5" in err_bad
    assert not (d / "o.keras").exists()
    assert good.returncode == 0, err_good
    assert f"Total MACs:   {macs:,}" in out_good


def test_corrupt_inputs_exit_2_with_one_line(ws, capsys, tmp_path):
    """A corrupt .tflite or latency table is bad input: exit 2, one line."""
    d, _ = ws
    bad_tflite = tmp_path / "bad.tflite"
    bad_tflite.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 8)
    bad_lut = tmp_path / "bad.json"
    bad_lut.write_text('{"format": "tfcomp-latency-table", "version"')
    for args, name in (
            (["report", "--model", f"dense={d / 'model.keras'}",
              "--tflite", f"dense={bad_tflite}", "--runs", "1",
              "--output", tmp_path / "rep"], "bad.tflite"),
            (["report", "--model", f"dense={d / 'model.keras'}",
              "--lut", bad_lut, "--output", tmp_path / "rep2"], "bad.json")):
        code, _, err = run(args, capsys)
        assert code == 2, err
        lines = [x for x in err.splitlines() if x.strip()]
        assert len(lines) == 1 and name in lines[0], err


@pytest.mark.slow
def test_prune_metapruning_band(ws, capsys):
    """``--method metapruning`` keeps the found widths inside
    ``[--meta-lower x budget, budget]``."""
    d, macs = ws
    out_path = d / "meta.keras"
    code, _, err = run(["prune", d / "model.keras", out_path, "--method",
                        "metapruning", "--target-macs", "0.6", "--data",
                        d / "data.npz", "--meta-epochs", "1",
                        "--meta-generations", "2", "--meta-population", "6",
                        "--meta-lower", "0.5", "--batch-size", "32"], capsys)
    assert code == 0, err
    got = tfcomp.profile(load(out_path)).macs
    assert 0.5 * 0.6 * macs <= got <= 0.6 * macs


def test_prune_metapruning_rejects_bad_lower(ws, capsys):
    d, _ = ws
    code, _, err = run(["prune", d / "model.keras", d / "x.keras",
                        "--method", "metapruning", "--target-macs", "0.6",
                        "--meta-lower", "1.5"], capsys)
    assert code == 2
    assert "--meta-lower" in err and "1.5" in err


@pytest.mark.parametrize("extra", [[], ["--gal-lam-weights", "macs",
                                        "--gal-mask-gradient", "training"]])
def test_prune_gal(ws, capsys, extra):
    """``--method gal``: adversarial mask training, then the zero-mask
    channels stripped; the GAL options reach ``GAL``."""
    d, macs = ws
    out_path = d / "gal.keras"
    code, _, err = run(["prune", d / "model.keras", out_path, "--method",
                        "gal", "--gal-lambda", "1.0", "--gal-epochs", "1",
                        "--mask-step", "1", "--gal-lr", "0.05", "--data",
                        d / "data.npz", "--batch-size", "16", *extra],
                       capsys)
    assert code == 0, err
    assert tfcomp.profile(load(out_path)).macs <= macs


def test_export_a_variable_length_model_with_latency(tmp_path, capsys):
    """``keras.Input((None, 4))``: verified on random inputs of length 32
    without --data, timed at that size (the output says which)."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((None, 4))
    h = keras.layers.Conv1D(8, 3, padding="same", activation="relu")(inp)
    out = keras.layers.Dense(3)(keras.layers.GlobalMaxPooling1D()(h))
    keras.Model(inp, out).save(tmp_path / "dyn.keras")
    code, out, err = run(["export", "tflite", tmp_path / "dyn.keras",
                          tmp_path / "dyn.tflite", "--latency", "--runs",
                          "3"], capsys)
    assert code == 0, err
    rep = json.loads(out[:out.rindex("}") + 1])
    assert rep["max_abs_error"] < 1e-4
    assert rep["latency_input_shape"] == [1, 32, 4]


def test_legacy_h5_model_is_read(ws, capsys):
    """A model saved as a legacy ``.h5`` (older Keras) is read by every
    verb; outputs stay ``.keras``; a file that is not HDF5 is named."""
    d = ws[0]
    model = load(d / "model.keras")
    model.save(d / "legacy.h5")
    code, out, err = run(["profile", d / "legacy.h5"], capsys)
    assert code == 0 and "Total MACs" in out, err
    code, _, err = run(["prune", d / "legacy.h5", d / "from_h5.keras",
                        "--ratio", "0.5"], capsys)
    assert code == 0, err
    assert load(d / "from_h5.keras").count_params() < model.count_params()
    (d / "bad.h5").write_bytes(b"not hdf5")
    code, _, err = run(["profile", d / "bad.h5"], capsys)
    assert code == 2 and "'" + str(d / "bad.h5") + "' is not an HDF5" in err


def test_profile_counts_open_sizes_at_input_shape(tmp_path, capsys):
    inp = keras.Input((None, None, 3))
    out = keras.layers.Conv2D(4, 3, padding="same", name="c")(inp)
    keras.Model(inp, out).save(tmp_path / "fcn.keras")
    code, out_text, err = run(["profile", tmp_path / "fcn.keras",
                               "--input-shape", "8,8,3"], capsys)
    assert code == 0 and f"Total MACs:   {8 * 8 * 4 * 27:,}" in out_text, err
    code, _, err = run(["profile", tmp_path / "fcn.keras",
                        "--input-shape", "8,8"], capsys)
    assert code == 2 and "--input-shape: input_shape must give" in err
