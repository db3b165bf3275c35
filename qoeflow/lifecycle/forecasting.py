"""Learning-curve forecasts for whole tables of curves (one row per job and epoch).

Predictions and bands are clipped to the metric's range from the family registry (no negative loss,
no error above 1).

Shared by the `forecast` stage and the `qoeflow forecast` command: DataFrames in, DataFrames out.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from qoeflow.families import metric_range
from qoeflow.lifecycle.curves import METHODS, MIN_POINTS, backtest, forecast

FORECAST_COLUMNS = ["job", "metric", "epoch", "predicted", "lower", "upper", "method"]
BACKTEST_COLUMNS = ["job", "metric", "method", "epoch", "actual", "predicted", "lower", "upper"]
def _clip(f, metric: str):
    low, high = metric_range(metric)
    return (np.clip(f.predicted, low, high), np.clip(f.lower, low, high), np.clip(f.upper, low, high))


def _curve(rows: pd.DataFrame, metric: str, job: str) -> tuple[np.ndarray, np.ndarray]:
    ordered = rows.sort_values("epoch")
    values = ordered[metric].to_numpy(float)
    if np.any(~np.isfinite(values)):
        bad = ordered.loc[~np.isfinite(values), "epoch"].tolist()
        raise ValueError(f"job '{job}': column '{metric}' has NaN/inf at epochs {bad}")
    return ordered["epoch"].to_numpy(float), values


def require_columns(curves: pd.DataFrame, columns: Iterable[str]) -> None:
    """Refuse a table without the columns we need, naming what it has."""
    missing = [c for c in columns if c not in curves.columns]
    if missing:
        raise ValueError(f"column(s) {missing} absent (columns: {list(curves.columns)})")


def forecast_table(
    curves: pd.DataFrame,
    metric: str,
    to: Mapping[str, int] | int,
    until: int | None = None,
    method: str = "auto",
    seed: int = 0,
) -> pd.DataFrame:
    """Per job, forecast `metric` from the epochs ≤ `until` (default: all) to epoch `to` (per job or one for all)."""
    require_columns(curves, ["job", "epoch", metric])
    rows = []
    for job, group in curves.groupby("job", sort=True):
        observed = group[group["epoch"] <= until] if until is not None else group
        epochs, values = _curve(observed, metric, str(job))
        if len(values) < MIN_POINTS:
            raise ValueError(f"job '{job}': {len(values)} observed point(s) of '{metric}'; at least {MIN_POINTS} needed")
        last = int(epochs[-1])
        target = int(to[job] if isinstance(to, Mapping) else to)
        horizon = np.arange(last + 1, target + 1, dtype=float)
        if len(horizon) == 0:
            continue
        f = forecast(epochs, values, horizon, method=method, seed=seed)
        for e, p, lo, hi in zip(f.epochs, *_clip(f, metric)):
            rows.append([job, metric, int(e), float(p), float(lo), float(hi), f.method])
    return pd.DataFrame(rows, columns=FORECAST_COLUMNS)


def backtest_table(
    curves: pd.DataFrame, metric: str, frac: float, methods: Iterable[str] = ("auto",), seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per job and method: observe the first `frac` of the epochs, predict the rest.

    Returns the predictions and a score table (job, method, MAE at the job's last epoch)."""
    require_columns(curves, ["job", "epoch", metric])
    methods = list(methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown forecasting method(s) {unknown} (allowed: {', '.join(METHODS)})")
    rows, scores = [], []
    for job, group in curves.groupby("job", sort=True):
        epochs, values = _curve(group, metric, str(job))
        if int(round(frac * len(values))) < MIN_POINTS or int(round(frac * len(values))) >= len(values):
            continue  # too short to observe MIN_POINTS and still predict something
        for method in methods:
            f = backtest(epochs, values, frac, method=method, seed=seed)
            actual = values[-len(f.epochs):]
            predicted, lower, upper = _clip(f, metric)
            for e, a, p, lo, hi in zip(f.epochs, actual, predicted, lower, upper):
                rows.append([job, metric, method, int(e), float(a), float(p), float(lo), float(hi)])
            scores.append([job, metric, method, f.method, abs(float(predicted[-1]) - float(actual[-1]))])
    score_table = pd.DataFrame(scores, columns=["job", "metric", "method", "used", "last_epoch_abs_error"])
    return pd.DataFrame(rows, columns=BACKTEST_COLUMNS), score_table


def summarise_scores(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean absolute error at the last epoch per method and metric, with the ratio to `last`."""
    if scores.empty:
        return pd.DataFrame(columns=["metric", "method", "mae_last_epoch", "vs_last"])
    table = scores.groupby(["metric", "method"], as_index=False)["last_epoch_abs_error"].mean()
    table = table.rename(columns={"last_epoch_abs_error": "mae_last_epoch"})
    base = table[table["method"] == "last"].set_index("metric")["mae_last_epoch"]
    table["vs_last"] = [
        (m / base[metric]) if metric in base and base[metric] > 0 else np.nan
        for metric, m in zip(table["metric"], table["mae_last_epoch"])
    ]
    return table
