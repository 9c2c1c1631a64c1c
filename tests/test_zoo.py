import keras
import numpy as np
import pytest

from tfcomp import profile, zoo


@pytest.mark.parametrize("builder", [
    lambda: zoo.resnet(depth=8), lambda: zoo.resnet(depth=20),
    lambda: zoo.mobilenet_v1(alpha=0.25), lambda: zoo.mobilenet_v2(0.35),
    lambda: zoo.vgg_small(width=8),
])
def test_models_build_and_run(builder):
    model = builder()
    y = model(np.zeros((2, 28, 28, 1), "float32"))
    assert y.shape == (2, 10)
    assert profile(model).macs > 0


def test_resnet20_structure():
    m = zoo.resnet(depth=20)
    convs = [lyr for lyr in m.layers if isinstance(lyr, keras.layers.Conv2D)]
    assert len(convs) == 19 + 2  # 19 3x3 convs + 2 projections
    assert len([lyr for lyr in m.layers if isinstance(lyr, keras.layers.Add)]) == 9
    assert abs(m.count_params() - 0.27e6) / 0.27e6 < 0.05


def test_filters_override_builds_narrower_model():
    m = zoo.resnet(depth=8, filters={"s1b1_conv1": 5})
    assert m.get_layer("s1b1_conv1").filters == 5
    assert m(np.zeros((1, 28, 28, 1), "float32")).shape == (1, 10)


def test_mobilenet_v2_has_inverted_residuals():
    m = zoo.mobilenet_v2()
    assert any(isinstance(lyr, keras.layers.DepthwiseConv2D) for lyr in m.layers)
    assert any(isinstance(lyr, keras.layers.Add) for lyr in m.layers)


def test_zoo_errors():
    with pytest.raises(ValueError, match="depth"):
        zoo.resnet(depth=9)
    with pytest.raises(ValueError, match="num_classes"):
        zoo.vgg_small(num_classes=0)
    with pytest.raises(ValueError, match="Unknown zoo model"):
        zoo.get("alexnet")
    assert zoo.get("resnet8").name == "resnet8"
