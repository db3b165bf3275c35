"""Learning-curve forecasts for whole tables of curves (one row per job and epoch).

Predictions and bands are clipped to the metric's range from the family registry (no negative loss,
no error above 1), inside `auto`'s backtest too. A job's curve needs at least MIN_POINTS (2) finite
values at distinct epochs; otherwise a ValueError names the job.

Shared by the `forecast` stage and the `qoeflow forecast` command: DataFrames in, DataFrames out.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from qoeflow.families import metric_range
from qoeflow.lifecycle.curves import DEFAULT_LEVEL, DEFAULT_ORIGINS, METHODS, MIN_POINTS, forecast_many

FORECAST_COLUMNS = ["job", "metric", "epoch", "predicted", "lower", "upper", "method"]
BACKTEST_COLUMNS = ["job", "metric", "method", "epoch", "actual", "predicted", "lower", "upper"]


def _clip(f, metric: str):
    low, high = metric_range(metric)
    return (np.clip(f.predicted, low, high), np.clip(f.lower, low, high), np.clip(f.upper, low, high))


def _curve(rows: pd.DataFrame, metric: str, job: str) -> tuple[np.ndarray, np.ndarray]:
    """A job's (epochs, values) in epoch order; NaN/inf values or epochs, or a repeated epoch, are refused."""
    ordered = rows.sort_values("epoch")
    epochs = pd.to_numeric(ordered["epoch"], errors="coerce").to_numpy(float)
    values = pd.to_numeric(ordered[metric], errors="coerce").to_numpy(float)
    if np.any(~np.isfinite(epochs)):
        raise ValueError(f"job '{job}': column 'epoch' has {int(np.sum(~np.isfinite(epochs)))} missing or non-numeric value(s)")
    if np.any(~np.isfinite(values)):
        bad = [int(e) if float(e).is_integer() else float(e) for e in epochs[~np.isfinite(values)]]
        raise ValueError(f"job '{job}': column '{metric}' has NaN/inf at epochs {bad}")
    repeated = sorted({int(e) if float(e).is_integer() else float(e) for e in epochs[1:][np.diff(epochs) <= 0]})
    if repeated:
        raise ValueError(f"job '{job}': epochs must be strictly increasing, but epoch(s) {repeated} appear more than once")
    return epochs, values


def _points(job: str, metric: str, n: int) -> None:
    if n < MIN_POINTS:
        raise ValueError(f"job '{job}': {n} observed point(s) of '{metric}'; at least {MIN_POINTS} needed")


def _many(job: str, epochs: np.ndarray, values: np.ndarray, horizon: np.ndarray, methods: list[str],
          metric: str, **kwargs) -> dict:
    """`forecast_many` within the metric's range, its refusals naming the job."""
    try:
        return forecast_many(epochs, values, horizon, methods, bounds=metric_range(metric), **kwargs)
    except ValueError as exc:
        raise ValueError(f"job '{job}': {exc}") from None


def require_columns(curves: pd.DataFrame, columns: Iterable[str]) -> None:
    """Refuse a table without the columns we need, naming what it has."""
    missing = [c for c in columns if c not in curves.columns]
    if missing:
        raise ValueError(f"column(s) {missing} absent (columns: {list(curves.columns)})")


def with_start(curves: pd.DataFrame, starts: Mapping[str, Mapping[str, float] | None]) -> pd.DataFrame:
    """`curves` with an epoch-0 row (the untrained model's values, `starts[job]`) before every job that has
    fewer than MIN_POINTS epochs: a one-epoch probe is forecast from where its curve started and its first
    epoch. Longer curves are left as they are (their own epochs say more about the rest than the start)."""
    counts = curves.groupby("job")["epoch"].count()
    short = [job for job, n in counts.items() if n < MIN_POINTS and starts.get(job)]
    if not short:
        return curves
    first = curves[curves["job"].isin(short)].sort_values("epoch").groupby("job", sort=False).head(1)
    rows = [{**row, "epoch": 0, **{k: v for k, v in starts[row["job"]].items() if k in curves.columns}}
            for row in first.to_dict(orient="records")]
    return pd.concat([pd.DataFrame(rows, columns=curves.columns), curves], ignore_index=True)


def forecast_table(
    curves: pd.DataFrame,
    metric: str,
    to: Mapping[str, int] | int,
    until: int | None = None,
    method: str = "auto",
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
    origins: int = DEFAULT_ORIGINS,
) -> pd.DataFrame:
    """Per job, forecast `metric` from the epochs ≤ `until` (default: all) to epoch `to` (per job or one for all),
    with a band claiming `level` (from 2 observed epochs; `origins` cuts for auto's and the band's backtest)."""
    require_columns(curves, ["job", "epoch", metric])
    if method not in METHODS:
        raise ValueError(f"unknown forecasting method {method!r} (allowed: {', '.join(METHODS)})")
    rows = []
    for job, group in curves.groupby("job", sort=True):
        observed = group[group["epoch"] <= until] if until is not None else group
        epochs, values = _curve(observed, metric, str(job))
        _points(str(job), metric, len(values))
        last = int(epochs[-1])
        target = int(to[job] if isinstance(to, Mapping) else to)
        horizon = np.arange(last + 1, target + 1, dtype=float)
        if len(horizon) == 0:
            continue
        f = _many(str(job), epochs, values, horizon, [method], metric, seed=seed, level=level, origins=origins)[method]
        for e, p, lo, hi in zip(f.epochs, *_clip(f, metric)):
            rows.append([job, metric, int(e), float(p), float(lo), float(hi), f.method])
    return pd.DataFrame(rows, columns=FORECAST_COLUMNS)


def backtest_table(
    curves: pd.DataFrame, metric: str, frac: float, methods: Iterable[str] = ("auto",), seed: int = 0,
    level: float = DEFAULT_LEVEL, origins: int = DEFAULT_ORIGINS,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per job and method: observe the first `frac` of the epochs (at least MIN_POINTS), predict the rest.

    Returns the predictions and a score table (job, method, MAE at the job's last epoch). Jobs too short to
    observe MIN_POINTS and still predict one epoch are skipped. The methods share their fits per job."""
    if not 0.0 < frac < 1.0:
        raise ValueError(f"backtest fraction must be in (0, 1), got {frac}")
    require_columns(curves, ["job", "epoch", metric])
    methods = list(methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown forecasting method(s) {unknown} (allowed: {', '.join(METHODS)})")
    rows, scores = [], []
    for job, group in curves.groupby("job", sort=True):
        epochs, values = _curve(group, metric, str(job))
        k = max(MIN_POINTS, int(round(frac * len(values))))
        if k >= len(values):
            continue  # too short to observe MIN_POINTS and still predict something
        fs = _many(str(job), epochs[:k], values[:k], epochs[k:], methods, metric, seed=seed, level=level, origins=origins)
        for method in methods:
            f = fs[method]
            actual = values[k:]
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


def band_coverage(backtests: pd.DataFrame) -> pd.DataFrame:
    """Share of held-back points inside the band per metric and method (compare with the claimed level)."""
    if backtests.empty:
        return pd.DataFrame(columns=["metric", "method", "coverage", "points"])
    inside = (backtests["actual"] >= backtests["lower"]) & (backtests["actual"] <= backtests["upper"])
    grouped = backtests.assign(inside=inside).groupby(["metric", "method"], as_index=False)
    return grouped.agg(coverage=("inside", "mean"), points=("inside", "size"))
