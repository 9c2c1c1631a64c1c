"""``tfcomp quantize --auto --method hessian``: the allocation gets the
weights' plus the input activations' Hessian sensitivity (issue #19), with
the CLI's probe cap, on a tiny CNN."""

import json

import keras
import numpy as np
import pytest

from tfcomp.cli import main
from tfcomp.cli import quantize as cli_quantize
from tfcomp.quantization import sensitivity as sens_module

SHAPE = (10, 10, 1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, cli_files):
    d = tmp_path_factory.mktemp("qauto")
    cli_files.data(d, SHAPE, n=40, n_train=32, classes=4)
    cli_files.conv_model(d / "model.keras", SHAPE, (4, 6, 6), 4, seed=0)
    return d


def test_auto_hessian_sums_weights_and_activations(tiny, capsys,
                                                    monkeypatch):
    from tfcomp.hardware import policy_cost

    calls, results = [], []
    real = sens_module.sensitivity

    def spy(model, data, method="hessian", bits=None, **kw):
        calls.append((method, kw.get("kind", "weights"),
                      kw.get("max_probes")))
        return real(model, data, method, bits, **kw)

    real_combined = sens_module.combined_sensitivity

    def keep(*args, **kw):
        results.append(real_combined(*args, **kw))
        return results[-1]

    monkeypatch.setattr(sens_module, "sensitivity", spy)
    monkeypatch.setattr(sens_module, "combined_sensitivity", keep)
    d = tiny
    code = main(["--quiet", "quantize", str(d / "model.keras"),
                 str(d / "q.keras"), "--auto", "--method", "hessian",
                 "--resource", "size", "--budget", "0.45",
                 "--candidate-bits", "2,4,8", "--data", str(d / "data.npz"),
                 "--sensitivity-samples", "16", "--calibration-size", "16",
                 "--plan", str(d / "plan.json")])
    out, err = capsys.readouterr()
    assert code == 0, err
    probes = cli_quantize.HESSIAN_PROBES
    assert calls == [("hessian", "weights", probes),
                     ("hessian", "activations", probes)]
    (s,) = results
    assert s.kind == "weights" and s.meta["operands"] == "w + a"
    np.testing.assert_allclose(
        s.table, np.add(s.meta["weights"], s.meta["activations"]))
    assert s.meta["weights_meta"]["probing"] == "disjoint"
    s.to_json(d / "sens.json")  # the nested metas are JSON
    assert json.loads((d / "sens.json").read_text())["meta"][
        "operands"] == "w + a"
    # the printed sensitivity column is the summed table's
    rows = {ln.split()[0]: ln.split()[1:] for ln in out.splitlines()[1:5]}
    assert set(rows) == {"c1", "c2", "c3", "fc"}
    for name, row in rows.items():
        assert float(row[2]) == pytest.approx(s.value(name, int(row[0])),
                                              rel=1e-3)
    policy = {k: tuple(v) for k, v in json.loads(
        (d / "plan.json").read_text()).items()}
    model = keras.saving.load_model(d / "model.keras")
    assert policy_cost(model, policy, "size") <= 0.45 + 1e-9
    assert (d / "q.keras").exists()
