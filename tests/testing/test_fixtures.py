"""The shared fixtures of tests/conftest.py: models build, run, have
prunable channels; data is deterministic."""

import numpy as np
import pytest

from tfcomp.graph import DependencyGraph

MODELS = ["sequential_cnn", "residual_model", "separable_model",
          "conv1d_model"]


@pytest.mark.parametrize("name", MODELS)
def test_fixture_models_run_and_have_prunable_groups(name, request,
                                                     tiny_models):
    model = request.getfixturevalue(name)
    shape = (tiny_models.SEQUENCE_SHAPE if name == "conv1d_model"
             else tiny_models.IMAGE_SHAPE)
    x, _ = tiny_models.data(shape, n=3)
    assert model.predict(x, verbose=0).shape == (3, 10)
    assert DependencyGraph(model).prunable_groups


def test_builders_take_shape_and_width(tiny_models):
    model = tiny_models.residual(input_shape=(12, 12, 1), width=12)
    assert model.input_shape == (None, 12, 12, 1)
    assert model.get_layer("stem").filters == 12


def test_synthetic_data_is_fixed(synthetic_data, synthetic_sequences,
                                 tiny_models):
    x, y = synthetic_data
    assert x.shape == (64, 16, 16, 1) and x.dtype == np.float32
    assert y.dtype == np.int64 and 0 <= y.min() and y.max() < 10
    x2, y2 = tiny_models.data()
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    assert synthetic_sequences[0].shape == (64, 32, 3)
