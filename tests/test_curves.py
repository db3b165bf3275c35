"""Learning-curve forecasting: recovery of known families, directions, short prefixes, bands, errors."""

import numpy as np
import pytest

from qoeflow.lifecycle.curves import METHODS, backtest, forecast, infer_direction


def pow3(e, c=0.5, a=3.0, alpha=0.7):
    return c + a * np.asarray(e, float) ** -alpha


def test_parametric_recovers_a_pow3_curve():
    rng = np.random.default_rng(0)
    e = np.arange(1, 61)
    f = forecast(e, pow3(e) + rng.normal(0, 0.003, len(e)), np.array([120, 300]), "parametric")
    assert f.method == "parametric" and f.info["direction"] == "down"
    assert np.all(np.abs(f.predicted - pow3([120, 300])) / pow3([120, 300]) < 0.03)


def test_rising_metric_is_extrapolated_upwards():
    rng = np.random.default_rng(1)
    e = np.arange(1, 81)
    acc = lambda x: 0.95 - 0.6 * np.asarray(x, float) ** -0.5  # noqa: E731
    v = acc(e) + rng.normal(0, 0.002, len(e))
    assert infer_direction(v) == "up"
    f = forecast(e, v, np.array([400]), "parametric")
    assert f.predicted[0] > v[-5:].mean()
    assert abs(f.predicted[0] - acc(400)) < 0.1 * (acc(400) - acc(1))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("points", [2, 3])
def test_every_method_handles_a_two_or_three_point_prefix(method, points):
    f = forecast([1, 2, 3][:points], [1.0, 0.7, 0.6][:points], np.arange(4, 10), method)
    assert f.predicted.shape == f.lower.shape == f.upper.shape == (6,)
    assert np.all(np.isfinite(f.predicted)) and np.all(f.lower <= f.predicted) and np.all(f.predicted <= f.upper)
    assert f.info["level"] == 0.8 and np.all(f.upper - f.lower > 0)


@pytest.mark.parametrize("method", METHODS)
def test_noisy_non_monotone_curve_gives_ordered_finite_bands(method):
    rng = np.random.default_rng(2)
    e = np.arange(0, 40)  # epochs may start at 0
    v = 1.0 / np.sqrt(e + 1) + 0.05 * np.sin(e) + rng.normal(0, 0.03, len(e))
    f = forecast(e, v, np.arange(40, 80), method, seed=3)
    assert f.method in METHODS and f.method != "auto"
    for a in (f.predicted, f.lower, f.upper):
        assert np.all(np.isfinite(a))
    assert np.all(f.lower <= f.predicted) and np.all(f.predicted <= f.upper)
    assert np.any(f.upper > f.lower)


def test_auto_beats_last_on_a_clean_decaying_curve():
    e = np.arange(1, 101)
    v = pow3(e, c=0.2, a=2.0, alpha=0.5)
    auto, last = backtest(e, v, 0.5, "auto"), backtest(e, v, 0.5, "last")
    assert auto.method != "last" and set(auto.info["backtest_mae"]) >= {"last", "parametric"}
    assert abs(auto.predicted[-1] - v[-1]) < 0.5 * abs(last.predicted[-1] - v[-1])


def test_lstm_is_deterministic_from_its_seed():
    e = np.arange(1, 31)
    v = pow3(e) + np.random.default_rng(4).normal(0, 0.01, len(e))
    a, b = (forecast(e, v, np.arange(31, 41), "lstm", seed=7, origins=1) for _ in range(2))
    assert np.array_equal(a.predicted, b.predicted) and np.array_equal(a.upper, b.upper)


def test_backtest_predicts_the_held_out_points():
    e = np.arange(1, 21)
    f = backtest(e, pow3(e), 0.6, "last")
    assert np.array_equal(f.epochs, e[12:])
    with pytest.raises(ValueError, match="frac"):
        backtest(e, pow3(e), 1.5, "last")


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="at least 2 .* got 1"):
        forecast([1], [1.0], [3])
    with pytest.raises(ValueError, match="NaN"):
        forecast([1, 2, 3], [1.0, np.nan, 0.5], [4])
    with pytest.raises(ValueError, match="NaN"):
        forecast([1, 2, 3], [1.0, 0.8, 0.5], [np.nan])
    with pytest.raises(ValueError, match="increasing"):
        forecast([1, 3, 2], [1.0, 0.8, 0.5], [4])
    with pytest.raises(ValueError, match="unknown forecasting method"):
        forecast([1, 2, 3], [1.0, 0.8, 0.5], [4], "prophet")
