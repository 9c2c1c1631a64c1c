"""tfcomp.hardware.get_hardware: the one resolver of ``hardware=``."""

import pytest

import tfcomp
from tfcomp.hardware import BISMO, BitFusion, LatencyTable, get_hardware, policy_cost


def test_names_models_and_tables(tmp_path):
    assert isinstance(get_hardware("bismo"), BISMO)
    assert get_hardware("bitfusion").config == BitFusion("edge").config
    assert get_hardware("bitfusion-server").config == \
        BitFusion("server").config
    hw = BISMO()
    assert get_hardware(hw) is hw and get_hardware(None) is None
    model = tfcomp.zoo.resnet(depth=8, width=8, input_shape=(8, 8, 3),
                              num_classes=4)
    path = str(tmp_path / "table.json")
    LatencyTable.build(model, BISMO(), bits=(4, 8)).save(path)
    assert isinstance(get_hardware(path), LatencyTable)
    # the Python API takes the names as the CLI does
    assert policy_cost(model, 4, "latency", "bismo") == \
        policy_cost(model, 4, "latency", BISMO())


def test_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="hardware='tpu'"):
        get_hardware("tpu")
    with pytest.raises(FileNotFoundError, match="table not found"):
        get_hardware(str(tmp_path / "none.json"))
    with pytest.raises(TypeError, match="hardware=3"):
        get_hardware(3)
    with pytest.raises(ValueError, match="hardware='tpu'"):
        policy_cost(tfcomp.zoo.resnet(depth=8, width=8,
                                      input_shape=(8, 8, 3)), 4, "latency",
                    "tpu")
