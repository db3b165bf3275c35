"""Forecasts on curves unlike ours: auto near the best single method, bands that hold their level,
forecasts from 2 points, and refusals that name the job (issue 11, item 4)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import qoeflow
from qoeflow.lifecycle.curves import forecast, forecast_many
from qoeflow.lifecycle.forecasting import backtest_table, band_coverage, forecast_table, with_start

SINGLE = ["last", "parametric", "combo"]


@pytest.fixture(scope="module")
def noisy_backtests():
    """Noisy saturating curves (pow, exp) of 20 epochs observed for 10; every method at once."""
    rng = np.random.default_rng(11)
    e = np.arange(1, 21, dtype=float)
    out = []
    for i in range(6):
        c, a = rng.uniform(0.1, 0.4), rng.uniform(0.8, 2.0)
        base = c + a * e ** -rng.uniform(0.4, 1.0) if i % 2 else c + a * np.exp(-e / rng.uniform(3, 8))
        v = base + rng.normal(0, 0.05 * np.ptp(base), len(e))
        out.append((v[10:], forecast_many(e[:10], v[:10], e[10:], SINGLE + ["auto"], bounds=(0.0, np.inf), origins=3)))
    return out


def test_auto_is_near_the_best_single_method_and_well_below_last(noisy_backtests):
    mae = {m: np.mean([abs(fs[m].predicted[-1] - actual[-1]) for actual, fs in noisy_backtests]) for m in SINGLE + ["auto"]}
    best = min(mae[m] for m in SINGLE)
    assert mae["auto"] <= 1.15 * best, mae
    assert mae["auto"] <= 0.7 * mae["last"], mae
    assert all(fs["auto"].method in SINGLE and "backtest_mae" in fs["auto"].info for _, fs in noisy_backtests)


@pytest.mark.parametrize("method", SINGLE + ["auto"])
def test_the_band_holds_about_its_claimed_share(noisy_backtests, method):
    inside = [np.mean((a >= fs[method].lower) & (a <= fs[method].upper)) for a, fs in noisy_backtests]
    assert noisy_backtests[0][1][method].info["level"] == 0.8
    assert 0.6 <= np.mean(inside) <= 0.97, inside


def test_a_wider_level_gives_a_wider_band():
    e = np.arange(1, 13, dtype=float)
    v = 0.2 + 1.5 * e**-0.6 + np.random.default_rng(3).normal(0, 0.02, len(e))
    narrow, wide = (forecast(e, v, np.arange(13, 25), "last", level=lv) for lv in (0.5, 0.95))
    assert np.all(wide.upper - wide.lower > narrow.upper - narrow.lower)
    with pytest.raises(ValueError, match="level"):
        forecast(e, v, [13], "last", level=1.5)


def test_two_point_probe_forecasts_to_24_epochs_with_an_honest_band():
    truth = lambda x: 0.3 + 1.2 * np.asarray(x, float) ** -0.7  # noqa: E731
    f = forecast([1, 2], truth([1, 2]), np.arange(3, 25), "auto")
    long = forecast(np.arange(1, 9), truth(np.arange(1, 9)), np.arange(9, 25), "parametric", origins=2)
    assert f.method == "parametric" and f.predicted[-1] < truth(2)  # it keeps falling, not flat
    assert f.lower[-1] <= truth(24) <= f.upper[-1]
    assert (f.upper[-1] - f.lower[-1]) > 3 * (long.upper[-1] - long.lower[-1])  # 2 points: a much wider band


def _table(rows):
    return pd.DataFrame(rows, columns=["job", "epoch", "loss"])


def test_tables_forecast_two_point_curves_and_name_bad_jobs():
    ok = [("a", 1, 1.0), ("a", 2, 0.7), ("b", 1, 0.9), ("b", 2, 0.8), ("b", 3, 0.75)]
    table = forecast_table(_table(ok), "loss", 24)
    assert set(table["job"]) == {"a", "b"} and table["epoch"].max() == 24 and (table["lower"] >= 0).all()
    with pytest.raises(ValueError, match="job 'c': 1 observed point"):
        forecast_table(_table(ok + [("c", 1, 0.5)]), "loss", 24)
    with pytest.raises(ValueError, match=r"job 'c': column 'loss' has NaN/inf at epochs \[2\]"):
        forecast_table(_table(ok + [("c", 1, 0.5), ("c", 2, np.nan), ("c", 3, 0.4)]), "loss", 24)
    with pytest.raises(ValueError, match=r"job 'c': epochs must be strictly increasing.*\[2\]"):
        forecast_table(_table(ok + [("c", 1, 0.5), ("c", 2, 0.45), ("c", 2, 0.4)]), "loss", 24)
    with pytest.raises(ValueError, match=r"job 'c': epochs must be strictly increasing"):
        backtest_table(_table(ok + [("c", 1, 0.5), ("c", 2, 0.45), ("c", 2, 0.4)]), "loss", 0.5, ["last"])


def test_backtest_table_reports_band_coverage():
    rows = [("a", e, 0.2 + e**-0.5) for e in range(1, 9)]
    bt, scores = backtest_table(_table(rows), "loss", 0.5, ["last", "auto"])
    cover = band_coverage(bt)
    assert set(cover["method"]) == {"last", "auto"} and cover["coverage"].between(0, 1).all()
    assert list(scores.columns) == ["job", "metric", "method", "used", "last_epoch_abs_error"]


def test_cli_refuses_a_repeated_epoch_naming_the_job(tmp_path):
    path = tmp_path / "curves.csv"
    _table([("a", 1, 1.0), ("a", 2, 0.7), ("a", 3, 0.6), ("z", 1, 1.0), ("z", 1, 0.9)]).to_csv(path, index=False)
    result = qoeflow("forecast", str(path), "--metric", "loss", "--to", "10", cwd=tmp_path)
    assert result.returncode == 2 and "job 'z': epochs must be strictly increasing" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_one_epoch_curve_is_forecast_from_its_start_and_longer_curves_are_left_alone():
    curves = pd.DataFrame({"job": ["short", "long", "long"], "task": "digits", "epoch": [1, 1, 2],
                           "error": [0.4, 0.5, 0.3]})
    starts = {"short": {"error": 0.9, "val_loss": 2.3}, "long": {"error": 0.9, "val_loss": 2.3}}
    with pytest.raises(ValueError, match="job 'short': 1 observed point"):
        forecast_table(curves, "error", 5, method="parametric")
    full = with_start(curves, starts)
    assert full[full["job"] == "short"].sort_values("epoch")["error"].tolist() == [0.9, 0.4]
    assert full[full["job"] == "long"]["epoch"].tolist() == [1, 2]
    table = forecast_table(full, "error", 5, method="parametric")
    short = table[table["job"] == "short"]
    assert short["epoch"].tolist() == [2, 3, 4, 5] and (short["predicted"] <= 0.4).all()
