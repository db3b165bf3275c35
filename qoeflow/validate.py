"""Great Expectations suites for qoeflow's artifacts.

Each `check_*` function takes the artifact as a DataFrame (or dict) and a label (the file it came
from) and raises `ArtifactError` naming the file, the column and the offending rows. Stages call
them when they write an artifact and when they read one. great_expectations is imported lazily:
it costs seconds.
"""

from __future__ import annotations

import logging
import os
import uuid
from functools import lru_cache
from typing import Any, Iterable

import pandas as pd

CURVE_COLUMNS = ["job", "task", "model", "epoch", "train_loss", "val_loss", "epoch_seconds", "cumulative_seconds"]
TASK_METRICS = {"digits": ["accuracy", "error"], "crowd": ["mae", "mse"]}
JOB_STATUSES = ["completed", "diverged"]
_HUGE = 1e12  # "finite": GE's between-check flags inf as out of range


class ArtifactError(ValueError):
    """An artifact that fails its expectations."""


@lru_cache(maxsize=1)
def _context():
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    import great_expectations as gx

    context = gx.get_context(mode="ephemeral")
    try:
        context.variables.progress_bars = {"globally": False, "metric_calculations": False}
    except Exception:  # older config models: progress bars are cosmetic
        pass
    return context


def _validate(name: str, df: pd.DataFrame, suite, result_format: dict):
    """Validate a DataFrame against a suite. Each call uses a fresh asset: GE caches metrics per batch
    id, and a reused asset would answer for a previous DataFrame."""
    context = _context()
    try:
        source = context.data_sources.get("qoeflow")
    except Exception:
        source = context.data_sources.add_pandas("qoeflow")
    asset_name = f"{name}-{uuid.uuid4().hex}"
    asset = source.add_dataframe_asset(asset_name)
    try:
        batch = asset.add_batch_definition_whole_dataframe("whole").get_batch(batch_parameters={"dataframe": df})
        return batch.validate(suite, result_format=result_format)
    finally:
        source.delete_asset(asset_name)


def _problems(name: str, df: pd.DataFrame, expectations: Iterable[Any], index_cols: list[str]) -> list[str]:
    import great_expectations as gx

    _context()  # suites need an active context
    suite = gx.ExpectationSuite(name=f"{name}-suite")
    for exp in expectations:
        suite.add_expectation(exp)
    result = _validate(name, df.reset_index(drop=True), suite,
                       {"result_format": "COMPLETE", "unexpected_index_column_names": index_cols})
    problems: list[str] = []
    for r in result.results:
        if r.success:
            continue
        cfg = r.expectation_config
        column = cfg.kwargs.get("column", "?")
        shown = column.replace("_epoch_step", "epoch (contiguous from 1 per job)")
        rule = {k: v for k, v in cfg.kwargs.items() if k in ("min_value", "max_value", "value_set", "strict_min")}
        rows = (r.result or {}).get("unexpected_index_list") or []
        rendered = ", ".join(
            "{" + ", ".join(f"{k}={v}" for k, v in row.items()) + "}" for row in rows[:10]
        ) + (f" … (+{len(rows) - 10} more)" if len(rows) > 10 else "")
        problems.append(f"column '{shown}': {cfg.type} {rule or ''} failed on {len(rows)} row(s): {rendered or 'column missing'}")
    return problems


def _require_columns(df: pd.DataFrame, columns: list[str], label: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ArtifactError(f"{label}: missing column(s) {missing} (has {list(df.columns)})")


def check_curves(df: pd.DataFrame, label: str = "curves.csv") -> None:
    """Per-epoch training curves: no nulls, epochs contiguous from 1 per job, finite losses ≥ 0,
    seconds > 0, metrics in range for each task's rows."""
    import great_expectations.expectations as gxe

    _require_columns(df, CURVE_COLUMNS, label)
    if df.empty:
        raise ArtifactError(f"{label}: no rows")
    bad_tasks = sorted(set(df["task"].astype(str)) - set(TASK_METRICS))
    if bad_tasks:
        raise ArtifactError(f"{label}: column 'task': unknown task(s) {bad_tasks} (allowed: {sorted(TASK_METRICS)})")
    problems: list[str] = []
    for task, rows in df.groupby("task", sort=True):
        metrics = TASK_METRICS[str(task)]
        _require_columns(rows, metrics, label)
        frame = rows[CURVE_COLUMNS + metrics].copy()
        frame["_epoch_step"] = frame["epoch"] - frame.groupby("job")["epoch"].shift(1).fillna(0)
        exps: list[Any] = [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in CURVE_COLUMNS + metrics]
        exps.append(gxe.ExpectColumnValuesToBeInSet(column="_epoch_step", value_set=[1]))
        exps += [gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=_HUGE) for c in ("train_loss", "val_loss")]
        exps += [
            gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=_HUGE, strict_min=True)
            for c in ("epoch_seconds", "cumulative_seconds")
        ]
        if task == "digits":
            exps += [gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=1) for c in metrics]
        else:
            exps += [gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=_HUGE) for c in metrics]
        problems += _problems(f"curves-{task}", frame, exps, ["job", "epoch"])
    if problems:
        raise ArtifactError(f"{label}: " + "; ".join(problems))


def jobs_frame(jobs: dict[str, dict]) -> pd.DataFrame:
    """One row per job of `jobs.json`, for validation and tables."""
    rows = [{"job": name, **{k: v for k, v in info.items() if not isinstance(v, (dict, list))}} for name, info in jobs.items()]
    return pd.DataFrame(rows)


def check_jobs(jobs: dict[str, dict], label: str = "jobs.json") -> None:
    """Per-job stats: known task and status, positive sizes and times, epochs within plan."""
    import great_expectations.expectations as gxe

    if not isinstance(jobs, dict) or not jobs:
        raise ArtifactError(f"{label}: expected a non-empty mapping of job name to stats")
    df = jobs_frame(jobs)
    columns = ["task", "model", "params", "macs", "size_bytes", "t_load", "t_test", "status", "epochs_done", "epochs"]
    _require_columns(df, columns, label)
    df["_epochs_left"] = df["epochs"] - df["epochs_done"]
    exps: list[Any] = [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in columns]
    exps.append(gxe.ExpectColumnValuesToBeInSet(column="task", value_set=sorted(TASK_METRICS)))
    exps.append(gxe.ExpectColumnValuesToBeInSet(column="status", value_set=JOB_STATUSES))
    exps += [
        gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=_HUGE, strict_min=True)
        for c in ("params", "macs", "size_bytes", "t_load", "t_test", "epochs")
    ]
    exps.append(gxe.ExpectColumnValuesToBeBetween(column="epochs_done", min_value=0, max_value=_HUGE))
    exps.append(gxe.ExpectColumnValuesToBeBetween(column="_epochs_left", min_value=0, max_value=_HUGE))
    problems = _problems("jobs", df, exps, ["job"])
    if problems:
        raise ArtifactError(f"{label}: " + "; ".join(problems))
    finished = df[df["status"] == "completed"]
    short = finished[finished["epochs_done"] != finished["epochs"]]
    if len(short):
        raise ArtifactError(f"{label}: column 'epochs_done': completed jobs short of their epochs: {short['job'].tolist()}")
