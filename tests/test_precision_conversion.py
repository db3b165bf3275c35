"""Greedy layer conversion (qoeflow/lifecycle/precision.py, thesis 004 Algorithm 1 as meant): the order
follows the measured drop of the partly converted network, the loop stops when no layer fits the budget,
and the reduced formats round as they should."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from qoeflow.lifecycle import precision

COSTS = {"a": 0.01, "b": 0.03, "c": 0.002, "d": 0.2}


def additive(converted: frozenset[str]) -> float:
    """A mock network at 0.9 accuracy whose layers each cost a fixed amount when converted."""
    return 0.9 - sum(COSTS[layer] for layer in converted)


def test_cheapest_layer_first_until_none_fits():
    result = precision.greedy_conversion(list(COSTS), additive, budget=0.05)
    assert result.order == ["c", "a", "b"]
    assert [round(s.drop, 6) for s in result.steps] == [0.002, 0.012, 0.042]
    assert result.steps[-1].accuracy == pytest.approx(0.858)
    assert result.steps[0].candidates == pytest.approx(COSTS)  # each candidate tried on top of nothing
    assert result.steps[1].candidates["d"] == pytest.approx(0.202)  # ... then on top of what was converted
    assert "no remaining layer fits the budget 0.05" in result.stopped and "0.2420" in result.stopped


def test_the_drop_is_measured_on_the_whole_network_not_summed():
    def interacting(converted: frozenset[str]) -> float:
        return 0.9 - (0.1 if {"a", "b"} <= converted else 0.0) - 0.001 * len(converted)

    result = precision.greedy_conversion(["a", "b", "c"], interacting, budget=0.05)
    assert result.order == ["a", "c"]  # b alone is cheap, but not after a


def test_everything_fits_or_nothing_does():
    assert precision.greedy_conversion(list(COSTS), additive, budget=1.0).stopped == "every layer converted"
    assert precision.greedy_conversion(list(COSTS), additive, budget=0.0).order == []


@pytest.mark.parametrize("budget", [-0.1, 1.5, True, "5%"])
def test_a_budget_outside_0_1_is_refused(budget):
    with pytest.raises(ValueError, match="budget"):
        precision.greedy_conversion(["a"], additive, budget=budget)


def test_formats_round_as_they_should():
    x = torch.tensor([1.875, 1 + 2 ** -12, -3.0])
    assert precision.rounder("mantissa-2")(x).tolist() == [1.75, 1.0, -3.0]  # 1.111b keeps 1.11b
    assert precision.rounder("fp16")(x)[1] == 1.0 and precision.rounder("mantissa-23")(x).equal(x)
    assert precision.rounder("bf16")(torch.tensor([1 + 2 ** -9]))[0] == 1.0
    for bad in ("fp8", "mantissa-24", "mantissa-x"):
        with pytest.raises(ValueError, match="unknown number format"):
            precision.rounder(bad)


def _tiny() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)).eval()
    x = torch.randn(256, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model, x, model(x).argmax(1)


def test_a_converted_copy_rounds_only_its_layers():
    model, x, _ = _tiny()
    before = [p.clone() for p in model.parameters()]
    assert precision.convertible_layers(model) == ["0", "2", "6"]
    with torch.no_grad():
        half = precision.converted(model, ["0", "2", "6"], "fp16")(x)
        harsh = precision.converted(model, ["2"], "mantissa-1")
        assert torch.allclose(half, model(x), atol=1e-2) and not torch.equal(half, model(x))
        assert not torch.allclose(harsh(x), model(x), atol=1e-3)
        assert torch.equal(harsh[0].weight, model[0].weight) and not torch.equal(harsh[2].weight, model[2].weight)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # the original is untouched
    with pytest.raises(ValueError, match="no layer"):
        precision.converted(model, ["9"], "fp16")


def test_greedy_on_a_real_network_stays_within_its_budget():
    model, x, y = _tiny()

    def evaluate(layers: frozenset[str]) -> float:
        with torch.no_grad():
            return float((precision.converted(model, sorted(layers), "mantissa-3")(x).argmax(1) == y).double().mean())

    result = precision.greedy_conversion(precision.convertible_layers(model), evaluate, budget=0.01)
    assert result.base_accuracy == 1.0
    assert 1 <= len(result.order) < 3 and "no remaining layer fits" in result.stopped  # the budget binds here
    assert all(s.drop <= 0.01 for s in result.steps)
    assert evaluate(frozenset(result.order)) == result.steps[-1].accuracy
