"""The demo's joint stage helpers: the cache key, the artifacts written
atomically next to the others, the verdict of joint vs FPGM -> HAQ."""

import json
import os
import types

import pytest

from tfcomp import demo_joint


def _info():
    return {"result": {"format": "tfcomp.joint", "plan": {"removed": {}},
                       "bits": {"stem": [8, 8], "conv": [4, 4]},
                       "keep": {"stem": 16}, "cost": 0.8},
            "descriptor": {"simulator_exact": True}}


def test_params_floor_the_budget_and_follow_the_knobs():
    ctx = types.SimpleNamespace(qat_epochs=1, search=False)
    p = demo_joint.joint_params(ctx, 0.83457418602)
    assert p["budget"] == 0.834574 <= 0.83457418602  # never above the chain
    assert p["qat_epochs"] == 1 and p["pruned_by"] == "fpgm"
    ctx.search, ctx.qat_epochs = True, 2
    q = demo_joint.joint_params(ctx, 0.83457418602)
    assert q["pruned_by"] == "amc" and q["qat_epochs"] == 2


def test_artifacts_written_next_to_the_others(tmp_path):
    paths = demo_joint.write_artifacts(str(tmp_path), _info())
    assert sorted(os.path.basename(p) for p in paths) == [
        "joint.json", "joint_plan.json", "joint_policy.json"]
    assert json.loads((tmp_path / "joint_policy.json").read_text()) == {
        "stem": [8, 8], "conv": [4, 4]}
    assert json.loads((tmp_path / "joint_plan.json").read_text()) == {
        "removed": {}}
    assert sorted(os.listdir(tmp_path)) == sorted(
        os.path.basename(p) for p in paths)  # no temporary files left


@pytest.mark.parametrize("joint_acc,joint_ms,winner", [
    (0.880, 0.078, "joint"), (0.870, 0.078, "FPGM -> HAQ"),
    (0.8755, 0.078, "joint"), (0.8755, 0.080, "FPGM -> HAQ")])
def test_verdict(joint_acc, joint_ms, winner):
    chain = {"accuracy": 0.875, "accel_ms": 0.079, "cost": 0.834}
    joint = {"accuracy": joint_acc, "accel_ms": joint_ms, "cost": 0.83}
    got, text = demo_joint.verdict(chain, joint)
    assert got == winner
    assert f"{winner} is better" in text and "83.4%" in text
