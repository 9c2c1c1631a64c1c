"""``tfcomp.hardware.allocation_report``: bits per layer beside sensitivity
and cost share, uniform points and the Pareto-front plot."""

import os

import keras
import numpy as np
import pytest

from tfcomp.hardware import BISMO
from tfcomp.hardware.allocation import CostTable, allocate_bits
from tfcomp.hardware.allocation_report import (
    allocation_table,
    plot_front,
    uniform_points,
)
from tfcomp.quantization import quantizable_layers
from tfcomp.quantization.sensitivity_result import Sensitivity

BITS = [2, 3, 4, 8]


def _model():
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="c1")(inp)
    x = keras.layers.Conv2D(16, 3, padding="same", name="c2")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", name="c3")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(4, name="out")(x))


def _sens(layers):
    rng = np.random.default_rng(0)
    t = np.sort(rng.uniform(0, 1, (len(layers), len(BITS))))[:, ::-1]
    return Sensitivity(layers, BITS, t * np.arange(1, len(layers) + 1)[:, None])


@pytest.fixture(scope="module")
def setup():
    model = _model()
    s = _sens(quantizable_layers(model))
    return model, s


@pytest.mark.parametrize("resource,hw", [("size", None),
                                         ("latency", BISMO())])
def test_table_rows_match_costs_and_sensitivities(setup, resource, hw):
    model, s = setup
    alloc = allocate_bits(model, s, resource, hw, budget=0.6)
    t = allocation_table(model, alloc, s, hw)
    table = CostTable(model, resource, hw)
    assert [r["layer"] for r in t.rows] == table.layers
    for r in t.rows:
        assert (r["w_bits"], r["a_bits"]) == tuple(alloc[r["layer"]])
        assert r["sensitivity"] == pytest.approx(s.value(r["layer"],
                                                         r["w_bits"]))
        assert r["cost"] == pytest.approx(
            table.cost(r["layer"], r["w_bits"], r["a_bits"]))
    assert t.total_cost / t.full_cost == pytest.approx(alloc.cost)
    assert t.total_sensitivity == pytest.approx(alloc.sensitivity)
    assert sum(r["sensitivity_share"] for r in t.rows) == pytest.approx(1.0)
    # shares of the total cost: the constant part (adds, pooling) is outside
    assert sum(r["cost_share"] for r in t.rows) == pytest.approx(
        1 - table.constant / t.total_cost)
    assert sum(r["cost_8bit_share"] for r in t.rows) == pytest.approx(
        1 - table.constant / table.full_cost)
    text = str(t)
    assert "c2" in text and "sens %" in text
    assert t.to_dict()["rows"][0]["layer"] == "c1"


def test_uniform_points_priced_as_the_allocator(setup):
    model, s = setup
    layers = quantizable_layers(model)
    pts = uniform_points(model, s, "size")
    assert [b for b, *_ in pts] == BITS
    table = CostTable(model, "size")
    for b, cost, total in pts:
        assert cost == pytest.approx(table.ratio(b))
        want = sum(s.value(n, 8 if n in (layers[0], layers[-1]) else b)
                   for n in layers)
        assert total == pytest.approx(want)
    # every uniform point lies on or above the exact front
    alloc = allocate_bits(model, s, "size", budget=0.5, return_front=True)
    for _, cost, total in pts:
        best = min(p.sensitivity for p in alloc.front
                   if p.cost <= cost * (1 + 1e-9))
        assert best <= total + 1e-9


def test_plot_front_writes_png_atomically(setup, tmp_path):
    model, s = setup
    alloc = allocate_bits(model, s, "latency", BISMO(), budget=0.5,
                          return_front=True)
    path = str(tmp_path / "front.png")
    assert plot_front(model, alloc, s, BISMO(), path) == path
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(tmp_path) == ["front.png"]  # no temp file left


def test_errors(setup, tmp_path):
    model, s = setup
    alloc = allocate_bits(model, s, "size", budget=0.6)
    with pytest.raises(ValueError, match="return_front=True"):
        plot_front(model, alloc, s, path=str(tmp_path / "x.png"))
    assert not os.listdir(tmp_path)
    with pytest.raises(TypeError, match="Allocation"):
        allocation_table(model, dict(alloc), s)
    with pytest.raises(TypeError, match="Sensitivity"):
        allocation_table(model, alloc, {"c1": 1.0})
    with pytest.raises(TypeError, match="Sensitivity"):
        uniform_points(model, None, "size")
